"""Shared fixtures. Every store test runs twice: on a SQLite file and on the PostgreSQL server.

PostgreSQL: ``SYNCHUB_TEST_PG_URL`` (default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``).
Each test gets its own schema there, dropped afterwards. If the server cannot be reached the
PostgreSQL tests *fail*; set ``SYNCHUB_TEST_POSTGRES=skip`` to skip them on a machine without it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from synchub import redact
from synchub.store import Store

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("SYNCHUB_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_schema_url(schema: str) -> str:
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path):
    """A fresh, empty store URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    yield from _pg_schema()


@pytest.fixture
def second_url(store_url: str, tmp_path: Path):
    """A second fresh store on the backend of ``store_url`` (to compare two ways of syncing)."""
    if store_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'second.db'}"
    else:
        yield from _pg_schema()


@pytest.fixture
def pg_store_url():
    """A fresh, empty PostgreSQL store URL, for what only PostgreSQL does (several machines, a
    lock held by a database session)."""
    yield from _pg_schema()


def _pg_schema():
    if os.environ.get("SYNCHUB_TEST_POSTGRES") == "skip":
        pytest.skip("SYNCHUB_TEST_POSTGRES=skip")
    admin = sa.create_engine(PG_URL)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.fail(f"PostgreSQL at {PG_URL} is not reachable (set SYNCHUB_TEST_POSTGRES=skip to skip): {exc}")
    try:
        yield _pg_schema_url(schema)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def store(store_url: str):
    s = Store(store_url)
    s.upgrade()
    yield s
    s.dispose()


@pytest.fixture(autouse=True)
def _clean_secrets():
    yield
    redact._reset_for_tests()


@pytest.fixture
def demo_dir(tmp_path: Path) -> Path:
    """A copy of the repository's demo config, mappings and data in a temp folder."""
    for sub in ("config", "mappings", "demo"):
        shutil.copytree(ROOT / sub, tmp_path / sub)
    return tmp_path
