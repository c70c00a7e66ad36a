"""Which golden records an outbound stream receives: a declarative filter over canonical fields.

An outbound stream (a Mailchimp audience, a CRM list, an export) may take only a segment of the
golden records. The segment is declared in the stream's config, never as code::

    streams:
      newsletter:
        filter:
          lifecycle_stage: {in: [customer, evangelist]}
          address.country: {in: [DE, AT, CH]}
          purchases.total_spent: {gte: 100}
          tags: {contains_any: [vip, newsletter]}
          consent.email.status: {not_in: [unsubscribed, cleaned]}
          lead_source.origin: trade_fair            # short form: equals
          any:                                      # at least one of these groups
            - {language: de}
            - {address.country: DE}

Every condition of a filter must hold (AND); ``any`` takes a list of filters of which one must
hold, ``not`` a filter that must not. Operators: ``eq``, ``ne``, ``in``, ``not_in``, ``gt``,
``gte``, ``lt``, ``lte`` (numbers, and dates as ISO strings), ``contains``, ``contains_any``,
``contains_all`` (list fields such as ``tags``, ``emails``), ``exists`` (true/false). A path that
is absent never satisfies a comparison, except ``ne``, ``not_in`` and ``exists: false``.
Text comparisons ignore case. Paths are checked against the canonical schema when the config is
loaded, so a typo is an error with file and line, not an empty audience.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from synchub.schema import ENTITY_MODELS, canonical_paths

OPERATORS = ("eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "contains", "contains_any", "contains_all", "exists")
_LIST_OPERATORS = ("in", "not_in", "contains_any", "contains_all")
_MISSING = object()

Predicate = Callable[[dict[str, Any]], bool]


class FilterError(ValueError):
    """A filter that cannot be compiled; ``path`` says where in the filter."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


def compile_filter(spec: dict[str, Any] | None, entity: str = "person") -> Predicate:
    """Compile a filter; raise :class:`FilterError` for unknown paths or operators."""
    if not spec:
        return lambda _data: True
    known = canonical_paths(ENTITY_MODELS[entity])
    return _compile(spec, known, "")


def explain(spec: dict[str, Any] | None, data: dict[str, Any], entity: str = "person") -> str | None:
    """Why ``data`` is not in the segment: the first condition of the filter it fails, as text
    (``lifecycle_stage is 'lead', not in ['customer', 'evangelist']``); None when it matches."""
    if not spec:
        return None
    known = canonical_paths(ENTITY_MODELS[entity])
    for key, cond in spec.items():
        if _compile({key: cond}, known, "")(data):
            continue
        if key in ("any", "not"):
            return f"{key}: {cond!r} does not hold"
        value = _get(data, str(key))
        shown = "empty" if value is _MISSING else f"is {value!r}"
        wanted = cond if isinstance(cond, dict) else {"eq": cond}
        return f"{key} {shown}, wanted " + ", ".join(f"{op} {arg!r}" for op, arg in wanted.items())
    return None


def _compile(spec: Any, known: dict[str, Any], where: str) -> Predicate:
    if not isinstance(spec, dict):
        raise FilterError(where, "a filter is a mapping of field paths to conditions")
    parts: list[Predicate] = []
    for key, cond in spec.items():
        here = f"{where}.{key}" if where else str(key)
        if key == "any":
            if not isinstance(cond, list) or not cond:
                raise FilterError(here, "any takes a non-empty list of filters")
            alts = [_compile(c, known, f"{here}.{i}") for i, c in enumerate(cond)]
            parts.append(lambda d, alts=alts: any(a(d) for a in alts))
        elif key == "not":
            inner = _compile(cond, known, here)
            parts.append(lambda d, inner=inner: not inner(d))
        else:
            path = str(key)
            if path not in known and not (path.startswith("custom.") and "custom.*" in known):
                raise FilterError(here, f"unknown field {path!r} of the canonical schema")
            parts.append(_condition(path, cond, here))
    return lambda d: all(p(d) for p in parts)


def _condition(path: str, cond: Any, where: str) -> Predicate:
    if not isinstance(cond, dict):
        cond = {"eq": cond}
    checks: list[Predicate] = []
    for op, arg in cond.items():
        if op not in OPERATORS:
            raise FilterError(f"{where}.{op}", f"unknown operator (known: {', '.join(OPERATORS)})")
        if op in _LIST_OPERATORS and not isinstance(arg, list):
            arg = [arg]
        if op == "exists" and not isinstance(arg, bool):
            raise FilterError(f"{where}.{op}", "exists takes true or false")
        if op in ("gt", "gte", "lt", "lte") and _number(arg) is None and not isinstance(arg, (str, date)):
            raise FilterError(f"{where}.{op}", f"cannot compare with {arg!r}")
        checks.append(_check(path, op, arg))
    return lambda d: all(c(d) for c in checks)


def _get(data: dict[str, Any], path: str) -> Any:
    cur: Any = data
    for p in path.split("."):
        if isinstance(cur, dict) and p in cur:
            cur = cur[p]
        else:
            return _MISSING
    return _MISSING if cur is None or cur == [] or cur == "" else cur


def _norm(v: Any) -> Any:
    return v.casefold() if isinstance(v, str) else v


def _number(v: Any) -> Decimal | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float, Decimal)):
        return Decimal(str(v))
    if isinstance(v, str):
        try:
            return Decimal(v)
        except InvalidOperation:
            return None
    return None


def _compare(value: Any, arg: Any) -> int | None:
    """-1/0/1 for value vs arg, numbers as numbers and everything else as ISO text."""
    a, b = _number(value), _number(arg)
    if a is not None and b is not None:
        return (a > b) - (a < b)
    if isinstance(value, (date, datetime)):
        value = value.isoformat()
    if isinstance(arg, (date, datetime)):
        arg = arg.isoformat()
    if isinstance(value, str) and isinstance(arg, str):
        return (value > arg) - (value < arg)
    return None


def _check(path: str, op: str, arg: Any) -> Predicate:
    def check(data: dict[str, Any]) -> bool:
        value = _get(data, path)
        if op == "exists":
            return (value is not _MISSING) == arg
        if value is _MISSING:
            return op in ("ne", "not_in")
        values = [_norm(v) for v in value] if isinstance(value, list) else [_norm(value)]
        args = [_norm(a) for a in arg] if isinstance(arg, list) else _norm(arg)
        if op == "eq":
            return args in values
        if op == "ne":
            return args not in values
        if op == "in":
            return any(v in args for v in values)
        if op == "not_in":
            return not any(v in args for v in values)
        if op == "contains":
            return args in values
        if op == "contains_any":
            return any(a in values for a in args)
        if op == "contains_all":
            return all(a in values for a in args)
        c = _compare(value, arg)
        if c is None:
            return False
        return {"gt": c > 0, "gte": c >= 0, "lt": c < 0, "lte": c <= 0}[op]

    return check
