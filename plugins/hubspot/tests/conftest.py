"""Fixtures for the HubSpot connector tests: a fake HubSpot whose every accepted request is
checked against HubSpot's official OpenAPI files, and connectors/hubs wired to it.

The one deliberate deviation from the spec: search ``sorts`` are sent as
``{propertyName, direction}`` objects, as HubSpot's API and docs take them (the OpenAPI file
types them as strings, which the live API ignores), see ``HUBSPOT_SEARCH_SORT_OBJECTS``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

import synchub_hubspot
from plugins.hubspot.tests.fake_hubspot import FakeHubSpot
from synchub.connector import ConnectionContext
from synchub.http import HttpClientFactory
from synchub.testing import fake_server_http
from synchub.testing.specs import HUBSPOT_SEARCH_SORT_OBJECTS, hubspot_validator
from synchub_hubspot import HubSpotConnector, HubSpotSettings, HubSpotStreamSettings
from tests.conftest import store_url  # noqa: F401 - the SQLite + PostgreSQL store fixture

TOKEN = "pat-na1-test-0f3c2a7e-secret"


@pytest.fixture
def spec():
    """HubSpot's OpenAPI files from tests/specs (a missing file fails the test)."""
    return hubspot_validator(HUBSPOT_SEARCH_SORT_OBJECTS)


@pytest.fixture
def fake(spec, monkeypatch: pytest.MonkeyPatch) -> FakeHubSpot:
    f = FakeHubSpot(token=TOKEN, validator=spec)
    # The connector's wall clock is the fake's (index lag, sweeps).
    monkeypatch.setattr(synchub_hubspot, "now_ms", f.clock)
    yield f
    assert f.violations == [], f"requests the spec refuses: {f.violations}"


def http_factory(fake: FakeHubSpot) -> HttpClientFactory:
    """Sleeping advances the fake's clock instead of waiting; budgets are per test."""
    return fake_server_http(fake.transport, fake.clock)


def make_connector(fake: FakeHubSpot, settings: dict[str, Any] | None = None,
                   streams: dict[str, dict[str, Any]] | None = None,
                   factory: HttpClientFactory | None = None) -> HubSpotConnector:
    # No index lag and no lookback unless a test asks: the fake's index is current, and the
    # standard checks verify the cursor itself (a lookback re-reads on purpose).
    streams = streams if streams is not None else {"contacts": {"index_lag_seconds": 0, "lookback_seconds": 0}}
    ctx = ConnectionContext(
        name="crm",
        settings=HubSpotSettings.model_validate({"token": TOKEN, **(settings or {})}),
        stream_settings={k: HubSpotStreamSettings.model_validate(v) for k, v in streams.items()},
        base_dir=Path("."),
        log=logging.getLogger("test.hubspot"),
        http=factory or http_factory(fake),
    )
    return HubSpotConnector(ctx)


@pytest.fixture
def connector(fake):
    def build(**kw: Any) -> HubSpotConnector:
        return make_connector(fake, **kw)
    return build
