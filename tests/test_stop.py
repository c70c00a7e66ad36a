"""A stop request (first SIGTERM) in the engine: reads end at the next batch or checkpoint with
everything read committed, pushes end after what the stream was given, and the next run goes on."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from synchub import engine, plugins
from synchub.connector import (
    Checkpoint,
    Connector,
    OutRecord,
    ReadItem,
    Record,
    Stream,
    StreamSettings,
    WriteResult,
)
from synchub.store import outbound_t, source_t
from tests.helpers import hub_for, rows, write_config

PEOPLE = 50
#: Set by a test to the hub's stop flag; the streams set it at a chosen moment, as a SIGTERM would.
STOP: dict[str, Any] = {}
WRITTEN: list[str] = []


class CountingSource(Stream):
    primary_key = ("id",)

    def read(self, state: dict[str, Any] | None) -> Iterator[ReadItem]:
        start = (state or {}).get("next", 0)
        for i in range(start, PEOPLE):
            if i == STOP.get("read_at"):
                STOP["event"].set()
            if i == STOP.get("cut_at"):
                STOP["cut"]()
            yield Record({"id": str(i), "email": f"p{i}@example.org", "first": f"F{i}"})
            if (i + 1) % 10 == 0:
                yield Checkpoint({"next": i + 1})


class RecordingSink(Stream):
    def write(self, records: Iterable[OutRecord], fields: list[str]) -> Iterator[WriteResult]:
        for n, rec in enumerate(records):
            WRITTEN.append(rec.golden_id)
            if n + 1 == STOP.get("write_at"):
                STOP["event"].set()
            yield WriteResult(rec.golden_id, ok=True, external_id=f"x{rec.golden_id}")


class EagerSink(RecordingSink):
    """Takes the whole feed before it writes (as batch APIs do: Mailchimp, Shopify)."""

    def write(self, records: Iterable[OutRecord], fields: list[str]) -> Iterator[WriteResult]:
        return super().write(list(records), fields)


class StopTestConnector(Connector):
    name = "stoptest"
    StreamSettings = StreamSettings

    def streams(self) -> dict[str, Stream]:
        kinds = {"people": CountingSource, "eager": EagerSink}
        return {name: kinds.get(name, RecordingSink)() for name in self.context.stream_settings}


class _Plugin:
    @plugins.hookimpl
    def register_connectors(self) -> list[type[Connector]]:
        return [StopTestConnector]


@pytest.fixture
def stoptest(tmp_path: Path, store_url: str) -> Iterator[Any]:
    yield from _stoptest(tmp_path, store_url)


@pytest.fixture
def pg_stoptest(tmp_path: Path, pg_store_url: str) -> Iterator[Any]:
    yield from _stoptest(tmp_path, pg_store_url)


def _stoptest(tmp_path: Path, store_url: str) -> Iterator[Any]:
    plugin = _Plugin()
    plugins.register(plugin, name="stoptest")
    STOP.clear()
    WRITTEN.clear()
    (tmp_path / "mappings").mkdir()
    (tmp_path / "mappings" / "st_in.yaml").write_text(
        "entity: person\nfields:\n  emails: email\n  first_name: first\n", encoding="utf-8")
    (tmp_path / "mappings" / "st_out.yaml").write_text(
        "entity: person\ndirection: out\nfields:\n  email: emails.0\n", encoding="utf-8")
    cfg = write_config(tmp_path, """
        defaults: {batch_size: 4}
        match:
          person: {keys: [email], fuzzy: false}
        connections:
          src:
            connector: stoptest
            streams:
              people: {mapping: st_in}
          dst:
            connector: stoptest
            direction: out
            streams:
              list: {mapping: st_out}
          batchdst:
            connector: stoptest
            direction: out
            streams:
              eager: {mapping: st_out}
        """, store_url)
    hub = hub_for(cfg)
    hub.bulk = False  # batch by batch, as on every sync after the first (see the bulk test below)
    STOP["event"] = hub.stopping
    yield hub
    plugins.unregister(plugin)


def test_a_stopped_read_commits_its_batch_keeps_its_cursor_and_the_next_run_goes_on(stoptest: Any) -> None:
    hub = stoptest
    STOP["read_at"] = 25  # the stop arrives while record 25 is read
    first = hub.run_connection("src", "in")
    assert first.status == "interrupted"
    landed = len(rows(hub.store, source_t))
    # It stopped at the next boundary: the batch of 4 ending at 28, before the checkpoint at 30.
    assert landed == 28 and first.streams["people"].read == 28
    assert hub.store.get_state("src", "people") == {"next": 20}
    assert hub.store.get_run(first.run_id)["status"] == "interrupted"
    hub.stopping.clear()
    STOP.pop("read_at")
    second = hub.run_connection("src", "in")
    assert second.status == "succeeded"
    assert second.streams["people"].read == PEOPLE - 20  # from the saved cursor
    assert second.streams["people"].unchanged == 8  # 20..27 landed before: no duplicates
    assert len(rows(hub.store, source_t)) == PEOPLE


def test_a_stopped_bulk_load_commits_what_it_read_at_once_and_the_next_run_goes_on(stoptest: Any) -> None:
    hub = stoptest
    hub.bulk = True  # units of 50,000 records: a stop must not wait for the unit's end
    STOP["read_at"] = 25
    first = hub.run_connection("src", "in")
    assert first.status == "interrupted"
    # The stop arrived while record 25 was read: records 0..25 are committed, none waits.
    assert len(rows(hub.store, source_t)) == 26 and first.streams["people"].read == 26
    assert hub.store.get_state("src", "people") == {"next": 20}
    hub.stopping.clear()
    STOP.pop("read_at")
    second = hub.run_connection("src", "in")
    assert second.status == "succeeded"
    assert second.streams["people"].unchanged == 6  # 20..25 landed before: no duplicates
    assert len(rows(hub.store, source_t)) == PEOPLE


def test_a_stopped_push_remembers_what_was_written_and_the_next_run_writes_the_rest(stoptest: Any) -> None:
    hub = stoptest
    assert hub.run_connection("src", "in").status == "succeeded"
    STOP["write_at"] = 7
    first = hub.run_connection("dst", "out")
    assert first.status == "interrupted" and "left for the next run" in first.error
    assert first.streams["list"].written == len(WRITTEN) < PEOPLE
    assert len(rows(hub.store, outbound_t)) == len(WRITTEN)
    hub.stopping.clear()
    STOP.pop("write_at")
    before = len(WRITTEN)
    second = hub.run_connection("dst", "out")
    assert second.status == "succeeded"
    assert second.streams["list"].written == PEOPLE - before
    assert sorted(WRITTEN) == sorted(set(WRITTEN)) and len(WRITTEN) == PEOPLE  # each once


def test_a_connector_that_took_the_whole_feed_is_stopped_between_groups_of_writes(
        stoptest: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = stoptest
    assert hub.run_connection("src", "in").status == "succeeded"
    monkeypatch.setattr(engine, "PUSH_COMMIT_EVERY", 5)
    STOP["write_at"] = 7
    first = hub.run_connection("batchdst", "out")
    assert first.status == "interrupted"
    assert len(WRITTEN) == 10 and first.streams["eager"].written == 10  # up to the next group of 5
    assert len(rows(hub.store, outbound_t)) == 10
    hub.stopping.clear()
    STOP.pop("write_at")
    second = hub.run_connection("batchdst", "out")
    assert second.status == "succeeded" and second.streams["eager"].written == PEOPLE - 10
    assert sorted(WRITTEN) == sorted(set(WRITTEN)) and len(WRITTEN) == PEOPLE


def test_no_new_run_starts_once_stopping(stoptest: Any) -> None:
    hub = stoptest
    hub.stopping.set()
    assert hub.sync() == []
    assert rows(hub.store, source_t) == []
    assert hub.store.recent_runs() == []


def test_a_run_whose_lock_session_dies_stops_before_committing_more(pg_stoptest: Any) -> None:
    """The store session holding the run lock is killed (an idle-session timeout, a network cut):
    the server released the lock, another worker may start, so this run commits nothing more.
    (PostgreSQL only: a SQLite flock lives as long as its process.)"""
    hub = pg_stoptest

    def cut() -> None:
        pid = hub._locks["src"]._conn.connection.dbapi_connection.info.backend_pid
        with hub.store.engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

    STOP["cut_at"], STOP["cut"] = 25, cut
    first = hub.run_connection("src", "in")
    assert first.status == "failed" and "run lock" in first.error
    landed = len(rows(hub.store, source_t))
    assert landed == 24  # the batches before the cut; nothing after it
    assert hub.store.get_state("src", "people") == {"next": 20}
    STOP.pop("cut_at")
    second = hub.run_connection("src", "in")
    assert second.status == "succeeded" and len(rows(hub.store, source_t)) == PEOPLE
