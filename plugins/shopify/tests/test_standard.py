"""The Shopify connector passes the standard connector checks, HTTP checks included, for both
resources, with every GraphQL request validated against the Admin schema."""

from __future__ import annotations

import json

import httpx
import pytest

from plugins.shopify.tests.conftest import SHOP, TOKEN, http_factory, make_connector
from plugins.shopify.tests.fake_shopify import FakeShopify
from synchub.testing import HttpConnectorChecks, HttpConnectorHarness
from synchub_shopify import ShopifyConnector


class ShopifyHarness(HttpConnectorHarness):
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

    def connector(self) -> ShopifyConnector:
        return make_connector(self.fake, streams={self.stream: {"resource": self.resource}}, factory=self.factory)

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

    def settings_examples(self) -> dict:
        return {"shop": SHOP, "access_token": TOKEN}

    def fail_next(self, n: int, status: int, headers: dict[str, str] | None = None) -> None:
        self.fake.fail_next(n, status, headers=headers)

    def unused_faults(self) -> int:
        return self.fake.unused_faults()

    def requests_sent(self) -> int:
        return len(self.fake.requests)


class TestShopifyCustomers(HttpConnectorChecks):
    @pytest.fixture
    def harness(self, fake: FakeShopify) -> ShopifyHarness:
        return ShopifyHarness(fake, "customers")


class TestShopifyOrders(HttpConnectorChecks):
    @pytest.fixture
    def harness(self, fake: FakeShopify) -> ShopifyHarness:
        return ShopifyHarness(fake, "orders")
