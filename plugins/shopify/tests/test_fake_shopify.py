"""The Shopify fake behaves as Shopify's GraphQL Admin API 2025-01 does (see ``fake_shopify``), and
every request these tests send is accepted by the schema validator (unless a test says otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from plugins.shopify.tests.fake_shopify import FakeShopify, iso
from synchub.testing.specs import shopify_validator

T0 = 1_700_000_000_000  # the fake clock's start

CUSTOMERS_PAGE = """
query Page($first: Int!, $after: String, $query: String) {
  customers(first: $first, after: $after, sortKey: UPDATED_AT, query: $query) {
    edges { cursor node { id updatedAt } }
    pageInfo { hasNextPage endCursor }
  }
}"""

ORDERS_BULK = """{
  orders(query: "status:any") {
    edges { node { id name customer { id } lineItems { edges { node { id sku quantity } } } } }
  }
}"""

RUN_BULK = """mutation Run($q: String!) {
  bulkOperationRunQuery(query: $q) {
    bulkOperation { id status type objectCount url createdAt }
    userErrors { field message code }
  }
}"""

BULK_STATUS = """query Status($id: ID!) {
  node(id: $id) {
    ... on BulkOperation {
      id status errorCode objectCount rootObjectCount fileSize url partialDataUrl completedAt
    }
  }
}"""


@pytest.fixture
def fake() -> Iterator[FakeShopify]:
    fake = FakeShopify(validator=shopify_validator())
    yield fake
    assert fake.violations == []  # every request a test sent passed the schema validator


def client_for(fake: FakeShopify, token: str | None = None) -> httpx.Client:
    return httpx.Client(
        transport=fake.transport,
        base_url=fake.base_url,
        headers={"X-Shopify-Access-Token": token if token is not None else fake.token},
    )


@pytest.fixture
def client(fake: FakeShopify) -> httpx.Client:
    return client_for(fake)


def post(client: httpx.Client, query: str, /, **variables: Any) -> httpx.Response:
    body: dict[str, Any] = {"query": query}
    if variables:
        body["variables"] = variables
    return client.post("/admin/api/2025-01/graphql.json", json=body)


def gql(client: httpx.Client, query: str, /, **variables: Any) -> dict[str, Any]:
    response = post(client, query, **variables)
    assert response.status_code == 200, response.text
    return response.json()


def data(client: httpx.Client, query: str, /, **variables: Any) -> dict[str, Any]:
    body = gql(client, query, **variables)
    assert "errors" not in body, body["errors"]
    return body["data"]


def error_messages(body: dict[str, Any]) -> list[str]:
    return [e["message"] for e in body.get("errors", [])]


def customers_at_seconds(fake: FakeShopify, n: int) -> list[str]:
    """``n`` customers, the i-th updated at T0 + i seconds."""
    gids = []
    for i in range(n):
        fake.clock.advance(1000)
        gids.append(fake.add_customer(firstName=f"C{i}", email=f"c{i}@example.com"))
    return gids


# ---------------------------------------------------------------------------- endpoint and auth


def test_wrong_token_is_401_and_other_paths_are_404() -> None:
    bare = FakeShopify()
    response = post(client_for(bare, token="shpat_wrong"), "{ shop { name } }")
    assert response.status_code == 401
    assert response.json() == {
        "errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"
    }
    headerless = httpx.Client(transport=bare.transport, base_url=bare.base_url)
    assert post(headerless, "{ shop { name } }").status_code == 401
    other_version = client_for(bare).post(
        "/admin/api/2024-10/graphql.json", json={"query": "{ shop { name } }"}
    )
    assert other_version.status_code == 404
    other_host = httpx.Client(
        transport=bare.transport, headers={"X-Shopify-Access-Token": bare.token}
    )
    assert other_host.post("https://other.myshopify.com/admin/api/2025-01/graphql.json",
                           json={"query": "{ shop { name } }"}).status_code == 404  # fmt: skip
    assert bare.violations == []


def test_shop_and_cost_extension(fake: FakeShopify, client: httpx.Client) -> None:
    body = gql(client, "{ shop { name myshopifyDomain currencyCode ianaTimezone } }")
    assert body["data"]["shop"] == {
        "name": "Acme", "myshopifyDomain": "acme.myshopify.com", "currencyCode": "EUR",
        "ianaTimezone": "Europe/Berlin",
    }  # fmt: skip
    assert body["extensions"]["cost"] == {
        "requestedQueryCost": 1,
        "actualQueryCost": 1,
        "throttleStatus": {
            "maximumAvailable": 2000.0,
            "currentlyAvailable": 1999,
            "restoreRate": 100.0,
        },
    }
    assert fake.calls("shop") == 1 and fake.calls("customers") == 0


def test_invalid_query_is_a_violation_with_a_validator(
    fake: FakeShopify, client: httpx.Client
) -> None:
    response = post(client, "{ customers(first: 5) { nodes { id emailAddress } } }")
    assert response.status_code == 400
    assert "emailAddress" in response.json()["errors"]
    assert len(fake.violations) == 1 and "emailAddress" in fake.violations[0]
    fake.violations.clear()  # seen; the fixture checks that nothing else was refused


def test_invalid_query_without_a_validator_gets_graphql_errors() -> None:
    bare = FakeShopify()
    body = gql(client_for(bare), "{ customers(first: 5) { nodes { id emailAddress } } }")
    assert "data" not in body
    assert any("emailAddress" in m for m in error_messages(body))
    body = gql(
        client_for(bare), "query($n: Int!) { customers(first: $n) { nodes { id } } }", n="ten"
    )
    assert any("$n" in m for m in error_messages(body))
    assert bare.violations == []


def test_unmodelled_non_null_field_is_an_error_naming_the_fake(
    fake: FakeShopify, client: httpx.Client
) -> None:
    gid = fake.add_customer(email="ann@example.com")
    body = gql(client, "query($id: ID!) { customer(id: $id) { id lifetimeDuration } }", id=gid)
    assert body["data"] == {"customer": None}
    assert "not modelled" in error_messages(body)[0]
    assert "Customer.lifetimeDuration" in fake.unmodelled


# ---------------------------------------------------------------------------- reading and paging


def test_customer_fields_derived_from_orders(fake: FakeShopify, client: httpx.Client) -> None:
    ann = fake.add_customer(firstName="Ann", lastName="Lee", email="ann@example.com",
                            addresses=[{"address1": "Hauptstr. 1", "city": "Berlin", "countryCode": "DE"}])  # fmt: skip
    fake.clock.advance(2000)
    fake.add_order(ann, total="30.00", shop_total="27.50", presentment_currency="USD",
                   line_items=[{"title": "Hat", "sku": "H1", "quantity": 2, "price": "15.00"}])  # fmt: skip
    fake.add_order(ann, total="10.00", cancelled=True)
    query = """query($id: ID!) { customer(id: $id) {
        displayName numberOfOrders amountSpent { amount currencyCode } updatedAt
        defaultAddress { city countryCodeV2 }
        lastOrder { name }
        orders(first: 5, sortKey: ID) { nodes { name presentmentCurrencyCode
          totalPriceSet { shopMoney { amount currencyCode } presentmentMoney { amount currencyCode } }
          lineItems(first: 5) { nodes { sku quantity originalUnitPriceSet { presentmentMoney { amount } } } } } } } }"""
    customer = data(client, query, id=ann)["customer"]
    assert customer["displayName"] == "Ann Lee"
    assert customer["numberOfOrders"] == "2"
    assert customer["amountSpent"] == {
        "amount": "27.5",
        "currencyCode": "EUR",
    }  # cancelled not counted
    assert customer["updatedAt"] == iso(T0 + 2000)  # the orders bumped it
    assert customer["defaultAddress"] == {"city": "Berlin", "countryCodeV2": "DE"}
    assert customer["lastOrder"] == {"name": "#1002"}
    first = customer["orders"]["nodes"][0]
    assert first["totalPriceSet"] == {
        "shopMoney": {"amount": "27.5", "currencyCode": "EUR"},
        "presentmentMoney": {"amount": "30.0", "currencyCode": "USD"},
    }
    assert first["lineItems"]["nodes"] == [
        {
            "sku": "H1",
            "quantity": 2,
            "originalUnitPriceSet": {"presentmentMoney": {"amount": "15.0"}},
        }
    ]


def test_paging_by_updated_at_is_positioned_by_value_while_records_change(
    fake: FakeShopify, client: httpx.Client
) -> None:
    c = customers_at_seconds(fake, 7)
    since = f"updated_at:>='{iso(T0)}'"
    page = data(client, CUSTOMERS_PAGE, first=3, query=since)["customers"]
    seen = [e["node"] for e in page["edges"]]
    assert [n["id"] for n in seen] == c[:3]
    fake.clock.advance(1000)
    fake.update_customer(c[1], note="seen, then changed")  # moves past the cursor: comes again
    fake.update_customer(c[4], note="not seen yet, changed")  # moves to the end: comes once
    while page["pageInfo"]["hasNextPage"]:
        page = data(
            client, CUSTOMERS_PAGE, first=3, after=page["pageInfo"]["endCursor"], query=since
        )["customers"]
        seen.extend(e["node"] for e in page["edges"])
    ids = [n["id"] for n in seen]
    # an offset-based fake would skip c[3] here (c[1] left the first three places)
    assert ids == [c[0], c[1], c[2], c[3], c[5], c[6], c[1], c[4]]
    stamps = [n["updatedAt"] for n in seen]
    assert stamps[3:] == sorted(stamps[3:]) and stamps[:3] == sorted(stamps[:3])


def test_a_cursor_survives_the_deletion_of_its_record(
    fake: FakeShopify, client: httpx.Client
) -> None:
    c = customers_at_seconds(fake, 4)
    page = data(client, CUSTOMERS_PAGE, first=2)["customers"]
    fake.delete_customer(c[1])
    rest = data(client, CUSTOMERS_PAGE, first=2, after=page["pageInfo"]["endCursor"])["customers"]
    assert [e["node"]["id"] for e in rest["edges"]] == c[2:]
    assert rest["pageInfo"]["hasNextPage"] is False


def test_search_filters_and_unsupported_terms(fake: FakeShopify, client: httpx.Client) -> None:
    c = customers_at_seconds(fake, 4)  # updated at T0+1s .. T0+4s
    fake.clock.advance(1000)
    ann = fake.add_customer(email="ann@example.com")
    order = fake.add_order(ann)

    def ids(query: str) -> list[str]:
        return [n["id"] for n in data(client, "query($q: String) { customers(first: 10, query: $q) { nodes { id } } }",
                                      q=query)["customers"]["nodes"]]  # fmt: skip

    assert ids(f'updated_at:>"{iso(T0 + 2000)}" AND updated_at:<={iso(T0 + 4000)}') == c[2:4]
    assert ids("updated_at:>='2023-11-14T23:13:22+01:00'") == [*c[1:], ann]  # an offset
    assert ids(f"id:>{c[2].rsplit('/', 1)[1]}") == [c[3], ann]
    assert ids("email:ANN@example.com") == [ann]
    orders = data(client, 'query($q: String) { orders(first: 5, query: $q) { nodes { id } } }',
                  q=f"status:any customer_id:{ann.rsplit('/', 1)[1]}")["orders"]["nodes"]  # fmt: skip
    assert orders == [{"id": order}]
    for bad in (
        "state:enabled",
        "updated_at:>2024 OR id:>1",
        "-id:1",
        "Bob",
        "updated_at:2024-01-01",
    ):
        body = gql(
            client, "query($q: String) { customers(first: 10, query: $q) { nodes { id } } }", q=bad
        )
        assert body["data"] is None
        assert error_messages(body)[0].startswith("fake: unsupported search term"), bad


def test_first_is_required_and_at_most_250(fake: FakeShopify, client: httpx.Client) -> None:
    body = gql(client, "{ customers(first: 251) { nodes { id } } }")
    assert body["data"] is None and "250" in error_messages(body)[0]
    body = gql(client, '{ orders(query: "status:any") { nodes { id } } }')
    assert error_messages(body) == ["you must provide one of first or last"]
    body = gql(client, "{ customers(last: 5) { nodes { id } } }")
    assert "not supported by the fake" in error_messages(body)[0]
    assert data(client, "{ customers(first: 250) { nodes { id } } }") == {
        "customers": {"nodes": []}
    }


def test_pagination_cap_and_capped_counts() -> None:
    fake = FakeShopify(validator=shopify_validator(), pagination_cap=4)
    client = client_for(fake)
    customers_at_seconds(fake, 6)
    after = None
    for _ in range(2):  # pages start at objects 0 and 2
        page = data(client, CUSTOMERS_PAGE, first=2, **({"after": after} if after else {}))[
            "customers"
        ]
        assert page["pageInfo"]["hasNextPage"]
        after = page["pageInfo"]["endCursor"]
    body = gql(client, CUSTOMERS_PAGE, first=2, after=after)  # would start at object 4
    assert body["data"] is None and "limited to 4 objects" in error_messages(body)[0]
    counts = data(
        client, "{ customersCount { count precision } ordersCount(limit: 2) { count precision } }"
    )
    assert counts["customersCount"] == {"count": 5, "precision": "AT_LEAST"}
    assert counts["ordersCount"] == {"count": 0, "precision": "EXACT"}
    assert fake.violations == []


def test_nodes_take_at_most_250_ids(fake: FakeShopify, client: httpx.Client) -> None:
    ann = fake.add_customer(email="ann@example.com")
    got = data(client, "query($ids: [ID!]!) { nodes(ids: $ids) { id ... on Customer { email } } }",
               ids=[ann, "gid://shopify/Customer/1"])  # fmt: skip
    assert got["nodes"] == [{"id": ann, "email": "ann@example.com"}, None]
    body = gql(client, "query($ids: [ID!]!) { nodes(ids: $ids) { id } }", ids=[ann] * 251)
    assert "251" in error_messages(body)[0]


# ---------------------------------------------------------------------------- cost and throttling


def test_throttling_answer_and_bucket_refill() -> None:
    fake = FakeShopify(validator=shopify_validator(), bucket_size=100, restore_rate=10)
    client = client_for(fake)
    ann = fake.add_customer(email="ann@example.com")
    nine_tags = (
        "mutation($id: ID!) {"
        + " ".join(
            f't{i}: tagsAdd(id: $id, tags: ["t{i}"]) {{ userErrors {{ message }} }}'
            for i in range(9)
        )
        + "}"
    )
    spent = gql(client, nine_tags, id=ann)["extensions"]["cost"]
    assert spent["requestedQueryCost"] == 90 and spent["throttleStatus"]["currentlyAvailable"] == 10
    page = "{ customers(first: 40) { nodes { id } } }"  # requested 2 + 40 = 42
    throttled = gql(client, page)
    assert throttled == {
        "errors": [{"message": "Throttled", "extensions": {
            "code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
        "extensions": {"cost": {"requestedQueryCost": 42, "actualQueryCost": None, "throttleStatus": {
            "maximumAvailable": 100.0, "currentlyAvailable": 10, "restoreRate": 10.0}}},
    }  # fmt: skip
    fake.clock.advance(3000)  # 40 available
    assert gql(client, page)["errors"][0]["extensions"]["code"] == "THROTTLED"
    fake.clock.advance(200)  # 42 available
    answered = gql(client, page)
    assert answered["data"]["customers"]["nodes"] == [{"id": ann}]
    assert answered["extensions"]["cost"]["actualQueryCost"] == 3  # 2 + one customer: 39 refunded
    assert answered["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] == 39
    assert fake.throttled == 2
    fake.throttle_next(1)  # forced: the bucket is emptied, and the answer says so
    forced = gql(client, "{ shop { name } }")
    assert forced["errors"][0]["message"] == "Throttled"
    assert forced["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] == 0
    fake.clock.advance(100)  # one point back: enough for { shop { name } }
    assert gql(client, "{ shop { name } }")["data"] == {"shop": {"name": "Acme"}}
    assert fake.throttled == 3 and fake.violations == []


def test_a_query_over_the_single_query_limit_is_refused(
    fake: FakeShopify, client: httpx.Client
) -> None:
    body = gql(
        client, "{ customers(first: 250) { nodes { id orders(first: 10) { nodes { id } } } } }"
    )
    assert "data" not in body
    error = body["errors"][0]
    assert error["extensions"]["code"] == "MAX_COST_EXCEEDED"
    assert error["message"].startswith(
        "Query cost is 3252, which exceeds the single query max cost limit (1000)"
    )


def test_http_faults_are_consumed(fake: FakeShopify, client: httpx.Client) -> None:
    fake.fail_next(2, 503, headers={"Retry-After": "1"})
    assert fake.unused_faults() == 2
    first = post(client, "{ shop { name } }")
    assert first.status_code == 503 and first.headers["Retry-After"] == "1"
    assert fake.unused_faults() == 1
    assert post(client, "{ shop { name } }").status_code == 503
    assert post(client, "{ shop { name } }").status_code == 200
    assert fake.unused_faults() == 0 and len(fake.requests) == 3


# ---------------------------------------------------------------------------- mutations

CUSTOMER_UPDATE = """mutation($input: CustomerInput!) {
  customerUpdate(input: $input) { customer { id email phone tags updatedAt } userErrors { field message } }
}"""


def test_customer_update_user_errors(fake: FakeShopify, client: httpx.Client) -> None:
    ann = fake.add_customer(email="ann@example.com", phone="+4915111111111")
    bob = fake.add_customer(email="bob@example.com", tags=["old"])

    def errors(**input: Any) -> list[dict[str, Any]]:
        return data(client, CUSTOMER_UPDATE, input=input)["customerUpdate"]["userErrors"]

    assert errors(id=bob, email="ANN@example.com") == [
        {"field": ["email"], "message": "Email has already been taken"}
    ]
    assert errors(id=bob, phone="+4915111111111") == [
        {"field": ["phone"], "message": "Phone has already been taken"}
    ]
    assert errors(id=bob, email="not-an-email") == [
        {"field": ["email"], "message": "Email is invalid"}
    ]
    assert errors(id=bob, phone="0151 1111") == [
        {"field": ["phone"], "message": "Phone is invalid"}
    ]
    assert errors(id="gid://shopify/Customer/999", email="x@example.com") == [
        {"field": ["id"], "message": "Customer does not exist"}
    ]
    refused = errors(id=bob, emailMarketingConsent={"marketingState": "SUBSCRIBED"})
    assert refused[0]["field"] == ["emailMarketingConsent"]
    assert "customerEmailMarketingConsentUpdate" in refused[0]["message"]
    assert fake.customers[bob]["email"] == "bob@example.com"  # nothing applied
    fake.clock.advance(5000)
    done = data(
        client, CUSTOMER_UPDATE, input={"id": bob, "phone": "+4915122222222", "tags": ["a", "b"]}
    )
    assert done["customerUpdate"]["userErrors"] == []
    assert done["customerUpdate"]["customer"] == {
        "id": bob, "email": "bob@example.com", "phone": "+4915122222222", "tags": ["a", "b"],
        "updatedAt": iso(T0 + 5000),
    }  # fmt: skip
    assert ann != bob


def test_customer_create_and_delete(fake: FakeShopify, client: httpx.Client) -> None:
    create = """mutation($input: CustomerInput!) { customerCreate(input: $input) {
        customer { id email emailMarketingConsent { marketingState consentUpdatedAt } }
        userErrors { field message } } }"""
    made = data(client, create, input={"email": "new@example.com", "firstName": "New",
                                       "emailMarketingConsent": {"marketingState": "SUBSCRIBED"}})  # fmt: skip
    customer = made["customerCreate"]["customer"]
    assert customer["emailMarketingConsent"] == {
        "marketingState": "SUBSCRIBED",
        "consentUpdatedAt": iso(T0),
    }
    again = data(client, create, input={"email": "new@example.com"})["customerCreate"]
    assert again == {
        "customer": None,
        "userErrors": [{"field": ["email"], "message": "Email has already been taken"}],
    }
    no_email = data(
        client,
        create,
        input={"firstName": "X", "emailMarketingConsent": {"marketingState": "SUBSCRIBED"}},
    )
    assert no_email["customerCreate"]["userErrors"][0]["field"] == ["emailMarketingConsent"]
    delete = "mutation($id: ID!) { customerDelete(input: {id: $id}) { deletedCustomerId userErrors { message } } }"
    with_order = fake.add_customer(email="buyer@example.com")
    fake.add_order(with_order)
    assert data(client, delete, id=with_order)["customerDelete"]["deletedCustomerId"] is None
    assert data(client, delete, id=customer["id"])["customerDelete"] == {
        "deletedCustomerId": customer["id"],
        "userErrors": [],
    }
    assert customer["id"] not in fake.customers


def test_tags_add_and_remove(fake: FakeShopify, client: httpx.Client) -> None:
    ann = fake.add_customer(email="ann@example.com", tags=["vip"])
    order = fake.add_order(ann, tags=["web"])
    add = "mutation($id: ID!, $tags: [String!]!) { tagsAdd(id: $id, tags: $tags) { node { id } userErrors { message } } }"
    remove = add.replace("tagsAdd", "tagsRemove")
    fake.clock.advance(3000)
    assert data(client, add, id=ann, tags=["VIP", "new, other"])["tagsAdd"] == {
        "node": {"id": ann},
        "userErrors": [],
    }
    assert fake.customers[ann]["tags"] == ["vip", "new", "other"]
    assert fake.customers[ann]["updatedAt"] == iso(T0 + 3000)
    data(client, remove, id=ann, tags=["NEW"])
    assert fake.customers[ann]["tags"] == ["vip", "other"]
    data(client, add, id=order, tags=["gift"])
    assert fake.orders[order]["tags"] == ["web", "gift"]
    unknown = data(client, add, id="gid://shopify/Customer/1", tags=["x"])["tagsAdd"]
    assert unknown["node"] is None and unknown["userErrors"]
    too_many = gql(client, add, id=ann, tags=[f"t{i}" for i in range(251)])
    assert "251" in error_messages(too_many)[0]


def test_email_consent_update_rules(fake: FakeShopify, client: httpx.Client) -> None:
    mutation = """mutation($input: CustomerEmailMarketingConsentUpdateInput!) {
      customerEmailMarketingConsentUpdate(input: $input) {
        customer { id updatedAt emailMarketingConsent { marketingState marketingOptInLevel consentUpdatedAt } }
        userErrors { field message code } } }"""
    ann = fake.add_customer(email="ann@example.com")
    phone_only = fake.add_customer(phone="+4915133333333")

    def update(gid: str, **consent: Any) -> dict[str, Any]:
        consent.setdefault("marketingState", "SUBSCRIBED")
        payload = {"customerId": gid, "emailMarketingConsent": consent}
        return data(client, mutation, input=payload)["customerEmailMarketingConsentUpdate"]

    assert update(phone_only)["userErrors"][0]["code"] == "MISSING_ARGUMENT"
    for state in ("NOT_SUBSCRIBED", "REDACTED", "INVALID"):
        assert update(ann, marketingState=state)["userErrors"][0]["code"] == "INVALID"
    future = update(ann, consentUpdatedAt=iso(T0 + 3_600_000))
    assert future["customer"] is None and future["userErrors"][0]["code"] == "INVALID"
    assert fake.consent_log == []
    fake.clock.advance(10_000)
    done = update(ann, marketingOptInLevel="CONFIRMED_OPT_IN", consentUpdatedAt=iso(T0))
    assert done["userErrors"] == []
    assert done["customer"]["emailMarketingConsent"] == {
        "marketingState": "SUBSCRIBED",
        "marketingOptInLevel": "CONFIRMED_OPT_IN",
        "consentUpdatedAt": iso(T0),
    }
    assert done["customer"]["updatedAt"] == iso(T0 + 10_000)
    update(ann, marketingState="UNSUBSCRIBED")
    assert fake.consent_log == [(ann, "SUBSCRIBED"), (ann, "UNSUBSCRIBED")]
    assert fake.customers[ann]["emailMarketingConsent"]["consentUpdatedAt"] == iso(T0 + 10_000)


# ---------------------------------------------------------------------------- bulk operations


def run_bulk(client: httpx.Client, query: str) -> dict[str, Any]:
    return data(client, RUN_BULK, q=query)["bulkOperationRunQuery"]


def bulk_status(client: httpx.Client, gid: str) -> dict[str, Any]:
    return data(client, BULK_STATUS, id=gid)["node"]


def download(fake: FakeShopify, url: str) -> httpx.Response:
    return httpx.Client(transport=fake.transport).get(url)


def test_bulk_query_lifecycle_and_jsonl(fake: FakeShopify, client: httpx.Client) -> None:
    ann = fake.add_customer(email="ann@example.com")
    first = fake.add_order(ann, line_items=[{"title": "Hat", "sku": "H1", "quantity": 1, "price": "5"},
                                            {"title": "Cap", "sku": "C1", "quantity": 2, "price": "7"}])  # fmt: skip
    run = run_bulk(client, ORDERS_BULK)
    assert run["userErrors"] == []
    op = run["bulkOperation"]
    assert op["status"] == "CREATED" and op["type"] == "QUERY" and op["url"] is None
    assert op["objectCount"] == "0" and op["createdAt"] == iso(T0)
    assert bulk_status(client, op["id"])["status"] == "RUNNING"
    fake.clock.advance(4000)
    second = fake.add_order(
        None, line_items=[{"title": "Mug", "sku": "M1", "quantity": 3, "price": "4"}]
    )
    assert bulk_status(client, op["id"])["status"] == "RUNNING"
    fake.clock.advance(1000)
    done = bulk_status(client, op["id"])
    assert done["status"] == "COMPLETED" and done["errorCode"] is None
    assert done["completedAt"] == iso(T0 + 5000)
    assert (done["objectCount"], done["rootObjectCount"]) == ("5", "2")
    current = data(client, "{ currentBulkOperation(type: QUERY) { id status } }")[
        "currentBulkOperation"
    ]
    assert current == {"id": op["id"], "status": "COMPLETED"}
    response = download(fake, done["url"])
    assert response.status_code == 200 and int(done["fileSize"]) == len(response.content)
    lines = [json.loads(line) for line in response.text.splitlines()]
    items = fake.orders[first]["lineItems"] + fake.orders[second]["lineItems"]
    assert lines == [
        {"id": first, "name": "#1001", "customer": {"id": ann}},
        {"id": items[0]["id"], "sku": "H1", "quantity": 1, "__parentId": first},
        {"id": items[1]["id"], "sku": "C1", "quantity": 2, "__parentId": first},
        {"id": second, "name": "#1002", "customer": None},
        {"id": items[2]["id"], "sku": "M1", "quantity": 3, "__parentId": second},
    ]
    assert fake.calls("bulkOperationRunQuery") == 1


def test_only_one_bulk_query_runs_at_a_time(fake: FakeShopify, client: httpx.Client) -> None:
    op = run_bulk(client, ORDERS_BULK)["bulkOperation"]
    refused = run_bulk(client, "{ customers { edges { node { id } } } }")
    assert refused["bulkOperation"] is None
    assert refused["userErrors"] == [{
        "field": None, "code": "OPERATION_IN_PROGRESS",
        "message": f"A bulk query operation for this app and shop is already in progress: {op['id']}.",
    }]  # fmt: skip
    fake.clock.advance(5000)
    empty = run_bulk(client, "{ customers { edges { node { id } } } }")
    assert (
        empty["userErrors"] == [] and bulk_status(client, op["id"])["url"] is None
    )  # nothing found
    fake.clock.advance(5000)
    assert bulk_status(client, empty["bulkOperation"]["id"])["objectCount"] == "0"


def test_bulk_query_restrictions(fake: FakeShopify, client: httpx.Client) -> None:
    cases = {
        "{ customers(first: 10) { edges { node { id } } } }": "pagination arguments",
        "{ customers { edges { node { id emailAddress } } } }": "emailAddress",
        "{ shop { name } }": "connection",
        '{ node(id: "gid://shopify/Customer/1") { id } }': "node and nodes",
        "{ customers { edges { node { id } } } orders { edges { node { id } } } }": "single top-level",
        "{ customers { edges { node { orders { edges { node { id } } } } } } }": "must select id",
        "{ customers { edges { node { id orders { edges { node { id lineItems { edges { node { id } } } } } } } } } }":
            "nested more than 2",
        '{ customers(query: "state:enabled") { edges { node { id } } } }': "unsupported search term",
    }  # fmt: skip
    for query, expected in cases.items():
        errors = run_bulk(client, query)["userErrors"]
        assert len(errors) == 1 and errors[0]["code"] == "INVALID", query
        assert expected in errors[0]["message"], (query, errors)
    assert fake.bulk_operations == {}


def test_failed_bulk_has_partial_data(fake: FakeShopify, client: httpx.Client) -> None:
    ann = fake.add_customer(email="ann@example.com")
    fake.add_order(ann, line_items=[{"title": "A", "sku": "A", "quantity": 1, "price": "1"}] * 3)
    fake.fail_bulk("TIMEOUT", partial_lines=2)
    op = run_bulk(client, ORDERS_BULK)["bulkOperation"]
    fake.clock.advance(5000)
    failed = bulk_status(client, op["id"])
    assert (failed["status"], failed["errorCode"], failed["url"]) == ("FAILED", "TIMEOUT", None)
    assert (failed["objectCount"], failed["rootObjectCount"]) == ("2", "1")
    lines = download(fake, failed["partialDataUrl"]).text.splitlines()
    assert len(lines) == 2 and "__parentId" in json.loads(lines[1])


def test_expired_bulk_files_and_operations(fake: FakeShopify, client: httpx.Client) -> None:
    fake.add_customer(email="ann@example.com")
    op = run_bulk(client, "{ customers { edges { node { id email } } } }")["bulkOperation"]
    fake.clock.advance(5000)
    url = bulk_status(client, op["id"])["url"]
    assert download(fake, url).status_code == 200
    fake.clock.advance(7 * 86_400_000 - 1)
    assert download(fake, url).status_code == 200
    fake.clock.advance(1)
    expired = download(fake, url)
    assert expired.status_code == 403 and "<Code>ExpiredToken</Code>" in expired.text
    fake.expire_next_bulk()
    second = run_bulk(client, "{ customers { edges { node { id } } } }")["bulkOperation"]
    fake.clock.advance(5000)
    status = bulk_status(client, second["id"])
    assert status["status"] == "EXPIRED" and status["url"] is None
    third = run_bulk(client, "{ customers { edges { node { id } } } }")["bulkOperation"]
    fake.clock.advance(5000)
    fresh = bulk_status(client, third["id"])["url"]
    assert download(fake, fresh).status_code == 200
    fake.expire_bulk_files()
    assert download(fake, fresh).status_code == 403


def test_bulk_cancel_and_token_leak_to_file_host(fake: FakeShopify, client: httpx.Client) -> None:
    fake.add_customer(email="ann@example.com")
    op = run_bulk(client, "{ customers { edges { node { id } } } }")["bulkOperation"]
    cancel = "mutation($id: ID!) { bulkOperationCancel(id: $id) { bulkOperation { status } userErrors { message } } }"
    assert data(client, cancel, id=op["id"])["bulkOperationCancel"] == {
        "bulkOperation": {"status": "CANCELING"},
        "userErrors": [],
    }
    fake.clock.advance(5000)
    assert bulk_status(client, op["id"])["status"] == "CANCELED"
    op = run_bulk(client, "{ customers { edges { node { id } } } }")["bulkOperation"]
    fake.clock.advance(5000)
    url = bulk_status(client, op["id"])["url"]
    assert client.get(url).status_code == 200  # the shop client carries the access token
    assert len(fake.violations) == 1 and "X-Shopify-Access-Token" in fake.violations[0]
    fake.violations.clear()
