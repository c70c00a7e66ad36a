"""The Mailchimp connector passes the standard connector checks, HTTP checks included, with every
request validated against the Mailchimp OpenAPI file."""

from __future__ import annotations

import json

import httpx
import pytest

from plugins.mailchimp.tests.conftest import API_KEY, LIST, http_factory, make_connector
from plugins.mailchimp.tests.fake_mailchimp import FakeMailchimp
from synchub.testing import HttpConnectorChecks, HttpConnectorHarness
from synchub_mailchimp import MailchimpConnector


class MailchimpHarness(HttpConnectorHarness):
    stream = "newsletter"

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
        return make_connector(self.fake, factory=self.factory)

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

    def settings_examples(self) -> dict:
        return {"api_key": API_KEY}

    def fail_next(self, n: int, status: int, headers: dict[str, str] | None = None) -> None:
        self.fake.fail_next(status=status, headers=headers, times=n)

    def unused_faults(self) -> int:
        return sum(f.remaining for f in self.fake._faults)

    def requests_sent(self) -> int:
        return len(self.fake.requests)


class TestMailchimpConnector(HttpConnectorChecks):
    @pytest.fixture
    def harness(self, fake: FakeMailchimp) -> MailchimpHarness:
        return MailchimpHarness(fake)
