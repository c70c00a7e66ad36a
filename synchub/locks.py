"""At most one run of a connection at a time, across every process that shares the store.

* PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``) held on its own database
  connection for the length of the run. When a worker dies, its connection closes and the
  server releases the lock: no stale lock, no lease to expire.
* SQLite file: an exclusive ``flock`` on a lock file beside the database; the kernel releases it
  when the process dies. (SQLite is for one machine; several machines share PostgreSQL.)
* In-memory SQLite: a lock inside this process only.

Inside one process a thread lock comes first, so two jobs of one worker never even ask.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import sqlalchemy as sa

from synchub.errors import SynchubError

if TYPE_CHECKING:
    from synchub.store import Store

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: SQLite locks only within this process
    fcntl = None  # type: ignore[assignment]

_local: dict[str, threading.Lock] = {}
_local_guard = threading.Lock()


class LockLost(SynchubError):
    """The store session that held a run lock is gone, and with it the lock: another worker may
    run the connection now, so this run must stop before it commits anything more."""


class RunLock:
    """A held run lock. :meth:`check` before each commit: it raises :class:`LockLost` if the
    lock's database session died (a killed idle session, a network cut), since the server has
    released the lock then."""

    def __init__(self, name: str, conn: sa.Connection | None = None):
        self.name = name
        self._conn = conn

    def check(self) -> None:
        if self._conn is None:
            return  # a flock or a thread lock lives as long as this process
        try:
            self._conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as exc:
            why = type(getattr(exc, "orig", None) or exc).__name__
            raise LockLost(f"connection {self.name!r}: the store session holding its run lock is gone "
                           f"({why}); stopping before anything more is committed") from None


@contextmanager
def connection_lock(store: Store, name: str) -> Iterator[RunLock | None]:
    """Try to take the run lock of connection ``name``: a :class:`RunLock`, or None when another
    job or worker holds it. Never waits."""
    with _local_guard:
        local = _local.setdefault(f"{store.url}\0{name}", threading.Lock())
    if not local.acquire(blocking=False):
        yield None
        return
    try:
        if store.dialect == "postgresql":
            with _pg_lock(store, name) as lock:
                yield lock
        elif fcntl is not None and (path := _sqlite_lock_path(store, name)) is not None:
            sweep_lock_files(store)
            with _file_lock(path) as got:
                yield RunLock(name) if got else None
        else:
            yield RunLock(name)
    finally:
        local.release()


#: Advisory locks are per database; the schema in the key keeps two stores in one database
#: (two installations, or parallel test runs) from blocking each other's connections.
_PG_KEY = "hashtextextended('synchub:' || current_schema() || ':' || :name, 0)"


@contextmanager
def _pg_lock(store: Store, name: str) -> Iterator[RunLock | None]:
    # A connection of its own (not from the pool the run's work uses), kept alive by TCP
    # keepalives and exempt from idle_session_timeout: it idles while the run works.
    conn = store.lock_engine().connect().execution_options(isolation_level="AUTOCOMMIT")
    try:
        with contextlib.suppress(sa.exc.DBAPIError):
            conn.execute(sa.text("SET idle_session_timeout = 0"))  # PostgreSQL 14+
        key = conn.execute(sa.text(f"SELECT {_PG_KEY}"), {"name": name}).scalar()
        got = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        try:
            yield RunLock(name, conn) if got else None
        finally:
            if got:
                try:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                except sa.exc.SQLAlchemyError:
                    # The connection is gone, and the server released the lock with it.
                    conn.invalidate()
    finally:
        conn.close()


def _sqlite_lock_path(store: Store, name: str) -> str | None:
    db = sa.engine.make_url(store.url).database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{os.path.abspath(db)}.lock-{digest}"


@contextmanager
def _file_lock(path: str) -> Iterator[bool]:
    """An exclusive ``flock`` on ``path``, removed again when released (so lock files of renamed
    or removed connections do not pile up). Removal is safe because every taker checks, once it
    holds the lock, that ``path`` still names the file it locked, and starts over if not."""
    fd = _lock_existing_or_new(path)
    if fd is None:
        yield False
        return
    try:
        yield True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # while the lock is held: nobody can be between check and use
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _lock_existing_or_new(path: str, *, create: bool = True) -> int | None:
    """The descriptor of ``path``, flocked, or None when another process holds it (or, with
    ``create=False``, when there is no such file)."""
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o600)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        # Its holder removed the file after we opened it: lock the new one instead.
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        if not create:
            return None
    raise SynchubError(f"could not take the lock file {path}: it keeps being replaced")


def sweep_lock_files(store: Store) -> int:
    """Remove lock files beside a SQLite store that no process holds (left by a killed run, or
    by a connection that no longer exists). Only files named like ours, only unlocked ones."""
    if fcntl is None or store.dialect != "sqlite":
        return 0
    db = sa.engine.make_url(store.url).database
    if not db or db == ":memory:" or db.startswith("file:"):
        return 0
    removed = 0
    for path in glob.glob(glob.escape(os.path.abspath(db)) + ".lock-*"):
        if not _LOCK_SUFFIX.fullmatch(path.rsplit(".lock-", 1)[1]):
            continue
        fd = _lock_existing_or_new(path, create=False)
        if fd is None:
            continue  # held by a running run, or already gone
        try:
            os.unlink(path)
            removed += 1
        except FileNotFoundError:
            pass
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
    return removed


_LOCK_SUFFIX = re.compile(r"[0-9a-f]{16}")
