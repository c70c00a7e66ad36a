"""The phone fast path of synchub.normalize must answer exactly like the phonenumbers path.

The same comparison as ``bench/phone_corpus.py`` (which runs it on a million inputs), on a
smaller seeded corpus and on hand-picked edge cases; plus checks that the comparison can fail.
"""

from __future__ import annotations

import pytest

from bench import phone_corpus as pc
from synchub import normalize

REGIONS = [None, "DE", "AT", "CH", "US", "CA", "GB", "GG", "IM", "FR", "IT", "NL", "PL", "AU",
           "BR", "AR", "RU", "KZ", "NO", "LT", "XX", "001", "de", " at ", ""]

EDGE_INPUTS = [
    # the shapes of the sync benchmark and of real exports
    "0171 1234567", "01711234567", "0171/1234567", "+49 171 1234567", "+49 (0)171 1234567",
    "0049 171 1234567", "030 1234567", "030/123 45 67", "(089) 12345-678", "+49(0)30-1234567",
    "+49 (0) 89 1234567", "+49  (0)  89 1234567", "+49 0 30 1234567", "+49 030 1234567",
    "+41 44 668 18 00", "044 668 18 00", "079 123 45 67", "+41 (0)44 668 18 00", "+43 1 5323366",
    "0664 1234567", "+43 (0) 664 1234567", "+43 417 4411-677", "+41 33 20379-872",
    # trunk and international prefixes in odd places
    "00 49 30 1234567", "0 049 30 1234567", "+0049 30 1234567", "+00 49 30 1234567", "000 49 30",
    "0000", "00", "+00", "+0 30 1234567", "49 171 1234567", "4930 1234567", "491711234567",
    "011 49 30 1234567", "011 1 212 555 0123", "(0)30 1234567", "+ 49 30 1234567",
    # NANP
    "+1 212 555 0123", "1 212 555 0123", "1-212-555-0123", "(212) 555-0123", "212.555.0123",
    "(123) 456-7890", "+1 (416) 555-0123", "416 555 0123", "555-0123", "+1 310 555 0123",
    "+1 268 464 1234", "+1 800 555 0123",
    # shared country codes and regions with unusual national prefixes
    "+44 20 7946 0958", "020 7946 0958", "01481 234567", "+44 1481 234567", "+44 7624 123456",
    "01624 123456", "+44 1534 123456", "0800 1111", "1800200123", "+39 06 1234 5678",
    "06 1234 5678", "+39 (0) 6 1234 5678", "+39 3123456789", "+7 701 123 4567",
    "8 912 345 67 89", "+7 912 345 67 89", "+61 2 1234 5678", "02 1234 5678", "+61 1831 1234",
    "+55 11 91234 5678", "011 91234 5678", "+54 9 11 1234 5678", "+47 12345", "+47 79123456",
    "+358 18 123456", "+262 269 12 34 56", "+590 590 12 34 56", "+599 9 123 4567",
    # non-geographic and unknown codes
    "+800 1234 5678", "+882 1234 5678", "+999 1234567", "+888 1234 5678",
    # too short, too long, possible-only
    "1", "12", "1-2", "12-", "123", "12 3", "+12", "+123", "+1 23", "+49 171 1", "0151 123",
    "030 12", "+49 30 123", "+31 12345", "1" * 17, "1" * 18, "+49" + "1" * 17, "+49" + "1" * 18,
    "0" * 20, "+4" + "0" * 15,
    # decorations, junk, spreadsheet damage, non-strings
    "Tel.: 030 1234567", "tel:+49-30-1234567", "+49 171 1234567 (mobil)", "+49 30 1234567 ext. 12",
    "\u00a0+49\u00a030\u00a01234567 ", "０３０ １２３４５６７", "+49 30 1234567\n", "\t030 1234567",
    "keine", "n/a", "-", "", "   ", "(0)", "+49 (0)", "4.91711234567E+11", "4,91711234567E+11",
    "1.71123E+10", "0800 FLOWERS", "1" * 300, 491711234567, 1711234567, 491711234567.0, True, None,
]

EDGE_E164 = [
    "+49301234567", "+491711234567", "+4930123456789012345", "+4930", "+493", "+49", "+123",
    "+12", "+1", "+7", "+0", "+012345678", "+80012345678", "+88212345678", "+4410", "+441",
    "+44180020123", "+441481234567", "+447624123456", "+262269123456", "+590590123456",
    "+599912345678", "+35818123456", "+29022123", "+12125550123", "+14165550123", "+12684641234",
    "+49030123456", "+4903012345", "+4980012345678", "+445612345678", "+491", "+4912",
    "+49301234567 ", "+49 30 1234567", "49301234567", "++49301234567", "garbage", "",
]


def _edge_cases() -> list[pc.Case]:
    return [("edge", value, region) for value in EDGE_INPUTS for region in REGIONS] + [
        ("e164", value, None) for value in EDGE_E164
    ]


def test_seeded_corpus_has_no_mismatches() -> None:
    result = pc.compare(pc.cases(30_000, seed=11))
    assert result["compared"] == 60_000
    assert result["mismatches"] == 0, result["examples"][:5]
    # The comparison is worth something only if the fast path answered most plain numbers.
    assert result["handled"]["plain"] / result["total"]["plain"] > 0.75


def test_edge_cases_have_no_mismatches() -> None:
    result = pc.compare(_edge_cases())
    assert result["mismatches"] == 0, result["examples"][:5]
    assert sum(result["handled"].values()) > 500


def test_the_benchmark_shapes_take_the_fast_path() -> None:
    for raw in ("0171 1234567", "0171/1234567", "+49 (0)171 1234567", "0049 171 1234567",
                "079 123 45 67", "+41 79 123 45 67", "0664 1234567", "030/1234567"):
        region = "CH" if raw.startswith(("079", "+41")) else "AT" if raw.startswith("0664") else "DE"
        assert normalize._phone_fast(raw, region) is not None, raw
    assert normalize._phone_type_fast("+49301234567") == "fixed"
    assert normalize._phone_type_fast("+12125550123") == "fixed_or_mobile"


def test_the_comparison_detects_a_different_answer() -> None:
    """A comparer that finds nothing proves nothing: it must see a deliberately wrong path."""

    def flipped(value, region, with_raw_type=True):
        out = pc.fast_outcomes(value, region, with_raw_type)
        lenient = out[0]
        if lenient[0] == "ok" and lenient[1][0] is not None:
            lenient = ("ok", (lenient[1][0], not lenient[1][1]))
        return (lenient, *out[1:])

    def other_message(value, region, with_raw_type=True):
        out = pc.fast_outcomes(value, region, with_raw_type)
        if out[1][0] == "raised":
            return (out[0], (*out[1][:2], out[1][2] + "!"), *out[2:])
        return out

    cases = list(pc.cases(2_000, seed=3))
    assert pc.compare(cases, fast=flipped)["mismatches"] > 100
    assert pc.compare(cases, fast=other_message)["mismatches"] > 100


def test_the_comparison_detects_a_broken_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Break one rule of the fast path (keeping the national prefix when the rest has an invalid
    length): the corpus must notice."""
    cases = list(pc.cases(10_000, seed=3))
    monkeypatch.setattr(normalize, "_KEEP_PREFIX", frozenset(
        {normalize._VR.TOO_SHORT, normalize._VR.IS_POSSIBLE_LOCAL_ONLY}))
    normalize._phone_cached.cache_clear()
    assert pc.compare(cases)["mismatches"] > 0


def test_the_switch_selects_the_path() -> None:
    with pc.fastpath(False):
        assert normalize._PHONE_FASTPATH is False
        assert normalize.normalize_phone("0171 1234567", "DE") == "+491711234567"
    assert normalize._PHONE_FASTPATH is True
