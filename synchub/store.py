"""The store: SQLModel tables and every statement the hub runs on them.

The stages of a sync (:mod:`synchub.prepare`, :mod:`synchub.apply`, :mod:`synchub.golden`), the
engine and the review commands call the functions here inside their transactions and hold no
SQL of their own; the store's run lock (:mod:`synchub.locks`) and its schema upgrades
(:mod:`synchub.migrate`) are the only statements kept elsewhere.

SQLite file by default, PostgreSQL by URL. The schema is created and upgraded only through
Alembic migrations (``synchub/migrations``), never by dropping data. Hot paths use SQLAlchemy
Core with batched statements (one ``IN`` lookup and one ``executemany`` per batch), so a sync
costs a handful of round trips per thousand records.

Tables:

* ``golden_record``: one row per customer (person or company): its canonical data, the
  provenance of each field unit, and a folded ``search_text`` for ``customers search``.
* ``source_record``: every record as each source last delivered it (mapped, canonical form), linked
  to its golden record. Golden records are derived from these, so merges can be undone.
* ``identity_key``: exact identity keys (email, phone, source id) of each source record, indexed;
  matching looks candidates up here.
* ``sync_state``: per (connection, stream) cursor, saved only after the data it covers committed.
* ``run``, ``rejected_record``, ``audit_log``, ``conflict``, ``outbound_state``, ``interaction``.
"""

from __future__ import annotations

import json
import operator
import os
import re
import socket
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field, SQLModel

from synchub.errors import StoreError
from synchub.redact import redact

if TYPE_CHECKING:
    from synchub.match import Owners


class BlockSizes(Protocol):
    """Blocking-key block sizes known to a caller (a dict, or a bulk load's view of its index)."""

    def __contains__(self, key: object, /) -> bool: ...
    def __getitem__(self, key: tuple[str, str], /) -> int: ...


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_golden_id() -> str:
    """A new golden record id: a random uuid, 32 hex digits, for records no source record
    names (a split) and when :func:`golden_id_for` is taken. Random, not ordered by time: an
    admin names a customer by a short prefix of its id (``customers show 3f9c2a``), and ids
    that start with a timestamp share their first dozen digits with every record of a sync.
    (Time-ordered ids made the golden-id indexes cheaper to write: 1M match-key rows in 5.8
    instead of 10.1 s, about 4 % of a first sync.)"""
    return uuid.uuid4().hex


#: Namespace of the golden ids derived from source records (a fixed random uuid).
_GOLDEN_IDS = uuid.UUID("6c1f2b7e-3d9a-4f51-9e0c-58a2d4b7c913")


def golden_id_for(kind: str, connection: str, stream: str, source_id: str) -> str:
    """The id of the golden record that a new source record creates: a name-based uuid of the
    record's identity (32 hex digits, spread like a random one). The same input gives the same
    ids on every run and every store, so matching's tie-breaks by id, and the ids an admin or a
    push sees, do not depend on chance. Taken only if that source record created a golden
    record before and was then removed (a source retired its id): the caller checks with
    :func:`existing_golden_ids` and takes a random id then."""
    return uuid.uuid5(_GOLDEN_IDS, f"{kind}\x1f{connection}\x1f{stream}\x1f{source_id}").hex


def existing_golden_ids(conn: sa.Connection, ids: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(sorted(set(ids))):
        found.update(conn.execute(sa.select(golden_t.c.id).where(in_(conn, golden_t.c.id, chunk))).scalars())
    return found


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
#: JSON where Python ``None`` is SQL NULL (not the JSON text ``null``), for "IS NULL" queries.
JSONOrNull = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def _json_col(nullable: bool = False) -> Any:
    return Field(default=None, sa_column=sa.Column(JSONType, nullable=nullable))


def _ts(nullable: bool = False, index: bool = False) -> Any:
    return Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=nullable, index=index))


class GoldenRecord(SQLModel, table=True):
    __tablename__ = "golden_record"
    # Bulk readers page through the active records of one kind in id order (iter_golden).
    __table_args__ = (sa.Index("ix_golden_record_scan", "kind", "status", "id"),)
    id: str = Field(primary_key=True, max_length=32)
    kind: str = Field(max_length=16)
    status: str = Field(default="active", max_length=16, index=True)  # active | merged | deleted
    merged_into: str | None = Field(default=None, max_length=32, index=True)
    display_name: str = Field(default="", max_length=300)
    search_text: str = Field(default="", sa_column=sa.Column(sa.Text, nullable=False, server_default=""))
    data: dict[str, Any] = _json_col()
    provenance: dict[str, Any] = _json_col()
    version: int = Field(default=1)
    created_at: datetime = _ts()
    updated_at: datetime = _ts(index=True)


class SourceRecord(SQLModel, table=True):
    __tablename__ = "source_record"
    __table_args__ = (sa.UniqueConstraint("connection", "stream", "source_id", name="uq_source_record"),)
    id: int | None = Field(default=None, primary_key=True)
    connection: str = Field(max_length=100)
    stream: str = Field(max_length=100)
    source_id: str = Field(max_length=500)
    kind: str = Field(max_length=16)
    golden_id: str = Field(max_length=32, index=True)
    data: dict[str, Any] = _json_col()
    content_hash: str = Field(max_length=64)
    observed_at: datetime = _ts()
    first_seen_at: datetime = _ts()
    changed_at: datetime = _ts()
    #: When a source last showed the record as it is (delivered it, changed or not, or listed its
    #: id in a full listing); kept to the day: a re-read the same day writes nothing. NULL in
    #: stores from before (read as ``changed_at``).
    confirmed_at: datetime | None = _ts(nullable=True)
    deleted: bool = Field(default=False)
    #: Values of this record the hub could not use (quarantined: kept out of the canonical data)
    #: or uses unverified, each ``{"field", "source", "rule", "raw", "reason", "status"}``;
    #: NULL when every value was usable. Replaced whenever the source sends the record again.
    quarantine: list[dict[str, Any]] | None = Field(default=None, sa_column=sa.Column(JSONOrNull, nullable=True))
    #: Hash of the raw row the record was prepared from (:mod:`synchub.prepare`); NULL: prepare
    #: it again on its next read.
    raw_hash: str | None = Field(default=None, max_length=64)


class IdentityKey(SQLModel, table=True):
    __tablename__ = "identity_key"
    __table_args__ = (sa.Index("ix_identity_key_lookup", "kind", "key_type", "key_value"),)
    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)
    key_type: str = Field(max_length=32)
    key_value: str = Field(max_length=500)
    golden_id: str = Field(max_length=32, index=True)
    source_record_id: int = Field(index=True)


class SyncState(SQLModel, table=True):
    __tablename__ = "sync_state"
    connection: str = Field(primary_key=True, max_length=100)
    stream: str = Field(primary_key=True, max_length=100)
    state: dict[str, Any] = _json_col()
    run_id: int | None = None
    updated_at: datetime = _ts()


class Run(SQLModel, table=True):
    __tablename__ = "run"
    __table_args__ = (sa.Index("ix_run_connection_started", "connection", "started_at"),)
    id: int | None = Field(default=None, primary_key=True)
    connection: str = Field(max_length=100, index=True)
    trigger: str = Field(default="cli", max_length=32)
    # running | succeeded | partial | failed | paused | interrupted | abandoned | skipped
    status: str = Field(default="running", max_length=16, index=True)
    started_at: datetime = _ts(index=True)
    finished_at: datetime | None = _ts(nullable=True)
    counts: dict[str, Any] = _json_col()
    error: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    worker: str = Field(default="", max_length=200)
    direction: str = Field(default="", sa_column=sa.Column(sa.String(8), nullable=False, server_default=""))
    api_calls: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))
    retries: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))
    throttled: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))


class RejectedRecord(SQLModel, table=True):
    __tablename__ = "rejected_record"
    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(index=True)
    connection: str = Field(max_length=100)
    stream: str = Field(max_length=100)
    ref: str = Field(default="", max_length=500)  # file:line, page/offset, API id
    source_id: str | None = Field(default=None, max_length=500)
    field: str | None = Field(default=None, max_length=200)
    reason: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    raw: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    created_at: datetime = _ts()


class QuarantinedValue(SQLModel, table=True):
    """One value a run could not use (or kept unverified), as the run read it: the record landed
    without it. Pruned with its run; the source record keeps its current ones."""

    __tablename__ = "quarantined_value"
    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(index=True)
    connection: str = Field(max_length=100)
    stream: str = Field(max_length=100)
    ref: str = Field(default="", max_length=500)  # file:line, page/offset, API id
    source_id: str | None = Field(default=None, max_length=500)
    field: str = Field(max_length=200)  # canonical field, e.g. phones, birth_date, address.postal_code
    source: str | None = Field(default=None, max_length=200)  # the source's own field name
    rule: str = Field(max_length=100)  # the check that failed: phone, email, parse_date, literal_error, ...
    status: str = Field(default="quarantined", max_length=16)  # quarantined | unverified
    raw: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    reason: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    created_at: datetime = _ts()


class AuditLog(SQLModel, table=True):
    __tablename__ = "audit_log"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _ts(index=True)
    actor: str = Field(max_length=200)  # "run:12", "user:alice", "cli"
    action: str = Field(max_length=50)  # create | update | merge | split | resolve | delete
    golden_id: str | None = Field(default=None, max_length=32, index=True)
    details: dict[str, Any] = _json_col()


class Conflict(SQLModel, table=True):
    __tablename__ = "conflict"
    id: int | None = Field(default=None, primary_key=True)
    fingerprint: str = Field(max_length=64, unique=True)  # the same conflict is logged once
    kind: str = Field(max_length=32)  # field | possible_duplicate
    golden_id: str = Field(max_length=32, index=True)
    other_golden_id: str | None = Field(default=None, max_length=32, index=True)
    field: str | None = Field(default=None, max_length=200, index=True)
    connections: str = Field(default="", max_length=500)  # comma separated, for filtering
    candidates: list[dict[str, Any]] = _json_col()
    rule: str | None = Field(default=None, max_length=100)
    applied: dict[str, Any] | None = _json_col(nullable=True)
    #: open | resolved, dismissed (by an admin) | closed (by the hub: no longer applies, e.g.
    #: its two records were merged; ``resolution`` says why)
    status: str = Field(default="open", max_length=16, index=True)
    created_at: datetime = _ts(index=True)
    resolved_by: str | None = Field(default=None, max_length=200)
    resolved_at: datetime | None = _ts(nullable=True)
    resolution: dict[str, Any] | None = _json_col(nullable=True)


class OutboundState(SQLModel, table=True):
    __tablename__ = "outbound_state"
    connection: str = Field(primary_key=True, max_length=100)
    stream: str = Field(primary_key=True, max_length=100)
    golden_id: str = Field(primary_key=True, max_length=32)
    payload_hash: str = Field(max_length=64)
    external_id: str | None = Field(default=None, max_length=500)
    pushed_at: datetime = _ts()
    payload: dict[str, Any] | None = _json_col(nullable=True)  # what was last written


class InteractionRow(SQLModel, table=True):
    __tablename__ = "interaction"
    __table_args__ = (
        sa.UniqueConstraint("connection", "stream", "source_id", name="uq_interaction"),
        sa.Index("ix_interaction_record", "connection", "stream", "record_id"),
        sa.Index("ix_interaction_owner", "connection", "owner_stream", "owner_id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    golden_id: str | None = Field(default=None, max_length=32, index=True)
    connection: str = Field(max_length=100)
    stream: str = Field(max_length=100)
    source_id: str = Field(max_length=500)
    record_id: str = Field(max_length=500)  # the source record the entry came from
    #: The source record (of this connection) whose timeline the entry is on: the record it came
    #: from, or for an order stream the customer it belongs to. The entry follows that record's
    #: golden id through merges and splits; ``golden_id`` is empty while the hub does not know
    #: the owner yet (or there is none, e.g. a guest order).
    owner_stream: str | None = Field(default=None, max_length=100)
    owner_id: str | None = Field(default=None, max_length=500)
    kind: str = Field(max_length=32)
    occurred_at: datetime = _ts(index=True)
    data: dict[str, Any] = _json_col()


class MatchKey(SQLModel, table=True):
    """Blocking keys of each golden record (phonetic name + postcode, birth date + postcode, ...):
    fuzzy matching looks candidates up here, a few indexed lookups per record."""

    __tablename__ = "match_key"
    __table_args__ = (sa.Index("ix_match_key_lookup", "kind", "key_type", "key_value"),)
    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)
    key_type: str = Field(max_length=32)
    key_value: str = Field(max_length=300)
    golden_id: str = Field(max_length=32, index=True)


class DeriveQueue(SQLModel, table=True):
    """Golden records a bulk timeline load touched, to derive once when the stream is read
    (and, after a crash, at the start of the connection's next pull)."""

    __tablename__ = "derive_queue"
    connection: str = Field(primary_key=True, max_length=100)
    golden_id: str = Field(primary_key=True, max_length=32)
    queued_at: datetime = _ts()


class MatchKeyStop(SQLModel, table=True):
    """Blocking keys shared by too many golden records to say anything (a common surname in a big
    city): their rows are dropped and never looked up again, so every block stays small."""

    __tablename__ = "match_key_stop"
    kind: str = Field(primary_key=True, max_length=16)
    key_type: str = Field(primary_key=True, max_length=32)
    key_value: str = Field(primary_key=True, max_length=300)


class MatchDecision(SQLModel, table=True):
    """An admin's decision about two golden records: keep them apart, or merge them."""

    __tablename__ = "match_decision"
    __table_args__ = (sa.UniqueConstraint("golden_a", "golden_b", name="uq_match_decision"),)
    id: int | None = Field(default=None, primary_key=True)
    golden_a: str = Field(max_length=32, index=True)  # golden_a < golden_b
    golden_b: str = Field(max_length=32, index=True)
    decision: str = Field(max_length=16)  # keep_apart | merge
    decided_by: str = Field(max_length=200)
    decided_at: datetime = _ts()
    reason: str | None = Field(default=None, max_length=500)


class FieldOverride(SQLModel, table=True):
    """A value an admin chose for one field of a golden record; it wins over the merge rules."""

    __tablename__ = "field_override"
    __table_args__ = (sa.UniqueConstraint("golden_id", "field", name="uq_field_override"),)
    id: int | None = Field(default=None, primary_key=True)
    golden_id: str = Field(max_length=32)
    field: str = Field(max_length=200)
    value: Any = _json_col(nullable=True)
    decided_by: str = Field(max_length=200)
    decided_at: datetime = _ts()
    conflict_id: int | None = None



class AppUser(SQLModel, table=True):
    """An account of the web console and the REST API (issue 19): a role, an argon2 password
    hash (never the password), and whether it may still log in."""

    __tablename__ = "app_user"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, sa_column_kwargs={"unique": True})
    role: str = Field(max_length=20)  # admin | steward | marketing | viewer
    password_hash: str = Field(max_length=255)
    language: str | None = Field(default=None, max_length=8)
    disabled: bool = False
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class ApiToken(SQLModel, table=True):
    """A token for scripts: only its SHA-256 is kept, the token itself is shown once."""

    __tablename__ = "api_token"
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(index=True)
    label: str = Field(max_length=100)
    token_hash: str = Field(max_length=64, sa_column_kwargs={"unique": True})
    created_at: datetime = _ts()
    last_used_at: datetime | None = _ts(nullable=True)
    revoked: bool = False


class WebSession(SQLModel, table=True):
    """A logged-in browser: the SHA-256 of the session cookie, whose user, until when."""

    __tablename__ = "web_session"
    id_hash: str = Field(primary_key=True, max_length=64)
    user_id: int = Field(index=True)
    created_at: datetime = _ts()
    expires_at: datetime = _ts(index=True)


class LoginFailure(SQLModel, table=True):
    """A failed login, by account name and client address: the rate limit counts these."""

    __tablename__ = "login_failure"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, index=True)
    address: str = Field(max_length=64)
    at: datetime = _ts(index=True)


class Suppression(SQLModel, table=True):
    """An identifier of an erased person (issue 20), as a salted hash (HMAC-SHA256 with the
    configured ``privacy.salt``): a record that carries one is not stored again, so no source
    re-creates the person. ``key_type``: ``email`` or ``source`` (connection/stream/source id)."""

    __tablename__ = "suppression"
    digest: str = Field(primary_key=True, max_length=64)
    key_type: str = Field(max_length=16)
    erasure_id: int | None = None
    created_at: datetime = _ts()


class Erasure(SQLModel, table=True):
    """One erasure of a person: who asked, when, and a non-reversible reference to the
    customer (HMAC of its id), so the audit can prove it happened without naming them."""

    __tablename__ = "erasure"
    id: int | None = Field(default=None, primary_key=True)
    ref: str = Field(max_length=64, index=True)
    requested_by: str = Field(max_length=200)
    requested_at: datetime = _ts()
    #: erase (a person's request) | retention:<rule>
    reason: str = Field(default="erase", max_length=200)


class ErasureReceipt(SQLModel, table=True):
    """What one connection (stream) was asked to erase and what it answered: ``requested``,
    ``confirmed``, ``failed`` (retried on the connection's next run while ``retryable``),
    ``pending`` (not asked yet, or a file export until its next write), ``manual`` (a source
    the hub cannot change, e.g. an import file: someone must remove the rows named in
    ``detail``). ``targets`` holds the destination's ids/e-mails only until it answered."""

    __tablename__ = "erasure_receipt"
    __table_args__ = (sa.Index("ix_erasure_receipt_open", "connection", "status"),)
    id: int | None = Field(default=None, primary_key=True)
    erasure_id: int = Field(index=True)
    connection: str = Field(max_length=100)
    stream: str = Field(max_length=100)
    status: str = Field(max_length=16)
    detail: str | None = Field(default=None, sa_column=sa.Column(sa.Text, nullable=True))
    retryable: bool = Field(default=True)
    targets: list[dict[str, Any]] | None = Field(default=None, sa_column=sa.Column(JSONOrNull, nullable=True))
    attempts: int = Field(default=0)
    updated_at: datetime = _ts()


T = SQLModel.metadata.tables
golden_t = T["golden_record"]
source_t = T["source_record"]
key_t = T["identity_key"]
state_t = T["sync_state"]
run_t = T["run"]
rejected_t = T["rejected_record"]
quarantined_t = T["quarantined_value"]
audit_t = T["audit_log"]
conflict_t = T["conflict"]
outbound_t = T["outbound_state"]
interaction_t = T["interaction"]
match_key_t = T["match_key"]
stop_t = T["match_key_stop"]
derive_queue_t = T["derive_queue"]
decision_t = T["match_decision"]
user_t = T["app_user"]
token_t = T["api_token"]
session_t = T["web_session"]
login_failure_t = T["login_failure"]
override_t = T["field_override"]
suppression_t = T["suppression"]
erasure_t = T["erasure"]
receipt_t = T["erasure_receipt"]
#: What the sync needs to know of a stored source record (:func:`lookup_source_records`).
_SOURCE_REF = (source_t.c.id, source_t.c.source_id, source_t.c.golden_id, source_t.c.content_hash, source_t.c.deleted,
               source_t.c.raw_hash, source_t.c.confirmed_at)

# SQLite caps bound parameters per statement; PostgreSQL's cap is 65535. Chunk IN lists below both.
_IN_CHUNK = 900


def in_(conn: sa.Connection, column: Any, values: Iterable[Any]) -> Any:
    """``column IN (values)``; on PostgreSQL ``column = ANY(:array)``: one parameter instead of
    one per value, so the statement's text is the same for every list and is neither rendered
    per value nor parsed again by the server (a batch lookup of 1,000 source ids: 9.5 -> 3.7 ms)."""
    if conn.dialect.name == "postgresql":
        return column == sa.any_(sa.bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(values)


def _chunks(items: list[Any], n: int = _IN_CHUNK) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


#: Below this many rows :func:`insert_rows` leaves the insert to SQLAlchemy.
_DIRECT_ROWS = 64


def insert_rows(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """``conn.execute(table.insert(), rows)`` for many rows: each value is converted by its
    column's own type (so the store holds exactly what SQLAlchemy would write), and the rows go
    to the driver in one call: ``executemany`` on SQLite, ``COPY`` on PostgreSQL. SQLAlchemy's
    per-row statement machinery cost more than the database itself for the sync's key tables."""
    if len(rows) < _DIRECT_ROWS:
        if rows:
            conn.execute(table.insert(), rows)
        return
    given = list(rows[0])
    defaults: dict[str, Any] = {}  # Python-side defaults of the columns not given
    for c in table.columns:
        if c.name not in rows[0] and c.default is not None:
            if not c.default.is_scalar:
                conn.execute(table.insert(), rows)
                return
            defaults[c.name] = c.default.arg  # type: ignore[attr-defined]
    tail = tuple(defaults.values())
    if len(given) == 1:
        only = given[0]
        tuples = [(row[only], *tail) for row in rows]
    else:
        get = operator.itemgetter(*given)
        tuples = [get(row) + tail for row in rows]
    insert_tuples(conn, table, given + list(defaults), tuples)


def insert_tuples(conn: sa.Connection, table: sa.Table, names: list[str], rows: list[tuple[Any, ...]]) -> None:
    """:func:`insert_rows` for rows given as tuples of the columns ``names`` (no dict per row)."""
    if len(rows) < _DIRECT_ROWS:
        if rows:
            conn.execute(table.insert(), [dict(zip(names, row, strict=True)) for row in rows])
        return
    dialect = conn.dialect
    procs = [table.c[n].type._cached_bind_processor(dialect) for n in names]
    if any(p is not None for p in procs):
        rows = [tuple(v if p is None else p(v) for p, v in zip(procs, row, strict=True)) for row in rows]
    quote = dialect.identifier_preparer
    target = f"{quote.format_table(table)} ({', '.join(quote.quote(n) for n in names)})"
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        if dialect.name == "postgresql":
            with cursor.copy(f"COPY {target} FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        else:  # sqlite3: qmark parameters
            cursor.executemany(f"INSERT INTO {target} VALUES ({', '.join('?' * len(names))})", rows)
    finally:
        cursor.close()


def _json_dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)


class Store:
    """A handle on one store database. Cheap to create; call :meth:`upgrade` once before use."""

    def __init__(self, url: str, *, echo: bool = False):
        self.url = url
        # hide_parameters: statement parameters are customer data; they must never reach an
        # error message, a log line or a stored run error.
        kwargs: dict[str, Any] = {"echo": echo, "json_serializer": _json_dumps, "future": True, "hide_parameters": True}
        if url.startswith("sqlite"):
            db = sa.engine.make_url(url).database
            if db and db != ":memory:" and not db.startswith("file:"):
                os.makedirs(os.path.dirname(os.path.abspath(db)), exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True
            kwargs["connect_args"] = dict(_PG_KEEPALIVE)
            # serve runs up to serve.threads connections at once, each with a connection or two.
            kwargs["pool_size"], kwargs["max_overflow"] = 10, 60
        try:
            self.engine = sa.create_engine(url, **kwargs)
        except Exception as exc:  # bad URL, missing driver
            raise StoreError(f"cannot open store {redact(_safe_url(url))}: {redact(exc)}") from None
        self.dialect = self.engine.dialect.name
        self._lock_engine: sa.Engine | None = None
        if self.dialect == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)

    def __repr__(self) -> str:
        return f"Store({_safe_url(self.url)!r})"

    @property
    def display_url(self) -> str:
        return _safe_url(self.url)

    def upgrade(self) -> None:
        """Create or upgrade the schema to the newest migration (Alembic ``upgrade head``)."""
        from synchub.migrate import upgrade

        try:
            upgrade(self.engine)
        except Exception as exc:
            raise StoreError(f"cannot upgrade store {self.display_url}: {redact(exc)}") from exc

    def analyze(self) -> None:
        """Refresh PostgreSQL's planner statistics of the hot lookup tables. A store filled in one
        long run otherwise keeps the statistics of an empty table, and the planner turns the
        batched ``IN`` lookups into sequential scans (seen as seconds per query at 100k rows)."""
        if self.dialect != "postgresql":
            return
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            conn.execute(sa.text("ANALYZE identity_key, match_key, match_key_stop, source_record, golden_record"))

    def lock_engine(self) -> sa.Engine:
        """Connections for run locks (:mod:`synchub.locks`): unpooled, so a worker's locks never
        take connections its runs need, and each lock's session ends with its release."""
        if self._lock_engine is None:
            self._lock_engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool, hide_parameters=True,
                                                 connect_args=dict(_PG_KEEPALIVE))
        return self._lock_engine

    def ping(self) -> None:
        """Raise if the store cannot be reached (health checks)."""
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
        if self._lock_engine is not None:
            self._lock_engine.dispose()

    @contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """A connection inside one transaction: committed on success, rolled back on error."""
        with self.engine.begin() as conn:
            yield conn

    # ----- sync state -------------------------------------------------------------------------

    def get_state(self, connection: str, stream: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(state_t.c.state).where(state_t.c.connection == connection, state_t.c.stream == stream)
            ).first()
        return row[0] if row else None

    def save_state(self, connection: str, stream: str, state: dict[str, Any], run_id: int | None) -> None:
        with self.begin() as conn:
            save_state(conn, connection, stream, state, run_id)

    # ----- runs -------------------------------------------------------------------------------

    def start_run(self, connection: str, trigger: str = "cli", direction: str = "") -> int:
        with self.begin() as conn:
            res = conn.execute(
                run_t.insert().values(
                    connection=connection, trigger=trigger, status="running", started_at=utcnow(),
                    counts={}, worker=f"{socket.gethostname()}:{os.getpid()}", direction=direction,
                )
            )
            return int(res.inserted_primary_key[0])

    def finish_run(self, run_id: int, status: str, counts: dict[str, Any], error: str | None = None,
                   api: dict[str, int] | None = None) -> None:
        api = api or {}
        with self.begin() as conn:
            # Only a run still marked running: one another worker marked abandoned (this worker
            # lost its lock) keeps that verdict.
            conn.execute(
                run_t.update().where(run_t.c.id == run_id, run_t.c.status == "running").values(
                    status=status, finished_at=utcnow(), counts=counts,
                    error=redact(error) if error else None,
                    api_calls=api.get("calls", 0), retries=api.get("retries", 0), throttled=api.get("throttled", 0),
                )
            )

    def abandon_runs(self, connection: str) -> int:
        """Mark runs of ``connection`` still ``running`` as ``abandoned``: call only while holding
        the connection's run lock, when no live worker can be running it."""
        with self.begin() as conn:
            res = conn.execute(
                run_t.update().where(run_t.c.connection == connection, run_t.c.status == "running").values(
                    status="abandoned", finished_at=utcnow(),
                    error="the worker stopped during the run (killed, crashed or lost its store connection)",
                )
            )
            return int(res.rowcount or 0)

    def ran_since(self, connection: str, direction: str, moment: datetime) -> bool:
        """Whether a run of ``connection`` in ``direction`` started at or after ``moment`` and was
        not cut short (a run abandoned by a dead worker or interrupted by a stop does not count)."""
        with self.engine.connect() as conn:
            q = sa.select(run_t.c.id).where(
                run_t.c.connection == connection, run_t.c.direction == direction, run_t.c.started_at >= moment,
                run_t.c.status.not_in(("abandoned", "interrupted")),
            ).limit(1)
            return conn.execute(q).first() is not None

    def last_run_start(self, connection: str, direction: str) -> datetime | None:
        with self.engine.connect() as conn:
            q = sa.select(run_t.c.started_at).where(
                run_t.c.connection == connection, run_t.c.direction == direction,
            ).order_by(run_t.c.started_at.desc()).limit(1)
            return conn.execute(q).scalar()

    def prune_runs(self, older_than: datetime) -> int:
        """Delete finished runs that started before ``older_than``, with their rejected records
        and quarantined values."""
        with self.begin() as conn:
            old = sa.select(run_t.c.id).where(run_t.c.started_at < older_than, run_t.c.status != "running")
            conn.execute(rejected_t.delete().where(rejected_t.c.run_id.in_(old)))
            conn.execute(quarantined_t.delete().where(quarantined_t.c.run_id.in_(old)))
            res = conn.execute(run_t.delete().where(run_t.c.id.in_(old)))
            return int(res.rowcount or 0)

    def recent_runs(self, limit: int = 20, connection: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(run_t).order_by(run_t.c.id.desc()).limit(limit)
        if connection:
            q = q.where(run_t.c.connection == connection)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def get_run(self, run_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(run_t).where(run_t.c.id == run_id)).first()
            return dict(row._mapping) if row else None

    def rejected_for_run(self, run_id: int, limit: int = 1000) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            q = sa.select(rejected_t).where(rejected_t.c.run_id == run_id).order_by(rejected_t.c.id).limit(limit)
            return [dict(r._mapping) for r in conn.execute(q)]

    def quarantined_for_run(self, run_id: int, limit: int = 1000) -> list[dict[str, Any]]:
        """The values ``run_id`` read but could not use (or kept unverified), in reading order."""
        with self.engine.connect() as conn:
            q = sa.select(quarantined_t).where(quarantined_t.c.run_id == run_id).order_by(quarantined_t.c.id).limit(limit)
            return [dict(r._mapping) for r in conn.execute(q)]

    def quarantined_values(self, *, connection: str | None = None, stream: str | None = None,
                           field: str | None = None, status: str | None = None,
                           limit: int | None = 1000) -> list[dict[str, Any]]:
        """What the store holds now that is not usable: one row per value of a live source record,
        ``{"connection", "stream", "source_id", "golden_id", "field", "source", "rule", "raw",
        "reason", "status", "changed_at"}``, newest records first. A value fixed at the source
        leaves this list with the next read of its record."""
        q = (sa.select(source_t.c.connection, source_t.c.stream, source_t.c.source_id, source_t.c.golden_id,
                       source_t.c.quarantine, source_t.c.changed_at)
             .where(source_t.c.quarantine.is_not(None), source_t.c.deleted.is_(False))
             .order_by(source_t.c.changed_at.desc(), source_t.c.id.desc()))
        if connection:
            q = q.where(source_t.c.connection == connection)
        if stream:
            q = q.where(source_t.c.stream == stream)
        out: list[dict[str, Any]] = []
        with self.engine.connect() as conn:
            for r in conn.execute(q):
                for entry in r.quarantine or ():
                    if field and entry.get("field") != field:
                        continue
                    if status and entry.get("status", "quarantined") != status:
                        continue
                    out.append({"connection": r.connection, "stream": r.stream, "source_id": r.source_id,
                                "golden_id": r.golden_id, "changed_at": r.changed_at,
                                "status": "quarantined", **entry})
                    if limit is not None and len(out) >= limit:
                        return out
        return out

    # ----- golden records ---------------------------------------------------------------------

    def display_names(self, golden_ids: Iterable[str]) -> dict[str, str]:
        """The display names of these golden records (merged-away ones included), in one read
        per chunk: a list of review items names its customers without loading their data."""
        out: dict[str, str] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(sorted(set(golden_ids))):
                rows = conn.execute(sa.select(golden_t.c.id, golden_t.c.display_name).where(in_(conn, golden_t.c.id, chunk)))
                out.update((r.id, r.display_name) for r in rows)
        return out

    def contacts_of(self, golden_ids: Iterable[str]) -> dict[str, tuple[str, str | None]]:
        """Name and first e-mail address of these golden records (a dry run's rows)."""
        out: dict[str, tuple[str, str | None]] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(sorted(set(golden_ids))):
                rows = conn.execute(sa.select(golden_t.c.id, golden_t.c.display_name, golden_t.c.data)
                                    .where(in_(conn, golden_t.c.id, chunk)))
                for r in rows:
                    emails = (r.data or {}).get("emails") or []
                    out[r.id] = (r.display_name, emails[0] if emails else None)
        return out

    def get_golden(self, golden_id: str, *, follow_merges: bool = True) -> dict[str, Any] | None:
        """A golden record by id or unique id prefix; a merged-away id leads to its survivor."""
        with self.engine.connect() as conn:
            for _ in range(20):
                row = conn.execute(sa.select(golden_t).where(golden_t.c.id == golden_id)).first()
                if row is None and len(golden_id) >= 4:
                    rows = conn.execute(
                        sa.select(golden_t).where(golden_t.c.id.like(golden_id.replace("%", "") + "%")).limit(2)
                    ).all()
                    row = rows[0] if len(rows) == 1 else None
                if row is None:
                    return None
                rec = dict(row._mapping)
                if follow_merges and rec["status"] == "merged" and rec["merged_into"]:
                    golden_id = rec["merged_into"]
                    continue
                return rec
        return None

    def search_golden(self, text: str, limit: int = 20, kind: str | None = None,
                      phone_region: str | None = "DE") -> list[dict[str, Any]]:
        """Active golden records found by name, company, city, e-mail, phone or source id.

        Each word must occur in the record's search text: a name word folded as names are
        (``Müller`` finds ``Mueller``), an e-mail address as normalised e-mail. A query that is
        a phone number in any format is normalised (national numbers in ``phone_region``) and
        found by its E.164 form. A query that is a source record's id (``source_id`` or
        ``connection/stream/source_id``) also finds that record's customer."""
        terms = search_terms(text, phone_region)
        q = sa.select(golden_t).where(golden_t.c.status == "active")
        for spellings in terms:
            q = q.where(sa.or_(*(golden_t.c.search_text.like(f"%{_escape_like(t)}%", escape="\\") for t in spellings)))
        if kind:
            q = q.where(golden_t.c.kind == kind)
        q = q.order_by(golden_t.c.display_name, golden_t.c.id).limit(limit)
        with self.engine.connect() as conn:
            found = {r.id: dict(r._mapping) for r in conn.execute(q)}
            by_source = self._golden_of_source_id(conn, text.strip())
            for gid in by_source:
                if gid not in found and len(found) < limit:
                    row = conn.execute(sa.select(golden_t).where(golden_t.c.id == gid, golden_t.c.status == "active",
                                                                 *([golden_t.c.kind == kind] if kind else []))).first()
                    if row is not None:
                        found[gid] = dict(row._mapping)
        return sorted(found.values(), key=lambda r: (r["display_name"] or "", r["id"]))

    @staticmethod
    def _golden_of_source_id(conn: sa.Connection, ref: str) -> list[str]:
        """Golden ids (merges followed) of the source records with this id, or this
        ``connection/stream/source_id``."""
        if not ref or len(ref) > 500:
            return []
        conds = [source_t.c.source_id == ref]
        parts = ref.split("/", 2)
        if len(parts) == 3 and all(parts):
            conds.append(sa.and_(source_t.c.connection == parts[0], source_t.c.stream == parts[1],
                                 source_t.c.source_id == parts[2]))
        ids = conn.execute(sa.select(source_t.c.golden_id).where(sa.or_(*conds)).distinct().limit(50)).scalars().all()
        return sorted({follow_merges(conn, g) for g in ids})

    def source_records_of(self, golden_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            q = sa.select(source_t).where(source_t.c.golden_id == golden_id).order_by(source_t.c.id)
            return [dict(r._mapping) for r in conn.execute(q)]

    def timeline_of(self, golden_id: str, limit: int = 50) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            q = (sa.select(interaction_t).where(interaction_t.c.golden_id == golden_id)
                 .order_by(interaction_t.c.occurred_at.desc()).limit(limit))
            return [dict(r._mapping) for r in conn.execute(q)]

    def audit_of(self, golden_id: str, limit: int = 50) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            q = sa.select(audit_t).where(audit_t.c.golden_id == golden_id).order_by(audit_t.c.id.desc()).limit(limit)
            return [dict(r._mapping) for r in conn.execute(q)]

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            out = {}
            for name, table, cond in (
                ("golden_active", golden_t, golden_t.c.status == "active"),
                ("source_records", source_t, None),
                ("open_conflicts", conflict_t, conflict_t.c.status == "open"),
                ("rejected", rejected_t, None),
                ("quarantined_records", source_t, source_t.c.quarantine.is_not(None)),
            ):
                q = sa.select(sa.func.count()).select_from(table)
                if cond is not None:
                    q = q.where(cond)
                out[name] = int(conn.execute(q).scalar_one())
            return out

    def iter_golden(self, kind: str, batch: int = 1000) -> Iterator[dict[str, Any]]:
        """Every active golden record of ``kind`` as ``{"id", "data"}``, ordered by id, streamed
        in pages (keyset). Provenance is left out: it is larger than the data and bulk readers
        (export, dedupe, key rebuild) do not need it; ``get_golden`` has it."""
        last = ""
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(golden_t.c.id, golden_t.c.data)
                    .where(golden_t.c.kind == kind, golden_t.c.status == "active", golden_t.c.id > last)
                    .order_by(golden_t.c.id).limit(batch)
                ).all()
            if not rows:
                return
            for r in rows:
                yield dict(r._mapping)
            last = rows[-1].id

    # ----- conflicts --------------------------------------------------------------------------

    def list_conflicts(self, status: str | None = "open", limit: int = 100, offset: int = 0, **filters: Any) -> list[dict[str, Any]]:
        q = sa.select(conflict_t).order_by(conflict_t.c.id.desc()).limit(limit).offset(offset)
        if filters.get("customer"):
            q = q.where(sa.or_(conflict_t.c.golden_id == filters["customer"], conflict_t.c.other_golden_id == filters["customer"]))
        if status:
            q = q.where(conflict_t.c.status == status)
        if filters.get("field"):
            q = q.where(conflict_t.c.field == filters["field"])
        if filters.get("kind"):
            q = q.where(conflict_t.c.kind == filters["kind"])
        if filters.get("connection"):
            q = q.where(conflict_t.c.connections.like(f"%{_escape_like(filters['connection'])}%", escape="\\"))
        if filters.get("id") is not None:
            q = q.where(conflict_t.c.id == filters["id"])
        if filters.get("older_than"):
            q = q.where(conflict_t.c.created_at < filters["older_than"])
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]


def save_state(conn: sa.Connection, connection: str, stream: str, state: dict[str, Any], run_id: int | None) -> None:
    now = utcnow()
    updated = conn.execute(
        state_t.update()
        .where(state_t.c.connection == connection, state_t.c.stream == stream)
        .values(state=state, run_id=run_id, updated_at=now)
    )
    if updated.rowcount == 0:
        conn.execute(state_t.insert().values(connection=connection, stream=stream, state=state, run_id=run_id, updated_at=now))


def load_for_derive(conn: sa.Connection, golden_ids: list[str]) -> tuple[
        dict[str, list[dict[str, Any]]], dict[str, sa.Row[Any]], dict[str, dict[str, Any]],
        dict[str, list[tuple[dict[str, Any], datetime]]]]:
    """What these golden records are derived from: (their source records, their stored row,
    the admin's overrides by field, their orders with the time of each)."""
    sources: dict[str, list[dict[str, Any]]] = {}
    current: dict[str, sa.Row[Any]] = {}
    overrides: dict[str, dict[str, Any]] = {}
    orders: dict[str, list[tuple[dict[str, Any], datetime]]] = {}
    for chunk in _chunks(golden_ids):
        q = sa.select(source_t.c.golden_id, source_t.c.connection, source_t.c.stream, source_t.c.source_id,
                      source_t.c.data, source_t.c.observed_at, source_t.c.deleted).where(in_(conn, source_t.c.golden_id, chunk))
        for r in conn.execute(q):
            sources.setdefault(r.golden_id, []).append(dict(r._mapping))
        q2 = sa.select(golden_t.c.id, golden_t.c.data, golden_t.c.provenance, golden_t.c.status,
                       golden_t.c.version).where(in_(conn, golden_t.c.id, chunk))
        for r in conn.execute(q2):
            current[r.id] = r
        for r in conn.execute(sa.select(override_t).where(in_(conn, override_t.c.golden_id, chunk))):
            overrides.setdefault(r.golden_id, {})[r.field] = {"value": r.value, "by": r.decided_by, "at": r.decided_at}
        q4 = sa.select(interaction_t.c.golden_id, interaction_t.c.data, interaction_t.c.occurred_at).where(
            in_(conn, interaction_t.c.golden_id, chunk), interaction_t.c.kind == "order")
        for r in conn.execute(q4):
            at = r.occurred_at if r.occurred_at.tzinfo else r.occurred_at.replace(tzinfo=timezone.utc)
            orders.setdefault(r.golden_id, []).append((r.data, at))
    return sources, current, overrides, orders


def interactions_of_records(conn: sa.Connection, connection: str, stream: str,
                            record_ids: list[str]) -> dict[str, list[sa.Row[Any]]]:
    """The timeline entries each of these source records gave (record_id, golden_id, owner_id,
    data), in their order."""
    out: dict[str, list[sa.Row[Any]]] = {}
    for chunk in _chunks(record_ids):
        q = sa.select(interaction_t.c.record_id, interaction_t.c.golden_id, interaction_t.c.owner_id,
                      interaction_t.c.data).where(
            interaction_t.c.connection == connection, interaction_t.c.stream == stream,
            in_(conn, interaction_t.c.record_id, chunk)).order_by(interaction_t.c.source_id)
        for r in conn.execute(q):
            out.setdefault(r.record_id, []).append(r)
    return out


def delete_interactions(conn: sa.Connection, connection: str, stream: str, record_ids: list[str]) -> None:
    """Remove the timeline entries these source records gave."""
    for chunk in _chunks(record_ids):
        conn.execute(interaction_t.delete().where(
            interaction_t.c.connection == connection, interaction_t.c.stream == stream,
            in_(conn, interaction_t.c.record_id, chunk)))


def queue_derive(conn: sa.Connection, connection: str, golden_ids: Iterable[str], now: datetime) -> None:
    """Queue golden records to derive again later (see :class:`DeriveQueue`)."""
    ids = sorted(set(golden_ids))
    queued: set[str] = set()
    for chunk in _chunks(ids):
        queued.update(conn.execute(sa.select(derive_queue_t.c.golden_id).where(
            derive_queue_t.c.connection == connection, in_(conn, derive_queue_t.c.golden_id, chunk))).scalars())
    rows = [{"connection": connection, "golden_id": g, "queued_at": now} for g in ids if g not in queued]
    if rows:
        insert_rows(conn, derive_queue_t, rows)


def queued_derives(conn: sa.Connection, connection: str, limit: int) -> list[str]:
    q = (sa.select(derive_queue_t.c.golden_id).where(derive_queue_t.c.connection == connection)
         .order_by(derive_queue_t.c.golden_id).limit(limit))
    return list(conn.execute(q).scalars())


def dequeue_derives(conn: sa.Connection, connection: str, golden_ids: list[str]) -> None:
    for chunk in _chunks(golden_ids):
        conn.execute(derive_queue_t.delete().where(derive_queue_t.c.connection == connection,
                                                   in_(conn, derive_queue_t.c.golden_id, chunk)))


def lookup_raw_hashes(conn: sa.Connection, connection: str, stream: str, source_ids: Iterable[str], *,
                      unconfirmed: set[str] | None = None, now: datetime | None = None) -> dict[str, str]:
    """The raw hash of each of these source records that has one (see :mod:`synchub.prepare`).
    ``unconfirmed`` collects those not confirmed within :data:`CONFIRM_GRAIN_HOURS` of ``now``."""
    found: dict[str, str] = {}
    stmt = _RAW_HASHES_PG if conn.dialect.name == "postgresql" else _RAW_HASHES
    due = (now or utcnow()) - timedelta(hours=CONFIRM_GRAIN_HOURS)
    for chunk in _chunks(sorted(set(source_ids))):
        for sid, raw_hash, confirmed in conn.execute(stmt, {"connection": connection, "stream": stream, "ids": chunk}):
            found[sid] = raw_hash
            if unconfirmed is not None and (confirmed is None or confirmed < due):
                unconfirmed.add(sid)
    return found


def confirmation_due(confirmed_at: datetime | None, now: datetime) -> bool:
    """Whether a record last confirmed at ``confirmed_at`` is to be confirmed again ``now``."""
    return confirmed_at is None or confirmed_at < now - timedelta(hours=CONFIRM_GRAIN_HOURS)


#: Built once: an unchanged re-read runs it for every batch (the PostgreSQL one as :func:`in_`).
_RAW_HASHES, _RAW_HASHES_PG = (sa.select(source_t.c.source_id, source_t.c.raw_hash, source_t.c.confirmed_at).where(
    source_t.c.connection == sa.bindparam("connection"), source_t.c.stream == sa.bindparam("stream"),
    ids, source_t.c.raw_hash.is_not(None)) for ids in (
        source_t.c.source_id.in_(sa.bindparam("ids", expanding=True)),
        source_t.c.source_id == sa.any_(sa.bindparam("ids", type_=ARRAY(source_t.c.source_id.type)))))


def lookup_source_records(conn: sa.Connection, connection: str, stream: str, source_ids: Iterable[str]) -> dict[str, sa.Row[Any]]:
    ids = list(set(source_ids))
    found: dict[str, sa.Row[Any]] = {}
    for chunk in _chunks(ids):
        q = sa.select(*_SOURCE_REF).where(
            source_t.c.connection == connection, source_t.c.stream == stream, in_(conn, source_t.c.source_id, chunk)
        )
        for row in conn.execute(q):
            found[row.source_id] = row
    return found


def lookup_keys(conn: sa.Connection, kind: str, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], set[str]]:
    """Golden ids that already own each (key_type, key_value)."""
    by_type: dict[str, set[str]] = {}
    for t, v in keys:
        by_type.setdefault(t, set()).add(v)
    out: dict[tuple[str, str], set[str]] = {}
    for key_type, values in by_type.items():
        for chunk in _chunks(sorted(values)):
            q = sa.select(key_t.c.key_value, key_t.c.golden_id).where(
                key_t.c.kind == kind, key_t.c.key_type == key_type, in_(conn, key_t.c.key_value, chunk)
            )
            for row in conn.execute(q):
                out.setdefault((key_type, row.key_value), set()).add(row.golden_id)
    return out


def _stopped(conn: sa.Connection, kind: str, by_type: dict[str, set[str]]) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for key_type, values in by_type.items():
        # Most key types never get a stop key (e-mail, phone): one probe instead of long IN lists.
        if conn.execute(sa.select(stop_t.c.key_value).where(stop_t.c.kind == kind, stop_t.c.key_type == key_type).limit(1)).first() is None:
            continue
        for chunk in _chunks(sorted(values)):
            q = sa.select(stop_t.c.key_value).where(stop_t.c.kind == kind, stop_t.c.key_type == key_type, in_(conn, stop_t.c.key_value, chunk))
            out |= {(key_type, r.key_value) for r in conn.execute(q)}
    return out


def _by_type(keys: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    by_type: dict[str, set[str]] = {}
    for t, v in keys:
        by_type.setdefault(t, set()).add(v[:300])
    return by_type


def lookup_match_keys(conn: sa.Connection, kind: str, keys: Iterable[tuple[str, str]], *, max_block: int,
                      sizes: dict[tuple[str, str], int] | None = None) -> dict[tuple[str, str], set[str]]:
    """Golden ids under each blocking key. Keys shared by more than ``max_block`` records are
    stop keys (see :func:`replace_match_keys`) and are not looked up: a block that large says
    nothing and would cost quadratic work. ``sizes``, if given, receives the block size of every
    key that was looked up (0 for none), for :func:`replace_match_keys` later in the same
    transaction."""
    by_type = _by_type(keys)
    stopped = _stopped(conn, kind, by_type)
    out: dict[tuple[str, str], set[str]] = {}
    for key_type, values in by_type.items():
        wanted = sorted(v for v in values if (key_type, v) not in stopped)
        for chunk in _chunks(wanted):
            q = sa.select(match_key_t.c.key_value, match_key_t.c.golden_id).where(
                match_key_t.c.kind == kind, match_key_t.c.key_type == key_type, in_(conn, match_key_t.c.key_value, chunk)
            )
            for row in conn.execute(q):
                out.setdefault((key_type, row.key_value), set()).add(row.golden_id)
        if sizes is not None:
            for v in wanted:
                sizes[(key_type, v)] = len(out.get((key_type, v), ()))
    return {k: v for k, v in out.items() if len(v) <= max_block}


def _count_upto(conn: sa.Connection, q: sa.Select[Any], limit: int) -> int:
    """Rows of ``q`` (a select of one column), counting no further than ``limit``."""
    return len(conn.execute(q.limit(limit)).all())


def count_source_records(conn: sa.Connection, connection: str, stream: str, *, limit: int = 1) -> int:
    """How many source records the store holds for one stream, counting no further than ``limit``."""
    return _count_upto(conn, sa.select(source_t.c.id).where(source_t.c.connection == connection, source_t.c.stream == stream), limit)


def count_live_source_records(conn: sa.Connection, connection: str, stream: str, *, seen_before: datetime) -> int:
    """How many records of one stream the hub holds as present at the source, of those it had
    before ``seen_before``."""
    return int(conn.execute(sa.select(sa.func.count()).select_from(source_t).where(
        source_t.c.connection == connection, source_t.c.stream == stream, source_t.c.deleted.is_(False),
        source_t.c.first_seen_at < seen_before)).scalar_one())


def count_golden(conn: sa.Connection, kind: str, *, limit: int) -> int:
    """How many golden records of ``kind`` the store holds (any status), counting no further than ``limit``."""
    return _count_upto(conn, sa.select(golden_t.c.id).where(golden_t.c.kind == kind), limit)


def count_interactions(conn: sa.Connection, connection: str, stream: str, *, limit: int = 1) -> int:
    """How many timeline entries the store holds from one stream, counting no further than ``limit``."""
    return _count_upto(conn, sa.select(interaction_t.c.id).where(interaction_t.c.connection == connection,
                                                                   interaction_t.c.stream == stream), limit)


def all_source_records(conn: sa.Connection, connection: str, stream: str) -> dict[str, sa.Row[Any]]:
    """:func:`lookup_source_records` for every record of one stream (a bulk load reads them once)."""
    q = sa.select(*_SOURCE_REF).where(source_t.c.connection == connection, source_t.c.stream == stream)
    return {row.source_id: row for row in conn.execute(q)}


def _owners_by_key(conn: sa.Connection, table: sa.Table, kind: str,
                   key: Callable[[tuple[str, str]], Any] | None = None) -> dict[Any, Owners]:
    from synchub.match import add_owner

    out: dict[Any, Owners] = {}
    q = sa.select(table.c.key_type, table.c.key_value, table.c.golden_id).where(table.c.kind == kind)
    for row in conn.execute(q):
        k = (row.key_type, row.key_value)
        add_owner(out, k if key is None else key(k), row.golden_id)
    return out


def all_keys(conn: sa.Connection, kind: str) -> dict[tuple[str, str], Owners]:
    """:func:`lookup_keys` for every identity key of ``kind`` (a single owner as its bare id)."""
    return _owners_by_key(conn, key_t, kind)


def all_match_keys(conn: sa.Connection, kind: str,
                   key: Callable[[tuple[str, str]], Any] | None = None) -> dict[Any, Owners]:
    """Every stored blocking key of ``kind`` (or ``key(key)`` of it) with its golden ids, a
    single one as its bare id (stop keys have no rows)."""
    return _owners_by_key(conn, match_key_t, kind, key)


def all_stop_keys(conn: sa.Connection, kind: str) -> set[tuple[str, str]]:
    q = sa.select(stop_t.c.key_type, stop_t.c.key_value).where(stop_t.c.kind == kind)
    return {(r.key_type, r.key_value) for r in conn.execute(q)}


def iter_active_golden_data(conn: sa.Connection, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(id, data) of every active golden record of ``kind``."""
    q = sa.select(golden_t.c.id, golden_t.c.data).where(golden_t.c.kind == kind, golden_t.c.status == "active")
    for r in conn.execute(q):
        yield r.id, r.data


def load_member_data(conn: sa.Connection, ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """The data of the live source records of each of these golden records, oldest first."""
    out: dict[str, list[dict[str, Any]]] = {}
    for chunk in _chunks(sorted(set(ids))):
        q = (sa.select(source_t.c.golden_id, source_t.c.deleted, source_t.c.data)
             .where(in_(conn, source_t.c.golden_id, chunk)).order_by(source_t.c.id))
        for r in conn.execute(q):
            if not r.deleted:
                out.setdefault(r.golden_id, []).append(r.data)
    return out


def load_keep_apart(conn: sa.Connection, ids: Iterable[str] | None) -> set[tuple[str, str]]:
    """Pairs (a, b), a < b, that an admin decided to keep apart, among those touching ``ids``
    (``None``: all of them, for a run over the whole store)."""
    if ids is None:
        q = sa.select(decision_t.c.golden_a, decision_t.c.golden_b).where(decision_t.c.decision == "keep_apart")
        return {(r.golden_a, r.golden_b) for r in conn.execute(q)}
    out: set[tuple[str, str]] = set()
    id_list = sorted(set(ids))
    for chunk in _chunks(id_list, 400):
        q = sa.select(decision_t.c.golden_a, decision_t.c.golden_b).where(
            decision_t.c.decision == "keep_apart",
            sa.or_(in_(conn, decision_t.c.golden_a, chunk), in_(conn, decision_t.c.golden_b, chunk)),
        )
        out |= {(r.golden_a, r.golden_b) for r in conn.execute(q)}
    return out


def replace_match_keys(conn: sa.Connection, kind: str, keys_by_golden: dict[str, list[tuple[str, str]]], *, max_block: int = 50,
                       known: BlockSizes | None = None, new: set[str] | frozenset[str] = frozenset()) -> None:
    """Store the blocking keys of these golden records (replacing their old ones). A key whose
    block grows past ``max_block`` becomes a stop key: its rows are deleted and it is neither
    stored nor looked up again, so no block ever holds more than ``max_block`` plus one batch.

    ``known`` are block sizes read earlier in this transaction (:func:`lookup_match_keys`) with
    no rows added since: a key whose known size plus the rows added now cannot pass
    ``max_block`` is not counted again (most of them; counting costs a grouped query per key
    type and chunk, the sync's slowest on PostgreSQL). ``new``: golden records just created, with
    no keys to replace."""
    ids = sorted(g for g in keys_by_golden if g not in new)
    for chunk in _chunks(ids):
        conn.execute(match_key_t.delete().where(in_(conn, match_key_t.c.golden_id, chunk)))
    all_keys = {(t, v[:300]) for keys in keys_by_golden.values() for t, v in keys}
    if not all_keys:
        return
    by_type = _by_type(all_keys)
    stopped = _stopped(conn, kind, by_type)
    rows = sorted((t, v[:300], kind, g)  # in index order: far fewer pages touched
                  for g, keys in keys_by_golden.items() for t, v in keys if (t, v[:300]) not in stopped)
    if not rows:
        return
    insert_tuples(conn, match_key_t, ["key_type", "key_value", "kind", "golden_id"], rows)
    added: dict[tuple[str, str], int] = {}
    if known is not None:
        for t, v, _kind, _g in rows:
            added[(t, v)] = added.get((t, v), 0) + 1

    def may_be_crowded(k: tuple[str, str]) -> bool:
        return known is None or k not in known or known[k] + added.get(k, 0) > max_block

    crowded: list[tuple[str, str]] = []
    for key_type, values in by_type.items():
        for chunk in _chunks(sorted(v for v in values if (key_type, v) not in stopped and may_be_crowded((key_type, v)))):
            q = (sa.select(match_key_t.c.key_value).where(
                    match_key_t.c.kind == kind, match_key_t.c.key_type == key_type, in_(conn, match_key_t.c.key_value, chunk))
                 .group_by(match_key_t.c.key_value).having(sa.func.count() > max_block))
            crowded += [(key_type, r.key_value) for r in conn.execute(q)]
    if crowded:
        conn.execute(stop_t.insert(), [{"kind": kind, "key_type": t, "key_value": v} for t, v in crowded])
        for t, v in crowded:
            conn.execute(match_key_t.delete().where(match_key_t.c.kind == kind, match_key_t.c.key_type == t, match_key_t.c.key_value == v))


# -- The data path's writes --------------------------------------------------------------------
# What a batch of a sync (synchub.apply), a derivation (synchub.golden) and a push or reconcile
# (synchub.engine) write, each inside the caller's transaction.


def update_by_id(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    """One executemany UPDATE of ``columns`` for rows keyed by ``_id``."""
    stmt = table.update().where(table.c.id == sa.bindparam("_id")).values({c: sa.bindparam(c) for c in columns})
    conn.execute(stmt, rows)


def insert_rejects(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    conn.execute(rejected_t.insert(), rows)


def insert_quarantined(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    conn.execute(quarantined_t.insert(), rows)


def insert_audit(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    insert_rows(conn, audit_t, rows)


#: Columns of a source record a changed read rewrites.
SOURCE_CHANGES = ("golden_id", "data", "content_hash", "observed_at", "changed_at", "confirmed_at", "deleted", "quarantine",
                  "raw_hash")

#: A record confirmed this recently is not written again to say it was confirmed.
CONFIRM_GRAIN_HOURS = 24


def confirm_source_records(conn: sa.Connection, connection: str, stream: str, source_ids: Iterable[str],
                           now: datetime) -> None:
    """A source showed these records unchanged (or listed them): they are confirmed ``now``.
    Only rows not confirmed within :data:`CONFIRM_GRAIN_HOURS` are written (callers that read
    ``confirmed_at`` anyway pass only those due, so an unchanged re-read writes nothing)."""
    stale = now - timedelta(hours=CONFIRM_GRAIN_HOURS)
    for chunk in _chunks(list(source_ids)):
        conn.execute(source_t.update().where(
            source_t.c.connection == connection, source_t.c.stream == stream, in_(conn, source_t.c.source_id, chunk),
            sa.or_(source_t.c.confirmed_at.is_(None), source_t.c.confirmed_at < stale)).values(confirmed_at=now))


def insert_source_records(conn: sa.Connection, rows: list[dict[str, Any]]) -> dict[str, int]:
    """Insert new source records (all of one connection and stream); returns their row ids by
    source id."""
    result = conn.execute(source_t.insert().returning(source_t.c.id, source_t.c.source_id, sort_by_parameter_order=True), rows)
    return {r.source_id: r.id for r in result}


def update_source_records(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Rewrite changed source records (keyed by ``_id``; the columns of ``SOURCE_CHANGES``) and
    drop their identity keys, which the caller writes again."""
    update_by_id(conn, source_t, rows, SOURCE_CHANGES)
    delete_identity_keys(conn, [r["_id"] for r in rows])


def set_raw_hashes(conn: sa.Connection, hashes: dict[int, str | None]) -> None:
    """The raw hash of source records (by row id) prepared again and found unchanged."""
    update_by_id(conn, source_t, [{"_id": rid, "raw_hash": h} for rid, h in hashes.items()], ("raw_hash",))


def source_data(conn: sa.Connection, row_ids: list[int]) -> dict[int, dict[str, Any]]:
    """The stored canonical data of source records, by row id."""
    out: dict[int, dict[str, Any]] = {}
    for chunk in _chunks(row_ids):
        out.update((r.id, r.data) for r in conn.execute(sa.select(source_t.c.id, source_t.c.data).where(in_(conn, source_t.c.id, chunk))))
    return out


def rename_source_record(conn: sa.Connection, row_id: int, source_id: str, now: datetime) -> None:
    """A source record now lives under another id of its source (the source merged records)."""
    conn.execute(source_t.update().where(source_t.c.id == row_id).values(source_id=source_id, changed_at=now, raw_hash=None))


def drop_source_record(conn: sa.Connection, row_id: int) -> None:
    """Remove a source record and its identity keys (its source merged it into another)."""
    conn.execute(key_t.delete().where(key_t.c.source_record_id == row_id))
    conn.execute(source_t.delete().where(source_t.c.id == row_id))


def tombstone_source_records(conn: sa.Connection, row_ids: list[int], keep: Callable[[dict[str, Any] | None], dict[str, Any]],
                             now: datetime) -> None:
    """Mark source records deleted at their source: their data becomes ``keep(data)`` (what
    must outlive the record) and their identity keys go."""
    for chunk in _chunks(row_ids):
        kept = {rid: keep(data) for rid, data in source_data(conn, chunk).items()}
        update_by_id(conn, source_t, [
            {"_id": rid, "data": data, "deleted": True, "content_hash": "deleted:", "changed_at": now,
             "quarantine": None, "raw_hash": None}
            for rid, data in kept.items()], ("data", "deleted", "content_hash", "changed_at", "quarantine", "raw_hash"))
        delete_identity_keys(conn, chunk)


def live_records_named(conn: sa.Connection, connection: str, source_ids: Iterable[str]) -> list[sa.Row[Any]]:
    """(id, stream, source_id, golden_id) of the connection's live source records with these ids (any stream)."""
    out: list[sa.Row[Any]] = []
    for chunk in _chunks(sorted(set(source_ids))):
        out += conn.execute(sa.select(source_t.c.id, source_t.c.stream, source_t.c.source_id, source_t.c.golden_id).where(
            source_t.c.connection == connection, source_t.c.deleted.is_(False), in_(conn, source_t.c.source_id, chunk)))
    return out


def live_source_records(conn: sa.Connection, connection: str, stream: str, changed_before: datetime) -> list[sa.Row[Any]]:
    """(id, source_id, golden_id) of the stream's source records not deleted and not changed
    since ``changed_before``."""
    q = sa.select(source_t.c.id, source_t.c.source_id, source_t.c.golden_id).where(
        source_t.c.connection == connection, source_t.c.stream == stream,
        source_t.c.deleted.is_(False), source_t.c.changed_at < changed_before)
    return list(conn.execute(q))


def own_source_records(conn: sa.Connection, connection: str, stream: str,
                       golden_ids: list[str]) -> dict[str, list[sa.Row[Any]]]:
    """(golden_id, source_id, data, changed_at) of the stream's live source records of each of
    these golden records, oldest first."""
    own: dict[str, list[sa.Row[Any]]] = {}
    for chunk in _chunks(golden_ids):
        for r in conn.execute(
            sa.select(source_t.c.golden_id, source_t.c.source_id, source_t.c.data, source_t.c.changed_at)
            .where(source_t.c.connection == connection, source_t.c.stream == stream,
                   source_t.c.deleted == sa.false(), in_(conn, source_t.c.golden_id, chunk))
            .order_by(source_t.c.id)
        ):
            own.setdefault(r.golden_id, []).append(r)
    return own


def insert_identity_keys(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    insert_rows(conn, key_t, rows)


def delete_identity_keys(conn: sa.Connection, source_record_ids: list[int]) -> None:
    for chunk in _chunks(source_record_ids):
        conn.execute(key_t.delete().where(in_(conn, key_t.c.source_record_id, chunk)))


def insert_interactions(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    insert_rows(conn, interaction_t, rows)


def timeline_entries(conn: sa.Connection, connection: str, stream: str) -> list[sa.Row[Any]]:
    """(record_id, golden_id) of every timeline entry the stream gave."""
    q = sa.select(interaction_t.c.record_id, interaction_t.c.golden_id).where(
        interaction_t.c.connection == connection, interaction_t.c.stream == stream)
    return list(conn.execute(q))


def move_entries_owner(conn: sa.Connection, connection: str, owner_stream: str, old: str, new: str) -> None:
    """Entries that belonged to source record ``old`` of ``owner_stream`` belong to ``new``."""
    conn.execute(interaction_t.update().where(
        interaction_t.c.connection == connection, interaction_t.c.owner_stream == owner_stream,
        interaction_t.c.owner_id == old).values(owner_id=new))


def adopt_entries(conn: sa.Connection, connection: str, owner_stream: str, owners: dict[str, str]) -> set[str]:
    """Put entries that have no golden record yet on their owner's (``owners``: owner's source id
    -> golden id). Returns the golden ids that got entries."""
    adopted: set[str] = set()
    for chunk in _chunks(list(owners)):
        q = sa.select(interaction_t.c.owner_id).where(
            interaction_t.c.connection == connection, interaction_t.c.owner_stream == owner_stream,
            in_(conn, interaction_t.c.owner_id, chunk), interaction_t.c.golden_id.is_(None)).distinct()
        for (owner_id,) in conn.execute(q).all():
            golden = owners[owner_id]
            conn.execute(interaction_t.update().where(
                interaction_t.c.connection == connection, interaction_t.c.owner_stream == owner_stream,
                interaction_t.c.owner_id == owner_id).values(golden_id=golden))
            adopted.add(golden)
    return adopted


def insert_golden(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    insert_rows(conn, golden_t, rows)


def update_golden(conn: sa.Connection, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    """Rewrite ``columns`` of golden records keyed by ``_id``."""
    update_by_id(conn, golden_t, rows, columns)


def live_golden_kinds(conn: sa.Connection, golden_ids: Iterable[str]) -> dict[str, set[str]]:
    """These golden records by kind, except those merged into another."""
    by_kind: dict[str, set[str]] = {}
    for chunk in _chunks(sorted(golden_ids)):
        for r in conn.execute(sa.select(golden_t.c.id, golden_t.c.kind).where(
                in_(conn, golden_t.c.id, chunk), golden_t.c.status != "merged")):
            by_kind.setdefault(r.kind, set()).add(r.id)
    return by_kind


def move_to_survivors(conn: sa.Connection, survivors: dict[str, str], now: datetime) -> dict[str, list[int]]:
    """Move the source records, identity keys and timeline entries of golden records to their
    survivors (``{loser: survivor}``), drop the losers' blocking keys and mark them merged.
    Returns the row ids of the source records each loser gave up."""
    moved: dict[str, list[int]] = {loser: [] for loser in survivors}
    for chunk in _chunks(sorted(survivors)):
        for sid, gid in conn.execute(sa.select(source_t.c.id, source_t.c.golden_id)
                                     .where(in_(conn, source_t.c.golden_id, chunk)).order_by(source_t.c.id)):
            moved[gid].append(sid)
        conn.execute(match_key_t.delete().where(in_(conn, match_key_t.c.golden_id, chunk)))
    pairs = [{"_loser": loser, "_survivor": survivor} for loser, survivor in survivors.items()]
    for table in (source_t, key_t, interaction_t):
        conn.execute(table.update().where(table.c.golden_id == sa.bindparam("_loser"))
                     .values(golden_id=sa.bindparam("_survivor")), pairs)
    conn.execute(golden_t.update().where(golden_t.c.id == sa.bindparam("_loser"))
                 .values(status="merged", merged_into=sa.bindparam("_survivor"), updated_at=now), pairs)
    return moved


def overrides_of(conn: sa.Connection, golden_ids: Iterable[str]) -> list[sa.Row[Any]]:
    """(id, golden_id, field, decided_at) of the admins' field decisions on these golden records."""
    rows: list[sa.Row[Any]] = []
    for chunk in _chunks(sorted(set(golden_ids))):
        rows += conn.execute(sa.select(override_t.c.id, override_t.c.golden_id, override_t.c.field,
                                       override_t.c.decided_at).where(in_(conn, override_t.c.golden_id, chunk))).all()
    return rows


def reassign_overrides(conn: sa.Connection, moves: dict[int, str], parks: dict[int, str]) -> None:
    """Give field decisions (by row id) to other golden records. ``parks`` and ``moves`` may
    swap decisions between two records: the parked ones step out of the way first, so that the
    unique (golden_id, field) holds after each statement."""
    if parks:
        update_by_id(conn, override_t, [{"_id": i, "golden_id": f"parked:{i}"} for i in parks], ("golden_id",))
    if moves:
        update_by_id(conn, override_t, [{"_id": i, "golden_id": g} for i, g in moves.items()], ("golden_id",))
    if parks:
        update_by_id(conn, override_t, [{"_id": i, "golden_id": g} for i, g in parks.items()], ("golden_id",))


def conflict_status(conn: sa.Connection, fingerprints: Iterable[str]) -> dict[str, str]:
    """The status of each conflict already logged under one of these fingerprints."""
    known: dict[str, str] = {}
    for chunk in _chunks(list(fingerprints)):
        known.update((r.fingerprint, r.status) for r in conn.execute(
            sa.select(conflict_t.c.fingerprint, conflict_t.c.status).where(in_(conn, conflict_t.c.fingerprint, chunk))))
    return known


def open_conflicts_of(conn: sa.Connection, golden_ids: Iterable[str], kind: str) -> list[sa.Row[Any]]:
    """(id, golden_id, fingerprint) of the open conflicts of this kind on these golden records."""
    out: list[sa.Row[Any]] = []
    for chunk in _chunks(sorted(set(golden_ids))):
        # Kind and status are filtered here: in SQL, SQLite would rather search the status
        # index (every open conflict) than the golden ids'.
        out += [r for r in conn.execute(sa.select(conflict_t.c.id, conflict_t.c.golden_id, conflict_t.c.fingerprint,
                                                  conflict_t.c.kind, conflict_t.c.status)
                                        .where(in_(conn, conflict_t.c.golden_id, chunk)))
                if r.kind == kind and r.status == "open"]
    return out


def open_duplicates_naming(conn: sa.Connection, golden_ids: Iterable[str]) -> list[sa.Row[Any]]:
    """(id, golden_id, other_golden_id) of the open possible duplicates naming one of these
    golden records on either side."""
    found: dict[int, sa.Row[Any]] = {}
    for chunk in _chunks(sorted(set(golden_ids))):
        for side in (conflict_t.c.golden_id, conflict_t.c.other_golden_id):
            for r in conn.execute(sa.select(conflict_t.c.id, conflict_t.c.golden_id, conflict_t.c.other_golden_id,
                                            conflict_t.c.kind, conflict_t.c.status).where(in_(conn, side, chunk))):
                if r.kind == "possible_duplicate" and r.status == "open":  # (see open_conflicts_of)
                    found[r.id] = r
    return [found[i] for i in sorted(found)]


def close_conflicts(conn: sa.Connection, closures: dict[int, dict[str, Any]], by: str, now: datetime) -> None:
    """Close conflicts that no longer apply (``{id: resolution}``; the resolution says why)."""
    if closures:
        conn.execute(conflict_t.update().where(conflict_t.c.id == sa.bindparam("_id")).values(
            status="closed", resolved_by=by, resolved_at=now, resolution=sa.bindparam("_resolution")),
            [{"_id": i, "_resolution": r} for i, r in closures.items()])


def repoint_duplicate(conn: sa.Connection, conflict_id: int, a: str, b: str, fingerprint: str) -> None:
    """A possible duplicate is about the pair (a, b) now (a < b), and open."""
    conn.execute(conflict_t.update().where(conflict_t.c.id == conflict_id).values(
        golden_id=a, other_golden_id=b, fingerprint=fingerprint, status="open", resolved_by=None, resolved_at=None,
        resolution=None))


def conflicts_by_id(conn: sa.Connection, ids: Iterable[int]) -> dict[int, sa.Row[Any]]:
    out: dict[int, sa.Row[Any]] = {}
    for chunk in _chunks(sorted(set(ids))):
        out.update((r.id, r) for r in conn.execute(sa.select(conflict_t).where(in_(conn, conflict_t.c.id, chunk))))
    return out


def golden_status(conn: sa.Connection, golden_ids: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for chunk in _chunks(sorted(set(golden_ids))):
        out.update(conn.execute(sa.select(golden_t.c.id, golden_t.c.status).where(in_(conn, golden_t.c.id, chunk))).all())
    return out


def insert_conflicts(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    conn.execute(conflict_t.insert(), rows)


def reopen_conflict(conn: sa.Connection, fingerprint: str, candidates: Any, applied: Any, now: datetime) -> None:
    """Open a resolved conflict again, with its new detail."""
    conn.execute(conflict_t.update().where(conflict_t.c.fingerprint == fingerprint).values(
        status="open", candidates=candidates, applied=applied, created_at=now, resolved_by=None, resolved_at=None))


def pushed_state(conn: sa.Connection, connection: str, stream: str) -> dict[str, sa.Row[Any]]:
    """What the hub last wrote to a destination stream, by golden id (payload_hash, external_id,
    payload, pushed_at)."""
    return {r.golden_id: r for r in conn.execute(
        sa.select(outbound_t.c.golden_id, outbound_t.c.payload_hash, outbound_t.c.external_id,
                  outbound_t.c.payload, outbound_t.c.pushed_at)
        .where(outbound_t.c.connection == connection, outbound_t.c.stream == stream))}


def record_pushes(conn: sa.Connection, connection: str, stream: str, rows: list[dict[str, Any]]) -> None:
    """Remember confirmed writes to a destination stream (one row per golden id, replacing the
    previous one)."""
    for chunk in _chunks([r["golden_id"] for r in rows]):
        conn.execute(outbound_t.delete().where(outbound_t.c.connection == connection, outbound_t.c.stream == stream,
                                               in_(conn, outbound_t.c.golden_id, chunk)))
    conn.execute(outbound_t.insert(), rows)


def retarget_outbound(conn: sa.Connection, connection: str, old_external_id: str, new_external_id: str) -> None:
    """Writes to a destination record go to another id of it from now on."""
    conn.execute(outbound_t.update().where(outbound_t.c.connection == connection,
                                           outbound_t.c.external_id == old_external_id).values(external_id=new_external_id))


def forget_outbound(conn: sa.Connection, connection: str, external_id: str) -> None:
    """Forget what was written to a destination record that no longer exists there."""
    conn.execute(outbound_t.delete().where(outbound_t.c.connection == connection, outbound_t.c.external_id == external_id))


# -- The review commands' reads and writes (synchub.review) ----------------------------------


def golden_row(conn: sa.Connection, golden_id: str) -> sa.Row[Any] | None:
    return conn.execute(sa.select(golden_t).where(golden_t.c.id == golden_id)).first()


def follow_merges(conn: sa.Connection, golden_id: str) -> str:
    """The golden record a merged one lives on in (itself when it was not merged)."""
    for _ in range(50):
        row = conn.execute(sa.select(golden_t.c.status, golden_t.c.merged_into).where(golden_t.c.id == golden_id)).first()
        if row is None or row.status != "merged" or not row.merged_into:
            return golden_id
        golden_id = row.merged_into
    return golden_id


def merges_into(conn: sa.Connection, golden_id: str) -> Iterator[tuple[sa.Row[Any], str | None]]:
    """The audit entries of merges into a golden record, newest first, each with the current
    status of the record it merged."""
    q = (sa.select(audit_t).where(audit_t.c.golden_id == golden_id, audit_t.c.action == "merge")
         .order_by(audit_t.c.id.desc()))
    for row in conn.execute(q).all():
        yield row, conn.execute(sa.select(golden_t.c.status).where(golden_t.c.id == row.details["merged"])).scalar()


def source_refs_of(conn: sa.Connection, golden_id: str) -> list[sa.Row[Any]]:
    """(id, connection, stream, source_id) of a golden record's source records."""
    return conn.execute(sa.select(source_t.c.id, source_t.c.connection, source_t.c.stream,
                                  source_t.c.source_id).where(source_t.c.golden_id == golden_id)).all()


def move_source_records(conn: sa.Connection, row_ids: list[int], target: str) -> None:
    """Give source records (by row id) to another golden record, with their identity keys and
    their timeline (their own entries and the entries they own, e.g. a customer's orders)."""
    for chunk in _chunks(row_ids):
        conn.execute(source_t.update().where(in_(conn, source_t.c.id, chunk)).values(golden_id=target))
        conn.execute(key_t.update().where(in_(conn, key_t.c.source_record_id, chunk)).values(golden_id=target))
        recs = conn.execute(sa.select(source_t.c.connection, source_t.c.stream, source_t.c.source_id)
                            .where(in_(conn, source_t.c.id, chunk))).all()
        for r in recs:
            conn.execute(interaction_t.update().where(
                interaction_t.c.connection == r.connection, interaction_t.c.owner_stream == r.stream,
                interaction_t.c.owner_id == r.source_id).values(golden_id=target))


def keep_apart(conn: sa.Connection, a: str, b: str, by: str, reason: str, now: datetime) -> None:
    """Remember that two golden records are different customers (replacing an older decision)."""
    x, y = min(a, b), max(a, b)
    conn.execute(decision_t.delete().where(decision_t.c.golden_a == x, decision_t.c.golden_b == y))
    conn.execute(decision_t.insert().values(golden_a=x, golden_b=y, decision="keep_apart", decided_by=by,
                                            decided_at=now, reason=reason))


def overrides_by_id(conn: sa.Connection, ids: Iterable[int], owner: str) -> list[sa.Row[Any]]:
    """(id, field, decided_at) of these field decisions that belong to ``owner``."""
    return conn.execute(sa.select(override_t.c.id, override_t.c.field, override_t.c.decided_at)
                        .where(override_t.c.id.in_(sorted(ids)), override_t.c.golden_id == owner)).all()


def decided_fields(conn: sa.Connection, golden_id: str) -> set[str]:
    return {r.field for r in conn.execute(sa.select(override_t.c.field).where(override_t.c.golden_id == golden_id))}


def delete_overrides(conn: sa.Connection, ids: list[int]) -> None:
    conn.execute(override_t.delete().where(override_t.c.id.in_(ids)))


def set_override(conn: sa.Connection, golden_id: str, field: str, value: Any, by: str, now: datetime,
                 conflict_id: int | None) -> None:
    """An admin's decision of one field of a golden record (replacing an earlier one)."""
    conn.execute(override_t.delete().where(override_t.c.golden_id == golden_id, override_t.c.field == field))
    conn.execute(override_t.insert().values(golden_id=golden_id, field=field, value=value,
                                            decided_by=by, decided_at=now, conflict_id=conflict_id))


def conflict_row(conn: sa.Connection, conflict_id: int) -> sa.Row[Any] | None:
    return conn.execute(sa.select(conflict_t).where(conflict_t.c.id == conflict_id)).first()


def close_conflict(conn: sa.Connection, conflict_id: int, status: str, by: str, now: datetime,
                   resolution: dict[str, Any]) -> None:
    conn.execute(conflict_t.update().where(conflict_t.c.id == conflict_id).values(
        status=status, resolved_by=by, resolved_at=now, resolution=resolution))



_PHONE_QUERY = re.compile(r"(?:tel:)?\+?[\d\s()./-]+")


def search_terms(text: str, phone_region: str | None) -> list[list[str]]:
    """What :meth:`Store.search_golden` looks for in the search text (see there): every term,
    each as one or more spellings of which one must occur."""
    from synchub.normalize import NormalizationError, fold, normalize_email, normalize_phone_lenient

    query = text.strip()
    if _PHONE_QUERY.fullmatch(query) and sum(c.isdigit() for c in query) >= 5:
        # Its E.164 form, or (part of a number, or one in no known range) its digits without
        # the national trunk zero: a substring of the stored E.164 form.
        either = ["".join(c for c in query if c.isdigit()).lstrip("0")]
        try:
            e164, _verified = normalize_phone_lenient(query, phone_region)
        except NormalizationError:
            e164 = None
        return [[e164, *either] if e164 else either]
    terms: list[list[str]] = []
    for word in query.split():
        if "@" in word:
            try:
                terms.append([normalize_email(word) or word.lower()])
            except NormalizationError:
                terms.append([word.lower()])  # part of an address: still a substring of it
        else:
            terms += [[t] for t in fold(word).split()]
    return terms or [[query.lower()]]

# ----- one person's data (access and portability export) ----------------------------------------


def person_ids(conn: sa.Connection, golden_id: str) -> set[str]:
    """The customer's golden id and those of every record merged into it (and into those)."""
    ids = {golden_id}
    frontier = {golden_id}
    while frontier:
        merged = {r.id for r in conn.execute(sa.select(golden_t.c.id).where(golden_t.c.merged_into.in_(frontier)))}
        frontier = merged - ids
        ids |= merged
    return ids


def person_rows(conn: sa.Connection, golden_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every row the hub holds about one customer and the records merged into it: golden
    records, source records, timeline entries, conflicts, audit entries, admin decisions and
    picked values, and what was written to each destination."""
    ids = person_ids(conn, golden_id)

    def rows(table: sa.Table, *conds: Any, order: Any = None) -> list[dict[str, Any]]:
        q = sa.select(table).where(sa.or_(*conds))
        if order is not None:
            q = q.order_by(order)
        return [dict(r._mapping) for r in conn.execute(q)]

    chunked = sorted(ids)
    return {
        "golden_records": rows(golden_t, golden_t.c.id.in_(chunked), order=golden_t.c.id),
        "source_records": rows(source_t, source_t.c.golden_id.in_(chunked), order=source_t.c.id),
        "timeline": rows(interaction_t, interaction_t.c.golden_id.in_(chunked), order=interaction_t.c.occurred_at),
        "conflicts": rows(conflict_t, conflict_t.c.golden_id.in_(chunked), conflict_t.c.other_golden_id.in_(chunked),
                          order=conflict_t.c.id),
        "audit": rows(audit_t, audit_t.c.golden_id.in_(chunked), order=audit_t.c.id),
        "decisions": rows(decision_t, decision_t.c.golden_a.in_(chunked), decision_t.c.golden_b.in_(chunked),
                          order=decision_t.c.id),
        "picked_values": rows(override_t, override_t.c.golden_id.in_(chunked), order=override_t.c.id),
        "written_to_destinations": rows(outbound_t, outbound_t.c.golden_id.in_(chunked), order=outbound_t.c.connection),
    }


def erase_rows(conn: sa.Connection, ids: set[str], emails: Iterable[str]) -> dict[str, int]:
    """Delete every row about the golden records ``ids`` (a customer and those merged into it):
    what :func:`person_rows` finds, plus their identity and blocking keys, quarantined values and
    rejected rows of their source records (and rejected rows whose raw text holds one of
    ``emails``), queued derivations. Returns the rows deleted per table."""
    chunked = sorted(ids)
    srcs = list(conn.execute(sa.select(source_t.c.id, source_t.c.connection, source_t.c.stream, source_t.c.source_id)
                             .where(source_t.c.golden_id.in_(chunked))))
    by_stream: dict[tuple[str, str], list[str]] = {}
    for r in srcs:
        by_stream.setdefault((r.connection, r.stream), []).append(r.source_id)
    done: dict[str, int] = {}

    def delete(table: sa.Table, *conds: Any) -> None:
        n = conn.execute(table.delete().where(sa.or_(*conds))).rowcount or 0
        done[table.name] = done.get(table.name, 0) + n

    # The person's timeline entries (orders...): their own quarantined values and rejected rows go too.
    owned = [interaction_t.c.golden_id.in_(chunked)] + [
        sa.and_(interaction_t.c.connection == c, interaction_t.c.owner_stream == st_, interaction_t.c.owner_id.in_(part))
        for (c, st_), sids in by_stream.items() for part in _chunks(sids)]
    for r in conn.execute(sa.select(interaction_t.c.connection, interaction_t.c.stream, interaction_t.c.record_id)
                          .where(sa.or_(*owned)).distinct()):
        by_stream.setdefault((r.connection, r.stream), []).append(r.record_id)
    for (connection, stream), sids in by_stream.items():
        for part in _chunks(sorted(set(sids))):
            for table in (quarantined_t, rejected_t):
                delete(table, sa.and_(table.c.connection == connection, table.c.stream == stream,
                                      table.c.source_id.in_(part)))
            # Timeline entries owned by these records that the hub has not attached to them yet.
            delete(interaction_t, sa.and_(interaction_t.c.connection == connection, interaction_t.c.owner_stream == stream,
                                          interaction_t.c.owner_id.in_(part)))
    for email in {e.strip().lower() for e in emails if e and "@" in e}:
        for table in (rejected_t, quarantined_t):
            delete(table, sa.func.lower(table.c.raw).like(f"%{_escape_like(email)}%", escape="\\"))
    delete(key_t, key_t.c.golden_id.in_(chunked))
    delete(match_key_t, match_key_t.c.golden_id.in_(chunked))
    delete(interaction_t, interaction_t.c.golden_id.in_(chunked))
    delete(conflict_t, conflict_t.c.golden_id.in_(chunked), conflict_t.c.other_golden_id.in_(chunked))
    delete(decision_t, decision_t.c.golden_a.in_(chunked), decision_t.c.golden_b.in_(chunked))
    delete(override_t, override_t.c.golden_id.in_(chunked))
    delete(derive_queue_t, derive_queue_t.c.golden_id.in_(chunked))
    delete(outbound_t, outbound_t.c.golden_id.in_(chunked))
    delete(audit_t, audit_t.c.golden_id.in_(chunked))
    delete(source_t, source_t.c.golden_id.in_(chunked))
    delete(golden_t, golden_t.c.id.in_(chunked))
    return {k: v for k, v in done.items() if v}


def last_activity(conn: sa.Connection, kind: str) -> dict[str, datetime]:
    """Per golden record of ``kind``: when a source last confirmed one of its live records
    (``confirmed_at``; before that was kept, when it last changed), or its latest timeline
    entry, whichever is later."""
    out: dict[str, datetime] = {}
    q1 = (sa.select(source_t.c.golden_id, sa.func.max(sa.func.coalesce(source_t.c.confirmed_at, source_t.c.changed_at)))
          .where(source_t.c.kind == kind, source_t.c.deleted.is_(False)).group_by(source_t.c.golden_id))
    q2 = (sa.select(interaction_t.c.golden_id, sa.func.max(interaction_t.c.occurred_at))
          .where(interaction_t.c.golden_id.is_not(None)).group_by(interaction_t.c.golden_id))
    for q in (q1, q2):
        for gid, moment in conn.execute(q):
            if moment is None:
                continue
            if isinstance(moment, str):  # SQLite's max() of a text column loses the type
                moment = datetime.fromisoformat(moment)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            if gid not in out or moment > out[gid]:
                out[gid] = moment
    return out


def insert_suppressions(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Add digests to the suppression list; ones already on it stay as they are."""
    known = {r[0] for r in conn.execute(sa.select(suppression_t.c.digest).where(
        suppression_t.c.digest.in_([r["digest"] for r in rows])))} if rows else set()
    fresh = {r["digest"]: r for r in rows if r["digest"] not in known}
    if fresh:
        conn.execute(suppression_t.insert(), list(fresh.values()))


def delete_suppression(conn: sa.Connection, digest: str) -> bool:
    """Take one digest off the suppression list; False if it was not on it."""
    return bool(conn.execute(suppression_t.delete().where(suppression_t.c.digest == digest)).rowcount)


def suppressed(conn: sa.Connection, digests: Iterable[str]) -> set[str]:
    """Which of ``digests`` are on the suppression list."""
    wanted = list(dict.fromkeys(digests))
    out: set[str] = set()
    for part in _chunks(wanted):
        out.update(r[0] for r in conn.execute(sa.select(suppression_t.c.digest).where(suppression_t.c.digest.in_(part))))
    return out


def insert_erasure(conn: sa.Connection, ref: str, requested_by: str, reason: str, now: datetime) -> int:
    return int(conn.execute(erasure_t.insert().values(
        ref=ref, requested_by=requested_by[:200], reason=reason[:200], requested_at=now)).inserted_primary_key[0])


def insert_receipts(conn: sa.Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(receipt_t.insert(), rows)


def open_receipts(conn: sa.Connection, connection: str | None = None, erasure_id: int | None = None) -> list[sa.Row[Any]]:
    """Receipts still to ask about: pending ones, and failed ones that may be retried."""
    cond = [sa.or_(receipt_t.c.status == "pending", sa.and_(receipt_t.c.status == "failed", receipt_t.c.retryable.is_(True)))]
    if connection is not None:
        cond.append(receipt_t.c.connection == connection)
    if erasure_id is not None:
        cond.append(receipt_t.c.erasure_id == erasure_id)
    return list(conn.execute(sa.select(receipt_t).where(*cond).order_by(receipt_t.c.id)))


def update_receipt(conn: sa.Connection, receipt_id: int, now: datetime, **values: Any) -> None:
    conn.execute(receipt_t.update().where(receipt_t.c.id == receipt_id).values(updated_at=now, **values))


def confirm_snapshot_receipts(conn: sa.Connection, connection: str, stream: str, detail: str, now: datetime) -> int:
    """A file export was written (or found current) without the erased people: its receipts are done."""
    return int(conn.execute(receipt_t.update().where(
        receipt_t.c.connection == connection, receipt_t.c.stream == stream, receipt_t.c.status == "pending").values(
        status="confirmed", detail=detail, targets=None, updated_at=now, attempts=receipt_t.c.attempts + 1)).rowcount or 0)


def erasure_rows(conn: sa.Connection, limit: int = 100, erasure_id: int | None = None) -> list[dict[str, Any]]:
    """Erasures, newest first, each with its receipts."""
    q = sa.select(erasure_t).order_by(erasure_t.c.id.desc()).limit(limit)
    if erasure_id is not None:
        q = q.where(erasure_t.c.id == erasure_id)
    out = [dict(r._mapping) for r in conn.execute(q)]
    receipts: dict[int, list[dict[str, Any]]] = {}
    if out:
        for r in conn.execute(sa.select(receipt_t).where(receipt_t.c.erasure_id.in_([e["id"] for e in out]))
                              .order_by(receipt_t.c.id)):
            receipts.setdefault(r.erasure_id, []).append(dict(r._mapping))
    for e in out:
        e["receipts"] = receipts.get(e["id"], [])
    return out


# ----- accounts (web console, REST API) --------------------------------------------------------


def insert_user(conn: sa.Connection, name: str, role: str, password_hash: str, language: str | None, now: datetime) -> int:
    """A new account; raises :class:`sqlalchemy.exc.IntegrityError` if the name is taken."""
    return int(conn.execute(user_t.insert().values(
        name=name, role=role, password_hash=password_hash, language=language, disabled=False,
        created_at=now, updated_at=now)).inserted_primary_key[0])


def user_row(conn: sa.Connection, *, name: str | None = None, user_id: int | None = None) -> Any:
    """One account by name or id (``None`` if there is none)."""
    cond = user_t.c.name == name if name is not None else user_t.c.id == user_id
    return conn.execute(sa.select(user_t).where(cond)).first()


def user_rows(conn: sa.Connection) -> list[Any]:
    return list(conn.execute(sa.select(user_t).order_by(user_t.c.name)))


def update_user(conn: sa.Connection, user_id: int, now: datetime, **values: Any) -> None:
    conn.execute(user_t.update().where(user_t.c.id == user_id).values(updated_at=now, **values))


def insert_token(conn: sa.Connection, user_id: int, label: str, token_hash: str, now: datetime) -> int:
    return int(conn.execute(token_t.insert().values(
        user_id=user_id, label=label, token_hash=token_hash, created_at=now, revoked=False)).inserted_primary_key[0])


def token_user(conn: sa.Connection, token_hash: str, now: datetime) -> Any:
    """The account of a live API token (and marks the token used), or ``None``."""
    row = conn.execute(sa.select(token_t.c.id, token_t.c.user_id).where(
        token_t.c.token_hash == token_hash, token_t.c.revoked.is_(False))).first()
    if row is None:
        return None
    conn.execute(token_t.update().where(token_t.c.id == row.id).values(last_used_at=now))
    return user_row(conn, user_id=row.user_id)


def token_rows(conn: sa.Connection, user_id: int) -> list[Any]:
    return list(conn.execute(sa.select(token_t).where(token_t.c.user_id == user_id).order_by(token_t.c.id)))


def revoke_tokens(conn: sa.Connection, user_id: int, token_id: int | None = None) -> int:
    cond = [token_t.c.user_id == user_id] + ([token_t.c.id == token_id] if token_id is not None else [])
    return int(conn.execute(token_t.update().where(*cond).values(revoked=True)).rowcount or 0)


def insert_session(conn: sa.Connection, id_hash: str, user_id: int, now: datetime, expires_at: datetime) -> None:
    conn.execute(session_t.delete().where(session_t.c.expires_at < now))  # forget expired ones
    conn.execute(session_t.insert().values(id_hash=id_hash, user_id=user_id, created_at=now, expires_at=expires_at))


def session_user(conn: sa.Connection, id_hash: str, now: datetime) -> Any:
    """The account of a live session, or ``None``."""
    row = conn.execute(sa.select(session_t.c.user_id).where(
        session_t.c.id_hash == id_hash, session_t.c.expires_at > now)).first()
    return user_row(conn, user_id=row.user_id) if row else None


def delete_sessions(conn: sa.Connection, *, id_hash: str | None = None, user_id: int | None = None) -> None:
    cond = session_t.c.id_hash == id_hash if id_hash is not None else session_t.c.user_id == user_id
    conn.execute(session_t.delete().where(cond))


def insert_login_failure(conn: sa.Connection, name: str, address: str, now: datetime) -> None:
    conn.execute(login_failure_t.insert().values(name=name[:100], address=address[:64], at=now))


def login_failures(conn: sa.Connection, *, since: datetime, name: str | None = None, address: str | None = None) -> list[datetime]:
    """When the failed logins since ``since`` happened, for one account name or one address."""
    cond = [login_failure_t.c.at >= since]
    if name is not None:
        cond.append(login_failure_t.c.name == name[:100])
    if address is not None:
        cond.append(login_failure_t.c.address == address[:64])
    return [r[0] for r in conn.execute(sa.select(login_failure_t.c.at).where(*cond))]


def forget_login_failures(conn: sa.Connection, *, before: datetime, name: str | None = None) -> None:
    """Delete the failed logins older than ``before`` or, given ``name``, all of that name's."""
    cond = [login_failure_t.c.at < before] if name is None else [login_failure_t.c.name == name[:100]]
    conn.execute(login_failure_t.delete().where(*cond))


def _escape_like(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _safe_url(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<invalid store URL>"


#: libpq TCP keepalives: a dead peer is noticed in about a minute, not hours.
_PG_KEEPALIVE = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
                 # and a statement whose packets go unanswered fails after a minute, not ~15
                 "tcp_user_timeout": 60_000}


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers (the CLI) work while a sync writes; synchronous=FULL makes every commit
    # durable across power loss, which the cursor-after-commit promise relies on.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
