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

from collections.abc import Callable, Iterable
from typing import Any

from synchub.normalize import (
    NormalizationError,
    normalize_email,
    normalize_phone,
    normalize_postal_code,
    phone_type,
)

from synchub.errors import RecordError

Key = tuple[str, str]


def normalize_record(data: dict[str, Any], region: str | None) -> dict[str, Any]:
    """Normalise identity fields in place of a mapped record: emails lower-case and valid, phones
    E.164 (national numbers read in ``region`` unless the address says otherwise), postal codes.
    Raises :class:`RecordError` naming the field when a value is not usable."""
    emails = data.get("emails")
    if emails:
        out = []
        for e in emails:
            try:
                n = normalize_email(e)
            except NormalizationError as exc:
                raise RecordError(f"emails: {exc}", field="emails") from None
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
                n = normalize_phone(p, country or region)
            except NormalizationError as exc:
                raise RecordError(f"phones: {exc}", field="phones") from None
            if n and n not in out:
                out.append(n)
        data["phones"] = out
    if address.get("postal_code"):
        try:
            address["postal_code"] = normalize_postal_code(address["postal_code"], country)
        except NormalizationError as exc:
            raise RecordError(f"address.postal_code: {exc}", field="address.postal_code") from None
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
            keys.extend(("phone", p) for p in data.get("phones") or ())
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

    def __init__(self, owners: dict[Key, set[str]]):
        self.owners = owners
        self.known: set[str] = {g for gs in owners.values() for g in gs}
        self.created: set[str] = set()
        self._parent: dict[str, str] = {}

    def find(self, g: str) -> str:
        while g in self._parent:
            g = self._parent[g]
        return g

    @property
    def merges(self) -> dict[str, str]:
        """Every golden id that was merged away, with its final survivor."""
        return {loser: self.find(loser) for loser in self._parent}

    def assign(self, keys: list[Key], current: str | None, new_id: Callable[[], str]) -> tuple[str, str]:
        """Return (golden id, outcome): outcome is ``created``, ``matched`` or ``kept``."""
        found = {self.find(g) for k in keys for g in self.owners.get(k, ())}
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
            self.owners[k] = {target}
        return target, outcome
