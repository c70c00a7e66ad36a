"""The console's REST API fuzzed against its own OpenAPI document (schemathesis, issue 19):
no request the schema allows (or nearly allows) makes a server error, and every response
matches the schema, as an admin on the demo store (SQLite; the API is the same code on
PostgreSQL, whose store functions test_web_api covers)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

from synchub import accounts
from synchub.config import load_config
from synchub.engine import Hub
from synchub.web.api import create_app
from tests.helpers import ROOT


def _app(tmp: Path):
    for sub in ("config", "mappings", "demo"):
        shutil.copytree(ROOT / sub, tmp / sub)
    os.environ["SYNCHUB_STORE"] = f"sqlite:///{tmp / 'fuzz.db'}"
    try:
        hub = Hub(load_config(tmp / "config" / "demo.yaml"))
    finally:
        del os.environ["SYNCHUB_STORE"]
    hub.store.upgrade()
    hub.sync()
    # The only admin: the fuzzer may PATCH it, but the last admin cannot be disabled or demoted.
    accounts.add_user(hub.store, "root", "admin", "a long enough password")
    token = accounts.add_token(hub.store, "root", "fuzz")
    return create_app(hub), token


# The schema is read when the module is collected, so the app exists before the tests run.
_TMP = Path(tempfile.mkdtemp(prefix="synchub-fuzz-"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)
APP, TOKEN = _app(_TMP)
schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_never_fails_and_keeps_to_its_schema(case) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(headers={"Authorization": f"Bearer {TOKEN}"})
