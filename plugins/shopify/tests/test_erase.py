"""Erasure of Shopify customers (issue 20): ``customerRequestDataErasure``, against the fake
Shopify that executes every document against the Admin schema and validates every request (the
``fake`` fixture fails a test that sent anything the schema refuses)."""

from __future__ import annotations

import json

import httpx
import pytest

from plugins.shopify.tests.conftest import TOKEN, make_connector
from plugins.shopify.tests.fake_shopify import FakeShopify
from synchub.connector import ErasureResult, ErasureTarget, Reconcile
from synchub.testing import read_all
from synchub_shopify import ERASE_SCOPE

MUTATION = "customerRequestDataErasure"


def erase(fake: FakeShopify, *targets: ErasureTarget, settings: dict | None = None) -> list[ErasureResult]:
    return list(make_connector(fake, settings=settings).streams()["customers"].erase(list(targets)))


def erasure_bodies(fake: FakeShopify) -> list[dict]:
    """The JSON bodies of the erasure requests the fake received, in order."""
    bodies = [json.loads(r.content) for r in fake.requests if r.url.path == fake.graphql_path]
    return [b for b in bodies if MUTATION in b["query"]]


def test_erase_sends_the_mutation_and_is_requested(fake: FakeShopify) -> None:
    ann = fake.add_customer(firstName="Ann", email="ann@example.com")
    bob = fake.add_customer(firstName="Bob", email="bob@example.com")
    target = ErasureTarget("g-ann", external_id=ann, emails=["ann@example.com"])

    [result] = erase(fake, target)

    assert result.status == "requested" and result.target is target
    assert "later" in (result.detail or "") and "ann@" not in (result.detail or "")
    [body] = erasure_bodies(fake)
    assert body["variables"] == {"customerId": ann}
    assert f"{MUTATION}(customerId: $customerId)" in body["query"]
    assert "userErrors { code field message }" in body["query"]
    request = next(r for r in fake.requests if MUTATION in r.content.decode())
    assert request.headers["X-Shopify-Access-Token"] == TOKEN
    assert fake.erasure_requests == [ann] and fake.pending_erasures == [ann]
    # Shopify carries it out later: until then the customer is still there.
    assert set(fake.customers) == {ann, bob}
    assert fake.calls("customers") == 0  # the id was enough: no look-up by e-mail


def test_the_fake_refuses_an_erasure_the_schema_does_not_allow(fake: FakeShopify) -> None:
    ann = fake.add_customer(email="ann@example.com")
    client = httpx.Client(transport=fake.transport, base_url=fake.base_url, headers={"X-Shopify-Access-Token": TOKEN})
    wrong = {"query": f'mutation {{ {MUTATION}(id: "{ann}") {{ customerId }} }}'}  # the argument is customerId
    response = client.post(fake.graphql_path, json=wrong)
    assert response.status_code == 400 and "customerId" in json.dumps(response.json())
    missing = {"query": f"mutation E($customerId: ID!) {{ {MUTATION}(customerId: $customerId) {{ customerId }} }}",
               "variables": {}}
    assert client.post(fake.graphql_path, json=missing).status_code == 400  # the variable is required
    assert any("Unknown argument 'id'" in v for v in fake.violations)
    assert any("$customerId" in v and "ID!" in v for v in fake.violations)
    fake.violations.clear()  # seen; the fixture checks that nothing else was refused
    assert fake.erasure_requests == []
    fine = {"query": f"mutation E($customerId: ID!) {{ {MUTATION}(customerId: $customerId) {{ customerId }} }}",
            "variables": {"customerId": ann}}
    assert client.post(fake.graphql_path, json=fine).json()["data"][MUTATION] == {"customerId": ann}
    assert fake.erasure_requests == [ann]


def test_does_not_exist_is_confirmed_as_not_held(fake: FakeShopify) -> None:
    ann = fake.add_customer(email="ann@example.com")
    fake.delete_customer(ann)
    [gone] = erase(fake, ErasureTarget("g-ann", external_id=ann))
    [nobody] = erase(fake, ErasureTarget("g-x", emails=["nobody@example.com"]))
    assert (gone.status, nobody.status) == ("confirmed", "confirmed")
    assert (gone.detail or "").startswith("not held") and (nobody.detail or "").startswith("not held")
    assert fake.erasure_requests == []
    assert len(erasure_bodies(fake)) == 1  # nobody has no customer: nothing to ask for


def test_a_numeric_id_is_sent_as_the_customer_gid(fake: FakeShopify) -> None:
    ann = fake.add_customer(email="ann@example.com")
    [result] = erase(fake, ErasureTarget("g-ann", external_id=ann.rsplit("/", 1)[1]))
    assert result.status == "requested"
    assert [b["variables"] for b in erasure_bodies(fake)] == [{"customerId": ann}]


def test_an_id_shopify_no_longer_knows_falls_back_to_the_email(fake: FakeShopify) -> None:
    old = fake.add_customer(email="ann@example.com")
    fake.delete_customer(old)
    new = fake.add_customer(email="ann@example.com")  # the person signed up again
    [result] = erase(fake, ErasureTarget("g-ann", external_id=old, emails=["ANN@example.com"]))
    assert result.status == "requested"
    assert [b["variables"] for b in erasure_bodies(fake)] == [{"customerId": old}, {"customerId": new}]
    assert fake.erasure_requests == [new]


def test_the_erased_customer_disappears_from_later_reads(fake: FakeShopify) -> None:
    ann = fake.add_customer(firstName="Ann", email="ann@example.com")
    bob = fake.add_customer(firstName="Bob", email="bob@example.com")
    fake.clock.advance(2000)
    target = ErasureTarget("g-ann", external_id=ann)
    assert [r.status for r in erase(fake, target)] == ["requested"]
    assert [r.status for r in erase(fake, target)] == ["requested"]  # pending: asking again is harmless

    assert fake.complete_erasures() == [ann]
    assert fake.redacted_customers == [ann] and fake.pending_erasures == []
    conn = make_connector(fake, streams={"customers": {"reconcile_hours": 24}})
    records, _rejected, _cps, items = read_all(conn.streams()["customers"], None)
    assert [r.data["id"] for r in records] == [bob]
    [reconcile] = [i for i in items if isinstance(i, Reconcile)]
    assert reconcile.ids == {bob}  # the hub drops what it still held of ann
    # Asked once more on a later run: Shopify no longer holds her.
    [again] = erase(fake, target)
    assert again.status == "confirmed" and (again.detail or "").startswith("not held")


def test_failed_to_request_is_failed_retryable_then_succeeds_next_run(fake: FakeShopify) -> None:
    ann = fake.add_customer(email="ann@example.com")
    fake.fail_erasure_requests(1)
    [first] = erase(fake, ErasureTarget("g-ann", external_id=ann))
    assert first.status == "failed" and first.retryable and "FAILED_TO_REQUEST" in (first.detail or "")
    [second] = erase(fake, ErasureTarget("g-ann", external_id=ann))
    assert second.status == "requested"
    assert fake.erasure_requests == [ann]


@pytest.mark.parametrize("fault", ["500", "429", "throttled"])
def test_a_transient_failure_is_retried_and_then_succeeds(fake: FakeShopify, fault: str) -> None:
    ann = fake.add_customer(email="ann@example.com")
    if fault == "throttled":
        fake.throttle_next(2)  # THROTTLED inside a 200
    else:
        fake.fail_next(2, status=int(fault), headers={"Retry-After": "1"} if fault == "429" else None,
                       path=fake.graphql_path)
    [result] = erase(fake, ErasureTarget("g-ann", external_id=ann))
    assert result.status == "requested"
    assert len(erasure_bodies(fake)) == 3
    assert fake.erasure_requests == [ann]


def test_a_persistent_failure_is_failed_and_retryable_without_secrets(fake: FakeShopify) -> None:
    ann = fake.add_customer(email="ann@example.com")
    fake.fail_next(50, status=503, body={"errors": f"upstream down for ann@example.com ({TOKEN})"},
                   path=fake.graphql_path)
    [result] = erase(fake, ErasureTarget("g-ann", external_id=ann, emails=["ann@example.com"]))
    assert result.status == "failed" and result.retryable
    assert "503" in (result.detail or "")
    assert TOKEN not in (result.detail or "") and "ann@example.com" not in (result.detail or "")
    assert len(erasure_bodies(fake)) > 1  # retried before giving up
    assert fake.erasure_requests == []


def test_a_400_is_failed_and_not_retried(fake: FakeShopify) -> None:
    ann = fake.add_customer(email="ann@example.com")
    fake.fail_next(1, status=400, body={"errors": {"query": "Required parameter missing or invalid"}},
                   path=fake.graphql_path)
    [result] = erase(fake, ErasureTarget("g-ann", external_id=ann))
    assert result.status == "failed" and not result.retryable
    assert "Required parameter missing" in (result.detail or "")
    assert len(erasure_bodies(fake)) == 1


@pytest.mark.parametrize("answer", ["access_denied", "403", "401"])
def test_missing_access_fails_every_target_and_names_the_scope(fake: FakeShopify, answer: str) -> None:
    ann = fake.add_customer(email="ann@example.com")
    bob = fake.add_customer(email="bob@example.com")
    settings = None
    if answer == "access_denied":
        denied = {"errors": [{"message": f"Access denied for {MUTATION} field. Required access: `write_customers` "
                                         "access scope.", "extensions": {"code": "ACCESS_DENIED"}}]}
        fake.fail_next(1, status=200, body=denied, path=fake.graphql_path)
    elif answer == "403":
        fake.fail_next(1, status=403, body={"errors": "Forbidden"}, path=fake.graphql_path)
    else:
        settings = {"access_token": "shpat_wrong_2f9c81d0"}
    results = erase(fake, ErasureTarget("a", external_id=ann), ErasureTarget("b", external_id=bob), settings=settings)
    assert [(r.status, r.retryable) for r in results] == [("failed", True), ("failed", True)]
    for r in results:
        assert ERASE_SCOPE in (r.detail or "") and "shpat_wrong_2f9c81d0" not in (r.detail or "")
    assert len(erasure_bodies(fake)) == 1  # no point asking for the others
    assert fake.erasure_requests == []


def test_one_failing_target_does_not_stop_the_others(fake: FakeShopify) -> None:
    gids = [fake.add_customer(email=f"p{i}@example.com") for i in range(3)]
    results = make_connector(fake).streams()["customers"].erase(
        [ErasureTarget(f"g{i}", external_id=gid) for i, gid in enumerate(gids)])
    first = next(results)
    fake.fail_next(1, status=400, path=fake.graphql_path)  # the second person's request is refused
    rest = list(results)
    assert [(r.target.golden_id, r.status, r.retryable) for r in [first, *rest]] == [
        ("g0", "requested", True), ("g1", "failed", False), ("g2", "requested", True)]
    assert fake.erasure_requests == [gids[0], gids[2]]


def test_only_the_customers_stream_erases(fake: FakeShopify) -> None:
    streams = make_connector(fake, streams={"customers": {}, "orders": {"resource": "orders"}}).streams()
    assert streams["customers"].can_erase
    assert not streams["orders"].can_erase
    with pytest.raises(NotImplementedError):
        list(streams["orders"].erase([ErasureTarget("g", external_id="gid://shopify/Customer/1")]))
    assert fake.calls(MUTATION) == 0
