"""Errors never carry customer data (issue 16): a run whose database session dies mid-batch
stores and logs the error's class and message, not the SQL parameters (e-mails, names).

Before, ``run.error`` kept ~6 KB of statement parameters for ``keep_runs_days``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa

from synchub import apply
from synchub import store as st
from synchub.engine import describe_error
from tests.helpers import hub_for, rows, write_config, write_people_mapping

EMAILS = [f"geheim.kunde{i}@privat-example.de" for i in range(40)]
CSV = "id;email;first;last\n" + "".join(f"{i};{e};Vorname{i};Nachname{i}\n" for i, e in enumerate(EMAILS))
CONFIG = """\
connections:
  shop:
    connector: files
    settings: {path: data}
    streams:
      people: {mapping: people, settings: {pattern: "people*.csv", primary_key: id}}
"""


def test_a_killed_backend_leaves_no_customer_data_in_the_store_or_the_logs(
        tmp_path: Path, pg_store_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    cfg = write_config(tmp_path, CONFIG, pg_store_url, **{"people__csv": CSV})
    write_people_mapping(tmp_path / "mappings")
    hub = hub_for(cfg)
    admin = sa.create_engine(pg_store_url)
    original = apply._keep_opt_outs
    killed = []

    def kill_then_go_on(conn, changed, existing):  # type: ignore[no-untyped-def]
        # Terminate this batch's own backend: the next statement (the identity-key lookup,
        # whose parameters are the e-mails) fails.
        if not killed:
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
            with admin.begin() as a:
                a.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            killed.append(pid)
        return original(conn, changed, existing)

    monkeypatch.setattr(apply, "_keep_opt_outs", kill_then_go_on)
    caplog.set_level(logging.DEBUG)
    [summary] = hub.sync(["shop"])
    assert killed and summary.status == "failed"
    assert summary.error and "OperationalError" in summary.error
    [run] = [r for r in rows(hub.store, st.run_t) if r["id"] == summary.run_id]
    stored = json.dumps({k: str(v) for k, v in run.items()})
    logged = caplog.text
    for e in EMAILS:
        assert e not in stored and e not in logged
        assert "Vorname" not in stored and "Vorname" not in logged
    assert "[SQL" not in run["error"] and "parameters" not in run["error"]
    # Nothing of the batch committed, and nothing anywhere in the store names the customers.
    with hub.store.engine.connect() as conn:
        for table in st.T.values():
            dump = json.dumps([dict(r._mapping) for r in conn.execute(sa.select(table))], default=str)
            assert not any(e in dump for e in EMAILS), table.name

    # The re-run finishes with the result an undisturbed run gives.
    monkeypatch.setattr(apply, "_keep_opt_outs", original)
    [again] = hub.sync(["shop"])
    assert again.status == "succeeded" and again.streams["people"].created == len(EMAILS)
    admin.dispose()


def test_describe_error_keeps_class_and_message_but_not_values() -> None:
    orig = Exception('duplicate key value violates unique constraint "uq_source_record"\n'
                     "DETAIL:  Key (connection, stream, source_id)=(shop, people, anna@example.de) already exists.")
    exc = sa.exc.IntegrityError("INSERT INTO source_record VALUES (%(a)s)", {"a": "anna@example.de"}, orig)
    text = describe_error(exc)
    assert "uq_source_record" in text and "IntegrityError" in text
    assert "anna@example.de" not in text and "INSERT" not in text
    bad = sa.exc.DataError("SELECT 1", {}, Exception('invalid input syntax for type json: "Jörg Müller"'))
    assert "Jörg" not in describe_error(bad)
