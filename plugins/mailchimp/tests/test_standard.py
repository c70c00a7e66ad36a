"""The Mailchimp connector passes the standard connector checks, HTTP checks included, with every
request validated against the Mailchimp OpenAPI file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from plugins.mailchimp.tests.conftest import API_KEY, LIST, http_factory, make_connector
from plugins.mailchimp.tests.fake_mailchimp import FakeMailchimp
from synchub.connector import OutRecord, Record, WriteResult, parse_time
from synchub.http import HttpClientFactory
from synchub.testing import HttpConnectorChecks, HttpConnectorHarness
from synchub_mailchimp import MailchimpConnector

MAPPINGS = Path(__file__).resolve().parents[3] / "mappings"

STREAMS = {"newsletter": {"page_size": 3}}


class MailchimpHarness(HttpConnectorHarness):
    stream = "newsletter"
    page_size = 3
    # the round trip: the hub's own Mailchimp member mappings
    in_mapping = "mailchimp_members"
    out_mapping = "mailchimp_members_out"
    mapping_paths = (MAPPINGS,)

    def __init__(self, fake: FakeMailchimp):
        self.fake = fake
        self.n = 0
        self.unreadable: set[str] = set()
        self.factory = http_factory(fake)
        # A transport in front of the fake that can garble members in its answers.
        self.factory.transport = httpx.MockTransport(self._garble)

    def _garble(self, request: httpx.Request) -> httpx.Response:
        response = self.fake.transport.handle_request(request)
        if not self.unreadable or not request.url.path.endswith("/members"):
            return response
        response.read()
        body = json.loads(response.content)
        for m in body.get("members", []):
            if m.get("email_address") in self.unreadable:
                m["email_address"] = ""
        return httpx.Response(response.status_code, headers=response.headers, json=body)

    def connector(self) -> MailchimpConnector:
        return make_connector(self.fake, streams=STREAMS, factory=self.factory)

    def add_records(self, n: int) -> None:
        for _ in range(n):
            self.n += 1
            self.fake.add_member(LIST, f"person{self.n}@example.com", merge_fields={"FNAME": f"P{self.n}"})
            self.fake.clock.advance(400)
        self.fake.clock.advance(2000)  # settled: a read sees every member changed before its second

    def add_bad_record_between_good_ones(self) -> int:
        self.add_records(1)
        self.n += 1
        email = f"person{self.n}@example.com"
        self.fake.add_member(LIST, email)
        self.unreadable.add(email)
        self.add_records(1)
        return 2

    def add_records_sharing_cursor(self, n: int) -> None:
        for _ in range(n):  # one import: all in the same second
            self.n += 1
            self.fake.add_member(LIST, f"person{self.n}@example.com", merge_fields={"FNAME": f"P{self.n}"})
        self.fake.clock.advance(2000)

    def add_records_at_cursor(self, record: Record, n: int) -> int:
        # last_changed has whole seconds, and the connector reads only seconds that are over
        # (the harness lets the clock pass them first): nothing can change in them any more.
        at = parse_time(record.data["last_changed"])
        assert at is not None
        if int(at.timestamp()) < self.fake.now() // 1000:
            return 0
        for _ in range(n):
            self.n += 1
            self.fake.add_member(LIST, f"person{self.n}@example.com", at=at)
        return n

    def settings_examples(self) -> dict:
        return {"api_key": API_KEY}

    def connection_settings(self) -> dict[str, Any]:
        return {"api_key": API_KEY}

    def stream_settings(self) -> dict[str, Any]:
        # as make_connector builds the stream
        return {"list_id": LIST, "settle_seconds": 0, "lookback_seconds": 0, **STREAMS[self.stream]}

    def http(self) -> HttpClientFactory:
        return self.factory

    def writes_seen(self) -> int:
        return sum(1 for r in self.fake.requests if r.method != "GET")

    # writes: members the audience holds (their first name changes) and one new member
    def _out(self, email: str, first: str, known: str | None) -> OutRecord:
        data = {"email_address": email, "emails": [email], "merge_fields": {"FNAME": first},
                "consent": {"status": "subscribed", "method": "double_opt_in", "at": "2026-01-01T00:00:00+00:00"}}
        return OutRecord(f"g{self.n}", data, external_id=known)

    def records_to_write(self, n: int) -> list[OutRecord]:
        out = []
        for i in range(n):
            self.n += 1
            email = f"written{self.n}@example.com"
            known = self.fake.add_member(LIST, email, merge_fields={"FNAME": "Old"})["contact_id"] if i < n - 1 else None
            out.append(self._out(email, f"W{self.n}", known))
        return out

    def record_to_refuse(self) -> OutRecord:
        self.n += 1
        return self._out(f"refused{self.n}@", "Bad", None)  # Mailchimp refuses the address

    def held(self, out: OutRecord, result: WriteResult | None) -> dict[str, Any] | None:
        member = self.fake.member(LIST, out.data["email_address"])
        if member is None:
            return None
        return {"email_address": member["email_address"], "merge_fields": {"FNAME": member["merge_fields"].get("FNAME")}}

    def fail_next(self, n: int, status: int, headers: dict[str, str] | None = None) -> None:
        self.fake.fail_next(status=status, headers=headers, times=n)

    def unused_faults(self) -> int:
        return sum(f.remaining for f in self.fake._faults)

    def requests_sent(self) -> int:
        return len(self.fake.requests)

    def connector_with_rejected_credentials(self) -> MailchimpConnector:
        return make_connector(self.fake, settings={"api_key": "ffffffffffffffffffffffffffffffff-us6"}, streams=STREAMS,
                              factory=self.factory)


class TestMailchimpConnector(HttpConnectorChecks):
    @pytest.fixture
    def harness(self, fake: FakeMailchimp) -> MailchimpHarness:
        return MailchimpHarness(fake)
