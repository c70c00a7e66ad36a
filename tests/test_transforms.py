from __future__ import annotations

import datetime as dt
import inspect
from decimal import Decimal

import pluggy
import pytest

from synchub import transforms as t
from synchub.transforms import TransformError, builtin_transforms

EXPECTED_NAMES = {
    "trim",
    "lower",
    "upper",
    "title",
    "email",
    "phone_e164",
    "parse_date",
    "format_date",
    "parse_datetime",
    "parse_decimal",
    "format_decimal",
    "country_iso",
    "postal_code",
    "map_values",
    "split_name",
    "join",
    "split",
    "bool",
    "default",
    "prefix",
    "strip_prefix",
}
ALL = builtin_transforms()


# --- registry contract ------------------------------------------------------------


def test_builtin_names() -> None:
    assert set(ALL) == EXPECTED_NAMES


def test_builtin_transforms_returns_fresh_dict_with_same_functions() -> None:
    first, second = builtin_transforms(), builtin_transforms()
    assert first is not second
    assert all(first[name] is second[name] for name in first)
    first.clear()
    assert builtin_transforms()


def test_transform_error_is_value_error() -> None:
    assert issubclass(TransformError, ValueError)


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_every_transform_has_one_line_docstring(name: str) -> None:
    doc = ALL[name].__doc__
    assert doc and doc.strip()
    assert "\n" not in doc.strip()


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_signature_value_positional_only_args_keyword_only(name: str) -> None:
    params = list(inspect.signature(ALL[name]).parameters.values())
    assert params[0].kind is inspect.Parameter.POSITIONAL_ONLY
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:])


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES - {"default"}))
def test_none_in_none_out(name: str) -> None:
    fn = ALL[name]
    required = {
        p.name: _sample_arg(p.name)
        for p in list(inspect.signature(fn).parameters.values())[1:]
        if p.default is inspect.Parameter.empty
    }
    assert fn(None, **required) is None
    assert not getattr(fn, "accepts_none", False)


def _sample_arg(name: str) -> object:
    return {"values": {"a": "b"}, "part": "first", "text": "x", "value": "v"}[name]


@pytest.mark.parametrize(
    "name", sorted(EXPECTED_NAMES - {"default", "trim", "lower", "upper", "title", "join"})
)
@pytest.mark.parametrize("blank", ["", "   ", "\u00a0"])
def test_blank_string_gives_none(name: str, blank: str) -> None:
    fn = ALL[name]
    required = {
        p.name: _sample_arg(p.name)
        for p in list(inspect.signature(fn).parameters.values())[1:]
        if p.default is inspect.Parameter.empty
    }
    assert fn(blank, **required) is None


@pytest.mark.parametrize("name", ["trim", "lower", "upper", "title", "join"])
@pytest.mark.parametrize("blank", ["", "   ", "\u00a0\u200b"])
def test_blank_string_gives_none_for_string_transforms(name: str, blank: str) -> None:
    assert ALL[name](blank) is None


def test_hookimpl_registers_builtins() -> None:
    assert t.register_transforms() == builtin_transforms()
    assert isinstance(t.hookimpl, pluggy.HookimplMarker)
    assert t.hookimpl.project_name == "synchub"
    opts = getattr(t.register_transforms, "synchub_impl", None)
    assert opts is not None  # marked as a hook implementation

    class Spec:
        @pluggy.HookspecMarker("synchub")
        def register_transforms(self) -> dict:  # type: ignore[empty-body]
            """Spec used by this test only."""

    pm = pluggy.PluginManager("synchub")
    pm.add_hookspecs(Spec)
    pm.register(t)
    (result,) = pm.hook.register_transforms()
    assert set(result) == EXPECTED_NAMES


# --- string transforms --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fn", "raw", "expected"),
    [
        ("trim", "  Anna  ", "Anna"),
        ("trim", "\u00a0Anna\u200b", "Anna"),
        ("trim", "Anna  Maria", "Anna  Maria"),  # inner whitespace is kept
        ("trim", 42, 42),
        ("lower", " ANNA@Example.DE ", "anna@example.de"),
        ("lower", 42, 42),
        ("upper", " de ", "DE"),
        ("upper", "straße", "STRASSE"),
        ("title", "MÜLLER-LÜDENSCHEIDT", "Müller-Lüdenscheidt"),
        ("title", "richard von weizsäcker", "Richard von Weizsäcker"),
        ("title", "McDonald", "McDonald"),
    ],
)
def test_string_transforms(fn: str, raw: object, expected: object) -> None:
    assert ALL[fn](raw) == expected


@pytest.mark.parametrize(
    ("raw", "args", "expected"),
    [
        ("12345", {"text": "crm-"}, "crm-12345"),
        ("crm-12345", {"text": "crm-"}, "crm-12345"),  # not doubled
        (12345, {"text": "crm-"}, "crm-12345"),
    ],
)
def test_prefix(raw: object, args: dict, expected: str) -> None:
    assert t.prefix(raw, **args) == expected


@pytest.mark.parametrize(
    ("raw", "args", "expected"),
    [
        ("crm-12345", {"text": "crm-"}, "12345"),
        ("CRM-12345", {"text": "crm-"}, "12345"),
        ("CRM-12345", {"text": "crm-", "case_sensitive": True}, "CRM-12345"),
        ("12345", {"text": "crm-"}, "12345"),
        ("crm-", {"text": "crm-"}, None),
    ],
)
def test_strip_prefix(raw: str, args: dict, expected: str | None) -> None:
    assert t.strip_prefix(raw, **args) == expected


# --- contact data -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("  <MailTo:Anna@Example.DE> ", "anna@example.de"), ("a.b+c@gmail.com", "a.b+c@gmail.com")],
)
def test_email(raw: str, expected: str) -> None:
    assert t.email(raw) == expected


def test_email_error() -> None:
    with pytest.raises(
        TransformError, match=r"not a plausible email address: 'anna\(at\)example.de'"
    ):
        t.email("anna(at)example.de")


@pytest.mark.parametrize(
    ("raw", "args", "expected"),
    [
        ("0171 1234567", {}, "+491711234567"),
        ("+49 (0) 30 1234567", {}, "+49301234567"),
        ("044 668 18 00", {"region": "CH"}, "+41446681800"),
        ("0664 1234567", {"region": "AT"}, "+436641234567"),
        ("+41 44 668 18 00", {"region": None}, "+41446681800"),
    ],
)
def test_phone_e164(raw: str, args: dict, expected: str) -> None:
    assert t.phone_e164(raw, **args) == expected


def test_phone_e164_accepts_region_argument_for_engine_default() -> None:
    assert "region" in inspect.signature(t.phone_e164).parameters


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            "4.91711234567E+11",
            "not a valid phone number: '4.91711234567E+11' (looks like a spreadsheet",
        ),
        ("12", "not a valid phone number: '12'"),
    ],
)
def test_phone_e164_errors(raw: str, message: str) -> None:
    with pytest.raises(TransformError) as info:
        t.phone_e164(raw)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Deutschland", "DE"),
        ("Schweiz", "CH"),
        ("A", "AT"),
        ("AUT", "AT"),
        ("Oesterreich", "AT"),
        ("uk", "GB"),
    ],
)
def test_country_iso(raw: str, expected: str) -> None:
    assert t.country_iso(raw) == expected


def test_country_iso_error() -> None:
    with pytest.raises(TransformError, match="unknown country: 'Narnia'"):
        t.country_iso("Narnia")


@pytest.mark.parametrize(
    ("raw", "args", "expected"),
    [
        ("D-80331", {}, "80331"),
        ("1067", {"country": "DE"}, "01067"),
        ("CH-8001", {"country": "CH"}, "8001"),
        ("A-1010", {}, "1010"),
        ("sw1a 1aa", {"country": "GB"}, "SW1A 1AA"),
    ],
)
def test_postal_code(raw: str, args: dict, expected: str) -> None:
    assert t.postal_code(raw, **args) == expected


def test_postal_code_error() -> None:
    with pytest.raises(
        TransformError, match=r"not a valid DE postal code: '123' \(expected 5 digits\)"
    ):
        t.postal_code("123", country="DE")


@pytest.mark.parametrize(
    ("raw", "part", "expected"),
    [
        ("Dr. Anna Maria Schmidt", "first", "Anna Maria"),
        ("Dr. Anna Maria Schmidt", "last", "Schmidt"),
        ("Schmidt, Anna", "first", "Anna"),
        ("Richard von Weizsäcker", "last", "von Weizsäcker"),
        ("Schmidt", "first", None),
    ],
)
def test_split_name(raw: str, part: str, expected: str | None) -> None:
    assert t.split_name(raw, part=part) == expected


def test_split_name_bad_part() -> None:
    with pytest.raises(TransformError, match="part must be 'first' or 'last', not 'middle'"):
        t.split_name("Anna Schmidt", part="middle")


# --- dates and numbers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "args", "expected"),
    [
        ("01.03.2024", {}, "2024-03-01"),
        ("1.3.24", {}, "2024-03-01"),
        ("2024-03-01T14:05:00Z", {}, "2024-03-01"),
        ("20240301", {}, "2024-03-01"),
        ("01.03.2024", {"format": "%d.%m.%Y"}, "2024-03-01"),
        ("03/01/2024", {"format": "%m/%d/%Y"}, "2024-03-01"),
        ("01/03/2024", {"formats": ["%Y-%m-%d", "%d/%m/%Y"]}, "2024-03-01"),
        (45352, {"excel_serial": True}, "2024-03-01"),
        (dt.date(2024, 3, 1), {}, "2024-03-01"),
        (dt.datetime(2024, 3, 1, 14, 5), {}, "2024-03-01"),
    ],
)
def test_parse_date(raw: object, args: dict, expected: str) -> None:
    assert t.parse_date(raw, **args) == expected


@pytest.mark.parametrize(
    ("raw", "args", "message"),
    [
        ("31.02.2024", {"format": "%d.%m.%Y"}, "not a date in format dd.mm.yyyy: '31.02.2024'"),
        ("2024-03-01", {"format": "%d.%m.%Y"}, "not a date in format dd.mm.yyyy: '2024-03-01'"),
        (
            "x",
            {"formats": ["%d.%m.%Y", "%Y%m%d"]},
            "not a date in format dd.mm.yyyy or yyyymmdd: 'x'",
        ),
        ("01.03.2024 14:05", {"format": "%d.%m.%Y %H:%M"}, None),
        ("31.02.2024", {}, "impossible date: '31.02.2024'"),
        ("bald", {}, "not a date: 'bald'"),
        ("01/03/2024", {}, "ambiguous date: '01/03/2024'"),
        (45352, {}, "not a date: 45352"),
    ],
)
def test_parse_date_errors(raw: object, args: dict, message: str | None) -> None:
    if message is None:  # a valid datetime pattern: parses, the date is kept
        assert t.parse_date(raw, **args) == "2024-03-01"
        return
    with pytest.raises(TransformError) as info:
        t.parse_date(raw, **args)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("raw", "args", "expected"),
    [
        ("2024-03-01", {}, "01.03.2024"),
        ("2024-03-01", {"format": "%Y%m%d"}, "20240301"),
        ("2024-03-01", {"format": "%m/%d/%Y"}, "03/01/2024"),
        (dt.date(2024, 3, 1), {"format": "%d.%m.%y"}, "01.03.24"),
        ("2024-03-01T14:05:00+01:00", {}, "01.03.2024"),
    ],
)
def test_format_date(raw: object, args: dict, expected: str) -> None:
    assert t.format_date(raw, **args) == expected


def test_format_date_error() -> None:
    with pytest.raises(TransformError, match="impossible date: '2024-02-30'"):
        t.format_date("2024-02-30")


@pytest.mark.parametrize(
    ("raw", "args", "expected"),
    [
        ("2024-03-01T14:05:00Z", {}, "2024-03-01T14:05:00+00:00"),
        ("2024-03-01T14:05:00+01:00", {}, "2024-03-01T14:05:00+01:00"),
        ("01.03.2024 14:05", {}, "2024-03-01T14:05:00+00:00"),
        ("01.03.2024 14:05", {"tz": "Europe/Berlin"}, "2024-03-01T14:05:00+01:00"),
        ("01.07.2024 14:05", {"tz": "Europe/Zurich"}, "2024-07-01T14:05:00+02:00"),
        ("1709301900000", {}, "2024-03-01T14:05:00+00:00"),
        (1709301900000, {}, "2024-03-01T14:05:00+00:00"),
    ],
)
def test_parse_datetime(raw: object, args: dict, expected: str) -> None:
    assert t.parse_datetime(raw, **args) == expected


@pytest.mark.parametrize(
    ("raw", "args", "message"),
    [
        ("nie", {}, "not a date/time: 'nie'"),
        ("01.03.2024 14:05", {"tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_parse_datetime_errors(raw: str, args: dict, message: str) -> None:
    with pytest.raises(TransformError) as info:
        t.parse_datetime(raw, **args)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("raw", "args", "expected"),
    [
        ("1.234,56", {}, "1234.56"),
        ("1,234.56", {}, "1234.56"),
        ("€ 1.234,56", {}, "1234.56"),
        ("CHF 99.–", {}, "99.00"),
        ("(12,50)", {}, "-12.50"),
        ("1.234", {}, "1234"),
        ("1.234", {"decimal_comma": False}, "1.234"),
        ("1,234", {"decimal_comma": True}, "1.234"),
        ("1.5E3", {}, "1500"),  # never exponent notation in the output
        (12.5, {}, "12.5"),
        (Decimal("3.10"), {}, "3.10"),
    ],
)
def test_parse_decimal(raw: object, args: dict, expected: str) -> None:
    result = t.parse_decimal(raw, **args)
    assert isinstance(result, str)
    assert result == expected


def test_parse_decimal_error() -> None:
    with pytest.raises(TransformError, match="not a number: 'zwölf'"):
        t.parse_decimal("zwölf")


@pytest.mark.parametrize(
    ("raw", "args", "expected"),
    [
        ("1234.5", {"decimal_comma": True}, "1.234,50"),
        ("1234.5", {}, "1,234.50"),
        ("1234.5", {"decimal_comma": True, "places": 0}, "1.235"),
        ("1234.5", {"decimal_comma": True, "thousands": ""}, "1234,50"),
        ("1234567.891", {"thousands": "'"}, "1'234'567.89"),
        ("0.005", {}, "0.01"),  # commercial rounding, half up
        ("0.015", {}, "0.02"),
        ("-1234.5", {"decimal_comma": True}, "-1.234,50"),
        ("1.234", {"decimal_comma": True, "places": 3}, "1,234"),  # stored value is machine format
        ("12", {"places": None}, "12"),
        ("12.345", {"places": None, "decimal_comma": True}, "12,345"),
        (1234, {"decimal_comma": True}, "1.234,00"),
        (Decimal("9.995"), {}, "10.00"),
        (0.1, {"places": 1}, "0.1"),
    ],
)
def test_format_decimal(raw: object, args: dict, expected: str) -> None:
    assert t.format_decimal(raw, **args) == expected


@pytest.mark.parametrize(
    ("raw", "args", "message"),
    [
        ("abc", {}, "not a number: 'abc'"),
        ("1", {"places": -1}, "places must be a non-negative integer, not -1"),
        ("1", {"places": "2"}, "places must be a non-negative integer, not '2'"),
    ],
)
def test_format_decimal_errors(raw: str, args: dict, message: str) -> None:
    with pytest.raises(TransformError) as info:
        t.format_decimal(raw, **args)
    assert message in str(info.value)


# --- values, lists, booleans ----------------------------------------------------------------------

SALUTATIONS = {"Herr": "male", "Frau": "female", "Divers": "diverse"}


@pytest.mark.parametrize(
    ("raw", "args", "expected"),
    [
        ("Herr", {"values": SALUTATIONS}, "male"),
        ("  frau ", {"values": SALUTATIONS}, "female"),
        ("HERR", {"values": SALUTATIONS}, "male"),
        ("Firma", {"values": SALUTATIONS, "default": "unknown"}, "unknown"),
        ("Firma", {"values": SALUTATIONS, "default": None}, None),
        (1, {"values": {1: "one", 2: "two"}}, "one"),
        ("2", {"values": {1: "one", 2: "two"}}, "two"),
        # PyYAML turns unquoted yes/no keys into booleans
        ("yes", {"values": {True: "subscribed", False: "unsubscribed"}}, "subscribed"),
        ("No", {"values": {True: "subscribed", False: "unsubscribed"}}, "unsubscribed"),
        (True, {"values": {True: "subscribed", False: "unsubscribed"}}, "subscribed"),
    ],
)
def test_map_values(raw: object, args: dict, expected: object) -> None:
    assert t.map_values(raw, **args) == expected


def test_map_values_error_lists_allowed_values() -> None:
    with pytest.raises(TransformError) as info:
        t.map_values("Firma", values=SALUTATIONS)
    assert str(info.value) == "'Firma' is not one of the allowed values: 'Herr', 'Frau', 'Divers'"


def test_map_values_error_truncates_long_lists() -> None:
    values = {f"k{i}": i for i in range(30)}
    with pytest.raises(TransformError, match=r"'k19', …$"):
        t.map_values("nope", values=values)


def test_map_values_requires_a_mapping() -> None:
    with pytest.raises(TransformError, match="values must be a mapping, not list"):
        t.map_values("a", values=["a"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("raw", "args", "expected"),
    [
        (["Anna", "Maria"], {}, "Anna Maria"),
        (["Anna", "", None, " Maria "], {}, "Anna Maria"),
        (["Hauptstr.", "5"], {"sep": " "}, "Hauptstr. 5"),
        (["a", "b"], {"sep": ", "}, "a, b"),
        ([None, "  "], {}, None),
        ([], {}, None),
        (" already joined ", {}, "already joined"),
    ],
)
def test_join(raw: object, args: dict, expected: str | None) -> None:
    assert t.join(raw, **args) == expected


@pytest.mark.parametrize(
    ("raw", "args", "expected"),
    [
        ("vip, newsletter,  b2b ", {}, ["vip", "newsletter", "b2b"]),
        ("vip,,newsletter,", {}, ["vip", "newsletter"]),
        ("vip;newsletter", {"sep": ";"}, ["vip", "newsletter"]),
        ("vip; newsletter, b2b", {"sep": [";", ","]}, ["vip", "newsletter", "b2b"]),
        ("vip", {}, ["vip"]),
        (",,", {}, None),
        (["vip", " ", None, " b2b"], {}, ["vip", "b2b"]),
    ],
)
def test_split(raw: object, args: dict, expected: list[str] | None) -> None:
    assert t.split(raw, **args) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Ja", True),
        ("ja", True),
        ("J", True),
        ("yes", True),
        ("Y", True),
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("x", True),
        ("X", True),
        ("wahr", True),
        ("Nein", False),
        ("nein", False),
        ("N", False),
        ("no", False),
        ("false", False),
        ("0", False),
        ("falsch", False),
        (True, True),
        (False, False),
        (1, True),
        (0, False),
    ],
)
def test_bool(raw: object, expected: bool) -> None:
    assert ALL["bool"](raw) is expected


@pytest.mark.parametrize("raw", ["vielleicht", "2", "-", 2, 0.5])
def test_bool_error(raw: object) -> None:
    with pytest.raises(TransformError) as info:
        ALL["bool"](raw)
    assert f"not a yes/no value: {raw!r}" in str(info.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, "DE"), ("", "DE"), ("   ", "DE"), ([], "DE"), ("CH", "CH"), (0, 0), (False, False)],
)
def test_default(raw: object, expected: object) -> None:
    assert t.default(raw, value="DE") == expected


def test_default_accepts_none_and_only_it() -> None:
    flagged = {name for name, fn in ALL.items() if getattr(fn, "accepts_none", False)}
    assert flagged == {"default"}


# --- transforms as the mapping engine calls them ---------------------------------------------------


def _run(steps: list[tuple[str, dict]], value: object) -> object:
    """Mimic the engine: blank strings become None; only accepts_none transforms see None."""
    if isinstance(value, str) and not value.strip():
        value = None
    for name, args in steps:
        fn = ALL[name]
        if value is None and not getattr(fn, "accepts_none", False):
            break
        value = fn(value, **args)
    return value


@pytest.mark.parametrize(
    ("steps", "raw", "expected"),
    [
        ([("trim", {}), ("parse_date", {"format": "%d.%m.%Y"})], " 01.03.2024 ", "2024-03-01"),
        ([("default", {"value": "Deutschland"}), ("country_iso", {})], None, "DE"),
        ([("default", {"value": "Deutschland"}), ("country_iso", {})], "Schweiz", "CH"),
        ([("split", {}), ("join", {"sep": "|"})], "a, b ,c", "a|b|c"),
        (
            [("parse_decimal", {}), ("format_decimal", {"decimal_comma": True})],
            "1,234.5",
            "1.234,50",
        ),
        ([("parse_date", {}), ("format_date", {"format": "%d.%m.%Y"})], "20240301", "01.03.2024"),
        ([("email", {})], "", None),
    ],
)
def test_chains(steps: list[tuple[str, dict]], raw: object, expected: object) -> None:
    assert _run(steps, raw) == expected
