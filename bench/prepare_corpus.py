"""Old vs new mapping and canonical validation, record by record, over a large corpus.

``synchub.mapping.FAST_PATH`` switches between the reference path (field by field through
``_apply``, then ``model_validate`` + ``model_dump``) and the fast one (a compiled plan per
mapping, remembered results of pure transforms, :func:`synchub.schema.fast_dump`). Both run on
every record of:

* ``shop``     - the sync benchmark's generated shop export (``sync_bench.write_csv``, what
                 ``sync_bench.py --generate`` writes), read by the files connector, mapping
                 ``shop_kunden``;
* ``dach``/``us`` - the intake benchmark's dirty exports (``bench/intake_data.py``), read by the
                 files connector with their own configs;
* ``demo``     - ``config/demo.yaml``'s files (``demo/data``) through their mappings;
* ``api``      - HubSpot contacts and companies, Mailchimp members, Shopify customers and orders,
                 read by the real connectors from the plugin tests' fake servers, filled with the
                 intake generators' people;
* ``fuzz``     - for every mapping in ``mappings/``: records of the corpora above with values
                 swapped for dirty, odd-typed and invalid ones (blank, padded, wrong types,
                 impossible dates, lone surrogates, lists, ...), so the quarantine and every
                 fallback are exercised; ``out`` mappings get canonical records (the in-mappings'
                 results) and their fuzzed variants.

Per record it compares, as ``repr`` (so key order and types count): ``observed`` (with and
without a problems list), ``to_canonical`` (with a problems list, and without: the error),
``interactions_of``, ``owner_of``, ``apply`` for out-mappings, and every problem list. It prints
the mismatches (there must be none) and the µs per record of the prepare part (observed +
to_canonical + interactions) before and after, and exits 1 on a mismatch.

    .venv/bin/python bench/prepare_corpus.py                         # 100k shop rows, 50k dach/us
    .venv/bin/python bench/prepare_corpus.py --shop 20000 --intake 5000 --fuzz 500
    .venv/bin/python bench/prepare_corpus.py --floor 20000           # + floor_bench's prepare, both ways
"""

from __future__ import annotations

import argparse
import copy
import logging
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _p in (str(ROOT), str(ROOT / "bench")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from synchub import mapping as mapping_mod  # noqa: E402
from synchub import schema  # noqa: E402
from synchub.config import load_config  # noqa: E402
from synchub.connector import Record  # noqa: E402
from synchub.engine import Hub  # noqa: E402
from synchub.mapping import Mapping, MappingLibrary  # noqa: E402

DEFAULT_TIME = datetime(2024, 5, 6, 7, 8, 9, tzinfo=timezone.utc)


@dataclass
class Corpus:
    """Records of one mapping, from one source."""

    label: str
    mapping: Mapping
    records: list[dict[str, Any]]


@dataclass
class Report:
    compared: int = 0
    mismatches: int = 0
    examples: list[str] = field(default_factory=list)
    per_corpus: dict[str, tuple[int, int]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# one record, both ways
# ---------------------------------------------------------------------------------------------


def _call(fn: Callable[..., Any], *args: Any) -> tuple[str, str]:
    """``repr`` of the result (or of the error: type, message, field) and of the problems."""
    problems: list[dict[str, Any]] | None = args[-1] if args and isinstance(args[-1], list) else None
    try:
        out: Any = fn(*args)
    except Exception as exc:
        out = ("raised", type(exc).__name__, str(exc), getattr(exc, "field", None))
    return repr(out), repr(problems)


def outcomes(m: Mapping, record: dict[str, Any], fast: bool) -> dict[str, tuple[str, str]]:
    """Everything the engine asks of a mapping for one record, one way."""
    mapping_mod.FAST_PATH = fast
    try:
        if m.direction == "out":
            return {"apply": _call(m.apply, record, []), "apply!": _call(m.apply, record)}
        res = {"observed": _call(m.observed, record, []), "observed!": _call(m.observed, record),
               "owner_of": _call(m.owner_of, record)}
        if not m.timeline_only:
            res["to_canonical"] = _call(m.to_canonical, record, [])
            res["to_canonical!"] = _call(m.to_canonical, record)
        if m.interactions:
            res["interactions"] = _call(m.interactions_of, record, DEFAULT_TIME, [])
            res["interactions!"] = _call(m.interactions_of, record, DEFAULT_TIME)
        return res
    finally:
        mapping_mod.FAST_PATH = True


def compare(corpora: list[Corpus], report: Report, max_examples: int = 10) -> Report:
    for corpus in corpora:
        bad = 0
        for record in corpus.records:
            # Each way gets its own copy: the reference path itself changes a record whose list
            # value loses an item to the quarantine (the list is shared, not copied), and the
            # fast path must do exactly the same.
            rec_old, rec_new = copy.deepcopy(record), copy.deepcopy(record)
            old = outcomes(corpus.mapping, rec_old, fast=False)
            new = outcomes(corpus.mapping, rec_new, fast=True)
            report.compared += 1
            diff = [k for k in old if old[k] != new[k]]
            if repr(rec_old) != repr(rec_new):
                diff.append("record afterwards")
            if diff:
                bad += 1
                report.mismatches += 1
                if len(report.examples) < max_examples:
                    k = diff[0]
                    report.examples.append(f"{corpus.label} [{corpus.mapping.name}] {k}: record {record!r}\n"
                                           f"    old: {old.get(k)}\n    new: {new.get(k)}")
        n, b = report.per_corpus.get(corpus.label, (0, 0))
        report.per_corpus[corpus.label] = (n + len(corpus.records), b + bad)
    return report


def prepare_part(m: Mapping, record: dict[str, Any]) -> None:
    """What ``Preparer.prepare`` asks of the mapping for a party record."""
    problems: list[dict[str, Any]] = []
    try:
        observed = m.observed(record, problems) or DEFAULT_TIME
        if not m.timeline_only:
            m.to_canonical(record, problems)
        if m.interactions:
            m.interactions_of(record, observed, problems)
    except Exception:
        pass


def timing(m: Mapping, records: list[dict[str, Any]], fast: bool, rounds: int = 3) -> float:
    """µs per record, the best of ``rounds``; the fast path starts cold each round (a freshly
    compiled mapping plan, no remembered values), as a new sync process would after its first
    record (the per-model plans are built once per process, like the models themselves)."""
    best = float("inf")
    for _ in range(rounds):
        m._plan = None
        for imap in m.interactions:
            imap._plan = None
        schema.forget_values()
        mapping_mod.FAST_PATH = fast
        try:
            t = time.perf_counter()
            for r in records:
                prepare_part(m, r)
            best = min(best, time.perf_counter() - t)
        finally:
            mapping_mod.FAST_PATH = True
    return best / max(len(records), 1) * 1e6


# ---------------------------------------------------------------------------------------------
# corpora
# ---------------------------------------------------------------------------------------------


def _stream_records(hub: Hub, connection: str, stream: str) -> list[dict[str, Any]]:
    items = hub.connector(connection).streams()[stream].read({})
    return [i.data for i in items if isinstance(i, Record)]


def _hub_corpora(config: Path, label: str) -> list[Corpus]:
    hub = Hub(load_config(config))
    try:
        out = []
        for cname, conn in hub.config.connections.items():
            for sname, scfg in conn.streams.items():
                if conn.direction == "out" or not scfg.mapping:
                    continue
                m = hub._stream_mapping(scfg, "in")
                if m is not None:
                    out.append(Corpus(f"{label}:{cname}/{sname}", m, _stream_records(hub, cname, sname)))
        return out
    finally:
        hub.store.dispose()


def shop_corpus(tmp: Path, n: int, seed: int = 42) -> list[Corpus]:
    import sync_bench

    root = tmp / "shop"
    root.mkdir()
    data = root / sync_bench.DATA_FILE
    sync_bench.write_csv(data, n, seed=seed, dup_rate=0.05, encoding="utf-8")
    config, _schema = sync_bench.prepare_backend(root, "sqlite", data, "", False, None)
    return _hub_corpora(config, "shop")


def intake_corpora(tmp: Path, n: int, seed: int = 42) -> list[Corpus]:
    from bench import intake_data

    out = []
    for kind in ("dach", "us"):
        folder = tmp / kind
        (folder / "data").mkdir(parents=True)
        exp = intake_data.GENERATORS[kind].export
        intake_data.write_export(folder / "data" / exp.file_name, kind, n, seed=seed, junk_every=max(n // 7, 50))
        config = intake_data.write_config(folder, kind, f"sqlite:///{folder / 'store.db'}")
        out += _hub_corpora(config, kind)
    return out


def demo_corpora(tmp: Path) -> list[Corpus]:
    import os

    os.environ.setdefault("SYNCHUB_STORE", f"sqlite:///{tmp / 'demo.db'}")
    return _hub_corpora(ROOT / "config" / "demo.yaml", "demo")


def _people(n: int, seed: int) -> Iterator[dict[str, Any]]:
    """Row dicts of the intake generators (DACH and US, dirty values included)."""
    from bench import intake_data

    gens = [intake_data.GENERATORS[k](seed) for k in ("dach", "us")]
    for i in range(n):
        gen = gens[i % 2]
        fields, _truth = gen.row(i // 2)
        if isinstance(fields, str):
            continue
        yield dict(zip(gen.export.columns, fields, strict=False))


def _pick(row: dict[str, Any], *names: str) -> str:
    for name in names:
        v = row.get(name)
        if v:
            return str(v)
    return ""


def api_corpora(library: MappingLibrary, n: int, seed: int = 42) -> list[Corpus]:
    """Records as the HubSpot, Mailchimp and Shopify connectors yield them, from the fakes."""
    import synchub_hubspot
    from plugins.hubspot.tests.conftest import TOKEN as HUBSPOT_TOKEN
    from plugins.hubspot.tests.conftest import make_connector as hubspot_connector
    from plugins.hubspot.tests.fake_hubspot import FakeHubSpot
    from plugins.mailchimp.tests.conftest import LIST
    from plugins.mailchimp.tests.conftest import make_connector as mailchimp_connector
    from plugins.mailchimp.tests.fake_mailchimp import FakeMailchimp
    from plugins.shopify.tests.conftest import make_connector as shopify_connector
    from plugins.shopify.tests.fake_shopify import FakeShopify
    from synchub.testing import read_all

    logging.getLogger("test").setLevel(logging.ERROR)
    r = random.Random(seed)
    people = list(_people(n, seed))
    hub = FakeHubSpot(token=HUBSPOT_TOKEN)
    saved_now = synchub_hubspot.now_ms
    synchub_hubspot.now_ms = hub.clock
    mc = FakeMailchimp(seed=seed)
    mc.add_list(LIST)
    shop = FakeShopify()
    stages = ["lead", "customer", "subscriber", "marketingqualifiedlead", "CUSTOMER", "partner", ""]
    sources = ["EMAIL_MARKETING", "SOCIAL_MEDIA", "OFFLINE", "DIRECT_TRAFFIC", ""]
    seen_mc: set[str] = set()
    seen_shop: set[str] = set()
    for i, p in enumerate(people):
        email = _pick(p, "E-Mail", "Email")
        phone = _pick(p, "Telefon", "Phone")
        first, last = _pick(p, "Vorname", "First Name"), _pick(p, "Nachname", "Last Name")
        street, city = _pick(p, "Straße", "Address"), _pick(p, "Ort", "City")
        zip_, country = _pick(p, "PLZ", "ZIP"), _pick(p, "Land", "Country")
        hub.add("contacts", {"email": email, "firstname": first, "lastname": last, "phone": phone,
                             "mobilephone": phone if i % 3 == 0 else "", "address": street, "city": city,
                             "zip": zip_, "country": country, "lifecyclestage": r.choice(stages),
                             "hs_analytics_source": r.choice(sources), "salutation": _pick(p, "Anrede"),
                             "hs_additional_emails": f"{i}@x.example;{email}" if i % 5 == 0 else "",
                             "company": _pick(p, "Company"), "jobtitle": "Einkauf" if i % 4 == 0 else ""})
        if i % 4 == 0:
            hub.add("companies", {"name": _pick(p, "Company") or f"{last} GmbH", "domain": f"{last}.Example" if last else "",
                                  "phone": phone, "city": city, "zip": zip_, "country": country,
                                  "numberofemployees": r.choice(["12", "0", "", "250", "-3", "1.5"]),
                                  "lifecyclestage": r.choice(stages), "industry": "Retail"})
        key = email.strip().lower()
        if key and "@" in key and " " not in key and key not in seen_mc and i % 2 == 0:
            seen_mc.add(key)
            address = {"addr1": street, "city": city, "state": "BY", "zip": zip_, "country": "DE"} if street and city and zip_ else None
            try:
                mc.add_member(LIST, email.strip(), status=r.choice(["subscribed", "unsubscribed", "pending", "cleaned", "transactional"]),
                              merge_fields={"FNAME": first, "LNAME": last, "PHONE": phone, "ADDRESS": address},
                              tags=r.sample(["vip", "messe", "b2b", " spaces "], r.randint(0, 2)), language=r.choice(["de", "en", ""]))
            except Exception:
                continue
        if key and key not in seen_shop and i % 2 == 1:
            seen_shop.add(key)
            fields: dict[str, Any] = {"firstName": first or None, "lastName": last or None, "email": email.strip() or None,
                                      "tags": r.sample(["vip", "wholesale", "newsletter"], r.randint(0, 2)),
                                      "emailMarketingConsent": {"marketingState": r.choice(["SUBSCRIBED", "NOT_SUBSCRIBED", "UNSUBSCRIBED"]),
                                                                "consentUpdatedAt": r.choice([None, "2024-01-01T10:00:00Z", "2023-06-30T23:59:59+02:00"])}}
            if street:
                fields["defaultAddress"] = {"address1": street, "city": city, "zip": zip_, "countryCode": r.choice(["DE", "AT", "CH", "US"]),
                                            "company": _pick(p, "Company") or None, "phone": phone or None}
            try:
                gid = shop.add_customer(**fields)
            except Exception:
                continue
            for _ in range(r.randint(0, 2)):
                shop.add_order(gid, total=r.choice(["25.00", "0.00", "1234.5", "99.99"]),
                               currency=r.choice([None, "EUR", "CHF"]), cancelled=r.random() < 0.1,
                               line_items=[{"title": "Wanderschuh", "quantity": r.randint(1, 3), "price": "49.90", "sku": "WS-1"}])
    shop.add_order(None, total="10.00")  # a guest order
    out = []
    try:
        hc = hubspot_connector(hub, streams={s: {"index_lag_seconds": 0, "lookback_seconds": 0} for s in ("contacts", "companies")})
        for s, mname in (("contacts", "hubspot_contacts"), ("companies", "hubspot_companies")):
            recs = read_all(hc.streams()[s], None)[0]
            out.append(Corpus(f"api:hubspot/{s}", library.get(mname), [x.data for x in recs]))
    finally:
        synchub_hubspot.now_ms = saved_now
    recs = read_all(mailchimp_connector(mc).streams()["newsletter"], None)[0]
    out.append(Corpus("api:mailchimp/members", library.get("mailchimp_members"), [x.data for x in recs]))
    sc = shopify_connector(shop, streams={"customers": {}, "orders": {"resource": "orders"}})
    for s, mname in (("customers", "shopify_customers"), ("orders", "shopify_orders")):
        recs = read_all(sc.streams()[s], None)[0]
        out.append(Corpus(f"api:shopify/{s}", library.get(mname), [x.data for x in recs]))
    return out


#: Values that a dirty source puts anywhere: blanks, padding, odd types, invalid and edge values.
DIRTY: list[Any] = [
    None, "", "   ", " x ", "x", "\u00a0x\u00a0", "\x1cx", "x\u200b", "ab\udcff", "Ünïcødé", "ja", "Nein", "YES", "x",
    0, 1, -1, 5, 2**70, 3.5, float("nan"), float("inf"), True, False, "0", "007", "-5", "1e3", "1_000", "+3", "3.0",
    "12,50", "1.234,56", "€ 12,50", "0.00", "-0", "NaN", "31.02.1985", "03.05.1998", "2024-01-05", "2024-02-30",
    "2024-01-05T00:00:00Z", "2024-01-05T10:00:00+01:00", "2024-01-05T10:00:00.123456+00:00", "1700000000000",
    "DE", "de", " DE", "Deutschland", "Germny", "USA", "EUR", "eur", "EURO", "a@b.de", " A@B.DE ", "name(at)x.de",
    "mailto:x@y.de", "+49 171 1234567", "0171/1234567", "n/a", "-", "subscribed", "never", "SUBSCRIBED", "customer",
    "lead", "checkbox", "shop", "trade_fair", "herr", "dr. anna-lena VON berg", "MÜLLER", ["a", "b"], ["a", None, ""],
    [], [" a ", "a"], ("t", "u"), {"a": 1}, {}, {"addr1": "x"}, datetime(2024, 1, 1, 12, tzinfo=timezone.utc),
    datetime(2024, 1, 1), "x" * 600,
]


def _set_path(record: dict[str, Any], path: str, value: Any, r: random.Random) -> None:
    if "." not in path or r.random() < 0.15:
        record[path] = value
        return
    *head, last = path.split(".")
    cur: Any = record
    for p in head:
        nxt = cur.get(p) if isinstance(cur, dict) else None
        if not isinstance(nxt, dict):
            if isinstance(nxt, list) and p.isdigit():
                return
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[last] = value


def _sources(m: Mapping) -> list[str]:
    fms = [*m.fields, *(fm for imap in m.interactions for fm in imap.fields)]
    if m.observed_at is not None:
        fms.append(m.observed_at)
    paths = [fm.source for fm in fms if fm.source]
    if m.owner_path:
        paths.append(m.owner_path)
    return list(dict.fromkeys(paths))


def fuzz_corpora(library: MappingLibrary, bases: dict[str, list[dict[str, Any]]], n: int, seed: int) -> list[Corpus]:
    """``n`` dirty variants per mapping in ``mappings/`` (out-mappings: of canonical records)."""
    r = random.Random(seed)
    out = []
    canon: dict[str, list[dict[str, Any]]] = {"person": [], "company": []}
    for name in sorted(p.stem for p in (ROOT / "mappings").glob("*.yaml")):
        m = library.get(name)
        if m.direction != "in" or m.timeline_only:
            continue
        for rec in bases.get(name, [])[:200]:
            try:
                canon[m.entity].append({**m.to_canonical(rec, []), "id": f"g{len(canon[m.entity])}"})
            except Exception:
                continue
    for name in sorted(p.stem for p in (ROOT / "mappings").glob("*.yaml")):
        m = library.get(name)
        pool = canon[m.entity] if m.direction == "out" else bases.get(name) or [{}]
        paths = _sources(m)
        records = []
        for _ in range(n):
            rec = copy.deepcopy(r.choice(pool)) if pool else {}
            for path in r.sample(paths, r.randint(1, max(1, min(len(paths), 4)))):
                _set_path(rec, path, copy.deepcopy(r.choice(DIRTY)), r)
            records.append(rec)
        out.append(Corpus(f"fuzz:{name}", m, records))
    return out


def build(tmp: Path, *, shop: int, intake: int, api: int, fuzz: int, seed: int = 42) -> list[Corpus]:
    corpora: list[Corpus] = []
    if shop:
        corpora += shop_corpus(tmp, shop, seed)
    if intake:
        corpora += intake_corpora(tmp, intake, seed)
    corpora += demo_corpora(tmp)
    from synchub.plugins import get_transforms

    library = MappingLibrary([ROOT / "mappings"], get_transforms(), {"phone_region": "DE"})
    if api:
        corpora += api_corpora(library, api, seed)
    if fuzz:
        bases: dict[str, list[dict[str, Any]]] = {}
        for c in corpora:
            bases.setdefault(c.mapping.name, []).extend(c.records[:2000])
        corpora += fuzz_corpora(library, bases, fuzz, seed)
    return corpora


# ---------------------------------------------------------------------------------------------


def floor_prepare(n: int) -> tuple[float, float]:
    """floor_bench's prepare step (``Preparer.prepare``), µs per record, reference vs fast."""
    import floor_bench

    res = {}
    for fast in (False, True, False, True):
        mapping_mod.FAST_PATH = fast
        try:
            r = floor_bench.measure(n, 42, 0.05)
        finally:
            mapping_mod.FAST_PATH = True
        us = r["prepare"] / r["records"] * 1e6
        res[fast] = min(res.get(fast, us), us)
    return res[False], res[True]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shop", type=int, default=100_000, help="rows of the sync benchmark's shop export")
    ap.add_argument("--intake", type=int, default=50_000, help="rows of each intake export (dach, us)")
    ap.add_argument("--api", type=int, default=2000, help="people put into the fake HubSpot/Mailchimp/Shopify")
    ap.add_argument("--fuzz", type=int, default=3000, help="dirty variants per mapping")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--floor", type=int, default=0, help="also run floor_bench's prepare step on N rows, both ways")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="synchub-prepare-") as tmp:
        t = time.perf_counter()
        corpora = build(Path(tmp), shop=args.shop, intake=args.intake, api=args.api, fuzz=args.fuzz, seed=args.seed)
        print(f"corpus: {sum(len(c.records) for c in corpora):,} records in {len(corpora)} sets "
              f"({time.perf_counter() - t:.0f} s to build)")
        t = time.perf_counter()
        report = compare(corpora, Report())
        print(f"compared {report.compared:,} records both ways in {time.perf_counter() - t:.0f} s\n")
        print("| corpus | mapping | records | mismatches | µs/record before | µs/record after |")
        print("|---|---|---|---|---|---|")
        for c in corpora:
            n, bad = report.per_corpus[c.label]
            if c.mapping.direction == "out" or not c.records:
                before = after = float("nan")
            else:
                sample = c.records[:20000]
                before, after = timing(c.mapping, sample, False), timing(c.mapping, sample, True)
            print(f"| {c.label} | {c.mapping.name} | {n:,} | {bad} | {before:.1f} | {after:.1f} |")
    if args.floor:
        before, after = floor_prepare(args.floor)
        print(f"\nfloor_bench prepare step ({args.floor:,} records): {before:.0f} µs/record before, {after:.0f} after")
    print(f"\nmismatches: {report.mismatches}")
    for e in report.examples:
        print(e)
    return 1 if report.mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
