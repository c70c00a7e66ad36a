"""Proof that the phone fast path of ``synchub.normalize`` answers exactly like phonenumbers.

``normalize_phone``, ``normalize_phone_lenient`` and ``phone_type`` answer plain numbers
without phonenumbers' parser (``_phone_fast`` / ``_phone_type_fast``) and fall back to it for
anything else. This script generates a large seeded corpus of phone-number inputs and calls the
three functions on every (input, region) pair twice: once with the fast path switched off
(``normalize._PHONE_FASTPATH = False``, the phonenumbers path as it always was) and once with it
on, and compares the outcomes: the same E.164 string and verified flag, the same type, or the
same exception with the same message. ``phone_type`` is asked about every number the lenient
call returns and about the raw input itself.

The corpus (reproducible per seed; chunk ``k`` of ``CHUNK`` inputs comes from its own
``random.Random``, so the result does not depend on ``--jobs``):

* realistic numbers of DE, AT, CH, US, CA, GB (and its crown dependencies), FR, IT, NL, PL and
  every other region phonenumbers knows (its example numbers with random digits after a kept
  prefix), in many written forms: national with and without trunk ``0``, ``+CC``, ``00CC``,
  ``+CC (0)``, ``+CC 0``, ``CC`` without ``+``, ``011`` from the US, brackets around the area code,
  spaces, dashes, slashes, dots; valid, possible-only, too short and too long;
* the same with decorations: ``Tel.:``/``Mobil``/``tel:`` labels, ``(privat)`` notes,
  extensions, trailing junk, NBSP, zero-width and full-width characters, vanity letters;
* junk: placeholders, dates, e-mails, postcodes, random digit and character soup, huge strings;
* spreadsheet damage: scientific notation in strings, floats, ints, bools, ``None``;
* ``+digits`` strings of random country codes and lengths (mostly for ``phone_type``);

each asked with the region it was written for and with another one (wrong country, ``None``,
lower case, blanks, unknown codes such as ``XX``). Usage (from the repo root)::

    .venv/bin/python bench/phone_corpus.py                      # 1,000,000 inputs, seed 1
    .venv/bin/python bench/phone_corpus.py --inputs 200000 --seed 7 --jobs 4

Prints the number of comparisons and mismatches (exit status 1 if there is any), the share of
inputs the fast path answered itself, and µs per call of both paths on the corpus and on the
phone numbers of the sync benchmark (``bench/sync_bench.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import phonenumbers

from synchub import normalize

#: Inputs per independently seeded chunk.
CHUNK = 10_000

Case = tuple[str, Any, Any]  # (category, value, region)
Outcome = tuple[Any, ...]

# --- number material --------------------------------------------------------------------------

# (region, national significant number prefix, total NSN length) of realistic ranges, some of
# them deliberately a digit short or long.
_REALISTIC: dict[str, list[tuple[str, int]]] = {
    "DE": [(p, n) for p in ("151", "152", "155", "157", "159", "160", "162", "163", "170", "171",
                            "172", "173", "174", "175", "176", "177", "178", "179") for n in (10, 11)]
    + [(p, n) for p in ("30", "40", "89", "69", "221", "211", "711", "341", "351", "511", "911",
                        "201", "228", "421", "611", "621", "761", "841", "2131", "6221", "7031",
                        "8031", "33056", "35205", "38851", "3328") for n in (7, 8, 9, 10, 11)]
    + [("800", 10), ("800", 11), ("900", 10), ("180", 9), ("700", 11), ("32", 11), ("116", 6),
       ("1", 12), ("199", 8), ("0", 10)],
    "AT": [(p, n) for p in ("1", "316", "512", "662", "732", "463", "2236", "5574") for n in (6, 7, 8, 9, 10)]
    + [(p, n) for p in ("650", "660", "664", "676", "680", "681", "688", "699") for n in (9, 10, 11, 12)]
    + [("800", 9), ("900", 9), ("720", 9), ("417", 10)],
    "CH": [(p, n) for p in ("21", "22", "24", "26", "31", "32", "33", "41", "43", "44", "52",
                            "55", "61", "62", "71", "81", "91") for n in (8, 9, 10)]
    + [(p, n) for p in ("75", "76", "77", "78", "79") for n in (9, 10)]
    + [("800", 9), ("900", 9), ("840", 9), ("58", 9), ("860", 12)],
    "US": [(p, n) for p in ("212", "213", "312", "415", "617", "650", "202", "305", "713", "206",
                            "555", "123", "100", "011", "911") for n in (7, 10, 11)]
    + [("800", 10), ("888", 10), ("900", 10)],
    "CA": [(p, 10) for p in ("416", "604", "514", "403", "613", "902", "310", "600")],
    "GB": [(p, n) for p in ("20", "121", "131", "141", "161", "113", "1481", "1534", "1624",
                            "7911", "7700", "7624", "7781", "7839", "1302", "16977") for n in (9, 10, 11)]
    + [("800", 10), ("845", 10), ("870", 10), ("56", 10), ("3", 10), ("8001111", 7)],
    "FR": [(p, n) for p in ("1", "2", "3", "4", "5", "6", "7", "9", "80", "89") for n in (8, 9, 10)],
    "IT": [(p, n) for p in ("02", "06", "011", "055", "081", "0471", "0776", "30", "320", "333",
                            "347", "380", "39", "800", "899") for n in (6, 8, 9, 10, 11)],
    "NL": [(p, n) for p in ("20", "10", "70", "30", "6", "85", "88", "800", "900", "97") for n in (8, 9, 10)],
    "PL": [(p, n) for p in ("22", "12", "61", "71", "500", "501", "600", "601", "690", "700",
                            "800", "880") for n in (8, 9, 10)],
}
#: Where realistic numbers come from: the hand-written regions, weighted; the rest uniformly.
_MAIN_REGIONS = ["DE"] * 30 + ["AT"] * 8 + ["CH"] * 8 + ["US"] * 6 + ["CA"] * 2 + ["GB"] * 6 \
    + ["FR"] * 4 + ["IT"] * 4 + ["NL"] * 4 + ["PL"] * 4
_ALL_REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
_TYPES = [phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE,
          phonenumbers.PhoneNumberType.TOLL_FREE, phonenumbers.PhoneNumberType.PREMIUM_RATE,
          phonenumbers.PhoneNumberType.VOIP, phonenumbers.PhoneNumberType.PERSONAL_NUMBER,
          phonenumbers.PhoneNumberType.PAGER, phonenumbers.PhoneNumberType.UAN,
          phonenumbers.PhoneNumberType.SHARED_COST, phonenumbers.PhoneNumberType.VOICEMAIL]
#: Regions asked besides the one a number was written for.
_OTHER_REGIONS = [None, None, "DE", "DE", "AT", "CH", "US", "GB", "FR", "IT", "NL", "PL", "CA",
                  "GG", "IM", "JE", "AU", "BR", "AR", "RU", "KZ", "CN", "JP", "IN", "LT", "MX",
                  "BY", "VA", "XX", "ZZ", "001", "UK", "de", " at ", "", "  ", "Ch"]
_CC_LIST = sorted(phonenumbers.COUNTRY_CODE_TO_REGION_CODE)


def _examples() -> dict[str, list[str]]:
    """phonenumbers' example national numbers of every region and type (the digits only)."""
    out: dict[str, list[str]] = {}
    for region in _ALL_REGIONS:
        nums = []
        for kind in _TYPES:
            ex = phonenumbers.example_number_for_type(region, kind)
            if ex is not None:
                nums.append(phonenumbers.national_significant_number(ex))
        out[region] = nums or ["12345678"]
    return out


_EXAMPLES = _examples()
_META = {r: phonenumbers.PhoneMetadata.metadata_for_region(r) for r in _ALL_REGIONS}


def _digits(r: random.Random, n: int) -> str:
    return "".join(r.choice("0123456789") for _ in range(n))


def _nsn(r: random.Random) -> tuple[str, str]:
    """(region, national significant number) of a realistic, nearly realistic or made-up number."""
    x = r.random()
    if x < 0.65:
        region = r.choice(_MAIN_REGIONS)
        prefix, length = r.choice(_REALISTIC[region])
        length += r.choice((0, 0, 0, 0, 0, 0, -1, 1, -2, 2, -4))
        if r.random() < 0.06:  # short numbers, local numbers without their area code
            length = r.randint(3, 6)
        return region, prefix + _digits(r, max(length - len(prefix), 0))
    region = r.choice(_MAIN_REGIONS) if x < 0.8 else r.choice(_ALL_REGIONS)
    example = r.choice(_EXAMPLES[region])
    keep = r.randint(1, max(len(example) - 1, 1))
    length = len(example) + r.choice((0, 0, 0, 0, -1, 1, -3, 3))
    if r.random() < 0.06:
        length = r.randint(3, 6)
    return region, example[:keep] + _digits(r, max(length - keep, 0))


# --- written forms ----------------------------------------------------------------------------

_SEPARATORS = [" ", " ", " ", "-", "/", ".", "", " - ", " / ", "  ", "-", " "]


def _group(r: random.Random, digits: str, *, bracket_first: bool = False) -> str:
    """The digits in random groups of 1-5 with one (sometimes varying) separator."""
    if not digits:
        return ""
    sep = r.choice(_SEPARATORS)
    parts, i = [], 0
    while i < len(digits):
        k = r.randint(1, 5) if r.random() < 0.7 else r.randint(2, 4)
        parts.append(digits[i:i + k])
        i += k
    if bracket_first and len(parts) > 1:
        parts[0] = f"({parts[0]})"
    if r.random() < 0.15:
        return "".join(p + r.choice(_SEPARATORS) for p in parts).rstrip(" -/.")
    return sep.join(parts)


def _written(r: random.Random, region: str, nsn: str) -> str:
    """One way a person or a system writes +CC nsn (meant for ``region``)."""
    meta = _META[region]
    cc = str(meta.country_code)
    trunk = meta.national_prefix or ""
    if r.random() < 0.05:
        trunk = r.choice(("0", "", "1", "8"))
    split = r.randint(1, 4) if len(nsn) > 5 else 1
    area, rest = nsn[:split], nsn[split:]
    form = r.randrange(22)
    if form <= 4:  # national
        head = trunk + area
        if r.random() < 0.15:
            return f"({head}) {_group(r, rest)}"
        if r.random() < 0.2:
            return f"{head}/{_group(r, rest)}"
        return _group(r, trunk + nsn)
    if form <= 8:  # +CC
        return "+" + cc + r.choice((" ", " ", "", "-", "/", " - ")) + _group(r, nsn, bracket_first=r.random() < 0.1)
    if form == 9:
        return f"+{cc}{r.choice((' ', ''))}(0){r.choice((' ', '', '  '))}{_group(r, nsn)}"
    if form == 10:
        return f"+{cc} ({trunk or '0'}{area}) {_group(r, rest)}"
    if form == 11:
        return f"+{cc} {trunk or '0'}{_group(r, nsn)}"
    if form == 12:
        return f"00{cc} {_group(r, nsn)}"
    if form == 13:
        return r.choice(("00 ", "+00", "+00 ", "0 0", "000", "00", "+ 00")) + cc + " " + _group(r, nsn)
    if form == 14:
        return f"011 {cc} {_group(r, nsn)}"
    if form == 15:
        return cc + r.choice((" ", "", "-")) + _group(r, nsn)
    if form == 16:
        return f"{cc}{trunk}{nsn}"
    if form == 17:
        return f"+ {cc} {_group(r, nsn)}"
    if form == 18:  # NANP styles, whatever the region
        d = nsn.rjust(10, "5")[-10:]
        return r.choice((f"({d[:3]}) {d[3:6]}-{d[6:]}", f"1-{d[:3]}-{d[3:6]}-{d[6:]}",
                         f"+1 ({d[:3]}) {d[3:6]}-{d[6:]}", f"{d[:3]}.{d[3:6]}.{d[6:]}",
                         f"1 {d[:3]} {d[3:6]} {d[6:]}", f"{d[3:6]}-{d[6:]}"))
    if form == 19:  # plain digits, maybe with the trunk
        return r.choice(("", trunk)) + nsn
    if form == 20:
        return "+" + cc + nsn
    return r.choice(("(", "-", ".", "/", " ")) + _group(r, trunk + nsn) + r.choice((")", "-", ".", "/", " ", ""))


# --- decorations, junk and spreadsheet damage -------------------------------------------------

_LABELS = ["Tel: ", "Tel.: ", "Tel. ", "tel:", "TEL:", "Telefon ", "Mobil: ", "Mobil ", "Handy: ",
           "Fax ", "callto:", "Phone: ", "T ", "M: ", "☎ ", "Festnetz: ", "tel: ", "Tel:\t"]
_NOTES = [" (mobil)", " (privat)", " (Zentrale)", " (geschäftlich", " mobil", " privat", " ext. 12",
          " x123", " ext 4567", " Durchwahl -12", "#", " #12", " / 23", ",", ";", " - 12", " -0",
          ";ext=12", ";isub=12", " ,,12", " (0)", " / x12", " oder 0171 1234567", " (AB)", " tagsüber"]
_JUNK = ["", " ", "\t", "-", "--", ".", "/", "keine", "n/a", "N/A", "unbekannt", "kein Telefon",
         "0", "00", "000", "0000", "+", "++", "+0", "+00", "+1", "12", "1-2", "12-", "(12)", "123",
         "1234", "+49", "+49 ", "0049", "+4", "+49 (0)", "(0)", "x", "ruf an 0x", "test@example.de",
         "01.03.2024", "2024-03-01", "80331", "D-80331", "DE89 3704 0044 0532 0130 00", "null",
         "None", "NaN", "#N/A", "0171-", "+49-", "tel:", "tel:;phone-context=+49", "1-800-FLOWERS",
         "0800 FLOWERS", "+1 800 CALL NOW", "o171 1234567", "O30 1234567", "+49 l71 1234567",
         "0171 123 456 789 012 345 678", "+49 171 1234567 / +49 30 1234567", "0171 1234567, 030 123456",
         "+++49 171 1234567", "+49+171", "49+171", "*100#", "**21*0171#", "+-49 171", "++49 30 12345"]
_FULLWIDTH = str.maketrans("0123456789+", "０１２３４５６７８９＋")
_ARABIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def _decorate(r: random.Random, text: str) -> str:
    x = r.randrange(12)
    if x <= 2:
        return r.choice(_LABELS) + text
    if x <= 5:
        return text + r.choice(_NOTES)
    if x == 6:
        return r.choice(_LABELS) + text + r.choice(_NOTES)
    if x == 7:
        return text.replace(" ", r.choice(("\u00a0", "\u202f", "\t", "  ", "\u3000")))
    if x == 8:
        i = r.randrange(len(text) + 1)
        return text[:i] + r.choice(("\u200b", "\u00ad", "\ufeff", "\u2060", "\u2011", "\u2013")) + text[i:]
    if x == 9:
        return text.translate(_FULLWIDTH if r.random() < 0.7 else _ARABIC)
    if x == 10:
        return r.choice((" ", "\n", "  ", "\t", "\r\n")) + text + r.choice((" ", "\n", "", "\t"))
    i = r.randrange(len(text) + 1)
    return text[:i] + r.choice("abcxXlLoO#*,;:_~'\"[]{}!?&+") + text[i:]


def _junk(r: random.Random) -> str:
    x = r.randrange(6)
    if x <= 1:
        return r.choice(_JUNK)
    if x == 2:  # digit soup
        return _group(r, _digits(r, r.choice((1, 2, 3, 4, 5, 6, 12, 15, 17, 18, 19, 20, 25, 40))))
    if x == 3:
        return (r.choice(("+", "00", "", "0")) + _digits(r, r.randint(1, 30)))
    if x == 4:  # character soup
        return "".join(r.choice("0123456789 +-()/.xX#*;,:abcdeTel") for _ in range(r.randint(1, 24)))
    return r.choice(("+49 ", "0", "+1 ", "")) + "1" * r.choice((60, 120, 240, 251, 300))


def _spreadsheet(r: random.Random) -> Any:
    nsn = _nsn(r)[1]
    cc = str(_META[r.choice(_MAIN_REGIONS)].country_code)
    digits = cc + nsn
    x = r.randrange(8)
    if x == 0:
        return float(digits)
    if x == 1:
        return int(digits)
    if x == 2:
        return int(nsn)
    if x == 3:
        return r.choice((True, False, None, 0, 12, 0.0))
    mant = digits[0] + r.choice((".", ",")) + digits[1:r.randint(2, len(digits))]
    exp = f"{r.choice(('E', 'e'))}{r.choice(('+', '', '-'))}{len(digits) - 1}"
    return r.choice(("", "-", "+")) + mant + exp + r.choice(("", " ", ""))


def _e164ish(r: random.Random) -> str:
    cc = str(r.choice(_CC_LIST))
    if r.random() < 0.5:
        region, nsn = _nsn(r)
        if r.random() < 0.7:
            cc = str(_META[region].country_code)
        return "+" + cc + nsn
    return "+" + cc + _digits(r, r.randint(0, 18))


def chunk_cases(seed: int, k: int) -> list[Case]:
    """The cases of chunk ``k``: CHUNK inputs, each with its own region and another one."""
    r = random.Random(seed * 1_000_003 + k)
    out: list[Case] = []
    for _ in range(CHUNK):
        x = r.random()
        other = r.choice(_OTHER_REGIONS)
        if x < 0.70:
            region, nsn = _nsn(r)
            text = _written(r, region, nsn)
            if r.random() < 0.04:
                region = region.lower()
            out.append(("plain", text, region))
        elif x < 0.84:
            region, nsn = _nsn(r)
            out.append(("decorated", _decorate(r, _written(r, region, nsn)), region))
        elif x < 0.92:
            region = r.choice(_MAIN_REGIONS)
            out.append(("junk", _junk(r), region))
        elif x < 0.96:
            region = r.choice(_MAIN_REGIONS)
            out.append(("spreadsheet", _spreadsheet(r), region))
        else:
            region = r.choice(_MAIN_REGIONS)
            out.append(("e164", _e164ish(r), region))
        out.append((out[-1][0], out[-1][1], other))
    return out


def cases(n_inputs: int, seed: int) -> Iterator[Case]:
    """``n_inputs`` generated inputs (rounded up to whole chunks), two regions each."""
    for k in range((n_inputs + CHUNK - 1) // CHUNK):
        yield from chunk_cases(seed, k)


# --- comparison -------------------------------------------------------------------------------


def _call(fn: Callable[..., Any], *args: Any) -> Outcome:
    try:
        return ("ok", fn(*args))
    except Exception as exc:  # the exception type and message are part of the contract
        return ("raised", type(exc).__name__, str(exc))


@contextlib.contextmanager
def fastpath(enabled: bool) -> Iterator[None]:
    """Switch the fast path of ``synchub.normalize`` on or off for the block."""
    before = normalize._PHONE_FASTPATH
    normalize._PHONE_FASTPATH = enabled
    try:
        yield
    finally:
        normalize._PHONE_FASTPATH = before


def outcomes(value: Any, region: Any, with_raw_type: bool = True) -> Outcome:
    """Everything the public functions say about ``value`` in ``region`` (with the current path)."""
    lenient = _call(normalize.normalize_phone_lenient, value, region)
    strict = _call(normalize.normalize_phone, value, region)
    kind = None
    if lenient[0] == "ok" and lenient[1][0] is not None:
        kind = _call(normalize.phone_type, lenient[1][0])
    raw_kind = _call(normalize.phone_type, value) if with_raw_type else None
    return lenient, strict, kind, raw_kind


def slow_outcomes(value: Any, region: Any, with_raw_type: bool = True) -> Outcome:
    with fastpath(False):
        return outcomes(value, region, with_raw_type)


def fast_outcomes(value: Any, region: Any, with_raw_type: bool = True) -> Outcome:
    with fastpath(True):
        return outcomes(value, region, with_raw_type)


def handled_by_fast_path(value: Any, region: Any) -> bool:
    """Whether normalize_phone_lenient answers ``value`` without phonenumbers' parser."""
    if value is None or isinstance(value, (bool, float)):
        return False
    raw = value if isinstance(value, str) else str(value)
    if isinstance(region, str):
        region = region.strip().upper() or None
    elif region is not None:
        return False
    return normalize._phone_fast(raw, region) is not None


def compare(
    items: Iterator[Case] | list[Case],
    fast: Callable[[Any, Any, bool], Outcome] = fast_outcomes,
    slow: Callable[[Any, Any, bool], Outcome] = slow_outcomes,
    *,
    keep: int = 50,
) -> dict[str, Any]:
    """Compare ``fast`` and ``slow`` on every case; the first ``keep`` mismatches are kept."""
    compared = mismatches = 0
    handled: Counter[str] = Counter()
    total: Counter[str] = Counter()
    examples: list[tuple[Any, Any, Outcome, Outcome]] = []
    previous = object()
    for category, value, region in items:
        # phone_type of the raw input does not depend on the region: ask once per input.
        with_raw = value is not previous
        previous = value
        a, b = fast(value, region, with_raw), slow(value, region, with_raw)
        compared += 1
        total[category] += 1
        handled[category] += handled_by_fast_path(value, region)
        if a != b:
            mismatches += 1
            if len(examples) < keep:
                examples.append((value, region, a, b))
    return {"compared": compared, "mismatches": mismatches, "examples": examples,
            "handled": handled, "total": total}


def _compare_chunk(args: tuple[int, int]) -> dict[str, Any]:
    seed, k = args
    return compare(chunk_cases(seed, k))


# --- timing -----------------------------------------------------------------------------------


def _clear_caches() -> None:
    normalize._phone_cached.cache_clear()
    normalize._phone_type_slow.cache_clear()


def time_calls(values: list[tuple[Any, Any]], fn: Callable[..., Any], enabled: bool, repeat: int = 3) -> float:
    """Best µs per call of ``fn(value, region)`` over ``values`` (caches cleared before each run)."""
    best = float("inf")
    with fastpath(enabled):
        for _ in range(repeat):
            _clear_caches()
            t = time.perf_counter()
            for value, region in values:
                try:
                    fn(value, region)
                except Exception:
                    pass
            best = min(best, time.perf_counter() - t)
    return best / max(len(values), 1) * 1e6


def bench_phones(records: int = 20_000, seed: int = 42) -> list[tuple[str, str]]:
    """(phone, region) of the sync benchmark's customer export (bench/sync_bench.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import sync_bench

    gen = sync_bench.CustomerGenerator(seed, 0.05)
    out = []
    for row in gen.rows(records):
        if row[5]:
            out.append((row[5], normalize.country_code(row[9]) or "DE"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=1_000_000, help="inputs to generate (two regions each)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=1, help="processes for the comparison")
    ap.add_argument("--timing-sample", type=int, default=200_000, help="(input, region) pairs timed")
    args = ap.parse_args(argv)

    chunks = [(args.seed, k) for k in range((args.inputs + CHUNK - 1) // CHUNK)]
    t0 = time.perf_counter()
    if args.jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(args.jobs) as pool:
            parts = pool.map(_compare_chunk, chunks, chunksize=1)
    else:
        parts = [_compare_chunk(c) for c in chunks]
    compared = sum(p["compared"] for p in parts)
    mismatches = sum(p["mismatches"] for p in parts)
    handled: Counter[str] = sum((p["handled"] for p in parts), Counter())
    total: Counter[str] = sum((p["total"] for p in parts), Counter())
    examples = [e for p in parts for e in p["examples"]][:20]
    print(f"{len(chunks) * CHUNK:,} inputs, {compared:,} (input, region) pairs compared "
          f"(normalize_phone_lenient, normalize_phone, phone_type) in {time.perf_counter() - t0:.0f} s")
    print(f"mismatches: {mismatches}")
    for value, region, a, b in examples:
        print(f"  MISMATCH {value!r} region={region!r}\n    fast: {a}\n    slow: {b}")
    print("answered by the fast path:")
    for category in sorted(total):
        print(f"  {category:12s} {handled[category] / total[category]:6.1%} of {total[category]:,}")
    print(f"  {'all':12s} {sum(handled.values()) / max(compared, 1):6.1%} of {compared:,}")

    sample = [(v, r) for _c, v, r in itertools.islice(cases(args.inputs, args.seed), args.timing_sample)]
    e164s = []
    with fastpath(False):
        for v, r in sample:
            try:
                e = normalize.normalize_phone_lenient(v, r)[0]
            except Exception:
                continue
            if e:
                e164s.append((e, None))
    phones = bench_phones()
    bench_e164 = [(normalize.normalize_phone(p, r), None) for p, r in phones]
    share = sum(handled_by_fast_path(p, r) for p, r in phones) / max(len(phones), 1)
    print(f"sync benchmark phones answered by the fast path: {share:.1%} of {len(phones):,}")
    print("µs per call, phonenumbers path -> fast path (caches cleared, best of 3):")
    rows = [
        ("corpus", "normalize_phone_lenient", sample, normalize.normalize_phone_lenient),
        ("corpus", "phone_type (its E.164 results)", e164s, lambda e, _r: normalize.phone_type(e)),
        ("sync bench", "normalize_phone", phones, normalize.normalize_phone),
        ("sync bench", "phone_type", bench_e164, lambda e, _r: normalize.phone_type(e)),
    ]
    for where, what, values, fn in rows:
        slow = time_calls(values, fn, False)
        fast = time_calls(values, fn, True)
        print(f"  {where:10s} {what:32s} {len(values):>8,} calls: {slow:6.1f} -> {fast:5.1f} µs ({slow / fast:4.1f}x)")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
