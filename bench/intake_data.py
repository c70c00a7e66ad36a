"""Synthetic customer exports with the dirt of real ones, and what the hub should make of them.

Shared by ``bench/intake_bench.py`` (100,000 rows per export through the real CLI) and
``tests/test_intake_scale.py`` (a few thousand rows, SQLite and PostgreSQL). Both import it as
``bench.intake_data`` with the repository root on ``sys.path``.

Two exports, each a generator of rows plus the *truth* about every row:

* ``dach`` — a German shop's customer export (``mappings/shop_kunden.yaml``): Excel-style, ``;``,
  cp1252 (or UTF-8 with BOM), German, Austrian and Swiss customers with umlauts, ``Straße`` /
  ``Str.`` / ``strasse``, real postcode ranges, phone numbers in every spelling people type
  (``+49 (0) 30 1234567``, ``0171/1234567``, ``+41 44 668 18 00``, ``+43 1 234 5678``, labels,
  notes) and the bad values such files have: numbers with too many digits
  (``+41 33 20379-872``), made-up Austrian numbers (``+43 417 4411-677``), typos, ``n/a``, ``-``,
  spreadsheet numbers (``4,91711E+11``), two numbers in one cell, dates like ``31.02.1985``,
  e-mails like ``name(at)example.de``, misspelled countries, postcodes with letters.
* ``us`` — a US shop's customer export (own mapping :data:`US_MAPPING`): ``,``, UTF-8, phones
  as ``(212) 555-0147``, ``212.555.0147``, ``+1-212-555-0147``; **every fifth row** (row index
  ``i % 5 == 2``) has an invalid phone: made-up area codes (``(123) 456-7890``), exchanges
  starting with 0 or 1, too few or too many digits, placeholders, spreadsheet numbers.

Both have 2 % second accounts of an earlier person (same e-mail in other letter case, same
phone) and a few planted junk rows that must be rejected (a stub with only placeholders, a row
with an unquoted delimiter, a row without its customer number; one each per ``junk_every``
rows). Every row is generated from its own seeded ``random.Random``: row *i* is the same for
every ``n`` > *i*, so a test's 4,000 rows are the first 4,000 of the benchmark's 100,000.

:class:`Truth` says per row which values were planted bad (and what the hub should do with
each), the valid phone number in E.164 as built (not as any library reads it), and whether the
row must be rejected. :func:`analyse` compares a finished run's store with it.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.sync_bench import (
    CITIES_AT,
    CITIES_CH,
    CITIES_DE,
    COMMON_LAST_NAMES,
    COMPOSED_LAST_NAMES,
    FIRST_FEMALE,
    FIRST_MALE,
    MAIL_DOMAINS,
    STREETS_AT,
    STREETS_CH,
    STREETS_DE,
)

REPO = Path(__file__).resolve().parent.parent

#: What the hub should do with a planted bad value: leave it out (``quarantined``), keep it
#: flagged (``unverified``), one of the two (``either``), or anything including landing as a
#: valid value (``may``: a typo can make another valid number).
QUARANTINED, UNVERIFIED, EITHER, MAY = "quarantined", "unverified", "either", "may"


@dataclass(slots=True)
class Truth:
    """What the generator planted in one row."""

    line: int  # line of the row in the file (the header is line 1, no row spans lines)
    source_id: str  # the primary key as written ('' when the row has none)
    person: int  # index of the person; a second account shares its person's index
    #: Planted junk that must be rejected: 'stub', 'columns' or 'no_key'; None otherwise.
    junk: str | None = None
    #: Planted bad values: (canonical field, raw value, defect, expected outcome).
    bad: list[tuple[str, str, str, str]] = field(default_factory=list)
    phone_raw: str = ""
    #: The phone number as built, E.164, when the row's phone is a valid number.
    phone_e164: str | None = None
    #: The hub can read the row's country (a valid, non-empty country value).
    country_ok: bool = True
    has_name: bool = True
    email_ok: bool = True  # a valid e-mail address is in the row
    #: US export: this row is one of the fifth with an invalid phone.
    invalid_phone_row: bool = False

    def expect_reject(self) -> bool | None:
        """Whether the hub must reject the row (None: it depends on what a typo turned into).

        The rule (synchub/quarantine.py): a record is rejected when values were quarantined and
        nothing identifying is left: no name, no usable e-mail, no usable phone."""
        if self.junk:
            return True
        if self.has_name or self.email_ok:
            return False
        if self.phone_e164:
            return False
        phone = [b for b in self.bad if b[0] == "phones"]
        if not phone:  # no phone at all: rejected only if something else was quarantined
            return bool(self.bad)
        outcome = phone[0][3]
        return True if outcome == QUARANTINED else False if outcome == UNVERIFIED else None


@dataclass
class Export:
    """One export's file shape, mapping and config."""

    name: str
    file_name: str
    columns: list[str]
    delimiter: str
    encoding: str
    mapping: str  # mapping name
    mapping_yaml: str | None  # None: the repository's mappings/<mapping>.yaml
    phone_region: str
    match_keys: list[str]
    primary_key: str
    connection: str = "shop"
    stream: str = "customers"


# ---------------------------------------------------------------------------------------------
# DACH
# ---------------------------------------------------------------------------------------------

DACH_COLUMNS = [  # exactly the source columns of mappings/shop_kunden.yaml
    "Kundennr", "Anrede", "Vorname", "Nachname", "E-Mail", "Telefon", "Straße", "PLZ", "Ort", "Land",
    "Geburtsdatum", "Kunde seit", "Bestellungen", "Umsatz", "Newsletter", "Letzte Bestellung",
]
_DACH = {  # country: (cc, Land spellings, misspellings, cities, streets, mobile prefixes, PLZ width, share)
    "DE": ("49", ["Deutschland"] * 16 + ["DE", "Germany", "D", "BRD"],
           ["Deutschlad", "Deutchland", "Deutschand", "Germnay", "Duetschland", "Deuschland"],
           CITIES_DE, STREETS_DE, ["0151", "0152", "0157", "0160", "0162", "0170", "0171", "0172", "0175", "0176", "0178"], 5),
    "AT": ("43", ["Österreich"] * 8 + ["AT", "Oesterreich", "Austria"],
           ["Östereich", "Österrreich", "Östrreich", "Ostereich", "Austira"],
           CITIES_AT, STREETS_AT, ["0664", "0676", "0650", "0699", "0660", "0680"], 4),
    "CH": ("41", ["Schweiz"] * 8 + ["CH", "Suisse", "Switzerland"],
           ["Schwiz", "Schweitz", "Schwiez", "Schwei", "Swizerland"],
           CITIES_CH, STREETS_CH, ["076", "077", "078", "079"], 4),
}
_CITY_CUM = {c: list(itertools.accumulate(city[5] for city in v[3])) for c, v in _DACH.items()}
_TRANSLIT = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "é": "e", "è": "e", "ë": "e",
                           "Ä": "ae", "Ö": "oe", "Ü": "ue", " ": "", "'": "", "-": ""})
_PHONE_PLACEHOLDERS_DE = ["n/a", "-", "k.A.", "keine", "unbekannt", "0", "/", "--", "N/A", "folgt"]
_EMAIL_PLACEHOLDERS_DE = ["n/a", "-", "keine", "k.A."]
_BIRTH0, _SINCE0, _LAST_MAX = dt.date(1940, 1, 1), dt.date(2010, 1, 1), dt.date(2025, 6, 30)


def _date_de(d: dt.date) -> str:
    return f"{d.day:02d}.{d.month:02d}.{d.year}"


def _money_de(x: float) -> str:
    return f"{x:,.2f}".replace(",", "_").replace(".", ",").replace("_", ".")


def _core7(k: int) -> str:
    """A distinct 7-digit number (first digit 1-9) for every k < 9,000,000."""
    return str((k * 7_368_787 + 1_234_567) % 9_000_000 + 1_000_000)


def _digits(r: random.Random, n: int, first: str = "23456789") -> str:
    return r.choice(first) + "".join(r.choice("0123456789") for _ in range(n - 1))


def _spell_dach(r: random.Random, cc: str, area: str, sub: str, mobile: bool) -> str:
    """One of the ways people write the number 0<area> <sub> (area without its trunk 0)."""
    x = r.random()
    if cc == "41" and r.random() < 0.7:  # Swiss numbers are nearly always grouped 0AA BBB BB BB
        grouped = f"{sub[:3]} {sub[3:5]} {sub[5:]}"
        return f"+41 {area} {grouped}" if x < 0.45 else f"0041 {area} {grouped}" if x < 0.5 else f"0{area} {grouped}"
    if x < 0.28:
        return f"0{area} {sub}"
    if x < 0.40:
        return f"0{area}/{sub}"
    if x < 0.45:
        return f"0{area}-{sub}"
    if x < 0.50:
        return f"(0{area}) {sub}"
    if x < 0.55:
        return f"0{area}{sub}"
    if x < 0.70:
        return f"+{cc} {area} {sub}"
    if x < 0.76:
        return f"+{cc} (0) {area} {sub}"
    if x < 0.80:
        return f"+{cc} (0){area} {sub}"
    if x < 0.84:
        return f"00{cc} {area} {sub}"
    if x < 0.87:
        return f"+{cc}{area}{sub}"
    if x < 0.89:
        return f"+{cc}-{area}-{sub}"
    if x < 0.91:
        return f"+{cc} {area} {sub[:3]} {sub[3:]}"
    if x < 0.94:
        return f"Tel. 0{area} {sub}" if not mobile else f"mobil: 0{area} {sub}"
    if x < 0.97:
        return f"0{area} {sub} (mobil)" if mobile else f"0{area} {sub} (privat)"
    return f"0{area} / {sub}"


def _typo(r: random.Random, text: str) -> str:
    """One typing error in the digits of ``text``: a digit dropped, doubled, swapped or
    mistyped, or the letter O for the digit 0."""
    pos = [i for i, ch in enumerate(text) if ch.isdigit()]
    i = r.choice(pos[2:] or pos)
    kind = r.random()
    if kind < 0.3:
        return text[:i] + text[i + 1:]
    if kind < 0.55:
        return text[:i] + text[i] + text[i:]
    if kind < 0.75 and i + 1 < len(text) and text[i + 1].isdigit():
        return text[:i] + text[i + 1] + text[i] + text[i + 2:]
    if kind < 0.9 or "0" not in text:
        return text[:i] + str((int(text[i]) + r.randint(1, 9)) % 10) + text[i + 1:]
    j = text.index("0")
    return text[:j] + "O" + text[j + 1:]


def _excel_sci(digits: str) -> str:
    """What German Excel shows for a long number typed without the leading + or 0."""
    mantissa = f"{int(digits) / 10 ** (len(digits) - 1):.5f}".rstrip("0").rstrip(".")
    return f"{mantissa.replace('.', ',')}E+{len(digits) - 1}"


class _Generator:
    """What both exports' generators share: the seed, and which earlier row's person a row is a
    second account of (a duplicate the hub should find)."""

    export: Export

    def __init__(self, seed: int = 42, *, dup_rate: float = 0.02, junk_every: int = 10_000):
        self.seed, self.dup_rate, self.junk_every = seed, dup_rate, junk_every
        self._origin: dict[int, int] = {}

    def person(self, j: int) -> dict[str, Any]:
        raise NotImplementedError

    def _origin_of(self, r: random.Random, i: int) -> tuple[bool, int]:
        """(is a duplicate, row of the person it is): one draw, and a second only for duplicates."""
        if i > 0 and r.random() < self.dup_rate:
            j = r.randrange(i)
            self._origin[i] = self._origin.get(j, j)
            return True, self._origin[i]
        return False, i


class DachGenerator(_Generator):
    """Rows of the German shop export with German, Austrian and Swiss customers."""

    export = Export(
        name="dach", file_name="dach_kunden_export.csv", columns=DACH_COLUMNS, delimiter=";",
        encoding="cp1252", mapping="shop_kunden", mapping_yaml=None, phone_region="DE",
        match_keys=["email", "phone_mobile"], primary_key="Kundennr",
    )

    def person(self, j: int) -> dict[str, Any]:
        """The identity of the person first seen in row ``j``."""
        r = random.Random(self.seed * 10_000_019 + j)
        x = r.random()
        country = "DE" if x < 0.80 else "AT" if x < 0.90 else "CH"
        cc, lands, _miss, cities, streets, mobiles, plz_width = _DACH[country]
        female = r.random() < 0.5
        first = r.choice(FIRST_FEMALE if female else FIRST_MALE)
        last = r.choice(COMMON_LAST_NAMES if r.random() < 0.5 else COMPOSED_LAST_NAMES)
        f, lname = first.translate(_TRANSLIT).lower(), last.translate(_TRANSLIT).lower()
        n = j + 1
        local = r.choice((f"{f}.{lname}{n}", f"{f[0]}.{lname}{n}", f"{f}{lname}{n}", f"{lname}.{f}{n}", f"{f}_{lname}.{n}"))
        lo, hi, step, city, area, _w = r.choices(cities, cum_weights=_CITY_CUM[country])[0]
        plz = str(lo + step * r.randrange((hi - lo) // step + 1)).zfill(plz_width)
        birth = None if r.random() < 0.1 else _BIRTH0 + dt.timedelta(days=r.randrange(66 * 365))
        x = r.random()
        if x < 0.60:  # a mobile number unique to the person (7-digit core is a bijection of j)
            pre = r.choice(mobiles)
            core = _core7(j)
            if pre[:3] == "015":
                core = r.choice("123456789") + core  # 015x numbers have 8 digits after the prefix
            phone: tuple[str, str, bool] | None = (pre[1:], core, True)
        elif x < 0.90:  # a landline (shared by a household, never an identity key)
            sub = _digits(r, 7) if country == "CH" else _digits(r, r.choice((6, 7, 8)) if len(area) <= 3 else r.choice((5, 6, 7)))
            phone = (area[1:], sub, False)
        else:
            phone = None
        street = r.choice(streets)
        if country == "DE" and street.endswith("straße") and r.random() < 0.25:
            street = street[: -len("straße")] + r.choice(("str.", "strasse", "str"))
        return {
            "country": country, "cc": cc, "land": r.choice(lands), "anrede": "Frau" if female else "Herr",
            "first": first, "last": last, "email": f"{local}@{r.choice(MAIL_DOMAINS[country])}",
            "street": f"{street} {r.randint(1, 180)}{r.choice(('', '', '', '', 'a', 'b'))}",
            "plz": plz, "city": city, "birth": birth, "phone": phone,
        }

    def row(self, i: int) -> tuple[list[str] | str, Truth]:
        """Row ``i`` as CSV fields (or, for a broken row, the raw line) and its truth."""
        r = random.Random(self.seed * 1_000_003 + i + 7)
        sid = f"K-{100001 + i}"
        dup, origin = self._origin_of(r, i)
        p = self.person(origin)
        t = Truth(line=i + 2, source_id=sid, person=origin)
        email = p["email"]
        if dup:
            local, domain = email.split("@")
            email = r.choice((email.upper(), local + "@" + domain.upper(), local.capitalize() + "@" + domain.capitalize()))
        first, last = p["first"], p["last"]
        x = r.random()
        if x < 0.03:
            last = last.upper()
        elif x < 0.05:
            first, last = first.lower(), last.lower()
        elif x < 0.055:
            first = ""
        elif x < 0.058:
            first = last = ""
        t.has_name = bool(first or last)

        # e-mail
        x = r.random()
        if x < 0.03:
            email, t.email_ok = "", False
        elif x < 0.045:
            t.email_ok = False
            local, domain = email.split("@")
            bad = r.choice((
                f"{local}(at){domain}", f"{local}@@{domain}", f"{local}@{domain.rsplit('.', 1)[0]}",
                f"{local}@{domain.replace('.', ',')}", f"{local} @{domain}", f"{local}@{domain}.",
                r.choice(_EMAIL_PLACEHOLDERS_DE),
            ))
            t.bad.append(("emails", bad, "e-mail", QUARANTINED))
            email = bad

        # phone
        phone = ""
        country_written = p["country"]
        if p["phone"] is not None:
            area, sub, mobile = p["phone"]
            phone = _spell_dach(r, p["cc"], area, sub, mobile)
            t.phone_e164 = f"+{p['cc']}{area}{sub}"
            x = r.random()
            defect = None
            if x < 0.020:
                phone, defect, outcome = r.choice(_PHONE_PLACEHOLDERS_DE), "placeholder", QUARANTINED
            elif x < 0.030:
                phone, defect, outcome = _excel_sci(f"{p['cc']}{area}{sub}"), "spreadsheet number", QUARANTINED
            elif x < 0.045:
                aa = r.choice(("31", "33", "44", "61", "41", "71", "21", "52", "62"))
                phone, defect, outcome = f"+41 {aa} {_digits(r, 5)}-{_digits(r, 3, '0123456789')}", "too many digits (CH)", QUARANTINED
            elif x < 0.055:
                phone = f"+43 {r.randint(410, 489)} {_digits(r, 4)}-{_digits(r, 3, '0123456789')}"
                defect, outcome = "made-up number (AT format)", MAY
            elif x < 0.065:
                phone = f"0{area} {sub[:3]}" if mobile else f"{sub[:3]}"
                defect, outcome = "too few digits", EITHER
            elif x < 0.070:
                other = f"0{r.choice(_DACH['DE'][5])[1:]} {_core7(i + 4_000_000)}"
                phone, defect, outcome = f"{phone} / {other}", "two numbers in one cell", EITHER
            elif x < 0.095:
                phone, defect, outcome = _typo(r, phone), "typo", MAY
            if defect:
                t.phone_e164 = None
                t.bad.append(("phones", phone, defect, outcome))
        t.phone_raw = phone

        # country, postcode
        misspelled = _DACH[p["country"]][2]
        land = p["land"]
        x = r.random()
        if x < 0.005:
            land = r.choice(misspelled)
            t.country_ok = False
            t.bad.append(("address.country", land, "misspelled country", QUARANTINED))
            country_written = None
            if p["country"] != "DE":  # its national phone numbers are read in the default region, DE
                t.bad[:] = [(f, raw, f"{defect}, country unreadable", MAY) if f == "phones" else (f, raw, defect, expect)
                            for f, raw, defect, expect in t.bad]
        elif p["country"] == "DE" and x < 0.025:
            land = ""  # a German shop leaves the country of German customers empty
            t.country_ok = False  # the hub reads it in the default region DE, which is right here
        plz = p["plz"]
        x = r.random()
        if x < 0.004 and country_written:
            if "0" in plz:
                k = r.choice([k for k, ch in enumerate(plz) if ch == "0"])
                plz = plz[:k] + "O" + plz[k + 1:]
            else:
                k = r.randrange(len(plz))
                plz = plz[:k] + r.choice("IlS") + plz[k + 1:]
            if land:
                t.bad.append(("address.postal_code", plz, "letter in postcode", QUARANTINED))
            else:  # no country in the row: the hub has nothing to check the postcode against
                t.bad.append(("address.postal_code", plz, "letter in postcode, row without country", MAY))
        elif x < 0.006 and country_written in ("AT", "CH"):
            plz = plz + r.choice("0123456789")
            t.bad.append(("address.postal_code", plz, "postcode too long", QUARANTINED))
        elif x < 0.010 and country_written:
            plz = {"DE": "D-", "AT": "A-", "CH": "CH-"}[p["country"]] + plz  # fine: the prefix is removed

        # birth date
        birth = _date_de(p["birth"]) if p["birth"] else ""
        x = r.random()
        if birth and x < 0.006:
            d = p["birth"]
            birth = r.choice((f"31.02.{d.year}", f"29.02.{1983 + 4 * r.randint(0, 4)}", "00.00.0000",
                              f"{d.day:02d}.{12 + r.randint(1, 3)}.{d.year}", str(d.year),
                              f"{d.day:02d}.{d.month:02d}.{d.year % 100:02d}", f"{d.month:02d}/{d.day:02d}/{d.year}"))
            t.bad.append(("birth_date", birth, "impossible or foreign date", QUARANTINED))

        since = _SINCE0 + dt.timedelta(days=r.randrange(15 * 365))
        orders = min(int(r.expovariate(1 / 6)), 250)
        if orders:
            umsatz = _money_de(orders * r.uniform(15, 180)) + (" €" if r.random() < 0.05 else "")
            last_order = _date_de(since + dt.timedelta(days=r.randrange(max((_LAST_MAX - since).days, 1))))
        else:
            umsatz, last_order = "0,00", ""
        bestellungen = str(orders)
        x = r.random()
        if x < 0.002:
            umsatz = r.choice(("k.A.", "-", "n/a"))
            t.bad.append(("purchases.total_spent", umsatz, "not a number", QUARANTINED))
        elif x < 0.003:
            bestellungen = r.choice(("-", "k.A."))
            t.bad.append(("purchases.orders_count", bestellungen, "not a number", QUARANTINED))
        newsletter = "ja" if r.random() < 0.45 else "nein"
        x = r.random()
        if x < 0.003:
            newsletter = r.choice(("1", "x", "j", "?"))
            t.bad.append(("consent.email.status", newsletter, "unknown consent value", QUARANTINED))
        elif x < 0.02:
            newsletter = newsletter.capitalize()

        fields = [sid, p["anrede"] if first or last else "", first, last, email, phone, p["street"], plz, p["city"], land,
                  birth, _date_de(since), bestellungen, umsatz, newsletter, last_order]
        junk = _junk_kind(i, self.junk_every)
        if junk == "stub":  # an account whose personal data was blanked, but not cleanly
            fields = [sid, "", "", "", r.choice(_EMAIL_PLACEHOLDERS_DE), r.choice(_PHONE_PLACEHOLDERS_DE[:4]),
                      "", "", "", "", "", _date_de(since), "0", "0,00", "nein", ""]
        elif junk == "columns":  # a ';' inside a field, unquoted (an export script that forgot quoting)
            fields[6] = p["street"] + "; 2. OG"
            return ";".join(fields), _mark_junk(t, junk)
        elif junk == "no_key":
            fields[0] = ""
            t.source_id = ""
        if junk:
            return fields, _mark_junk(t, junk)
        return fields, t


def _junk_kind(i: int, every: int) -> str | None:
    """Planted junk: three rows per ``every`` rows, at fixed offsets (never a row ``i % 5 == 2``)."""
    if every <= 0:
        return None
    k = i % every
    return {every // 4 + 1: "stub", every // 2 + 1: "columns", 3 * every // 4 + 1: "no_key"}.get(k)


def _mark_junk(t: Truth, junk: str) -> Truth:
    t.junk = junk
    t.bad.clear()
    t.phone_e164 = None
    t.has_name = t.email_ok = False
    return t


# ---------------------------------------------------------------------------------------------
# US
# ---------------------------------------------------------------------------------------------

US_COLUMNS = ["Customer ID", "First Name", "Last Name", "Company", "Email", "Phone", "Address", "City", "State",
              "ZIP", "Country", "Birthday", "Customer Since", "Orders", "Total Spent", "Accepts Marketing"]

US_MAPPING = """\
# A US web shop's customer export (generated by bench/intake_data.py): ',' UTF-8, US dates.
description: US shop customer export -> person
entity: person
direction: in
fields:
  first_name: First Name
  last_name: Last Name
  company_name: Company
  emails: Email
  phones: Phone
  address.street: Address
  address.city: City
  address.region: State
  address.postal_code: ZIP
  address.country: {path: Country, transform: country_iso}
  birth_date: {path: Birthday, transform: parse_date, args: {format: "%m/%d/%Y"}}
  lead_source.origin: {value: shop}
  lead_source.at: {path: Customer Since, transform: parse_date, args: {format: "%Y-%m-%d"}}
  purchases.orders_count: Orders
  purchases.total_spent: {path: Total Spent, transform: parse_decimal, args: {decimal_comma: false}}
  purchases.currency: {value: USD}
  consent.email.status:
    path: Accepts Marketing
    transform: map_values
    args: {values: {"yes": subscribed, "no": never}}
  lifecycle_stage: {value: customer}
"""

US_FIRST = (
    "James Robert John Michael David William Richard Joseph Thomas Christopher Charles Daniel Matthew "
    "Anthony Mark Donald Steven Andrew Paul Joshua Kenneth Kevin Brian Timothy Ronald George Jason Edward "
    "Jeffrey Ryan Jacob Nicholas Gary Eric Jonathan Stephen Larry Justin Scott Brandon Benjamin Samuel "
    "Mary Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Karen Sarah Lisa Nancy Sandra Betty "
    "Ashley Emily Kimberly Margaret Donna Michelle Carol Amanda Melissa Deborah Stephanie Rebecca Sharon "
    "Laura Cynthia Dorothy Amy Kathleen Angela Shirley Emma Brenda Pamela Nicole Anna Samantha Katherine "
    "Christine Debra Rachel Carolyn Janet Maria Olivia Heather Helen Catherine Diane Julie Victoria Joyce"
).split()
US_LAST = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez "
    "Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark "
    "Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams "
    "Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Gomez Phillips Evans Turner Diaz Parker "
    "Cruz Edwards Collins Reyes Stewart Morris Morales Murphy Cook Rogers Gutierrez Ortiz Morgan Cooper "
    "Peterson Bailey Reed Kelly Howard Ramos Kim Cox Ward Richardson Watson Brooks Chavez Wood James "
    "Bennett Gray Mendoza Ruiz Hughes Price Alvarez Castillo Sanders Patel Myers Long Ross Foster Jimenez "
    "O'Brien McDonald Sullivan Kowalski Schneider Russo Novak Fitzgerald Gallagher Okafor Haddad Yamamoto"
).split()
_US_FIRST_CUM = list(itertools.accumulate(1 / (k + 8) for k in range(len(US_FIRST))))
_US_LAST_CUM = list(itertools.accumulate(1 / (k + 5) for k in range(len(US_LAST))))
US_CITIES = [  # city, state, ZIP range, area codes, weight
    ("New York", "NY", (10001, 10292), ["212", "646", "917", "718", "347"], 84),
    ("Los Angeles", "CA", (90001, 90089), ["213", "310", "323", "818"], 39),
    ("Chicago", "IL", (60601, 60661), ["312", "773", "872"], 27),
    ("Houston", "TX", (77001, 77099), ["713", "281", "832"], 23),
    ("Phoenix", "AZ", (85001, 85055), ["602", "480", "623"], 16),
    ("Philadelphia", "PA", (19102, 19154), ["215", "267"], 16),
    ("San Antonio", "TX", (78201, 78266), ["210", "726"], 15),
    ("San Diego", "CA", (92101, 92199), ["619", "858"], 14),
    ("Dallas", "TX", (75201, 75398), ["214", "972", "469"], 13),
    ("San Jose", "CA", (95110, 95139), ["408", "669"], 10),
    ("Austin", "TX", (78701, 78759), ["512", "737"], 10),
    ("Seattle", "WA", (98101, 98199), ["206"], 7),
    ("Denver", "CO", (80202, 80239), ["303", "720"], 7),
    ("Boston", "MA", (2108, 2136), ["617", "857"], 7),
    ("Atlanta", "GA", (30303, 30363), ["404", "678", "470"], 5),
    ("Miami", "FL", (33125, 33199), ["305", "786"], 4),
    ("Portland", "OR", (97201, 97239), ["503", "971"], 6),
    ("Minneapolis", "MN", (55401, 55488), ["612"], 4),
    ("Nashville", "TN", (37201, 37250), ["615", "629"], 7),
    ("Newark", "NJ", (7101, 7199), ["973", "862"], 3),
    ("Hartford", "CT", (6101, 6199), ["860"], 1),
    ("Providence", "RI", (2901, 2940), ["401"], 2),
    ("Detroit", "MI", (48201, 48243), ["313"], 6),
    ("Las Vegas", "NV", (89101, 89199), ["702", "725"], 6),
    ("Charlotte", "NC", (28202, 28299), ["704", "980"], 9),
    ("Salt Lake City", "UT", (84101, 84199), ["801", "385"], 2),
]
_US_CITY_CUM = list(itertools.accumulate(c[4] for c in US_CITIES))
US_STREETS = (
    "Main Oak Maple Cedar Pine Elm Washington Lake Hill Park Sunset Lincoln Jackson Church Highland "
    "Ridge Spring Walnut Willow Chestnut Jefferson Madison Franklin Center Meadow River Forest Adams"
).split()
US_SUFFIXES = ["St", "Ave", "Rd", "Blvd", "Dr", "Ln", "Ct", "Way", "Street", "Avenue"]
US_MAIL = ["gmail.com", "yahoo.com", "hotmail.com", "outlook.com", "aol.com", "icloud.com", "comcast.net"]
US_COMPANIES = ["Acme Corp", "Globex LLC", "Initech Inc.", "Umbrella Co", "Stark Industries", "Wayne Enterprises",
                "Hooli", "Vandelay Industries", "Pied Piper Inc.", "Dunder Mifflin"]
#: Exchanges 200-999 x lines 0000-9999: every combination is a valid number for the area codes above.
_US_LOCALS = 800 * 10_000


def _us_local(k: int) -> tuple[str, str]:
    """A distinct (exchange, line) for every k < 8,000,000 (a bijection, so mobiles stay unique)."""
    v = (k * 7_368_787 + 1_234_567) % _US_LOCALS
    return str(200 + v // 10_000), f"{v % 10_000:04d}"


def _spell_us(r: random.Random, a: str, e: str, line: str) -> str:
    x = r.random()
    if x < 0.35:
        return f"({a}) {e}-{line}"
    if x < 0.60:
        return f"{a}-{e}-{line}"
    if x < 0.70:
        return f"{a}.{e}.{line}"
    if x < 0.78:
        return f"+1-{a}-{e}-{line}"
    if x < 0.83:
        return f"+1 {a} {e} {line}"
    if x < 0.88:
        return f"1 ({a}) {e}-{line}"
    if x < 0.95:
        return f"{a}{e}{line}"
    if x < 0.98:
        return f"({a}) {e}-{line} x{r.randint(10, 999)}"
    return f"{a}-{e}-{line} ext. {r.randint(10, 99)}"


def _us_invalid(r: random.Random, a: str, e: str, line: str) -> tuple[str, str, str]:
    """An invalid phone number: (value, defect, what the hub should do with it)."""
    x = r.random()
    if x < 0.12:
        return r.choice(("(123) 456-7890", "(555) 555-5555", "999-999-9999", "1234567890", "(111) 111-1111")), \
            "placeholder number", UNVERIFIED
    if x < 0.30:
        fake = r.choice(("123", "555", "100", "111", "199", "099"))
        return f"({fake}) {e}-{line}", "made-up area code", UNVERIFIED
    if x < 0.45:
        return f"({a}) {r.choice('01')}{e[1:]}-{line}", "exchange starts with 0 or 1", UNVERIFIED
    if x < 0.58:
        if e == "310":  # 310-XXXX is a valid NANP number of its own (a "310 number", one per region)
            return f"{e}-{line}", "no area code (7 digits), 310-XXXX", MAY
        return f"{e}-{line}", "no area code (7 digits)", QUARANTINED
    if x < 0.68:
        return f"({a}) {e}-{line[:3]}", "too few digits (9)", QUARANTINED
    if x < 0.82:
        extra = str(r.randint(0, 9))
        return r.choice((f"({a}) {e}-{line}{extra}", f"{a}-{e}{extra}-{line}", f"+1 {a} {e} {line}{extra}")), \
            "too many digits (11)", QUARANTINED
    if x < 0.94:
        return r.choice(("N/A", "n/a", "none", "-", "TBD", "?", "no phone")), "placeholder text", QUARANTINED
    digits = f"{a}{e}{line}"
    return f"{int(digits) / 10 ** 9:.5f}".rstrip("0").rstrip(".") + "E+09", "spreadsheet number", QUARANTINED


class UsGenerator(_Generator):
    """Rows of a US shop's customer export; every fifth row (``i % 5 == 2``) has an invalid phone."""

    export = Export(
        name="us", file_name="us_customers_export.csv", columns=US_COLUMNS, delimiter=",",
        encoding="utf-8", mapping="us_customers", mapping_yaml=US_MAPPING, phone_region="US",
        match_keys=["email", "phone"], primary_key="Customer ID",
    )

    def person(self, j: int) -> dict[str, Any]:
        r = random.Random(self.seed * 10_000_079 + j)
        first = r.choices(US_FIRST, cum_weights=_US_FIRST_CUM)[0]
        last = r.choices(US_LAST, cum_weights=_US_LAST_CUM)[0]
        city, state, (lo, hi), areas, _w = r.choices(US_CITIES, cum_weights=_US_CITY_CUM)[0]
        f, ln = first.lower(), last.lower().replace("'", "")
        n = j + 1
        local = r.choice((f"{f}.{ln}{n}", f"{f[0]}{ln}{n}", f"{f}{ln}{n}", f"{ln}.{f}{n}", f"{f}_{n}"))
        e, line = _us_local(j)
        birth = None if r.random() < 0.6 else dt.date(1945, 1, 1) + dt.timedelta(days=r.randrange(60 * 365))
        return {
            "first": first, "last": last, "city": city, "state": state, "zip": f"{r.randint(lo, hi):05d}",
            "area": r.choice(areas), "exchange": e, "line": line, "email": f"{local}@{r.choice(US_MAIL)}",
            "street": f"{r.randint(1, 9899)} {r.choice(('', '', '', 'N ', 'S ', 'W ', 'E '))}{r.choice(US_STREETS)} {r.choice(US_SUFFIXES)}"
                      + (f" Apt {r.randint(1, 40)}{r.choice('ABCD')}" if r.random() < 0.15 else ""),
            "company": r.choice(US_COMPANIES) if r.random() < 0.08 else "", "birth": birth,
            "has_phone": r.random() < 0.9,
        }

    def row(self, i: int) -> tuple[list[str] | str, Truth]:
        r = random.Random(self.seed * 1_000_033 + i + 11)
        sid = str(500001 + i)
        dup, origin = self._origin_of(r, i)
        p = self.person(origin)
        t = Truth(line=i + 2, source_id=sid, person=origin)
        email = p["email"]
        if dup:
            local, domain = email.split("@")
            email = r.choice((email.upper(), local.capitalize() + "@" + domain, local + "@" + domain.upper()))
        first, last = p["first"], p["last"]
        x = r.random()
        if x < 0.03:
            first, last = first.upper(), last.upper()
        elif x < 0.035:
            first = ""
        t.has_name = bool(first or last or p["company"])
        x = r.random()
        if x < 0.05:
            email, t.email_ok = "", False
        elif x < 0.065:
            t.email_ok = False
            local, domain = email.split("@")
            email = r.choice((f"{local}@{domain.rsplit('.', 1)[0]}", f"{local}@@{domain}", f"{local}@{domain},",
                              f"{local} @{domain}", f"{local}.{domain}", f"{local}@{domain.replace('.', ' .')}"))
            t.bad.append(("emails", email, "e-mail", QUARANTINED))

        a, e, line = p["area"], p["exchange"], p["line"]
        phone = ""
        if i % 5 == 2:
            t.invalid_phone_row = True
            phone, defect, outcome = _us_invalid(r, a, e, line)
            t.bad.append(("phones", phone, defect, outcome))
        elif p["has_phone"]:
            phone = _spell_us(r, a, e, line)
            t.phone_e164 = f"+1{a}{e}{line}"
        t.phone_raw = phone

        x = r.random()
        country = r.choice(("US", "US", "USA", "United States", "", ""))
        if x < 0.003:
            country = r.choice(("Untied States", "Unites States", "Untited States", "Amerca", "Unted States"))
            t.bad.append(("address.country", country, "misspelled country", QUARANTINED))
            t.country_ok = False
        zip_ = p["zip"]
        x = r.random()
        if x < 0.10:
            zip_ = f"{zip_}-{r.randint(1, 9999):04d}"
        elif x < 0.11 and zip_.startswith("0"):
            zip_ = zip_.lstrip("0")  # what Excel makes of 02134 (not checked for US: it lands as is)
        birth = f"{p['birth'].month:02d}/{p['birth'].day:02d}/{p['birth'].year}" if p["birth"] else ""
        if birth and r.random() < 0.012:
            d = p["birth"]
            birth = r.choice((f"02/30/{d.year}", f"{12 + r.randint(1, 12):02d}/{d.month:02d}/{d.year}",
                              f"{d.year}-{d.month:02d}-{d.day:02d}", f"{d.month}/{d.day}/{d.year % 100:02d}"))
            t.bad.append(("birth_date", birth, "impossible or foreign date", QUARANTINED))
        since = (dt.date(2012, 1, 1) + dt.timedelta(days=r.randrange(13 * 365))).isoformat()
        orders = min(int(r.expovariate(1 / 5)), 200)
        spent = f"{orders * r.uniform(12, 150):.2f}" if orders else "0.00"
        if r.random() < 0.1:
            spent = f"${float(spent):,.2f}"
        if r.random() < 0.002:
            spent = r.choice(("N/A", "-", "tbd"))
            t.bad.append(("purchases.total_spent", spent, "not a number", QUARANTINED))
        marketing = "yes" if r.random() < 0.4 else "no"
        if r.random() < 0.003:
            marketing = r.choice(("TRUE", "1", "Y", "unknown"))
            t.bad.append(("consent.email.status", marketing, "unknown consent value", QUARANTINED))
        fields = [sid, first, last, p["company"], email, phone, p["street"], p["city"], p["state"], zip_,
                  country, birth, since, str(orders), spent, marketing]
        junk = _junk_kind(i, self.junk_every)
        if junk == "stub":
            fields = [sid, "", "", "", "N/A", "none", "", "", "", "", "", "", since, "0", "0.00", "no"]
        elif junk == "columns":  # "123 Main St, Apt 4" unquoted
            fields[6] = p["street"].split(" Apt ")[0] + ", Apt 4"
            return ",".join(fields), _mark_junk(t, junk)
        elif junk == "no_key":
            fields[0] = ""
            t.source_id = ""
        if junk:
            return fields, _mark_junk(t, junk)
        return fields, t


GENERATORS = {"dach": DachGenerator, "us": UsGenerator}


# ---------------------------------------------------------------------------------------------
# files and config
# ---------------------------------------------------------------------------------------------


def write_export(path: Path, kind: str, n: int, *, seed: int = 42, encoding: str | None = None,
                 junk_every: int = 10_000) -> tuple[dict[str, Any], list[Truth]]:
    """Write the first ``n`` rows of export ``kind`` to ``path``; return (info, truth per row)."""
    gen = GENERATORS[kind](seed, junk_every=junk_every)
    exp = gen.export
    enc = encoding or exp.encoding
    truths: list[Truth] = []
    t0 = time.perf_counter()
    with open(path, "w", encoding=enc, newline="") as fh:  # strict: a name cp1252 cannot hold fails loudly
        w = csv.writer(fh, delimiter=exp.delimiter, lineterminator="\r\n")
        w.writerow(exp.columns)
        for i in range(n):
            fields, truth = gen.row(i)
            if isinstance(fields, str):
                fh.write(fields + "\r\n")
            else:
                w.writerow(fields)
            truths.append(truth)
    info = {"export": kind, "rows": n, "bytes": path.stat().st_size, "encoding": enc, "seed": seed,
            "seconds": round(time.perf_counter() - t0, 2), "junk_rows": sum(1 for t in truths if t.junk),
            "second_accounts": sum(1 for t in truths if t.person != t.line - 2)}
    return info, truths


def write_config(folder: Path, kind: str, store_url: str) -> Path:
    """``folder/synchub.yaml`` reading ``folder/data`` into ``store_url`` (own mappings in
    ``folder/mappings``, the repository's after them)."""
    exp = GENERATORS[kind].export
    (folder / "mappings").mkdir(parents=True, exist_ok=True)
    if exp.mapping_yaml:
        (folder / "mappings" / f"{exp.mapping}.yaml").write_text(exp.mapping_yaml, encoding="utf-8")
    q = json.dumps  # a JSON string is a valid YAML double-quoted scalar
    text = "\n".join([
        f"# Generated by bench/intake_data.py ({kind} export)",
        "version: 1",
        f"store: {q(store_url)}",
        f"mappings_dir: [mappings, {q(str(REPO / 'mappings'))}]",
        f"defaults: {{phone_region: {exp.phone_region}, batch_size: 1000}}",
        "connections:",
        f"  {exp.connection}:",
        "    connector: files",
        "    direction: in",
        "    settings: {path: data}",
        "    streams:",
        f"      {exp.stream}:",
        f"        mapping: {exp.mapping}",
        f"        settings: {{pattern: {q(exp.file_name)}, primary_key: {q(exp.primary_key)}}}",
        "match:",
        f"  person: {{keys: [{', '.join(exp.match_keys)}]}}",
        "merge:",
        "  person:",
        f"    source_priority: [{exp.connection}]",
        "    default: {rule: most_recent}",
        "",
    ])
    path = folder / "synchub.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# analysis of a finished run
# ---------------------------------------------------------------------------------------------


def _reason_class(reason: str) -> str:
    """A reject reason without what differs per row (names in quotes, counts)."""
    head = reason.split(" (", 1)[0]
    return head if len(head) <= 120 else head[:117] + "..."


def _generic_reason(reason: str, raw: str | None) -> str:
    """The reason with the raw value taken out where it is quoted (``'x' is not one of ...``), so
    that one kind of bad value is one line of the report."""
    return reason.replace(repr(raw), "'…'") if raw else reason


def _as_expected(expect: str, outcome: str) -> bool:
    if expect in (QUARANTINED, UNVERIFIED):
        return outcome == expect
    if expect == EITHER:
        return outcome in (QUARANTINED, UNVERIFIED)
    return True  # MAY: anything


def analyse(store: Any, run_id: int, kind: str, truths: list[Truth], examples: int = 3) -> dict[str, Any]:
    """Compare what run ``run_id`` left in ``store`` with what the generator planted.

    Everything is read from the store (tables ``run``, ``rejected_record``, ``quarantined_value``,
    ``source_record``, ``golden_record``), nothing from the run's own summary except its counts.
    """
    import sqlalchemy as sa

    from synchub import store as st

    exp = GENERATORS[kind].export
    n = len(truths)
    run = store.get_run(run_id)
    counts = (run or {}).get("counts") or {}
    stream_counts = (counts.get("streams") or {}).get(exp.stream) or {}
    file_prefix = exp.file_name + ":"
    by_line = {t.line: t for t in truths}
    by_sid = {t.source_id: t for t in truths if t.source_id}

    with store.engine.connect() as conn:
        rejected = [dict(r._mapping) for r in conn.execute(
            sa.select(st.rejected_t).where(st.rejected_t.c.run_id == run_id).order_by(st.rejected_t.c.id))]
        qrows = [dict(r._mapping) for r in conn.execute(
            sa.select(st.quarantined_t).where(st.quarantined_t.c.run_id == run_id).order_by(st.quarantined_t.c.id))]
        golden_active = conn.execute(sa.select(sa.func.count()).select_from(st.golden_t)
                                     .where(st.golden_t.c.status == "active")).scalar_one()
        landed: dict[str, dict[str, Any]] = {}
        src = (sa.select(st.source_t.c.source_id, st.source_t.c.golden_id, st.source_t.c.data, st.source_t.c.quarantine)
               .where(st.source_t.c.connection == exp.connection, st.source_t.c.stream == exp.stream))
        for r in conn.execution_options(yield_per=2000).execute(src):
            data = r.data or {}
            landed[r.source_id] = {"golden": r.golden_id, "phones": data.get("phones") or [],
                                   "emails": data.get("emails") or [], "quarantine": r.quarantine or [],
                                   "empty": not any(data.get(f) for f in ("first_name", "last_name", "emails", "phones", "company_name")),
                                   "who": " ".join(str(data.get(f) or "") for f in ("first_name", "last_name")).strip(),
                                   "birth": data.get("birth_date"), "city": (data.get("address") or {}).get("city")}

    problems: list[str] = []

    # -- every row is accounted for --------------------------------------------------------
    read = int(stream_counts.get("read", 0))
    landed_counts = sum(int(stream_counts.get(k, 0)) for k in ("created", "updated", "unchanged", "duplicates"))
    if read != n:
        problems.append(f"the run read {read} rows, the file has {n}")
    if len(landed) + len(rejected) != n:
        problems.append(f"rows lost or doubled: {len(landed)} landed + {len(rejected)} rejected != {n} rows")
    if landed_counts + int(stream_counts.get("rejected", 0)) != read:
        problems.append(f"run counts do not add up: created+updated+unchanged+duplicates {landed_counts} "
                        f"+ rejected {stream_counts.get('rejected', 0)} != read {read}")

    # -- rejects vs the truth -------------------------------------------------------------
    rejected_truths: dict[int, dict[str, Any]] = {}
    for rej in rejected:
        ref = rej.get("ref") or ""
        line = int(ref[len(file_prefix):]) if ref.startswith(file_prefix) and ref[len(file_prefix):].isdigit() else None
        t = by_line.get(line) if line else by_sid.get(rej.get("source_id") or "")
        if t is not None:
            rejected_truths[t.line] = rej
    reject_classes = Counter(f"{r.get('field') or '-'}: {_reason_class(r['reason'])}" for r in rejected)
    missed_rejects = [t for t in truths if t.expect_reject() is True and t.line not in rejected_truths]
    wrong_rejects = [(by_line[line], rej) for line, rej in rejected_truths.items() if by_line[line].expect_reject() is False]
    unmatched_rejects = len(rejected) - len(rejected_truths)
    if unmatched_rejects:
        problems.append(f"{unmatched_rejects} rejected record(s) match no row of the file")
    for t in missed_rejects[:examples]:
        problems.append(f"line {t.line} ({t.junk or 'nothing identifying'}) should have been rejected but landed")
    for t, rej in wrong_rejects[:examples]:
        problems.append(f"line {t.line} was rejected but has something to identify it: {rej['field']}: {rej['reason'][:200]}")

    # -- quarantined values: reasons, raw values, consistency ---------------------------------
    no_reason = [q for q in qrows if not (q.get("reason") or "").strip()]
    no_raw = [q for q in qrows if q.get("raw") is None or str(q.get("raw")) == ""]
    if no_reason:
        problems.append(f"{len(no_reason)} quarantined value(s) without a reason, e.g. {no_reason[0]}")
    if no_raw:
        problems.append(f"{len(no_raw)} quarantined value(s) without the raw value, e.g. {no_raw[0]}")
    run_entries = Counter((q["source_id"], q["field"], q["raw"], q["status"]) for q in qrows)
    stored_entries = Counter((sid, e.get("field"), e.get("raw"), e.get("status", QUARANTINED))
                             for sid, rec in landed.items() for e in rec["quarantine"])
    if run_entries != stored_entries:
        diff = (run_entries - stored_entries) + (stored_entries - run_entries)
        problems.append(f"the run's quarantined_value rows and the source records' quarantine differ in "
                        f"{sum(diff.values())} entries, e.g. {next(iter(diff))}")
    q_count = sum(1 for q in qrows if q["status"] != UNVERIFIED)
    u_count = len(qrows) - q_count
    if (int(stream_counts.get("quarantined", -1)), int(stream_counts.get("unverified", -1))) != (q_count, u_count):
        problems.append(f"run counts say {stream_counts.get('quarantined')} quarantined / {stream_counts.get('unverified')} "
                        f"unverified, the table has {q_count} / {u_count}")
    by_reason: Counter[tuple[str, str, str, str]] = Counter()
    reason_examples: dict[tuple[str, str, str, str], list[str]] = {}
    for q in qrows:
        key = (q["field"], q["status"], q.get("rule") or "", _generic_reason(q["reason"], q["raw"]))
        by_reason[key] += 1
        ex = reason_examples.setdefault(key, [])
        if len(ex) < examples and q["raw"] not in ex:
            ex.append(q["raw"])

    # -- planted bad values vs what happened to them --------------------------------------
    planted: Counter[tuple[str, str, str, str]] = Counter()  # (field, defect, expected, outcome)
    planted_examples: dict[tuple[str, str, str, str], list[str]] = {}
    mismatches: list[str] = []
    unexpected: Counter[tuple[str, str]] = Counter()
    unexpected_examples: list[str] = []
    for t in truths:
        rec = landed.get(t.source_id) if t.source_id else None
        if rec is None:
            for f, _raw, defect, expect in t.bad:
                planted[(f, defect, expect, "rejected with its row")] += 1
            continue
        entries = {(e.get("field"), e.get("raw")): e.get("status", QUARANTINED) for e in rec["quarantine"]}
        planted_keys = set()
        for f, raw, defect, expect in t.bad:
            planted_keys.add((f, raw))
            outcome = entries.get((f, raw), "landed as valid")
            key = (f, defect, expect, outcome)
            planted[key] += 1
            ex = planted_examples.setdefault(key, [])
            if len(ex) < examples:
                ex.append(raw)
            if not _as_expected(expect, outcome) and len(mismatches) < 50:
                mismatches.append(f"line {t.line} {f} {raw!r} ({defect}): expected {expect}, got {outcome}")
        for (f, raw), status in entries.items():
            if f == "phones" and raw == t.phone_raw and t.phone_e164 and not t.country_ok:
                continue  # a valid number read in the wrong region: counted below
            if (f, raw) not in planted_keys:
                unexpected[(f, status)] += 1
                if len(unexpected_examples) < 20:
                    unexpected_examples.append(f"line {t.line} {f} {raw!r} -> {status}")
    bad_outcomes = sum(c for k, c in planted.items() if not _as_expected(k[2], k[3]))
    if bad_outcomes:
        problems.append(f"{bad_outcomes} planted bad value(s) did not get the expected outcome, e.g. {mismatches[:examples]}")
    if unexpected:
        problems.append(f"{sum(unexpected.values())} value(s) the generator wrote as valid were quarantined or "
                        f"flagged, e.g. {unexpected_examples[:examples]}")

    # -- valid phone numbers landed as built ----------------------------------------------
    phone_ok = phone_wrong = 0
    phone_wrong_examples: list[str] = []
    misread: Counter[str] = Counter()  # valid numbers of rows whose country the hub could not read
    misread_examples: list[str] = []
    for t in truths:
        if not t.phone_e164 or t.source_id not in landed:
            continue
        rec = landed[t.source_id]
        flagged = next((e.get("status", QUARANTINED) for e in rec["quarantine"]
                        if e.get("field") == "phones" and e.get("raw") == t.phone_raw), None)
        if t.phone_e164 in rec["phones"] and flagged is None:
            phone_ok += 1
        elif t.country_ok:
            phone_wrong += 1
            if len(phone_wrong_examples) < examples:
                phone_wrong_examples.append(f"line {t.line}: {t.phone_raw!r} -> {rec['phones']} ({flagged or 'landed'}; "
                                            f"built as {t.phone_e164})")
        else:
            outcome = flagged or "landed as another number"
            misread[outcome] += 1
            if len(misread_examples) < examples * 2:
                misread_examples.append(f"line {t.line}: {t.phone_raw!r} (built as {t.phone_e164}) -> "
                                        f"{rec['phones'] or '-'} ({outcome})")
    if phone_wrong:
        problems.append(f"{phone_wrong} valid phone number(s) of rows with a readable country landed as another "
                        f"number or not at all, e.g. {phone_wrong_examples}")

    # -- the US rows with an invalid phone -------------------------------------------------
    invalid_rows = [t for t in truths if t.invalid_phone_row]
    invalid_outcome: Counter[str] = Counter()
    for t in invalid_rows:
        rec = landed.get(t.source_id)
        if rec is None:
            invalid_outcome["row rejected"] += 1
            continue
        raw = t.bad[0][1] if t.bad and t.bad[0][0] == "phones" else t.phone_raw
        status = next((e.get("status", QUARANTINED) for e in rec["quarantine"]
                       if e.get("field") == "phones" and e.get("raw") == raw), None)
        invalid_outcome[status or "landed as valid"] += 1

    persons = {t.person for t in truths if t.source_id in landed}
    empty_landed = [t for t in truths if t.source_id in landed and landed[t.source_id]["empty"]]

    # -- matching: golden records that hold several generated people, people split in several
    people_of: dict[str, set[int]] = {}
    goldens_of: dict[int, set[str]] = {}
    rows_of: dict[str, list[Truth]] = {}
    for t in truths:
        rec = landed.get(t.source_id) if t.source_id else None
        if rec is not None:
            people_of.setdefault(rec["golden"], set()).add(t.person)
            goldens_of.setdefault(t.person, set()).add(rec["golden"])
            rows_of.setdefault(rec["golden"], []).append(t)
    merged_people = {g: ps for g, ps in people_of.items() if len(ps) > 1}
    shared_phone = shared_unverified = 0  # merges where different people's rows hold the same number
    for g in merged_people:
        holders: dict[str, set[int]] = {}
        unverified_here: set[str] = set()
        for t in rows_of[g]:
            rec = landed[t.source_id]
            for ph in rec["phones"]:
                holders.setdefault(ph, set()).add(t.person)
            unverified_here |= {e.get("kept") for e in rec["quarantine"] if e.get("status") == UNVERIFIED}
        shared = {ph for ph, ps in holders.items() if len(ps) > 1}
        shared_phone += bool(shared)
        shared_unverified += bool(shared & unverified_here)
    merge_examples = []
    for g, _ps in sorted(merged_people.items(), key=lambda kv: -len(kv[1]))[:examples * 2]:
        merge_examples.append([f"line {t.line}: {landed[t.source_id]['who']!r}, born {landed[t.source_id]['birth']}, "
                               f"{landed[t.source_id]['city']}, e-mails {landed[t.source_id]['emails']}, phone {t.phone_raw!r} "
                               f"-> {landed[t.source_id]['phones']}" for t in rows_of[g][:4]])
    return {
        "export": kind, "rows": n, "run_id": run_id, "status": (run or {}).get("status"),
        "read": read, "landed": len(landed), "rejected": len(rejected),
        "rejected_pct": round(100 * len(rejected) / n, 4) if n else 0.0,
        "reject_reasons": dict(reject_classes.most_common()),
        "reject_examples": [{"ref": r["ref"], "field": r["field"], "reason": r["reason"][:300]} for r in rejected[:10]],
        "planted_junk": sum(1 for t in truths if t.junk),
        "rejects_of_planted_junk": sum(1 for t in truths if t.junk and t.line in rejected_truths),
        "quarantined": q_count, "unverified": u_count,
        "quarantined_by_field": dict(Counter(q["field"] for q in qrows if q["status"] != UNVERIFIED).most_common()),
        "unverified_by_field": dict(Counter(q["field"] for q in qrows if q["status"] == UNVERIFIED).most_common()),
        "reasons": [{"field": k[0], "status": k[1], "rule": k[2], "reason": k[3], "count": c, "examples": reason_examples[k]}
                    for k, c in by_reason.most_common()],
        "values_without_reason": len(no_reason), "values_without_raw": len(no_raw),
        "planted": [{"field": k[0], "defect": k[1], "expected": k[2], "outcome": k[3], "count": c,
                     "examples": planted_examples.get(k, [])} for k, c in sorted(planted.items())],
        "planted_mismatches": mismatches,
        "unexpected_quarantine": {f"{f} ({s})": c for (f, s), c in unexpected.most_common()},
        "unexpected_examples": unexpected_examples,
        "valid_phones_landed": phone_ok, "valid_phones_wrong": phone_wrong,
        "valid_phones_wrong_examples": phone_wrong_examples,
        "valid_phones_country_unreadable": dict(misread), "valid_phones_country_unreadable_examples": misread_examples,
        "invalid_phone_rows": len(invalid_rows), "invalid_phone_outcome": dict(invalid_outcome),
        "golden_active": golden_active, "persons_landed": len(persons),
        "landed_without_identity": len(empty_landed),
        "landed_without_identity_lines": [t.line for t in empty_landed[:examples]],
        "golden_records_with_several_people": len(merged_people),
        "people_merged_into_another": sum(len(ps) - 1 for ps in merged_people.values()),
        "people_split": sum(len(gs) - 1 for gs in goldens_of.values() if len(gs) > 1),
        "merges_sharing_a_phone": shared_phone, "merges_sharing_an_unverified_phone": shared_unverified,
        "merge_examples": merge_examples,
        "problems": problems,
    }
