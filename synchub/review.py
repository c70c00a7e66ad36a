"""What admins do with identity: undo merges, split records, resolve conflicts, re-cluster.

Every decision is written to the audit log and remembered: a pair kept apart is never merged
again by matching, a field an admin chose keeps its value through later runs (until the admin
clears it), and a resolved conflict is not logged again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from synchub import store as st
from synchub.errors import SynchubError
from synchub.golden import (
    aware,
    duplicate_fingerprint,
    log_possible_duplicates,
    merge_golden,
    merge_goldens,
    rederive,
)
from synchub.merge import OPT_OUT
from synchub.store import utcnow

if TYPE_CHECKING:
    from synchub.engine import Hub


class ReviewError(SynchubError):
    """The requested review action does not fit the record or conflict."""


def _golden(conn: sa.Connection, golden_id: str) -> Any:
    row = st.golden_row(conn, golden_id)
    if row is None:
        raise ReviewError(f"no customer {golden_id!r}")
    return row


def undo_merge(hub: Hub, golden_id: str, *, merged_id: str | None = None, by: str = "cli") -> str:
    """Undo the most recent merge into ``golden_id`` (or the merge of ``merged_id``): the merged
    record comes back with its own id and exactly its source records, both records are derived
    again, and the pair is kept apart from now on. Returns the restored id."""
    now = utcnow()
    with hub.store.begin() as conn:
        g = _golden(conn, golden_id)
        event = None
        for row, status in st.merges_into(conn, g.id):
            if (merged_id is None or row.details.get("merged") == merged_id) and status == "merged":
                event = row
                break
        if event is None:
            raise ReviewError(f"customer {g.id} has no merge to undo" + (f" with {merged_id}" if merged_id else ""))
        loser = event.details["merged"]
        moved = event.details.get("source_records") or []
        st.move_source_records(conn, moved, loser)
        _restore_overrides(conn, g.id, loser, event.details.get("overrides") or {})
        st.keep_apart(conn, g.id, loser, by, "merge undone", now)
        st.insert_audit(conn, [{"at": now, "actor": by, "action": "split", "golden_id": g.id,
                                "details": {"restored": loser, "source_records": moved, "undid_audit": event.id}}])
        rederive(conn, g.kind, {g.id, loser}, hub.merger(g.kind), now, by, 0)
        _restore_review_items(conn, event.details.get("review_items") or {}, loser, now, by)
    return loser


def _restore_review_items(conn: sa.Connection, items: dict[str, list[Any]], loser: str, now: datetime, by: str) -> None:
    """Undo what a merge did to possible duplicates (see ``golden._follow_merges``): one it
    re-pointed to the survivor, or closed, is about its own pair again, and open, where both
    records are active, not kept apart and the pair has no other item, and no admin decided it
    since. (Field conflicts need nothing here: deriving the restored record logs its own again,
    reopening those the merge closed.)"""
    entries = [e for e in (items.get("repointed") or []) + (items.get("closed") or []) if e[2] is not None]
    if not entries:
        return
    rows = st.conflicts_by_id(conn, [e[0] for e in entries])
    pairs = {e[0]: (min(e[1], e[2]), max(e[1], e[2])) for e in entries}
    ids = {g for pair in pairs.values() for g in pair}
    status, apart = st.golden_status(conn, ids), st.load_keep_apart(conn, ids)
    taken = st.conflict_status(conn, [duplicate_fingerprint(*p) for p in pairs.values()])
    restored = []
    for cid, (x, y) in pairs.items():
        r = rows.get(cid)
        if r is None or not (r.status == "open" or (r.status == "closed" and (r.resolution or {}).get("merged") == loser)):
            continue
        fp = duplicate_fingerprint(x, y)
        if status.get(x) != "active" or status.get(y) != "active" or (x, y) in apart or (fp != r.fingerprint and fp in taken):
            continue
        st.repoint_duplicate(conn, cid, x, y, fp)
        taken[fp] = "open"
        restored.append(cid)
    if restored:
        st.insert_audit(conn, [{"at": now, "actor": by, "action": "conflicts_reopened", "golden_id": loser,
                                "details": {"conflicts": restored, "reason": "the merge that closed or re-pointed them was undone"}}])


def split_sources(hub: Hub, golden_id: str, refs: list[str], *, by: str = "cli") -> str:
    """Move the named source records (``connection/stream/source_id``) of a golden record into a new
    golden record and keep the two apart from now on. Returns the new id."""
    now = utcnow()
    with hub.store.begin() as conn:
        g = _golden(conn, golden_id)
        sources = st.source_refs_of(conn, g.id)
        by_ref = {f"{s.connection}/{s.stream}/{s.source_id}": s.id for s in sources}
        unknown = [r for r in refs if r not in by_ref]
        if unknown:
            raise ReviewError(f"not source records of {g.id}: {', '.join(unknown)} (it has: {', '.join(sorted(by_ref))})")
        if len(set(refs)) >= len(by_ref):
            raise ReviewError("at least one source record must stay with the customer")
        new_id = st.new_golden_id()
        ids = [by_ref[r] for r in refs]
        st.move_source_records(conn, ids, new_id)
        st.keep_apart(conn, g.id, new_id, by, "split by admin", now)
        st.insert_audit(conn, [{"at": now, "actor": by, "action": "split", "golden_id": g.id,
                                "details": {"new": new_id, "source_records": ids}}])
        rederive(conn, g.kind, {g.id, new_id}, hub.merger(g.kind), now, by, 0)
    return new_id


def _restore_overrides(conn: sa.Connection, survivor: str, loser: str, overrides: dict[str, list[Any]]) -> None:
    """Undo what a merge did to the admins' field decisions (see ``engine._merge_overrides``):
    the merged record's decisions go back to it, the survivor's parked ones back to the survivor,
    unless an admin has decided that field of the survivor again since (the newer one holds).
    A decision is recognised by row id and decision time: a replaced decision may reuse an id."""

    def still(entries: list[Any], owner: str) -> list[Any]:
        wanted = {int(i): at for i, at in entries}
        if not wanted:
            return []
        return [r for r in st.overrides_by_id(conn, wanted, owner) if aware(r.decided_at) == datetime.fromisoformat(wanted[r.id])]

    moved, parked = still(overrides.get("moved") or [], survivor), still(overrides.get("parked") or [], loser)
    # The parked ones step out of the loser's way first (unique golden_id, field); they go back
    # to the survivor once its remaining decisions are known.
    st.reassign_overrides(conn, {r.id: f"parked:{r.id}" for r in parked}, {})
    st.reassign_overrides(conn, {r.id: loser for r in moved}, {})
    if parked:
        decided = st.decided_fields(conn, survivor)
        superseded = [r.id for r in parked if r.field in decided]
        if superseded:
            st.delete_overrides(conn, superseded)
        st.reassign_overrides(conn, {r.id: survivor for r in parked if r.field not in decided}, {})


def resolve_conflict(hub: Hub, conflict_id: int, *, pick: int | None = None, value: str | None = None,
                     merge: bool = False, keep_apart: bool = False, dismiss: bool = False, by: str = "cli") -> dict[str, Any]:
    """Resolve one conflict. Field conflicts take ``pick`` (a candidate's number, from 1) or
    ``value``; possible duplicates take ``merge`` or ``keep_apart``; any conflict can be dismissed."""
    chosen = [x for x in (pick is not None, value is not None, merge, keep_apart, dismiss) if x]
    if len(chosen) != 1:
        raise ReviewError("give exactly one of --pick, --value, --merge, --keep-apart, --dismiss")
    now = utcnow()
    with hub.store.begin() as conn:
        c = st.conflict_row(conn, conflict_id)
        if c is None:
            raise ReviewError(f"no conflict {conflict_id}")
        if c.status != "open":
            raise ReviewError(f"conflict {conflict_id} is already {c.status}")
        golden_id = st.follow_merges(conn, c.golden_id)
        g = _golden(conn, golden_id)
        resolution: dict[str, Any]
        if dismiss:
            resolution = {"action": "dismiss"}
        elif c.kind == "possible_duplicate":
            if pick is not None or value is not None:
                raise ReviewError("a possible duplicate is resolved with --merge or --keep-apart")
            other = st.follow_merges(conn, c.other_golden_id)
            if merge:
                if other != golden_id:
                    merge_golden(conn, other, golden_id, now, by, f"conflict {conflict_id} resolved: merge")
                    rederive(conn, g.kind, {golden_id}, hub.merger(g.kind), now, by, 0)
                resolution = {"action": "merge", "survivor": golden_id, "merged": other}
            else:
                st.keep_apart(conn, golden_id, other, by, f"conflict {conflict_id}", now)
                resolution = {"action": "keep_apart"}
        else:
            if merge or keep_apart:
                raise ReviewError("a field conflict is resolved with --pick or --value")
            if pick is not None:
                if not 1 <= pick <= len(c.candidates):
                    raise ReviewError(f"--pick takes 1 to {len(c.candidates)}")
                new_value = c.candidates[pick - 1]["value"]
            else:
                new_value = _parse_value(value or "")
            if c.field.startswith("consent.") and not _is_opt_out(new_value):
                raise ReviewError("consent can only be set to an opt-out here; an opt-in must come from the person")
            st.set_override(conn, golden_id, c.field, new_value, by, now, c.id)
            rederive(conn, g.kind, {golden_id}, hub.merger(g.kind), now, by, 0)
            resolution = {"action": "pick" if pick is not None else "value", "value": new_value}
        status = "dismissed" if dismiss else "resolved"
        st.close_conflict(conn, c.id, status, by, now, resolution)
        st.insert_audit(conn, [{"at": now, "actor": by, "action": "resolve", "golden_id": golden_id,
                                "details": {"conflict": c.id, "field": c.field, **resolution}}])
    return resolution


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _is_opt_out(value: Any) -> bool:
    return isinstance(value, dict) and value.get("status") in OPT_OUT


@dataclass
class DedupeReport:
    compared: int = 0
    merges: list[tuple[str, str, float, list[str]]] = field(default_factory=list)
    possible: list[tuple[str, str, float, list[str]]] = field(default_factory=list)
    seconds: float = 0.0
    #: Of ``possible``: review items logged (new or open again); the rest were under review
    #: already, kept apart, or merged by this run.
    logged: int = 0
    #: Open review items of the merged records that the merges closed or re-pointed.
    closed: int = 0
    repointed: int = 0


def rebuild_match_keys(hub: Hub, kind: str = "person") -> int:
    """Recompute the blocking keys of every active golden record (after turning fuzzy matching
    on, or after a change of the blocking keys). Returns how many records were keyed."""
    from synchub import similarity

    n = 0
    batch: dict[str, list[tuple[str, str]]] = {}
    for g in hub.store.iter_golden(kind, batch=2000):
        batch[g["id"]] = similarity.blocking_keys(similarity.features(g["data"], kind))
        if len(batch) >= 2000:
            with hub.store.begin() as conn:
                st.replace_match_keys(conn, kind, batch, max_block=similarity.MAX_BLOCK)
            n += len(batch)
            batch = {}
    if batch:
        with hub.store.begin() as conn:
            st.replace_match_keys(conn, kind, batch, max_block=similarity.MAX_BLOCK)
        n += len(batch)
    return n


def dedupe(hub: Hub, kind: str = "person", *, dry_run: bool = False, by: str = "dedupe") -> DedupeReport:
    """Re-cluster every active golden record of ``kind`` with the current rules.

    Pairs scored ``match`` are merged (unless an admin kept them apart), ``possible`` pairs
    become conflicts. With ``dry_run`` nothing is written; the report says what would happen."""
    import time

    from synchub import similarity

    started = time.perf_counter()
    cfg = hub.config.match_config(kind).score_config(kind)
    ids: list[str] = []
    feats: list[similarity.Features] = []
    counter = similarity.Counter()
    # Decoding 100k records' JSON builds millions of acyclic objects; with the cyclic collector
    # on, it walked the growing heap again and again (2.8 s of JSON decoding instead of 0.7 s).
    # Only the comparison features of each record are kept, not its data.
    with similarity.gc_paused():
        for g in hub.store.iter_golden(kind, batch=5000):
            ids.append(g["id"])
            feats.append(similarity.features(g["data"], kind))
        with hub.store.engine.connect() as conn:
            apart = st.load_keep_apart(conn, None)
        pairs = similarity.dedupe(feats, kind, cfg, counter=counter)
    report = DedupeReport(compared=counter.comparisons)
    parent: dict[str, str] = {}
    index = {gid: i for i, gid in enumerate(ids)}
    members: dict[str, list[int]] = {}  # root -> records merged into it so far

    def find(x: str) -> str:
        while x in parent:
            x = parent[x]
        return x

    # Strongest pairs first; two groups are joined only if the hard rules allow every pair of
    # their records (a record matching both twins must not make them one customer).
    for i, j, decision in sorted(pairs, key=lambda p: (-p[2].score, p[0], p[1])):
        a, b = ids[i], ids[j]
        if decision.outcome == "match":
            ra, rb = find(a), find(b)
            if ra == rb:
                continue
            if (min(a, b), max(a, b)) in apart or (min(ra, rb), max(ra, rb)) in apart:
                continue
            group_a, group_b = members.get(ra, [index[ra]]), members.get(rb, [index[rb]])
            if any(similarity.vetoed(feats[x], feats[y], cfg) for x in group_a for y in group_b):
                report.possible.append((a, b, decision.score, [similarity.CLASH_REASON, *decision.reasons]))
                continue
            survivor, loser = min(ra, rb), max(ra, rb)
            parent[loser] = survivor
            members[survivor] = group_a + group_b
            members.pop(loser, None)
            report.merges.append((loser, survivor, decision.score, list(decision.reasons)))
        elif decision.outcome == "possible" and (min(a, b), max(a, b)) not in apart:
            report.possible.append((a, b, decision.score, list(decision.reasons)))
    del feats
    if not dry_run and (report.merges or report.possible):
        now = utcnow()
        with similarity.gc_paused(), hub.store.begin() as conn:
            roots = {loser: find(loser) for loser, *_ in report.merges}
            policy = {"thresholds": {"upper": cfg.upper, "lower": cfg.lower}, "run": None}
            followed = merge_goldens(conn, roots, now, by, "dedupe", evidence={
                loser: {"rule": "fuzzy match", "score": round(float(score), 2), "reasons": reasons, "with": survivor, **policy}
                for loser, survivor, score, reasons in report.merges})
            report.closed = sum(len(f["closed"]) for f in followed.values())
            report.repointed = sum(len(f["repointed"]) for f in followed.values())
            for chunk in st._chunks(sorted(set(roots.values()))):
                rederive(conn, kind, set(chunk), hub.merger(kind), now, by, 0)
            report.logged = log_possible_duplicates(
                conn, [(find(a), find(b), s, r) for a, b, s, r in report.possible if find(a) != find(b)], now, policy)
    report.seconds = time.perf_counter() - started
    return report
