"""One sync run, start to finish.

Inbound, per stream: read new/changed records from the saved cursor -> map -> normalise ->
match to golden records by exact identity keys -> derive the touched golden records by the merge
rules -> commit the batch -> *then* save the cursor the stream checkpointed. Outbound: push golden
records that changed since the last push, mapped through the outbound mapping; remember what was
pushed so an unchanged re-run writes nothing.

Batches are committed in one transaction each, with one lookup and one bulk write per table, so
the cost per record stays flat as the store grows. Reads are at-least-once: after a crash the
stream resumes from the last saved cursor and the re-read records upsert idempotently (a record
whose canonical content hash is unchanged costs one indexed lookup and no write).
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from synchub import bulk, match, purchases, quarantine
from synchub import store as st
from synchub.config import Config, ConnectionConfig, StreamConfig, register_settings_secrets
from synchub.connector import (
    Checkpoint,
    CheckResult,
    ConnectionContext,
    Connector,
    OutRecord,
    PlannedWrite,
    Reconcile,
    Record,
    Rejected,
    Stream,
    WriteResult,
)
from synchub.errors import ConfigError, QuotaExhausted, SynchubError
from synchub.http import HttpClientFactory
from synchub.locks import RunLock, connection_lock
from synchub.mapping import Mapping, MappingLibrary
from synchub.merge import Merger
from synchub.normalize import fold
from synchub.plugins import get_connectors, get_mapping_paths, get_transforms
from synchub.prepare import Prepared, Preparer, content_hash
from synchub.redact import redact
from synchub.segment import compile_filter
from synchub.store import Store, utcnow

log = logging.getLogger("synchub.engine")

ProgressFn = Callable[[str, str, int], None]
#: Refresh PostgreSQL's planner statistics whenever the tables may have doubled (after batch 1,
#: 2, 4, 8, ...) and at least every this many batches.
ANALYZE_EVERY = 50
#: Outbound: confirmed writes are recorded in the store at least this often.
PUSH_COMMIT_EVERY = 100
#: ``outbound_state.payload_hash`` of a record that left the stream's segment.
LEFT = "left"


@dataclass
class StreamCounts:
    read: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    duplicates: int = 0
    rejected: int = 0
    conflicts: int = 0
    written: int = 0
    write_rejected: int = 0
    #: Outbound: held back by a rule (consent), and taken out of a segment (untagged/archived).
    skipped: int = 0
    left: int = 0
    #: Inbound: records a full listing showed gone from the source (see ``Reconcile``).
    deleted: int = 0
    #: Inbound: values left out of records that landed (see :mod:`synchub.quarantine`), and
    #: values kept but flagged unverified.
    quarantined: int = 0
    unverified: int = 0

    def add(self, other: StreamCounts) -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)


@dataclass
class RunSummary:
    run_id: int
    connection: str
    direction: str
    status: str = "running"
    streams: dict[str, StreamCounts] = field(default_factory=dict)
    error: str | None = None
    targets: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    #: For a ``paused`` run: when the API account's quota resets.
    resume_at: datetime | None = None
    #: API requests sent, retried and throttled during the run (empty for file connections).
    api: dict[str, int] = field(default_factory=dict)

    def totals(self) -> StreamCounts:
        total = StreamCounts()
        for c in self.streams.values():
            total.add(c)
        return total

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "connection": self.connection, "direction": self.direction,
            "status": self.status, "error": self.error, "seconds": round(self.seconds, 3),
            "resume_at": self.resume_at.isoformat() if self.resume_at else None,
            "streams": {k: asdict(v) for k, v in self.streams.items()}, "targets": self.targets,
            "api": self.api,
        }


#: ``RunSummary.error`` of a follow-up push skipped because the connection was busy.
BUSY = "busy: another job or worker was running it"


class AlreadyRunning(SynchubError):
    """The connection is being synced by another job or another worker sharing the store."""


class Interrupted(SynchubError):
    """A stop was requested (SIGTERM): the run ended early after committing its batch."""


class Hub:
    """Config + store + plugins: everything a command needs to run syncs."""

    def __init__(self, config: Config, store: Store | None = None, *, http: HttpClientFactory | None = None):
        self.config = config
        #: Builds every connection's HTTP client; tests and embedding code swap its transport.
        self.http = http or HttpClientFactory()
        self.store = store or Store(config.store_url())
        self.connectors = get_connectors()
        folders = [config.resolve(p) for p in config.mappings_dir] + get_mapping_paths()
        self.mappings = MappingLibrary(folders, get_transforms(), {"phone_region": config.defaults.phone_region})
        self._mergers: dict[str, Merger] = {}
        self._batches = 0
        #: Bulk loads (:mod:`synchub.bulk`): None chooses per stream, True/False force them.
        self.bulk: bool | None = {"auto": None, "always": True, "never": False}[config.defaults.bulk_load]
        #: Set to stop every run at its next batch or cursor boundary (``synchub serve`` on SIGTERM).
        self.stopping = threading.Event()
        #: Called with each finished run's summary (``synchub serve`` feeds its metrics so).
        self.on_run_finished: list[Callable[[RunSummary], None]] = []
        self.on_run_started: list[Callable[[str, str], None]] = []
        self._locks: dict[str, RunLock] = {}

    # ----- building blocks --------------------------------------------------------------------

    def connector(self, name: str, http: HttpClientFactory | None = None) -> Connector:
        conn_cfg = self._connection(name)
        cls = self.connectors.get(conn_cfg.connector)
        if cls is None:
            raise ConfigError(f"connection {name!r}: no connector named {conn_cfg.connector!r} is installed")
        settings = cls.Settings.model_validate(conn_cfg.settings)
        register_settings_secrets(settings)
        stream_settings = {}
        for sname, scfg in conn_cfg.streams.items():
            if scfg.enabled:
                stream_settings[sname] = cls.StreamSettings.model_validate(scfg.settings)
                register_settings_secrets(stream_settings[sname])
        ctx = ConnectionContext(
            name=name, settings=settings, stream_settings=stream_settings, base_dir=self.config.base_dir,
            # A copy per connector: the sessions it builds are its own (a run's API figures).
            log=logging.getLogger(f"synchub.connector.{name}"), http=http or dataclasses.replace(self.http, sessions=[]),
        )
        return cls(ctx)

    def _connection(self, name: str) -> ConnectionConfig:
        try:
            return self.config.connections[name]
        except KeyError:
            known = ", ".join(sorted(self.config.connections)) or "none"
            raise ConfigError(f"no connection named {name!r} (configured: {known})") from None

    def merger(self, kind: str) -> Merger:
        if kind not in self._mergers:
            self._mergers[kind] = Merger(self.config.merge_config(kind))
        return self._mergers[kind]

    # ----- whole syncs ------------------------------------------------------------------------

    def sync(self, names: Iterable[str] | None = None, *, trigger: str = "cli", progress: ProgressFn | None = None,
             not_before: datetime | None = None) -> list[RunSummary]:
        """Pull every named (default: every) inbound connection, then push to outbound ones.

        ``not_before`` (scheduled runs): skip a connection that already started a run at or
        after that time (another worker served this schedule slot)."""
        every = not names
        names = list(names) if names else list(self.config.connections)
        for n in names:
            self._connection(n)
        summaries = []
        pulled_any = False

        def run_or_skip(n: str, direction: str, asked_for: bool) -> RunSummary:
            try:
                return self.run_connection(n, direction, trigger=trigger, progress=progress,
                                           not_before=not_before if n in names else None)
            except AlreadyRunning:
                if asked_for:
                    raise  # the one asked for cannot run now: say so
                # Another job or worker runs it right now (a push perhaps from before this
                # pull's commit: ``synchub serve`` pushes again shortly).
                log.warning("%s %s is busy in another job or worker; skipped", n, direction)
                return RunSummary(run_id=0, connection=n, direction=direction, status="skipped", error=BUSY)

        for n in names:
            if self.config.connections[n].inbound and not self.stopping.is_set():
                summary = run_or_skip(n, "in", asked_for=not every)
                summaries.append(summary)
                pulled_any = pulled_any or summary.status != "skipped"
        outbound = [n for n, c in self.config.connections.items() if c.outbound and (n in names or pulled_any)]
        for n in outbound:
            if self.stopping.is_set():
                break
            summaries.append(run_or_skip(n, "out", asked_for=n in names and not every))
        return summaries

    def run_connection(self, name: str, direction: str, *, trigger: str = "cli", progress: ProgressFn | None = None,
                       not_before: datetime | None = None) -> RunSummary:
        """One run of one connection in one direction, recorded in the ``run`` table.

        Holds the connection's run lock, which every process sharing the store respects
        (:mod:`synchub.locks`); :class:`AlreadyRunning` when another job or worker has it."""
        with connection_lock(self.store, name) as lock:
            if lock is None:
                raise AlreadyRunning(f"connection {name!r} is already running (in this or another worker)")
            # Holding the lock, any run still marked running belongs to a worker that died.
            self.store.abandon_runs(name)
            if not_before is not None and self.store.ran_since(name, direction, not_before):
                log.info("%s %s: a run since %s exists (another worker); skipping", name, direction, not_before)
                summary = RunSummary(run_id=0, connection=name, direction=direction, status="skipped")
                self._finished(summary)
                return summary
            self._locks[name] = lock
            try:
                return self._run_locked(name, direction, trigger, progress)
            finally:
                self._locks.pop(name, None)

    def _check_lock(self, connection: str) -> None:
        """Before a commit: still holding the connection's run lock (:class:`LockLost` if not)."""
        lock = self._locks.get(connection)
        if lock is not None:
            lock.check()

    def _run_locked(self, name: str, direction: str, trigger: str, progress: ProgressFn | None) -> RunSummary:
        run_id = self.store.start_run(name, trigger, direction)
        summary = RunSummary(run_id=run_id, connection=name, direction=direction)
        for hook in self.on_run_started:
            hook(name, direction)
        started = time.monotonic()
        connector: Connector | None = None
        raised: BaseException | None = None
        http = dataclasses.replace(self.http, sessions=[])
        try:
            connector = self.connector(name, http)
            streams = connector.streams()
            for sname, stream in streams.items():
                scfg = self.config.connections[name].streams[sname]
                counts = summary.streams.setdefault(sname, StreamCounts())
                mapping = self._stream_mapping(scfg, direction)
                if mapping is None:
                    raise ConfigError(f"connection {name!r} stream {sname!r} has no mapping")
                if direction == "in" and mapping.direction == "out":
                    continue  # a write-only stream of a both connection
                if direction == "in" and stream.can_read:
                    self._pull(name, sname, stream, mapping, run_id, counts, progress)
                elif direction == "out" and stream.can_write:
                    self._push(name, sname, stream, mapping, run_id, counts)
                    target = stream.describe_target()
                    if target:
                        summary.targets[sname] = target
            totals = summary.totals()
            summary.status = "partial" if (totals.rejected or totals.write_rejected) else "succeeded"
        except Interrupted as exc:
            # What was read is committed and the cursor is at the last checkpoint: the next
            # run goes on from there.
            summary.status = "interrupted"
            summary.error = str(exc)
            log.warning("run %s of %s interrupted: %s", run_id, name, exc)
        except QuotaExhausted as exc:
            # Not a failure: what was read is committed, the cursor stays at the last
            # checkpoint, and the next run after the reset goes on from there.
            summary.status = "paused"
            summary.error = redact(describe_error(exc))
            summary.resume_at = exc.resume_at
            log.warning("run %s of %s paused until %s: %s", run_id, name, exc.resume_at, summary.error)
        except (SynchubError, OSError, sa.exc.SQLAlchemyError) as exc:
            summary.status = "failed"
            summary.error = redact(describe_error(exc))
            log.error("run %s of %s failed: %s", run_id, name, summary.error)
        except BaseException as exc:  # recorded like any failure, then passed on
            summary.status = "failed"
            summary.error = redact(describe_error(exc))
            raised = exc
        finally:
            if connector is not None:
                summary.api = _add_stats(http.api_stats(), connector.stats())
                connector.close()
        summary.seconds = time.monotonic() - started
        self.store.finish_run(run_id, summary.status, _counts_json(summary), summary.error, summary.api)
        self._finished(summary)
        if raised is not None:
            raise raised
        return summary

    def _finished(self, summary: RunSummary) -> None:
        for done in self.on_run_finished:
            try:
                done(summary)
            except Exception:  # a metrics hook must never fail a run
                log.exception("run hook failed")

    # ----- outbound ---------------------------------------------------------------------------

    def _push(self, connection: str, stream_name: str, stream: Stream, mapping: Mapping, run_id: int, counts: StreamCounts) -> None:
        if mapping.direction != "out":
            raise ConfigError(f"connection {connection!r} stream {stream_name!r}: mapping {mapping.name!r} is not an out mapping")
        kind = mapping.entity
        selected = self._segment(connection, stream_name, kind)
        if stream.write_mode == "snapshot":
            digest = hashlib.sha256()
            n = 0
            for rec, h in _out_records(self.store, kind, mapping, selected):
                digest.update(rec.golden_id.encode() + b":" + h.encode() + b"\n")
                n += 1
            state = self.store.get_state(connection, stream_name) or {}
            if state.get("snapshot_hash") == digest.hexdigest() and stream.target_exists():
                return
            def snapshot() -> Iterator[OutRecord]:
                self._check_lock(connection)
                for rec, _h in _out_records(self.store, kind, mapping, selected):
                    yield rec
                # Last word before the file replaces the old one: another worker may have the
                # lock by now, and its newer export must not be overwritten with this one.
                self._check_lock(connection)

            results = stream.write(snapshot(), mapping.field_names)
            for res in results:
                if res.ok:
                    counts.written += 1
                else:
                    counts.write_rejected += 1
            self.store.save_state(connection, stream_name, {"snapshot_hash": digest.hexdigest(), "records": n}, run_id)
            return
        todo, pushed = self._outbound_todo(connection, stream_name, stream, mapping, selected)
        if not todo:
            return
        payloads = {rec.golden_id: (h, rec) for rec, h in todo}
        done: list[dict[str, Any]] = []
        rejects: list[dict[str, Any]] = []
        attention: list[tuple[str, Any]] = []

        def remember(res: Any, h: str, payload: Any) -> None:
            prev = pushed.get(res.golden_id)
            done.append({"connection": connection, "stream": stream_name, "golden_id": res.golden_id,
                         "payload_hash": h, "payload": payload,
                         "external_id": res.external_id or (prev.external_id if prev is not None else None),
                         "pushed_at": utcnow()})

        def commit() -> None:
            # Each confirmed write is remembered at once in small groups: a crash or a quota stop
            # later in the run must not make the next run write (or create) these again.
            # (Even with the run lock lost: these writes happened.)
            with self.store.begin() as conn:
                if done:
                    ids = [d["golden_id"] for d in done]
                    for chunk in st._chunks(ids):
                        conn.execute(st.outbound_t.delete().where(st.outbound_t.c.connection == connection,
                                                                  st.outbound_t.c.stream == stream_name,
                                                                  st.outbound_t.c.golden_id.in_(chunk)))
                    conn.execute(st.outbound_t.insert(), done)
                if rejects:
                    conn.execute(st.rejected_t.insert(), rejects)
                if attention:
                    counts.conflicts += log_attention(conn, connection, stream_name, attention, utcnow())
            done.clear()
            rejects.clear()
            attention.clear()

        held_back = 0
        results: Iterator[WriteResult] | None = None

        def feed() -> Iterator[OutRecord]:
            # A stop request ends the feed: what the stream was given is written and remembered,
            # the rest is still to do for the next run (the snapshot above is written whole).
            nonlocal held_back
            for i, (rec, _h) in enumerate(todo):
                if self.stopping.is_set():
                    held_back = len(todo) - i
                    return
                if i % PUSH_COMMIT_EVERY == 0:
                    self._check_lock(connection)  # another worker may be pushing: stop writing
                yield rec

        try:
            answered = 0
            results = iter(stream.write(feed(), mapping.field_names))
            for res in results:
                answered += 1
                h, rec = payloads[res.golden_id]
                last_payload = pushed[res.golden_id].payload if res.golden_id in pushed else None
                if res.attention is not None:
                    attention.append((res.golden_id, res.attention))
                if rec.op == "leave" and res.ok:
                    counts.left += 1
                    remember(res, LEFT, last_payload)
                elif res.ok and res.skipped:
                    counts.skipped += 1
                    remember(res, h, last_payload)
                elif res.ok:
                    counts.written += 1
                    remember(res, h, res.holds if res.holds is not None else rec.data)
                else:
                    counts.write_rejected += 1
                    rejects.append(_reject_row(run_id, connection, stream_name, res.golden_id, res.external_id, None,
                                               res.error or "rejected", None))
                    if res.final:
                        # The destination's final word: not retried until the record changes.
                        remember(res, h, last_payload)
                if len(done) + len(rejects) >= PUSH_COMMIT_EVERY:
                    commit()
                    # Between groups of writes (connectors may have taken the whole feed at
                    # once): stop if the lock is gone or a stop was asked for. Leaving the loop
                    # closes the connector's write, which sends nothing more.
                    self._check_lock(connection)
                    if self.stopping.is_set() and not held_back:
                        held_back = max(len(todo) - answered, 1)
                        break
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()  # the connector's write ends here; it sends nothing more
            commit()
        if held_back:
            raise Interrupted(f"stopped on request with {held_back} write(s) of {stream_name} left for the next run")

    def check(self, connection: str) -> CheckResult:
        """``synchub check``: the connector's own check, then (if it passed) its warnings about
        source fields the inbound mappings read that the source lacks (e.g. a file's header)."""
        conn_cfg = self._connection(connection)
        connector = self.connector(connection)
        try:
            result = connector.check()
            reads = {}
            for sname, scfg in conn_cfg.streams.items():
                mapping = self._stream_mapping(scfg, "in") if scfg.enabled else None
                if mapping is not None and mapping.direction == "in":
                    fields = [*mapping.fields, *([mapping.observed_at] if mapping.observed_at else [])]
                    reads[sname] = [(fm.source, fm.dest) for fm in fields if fm.source]
            if result.ok:
                result.lines.extend(connector.check_mapped_fields(reads))
        finally:
            connector.close()
        return result

    def plan(self, connection: str) -> dict[str, list[PlannedWrite]]:
        """What a push of ``connection`` would do, per stream, without writing anything."""
        conn_cfg = self._connection(connection)
        if not conn_cfg.outbound:
            raise ConfigError(f"connection {connection!r} does not write (direction {conn_cfg.direction!r})")
        connector = self.connector(connection)
        plans: dict[str, list[PlannedWrite]] = {}
        try:
            for sname, stream in connector.streams().items():
                mapping = self._stream_mapping(conn_cfg.streams[sname], "out")
                if mapping is None or mapping.direction != "out" or not stream.can_write:
                    continue
                selected = self._segment(connection, sname, mapping.entity)
                if stream.write_mode == "snapshot":
                    records = [rec for rec, _h in _out_records(self.store, mapping.entity, mapping, selected)]
                    plans[sname] = [PlannedWrite(rec.golden_id, "write", None) for rec in records]
                    continue
                todo, _pushed = self._outbound_todo(connection, sname, stream, mapping, selected)
                plans[sname] = list(stream.plan((rec for rec, _h in todo), mapping.field_names))
        finally:
            connector.close()
        return plans

    def _stream_mapping(self, scfg: StreamConfig, direction: str) -> Mapping | None:
        """The mapping a stream uses in ``direction``: ``write_mapping`` (if set) when writing."""
        name = (scfg.write_mapping or scfg.mapping) if direction == "out" else scfg.mapping
        return self.mappings.get(name) if name else None

    def _segment(self, connection: str, stream_name: str, kind: str) -> Callable[[dict[str, Any]], bool]:
        return compile_filter(self.config.connections[connection].streams[stream_name].filter, kind)

    def _outbound_todo(self, connection: str, stream_name: str, stream: Stream, mapping: Mapping,
                       selected: Callable[[dict[str, Any]], bool]) -> tuple[list[tuple[OutRecord, str]], dict[str, Any]]:
        """The records a push must send: those in the segment whose mapped payload changed since
        the last push, and (for streams that handle it) those that left the segment."""
        with self.store.engine.connect() as conn:
            pushed = {r.golden_id: r for r in conn.execute(
                sa.select(st.outbound_t.c.golden_id, st.outbound_t.c.payload_hash, st.outbound_t.c.external_id,
                          st.outbound_t.c.payload, st.outbound_t.c.pushed_at)
                .where(st.outbound_t.c.connection == connection, st.outbound_t.c.stream == stream_name))}
        todo: list[tuple[OutRecord, str]] = []
        current: set[str] = set()
        for rec, h in _out_records(self.store, mapping.entity, mapping, selected):
            current.add(rec.golden_id)
            prev = pushed.get(rec.golden_id)
            if prev is None or prev.payload_hash != h:
                rec.returning = prev is not None and prev.payload_hash == LEFT
                todo.append((rec, h))
        self._destination_view(connection, stream_name, mapping, todo, pushed)
        if stream.handles_leave:
            # Still there for another golden record (a merge kept the same destination record).
            kept = {rec.external_id for rec, _h in todo if rec.external_id}
            kept |= {r.external_id for g, r in pushed.items() if g in current and r.external_id}
            for g, prev in pushed.items():
                if g in current or prev.payload_hash == LEFT or prev.external_id in kept:
                    continue
                if prev.payload is None and prev.external_id is None:
                    continue  # held back before, never written: nothing to take out
                todo.append((OutRecord(golden_id=g, data=prev.payload or {}, external_id=prev.external_id,
                                       op="leave", previous=prev.payload), LEFT))
        return todo, pushed

    def _destination_view(self, connection: str, stream_name: str, mapping: Mapping,
                          todo: list[tuple[OutRecord, str]], pushed: dict[str, Any]) -> None:
        """Fill ``external_id`` and ``previous`` of the records to write, with one lookup of the
        records this connection itself delivered (only for those records).

        ``external_id``: the id a previous write returned, else the id of the connection's own
        (newest) source record, under which the record already exists there. ``previous``: what
        the destination holds: the record this connection last *read* (mapped out again) when
        that is newer than our last write, else what we last wrote. So a value the destination
        already has, because it came from there, is not written back to it."""
        own: dict[str, list[Any]] = {}
        with self.store.engine.connect() as conn:
            for chunk in st._chunks([rec.golden_id for rec, _h in todo]):
                for r in conn.execute(
                    sa.select(st.source_t.c.golden_id, st.source_t.c.source_id, st.source_t.c.data, st.source_t.c.changed_at)
                    .where(st.source_t.c.connection == connection, st.source_t.c.stream == stream_name,
                           st.source_t.c.deleted == sa.false(), st.source_t.c.golden_id.in_(chunk))
                    .order_by(st.source_t.c.id)
                ):
                    own.setdefault(r.golden_id, []).append(r)
        for rec, _h in todo:
            prev = pushed.get(rec.golden_id)
            rows = own.get(rec.golden_id, [])
            rec.external_id = (prev.external_id if prev is not None else None) or (rows[-1].source_id if rows else None)
            rec.previous = prev.payload if prev is not None else None
            row = next((r for r in rows if r.source_id == rec.external_id), None)
            if row is None:
                continue
            if prev is None or prev.pushed_at is None or row.changed_at >= prev.pushed_at:
                try:
                    rec.previous = mapping.apply({**row.data, "id": rec.golden_id})
                except SynchubError:
                    continue

    # ----- inbound ----------------------------------------------------------------------------

    def _pull(self, connection: str, stream_name: str, stream: Stream, mapping: Mapping, run_id: int,
              counts: StreamCounts, progress: ProgressFn | None) -> None:
        state = self.store.get_state(connection, stream_name)
        batch_size = self.config.defaults.batch_size
        loading = self._bulk_state(connection, stream_name, mapping)
        if loading is not None:
            batch_size = bulk.UNIT
        pending: list[Record] = []
        rejects: list[dict[str, Any]] = []
        preparer = Preparer(mapping, stream, None if mapping.timeline_only else list(self.config.match_config(mapping.entity).keys),
                            self.config.defaults.phone_region, utcnow())

        def flush() -> None:
            nonlocal loading, batch_size
            self._flush(connection, stream_name, mapping, preparer, pending, rejects, run_id, counts, loading)
            pending.clear()
            rejects.clear()
            if isinstance(loading, bulk.BulkState) and loading.held() > bulk.HOLD_MAX:
                # Everything so far is committed: the incremental path goes on from the store.
                log.info("%s/%s: the bulk load holds %d golden records in memory, its limit; the rest of the "
                         "stream loads incrementally", connection, stream_name, loading.held())
                loading = None
                batch_size = self.config.defaults.batch_size

        items = iter(stream.read(state))
        while True:
            if self.stopping.is_set() and loading is not None and (pending or rejects):
                # A bulk unit can be long: commit what was read now rather than at its end.
                flush()
            if self.stopping.is_set() and not pending and not rejects:
                # At a boundary: everything read is committed (and the cursor saved, if the
                # stream gave a checkpoint). Stopping here loses nothing.
                raise Interrupted(f"stopped on request after {counts.read} record(s) of {stream_name}; "
                                  "what was read is committed, the next run goes on from the saved cursor")
            try:
                item = next(items)
            except StopIteration:
                break
            except Exception:
                # The read broke off (quota spent, API down): keep what arrived. The cursor stays
                # at the last checkpoint, so the next run reads these again and finds them unchanged.
                flush()
                raise
            if isinstance(item, Record):
                counts.read += 1
                pending.append(item)
                if len(pending) + len(rejects) >= batch_size:
                    flush()
                if progress and counts.read % 500 == 0:
                    progress(connection, stream_name, counts.read)
            elif isinstance(item, Rejected):
                counts.read += 1
                log.warning("rejected %s/%s %s: %s", connection, stream_name, item.ref, "unreadable record")
                rejects.append(_reject_row(run_id, connection, stream_name, item.ref, None, item.field, item.reason, item.raw))
            elif isinstance(item, Reconcile):
                flush()
                self._reconcile(connection, stream_name, mapping, item, run_id, counts)
            elif isinstance(item, Checkpoint):
                flush()
                # The data above is committed; only now may the cursor move past it.
                self._check_lock(connection)
                self.store.save_state(connection, stream_name, item.state, run_id)
        flush()
        if progress:
            progress(connection, stream_name, counts.read)

    def _bulk_state(self, connection: str, stream_name: str, mapping: Mapping) -> bulk.BulkState | bool | None:
        """The bulk load of this pull (see :mod:`synchub.bulk`), or None for the incremental path.
        A timeline-only stream loads in bulk without matching state: ``True``."""
        with self.store.engine.connect() as conn:
            if mapping.timeline_only:
                if self.bulk is not None:
                    return True if self.bulk else None
                return True if st.count_interactions(conn, connection, stream_name) == 0 else None
            if not (self.bulk if self.bulk is not None else bulk.wanted(conn, connection, stream_name, mapping.entity)):
                return None
            mcfg = self.config.match_config(mapping.entity)
            log.info("%s/%s: bulk load", connection, stream_name)
            return bulk.BulkState(conn, connection, stream_name, mapping.entity, list(mcfg.keys),
                                  mcfg.score_config(mapping.entity), mcfg.fuzzy)

    def _prepare_batch(self, connection: str, stream: str, preparer: Preparer, items: list[Record],
                       rejects: list[dict[str, Any]], run_id: int, counts: StreamCounts,
                       loading: bulk.BulkState | bool | None) -> list[Prepared]:
        """Prepare the records read for one batch, except those whose raw row the hub prepared
        before, unchanged (:mod:`synchub.prepare`): they count as unchanged at once."""
        raw: list[str | None] = [None] * len(items)
        sids: list[str | None] = [None] * len(items)
        last: dict[str, int] = {}  # source id -> index of its last occurrence in the batch
        if preparer.skips:
            for i, item in enumerate(items):
                raw[i] = preparer.raw_hash(item)
                sids[i] = sid = preparer.source_id(item)
                if sid is not None:
                    last[sid] = i
        known: dict[str, str] = {}
        if any(h is not None for h in raw):
            if isinstance(loading, bulk.BulkState):
                known = loading.raw_hashes(last)
            else:
                with self.store.engine.connect() as conn:
                    known = st.lookup_raw_hashes(conn, connection, stream, last)
        # A source id whose last occurrence is unchanged is unchanged; its earlier ones in
        # the batch are superseded by it, as on the path that prepares them.
        unchanged = {sid for sid, i in last.items() if raw[i] is not None and known.get(sid) == raw[i]}

        def reject(ref: str | None, source_id: str | None, field_name: str | None, reason: str, data: dict[str, Any]) -> None:
            rejects.append(_reject_row(run_id, connection, stream, ref, source_id, field_name, reason, _raw(data)))
            log.warning("rejected %s/%s %s: field %s", connection, stream, ref or source_id, field_name or "-")

        out: list[Prepared] = []
        for item, h, sid in zip(items, raw, sids, strict=True):
            if unchanged and sid in unchanged:
                counts.unchanged += 1
                continue
            p = preparer.prepare(item, reject, h)
            if p is not None:
                out.append(p)
        return out

    def _flush(self, connection: str, stream: str, mapping: Mapping, preparer: Preparer, items: list[Record],
               rejects: list[dict[str, Any]], run_id: int, counts: StreamCounts,
               loading: bulk.BulkState | bool | None = None) -> None:
        """Commit one batch: its rejects, then its records. Records of a timeline-only stream
        (orders) replace the entries the hub held for them, on their owner's timeline, and the
        owners' purchase summaries are derived again."""
        pending = self._prepare_batch(connection, stream, preparer, items, rejects, run_id, counts, loading)
        if not pending and not rejects:
            return
        self._check_lock(connection)
        kind = mapping.entity
        actor = f"run:{run_id}"
        self._batches += 1
        b = self._batches
        if b & (b - 1) == 0 or b % ANALYZE_EVERY == 0:  # batches 1, 2, 4, 8, ... then every 50
            self.store.analyze()
        with self.store.begin() as conn:
            if rejects:
                conn.execute(st.rejected_t.insert(), rejects)
                counts.rejected += len(rejects)
            quarantined = _quarantine_rows(run_id, connection, stream, pending)
            if quarantined:
                conn.execute(st.quarantined_t.insert(), quarantined)
                q, u = quarantine.counts(quarantined)
                counts.quarantined += q
                counts.unverified += u
                log.info("%s/%s: %d values quarantined, %d kept unverified in this batch", connection, stream, q, u)
            if pending and mapping.timeline_only:
                assert mapping.owner_stream is not None
                touched = _apply_timeline(conn, connection, stream, mapping.owner_stream, pending, counts)
                self._rederive_any(conn, touched, actor, run_id)
            elif pending:
                _resolve_links(conn, connection, pending)
                mcfg = self.config.match_config(kind)
                _apply_batch(conn, connection, stream, kind, pending, run_id, counts, self.merger(kind), actor,
                             identity_kinds=list(mcfg.keys), score_cfg=mcfg.score_config(kind), fuzzy=mcfg.fuzzy,
                             loading=loading if isinstance(loading, bulk.BulkState) else None)

    def _reconcile(self, connection: str, stream: str, mapping: Mapping, item: Reconcile, run_id: int,
                   counts: StreamCounts) -> None:
        """What a full listing shows gone from the source: its data leaves the hub."""
        self._check_lock(connection)
        now = utcnow()
        actor = f"run:{run_id}"
        with self.store.begin() as conn:
            if mapping.timeline_only:
                q = sa.select(st.interaction_t.c.record_id, st.interaction_t.c.golden_id).where(
                    st.interaction_t.c.connection == connection, st.interaction_t.c.stream == stream)
                gone_rows = [r for r in conn.execute(q) if r.record_id not in item.ids]
                gone = sorted({r.record_id for r in gone_rows})
                for chunk in st._chunks(gone):
                    conn.execute(st.interaction_t.delete().where(
                        st.interaction_t.c.connection == connection, st.interaction_t.c.stream == stream,
                        st.interaction_t.c.record_id.in_(chunk)))
                touched = {r.golden_id for r in gone_rows if r.golden_id}
            else:
                q = sa.select(st.source_t.c.id, st.source_t.c.source_id, st.source_t.c.golden_id).where(
                    st.source_t.c.connection == connection, st.source_t.c.stream == stream,
                    st.source_t.c.deleted.is_(False), st.source_t.c.changed_at < item.as_of)
                gone_src = [r for r in conn.execute(q) if r.source_id not in item.ids]
                gone = [r.source_id for r in gone_src]
                for chunk in st._chunks([r.id for r in gone_src]):
                    # An opt-out outlives the record: it is the evidence that this person must
                    # not be contacted, and erasing it could let an older opt-in elsewhere win.
                    kept = {r.id: _opt_outs_only(r.data) for r in conn.execute(
                        sa.select(st.source_t.c.id, st.source_t.c.data).where(st.source_t.c.id.in_(chunk)))}
                    _update_by_id(conn, st.source_t, [
                        {"_id": rid, "data": data, "deleted": True, "content_hash": "deleted:", "changed_at": now,
                         "quarantine": None, "raw_hash": None}
                        for rid, data in kept.items()], ("data", "deleted", "content_hash", "changed_at", "quarantine", "raw_hash"))
                    conn.execute(st.key_t.delete().where(st.key_t.c.source_record_id.in_(chunk)))
                touched = {r.golden_id for r in gone_src}
                if gone:
                    conn.execute(st.audit_t.insert(), [
                        {"at": now, "actor": actor, "action": "source_deleted", "golden_id": r.golden_id,
                         "details": {"connection": connection, "stream": stream, "source_id": r.source_id}}
                        for r in gone_src])
            if gone:
                log.info("%s/%s: %d records are gone from the source", connection, stream, len(gone))
                counts.deleted += len(gone)
                self._rederive_any(conn, touched, actor, run_id)

    def _rederive_any(self, conn: sa.Connection, golden_ids: set[str], actor: str, run_id: int) -> None:
        """Derive golden records of any kind again (after their timeline changed)."""
        by_kind: dict[str, set[str]] = {}
        for chunk in st._chunks(sorted(golden_ids)):
            for r in conn.execute(sa.select(st.golden_t.c.id, st.golden_t.c.kind).where(st.golden_t.c.id.in_(chunk))):
                by_kind.setdefault(r.kind, set()).add(r.id)
        for kind, ids in by_kind.items():
            rederive(conn, kind, ids, self.merger(kind), utcnow(), actor, run_id, fuzzy=self.config.match_config(kind).fuzzy)


def _apply_batch(conn: sa.Connection, connection: str, stream: str, kind: str, pending: list[Prepared],
                 run_id: int, counts: StreamCounts, merger: Merger, actor: str, *,
                 identity_kinds: list[str], score_cfg: Any, fuzzy: bool, loading: bulk.BulkState | None = None) -> None:
    """Match, merge and store one batch of source records of an entity stream. ``loading``: the
    bulk load this batch belongs to; its matcher and source index stand in for the store's."""
    now = utcnow()
    # Later occurrences of a source id in one batch replace earlier ones (at-least-once reads).
    latest: dict[str, Prepared] = {}
    for p in pending:
        if p.source_id in latest:
            counts.unchanged += 1
        latest[p.source_id] = p
    with_aliases = [p for p in latest.values() if p.aliases]
    absorbed = _rekey_aliases(conn, connection, stream, with_aliases, now, actor)
    if loading is not None:
        if with_aliases:
            loading.refresh(conn, {a for p in with_aliases for a in p.aliases} | {p.source_id for p in with_aliases})
        for loser, survivor in absorbed:
            loading.matcher.absorb(loser, survivor)
        existing: dict[str, Any] = loading.lookup(latest)
    else:
        existing = st.lookup_source_records(conn, connection, stream, latest)
    changed: list[Prepared] = []
    rehashed: dict[str, tuple[int, str | None]] = {}  # source id -> (row id, new raw hash)
    for p in latest.values():
        ex = existing.get(p.source_id)
        if ex is not None and ex.content_hash == p.hash:
            counts.unchanged += 1
            if ex.raw_hash != p.raw_hash:  # prepared again (new code, mapping, raw spelling): same record
                rehashed[p.source_id] = (ex.id, p.raw_hash)
        elif ex is None and p.deleted:
            counts.unchanged += 1  # deleted at the source before the hub ever saw it
        else:
            changed.append(p)
    if rehashed:
        _update_by_id(conn, st.source_t, [{"_id": rid, "raw_hash": h} for rid, h in rehashed.values()], ("raw_hash",))
        if loading is not None:
            loading.rehashed({sid: h for sid, (_rid, h) in rehashed.items()})
    _keep_opt_outs(conn, changed, existing)
    if absorbed:
        counts.duplicates += len(absorbed)
        rederive(conn, kind, {s for _l, s in absorbed}, merger, now, actor, run_id, fuzzy=fuzzy)
    if not changed:
        return
    if loading is not None:
        matcher = loading.matcher
    else:
        matcher = match.BatchMatcher(conn, kind, identity_kinds, score_cfg, fuzzy=fuzzy)
    feats = matcher.prepare([(p.keys, p.data, existing[p.source_id].golden_id if p.source_id in existing else None)
                             for p in changed])
    resolver = matcher.resolver
    assert resolver is not None
    done_before = set(resolver._parent)
    assignment: dict[str, str] = {}
    outcome: dict[str, str] = {}
    created_by: dict[str, str] = {}
    for p, feat in zip(changed, feats, strict=True):
        ex = existing.get(p.source_id)
        a = matcher.assign(p.keys, feat, ex.golden_id if ex is not None else None, st.new_golden_id)
        assignment[p.source_id] = a.target
        if ex is not None:
            outcome[p.source_id] = "updated"
        elif a.outcome == "created":
            outcome[p.source_id] = "created"
            created_by[a.target] = p.source_id
        else:
            outcome[p.source_id] = "duplicates"
    new_goldens = set(resolver.created)
    # Golden records merged because one record matched several (in this batch).
    merges = {loser: resolver.find(loser) for loser in resolver._parent if loser not in done_before}
    stored_merges = {}
    for loser, survivor in merges.items():
        if loser in new_goldens:  # created earlier in this batch: never written, nothing to move
            outcome[created_by[loser]] = "duplicates"
            continue
        stored_merges[loser] = survivor
    merge_goldens(conn, stored_merges, now, actor, "matched by a new or changed record")
    counts.duplicates += len(stored_merges)
    for sid, g in list(assignment.items()):
        assignment[sid] = resolver.find(g)
    # Source records: update changed ones, insert new ones.
    updates, inserts = [], []
    for p in changed:
        row = {
            "golden_id": assignment[p.source_id], "data": p.data, "content_hash": p.hash,
            "observed_at": p.observed_at, "changed_at": now, "deleted": p.deleted, "quarantine": p.quarantine,
            "raw_hash": p.raw_hash,
        }
        ex = existing.get(p.source_id)
        if ex is not None:
            updates.append({**row, "_id": ex.id})
        else:
            inserts.append({**row, "connection": connection, "stream": stream, "source_id": p.source_id,
                            "kind": kind, "first_seen_at": now})
    if updates:
        _update_by_id(conn, st.source_t, updates,
                      ("golden_id", "data", "content_hash", "observed_at", "changed_at", "deleted", "quarantine", "raw_hash"))
        ids = [u["_id"] for u in updates]
        for chunk in st._chunks(ids):
            conn.execute(st.key_t.delete().where(st.key_t.c.source_record_id.in_(chunk)))
    sid_to_rowid = {p.source_id: existing[p.source_id].id for p in changed if p.source_id in existing}
    if inserts:
        result = conn.execute(st.source_t.insert().returning(st.source_t.c.id, st.source_t.c.source_id, sort_by_parameter_order=True), inserts)
        for row in result:
            sid_to_rowid[row.source_id] = row.id
    key_rows = [
        {"kind": kind, "key_type": t, "key_value": v, "golden_id": assignment[p.source_id], "source_record_id": sid_to_rowid[p.source_id]}
        for p in changed if not p.deleted for (t, v) in p.keys
    ]
    if key_rows:
        st.insert_rows(conn, st.key_t, key_rows)
    _write_interactions(conn, connection, stream, changed, assignment, existing)
    adopted = _adopt_entries(conn, connection, stream, {p.source_id: assignment[p.source_id] for p in changed if p.source_id not in existing})
    touched = {assignment[p.source_id] for p in changed} | set(merges.values()) | adopted
    touched = {resolver.find(g) for g in touched}
    fresh = _fresh_goldens(connection, stream, changed, assignment, new_goldens, set(stored_merges.values()) | adopted, existing)
    # The matcher read the block sizes after the re-keyed records above were written back.
    known = loading.block_sizes if loading is not None else matcher.block_sizes
    golden_changes = rederive(conn, kind, touched, merger, now, actor, run_id, fuzzy=fuzzy, known_blocks=known,
                              fresh=fresh, on_match_keys=loading.written_keys if loading is not None else None)
    possible = [(resolver.find(d.golden_id), resolver.find(d.other_id), d) for d in matcher.possible]
    golden_changes["__conflicts__"] += log_possible_duplicates(conn, [(a, b, d.score, d.reasons) for a, b, d in possible if a != b], now)
    for p in changed:
        o = outcome[p.source_id]
        if o == "updated" and not golden_changes.get(assignment[p.source_id]):
            o = "unchanged"
        setattr(counts, o, getattr(counts, o) + 1)
    counts.conflicts += golden_changes.get("__conflicts__", 0)
    if loading is not None:
        loading.remember([(p.source_id, sid_to_rowid[p.source_id], assignment[p.source_id], p.hash, p.deleted, p.raw_hash)
                          for p in changed])
        matcher.batch_done()


def _fresh_goldens(connection: str, stream: str, changed: list[Prepared], assignment: dict[str, str],
                   new_goldens: set[str], absorbed: set[str], existing: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Golden records created by this batch whose every source record is in it: they derive
    from the batch in memory, without reading back what was just written. Not those that
    absorbed a stored golden record or timeline entries, nor those with orders of their own
    (their purchase summary is derived from the stored timeline)."""
    fresh: dict[str, list[dict[str, Any]]] = {}
    spoiled: set[str] = set(absorbed)
    for p in changed:
        g = assignment[p.source_id]
        if g not in new_goldens or g in spoiled:
            continue
        if p.source_id in existing or any(i.get("kind") == "order" for i in p.interactions):
            spoiled.add(g)
            fresh.pop(g, None)
            continue
        fresh.setdefault(g, []).append({
            "golden_id": g, "connection": connection, "stream": stream, "source_id": p.source_id,
            "data": p.data, "observed_at": _utc(p.observed_at), "deleted": p.deleted})
    return fresh


def _utc(moment: datetime) -> datetime:
    """A moment as the store gives it back: aware, in UTC."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


#: Consent statuses that say "do not contact".
OPT_OUTS = frozenset({"unsubscribed", "cleaned"})


def _keep_opt_outs(conn: sa.Connection, changed: list[Prepared], existing: dict[str, Any]) -> None:
    """Silence does not revoke an opt-out: when a source record that said "unsubscribed" (or
    "cleaned") for a channel changes and now says nothing about that channel (an archived
    Mailchimp member, an export without the consent column), the opt-out stays on the record.
    Only an explicit newer statement replaces it. The content hash stays that of what the source
    sent, so an unchanged re-read is still recognised as unchanged."""
    ids = {existing[p.source_id].id: p for p in changed if p.source_id in existing and not p.deleted}
    if not ids:
        return
    for chunk in st._chunks(list(ids)):
        for row in conn.execute(sa.select(st.source_t.c.id, st.source_t.c.data).where(st.source_t.c.id.in_(chunk))):
            old = (row.data or {}).get("consent") or {}
            p = ids[row.id]
            new = p.data.get("consent") or {}
            kept = {ch: c for ch, c in old.items() if isinstance(c, dict) and c.get("status") in OPT_OUTS and ch not in new}
            if kept:
                p.data["consent"] = {**new, **kept}


def _opt_outs_only(data: dict[str, Any] | None) -> dict[str, Any]:
    consent = (data or {}).get("consent") or {}
    kept = {ch: c for ch, c in consent.items() if isinstance(c, dict) and c.get("status") in OPT_OUTS}
    return {"consent": kept} if kept else {}


def _quarantine_rows(run_id: int, connection: str, stream: str, pending: list[Prepared]) -> list[dict[str, Any]]:
    now = utcnow()
    return [
        {"run_id": run_id, "connection": connection, "stream": stream, "ref": p.ref or "", "source_id": p.source_id,
         "field": e["field"][:200], "source": str(e["source"])[:200] if e.get("source") else None,
         "rule": str(e.get("rule") or "")[:100], "status": e["status"], "raw": e.get("raw"),
         "reason": e["reason"], "created_at": now}
        for p in pending if p.quarantine for e in p.quarantine
    ]


def _resolve_links(conn: sa.Connection, connection: str, pending: list[Prepared]) -> None:
    """Fill linked fields (a contact's company) with the golden id of the linked source record.
    One lookup per linked stream and batch; a link the hub does not know yet stays empty, and the
    record's hash changes once it resolves, so a later read fills it in."""
    wanted: dict[str, set[str]] = {}
    for p in pending:
        for stream, sid in p.links.values():
            wanted.setdefault(stream, set()).add(sid)
    if not wanted:
        return
    found = {stream: st.lookup_source_records(conn, connection, stream, ids) for stream, ids in wanted.items()}
    for p in pending:
        if not p.links:
            continue
        for fname, (stream, sid) in p.links.items():
            row = found[stream].get(sid)
            if row is not None and not row.deleted:
                p.data[fname] = row.golden_id
            else:
                p.raw_hash = None  # resolves on a later read of the same row
        p.hash = content_hash(p)


def _rekey_aliases(conn: sa.Connection, connection: str, stream: str, pending: list[Prepared],
                   now: datetime, actor: str) -> list[tuple[str, str]]:
    """The source merged records: what the hub holds under a retired id now belongs to the
    surviving id. Returns the golden records that absorbed another one (to derive again).

    A retired id whose survivor the hub does not know yet is renamed to it (the survivor's record
    then arrives as an update); otherwise the retired source record is dropped and its golden
    record merged into the survivor's, as the source system said they are one customer.
    Returns the (merged, surviving) golden ids of those merges.
    """
    if not pending:
        return []
    aliases = {a: p.source_id for p in pending for a in p.aliases}
    found = st.lookup_source_records(conn, connection, stream, aliases)
    if not found:
        return []
    survivors = st.lookup_source_records(conn, connection, stream, {p.source_id: None for p in pending})
    absorbed: list[tuple[str, str]] = []
    for alias, row in found.items():
        target = aliases[alias]
        surv = survivors.get(target)
        if surv is None:
            conn.execute(st.source_t.update().where(st.source_t.c.id == row.id).values(source_id=target, changed_at=now, raw_hash=None))
            _move_owner(conn, connection, stream, alias, target)
            # Writes go to the surviving id from now on.
            conn.execute(st.outbound_t.update().where(st.outbound_t.c.connection == connection,
                                                      st.outbound_t.c.external_id == alias).values(external_id=target))
            survivors[target] = row
            conn.execute(st.audit_t.insert().values(at=now, actor=actor, action="rekey", golden_id=row.golden_id,
                                                    details={"connection": connection, "stream": stream, "from": alias, "to": target}))
            continue
        conn.execute(st.key_t.delete().where(st.key_t.c.source_record_id == row.id))
        conn.execute(st.source_t.delete().where(st.source_t.c.id == row.id))
        _move_owner(conn, connection, stream, alias, target)
        if row.golden_id != surv.golden_id:
            merge_golden(conn, row.golden_id, surv.golden_id, now, actor,
                         f"{connection}/{stream} merged record {alias} into {target}")
        conn.execute(st.outbound_t.delete().where(st.outbound_t.c.connection == connection,
                                                  st.outbound_t.c.external_id == alias))
        absorbed.append((row.golden_id, surv.golden_id))
    return absorbed


def merge_golden(conn: sa.Connection, loser: str, survivor: str, now: datetime, actor: str, reason: str) -> None:
    """Move everything of golden record ``loser`` to ``survivor`` and mark it merged. The audit
    entry lists the source records that moved, so ``review.undo_merge`` can undo it exactly."""
    merge_goldens(conn, {loser: survivor}, now, actor, reason)


def merge_goldens(conn: sa.Connection, survivors: dict[str, str], now: datetime, actor: str, reason: str) -> None:
    """:func:`merge_golden` for many ``{loser: survivor}`` pairs at once: one executemany per
    table instead of eight statements per pair (5,000 merges of a dedupe: 2.5 s -> 0.3 s).
    A survivor must not itself be a loser of the same call."""
    if not survivors:
        return
    assert not set(survivors.values()) & set(survivors), "merge chains must be resolved to their roots"
    moved: dict[str, list[int]] = {loser: [] for loser in survivors}
    for chunk in st._chunks(sorted(survivors)):
        for sid, gid in conn.execute(sa.select(st.source_t.c.id, st.source_t.c.golden_id)
                                     .where(st.source_t.c.golden_id.in_(chunk)).order_by(st.source_t.c.id)):
            moved[gid].append(sid)
        conn.execute(st.match_key_t.delete().where(st.match_key_t.c.golden_id.in_(chunk)))
    pairs = [{"_loser": loser, "_survivor": survivor} for loser, survivor in survivors.items()]
    for table in (st.source_t, st.key_t, st.interaction_t):
        conn.execute(table.update().where(table.c.golden_id == sa.bindparam("_loser"))
                     .values(golden_id=sa.bindparam("_survivor")), pairs)
    overrides = _merge_overrides(conn, survivors)
    conn.execute(st.golden_t.update().where(st.golden_t.c.id == sa.bindparam("_loser"))
                 .values(status="merged", merged_into=sa.bindparam("_survivor"), updated_at=now), pairs)
    conn.execute(st.audit_t.insert(), [
        {"at": now, "actor": actor, "action": "merge", "golden_id": survivor,
         "details": {"merged": loser, "source_records": moved[loser], "reason": reason,
                     **({"overrides": overrides[loser]} if loser in overrides else {})}}
        for loser, survivor in survivors.items()])


def _merge_overrides(conn: sa.Connection, survivors: dict[str, str]) -> dict[str, dict[str, list[Any]]]:
    """Give each survivor the admins' field decisions of the records merged into it. Where two of
    them decided the same field, the most recent decision holds for the merged customer; the
    other stays with (or is parked on) the merged record, so undoing the merge gives every record
    its own decisions back. Returns, per loser, the override ids ``moved`` to the survivor and
    the survivor's ids ``parked`` on the loser, each with its decision time (kept in the merge's
    audit entry; row ids alone could be reused after a decision is replaced)."""
    rows: list[Any] = []
    for chunk in st._chunks(sorted(set(survivors) | set(survivors.values()))):
        rows += conn.execute(sa.select(st.override_t.c.id, st.override_t.c.golden_id, st.override_t.c.field,
                                       st.override_t.c.decided_at).where(st.override_t.c.golden_id.in_(chunk))).all()
    if not rows:
        return {}
    by_field: dict[tuple[str, str], list[Any]] = {}
    for r in rows:
        by_field.setdefault((survivors.get(r.golden_id, r.golden_id), r.field), []).append(r)
    out: dict[str, dict[str, list[Any]]] = {}
    parks: list[dict[str, Any]] = []
    moves: list[dict[str, Any]] = []
    for (survivor, _field), decisions in by_field.items():
        # Newest decision wins; on a tie the survivor's own stays.
        winner = max(decisions, key=lambda r: (_aware(r.decided_at), r.golden_id == survivor, r.id))
        if winner.golden_id == survivor:
            continue
        loser = winner.golden_id
        done = out.setdefault(loser, {"moved": [], "parked": []})
        own = next((r for r in decisions if r.golden_id == survivor), None)
        if own is not None:  # the survivor's older decision waits on the loser
            parks.append({"_id": own.id, "golden_id": loser})
            done["parked"].append([own.id, _aware(own.decided_at).isoformat()])
        moves.append({"_id": winner.id, "golden_id": survivor})
        done["moved"].append([winner.id, _aware(winner.decided_at).isoformat()])
    # A swap: out of the way first, so that unique (golden_id, field) holds after each statement.
    if parks:
        _update_by_id(conn, st.override_t, [{"_id": p["_id"], "golden_id": f"parked:{p['_id']}"} for p in parks], ("golden_id",))
    if moves:
        _update_by_id(conn, st.override_t, moves, ("golden_id",))
    if parks:
        _update_by_id(conn, st.override_t, parks, ("golden_id",))
    return out


def log_possible_duplicates(conn: sa.Connection, pairs: list[tuple[str, str, float, list[str]]], now: datetime) -> int:
    """Log each pair of golden records that may be one customer as a conflict, once per pair."""
    notes = {}
    for a, b, score, reasons in pairs:
        x, y = min(a, b), max(a, b)
        fp = hashlib.sha256(f"possible_duplicate:{x}:{y}".encode()).hexdigest()
        notes[fp] = {"fingerprint": fp, "kind": "possible_duplicate", "golden_id": x, "other_golden_id": y,
                     "field": None, "connections": "", "rule": "fuzzy match",
                     "candidates": [{"score": round(float(score), 4), "reasons": reasons}],
                     "applied": {"value": "kept apart until reviewed"}, "status": "open", "created_at": now}
    if not notes:
        return 0
    apart = st.load_keep_apart(conn, {n["golden_id"] for n in notes.values()} | {n["other_golden_id"] for n in notes.values()})
    known = set()
    for chunk in st._chunks(list(notes)):
        known |= {r[0] for r in conn.execute(sa.select(st.conflict_t.c.fingerprint).where(st.conflict_t.c.fingerprint.in_(chunk)))}
    new = [n for fp, n in notes.items() if fp not in known and (n["golden_id"], n["other_golden_id"]) not in apart]
    if new:
        conn.execute(st.conflict_t.insert(), new)
    return len(new)


def log_attention(conn: sa.Connection, connection: str, stream: str, notes: list[tuple[str, Any]], now: datetime) -> int:
    """Log what a write could not do and a person must act on (``needs_reoptin``...) as open
    conflicts, once per golden record, destination and kind while it stays open."""
    rows = {}
    for golden_id, att in notes:
        fp = hashlib.sha256(f"{att.kind}:{connection}:{stream}:{golden_id}:{att.path}".encode()).hexdigest()
        rows[fp] = {"fingerprint": fp, "kind": att.kind, "golden_id": golden_id, "other_golden_id": None,
                    "field": att.path, "connections": connection, "rule": f"{connection}/{stream}",
                    "candidates": att.values or [{"value": None, "connection": connection, "note": att.message}],
                    "applied": {"value": redact(att.message)}, "status": "open", "created_at": now}
    known = {}
    for chunk in st._chunks(list(rows)):
        known |= {r.fingerprint: r.status for r in conn.execute(
            sa.select(st.conflict_t.c.fingerprint, st.conflict_t.c.status).where(st.conflict_t.c.fingerprint.in_(chunk)))}
    new = [r for fp, r in rows.items() if fp not in known]
    reopen = [fp for fp in rows if known.get(fp) not in (None, "open")]
    if new:
        conn.execute(st.conflict_t.insert(), new)
    for fp in reopen:
        # Marked resolved, yet the destination still refuses: open again, with the new detail.
        r = rows[fp]
        conn.execute(st.conflict_t.update().where(st.conflict_t.c.fingerprint == fp).values(
            status="open", candidates=r["candidates"], applied=r["applied"], created_at=now,
            resolved_by=None, resolved_at=None))
    return len(new) + len(reopen)


def _update_by_id(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    """One executemany UPDATE of ``columns`` for rows keyed by ``_id``."""
    stmt = table.update().where(table.c.id == sa.bindparam("_id")).values({c: sa.bindparam(c) for c in columns})
    conn.execute(stmt, rows)


def _write_interactions(conn: sa.Connection, connection: str, stream: str, changed: list[Prepared],
                        assignment: dict[str, str], existing: dict[str, Any]) -> None:
    """Replace the timeline entries of every changed source record (idempotent on re-runs)."""
    stale = [p.source_id for p in changed if p.source_id in existing]
    for chunk in st._chunks(stale):
        conn.execute(st.interaction_t.delete().where(
            st.interaction_t.c.connection == connection, st.interaction_t.c.stream == stream,
            st.interaction_t.c.record_id.in_(chunk)))
    rows = []
    for p in changed:
        for i, item in enumerate(p.interactions):
            occurred = item.get("occurred_at")
            rows.append({
                "golden_id": assignment[p.source_id], "connection": connection, "stream": stream,
                "source_id": f"{p.source_id}#{i}", "record_id": p.source_id, "kind": item["kind"],
                "owner_stream": stream, "owner_id": p.source_id,
                "occurred_at": _as_datetime(occurred) if occurred else p.observed_at, "data": item,
            })
    if rows:
        st.insert_rows(conn, st.interaction_t, rows)


def _move_owner(conn: sa.Connection, connection: str, stream: str, old: str, new: str) -> None:
    """Entries that belonged to a retired source id belong to its survivor now."""
    conn.execute(st.interaction_t.update().where(
        st.interaction_t.c.connection == connection, st.interaction_t.c.owner_stream == stream,
        st.interaction_t.c.owner_id == old).values(owner_id=new))


def _adopt_entries(conn: sa.Connection, connection: str, stream: str, owners: dict[str, str]) -> set[str]:
    """Entries that arrived before the record they belong to (an order read before its
    customer) go on that record's timeline now. Returns the golden ids that got entries."""
    adopted: set[str] = set()
    for chunk in st._chunks(list(owners)):
        q = sa.select(st.interaction_t.c.owner_id).where(
            st.interaction_t.c.connection == connection, st.interaction_t.c.owner_stream == stream,
            st.interaction_t.c.owner_id.in_(chunk), st.interaction_t.c.golden_id.is_(None)).distinct()
        for (owner_id,) in conn.execute(q).all():
            golden = owners[owner_id]
            conn.execute(st.interaction_t.update().where(
                st.interaction_t.c.connection == connection, st.interaction_t.c.owner_stream == stream,
                st.interaction_t.c.owner_id == owner_id).values(golden_id=golden))
            adopted.add(golden)
    return adopted


def _apply_timeline(conn: sa.Connection, connection: str, stream: str, owner_stream: str,
                    pending: list[Prepared], counts: StreamCounts) -> set[str]:
    """Store a batch of timeline-only records; returns the golden ids whose timeline changed."""
    latest: dict[str, Prepared] = {}
    for p in pending:
        if p.source_id in latest:
            counts.unchanged += 1
        latest[p.source_id] = p
    old: dict[str, list[Any]] = {}
    ids = list(latest)
    for chunk in st._chunks(ids):
        q = sa.select(st.interaction_t.c.record_id, st.interaction_t.c.golden_id, st.interaction_t.c.owner_id,
                      st.interaction_t.c.data).where(
            st.interaction_t.c.connection == connection, st.interaction_t.c.stream == stream,
            st.interaction_t.c.record_id.in_(chunk)).order_by(st.interaction_t.c.source_id)
        for r in conn.execute(q):
            old.setdefault(r.record_id, []).append(r)
    owners = st.lookup_source_records(conn, connection, owner_stream, {p.owner for p in latest.values() if p.owner})
    touched: set[str] = set()
    stale: list[str] = []
    rows: list[dict[str, Any]] = []
    for p in latest.values():
        owner = owners.get(p.owner) if p.owner else None
        golden = owner.golden_id if owner is not None else None
        new = [{
            "golden_id": golden, "connection": connection, "stream": stream, "source_id": f"{p.source_id}#{i}",
            "record_id": p.source_id, "kind": item["kind"], "owner_stream": owner_stream, "owner_id": p.owner,
            "occurred_at": _as_datetime(item["occurred_at"]) if item.get("occurred_at") else p.observed_at, "data": item,
        } for i, item in enumerate(p.interactions)]
        had = old.get(p.source_id, [])
        if [(r.golden_id, r.owner_id, r.data) for r in had] == [(n["golden_id"], n["owner_id"], n["data"]) for n in new]:
            counts.unchanged += 1
            continue
        if had:
            stale.append(p.source_id)
            counts.updated += 1
        elif new:
            counts.created += 1
        else:
            counts.unchanged += 1  # deleted at the source before the hub ever saw it
        rows += new
        touched |= {r.golden_id for r in had if r.golden_id} | ({golden} if golden and new else set())
    for chunk in st._chunks(stale):
        conn.execute(st.interaction_t.delete().where(
            st.interaction_t.c.connection == connection, st.interaction_t.c.stream == stream,
            st.interaction_t.c.record_id.in_(chunk)))
    if rows:
        st.insert_rows(conn, st.interaction_t, rows)
    return touched


def _as_datetime(value: str) -> datetime:
    if len(value) == 10:
        return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)
    return _aware(datetime.fromisoformat(value.replace("Z", "+00:00")))


def rederive(conn: sa.Connection, kind: str, golden_ids: set[str], merger: Merger, now: datetime,
              actor: str, run_id: int, *, fuzzy: bool = True, known_blocks: st.BlockSizes | None = None,
              fresh: dict[str, list[dict[str, Any]]] | None = None,
              on_match_keys: Callable[[dict[str, list[tuple[str, str]]]], None] | None = None) -> dict[str, Any]:
    """Derive each touched golden record again from all its source records and write what changed.
    ``known_blocks``: blocking-key block sizes read earlier in this transaction, with no match
    keys written since (see :func:`store.replace_match_keys`). ``fresh``: golden records not
    in the store yet, with all their source records (nothing to read back for them).
    ``on_match_keys`` is told the blocking keys written."""
    from synchub import similarity

    ids = sorted(golden_ids)
    fresh = fresh or {}
    sources: dict[str, list[dict[str, Any]]] = {g: fresh.get(g, []) for g in ids}
    current: dict[str, Any] = {}
    overrides: dict[str, dict[str, Any]] = {}
    orders: dict[str, list[tuple[dict[str, Any], datetime]]] = {}
    for chunk in st._chunks([g for g in ids if g not in fresh]):
        q = sa.select(st.source_t.c.golden_id, st.source_t.c.connection, st.source_t.c.stream, st.source_t.c.source_id,
                      st.source_t.c.data, st.source_t.c.observed_at, st.source_t.c.deleted).where(st.source_t.c.golden_id.in_(chunk))
        for r in conn.execute(q):
            sources[r.golden_id].append(dict(r._mapping))
        q2 = sa.select(st.golden_t.c.id, st.golden_t.c.data, st.golden_t.c.provenance, st.golden_t.c.status,
                       st.golden_t.c.version).where(st.golden_t.c.id.in_(chunk))
        for r in conn.execute(q2):
            current[r.id] = r
        q3 = sa.select(st.override_t).where(st.override_t.c.golden_id.in_(chunk))
        for r in conn.execute(q3):
            overrides.setdefault(r.golden_id, {})[r.field] = {"value": r.value, "by": r.decided_by, "at": r.decided_at}
        q4 = sa.select(st.interaction_t.c.golden_id, st.interaction_t.c.data, st.interaction_t.c.occurred_at).where(
            st.interaction_t.c.golden_id.in_(chunk), st.interaction_t.c.kind == "order")
        for r in conn.execute(q4):
            orders.setdefault(r.golden_id, []).append((r.data, _aware(r.occurred_at)))
    inserts, updates, audits, conflicts = [], [], [], []
    explained: list[dict[str, Any]] = []
    changed: dict[str, Any] = {}
    match_keys: dict[str, list[tuple[str, str]]] = {}
    for g in ids:
        srcs = sources[g]
        derived = merger.derive(kind, srcs, overrides.get(g))
        if g in orders and "purchases" not in overrides.get(g, {}):
            _derive_purchases(derived, orders[g])
        alive = any(not s["deleted"] for s in srcs)
        status = "active" if alive else "deleted"
        display, search = _search_fields(kind, derived.data)
        row = {"data": derived.data, "provenance": derived.provenance, "display_name": display[:300],
               "search_text": search, "status": status, "merged_into": None, "updated_at": now}
        cur = current.get(g)
        if cur is None:
            inserts.append({**row, "id": g, "kind": kind, "created_at": now, "version": 1})
            audits.append({"at": now, "actor": actor, "action": "create", "golden_id": g,
                           "details": {"sources": [f"{s['connection']}/{s['stream']}" for s in srcs]}})
            changed[g] = True
        elif cur.data != derived.data or cur.status != status:
            updates.append({**row, "_id": g, "version": cur.version + 1})
            audits.append({"at": now, "actor": actor, "action": "update" if alive else "delete", "golden_id": g,
                           "details": {"fields": sorted(_diff_units(cur.data, derived.data))}})
            changed[g] = True
        elif cur.provenance != derived.provenance:
            # Same values, other reasons (a duplicate joined and lost, a source changed to a
            # losing value): the provenance must still say so. Not a new version of the record.
            explained.append({"_id": g, "provenance": derived.provenance})
        for note in derived.conflicts:
            conflicts.append((g, note))
        if g in changed and fuzzy:
            match_keys[g] = similarity.blocking_keys(similarity.features(derived.data, kind)) if alive else []
    if inserts:
        st.insert_rows(conn, st.golden_t, inserts)
    if updates:
        _update_by_id(conn, st.golden_t, updates, ("data", "provenance", "display_name", "search_text", "status",
                                                   "merged_into", "updated_at", "version"))
    if explained:
        _update_by_id(conn, st.golden_t, explained, ("provenance",))
    if audits:
        st.insert_rows(conn, st.audit_t, audits)
    if match_keys:
        st.replace_match_keys(conn, kind, match_keys, max_block=similarity.MAX_BLOCK, known=known_blocks,
                              new={i["id"] for i in inserts})
        if on_match_keys is not None:
            on_match_keys(match_keys)
    changed["__conflicts__"] = _log_conflicts(conn, conflicts, now)
    return changed


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _derive_purchases(derived: Any, orders: list[tuple[dict[str, Any], datetime]]) -> None:
    """The golden record's purchase summary comes from its orders (see :mod:`synchub.purchases`);
    a summary a source gave is kept in the provenance as the losing value."""
    summary = purchases.summarize(orders)
    if summary is None:
        return
    given = derived.data.get("purchases")
    derived.data["purchases"] = summary
    derived.provenance["purchases"] = {
        "connection": "hub", "stream": "timeline", "source_id": f"{summary['orders_count']} orders",
        "observed_at": max(at for _o, at in orders).isoformat(), "rule": purchases.RULE,
        "losing": [{"value": given}] if given and given != summary else [],
    }


def _log_conflicts(conn: sa.Connection, notes: list[tuple[str, Any]], now: datetime) -> int:
    if not notes:
        return 0
    rows = {}
    for g, note in notes:
        fp = note.fingerprint(g)
        rows[fp] = {
            "fingerprint": fp, "kind": "field", "golden_id": g, "field": note.field,
            "connections": ",".join(sorted({c.connection for c in note.candidates})),
            "candidates": [c.describe() for c in note.candidates], "rule": note.rule,
            "applied": {"value": note.applied}, "status": "open", "created_at": now,
        }
    known = set()
    fps = list(rows)
    for chunk in st._chunks(fps):
        known |= {r[0] for r in conn.execute(sa.select(st.conflict_t.c.fingerprint).where(st.conflict_t.c.fingerprint.in_(chunk)))}
    new = [r for fp, r in rows.items() if fp not in known]
    if new:
        conn.execute(st.conflict_t.insert(), new)
    return len(new)


def _diff_units(old: dict[str, Any], new: dict[str, Any]) -> set[str]:
    keys = set(old) | set(new)
    return {k for k in keys if old.get(k) != new.get(k)}


def _search_fields(kind: str, data: dict[str, Any]) -> tuple[str, str]:
    if kind == "company":
        display = data.get("name") or data.get("domain") or ""
    else:
        display = " ".join(x for x in (data.get("first_name"), data.get("last_name")) if x)
    emails = data.get("emails") or []
    if not display and emails:
        display = emails[0]
    parts = [display, data.get("company_name") or "", (data.get("address") or {}).get("city") or ""]
    text = " ".join(fold(p) for p in parts if p)
    text = " ".join([text, *emails, *(data.get("phones") or [])])
    return display, text.strip()


def _raw(data: dict[str, Any]) -> str:
    return redact(json.dumps(data, ensure_ascii=False, default=str))[:4000]


def _reject_row(run_id: int, connection: str, stream: str, ref: str | None, source_id: str | None,
                field_name: str | None, reason: str, raw: str | None) -> dict[str, Any]:
    return {"run_id": run_id, "connection": connection, "stream": stream, "ref": ref or "", "source_id": source_id,
            "field": field_name, "reason": redact(reason), "raw": raw, "created_at": utcnow()}


_QUOTED = re.compile(r"""(["'])(.*?)\1""")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def describe_error(exc: BaseException) -> str:
    """What a stored or logged run error says: the exception's class and message, never a
    database statement, its parameters or the values in a driver's message (``DETAIL: Key
    (email)=(...)``, ``invalid input syntax: "..."``), which can hold customer data."""
    if isinstance(exc, sa.exc.StatementError):
        orig = getattr(exc, "orig", None)
        head = str(orig if orig is not None else exc).strip().split("\n", 1)[0]
        head = head.split("[SQL:", 1)[0].strip()
        head = _QUOTED.sub(lambda m: m.group(0) if _IDENTIFIER.fullmatch(m.group(2)) else f"{m.group(1)}…{m.group(1)}", head)
        kind = type(orig).__name__ if orig is not None else "database error"
        return f"{type(exc).__name__} ({kind}): {head}"
    return f"{type(exc).__name__}: {exc}"


def _add_stats(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in {*a, *b}}


def tune_gc() -> None:
    """Garbage-collector settings for a synchub process (the CLI calls this once it has built
    its Hub, so ``--help`` and ``validate`` do not pay for importing the engine).

    A run allocates millions of short-lived objects, and with CPython's defaults every 700 of
    them start a collection; the older generations hold the whole import-time heap
    (SQLAlchemy, pydantic, rapidfuzz, phonenumbers metadata), which each full collection walked
    again. That heap is collected once and frozen (it lives as long as the process anyway),
    and young collections run every 20,000 allocations. Cyclic garbage is still collected;
    peak memory of a 10,000-record sync stayed at 150 MB and the sync took 17 % less time.
    Only the first call in a process does anything."""
    global _GC_TUNED
    if _GC_TUNED:
        return
    _GC_TUNED = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


_GC_TUNED = False


def _counts_json(summary: RunSummary) -> dict[str, Any]:
    return {"direction": summary.direction, "streams": {k: asdict(v) for k, v in summary.streams.items()}, "targets": summary.targets}


def _payload_hash(data: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(data, sort_keys=True, ensure_ascii=False, default=str).encode(), usedforsecurity=False).hexdigest()


def _out_records(hub_store: Store, kind: str, mapping: Mapping,
                 selected: Callable[[dict[str, Any]], bool] | None = None) -> Iterator[tuple[OutRecord, str]]:
    for g in hub_store.iter_golden(kind):
        if selected is not None and not selected(g["data"]):
            continue
        data = dict(g["data"])
        data["id"] = g["id"]
        out = mapping.apply(data)
        yield OutRecord(golden_id=g["id"], data=out), _payload_hash(out)
