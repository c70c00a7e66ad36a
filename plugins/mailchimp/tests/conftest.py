"""Fixtures for the Mailchimp connector tests: a fake Mailchimp whose every accepted request is
checked against the Mailchimp OpenAPI file, and connectors wired to it.

The one relaxation of the spec: merge field values are free JSON values, as the API takes them
(the OAS 3 conversion types them as objects; see ``MAILCHIMP_MERGE_FIELD_VALUES``).
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import synchub_mailchimp
from plugins.mailchimp.tests.fake_mailchimp import FakeMailchimp
from synchub.connector import ConnectionContext
from synchub.http import HttpClientFactory
from synchub.testing import fake_server_http
from synchub.testing.specs import MAILCHIMP_MERGE_FIELD_VALUES, mailchimp_validator
from synchub_mailchimp import MailchimpConnector, MailchimpSettings, MailchimpStreamSettings
from tests.conftest import store_url  # noqa: F401 - the SQLite + PostgreSQL store fixture

API_KEY = "0123456789abcdef0123456789abcdef-us6"
LIST = "list1"


@pytest.fixture
def spec():
    return mailchimp_validator(MAILCHIMP_MERGE_FIELD_VALUES)


@pytest.fixture
def fake(spec, monkeypatch: pytest.MonkeyPatch) -> FakeMailchimp:
    f = FakeMailchimp(api_key=API_KEY, validator=spec)
    f.add_list(LIST, "Newsletter")
    # The connector's wall clock is the fake's.
    monkeypatch.setattr(synchub_mailchimp, "now", lambda: datetime.fromtimestamp(f.clock() / 1000, timezone.utc))
    yield f
    assert f.violations == [], f"requests the spec refuses: {f.violations}"


def http_factory(fake: FakeMailchimp) -> HttpClientFactory:
    """Sleeping advances the fake's clock instead of waiting; budgets are per test."""
    return fake_server_http(fake.transport, fake.clock)


def make_connector(fake: FakeMailchimp, settings: dict[str, Any] | None = None,
                   streams: dict[str, dict[str, Any]] | None = None,
                   factory: HttpClientFactory | None = None) -> MailchimpConnector:
    streams = streams if streams is not None else {"newsletter": {}}
    streams = {k: {"list_id": LIST, "settle_seconds": 0, "lookback_seconds": 0, **v} for k, v in streams.items()}
    ctx = ConnectionContext(
        name="mc",
        settings=MailchimpSettings.model_validate({"api_key": API_KEY, **(settings or {})}),
        stream_settings={k: MailchimpStreamSettings.model_validate(v) for k, v in streams.items()},
        base_dir=Path("."),
        log=logging.getLogger("test.mailchimp"),
        http=factory or http_factory(fake),
    )
    return MailchimpConnector(ctx)
