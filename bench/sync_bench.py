"""End-to-end sync benchmark: synthetic shop export -> files connector -> store (SQLite / PostgreSQL).

What it does, per requested size N:

1. Streams N synthetic customers to ``shop_kunden_bench.csv`` in the shape of the web shop's
   export (``mappings/shop_kunden.yaml``: ``;``-separated, UTF-8 or ``--encoding cp1252``, German
   dates and decimal commas), realistic German/Swiss/Austrian names, addresses and phone numbers.
   Rows are generated one at a time from a seeded ``random.Random`` per row index, so the file is
   reproducible for a seed and nothing is held in memory. A share of rows (``--dup-rate``, default
   5 %) are second customer accounts of an earlier person: new customer number, same e-mail in
   different letter case. Those must merge, so the store should end with exactly
   ``N - duplicates`` golden records (mobile numbers are unique per person, so nothing else merges).
2. Writes a temporary config next to a copy of the data (one inbound ``files`` connection with
   mapping ``shop_kunden`` from the repo's ``mappings/`` folder; with ``--with-export`` also the
   outbound CSV export of demo.yaml).
3. Runs each measurement in a fresh child process (``--child``): load the config, build the
   ``Hub``, create the schema (``store.upgrade()``, untimed), then time ``hub.sync()``. Phases,
   each its own process against the same store:
     * ``first``  - the initial full sync into an empty store;
     * ``rerun``  - the same sync again with nothing changed (the files connector skips the
                    unchanged file; should be near-instant and write nothing);
     * ``reread`` - only with ``--reread``: one row is appended to the file, so the whole file is
                    read again; N rows must come out ``unchanged`` by content hash, 1 ``created``.
   The child reports ``ru_maxrss`` at its end, so peak memory is per measurement and comparable
   across N, plus the baseline RSS right before the timed part.
4. Prints a markdown table (records read, seconds, records/s, peak RSS, golden/source records from
   ``hub.store.counts()``, rejected) and optionally writes everything to ``--json``.

Backends: SQLite (a file in the temp dir) and PostgreSQL (``--pg-url``, default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``), where every (N) gets a fresh schema that
the script creates and drops, selected with ``?options=-csearch_path%3D<schema>``. PostgreSQL is
skipped with a note when ``--no-postgres`` is given or the server is unreachable.

Usage (from the repo root, with the project's venv)::

    .venv/bin/python bench/sync_bench.py                                  # 10k rows, both backends
    .venv/bin/python bench/sync_bench.py --records 10000 100000 --json /tmp/bench.json
    .venv/bin/python bench/sync_bench.py --records 20000 --no-postgres --with-export --reread
    .venv/bin/python bench/sync_bench.py --generate /tmp/kunden.csv --records 500  # just the CSV

To profile one measurement, prepare a work dir and run the printed child command under cProfile::

    .venv/bin/python bench/sync_bench.py --prepare /tmp/synchub-prof --records 20000 --no-postgres
    .venv/bin/python -m cProfile -o /tmp/prof.out bench/sync_bench.py --child \\
        --config /tmp/synchub-prof/sqlite/synchub.yaml --phase first
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import itertools
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MAPPINGS_DIR = REPO / "mappings"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DATA_FILE = "shop_kunden_bench.csv"

# Exactly the source columns of mappings/shop_kunden.yaml, in the shop export's order.
COLUMNS = [
    "Kundennr", "Anrede", "Vorname", "Nachname", "E-Mail", "Telefon", "Straße", "PLZ", "Ort", "Land",
    "Geburtsdatum", "Kunde seit", "Bestellungen", "Umsatz", "Newsletter", "Letzte Bestellung",
]

# ---------------------------------------------------------------------------------------------
# synthetic data
# ---------------------------------------------------------------------------------------------

FIRST_MALE = (
    "Thomas Michael Andreas Stefan Christian Markus Alexander Daniel Tobias Florian Sebastian Jan "
    "Jürgen Klaus Peter Wolfgang Uwe Matthias Lukas Jonas Maximilian Felix Leon Paul Elias Noah "
    "Benedikt Korbinian Josef Franz Georg Martin Bernd Dieter Helmut Reto Urs Beat Lorenz Niklas "
    "Simon Fabian Dominik Rüdiger Jörg Ömer Björn Moritz Valentin Johannes Hans-Peter Karl-Heinz "
    "Frank Ralf Holger Torsten Sven Dirk Oliver Patrick Philipp David Julian Tim Kevin Marcel "
    "Manfred Gerhard Günter Horst Werner Heinz Rolf Norbert Bernhard Hubert Anton Leopold Ferdinand "
    "Konstantin Emil Anton Theo Mathias Roland Armin Gregor Vincent Adrian Luca Nico Marco Mehmet"
).split()
FIRST_FEMALE = (
    "Anna Maria Claudia Sabine Julia Katharina Laura Lena Sarah Lisa Christina Stefanie Andrea "
    "Nicole Petra Monika Ursula Brigitte Susanne Johanna Sophie Marie Emilia Hannah Mia Lea Leonie "
    "Theresa Franziska Veronika Magdalena Barbara Elisabeth Ingrid Renate Corinne Regula Nadine "
    "Jana Carina Verena Bärbel Chloé Zoë Hélène Özlem Anne-Kathrin Eva-Maria Heike Birgit Karin "
    "Gabriele Martina Silke Tanja Anja Sandra Melanie Kerstin Daniela Simone Jessica Vanessa Jasmin "
    "Michaela Cornelia Doris Helga Gisela Hildegard Erika Rosemarie Annika Charlotte Clara Greta "
    "Ida Luisa Amelie Paula Frieda Marlene Nina Elena Alexandra Manuela Bettina Iris Sonja Elif"
).split()
# Frequent real surnames (drawn half of the time) ...
COMMON_LAST_NAMES = (
    "Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Schäfer Koch "
    "Bauer Richter Klein Wolf Schröder Neumann Schwarz Zimmermann Braun Krüger Hofmann Hartmann "
    "Lange Schmitt Werner Schmitz Krause Meier Lehmann Schmid Schulze Maier Köhler Herrmann König "
    "Walter Mayer Huber Kaiser Fuchs Peters Lang Scholz Möller Weiß Jung Hahn Schubert Vogel "
    "Friedrich Keller Günther Frank Berger Winkler Roth Beck Lorenz Baumann Franke Albrecht "
    "Gruber Brandl Leitner Steiner Moser Pichler Hofer Eder Wimmer Egger Brunner Gasser Ammann "
    "Bühler Widmer Baumgartner Zürcher Frei Weißhaupt Öztürk Yilmaz Kowalski Nguyen Meier-Schulz "
    "Schmidt-Bauer Ludwig Böhm Winter Kraus Martin Schumacher Vogt Stein Jäger Otto Sommer Groß "
    "Seidel Heinrich Brandt Haas Schreiber Graf Schulte Dietrich Ziegler Kuhn Kühn Pohl Engel Horn "
    "Busch Bergmann Thomas Voigt Sauer Arnold Wolff Pfeiffer"
).split()
# ... and the other half composed (Steinmann, Hofbauer, Lindenthaler): a long, flat tail like real data.
_SURNAME_ROOTS = (
    "Stein Berg Hof Wald Linden Brunn Feld Bach Holz Kirch Mühl Eich Rosen Schön Neu Alt Hart Lang "
    "Kurz Fisch Vogel Wolf Fuchs Hahn Baum Sonn Wies Buch Tann Hag Brand Lehn Ried Moos Au Reich "
    "Kling Stock Wein Gold Silber Eisen Kalk Sand Thal Loh Hass Zell"
).split()
_SURNAME_SUFFIXES = (
    "mann er inger hofer bauer meier berger huber maier leitner müller thaler felder egger wieser "
    "acher hammer schmid reiter gruber"
).split()
COMPOSED_LAST_NAMES = [r + s for r in _SURNAME_ROOTS for s in _SURNAME_SUFFIXES]
_STREET_STEMS = (
    "Haupt Bahnhof Garten Schul Dorf Berg Linden Kirch Wald Ring Schiller Goethe Mozart Beethoven "
    "Bismarck Kant Lessing Heine Eichen Birken Ahorn Kastanien Tannen Buchen Rosen Tulpen Nelken "
    "Wiesen Feld Post Markt Mühlen Brunnen Sonnen Stern Frühlings Sommer Blumen Obstgarten Schützen "
    "Jahn Uhland Hölderlin Mörike Luisen Marien Friedrich Wilhelm Karl Ludwig Kaiser Königs Burg "
    "Schloss Kloster Mühlbach Weiher Anger Hirten Jäger Fischer Gärtner Bäcker Brücken Hafen Industrie"
).split()
STREETS_DE = [s + suf for s in _STREET_STEMS for suf in ("straße", "weg", "str.", "allee", "ring")] + [
    "Rosenheimer Straße", "Münchner Straße", "Friedrich-Ebert-Straße", "Agnes-Bernauer-Straße",
    "Am Anger", "Marktplatz", "Zugspitzstraße", "Leopoldstraße", "Am Stadtpark", "Im Winkel",
]
STREETS_AT = [s + suf for s in _STREET_STEMS for suf in ("straße", "gasse", "weg")] + [
    "Mariahilfer Straße", "Linzer Gasse", "Herrengasse", "Salzburger Straße", "Maria-Theresien-Straße",
]
STREETS_CH = [s + suf for s in _STREET_STEMS for suf in ("strasse", "weg", "gasse")] + [
    "Zürcherstrasse", "Bernstrasse", "Seestrasse", "Limmatquai", "Bahnhofplatz",
]
# (first PLZ, last PLZ, step, Ort, landline area code, weight ~ population): real places and their
# postcode ranges; a random PLZ from the range (not every one exists, all are well-formed).
CITIES_DE = [
    (10115, 14199, 1, "Berlin", "030", 37), (20095, 22769, 1, "Hamburg", "040", 19),
    (80331, 81929, 1, "München", "089", 15), (50667, 51149, 1, "Köln", "0221", 11),
    (60306, 60599, 1, "Frankfurt am Main", "069", 8), (70173, 70629, 1, "Stuttgart", "0711", 6),
    (40210, 40629, 1, "Düsseldorf", "0211", 6), (4103, 4357, 1, "Leipzig", "0341", 6),
    (44135, 44388, 1, "Dortmund", "0231", 6), (45127, 45359, 1, "Essen", "0201", 6),
    (28195, 28779, 1, "Bremen", "0421", 6), (1067, 1328, 1, "Dresden", "0351", 6),
    (30159, 30669, 1, "Hannover", "0511", 5), (90402, 90491, 1, "Nürnberg", "0911", 5),
    (68159, 68309, 1, "Mannheim", "0621", 3), (76131, 76229, 1, "Karlsruhe", "0721", 3),
    (53111, 53229, 1, "Bonn", "0228", 3), (48143, 48167, 1, "Münster", "0251", 3),
    (86150, 86199, 1, "Augsburg", "0821", 3), (65183, 65207, 1, "Wiesbaden", "0611", 3),
    (33602, 33739, 1, "Bielefeld", "0521", 3), (24103, 24159, 1, "Kiel", "0431", 2),
    (55116, 55131, 1, "Mainz", "06131", 2), (79098, 79117, 1, "Freiburg im Breisgau", "0761", 2),
    (99084, 99099, 1, "Erfurt", "0361", 2), (18055, 18147, 1, "Rostock", "0381", 2),
    (93047, 93059, 1, "Regensburg", "0941", 2), (97070, 97084, 1, "Würzburg", "0931", 1),
    (89073, 89081, 1, "Ulm", "0731", 1), (83022, 83026, 1, "Rosenheim", "08031", 1),
    (87435, 87439, 1, "Kempten (Allgäu)", "0831", 1), (94032, 94036, 1, "Passau", "0851", 1),
    (82467, 82467, 1, "Garmisch-Partenkirchen", "08821", 1), (14467, 14482, 1, "Potsdam", "0331", 2),
]
CITIES_AT = [
    (1010, 1230, 10, "Wien", "01", 19), (8010, 8063, 1, "Graz", "0316", 3), (4020, 4040, 1, "Linz", "0732", 2),
    (5020, 5026, 1, "Salzburg", "0662", 2), (6020, 6080, 1, "Innsbruck", "0512", 1),
    (9020, 9073, 1, "Klagenfurt", "0463", 1), (9500, 9524, 1, "Villach", "04242", 1),
    (3100, 3107, 1, "St. Pölten", "02742", 1), (4600, 4600, 1, "Wels", "07242", 1),
]
CITIES_CH = [
    (8001, 8064, 1, "Zürich", "044", 4), (3001, 3030, 1, "Bern", "031", 1), (4001, 4059, 1, "Basel", "061", 2),
    (6003, 6015, 1, "Luzern", "041", 1), (9000, 9016, 1, "St. Gallen", "071", 1),
    (1003, 1018, 1, "Lausanne", "021", 1), (8400, 8411, 1, "Winterthur", "052", 1),
    (5000, 5004, 1, "Aarau", "062", 1), (6300, 6300, 1, "Zug", "041", 1),
]
COUNTRIES = {  # spellings seen in the Land column (weighted), cities, streets, mobile prefixes, PLZ width
    "DE": (["Deutschland"] * 18 + ["DE", "Germany"], CITIES_DE, STREETS_DE, ["0151", "0160", "0171", "0176"], 5),
    "AT": (["Österreich"] * 9 + ["AT"], CITIES_AT, STREETS_AT, ["0664", "0676", "0650", "0699"], 4),
    "CH": (["Schweiz"] * 9 + ["CH"], CITIES_CH, STREETS_CH, ["076", "077", "078", "079"], 4),
}
_CITY_WEIGHTS = {c: list(itertools.accumulate(city[5] for city in COUNTRIES[c][1])) for c in COUNTRIES}
MAIL_DOMAINS = {
    "DE": ["gmx.de", "web.de", "t-online.de", "gmail.com", "outlook.de", "posteo.de", "freenet.de"],
    "AT": ["gmx.at", "aon.at", "chello.at", "gmail.com", "a1.net"],
    "CH": ["bluewin.ch", "gmx.ch", "sunrise.ch", "gmail.com", "hispeed.ch"],
}
_TRANSLIT = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "é": "e", "è": "e", "ë": "e",
                           "Ä": "ae", "Ö": "oe", "Ü": "ue", " ": "", "'": ""})
MAX_RECORDS = 9_000_000  # phone numbers are a bijection of the row index onto 7 digits


def _mail_part(name: str) -> str:
    return name.translate(_TRANSLIT).lower()


def _core(k: int) -> str:
    """A distinct 7-digit number (first digit 1-9) for every k < 9,000,000."""
    return str((k * 7_368_787 + 1_234_567) % 9_000_000 + 1_000_000)


def _date(d: dt.date) -> str:
    return f"{d.day:02d}.{d.month:02d}.{d.year}"


_BIRTH0, _SINCE0, _LAST_ORDER_MAX = dt.date(1940, 1, 1), dt.date(2010, 1, 1), dt.date(2025, 6, 30)


def _money(x: float) -> str:
    """1234.5 -> '1.234,50'."""
    return f"{x:,.2f}".replace(",", "_").replace(".", ",").replace("_", ".")


class CustomerGenerator:
    """Yields shop-export rows one at a time.

    Per-row values come from one seeded ``random.Random`` stream; a person's identity (name,
    e-mail, address, phone) is a pure function of (seed, the row index where the person first
    appeared), so a duplicate account can recreate an earlier person without keeping rows in
    memory. Only the small map ``duplicate row -> original row`` is kept (``dup_rate * N`` ints).
    """

    def __init__(self, seed: int = 42, dup_rate: float = 0.05):
        if not 0 <= dup_rate < 1:
            raise ValueError("dup rate must be in [0, 1)")
        self.seed = seed
        self.dup_rate = dup_rate
        self.rng = random.Random(seed)
        self._person_rng = random.Random()
        self._origin: dict[int, int] = {}  # duplicate row -> row where its person first appeared

    @property
    def duplicates(self) -> int:
        return len(self._origin)

    def _mobile(self, country: str, k: int, r: random.Random) -> str:
        """A mobile number unique to row index ``k`` (the 7-digit core is a bijection of k)."""
        core = _core(k)
        pre = r.choice(COUNTRIES[country][3])
        if country == "CH":  # 079 123 45 67
            number = f"{pre} {core[:3]} {core[3:5]} {core[5:]}"
            return "+41 " + number[1:] if r.random() < 0.2 else number
        if pre == "0151" or (pre != "0664" and r.random() < 0.4):  # 0151 needs 8 digits
            core = str(r.randint(1, 9)) + core
        if country == "AT":
            return "+43 " + pre[1:] + " " + core if r.random() < 0.2 else f"{pre} {core}"
        style = r.random()
        if style < 0.12:
            return f"+49 {pre[1:]} {core}"
        if style < 0.16:
            return f"+49 (0){pre[1:]} {core}"
        if style < 0.18:
            return f"0049 {pre[1:]} {core}"
        if style < 0.25:
            return f"{pre}/{core}"
        if style < 0.30:
            return f"{pre}{core}"
        return f"{pre} {core}"

    @staticmethod
    def _landline(country: str, area: str, r: random.Random) -> str:
        if country == "CH":  # always 0AA BBB BB BB
            sub = str(r.randint(200_0000, 999_9999))
            return f"{area} {sub[:3]} {sub[3:5]} {sub[5:]}"
        sub = str(r.randint(2 * 10 ** (6 if len(area) <= 3 else 5), 10 ** (7 if len(area) <= 3 else 6) - 1))
        return f"{area} {sub}" if r.random() < 0.7 else f"{area}/{sub}"

    def person(self, j: int) -> dict[str, Any]:
        """The identity of the person first seen in row ``j`` (deterministic for seed and j)."""
        r = self._person_rng
        r.seed(self.seed * 10_000_019 + j)
        x = r.random()
        country = "DE" if x < 0.80 else "AT" if x < 0.90 else "CH"
        spellings, cities, streets, _prefixes, plz_width = COUNTRIES[country]
        female = r.random() < 0.5
        first = r.choice(FIRST_FEMALE if female else FIRST_MALE)
        last = r.choice(COMMON_LAST_NAMES if r.random() < 0.5 else COMPOSED_LAST_NAMES)
        f, lname = _mail_part(first), _mail_part(last)
        n = j + 1  # unique numeric suffix: every local part ends in a distinct number
        local = r.choice((f"{f}.{lname}{n}", f"{f[0]}.{lname}{n}", f"{f}{lname}{n}", f"{lname}.{f}{n}", f"{f}_{lname}.{n}"))
        lo, hi, step, city, area, _w = r.choices(cities, cum_weights=_CITY_WEIGHTS[country])[0]
        plz = str(lo + step * r.randrange((hi - lo) // step + 1)).zfill(plz_width)
        birth = None if r.random() < 0.1 else _BIRTH0 + dt.timedelta(days=r.randrange(66 * 365))
        x = r.random()
        phone = self._mobile(country, j, r) if x < 0.90 else self._landline(country, area, r) if x < 0.95 else ""
        return {
            "country": country, "land": r.choice(spellings), "anrede": "Frau" if female else "Herr",
            "first": first, "last": last, "email": f"{local}@{r.choice(MAIL_DOMAINS[country])}",
            "street": f"{r.choice(streets)} {r.randint(1, 180)}{r.choice(('', '', '', '', 'a', 'b'))}",
            "plz": plz, "city": city, "birth": _date(birth) if birth else "", "phone": phone,
        }

    def row(self, i: int) -> list[str]:
        r = self.rng
        dup = i > 0 and r.random() < self.dup_rate
        if dup:  # a second customer account of an earlier person
            j = r.randrange(i)
            origin = self._origin[i] = self._origin.get(j, j)
            p = self.person(origin)
            local, domain = p["email"].split("@")
            email = r.choice((
                p["email"].upper(),
                ".".join(s.capitalize() for s in local.split(".")) + "@" + domain,
                local + "@" + domain.upper(),
                local.capitalize() + "@" + domain.capitalize(),
            ))
            x = r.random()
            phone = p["phone"] if x < 0.6 else self._mobile(p["country"], i, r) if x < 0.85 else ""
        else:
            p = self.person(i)
            email, phone = p["email"], p["phone"]
        first, last = p["first"], p["last"]
        x = r.random()
        if x < 0.03:
            last = last.upper()
        elif x < 0.05:
            first, last = first.lower(), last.lower()
        since = _SINCE0 + dt.timedelta(days=r.randrange(15 * 365))
        orders = min(int(r.expovariate(1 / 6)), 250)
        if orders:
            spent = orders * r.uniform(15, 180) * r.uniform(0.8, 1.2)
            last_order = since + dt.timedelta(days=r.randrange(max((_LAST_ORDER_MAX - since).days, 1)))
            umsatz = _money(spent) + (" €" if r.random() < 0.05 else "")
            last_txt = _date(last_order)
        else:
            umsatz, last_txt = "0,00", ""
        return [
            f"K-{100001 + i}", p["anrede"], first, last, email, phone, p["street"], p["plz"], p["city"], p["land"],
            p["birth"], _date(since), str(orders), umsatz, "ja" if r.random() < 0.45 else "nein", last_txt,
        ]

    def rows(self, n: int, start: int = 0) -> Iterator[list[str]]:
        for i in range(start, start + n):
            yield self.row(i)


def write_changes(path: Path, n: int, k: int, *, seed: int, dup_rate: float, encoding: str) -> None:
    """A second export file with ``k`` rows of the first one spread over it, each customer moved
    to another part of town (``Ort`` gets ``-Nord``): ``k`` changed records, nothing new."""
    gen = CustomerGenerator(seed, dup_rate)
    city = COLUMNS.index("Ort")
    with open(path, "w", encoding=encoding, newline="") as fh:
        w = csv.writer(fh, delimiter=";", lineterminator="\r\n")
        w.writerow(COLUMNS)
        picked = {j * n // k for j in range(k)}
        for i, row in enumerate(gen.rows(n)):  # rows come from one random stream: generate them in order
            if i in picked:
                row[city] = f"{row[city]}-Nord"
                w.writerow(row)


def write_csv(path: Path, n: int, *, seed: int, dup_rate: float, encoding: str) -> dict[str, Any]:
    """Stream ``n`` rows to ``path``; return what was written (rows, duplicates, bytes, seconds)."""
    if n > MAX_RECORDS:
        raise SystemExit(f"at most {MAX_RECORDS} records (phone numbers would repeat)")
    gen = CustomerGenerator(seed, dup_rate)
    t = time.perf_counter()
    with open(path, "w", encoding=encoding, newline="") as fh:
        w = csv.writer(fh, delimiter=";", lineterminator="\r\n")
        w.writerow(COLUMNS)
        for row in gen.rows(n):
            w.writerow(row)
    return {"rows": n, "duplicates": gen.duplicates, "bytes": path.stat().st_size,
            "seconds": round(time.perf_counter() - t, 3), "encoding": encoding}


def append_rows(path: Path, start: int, n: int, *, seed: int, dup_rate: float, encoding: str) -> None:
    """Append rows ``start .. start+n-1`` (as if the export had grown)."""
    gen = CustomerGenerator(seed, dup_rate)
    with open(path, "a", encoding=encoding, newline="") as fh:
        w = csv.writer(fh, delimiter=";", lineterminator="\r\n")
        for row in gen.rows(n, start):
            w.writerow(row)


# ---------------------------------------------------------------------------------------------
# config and stores
# ---------------------------------------------------------------------------------------------


def write_config(folder: Path, store_url: str, *, with_export: bool, fuzzy: bool | None = None,
                 bulk_load: str = "auto") -> Path:
    """A config in ``folder`` reading ``folder/data`` (relative paths start at the config's folder)."""
    q = json.dumps  # a JSON string is a valid YAML double-quoted scalar
    lines = [
        "# Generated by bench/sync_bench.py",
        "version: 1",
        f"store: {q(store_url)}",
        f"mappings_dir: [{q(str(MAPPINGS_DIR))}]",
        f"defaults: {{phone_region: DE, batch_size: 1000, bulk_load: {bulk_load}}}",
        "connections:",
        "  shop:",
        "    connector: files",
        "    direction: in",
        "    settings: {path: data}",
        "    streams:",
        "      customers:",
        "        mapping: shop_kunden",
        '        settings: {pattern: "shop_kunden*.csv", primary_key: Kundennr}',
    ]
    if with_export:
        lines += [
            "  export:",
            "    connector: files",
            "    direction: out",
            "    entity: person",
            "    settings: {path: export}",
            "    streams:",
            "      customers:",
            "        mapping: export_customers",
            "        settings: {file: kunden_bereinigt.csv, dialect: excel-de}",
        ]
    lines += [
        "match:",
        "  person: {keys: [email, phone_mobile]" + ("" if fuzzy is None else f", fuzzy: {str(fuzzy).lower()}") + "}",
        "merge:",
        "  person:",
        "    source_priority: [shop]",
        "    default: {rule: most_recent}",
        "    fields:",
        "      birth_date: {rule: source_priority, review: true}",
    ]
    path = folder / "synchub.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def pg_url_with_schema(url: str, schema: str) -> str:
    return url + ("&" if "?" in url else "?") + "options=-csearch_path%3D" + schema


def pg_admin(url: str, sql: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url, connect_args={"connect_timeout": 5})
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(sql))
    finally:
        engine.dispose()


def pg_reachable(url: str) -> str | None:
    """None if PostgreSQL answers at ``url``, else the reason."""
    try:
        pg_admin(url, "SELECT 1")
    except Exception as exc:  # driver missing, refused, auth
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    return None


# ---------------------------------------------------------------------------------------------
# child: one measurement
# ---------------------------------------------------------------------------------------------


def _maxrss_mb() -> float:
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def _current_rss_mb() -> float:
    """Resident set size now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return round(int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return 0.0


def _decile_rates(start: float, marks: list[tuple[float, int]]) -> list[int]:
    """Records/s of the inbound read in each tenth of the records (flat = cost per record does not grow)."""
    if not marks or marks[-1][1] < 5000:
        return []
    total = marks[-1][1]
    rates, prev_t, prev_n, k = [], start, 0, 1
    for t, n in marks:
        if n >= k * total / 10 and t > prev_t:
            rates.append(round((n - prev_n) / (t - prev_t)))
            prev_t, prev_n, k = t, n, k + 1
    return rates


class _Analyzer:
    """Runs ANALYZE on the store's PostgreSQL tables every ``every`` seconds from a second
    connection, like autovacuum's analyze would (the test server has autovacuum off)."""

    def __init__(self, store: Any, every: float):
        import threading

        self.store, self.every = store, every
        self.runs, self.seconds = 0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        import sqlalchemy as sa

        while not self._stop.wait(self.every):
            t = time.perf_counter()
            with self.store.engine.connect() as conn:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                tables = conn.execute(sa.text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")).scalars().all()
                for table in tables:
                    conn.execute(sa.text(f'ANALYZE "{table}"'))
            self.runs += 1
            self.seconds += time.perf_counter() - t


def _lru_cache_sizes() -> dict[str, list[int]]:
    """[entries, hits, misses] of the functools caches of synchub's (and its plugins') modules:
    bounded, but they fill with per-record values (phones, streets, dates) and show in the RSS."""
    out = {}
    for name, mod in list(sys.modules.items()):
        if mod is None or not (name.startswith("synchub") or name.startswith("plugins")):
            continue
        for attr, obj in list(vars(mod).items()):
            info = getattr(obj, "cache_info", None)
            if callable(info) and getattr(obj, "__module__", name) == name:
                ci = info()
                if ci.currsize:
                    out[f"{name}.{attr}"] = [ci.currsize, ci.hits, ci.misses]
    return out


def run_child(config_path: str, phase: str, result_path: str | None, trace_memory: bool = False,
              pg_analyze: float = 0.0) -> int:
    """Load, upgrade (untimed), time ``hub.sync()``; write a JSON result (and, next to it,
    ``<result>.progress``: records read and seconds so far, for a parent that times out)."""
    import logging
    import tracemalloc

    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    from synchub.config import load_config
    from synchub.engine import Hub, tune_gc

    tune_gc()  # as the CLI does
    t0 = time.perf_counter()
    hub = Hub(load_config(config_path))
    hub.store.upgrade()
    setup = time.perf_counter() - t0
    base_rss = _maxrss_mb()
    marks: list[tuple[float, int]] = []  # (time, records read so far), every 500 records
    rss: list[tuple[int, float]] = []  # (records read so far, current RSS MB), every 5000 records

    progress_file = Path(result_path + ".progress") if result_path else None

    def progress(_connection: str, _stream: str, n: int) -> None:
        now = time.perf_counter()
        marks.append((now, n))
        if n % 5000 == 0:
            rss.append((n, _current_rss_mb()))
        if progress_file is not None and n % 1000 == 0:
            with open(progress_file, "a", encoding="utf-8") as fh:
                fh.write(f"{n} {now - t:.3f} {_current_rss_mb()}\n")

    analyzer = None
    if pg_analyze > 0 and hub.store.dialect == "postgresql":
        analyzer = _Analyzer(hub.store, pg_analyze)
        analyzer.start()

    if trace_memory:  # slow; for finding what holds memory at the end of a run, not for timings
        tracemalloc.start(8)
    t = time.perf_counter()
    summaries = hub.sync(trigger="bench", progress=progress)
    seconds = time.perf_counter() - t
    if analyzer is not None:
        analyzer.stop()
    top_memory = []
    if trace_memory:
        snap = tracemalloc.take_snapshot()
        top_memory = [f"{st.size / 2**20:.1f} MiB in {st.count} blocks: " + " <- ".join(
            f"{Path(f.filename).parent.name}/{Path(f.filename).name}:{f.lineno}" for f in list(reversed(st.traceback))[:5])
            for st in snap.statistics("traceback")[:15]]
        current, peak = tracemalloc.get_traced_memory()
        top_memory.insert(0, f"traced now {current / 2**20:.1f} MiB, traced peak {peak / 2**20:.1f} MiB")
        tracemalloc.stop()
        print("\n".join(top_memory), file=sys.stderr)
    counts = hub.store.counts()
    hub.store.dispose()
    totals: dict[str, int] = {}
    for s in summaries:
        for k, v in vars(s.totals()).items():
            totals[k] = totals.get(k, 0) + v
    result = {
        "phase": phase, "seconds": round(seconds, 3), "setup_seconds": round(setup, 3),
        "read": totals.get("read", 0), "totals": totals,
        "runs": [{"connection": s.connection, "direction": s.direction, "status": s.status,
                  "error": s.error, "seconds": round(s.seconds, 3)} for s in summaries],
        "counts": counts, "base_rss_mb": base_rss, "peak_rss_mb": _maxrss_mb(),
        "rate_by_decile": _decile_rates(t, marks),
        "rss_mb_by_records": rss,
        "lru_cache_entries": _lru_cache_sizes(),
    }
    if top_memory:
        result["top_memory"] = top_memory
    if analyzer is not None:
        result["pg_analyze"] = {"every_seconds": pg_analyze, "runs": analyzer.runs, "seconds": round(analyzer.seconds, 2)}
    text = json.dumps(result)
    if result_path:
        Path(result_path).write_text(text, encoding="utf-8")
    else:
        print(text)
    return 0 if all(s.status in ("succeeded", "partial") for s in summaries) else 1


def spawn_child(config: Path, phase: str, workdir: Path, *, timeout: float | None = None,
                pg_analyze: float = 0.0) -> dict[str, Any]:
    result = workdir / f"result-{phase}.json"
    progress = Path(str(result) + ".progress")
    result.unlink(missing_ok=True)
    progress.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--config", str(config),
           "--phase", phase, "--result", str(result)]
    if pg_analyze:
        cmd += ["--pg-analyze", str(pg_analyze)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout)
    except subprocess.TimeoutExpired:  # the child is killed; report how far it got
        lines = progress.read_text(encoding="utf-8").split("\n") if progress.exists() else []
        last = [ln.split() for ln in lines if ln.strip()][-3:]
        read, rate_now, rss_now = 0, 0, 0.0
        if last:
            read, rss_now = int(last[-1][0]), float(last[-1][2])
            if len(last) > 1 and float(last[-1][1]) > float(last[0][1]):
                rate_now = round((int(last[-1][0]) - int(last[0][0])) / (float(last[-1][1]) - float(last[0][1])))
        return {"phase": phase, "timed_out": True, "seconds": float(timeout or 0), "read": read, "totals": {"read": read},
                "runs": [{"connection": "-", "direction": "in", "status": "timeout", "error": None, "seconds": timeout}],
                "counts": {}, "base_rss_mb": 0.0, "peak_rss_mb": rss_now, "rate_by_decile": [],
                "rate_at_timeout": rate_now, "exit_code": None}
    if not result.exists():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"child {phase} failed (exit {proc.returncode}):\n{tail}")
    out = json.loads(result.read_text(encoding="utf-8"))
    out["exit_code"] = proc.returncode
    if proc.returncode:
        out["stderr_tail"] = "\n".join(proc.stderr.strip().splitlines()[-15:])
    return out


# ---------------------------------------------------------------------------------------------
# parent
# ---------------------------------------------------------------------------------------------


def prepare_backend(root: Path, backend: str, data_file: Path, pg_url: str, with_export: bool,
                    fuzzy: bool | None = None, bulk_load: str = "auto") -> tuple[Path, str | None]:
    """Folder + data copy + config for one backend; returns (config path, PG schema or None)."""
    folder = root / backend
    (folder / "data").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data_file, folder / "data" / DATA_FILE)
    schema = None
    if backend == "sqlite":
        url = "sqlite:///store.db"  # relative: resolved against the config's folder
    else:
        schema = f"bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        pg_admin(pg_url, f'CREATE SCHEMA "{schema}"')
        url = pg_url_with_schema(pg_url, schema)
    return write_config(folder, url, with_export=with_export, fuzzy=fuzzy, bulk_load=bulk_load), schema


def measure(args: argparse.Namespace, n: int, backend: str, root: Path, data_file: Path, gen_info: dict[str, Any]) -> list[dict[str, Any]]:
    config, schema = prepare_backend(root, backend, data_file, args.pg_url, args.with_export, args.fuzzy, args.bulk_load)
    rows: list[dict[str, Any]] = []
    try:
        phases = ["first", "rerun"] + (["reread"] if args.reread else []) + (["changes"] if args.changes else [])
        for phase in phases:
            if phase == "changes":
                # a second, small file: only it is read, and every row of it is a changed record
                write_changes(config.parent / "data" / "shop_kunden_changes.csv", n, args.changes, seed=args.seed,
                              dup_rate=args.dup_rate, encoding=args.encoding)
            if phase == "reread":
                # one new, non-duplicate customer: expect N unchanged + 1 created
                append_rows(config.parent / "data" / DATA_FILE, n, 1, seed=args.seed, dup_rate=0.0,
                            encoding=args.encoding)
            res = spawn_child(config, phase, config.parent, timeout=args.timeout,
                              pg_analyze=args.pg_analyze if backend == "postgres" else 0.0)
            res.update(backend=backend, records=n, expected_golden=n - gen_info["duplicates"] + (args.reread and phase in ("reread", "changes")),
                       duplicates_in_file=gen_info["duplicates"])
            rows.append(res)
            print("  " + format_line(res), flush=True)
            for run in res["runs"]:
                if run["status"] == "failed":
                    print(f"    {run['connection']} ({run['direction']}) failed: {run['error']}", flush=True)
            if res.get("timed_out"):
                print(f"    timed out after {args.timeout:.0f}s at {res['read']:,} records "
                      f"(last rate {res['rate_at_timeout']:,}/s); later phases skipped", flush=True)
                break
    finally:
        if schema is not None and not args.keep:
            pg_admin(args.pg_url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        if not args.keep:
            shutil.rmtree(config.parent, ignore_errors=True)
    return rows


def format_line(r: dict[str, Any]) -> str:
    rate = f"{r['read'] / r['seconds']:,.0f}/s" if r["read"] and r["seconds"] else "-"
    status = ",".join(sorted({x["status"] for x in r["runs"]}))
    c = r["counts"]
    return (f"{r['backend']:8} N={r['records']:<8} {r['phase']:6} read={r['read']:<8} {r['seconds']:8.2f}s {rate:>10} "
            f"peak={r['peak_rss_mb']}MB golden={c.get('golden_active', '-')} source={c.get('source_records', '-')} "
            f"rejected={c.get('rejected', '-')} [{status}]")


def code_fingerprint() -> dict[str, Any]:
    """Which code was measured: git HEAD, whether synchub/ or plugins/ differ from it, and a hash
    of their *.py files (others may be editing them while the benchmark runs)."""
    import hashlib

    h = hashlib.sha1()
    for f in sorted([*REPO.glob("synchub/**/*.py"), *REPO.glob("plugins/**/*.py")]):
        h.update(str(f.relative_to(REPO)).encode() + b"\0" + f.read_bytes())

    def git(*cmd: str) -> str:
        try:
            return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {"git_head": git("rev-parse", "--short", "HEAD"),
            "dirty": bool(git("status", "--porcelain", "--", "synchub", "plugins")),
            "sources_sha1": h.hexdigest()[:12]}


def _num(x: int | None) -> str:
    return "-" if x is None else f"{x:,}"


def table(rows: list[dict[str, Any]]) -> str:
    head = ("| backend | N | phase | records read | seconds | records/s | peak RSS MB | RSS before sync MB "
            "| golden (expected) | source records | rejected | created / unchanged / written | rec/s first -> last 10 % |")
    out = [head, "|" + "---|" * head.count(" | ") + "---|"]
    for r in rows:
        t, c = r["totals"], r["counts"]
        rate = f"{r['read'] / r['seconds']:,.0f}" if r["read"] and r["seconds"] else "-"
        dec = r.get("rate_by_decile") or []
        trend = f"{dec[0]:,} -> {dec[-1]:,}" if dec else f"{r['rate_at_timeout']:,} at timeout" if r.get("timed_out") else "-"
        secs = f">{r['seconds']:.0f} (timeout)" if r.get("timed_out") else f"{r['seconds']:.2f}"
        golden = f"{c['golden_active']:,} ({r['expected_golden']:,})" if c else "-"
        out.append(
            f"| {r['backend']} | {r['records']:,} | {r['phase']} | {r['read']:,} | {secs} | {rate} "
            f"| {r['peak_rss_mb']:.0f} | {r['base_rss_mb']:.0f} | {golden} "
            f"| {_num(c.get('source_records'))} | {_num(c.get('rejected'))} "
            f"| {t.get('created', 0):,} / {t.get('unchanged', 0):,} / {t.get('written', 0):,} | {trend} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--records", type=int, nargs="+", default=[10_000], metavar="N", help="sizes to measure (default 10000)")
    p.add_argument("--no-postgres", action="store_true", help="SQLite only")
    p.add_argument("--no-sqlite", action="store_true", help="PostgreSQL only")
    p.add_argument("--with-export", action="store_true", help="also push the outbound CSV export (like demo.yaml)")
    p.add_argument("--reread", action="store_true", help="also time a re-read of the whole file with one row appended")
    p.add_argument("--changes", type=int, default=0, metavar="K",
                   help="add a last phase: a second file with K changed customers (K updated, nothing new)")
    p.add_argument("--bulk-load", choices=["auto", "always", "never"], default="auto",
                   help="defaults.bulk_load of the generated config (never: measure the incremental path)")
    p.add_argument("--no-fuzzy", dest="fuzzy", action="store_const", const=False, default=None,
                   help="write match.person.fuzzy: false (exact identity keys only); default: the project's default")
    p.add_argument("--dup-rate", type=float, default=0.05, help="share of rows that reuse an earlier e-mail (default 0.05)")
    p.add_argument("--encoding", default="utf-8", choices=["utf-8", "cp1252"], help="CSV encoding (default utf-8)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--pg-url", default=DEFAULT_PG_URL, help=f"PostgreSQL base URL (default {DEFAULT_PG_URL})")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="give up on a measurement after SECONDS (reports how far it got; later phases skipped)")
    p.add_argument("--pg-analyze", type=float, default=0.0, metavar="SECONDS",
                   help="PostgreSQL: ANALYZE the store's tables every SECONDS during the sync, as autovacuum would "
                        "(for servers with autovacuum off); default off")
    p.add_argument("--workdir", type=Path, default=None, help="where temp dirs go (default: system temp)")
    p.add_argument("--keep", action="store_true", help="keep temp dirs, stores and PG schemas")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write all results as JSON")
    p.add_argument("--generate", type=Path, default=None, metavar="CSV", help="only write the CSV (first --records) and exit")
    p.add_argument("--prepare", type=Path, default=None, metavar="DIR",
                   help="only generate data + configs into DIR for the first --records and print the child commands")
    child = p.add_argument_group("internal: one measurement in a child process")
    child.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    child.add_argument("--config", help=argparse.SUPPRESS)
    child.add_argument("--phase", default="first", help=argparse.SUPPRESS)
    child.add_argument("--result", help=argparse.SUPPRESS)
    child.add_argument("--trace-memory", action="store_true",
                       help="with --child: report the biggest live allocations at the end (tracemalloc; slow)")
    args = p.parse_args(argv)

    if not args.child:  # a plain `kill` should still drop the PG schemas and temp dirs (finally blocks)
        signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    if args.child:
        if not args.config:
            p.error("--child needs --config")
        return run_child(args.config, args.phase, args.result, args.trace_memory, args.pg_analyze)
    if any(n < 1 or n > MAX_RECORDS for n in args.records):
        p.error(f"--records must be between 1 and {MAX_RECORDS}")

    if args.generate:
        info = write_csv(args.generate, args.records[0], seed=args.seed, dup_rate=args.dup_rate, encoding=args.encoding)
        print(f"wrote {args.generate}: {info}")
        return 0

    backends = [] if args.no_sqlite else ["sqlite"]
    notes: list[str] = []
    if not args.no_postgres:
        why = pg_reachable(args.pg_url)
        if why is None:
            backends.append("postgres")
        else:
            notes.append(f"PostgreSQL skipped: {args.pg_url} is unreachable ({why})")
            print("note: " + notes[-1], flush=True)
    else:
        notes.append("PostgreSQL skipped (--no-postgres)")
    if not backends:
        print("nothing to measure")
        return 1

    if args.prepare:
        n = args.records[0]
        args.prepare.mkdir(parents=True, exist_ok=True)
        data = args.prepare / DATA_FILE
        info = write_csv(data, n, seed=args.seed, dup_rate=args.dup_rate, encoding=args.encoding)
        print(f"wrote {data}: {info}")
        for b in backends:
            config, schema = prepare_backend(args.prepare, b, data, args.pg_url, args.with_export, args.fuzzy, args.bulk_load)
            print(f"{b}: {sys.executable} {Path(__file__).resolve()} --child --config {config} --phase first")
            if schema:
                print(f"   (drop afterwards: DROP SCHEMA \"{schema}\" CASCADE)")
        return 0

    results: list[dict[str, Any]] = []
    generated: dict[int, dict[str, Any]] = {}
    code = code_fingerprint()
    print(f"code: git {code['git_head']}{' + uncommitted changes' if code['dirty'] else ''}, "
          f"synchub+plugins sources {code['sources_sha1']}", flush=True)
    try:
        for n in args.records:
            root = Path(tempfile.mkdtemp(prefix=f"synchub-bench-{n}-", dir=args.workdir))
            try:
                data = root / DATA_FILE
                info = write_csv(data, n, seed=args.seed, dup_rate=args.dup_rate, encoding=args.encoding)
                generated[n] = info
                print(f"N={n}: generated {info['bytes'] / 1e6:.1f} MB ({info['duplicates']} duplicate accounts) "
                      f"in {info['seconds']:.1f}s -> {root}", flush=True)
                for b in backends:
                    try:
                        results.extend(measure(args, n, b, root, data, info))
                    except (RuntimeError, OSError) as exc:
                        notes.append(f"{b} N={n}: {exc}")
                        print(f"  {b} N={n} FAILED: {exc}", flush=True)
            finally:
                if not args.keep:
                    shutil.rmtree(root, ignore_errors=True)
    except (KeyboardInterrupt, SystemExit):
        notes.append("interrupted: the results below are incomplete")
        raise
    finally:  # also on interruption: what was measured is not lost
        report(args, results, notes, generated, code)
    return 0


def report(args: argparse.Namespace, results: list[dict[str, Any]], notes: list[str],
           generated: dict[int, dict[str, Any]], code: dict[str, Any]) -> None:
    print()
    print(table(results))
    for r in results:
        golden = r["counts"].get("golden_active")
        if r["phase"] in ("first", "reread") and golden is not None and golden != r["expected_golden"]:
            notes.append(f"{r['backend']} N={r['records']} {r['phase']}: {golden} golden records, expected "
                         f"{r['expected_golden']} (fuzzy matching merged namesakes, or a bug)")
        if r["phase"] == "rerun" and (r["totals"].get("created") or r["totals"].get("updated") or r["totals"].get("written")):
            notes.append(f"{r['backend']} N={r['records']}: the unchanged re-run wrote something: {r['totals']}")
        if r.get("exit_code"):
            notes.append(f"{r['backend']} N={r['records']} {r['phase']}: runs {r['runs']}")
    code_after = code_fingerprint()
    if code_after["sources_sha1"] != code["sources_sha1"]:
        notes.append(f"synchub/plugins sources changed while measuring ({code['sources_sha1']} -> "
                     f"{code_after['sources_sha1']}): figures mix code versions")
    for note in notes:
        print("note: " + note)
    if args.json:
        meta = {
            "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                     if k not in ("child", "config", "phase", "result")},
            "generated": generated, "notes": notes, "code_before": code, "code_after": code_after,
        }
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2, ensure_ascii=False), encoding="utf-8")
        print(f"wrote {args.json}")

if __name__ == "__main__":
    sys.exit(main())
