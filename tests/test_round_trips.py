"""Two-way sync without echoes, through the three vendors' fakes (issue 21): HubSpot, Mailchimp and
Shopify each read and written by the hub. Unchanged round trips make zero writes on every one of
them; a change made in one tool reaches the others once and comes back to none. Every request is
validated against the vendor's spec by its fake."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from plugins.hubspot.tests.fake_hubspot import FakeHubSpot
from plugins.mailchimp.tests.fake_mailchimp import FakeMailchimp
from plugins.shopify.tests.fake_shopify import FakeShopify
from tests.helpers import hub_for, vendor_fakes, write_config

HS_TOKEN = "pat-na1-roundtrip-secret-token"
MC_KEY = "0123456789abcdef0123456789abcdef-us6"
SHOP_TOKEN = "shpat_roundtrip_secret_token_0123456789"
LIST = "aud1"

CONFIG = f"""
connections:
  crm:
    connector: hubspot
    direction: both
    settings: {{token: "${{HS_TOKEN}}"}}
    streams:
      contacts:
        mapping: hubspot_contacts
        write_mapping: hubspot_contacts_out
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
    direction: both
    settings: {{shop: acme, access_token: "${{SHOP_TOKEN}}"}}
    streams:
      customers:
        mapping: shopify_customers
        write_mapping: shopify_customers_out
        settings: {{resource: customers, settle_seconds: 0, lookback_seconds: 0, bulk_poll_seconds: 0.01,
                   owned_fields: [firstName, lastName]}}
match:
  person: {{keys: [email]}}
"""


def _hubspot_writes(fake: FakeHubSpot) -> list[str]:
    reads = ("/search", "/batch/read")
    return [f"{r.method} {r.url.path}" for r in fake.requests
            if r.method != "GET" and not r.url.path.endswith(reads)]


def _mailchimp_writes(fake: FakeMailchimp) -> list[str]:
    return [f"{r.method} {r.url.path}" for r in fake.requests if r.method != "GET"]


def _shopify_writes(fake: FakeShopify) -> list[str]:
    out = []
    for r in fake.requests:
        if r.method == "POST" and r.url.path.endswith("graphql.json"):
            query = json.loads(r.content).get("query", "")
            if query.lstrip().startswith("mutation") and "bulkOperationRunQuery" not in query:
                out.append(query.split("(")[0].split("{")[0].strip())
    return out


@pytest.fixture
def tools(tmp_path: Path, store_url: str):
    with vendor_fakes(HS_TOKEN, MC_KEY, SHOP_TOKEN, LIST) as (hubspot, mailchimp, shopify):
        for email, first, last in [("ann@example.com", "Ann", "Lee"), ("bob@example.com", "Bob", "Roe")]:
            hubspot.add("contacts", {"email": email, "firstname": first, "lastname": last, "lifecyclestage": "customer"})
            mailchimp.add_member(LIST, email, merge_fields={"FNAME": first, "LNAME": last})
            shopify.add_customer(email=email, firstName=first, lastName=last)
        hub = hub_for(write_config(tmp_path, CONFIG, store_url),
                      {"HS_TOKEN": HS_TOKEN, "MC_KEY": MC_KEY, "SHOP_TOKEN": SHOP_TOKEN})
        yield hub, hubspot, mailchimp, shopify
        hub.store.dispose()


def _sync(hub) -> None:  # type: ignore[no-untyped-def]
    runs = hub.sync()
    assert all(s.status == "succeeded" for s in runs), [(s.connection, s.direction, s.status, s.error) for s in runs]


def test_unchanged_round_trips_write_nothing_anywhere(tools) -> None:
    hub, hubspot, mailchimp, shopify = tools
    _sync(hub)
    # The first sync only adds what another tool knows (HubSpot learns the newsletter status from
    # Mailchimp); nothing a tool delivered goes back to it.
    sent = [json.loads(r.content) for r in hubspot.requests if r.url.path.endswith("/batch/update")]
    assert {k for body in sent for i in body["inputs"] for k in i["properties"]} <= {"synchub_email_status"}
    first = (len(_hubspot_writes(hubspot)), len(_mailchimp_writes(mailchimp)), len(_shopify_writes(shopify)))
    for _ in range(3):
        time.sleep(1.1)  # each tool could deliver what the first sync wrote
        _sync(hub)
    assert (len(_hubspot_writes(hubspot)), len(_mailchimp_writes(mailchimp)), len(_shopify_writes(shopify))) == first


def test_a_change_in_one_tool_reaches_the_others_once_and_comes_back_to_none(tools) -> None:
    hub, hubspot, mailchimp, shopify = tools
    _sync(hub)
    time.sleep(1.1)
    _sync(hub)  # settled (see above)
    hs_writes = len(_hubspot_writes(hubspot))
    [ann] = [c for c in hubspot.all("contacts") if c["properties"]["email"] == "ann@example.com"]
    hubspot.clock.advance(60_000)  # (setup happened a minute ago; this is now)
    hubspot.update("contacts", ann["id"], {"lastname": "Lee-Smith"})
    time.sleep(1.1)  # Mailchimp and Shopify read whole seconds up to now
    before = (len(_mailchimp_writes(mailchimp)), len(_shopify_writes(shopify)))
    _sync(hub)
    assert len(_hubspot_writes(hubspot)) == hs_writes  # not echoed back to where it was made
    assert mailchimp.member(LIST, "ann@example.com")["merge_fields"]["LNAME"] == "Lee-Smith"
    mc_writes, shop_writes = len(_mailchimp_writes(mailchimp)), len(_shopify_writes(shopify))
    shop_ann = next(c for c in shopify.customers.values() if c["email"] == "ann@example.com")
    assert shop_ann["lastName"] == "Lee-Smith"
    time.sleep(1.1)
    for _ in range(2):  # Mailchimp and Shopify now deliver the change back: no ping-pong
        _sync(hub)
    assert len(_hubspot_writes(hubspot)) == hs_writes
    assert (len(_mailchimp_writes(mailchimp)), len(_shopify_writes(shopify))) == (mc_writes, shop_writes)
    assert mc_writes > before[0] and shop_writes > before[1]  # (each got the change, once)


def test_fakes_answer_like_the_vendors(tools) -> None:
    """The helpers above count what they should: a write the hub sends shows up in them."""
    _hub, hubspot, _mailchimp, _shopify = tools
    with httpx.Client(base_url="https://api.hubapi.com", headers={"Authorization": f"Bearer {HS_TOKEN}"}) as client:
        client.post("/crm/v3/objects/contacts/batch/update", json={"inputs": []})
    assert _hubspot_writes(hubspot) == ["POST /crm/v3/objects/contacts/batch/update"]
