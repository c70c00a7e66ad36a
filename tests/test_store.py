"""The store schema on SQLite and PostgreSQL: created by migrations, matching the models."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from synchub.migrate import current_revision
from synchub.store import Store


def test_migrations_create_every_table(store: Store) -> None:
    names = set(sa.inspect(store.engine).get_table_names())
    assert {"golden_record", "source_record", "identity_key", "sync_state", "run", "rejected_record",
            "audit_log", "conflict", "outbound_state", "interaction", "alembic_version"} <= names
    assert current_revision(store.engine) is not None


def test_models_and_migrations_agree(store: Store) -> None:
    """A model change without a migration fails here (autogenerate finds a difference)."""
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": False}), SQLModel.metadata)
    assert diff == []


def test_upgrade_is_idempotent_and_keeps_data(store: Store) -> None:
    store.save_state("c", "s", {"cursor": 5}, None)
    store.upgrade()
    assert store.get_state("c", "s") == {"cursor": 5}


def test_state_round_trip_and_overwrite(store: Store) -> None:
    assert store.get_state("shop", "customers") is None
    store.save_state("shop", "customers", {"files": {"a.csv": {"size": 1}}}, 1)
    store.save_state("shop", "customers", {"files": {"a.csv": {"size": 2}}}, 2)
    assert store.get_state("shop", "customers") == {"files": {"a.csv": {"size": 2}}}


def test_runs_are_recorded_with_aware_times(store: Store) -> None:
    run_id = store.start_run("shop")
    store.finish_run(run_id, "succeeded", {"streams": {"customers": {"read": 3}}})
    run = store.get_run(run_id)
    assert run is not None
    assert run["status"] == "succeeded"
    assert run["counts"]["streams"]["customers"]["read"] == 3
    assert run["started_at"].tzinfo is not None and run["finished_at"] >= run["started_at"]
    assert run["finished_at"] <= datetime.now(timezone.utc)
    assert [r["id"] for r in store.recent_runs()] == [run_id]


def test_url_password_is_hidden() -> None:
    s = Store("postgresql+psycopg://bob:hunter2secret@127.0.0.1:1/x")
    assert "hunter2secret" not in repr(s) and "hunter2secret" not in s.display_url


def test_upgrade_to_0005_takes_the_direction_of_older_runs_from_their_counts(store_url: str) -> None:
    from synchub.migrate import upgrade

    s = Store(store_url)
    upgrade(s.engine, "0004")
    with s.begin() as conn:
        for direction in ("in", "out"):
            conn.execute(sa.text("INSERT INTO run (connection, trigger, status, started_at, counts, worker) "
                                 "VALUES ('shop', 'cli', 'succeeded', :t, :c, 'w')"),
                         {"t": datetime.now(timezone.utc), "c": json.dumps({"direction": direction, "streams": {}})})
    s.upgrade()
    assert sorted(r["direction"] for r in s.recent_runs()) == ["in", "out"]
    assert s.last_run_start("shop", "in") is not None
    s.dispose()


def test_commits_are_durable(store: Store) -> None:
    """RELIABILITY 23: a power cut must not lose a committed batch or cursor."""
    with store.engine.connect() as conn:
        if store.dialect == "sqlite":
            assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(sa.text("PRAGMA synchronous")).scalar() == 2  # FULL
        else:
            assert conn.execute(sa.text("SHOW synchronous_commit")).scalar() == "on"
            assert conn.execute(sa.text("SHOW fsync")).scalar() == "on"
