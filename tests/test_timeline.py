"""Timeline-only streams (orders) and the purchase summary the hub derives from them, on both
store backends: orders belong to a customer record of the same connection, follow it through
merges and splits, wait for it when they arrive first, and make its purchase behaviour."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from synchub import purchases
from synchub import store as st
from synchub.config import load_config
from synchub.connector import Reconcile
from synchub.engine import StreamCounts
from synchub.errors import ConfigError
from synchub.review import split_sources
from tests.helpers import hub_for, rows, write_config

CONFIG = """
connections:
  shop:
    connector: files
    settings: {path: data}
    streams:
      customers: {mapping: kunden, settings: {pattern: "kunden*.csv", primary_key: id}}
      orders: {mapping: bestellungen, settings: {pattern: "orders*.csv", primary_key: order}}
  crm:
    connector: files
    settings: {path: data}
    streams:
      people: {mapping: kunden, settings: {pattern: "crm*.csv", primary_key: id}}
match:
  person: {keys: [email]}
"""

KUNDEN = """
entity: person
fields:
  first_name: first
  last_name: last
  emails: email
  purchases.orders_count: count
  purchases.total_spent: {path: spent, transform: parse_decimal}
  purchases.currency: {value: EUR}
"""

BESTELLUNGEN = """
entity: interaction
owner: {stream: customers, path: customer}
interactions:
  - kind: order
    fields:
      occurred_at: {path: at, transform: parse_datetime}
      summary: order
      amount: {path: total, transform: parse_decimal}
      currency: currency
      base_amount: {path: shop_total, transform: parse_decimal}
      base_currency: {value: EUR}
      status: status
"""

ORDERS_HEADER = "order,customer,at,total,currency,shop_total,status\n"


def _hub(tmp_path: Path, store_url: str, **files: str):
    cfg = write_config(tmp_path, CONFIG, store_url, **files)
    (tmp_path / "mappings" / "kunden.yaml").write_text(KUNDEN, encoding="utf-8")
    (tmp_path / "mappings" / "bestellungen.yaml").write_text(BESTELLUNGEN, encoding="utf-8")
    return hub_for(cfg)


def _write(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / "data" / name).write_text(text, encoding="utf-8")


def _golden(hub, email: str) -> dict:
    for g in rows(hub.store, st.golden_t, st.golden_t.c.status == "active"):
        if email in (g["data"].get("emails") or []):
            return g
    raise AssertionError(f"no golden record with {email}")


def test_orders_make_the_purchase_summary(tmp_path: Path, store_url: str) -> None:
    hub = _hub(
        tmp_path, store_url,
        kunden__csv="id,first,last,email,count,spent\n1,Ann,Lee,ann@example.com,1,10.00\n2,Bo,Kim,bo@example.com,,\n",
        orders__csv=ORDERS_HEADER
        + "A1,1,2024-01-05T10:00:00Z,100.00,EUR,100.00,paid\n"
        + "A2,1,2024-03-01T09:00:00Z,50.00,CHF,52.10,paid\n"  # charged in CHF, the shop books EUR
        + "A3,1,2024-04-01T09:00:00Z,999.00,EUR,999.00,cancelled\n"
        + "A4,1,2024-05-01T09:00:00Z,1.00,EUR,1.00,test\n"
        + "B1,2,2024-02-01T09:00:00Z,20.00,EUR,20.00,paid\n",
    )
    summaries = hub.sync(["shop"])
    counts = summaries[0].streams["orders"]
    assert (counts.read, counts.created, counts.rejected) == (5, 5, 0)
    ann = _golden(hub, "ann@example.com")
    p = ann["data"]["purchases"]
    # cancelled and test orders stay on the timeline but count in no total
    assert p["orders_count"] == 2
    assert Decimal(p["total_spent"]) == Decimal("152.10") and p["currency"] == "EUR"
    assert Decimal(p["average_order_value"]) == Decimal("76.05")
    assert p["first_order_at"].startswith("2024-01-05") and p["last_order_at"].startswith("2024-03-01")
    assert {c: (v["orders_count"], Decimal(v["total_spent"])) for c, v in p["by_currency"].items()} == {
        "EUR": (1, Decimal("100.00")), "CHF": (1, Decimal("50.00"))}
    prov = ann["provenance"]["purchases"]
    assert prov["rule"] == purchases.RULE
    assert prov["losing"][0]["value"]["orders_count"] == 1  # the customer file's own figure lost
    assert len(hub.store.timeline_of(ann["id"])) == 4
    assert _golden(hub, "bo@example.com")["data"]["purchases"]["orders_count"] == 1
    # A re-run changes nothing.
    again = hub.sync(["shop"])[0].streams["orders"]
    assert (again.created, again.updated) == (0, 0)


def test_an_order_read_before_its_customer_waits_for_it(tmp_path: Path, store_url: str) -> None:
    hub = _hub(tmp_path, store_url, kunden__csv="id,first,last,email,count,spent\n",
               orders__csv=ORDERS_HEADER + "A1,7,2024-01-05T10:00:00Z,30.00,EUR,30.00,paid\n")
    hub.sync(["shop"])
    orphans = rows(hub.store, st.interaction_t)
    assert len(orphans) == 1 and orphans[0]["golden_id"] is None and orphans[0]["owner_id"] == "7"
    _write(tmp_path, "kunden.csv", "id,first,last,email,count,spent\n7,Cy,Ott,cy@example.com,,\n")
    hub.sync(["shop"])
    cy = _golden(hub, "cy@example.com")
    assert cy["data"]["purchases"]["orders_count"] == 1
    assert [t["source_id"] for t in hub.store.timeline_of(cy["id"])] == ["A1#0"]


def test_an_order_updated_after_its_customer_was_merged(tmp_path: Path, store_url: str) -> None:
    hub = _hub(tmp_path, store_url,
               kunden__csv="id,first,last,email,count,spent\n1,Ann,Lee,ann@example.com,,\n",
               orders__csv=ORDERS_HEADER + "A1,1,2024-01-05T10:00:00Z,30.00,EUR,30.00,paid\n",
               crm__csv="id,first,last,email,count,spent\n")
    hub.sync(["shop"])
    before = _golden(hub, "ann@example.com")
    # The CRM knows Ann under a second address first (its own golden record), then learns the
    # shop's address: the two golden records merge.
    _write(tmp_path, "crm.csv", "id,first,last,email,count,spent\n55,Ann,Lee,ann.lee@work.example,,\n")
    hub.sync(["crm"])
    crm_golden = _golden(hub, "ann.lee@work.example")
    assert crm_golden["id"] != before["id"]
    _write(tmp_path, "crm.csv", "id,first,last,email,count,spent\n55,Ann,Lee,ann@example.com,,\n")
    hub.sync(["crm"])
    survivor = _golden(hub, "ann@example.com")
    # The order was updated (a partial refund) after the merge: it lands on the survivor.
    _write(tmp_path, "orders.csv", ORDERS_HEADER + "A1,1,2024-01-05T10:00:00Z,20.00,EUR,20.00,partially_refunded\n")
    c = hub.sync(["shop"])[0].streams["orders"]
    assert c.updated == 1
    survivor = _golden(hub, "ann@example.com")
    entries = rows(hub.store, st.interaction_t)
    assert [e["golden_id"] for e in entries] == [survivor["id"]]
    assert Decimal(survivor["data"]["purchases"]["total_spent"]) == Decimal("20.00")
    merged = rows(hub.store, st.golden_t, st.golden_t.c.status == "merged")
    assert all(m["data"].get("purchases") is None or m["merged_into"] == survivor["id"] for m in merged)


def test_a_split_takes_the_customers_orders_along(tmp_path: Path, store_url: str) -> None:
    hub = _hub(tmp_path, store_url,
               kunden__csv="id,first,last,email,count,spent\n1,Ann,Lee,ann@example.com,,\n",
               orders__csv=ORDERS_HEADER + "A1,1,2024-01-05T10:00:00Z,30.00,EUR,30.00,paid\n",
               crm__csv="id,first,last,email,count,spent\n55,Ann,Lee,ann@example.com,,\n")
    hub.sync()
    g = _golden(hub, "ann@example.com")
    assert len(hub.store.source_records_of(g["id"])) == 2
    new_id = split_sources(hub, g["id"], ["shop/customers/1"], by="test")
    moved = hub.store.get_golden(new_id)
    assert moved is not None and moved["data"]["purchases"]["orders_count"] == 1
    stayed = hub.store.get_golden(g["id"])
    assert stayed is not None and "orders_count" not in stayed["data"].get("purchases", {})
    assert [e["golden_id"] for e in rows(hub.store, st.interaction_t)] == [new_id]


def test_a_deleted_order_leaves_the_summary(tmp_path: Path, store_url: str) -> None:
    hub = _hub(tmp_path, store_url,
               kunden__csv="id,first,last,email,count,spent\n1,Ann,Lee,ann@example.com,,\n",
               orders__csv=ORDERS_HEADER + "A1,1,2024-01-05T10:00:00Z,30.00,EUR,30.00,paid\n"
               + "A2,1,2024-02-05T10:00:00Z,12.00,EUR,12.00,paid\n")
    hub.sync(["shop"])
    with hub.store.begin() as conn:  # what a stream's deleted record does (files have none)
        from synchub.apply import apply_timeline
        from synchub.prepare import Prepared

        gone = Prepared("A2", None, {}, "x", datetime(2024, 3, 1, tzinfo=timezone.utc), [], True, [], owner="1")
        touched = apply_timeline(conn, "shop", "orders", "customers", [gone], StreamCounts())
        hub._rederive_any(conn, touched, "test", 0)
    ann = _golden(hub, "ann@example.com")
    assert ann["data"]["purchases"]["orders_count"] == 1
    assert len(hub.store.timeline_of(ann["id"])) == 1


def test_interaction_mappings_are_checked(tmp_path: Path, store_url: str) -> None:
    cfg = write_config(tmp_path, CONFIG, store_url)
    (tmp_path / "mappings" / "kunden.yaml").write_text(KUNDEN, encoding="utf-8")
    (tmp_path / "mappings" / "bestellungen.yaml").write_text(
        "entity: interaction\nfields: {first_name: x}\ninteractions:\n  - kind: order\n    fields: {amount: total}\n",
        encoding="utf-8")
    with pytest.raises(ConfigError) as excinfo:
        load_config(cfg, environ={})
    text = str(excinfo.value)
    assert "bestellungen.yaml" in text
    assert "owner must be" in text and "no party fields" in text


def test_summary_with_two_seller_currencies_uses_the_one_most_orders_are_in() -> None:
    at = datetime(2024, 1, 1, tzinfo=timezone.utc)
    s = purchases.summarize([
        ({"amount": "10", "currency": "EUR", "base_amount": "10", "base_currency": "EUR"}, at),
        ({"amount": "20", "currency": "EUR", "base_amount": "20", "base_currency": "EUR"}, at),
        ({"amount": "30", "currency": "USD", "base_amount": "30", "base_currency": "USD"}, at),
    ])
    assert s is not None
    assert (s["orders_count"], s["currency"], s["total_spent"], s["average_order_value"]) == (3, "EUR", "30.00", "15.00")
    assert s["by_currency"]["USD"]["total_spent"] == "30.00"
    assert purchases.summarize([({"amount": "5", "currency": "EUR", "status": "cancelled"}, at)]) == {"orders_count": 0}
    assert purchases.summarize([]) is None


def test_unknown_owner_stream_is_a_config_error(tmp_path: Path, store_url: str) -> None:
    cfg = write_config(tmp_path, CONFIG.replace("customers: {mapping: kunden", "kunden: {mapping: kunden"), store_url)
    (tmp_path / "mappings" / "kunden.yaml").write_text(KUNDEN, encoding="utf-8")
    (tmp_path / "mappings" / "bestellungen.yaml").write_text(BESTELLUNGEN, encoding="utf-8")
    with pytest.raises(ConfigError) as excinfo:
        load_config(cfg, environ={})
    assert "owner stream 'customers'" in str(excinfo.value)


def test_a_full_listing_erases_what_the_source_no_longer_holds_but_keeps_opt_outs(tmp_path: Path, store_url: str) -> None:
    hub = _hub(tmp_path, store_url,
               kunden__csv="id,first,last,email,count,spent\n1,Ann,Lee,ann@example.com,,\n2,Bo,Kim,bo@example.com,,\n",
               orders__csv=ORDERS_HEADER + "A1,1,2024-01-05T10:00:00Z,30.00,EUR,30.00,paid\n"
               + "A2,1,2024-02-05T10:00:00Z,12.00,EUR,12.00,paid\n")
    hub.sync(["shop"])
    bo = _golden(hub, "bo@example.com")
    with hub.store.begin() as conn:  # Bo opted out at the shop
        conn.execute(st.source_t.update().where(st.source_t.c.source_id == "2").values(
            data={**bo["data"], "consent": {"email": {"status": "unsubscribed", "at": "2024-01-01"}}}))
    mapping = hub.mappings.get("kunden")
    later = datetime.now(timezone.utc)
    counts = StreamCounts()
    hub._reconcile("shop", "customers", mapping, Reconcile({"1"}, later), 0, counts)
    hub._reconcile("shop", "orders", hub.mappings.get("bestellungen"), Reconcile({"A1"}, later), 0, counts)
    assert counts.deleted == 2
    gone = hub.store.get_golden(bo["id"])
    assert gone is not None and gone["status"] == "deleted"
    # Bo's name and address left the hub; the opt-out did not.
    assert gone["data"].get("first_name") is None and gone["data"].get("emails") in (None, [])
    assert gone["data"]["consent"]["email"]["status"] == "unsubscribed"
    ann = _golden(hub, "ann@example.com")
    assert ann["data"]["purchases"]["orders_count"] == 1
    audit = [a["action"] for a in hub.store.audit_of(bo["id"])]
    assert "source_deleted" in audit
    # A record that changed after the listing began is not touched.
    hub._reconcile("shop", "customers", mapping, Reconcile(set(), datetime(2000, 1, 1, tzinfo=timezone.utc)), 0, counts)
    assert _golden(hub, "ann@example.com")["status"] == "active"


# ----- a bulk load of orders ------------------------------------------------------------------------

BULK_CUSTOMERS = "id,first,last,email,count,spent\n" + "".join(
    f"{i},Name{i},Family{i},c{i}@example.com,,\n" for i in range(1, 7))
# 24 orders, round robin over the 6 customers: with units of 4 orders every customer is
# touched in four units.
BULK_ORDERS = ORDERS_HEADER + "".join(
    f"O{n:02d},{n % 6 + 1},2024-{n % 12 + 1:02d}-0{n % 9 + 1}T10:00:00Z,{n}.50,EUR,{n}.50,paid\n" for n in range(24))


def _orders_hub(folder: Path, url: str):
    folder.mkdir(parents=True, exist_ok=True)
    return _hub(folder, url, kunden__csv=BULK_CUSTOMERS, orders__csv=BULK_ORDERS)


def _derived(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Golden ids the engine derives again after timeline changes, in order."""
    from synchub import engine

    seen: list[str] = []
    real = engine.rederive

    def counting(conn, kind, ids, *a, **k):  # type: ignore[no-untyped-def]
        seen.extend(sorted(ids))
        return real(conn, kind, ids, *a, **k)

    monkeypatch.setattr(engine, "rederive", counting)
    return seen


def test_a_bulk_load_of_orders_derives_each_customer_once_and_gives_the_same_store(
        tmp_path: Path, store_url: str, second_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from synchub import bulk
    from tests.test_bulk import snapshot

    monkeypatch.setattr(bulk, "UNIT", 4)
    bulk_hub, inc_hub = _orders_hub(tmp_path / "a", store_url), _orders_hub(tmp_path / "b", second_url)
    inc_hub.config.defaults.batch_size = 4
    derived = _derived(monkeypatch)
    bulk_hub.bulk = True
    [a] = bulk_hub.sync(["shop"])
    assert a.status == "succeeded" and a.streams["orders"].created == 24
    assert len(derived) == len(set(derived)) == 6, "each customer derived once after the orders"
    derived.clear()
    inc_hub.bulk = False
    [b] = inc_hub.sync(["shop"])
    assert len(derived) == 24, "batch by batch, each batch derives its customers"
    assert [s.streams for s in (a,)] == [s.streams for s in (b,)]
    assert snapshot(bulk_hub.store) == snapshot(inc_hub.store)
    assert _golden(bulk_hub, "c1@example.com")["data"]["purchases"]["orders_count"] == 4
    with bulk_hub.store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(st.derive_queue_t)).scalar() == 0


def test_a_crash_before_the_orders_are_derived_is_finished_by_the_next_run(
        tmp_path: Path, store_url: str, second_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from synchub import bulk, engine
    from tests.test_bulk import snapshot

    monkeypatch.setattr(bulk, "UNIT", 4)
    reference = _orders_hub(tmp_path / "ref", second_url)
    reference.bulk = True
    reference.sync(["shop"])
    hub = _orders_hub(tmp_path / "a", store_url)
    hub.bulk = True
    real = engine.Hub._rederive_any

    def crash(self, conn, ids, actor, run_id):  # type: ignore[no-untyped-def]
        raise OSError("disk full")

    monkeypatch.setattr(engine.Hub, "_rederive_any", crash)
    [failed] = hub.sync(["shop"])
    assert failed.status == "failed"
    with hub.store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(st.interaction_t)).scalar() == 24
        assert conn.execute(sa.select(sa.func.count()).select_from(st.derive_queue_t)).scalar() == 6
    assert _golden(hub, "c1@example.com")["data"] != _golden(reference, "c1@example.com")["data"], "not derived yet"
    monkeypatch.setattr(engine.Hub, "_rederive_any", real)
    [rerun] = hub.sync(["shop"])  # the files are unchanged: only the queue is left to do
    assert rerun.status == "succeeded" and rerun.streams["orders"].read == 0
    assert snapshot(hub.store) == snapshot(reference.store)
