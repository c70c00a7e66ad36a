"""The HubSpot connector passes the standard connector checks, HTTP checks included, with every
request validated against HubSpot's OpenAPI files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from plugins.hubspot.tests.conftest import TOKEN, http_factory, make_connector
from plugins.hubspot.tests.fake_hubspot import FakeHubSpot
from synchub.connector import OutRecord, Record, WriteResult
from synchub.http import HttpClientFactory
from synchub.testing import HttpConnectorChecks, HttpConnectorHarness
from synchub_hubspot import HubSpotConnector

MAPPINGS = Path(__file__).resolve().parents[3] / "mappings"

STREAMS = {"contacts": {"index_lag_seconds": 0, "lookback_seconds": 0, "page_size": 3}}


class HubSpotHarness(HttpConnectorHarness):
    stream = "contacts"
    page_size = 3
    # the round trip: the hub's own HubSpot contact mappings
    in_mapping = "hubspot_contacts"
    out_mapping = "hubspot_contacts_out"
    mapping_paths = (MAPPINGS,)

    def __init__(self, fake: FakeHubSpot):
        self.fake = fake
        self.n = 0
        self.unreadable: set[str] = set()
        self.factory = http_factory(fake)
        # A transport in front of the fake that can garble records in its answers.
        self.factory.transport = httpx.MockTransport(self._garble)

    def _garble(self, request: httpx.Request) -> httpx.Response:
        response = self.fake.transport.handle_request(request)
        if not self.unreadable or not request.url.path.endswith("/search"):
            return response
        response.read()
        body = json.loads(response.content)
        for obj in body.get("results", []):
            if obj["id"] in self.unreadable:
                obj["properties"]["lastmodifieddate"] = "yesterday-ish"
                obj["updatedAt"] = "not a time"
        return httpx.Response(response.status_code, headers=response.headers, json=body)

    def connector(self) -> HubSpotConnector:
        return make_connector(self.fake, streams=STREAMS, factory=self.factory)

    def add_records(self, n: int) -> None:
        self.fake.clock.advance(1000)
        for _ in range(n):
            self.n += 1
            self.fake.add("contacts", {"email": f"person{self.n}@example.com", "firstname": f"P{self.n}"})
            self.fake.clock.advance(1)

    def add_bad_record_between_good_ones(self) -> int:
        self.add_records(1)
        self.n += 1
        bad = self.fake.add("contacts", {"email": f"person{self.n}@example.com"})
        self.unreadable.add(bad)
        self.fake.clock.advance(1)
        self.add_records(1)
        return 2

    def add_records_sharing_cursor(self, n: int) -> None:
        self.fake.clock.advance(1000)
        for _ in range(n):  # one bulk edit: the same lastmodifieddate
            self.n += 1
            self.fake.add("contacts", {"email": f"person{self.n}@example.com", "firstname": f"P{self.n}"})
        self.fake.clock.advance(1)

    def add_records_at_cursor(self, record: Record, n: int) -> int:
        # The clock moves on after every change made here, so the millisecond of a record read is
        # over by the time of the read: nothing can change at it any more.
        at = int(record.data["_ms"])
        if at < self.fake.now():
            return 0
        for _ in range(n):
            self.n += 1
            self.fake.add("contacts", {"email": f"person{self.n}@example.com"}, updated_at=at)
        return n

    def settings_examples(self) -> dict:
        return {"token": TOKEN, "account": "123"}

    def connection_settings(self) -> dict[str, Any]:
        return {"token": TOKEN}

    def stream_settings(self) -> dict[str, Any]:
        return STREAMS[self.stream]

    def http(self) -> HttpClientFactory:
        return self.factory

    def writes_seen(self) -> int:
        reads = ("/search", "/batch/read")
        return sum(1 for r in self.fake.requests if r.method != "GET" and not r.url.path.endswith(reads))

    # writes: contacts HubSpot holds (batch/update) and one new one (batch/upsert by email)
    def records_to_write(self, n: int) -> list[OutRecord]:
        out = []
        for i in range(n):
            self.n += 1
            email = f"written{self.n}@example.com"
            known = self.fake.add("contacts", {"email": email, "firstname": "Old"}) if i < n - 1 else None
            out.append(OutRecord(f"g{self.n}", {"email": email, "firstname": f"W{self.n}"}, external_id=known))
        return out

    def record_to_refuse(self) -> OutRecord:
        self.fake.reject_when(lambda _type, props: "firstname 'REFUSE' is not allowed" if props.get("firstname") == "REFUSE" else None)
        self.n += 1
        known = self.fake.add("contacts", {"email": f"refused{self.n}@example.com", "firstname": "Old"})
        return OutRecord(f"g{self.n}", {"email": f"refused{self.n}@example.com", "firstname": "REFUSE"}, external_id=known)

    def held(self, out: OutRecord, result: WriteResult | None) -> dict[str, Any] | None:
        rid = (result and result.external_id) or out.external_id
        found = [c for c in self.fake.all("contacts")
                 if (rid and c["id"] == rid) or (not rid and c["properties"].get("email") == out.data["email"])]
        if not found:
            return None
        props = found[0]["properties"]
        return {"email": props.get("email"), "firstname": props.get("firstname")}

    def fail_next(self, n: int, status: int, headers: dict[str, str] | None = None) -> None:
        self.fake.fail_next(n, status=status, headers=headers)

    def unused_faults(self) -> int:
        return sum(f.remaining for f in self.fake._faults)

    def requests_sent(self) -> int:
        return len(self.fake.requests)

    def connector_with_rejected_credentials(self) -> HubSpotConnector:
        return make_connector(self.fake, settings={"token": "pat-na1-wrong-token"}, streams=STREAMS, factory=self.factory)


class TestHubSpotConnector(HttpConnectorChecks):
    @pytest.fixture
    def harness(self, fake: FakeHubSpot) -> HubSpotHarness:
        return HubSpotHarness(fake)
