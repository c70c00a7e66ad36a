"""HubSpot API calls per N contacts read and N changed contacts written, against the minimum.

Runs the real engine (SQLite store in a temporary folder) against the stateful fake HubSpot of
the plugin's tests, and counts the requests that reach it:

1. first sync of N contacts: search calls vs the minimum ceil(N / 200) (plus one archived sweep);
   nothing changed in the hub, so zero write calls;
2. a shop export changes the city of all N: write calls vs the minimum ceil(N / 100);
3. the same sync again: zero write calls (the reads are HubSpot echoing our own writes);
4. a stream-level read of M contacts (past the 10,000 cap, and with 10,001 sharing one timestamp).

    .venv/bin/python bench/hubspot_bench.py --records 1000 10000 --cap 25000
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import synchub_hubspot  # noqa: E402
from plugins.hubspot.tests.conftest import TOKEN, http_factory, make_connector  # noqa: E402
from plugins.hubspot.tests.fake_hubspot import FakeHubSpot  # noqa: E402
from synchub.config import load_config  # noqa: E402
from synchub.engine import Hub  # noqa: E402
from synchub.testing import read_all  # noqa: E402

CONFIG = """
store: 'sqlite:///{db}'
mappings_dir: ['{mappings}']
defaults: {{batch_size: 1000}}
connections:
  crm:
    connector: hubspot
    direction: both
    settings: {{token: "{token}", account: bench}}
    streams:
      contacts: {{mapping: hubspot_contacts, write_mapping: hubspot_contacts_out,
                 settings: {{index_lag_seconds: 0}}}}
  shop:
    connector: files
    direction: in
    settings: {{path: data}}
    streams:
      customers: {{mapping: shop_kunden, settings: {{pattern: "shop*.csv", primary_key: Kundennr}}}}
match:
  person: {{keys: [email]}}
"""


def calls(fake: FakeHubSpot, since: int, part: str) -> int:
    return sum(1 for r in fake.requests[since:] if part in r.url.path)


def sync_case(n: int) -> dict[str, float]:
    fake = FakeHubSpot(token=TOKEN)
    synchub_hubspot.now_ms = fake.clock
    for i in range(n):
        fake.add("contacts", {"email": f"c{i}@example.com", "firstname": f"Vor{i}", "lastname": f"Nach{i}",
                              "city": "Bonn"})
        fake.clock.advance(7)
    fake.clock.advance(60_000)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        (base / "data").mkdir()
        cfg = base / "synchub.yaml"
        cfg.write_text(CONFIG.format(db=base / "hub.db", mappings=ROOT / "mappings", token=TOKEN))
        hub = Hub(load_config(cfg), http=http_factory(fake))
        hub.store.upgrade()
        out: dict[str, float] = {"N": n}
        mark, t0 = len(fake.requests), time.perf_counter()
        hub.sync(["crm"])
        out["read_s"] = time.perf_counter() - t0
        out["read_search_calls"] = calls(fake, mark, "/search")
        out["read_min"] = math.ceil(n / 200)
        out["read_other_calls"] = len(fake.requests) - mark - out["read_search_calls"]
        out["noop_write_calls"] = calls(fake, mark, "/batch/")
        # The shop says everyone moved to Köln.
        rows = ["Kundennr;Vorname;Nachname;E-Mail;Ort"] + [f"K{i};Vor{i};Nach{i};c{i}@example.com;Köln" for i in range(n)]
        (base / "data" / "shop.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        fake.clock.advance(60_000)
        mark, t0 = len(fake.requests), time.perf_counter()
        hub.sync(["shop"])
        out["write_s"] = time.perf_counter() - t0
        out["write_calls"] = calls(fake, mark, "/batch/")
        out["write_min"] = math.ceil(n / 100)
        cities = {c["properties"].get("city") for c in fake.all("contacts")}
        assert cities == {"Köln"}, cities
        fake.clock.advance(60_000)
        mark = len(fake.requests)
        hub.sync()
        out["rerun_write_calls"] = calls(fake, mark, "/batch/")
        out["rerun_read_calls"] = calls(fake, mark, "/search")
        hub.store.dispose()
    return out


def cap_case(m: int, same: int) -> dict[str, float]:
    fake = FakeHubSpot(token=TOKEN)
    synchub_hubspot.now_ms = fake.clock
    t = fake.now() - 10_000_000
    for i in range(m):
        fake.add("contacts", {"email": f"x{i}@example.com"}, updated_at=t + i)
    for i in range(same):
        fake.add("contacts", {"email": f"y{i}@example.com"}, updated_at=t + m + 5)
    conn = make_connector(fake, streams={"contacts": {"index_lag_seconds": 0, "archived_sweep_hours": None}})
    t0 = time.perf_counter()
    records, _rej, _cps, _ = read_all(conn.streams()["contacts"], None)
    secs = time.perf_counter() - t0
    ids = {r.data["id"] for r in records}
    assert len(ids) == m + same, (len(ids), m + same)
    total = m + same
    return {"M": m, "same_ts": same, "records_yielded": len(records), "distinct": len(ids),
            "search_calls": fake.calls("POST", "/search"), "min": math.ceil(total / 200), "s": secs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--cap", type=int, default=25000, help="stream-level read past the 10,000 cap")
    ap.add_argument("--same", type=int, default=10001, help="contacts sharing one timestamp")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print("sync through the hub (SQLite):")
    for n in args.records:
        r = sync_case(n)
        print(f"  N={n:>6}: read {r['read_search_calls']:.0f} search calls (min {r['read_min']:.0f}) "
              f"+ {r['read_other_calls']:.0f} other, {r['noop_write_calls']:.0f} writes; "
              f"N changed: {r['write_calls']:.0f} write calls (min {r['write_min']:.0f}); "
              f"unchanged re-run: {r['rerun_write_calls']:.0f} write calls, {r['rerun_read_calls']:.0f} search calls "
              f"(HubSpot echoing our writes); read {r['read_s']:.1f}s, write {r['write_s']:.1f}s")
    c = cap_case(args.cap, args.same)
    print(f"stream read of {c['M']} + {c['same_ts']} with one timestamp: {c['search_calls']} search calls "
          f"(min {c['min']}), {c['records_yielded']} records yielded for {c['distinct']} contacts, {c['s']:.1f}s")


if __name__ == "__main__":
    main()
