"""Apply one batch: prepared source records matched to golden records, merged and written.

The step of a sync between preparing records (:mod:`synchub.prepare`) and deriving golden
records (:mod:`synchub.golden`): :func:`apply_batch` finds which source records are new or
changed (content hash), re-keys merged source ids, matches the changed ones
(:class:`synchub.match.BatchMatcher`, or a bulk load's in-memory one), writes source records,
identity keys and timeline entries, and has the touched golden records derived again.
:func:`apply_timeline` does the same for timeline-only streams (orders). One transaction per
batch; the caller commits it and only then moves the stream's cursor.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from functools import partial
from typing import Any

import sqlalchemy as sa

from synchub import bulk, match
from synchub import store as st
from synchub.golden import (
    as_datetime,
    log_possible_duplicates,
    merge_golden,
    merge_goldens,
    rederive,
)
from synchub.merge import Merger
from synchub.prepare import Prepared, content_hash
from synchub.store import utcnow


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
    #: Inbound: records of erased people (on the suppression list), not stored.
    suppressed: int = 0

    def add(self, other: StreamCounts) -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)


def apply_batch(conn: sa.Connection, connection: str, stream: str, kind: str, pending: list[Prepared],
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
    same: list[str] = []
    for p in latest.values():
        ex = existing.get(p.source_id)
        if ex is not None and ex.content_hash == p.hash:
            counts.unchanged += 1
            if st.confirmation_due(getattr(ex, "confirmed_at", now), now):
                same.append(p.source_id)
            if ex.raw_hash != p.raw_hash:  # prepared again (new code, mapping, raw spelling): same record
                rehashed[p.source_id] = (ex.id, p.raw_hash)
        elif ex is None and p.deleted:
            counts.unchanged += 1  # deleted at the source before the hub ever saw it
        else:
            changed.append(p)
    if same:
        st.confirm_source_records(conn, connection, stream, same, now)
    if rehashed:
        st.set_raw_hashes(conn, dict(rehashed.values()))
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
    done_before = set(resolver.losers())
    assignment: dict[str, str] = {}
    outcome: dict[str, str] = {}
    created_by: dict[str, str] = {}
    matched: dict[str, dict[str, Any]] = {}  # source id -> why it joined its golden record
    joined_by: dict[str, dict[str, Any]] = {}  # golden id -> why a record merged it into another
    # A new record's golden record is named after the record (the same on every run), unless
    # that name is taken.
    named = {p.source_id: st.golden_id_for(kind, connection, stream, p.source_id) for p in changed if p.source_id not in existing}
    taken = st.existing_golden_ids(conn, named.values()) if named else set()
    for p, feat in zip(changed, feats, strict=True):
        ex = existing.get(p.source_id)
        own = named.get(p.source_id)
        a = matcher.assign(p.keys, feat, ex.golden_id if ex is not None else None,
                           st.new_golden_id if own is None or own in taken else partial(str, own))
        assignment[p.source_id] = a.target
        if a.evidence:
            if a.target in a.evidence:
                matched[p.source_id] = a.evidence[a.target]
            for g, why in a.evidence.items():
                if g != a.target:
                    joined_by[g] = {**why, "record": f"{connection}/{stream}/{p.source_id}"}
        if ex is not None:
            outcome[p.source_id] = "updated"
        elif a.outcome == "created":
            outcome[p.source_id] = "created"
            created_by[a.target] = p.source_id
        else:
            outcome[p.source_id] = "duplicates"
    new_goldens = set(resolver.created)
    # Golden records merged because one record matched several (in this batch).
    merges = {loser: resolver.find(loser) for loser in resolver.losers() if loser not in done_before}
    stored_merges = {}
    for loser, survivor in merges.items():
        if loser in new_goldens:  # created earlier in this batch: never written, nothing to move
            outcome[created_by[loser]] = "duplicates"
            continue
        stored_merges[loser] = survivor
    # Every automatic decision keeps its evidence and the thresholds it was taken under.
    policy = {"thresholds": {"upper": matcher.score_cfg.upper, "lower": matcher.score_cfg.lower}, "run": run_id}
    merge_goldens(conn, stored_merges, now, actor, "matched by a new or changed record",
                  evidence={g: {**joined_by.get(g, {}), **policy} for g in stored_merges})
    counts.duplicates += len(stored_merges)
    for sid, g in list(assignment.items()):
        assignment[sid] = resolver.find(g)
    if matched:
        st.insert_audit(conn, [{"at": now, "actor": actor, "action": "match", "golden_id": assignment[sid],
                                "details": {"source": f"{connection}/{stream}/{sid}", **why, **policy}}
                               for sid, why in matched.items()])
    # Source records: update changed ones, insert new ones.
    updates, inserts = [], []
    for p in changed:
        row = {
            "golden_id": assignment[p.source_id], "data": p.data, "content_hash": p.hash,
            "observed_at": p.observed_at, "changed_at": now, "confirmed_at": now, "deleted": p.deleted,
            "quarantine": p.quarantine,
            "raw_hash": p.raw_hash,
        }
        ex = existing.get(p.source_id)
        if ex is not None:
            updates.append({**row, "_id": ex.id})
        else:
            inserts.append({**row, "connection": connection, "stream": stream, "source_id": p.source_id,
                            "kind": kind, "first_seen_at": now})
    if updates:
        st.update_source_records(conn, updates)  # and drops their identity keys
    sid_to_rowid = {p.source_id: existing[p.source_id].id for p in changed if p.source_id in existing}
    if inserts:
        sid_to_rowid.update(st.insert_source_records(conn, inserts))
    key_rows = [
        {"kind": kind, "key_type": t, "key_value": v, "golden_id": assignment[p.source_id], "source_record_id": sid_to_rowid[p.source_id]}
        for p in changed if not p.deleted for (t, v) in p.keys
    ]
    if key_rows:
        st.insert_identity_keys(conn, key_rows)
    _write_interactions(conn, connection, stream, changed, assignment, existing)
    # Entries that arrived before the record they belong to (an order read before its customer).
    adopted = st.adopt_entries(conn, connection, stream, {p.source_id: assignment[p.source_id] for p in changed if p.source_id not in existing})
    touched = {assignment[p.source_id] for p in changed} | set(merges.values()) | adopted
    touched = {resolver.find(g) for g in touched}
    fresh = _fresh_goldens(connection, stream, changed, assignment, new_goldens, set(stored_merges.values()) | adopted, existing)
    # The matcher read the block sizes after the re-keyed records above were written back.
    known = loading.block_sizes if loading is not None else matcher.block_sizes
    golden_changes = rederive(conn, kind, touched, merger, now, actor, run_id, fuzzy=fuzzy, known_blocks=known,
                              fresh=fresh, on_match_keys=loading.written_keys if loading is not None else None)
    possible = [(resolver.find(d.golden_id), resolver.find(d.other_id), d) for d in matcher.possible]
    golden_changes["__conflicts__"] += log_possible_duplicates(conn, [(a, b, d.score, d.reasons) for a, b, d in possible if a != b], now,
                                                                 policy)
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
    for rid, data in st.source_data(conn, list(ids)).items():
        old = (data or {}).get("consent") or {}
        p = ids[rid]
        new = p.data.get("consent") or {}
        kept = {ch: c for ch, c in old.items() if isinstance(c, dict) and c.get("status") in OPT_OUTS and ch not in new}
        if kept:
            p.data["consent"] = {**new, **kept}


def opt_outs_only(data: dict[str, Any] | None) -> dict[str, Any]:
    consent = (data or {}).get("consent") or {}
    kept = {ch: c for ch, c in consent.items() if isinstance(c, dict) and c.get("status") in OPT_OUTS}
    return {"consent": kept} if kept else {}


def quarantine_rows(run_id: int, connection: str, stream: str, pending: list[Prepared]) -> list[dict[str, Any]]:
    now = utcnow()
    return [
        {"run_id": run_id, "connection": connection, "stream": stream, "ref": p.ref or "", "source_id": p.source_id,
         "field": e["field"][:200], "source": str(e["source"])[:200] if e.get("source") else None,
         "rule": str(e.get("rule") or "")[:100], "status": e["status"], "raw": e.get("raw"),
         "reason": e["reason"], "created_at": now}
        for p in pending if p.quarantine for e in p.quarantine
    ]


def resolve_links(conn: sa.Connection, connection: str, pending: list[Prepared]) -> None:
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
            st.rename_source_record(conn, row.id, target, now)
            st.move_entries_owner(conn, connection, stream, alias, target)
            # Writes go to the surviving id from now on.
            st.retarget_outbound(conn, connection, alias, target)
            survivors[target] = row
            st.insert_audit(conn, [{"at": now, "actor": actor, "action": "rekey", "golden_id": row.golden_id,
                                    "details": {"connection": connection, "stream": stream, "from": alias, "to": target}}])
            continue
        st.drop_source_record(conn, row.id)
        st.move_entries_owner(conn, connection, stream, alias, target)
        if row.golden_id != surv.golden_id:
            merge_golden(conn, row.golden_id, surv.golden_id, now, actor,
                         f"{connection}/{stream} merged record {alias} into {target}")
        st.forget_outbound(conn, connection, alias)
        absorbed.append((row.golden_id, surv.golden_id))
    return absorbed


def _write_interactions(conn: sa.Connection, connection: str, stream: str, changed: list[Prepared],
                        assignment: dict[str, str], existing: dict[str, Any]) -> None:
    """Replace the timeline entries of every changed source record (idempotent on re-runs)."""
    st.delete_interactions(conn, connection, stream, [p.source_id for p in changed if p.source_id in existing])
    rows = []
    for p in changed:
        for i, item in enumerate(p.interactions):
            occurred = item.get("occurred_at")
            rows.append({
                "golden_id": assignment[p.source_id], "connection": connection, "stream": stream,
                "source_id": f"{p.source_id}#{i}", "record_id": p.source_id, "kind": item["kind"],
                "owner_stream": stream, "owner_id": p.source_id,
                "occurred_at": as_datetime(occurred) if occurred else p.observed_at, "data": item,
            })
    if rows:
        st.insert_interactions(conn, rows)


def apply_timeline(conn: sa.Connection, connection: str, stream: str, owner_stream: str,
                    pending: list[Prepared], counts: StreamCounts) -> set[str]:
    """Store a batch of timeline-only records; returns the golden ids whose timeline changed."""
    latest: dict[str, Prepared] = {}
    for p in pending:
        if p.source_id in latest:
            counts.unchanged += 1
        latest[p.source_id] = p
    old = st.interactions_of_records(conn, connection, stream, list(latest))
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
            "occurred_at": as_datetime(item["occurred_at"]) if item.get("occurred_at") else p.observed_at, "data": item,
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
    st.delete_interactions(conn, connection, stream, stale)
    if rows:
        st.insert_interactions(conn, rows)
    return touched
