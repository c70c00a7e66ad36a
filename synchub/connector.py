"""What a connector author fills in: a :class:`Connector` that offers :class:`Stream` objects.

A connector class says what it is with class attributes (``name``, ``Settings``,
``StreamSettings``) and builds its streams from a connection's config. A stream reads records
incrementally from a saved state and, where it can, writes records back::

    class Contacts(Stream):
        name = "contacts"
        primary_key = ("id",)
        cursor_field = "updatedAt"

        def read(self, state):
            for page in ...:
                for item in page:
                    yield Record(item)
                yield Checkpoint({"updatedAt": ...})

Reads are at-least-once: a stream may yield a record again after a restart, the engine upserts
idempotently. A stream yields :class:`Checkpoint` whenever everything before it may be considered
done; the engine commits what came before, *then* saves the checkpoint's state. Never checkpoint
inside a group of records that share one cursor value.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from synchub.http import HttpClientFactory

if TYPE_CHECKING:
    import logging


def parse_time(value: Any) -> datetime | None:
    """An API's ISO-8601 timestamp (``Z`` or an offset; none means UTC) as an aware datetime;
    None for an empty or unreadable value."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _default_http() -> HttpClientFactory:
    return HttpClientFactory()


class ConnectorSettings(BaseModel):
    """Base for a connector's settings model. Unknown keys are errors (typos must not pass)."""

    model_config = ConfigDict(extra="forbid")


class StreamSettings(BaseModel):
    """Base for a connector's per-stream settings model."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class Record:
    """One record as the source has it. ``ref`` says where it is, for error messages (file:line)."""

    data: dict[str, Any]
    ref: str | None = None
    observed_at: datetime | None = None
    deleted: bool = False
    #: Former ids of this record at the source (a CRM merge keeps one record and retires the
    #: others): the hub re-keys what it holds under those ids to this one, no duplicate appears.
    aliases: list[str] = field(default_factory=list)
    #: Links to other records of the same connection: ``{canonical field: (stream, source id)}``,
    #: e.g. a contact's company ``{"company_id": ("companies", "123")}``. The hub fills the field
    #: with the golden id that source record belongs to (left empty while it is unknown).
    links: dict[str, tuple[str, str]] = field(default_factory=dict)


@dataclass
class Rejected:
    """A record the stream itself could not parse; the engine logs it as rejected and goes on."""

    ref: str
    reason: str
    raw: str | None = None
    field: str | None = None


@dataclass
class Checkpoint:
    """Everything yielded before this is done: commit it, then save ``state``."""

    state: dict[str, Any]


@dataclass
class Reconcile:
    """A full listing of the source's ids for the stream, for what deletions the API does not
    announce (Shopify has no "deleted since" query): the source holds exactly ``ids`` now. The
    hub treats its other records of the stream as deleted at the source, except those it saw
    change after ``as_of`` (when the listing began): their values leave the hub (the source
    record keeps no data, which also honours a privacy redaction), and their golden records are
    derived again from what remains."""

    ids: set[str]
    as_of: datetime


ReadItem = Record | Rejected | Checkpoint | Reconcile


@dataclass
class OutRecord:
    """A golden record on its way out, already mapped to the destination's fields."""

    golden_id: str
    data: dict[str, Any]
    #: The destination's id: returned by a previous write, or the id of the source record this
    #: connection itself delivered for the golden record.
    external_id: str | None = None
    #: ``upsert``: make the destination hold ``data``. ``leave``: the record no longer belongs to
    #: the stream's segment (its filter stopped matching, or the golden record was merged away or
    #: deleted); ``data`` is what was last written. Only streams with ``handles_leave`` get these.
    op: Literal["upsert", "delete", "leave"] = "upsert"
    #: What the last successful write sent for this record (None: never written), so a stream
    #: can send only the fields that changed.
    previous: dict[str, Any] | None = None
    #: The record left the stream's segment earlier and is back in it now.
    returning: bool = False
    #: Dry runs only: what the destination holds for the record now, in the out mapping's shape,
    #: when the stream could read it (:meth:`Stream.peek`); ``None``: not read, or not there.
    holds: dict[str, Any] | None = None


@dataclass
class Attention:
    """Something a write could not do that a person must act on, logged as a conflict for review
    (e.g. ``needs_reoptin``: the destination refuses to subscribe someone who opted out there)."""

    kind: str
    message: str
    #: The canonical field concerned (``consent.email.status``).
    path: str | None = None
    #: What each side holds: ``[{"value": ..., "connection": ..., "note": ...}]``.
    values: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class WriteResult:
    golden_id: str
    ok: bool
    external_id: str | None = None
    error: str | None = None
    retryable: bool = False
    #: ok, but deliberately nothing was sent (a rule held the record back); remembered like a
    #: write, so the record is considered again only when it changes.
    skipped: bool = False
    #: A rejection that retrying cannot fix (the destination's final word): not retried until the
    #: record changes. Other rejections are retried on the next run.
    final: bool = False
    attention: Attention | None = None
    #: What the destination holds now, in the out mapping's shape, when it differs from what was
    #: asked (a consent rule sent ``pending`` instead of ``subscribed``); remembered as
    #: ``OutRecord.previous`` for the next write. Default: the record's ``data``.
    holds: dict[str, Any] | None = None


@dataclass
class PlannedWrite:
    """What a write would do to one record, for ``synchub sync --dry-run``."""

    golden_id: str
    #: create, update, unchanged, leave (untag/archive...), skip (a rule holds it back)
    action: str
    external_id: str | None = None
    #: field -> (before, after)
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    reason: str | None = None


@dataclass
class ErasureTarget:
    """One person's record at a destination, to erase (``synchub customers erase``): what the hub
    knows of it there. ``external_id`` is the destination's id (from a record this stream
    delivered or a write's answer); ``emails`` are the person's addresses, for APIs that look a
    person up by e-mail. At least one of the two is set."""

    golden_id: str
    external_id: str | None = None
    emails: list[str] = field(default_factory=list)


@dataclass
class ErasureResult:
    """The destination's answer to one erasure. ``confirmed``: the destination says the data is
    gone (or it never held it); ``requested``: it accepted a request it carries out later
    (Shopify's customer data erasure); ``failed``: not done, ``detail`` says why; the hub asks
    again on the connection's next run unless ``retryable`` is False (a person must act)."""

    target: ErasureTarget
    status: Literal["confirmed", "requested", "failed"]
    detail: str | None = None
    retryable: bool = True


@dataclass
class CheckResult:
    ok: bool
    lines: list[str] = field(default_factory=list)


@dataclass
class ConnectionContext:
    """What the core hands a connector: the validated settings and where relative paths start."""

    name: str
    settings: ConnectorSettings
    stream_settings: dict[str, StreamSettings]
    base_dir: Path
    log: logging.Logger
    #: Builds the connection's HTTP client (timeouts, allowed hosts, a swappable transport):
    #: API connectors use it instead of building their own.
    http: HttpClientFactory = field(default_factory=lambda: _default_http())


class Stream:
    """One kind of record of a connection (contacts, customers, a file pattern)."""

    name: str = ""
    #: Fields of the *source* record that identify it; joined with ``|`` when several.
    primary_key: tuple[str, ...] = ()
    #: Field the stream uses for incremental reads, if any (informative; state is the stream's).
    cursor_field: str | None = None
    #: ``upsert``: write gets only changed records; ``snapshot``: write gets every current record
    #: whenever any changed, and replaces the destination whole (a file export).
    write_mode: ClassVar[Literal["upsert", "snapshot"]] = "upsert"
    #: The stream acts on ``OutRecord(op="leave")`` (records that left its segment); streams
    #: without it simply stop receiving updates for such records.
    handles_leave: ClassVar[bool] = False

    def read(self, state: dict[str, Any] | None) -> Iterator[ReadItem]:
        raise NotImplementedError(f"stream {self.name!r} cannot be read")

    def write(self, records: Iterable[OutRecord], fields: list[str]) -> Iterator[WriteResult]:
        """Write records; ``fields`` are the destination fields the mapping fills, in order.
        Yield one result per record (a rejected record is a result, not an exception)."""
        raise NotImplementedError(f"stream {self.name!r} cannot be written")

    def erase(self, targets: list[ErasureTarget]) -> Iterator[ErasureResult]:
        """Erase these people at the source/destination for good (a data-subject erasure, not an
        archive): yield one result per target. Called by ``synchub customers erase`` after the
        hub has forgotten them, and again for failed ones on the connection's next run, so it
        must be safe to repeat (an id the destination no longer knows is ``confirmed``)."""
        raise NotImplementedError(f"stream {self.name!r} cannot erase")

    def peek(self, records: list[OutRecord]) -> dict[str, dict[str, Any]]:
        """For a dry run: what the destination holds now for these records, by golden id, in the
        out mapping's shape (records it does not hold are left out). Read within the stream's
        rate budget; the engine passes the result to :meth:`plan` as ``OutRecord.holds``.
        Streams that cannot read their destination leave this out (the plan then diffs
        against what the hub last wrote or the destination last delivered)."""
        raise NotImplementedError(f"stream {self.name!r} cannot read its destination")

    def plan(self, records: Iterable[OutRecord], fields: list[str]) -> Iterator[PlannedWrite]:
        """What :meth:`write` would do, without doing it (``--dry-run``). The default compares
        each record with what the destination holds (``holds``, when read) or else with
        ``previous``; streams with rules of their own (consent) override it."""
        for rec in records:
            if rec.op != "upsert":
                yield PlannedWrite(rec.golden_id, rec.op, rec.external_id)
                continue
            before = rec.holds if rec.holds is not None else (rec.previous or {})
            changes = {k: (before.get(k), rec.data.get(k)) for k in dict.fromkeys([*fields, *rec.data])
                       if before.get(k) != rec.data.get(k)}
            new = rec.holds is None and rec.previous is None and rec.external_id is None
            yield PlannedWrite(rec.golden_id, "create" if new else ("update" if changes else "unchanged"),
                               rec.external_id, changes)

    @property
    def can_read(self) -> bool:
        return type(self).read is not Stream.read

    @property
    def can_write(self) -> bool:
        return type(self).write is not Stream.write

    @property
    def can_erase(self) -> bool:
        return type(self).erase is not Stream.erase

    @property
    def can_peek(self) -> bool:
        return type(self).peek is not Stream.peek

    def target_exists(self) -> bool:
        """For snapshot streams: False when the destination is gone and must be written again."""
        return True

    def describe_target(self) -> str | None:
        """Where writes land, for the run summary (e.g. a file path)."""
        return None


class Connector:
    """Base class of every connector. Subclasses set ``name`` and the settings models."""

    name: ClassVar[str] = ""
    Settings: ClassVar[type[ConnectorSettings]] = ConnectorSettings
    StreamSettings: ClassVar[type[StreamSettings]] = StreamSettings

    def __init__(self, context: ConnectionContext):
        self.context = context
        self.settings = context.settings

    def streams(self) -> dict[str, Stream]:
        """The streams of this connection, by name, built from ``context.stream_settings``."""
        raise NotImplementedError

    def check(self) -> CheckResult:
        """Verify credentials/paths and say what can be read and written."""
        lines = []
        for name, stream in self.streams().items():
            lines.append(f"{name}: {'read' if stream.can_read else ''} {'write' if stream.can_write else ''}".strip())
        return CheckResult(ok=True, lines=lines)

    def check_mapped_fields(self, reads: dict[str, list[tuple[str, str]]]) -> list[str]:
        """Lines for :meth:`check`'s result (``warning: ...``), one per source field that an
        inbound stream's mapping reads but the source lacks. ``reads``: per stream, the source
        fields its mapping reads, each with the field it fills. Default: none (a source that
        cannot tell, such as an API that leaves empty fields out of its records)."""
        return []

    def stats(self) -> dict[str, int]:
        """Figures for the run history besides the HTTP sessions' own (``calls``, ``retries``,
        ``throttled``), e.g. reconnects of a file transfer; added to them."""
        return {}

    def close(self) -> None:
        """Release clients and connections."""
