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
import hashlib
import os
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
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)

