"""End to end through the hub: a Shopify shop (customers and orders) and a CRM export become one
customer view with purchase behaviour; a CRM opt-out reaches Shopify; a customer deleted in
Shopify leaves the hub.

The fake Shopify is mounted with respx on the shop's real host and on the bulk results host, so
the hub builds its clients as in production; every GraphQL request is validated against the
Admin schema.
"""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest
import respx

from plugins.mailchimp.tests.test_e2e import WallClock
from plugins.shopify.tests.fake_shopify import FakeShopify
from synchub import store as st
from tests.helpers import hub_for, rows, write_config

TOKEN = "shpat_e2e_secret_token_0123456789"

CONFIG = """
connections:
  shop:
    connector: shopify
    direction: both
    settings: {shop: acme, access_token: "${SHOPIFY_TOKEN}"}
    streams:
      customers:
        mapping: shopify_customers
        write_mapping: shopify_customers_out
        settings: {resource: customers, settle_seconds: 0, lookback_seconds: 0, bulk_poll_seconds: 0.01, reconcile_hours: 0.0001}
      orders:
        mapping: shopify_orders
        settings: {resource: orders, settle_seconds: 0, lookback_seconds: 0, bulk_poll_seconds: 0.01, reconcile_hours: 0}
  crm:
    connector: files
    settings: {path: data}
    streams:
      people: {mapping: crm_people, settings: {pattern: "crm*.csv", primary_key: id}}
match:
  person: {keys: [email, phone]}
"""

CRM_PEOPLE = """
entity: person
fields:
  first_name: first
  last_name: last
  emails: email
  phones: {path: phone, transform: phone_e164}
  consent.email.status: consent
  consent.email.at: {path: at, transform: parse_datetime}
"""

CRM = """\
id,first,last,email,phone,consent,at
1,Ann,Lee,ann@example.com,,,
2,Bo,Kim,bo@example.com,+49 151 23456789,,
"""


@pytest.fixture
def shop(spec):
    clock = WallClock()
    fake = FakeShopify(shop="acme.myshopify.com", token=TOKEN, validator=spec, clock=clock, bulk_seconds=0)
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="acme.myshopify.com").mock(side_effect=fake.transport.handle_request)
        mock.route(host="storage.googleapis.com").mock(side_effect=fake.transport.handle_request)
        yield fake
    assert fake.violations == []


def _golden_with(hub, email: str) -> dict:
    found = [g for g in rows(hub.store, st.golden_t, st.golden_t.c.status == "active") if email in g["data"].get("emails", [])]
    assert len(found) == 1, found
    return found[0]


def test_shop_and_crm_become_one_view_with_purchases(shop: FakeShopify, tmp_path: Path, store_url: str) -> None:
    ann = shop.add_customer(firstName="Ann", lastName="Lee", email="ann@example.com",
                            emailMarketingConsent={"marketingState": "SUBSCRIBED", "marketingOptInLevel": "SINGLE_OPT_IN",
                                                   "consentUpdatedAt": "2024-01-01T00:00:00Z"})
    bo = shop.add_customer(firstName="Bo", lastName="Kim", phone="+4915123456789")  # no e-mail: matched by phone
    cy = shop.add_customer(firstName="Cy", lastName="Ott")  # nothing to match by: kept apart
    first = shop.add_order(ann, total="100.00", processed_at="2024-02-01T10:00:00Z",
                           line_items=[{"title": "Tee", "sku": "T1", "quantity": 2, "price": "50.00"}])
    shop.add_order(ann, presentment_currency="CHF", total="50.00", shop_total="52.10", processed_at="2024-03-01T10:00:00Z")
    shop.add_order(bo, total="20.00", processed_at="2024-02-15T10:00:00Z", cancelled=True)
    shop.add_order(None, total="9.00")  # a guest order: kept, belongs to nobody
    cfg = write_config(tmp_path, CONFIG, store_url, crm__csv=CRM)
    (tmp_path / "mappings" / "crm_people.yaml").write_text(CRM_PEOPLE, encoding="utf-8")
    hub = hub_for(cfg, {"SHOPIFY_TOKEN": TOKEN})

    summaries = hub.sync(["shop", "crm"])
    assert all(s.status == "succeeded" for s in summaries), [(s.connection, s.status, s.error, [(r["ref"], r["field"], r["reason"]) for r in rows(hub.store, st.rejected_t)]) for s in summaries]
    assert shop.calls("bulkOperationRunQuery") == 2  # the first full read of each stream

    g_ann = _golden_with(hub, "ann@example.com")
    p = g_ann["data"]["purchases"]
    assert p["orders_count"] == 2 and p["currency"] == "EUR" and Decimal(p["total_spent"]) == Decimal("152.10")
    assert Decimal(p["by_currency"]["CHF"]["total_spent"]) == Decimal("50.00")
    assert g_ann["provenance"]["purchases"]["rule"] == "derived from orders"
    assert len(hub.store.source_records_of(g_ann["id"])) == 2  # Shopify + CRM
    g_bo = _golden_with(hub, "bo@example.com")
    assert {s["connection"] for s in hub.store.source_records_of(g_bo["id"])} == {"shop", "crm"}
    # Bo's only order was cancelled: it is on his timeline, in no total.
    assert g_bo["data"]["purchases"] == {"orders_count": 0}
    assert [t["data"]["status"] for t in hub.store.timeline_of(g_bo["id"])] == ["cancelled"]
    active = rows(hub.store, st.golden_t, st.golden_t.c.status == "active")
    assert sum(g["data"].get("first_name") == "Cy" for g in active) == 1
    assert len(active) == 3

    # The CRM records an opt-out; the shop refunds part of Ann's first order (now, not in setup).
    shop.clock.advance(60_000)
    (tmp_path / "data" / "crm.csv").write_text(CRM.replace("1,Ann,Lee,ann@example.com,,,", "1,Ann,Lee,ann@example.com,,unsubscribed,2025-05-01T00:00:00Z"),
                                               encoding="utf-8")
    shop.update_order(first, total="60.00", financial_status="PARTIALLY_REFUNDED")
    shop.delete_customer(cy)
    time.sleep(1.1)  # the shop's clock is the wall clock; settle_seconds is 0
    summaries = hub.sync(["crm", "shop"])
    assert all(s.status == "succeeded" for s in summaries), [(s.connection, s.status, s.error) for s in summaries]
    assert shop.calls("bulkOperationRunQuery") == 2  # incremental runs page
    assert (ann, "UNSUBSCRIBED") in shop.consent_log
    g_ann = _golden_with(hub, "ann@example.com")
    assert Decimal(g_ann["data"]["purchases"]["total_spent"]) == Decimal("112.10")
    gone = [g for g in rows(hub.store, st.golden_t) if g["status"] == "deleted"]
    assert len(gone) == 1 and gone[0]["data"].get("first_name") is None  # Cy's data left the hub

    # An unchanged re-run writes nothing to Shopify.
    time.sleep(1.1)
    before = len([r for r in shop.requests if b"mutation" in r.content[:20]])
    hub.sync(["shop"])
    after = len([r for r in shop.requests if b"mutation" in r.content[:20]])
    assert after == before
