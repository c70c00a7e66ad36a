"""The data-quality and freshness report: what the hub holds, how complete, valid and current it is.

:func:`build_report` reads a store and answers, as one JSON-able dict:

* ``summary``: customers by kind and status, live and deleted source records per
  connection/stream, open review items, records with quarantined values.
* ``stale``: customers none of whose live source records a source confirmed within
  ``stale_days`` (``source_record.confirmed_at``: the last read that delivered the record, changed
  or not, or the last full listing that named it; before it was kept, when it last changed), per
  kind, how long ago customers were last confirmed, and per connection/stream how many records
  are that old.
* ``completeness``: per connection/stream and canonical field (nested fields flattened:
  ``address.postal_code``, ``consent.email.status``) how many live records fill it, and how many
  delivered a value the hub could not use; the same over the active golden records per kind.
* ``validity``: per connection/stream and field, records with a quarantined or unverified value
  (``source_record.quarantine``, as the source last sent it) against the records that delivered
  the field; the values by rule and reason; rejected rows of the runs still kept.
* ``duplicates``: per ISO week (or month) automatic and manual merges, source records matched
  to an existing customer, review items (``conflict``) created, closed and open at the period's
  end, by kind.
* ``email_health``: consent status of the e-mail channel over the active persons (subscribed,
  pending, unsubscribed, cleaned = bounced, never, none known) with opt-out and bounce rates.
* ``consent_coverage``: per channel the active persons with a known consent status, and with
  consent granted, of all persons and of those the channel can reach.
* ``segments``: sizes of the segments passed in (outbound stream filters, see
  :func:`segments_from_config`), evaluated by :mod:`synchub.segment` itself.

Every figure comes from an SQL aggregate or one streaming pass over the rows (never a table in
memory), inside one read snapshot where the backend gives one. The report holds aggregates only:
no customer's name, address or raw value.

:func:`write_report` writes it as ``quality-YYYY-MM-DD.html`` (self-contained: inline SVG plots,
no script, no external resource), ``.json`` and ``.csv`` (one long table for Excel, see
:func:`to_csv_rows`). Plotting needs matplotlib; building the report does not.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from synchub.redact import mask_quoted
from synchub.schema import ENTITY_MODELS
from synchub.segment import FilterError, compile_filter
from synchub.store import audit_t, conflict_t, golden_t, rejected_t, source_t

if TYPE_CHECKING:
    from synchub.config import Config
    from synchub.store import Store

__all__ = [
    "CHANNELS",
    "EMAIL_STATUSES",
    "build_report",
    "render_csv",
    "render_html",
    "render_json",
    "render_plots",
    "segments_from_config",
    "to_csv_rows",
    "write_report",
]

#: Consent channels of the canonical schema, in report order.
CHANNELS = ("email", "sms", "phone", "post")
#: E-mail consent statuses in report order; ``none``: the hub knows no status for the person.
EMAIL_STATUSES = ("subscribed", "pending", "unsubscribed", "cleaned", "never", "none")
#: Statuses of people who were on a mailing list at some point (the base of the rates).
_LISTED = ("subscribed", "pending", "unsubscribed", "cleaned")
#: Upper bounds (days) of the "last confirmed" age buckets; older ones fall in the last bucket.
AGE_BUCKETS = (30, 90, 180, 365)
#: Rows fetched per round trip by the streaming passes.
BATCH = 2000
#: Dict-valued fields counted as one field, not flattened (their keys are data: currencies).
_LEAF_DICTS = frozenset({"purchases.by_currency"})
_PERIODS = ("week", "month")


# ---------------------------------------------------------------------------------------------
# building the report
# ---------------------------------------------------------------------------------------------


def build_report(store: Store, *, stale_days: int = 90, now: datetime | None = None,
                 segments: Mapping[str, Any] | None = None, period: str = "week") -> dict[str, Any]:
    """The quality report of ``store`` as a JSON-able dict (see the module docstring).

    ``now`` fixes the report's time (tests, reproducible output); ``segments`` maps a segment
    name to a filter spec of :mod:`synchub.segment` (persons), or to ``{"entity": kind,
    "filter": spec}`` as :func:`segments_from_config` returns; ``period`` is ``week`` (ISO
    weeks) or ``month`` for the figures over time."""
    if stale_days < 0:
        raise ValueError("stale_days must not be negative")
    if period not in _PERIODS:
        raise ValueError(f"period must be one of {', '.join(_PERIODS)}")
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    cutoff = now - timedelta(days=stale_days)
    compiled = _compile_segments(segments or {})
    with _snapshot(store) as conn:
        summary = _summary(conn)
        stale = _stale(conn, now, cutoff, stale_days)
        completeness, validity = _source_pass(conn)
        validity["rejected"] = _rejected(conn)
        duplicates = _duplicates(conn, now, period)
        golden = _golden_pass(conn, compiled)
    summary["quarantined_records"] = sum(s["records_with_quarantine"] for s in validity["streams"])
    completeness["golden"] = golden["completeness"]
    return {
        "report": "synchub data-quality report",
        "generated_at": _iso(now),
        "stale_days": stale_days,
        "period": period,
        "backend": store.dialect,
        "summary": summary,
        "stale": stale,
        "completeness": completeness,
        "validity": validity,
        "duplicates": duplicates,
        "email_health": golden["email_health"],
        "consent_coverage": golden["consent_coverage"],
        "segments": golden["segments"],
    }


def segments_from_config(config: Config) -> dict[str, dict[str, Any]]:
    """The segments a config declares: every enabled outbound stream, named
    ``connection/stream``, as ``{"entity": kind, "filter": spec or None}`` (no filter: every
    active record of the kind). A stream's push may hold back some of them by consent rules;
    the size is the segment's, not what was sent."""
    out: dict[str, dict[str, Any]] = {}
    for cname, conn in config.connections.items():
        if not conn.outbound:
            continue
        for sname, stream in conn.streams.items():
            if stream.enabled:
                out[f"{cname}/{sname}"] = {"entity": conn.entity, "filter": stream.filter}
    return out


@contextmanager
def _snapshot(store: Store) -> Iterator[sa.Connection]:
    """One connection whose reads all see the same state of the store: REPEATABLE READ on
    PostgreSQL, one read transaction on SQLite (WAL: a sync may write meanwhile)."""
    with store.engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                yield conn
        else:
            # pysqlite opens no transaction for reads; an explicit one pins the snapshot. The
            # pool's rollback on return ends it.
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN")
            try:
                yield conn
            finally:
                conn.rollback()


def _stream_rows(conn: sa.Connection, query: sa.Select[Any]) -> Iterator[sa.Row[Any]]:
    """The rows of ``query`` in batches (a server-side cursor on PostgreSQL)."""
    result = conn.execution_options(yield_per=BATCH).execute(query)
    for part in result.partitions():
        yield from part


def _summary(conn: sa.Connection) -> dict[str, Any]:
    customers: dict[str, dict[str, int]] = defaultdict(dict)
    for kind, status, n in conn.execute(
            sa.select(golden_t.c.kind, golden_t.c.status, sa.func.count())
            .group_by(golden_t.c.kind, golden_t.c.status)):
        customers[kind][status] = int(n)
    deleted = sa.func.coalesce(sa.func.sum(sa.case((source_t.c.deleted.is_(True), 1), else_=0)), 0)
    streams = []
    for r in conn.execute(
            sa.select(source_t.c.connection, source_t.c.stream, source_t.c.kind,
                      sa.func.count().label("n"), deleted.label("deleted"),
                      sa.func.max(source_t.c.changed_at).label("last_changed"))
            .group_by(source_t.c.connection, source_t.c.stream, source_t.c.kind)
            .order_by(source_t.c.connection, source_t.c.stream, source_t.c.kind)):
        streams.append({"connection": r.connection, "stream": r.stream, "kind": r.kind,
                        "records": int(r.n) - int(r.deleted), "deleted": int(r.deleted),
                        "last_changed": _iso(r.last_changed)})
    review = defaultdict(int)
    for kind, n in conn.execute(sa.select(conflict_t.c.kind, sa.func.count())
                                .where(conflict_t.c.status == "open").group_by(conflict_t.c.kind)):
        review[kind] = int(n)
    return {
        "customers": {k: {"active": v.get("active", 0), "merged": v.get("merged", 0),
                          "deleted": v.get("deleted", 0)} for k, v in sorted(customers.items())},
        "active_customers": sum(v.get("active", 0) for v in customers.values()),
        "source_records": sum(s["records"] for s in streams),
        "deleted_source_records": sum(s["deleted"] for s in streams),
        "streams": streams,
        "open_review_items": dict(sorted(review.items())),
    }


#: When a source last showed a record (stores from before ``confirmed_at``: when it last changed).
_CONFIRMED = sa.func.coalesce(source_t.c.confirmed_at, source_t.c.changed_at)


def _stale(conn: sa.Connection, now: datetime, cutoff: datetime, stale_days: int) -> dict[str, Any]:
    live = (sa.select(source_t.c.golden_id, sa.func.max(_CONFIRMED).label("last"))
            .where(source_t.c.deleted.is_(False)).group_by(source_t.c.golden_id).subquery())
    last = live.c.last
    bounds = [now - timedelta(days=d) for d in AGE_BUCKETS]

    def count_if(cond: Any) -> Any:
        return sa.func.coalesce(sa.func.sum(sa.case((cond, 1), else_=0)), 0)

    cols = [golden_t.c.kind, sa.func.count().label("active"),
            count_if(sa.or_(last.is_(None), last < cutoff)).label("stale"),
            count_if(last.is_(None)).label("no_live_source"),
            count_if(last >= bounds[0]).label("b0")]
    for i in range(1, len(bounds)):
        cols.append(count_if(sa.and_(last < bounds[i - 1], last >= bounds[i])).label(f"b{i}"))
    cols.append(count_if(last < bounds[-1]).label(f"b{len(bounds)}"))
    q = (sa.select(*cols).select_from(golden_t.outerjoin(live, live.c.golden_id == golden_t.c.id))
         .where(golden_t.c.status == "active").group_by(golden_t.c.kind).order_by(golden_t.c.kind))
    labels = _age_labels()
    customers = []
    ages = [0] * (len(labels) + 1)
    for r in conn.execute(q):
        active, stale = int(r.active), int(r.stale)
        row = {"kind": r.kind, "active": active, "stale": stale, "share": _share(stale, active),
               "no_live_source": int(r.no_live_source)}
        customers.append(row)
        for i in range(len(labels)):
            ages[i] += int(getattr(r, f"b{i}"))
        ages[-1] += row["no_live_source"]
    old = sa.and_(source_t.c.deleted.is_(False), _CONFIRMED < cutoff)
    streams = []
    for r in conn.execute(
            sa.select(source_t.c.connection, source_t.c.stream, sa.func.count().label("n"),
                      count_if(old).label("stale"),
                      sa.func.min(_CONFIRMED).label("oldest"),
                      sa.func.max(_CONFIRMED).label("newest"))
            .where(source_t.c.deleted.is_(False))
            .group_by(source_t.c.connection, source_t.c.stream)
            .order_by(source_t.c.connection, source_t.c.stream)):
        streams.append({"connection": r.connection, "stream": r.stream, "records": int(r.n),
                        "stale": int(r.stale), "share": _share(int(r.stale), int(r.n)),
                        "oldest_confirmed": _iso(r.oldest), "newest_confirmed": _iso(r.newest)})
    total = sum(c["active"] for c in customers)
    stale_total = sum(c["stale"] for c in customers)
    return {
        "days": stale_days,
        "cutoff": _iso(cutoff),
        "active": total,
        "stale": stale_total,
        "share": _share(stale_total, total),
        "customers": customers,
        "last_confirmed": [{"age": label, "customers": n}
                           for label, n in zip([*labels, "no live source"], ages, strict=True)],
        "streams": streams,
    }


def _age_labels() -> list[str]:
    out, lo = [], 0
    for hi in AGE_BUCKETS:
        out.append(f"{lo}–{hi} days" if lo else f"≤ {hi} days")
        lo = hi + 1
    out.append(f"> {AGE_BUCKETS[-1]} days")
    return out


_NUMBERS = (int, float, bool)
#: prefix -> key -> dotted path, so the hot loop does not build the same strings 100k times
_JOINED: dict[str, dict[str, str]] = {}
_JOINED_MAX = 50_000  # custom keys are data: keep the memo bounded


def _flat_paths(data: Any, prefix: str = "", out: list[str] | None = None) -> list[str]:
    """Dotted paths of the non-empty leaves of a canonical record (``kind`` left out); dicts
    are followed except ``custom.<key>`` values and :data:`_LEAF_DICTS`. The hottest loop of
    the report (every source and golden record), hence the memoised paths."""
    if out is None:
        out = []
    if not isinstance(data, dict):
        return out
    joined = _JOINED.get(prefix)
    if joined is None:  # prefixes are the schema's nested models: few
        joined = _JOINED[prefix] = {}
    for key, value in data.items():
        if not value and type(value) not in _NUMBERS:  # None, "", [], {}
            continue
        path = joined.get(key)
        if path is None:
            path = f"{prefix}.{key}" if prefix else key
            if len(joined) < _JOINED_MAX:
                joined[key] = path
        if type(value) is dict and path not in _LEAF_DICTS and prefix != "custom":
            _flat_paths(value, path, out)
        elif path != "kind":
            out.append(path)
    return out


class _StreamTally:
    __slots__ = ("entries", "filled", "flagged_filled", "quarantined", "quarantined_only", "records",
                 "unverified", "with_quarantine")

    def __init__(self) -> None:
        self.records = 0
        self.with_quarantine = 0
        #: per field: records that fill it / have a quarantined (unverified) value for it
        self.filled: Counter[str] = Counter()
        self.quarantined: Counter[str] = Counter()
        self.unverified: Counter[str] = Counter()
        #: records that fill the field and have an entry for it too (one good, one bad phone)
        self.flagged_filled: Counter[str] = Counter()
        #: records whose only value for the field was quarantined
        self.quarantined_only: Counter[str] = Counter()
        #: (field, rule, status, reason) -> values
        self.entries: Counter[tuple[str, str, str, str]] = Counter()


def _source_pass(conn: sa.Connection) -> tuple[dict[str, Any], dict[str, Any]]:
    """Completeness and validity per connection/stream: one pass over the live source records."""
    tallies: dict[tuple[str, str, str], _StreamTally] = {}
    q = (sa.select(source_t.c.connection, source_t.c.stream, source_t.c.kind, source_t.c.data,
                   source_t.c.quarantine)
         .where(source_t.c.deleted.is_(False)))
    for r in _stream_rows(conn, q):
        key = (r.connection, r.stream, r.kind)
        t = tallies.get(key)
        if t is None:
            t = tallies[key] = _StreamTally()
        t.records += 1
        filled = set(_flat_paths(r.data))
        t.filled.update(filled)
        entries = r.quarantine or ()
        if not entries:
            continue
        t.with_quarantine += 1
        q_fields, u_fields = set(), set()
        for e in entries:
            field = str(e.get("field") or "?")
            status = str(e.get("status") or "quarantined")
            (u_fields if status == "unverified" else q_fields).add(field)
            t.entries[(field, str(e.get("rule") or ""), status, _no_values(str(e.get("reason") or "")))] += 1
        t.quarantined.update(q_fields)
        t.unverified.update(u_fields)
        t.flagged_filled.update(filled & (q_fields | u_fields))
        t.quarantined_only.update(q_fields - filled)
    comp_streams, val_streams, reasons = [], [], []
    for key in sorted(tallies):
        connection, stream, kind = key
        t = tallies[key]
        fields = sorted(set(t.filled) | set(t.quarantined) | set(t.unverified))
        comp_streams.append({
            "connection": connection, "stream": stream, "kind": kind, "records": t.records,
            "fields": [{"field": f, "filled": t.filled[f], "quarantined": t.quarantined_only[f],
                        "share": _share(t.filled[f], t.records)} for f in fields]})
        vfields = []
        for f in sorted(set(t.quarantined) | set(t.unverified)):
            delivered = t.filled[f] + t.quarantined_only[f]
            clean = t.filled[f] - t.flagged_filled[f]
            vfields.append({"field": f, "delivered": delivered, "clean": clean,
                            "quarantined": t.quarantined[f], "unverified": t.unverified[f],
                            "valid_share": _share(clean, delivered),
                            "quarantined_share": _share(t.quarantined[f], t.records)})
        val_streams.append({
            "connection": connection, "stream": stream, "kind": kind, "records": t.records,
            "records_with_quarantine": t.with_quarantine,
            "values_quarantined": sum(n for k, n in t.entries.items() if k[2] != "unverified"),
            "values_unverified": sum(n for k, n in t.entries.items() if k[2] == "unverified"),
            "fields": vfields})
        for (field, rule, status, reason), n in t.entries.items():
            reasons.append({"connection": connection, "stream": stream, "field": field, "rule": rule,
                            "status": status, "reason": reason, "values": n})
    reasons.sort(key=lambda r: (-r["values"], r["connection"], r["stream"], r["field"], r["reason"]))
    return {"streams": comp_streams}, {"streams": val_streams, "reasons": reasons}


#: An address a reason quotes without quotation marks.
_EMAILISH = re.compile(r"\S+@\S+")


def _no_values(reason: str) -> str:
    """A reason without the customer's value in it (the report holds figures only; reasons also
    group better so): ``not a plausible email address: 'max@mustermann' (domain has no dot)`` ->
    ``not a plausible email address: '…' (domain has no dot)``."""
    return _EMAILISH.sub("…", mask_quoted(reason))


def _rejected(conn: sa.Connection) -> list[dict[str, Any]]:
    out = []
    for r in conn.execute(
            sa.select(rejected_t.c.connection, rejected_t.c.stream, rejected_t.c.field,
                      sa.func.count().label("n"))
            .group_by(rejected_t.c.connection, rejected_t.c.stream, rejected_t.c.field)
            .order_by(rejected_t.c.connection, rejected_t.c.stream, rejected_t.c.field)):
        out.append({"connection": r.connection, "stream": r.stream, "field": r.field or "",
                    "rows": int(r.n)})
    return out


def _period_of(moment: datetime, period: str) -> date:
    """The first day of the period holding ``moment`` (UTC)."""
    d = moment.astimezone(timezone.utc).date()
    if period == "month":
        return d.replace(day=1)
    return d - timedelta(days=d.weekday())


def _next_period(start: date, period: str) -> date:
    if period == "month":
        return date(start.year + (start.month == 12), start.month % 12 + 1, 1)
    return start + timedelta(days=7)


def _period_label(start: date, period: str) -> str:
    if period == "month":
        return f"{start.year:04d}-{start.month:02d}"
    year, week, _ = start.isocalendar()
    return f"{year:04d}-W{week:02d}"


def _duplicates(conn: sa.Connection, now: datetime, period: str) -> dict[str, Any]:
    """Merges, matches and review items per period, from the audit log and the conflicts."""
    events: dict[date, Counter[str]] = defaultdict(Counter)
    q = (sa.select(audit_t.c.at, audit_t.c.action, audit_t.c.actor)
         .where(audit_t.c.action.in_(("merge", "match", "split"))))
    for r in _stream_rows(conn, q):
        if r.at is None:
            continue
        p = _period_of(r.at, period)
        if r.action == "merge":
            events[p]["merges_auto" if str(r.actor).startswith("run:") else "merges_manual"] += 1
        elif r.action == "match":
            events[p]["matches"] += 1
        else:
            events[p]["splits"] += 1
    # Review items: created per period, and open at each period's end (+1 in the period it was
    # created, -1 in the period it was closed).
    created: dict[date, Counter[str]] = defaultdict(Counter)
    closed: dict[date, Counter[str]] = defaultdict(Counter)
    opened_delta: dict[date, Counter[str]] = defaultdict(Counter)
    kinds: set[str] = set()
    open_now: Counter[str] = Counter()
    oldest_open: datetime | None = None
    q2 = sa.select(conflict_t.c.kind, conflict_t.c.status, conflict_t.c.created_at, conflict_t.c.resolved_at)
    for r in _stream_rows(conn, q2):
        if r.created_at is None:
            continue
        kinds.add(r.kind)
        p = _period_of(r.created_at, period)
        created[p][r.kind] += 1
        opened_delta[p][r.kind] += 1
        if r.status == "open":
            open_now[r.kind] += 1
            oldest_open = r.created_at if oldest_open is None else min(oldest_open, r.created_at)
        else:
            # closed within period cp: no longer open at cp's end (never before it was created)
            cp = max(_period_of(r.resolved_at or r.created_at, period), p)
            closed[cp][r.kind] += 1
            opened_delta[cp][r.kind] -= 1
    starts = set(events) | set(created) | set(closed)
    periods = []
    if starts:
        first, last = min(starts), _period_of(now, period)
        last = max(last, max(starts))
        running: Counter[str] = Counter()
        p = first
        while p <= last:
            running.update(opened_delta.get(p, Counter()))
            ev = events.get(p, Counter())
            periods.append({
                "period": _period_label(p, period), "start": p.isoformat(),
                "merges_auto": ev["merges_auto"], "merges_manual": ev["merges_manual"],
                "matches": ev["matches"], "splits": ev["splits"],
                "review_created": {k: created.get(p, Counter())[k] for k in sorted(kinds)},
                "review_closed": {k: closed.get(p, Counter())[k] for k in sorted(kinds)},
                "review_open": {k: running[k] for k in sorted(kinds)},
            })
            p = _next_period(p, period)
    totals = Counter()
    for ev in events.values():
        totals.update(ev)
    return {
        "period": period,
        "periods": periods,
        "totals": {"merges_auto": totals["merges_auto"], "merges_manual": totals["merges_manual"],
                   "matches": totals["matches"], "splits": totals["splits"],
                   "review_created": {k: sum(c[k] for c in created.values()) for k in sorted(kinds)}},
        "open_review_items": {k: open_now[k] for k in sorted(kinds)},
        "oldest_open": _iso(oldest_open),
    }


def _compile_segments(segments: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for name, spec in segments.items():
        entity, filt = "person", spec
        if isinstance(spec, dict) and set(spec) <= {"entity", "filter"} and "entity" in spec:
            entity, filt = spec["entity"], spec.get("filter")
        seg: dict[str, Any] = {"name": str(name), "entity": entity}
        if entity not in ENTITY_MODELS:
            seg["error"] = f"unknown entity {entity!r}"
        else:
            try:
                seg["predicate"] = compile_filter(filt, entity)
            except FilterError as exc:
                seg["error"] = str(exc)
        out.append(seg)
    return out


def _golden_pass(conn: sa.Connection, segments: list[dict[str, Any]]) -> dict[str, Any]:
    """Golden completeness, e-mail health, consent coverage and segment sizes: one pass over the
    active golden records."""
    records: Counter[str] = Counter()
    filled: dict[str, Counter[str]] = defaultdict(Counter)
    emails = 0
    status: Counter[str] = Counter()
    reachable: Counter[str] = Counter()
    known: Counter[str] = Counter()
    known_reachable: Counter[str] = Counter()
    granted: Counter[str] = Counter()
    granted_reachable: Counter[str] = Counter()
    by_status: dict[str, Counter[str]] = defaultdict(Counter)
    sizes = [0] * len(segments)
    by_kind = defaultdict(list)
    for i, seg in enumerate(segments):
        if "predicate" in seg:
            by_kind[seg["entity"]].append((i, seg["predicate"]))
    q = (sa.select(golden_t.c.kind, golden_t.c.data).where(golden_t.c.status == "active"))
    for r in _stream_rows(conn, q):
        data = r.data if isinstance(r.data, dict) else {}
        kind = r.kind
        records[kind] += 1
        filled[kind].update(set(_flat_paths(data)))
        for i, pred in by_kind.get(kind, ()):
            if pred(data):
                sizes[i] += 1
        if kind != "person":
            continue
        has_email = bool(data.get("emails"))
        emails += has_email
        consent = data.get("consent") or {}
        address = data.get("address") or {}
        can = {"email": has_email, "sms": bool(data.get("phones")), "phone": bool(data.get("phones")),
               "post": bool(address.get("street") or address.get("postal_code") or address.get("city"))}
        for ch in CHANNELS:
            c = consent.get(ch) if isinstance(consent, dict) else None
            st_ = c.get("status") if isinstance(c, dict) else None
            if ch == "email":
                status[st_ if st_ in EMAIL_STATUSES else "none"] += 1
            if can[ch]:
                reachable[ch] += 1
            if st_:
                known[ch] += 1
                by_status[ch][str(st_)] += 1
                if can[ch]:
                    known_reachable[ch] += 1
                if st_ == "subscribed":
                    granted[ch] += 1
                    if can[ch]:
                        granted_reachable[ch] += 1
    persons = records["person"]
    listed = sum(status[s] for s in _LISTED)
    email_health = {
        "persons": persons,
        "with_email": emails,
        "statuses": {s: status[s] for s in EMAIL_STATUSES},
        "listed": listed,
        "opt_out_rate": _share(status["unsubscribed"], listed),
        "cleaned_rate": _share(status["cleaned"], listed),
        "subscribed_share": _share(status["subscribed"], persons),
    }
    channels = [{"channel": ch, "persons": persons, "reachable": reachable[ch],
                 "known": known[ch], "known_share": _share(known[ch], persons),
                 "granted": granted[ch], "granted_share": _share(granted[ch], persons),
                 "known_reachable_share": _share(known_reachable[ch], reachable[ch]),
                 "granted_reachable_share": _share(granted_reachable[ch], reachable[ch]),
                 "statuses": dict(sorted(by_status[ch].items()))} for ch in CHANNELS]
    completeness = [{"kind": k, "records": records[k],
                     "fields": [{"field": f, "filled": n, "share": _share(n, records[k])}
                                for f, n in sorted(filled[k].items())]} for k in sorted(records)]
    seg_out = []
    for i, seg in enumerate(segments):
        row = {"name": seg["name"], "entity": seg["entity"]}
        if "error" in seg:
            row["error"] = seg["error"]
        else:
            row["size"] = sizes[i]
            row["share"] = _share(sizes[i], records[seg["entity"]])
        seg_out.append(row)
    return {"completeness": completeness, "email_health": email_health,
            "consent_coverage": {"persons": persons, "channels": channels}, "segments": seg_out}


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# ---------------------------------------------------------------------------------------------
# CSV and JSON
# ---------------------------------------------------------------------------------------------

CSV_HEADER = ("section", "connection", "stream", "field", "metric", "value")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def to_csv_rows(report: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
    """The report as one long table, header first: ``(section, connection, stream, field,
    metric, value)``. ``field`` holds the canonical field, or what else a row is about: the
    customer kind, the period (``2026-W49``) of a figure over time, the consent channel, the
    segment name. Shares are fractions (0.25 = 25 %)."""
    yield CSV_HEADER
    s = report["summary"]
    for kind, counts in s["customers"].items():
        for status, n in counts.items():
            yield ("summary", "", "", kind, f"customers_{status}", n)
    for st_ in s["streams"]:
        yield ("summary", st_["connection"], st_["stream"], "", "records", st_["records"])
        yield ("summary", st_["connection"], st_["stream"], "", "deleted_records", st_["deleted"])
        yield ("summary", st_["connection"], st_["stream"], "", "last_changed", st_["last_changed"])
    for kind, n in s["open_review_items"].items():
        yield ("summary", "", "", kind, "open_review_items", n)
    yield ("summary", "", "", "", "records_with_quarantined_values", s["quarantined_records"])

    stale = report["stale"]
    yield ("stale", "", "", "", "stale_days", stale["days"])
    for c in stale["customers"]:
        for m in ("active", "stale", "share", "no_live_source"):
            yield ("stale", "", "", c["kind"], f"customers_{m}", c[m])
    for b in stale["last_confirmed"]:
        yield ("stale", "", "", "", f"last confirmed {b['age']}", b["customers"])
    for st_ in stale["streams"]:
        for m in ("records", "stale", "share", "oldest_confirmed", "newest_confirmed"):
            yield ("stale", st_["connection"], st_["stream"], "", m, st_[m])

    for st_ in report["completeness"]["streams"]:
        yield ("completeness", st_["connection"], st_["stream"], "", "records", st_["records"])
        for f in st_["fields"]:
            for m in ("filled", "quarantined", "share"):
                yield ("completeness", st_["connection"], st_["stream"], f["field"], m, f[m])
    for g in report["completeness"]["golden"]:
        yield ("completeness", "golden", g["kind"], "", "records", g["records"])
        for f in g["fields"]:
            for m in ("filled", "share"):
                yield ("completeness", "golden", g["kind"], f["field"], m, f[m])

    v = report["validity"]
    for st_ in v["streams"]:
        for m in ("records_with_quarantine", "values_quarantined", "values_unverified"):
            yield ("validity", st_["connection"], st_["stream"], "", m, st_[m])
        for f in st_["fields"]:
            for m in ("delivered", "clean", "quarantined", "unverified", "valid_share", "quarantined_share"):
                yield ("validity", st_["connection"], st_["stream"], f["field"], m, f[m])
    for r in v["reasons"]:
        yield ("validity", r["connection"], r["stream"], r["field"],
               f"{r['status']} values ({r['rule']}): {r['reason']}", r["values"])
    for r in v["rejected"]:
        yield ("validity", r["connection"], r["stream"], r["field"], "rejected_rows", r["rows"])

    d = report["duplicates"]
    for p in d["periods"]:
        for m in ("merges_auto", "merges_manual", "matches", "splits"):
            yield ("duplicates", "", "", p["period"], m, p[m])
        for group in ("review_created", "review_closed", "review_open"):
            for kind, n in p[group].items():
                yield ("duplicates", "", "", p["period"], f"{group}_{kind}", n)
    for kind, n in d["open_review_items"].items():
        yield ("duplicates", "", "", "", f"open_review_items_{kind}", n)
    yield ("duplicates", "", "", "", "oldest_open_review_item", d["oldest_open"])

    e = report["email_health"]
    for m in ("persons", "with_email", "listed"):
        yield ("email_health", "", "", "", m, e[m])
    for status, n in e["statuses"].items():
        yield ("email_health", "", "", "", f"status_{status}", n)
    for m in ("opt_out_rate", "cleaned_rate", "subscribed_share"):
        yield ("email_health", "", "", "", m, e[m])

    for ch in report["consent_coverage"]["channels"]:
        for m in ("persons", "reachable", "known", "known_share", "granted", "granted_share",
                  "known_reachable_share", "granted_reachable_share"):
            yield ("consent_coverage", "", "", ch["channel"], m, ch[m])
        for status, n in ch["statuses"].items():
            yield ("consent_coverage", "", "", ch["channel"], f"status_{status}", n)

    for seg in report["segments"]:
        if "error" in seg:
            yield ("segments", "", "", seg["name"], "error", seg["error"])
        else:
            yield ("segments", "", "", seg["name"], "size", seg["size"])
            yield ("segments", "", "", seg["name"], "share", seg["share"])


def _csv_cell(value: Any) -> str:
    """A cell a spreadsheet shows as it is: numbers as digits, text never run as a formula."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def render_csv(report: dict[str, Any]) -> str:
    """The CSV twin as text for German Excel: ``;``-separated, CRLF, a UTF-8 BOM in front."""
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=";", lineterminator="\r\n")
    for row in to_csv_rows(report):
        writer.writerow([_csv_cell(c) for c in row])
    return "\ufeff" + buf.getvalue()


def render_json(report: dict[str, Any]) -> str:
    return json.dumps(report, ensure_ascii=False, indent=2, sort_keys=False) + "\n"


def write_report(report: dict[str, Any], out_dir: Path, *,
                 formats: Sequence[str] = ("html", "json", "csv")) -> list[Path]:
    """Write ``quality-YYYY-MM-DD.<format>`` files for the report's date into ``out_dir``
    (created if missing), each replaced atomically; returns their paths in ``formats`` order."""
    renderers = {"html": render_html, "json": render_json, "csv": render_csv}
    unknown = [f for f in formats if f not in renderers]
    if unknown:
        raise ValueError(f"unknown report format(s): {', '.join(unknown)} (known: html, json, csv)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    day = str(report["generated_at"])[:10]
    paths = []
    for fmt in formats:
        target = out_dir / f"quality-{day}.{fmt}"
        text = renderers[fmt](report)
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        paths.append(target)
    return paths


# ---------------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------------

_STATUS_COLOURS = {"subscribed": "#2e7d32", "pending": "#9ccc65", "unsubscribed": "#f9a825",
                   "cleaned": "#c62828", "never": "#90a4ae", "none": "#cfd8dc"}
_MAX_HEAT_FIELDS = 60
_MAX_BARS = 25


def _lbl(text: Any) -> str:
    """A label matplotlib shows literally (``$`` would start mathtext)."""
    return str(text).replace("$", r"\$")


def _note(ax: Any, x: float, y: float, text: str, *, above: bool = False) -> None:
    """A figure next to the end of a bar (right of it, or above it), a few points away."""
    offset, ha, va = ((0, 2), "center", "bottom") if above else ((3, 0), "left", "center")
    ax.annotate(text, (x, y), xytext=offset, textcoords="offset points", ha=ha, va=va, fontsize=8)


def _whole_numbers(axis: Any) -> None:
    """Counts on an axis: whole numbers, a few ticks, thousands separated (95,000)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    axis.set_major_locator(MaxNLocator(nbins=6, integer=True))
    axis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:,.0f}"))


def _stream_name(row: dict[str, Any]) -> str:
    return f"{row['connection']}/{row['stream']}"


def render_plots(report: dict[str, Any]) -> dict[str, str]:
    """The report's plots as inline SVG documents (``<svg ...>...</svg>``), by name:
    ``completeness``, ``validity``, ``stale``, ``duplicates``, ``email_health``, ``consent``,
    ``segments``; a plot without data is left out. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    makers = {"completeness": _plot_completeness, "validity": _plot_validity, "stale": _plot_stale,
              "duplicates": _plot_duplicates, "email_health": _plot_email, "consent": _plot_consent,
              "segments": _plot_segments}
    out = {}
    style = {"svg.fonttype": "none", "font.family": "sans-serif", "font.size": 9,
             "axes.titlesize": 11, "axes.titleweight": "bold", "axes.spines.top": False,
             "axes.spines.right": False, "svg.image_inline": True}
    for name, make in makers.items():
        # A salt per plot: the ids inside each SVG are deterministic and differ between plots,
        # which share one HTML document.
        with matplotlib.rc_context({**style, "svg.hashsalt": f"synchub-quality-{name}"}):
            fig = make(report)
            if fig is not None:
                out[name] = _svg(fig)
    return out


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    return text[text.index("<svg"):].strip()


def _plot_completeness(report: dict[str, Any]) -> Any:
    columns: list[tuple[str, dict[str, float]]] = []
    for st_ in report["completeness"]["streams"]:
        columns.append((f"{_stream_name(st_)}\n({st_['records']:,})",
                        {f["field"]: f["share"] or 0.0 for f in st_["fields"]}))
    for g in report["completeness"]["golden"]:
        columns.append((f"golden {g['kind']}\n({g['records']:,})",
                        {f["field"]: f["share"] or 0.0 for f in g["fields"]}))
    fields = sorted({f for _, col in columns for f in col})
    if not fields:
        return None
    dropped = 0
    if len(fields) > _MAX_HEAT_FIELDS:
        # keep the fields most sources fill; the tables list them all
        rank = sorted(fields, key=lambda f: (-sum(f in col for _, col in columns), f))
        keep = set(rank[:_MAX_HEAT_FIELDS])
        dropped = len(fields) - len(keep)
        fields = [f for f in fields if f in keep]
    import numpy as np

    grid = np.full((len(fields), len(columns)), np.nan)
    for j, (_, col) in enumerate(columns):
        for i, f in enumerate(fields):
            if f in col:
                grid[i, j] = col[f] * 100
    fig = _figure(max(6.0, 2.6 + 1.25 * len(columns)), 1.6 + 0.26 * len(fields))
    ax = fig.add_subplot()
    import matplotlib

    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="#eeeeee")
    # vector cells (pcolormesh), not a raster image: crisp at any zoom, no embedded PNG
    im = ax.pcolormesh(np.arange(len(columns) + 1) - 0.5, np.arange(len(fields) + 1) - 0.5,
                       np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=100,
                       edgecolors="white", linewidth=0.5)
    ax.set_xlim(-0.5, len(columns) - 0.5)
    ax.set_ylim(len(fields) - 0.5, -0.5)
    ax.set_xticks(range(len(columns)), [_lbl(c) for c, _ in columns], fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(fields)), [_lbl(f) for f in fields], fontsize=8)
    ax.tick_params(length=0)
    golden_from = len(report["completeness"]["streams"])
    if 0 < golden_from < len(columns):
        ax.axvline(golden_from - 0.5, color="white", linewidth=4)
    for spine in ax.spines.values():
        spine.set_visible(False)
    for i in range(len(fields)):
        for j in range(len(columns)):
            val = grid[i, j]
            if not np.isnan(val):
                ax.text(j, i, f"{val:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if val < 25 or val > 85 else "black")
    title = "Completeness: % of live records filling each field\n(grey: the source never fills it)"
    if dropped:
        title += f"\n{dropped} rarer fields left out here, listed in the table"
    ax.set_title(title, loc="left")
    bar = fig.colorbar(im, ax=ax, shrink=0.5, label="% filled")
    bar.solids.set_rasterized(False)  # vector, like the rest: no embedded bitmap
    return fig


def _plot_validity(report: dict[str, Any]) -> Any:
    bars = []
    for st_ in report["validity"]["streams"]:
        for f in st_["fields"]:
            bars.append((f"{_stream_name(st_)} · {f['field']}", f["quarantined"], f["unverified"],
                         f["valid_share"]))
    if not bars:
        return None
    bars.sort(key=lambda b: (-(b[1] + b[2]), b[0]))
    bars = bars[:_MAX_BARS][::-1]
    fig = _figure(8.0, 1.4 + 0.32 * len(bars))
    ax = fig.add_subplot()
    y = range(len(bars))
    q = [b[1] for b in bars]
    u = [b[2] for b in bars]
    ax.barh(y, q, color="#c62828", label="quarantined (not used)")
    ax.barh(y, u, left=q, color="#f9a825", label="unverified (used)")
    ax.set_yticks(list(y), [_lbl(b[0]) for b in bars])
    top = max(a + b for _, a, b, _s in bars) or 1
    for i, (_, a, b, share) in enumerate(bars):
        _note(ax, a + b, i, f"{a + b:,}" + (f" ({share:.1%} valid)" if share is not None else ""))
    ax.set_xlim(0, top * 1.35)
    _whole_numbers(ax.xaxis)
    ax.set_xlabel("records with an unusable value")
    ax.set_title("Validity: records with unusable values, by source and field", loc="left")
    fig.legend(loc="outside lower left", frameon=False, ncols=2, fontsize=8)
    return fig


def _plot_stale(report: dict[str, Any]) -> Any:
    stale = report["stale"]
    streams = stale["streams"]
    if not streams and not stale["active"]:
        return None
    fig = _figure(10.0, max(3.2, 1.6 + 0.35 * max(len(streams), len(stale["last_confirmed"]))))
    left, right = fig.subplots(1, 2, width_ratios=[1.1, 1])
    names = [_lbl(_stream_name(s)) for s in streams][::-1]
    old = [s["stale"] for s in streams][::-1]
    fresh = [s["records"] - s["stale"] for s in streams][::-1]
    y = list(range(len(streams)))
    left.barh(y, fresh, color="#2e7d32", label=f"confirmed in the last {stale['days']} days")
    left.barh(y, old, left=fresh, color="#c62828", label="older")
    left.set_yticks(y, names)
    pad = max(0.0, (3 - len(streams)) / 2)  # one stream: a bar, not a wall
    left.set_ylim(-0.6 - pad, len(streams) - 0.4 + pad)
    for i, s in enumerate(streams[::-1]):
        if s["records"]:
            _note(left, s["records"], i, f"{s['share']:.0%} older")
    left.set_xlim(0, max([s["records"] for s in streams] + [1]) * 1.3)
    _whole_numbers(left.xaxis)
    left.set_xlabel("live source records")
    left.set_title("Source records by last confirmation", loc="left")
    fig.legend(loc="outside lower left", frameon=False, fontsize=8, ncols=2)
    buckets = stale["last_confirmed"]
    labels = [_lbl(b["age"]) for b in buckets]
    counts = [b["customers"] for b in buckets]
    colours = ["#2e7d32", "#7cb342", "#f9a825", "#ef6c00", "#c62828", "#78909c"][:len(buckets)]
    right.bar(range(len(buckets)), counts, color=colours)
    right.set_xticks(range(len(buckets)), labels, rotation=30, ha="right")
    for i, n in enumerate(counts):
        _note(right, i, n, f"{n:,}", above=True)
    right.set_ylim(0, max([*counts, 1]) * 1.15)
    _whole_numbers(right.yaxis)
    right.set_ylabel("active customers")
    right.set_title("Customers by last confirmation", loc="left")
    share = f" ({stale['share']:.1%})" if stale["share"] is not None else ""
    right.set_xlabel(f"{stale['stale']:,} stale{share}: no source confirmed them in {stale['days']} days")
    return fig


def _plot_duplicates(report: dict[str, Any]) -> Any:
    periods = report["duplicates"]["periods"]
    if not periods:
        return None
    periods = periods[-104:]  # two years of weeks at most; the tables hold them all
    n = len(periods)
    x = list(range(n))
    fig = _figure(max(7.0, min(14.0, 3 + 0.25 * n)), 5.6)
    top, bottom = fig.subplots(2, 1, sharex=True)
    series = (("matches", "source records matched to a customer", "#1565c0"),
              ("merges_auto", "customers merged automatically", "#6a1b9a"),
              ("merges_manual", "merged by a reviewer", "#ef6c00"))
    base = [0] * n
    for key, label, colour in series:
        values = [p[key] for p in periods]
        top.bar(x, values, bottom=base, width=0.6, color=colour, label=label)
        base = [b + v for b, v in zip(base, values, strict=True)]
    top.set_ylabel("per period")
    top.set_title("Duplicates found per " + report["duplicates"]["period"], loc="left")
    top.legend(frameon=False, fontsize=8, ncols=2, loc="upper left")  # three in a row are cut off at 7 in
    top.set_ylim(0, max([*base, 1]) * 1.3)
    _whole_numbers(top.yaxis)
    kinds = sorted({k for p in periods for k in p["review_open"]})
    colours = ["#c62828", "#1565c0", "#2e7d32", "#6a1b9a"]
    for k, kind in enumerate(kinds):
        colour = colours[k % len(colours)]
        bottom.plot(x, [p["review_open"].get(kind, 0) for p in periods], marker="o", markersize=3,
                    color=colour, label=f"open: {_lbl(kind.replace('_', ' '))}")
        bottom.bar([i + (k - (len(kinds) - 1) / 2) * 0.3 for i in x],
                   [p["review_created"].get(kind, 0) for p in periods], width=0.3, color=colour,
                   alpha=0.3, label=f"created: {_lbl(kind.replace('_', ' '))}")
    bottom.set_ylabel("review items")
    bottom.set_title("Review items open at the end of each period, and created in it", loc="left")
    if kinds:
        bottom.legend(frameon=False, fontsize=8, ncols=2, loc="upper left")
    else:
        bottom.text(0.5, 0.5, "no review items", transform=bottom.transAxes, ha="center",
                    va="center", color="#777777")
    peak = max([v for p in periods for v in (*p["review_open"].values(), *p["review_created"].values())] + [1])
    bottom.set_ylim(0, peak * 1.35)
    _whole_numbers(bottom.yaxis)
    bottom.set_xlim(-0.7, n - 0.3)
    step = -(-n // 24)  # at most 24 labels
    bottom.set_xticks(x[::step], [p["period"] for p in periods][::step], rotation=45, ha="right")
    return fig


def _plot_email(report: dict[str, Any]) -> Any:
    e = report["email_health"]
    if not e["persons"]:
        return None
    statuses = list(e["statuses"])
    counts = [e["statuses"][s] for s in statuses]
    fig = _figure(8.0, 3.2)
    ax = fig.add_subplot()
    y = list(range(len(statuses)))[::-1]
    ax.barh(y, counts, color=[_STATUS_COLOURS.get(s, "#90a4ae") for s in statuses])
    labels = {"cleaned": "cleaned (bounced)", "none": "no status known", "never": "never subscribed"}
    ax.set_yticks(y, [labels.get(s, s) for s in statuses])
    for yi, n in zip(y, counts, strict=True):
        _note(ax, n, yi, f"{n:,} ({n / e['persons']:.1%})")
    ax.set_xlim(0, max([*counts, 1]) * 1.3)
    _whole_numbers(ax.xaxis)
    ax.set_xlabel(f"active persons ({e['persons']:,}; {e['with_email']:,} with an e-mail address)")
    rates = []
    if e["opt_out_rate"] is not None:
        rates.append(f"opt-out {e['opt_out_rate']:.1%}")
    if e["cleaned_rate"] is not None:
        rates.append(f"bounced {e['cleaned_rate']:.1%}")
    ax.set_title("E-mail health" + (f": {', '.join(rates)} of those ever listed" if rates else ""),
                 loc="left")
    return fig


def _plot_consent(report: dict[str, Any]) -> Any:
    cov = report["consent_coverage"]
    if not cov["persons"]:
        return None
    channels = cov["channels"]
    x = list(range(len(channels)))
    fig = _figure(8.0, 3.4)
    ax = fig.add_subplot()
    persons = cov["persons"]
    series = (("reachable", "reachable (has the contact point)", "#90a4ae"),
              ("known", "consent status known", "#1565c0"),
              ("granted", "consent granted", "#2e7d32"))
    width = 0.26
    for k, (key, label, colour) in enumerate(series):
        vals = [c[key] / persons * 100 for c in channels]
        pos = [i + (k - 1) * width for i in x]
        ax.bar(pos, vals, width=width, color=colour, label=label)
        for p, v in zip(pos, vals, strict=True):
            _note(ax, p, v, f"{v:.0f}", above=True)
    ax.set_xticks(x, [c["channel"] for c in channels])
    ax.set_ylim(0, 118)
    ax.set_ylabel(f"% of {persons:,} active persons")
    ax.set_title("Consent coverage per channel", loc="left")
    ax.legend(frameon=False, fontsize=8, ncols=3, loc="upper right")
    return fig


def _plot_segments(report: dict[str, Any]) -> Any:
    segs = [s for s in report["segments"] if "size" in s]
    if not segs:
        return None
    segs = segs[:_MAX_BARS][::-1]
    fig = _figure(8.0, 1.3 + 0.32 * len(segs))
    ax = fig.add_subplot()
    y = list(range(len(segs)))
    sizes = [s["size"] for s in segs]
    ax.barh(y, sizes, color="#1565c0")
    ax.set_yticks(y, [_lbl(f"{s['name']} ({s['entity']})") for s in segs])
    for yi, s in zip(y, segs, strict=True):
        share = f" ({s['share']:.1%})" if s["share"] is not None else ""
        _note(ax, s["size"], yi, f"{s['size']:,}{share}")
    ax.set_xlim(0, max([*sizes, 1]) * 1.3)
    _whole_numbers(ax.xaxis)
    ax.set_xlabel("active golden records in the segment")
    ax.set_title("Segment sizes", loc="left")
    return fig


# ---------------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;margin:2em auto;max-width:1150px;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
h3{font-size:1.05em;margin-bottom:.3em}p.meta{color:#555;margin-top:0}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
td.bad{background:#fde2e2}td.warn{background:#fff4d6}td.good{background:#e6f4e6}
figure{margin:1em 0}figure svg{max-width:100%;height:auto}p.none{color:#777;font-style:italic}
nav a{margin-right:1em}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(n: Any) -> str:
    return "–" if n is None else f"{n:,}"


def _pct(share: Any) -> str:
    return "–" if share is None else f"{share * 100:.1f} %"


def _shade(share: Any, *, good: float = 0.95, warn: float = 0.8) -> str:
    if share is None:
        return "n"
    return "n good" if share >= good else "n warn" if share >= warn else "n bad"


def _table(headers: Sequence[str], rows: Sequence[Sequence[tuple[str, str]]]) -> str:
    """``rows`` of ``(css class, already escaped html)`` cells."""
    if not rows:
        return '<p class="none">Nothing to show.</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="{cls}">{cell}</td>' if cls else f"<td>{cell}</td>"
                                    for cls, cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _t(text: Any) -> tuple[str, str]:
    return ("", _e(text))


def _n(n: Any) -> tuple[str, str]:
    return ("n", _num(n))


def _figure_html(plots: dict[str, str], name: str, caption: str) -> str:
    svg = plots.get(name)
    if svg is None:
        return ""
    return f'<figure role="img" aria-label="{_e(caption)}">{svg}</figure>'


def render_html(report: dict[str, Any], *, plots: dict[str, str] | None = None) -> str:
    """The report as one self-contained HTML page: tables and inline SVG plots, no script and
    no external resource; every value from the store is escaped. ``plots`` defaults to
    :func:`render_plots` (matplotlib)."""
    if plots is None:
        plots = render_plots(report)
    s, stale, dup = report["summary"], report["stale"], report["duplicates"]
    parts: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; img-src data:\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Data quality {_e(str(report['generated_at'])[:10])}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Data-quality and freshness report</h1>",
        f'<p class="meta">Generated {_e(report["generated_at"])} · stale after '
        f'{_e(report["stale_days"])} days · periods: {_e(report["period"])} · store: '
        f'{_e(report["backend"])}</p>',
        '<nav><a href="#summary">Summary</a><a href="#stale">Freshness</a>'
        '<a href="#completeness">Completeness</a><a href="#validity">Validity</a>'
        '<a href="#duplicates">Duplicates and review</a><a href="#email">E-mail health</a>'
        '<a href="#consent">Consent</a><a href="#segments">Segments</a></nav>',
    ]
    # summary
    parts.append('<h2 id="summary">Summary</h2>')
    parts.append(_table(["kind", "active", "merged away", "deleted"], [
        [_t(k), _n(v["active"]), _n(v["merged"]), _n(v["deleted"])] for k, v in s["customers"].items()]))
    parts.append(_table(["connection/stream", "kind", "live records", "deleted", "last changed"], [
        [_t(_stream_name(r)), _t(r["kind"]), _n(r["records"]), _n(r["deleted"]), _t(r["last_changed"])]
        for r in s["streams"]]))
    open_items = ", ".join(f"{_e(k.replace('_', ' '))}: {_num(n)}" for k, n in s["open_review_items"].items())
    parts.append(f"<p>{_num(s['active_customers'])} active customers from {_num(s['source_records'])} "
                 f"live source records; {_num(s['quarantined_records'])} records hold values the hub "
                 f"could not use; open review items: {open_items or 'none'}.</p>")
    # freshness
    parts.append('<h2 id="stale">Freshness</h2>')
    parts.append(f"<p>A customer is <b>stale</b> when no source confirmed any of its live source records "
                 f"since {_e(stale['cutoff'])} ({_e(stale['days'])} days). Confirmed: a read delivered the "
                 f"record, changed or not, or a full listing of the source named it; a file that is not "
                 f"exported again confirms nothing. <b>{_num(stale['stale'])}</b> of "
                 f"{_num(stale['active'])} active customers ({_pct(stale['share'])}) are stale.</p>")
    parts.append(_figure_html(plots, "stale", "source records and customers by last confirmation"))
    parts.append(_table(["kind", "active", "stale", "share", "without a live source"], [
        [_t(c["kind"]), _n(c["active"]), _n(c["stale"]), ("n", _pct(c["share"])), _n(c["no_live_source"])]
        for c in stale["customers"]]))
    parts.append(_table(["connection/stream", "live records", "older than the cutoff", "share",
                         "oldest confirmation", "newest confirmation"], [
        [_t(_stream_name(r)), _n(r["records"]), _n(r["stale"]), ("n", _pct(r["share"])),
         _t(r["oldest_confirmed"]), _t(r["newest_confirmed"])] for r in stale["streams"]]))
    # completeness
    parts.append('<h2 id="completeness">Completeness</h2>')
    parts.append("<p>Per source, the share of its live records that fill each canonical field; "
                 "<i>quarantined</i> counts records that sent the field but only an unusable value. "
                 "The last columns are the golden records, after merging.</p>")
    parts.append(_figure_html(plots, "completeness", "completeness per source and field"))
    for st_ in report["completeness"]["streams"]:
        parts.append(f"<h3>{_e(_stream_name(st_))} ({_num(st_['records'])} records)</h3>")
        parts.append(_table(["field", "filled", "share", "quarantined only"], [
            [_t(f["field"]), _n(f["filled"]), (_shade(f["share"]), _pct(f["share"])), _n(f["quarantined"])]
            for f in st_["fields"]]))
    for g in report["completeness"]["golden"]:
        parts.append(f"<h3>golden records: {_e(g['kind'])} ({_num(g['records'])} active)</h3>")
        parts.append(_table(["field", "filled", "share"], [
            [_t(f["field"]), _n(f["filled"]), (_shade(f["share"]), _pct(f["share"]))] for f in g["fields"]]))
    # validity
    v = report["validity"]
    parts.append('<h2 id="validity">Validity</h2>')
    parts.append("<p>Values a source sent that the hub could not use (<i>quarantined</i>: kept out "
                 "of the customer data) or uses unverified, as each record was last delivered. "
                 "<i>Valid</i>: records with a usable value and no flagged one, of the records that "
                 "sent the field.</p>")
    parts.append(_figure_html(plots, "validity", "records with quarantined values per source and field"))
    parts.append(_table(["connection/stream", "records", "with quarantined values", "values quarantined",
                         "values unverified"], [
        [_t(_stream_name(r)), _n(r["records"]), _n(r["records_with_quarantine"]),
         _n(r["values_quarantined"]), _n(r["values_unverified"])] for r in v["streams"]]))
    parts.append(_table(["connection/stream", "field", "sent", "valid", "quarantined", "unverified",
                         "valid share", "quarantined share"], [
        [_t(_stream_name(r)), _t(f["field"]), _n(f["delivered"]), _n(f["clean"]), _n(f["quarantined"]),
         _n(f["unverified"]), (_shade(f["valid_share"], good=0.99, warn=0.95), _pct(f["valid_share"])),
         ("n", _pct(f["quarantined_share"]))]
        for r in v["streams"] for f in r["fields"]]))
    parts.append("<h3>Reasons</h3>")
    parts.append(_table(["connection/stream", "field", "rule", "status", "reason", "values"], [
        [_t(_stream_name(r)), _t(r["field"]), _t(r["rule"]), _t(r["status"]), _t(r["reason"]), _n(r["values"])]
        for r in v["reasons"][:100]]))
    if len(v["reasons"]) > 100:
        parts.append(f'<p class="none">{_num(len(v["reasons"]) - 100)} more reasons in the CSV and JSON files.</p>')
    parts.append("<h3>Rejected rows (runs still kept)</h3>")
    parts.append(_table(["connection/stream", "field", "rows"], [
        [_t(_stream_name(r)), _t(r["field"] or "–"), _n(r["rows"])] for r in v["rejected"]]))
    # duplicates
    parts.append('<h2 id="duplicates">Duplicates and review</h2>')
    totals = dup["totals"]
    parts.append(f"<p>{_num(totals['matches'])} source records matched an existing customer, "
                 f"{_num(totals['merges_auto'])} customers were merged automatically and "
                 f"{_num(totals['merges_manual'])} by a reviewer, {_num(totals['splits'])} merges "
                 f"were undone. Open review items: "
                 f"{', '.join(f'{_e(k)}: {_num(n)}' for k, n in dup['open_review_items'].items()) or 'none'}"
                 f"{'; the oldest since ' + _e(dup['oldest_open']) if dup['oldest_open'] else ''}.</p>")
    parts.append(_figure_html(plots, "duplicates", "duplicates and review items over time"))
    kinds = sorted({k for p in dup["periods"] for k in p["review_open"]})
    parts.append(_table(["period", "matched", "merged (auto)", "merged (review)", "split",
                         *[f"created: {k}" for k in kinds], *[f"open: {k}" for k in kinds]], [
        [_t(p["period"]), _n(p["matches"]), _n(p["merges_auto"]), _n(p["merges_manual"]), _n(p["splits"]),
         *[_n(p["review_created"].get(k, 0)) for k in kinds], *[_n(p["review_open"].get(k, 0)) for k in kinds]]
        for p in dup["periods"][::-1]]))
    # e-mail
    e = report["email_health"]
    parts.append('<h2 id="email">E-mail health</h2>')
    parts.append(f"<p>E-mail consent of the {_num(e['persons'])} active persons "
                 f"({_num(e['with_email'])} with an address). Of the {_num(e['listed'])} ever on a "
                 f"list: opt-out rate {_pct(e['opt_out_rate'])}, cleaned (bounced) "
                 f"{_pct(e['cleaned_rate'])}.</p>")
    parts.append(_figure_html(plots, "email_health", "e-mail consent status of active persons"))
    parts.append(_table(["status", "persons", "share"], [
        [_t(k), _n(n), ("n", _pct(_share(n, e["persons"])))] for k, n in e["statuses"].items()]))
    # consent
    cov = report["consent_coverage"]
    parts.append('<h2 id="consent">Consent coverage</h2>')
    parts.append("<p>Per channel: persons the channel can reach (an e-mail address, a phone number, "
                 "a postal address), with any known consent status, and with consent granted "
                 "(subscribed).</p>")
    parts.append(_figure_html(plots, "consent", "consent coverage per channel"))
    parts.append(_table(["channel", "reachable", "status known", "known share", "granted", "granted share",
                         "known, of reachable", "granted, of reachable", "statuses"], [
        [_t(c["channel"]), _n(c["reachable"]), _n(c["known"]), ("n", _pct(c["known_share"])),
         _n(c["granted"]), ("n", _pct(c["granted_share"])), ("n", _pct(c["known_reachable_share"])),
         ("n", _pct(c["granted_reachable_share"])),
         _t(", ".join(f"{k}: {n:,}" for k, n in c["statuses"].items()) or "–")]
        for c in cov["channels"]]))
    # segments
    parts.append('<h2 id="segments">Segments</h2>')
    if report["segments"]:
        parts.append(_figure_html(plots, "segments", "segment sizes"))
        parts.append(_table(["segment", "entity", "size", "share"], [
            [_t(g["name"]), _t(g["entity"]), _n(g.get("size")), ("n", _pct(g.get("share")))]
            if "error" not in g else [_t(g["name"]), _t(g["entity"]), ("bad", "error: " + _e(g["error"])), _t("")]
            for g in report["segments"]]))
    else:
        parts.append('<p class="none">No segments given (outbound streams of the config).</p>')
    parts.append("</body></html>\n")
    return "\n".join(p for p in parts if p)
