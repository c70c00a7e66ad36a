from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from synchub.normalize import (
    NormalizationError,
    _koelner_digits,
    country_code,
    english_phonetic,
    fold,
    fold_company,
    fold_street,
    koelner_phonetik,
    normalize_email,
    normalize_name,
    normalize_phone,
    normalize_postal_code,
    parse_date,
    parse_datetime,
    parse_decimal,
    phone_type,
    split_full_name,
    split_street,
)

UTC = dt.timezone.utc


def test_normalization_error_is_value_error() -> None:
    assert issubclass(NormalizationError, ValueError)


# --- e-mail -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("anna@example.de", "anna@example.de"),
        ("  Anna.Schmidt@Example.DE  ", "anna.schmidt@example.de"),
        ("\u00a0anna@example.de\u00a0", "anna@example.de"),
        ("\u200banna@exa\u200bmple.de\ufeff", "anna@example.de"),
        ("mailto:anna@example.de", "anna@example.de"),
        ("MAILTO:Anna@Example.de", "anna@example.de"),
        ("<anna@example.de>", "anna@example.de"),
        ("<mailto:anna@example.de>", "anna@example.de"),
        ("mailto:anna@example.de?subject=Hallo", "anna@example.de"),
        ("anna.schmidt+news@gmail.com", "anna.schmidt+news@gmail.com"),  # no provider tricks
        ("a.n.n.a@googlemail.com", "a.n.n.a@googlemail.com"),
        ("jürgen@müller.de", "jürgen@müller.de"),
        ("info@sub.domain.co.uk", "info@sub.domain.co.uk"),
    ],
)
def test_normalize_email(raw: str, expected: str) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize("raw", [None, "", "   ", "\u00a0\u200b", "<>", "mailto:"])
def test_normalize_email_empty(raw: str | None) -> None:
    assert normalize_email(raw) is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("anna.example.de", "exactly one '@'"),
        ("anna@@example.de", "exactly one '@'"),
        ("a@b@example.de", "exactly one '@'"),
        ("@example.de", "empty local part"),
        ("anna@localhost", "domain has no dot"),
        ("anna schmidt@example.de", "whitespace"),
        ("anna@example..de", "malformed domain"),
        ("anna@.example.de", "malformed domain"),
        ("anna@example.de.", "malformed domain"),
        ("anna@exa_mple.de", "malformed domain"),
        ("Anna <anna@example.de>", "whitespace"),
        ("anna;bob@example.de", "invalid character"),
    ],
)
def test_normalize_email_rejects(raw: str, reason: str) -> None:
    with pytest.raises(NormalizationError) as info:
        normalize_email(raw)
    message = str(info.value)
    assert repr(raw) in message
    assert reason in message


# --- phone --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("0171 1234567", "DE", "+491711234567"),
        ("+49 (0) 30 1234567", "DE", "+49301234567"),
        ("+49 (0)171 1234567", "DE", "+491711234567"),
        ("+49(0)30-1234567", None, "+49301234567"),
        ("0049 30 1234567", "DE", "+49301234567"),
        ("0049 30 1234567", None, "+49301234567"),
        ("+0049 30 1234567", "DE", "+49301234567"),
        ("030/123 45 67", "DE", "+49301234567"),
        ("030 / 1234567", "DE", "+49301234567"),
        ("+41 44 668 18 00", "DE", "+41446681800"),
        ("044 668 18 00", "CH", "+41446681800"),
        ("0041 44 668 18 00", "DE", "+41446681800"),
        ("+41 (0)44 668 18 00", None, "+41446681800"),
        ("+43 1 5323366", "DE", "+4315323366"),
        ("0664 1234567", "AT", "+436641234567"),
        ("+43 (0) 664 1234567", "DE", "+436641234567"),
        ("(089) 12345-678", "DE", "+498912345678"),
        ("+49 171 1234567 (mobil)", "DE", "+491711234567"),
        ("0171 1234567 (privat)", "DE", "+491711234567"),
        ("Tel.: 030 1234567", "DE", "+49301234567"),
        ("Mobil: +49 171 1234567", "DE", "+491711234567"),
        ("tel:+49-30-1234567", "DE", "+49301234567"),
        ("TEL:+49301234567", None, "+49301234567"),
        ("+49 30 1234567 ext. 12", "DE", "+49301234567"),
        ("\u00a0+49\u00a030\u00a01234567 ", "DE", "+49301234567"),
        ("01711234567", "DE", "+491711234567"),
        ("030 1234567", "de", "+49301234567"),
        ("+1 212 555 0123", "DE", "+12125550123"),
    ],
)
def test_normalize_phone(raw: str, region: str | None, expected: str) -> None:
    assert normalize_phone(raw, region) == expected


def test_normalize_phone_default_region_is_de() -> None:
    assert normalize_phone("0171 1234567") == "+491711234567"


@pytest.mark.parametrize("raw", [None, "", "   ", "\u200b"])
def test_normalize_phone_empty(raw: str | None) -> None:
    assert normalize_phone(raw) is None


@pytest.mark.parametrize(
    ("raw", "region", "reason"),
    [
        ("4.91711234567E+11", "DE", "scientific notation"),
        ("4,91711234567E+11", "DE", "scientific notation"),
        ("1.71123E+10", "DE", "scientific notation"),
        ("keine", "DE", "contains no digits"),
        ("n/a", "DE", "contains no digits"),
        ("ruf an 0x", "DE", "not a phone number"),
        ("123", "DE", "not a valid phone number"),
        ("0151 123", "DE", "not a valid phone number"),
        ("030 1234567", None, "no country code"),
        ("+999 1234567", "DE", "unknown country code"),
    ],
)
def test_normalize_phone_rejects(raw: str, region: str | None, reason: str) -> None:
    with pytest.raises(NormalizationError) as info:
        normalize_phone(raw, region)
    assert repr(raw) in str(info.value)
    assert reason in str(info.value)


def test_normalize_phone_rejects_float() -> None:
    with pytest.raises(NormalizationError, match="numeric value"):
        normalize_phone(491711234567.0)  # type: ignore[arg-type]


def test_normalize_phone_error_is_not_cached_away() -> None:
    for _ in range(2):  # the cached error path must raise every time
        with pytest.raises(NormalizationError):
            normalize_phone("keine")


@pytest.mark.parametrize(
    ("e164", "expected"),
    [
        ("+491711234567", "mobile"),
        ("+49301234567", "fixed"),
        ("+41446681800", "fixed"),
        ("+41791234567", "mobile"),
        ("+436641234567", "mobile"),
        ("+12125550123", "fixed_or_mobile"),
        ("+4980012345678", "other"),  # toll-free
        ("+4970012345678", "other"),  # personal number
    ],
)
def test_phone_type(e164: str, expected: str) -> None:
    assert phone_type(e164) == expected


def test_phone_type_voip() -> None:
    # UK 056 numbers are VoIP in libphonenumber's metadata.
    assert phone_type("+445612345678") == "voip"


def test_phone_type_rejects_garbage() -> None:
    with pytest.raises(NormalizationError, match="'garbage'"):
        phone_type("garbage")


# --- fold ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "variants",
    [
        ("Müller", "Mueller", "Muller", "MÜLLER", "MUELLER", "müller", " Müller "),
        ("Schröder", "Schroeder", "Schroder"),
        ("Jürgen", "Juergen", "Jurgen"),
        ("Bär", "Baer", "Bar"),
        ("Jörg", "Joerg", "Jorg"),
        ("Göthe", "Goethe", "Gothe"),
        ("Strauß", "Strauss", "STRAUSS"),
        ("Bäuerle", "Baeuerle", "Bauerle"),
        ("Michael", "MICHAEL", "michael"),
        ("Raphaël", "Raphael"),
        ("Noël", "Noel"),
        ("José", "Jose"),
        ("Françoise", "Francoise"),
        ("Müller-Lüdenscheidt", "Mueller Luedenscheidt", "Müller  -  Lüdenscheidt"),
        ("O'Brien", "OBrien", "O\u2019Brien"),
        ("Søren Kierkegaard", "Soren Kierkegaard"),
        ("Æbelø", "Aebeloe"),
    ],
)
def test_fold_variants_are_equal(variants: tuple[str, ...]) -> None:
    keys = {fold(v) for v in variants}
    assert len(keys) == 1, keys


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Müller", "muller"),
        ("Mueller", "muller"),
        ("Straße", "strasse"),
        ("Hans-Peter  Müller", "hans peter muller"),
        ("  Anna\tMaria\n", "anna maria"),
        ("Schmidt, Anna", "schmidt anna"),
        ("Meier & Söhne", "meier sohne"),
        ("e.K.", "ek"),
        ("Manuel", "manul"),
        ("Samuel", "samul"),
        ("Raoul", "raoul"),
        ("Michael", "michal"),
        ("Seeger", "seeger"),
        ("Anna_Maria", "anna maria"),
        ("Ǆemal", "dzemal"),
        ("ﬁsch", "fisch"),
        ("Zoë", "zo"),
        ("", ""),
        (None, ""),
        ("---", ""),
    ],
)
def test_fold(raw: str | None, expected: str) -> None:
    assert fold(raw) == expected


@pytest.mark.parametrize(
    "raw", ["Müller", "Mueeller", "Bäuerle", "Raphaël", "Straße des 17. Juni", "aeoeue", "Zoë"]
)
def test_fold_is_idempotent(raw: str) -> None:
    assert fold(fold(raw)) == fold(raw)


@pytest.mark.parametrize(("a", "b"), [("Müller", "Miller"), ("Meier", "Maier"), ("Anna", "Anne")])
def test_fold_keeps_different_names_apart(a: str, b: str) -> None:
    assert fold(a) != fold(b)


# --- streets ------------------------------------------------------------------


@pytest.mark.parametrize(
    "variants",
    [
        (
            "Hauptstraße 5",
            "Hauptstrasse 5",
            "Hauptstr. 5",
            "Hauptstr 5",
            "Haupt-Strasse 5",
            "Haupt Str. 5",
            "HAUPTSTRASSE 5",
            "Hauptstr.5",
            "  Hauptstraße   5 ",
        ),
        ("Berliner Straße 12a", "Berliner Str. 12 a", "Berliner Str. 12A", "Berlinerstraße 12a"),
        ("Goethestraße 1", "Göthestr. 1", "Goethe-Strasse 1"),
        ("Marktplatz 3", "Marktpl. 3", "Markt-Platz 3"),
        ("Am Ring 5-7", "Am Ring 5 - 7", "Am Ring 5–7"),
        ("Kaiser-Wilhelm-Allee 2", "Kaiser Wilhelm Allee 2"),
        ("12 Main Street", "12 Main St.", "12 main st"),
        ("5 Abbey Road", "5 Abbey Rd."),
        ("350 Fifth Avenue", "350 Fifth Ave", "350 Fifth Ave."),
    ],
)
def test_fold_street_variants_are_equal(variants: tuple[str, ...]) -> None:
    keys = {fold_street(v) for v in variants}
    assert len(keys) == 1, keys


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hauptstraße 5", "hauptstr 5"),
        ("Hauptstraße 5 A", "hauptstr 5a"),
        ("Hauptstr. 5-7", "hauptstr 5-7"),
        ("Lindenweg 3", "lindenweg 3"),
        ("Am Weg 3", "amweg 3"),
        ("Schillerallee 3", "schillerallee 3"),
        ("Große Gasse 1", "grossegasse 1"),
        ("Frankfurter Chaussee 9", "frankfurterchaussee 9"),
        ("Straße des 17. Juni 135", "str des 17 juni 135"),
        ("Rue de Lausanne 12", "ru de lausanne 12"),  # fold(): "ue" -> "u"
        ("12 Main Street", "main st 12"),
        ("Hauptstr. 12/3/4", "hauptstr 12/3/4"),
        ("Hauptstraße", "hauptstr"),
        ("", ""),
        (None, ""),
    ],
)
def test_fold_street(raw: str | None, expected: str) -> None:
    assert fold_street(raw) == expected


def test_fold_street_house_numbers_differ() -> None:
    assert fold_street("Hauptstraße 5") != fold_street("Hauptstraße 5a")
    assert fold_street("Hauptstraße 5") != fold_street("Hauptstraße 7")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hauptstraße 5a", ("Hauptstraße", "5a")),
        ("Hauptstraße 5 a", ("Hauptstraße", "5 a")),
        ("Hauptstraße 15", ("Hauptstraße", "15")),
        ("Hauptstr.5", ("Hauptstr.", "5")),
        ("Hauptstr. 5-7", ("Hauptstr.", "5-7")),
        ("Hauptstr. 5a-c", ("Hauptstr.", "5a-c")),
        ("Hauptstr. 12/3/4", ("Hauptstr.", "12/3/4")),
        ("Hauptstraße, 5", ("Hauptstraße", "5")),
        ("Hauptstraße Nr. 5", ("Hauptstraße", "5")),
        ("Rue de Lausanne 12", ("Rue de Lausanne", "12")),
        ("Straße des 17. Juni 135", ("Straße des 17. Juni", "135")),
        ("Straße des 17. Juni", ("Straße des 17. Juni", None)),
        ("12 Main Street", ("Main Street", "12")),
        ("12a Main Street", ("Main Street", "12a")),
        ("Hauptstraße", ("Hauptstraße", None)),
        ("  Hauptstraße   5 ", ("Hauptstraße", "5")),
        ("", ("", None)),
        (None, ("", None)),
    ],
)
def test_split_street(raw: str | None, expected: tuple[str, str | None]) -> None:
    assert split_street(raw) == expected


# --- postal codes -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "country", "expected"),
    [
        ("80331", "DE", "80331"),
        (" 80331 ", "Deutschland", "80331"),
        ("D-80331", "DE", "80331"),
        ("D-80331", None, "80331"),
        ("DE-80331", None, "80331"),
        ("d 80331", "DE", "80331"),
        ("1067", "DE", "01067"),
        (1067, "DE", "01067"),
        (1067.0, "DE", "01067"),
        ("80331.0", "DE", "80331"),
        ("CH-8001", "CH", "8001"),
        ("CH-8001", None, "8001"),
        ("8001", "Schweiz", "8001"),
        ("A-1010", "AT", "1010"),
        ("A-1010", "Österreich", "1010"),
        ("1010", "A", "1010"),
        ("FL-9490", "LI", "9490"),
        ("sw1a  1aa", "GB", "SW1A 1AA"),
        ("1012 ab", "NL", "1012 AB"),
        ("LV-1050", "LV", "LV-1050"),  # the prefix is part of Latvian codes
        ("75001", "FR", "75001"),
        ("k1a 0b1", None, "K1A 0B1"),
    ],
)
def test_normalize_postal_code(code: object, country: str | None, expected: str) -> None:
    assert normalize_postal_code(code, country) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("code", [None, "", "  "])
def test_normalize_postal_code_empty(code: str | None) -> None:
    assert normalize_postal_code(code, "DE") is None


@pytest.mark.parametrize(
    ("code", "country", "message"),
    [
        ("123", "DE", "not a valid DE postal code: '123' (expected 5 digits)"),
        ("803311", "DE", "not a valid DE postal code"),
        ("8O331", "DE", "not a valid DE postal code"),
        ("80331", "CH", "not a valid CH postal code: '80331' (expected 4 digits)"),
        ("101", "AT", "not a valid AT postal code"),
        ("D-1234567", None, "not a valid DE postal code"),
        ("80331", "Atlantis", "unknown country: 'Atlantis'"),
        ("A-1010", "DE", "postal code 'A-1010' has the prefix of AT but the country is DE"),
    ],
)
def test_normalize_postal_code_rejects(code: str, country: str | None, message: str) -> None:
    with pytest.raises(NormalizationError) as info:
        normalize_postal_code(code, country)
    assert message in str(info.value)


# --- countries ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("DE", "DE"),
        ("de", "DE"),
        ("DEU", "DE"),
        ("D", "DE"),
        ("Deutschland", "DE"),
        ("deutschland", "DE"),
        ("BRD", "DE"),
        ("Bundesrepublik Deutschland", "DE"),
        ("Germany", "DE"),
        ("Federal Republic of Germany", "DE"),
        ("CH", "CH"),
        ("CHE", "CH"),
        ("Schweiz", "CH"),
        ("Suisse", "CH"),
        ("Svizzera", "CH"),
        ("Switzerland", "CH"),
        ("A", "AT"),
        ("AUT", "AT"),
        ("Österreich", "AT"),
        ("Oesterreich", "AT"),
        ("OESTERREICH", "AT"),
        ("Austria", "AT"),
        ("UK", "GB"),
        ("England", "GB"),
        ("United Kingdom", "GB"),
        ("Großbritannien", "GB"),
        ("USA", "US"),
        ("U.S.A.", "US"),
        ("United States", "US"),
        ("Niederlande", "NL"),
        ("Netherlands", "NL"),
        ("Frankreich", "FR"),
        ("France", "FR"),
        ("Italien", "IT"),
        ("Italia", "IT"),
        ("Liechtenstein", "LI"),
        ("FL", "LI"),
        ("Luxemburg", "LU"),
        ("Luxembourg", "LU"),
        ("L", "LU"),
        ("Tschechien", "CZ"),
        ("Czechia", "CZ"),
        ("Türkei", "TR"),
        ("Russia", "RU"),
        ("Bolivia", "BO"),
        ("  schweiz ", "CH"),
        ("AE", "AE"),  # must not be folded to "a" (Austria's vehicle code)
    ],
)
def test_country_code(raw: str, expected: str) -> None:
    assert country_code(raw) == expected


@pytest.mark.parametrize("raw", [None, "", "  "])
def test_country_code_empty(raw: str | None) -> None:
    assert country_code(raw) is None


@pytest.mark.parametrize("raw", ["Atlantis", "XX", "Deutschlandd", "123"])
def test_country_code_unknown(raw: str) -> None:
    with pytest.raises(NormalizationError, match=f"unknown country: {raw!r}"):
        country_code(raw)


# --- companies ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Muster GmbH", "muster"),
        ("Muster GmbH & Co. KG", "muster"),
        ("Muster GmbH & Co KG", "muster"),
        ("Muster AG", "muster"),
        ("Muster KG", "muster"),
        ("Muster OHG", "muster"),
        ("Muster UG (haftungsbeschränkt)", "muster"),
        ("Muster UG (haftungsbeschraenkt) & Co. KG", "muster"),
        ("Muster e.K.", "muster"),
        ("Muster e. K.", "muster"),
        ("Sportverein Musterstadt e.V.", "sportverein musterstadt"),
        ("Muster SE", "muster"),
        ("Muster SE & Co. KGaA", "muster"),
        ("Muster Ltd", "muster"),
        ("Muster Ltd.", "muster"),
        ("Muster Limited", "muster"),
        ("Muster Inc", "muster"),
        ("Muster, Inc.", "muster"),
        ("Muster LLC", "muster"),
        ("Muster Corp", "muster"),
        ("Muster Corp.", "muster"),
        ("Muster S.A.", "muster"),
        ("Muster SARL", "muster"),
        ("Muster Sàrl", "muster"),
        ("Muster S.p.A.", "muster"),
        ("Muster B.V.", "muster"),
        ("Muster N.V.", "muster"),
        ("Muster AB", "muster"),
        ("Muster Oy", "muster"),
        ("Müller & Söhne GmbH", "muller sohne"),
        ("Mueller & Soehne", "muller sohne"),
        ("AG", "ag"),  # never reduced to nothing
        ("GmbH Consulting", "gmbh consulting"),  # only removed at the end
        ("", ""),
        (None, ""),
    ],
)
def test_fold_company(raw: str | None, expected: str) -> None:
    assert fold_company(raw) == expected


# --- phonetics --------------------------------------------------------------------------


def test_koelner_phonetik_classic_example_steps() -> None:
    # Worked through by hand: M6 Ü0 L5 L5 E0 R7 L5 Ü0 D2 E0 N6 S8 C8 (after S) H- E0 I0 D2 T2.
    assert _koelner_digits("Müller-Lüdenscheidt") == "60550750206880022"
    # collapse repeats -> 6050750206802, drop zeros after the first digit -> 65752682
    assert koelner_phonetik("Müller-Lüdenscheidt") == "65752682"


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("Wikipedia", "3412"),
        ("Meier", "67"),
        ("Müller", "657"),
        ("Mueller", "657"),
        ("Schmidt", "862"),
        ("Schmitt", "862"),
        ("Anna", "06"),  # a leading zero is kept
        ("Christoph", "47823"),  # C at start before H -> 4, PH -> 3
        ("Cäsar", "487"),  # C at start before A -> 4; ä is a vowel
        ("Celina", "856"),  # C at start before E -> 8
        ("Acht", "042"),  # C after a vowel before H -> 4
        ("Becker", "147"),  # C before K -> 4
        ("Matzen", "686"),  # T before Z -> 8
        ("Max", "648"),  # X -> 48
        ("Hexe", "048"),
        ("Lachs", "548"),  # C after vowel before H -> 4, S -> 8
        ("Fuchs", "348"),
        ("Haus", "08"),  # H has no code
        ("Philipp", "351"),  # P before H -> 3
        ("Straße", "8278"),  # ß counts as S
        ("Bach", "14"),
        ("Dexter", "24827"),  # D2 E0 X48 T2 E0 R7 -> 2048207 -> 24827
    ],
)
def test_koelner_phonetik(word: str, expected: str) -> None:
    assert koelner_phonetik(word) == expected


@pytest.mark.parametrize(
    "group",
    [
        ("Meier", "Maier", "Mayer", "Meyer", "Mayr", "Meir"),
        ("Schmidt", "Schmitt", "Schmid", "Schmit"),
        ("Müller", "Mueller", "Muller", "Möller"),
        ("Fischer", "Vischer", "Fisher"),
    ],
)
def test_koelner_phonetik_groups(group: tuple[str, ...]) -> None:
    assert len({koelner_phonetik(w) for w in group}) == 1


@pytest.mark.parametrize(
    ("a", "b"), [("Fischer", "Fischa"), ("Meier", "Müller"), ("Schmidt", "Schneider")]
)
def test_koelner_phonetik_keeps_different_names_apart(a: str, b: str) -> None:
    assert koelner_phonetik(a) != koelner_phonetik(b)


def test_koelner_phonetik_context_rules() -> None:
    # X after C/K/Q is 8 (not 48); D/T before C/S/Z is 8; C after S/Z is 8.
    assert _koelner_digits("Kx") == "48"
    assert _koelner_digits("Ax") == "048"
    assert _koelner_digits("Ts") == "88"
    assert _koelner_digits("Sc") == "88"
    assert _koelner_digits("Cl") == "45"  # initial C before L
    assert _koelner_digits("Acl") == "085"  # non-initial C before L


@pytest.mark.parametrize("word", [None, "", "123", "--"])
def test_koelner_phonetik_empty(word: str | None) -> None:
    assert koelner_phonetik(word) == ""


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("Robert", "R163"),
        ("Rupert", "R163"),
        ("Rubin", "R150"),
        ("Ashcraft", "A261"),
        ("Ashcroft", "A261"),
        ("Tymczak", "T522"),
        ("Pfister", "P236"),
        ("Honeyman", "H555"),
        ("Lee", "L000"),
        ("Müller", "M460"),
        ("Strauß", "S362"),
        ("", ""),
        (None, ""),
        ("42", ""),
    ],
)
def test_english_phonetic(word: str | None, expected: str) -> None:
    assert english_phonetic(word) == expected


# --- dates ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-03-01", dt.date(2024, 3, 1)),
        ("2024-3-1", dt.date(2024, 3, 1)),
        ("01.03.2024", dt.date(2024, 3, 1)),
        ("1.3.2024", dt.date(2024, 3, 1)),
        ("1.3.24", dt.date(2024, 3, 1)),
        ("01.03.00", dt.date(2000, 3, 1)),
        ("01.03.99", dt.date(1999, 3, 1)),
        ("24.12.1965", dt.date(1965, 12, 24)),
        ("01.03.2024 14:05", dt.date(2024, 3, 1)),
        ("20240301", dt.date(2024, 3, 1)),
        (20240301, dt.date(2024, 3, 1)),
        ("2024-03-01T14:05:00Z", dt.date(2024, 3, 1)),
        ("2024-03-01T23:30:00-05:00", dt.date(2024, 3, 1)),
        ("2024-03-01 14:05:00", dt.date(2024, 3, 1)),
        ("  01.03.2024 ", dt.date(2024, 3, 1)),
        ("29.02.2024", dt.date(2024, 2, 29)),
        (dt.date(2024, 3, 1), dt.date(2024, 3, 1)),
        (dt.datetime(2024, 3, 1, 14, 5), dt.date(2024, 3, 1)),
    ],
)
def test_parse_date(raw: object, expected: dt.date) -> None:
    assert parse_date(raw) == expected


def test_parse_date_two_digit_year_pivot_follows_current_year() -> None:
    this_year = dt.date.today().year % 100
    assert parse_date(f"01.01.{this_year:02d}") == dt.date(2000 + this_year, 1, 1)
    next_year = (this_year + 1) % 100
    if next_year > this_year:
        assert parse_date(f"01.01.{next_year:02d}") == dt.date(1900 + next_year, 1, 1)


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_parse_date_empty(raw: str | None) -> None:
    assert parse_date(raw) is None


@pytest.mark.parametrize(
    ("raw", "formats", "expected"),
    [
        ("03/01/2024", ["%m/%d/%Y"], dt.date(2024, 3, 1)),
        ("01/03/2024", ["%d/%m/%Y"], dt.date(2024, 3, 1)),
        ("1 March 2024", ["%d %B %Y"], dt.date(2024, 3, 1)),
        ("2024-03-01", ["%d/%m/%Y"], dt.date(2024, 3, 1)),  # falls back to the automatic formats
        ("01/03/2024", "%d/%m/%Y", dt.date(2024, 3, 1)),  # a single string is fine too
    ],
)
def test_parse_date_formats(raw: str, formats: list[str], expected: dt.date) -> None:
    assert parse_date(raw, formats) == expected


def test_parse_date_formats_without_fallback() -> None:
    with pytest.raises(NormalizationError, match="not a date in format %d/%m/%Y: '2024-03-01'"):
        parse_date("2024-03-01", ["%d/%m/%Y"], fallback=False)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (45352, dt.date(2024, 3, 1)),
        ("45352", dt.date(2024, 3, 1)),
        (45352.5, dt.date(2024, 3, 1)),
        (1, dt.date(1899, 12, 31)),
    ],
)
def test_parse_date_excel_serial_when_allowed(raw: object, expected: dt.date) -> None:
    assert parse_date(raw, excel_serial=True) == expected


@pytest.mark.parametrize("raw", [45352, "45352", 45352.0])
def test_parse_date_excel_serial_rejected_by_default(raw: object) -> None:
    with pytest.raises(NormalizationError):
        parse_date(raw)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("31.02.2024", "impossible date: '31.02.2024'"),
        ("29.02.2023", "impossible date: '29.02.2023'"),
        ("2024-13-01", "impossible date: '2024-13-01'"),
        ("20241301", "impossible date: '20241301'"),
        ("2024-02-30T10:00:00", "impossible date: '2024-02-30T10:00:00'"),
        ("32.01.2024", "impossible date"),
        ("gestern", "not a date: 'gestern'"),
        ("2024", "not a date: '2024'"),
        ("01.03", "not a date: '01.03'"),
        ("01/03/2024", "ambiguous date: '01/03/2024'"),
        (True, "not a date: True"),
        (0, "not a date: 0"),
    ],
)
def test_parse_date_rejects(raw: object, message: str) -> None:
    with pytest.raises(NormalizationError) as info:
        parse_date(raw)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-03-01T14:05:00Z", dt.datetime(2024, 3, 1, 14, 5, tzinfo=UTC)),
        (
            "2024-03-01T14:05:00+01:00",
            dt.datetime(2024, 3, 1, 14, 5, tzinfo=dt.timezone(dt.timedelta(hours=1))),
        ),
        ("2024-03-01T14:05:00.123Z", dt.datetime(2024, 3, 1, 14, 5, 0, 123000, tzinfo=UTC)),
        ("2024-03-01 14:05", dt.datetime(2024, 3, 1, 14, 5, tzinfo=UTC)),
        ("2024-03-01", dt.datetime(2024, 3, 1, tzinfo=UTC)),
        ("01.03.2024 14:05", dt.datetime(2024, 3, 1, 14, 5, tzinfo=UTC)),
        ("01.03.2024 14:05:30", dt.datetime(2024, 3, 1, 14, 5, 30, tzinfo=UTC)),
        ("01.03.2024, 14:05 Uhr", dt.datetime(2024, 3, 1, 14, 5, tzinfo=UTC)),
        ("01.03.2024", dt.datetime(2024, 3, 1, tzinfo=UTC)),
        ("1709301900000", dt.datetime(2024, 3, 1, 14, 5, tzinfo=UTC)),  # HubSpot epoch ms
        (1709301900000, dt.datetime(2024, 3, 1, 14, 5, tzinfo=UTC)),
        (1709301900, dt.datetime(2024, 3, 1, 14, 5, tzinfo=UTC)),  # epoch seconds
        ("-157766400000", dt.datetime(1965, 1, 1, tzinfo=UTC)),  # ms before 1970
        ("20240301", dt.datetime(2024, 3, 1, tzinfo=UTC)),
        (dt.datetime(2024, 3, 1, 14, 5), dt.datetime(2024, 3, 1, 14, 5, tzinfo=UTC)),
        (dt.date(2024, 3, 1), dt.datetime(2024, 3, 1, tzinfo=UTC)),
    ],
)
def test_parse_datetime(raw: object, expected: dt.datetime) -> None:
    result = parse_datetime(raw)
    assert result == expected
    assert result is not None and result.tzinfo is not None
    assert result.utcoffset() == expected.utcoffset()


def test_parse_datetime_assume_tz() -> None:
    result = parse_datetime("01.03.2024 14:05", "Europe/Berlin")
    assert result is not None
    assert result.utcoffset() == dt.timedelta(hours=1)
    assert result.astimezone(UTC) == dt.datetime(2024, 3, 1, 13, 5, tzinfo=UTC)
    # explicit offsets win over assume_tz
    assert parse_datetime("2024-03-01T14:05:00Z", "Europe/Berlin") == dt.datetime(
        2024, 3, 1, 14, 5, tzinfo=UTC
    )


def test_parse_datetime_epoch_unit() -> None:
    assert parse_datetime(63072000000, epoch_unit="ms") == dt.datetime(1972, 1, 1, tzinfo=UTC)
    assert parse_datetime("86400", epoch_unit="s") == dt.datetime(1970, 1, 2, tzinfo=UTC)
    with pytest.raises(ValueError, match="epoch_unit"):
        parse_datetime("1", epoch_unit="minutes")


@pytest.mark.parametrize("raw", [None, "", "  "])
def test_parse_datetime_empty(raw: str | None) -> None:
    assert parse_datetime(raw) is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("morgen früh", "not a date/time: 'morgen früh'"),
        ("31.02.2024 10:00", "impossible date: '31.02.2024 10:00'"),
        ("01.03.2024 25:00", "impossible time: '01.03.2024 25:00'"),
        ("2024-02-30T10:00:00Z", "impossible date"),
        ("2024-03-01Tfoo", "not a date/time"),
        (True, "not a date/time: True"),
    ],
)
def test_parse_datetime_rejects(raw: object, message: str) -> None:
    with pytest.raises(NormalizationError) as info:
        parse_datetime(raw)
    assert message in str(info.value)


# --- decimals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "decimal_comma", "expected"),
    [
        ("1.234,56", None, "1234.56"),
        ("1,234.56", None, "1234.56"),
        ("1.234.567,89", None, "1234567.89"),
        ("1,234,567.89", None, "1234567.89"),
        ("12,5", None, "12.5"),
        ("12.5", None, "12.5"),
        ("€ 1.234,56", None, "1234.56"),
        ("1.234,56 €", None, "1234.56"),
        ("1234.56 EUR", None, "1234.56"),
        ("EUR1234.56", None, "1234.56"),
        ("$1,234.56", None, "1234.56"),
        ("CHF 99.–", None, "99.00"),
        ("99.-", None, "99.00"),
        ("Fr. 12.50", None, "12.50"),
        ("1'234.50", None, "1234.50"),
        ("1\u2019234.50", None, "1234.50"),
        ("1 234,56", None, "1234.56"),
        ("1\u202f234,56", None, "1234.56"),
        ("-12,50", None, "-12.50"),
        ("\u221212,50", None, "-12.50"),
        ("(12,50)", None, "-12.50"),
        ("(€ 12,50)", None, "-12.50"),
        ("12,50-", None, "-12.50"),
        ("-€ 1.234,56", None, "-1234.56"),
        ("+12,50", None, "12.50"),
        ("0", None, "0"),
        ("0,125", None, "0.125"),
        (",5", None, "0.5"),
        ("1.5E3", None, "1.5E3"),
        # the single-separator rule
        ("1.234", None, "1234"),
        ("1.234", True, "1234"),
        ("1.234", False, "1.234"),
        ("1,234", None, "1234"),
        ("1,234", True, "1.234"),
        ("1,234", False, "1234"),
        ("12,5", False, "12.5"),  # cannot be grouping
        ("12.5", True, "12.5"),  # cannot be grouping
        ("1234,567", None, "1234.567"),  # more than 3 digits before: decimal
        ("0.125", None, "0.125"),  # leading 0: decimal
        (1234, None, "1234"),
        (12.5, None, "12.5"),
        (0.1, None, "0.1"),
        (Decimal("1.10"), None, "1.10"),
    ],
)
def test_parse_decimal(raw: object, decimal_comma: bool | None, expected: str) -> None:
    result = parse_decimal(raw, decimal_comma)
    assert isinstance(result, Decimal)
    assert result == Decimal(expected)


def test_parse_decimal_is_exact() -> None:
    assert parse_decimal("0,1") + parse_decimal("0,2") == Decimal("0.3")  # type: ignore[operator]


@pytest.mark.parametrize("raw", [None, "", "  "])
def test_parse_decimal_empty(raw: str | None) -> None:
    assert parse_decimal(raw) is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("abc", "not a number: 'abc'"),
        ("12 Stück", "not a number: '12 Stück'"),
        ("1.2.3", "bad digit grouping"),
        ("1,23,456.00", "inconsistent separators"),
        ("1.234.56,7", "inconsistent separators"),
        ("1,234.5,6", "inconsistent separators"),
        ("NaN", "not a number: 'NaN'"),
        ("Infinity", "not a number"),
        ("--5", "not a number"),
        ("€", "not a number"),
        (True, "not a number: True"),
        (float("nan"), "not a finite number"),
    ],
)
def test_parse_decimal_rejects(raw: object, message: str) -> None:
    with pytest.raises(NormalizationError) as info:
        parse_decimal(raw)
    assert message in str(info.value)


# --- names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("MÜLLER", "Müller"),
        ("müller", "Müller"),
        ("  anna   maria  ", "Anna Maria"),
        ("MÜLLER-LÜDENSCHEIDT", "Müller-Lüdenscheidt"),
        ("müller-lüdenscheidt", "Müller-Lüdenscheidt"),
        ("RICHARD VON WEIZSÄCKER", "Richard von Weizsäcker"),
        ("VON WEIZSÄCKER", "von Weizsäcker"),
        ("ludwig van beethoven", "Ludwig van Beethoven"),
        ("LEONARDO DA VINCI", "Leonardo da Vinci"),
        ("KARL-THEODOR ZU GUTTENBERG", "Karl-Theodor zu Guttenberg"),
        ("ANNA DE LA CRUZ", "Anna de la Cruz"),
        ("O'BRIEN", "O'Brien"),
        ("d'angelo", "D'Angelo"),
        ("HEINRICH III", "Heinrich III"),
        ("MCDONALD", "Mcdonald"),  # no guessing of Mc/Mac
        ("McDonald", "McDonald"),  # mixed case kept
        ("van der Berg", "van der Berg"),
        ("DiCaprio", "DiCaprio"),
        ("Anna-Lena MÜLLER", "Anna-Lena MÜLLER"),  # mixed: kept as given
        ("STRAUß", "Strauß"),
        ("DI", "Di"),  # only particles: capitalised
    ],
)
def test_normalize_name(raw: str, expected: str) -> None:
    assert normalize_name(raw) == expected


@pytest.mark.parametrize("raw", [None, "", "   ", "\u200b"])
def test_normalize_name_empty(raw: str | None) -> None:
    assert normalize_name(raw) is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Anna Schmidt", ("Anna", "Schmidt")),
        ("Dr. Anna Maria Schmidt", ("Anna Maria", "Schmidt")),
        ("Schmidt, Anna", ("Anna", "Schmidt")),
        ("Schmidt, Dr. Anna", ("Anna", "Schmidt")),
        ("Richard von Weizsäcker", ("Richard", "von Weizsäcker")),
        ("von Weizsäcker, Richard", ("Richard", "von Weizsäcker")),
        ("Karl-Theodor zu Guttenberg", ("Karl-Theodor", "zu Guttenberg")),
        ("Ludwig van Beethoven", ("Ludwig", "van Beethoven")),
        ("Anna de la Cruz", ("Anna", "de la Cruz")),
        ("Prof. Dr. Hans Müller", ("Hans", "Müller")),
        ("Prof. Dr. Dr. h.c. Hans Müller", ("Hans", "Müller")),
        ("Herr Hans Müller", ("Hans", "Müller")),
        ("Frau Dr. med. Anna Schmidt", ("Anna", "Schmidt")),
        ("Dipl.-Ing. Hans Meier", ("Hans", "Meier")),
        ("Hans Meier, Dipl.-Ing.", ("Hans", "Meier")),
        ("Mag. Eva Huber", ("Eva", "Huber")),
        ("Mr John Smith", ("John", "Smith")),
        ("Mrs. Jane Smith", ("Jane", "Smith")),
        ("Ms Jane Smith", ("Jane", "Smith")),
        ("Jane Smith PhD", ("Jane", "Smith")),
        ("Juan García y Pérez", ("Juan", "García y Pérez")),
        ("Karl-Theodor von und zu Guttenberg", ("Karl-Theodor", "von und zu Guttenberg")),
        ("Maria da Silva", ("Maria", "da Silva")),
        ("Müller-Lüdenscheidt", (None, "Müller-Lüdenscheidt")),
        ("  Anna   Schmidt ", ("Anna", "Schmidt")),
        ("Herr", (None, None)),
        ("", (None, None)),
        (None, (None, None)),
    ],
)
def test_split_full_name(raw: str | None, expected: tuple[str | None, str | None]) -> None:
    assert split_full_name(raw) == expected


def test_fast_dach_mobile_path_agrees_with_phonenumbers() -> None:
    """phone_type answers DACH mobiles by prefix; it must say what phonenumbers would say."""
    import random

    import phonenumbers

    from synchub.normalize import _DACH_MOBILE, _phone_type_slow

    r = random.Random(5)
    checked = 0
    for prefix in ("+49151", "+49160", "+49176", "+49179", "+43650", "+43664", "+43699", "+4176", "+4179"):
        for length in range(5, 11):
            for _ in range(60):
                number = prefix + "".join(r.choice("0123456789") for _ in range(length))
                if not phonenumbers.is_valid_number(phonenumbers.parse(number, None)):
                    continue
                if _DACH_MOBILE.match(number):
                    checked += 1
                    assert _phone_type_slow(number) == "mobile", number
    assert checked > 1000
