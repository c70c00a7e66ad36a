"""Fixtures for the Shopify connector tests: a fake Shopify that executes every GraphQL document
against the official Admin schema (2025-01) and validates every request with
``shopify_validator()``, and connectors wired to it."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import synchub_shopify
from plugins.shopify.tests.fake_shopify import FakeShopify
from synchub.connector import ConnectionContext
from synchub.http import HttpClientFactory
from synchub.testing import fake_server_http
from synchub.testing.specs import shopify_validator
from synchub_shopify import ShopifyConnector, ShopifySettings, ShopifyStreamSettings
from tests.conftest import store_url  # noqa: F401 - the SQLite + PostgreSQL store fixture

TOKEN = "shpat_test_token"
SHOP = "acme.myshopify.com"


@pytest.fixture
def spec():
    return shopify_validator()


@pytest.fixture
def fake(spec, monkeypatch: pytest.MonkeyPatch) -> FakeShopify:
    f = FakeShopify(shop=SHOP, token=TOKEN, validator=spec)
    # The connector's wall clock is the fake's.
    monkeypatch.setattr(synchub_shopify, "now", lambda: datetime.fromtimestamp(f.clock() / 1000, timezone.utc))
    yield f
    assert f.violations == [], f"requests the schema refuses: {f.violations}"


def http_factory(fake: FakeShopify) -> HttpClientFactory:
    """Sleeping advances the fake's clock instead of waiting; budgets are per test."""
    return fake_server_http(fake.transport, fake.clock)


def make_connector(fake: FakeShopify, settings: dict[str, Any] | None = None,
                   streams: dict[str, dict[str, Any]] | None = None,
                   factory: HttpClientFactory | None = None) -> ShopifyConnector:
    streams = streams if streams is not None else {"customers": {}}
    defaults = {"settle_seconds": 0, "lookback_seconds": 0, "bulk": "never", "reconcile_hours": 0, "bulk_poll_seconds": 1}
    streams = {k: {**defaults, **v} for k, v in streams.items()}
    ctx = ConnectionContext(
        name="shop",
        settings=ShopifySettings.model_validate({"shop": SHOP, "access_token": TOKEN, **(settings or {})}),
        stream_settings={k: ShopifyStreamSettings.model_validate(v) for k, v in streams.items()},
        base_dir=Path("."),
        log=logging.getLogger("test.shopify"),
        http=factory or http_factory(fake),
    )
    return ShopifyConnector(ctx)
