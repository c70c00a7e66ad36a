"""Survivorship: derive a golden record from its source records, field unit by field unit.

A golden record is never edited in place: it is *derived* from the source records linked to it,
so a merge can be undone and every golden value can say where it came from and why it won.

Each field unit (see :func:`synchub.schema.field_units`) has a rule, configured per entity::

    merge:
      person:
        source_priority: [shop, crm, newsletter]
        default: {rule: most_recent}
        fields:
          first_name: {rule: source_priority, fallback: most_recent}
          birth_date: {rule: source_priority, review: true}

A rule gets the candidates (one per source record that has a value) and returns the winner, or
None when it cannot decide; then the ``fallback`` rule decides, and ``most_recent`` after that.
Built-in rules are registered through the ``register_merge_rules`` hook like a plugin's.

Consent is protected whatever the config says: an opt-out (unsubscribed, cleaned) wins over any
opt-in from another source unless the opt-in is newer *and* came from the person (double opt-in
or form). Sources that disagree on consent produce a conflict for review.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

from synchub.config import EntityMergeConfig, FieldRule
from synchub.plugins import get_merge_rules, hookimpl
from synchub.schema import LIFECYCLE_ORDER, field_units, join_units


@dataclass(frozen=True)
class Candidate:
    """One source record's value for one field unit."""

    value: Any
    connection: str
    stream: str
    source_id: str
    observed_at: datetime

    def describe(self) -> dict[str, Any]:
        return {
            "value": self.value, "connection": self.connection, "stream": self.stream,
            "source_id": self.source_id, "observed_at": self.observed_at.isoformat(),
        }


@dataclass
class Decision:
    value: Any
    winner: Candidate | None
    rule: str
    losing: list[Candidate] = field(default_factory=list)
    contributors: list[Candidate] = field(default_factory=list)  # for union


@dataclass
class ConflictNote:
    field: str
    rule: str
    candidates: list[Candidate]
    applied: Any

    def fingerprint(self, golden_id: str) -> str:
        parts = sorted(json.dumps([c.connection, c.stream, c.source_id, c.value], sort_keys=True, default=str) for c in self.candidates)
        raw = json.dumps([golden_id, self.field, parts], default=str)
        return hashlib.sha256(raw.encode()).hexdigest()


@dataclass
class Derived:
    data: dict[str, Any]
    #: Per field unit: where its value came from and why it won. ``"*"`` stands for every unit
    #: without an entry of its own (a golden record fed by one source record).
    provenance: dict[str, Any]
    conflicts: list[ConflictNote]


Rule = Callable[..., Candidate | None]


def _key(value: Any) -> str:
    """A hashable identity for comparing candidate values (cheap for the common plain strings)."""
    if isinstance(value, str):
        return "s" + value
    return "j" + json.dumps(value, sort_keys=True, default=str)


def _recency(c: Candidate) -> tuple[datetime, str, str]:
    return (c.observed_at, c.connection, c.source_id)


def most_recent(candidates: list[Candidate], **_: Any) -> Candidate | None:
    """The value observed last (ties broken by connection and source id, so it is deterministic)."""
    return max(candidates, key=_recency) if candidates else None


def source_priority(candidates: list[Candidate], *, priority: list[str] | None = None, **_: Any) -> Candidate | None:
    """The value from the connection listed first in ``source_priority``; None if none is listed."""
    ranked = [c for c in candidates if priority and c.connection in priority]
    if not ranked:
        return None
    best = min(priority.index(c.connection) for c in ranked)  # type: ignore[union-attr]
    top = [c for c in ranked if priority.index(c.connection) == best]  # type: ignore[union-attr]
    return most_recent(top)


def max_by_order(candidates: list[Candidate], *, order: list[str] | None = None, **_: Any) -> Candidate | None:
    """The value furthest along ``order`` (lifecycle stage only moves forward)."""
    order = order or LIFECYCLE_ORDER
    known = [c for c in candidates if c.value in order]
    if not known:
        return None
    return max(known, key=lambda c: (order.index(c.value), _recency(c)))


OPT_OUT = {"unsubscribed", "cleaned"}
FROM_PERSON = {"double_opt_in", "form"}


def _consent_time(c: Candidate) -> datetime:
    at = c.value.get("at") if isinstance(c.value, dict) else None
    if isinstance(at, str):
        try:
            parsed = datetime.fromisoformat(at)
        except ValueError:
            parsed = None
        if parsed is not None:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
        try:
            d = date.fromisoformat(at)
            return datetime(d.year, d.month, d.day, tzinfo=timezone.utc)
        except ValueError:
            pass
    return c.observed_at


def consent(candidates: list[Candidate], **_: Any) -> Candidate | None:
    """Protected consent rule: opt-outs win unless a newer opt-in came from the person."""
    if not candidates:
        return None
    status = lambda c: c.value.get("status") if isinstance(c.value, dict) else None  # noqa: E731
    outs = [c for c in candidates if status(c) in OPT_OUT]
    if outs:
        latest_out = max(outs, key=_consent_time)
        t_out = _consent_time(latest_out)
        renewals = [
            c for c in candidates
            if status(c) in ("subscribed", "pending")
            and _consent_time(c) > t_out
            and (c.value.get("method") in FROM_PERSON)
        ]
        if renewals:
            return max(renewals, key=_consent_time)
        return latest_out
    documented = [c for c in candidates if status(c) != "never"]
    return max(documented or candidates, key=lambda c: (_consent_time(c), c.connection, c.source_id))


def union(candidates: list[Candidate], **_: Any) -> Candidate | None:  # pragma: no cover - handled inline
    """Keep every value (emails, phones, tags); the primary one comes from the most recent source."""
    return most_recent(candidates)


def _filled(value: Any) -> int:
    if isinstance(value, dict):
        return sum(_filled(v) for v in value.values())
    if isinstance(value, list):
        return len([v for v in value if v not in (None, "")])
    return 0 if value in (None, "") else 1


def most_complete(candidates: list[Candidate], **_: Any) -> Candidate | None:
    """The value with the most filled parts (an address with street, postcode and city beats a
    city alone); None when the most complete values disagree, so the fallback decides."""
    if not candidates:
        return None
    best = max(_filled(c.value) for c in candidates)
    top = [c for c in candidates if _filled(c.value) == best]
    return top[0] if len({_key(c.value) for c in top}) == 1 else None


def most_frequent(candidates: list[Candidate], **_: Any) -> Candidate | None:
    """The value most sources agree on; None on a tie, so the fallback decides."""
    counts: dict[str, list[Candidate]] = {}
    for c in candidates:
        counts.setdefault(_key(c.value), []).append(c)
    ranked = sorted(counts.values(), key=len, reverse=True)
    if not ranked or (len(ranked) > 1 and len(ranked[0]) == len(ranked[1])):
        return None
    return most_recent(ranked[0])


def longest(candidates: list[Candidate], **_: Any) -> Candidate | None:
    """The longest text (``Dr. Anna-Lena`` over ``A.``); None on a tie between different values."""
    if not candidates:
        return None
    size = lambda c: len(str(c.value))  # noqa: E731
    best = max(size(c) for c in candidates)
    top = [c for c in candidates if size(c) == best]
    return top[0] if len({_key(c.value) for c in top}) == 1 else None


BUILTIN_RULES: dict[str, Rule] = {
    "most_recent": most_recent,
    "source_priority": source_priority,
    "max_by_order": max_by_order,
    "consent": consent,
    "union": union,
    "most_complete": most_complete,
    "most_frequent": most_frequent,
    "longest": longest,
}


@hookimpl
def register_merge_rules() -> dict[str, Rule]:
    return dict(BUILTIN_RULES)


_COMMON_DEFAULTS: dict[str, FieldRule] = {
    "emails": FieldRule(rule="union"),
    "phones": FieldRule(rule="union"),
    "tags": FieldRule(rule="union"),
    "lifecycle_stage": FieldRule(rule="max_by_order"),
    "address": FieldRule(rule="most_recent"),
}
#: Defaults per entity, used where the config names no rule for a field. A person moves, so the
#: newest address wins; a company's legal name is protected: sources that disagree go to review.
#: Where a default cannot decide, the configured source priority does, then recency.
DEFAULT_RULES: dict[str, dict[str, FieldRule]] = {
    "person": {
        **_COMMON_DEFAULTS,
        "birth_date": FieldRule(rule="most_frequent", fallback=None),
        "first_name": FieldRule(rule="most_frequent", fallback=None),
        "last_name": FieldRule(rule="most_recent"),
    },
    "company": {
        **_COMMON_DEFAULTS,
        "name": FieldRule(rule="most_frequent", fallback="longest", review=True),
        "domain": FieldRule(rule="most_frequent", fallback=None),
        "vat_id": FieldRule(rule="most_frequent", fallback=None, review=True),
        "address": FieldRule(rule="most_complete", fallback=None),
    },
}
CONSENT_RULE = FieldRule(rule="consent", fallback="most_recent")


def provenance_of(provenance: dict[str, Any], unit: str) -> dict[str, Any]:
    """The provenance entry of one field unit (falling back to the record-wide ``*`` entry)."""
    return provenance.get(unit) or provenance.get("*") or {}


def rule_for(unit: str, cfg: EntityMergeConfig, kind: str = "person") -> FieldRule:
    """The rule for a field unit: config, else the entity's default, else the config's default.
    Consent always uses the protected consent rule (config may only ask for review)."""
    if unit.startswith("consent."):
        configured = cfg.fields.get(unit)
        return CONSENT_RULE.model_copy(update={"review": bool(configured and configured.review)})
    if unit in cfg.fields:
        return cfg.fields[unit]
    return DEFAULT_RULES.get(kind, {}).get(unit, cfg.default)


class Merger:
    """Applies an entity's merge config. One per engine run (rules are looked up once)."""

    def __init__(self, cfg: EntityMergeConfig):
        self.cfg = cfg
        self.rules = get_merge_rules()

    def derive(self, kind: str, sources: list[dict[str, Any]], overrides: dict[str, dict[str, Any]] | None = None) -> Derived:
        """Derive a golden record from source rows (dicts with data, connection, stream,
        source_id, observed_at). Deleted sources contribute only their opt-outs. ``overrides`` are values an
        admin chose for a field (conflict resolution): they win, with rule ``admin``."""
        per_unit: dict[str, list[Candidate]] = {}
        for src in sources:
            deleted = bool(src.get("deleted"))
            for unit, value in field_units(src["data"]).items():
                if value is None or value == [] or value == {}:
                    continue
                if deleted and not (unit.startswith("consent.") and isinstance(value, dict) and value.get("status") in OPT_OUT):
                    continue  # a deleted source keeps only its opt-outs: they outlive the record
                per_unit.setdefault(unit, []).append(
                    Candidate(value, src["connection"], src["stream"], src["source_id"], src["observed_at"])
                )
        units: dict[str, Any] = {}
        provenance: dict[str, Any] = {}
        conflicts: list[ConflictNote] = []
        iso: dict[int, str] = {}  # observed_at.isoformat() once per source, not once per field
        for unit in sorted(per_unit):
            cands = per_unit[unit]
            if len(cands) == 1:  # one source knows this field: nothing to decide
                c = cands[0]
                units[unit] = c.value
                provenance[unit] = {
                    "connection": c.connection, "stream": c.stream, "source_id": c.source_id,
                    "observed_at": iso.get(id(c.observed_at)) or iso.setdefault(id(c.observed_at), c.observed_at.isoformat()),
                    "rule": "only source",
                }
                continue
            frule = rule_for(unit, self.cfg, kind)
            decision = self.decide(unit, cands, frule)
            units[unit] = decision.value
            provenance[unit] = _provenance(decision)
            if frule.review or unit.startswith("consent."):
                distinct = {_key(c.value) for c in cands}
                if len(distinct) > 1 and (frule.review or _consent_disagrees(cands)):
                    conflicts.append(ConflictNote(unit, decision.rule, cands, decision.value))
        if len({(p["connection"], p["stream"], p["source_id"]) for p in provenance.values()}) == 1 and all(
            p["rule"] == "only source" for p in provenance.values()
        ):
            # Every field from one source record: say it once (``*``) instead of once per field.
            provenance = {"*": next(iter(provenance.values()))}
        for unit, ov in (overrides or {}).items():
            units[unit] = ov["value"]
            provenance[unit] = {
                "connection": "admin", "stream": "", "source_id": ov.get("by") or "", "rule": "admin",
                "observed_at": ov["at"].isoformat() if hasattr(ov.get("at"), "isoformat") else str(ov.get("at")),
                "losing": [c.describe() for c in per_unit.get(unit, []) if _key(c.value) != _key(ov["value"])],
            }
            conflicts = [c for c in conflicts if c.field != unit]
        return Derived(join_units(kind, units), provenance, conflicts)

    def decide(self, unit: str, cands: list[Candidate], frule: FieldRule) -> Decision:
        if frule.rule == "union":
            return _union(cands)
        distinct = {_key(c.value) for c in cands}
        if len(distinct) == 1:
            winner = most_recent(cands)
            assert winner is not None
            return Decision(winner.value, winner, "agreed")
        # The configured source priority breaks ties before recency does.
        chain = (frule.rule, frule.fallback, "source_priority" if self.cfg.source_priority else None, "most_recent")
        for name in chain:
            if not name:
                continue
            fn = self.rules[name]
            winner = fn(cands, priority=self.cfg.source_priority, **frule.args)
            if winner is not None:
                losing = [c for c in cands if _key(c.value) != _key(winner.value)]
                return Decision(winner.value, winner, name, losing)
        raise AssertionError("most_recent always decides")  # pragma: no cover


def _union(cands: list[Candidate]) -> Decision:
    # The primary value (first) comes from the most recent source, then the rest in order seen.
    ordered = sorted(cands, key=_recency, reverse=True)
    values: dict[str, Any] = {}
    for c in ordered:
        for v in c.value if isinstance(c.value, list) else [c.value]:
            values.setdefault(_key(v), v)
    return Decision(list(values.values()), ordered[0], "union", contributors=ordered)


def _consent_disagrees(cands: list[Candidate]) -> bool:
    statuses = {c.value.get("status") for c in cands if isinstance(c.value, dict)}
    return bool(statuses & OPT_OUT) and bool(statuses & {"subscribed", "pending"})


def _provenance(d: Decision) -> dict[str, Any]:
    w = d.winner
    assert w is not None
    p: dict[str, Any] = {
        "connection": w.connection, "stream": w.stream, "source_id": w.source_id,
        "observed_at": w.observed_at.isoformat(), "rule": d.rule,
    }
    if d.losing:
        p["losing"] = [c.describe() for c in d.losing]
    if d.contributors and len(d.contributors) > 1:
        p["sources"] = [
            {"connection": c.connection, "source_id": c.source_id, "observed_at": c.observed_at.isoformat()}
            for c in d.contributors
        ]
    return p
