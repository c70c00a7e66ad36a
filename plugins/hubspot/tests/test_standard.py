"""The HubSpot connector passes the standard connector checks, HTTP checks included, with every
request validated against HubSpot's OpenAPI files."""

from __future__ import annotations

import json

import httpx
import pytest

from plugins.hubspot.tests.conftest import TOKEN, http_factory, make_connector
from plugins.hubspot.tests.fake_hubspot import FakeHubSpot
from synchub.testing import HttpConnectorChecks, HttpConnectorHarness
from synchub_hubspot import HubSpotConnector


class HubSpotHarness(HttpConnectorHarness):
    stream = "contacts"

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
        return make_connector(self.fake, streams={"contacts": {"index_lag_seconds": 0, "lookback_seconds": 0}}, factory=self.factory)

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

    def settings_examples(self) -> dict:
        return {"token": TOKEN, "account": "123"}

    def fail_next(self, n: int, status: int, headers: dict[str, str] | None = None) -> None:
        self.fake.fail_next(n, status=status, headers=headers)

    def unused_faults(self) -> int:
        return sum(f.remaining for f in self.fake._faults)

    def requests_sent(self) -> int:
        return len(self.fake.requests)


class TestHubSpotConnector(HttpConnectorChecks):
    @pytest.fixture
    def harness(self, fake: FakeHubSpot) -> HubSpotHarness:
        return HubSpotHarness(fake)
