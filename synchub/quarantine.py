"""Field-level quarantine: one bad value costs that value, never the whole customer.

When a value of an inbound record cannot be used (a transform or normalisation refuses it, the
canonical model does not accept it), the record still lands without that value. The value is kept
raw with its reason, as one *entry*::

    {"field": "phones", "source": "Telefon", "rule": "phone", "raw": "+41 33 20379-872",
     "reason": "not a valid phone number", "status": "quarantined"}

``status`` is ``quarantined`` (left out of the canonical data, so identity keys and matching never
see it) or ``unverified`` (kept, e.g. a phone number of the right length for its country that no
known number range has; ``kept`` holds the value the hub uses). The engine stores the entries on
the source record (``source_record.quarantine``) and logs them per run (``quarantined_value``).

A record is rejected only when nothing usable is left to identify it: see :func:`identifiable`.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError

from synchub.errors import RecordValidationError
from synchub.redact import redact

#: Entries say at most this much of a raw value.
MAX_RAW = 500
QUARANTINED = "quarantined"
UNVERIFIED = "unverified"

Entry = dict[str, Any]


def entry(field: str, raw: Any, reason: str, *, rule: str, source: str | None = None,
          status: str = QUARANTINED, kept: Any = None) -> Entry:
    """One quarantined (or unverified) value. ``reason`` loses the raw value where the message
    repeats it, so the reason reads the same for every bad value of one kind."""
    text = raw if isinstance(raw, str) else _text(raw)
    out: Entry = {"field": field, "rule": rule, "raw": text[:MAX_RAW] if text is not None else None,
                  "reason": clean_reason(reason, raw), "status": status}
    if source:
        out["source"] = source
    if kept is not None:
        out["kept"] = kept
    return out


def _text(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, (dict, list)):
        return json.dumps(raw, ensure_ascii=False, default=str, sort_keys=True)
    return str(raw)


def clean_reason(reason: str, raw: Any) -> str:
    """``"not a valid phone number: '+41 33' (too long)"`` -> ``"not a valid phone number (too
    long)"``: the value is in ``raw`` already; secrets are masked like everywhere else."""
    if raw is not None and not isinstance(raw, (dict, list)):
        for shown in (repr(raw), repr(str(raw))):
            reason = reason.replace(f": {shown}", "")
            if reason.startswith(shown + " "):  # "'maybe' is not one of ..." groups by reason too
                reason = "the value" + reason[len(shown):]
    return redact(reason)


def counts(entries: list[Entry] | None) -> tuple[int, int]:
    """(quarantined, unverified) among ``entries``."""
    q = u = 0
    for e in entries or ():
        if e.get("status") == UNVERIFIED:
            u += 1
        else:
            q += 1
    return q, u


#: Fields that can identify a party; a record left with none of them is rejected.
_IDENTIFYING = {
    "person": ("first_name", "last_name", "emails", "phones", "company_name"),
    "company": ("name", "domain", "emails", "phones", "vat_id"),
}


def identifiable(kind: str, data: dict[str, Any]) -> bool:
    """Whether a canonical record still has something to identify it by: a name, an e-mail or a
    phone number (a company: name, domain, e-mail, phone or VAT id)."""
    return any(data.get(f) for f in _IDENTIFYING.get(kind, ()))


def validate(model: type[BaseModel], data: dict[str, Any], problems: list[Entry] | None, *,
             prefix: str = "") -> BaseModel:
    """``model.model_validate(data)``; with ``problems``, each value the model refuses is taken
    out of ``data`` (in place) and recorded there instead, until the rest validates. Without
    ``problems`` (or when nothing can be taken out) the first error raises
    :class:`RecordValidationError` naming the field."""
    for _ in range(200):
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = tuple(err["loc"])
            name = prefix + ".".join(str(p) for p in loc)
            if problems is None:
                raise RecordValidationError(f"{name}: {err['msg']}", field=name) from None
            popped = pop_path(data, loc)
            if popped is None:
                raise RecordValidationError(f"{name}: {err['msg']}", field=name) from None
            path, value = popped
            field = prefix + ".".join(str(p) for p in path if not isinstance(p, int))
            problems.append(entry(field, value, err["msg"], rule=err["type"]))
    raise RecordValidationError("too many invalid values", field=None)


def pop_path(data: dict[str, Any], loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], Any] | None:
    """Remove the deepest value of ``data`` that ``loc`` reaches and return ``(path, value)``.

    Pydantic's error locations can go past the data (a missing key, a union member's name such as
    ``date``): the walk stops at the last key that exists, so a missing required field takes its
    parent out (a consent without a status)."""
    parents: list[tuple[Any, Any]] = []
    cur: Any = data
    for key in loc:
        if isinstance(cur, dict) and key in cur:
            parents.append((cur, key))
            cur = cur[key]
        elif isinstance(cur, list) and isinstance(key, int) and 0 <= key < len(cur):
            parents.append((cur, key))
            cur = cur[key]
        else:
            break
    if not parents:
        return None
    container, key = parents[-1]
    value = container[key]
    del container[key]
    return tuple(k for _, k in parents), value
