"""A connector whose runs end the way its settings say (succeeded, partial, paused, interrupted,
failed, crashed, hanging), for the command line's exit codes. Registered in-process by the
tests, and by :data:`MAIN` for a subprocess that runs the real ``synchub.cli.main``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from synchub import engine, plugins
from synchub.connector import (
    CheckResult,
    Connector,
    ConnectorSettings,
    ReadItem,
    Record,
    Rejected,
    Stream,
)
from synchub.errors import AuthError, QuotaExhausted

#: Record contents that must never appear in an error message.
PRIVATE_NAME = "Hannelore Zwirbelgruber"

#: ``python -c MAIN <synchub args>`` (cwd: the repository) runs ``synchub`` with this connector.
MAIN = ("from synchub import plugins; from tests.outcome_connector import OutcomePlugin; "
        "plugins.register(OutcomePlugin(), name='outcome'); from synchub.cli import main; main()")


class OutcomeSettings(ConnectorSettings):
    #: ok | reject | paused | interrupted | failed | crash | hang
    outcome: str = "ok"
    token: SecretStr | None = None
    check_ok: bool = True
    #: The first name of the one record every read yields.
    first: str = "Ann"
    #: ``hang``: a file written when the read has started (the test then sends a signal).
    marker: str | None = None


class OutcomeStream(Stream):
    primary_key = ("id",)

    def __init__(self, settings: OutcomeSettings):
        self.settings = settings

    def read(self, state: dict[str, Any] | None) -> Iterator[ReadItem]:
        s = self.settings
        yield Record({"id": "1", "email": "ann@example.org", "first": s.first, "last": "Example"}, ref="row 1")
        if s.outcome == "reject":
            yield Rejected(ref="row 2", reason="unreadable row")
        elif s.outcome == "paused":
            raise QuotaExhausted("daily API quota spent", resume_at=datetime.now(timezone.utc) + timedelta(hours=1))
        elif s.outcome == "interrupted":
            raise engine.Interrupted("stop requested")
        elif s.outcome == "failed":
            token = s.token.get_secret_value() if s.token else ""
            raise AuthError(f"the API refused token {token}")
        elif s.outcome == "crash":
            raise ValueError(f"cannot parse the birth date of {PRIVATE_NAME}")
        elif s.outcome == "hang":
            if s.marker:
                Path(s.marker).write_text("reading", encoding="utf-8")
            time.sleep(60)


class OutcomeConnector(Connector):
    name = "outcome"
    Settings = OutcomeSettings

    def streams(self) -> dict[str, Stream]:
        return {name: OutcomeStream(self.settings) for name in self.context.stream_settings}  # type: ignore[arg-type]

    def check(self) -> CheckResult:
        ok = self.settings.check_ok  # type: ignore[attr-defined]
        return CheckResult(ok=ok, lines=["people: read" if ok else "people: the API refused the token"])


class OutcomePlugin:
    @plugins.hookimpl
    def register_connectors(self) -> list[type[Connector]]:
        return [OutcomeConnector]
