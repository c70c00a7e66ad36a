from __future__ import annotations

__doc__ = """Normalisation of customer-data values.

Everything in this module is a pure function: no I/O, no global state beyond
import-time lookup tables (and the phone fast path's per-region tables, compiled from
phonenumbers' metadata at first use) and bounded ``functools.lru_cache`` caches.  The
functions run on every record of every sync, so the common path avoids
expensive work (ASCII fast paths, pre-compiled regular expressions, caches
for inputs that repeat a lot such as phone numbers, first names and country
names).

German/Swiss/Austrian conventions are first-class: ``0171 1234567`` phone
numbers, ``1.234,56`` decimals, ``01.03.2024`` dates, ``D-80331`` postal
codes, ``Müller``/``Mueller`` spelling variants and ``Hauptstr.`` street
abbreviations are all understood.

Two families of functions exist:

* *normalisers* (``normalize_*``, ``parse_*``, ``country_code``,
  ``split_*``) return a canonical value meant to be stored or exported and
  raise :class:`NormalizationError` for values that cannot be understood;
* *comparison keys* (``fold``, ``fold_street``, ``fold_company``,
  ``koelner_phonetik``, ``english_phonetic``) never raise for string input
  and return a key meant only for matching, never for display.
"""

import datetime as _dt
import re
import unicodedata
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import phonenumbers
import pycountry
from phonenumbers import PhoneNumberType

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "NormalizationError",
    "country_code",
    "english_phonetic",
    "fold",
    "fold_company",
    "fold_street",
    "koelner_phonetik",
    "normalize_email",
    "normalize_name",
    "normalize_phone",
    "normalize_phone_lenient",
    "normalize_postal_code",
    "parse_date",
    "parse_datetime",
    "parse_decimal",
    "phone_type",
    "split_full_name",
    "split_street",
]


class NormalizationError(ValueError):
    """A value could not be normalised; the message names the offending value."""


# ---------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------

# Characters that are invisible but survive copy & paste from web pages,
# Word documents and spreadsheets.  They are removed everywhere.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
_WS_RE = re.compile(r"\s+")


def _clean(value: Any) -> str:
    """Return ``value`` as a string without invisible characters and outer whitespace.

    ``str.strip()`` already handles Unicode whitespace such as the
    non-breaking space (U+00A0) and narrow no-break space (U+202F).
    """
    text = value if isinstance(value, str) else str(value)
    if not text.isascii():
        text = text.translate(_INVISIBLE)
    return text.strip()


def _collapse(text: str) -> str:
    """Collapse runs of whitespace to one ASCII space and strip the ends."""
    return _WS_RE.sub(" ", text).strip()


# ---------------------------------------------------------------------------
# e-mail
# ---------------------------------------------------------------------------

_EMAIL_LOCAL_RE = re.compile(r'[^\s@<>()\[\]\\,;:"]+')
_EMAIL_LABEL = r"[^\W_](?:(?:[^\W_]|-)*[^\W_])?"
_EMAIL_DOMAIN_RE = re.compile(rf"(?:{_EMAIL_LABEL}\.)+{_EMAIL_LABEL}")


def normalize_email(value: str | None) -> str | None:
    """Normalise an e-mail address for storage and matching.

    Strips whitespace and invisible characters, lower-cases the whole
    address, removes a ``mailto:`` prefix (and any ``?subject=`` query) and
    surrounding angle brackets.  No provider-specific rewriting is done
    (Gmail dots and ``+tags`` are kept).

    Returns ``None`` for ``None`` or blank input.  Raises
    :class:`NormalizationError` when the result is not a plausible address:
    exactly one ``@``, a non-empty local part, a domain containing a dot
    with non-empty labels, and no whitespace.
    """
    if value is None:
        return None
    text = _clean(value)
    if not text:
        return None
    text = text.lower()
    # "<mailto:a@b.de>" and "mailto:<a@b.de>" both occur in exports.
    for _ in range(2):
        if text.startswith("<") and text.endswith(">"):
            text = text[1:-1].strip()
        if text.startswith("mailto:"):
            text = text[7:].split("?", 1)[0].strip()
    if not text:
        return None

    reason: str | None = None
    if any(c.isspace() for c in text):
        reason = "contains whitespace"
    elif text.count("@") != 1:
        reason = "needs exactly one '@'"
    else:
        local, domain = text.split("@")
        if not local:
            reason = "empty local part"
        elif not _EMAIL_LOCAL_RE.fullmatch(local):
            reason = "invalid character in local part"
        elif "." not in domain:
            reason = "domain has no dot"
        elif not _EMAIL_DOMAIN_RE.fullmatch(domain):
            reason = "malformed domain"
    if reason:
        raise NormalizationError(f"not a plausible email address: {value!r} ({reason})")
    return text


# ---------------------------------------------------------------------------
# phone numbers
# ---------------------------------------------------------------------------

_PHONE_SIMPLE_RE = re.compile(r"\+?[\d ()/.-]*\d[\d ()/.-]*")
_SCIENTIFIC_RE = re.compile(r"[+-]?\d+(?:[.,]\d+)?[eE][+-]?\d+")
_TEL_PREFIX_RE = re.compile(r"^(?:tel|callto)\s*:\s*", re.IGNORECASE)
# "(mobil)", "(privat)", "(Zentrale)": annotations in brackets with letters.
_PHONE_NOTE_RE = re.compile(r"\([^)]*[^\W\d_][^)]*\)")
# Leading labels such as "Tel.: " or "Mobil " before the number.
_PHONE_LABEL_RE = re.compile(r"^[^\d+(]+")
# Trailing words such as "mobil" or "(geschäftlich" after the last digit.
_PHONE_TAIL_RE = re.compile(r"[^\d)]+$")
_TRUNK_AFTER_CC_RE = re.compile(r"^(\+\d{1,3})\s*\(0\)\s*")
_IDD_RE = re.compile(r"^\+?00(?=[1-9])")

_PHONE_TYPES = {
    PhoneNumberType.MOBILE: "mobile",
    PhoneNumberType.FIXED_LINE: "fixed",
    PhoneNumberType.FIXED_LINE_OR_MOBILE: "fixed_or_mobile",
    PhoneNumberType.VOIP: "voip",
    # In no number range of its country: kept only as an unverified value (see normalize_phone_lenient).
    PhoneNumberType.UNKNOWN: "unverified",
}


@lru_cache(maxsize=65536)
def _phone_cached(raw: str, region: str | None) -> tuple[str | None, str | None]:
    """Parse ``raw`` and return ``(e164, None)`` or ``(None, error_reason)``.

    Errors are returned rather than raised so that repeated bad values are
    cached as well.
    """
    text = raw.translate(_INVISIBLE).strip() if not raw.isascii() else raw.strip()
    if not text:
        return None, None
    if _PHONE_SIMPLE_RE.fullmatch(text):
        # Fast path: only digits and the usual separators, no labels or notes.
        if text.startswith(("00", "+00")):
            text = _IDD_RE.sub("+", text)
        if "(0)" in text:
            text = _TRUNK_AFTER_CC_RE.sub(r"\1 ", text)
    else:
        if _SCIENTIFIC_RE.fullmatch(text):
            return None, "looks like a spreadsheet number in scientific notation; digits were lost"
        text = _TEL_PREFIX_RE.sub("", text)
        text = _PHONE_NOTE_RE.sub(" ", text)
        text = _PHONE_LABEL_RE.sub("", text)
        text = _PHONE_TAIL_RE.sub("", text).strip()
        text = _IDD_RE.sub("+", text)
        text = _TRUNK_AFTER_CC_RE.sub(r"\1 ", text)
    if not text:
        return None, "contains no digits"
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as exc:
        if exc.error_type == phonenumbers.NumberParseException.INVALID_COUNTRY_CODE:
            if region is None:
                return None, "no country code and no default region"
            return None, "unknown country code"
        return None, "not a phone number"
    if not phonenumbers.is_valid_number(number):
        possible = phonenumbers.is_possible_number_with_reason(number)
        if possible == phonenumbers.ValidationResult.IS_POSSIBLE:
            if len(phonenumbers.national_significant_number(number)) < _MIN_UNVERIFIED_DIGITS:
                return None, "too few digits"
            # Right length for its country, but no number range libphonenumber knows: a new
            # range, a private network's extension, or made up. The caller decides.
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), _POSSIBLE_ONLY
        return None, _IMPOSSIBLE.get(possible, "not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), None


_IMPOSSIBLE = {
    phonenumbers.ValidationResult.TOO_SHORT: "too short for its country",
    phonenumbers.ValidationResult.TOO_LONG: "too long for its country",
    phonenumbers.ValidationResult.INVALID_LENGTH: "wrong number of digits for its country",
    phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY: "a local number without its area code",
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
}
#: An unverified number needs at least this many digits after the country code: shorter ones
#: are extensions or typos more often than numbers (a valid short number still passes).
_MIN_UNVERIFIED_DIGITS = 6
#: ``_phone_cached``'s reason for a number that is possible (length) but not valid (range).
_POSSIBLE_ONLY = "possible but not valid: no known number range has it"


def normalize_phone(value: str | None, region: str | None = "DE") -> str | None:
    """Normalise a phone number to E.164 (``+491711234567``).

    ``region`` is the ISO 3166-1 alpha-2 code used for numbers written in
    national format (``0171 1234567``); with ``region=None`` only
    international numbers (``+49 …`` / ``0049 …``) are accepted.

    Understands the usual real-world decorations: ``tel:`` URIs, ``00``
    international prefixes, the ``(0)`` trunk prefix written after a country
    code (``+49 (0) 30 1234567``), slashes, brackets, dashes, labels such as
    ``Tel.:`` and bracketed notes such as ``(mobil)``.  Extensions are
    dropped.  Vanity numbers with letters are not supported.

    Returns ``None`` for ``None``/blank input; raises
    :class:`NormalizationError` for numbers that cannot be parsed or that
    phonenumbers does not consider valid, including spreadsheet-mangled
    values such as ``4.91711234567E+11``.
    """
    e164, verified = normalize_phone_lenient(value, region)
    if not verified:
        raise NormalizationError(f"not a valid phone number: {value!r} (not a valid phone number)")
    return e164


def normalize_phone_lenient(value: str | None, region: str | None = "DE") -> tuple[str | None, bool]:
    """Like :func:`normalize_phone`, but a number that is *possible* for its country (the right
    length) without being *valid* (in a range libphonenumber knows) is kept: returns
    ``(e164, verified)``, with ``verified`` False for such a number. Raises
    :class:`NormalizationError` for what is not even a possible number."""
    if value is None:
        return None, True
    if isinstance(value, bool) or isinstance(value, float):
        # A float phone number has always been through a spreadsheet and may
        # have lost leading zeros or trailing digits.
        raise NormalizationError(
            f"not a valid phone number: {value!r} (numeric value; store phone numbers as text)"
        )
    raw = value if isinstance(value, str) else str(value)
    if region is not None:
        region = region.strip().upper() or None
    fast = _phone_fast(raw, region) if _PHONE_FASTPATH else None
    e164, reason = fast if fast is not None else _phone_cached(raw, region)
    if reason is _POSSIBLE_ONLY:
        return e164, False
    if reason:
        raise NormalizationError(f"not a valid phone number: {value!r} ({reason})")
    return e164, True


# Mobile ranges of the DACH countries, checked before asking phonenumbers (which costs tens of
# microseconds per number): +49 15x/16x/17x, +43 650-699, +41 75-79 (Bundesnetzagentur, RTR
# and BAKOM numbering plans; phonenumbers' metadata agrees).
_DACH_MOBILE = re.compile(r"^\+(?:491[5-7]\d{8,9}|436[5-9]\d{6,11}|417[5-9]\d{7})$")


def phone_type(e164: str) -> str:
    """Classify a normalised phone number (DACH mobiles by prefix, the rest by phonenumbers).

    Returns ``'mobile'``, ``'fixed'``, ``'fixed_or_mobile'`` (numbering plans
    such as the US one that do not distinguish), ``'voip'``, ``'unverified'`` (a possible
    number in no known range, see :func:`normalize_phone_lenient`) or ``'other'``
    (toll-free, premium, personal numbers, pagers, unknown).  Landlines are
    typically shared by a household or company, mobiles are personal; the
    matcher weighs them accordingly.

    Raises :class:`NormalizationError` if ``e164`` cannot be parsed.
    """
    if _DACH_MOBILE.match(e164):
        return "mobile"
    if _PHONE_FASTPATH:
        kind = _phone_type_fast(e164)
        if kind is not None:
            return kind
    return _phone_type_slow(e164)


@lru_cache(maxsize=65536)
def _phone_type_slow(e164: str) -> str:
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException as exc:
        raise NormalizationError(f"not an E.164 phone number: {e164!r}") from exc
    return _PHONE_TYPES.get(phonenumbers.number_type(number), "other")


# --- phone fast path ----------------------------------------------------------
#
# ``phonenumbers.parse`` + ``is_valid_number`` cost tens of microseconds, most of it generic
# machinery (extension and RFC 3966 handling, IDD detection, object construction) that plain
# numbers such as ``0171 1234567`` or ``+49 (0)89 123456`` never need. ``_phone_fast`` redoes,
# for those plain shapes only, the steps of phonenumbers that matter for them, with the same
# metadata (compiled once per region, at first use) and in the same order, and answers what
# ``_phone_cached`` would answer. Whenever an input leaves the narrow road (letters, extensions,
# non-ASCII, an IDD other than the ``00`` rewritten to ``+``, a national-prefix rule with a
# transform or carrier code, an unknown country code, non-geographic codes, numbers phonenumbers
# would reject while parsing) it returns None and the caller takes the phonenumbers path. The
# two paths are compared on a million generated inputs by ``bench/phone_corpus.py`` and in
# ``tests/test_phone_fastpath.py``.

#: Off only to compare against (or time) the phonenumbers path; see bench/phone_corpus.py.
_PHONE_FASTPATH = True

# phonenumbers' bounds (phonenumberutil._MIN/_MAX_LENGTH_FOR_NSN): a national significant number
# outside them is a parse error there; the fast path leaves those to it.
_NSN_MIN, _NSN_MAX = 2, 17
_PHONE_SEPARATORS = str.maketrans("", "", "+ ()/.-")
_E164_SHAPE_RE = re.compile(r"\+[1-9][0-9]{2,20}")
_LITERAL_PREFIXES_RE = re.compile(r"[0-9]+(?:\|[0-9]+)*")
_VR = phonenumbers.ValidationResult
_KEEP_PREFIX = frozenset({_VR.TOO_SHORT, _VR.IS_POSSIBLE_LOCAL_ONLY, _VR.INVALID_LENGTH})
_UNKNOWN_TYPE = PhoneNumberType.UNKNOWN
#: "49" -> 49 for every country calling code phonenumbers knows.
_CC_BY_TEXT = {str(cc): cc for cc in phonenumbers.COUNTRY_CODE_TO_REGION_CODE}


def _compile_desc(desc: Any) -> tuple[frozenset[int] | None, Any] | None:
    """(possible lengths or None for "any", fullmatch) of a PhoneNumberDesc; None never matches."""
    if desc is None or not desc.national_number_pattern:
        return None
    lengths = frozenset(desc.possible_length) if desc.possible_length else None
    return lengths, re.compile(desc.national_number_pattern).fullmatch


class _PhonePlan:
    """One region's phonenumbers metadata, compiled for the fast path."""

    __slots__ = ("any_type", "cc", "cc_text", "fixed", "general", "general_full", "idd", "leading",
                 "local_lengths", "mobile", "np_complex", "np_literals", "possible_lengths",
                 "same_fixed_mobile", "special")

    def __init__(self, meta: Any):
        self.cc = meta.country_code
        self.cc_text = str(meta.country_code)
        gd = meta.general_desc
        self.general = _compile_desc(gd)
        self.general_full = self.general[1] if self.general else None
        self.possible_lengths = tuple(gd.possible_length)
        self.local_lengths = tuple(gd.possible_length_local_only)
        self.special = tuple(
            (t, d) for t, d in (
                (PhoneNumberType.PREMIUM_RATE, _compile_desc(meta.premium_rate)),
                (PhoneNumberType.TOLL_FREE, _compile_desc(meta.toll_free)),
                (PhoneNumberType.SHARED_COST, _compile_desc(meta.shared_cost)),
                (PhoneNumberType.VOIP, _compile_desc(meta.voip)),
                (PhoneNumberType.PERSONAL_NUMBER, _compile_desc(meta.personal_number)),
                (PhoneNumberType.PAGER, _compile_desc(meta.pager)),
                (PhoneNumberType.UAN, _compile_desc(meta.uan)),
                (PhoneNumberType.VOICEMAIL, _compile_desc(meta.voicemail)),
            ) if d is not None
        )
        self.fixed = _compile_desc(meta.fixed_line)
        self.mobile = _compile_desc(meta.mobile)
        self.same_fixed_mobile = bool(meta.same_mobile_and_fixed_line_pattern)
        # The descriptions that make a number valid (any type but UNKNOWN), likeliest first.
        self.any_type = tuple(d for d in (
            self.fixed, None if self.same_fixed_mobile else self.mobile, *(d for _t, d in self.special)
        ) if d is not None)
        self.leading = re.compile(meta.leading_digits).match if meta.leading_digits is not None else None
        # A pattern that can never match a string of digits stands for "no IDD" (as in phonenumbers).
        self.idd = re.compile(meta.international_prefix).match if meta.international_prefix is not None else None
        # National prefix for parsing: none; literal alternatives such as "0" or "0|180020" (the
        # first one the number starts with is stripped, as a regex alternation would); or anything
        # else (groups, carrier codes, transform rules): the fast path gives up when it matches.
        npp = meta.national_prefix_for_parsing
        self.np_literals: tuple[str, ...] | None = None
        self.np_complex = None
        if npp:
            if _LITERAL_PREFIXES_RE.fullmatch(npp) and not meta.national_prefix_transform_rule:
                self.np_literals = tuple(npp.split("|"))
            else:
                self.np_complex = re.compile(npp).match

    def length_result(self, n: int) -> int:
        """``ValidationResult`` of a national number of ``n`` digits (phonenumbers' test, type UNKNOWN)."""
        if n in self.local_lengths:
            return _VR.IS_POSSIBLE_LOCAL_ONLY
        lengths = self.possible_lengths
        if lengths[0] == n:
            return _VR.IS_POSSIBLE
        if lengths[0] > n:
            return _VR.TOO_SHORT
        if lengths[-1] < n:
            return _VR.TOO_LONG
        return _VR.IS_POSSIBLE if n in lengths[1:] else _VR.INVALID_LENGTH

    def strip_national_prefix(self, number: str) -> str | None:
        """``number`` without its national prefix where phonenumbers would strip it (else unchanged);
        None when the region's rule is not a literal one and applies to ``number``."""
        if not number:
            return number
        if self.np_literals is not None:
            for prefix in self.np_literals:
                if number.startswith(prefix):
                    rest = number[len(prefix):]
                    full = self.general_full
                    if full is not None and full(number) and not full(rest):
                        return number  # the number is viable as it is and would not be without
                    return rest
            return number
        if self.np_complex is not None and self.np_complex(number):
            return None
        return number

    def is_valid(self, nsn: str) -> bool:
        """Whether ``number_type`` is not UNKNOWN (the same descriptions, in a cheaper order)."""
        n = len(nsn)
        desc = self.general
        if desc is None or (desc[0] is not None and n not in desc[0]) or not desc[1](nsn):
            return False
        for lengths, full in self.any_type:
            if (lengths is None or n in lengths) and full(nsn):
                return True
        return False

    def number_type(self, nsn: str) -> int:
        """phonenumbers' ``_number_type_helper`` for this region."""
        n = len(nsn)
        desc = self.general
        if desc is None or (desc[0] is not None and n not in desc[0]) or not desc[1](nsn):
            return _UNKNOWN_TYPE
        for kind, (lengths, full) in self.special:
            if (lengths is None or n in lengths) and full(nsn):
                return kind
        fixed, mobile = self.fixed, self.mobile
        if fixed is not None and (fixed[0] is None or n in fixed[0]) and fixed[1](nsn):
            if self.same_fixed_mobile or (
                mobile is not None and (mobile[0] is None or n in mobile[0]) and mobile[1](nsn)
            ):
                return PhoneNumberType.FIXED_LINE_OR_MOBILE
            return PhoneNumberType.FIXED_LINE
        if (not self.same_fixed_mobile and mobile is not None
                and (mobile[0] is None or n in mobile[0]) and mobile[1](nsn)):
            return PhoneNumberType.MOBILE
        return _UNKNOWN_TYPE


_PLANS: dict[str, _PhonePlan | None] = {}


def _phone_plan(region: str) -> _PhonePlan | None:
    """The compiled plan of a region phonenumbers supports, built at first use; else None."""
    try:
        return _PLANS[region]
    except KeyError:
        pass
    plan = None
    if region in phonenumbers.SUPPORTED_REGIONS:
        meta = phonenumbers.PhoneMetadata.metadata_for_region(region, None)
        # An empty list of possible lengths would make phonenumbers itself fail: leave it alone.
        if meta is not None and meta.general_desc is not None and meta.general_desc.possible_length:
            plan = _PhonePlan(meta)
    _PLANS[region] = plan
    return plan


def _main_plan(cc: int) -> _PhonePlan | None:
    """The plan of the main region of a country calling code (None for non-geographic codes)."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(cc)
    if not regions or regions[0] not in phonenumbers.SUPPORTED_REGIONS:
        return None
    plan = _phone_plan(regions[0])
    return plan if plan is not None and plan.cc == cc else None


#: A region of the country code has no plan: the caller falls back to phonenumbers.
_UNSURE: Any = object()


def _region_plan(cc: int, nsn: str) -> Any:
    """The plan of the region phonenumbers' ``region_code_for_number`` gives +cc nsn, None
    when it gives none, ``_UNSURE`` when a region involved has no plan."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE[cc]
    if len(regions) == 1:
        plan = _phone_plan(regions[0])
        return plan if plan is not None and plan.cc == cc else _UNSURE
    # Regions sharing a code: the first whose leading digits match, or (without leading digits)
    # in which the number is valid.
    for region in regions:
        plan = _phone_plan(region)
        if plan is None or plan.cc != cc:
            return _UNSURE
        if plan.leading is not None:
            if plan.leading(nsn):
                return plan
        elif plan.is_valid(nsn):
            return plan
    return None


def _national_number(number: str, plan: _PhonePlan) -> str | None:
    """The national significant number phonenumbers.parse ends with for ``number`` (digits after
    the country code, or the whole national number) under ``plan``; None when unsure."""
    if len(number) < _NSN_MIN:
        return None
    stripped = plan.strip_national_prefix(number)
    if stripped is None:
        return None
    # Only strip when what remains still has a possible length (it may be a short number).
    if plan.length_result(len(stripped)) not in _KEEP_PREFIX:
        number = stripped
    if len(number) > _NSN_MAX:
        return None
    return number


def _phone_fast(raw: str, region: str | None) -> tuple[str | None, str | None] | None:
    """What ``_phone_cached(raw, region)`` returns, computed without phonenumbers' parser for
    plain numbers; None when the input is not one of the shapes handled here."""
    if not raw.isascii():
        return None
    text = raw.strip()
    if not text:
        return None, None
    if len(text) > 60 or not _PHONE_SIMPLE_RE.fullmatch(text):
        return None
    # The same rewrites as _phone_cached's plain branch.
    if text.startswith(("00", "+00")):
        text = _IDD_RE.sub("+", text)
    if "(0)" in text:
        text = _TRUNK_AFTER_CC_RE.sub(r"\1 ", text)
    digits = text.translate(_PHONE_SEPARATORS)
    if len(digits) < 3:  # phonenumbers' viability rules for 1-2 digits: left to it
        return None
    if text[0] == "+":
        if digits[0] == "0":
            return None
        cc = _CC_BY_TEXT.get(digits[0]) or _CC_BY_TEXT.get(digits[:2]) or _CC_BY_TEXT.get(digits[:3])
        if cc is None:
            return None
        plan = _main_plan(cc)
        if plan is None:
            return None
        national = digits[len(str(cc)):]
    else:
        if region is None:
            return None
        plan = _phone_plan(region)
        if plan is None:
            return None
        if plan.idd is not None and plan.idd(digits):
            return None  # an IDD phonenumbers would strip (or look at): its business
        cc = plan.cc
        national = digits
        if digits.startswith(plan.cc_text):
            # phonenumbers takes a leading country code without "+" as such when the number
            # is not valid with it but is without it, or is too long with it.
            rest = plan.strip_national_prefix(digits[len(plan.cc_text):])
            if rest is None:
                return None
            full = plan.general_full
            if (full is not None and not full(digits) and full(rest)) or (
                plan.length_result(len(digits)) == _VR.TOO_LONG
            ):
                plan = _main_plan(cc)
                if plan is None:
                    return None
                national = rest
    nsn = _national_number(national, plan)
    if nsn is None:
        return None
    home = _region_plan(cc, nsn)
    if home is _UNSURE:
        return None
    e164 = f"+{cc}{nsn}"
    if home is not None and home.is_valid(nsn):
        return e164, None
    main = _main_plan(cc)
    if main is None:
        return None
    possible = main.length_result(len(nsn))
    if possible == _VR.IS_POSSIBLE:
        if len(nsn) < _MIN_UNVERIFIED_DIGITS:
            return None, "too few digits"
        return e164, _POSSIBLE_ONLY
    return None, _IMPOSSIBLE.get(possible, "not a valid phone number")


def _phone_type_fast(e164: str) -> str | None:
    """What ``_phone_type_slow(e164)`` returns for a plain ``+digits`` string; None when unsure."""
    if type(e164) is not str or not _E164_SHAPE_RE.fullmatch(e164):
        return None
    digits = e164[1:]
    cc = _CC_BY_TEXT.get(digits[0]) or _CC_BY_TEXT.get(digits[:2]) or _CC_BY_TEXT.get(digits[:3])
    if cc is None:
        return None
    plan = _main_plan(cc)
    if plan is None:
        return None
    nsn = _national_number(digits[len(str(cc)):], plan)
    if nsn is None:
        return None
    home = _region_plan(cc, nsn)
    if home is _UNSURE:
        return None
    return _PHONE_TYPES.get(home.number_type(nsn) if home is not None else _UNKNOWN_TYPE, "other")


# ---------------------------------------------------------------------------
# folding (comparison keys)
# ---------------------------------------------------------------------------

# Letters that Unicode decomposition does not reduce to ASCII.
_FOLD_LETTERS = str.maketrans(
    {"æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ı": "i", "ß": "ss"}
)
# Apostrophes and dots are dropped so that "O'Brien" == "OBrien" and
# "e.K." == "eK"; every other non-alphanumeric run becomes one space.
_FOLD_DROP = dict.fromkeys(map(ord, ".'`´\u2019\u2018\u02bc"), None)
_FOLD_SEP_RE = re.compile(r"[\W_]+")
# The German digraph rule, see fold().
_FOLD_DIGRAPH_RE = re.compile(r"([aou])e+")


def _strip_marks(text: str) -> str:
    """Remove combining diacritical marks after NFKD decomposition."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_FOLD_LETTERS))
    return "".join(c for c in decomposed if not unicodedata.combining(c))


@lru_cache(maxsize=131072)
def _fold_cached(text: str) -> str:
    key = text.casefold()
    if not key.isascii():
        key = _strip_marks(key)
    key = key.translate(_FOLD_DROP)
    key = _FOLD_SEP_RE.sub(" ", key).strip()
    return _FOLD_DIGRAPH_RE.sub(r"\1", key)


def fold(text: str | None) -> str:
    """Return a comparison key for names and other free text.

    Never displayed; only compared.  Steps:

    1. case-fold (``ß`` → ``ss``) and strip all diacritics (NFKD), so
       ``ä ö ü é ñ`` become ``a o u e n``; ``æ œ ø ł`` are mapped explicitly;
    2. drop apostrophes and dots, turn every other run of non-alphanumeric
       characters (whitespace, hyphens, commas, ``&`` …) into one space;
    3. **digraph rule**: every ``a``, ``o`` or ``u`` followed by one or more
       ``e`` loses the ``e`` (``ae→a``, ``oe→o``, ``ue→u``), wherever it
       occurs.

    Because step 1 already turns ``ü`` into ``u``, step 3 makes the three
    German spellings collide: ``Müller``, ``Mueller`` and ``Muller`` all fold
    to ``muller``; likewise ``Schröder/Schroeder``, ``Bär/Baer``.  The rule is
    deliberately unconditional: names that merely contain these letter pairs
    are shortened too (``Michael`` → ``michal``, ``Manuel`` → ``manul``,
    ``Samuel`` → ``samul``, ``Bauer`` → ``baur``, ``Raphaël``/``Raphael`` →
    ``raphal``), but always in the same way, so any input folds identically
    however it is spelled.  The price is a few extra collisions (``Michael``
    == ``Michal``), which the fuzzy matcher has to tolerate anyway.  The
    function is idempotent: ``fold(fold(x)) == fold(x)``.
    """
    if not text:
        return ""
    if not isinstance(text, str):
        text = str(text)
    return _fold_cached(text)


# --- streets ----------------------------------------------------------------

_HN_PART = r"\d+(?:\s*[a-zA-Z](?![a-zA-Z]))?"
_HOUSE_NUMBER = rf"{_HN_PART}(?:\s*[-/–]\s*(?:{_HN_PART}|[a-zA-Z](?![a-zA-Z])))*"
_STREET_TRAILING_RE = re.compile(
    rf"(?P<name>.*?[^\d\s,/–-])[\s,]*(?:Nr\.?\s*)?(?P<num>{_HOUSE_NUMBER})", re.IGNORECASE
)
_STREET_LEADING_RE = re.compile(rf"(?P<num>{_HOUSE_NUMBER})[\s,]+(?P<name>[^\d\s].*)")

# German street types written as a separate word are glued to the word before
# ("Haupt-Strasse", "Berliner Str.") so that they equal the one-word spelling.
_STREET_JOIN = frozenset({"str", "platz", "weg", "allee", "gasse", "chaussee", "ring"})
_STREET_WORDS = {
    "strasse": "str",
    "pl": "platz",
    "street": "st",
    "road": "rd",
    "avenu": "ave",  # "avenue" after fold()'s digraph rule
    "av": "ave",
}


def split_street(street: str | None) -> tuple[str, str | None]:
    """Split a street line into ``(street name, house number)``.

    Handles the number after the name (``Hauptstraße 5a``, ``Rue de
    Lausanne 12``, ``Hauptstr.5``, ``Hauptstr. 5-7``, ``Hauptstr. 5 A``,
    Austrian ``Hauptstr. 12/3/4``) and before it (``12 Main Street``).
    Both parts are returned as written (whitespace collapsed).  When no
    house number can be identified the whole line is returned with ``None``;
    ``None``/blank input gives ``('', None)``.
    """
    if street is None:
        return "", None
    text = _collapse(_clean(street))
    if not text:
        return "", None
    match = _STREET_TRAILING_RE.fullmatch(text) or _STREET_LEADING_RE.fullmatch(text)
    if not match:
        return text, None
    name = match["name"].strip().rstrip(",").strip()
    return name, match["num"].strip()


def _street_token(token: str) -> str:
    mapped = _STREET_WORDS.get(token)
    if mapped:
        return mapped
    if token.endswith("strasse"):
        return token[:-7] + "str"
    if len(token) > 3 and token.endswith("pl"):
        return token[:-2] + "platz"
    return token


def _fold_house_number(number: str) -> str:
    number = number.casefold().replace("–", "-").replace("—", "-").replace(".", "")
    return "".join(number.split())


@lru_cache(maxsize=65536)
def _fold_street_cached(street: str) -> str:
    name, number = split_street(street)
    tokens: list[str] = []
    for token in fold(name.replace(".", " ")).split():
        token = _street_token(token)
        if token in _STREET_JOIN and tokens and not tokens[-1].isdigit():
            tokens[-1] += token
        else:
            tokens.append(token)
    if number:
        tokens.append(_fold_house_number(number))
    return " ".join(tokens)


def fold_street(street: str | None) -> str:
    """Return a comparison key for a street line (name plus house number).

    Applies :func:`fold` and then unifies spellings:

    * ``Straße``/``Strasse``/``Str.``/``str`` → ``str`` (also as a suffix:
      ``Hauptstraße`` → ``hauptstr``), ``Pl.`` → ``platz``;
    * the German street types ``str platz weg allee gasse chaussee ring``
      written as a separate word are glued to the preceding word, so
      ``Hauptstraße 5``, ``Hauptstr. 5``, ``Haupt-Strasse 5`` and ``Haupt
      Str. 5`` all give ``hauptstr 5``;
    * English ``Street``/``St.`` → ``st``, ``Road``/``Rd.`` → ``rd``,
      ``Avenue``/``Ave``/``Av.`` → ``ave``;
    * the house number is lower-cased with spaces removed: ``5 A`` → ``5a``,
      ``5 - 7`` → ``5-7``; it is always the last token (``12 Main Street``
      → ``main st 12``).
    """
    if not street:
        return ""
    if not isinstance(street, str):
        street = str(street)
    return _fold_street_cached(street)


# --- companies --------------------------------------------------------------

_LEGAL_FORMS: tuple[tuple[str, ...], ...] = tuple(
    sorted(
        (
            tuple(form.split())
            for form in (
                # German / Austrian / Swiss
                "gmbh",
                "mbh",
                "gesmbh",
                "ggmbh",
                "ag",
                "kg",
                "kgaa",
                "ohg",
                "gbr",
                "ug",
                "ug haftungsbeschrankt",
                "haftungsbeschrankt",
                "ek",
                "ekfm",
                "ekfr",
                "ev",
                "eg",
                "e k",
                "e v",
                "e g",
                "se",
                "co",
                "und co",
                "u co",
                "and co",
                "ig",
                "il",
                # English
                "ltd",
                "limited",
                "plc",
                "inc",
                "incorporated",
                "llc",
                "llp",
                "corp",
                "corporation",
                # Romance
                "sa",
                "sarl",
                "sas",
                "sagl",
                "spa",
                "srl",
                "sl",
                "sau",
                # Benelux / Nordic / Central European
                "bv",
                "nv",
                "ab",
                "oy",
                "oyj",
                "as",
                "asa",
                "aps",
                "sro",
                "kft",
                "sp z oo",
            )
        ),
        key=len,
        reverse=True,
    )
)


@lru_cache(maxsize=65536)
def _fold_company_cached(name: str) -> str:
    tokens = fold(name).split()
    changed = True
    while changed:
        changed = False
        for form in _LEGAL_FORMS:
            size = len(form)
            if len(tokens) > size and tuple(tokens[-size:]) == form:
                del tokens[-size:]
                changed = True
                break
    return " ".join(tokens)


def fold_company(name: str | None) -> str:
    """Return a comparison key for a company name without its legal form.

    Applies :func:`fold` and then repeatedly removes legal-form tokens from
    the end, so combinations such as ``GmbH & Co. KG`` or ``UG
    (haftungsbeschränkt) & Co. KG`` disappear completely.  Recognised forms
    include GmbH, mbH, GesmbH, AG, KG, KGaA, OHG, GbR, UG
    (haftungsbeschränkt), e.K., e.V., eG, SE, ``& Co.``, Ltd, Limited, PLC,
    Inc, LLC, LLP, Corp, S.A., SARL/Sàrl, SAS, SAGL, S.p.A., S.r.l., B.V.,
    N.V., AB, Oy, AS, ApS, s.r.o., Kft., sp. z o.o.  At least one token is
    always kept, so a company literally called ``AG`` stays ``ag``.
    """
    if not name:
        return ""
    if not isinstance(name, str):
        name = str(name)
    return _fold_company_cached(name)


# ---------------------------------------------------------------------------
# phonetic keys
# ---------------------------------------------------------------------------

_PHONETIC_LETTERS = str.maketrans({"Ä": "A", "Ö": "O", "Ü": "U", "ß": "S", "ẞ": "S"})
_NON_AZ_RE = re.compile(r"[^A-Z]+")


def _az_letters(word: str, sharp_s: str) -> str:
    """Upper-case ``word`` and keep only the letters A-Z (diacritics stripped)."""
    text = word.upper() if sharp_s == "S" else word.replace("ß", "ss").upper()
    text = text.translate(_PHONETIC_LETTERS)
    if not text.isascii():
        text = _strip_marks(text).upper()
    return _NON_AZ_RE.sub("", text)


_KP_VOWELS = frozenset("AEIJOUY")
_KP_C_INITIAL_HARD = frozenset("AHKLOQRUX")
_KP_C_HARD = frozenset("AHKOQUX")
_KP_SIMPLE = {
    "B": "1",
    "F": "3",
    "V": "3",
    "W": "3",
    "G": "4",
    "K": "4",
    "Q": "4",
    "L": "5",
    "M": "6",
    "N": "6",
    "R": "7",
    "S": "8",
    "Z": "8",
}


def _koelner_digits(word: str) -> str:
    """Return the uncompressed Kölner Phonetik code (step 1 of the algorithm)."""
    letters = _az_letters(word, "S")
    codes: list[str] = []
    last = len(letters) - 1
    for i, ch in enumerate(letters):
        prev = letters[i - 1] if i else ""
        nxt = letters[i + 1] if i < last else ""
        if ch in _KP_VOWELS:
            codes.append("0")
        elif ch == "H":
            continue  # H has no code
        elif ch in _KP_SIMPLE:
            codes.append(_KP_SIMPLE[ch])
        elif ch == "P":
            codes.append("3" if nxt == "H" else "1")
        elif ch in "DT":
            codes.append("8" if nxt and nxt in "CSZ" else "2")
        elif ch == "C":
            if i == 0:
                codes.append("4" if nxt in _KP_C_INITIAL_HARD else "8")
            elif prev in "SZ":
                codes.append("8")
            else:
                codes.append("4" if nxt in _KP_C_HARD else "8")
        elif ch == "X":
            codes.append("8" if prev and prev in "CKQ" else "48")
    return "".join(codes)


@lru_cache(maxsize=65536)
def _koelner_cached(word: str) -> str:
    raw = _koelner_digits(word)
    if not raw:
        return ""
    collapsed = [raw[0]]
    for digit in raw[1:]:
        if digit != collapsed[-1]:
            collapsed.append(digit)
    return collapsed[0] + "".join(d for d in collapsed[1:] if d != "0")


def koelner_phonetik(word: str | None) -> str:
    """Return the Kölner Phonetik code (Postel 1969) of ``word``.

    The German counterpart of Soundex: ``Meier``, ``Maier``, ``Mayer`` and
    ``Meyer`` all give ``67``; ``Schmidt`` and ``Schmitt`` give ``862``.

    Letters are coded by the published table including the context rules
    (``C`` depending on position and neighbours, ``D``/``T`` before
    ``C S Z``, ``P`` before ``H``, ``X`` after ``C K Q``); ``H`` has no code,
    ``Ä Ö Ü`` count as vowels and ``ß`` as ``S``; other diacritics are
    stripped and non-letters (hyphens, spaces) are ignored, so the input is
    coded as one word.  Then runs of equal digits are collapsed (``H`` does
    not break a run) and every ``0`` except a leading one is removed.
    Example: ``Müller-Lüdenscheidt`` → raw ``60550750206880022`` →
    ``65752682``.  Returns ``''`` for input without letters.
    """
    if not word:
        return ""
    return _koelner_cached(word if isinstance(word, str) else str(word))


_SOUNDEX_CODES = {
    **dict.fromkeys("BFPV", "1"),
    **dict.fromkeys("CGJKQSXZ", "2"),
    **dict.fromkeys("DT", "3"),
    "L": "4",
    **dict.fromkeys("MN", "5"),
    "R": "6",
}


def english_phonetic(word: str | None) -> str:
    """Return the American Soundex code of ``word`` (``Robert`` → ``R163``).

    This is classic four-character Soundex: first letter kept, the rest
    coded ``BFPV=1 CGJKQSXZ=2 DT=3 L=4 MN=5 R=6``, adjacent equal codes
    merged (also across ``H`` and ``W``, but not across vowels), vowels
    dropped, padded with ``0``.  Diacritics are stripped and ``ß`` becomes
    ``ss`` first.  Returns ``''`` for input without letters.
    """
    if not word:
        return ""
    letters = _az_letters(word if isinstance(word, str) else str(word), "SS")
    if not letters:
        return ""
    first = letters[0]
    result = [first]
    last = _SOUNDEX_CODES.get(first, "")
    for ch in letters[1:]:
        code = _SOUNDEX_CODES.get(ch)
        if code:
            if code != last:
                result.append(code)
                if len(result) == 4:
                    break
            last = code
        elif ch not in "HW":
            last = ""
    return "".join(result).ljust(4, "0")


# ---------------------------------------------------------------------------
# postal codes and countries
# ---------------------------------------------------------------------------

_POSTAL_PREFIX_RE = re.compile(r"^(D|DE|A|AT|CH|FL|LI)\s*-?\s*(?=\d)", re.IGNORECASE)
_POSTAL_PREFIX_COUNTRY = {
    "D": "DE",
    "DE": "DE",
    "A": "AT",
    "AT": "AT",
    "CH": "CH",
    "FL": "LI",
    "LI": "LI",
}
_POSTAL_DIGITS = {"DE": 5, "AT": 4, "CH": 4, "LI": 4}
_EXCEL_FLOAT_RE = re.compile(r"(\d+)\.0+")


def normalize_postal_code(code: str | None, country: str | None) -> str | None:
    """Normalise a postal code for ``country`` (name or code, may be ``None``).

    * Removes country prefixes such as ``D-80331``, ``CH-8001``, ``A-1010``,
      ``FL-9490`` (for DE/AT/CH/LI, or when ``country`` is not given, in
      which case the prefix determines the country); a prefix that
      contradicts ``country`` is an error.
    * DE: exactly 5 digits; a 4-digit value gets its leading zero back
      (spreadsheets turn ``01067`` into ``1067``).  AT/CH/LI: 4 digits.
      Spreadsheet float artefacts such as ``80331.0`` are repaired.
    * Other countries: upper-cased with whitespace collapsed (``sw1a 1aa`` →
      ``SW1A 1AA``).

    Returns ``None`` for blank input.  Raises :class:`NormalizationError`
    when a DE/AT/CH/LI code has the wrong shape or ``country`` is unknown.
    """
    if code is None:
        return None
    if isinstance(code, float) and code.is_integer():
        code = int(code)
    text = _collapse(_clean(code)).upper()
    if not text:
        return None
    iso = country_code(country) if country else None
    if iso is None or iso in _POSTAL_DIGITS:
        match = _POSTAL_PREFIX_RE.match(text)
        if match:
            prefix_iso = _POSTAL_PREFIX_COUNTRY[match.group(1).upper()]
            if iso and prefix_iso != iso:
                raise NormalizationError(
                    f"postal code {code!r} has the prefix of {prefix_iso} but the country is {iso}"
                )
            iso = prefix_iso
            text = text[match.end() :]
    digits = _POSTAL_DIGITS.get(iso or "")
    if digits is None:
        return text
    float_match = _EXCEL_FLOAT_RE.fullmatch(text)
    if float_match:
        text = float_match.group(1)
    text = text.replace(" ", "")
    if iso == "DE" and len(text) == 4 and text.isdigit():
        text = "0" + text
    if len(text) != digits or not text.isdigit() or not text.isascii():
        raise NormalizationError(
            f"not a valid {iso} postal code: {code!r} (expected {digits} digits)"
        )
    return text


# Extra names and codes on top of pycountry's English names.
_COUNTRY_NAMES: dict[str, tuple[str, ...]] = {
    "DE": ("Deutschland", "BRD", "Bundesrepublik Deutschland", "Allemagne", "Germania", "Alemania"),
    "AT": ("Österreich", "Oesterreich", "Autriche", "Republik Österreich"),
    "CH": (
        "Schweiz",
        "Suisse",
        "Svizzera",
        "Svizra",
        "Schwiiz",
        "Helvetia",
        "Confoederatio Helvetica",
    ),
    "LI": ("Fürstentum Liechtenstein",),
    "LU": ("Luxemburg", "Lussemburgo"),
    "NL": ("Niederlande", "Holland", "Pays-Bas", "Paesi Bassi", "The Netherlands"),
    "BE": ("Belgien", "Belgique", "België", "Belgio"),
    "FR": ("Frankreich", "Francia"),
    "IT": ("Italien", "Italie", "Italia"),
    "ES": ("Spanien", "Espagne", "Spagna", "España"),
    "PT": ("Portugal",),
    "GB": (
        "UK",
        "U.K.",
        "United Kingdom",
        "Great Britain",
        "Britain",
        "England",
        "Scotland",
        "Wales",
        "Northern Ireland",
        "Großbritannien",
        "Vereinigtes Königreich",
        "Royaume-Uni",
        "Regno Unito",
    ),
    "IE": ("Irland", "Irlande", "Irlanda"),
    "US": (
        "USA",
        "U.S.A.",
        "US",
        "U.S.",
        "United States",
        "United States of America",
        "America",
        "Vereinigte Staaten",
        "Vereinigte Staaten von Amerika",
        "Amerika",
        "États-Unis",
        "Stati Uniti",
    ),
    "DK": ("Dänemark", "Danemark", "Danimarca"),
    "SE": ("Schweden", "Suède", "Svezia"),
    "NO": ("Norwegen", "Norvège", "Norvegia"),
    "FI": ("Finnland", "Finlande", "Finlandia"),
    "PL": ("Polen", "Pologne", "Polonia"),
    "CZ": ("Tschechien", "Tschechische Republik", "Czech Republic", "République tchèque"),
    "SK": ("Slowakei", "Slovaquie", "Slovacchia"),
    "HU": ("Ungarn", "Hongrie", "Ungheria"),
    "SI": ("Slowenien", "Slovénie", "Slovenia"),
    "HR": ("Kroatien", "Croatie", "Croazia"),
    "GR": ("Griechenland", "Grèce", "Grecia"),
    "TR": ("Türkei", "Turkey", "Turquie", "Turchia"),
    "RU": ("Russland", "Russia", "Russie"),
    "RO": ("Rumänien", "Roumanie"),
    "BG": ("Bulgarien", "Bulgarie"),
    "CN": ("China", "Volksrepublik China"),
    "JP": ("Japan",),
    "KR": ("Südkorea", "Korea"),
    "VA": ("Vatikan", "Vatikanstadt", "Vatican"),
    "AE": ("UAE", "Vereinigte Arabische Emirate"),
}
# Vehicle registration codes and other non-ISO codes, matched case-insensitively.
_COUNTRY_CODES_EXTRA = {
    "D": "DE",
    "A": "AT",
    "FL": "LI",
    "L": "LU",
    "F": "FR",
    "I": "IT",
    "E": "ES",
    "P": "PT",
    "B": "BE",
    "S": "SE",
    "N": "NO",
    "H": "HU",
    "IRL": "IE",
    "SLO": "SI",
    "UK": "GB",
    "EL": "GR",
    "BRD": "DE",
    "UAE": "AE",
    "USA": "US",
}


def _build_country_tables() -> tuple[dict[str, str], dict[str, str]]:
    codes: dict[str, str] = {}
    names: dict[str, str] = {}
    ambiguous: set[str] = set()

    def add_name(name: str, alpha2: str) -> None:
        key = fold(name)
        if not key or key in ambiguous:
            return
        if names.setdefault(key, alpha2) != alpha2:
            ambiguous.add(key)
            del names[key]

    for country in pycountry.countries:
        alpha2 = country.alpha_2
        codes[alpha2] = alpha2
        codes[country.alpha_3] = alpha2
        for attr in ("name", "official_name", "common_name"):
            name = getattr(country, attr, None)
            if name:
                add_name(name, alpha2)
    for alpha2, extra in _COUNTRY_NAMES.items():
        for name in extra:
            names[fold(name)] = alpha2  # curated names win over collisions
    codes.update(_COUNTRY_CODES_EXTRA)
    return codes, names


_COUNTRY_CODES, _COUNTRY_BY_NAME = _build_country_tables()


@lru_cache(maxsize=4096)
def _country_cached(text: str) -> str | None:
    code = _COUNTRY_CODES.get(text.upper())
    if code is None:
        code = _COUNTRY_BY_NAME.get(fold(text))
    return code


def country_code(value: str | None) -> str | None:
    """Return the ISO 3166-1 alpha-2 code for a country name or code.

    Accepts alpha-2 (``de``), alpha-3 (``DEU``), vehicle codes (``D``,
    ``A``, ``CH``, ``FL``), English names from pycountry (``Germany``,
    ``Switzerland``) and a curated table of German, French and Italian
    names and colloquial variants (``Deutschland``, ``BRD``, ``Schweiz``,
    ``Suisse``, ``Svizzera``, ``Österreich``/``Oesterreich``, ``UK``,
    ``England``, ``USA``, ``Niederlande`` …).  Names are compared with
    :func:`fold`, so case, accents and punctuation do not matter.

    Returns ``None`` for blank input and raises :class:`NormalizationError`
    for anything unknown.
    """
    if value is None:
        return None
    text = _collapse(_clean(value))
    if not text:
        return None
    code = _country_cached(text)
    if code is None:
        raise NormalizationError(f"unknown country: {value!r}")
    return code


# ---------------------------------------------------------------------------
# dates and times
# ---------------------------------------------------------------------------

_ISO_DATE_RE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_ISO_DATETIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}[T ].+")
_COMPACT_DATE_RE = re.compile(r"(\d{4})(\d{2})(\d{2})")
_GERMAN_DATETIME_RE = re.compile(
    r"(\d{1,2})\.\s?(\d{1,2})\.\s?(\d{4}|\d{2})"
    r"(?:,?\s*(?:um\s+)?(\d{1,2}):(\d{2})(?::(\d{2}))?(?:\s*Uhr)?)?",
    re.IGNORECASE,
)
_SLASH_DATE_RE = re.compile(r"\d{1,2}/\d{1,2}/\d{2,4}")
_NUMBER_RE = re.compile(r"[+-]?\d+(?:\.\d+)?")
_EXCEL_EPOCH = _dt.date(1899, 12, 30)
_EXCEL_MAX_SERIAL = 2958465  # 9999-12-31


def _full_year(year: str) -> int:
    """Expand a two-digit year: 00..(current year % 100) → 2000s, else 1900s."""
    value = int(year)
    if len(year) == 2:
        return 2000 + value if value <= _dt.date.today().year % 100 else 1900 + value
    return value


def _make_date(year: int, month: int, day: int, original: Any) -> _dt.date:
    try:
        return _dt.date(year, month, day)
    except ValueError as exc:
        raise NormalizationError(f"impossible date: {original!r} ({exc})") from exc


def _excel_date(serial: float, original: Any) -> _dt.date:
    if not 1 <= serial <= _EXCEL_MAX_SERIAL:
        raise NormalizationError(f"not an Excel date serial number: {original!r}")
    return _EXCEL_EPOCH + _dt.timedelta(days=int(serial))


def parse_date(
    value: Any,
    formats: Iterable[str] | None = None,
    *,
    excel_serial: bool = False,
    fallback: bool = True,
) -> _dt.date | None:
    """Parse a date.

    ``formats`` (``strptime`` patterns) are tried first; unless
    ``fallback=False`` the automatic formats follow:

    * ISO ``2024-03-01`` (also ``2024-3-1``) and ISO date-times
      ``2024-03-01T14:05:00Z`` (the date as written is taken, no time-zone
      conversion);
    * German ``01.03.2024``, ``1.3.24`` and ``01.03.2024 14:05`` (time
      ignored); two-digit years 00..(current year % 100) are 2000s, the rest
      1900s;
    * 8 digits ``20240301`` (FEBRL style), as string or int;
    * Excel serial numbers (``45352`` → 2024-03-01) only with
      ``excel_serial=True``.

    Slash dates (``01/03/2024``) are ambiguous between European and US order
    and are only accepted through an explicit format.  ``date`` and
    ``datetime`` objects are passed through (as ``date``).  Returns ``None``
    for ``None``/blank; raises :class:`NormalizationError` on anything else,
    including impossible dates such as ``31.02.2024``.
    """
    if value is None:
        return None
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, _dt.date):
        return value
    if isinstance(value, bool):
        raise NormalizationError(f"not a date: {value!r}")
    if isinstance(value, (int, float)):
        if isinstance(value, int) and 10_000_000 <= value <= 99_999_999:
            return parse_date(str(value), formats, excel_serial=False, fallback=fallback)
        if excel_serial:
            return _excel_date(value, value)
        raise NormalizationError(f"not a date: {value!r} (numbers need excel_serial=True)")

    text = _clean(value)
    if not text:
        return None
    if formats:
        for fmt in [formats] if isinstance(formats, str) else formats:
            try:
                return _dt.datetime.strptime(text, fmt).date()
            except ValueError:
                continue
        if not fallback:
            shown = ", ".join([formats] if isinstance(formats, str) else formats)
            raise NormalizationError(f"not a date in format {shown}: {value!r}")

    match = _ISO_DATE_RE.fullmatch(text)
    if match:
        return _make_date(int(match[1]), int(match[2]), int(match[3]), value)
    match = _GERMAN_DATETIME_RE.fullmatch(text)
    if match:
        return _make_date(_full_year(match[3]), int(match[2]), int(match[1]), value)
    match = _COMPACT_DATE_RE.fullmatch(text)
    if match:
        return _make_date(int(match[1]), int(match[2]), int(match[3]), value)
    if _ISO_DATETIME_RE.fullmatch(text):
        try:
            return _dt.datetime.fromisoformat(text).date()
        except ValueError:
            iso = _ISO_DATE_RE.match(text)
            if iso:  # raise "impossible date" for 2024-02-31T…
                _make_date(int(iso[1]), int(iso[2]), int(iso[3]), value)
            raise NormalizationError(f"not a date: {value!r}") from None
    if excel_serial and _NUMBER_RE.fullmatch(text):
        return _excel_date(float(text), value)
    if _SLASH_DATE_RE.fullmatch(text):
        raise NormalizationError(
            f"ambiguous date: {value!r} (day/month order unknown; pass an explicit format)"
        )
    raise NormalizationError(f"not a date: {value!r}")


_EPOCH_RE = re.compile(r"-?\d+(?:\.\d+)?")
_EPOCH_MS_THRESHOLD = 100_000_000_000  # 1e11: as seconds year 5138, as ms 1973-03-03


def _resolve_tz(tz: _dt.tzinfo | str | None) -> _dt.tzinfo:
    if tz is None:
        return _dt.timezone.utc
    if isinstance(tz, str):
        from zoneinfo import ZoneInfo

        return ZoneInfo(tz)
    return tz


def _from_epoch(number: float, unit: str, original: Any) -> _dt.datetime:
    if unit == "auto":
        unit = "ms" if abs(number) >= _EPOCH_MS_THRESHOLD else "s"
    seconds = number / 1000 if unit == "ms" else number
    try:
        return _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc) + _dt.timedelta(seconds=seconds)
    except OverflowError as exc:
        raise NormalizationError(f"epoch timestamp out of range: {original!r}") from exc


def parse_datetime(
    value: Any,
    assume_tz: _dt.tzinfo | str | None = None,
    *,
    epoch_unit: str = "auto",
) -> _dt.datetime | None:
    """Parse a point in time and return an aware ``datetime``.

    Accepts ISO 8601 (``2024-03-01T14:05:00Z``, ``+01:00`` offsets, space
    instead of ``T``, date only), German ``01.03.2024 14:05[:30] [Uhr]``,
    FEBRL ``20240301``, Unix epochs as int/float/string (HubSpot sends
    milliseconds) and ``date``/``datetime`` objects.

    Values without a time zone are interpreted in ``assume_tz`` (a
    ``tzinfo`` or IANA name such as ``"Europe/Berlin"``; default UTC).
    Values with an offset keep it.  ``epoch_unit`` is ``"s"``, ``"ms"`` or
    ``"auto"``: magnitudes of at least 1e11 are milliseconds (from
    1973-03-03 on), smaller ones seconds.  An 8-digit integer is read as
    ``YYYYMMDD``, not as an epoch.

    Returns ``None`` for ``None``/blank; raises :class:`NormalizationError`
    otherwise.
    """
    if value is None:
        return None
    if epoch_unit not in ("auto", "s", "ms"):
        raise ValueError(f"epoch_unit must be 'auto', 's' or 'ms', not {epoch_unit!r}")
    tz = _resolve_tz(assume_tz)
    if isinstance(value, _dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=tz)
    if isinstance(value, _dt.date):
        return _dt.datetime(value.year, value.month, value.day, tzinfo=tz)
    if isinstance(value, bool):
        raise NormalizationError(f"not a date/time: {value!r}")
    if isinstance(value, (int, float)):
        text = repr(value)
    else:
        text = _clean(value)
        if not text:
            return None

    if _EPOCH_RE.fullmatch(text):
        if len(text) == 8 and text.isdigit():
            day = parse_date(text)
            assert day is not None
            return _dt.datetime(day.year, day.month, day.day, tzinfo=tz)
        return _from_epoch(float(text) if "." in text else int(text), epoch_unit, value)

    match = _GERMAN_DATETIME_RE.fullmatch(text)
    if match:
        day = _make_date(_full_year(match[3]), int(match[2]), int(match[1]), value)
        hour, minute, second = (int(match[i] or 0) for i in (4, 5, 6))
        try:
            return _dt.datetime(day.year, day.month, day.day, hour, minute, second, tzinfo=tz)
        except ValueError as exc:
            raise NormalizationError(f"impossible time: {value!r} ({exc})") from exc

    if _ISO_DATE_RE.match(text) or _COMPACT_DATE_RE.match(text):
        try:
            parsed = _dt.datetime.fromisoformat(text)
        except ValueError:
            parsed = None
        if parsed is not None:
            return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=tz)
        parse_date(text[:10])  # raises "impossible date" when that is the problem
    raise NormalizationError(f"not a date/time: {value!r}")


# ---------------------------------------------------------------------------
# decimals
# ---------------------------------------------------------------------------

_CURRENCY_RE = re.compile(
    r"(?<![A-Za-z])(?:EUR|CHF|USD|GBP|JPY|SFR\.?|Fr\.)(?![A-Za-z])|[€$£¥]",
    re.IGNORECASE,
)
_DECIMAL_NOISE = dict.fromkeys(map(ord, " '\u2019\u00a0\u202f\u2009\u2007"), None)
_SWISS_ZERO_RE = re.compile(r"[.,][-–—]+$")
_MINUS = "-\u2212\u2013"
_DECIMAL_CHARS_RE = re.compile(r"[\d.,]*\d[\d.,]*")
_SCI_RE = re.compile(r"\d+(?:\.\d+)?[eE][+-]?\d+")


def _grouped(part: str, sep: str) -> bool:
    """True if ``part`` is digits grouped in threes by ``sep`` (``1.234.567``)."""
    groups = part.split(sep)
    return (
        1 <= len(groups[0]) <= 3
        and groups[0].isdigit()
        and all(len(g) == 3 and g.isdigit() for g in groups[1:])
    )


def parse_decimal(value: Any, decimal_comma: bool | None = None) -> Decimal | None:
    """Parse a human-written number into an exact ``Decimal``.

    Currency symbols and codes (``€ $ £ EUR CHF USD GBP Fr. SFr.``),
    spaces, non-breaking spaces and Swiss apostrophes (``1'234.50``) are
    ignored.  Negative numbers are written ``-12,50``, ``(12,50)`` or
    ``12,50-``.  The Swiss ``99.–``/``99.-`` means ``99.00``.

    Separator rule (``.`` and ``,``):

    1. both present: the one that occurs last is the decimal separator and
       the other must group the integer part in threes (``1.234,56``,
       ``1,234.56``);
    2. one kind occurring more than once: thousands separator
       (``1.234.567``);
    3. a single separator: it is the decimal separator if it is the one
       declared by ``decimal_comma`` (``,`` for True, ``.`` for False);
       otherwise it is a thousands separator if exactly three digits follow
       and one to three digits not starting with 0 precede it, else the
       decimal separator.  So with ``decimal_comma=None`` (guess) or True,
       ``1.234`` is 1234, while ``1.5``, ``0.125`` and ``12,5`` are
       fractions; with ``decimal_comma=None`` ``1,234`` is also 1234.  Pass
       ``decimal_comma`` per source whenever it is known.

    ``int``/``float``/``Decimal`` inputs are converted directly (floats via
    their shortest ``repr``).  Returns ``None`` for ``None``/blank; raises
    :class:`NormalizationError` on anything else.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise NormalizationError(f"not a number: {value!r}")
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise NormalizationError(f"not a finite number: {value!r}")
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise NormalizationError(f"not a finite number: {value!r}")
        return Decimal(repr(value))

    text = _clean(value)
    if not text:
        return None
    text = _CURRENCY_RE.sub("", text).translate(_DECIMAL_NOISE)
    negative = False
    if text.startswith("(") and text.endswith(")"):
        negative, text = True, text[1:-1]
    swiss_zero = bool(_SWISS_ZERO_RE.search(text))
    if swiss_zero:
        text = _SWISS_ZERO_RE.sub("", text)
    if text[:1] in _MINUS and len(text) > 1:
        negative, text = not negative, text[1:]
    elif text.startswith("+"):
        text = text[1:]
    elif text.endswith("-") and len(text) > 1:
        negative, text = not negative, text[:-1]

    if _SCI_RE.fullmatch(text):
        number = Decimal(text)
    elif _DECIMAL_CHARS_RE.fullmatch(text):
        number = _decimal_from_digits(text, decimal_comma, value)
    else:
        raise NormalizationError(f"not a number: {value!r}")
    if swiss_zero:
        number = number.quantize(Decimal("0.01"))
    return -number if negative else number


def _decimal_from_digits(text: str, decimal_comma: bool | None, original: Any) -> Decimal:
    has_dot, has_comma = "." in text, "," in text
    integer, fraction = text, ""
    if has_dot and has_comma:
        decimal_sep = "," if text.rfind(",") > text.rfind(".") else "."
        group_sep = "." if decimal_sep == "," else ","
        integer, _, fraction = text.rpartition(decimal_sep)
        if decimal_sep in integer or not _grouped(integer, group_sep):
            raise NormalizationError(f"not a number: {original!r} (inconsistent separators)")
        integer = integer.replace(group_sep, "")
    elif has_dot or has_comma:
        sep = "." if has_dot else ","
        if text.count(sep) > 1:
            if not _grouped(text, sep):
                raise NormalizationError(f"not a number: {original!r} (bad digit grouping)")
            integer = text.replace(sep, "")
        else:
            head, _, tail = text.partition(sep)
            declared = decimal_comma is not None and (sep == ",") == decimal_comma
            if not declared and len(tail) == 3 and 1 <= len(head) <= 3 and head[0] != "0":
                integer = head + tail
            else:
                integer, fraction = head or "0", tail
    try:
        return Decimal(f"{integer}.{fraction}" if fraction else integer)
    except InvalidOperation as exc:  # pragma: no cover - guarded by the regexes
        raise NormalizationError(f"not a number: {original!r}") from exc


# ---------------------------------------------------------------------------
# personal names
# ---------------------------------------------------------------------------

_PARTICLES = frozenset(
    {
        "von",
        "van",
        "de",
        "der",
        "den",
        "del",
        "della",
        "di",
        "da",
        "du",
        "dos",
        "das",
        "zu",
        "zum",
        "zur",
        "vom",
        "ten",
        "ter",
        "le",
        "la",
        "y",
        "und",
    }
)
# Particles that start a surname; "y"/"und" only join parts of one ("von und zu").
_SURNAME_STARTS = _PARTICLES - {"y", "und"}
_ROMAN_NUMERALS = frozenset({"ii", "iii", "iv", "vi", "vii", "viii"})
_APOSTROPHES = "'\u2019"


def _title_word(word: str) -> str:
    """Title-case one whitespace-free word, respecting hyphens and apostrophes."""
    parts = word.split("-")
    out = []
    for part in parts:
        lower = part.lower()
        if not lower:
            out.append(lower)
            continue
        if lower in _PARTICLES:
            out.append(lower)
            continue
        if lower in _ROMAN_NUMERALS:
            out.append(lower.upper())
            continue
        cased = lower[:1].upper() + lower[1:]
        # O'Brien, D'Angelo: capitalise after an apostrophe following one letter.
        if len(cased) > 2 and cased[1] in _APOSTROPHES:
            cased = cased[:2] + cased[2:].capitalize()
        out.append(cased)
    return "-".join(out)


def normalize_name(value: str | None) -> str | None:
    """Clean up a personal name for display.

    Strips and collapses whitespace.  Names written entirely in upper case
    or entirely in lower case are title-cased: particles (``von van de der
    zu di da`` …) stay lower-case unless the name consists only of
    particles, both halves of double names are capitalised
    (``MÜLLER-LÜDENSCHEIDT`` → ``Müller-Lüdenscheidt``), ``O'BRIEN`` →
    ``O'Brien``.  Mixed-case input (``McDonald``, ``van der Berg``) is kept
    exactly as given.  Returns ``None`` for ``None``/blank input.
    """
    if value is None:
        return None
    text = _collapse(_clean(value))
    if not text:
        return None
    # "ß" has no capital in ordinary writing, so "STRAUß" counts as all-caps.
    if not (text.replace("ß", "").isupper() or text.islower()):
        return text
    words = text.split(" ")
    if all(w.lower() in _PARTICLES for w in words):
        return " ".join(w.lower().capitalize() for w in words)
    return " ".join(_title_word(w) for w in words)


# Compared after lower-casing and removing dots.
_TITLES = frozenset(
    {
        "dr",
        "prof",
        "professor",
        "herr",
        "frau",
        "hr",
        "fr",
        "mr",
        "mrs",
        "ms",
        "miss",
        "mx",
        "sir",
        "dres",
        "dr-ing",
        "drmed",
        "dipl",
        "dipl-ing",
        "dipl-kfm",
        "dipl-kffr",
        "dipl-inf",
        "dipl-psych",
        "dipl-oec",
        "ing",
        "mag",
        "med",
        "dent",
        "vet",
        "phil",
        "rer",
        "nat",
        "pol",
        "oec",
        "jur",
        "hc",
        "univ-prof",
        "priv-doz",
        "phd",
        "mba",
        "msc",
        "bsc",
        "llm",
        "mdb",
        "mdl",
    }
)


def _is_title(token: str) -> bool:
    return token.lower().replace(".", "").strip(",") in _TITLES


def _strip_titles(tokens: list[str]) -> list[str]:
    start, end = 0, len(tokens)
    while start < end and _is_title(tokens[start]):
        start += 1
    while end > start and _is_title(tokens[end - 1]):
        end -= 1
    return tokens[start:end]


def split_full_name(value: str | None) -> tuple[str | None, str | None]:
    """Split a full name into ``(first names, last name)``.

    * Academic titles and salutations are removed wherever they lead or
      trail the name (``Dr.``, ``Prof.``, ``Herr``, ``Frau``, ``Mr``,
      ``Mrs``, ``Ms``, ``Dipl.-Ing.``, ``Mag.``, ``Dr. med.``, ``PhD`` …).
    * ``Last, First`` is understood (``Schmidt, Anna``).
    * Name particles stay with the last name: ``Richard von Weizsäcker`` →
      ``('Richard', 'von Weizsäcker')``; otherwise the last word is the last
      name and everything before it the first names, except that ``y``/``und``
      join two surnames (``Juan García y Pérez`` → ``('Juan', 'García y
      Pérez')``).
    * A single word is taken as the last name: ``('', …)`` is never
      returned, missing parts are ``None``.

    Parts keep the input's spelling; combine with :func:`normalize_name`
    for display.  ``None``/blank input gives ``(None, None)``.
    """
    if value is None:
        return None, None
    text = _collapse(_clean(value))
    if not text:
        return None, None
    if "," in text:
        last_part, _, first_part = text.partition(",")
        first_tokens = _strip_titles(first_part.replace(",", " ").split())
        last_tokens = _strip_titles(last_part.split())
        if first_tokens and last_tokens:
            return " ".join(first_tokens), " ".join(last_tokens)
        # "Hans Meier, Dipl.-Ing.": the part after the comma was only titles.
        text = " ".join(last_tokens or first_tokens)
    tokens = _strip_titles(text.replace(",", " ").split())
    if not tokens:
        return None, None
    if len(tokens) == 1:
        return None, tokens[0]
    split_at = len(tokens) - 1
    for i in range(1, len(tokens) - 1):
        if tokens[i].lower() in _SURNAME_STARTS:
            split_at = i
            break
    # "García y Pérez": a connector joins the word before it to the last name.
    while split_at >= 3 and tokens[split_at - 1].lower() in ("y", "und"):
        split_at -= 2
    first = " ".join(tokens[:split_at])
    return first, " ".join(tokens[split_at:])
