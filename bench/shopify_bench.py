"""Records per second for mapping a Shopify bulk-operation result into the hub.

Writes two JSONL files in Shopify's bulk format (one object per line; an order's line items on
lines of their own with ``__parentId``, after their order but not next to it): C customers and
O orders. Then runs the real engine (SQLite store in a temporary folder) on a Shopify connection
whose first read is a bulk operation; only the two calls that talk to Shopify (start the
operation, fetch its file) are replaced by handing over the prepared file. What is measured is
the connector's JSONL reading, the mappings, matching, merging and the purchase summaries.

    .venv/bin/python bench/shopify_bench.py --customers 100000 --orders 300000
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import synchub_shopify  # noqa: E402
from synchub.config import load_config  # noqa: E402
from synchub.engine import Hub  # noqa: E402

CONFIG = """
store: 'sqlite:///{db}'
mappings_dir: ['{mappings}']
defaults: {{batch_size: 1000}}
connections:
  shop:
    connector: shopify
    settings: {{shop: bench, access_token: shpat_bench}}
    streams:
      customers: {{mapping: shopify_customers, settings: {{resource: customers, bulk: always, reconcile_hours: 0}}}}
      orders: {{mapping: shopify_orders, settings: {{resource: orders, bulk: always, reconcile_hours: 0}}}}
"""

FIRST = ["Anna", "Jonas", "Lea", "Lukas", "Marie", "Felix", "Sophie", "Paul", "Emma", "Max", "Mia", "Ben"]
LAST = ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann"]
STREETS = ["Hauptstraße", "Bahnhofstr.", "Gartenweg", "Lindenallee", "Schillerplatz", "Goethestraße"]
CITIES = [("10115", "Berlin"), ("80331", "München"), ("20095", "Hamburg"), ("50667", "Köln"), ("1010", "Wien")]


def write_files(folder: Path, customers: int, orders: int, seed: int = 7) -> tuple[Path, Path]:
    rng = random.Random(seed)
    cpath, opath = folder / "customers.jsonl", folder / "orders.jsonl"
    with cpath.open("w", encoding="utf-8") as out:
        for i in range(customers):
            zip_, city = rng.choice(CITIES)
            state = rng.choice(["SUBSCRIBED", "NOT_SUBSCRIBED", "UNSUBSCRIBED", "SUBSCRIBED"])
            out.write(json.dumps({
                "id": f"gid://shopify/Customer/{1000 + i}", "legacyResourceId": str(1000 + i),
                "firstName": rng.choice(FIRST), "lastName": f"{rng.choice(LAST)}-{rng.choice(LAST)}" if i % 3 == 0 else rng.choice(LAST), "email": f"kunde{i}@example.de",
                "phone": None, "locale": "de", "note": None, "state": "ENABLED", "tags": rng.sample(["vip", "newsletter", "b2b", "messe"], 2),
                "createdAt": "2023-05-01T10:00:00Z", "updatedAt": "2024-06-01T10:00:00Z", "verifiedEmail": True, "taxExempt": False,
                "numberOfOrders": "3", "amountSpent": {"amount": "120.0", "currencyCode": "EUR"},
                "emailMarketingConsent": {"marketingState": state, "marketingOptInLevel": "SINGLE_OPT_IN", "consentUpdatedAt": "2024-01-01T00:00:00Z"},
                "smsMarketingConsent": None,
                "defaultAddress": {"address1": f"{rng.choice(STREETS)} {i + 1}", "address2": None, "city": city, "company": None,
                                   "countryCodeV2": "AT" if city == "Wien" else "DE", "province": None, "provinceCode": None,
                                   "zip": zip_, "phone": None},
            }, ensure_ascii=False) + "\n")
    with opath.open("w", encoding="utf-8") as out:
        pending: list[str] = []
        for j in range(orders):
            oid = f"gid://shopify/Order/{5000 + j}"
            chf = rng.random() < 0.1
            total = f"{rng.randint(10, 400)}.{rng.randint(0, 99):02d}"
            out.write(json.dumps({
                "id": oid, "name": f"#{1000 + j}", "email": None, "phone": None, "createdAt": "2024-03-01T10:00:00Z",
                "processedAt": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T10:00:00Z", "updatedAt": "2024-06-01T10:00:00Z",
                "cancelledAt": "2024-06-01T10:00:00Z" if rng.random() < 0.03 else None, "test": False, "tags": [], "sourceName": "web",
                "displayFinancialStatus": "PAID", "displayFulfillmentStatus": "FULFILLED", "currencyCode": "EUR",
                "presentmentCurrencyCode": "CHF" if chf else "EUR",
                "currentTotalPriceSet": {"shopMoney": {"amount": total, "currencyCode": "EUR"},
                                         "presentmentMoney": {"amount": total, "currencyCode": "CHF" if chf else "EUR"}},
                "customer": {"id": f"gid://shopify/Customer/{1000 + rng.randrange(customers)}"},
            }) + "\n")
            for k in range(rng.randint(1, 3)):
                pending.append(json.dumps({"id": f"gid://shopify/LineItem/{j * 4 + k}", "title": rng.choice(["Tee", "Mug", "Cap", "Socks"]),
                                           "sku": "SKU1", "quantity": 1, "currentQuantity": 1,
                                           "originalUnitPriceSet": {"presentmentMoney": {"amount": "10.0", "currencyCode": "EUR"}},
                                           "__parentId": oid}) + "\n")
            if len(pending) > 50:  # children after their parent, not necessarily next to it
                out.writelines(pending)
                pending = []
        out.writelines(pending)
    return cpath, opath


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--orders", type=int, default=300_000)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        cpath, opath = write_files(folder, args.customers, args.orders)
        print(f"wrote {args.customers:,} customers ({cpath.stat().st_size / 1e6:.0f} MB) and {args.orders:,} orders "
              f"({opath.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f}s")
        files = {"customers": cpath, "orders": opath}
        n = {"i": 0}

        def start_bulk(self, query, settings):
            return f"gid://shopify/BulkOperation/{'customers' if 'customers(' in query else 'orders'}"

        def bulk_result(self, op_id, settings):
            n["i"] += 1
            copy = folder / f"result{n['i']}.jsonl"  # the connector deletes what it read
            shutil.copyfile(files[op_id.rsplit("/", 1)[1]], copy)
            return str(copy)

        synchub_shopify.ShopifyConnector.start_bulk = start_bulk
        synchub_shopify.ShopifyConnector.bulk_result = bulk_result
        cfg_path = folder / "synchub.yaml"
        cfg_path.write_text(CONFIG.format(db=folder / "bench.db", mappings=ROOT / "mappings"), encoding="utf-8")
        hub = Hub(load_config(cfg_path, environ={}))
        hub.store.upgrade()
        marks: dict[str, float] = {}

        def progress(connection: str, stream: str, read: int) -> None:
            marks[stream] = time.perf_counter()  # the last progress call of a stream is its end

        t0 = time.perf_counter()
        [summary] = hub.sync(["shop"], progress=progress)
        total = time.perf_counter() - t0
        c, o = summary.streams["customers"], summary.streams["orders"]
        print(f"status {summary.status}; customers read {c.read:,} created {c.created:,} rejected {c.rejected}; "
              f"orders read {o.read:,} created {o.created:,} rejected {o.rejected}")
        t_c = marks["customers"] - t0
        t_o = total - t_c
        print(f"customers: {t_c:.1f}s, {c.read / t_c:,.0f} records/s; orders: {t_o:.1f}s, {o.read / t_o:,.0f} records/s")
        print(f"total {total:.1f}s: {(c.read + o.read) / total:,.0f} records/s overall")
        counts = hub.store.counts()
        print(f"store: {counts}")
        print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
        g = next(iter(hub.store.iter_golden("person")))
        print("sample purchases:", json.dumps(g["data"].get("purchases"), ensure_ascii=False))


if __name__ == "__main__":
    main()
