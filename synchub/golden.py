"""Merge and write: golden records derived from their source records, and what changes them.

The merge stage of a sync (read → prepare → match → **merge → write**): :func:`rederive` derives
each touched golden record again from all its source records by the survivorship rules
(:class:`synchub.merge.Merger`), with its purchase summary from its orders, and writes what
changed (the record, its provenance, an audit entry, its blocking keys, the conflicts the rules
could not decide). :func:`merge_goldens` moves everything of merged-away golden records to their
survivors; :func:`log_possible_duplicates` and :func:`log_attention` put what needs a person into
the review queue. Used by the sync and by the review commands alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa

from synchub import purchases
from synchub import store as st
from synchub.merge import Merger
from synchub.normalize import fold
from synchub.redact import redact


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
    moved = st.move_to_survivors(conn, survivors, now)
    overrides = _merge_overrides(conn, survivors)
    st.insert_audit(conn, [
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
    rows = st.overrides_of(conn, set(survivors) | set(survivors.values()))
    if not rows:
        return {}
    by_field: dict[tuple[str, str], list[Any]] = {}
    for r in rows:
        by_field.setdefault((survivors.get(r.golden_id, r.golden_id), r.field), []).append(r)
    out: dict[str, dict[str, list[Any]]] = {}
    parks: dict[int, str] = {}
    moves: dict[int, str] = {}
    for (survivor, _field), decisions in by_field.items():
        # Newest decision wins; on a tie the survivor's own stays.
        winner = max(decisions, key=lambda r: (aware(r.decided_at), r.golden_id == survivor, r.id))
        if winner.golden_id == survivor:
            continue
        loser = winner.golden_id
        done = out.setdefault(loser, {"moved": [], "parked": []})
        own = next((r for r in decisions if r.golden_id == survivor), None)
        if own is not None:  # the survivor's older decision waits on the loser
            parks[own.id] = loser
            done["parked"].append([own.id, aware(own.decided_at).isoformat()])
        moves[winner.id] = survivor
        done["moved"].append([winner.id, aware(winner.decided_at).isoformat()])
    st.reassign_overrides(conn, moves, parks)
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
    known = st.conflict_status(conn, notes)
    new = [n for fp, n in notes.items() if fp not in known and (n["golden_id"], n["other_golden_id"]) not in apart]
    if new:
        st.insert_conflicts(conn, new)
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
    known = st.conflict_status(conn, rows)
    new = [r for fp, r in rows.items() if fp not in known]
    reopen = [fp for fp in rows if known.get(fp) not in (None, "open")]
    if new:
        st.insert_conflicts(conn, new)
    for fp in reopen:
        # Marked resolved, yet the destination still refuses: open again, with the new detail.
        st.reopen_conflict(conn, fp, rows[fp]["candidates"], rows[fp]["applied"], now)
    return len(new) + len(reopen)


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
    sources, current, overrides, orders = st.load_for_derive(conn, [g for g in ids if g not in fresh])
    for g in ids:
        sources.setdefault(g, fresh.get(g, []))
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
        st.insert_golden(conn, inserts)
    if updates:
        st.update_golden(conn, updates, ("data", "provenance", "display_name", "search_text", "status",
                                                   "merged_into", "updated_at", "version"))
    if explained:
        st.update_golden(conn, explained, ("provenance",))
    if audits:
        st.insert_audit(conn, audits)
    if match_keys:
        st.replace_match_keys(conn, kind, match_keys, max_block=similarity.MAX_BLOCK, known=known_blocks,
                              new={i["id"] for i in inserts})
        if on_match_keys is not None:
            on_match_keys(match_keys)
    changed["__conflicts__"] = _log_conflicts(conn, conflicts, now)
    return changed


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def as_datetime(value: str) -> datetime:
    if len(value) == 10:
        return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)
    return aware(datetime.fromisoformat(value.replace("Z", "+00:00")))


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
    known = st.conflict_status(conn, rows)
    new = [r for fp, r in rows.items() if fp not in known]
    if new:
        st.insert_conflicts(conn, new)
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
