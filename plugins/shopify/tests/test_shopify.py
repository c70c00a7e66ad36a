"""Shopify connector scenarios against the fake Shopify (every request validated against the
Admin GraphQL schema): cost throttling, bulk reads and their failures, the pagination cap,
deletions, orders in another currency, and consent-safe writes."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from decimal import Decimal

import httpx
import pytest

import synchub_shopify
from plugins.shopify.tests.conftest import http_factory, make_connector
from plugins.shopify.tests.fake_shopify import FakeShopify
from synchub.connector import Checkpoint, OutRecord, Reconcile, Record
from synchub.testing import read_all
from synchub_shopify import bulk_nodes


def _people(fake: FakeShopify, n: int, step_ms: int = 1100, **extra) -> list[str]:
    gids = []
    for _ in range(n):
        i = len(fake.customers) + len(fake.deleted_customers)
        gids.append(fake.add_customer(firstName=f"P{i}", lastName="Test", email=f"p{i}@example.com", **extra))
        fake.clock.advance(step_ms)
    fake.clock.advance(2000)
    return gids


def _own_fake(spec, monkeypatch: pytest.MonkeyPatch, **kw) -> FakeShopify:
    fake = FakeShopify(validator=spec, **kw)
    monkeypatch.setattr(synchub_shopify, "now", lambda: datetime.fromtimestamp(fake.clock() / 1000, timezone.utc))
    return fake


def _read(fake: FakeShopify, state=None, factory=None, **stream):
    conn = make_connector(fake, streams={"customers": stream}, factory=factory)
    return read_all(conn.streams()["customers"], state)


# --------------------------------------------------------------------------- throttling


def test_throttled_inside_a_200_mid_read_is_waited_out(fake: FakeShopify) -> None:
    _people(fake, 25)
    factory = http_factory(fake)
    sent = {"n": 0}

    def throttle_second_page(request: httpx.Request) -> httpx.Response:
        sent["n"] += 1
        if sent["n"] == 2:
            # Another app on the shop spends the whole budget: the next query is THROTTLED in
            # a 200, with throttleStatus saying how fast points come back.
            fake._available, fake._bucket_at = 0.0, fake.now()
        return fake.transport.handle_request(request)

    factory.transport = httpx.MockTransport(throttle_second_page)
    before = fake.clock()
    records, _rej, cps, _ = _read(fake, factory=factory, page_size=10)
    assert len({r.data["id"] for r in records}) == 25
    assert fake.throttled == 1
    assert fake.calls("customers") == 4  # 3 pages, one of them sent twice
    assert fake.clock() - before >= 500  # it waited for the restore rate (on the fake's clock)
    assert cps


def test_the_cost_budget_is_spent_without_being_throttled(spec, monkeypatch: pytest.MonkeyPatch) -> None:
    """A small bucket: the connector reads throttleStatus and waits for the restore rate before
    it runs dry, so Shopify never has to throttle it."""
    fake = _own_fake(spec, monkeypatch, bucket_size=200, restore_rate=10)
    _people(fake, 60, step_ms=1000)
    before = fake.clock()
    records, *_ = _read(fake, page_size=10)
    assert len(records) == 60
    assert fake.throttled == 0
    assert fake.clock() - before >= 1000  # 6 pages of ~52 points from 200 at 10/s: it waited
    assert fake.violations == []


# --------------------------------------------------------------------------- bulk operations


def test_first_read_is_a_bulk_operation_then_incremental_pages(fake: FakeShopify) -> None:
    _people(fake, 30)
    records, _rej, cps, items = _read(fake, bulk="first_read")
    assert len(records) == 30 and fake.calls("bulkOperationRunQuery") == 1
    assert fake.calls("customers") == 0  # no paging
    assert isinstance(items[-1], Checkpoint) and "bulk" not in cps[-1].state
    fake.update_customer(records[0].data["id"], firstName="Changed")
    fake.clock.advance(3000)
    again, *_ = _read(fake, cps[-1].state, bulk="first_read")
    assert [r.data["firstName"] for r in again] == ["Changed"]
    assert fake.calls("bulkOperationRunQuery") == 1 and fake.calls("customers") == 1


def test_a_window_over_the_threshold_goes_bulk(fake: FakeShopify) -> None:
    _people(fake, 5)
    _rec, _rej, cps, _ = _read(fake, bulk="first_read")
    _people(fake, 12)
    records, *_ = _read(fake, cps[-1].state, bulk="first_read", bulk_threshold=10)
    assert len(records) == 12 and fake.calls("bulkOperationRunQuery") == 2


def test_orders_in_bulk_bring_their_line_items(fake: FakeShopify) -> None:
    ann = fake.add_customer(firstName="Ann", email="ann@example.com")
    fake.add_order(ann, line_items=[{"title": "Tee", "sku": "T1", "quantity": 2, "price": "10.00"},
                                    {"title": "Mug", "sku": "M1", "quantity": 1, "price": "5.00"}], total="25.00")
    fake.add_order(None, line_items=[{"title": "Cap", "quantity": 1, "price": "9.00"}], total="9.00")  # a guest
    fake.clock.advance(3000)
    conn = make_connector(fake, streams={"orders": {"resource": "orders", "bulk": "always"}})
    records, *_ = read_all(conn.streams()["orders"], None)
    by_customer = {r.data["customer_id"]: r.data for r in records}
    assert sorted(i["product"] for i in by_customer[ann]["items"]) == ["Mug", "Tee"]
    assert by_customer[None]["items"][0]["product"] == "Cap"


@pytest.mark.parametrize("fault", ["failed", "expired", "link_expired"])
def test_a_failed_or_expired_bulk_operation_is_run_again(fake: FakeShopify, fault: str) -> None:
    _people(fake, 8)
    if fault == "failed":
        fake.fail_bulk("INTERNAL_SERVER_ERROR", partial_lines=3)
    elif fault == "expired":
        fake.expire_next_bulk()
    factory = http_factory(fake)
    if fault == "link_expired":
        first = {"done": False}

        def expire_once(request: httpx.Request) -> httpx.Response:
            if request.url.host == "storage.googleapis.com" and not first["done"]:
                first["done"] = True
                fake.expire_bulk_files()
            return fake.transport.handle_request(request)

        factory.transport = httpx.MockTransport(expire_once)
    records, *_ = _read(fake, factory=factory, bulk="always", bulk_retries=1)
    assert len({r.data["id"] for r in records}) == 8  # the partial file was not used: no half reads
    assert fake.calls("bulkOperationRunQuery") == 2


def test_bulk_gives_up_after_its_retries_and_pages(fake: FakeShopify) -> None:
    _people(fake, 8)
    fake.fail_bulk("TIMEOUT")
    fake.fail_bulk("TIMEOUT")
    records, *_ = _read(fake, bulk="always", bulk_retries=1)
    assert len(records) == 8
    assert fake.calls("bulkOperationRunQuery") == 2 and fake.calls("customers") >= 1


def test_a_run_that_stops_during_a_bulk_operation_picks_it_up(fake: FakeShopify) -> None:
    _people(fake, 6)
    stream = make_connector(fake, streams={"customers": {"bulk": "always"}}).streams()["customers"]
    items = stream.read(None)
    first = next(items)
    assert isinstance(first, Checkpoint) and first.state["bulk"]["id"]
    items.close()  # the run stops (crash, shutdown) while Shopify runs the operation
    records, *_ = read_all(stream, first.state)
    assert len(records) == 6 and fake.calls("bulkOperationRunQuery") == 1


def test_bulk_file_parents_get_their_children_wherever_they_are(tmp_path) -> None:
    path = tmp_path / "r.jsonl"
    lines = [{"id": "O1"}, {"id": "O2"}, {"title": "a", "__parentId": "O1"}, {"title": "b", "__parentId": "O2"},
             {"title": "c", "__parentId": "O1"}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    got = {p["id"]: [c["title"] for c in kids] for p, kids in bulk_nodes(str(path))}
    assert got == {"O1": ["a", "c"], "O2": ["b"]}


def test_paging_past_the_cap_restarts_the_query(spec, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _own_fake(spec, monkeypatch, pagination_cap=30)
    _people(fake, 75)
    records, *_ = _read(fake, page_size=10, restart_after=20)
    assert {r.data["id"] for r in records} == set(fake.customers)
    assert fake.violations == []


# --------------------------------------------------------------------------- deletions


def test_reconciliation_lists_what_shopify_still_holds(fake: FakeShopify) -> None:
    gids = _people(fake, 4)
    fake.delete_customer(gids[1])
    fake.redact_customer(gids[2])
    _rec, _rej, _cps, items = _read(fake, reconcile_hours=24)
    [rec] = [i for i in items if isinstance(i, Reconcile)]
    assert rec.ids == {gids[0], gids[3]}
    assert isinstance(items[-1], Checkpoint) and items[-1].state["reconciled_at"]
    # Not again within the day.
    _r, _j, _c, again = _read(fake, items[-1].state, reconcile_hours=24)
    assert not any(isinstance(i, Reconcile) for i in again)


def test_a_redacted_customer_arrives_erased(fake: FakeShopify) -> None:
    gid = fake.add_customer(firstName="Ann", email="ann@example.com")
    fake.clock.advance(2000)
    _rec, _rej, cps, _ = _read(fake)
    fake.update_customer(gid, emailMarketingConsent={"marketingState": "REDACTED", "marketingOptInLevel": None, "consentUpdatedAt": None})
    fake.clock.advance(3000)
    [rec], *_ = _read(fake, cps[-1].state)
    assert rec.deleted and set(rec.data) == {"id", "updatedAt"}


# --------------------------------------------------------------------------- orders


def test_an_order_in_another_currency_keeps_both_amounts(fake: FakeShopify) -> None:
    ann = fake.add_customer(firstName="Ann", email="ann@example.com")
    fake.add_order(ann, presentment_currency="CHF", total="50.00", shop_total="52.10")
    fake.clock.advance(3000)
    conn = make_connector(fake, streams={"orders": {"resource": "orders"}})
    [order], *_ = read_all(conn.streams()["orders"], None)
    d = order.data
    assert (Decimal(d["total"]), d["currency"], Decimal(d["shop_total"]), d["shop_currency"]) == (
        Decimal("50.00"), "CHF", Decimal("52.10"), "EUR")


# --------------------------------------------------------------------------- writes


def _out(gid, golden="g1", previous=None, **data) -> OutRecord:
    return OutRecord(golden_id=golden, data=data, external_id=gid, previous=previous)


def test_an_unsubscribe_made_in_shopify_is_never_undone(fake: FakeShopify) -> None:
    gid = fake.add_customer(firstName="Eve", email="eve@example.com",
                            emailMarketingConsent={"marketingState": "UNSUBSCRIBED", "marketingOptInLevel": "SINGLE_OPT_IN",
                                                   "consentUpdatedAt": "2025-01-01T00:00:00Z"})
    stream = make_connector(fake, streams={"customers": {}}).streams()["customers"]
    consent = {"status": "subscribed", "method": "form", "at": "2025-02-01T00:00:00Z"}
    [res] = list(stream.write([_out(gid, email="eve@example.com", consent=consent)], []))
    assert res.ok and res.skipped and res.attention is not None and res.attention.kind == "needs_reoptin"
    assert fake.consent_log == []
    # With reoptin: pending, a newer opt-in from the person asks again, never SUBSCRIBED.
    stream = make_connector(fake, streams={"customers": {"reoptin": "pending"}}).streams()["customers"]
    [res] = list(stream.write([_out(gid, email="eve@example.com", consent=consent)], []))
    assert res.ok and fake.consent_log == [(gid, "PENDING")]
    # An older or imported opt-in never asks.
    stream = make_connector(fake, streams={"customers": {"reoptin": "pending"}}).streams()["customers"]
    fake.consent_log.clear()
    fake.update_customer(gid, emailMarketingConsent={"marketingState": "UNSUBSCRIBED", "marketingOptInLevel": "SINGLE_OPT_IN",
                                                     "consentUpdatedAt": "2025-03-01T00:00:00Z"})
    [res] = list(stream.write([_out(gid, email="eve@example.com", consent={**consent, "method": "import"})], []))
    assert res.skipped and fake.consent_log == []


def test_an_opt_out_in_the_hub_unsubscribes_and_documented_consent_subscribes(fake: FakeShopify) -> None:
    sub = fake.add_customer(email="a@example.com", emailMarketingConsent={"marketingState": "SUBSCRIBED", "marketingOptInLevel": "SINGLE_OPT_IN", "consentUpdatedAt": "2025-01-01T00:00:00Z"})
    new = fake.add_customer(email="b@example.com", emailMarketingConsent={"marketingState": "NOT_SUBSCRIBED", "marketingOptInLevel": None, "consentUpdatedAt": None})
    shy = fake.add_customer(email="c@example.com", emailMarketingConsent={"marketingState": "NOT_SUBSCRIBED", "marketingOptInLevel": None, "consentUpdatedAt": None})
    stream = make_connector(fake).streams()["customers"]
    results = list(stream.write([
        _out(sub, "g1", email="a@example.com", consent={"status": "unsubscribed", "at": "2025-02-01T00:00:00Z"}),
        _out(new, "g2", email="b@example.com", consent={"status": "subscribed", "method": "double_opt_in", "at": "2025-02-01T00:00:00Z"}),
        _out(shy, "g3", email="c@example.com", consent={"status": "subscribed", "method": "import", "at": "2025-02-01T00:00:00Z"}),
    ], []))
    assert all(r.ok for r in results)
    assert sorted(fake.consent_log) == sorted([(sub, "UNSUBSCRIBED"), (new, "SUBSCRIBED")])
    assert fake.customers[new]["emailMarketingConsent"]["marketingOptInLevel"] == "CONFIRMED_OPT_IN"


def test_tags_and_owned_fields(fake: FakeShopify) -> None:
    gid = fake.add_customer(firstName="Ann", lastName="Lee", email="ann@example.com", tags=["vip-by-staff", "old-hub-tag"])
    stream = make_connector(fake, streams={"customers": {"owned_fields": ["firstName"], "tags": ["synchub"]}}).streams()["customers"]
    prev = {"tags": ["old-hub-tag"], "firstName": "Ann", "lastName": "Lee"}
    [res] = list(stream.write([_out(gid, previous=prev, email="ann@example.com", firstName="Anna", lastName="Leigh",
                                    tags=["newsletter"])], []))
    assert res.ok
    c = fake.customers[gid]
    assert set(c["tags"]) == {"vip-by-staff", "newsletter", "synchub"}  # someone else's tag stays
    assert c["firstName"] == "Anna" and c["lastName"] == "Lee"  # lastName is not owned by the hub
    # Unchanged: nothing sent.
    n = len(fake.requests)
    [res] = list(stream.write([_out(gid, previous={"tags": ["newsletter"], "firstName": "Anna"}, email="ann@example.com",
                                    firstName="Anna", tags=["newsletter"])], []))
    assert res.ok and len(fake.requests) == n + 1  # only the read of what Shopify holds


def test_a_refused_change_is_a_final_rejection_of_that_record_only(fake: FakeShopify) -> None:
    fake.add_customer(email="taken@example.com", phone="+4915111111111")
    a = fake.add_customer(email="a@example.com")
    b = fake.add_customer(email="b@example.com")
    stream = make_connector(fake, streams={"customers": {"owned_fields": ["phone", "firstName"]}}).streams()["customers"]
    r1, r2 = stream.write([_out(a, "g1", email="a@example.com", phone="+4915111111111"),
                           _out(b, "g2", email="b@example.com", firstName="Bea")], [])
    assert not r1.ok and r1.final and "taken" in (r1.error or "")
    assert r2.ok and fake.customers[b]["firstName"] == "Bea"


def test_customers_the_shop_does_not_hold_are_created_only_when_configured(fake: FakeShopify) -> None:
    stream = make_connector(fake).streams()["customers"]
    [res] = list(stream.write([_out(None, email="new@example.com", firstName="New")], []))
    assert res.ok and res.skipped and not fake.customers
    stream = make_connector(fake, streams={"customers": {"create_customers": True, "owned_fields": ["firstName"]}}).streams()["customers"]
    [res] = list(stream.write([_out(None, email="new@example.com", firstName="New")], []))
    assert res.ok and res.external_id in fake.customers
    # A second create for the same address (its first answer lost) finds the customer instead.
    [again] = list(stream.write([_out(None, email="new@example.com", firstName="New")], []))
    assert again.external_id == res.external_id and len(fake.customers) == 1


def test_a_create_that_finds_the_address_in_the_shop_keeps_its_unsubscribe(fake: FakeShopify) -> None:
    """A customer made in the shop (the hub has no id for them) unsubscribed there; the hub, from
    another source, says subscribed: the write takes the existing customer and never re-subscribes."""
    gid = fake.add_customer(firstName="Eve", email="eve@example.com",
                            emailMarketingConsent={"marketingState": "UNSUBSCRIBED", "marketingOptInLevel": "SINGLE_OPT_IN",
                                                   "consentUpdatedAt": "2025-01-01T00:00:00Z"})
    stream = make_connector(fake, streams={"customers": {"create_customers": True, "owned_fields": ["firstName"]}}).streams()["customers"]
    consent = {"status": "subscribed", "method": "double_opt_in", "at": "2025-02-01T00:00:00Z"}
    [res] = list(stream.write([_out(None, email="EVE@example.com", firstName="Eve", consent=consent)], []))
    assert res.ok and res.external_id == gid and len(fake.customers) == 1
    assert fake.customers[gid]["emailMarketingConsent"]["marketingState"] == "UNSUBSCRIBED"
    assert fake.consent_log == []
    assert res.attention is not None and res.attention.kind == "needs_reoptin"


def test_dry_run_plans_without_writing(fake: FakeShopify) -> None:
    gid = fake.add_customer(email="a@example.com", emailMarketingConsent={"marketingState": "SUBSCRIBED", "marketingOptInLevel": "SINGLE_OPT_IN", "consentUpdatedAt": "2025-01-01T00:00:00Z"})
    stream = make_connector(fake).streams()["customers"]
    [plan] = list(stream.plan([_out(gid, email="a@example.com", consent={"status": "unsubscribed"}, tags=["x"])], []))
    assert plan.action == "update" and plan.changes["emailMarketingConsent"] == ("SUBSCRIBED", "UNSUBSCRIBED")
    assert fake.consent_log == [] and fake.customers[gid]["tags"] == []
    assert all(json.loads(r.content)["query"].startswith("query") for r in fake.requests)


def test_records_read_are_mapped_for_the_hub(fake: FakeShopify) -> None:
    fake.add_customer(firstName="Ann", email="ann@example.com",
                      emailMarketingConsent={"marketingState": "SUBSCRIBED", "marketingOptInLevel": "CONFIRMED_OPT_IN", "consentUpdatedAt": "2025-01-01T00:00:00Z"},
                      addresses=[{"address1": "Hauptstr. 1", "zip": "10115", "city": "Berlin", "countryCodeV2": "DE"}])
    fake.clock.advance(2000)
    [rec], *_ = _read(fake)
    assert isinstance(rec, Record)
    assert rec.data["email_consent"]["status"] == "subscribed" and rec.data["email_consent"]["method"] == "double_opt_in"
    assert rec.data["defaultAddress"]["zip"] == "10115"
