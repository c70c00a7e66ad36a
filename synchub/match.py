"""Matching: which golden record does a source record belong to?

This module holds the exact-identity stage: every source record yields identity keys (its
normalised emails, its phones, a company's domain), stored indexed in ``identity_key``; a record
whose key is already owned by a golden record joins it, and a record that carries keys of
several golden records merges them. Landlines are shared by whole households, so by default only
mobile numbers are identity keys for persons (``phone_mobile``).

The seam for fuzzy matching is :class:`Resolver`: it receives the candidate golden ids found by
key lookup and decides the target; a scoring stage adds candidates and decisions there.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, KeysView
from dataclasses import dataclass, field
from typing import Any

from synchub import quarantine
from synchub.errors import RecordError
from synchub.normalize import (
    NormalizationError,
    normalize_email,
    normalize_phone,
    normalize_phone_lenient,
    normalize_postal_code,
    phone_type,
)

Key = tuple[str, str]
#: Golden ids under one key: most keys have one owner, held as the bare id (a set costs 216
#: bytes, and a bulk load holds about ten keys per record).
Owners = str | set[str]
#: Fuzzy candidates scored per record at most (those sharing the most blocking keys).
MAX_CANDIDATES = 8


def each(owners: Owners | tuple[()]) -> Iterable[str]:
    """The golden ids of an :data:`Owners` value."""
    return (owners,) if isinstance(owners, str) else owners


def size(owners: Owners) -> int:
    return 1 if isinstance(owners, str) else len(owners)


def block_id(key: Key) -> int:
    """How the matcher's index holds a blocking key: as its hash, 32 bytes instead of a tuple
    of two strings (about 180 bytes with the value), for the ten keys per record a bulk load
    keeps. Two keys with one hash (about one pair in 10^19) only make a candidate more, which
    the scorer then judges like any other."""
    return hash(key)


def add_owner(index: dict[Any, Owners], key: Hashable, golden_id: str) -> None:
    held = index.get(key)
    if held is None:
        index[key] = golden_id
    elif isinstance(held, str):
        if held != golden_id:
            index[key] = {held, golden_id}
    else:
        held.add(golden_id)


def normalize_record(data: dict[str, Any], region: str | None,
                     problems: list[quarantine.Entry] | None = None) -> dict[str, Any]:
    """Normalise identity fields in place of a mapped record: emails lower-case and valid, phones
    E.164 (national numbers read in ``region`` unless the address says otherwise), postal codes.

    Without ``problems``, raises :class:`RecordError` naming the field when a value is not usable.
    With it, each unusable value is recorded there and left out (the record keeps the rest), and
    a phone number that is possible for its country but in no known range is kept *unverified*
    (recorded too, with ``status: unverified``)."""
    emails = data.get("emails")
    if emails:
        out = []
        for e in emails:
            try:
                n = normalize_email(e)
            except NormalizationError as exc:
                if problems is None:
                    raise RecordError(f"emails: {exc}", field="emails") from None
                problems.append(quarantine.entry("emails", e, str(exc), rule="email"))
                continue
            if n and n not in out:
                out.append(n)
        data["emails"] = out
    address = data.get("address") or {}
    country = address.get("country")
    phones = data.get("phones")
    if phones:
        out = []
        for p in phones:
            try:
                if problems is None:
                    n, verified = normalize_phone(p, country or region), True
                else:
                    n, verified = normalize_phone_lenient(p, country or region)
            except NormalizationError as exc:
                if problems is None:
                    raise RecordError(f"phones: {exc}", field="phones") from None
                problems.append(quarantine.entry("phones", p, str(exc), rule="phone"))
                continue
            if not verified and problems is not None:
                problems.append(quarantine.entry(
                    "phones", p, "possible number, but in no range known for its country: kept unverified",
                    rule="phone_valid", status=quarantine.UNVERIFIED, kept=n))
            if n and n not in out:
                out.append(n)
        data["phones"] = out
    if address.get("postal_code"):
        try:
            address["postal_code"] = normalize_postal_code(address["postal_code"], country)
        except NormalizationError as exc:
            if problems is None:
                raise RecordError(f"address.postal_code: {exc}", field="address.postal_code") from None
            problems.append(quarantine.entry("address.postal_code", address.pop("postal_code"), str(exc),
                                             rule="postal_code"))
    for key in ("emails", "phones"):
        if key in data and not data[key]:
            del data[key]
    return data


class IdentityKeys:
    """Computes the exact identity keys of a canonical record, per the entity's match config."""

    def __init__(self, kinds: Iterable[str], connection: str, stream: str):
        self.kinds = set(kinds)

    def keys(self, data: dict[str, Any], source_id: str) -> list[Key]:
        keys: list[Key] = []
        if "email" in self.kinds:
            keys.extend(("email", e) for e in data.get("emails") or ())
        if "phone" in self.kinds:
            # Never a number in no known range (kept unverified): a made-up number shared by
            # many rows would merge them all.
            keys.extend(("phone", p) for p in data.get("phones") or () if phone_type(p) != "unverified")
        elif "phone_mobile" in self.kinds:
            keys.extend(("phone", p) for p in data.get("phones") or () if phone_type(p) == "mobile")
        if "domain" in self.kinds and data.get("domain"):
            keys.append(("domain", str(data["domain"]).lower()))
        return keys


class Resolver:
    """Assigns records of one batch to golden records, merging those that share a key.

    ``owners`` maps each key to the golden ids that own it in the store; the resolver updates
    it as records of the batch claim keys, so duplicates inside one batch meet too.
    """

    def __init__(self, owners: dict[Key, Owners]):
        self.owners = owners
        self.created: set[str] = set()
        self._parent: dict[str, str] = {}

    def find(self, g: str) -> str:
        while g in self._parent:
            g = self._parent[g]
        return g

    def losers(self) -> KeysView[str]:
        """The golden ids merged away so far (:attr:`merges` gives their survivors)."""
        return self._parent.keys()

    @property
    def merges(self) -> dict[str, str]:
        """Every golden id that was merged away, with its final survivor."""
        return {loser: self.find(loser) for loser in self._parent}

    def assign(self, keys: list[Key], current: str | None, new_id: Callable[[], str]) -> tuple[str, str]:
        """Return (golden id, outcome): outcome is ``created``, ``matched`` or ``kept``."""
        found = {self.find(g) for k in keys for g in each(self.owners.get(k, ()))}
        if current is not None:
            found.add(self.find(current))
        if not found:
            target = new_id()
            self.created.add(target)
            outcome = "created"
        else:
            # Keep the record's own golden record if it has one, else the oldest known one
            # (store before batch-new; ids sort for determinism).
            if current is not None:
                target = self.find(current)
            else:
                target = min(found, key=lambda g: (g in self.created, g))
            for other in found - {target}:
                self._parent[other] = target
            outcome = "kept" if current is not None and len(found) == 1 else "matched"
        for k in keys:
            self.owners[k] = target
        return target, outcome


# ----- fuzzy stage ---------------------------------------------------------------------------------


@dataclass
class PossibleDuplicate:
    """Two golden records that may be the same customer: for an admin to decide."""

    golden_id: str
    other_id: str
    score: float
    reasons: list[str]


@dataclass
class Assignment:
    target: str
    outcome: str  # created | matched | kept
    joined: set[str] = field(default_factory=set)
    #: Why the record joined ``target`` (when matched) and each of ``joined``: by golden id,
    #: the score and its per-field reasons, and the identity keys shared.
    evidence: dict[str, dict[str, Any]] = field(default_factory=dict)


class BatchMatcher:
    """Assigns the changed records of one batch to golden records.

    Candidates come from two indexed lookups per batch: exact identity keys (``identity_key``)
    and blocking keys (``match_key``; a key shared by more than ``max_block`` golden records is
    ignored, so a common name never explodes into quadratic work). Every candidate is scored
    against the record (:mod:`synchub.similarity`): ``match`` joins it, ``possible`` is reported
    for review, ``distinct`` stays apart — even for an exact key, when the hard rules say two
    different people share it (a household's email, a twin's phone). Admin decisions to keep two
    records apart are respected. Records of the same batch are indexed as they are assigned, so
    duplicates inside one file meet too.
    """

    def __init__(self, conn: Any, kind: str, identity_kinds: Iterable[str], score_cfg: Any = None, *, fuzzy: bool = True):
        from synchub import similarity

        self.conn = conn
        self.kind = kind
        self.fuzzy = fuzzy
        self.sim = similarity
        self.score_cfg = score_cfg or similarity.ScoreConfig.defaults_for(kind)
        self.keys = IdentityKeys(identity_kinds, "", "")
        self.resolver: Resolver | None = None
        self.views: dict[str, list[Any]] = {}  # golden id -> features of what we know of it
        self.block_owners: dict[int, Owners] = {}  # by block_id(key)
        self.block_sizes: dict[Key, int] = {}  # stored block sizes before this batch
        self.apart: set[tuple[str, str]] = set()
        self.possible: list[PossibleDuplicate] = []
        self._bkeys: list[list[Key]] = []
        #: Preloaded (a bulk load): everything the store knows is in memory, batches add to it,
        #: and the store is never asked again. Blocks past ``MAX_BLOCK`` are ignored as the
        #: store's stop keys would be.
        self.preloaded = False
        self.stopped: set[int] = set()  # block ids

    def preload(self) -> None:
        """Read the store's whole matching state of this kind once (identity keys, blocking keys,
        golden records' features, keep-apart decisions): a bulk load then matches in memory.
        Costs in proportion to the store, so it is for stores small against their input."""
        from synchub import store as st

        self.resolver = Resolver(st.all_keys(self.conn, self.kind))
        if self.fuzzy:
            self.block_owners = st.all_match_keys(self.conn, self.kind, key=block_id)
            self.stopped = {block_id(k) for k in st.all_stop_keys(self.conn, self.kind)}
            # A block past the limit (only stop keys should be) is ignored like one.
            for k in [k for k, gs in self.block_owners.items() if size(gs) > self.sim.MAX_BLOCK]:
                del self.block_owners[k]
                self.stopped.add(k)
        for gid, data in st.iter_active_golden_data(self.conn, self.kind):
            self.views[gid] = [self.sim.features(data, self.kind)]
        self.apart = st.load_keep_apart(self.conn, None)
        self.preloaded = True

    def absorb(self, loser: str, survivor: str) -> None:
        """The store merged golden record ``loser`` into ``survivor`` (outside the matcher)."""
        assert self.resolver is not None
        if loser != survivor:
            self.resolver._parent[loser] = survivor
            self.views.setdefault(survivor, []).extend(self.views.pop(loser, []))

    def batch_done(self) -> None:
        """The batch is written: its new golden records are stored ones from now on."""
        assert self.resolver is not None
        self.resolver.created.clear()
        self.possible = []

    def prepare(self, records: list[tuple[list[Key], dict[str, Any], str | None]]) -> list[Any]:
        """Look up every candidate of the batch at once; returns the records' features."""
        from synchub import store as st

        if self.preloaded:
            return [self.sim.features(data, self.kind) if (self.fuzzy or keys) else None for keys, data, _c in records]
        exact = {k for keys, _d, _c in records for k in keys}
        owners = st.lookup_keys(self.conn, self.kind, exact)
        self.resolver = Resolver(owners)
        # Without fuzzy matching, features are only needed to check exact-key candidates.
        feats = [self.sim.features(data, self.kind) if (self.fuzzy or keys) else None for keys, data, _c in records]
        candidate_ids = {g for gs in owners.values() for g in each(gs)} | {c for _k, _d, c in records if c}
        if self.fuzzy:
            self._bkeys = [self.sim.blocking_keys(f) for f in feats]
            self.block_owners = {block_id(k): gs for k, gs in st.lookup_match_keys(
                self.conn, self.kind, {k for keys in self._bkeys for k in keys}, max_block=self.sim.MAX_BLOCK,
                sizes=self.block_sizes).items()}
            # Only the best-ranked candidates of each record are scored, so only those are loaded.
            for keys in self._bkeys:
                candidate_ids.update(self._ranked(keys, lambda g: g))
        # A candidate is compared with each of its records, not with the record derived from
        # them: as a bulk load does, and as earlier records of this batch are. So what a record
        # is compared with does not depend on where batches end (FEBRL dataset3: 42 of 2,420
        # customers formed differently between the two paths, 7 between batches of 250 and
        # 1,000; now 3 and none).
        for gid, datas in st.load_member_data(self.conn, candidate_ids).items():
            self.views.setdefault(gid, []).extend(self.sim.features(d, self.kind) for d in datas)
        self.apart = st.load_keep_apart(self.conn, candidate_ids)
        return feats

    def _ranked(self, bkeys: list[Key], find: Callable[[str], str]) -> list[str]:
        """Candidates sharing the most blocking keys with a record, best first, at most
        ``MAX_CANDIDATES``: a true duplicate shares several keys, so scoring only these keeps
        the work per record small however crowded the blocks are."""
        shared: dict[str, int] = {}
        for k in bkeys:
            h = block_id(k)
            owners = self.block_owners.get(h)
            if owners is None or (self.preloaded and (h in self.stopped or size(owners) > self.sim.MAX_BLOCK)):
                continue  # as a stop key in the store
            for g in each(owners):
                g = find(g)
                shared[g] = shared.get(g, 0) + 1
        return sorted(shared, key=lambda g: (-shared[g], g))[:MAX_CANDIDATES]

    def _kept_apart(self, a: str, b: str) -> bool:
        return (min(a, b), max(a, b)) in self.apart

    def _best(self, feat: Any, gid: str) -> Any:
        """The record against each of a customer's records: the best decision, unless the hard
        rules veto one of them. A customer is joined only by a record that may be the same
        person as every one of its records: one with no first name must not carry Carly's
        record into John's customer because it matches each of them on its own. A vetoed
        customer that another of its records matches is a review item, never a merge."""
        best = vetoed = None
        if feat is None:
            return None
        for view in self.views.get(gid, ()):
            d = self.sim.classify(feat, view, self.score_cfg)
            if d.veto is not None:
                if vetoed is None or d.score > vetoed.score:
                    vetoed = d
            elif best is None or d.score > best.score:
                best = d
        if vetoed is None:
            return best
        if best is not None and best.outcome != "distinct":
            return self.sim.Decision("possible", best.score, [
                f"{vetoed.reasons[0]} (with another record of this customer)", *best.reasons], vetoed.veto)
        return vetoed

    def _clash(self, a: str, b: str) -> bool:
        """Whether the hard rules veto a record of customer ``a`` against one of ``b``."""
        return any(self.sim.vetoed(fa, fb, self.score_cfg)
                   for fa in self.views.get(a, ()) for fb in self.views.get(b, ()))

    def assign(self, keys: list[Key], feat: Any, current: str | None, new_id: Callable[[], str]) -> Assignment:
        assert self.resolver is not None
        r = self.resolver
        shares: dict[str, set[str]] = {}  # golden id -> identity key types it shares with the record
        for k in keys:
            for g in each(r.owners.get(k, ())):
                shares.setdefault(r.find(g), set()).add(k[0])
        found_exact = set(shares)
        found_fuzzy: set[str] = set()
        bkeys = self.sim.blocking_keys(feat) if self.fuzzy else []
        if bkeys:
            found_fuzzy = set(self._ranked(bkeys, r.find))
        cur = r.find(current) if current else None
        join: dict[str, float] = {}
        seen: dict[str, Any] = {}
        for gid in (found_exact | found_fuzzy) - {cur}:
            if gid not in self.views:  # nothing known to compare (should not happen): trust exact keys
                if gid in found_exact:
                    join[gid] = 1.0
                continue
            d = self._best(feat, gid)
            if d is None:
                continue
            seen[gid] = d
            if cur is not None and self._kept_apart(cur, gid):
                continue  # an admin decided these are different customers
            if d.outcome == "match" or (gid in found_exact and d.outcome == "possible" and d.veto is None):
                join[gid] = d.score
            elif d.outcome == "possible" or gid in found_exact:
                self.possible.append(PossibleDuplicate("", gid, d.score, list(d.reasons)))
        # The record's own golden record stays; of the others, the best one leads.
        ordered = sorted(join, key=lambda g: (-join[g], g in r.created, g))
        if cur is not None:
            target, outcome = cur, "kept"
        elif ordered:
            target, outcome = ordered.pop(0), "matched"
        else:
            target, outcome = new_id(), "created"
            r.created.add(target)
        joined = set()
        for gid in ordered if cur is None else list(join):
            if gid == target or self._kept_apart(target, gid) or any(self._kept_apart(j, gid) for j in joined):
                continue  # an admin decided these are different customers
            if self._clash(target, gid):
                # The record matches both customers, but two of their records are two people
                # by the hard rules (twins bridged by a record without a first name).
                d = seen.get(gid)
                self.possible.append(PossibleDuplicate("", gid, join[gid], [self.sim.CLASH_REASON, *(d.reasons if d else [])]))
                continue
            r._parent[gid] = target
            joined.add(gid)
            self.views.setdefault(target, []).extend(self.views.pop(gid, []))
        if joined and outcome == "kept":
            outcome = "matched"
        evidence = {g: _evidence(seen.get(g), shares.get(g))
                    for g in ([target] if outcome == "matched" and cur is None else []) + sorted(joined)}
        for p in self.possible:
            if p.golden_id == "":
                p.golden_id = target
        for k in keys:
            r.owners[k] = target
        if feat is not None:
            self.views.setdefault(target, []).append(feat)
        for k in bkeys:
            add_owner(self.block_owners, block_id(k), target)
        return Assignment(target, outcome, joined, evidence)


def _evidence(decision: Any, shared: set[str] | None) -> dict[str, Any]:
    """What made a record join a golden record: the identity key types they share, and the
    scorer's decision with its reasons (none: an exact key with nothing to compare)."""
    out: dict[str, Any] = {"identity_keys": sorted(shared or ()), "rule": "identity key" if shared else "fuzzy match"}
    if decision is not None:
        out.update(score=round(float(decision.score), 2), outcome=decision.outcome, reasons=list(decision.reasons))
    return out
