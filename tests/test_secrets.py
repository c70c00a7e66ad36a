"""A token given in config appears nowhere: not in logs, errors, CLI output or the store."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from typer.testing import CliRunner

from synchub import plugins
from synchub.cli import app
from synchub.connector import Connector, ConnectorSettings, Record, Stream, StreamSettings
from synchub.store import Store
from tests.helpers import hub_for, write_config

TOKEN = "pat-eu1-7f3c9d2e-51ab-4c8e-9a77-0d1e2f3a4b5c"


class LeakySettings(ConnectorSettings):
    token: SecretStr
    region: str = "eu1"


class LeakyStream(Stream):
    name = "contacts"
    primary_key = ("id",)

    def __init__(self, token: str):
        self.token = token

    def read(self, state: dict[str, Any] | None) -> Iterator[Record]:
        log = logging.getLogger("synchub.connector.leaky")
        log.warning("calling API with Authorization: Bearer %s", self.token)
        yield Record({"id": "1", "email": "a@example.com"})
        raise RuntimeError(f"401 from server for token {self.token}")


class LeakyConnector(Connector):
    name = "leaky"
    Settings = LeakySettings
    StreamSettings = StreamSettings

    def streams(self) -> dict[str, Stream]:
        token = self.settings.token.get_secret_value()  # type: ignore[attr-defined]
        return {"contacts": LeakyStream(token)}


class LeakyPlugin:
    @plugins.hookimpl
    def register_connectors(self) -> list[type[Connector]]:
        return [LeakyConnector]


@pytest.fixture
def leaky_plugin() -> Iterator[None]:
    plugin = LeakyPlugin()
    plugins.register(plugin, name="leaky-test")
    yield
    plugins.unregister(plugin)


CONFIG = """
connections:
  crm:
    connector: leaky
    settings: {token: "${CRM_ACCESS}"}
    streams:
      contacts: {mapping: leaky}
"""

MAPPING = "entity: person\nfields:\n  emails: email\n"


def _dump_store(store: Store) -> str:
    out = []
    with store.engine.connect() as conn:
        for table in sa.inspect(store.engine).get_table_names():
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                out.append(repr(tuple(row)))
    return "\n".join(out)


def test_token_never_leaves_in_clear_text(tmp_path: Path, store_url: str, leaky_plugin: None, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cfg = write_config(tmp_path, CONFIG, store_url)
    (tmp_path / "mappings" / "leaky.yaml").write_text(MAPPING, encoding="utf-8")
    from synchub.redact import install_log_redaction

    install_log_redaction()
    hub = hub_for(cfg, environ={"CRM_ACCESS": TOKEN})
    connector = hub.connector("crm")
    assert TOKEN not in repr(connector.settings) and TOKEN not in str(connector.settings)
    with pytest.raises(RuntimeError) as excinfo:
        hub.sync(["crm"])
    assert TOKEN in str(excinfo.value)  # the test really did leak it into an exception...
    run = hub.store.recent_runs(1)[0]
    assert run["status"] == "failed" and "***" in run["error"]  # ...and the store got it masked
    assert TOKEN not in caplog.text
    assert "Bearer ***" in caplog.text
    assert TOKEN not in _dump_store(hub.store)

    result = CliRunner().invoke(app, ["--config", str(cfg), "runs"], env={"CRM_ACCESS": TOKEN})
    assert result.exit_code == 0, result.output
    assert TOKEN not in result.output
    result = CliRunner().invoke(app, ["--config", str(cfg), "--json", "runs", "show", str(run["id"])], env={"CRM_ACCESS": TOKEN})
    assert TOKEN not in result.output and "***" in result.output


def test_secret_env_var_is_masked_in_config_errors(tmp_path: Path, store_url: str, leaky_plugin: None) -> None:
    from synchub.config import load_config
    from synchub.errors import ConfigError
    from synchub.redact import redact

    cfg = write_config(tmp_path, CONFIG.replace("region", "x") + "    bogus: 1\n", store_url)
    (tmp_path / "mappings" / "leaky.yaml").write_text(MAPPING, encoding="utf-8")
    with pytest.raises(ConfigError) as excinfo:
        load_config(cfg, environ={"CRM_ACCESS": TOKEN})
    assert TOKEN not in str(excinfo.value)
    assert redact(f"x {TOKEN} y") == "x *** y"
