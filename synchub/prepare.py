"""Prepare: one source record as the hub will store it (read → **prepare** → match → merge → write).

A record read from a connector is mapped to the canonical schema, its identity values
normalised (unusable values quarantined, not fatal), its identity keys computed and its
canonical content hashed. The hash decides later whether the record changed at all.

Preparing costs most of what an unchanged record costs (about 80 µs of mapping, validation and
normalisation), and a daily full export is mostly unchanged rows. So each stored record also
keeps the hash of the *raw* row it was prepared from, salted with a fingerprint of everything
that shapes preparation: the mapping, the stream's primary key, the phone region, the identity
keys, the hub's own code and the installed plugins. A row whose raw hash matches is unchanged
without being prepared. Anything that could make the same raw row prepare differently changes
the fingerprint, so after an upgrade or a mapping edit every row is prepared once again (and
found unchanged by its content hash, so nothing is rewritten but the raw hash).

Rows whose outcome depends on more than the row never skip: rows with aliases (they re-key
stored records), rows with quarantined values (each run logs those again), rows whose links
to other records did not resolve yet (a later run fills them in), and timeline-only streams.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from synchub import match, quarantine
from synchub.connector import Record, Stream
from synchub.errors import RecordError
from synchub.mapping import Mapping

#: on_reject(ref, source_id, field, reason, raw row)
RejectFn = Callable[[str | None, str | None, str | None, str, dict[str, Any]], None]


@dataclass
class Prepared:
    source_id: str
    ref: str | None
    data: dict[str, Any]
    hash: str
    observed_at: datetime
    keys: list[tuple[str, str]]
    deleted: bool = False
    interactions: list[dict[str, Any]] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    links: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Timeline-only streams (orders): the source id of the record the entries belong to.
    owner: str | None = None
    #: Values the hub could not use (or keeps unverified); None when every value was usable.
    quarantine: list[dict[str, Any]] | None = None
    #: Hash of the raw row this was prepared from (see the module doc); None: never skip it.
    raw_hash: str | None = None


def primary_key(data: dict[str, Any], fields: tuple[str, ...]) -> str:
    if not fields:
        raise RecordError("the stream has no primary key configured", field=None)
    parts = []
    for f in fields:
        v = data.get(f)
        if v is None or (isinstance(v, str) and not v.strip()):
            raise RecordError(f"primary key field {f!r} is empty", field=f)
        parts.append(str(v).strip())
    return "|".join(parts)


def content_hash(p: Prepared) -> str:
    """Hash of what the hub stores of a record: equal hashes, nothing to write."""
    digest = hashlib.sha1(json.dumps(p.data, sort_keys=True, ensure_ascii=False).encode(), usedforsecurity=False).hexdigest()
    if p.deleted:
        digest = "deleted:" + digest
    if p.interactions:
        digest = hashlib.sha1((digest + json.dumps(p.interactions, sort_keys=True)).encode(), usedforsecurity=False).hexdigest()
    if p.quarantine:
        # Only records with quarantined values hash them, so no other record's hash changes: a
        # different bad value (or a fixed one) is a change; the same bad value again is not.
        digest = hashlib.sha1((digest + json.dumps(p.quarantine, sort_keys=True, ensure_ascii=False)).encode(),
                              usedforsecurity=False).hexdigest()
    return digest


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """The hub's own code, every module of the package: a new version may prepare the same
    row differently."""
    h = hashlib.sha1(usedforsecurity=False)
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def plugins_fingerprint() -> list[str]:
    """Plugins registered now, with their distributions' versions: a plugin's transforms shape
    preparation too (their code is not read; a new plugin release changes its version)."""
    from synchub.plugins import pm

    versions = {id(plugin): f"{dist.project_name}=={dist.version}" for plugin, dist in pm.list_plugin_distinfo()}
    return sorted(f"{name}:{versions.get(id(plugin), '')}" for name, plugin in pm.list_name_plugin())


class Preparer:
    """Prepares the records of one stream pull."""

    def __init__(self, mapping: Mapping, stream: Stream, identity_kinds: list[str] | None, phone_region: str | None,
                 run_started: datetime):
        self.mapping = mapping
        self.stream = stream
        self.phone_region = phone_region
        self.run_started = run_started
        self.keyer = None if mapping.timeline_only or identity_kinds is None else match.IdentityKeys(identity_kinds, "", "")
        #: Raw rows are only skipped on entity streams (see the module doc).
        self.skips = self.keyer is not None
        salt = hashlib.sha1(json.dumps(
            [code_fingerprint(), plugins_fingerprint(), mapping.fingerprint, list(stream.primary_key), phone_region,
             sorted(identity_kinds or [])],
            default=str).encode(), usedforsecurity=False).hexdigest()
        #: The hash state after the salt; each row's hash continues a copy of it.
        self._salted = hashlib.sha1(salt.encode(), usedforsecurity=False)

    def source_id(self, item: Record) -> str | None:
        try:
            return primary_key(item.data, self.stream.primary_key)
        except RecordError:
            return None

    def raw_hash(self, item: Record) -> str | None:
        """Hash of the raw row (None: a row that must be prepared every time). The row is
        written with ``repr`` in the order its fields came: a few µs instead of sorted JSON,
        and another order (a reordered CSV header) only prepares the row once more. A value
        whose ``repr`` is not stable (an object shown with its address) never matches, so
        such a row is prepared every time, never wrongly skipped."""
        if not self.skips or item.aliases:
            return None
        h = self._salted.copy()
        h.update(f"{int(item.deleted)}{item.data!r}".encode())
        return h.hexdigest()

    def prepare(self, item: Record, on_reject: RejectFn, raw_hash: str | None = None) -> Prepared | None:
        mapping = self.mapping
        source_id = None
        problems: list[dict[str, Any]] = []
        try:
            source_id = primary_key(item.data, self.stream.primary_key)
            observed = mapping.observed(item.data, problems) or item.observed_at or self.run_started
            if self.keyer is None:  # a timeline-only stream: entries, no party
                entries = [] if item.deleted else mapping.interactions_of(item.data, observed, problems)
                _name_sources(problems, mapping)
                prepared = Prepared(source_id, item.ref, {}, "", observed, [], item.deleted, entries,
                                    owner=mapping.owner_of(item.data), quarantine=problems or None)
                prepared.hash = content_hash(prepared)
                return prepared
            data = mapping.to_canonical(item.data, problems)
            data = match.normalize_record(data, self.phone_region, problems)
            interactions = mapping.interactions_of(item.data, observed, problems) if mapping.interactions else []
            if problems and not item.deleted and not quarantine.identifiable(mapping.entity, data):
                lost = "; ".join(f"{e['field']}: {e['reason']}" for e in problems if e["status"] == quarantine.QUARANTINED)
                raise RecordError(f"nothing usable is left to identify the record ({lost})", field="identity")
        except RecordError as exc:
            on_reject(item.ref, source_id, exc.field, str(exc), item.data)
            return None
        _name_sources(problems, mapping)
        prepared = Prepared(source_id, item.ref, data, "", observed, self.keyer.keys(data, source_id), item.deleted,
                            interactions, [str(a) for a in item.aliases if str(a) != source_id], dict(item.links),
                            quarantine=problems or None, raw_hash=None if problems else raw_hash)
        prepared.hash = content_hash(prepared)
        return prepared


def _name_sources(problems: list[dict[str, Any]], mapping: Mapping) -> None:
    """Give each quarantined value the source field it came from, where the mapping names one."""
    for e in problems:
        if "source" not in e and (src := mapping.source_of(e["field"])):
            e["source"] = src
