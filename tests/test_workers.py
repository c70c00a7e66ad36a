"""``synchub serve`` as real worker processes on one store: one run at a time across workers,
a killed worker's run taken over, graceful and immediate stops without loss."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from synchub.store import Store, run_t, source_t
from tests.helpers import write_people_mapping

FILES = 8
ROWS_PER_FILE = 400
TOTAL = FILES * ROWS_PER_FILE


def _write_setup(tmp: Path, store_url: str, *, interval: str = "2s", files: int = FILES, batch: int = 100,
                 total: int = TOTAL) -> Path:
    """``total`` people in ``files`` CSV files, read in batches of ``batch`` (never in bulk: these
    tests stop runs between batches; bulk loads are stopped in test_stop)."""
    data = tmp / "data"
    data.mkdir()
    per_file = total // files
    for f in range(files):
        lines = ["id;email;first;last"]
        for i in range(per_file):
            n = f * per_file + i
            lines.append(f"{n};person{n}@example.org;Vorname{n};Nachname{n}")
        (data / f"people{f}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_people_mapping(tmp / "mappings")
    cfg = tmp / "synchub.yaml"
    cfg.write_text(textwrap.dedent(f"""\
        store: '{store_url}'
        mappings_dir: [mappings]
        defaults: {{batch_size: {batch}, bulk_load: never}}
        serve: {{metrics_port: 0}}
        match:
          person: {{keys: [email], fuzzy: true}}
        connections:
          people:
            connector: files
            settings: {{path: data}}
            schedule: {{interval: {interval}, misfire_grace_seconds: 60}}
            streams:
              people:
                mapping: people
                settings: {{pattern: "people*.csv", primary_key: id}}
        """), encoding="utf-8")
    return cfg


def _serve(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "synchub.cli", "--config", str(cfg), "serve"],
                                stdout=fh, stderr=subprocess.STDOUT, env=env)


def _runs(store: Store) -> list[dict]:
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(run_t).order_by(run_t.c.id))]


def _sources(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(source_t)).scalar() or 0)


def _wait(what: str, cond: Callable[[], object], timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _running_midway(store: Store, total: int = TOTAL) -> dict | None:
    """A run that is running and has committed some, not all, of its rows."""
    running = [r for r in _runs(store) if r["status"] == "running"]
    n = _sources(store)
    return running[0] if running and 0 < n < total else None


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def _assert_all_once(store: Store, total: int = TOTAL) -> None:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(source_t.c.source_id, source_t.c.golden_id)).all()
    assert len(rows) == total
    assert len({r.source_id for r in rows}) == total
    assert len({r.golden_id for r in rows}) == total  # distinct people stay apart, none twice


def test_workers_on_one_postgresql_store_run_a_connection_once_at_a_time(
    tmp_path: Path, pg_store_url: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    """Several machines share PostgreSQL (the SQLite lock across processes: test_scheduler)."""
    store_url = pg_store_url
    total = 9_600  # a run of several seconds: the other workers' 2 s slots fire while it runs
    cfg = _write_setup(tmp_path, store_url, total=total, batch=200)
    store = Store(store_url)
    store.upgrade()
    workers = {}
    for i in range(3):
        p = _serve(cfg, tmp_path / f"worker{i}.log")
        procs.append(p)
        workers[p.pid] = p
    victim_run = _wait("a run midway", lambda: _running_midway(store, total), 90)
    assert isinstance(victim_run, dict)
    victim_pid = int(victim_run["worker"].rsplit(":", 1)[1])
    assert victim_pid in workers
    # While the victim runs, the other workers fire on their 2 s slots and must all skip.
    time.sleep(2.2)
    assert [r["id"] for r in _runs(store) if r["id"] > victim_run["id"]] == []
    assert _sources(store) < total, "the run ended before the kill: make it longer"
    killed_at = datetime.now(timezone.utc)
    os.kill(victim_pid, signal.SIGKILL)
    workers[victim_pid].wait(10)

    def finished() -> bool:
        runs = _runs(store)
        return any(r["status"] == "succeeded" and r["id"] > victim_run["id"] for r in runs)

    _wait("another worker to finish the sync", finished, 120)
    for pid, p in workers.items():
        if pid != victim_pid:
            p.send_signal(signal.SIGTERM)
    for p in workers.values():
        p.wait(60)
    runs = _runs(store)
    victim = next(r for r in runs if r["id"] == victim_run["id"])
    assert victim["status"] == "abandoned", victim
    # Never two runs of the connection at once: each starts after the one before ended.
    for before, after in itertools.pairwise(runs):
        assert before["finished_at"] is not None and after["started_at"] >= before["finished_at"], (before, after)
    takeover = next(r for r in runs if r["id"] > victim["id"] and r["status"] == "succeeded")
    assert takeover["worker"] != victim["worker"]
    assert all(r["started_at"] >= killed_at for r in runs if r["id"] > victim["id"])
    _assert_all_once(store, total)
    store.dispose()


def _state(store: Store) -> dict:
    return store.get_state("people", "people") or {}


def test_sigterm_commits_the_batch_saves_the_cursor_and_exits(
    tmp_path: Path, store_url: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    cfg = _write_setup(tmp_path, store_url, interval="1h")
    store = Store(store_url)
    store.upgrade()
    p = _serve(cfg, tmp_path / "serve.log")
    procs.append(p)
    # Stop once at least one file is done (its cursor saved) and the run is still going.
    _wait("a file done midway",
          lambda: _running_midway(store) and 0 < len(_state(store).get("files", {})) < FILES // 2, 90)
    p.send_signal(signal.SIGTERM)
    assert p.wait(30) == 0, (tmp_path / "serve.log").read_text()
    run = _runs(store)[-1]
    assert run["status"] == "interrupted", run
    landed = _sources(store)
    done_files = _state(store)["files"]
    assert 0 < len(done_files) < FILES
    assert len(done_files) * ROWS_PER_FILE <= landed < TOTAL and landed % 100 == 0  # whole batches only
    # The next run goes on from the cursor: it reads only the files not done yet.
    out = subprocess.run([sys.executable, "-m", "synchub.cli", "--config", str(cfg), "--json", "sync", "people"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    rerun = _runs(store)[-1]
    assert rerun["status"] == "succeeded"
    assert rerun["counts"]["streams"]["people"]["read"] == TOTAL - len(done_files) * ROWS_PER_FILE
    _assert_all_once(store)
    store.dispose()


def test_a_second_sigterm_exits_at_once_and_the_next_run_loses_nothing(
    tmp_path: Path, store_url: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    # One file in batches of 3000: after the first SIGTERM the run would go on to its next batch
    # boundary, seconds away; the second SIGTERM does not wait for it.
    total = 8_000
    cfg = _write_setup(tmp_path, store_url, interval="1h", files=1, batch=3000, total=total)
    store = Store(store_url)
    store.upgrade()
    p = _serve(cfg, tmp_path / "serve.log")
    procs.append(p)
    _wait("a run midway", lambda: _running_midway(store, total), 120)
    time.sleep(0.3)  # into the next batch: right at a boundary the first SIGTERM would end it at once
    landed = _sources(store)
    p.send_signal(signal.SIGTERM)
    # Two signals before Python runs its handler count as one: wait until the first was seen.
    _wait("the first SIGTERM handled", lambda: "received signal" in (tmp_path / "serve.log").read_text(), 10)
    assert p.poll() is None, "the first SIGTERM waits for the batch"
    p.send_signal(signal.SIGTERM)
    started = time.monotonic()
    code = p.wait(10)
    assert time.monotonic() - started < 5
    assert code == 128 + signal.SIGTERM
    assert _sources(store) == landed  # the batch in flight was rolled back, not half written
    out = subprocess.run([sys.executable, "-m", "synchub.cli", "--config", str(cfg), "sync", "people"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    runs = _runs(store)
    assert runs[0]["status"] == "abandoned" and runs[-1]["status"] == "succeeded"
    _assert_all_once(store, total)
    store.dispose()


def test_kill_9_mid_run_leaves_a_store_the_next_run_finishes(
    tmp_path: Path, store_url: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    """Power loss or kill -9 in the middle of a batch: committed batches stay (SQLite in WAL with
    synchronous=FULL), the one in flight is gone, and the next run ends with every row once."""
    cfg = _write_setup(tmp_path, store_url, interval="1h", batch=300)
    store = Store(store_url)
    store.upgrade()
    p = _serve(cfg, tmp_path / "serve.log")
    procs.append(p)
    _wait("a run midway", lambda: _running_midway(store), 90)
    p.kill()
    assert p.wait(10) == -signal.SIGKILL
    if store_url.startswith("sqlite"):
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("PRAGMA integrity_check")).scalar() == "ok"
    out = subprocess.run([sys.executable, "-m", "synchub.cli", "--config", str(cfg), "sync", "people"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    runs = _runs(store)
    assert [r["status"] for r in runs] == ["abandoned", "succeeded"]
    _assert_all_once(store)
    store.dispose()
