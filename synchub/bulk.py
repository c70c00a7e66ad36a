"""Bulk load: the path of a first sync, and of any input much larger than the store.

The incremental path asks the store, batch after batch, which golden records own the batch's
identity and blocking keys, and reads those records back to score them: right for a small
change against a big store, but a first sync of 100,000 customers pays those lookups 100 times
against a store that only holds what the sync itself just wrote.

A bulk load reads the store's matching state of the entity once (:meth:`BatchMatcher.preload`:
identity keys, blocking keys, golden records' features, keep-apart decisions; nothing at all
for an empty store) and the stream's source records, then matches every record in memory,
in the order read, with the same scorer and the same rules as the incremental path. Records
are committed in large units (a checkpoint of the source, or ``UNIT`` records), so a crash
loses at most the uncommitted unit, which the next run reads again; the cursor moves only after
its unit is committed, as on the incremental path.

Chosen automatically for a stream the store has never seen, while the store holds fewer than
``PRELOAD_MAX`` golden records of its kind; ``synchub sync --bulk`` / ``--no-bulk`` force it.
A load that comes to hold more than ``HOLD_MAX`` golden records goes on incrementally after
its last committed unit.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import sqlalchemy as sa

from synchub import match
from synchub import store as st

#: Records committed at once by a bulk load (fewer when the source checkpoints sooner).
UNIT = 5_000
#: Largest store (golden records of the entity) a bulk load is chosen for on its own.
PRELOAD_MAX = 100_000
#: Golden records a bulk load holds in memory at most (about 3 KB each: features, blocking
#: and identity keys, the source index). Past it, the rest of the stream loads incrementally,
#: so a first sync of millions of customers stays within memory.
HOLD_MAX = 120_000


class SourceRef(NamedTuple):
    """What the hub holds of one source record (the columns :func:`store.lookup_source_records` reads)."""

    id: int
    source_id: str
    golden_id: str
    content_hash: str
    deleted: bool
    raw_hash: str | None


def wanted(conn: sa.Connection, connection: str, stream: str, kind: str) -> bool:
    """Whether a pull of this stream should load in bulk: the store never saw the stream, and
    holds few enough golden records of its kind to read them all into memory."""
    return (st.count_source_records(conn, connection, stream) == 0
            and st.count_golden(conn, kind, limit=PRELOAD_MAX + 1) <= PRELOAD_MAX)


class BulkState:
    """The in-memory side of one stream's bulk load, kept across its units."""

    def __init__(self, conn: sa.Connection, connection: str, stream: str, kind: str, identity_kinds: list[str],
                 score_cfg: Any, fuzzy: bool):
        self.connection, self.stream = connection, stream
        self.matcher = match.BatchMatcher(conn, kind, identity_kinds, score_cfg, fuzzy=fuzzy)
        self.matcher.preload()
        self.sources: dict[str, SourceRef] = {
            sid: SourceRef(r.id, r.source_id, r.golden_id, r.content_hash, r.deleted, r.raw_hash)
            for sid, r in st.all_source_records(conn, connection, stream).items()}
        #: Blocking-key block sizes for the stop-key check of :func:`store.replace_match_keys`.
        self.block_sizes = _BlockSizes(self.matcher)

    def held(self) -> int:
        """Golden records the matcher holds (the preloaded ones and those this load made)."""
        return len(self.matcher.views)

    def lookup(self, source_ids: Any) -> dict[str, SourceRef]:
        return {sid: self.sources[sid] for sid in source_ids if sid in self.sources}

    def refresh(self, conn: sa.Connection, source_ids: set[str]) -> None:
        """Read these source records again (after the store renamed or dropped some)."""
        found = st.lookup_source_records(conn, self.connection, self.stream, source_ids)
        for sid in source_ids:
            r = found.get(sid)
            if r is None:
                self.sources.pop(sid, None)
            else:
                self.sources[sid] = SourceRef(r.id, r.source_id, r.golden_id, r.content_hash, r.deleted, r.raw_hash)

    def raw_hashes(self, source_ids: Any) -> dict[str, str]:
        """:func:`store.lookup_raw_hashes` from memory."""
        return {sid: ref.raw_hash for sid in source_ids if (ref := self.sources.get(sid)) is not None and ref.raw_hash}

    def remember(self, rows: list[tuple[str, int, str, str, bool, str | None]]) -> None:
        """Source records just written: (source id, row id, golden id, content hash, deleted, raw hash)."""
        for sid, rid, golden, digest, deleted, raw in rows:
            self.sources[sid] = SourceRef(rid, sid, golden, digest, deleted, raw)

    def rehashed(self, raw_hashes: dict[str, str | None]) -> None:
        """Raw hashes just stored for unchanged records."""
        for sid, raw in raw_hashes.items():
            self.sources[sid] = self.sources[sid]._replace(raw_hash=raw)

    def written_keys(self, keys_by_golden: dict[str, list[tuple[str, str]]]) -> None:
        """Blocking keys just stored: the matcher's index holds every stored key, as the
        store's ``match_key`` table does for the incremental path."""
        index = self.matcher.block_owners
        for golden_id, keys in keys_by_golden.items():
            for k in keys:
                match.add_owner(index, match.block_id(k), golden_id)


class _BlockSizes:
    """What the store's stop-key check reads (``key in sizes``, ``sizes[key]``), answered from
    the preloaded matcher instead of a count per new key: its index holds every stored blocking
    key with at least the golden records stored under it (merged-away ones too, so an
    overestimate, which only costs a count). A key it does not hold has no rows; a stop key
    or a block too large to preload is not known, so the store counts it."""

    def __init__(self, matcher: match.BatchMatcher):
        self.matcher = matcher

    def __contains__(self, key: tuple[str, str]) -> bool:
        return match.block_id(key) not in self.matcher.stopped

    def __getitem__(self, key: tuple[str, str]) -> int:
        owners = self.matcher.block_owners.get(match.block_id(key))
        return 0 if owners is None else match.size(owners)
