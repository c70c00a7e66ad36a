"""SQLite run locks leave nothing behind: lock files go with their run, stale ones with the next.

Before, every connection ever run left a ``store.db.lock-<digest>`` file beside the store
forever (issue 16, "Leftovers").
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
from pathlib import Path

from synchub.locks import _sqlite_lock_path, connection_lock, sweep_lock_files
from synchub.store import Store


def _lock_files(db: Path) -> list[str]:
    return sorted(p.name for p in db.parent.glob(db.name + ".lock-*"))


def test_a_run_lock_file_goes_with_its_run(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    store = Store(f"sqlite:///{db}")
    with connection_lock(store, "shop") as lock:
        assert lock is not None
        assert len(_lock_files(db)) == 1
    assert _lock_files(db) == []


def test_stale_lock_files_are_swept_but_held_ones_and_foreign_files_stay(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    store = Store(f"sqlite:///{db}")
    stale = _sqlite_lock_path(store, "renamed-connection")
    held = _sqlite_lock_path(store, "busy")
    assert stale and held
    Path(stale).write_text("")  # left by a run killed with -9
    fd = os.open(held, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another process's running run (own description)
    foreign = tmp_path / "store.db.lock-notours"
    foreign.write_text("")
    try:
        with connection_lock(store, "shop") as lock:
            assert lock is not None
            assert Path(held).exists() and not Path(stale).exists()
        with connection_lock(store, "busy") as lock:
            assert lock is None  # still held: the sweep did not take it away
        assert foreign.exists()
        assert _lock_files(db) == sorted([Path(held).name, foreign.name])
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    assert sweep_lock_files(store) == 1
    assert _lock_files(db) == [foreign.name]


def _hammer(url: str, marker: str, rounds: int, out: multiprocessing.Queue) -> None:
    store = Store(url)
    clashes = taken = 0
    for _ in range(rounds):
        with connection_lock(store, "shop") as lock:
            if lock is None:
                continue
            taken += 1
            with open(marker, "a+") as fh:
                fh.seek(0)
                if fh.read():
                    clashes += 1
                fh.write(str(os.getpid()))
            os.sched_yield()
            os.truncate(marker, 0)
    out.put((taken, clashes))


def test_removing_lock_files_never_lets_two_processes_hold_one_lock(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    marker = str(tmp_path / "holder")
    Path(marker).write_text("")
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(url, marker, 400, out)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert all(p.exitcode == 0 for p in procs)
    assert sum(t for t, _ in results) > 0
    assert sum(c for _, c in results) == 0
