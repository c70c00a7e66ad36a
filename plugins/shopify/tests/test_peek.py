"""Dry runs against what Shopify holds now (issue 21): ``ShopifyStream.peek`` reads customers by
id (``nodes``) and, when the stream may create customers, by e-mail (aliased ``customers``
searches); the plan shows Shopify's values as "before". Every request is executed and validated
against the Admin schema by the fake (see conftest); a dry run sends no mutation.
"""

from __future__ import annotations

import json
from pathlib import Path

from plugins.shopify.tests.conftest import TOKEN, http_factory, make_connector
from plugins.shopify.tests.fake_shopify import FakeShopify
from synchub.config import load_config
from synchub.connector import OutRecord
from synchub.engine import Hub
from tests.helpers import write_config

#: People come from a shop export; Shopify is only written (the hub never read nor wrote it).
CONFIG = """
connections:
  export:
    connector: files
    direction: in
    settings: {path: data}
    streams:
      customers:
        mapping: shop_kunden
        settings: {pattern: "kunden*.csv", primary_key: Kundennr}
  shop:
    connector: shopify
    direction: out
    settings: {shop: acme, access_token: "${SHOPIFY_TOKEN}"}
    streams:
      customers:
        mapping: shopify_customers_out
        settings: {resource: customers, create_customers: true, owned_fields: [firstName, lastName],
                   tags: [newsletter], reconcile_hours: 0}
match:
  person: {keys: [email]}
"""

KUNDEN = ("Kundennr;Vorname;Nachname;E-Mail\n"
          "K1;Jürgen;Meier;juergen@example.com\n"
          "K2;Cleo;Neu;cleo@example.com\n")


def _mutations(fake: FakeShopify, since: int = 0) -> list[str]:
    return [json.loads(r.content)["query"] for r in fake.requests[since:]
            if not json.loads(r.content)["query"].lstrip().startswith("query")]


def _out(golden: str, gid: str | None = None, previous: dict | None = None, **data: object) -> OutRecord:
    return OutRecord(golden_id=golden, data=data, external_id=gid, previous=previous)


def test_the_dry_run_diffs_against_what_the_shop_holds_now(tmp_path: Path, store_url: str, fake: FakeShopify) -> None:
    """The issue's case for Shopify: a customer the hub never wrote, held as "Juergen" with the
    tag vip, is an update from Shopify's values (vip stays: the hub never removes a tag it did
    not write); an address the shop does not hold is a create."""
    fake.add_customer(email="juergen@example.com", firstName="Juergen", lastName="Meier", tags=["vip"])
    cfg = write_config(tmp_path, CONFIG, store_url, kunden__csv=KUNDEN)
    hub = Hub(load_config(cfg, environ={"SHOPIFY_TOKEN": TOKEN}), http=http_factory(fake))
    hub.store.upgrade()
    hub.run_connection("export", "in")
    plans = {hub.store.get_golden(p.golden_id)["data"]["first_name"]: p for p in hub.plan("shop")["customers"]}
    juergen, cleo = plans["Jürgen"], plans["Cleo"]
    assert juergen.action == "update"
    assert juergen.changes["firstName"] == ("Juergen", "Jürgen")
    assert juergen.changes["tags"] == (["vip"], ["newsletter", "vip"])
    assert "lastName" not in juergen.changes  # Shopify holds it already
    assert cleo.action == "create" and cleo.changes["firstName"] == (None, "Cleo")
    assert _mutations(fake) == [] and fake.consent_log == []
    assert fake.customers[next(iter(fake.customers))]["tags"] == ["vip"]
    # One query looked both addresses up (the schema accepted it: the fake checks every request).
    assert fake.calls("customers") == 1 and fake.violations == []
    # Offline: from the store alone, Jürgen is a create.
    offline = {p.golden_id: p for p in hub.plan("shop", offline=True)["customers"]}[juergen.golden_id]
    assert offline.action == "create"
    assert fake.calls("customers") == 1


def test_known_customers_are_read_by_id_once(fake: FakeShopify) -> None:
    ann = fake.add_customer(email="ann@example.com", firstName="Anne", lastName="Lee", tags=["vip", "hub"],
                            addresses=[{"address1": "Hauptstr. 1", "zip": "50667", "city": "Köln", "countryCode": "DE"}])
    bo = fake.add_customer(email="bo@example.com", firstName="Bo")
    stream = make_connector(fake, streams={"customers": {"owned_fields": ["firstName", "addresses"]}}).streams()["customers"]
    records = [
        # The hub wrote "Ann" and the tag hub before; now it has "Annie" and no tag hub.
        _out("g-ann", ann, {"firstName": "Ann", "tags": ["hub"],
                            "address": {"street": "Hauptstr. 1", "postal_code": "50667", "city": "Köln", "country": "DE"}},
             email="ann@example.com", firstName="Annie", tags=[],
             address={"street": "Hauptstr. 1", "postal_code": "50667", "city": "Köln", "country": "DE"}),
        _out("g-bo", bo, {"firstName": "Bo"}, email="bo@example.com", firstName="Bo"),
        _out("g-gone", "gid://shopify/Customer/987654", email="gone@example.com", firstName="Gone"),
        _out("g-new", None, email="new@example.com", firstName="New"),
    ]
    held = stream.peek(records)
    assert set(held) == {"g-ann", "g-bo"}
    assert held["g-ann"] == {
        "email": "ann@example.com", "firstName": "Anne", "lastName": "Lee", "phone": None, "locale": "en",
        "tags": ["hub", "vip"], "address": {"street": "Hauptstr. 1", "postal_code": "50667", "city": "Köln", "country": "DE"},
        "consent": {"status": "never", "at": None, "method": None},
    }
    for rec in records:
        rec.holds = held.get(rec.golden_id)
    plans = {p.golden_id: p for p in stream.plan(records, [])}
    assert plans["g-ann"].action == "update"
    assert plans["g-ann"].changes == {"firstName": ("Anne", "Annie"), "tags": (["hub", "vip"], ["vip"])}
    assert plans["g-bo"].action == "unchanged"
    assert plans["g-gone"].action == "reject"
    # Without create_customers the write leaves unknown customers alone; nobody is looked up by e-mail.
    assert plans["g-new"].action == "skip"
    # The plan reused what the peek read: one nodes query, no other read.
    assert fake.calls("nodes") == 1 and fake.calls("customers") == 0 and len(fake.requests) == 1
    assert _mutations(fake) == []


def test_many_customers_are_read_in_batches_and_lookups_by_e_mail_are_capped(fake: FakeShopify) -> None:
    gids = [fake.add_customer(email=f"k{i}@example.com", firstName=f"K{i}") for i in range(230)]
    for i in range(40):
        fake.add_customer(email=f"e{i}@example.com", firstName=f"E{i}")
    stream = make_connector(fake, streams={"customers": {"create_customers": True, "owned_fields": ["firstName"]}}).streams()["customers"]
    stream.PEEK_BY_EMAIL = 60  # type: ignore[misc]
    records = [_out(f"k{i}", gid, email=f"k{i}@example.com", firstName="X") for i, gid in enumerate(gids)]
    records += [_out(f"e{i}", None, email=f"E{i}@Example.com", firstName="X") for i in range(70)]
    held = stream.peek(records)
    assert len(held) == 230 + 40
    assert held["k7"]["firstName"] == "K7" and held["e7"]["email"] == "e7@example.com"
    assert fake.calls("nodes") == 3  # 100 + 100 + 30 ids
    assert fake.calls("customers") == 3  # 25 + 25 + 10 addresses; the last 10 are not looked up
    assert "e65" not in held and _mutations(fake) == []
    for rec in records:
        rec.holds = held.get(rec.golden_id)
    plans = {p.golden_id: p for p in stream.plan(records, [])}
    assert plans["e7"].action == "update" and plans["e7"].changes == {"firstName": ("E7", "X")}
    assert plans["e45"].action == "create" and not plans["e45"].reason  # looked up, not held
    assert plans["e65"].action == "create" and "not looked up" in (plans["e65"].reason or "")
    assert fake.calls("nodes") == 3, "the plan asks nothing more"
