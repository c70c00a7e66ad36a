"""Erasure end to end through the fakes of all three vendors and a file export (issue 20): the
person is gone from the hub and the export, each vendor received a valid erasure request (every
request is validated against the vendor's spec by its fake), a later sync that sees the person
again does not re-create them, and the receipts say what each connection answered."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from plugins.hubspot.tests.fake_hubspot import FakeHubSpot
from plugins.mailchimp.tests.fake_mailchimp import FakeMailchimp, subscriber_hash
from plugins.shopify.tests.fake_shopify import FakeShopify
from synchub import privacy
from tests.helpers import hub_for, vendor_fakes, write_config

HS_TOKEN = "pat-na1-erasure-secret-token"
MC_KEY = "abcdefabcdefabcdefabcdefabcdef12-us6"
SHOP_TOKEN = "shpat_erasure_secret_token_0123456789"
LIST = "aud1"
SALT = "vendor-erasure-test-salt-0123"

CONFIG = f"""
connections:
  crm:
    connector: hubspot
    settings: {{token: "${{HS_TOKEN}}"}}
    streams:
      contacts:
        mapping: hubspot_contacts
        settings: {{index_lag_seconds: 0, lookback_seconds: 0, archived_sweep_hours: null}}
  mc:
    connector: mailchimp
    direction: both
    settings: {{api_key: "${{MC_KEY}}"}}
    streams:
      newsletter:
        mapping: mailchimp_members
        write_mapping: mailchimp_members_out
        settings: {{list_id: {LIST}, settle_seconds: 0, lookback_seconds: 0}}
  shop:
    connector: shopify
    settings: {{shop: acme, access_token: "${{SHOP_TOKEN}}"}}
    streams:
      customers:
        mapping: shopify_customers
        settings: {{resource: customers, settle_seconds: 0, lookback_seconds: 0, bulk_poll_seconds: 0.01}}
  export:
    connector: files
    direction: out
    settings: {{path: out}}
    streams:
      customers: {{mapping: export_customers, settings: {{file: customers.csv}}}}
match:
  person: {{keys: [email]}}
privacy:
  salt: "{SALT}"
"""


@pytest.fixture
def vendors():
    with vendor_fakes(HS_TOKEN, MC_KEY, SHOP_TOKEN, LIST) as fakes:
        yield fakes


def _people(hubspot: FakeHubSpot, mailchimp: FakeMailchimp, shopify: FakeShopify) -> tuple[str, str]:
    for email, first, last in [("ann@example.com", "Ann", "Lee"), ("bob@example.com", "Bob", "Roe")]:
        hubspot.add("contacts", {"email": email, "firstname": first, "lastname": last, "lifecyclestage": "customer"})
        mailchimp.add_member(LIST, email, merge_fields={"FNAME": first, "LNAME": last})
    ann_shop = shopify.add_customer(email="ann@example.com", firstName="Ann", lastName="Lee")
    shopify.add_customer(email="bob@example.com", firstName="Bob", lastName="Roe")
    [ann_crm] = [c["id"] for c in hubspot.all("contacts") if c["properties"]["email"] == "ann@example.com"]
    return str(ann_crm), ann_shop


def test_erasure_reaches_every_vendor_and_the_export_and_holds(vendors, tmp_path: Path, store_url: str) -> None:
    hubspot, mailchimp, shopify = vendors
    ann_crm, ann_shop = _people(hubspot, mailchimp, shopify)
    cfg = write_config(tmp_path, CONFIG, store_url)
    hub = hub_for(cfg, {"HS_TOKEN": HS_TOKEN, "MC_KEY": MC_KEY, "SHOP_TOKEN": SHOP_TOKEN})
    first = hub.sync()
    assert all(s.status == "succeeded" for s in first), [(s.connection, s.status, s.error) for s in first]
    export = tmp_path / "out" / "customers.csv"
    assert "ann@example.com" in export.read_text(encoding="utf-8-sig")

    plan = privacy.erase(hub, "ann@example.com", actor="user:test")
    assert {(c, s) for c, s, _ in plan.sources} == {("crm", "contacts"), ("mc", "newsletter"), ("shop", "customers")}
    # Each vendor received its own erasure request (validated against its spec by the fake).
    assert hubspot.gdpr_deleted == [ann_crm]
    assert all(c["properties"]["email"] != "ann@example.com" for c in hubspot.all("contacts"))
    assert mailchimp.member(LIST, "ann@example.com") is None
    assert any(r.method == "POST" and r.url.path.endswith(
        f"/lists/{LIST}/members/{subscriber_hash('ann@example.com')}/actions/delete-permanent") for r in mailchimp.requests)
    assert shopify.erasure_requests == [ann_shop]
    receipts = {(r["connection"], r["stream"]): r["status"] for r in privacy.erasures(hub)[0]["receipts"]}
    assert receipts == {("crm", "contacts"): "confirmed", ("mc", "newsletter"): "confirmed",
                        ("shop", "customers"): "requested", ("export", "customers"): "pending"}
    assert not hub.store.search_golden("ann@example.com")

    # Shopify has not carried it out yet and Ann edits her shop account, and she signs up in
    # HubSpot again: the next sync sees her in two tools and re-creates her nowhere; the export
    # is rewritten without her.
    shopify.clock.advance(60_000)  # (setup happened a minute ago; this is now)
    shopify.update_customer(ann_shop, lastName="Lee-Smith")
    hubspot.add("contacts", {"email": "ANN@example.com", "firstname": "Ann", "lastname": "Lee"})
    time.sleep(1.1)  # the shop reads whole seconds up to now; its clock is the wall clock
    second = {(s.connection, s.direction): s for s in hub.sync()}
    assert all(s.status == "succeeded" for s in second.values()), [(k, s.error) for k, s in second.items()]
    assert second[("crm", "in")].streams["contacts"].suppressed == 1
    assert second[("shop", "in")].streams["customers"].suppressed == 1
    assert not hub.store.search_golden("ann@example.com")
    assert "ann@example.com" not in export.read_text(encoding="utf-8-sig").lower()
    assert "bob@example.com" in export.read_text(encoding="utf-8-sig")
    # Nothing wrote her back to Mailchimp.
    assert mailchimp.member(LIST, "ann@example.com") is None
    receipts = {(r["connection"], r["stream"]): r["status"] for r in privacy.erasures(hub)[0]["receipts"]}
    assert receipts[("export", "customers")] == "confirmed"
    # Shopify carries the request out; Bob is untouched everywhere.
    assert shopify.complete_erasures() == [ann_shop]
    assert hub.store.search_golden("bob@example.com")
    hub.store.dispose()


def test_a_vendor_that_fails_is_asked_again_on_its_next_run(vendors, tmp_path: Path, store_url: str) -> None:
    hubspot, mailchimp, shopify = vendors
    ann_crm, _ = _people(hubspot, mailchimp, shopify)
    cfg = write_config(tmp_path, CONFIG, store_url)
    hub = hub_for(cfg, {"HS_TOKEN": HS_TOKEN, "MC_KEY": MC_KEY, "SHOP_TOKEN": SHOP_TOKEN})
    hub.sync()
    # The private app's token lacks the scope the GDPR delete needs (fixed before the next run).
    hubspot.fail_next(1, status=403, path="gdpr-delete")
    privacy.erase(hub, "ann@example.com", actor="user:test")
    crm = next(r for r in privacy.erasures(hub)[0]["receipts"] if r["connection"] == "crm")
    assert crm["status"] == "failed" and crm["targets"] == 1
    assert HS_TOKEN not in (crm["detail"] or "") and "ann@example.com" not in (crm["detail"] or "")
    assert hubspot.gdpr_deleted == []
    assert "crm.objects.contacts.write" in crm["detail"]
    hub.sync(["crm"])
    crm = next(r for r in privacy.erasures(hub)[0]["receipts"] if r["connection"] == "crm")
    assert crm["status"] == "confirmed" and crm["attempts"] == 2
    assert hubspot.gdpr_deleted == [ann_crm]
    hub.store.dispose()
