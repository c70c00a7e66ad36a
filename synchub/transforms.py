from __future__ import annotations

import functools

__doc__ = """Built-in named transforms for declarative YAML mappings.

A transform is ``fn(value, /, **args) -> value``.  The value is positional
only and every argument is keyword-only, so an argument may be called
``value`` (see ``default``) and the mapping compiler can check argument names
and required arguments from the signature before anything runs.

Conventions shared by all built-ins:

* ``None`` in, ``None`` out; strings that are empty or whitespace-only count
  as ``None`` as well.  The mapping engine does not call a transform on
  ``None`` at all unless the function has the attribute
  ``accepts_none = True`` (only ``default`` has it).
* Bad input raises :class:`TransformError` (a ``ValueError``) whose message
  says what was wrong with which value, e.g.
  ``not a date in format dd.mm.yyyy: '31.02.2024'``.  The engine prefixes
  the field name.
* The logic lives in :mod:`synchub.normalize`; these functions only adapt
  arguments and return JSON-safe values (ISO strings for dates, strings for
  decimals so that no precision is lost).
* Simple string transforms (``trim``, ``lower``, ``upper``, ``title``)
  leave non-string values (numbers, lists) unchanged.
* A transform with the attribute ``pure = True`` gives the same result for
  the same input and arguments every time, changes nothing and reads no
  state of its own, so the mapping engine may remember its result per input
  string (see ``synchub.mapping._memoized``; only str, number, bool and None
  results are remembered, errors never).  All built-ins are pure except
  ``phone_e164`` (cached in :mod:`synchub.normalize` already) and ``default``.

The registry is :func:`builtin_transforms`; it is contributed to the plugin
manager through the ``register_transforms`` hook implemented here.
"""

import re
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pluggy

from synchub import normalize as _n

hookimpl = pluggy.HookimplMarker("synchub")

__all__ = ["TransformError", "builtin_transforms", "register_transforms"]


class TransformError(ValueError):
    """A transform could not convert a value; the message names the value and the problem."""


_MISSING: Any = object()


def _text(value: Any) -> str | None:
    """Return ``value`` as stripped text, or ``None`` when it is ``None`` or blank."""
    if value is None:
        return None
    text = _n._clean(value)
    return text or None


def _is_blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not _n._clean(value)
    if isinstance(value, (list, tuple, dict, set)):
        return not value
    return False


def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call a normalize function and turn its NormalizationError into a TransformError."""
    try:
        return fn(*args, **kwargs)
    except _n.NormalizationError as exc:
        raise TransformError(str(exc)) from exc


_FORMAT_CODES = {
    "%d": "dd",
    "%m": "mm",
    "%Y": "yyyy",
    "%y": "yy",
    "%H": "hh",
    "%I": "hh",
    "%M": "mi",
    "%S": "ss",
    "%f": "ffffff",
    "%b": "mon",
    "%B": "month",
    "%p": "am/pm",
    "%z": "+hhmm",
    "%Z": "tz",
    "%j": "ddd",
    "%a": "day",
    "%A": "weekday",
    "%%": "%",
}
_FORMAT_CODE_RE = re.compile(r"%[a-zA-Z%]")


def _human_format(fmt: str) -> str:
    """Render a strptime pattern for people: ``%d.%m.%Y`` → ``dd.mm.yyyy``."""
    return _FORMAT_CODE_RE.sub(lambda m: _FORMAT_CODES.get(m.group(0), m.group(0)), fmt)


# ---------------------------------------------------------------------------
# strings
# ---------------------------------------------------------------------------


def trim(value: Any, /) -> Any:
    """Strip surrounding whitespace (also non-breaking and zero-width spaces); blank becomes empty."""
    if not isinstance(value, str):
        return value
    return _text(value)


def lower(value: Any, /) -> Any:
    """Trim and convert to lower case."""
    if not isinstance(value, str):
        return value
    text = _text(value)
    return text.lower() if text else None


def upper(value: Any, /) -> Any:
    """Trim and convert to upper case."""
    if not isinstance(value, str):
        return value
    text = _text(value)
    return text.upper() if text else None


def title(value: Any, /) -> Any:
    """Tidy a personal name: ALL-CAPS or all-lower names become title case, particles stay lower, mixed case is kept."""
    if not isinstance(value, str):
        return value
    return _n.normalize_name(value)


def prefix(value: Any, /, *, text: str) -> Any:
    """Put ``text`` in front of the value unless it already starts with it."""
    current = _text(value)
    if current is None:
        return None
    return current if current.startswith(text) else text + current


def strip_prefix(value: Any, /, *, text: str, case_sensitive: bool = False) -> Any:
    """Remove ``text`` from the start of the value if present (case-insensitive unless ``case_sensitive``)."""
    current = _text(value)
    if current is None:
        return None
    head = current[: len(text)]
    if head == text or (not case_sensitive and head.casefold() == text.casefold()):
        current = current[len(text) :].strip()
    return current or None


# ---------------------------------------------------------------------------
# contact data
# ---------------------------------------------------------------------------


def email(value: Any, /) -> Any:
    """Normalise an e-mail address (trim, lower-case, drop ``mailto:`` and ``<>``); reject implausible ones."""
    return _call(_n.normalize_email, value)


def phone_e164(value: Any, /, *, region: str | None = "DE") -> Any:
    """Normalise a phone number to E.164 (``+491711234567``); national numbers use ``region`` (default DE)."""
    # A number of the right length for its country that no known range has is kept (inbound,
    # the engine flags it unverified); anything else raises.
    return _call(_phone_lenient, value, region)


def _phone_lenient(value: Any, region: str | None) -> str | None:
    return _n.normalize_phone_lenient(value, region)[0]


def country_iso(value: Any, /) -> Any:
    """Turn a country name or code (``Deutschland``, ``CH``, ``AUT``, ``D``) into ISO 3166-1 alpha-2."""
    return _call(_n.country_code, value)


def postal_code(value: Any, /, *, country: str | None = None) -> Any:
    """Normalise a postal code (drops ``D-``/``CH-``/``A-`` prefixes, restores DE leading zeros) for ``country``."""
    return _call(_n.normalize_postal_code, value, country)


def split_name(value: Any, /, *, part: str) -> Any:
    """Take the first names (``part: first``) or the last name (``part: last``) from a full name."""
    if part not in ("first", "last"):
        raise TransformError(f"split_name: part must be 'first' or 'last', not {part!r}")
    text = _text(value)
    if text is None:
        return None
    first, last = _n.split_full_name(text)
    return first if part == "first" else last


# ---------------------------------------------------------------------------
# dates and numbers
# ---------------------------------------------------------------------------


def parse_date(
    value: Any,
    /,
    *,
    format: str | None = None,
    formats: list[str] | None = None,
    excel_serial: bool = False,
) -> Any:
    """Parse a date into ISO ``YYYY-MM-DD``; with ``format``/``formats`` only those strptime patterns are accepted."""
    patterns = ([format] if format else []) + list(formats or [])
    if not patterns:
        day = _call(_n.parse_date, value, excel_serial=excel_serial)
        return day.isoformat() if day else None
    if isinstance(value, str):  # dates repeat a lot in customer files: parse each string once
        return _parse_date_strict(value, tuple(patterns), excel_serial)
    return _parse_date_strict_uncached(value, tuple(patterns), excel_serial)


def _parse_date_strict_uncached(value: Any, patterns: tuple[str, ...], excel_serial: bool) -> str | None:
    try:
        day = _n.parse_date(value, list(patterns), excel_serial=excel_serial, fallback=False)
    except _n.NormalizationError as exc:
        shown = " or ".join(_human_format(p) for p in patterns)
        raise TransformError(f"not a date in format {shown}: {value!r}") from exc
    return day.isoformat() if day else None


_parse_date_strict = functools.lru_cache(maxsize=65536)(_parse_date_strict_uncached)


def format_date(value: Any, /, *, format: str = "%d.%m.%Y") -> Any:
    """Format a date (ISO string, date or datetime) for export with a strftime pattern, default ``%d.%m.%Y``."""
    day = _call(_n.parse_date, value)
    return day.strftime(format) if day else None


def parse_datetime(value: Any, /, *, tz: str | None = None) -> Any:
    """Parse a point in time (ISO, German ``01.03.2024 14:05``, epoch s/ms) into ISO 8601 with offset; naive values are in ``tz`` (default UTC)."""
    try:
        moment = _n.parse_datetime(value, tz)
    except _n.NormalizationError as exc:
        raise TransformError(str(exc)) from exc
    except (KeyError, ValueError) as exc:  # unknown time-zone name
        raise TransformError(f"parse_datetime: unknown time zone {tz!r}") from exc
    return moment.isoformat() if moment else None


def parse_decimal(value: Any, /, *, decimal_comma: bool | None = None) -> Any:
    """Parse a number like ``1.234,56``, ``€ 12,50`` or ``CHF 99.–`` into an exact decimal string (``"1234.56"``)."""
    number = _call(_n.parse_decimal, value, decimal_comma)
    return None if number is None else format(number, "f")


def format_decimal(
    value: Any,
    /,
    *,
    decimal_comma: bool = False,
    places: int | None = 2,
    thousands: str | None = None,
) -> Any:
    """Format a number for export: ``1234.5`` → ``1,234.50``, or ``1.234,50`` with ``decimal_comma``; ``thousands: ""`` disables grouping."""
    if places is not None and (
        isinstance(places, bool) or not isinstance(places, int) or places < 0
    ):
        raise TransformError(
            f"format_decimal: places must be a non-negative integer, not {places!r}"
        )
    # Stored decimals are machine-formatted, so a lone "." is a decimal point.
    number = _call(_n.parse_decimal, value, False)
    if number is None:
        return None
    if places is not None:
        number = number.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
    text = format(number, ",f")
    integer, _, fraction = text.partition(".")
    group = thousands if thousands is not None else ("." if decimal_comma else ",")
    integer = integer.replace(",", group)
    if not fraction:
        return integer
    return f"{integer}{',' if decimal_comma else '.'}{fraction}"


# ---------------------------------------------------------------------------
# values, lists, booleans
# ---------------------------------------------------------------------------

_YAML_TRUE = frozenset({"true", "yes", "y", "on"})
_YAML_FALSE = frozenset({"false", "no", "n", "off"})


def _key_matches(key: Any, wanted: str) -> bool:
    # PyYAML reads unquoted yes/no/on/off keys as booleans; match their spellings too.
    if isinstance(key, bool):
        return wanted in (_YAML_TRUE if key else _YAML_FALSE)
    return str(key).strip().casefold() == wanted


def map_values(value: Any, /, *, values: dict[Any, Any], default: Any = _MISSING) -> Any:
    """Translate a value through the ``values`` table (trimmed, case-insensitive); else ``default`` or an error."""
    if not isinstance(values, dict):
        raise TransformError(f"map_values: values must be a mapping, not {type(values).__name__}")
    if _is_blank(value):
        return None
    wanted = (value.strip() if isinstance(value, str) else str(value)).casefold()
    for key, result in values.items():
        if _key_matches(key, wanted):
            return result
    if default is not _MISSING:
        return default
    allowed = [str(k) for k in values]
    shown = ", ".join(repr(k) for k in allowed[:20]) + (", …" if len(allowed) > 20 else "")
    raise TransformError(f"{value!r} is not one of the allowed values: {shown}")


def join(value: Any, /, *, sep: str = " ") -> Any:
    """Join a list into one string with ``sep`` (default a space), skipping empty items."""
    if isinstance(value, (list, tuple)):
        parts = [t for t in (_text(item) for item in value) if t]
        return sep.join(parts) or None
    return _text(value)


def split(value: Any, /, *, sep: str | list[str] = ",") -> Any:
    """Split a string at ``sep`` (default ``,``; a list means any of them) into a list of trimmed, non-empty strings."""
    if isinstance(value, (list, tuple)):
        items = [_text(item) for item in value]
    else:
        text = _text(value)
        if text is None:
            return None
        if isinstance(sep, str):
            items = text.split(sep)
        else:
            items = re.split("|".join(re.escape(s) for s in sep), text)
        items = [_text(item) for item in items]
    result = [item for item in items if item]
    return result or None


_TRUE_WORDS = frozenset(
    {"ja", "j", "yes", "y", "true", "t", "1", "x", "wahr", "on", "oui", "si", "sì"}
)
_FALSE_WORDS = frozenset({"nein", "n", "no", "false", "f", "0", "falsch", "off", "non"})


def to_bool(value: Any, /) -> Any:
    """Read a yes/no value: ``Ja/Nein``, ``yes/no``, ``true/false``, ``1/0``, ``x`` (checked) → true/false."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    text = _text(value)
    if text is None:
        return None
    word = text.casefold()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise TransformError(
        f"not a yes/no value: {value!r} (expected Ja/Nein, yes/no, true/false, 1/0 or x)"
    )


def default(current: Any, /, *, value: Any) -> Any:
    """Use ``value`` when the input is missing or blank (called for missing input too)."""
    return value if _is_blank(current) else current


default.accepts_none = True  # type: ignore[attr-defined]

#: Pure in the sense of the module docstring: results may be remembered per input.
_PURE = (
    trim, lower, upper, title, email, country_iso, postal_code, split_name, parse_date, format_date,
    parse_datetime, parse_decimal, format_decimal, map_values, join, split, to_bool, prefix, strip_prefix,
)
for _fn in _PURE:
    _fn.pure = True  # type: ignore[attr-defined]
del _fn


_BUILTINS: dict[str, Callable[..., Any]] = {
    "trim": trim,
    "lower": lower,
    "upper": upper,
    "title": title,
    "email": email,
    "phone_e164": phone_e164,
    "parse_date": parse_date,
    "format_date": format_date,
    "parse_datetime": parse_datetime,
    "parse_decimal": parse_decimal,
    "format_decimal": format_decimal,
    "country_iso": country_iso,
    "postal_code": postal_code,
    "map_values": map_values,
    "split_name": split_name,
    "join": join,
    "split": split,
    "bool": to_bool,
    "default": default,
    "prefix": prefix,
    "strip_prefix": strip_prefix,
}


def builtin_transforms() -> dict[str, Callable[..., Any]]:
    """Return the built-in transforms by their user-facing names (a fresh dict, same functions)."""
    return dict(_BUILTINS)


@hookimpl
def register_transforms() -> dict[str, Callable[..., Any]]:
    """Contribute the built-in transforms to the plugin manager."""
    return builtin_transforms()
