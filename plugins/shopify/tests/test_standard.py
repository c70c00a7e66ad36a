"""The Shopify connector passes the standard connector checks, HTTP checks included, for both
resources, with every GraphQL request validated against the Admin schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from plugins.shopify.tests.conftest import SHOP, TOKEN, http_factory, make_connector
from plugins.shopify.tests.fake_shopify import FakeShopify
from synchub.connector import OutRecord, Record, WriteResult, parse_time
from synchub.http import HttpClientFactory
from synchub.testing import HttpConnectorChecks, HttpConnectorHarness
from synchub_shopify import ShopifyConnector

MAPPINGS = Path(__file__).resolve().parents[3] / "mappings"
#: What make_connector sets on every stream (no settle time, lookback, bulk or reconcile runs).
STREAM_DEFAULTS = {"settle_seconds": 0, "lookback_seconds": 0, "bulk": "never", "reconcile_hours": 0, "bulk_poll_seconds": 1}


class ShopifyHarness(HttpConnectorHarness):
    page_size = 3
    mapping_paths = (MAPPINGS,)

    def __init__(self, fake: FakeShopify, resource: str):
        self.fake = fake
        self.stream = resource
        self.resource = resource
        self.n = 0
        self.unreadable: set[str] = set()
        self.factory = http_factory(fake)
        # A transport in front of the fake that can garble records in its answers.
        self.factory.transport = httpx.MockTransport(self._garble)
        self.owner = fake.add_customer(firstName="Owner", email="owner@example.com") if resource == "orders" else None
        # the round trip (customers; orders are read-only): the hub's own customer mappings
        self.in_mapping = f"shopify_{resource}"
        self.out_mapping = f"shopify_{resource}_out"

    def _garble(self, request: httpx.Request) -> httpx.Response:
        response = self.fake.transport.handle_request(request)
        if not self.unreadable:
            return response
        response.read()
        body = json.loads(response.content)
        for node in ((body.get("data") or {}).get(self.resource) or {}).get("nodes") or []:
            if node.get("id") in self.unreadable:
                node["updatedAt"] = None
        return httpx.Response(response.status_code, headers=response.headers, json=body)

    def _streams(self) -> dict[str, dict[str, Any]]:
        stream: dict[str, Any] = {"resource": self.resource, "page_size": self.page_size}
        if self.resource == "customers":  # what the write checks write
            stream.update(owned_fields=["firstName", "email"], create_customers=True)
        return {self.stream: stream}

    def connector(self) -> ShopifyConnector:
        return make_connector(self.fake, streams=self._streams(), factory=self.factory)

    def _one(self) -> str:
        self.n += 1
        if self.resource == "customers":
            return self.fake.add_customer(firstName=f"P{self.n}", email=f"person{self.n}@example.com")
        return self.fake.add_order(self.owner, total=f"{self.n}.00", line_items=[{"title": "Tee", "sku": "T1", "quantity": 1, "price": f"{self.n}.00"}])

    def add_records(self, n: int) -> None:
        for _ in range(n):
            self._one()
            self.fake.clock.advance(400)
        self.fake.clock.advance(2000)  # settled: a read sees every record changed before its second

    def add_bad_record_between_good_ones(self) -> int:
        self.add_records(1)
        self.unreadable.add(self._one())
        self.fake.clock.advance(400)
        self.add_records(1)
        return 2

    def add_records_sharing_cursor(self, n: int) -> None:
        for _ in range(n):  # one bulk edit: the same updatedAt
            self._one()
        self.fake.clock.advance(2000)

    def add_records_at_cursor(self, record: Record, n: int) -> int:
        # updatedAt has whole seconds, and the connector reads only seconds that are over (the
        # harness lets the clock pass them first): nothing can change in them any more.
        at = parse_time(record.data["updatedAt"])
        assert at is not None
        if int(at.timestamp()) < self.fake.now() // 1000:
            return 0
        for _ in range(n):  # still that second: made now, they share it
            self._one()
        return n

    def settings_examples(self) -> dict:
        return {"shop": SHOP, "access_token": TOKEN}

    def connection_settings(self) -> dict[str, Any]:
        return {"shop": SHOP, "access_token": TOKEN}

    def stream_settings(self) -> dict[str, Any]:
        return {**STREAM_DEFAULTS, **self._streams()[self.stream]}

    def http(self) -> HttpClientFactory:
        return self.factory

    def writes_seen(self) -> int:
        writes = 0
        for r in self.fake.requests:
            if r.method == "POST" and r.url.path.endswith("graphql.json"):
                query = json.loads(r.content).get("query", "").lstrip()
                writes += query.startswith("mutation") and "bulkOperationRunQuery" not in query
        return writes

    # writes (customers): customers the shop holds get a first name, an address and a tag; the
    # last record is a new customer (create_customers: true)
    def records_to_write(self, n: int) -> list[OutRecord]:
        out = []
        for i in range(n):
            self.n += 1
            email = f"written{self.n}@example.com"
            known = self.fake.add_customer(firstName="Old", email=f"old{self.n}@example.com") if i < n - 1 else None
            out.append(OutRecord(f"g{self.n}", {"email": email, "firstName": f"W{self.n}", "tags": [f"tag{self.n}"]},
                                 external_id=known))
        return out

    def record_to_refuse(self) -> OutRecord:
        self.n += 1
        self.fake.add_customer(firstName="Taken", email=f"taken{self.n}@example.com")
        known = self.fake.add_customer(firstName="Old", email=f"old{self.n}@example.com")
        # "Email has already been taken"
        return OutRecord(f"g{self.n}", {"email": f"taken{self.n}@example.com", "firstName": "X"}, external_id=known)

    def held(self, out: OutRecord, result: WriteResult | None) -> dict[str, Any] | None:
        gid = (result and result.external_id) or out.external_id
        found = self.fake.customers.get(gid) if gid else next(
            (c for c in self.fake.customers.values() if c["email"] == out.data["email"]), None)
        if found is None:
            return None
        return {"email": found["email"], "firstName": found["firstName"], "tags": sorted(found["tags"])}

    def fail_next(self, n: int, status: int, headers: dict[str, str] | None = None) -> None:
        self.fake.fail_next(n, status, headers=headers)

    def unused_faults(self) -> int:
        return self.fake.unused_faults()

    def requests_sent(self) -> int:
        return len(self.fake.requests)

    def connector_with_rejected_credentials(self) -> ShopifyConnector:
        return make_connector(self.fake, settings={"access_token": "shpat_wrong_token"}, streams=self._streams(),
                              factory=self.factory)


class TestShopifyCustomers(HttpConnectorChecks):
    @pytest.fixture
    def harness(self, fake: FakeShopify) -> ShopifyHarness:
        return ShopifyHarness(fake, "customers")


class TestShopifyOrders(HttpConnectorChecks):
    @pytest.fixture
    def harness(self, fake: FakeShopify) -> ShopifyHarness:
        return ShopifyHarness(fake, "orders")
