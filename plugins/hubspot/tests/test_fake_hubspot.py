"""The HubSpot fake behaves as HubSpot's CRM v3 API does (see ``fake_hubspot`` for sources)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import httpx
import pytest

from plugins.hubspot.tests.fake_hubspot import FakeHubSpot, iso

TOKEN = "pat-test-token"
SEARCH = "/crm/v3/objects/contacts/search"
T0 = 1_700_000_000_000  # the fake clock's start


def client_for(fake: FakeHubSpot, token: str | None = TOKEN) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(
        transport=fake.transport, base_url="https://api.hubapi.com", headers=headers
    )


def search_body(**fields: Any) -> dict[str, Any]:
    """A search body with every field the vendor spec marks required."""
    body: dict[str, Any] = {"filterGroups": [], "sorts": [], "properties": [], "limit": 10}
    body["after"] = "0"
    body.update(fields)
    return body


def eq(name: str, value: str, operator: str = "EQ") -> dict[str, Any]:
    return {"propertyName": name, "operator": operator, "value": value}


def search_ids(client: httpx.Client, **fields: Any) -> list[str]:
    response = client.post(SEARCH, json=search_body(limit=200, **fields))
    assert response.status_code == 200, response.text
    return [r["id"] for r in response.json()["results"]]


def search_all(client: httpx.Client, path: str = SEARCH, **fields: Any) -> list[dict[str, Any]]:
    records, after = [], "0"
    while True:
        page = client.post(path, json=search_body(after=after, **fields))
        assert page.status_code == 200, page.text
        records.extend(page.json()["results"])
        nxt = page.json().get("paging", {}).get("next")
        if not nxt:
            return records
        after = nxt["after"]


@pytest.fixture
def fake() -> FakeHubSpot:
    return FakeHubSpot()


@pytest.fixture
def client(fake: FakeHubSpot) -> httpx.Client:
    return client_for(fake)


# ---------------------------------------------------------------------------- auth


def test_a_missing_or_wrong_token_gets_hubspots_401(fake: FakeHubSpot) -> None:
    for token in (None, "not-the-token"):
        response = client_for(fake, token).get("/crm/v3/objects/contacts")
        assert response.status_code == 401
        body = response.json()
        assert body["status"] == "error"
        assert body["category"] == "INVALID_AUTHENTICATION"
        assert body["message"].startswith("Authentication credentials not found.")
        assert body["correlationId"]
    assert client_for(fake).get("/crm/v3/objects/contacts").status_code == 200


def test_oauth_refresh_gives_a_new_token_and_tokens_expire() -> None:
    fake = FakeHubSpot(token="first-access", oauth_client=("cid", "secret", "refresh-1"))
    fake.expire_token()
    expired = client_for(fake, "first-access").get("/crm/v3/objects/contacts")
    assert expired.status_code == 401
    assert expired.json()["category"] == "EXPIRED_AUTHENTICATION"

    form = {
        "grant_type": "refresh_token",
        "client_id": "cid",
        "client_secret": "secret",
        "refresh_token": "refresh-1",
    }
    token = httpx.Client(transport=fake.transport).post(
        "https://api.hubapi.com/oauth/v1/token", data=form
    )
    assert token.status_code == 200
    grant = token.json()
    assert grant["refresh_token"] == "refresh-1"
    assert grant["expires_in"] == 1800
    fresh = client_for(fake, grant["access_token"])
    assert fresh.get("/crm/v3/objects/contacts").status_code == 200

    fake.clock.advance(1800 * 1000)  # access tokens live 30 minutes
    late = fresh.get("/crm/v3/objects/contacts")
    assert late.status_code == 401
    assert late.json()["category"] == "EXPIRED_AUTHENTICATION"

    bad = httpx.Client(transport=fake.transport).post(
        "https://api.hubapi.com/oauth/v1/token", data={**form, "refresh_token": "nope"}
    )
    assert bad.status_code == 400
    assert bad.json()["status"] == "BAD_REFRESH_TOKEN"


# ---------------------------------------------------------------------------- search


@pytest.fixture
def people(fake: FakeHubSpot) -> dict[str, str]:
    day = 86_400_000
    return {
        "ann": fake.add(
            "contacts", {"email": "Ann@Example.com", "firstname": "Ann"}, updated_at=T0
        ),
        "bob": fake.add(
            "contacts", {"email": "bob@example.com", "lastname": "B"}, updated_at=T0 + day
        ),
        "cid": fake.add("contacts", {"email": "cid@example.org"}, updated_at=T0 + 2 * day),
    }


def test_search_filters_match_as_hubspot_does(client: httpx.Client, people: dict[str, str]) -> None:
    ann, bob, cid = people["ann"], people["bob"], people["cid"]
    one_day = T0 + 86_400_000

    def find(*filters: dict[str, Any]) -> set[str]:
        return set(search_ids(client, filterGroups=[{"filters": list(filters)}]))

    assert find(eq("email", "ANN@example.COM")) == {ann}  # stored lower-case, EQ ignores case
    assert find(eq("email", "ann@example.com", "NEQ")) == {bob, cid}
    assert find(eq("lastmodifieddate", str(one_day), "GTE")) == {bob, cid}  # ms epoch
    assert find(eq("lastmodifieddate", iso(one_day), "GT")) == {cid}  # ISO-8601
    assert find(eq("lastmodifieddate", "2023-11-15T22:13:20Z", "LT")) == {ann}
    between = {"propertyName": "lastmodifieddate", "operator": "BETWEEN"}
    assert find({**between, "value": str(T0 + 1), "highValue": str(one_day)}) == {bob}
    assert find({"propertyName": "email", "operator": "IN", "values": ["bob@example.com"]}) == {bob}
    not_in = {"propertyName": "email", "operator": "NOT_IN", "values": ["bob@example.com"]}
    assert find(not_in) == {ann, cid}
    assert find({"propertyName": "firstname", "operator": "HAS_PROPERTY"}) == {ann}
    assert find({"propertyName": "firstname", "operator": "NOT_HAS_PROPERTY"}) == {bob, cid}
    assert find(eq("email", "*@example.com", "CONTAINS_TOKEN")) == {ann, bob}
    # filters in a group are ANDed, groups are ORed
    assert find(eq("email", "bob@example.com"), eq("lastname", "X")) == set()
    groups = [{"filters": [eq("email", "bob@example.com")]}, {"filters": [eq("firstname", "ann")]}]
    assert set(search_ids(client, filterGroups=groups)) == {ann, bob}


def test_hs_object_id_compares_as_a_number(fake: FakeHubSpot, client: httpx.Client) -> None:
    ids = [fake.add("contacts", {"email": f"p{i}@example.com"}) for i in range(12)]
    assert ids[:3] == ["1", "2", "3"]  # ids are increasing numbers, of growing length
    above_nine = search_ids(client, filterGroups=[{"filters": [eq("hs_object_id", "9", "GT")]}])
    assert sorted(above_nine, key=int) == ["10", "11", "12"]
    by_id = {"propertyName": "hs_object_id", "direction": "ASCENDING"}
    assert search_ids(client, sorts=[by_id]) == ids  # not "1", "10", "11", "12", "2", ...


def test_search_results_have_hubspots_shape(client: httpx.Client, people: dict[str, str]) -> None:
    response = client.post(
        SEARCH, json=search_body(filterGroups=[{"filters": [eq("email", "ann@example.com")]}])
    )
    body = response.json()
    assert body["total"] == 1
    assert "paging" not in body
    (record,) = body["results"]
    assert record["id"] == people["ann"]
    assert record["archived"] is False
    assert record["createdAt"] == record["updatedAt"] == "2023-11-14T22:13:20.000Z"
    assert record["properties"] == {  # the contact defaults
        "createdate": "2023-11-14T22:13:20.000Z",
        "email": "ann@example.com",
        "firstname": "Ann",
        "hs_object_id": people["ann"],
        "lastmodifieddate": "2023-11-14T22:13:20.000Z",
        "lastname": None,
    }
    asked = client.post(SEARCH, json=search_body(properties=["firstname", "phone"])).json()
    assert set(asked["results"][0]["properties"]) == {
        "createdate", "firstname", "hs_object_id", "lastmodifieddate", "phone",
    }  # fmt: skip


def test_search_pages_with_after_and_total(fake: FakeHubSpot, client: httpx.Client) -> None:
    for i in range(25):
        fake.add("contacts", {"email": f"p{i}@example.com"})
    first = client.post(SEARCH, json=search_body(limit=10)).json()
    assert first["total"] == 25
    assert len(first["results"]) == 10
    assert first["paging"] == {"next": {"after": "10"}}
    everyone = search_all(client, limit=10)
    assert len({r["id"] for r in everyone}) == 25


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"limit": 201}, "limit"),
        ({"filterGroups": [{"filters": [eq("email", "x")]}] * 6}, "groups"),
        ({"filterGroups": [{"filters": [eq("email", "x")] * 7}]}, "filters in a group"),
        ({"filterGroups": [{"filters": [eq("email", "x")] * 5}] * 4}, "filters in all"),
        ({"filterGroups": [{"filters": [eq("email", "x", "LIKE")]}]}, "operator"),
        ({"after": "10000", "limit": 1}, "10k cap"),
        ({"after": "9900", "limit": 200}, "10k cap"),
    ],
)
def test_search_limits_are_refused_with_a_400(
    client: httpx.Client, fields: dict[str, Any], why: str
) -> None:
    response = client.post(SEARCH, json=search_body(**fields))
    assert response.status_code == 400, why
    body = response.json()
    assert body["status"] == "error"
    assert body["category"] == "VALIDATION_ERROR"
    assert body["correlationId"]


def test_search_offers_a_cursor_it_then_refuses_past_10000(fake: FakeHubSpot) -> None:
    client = client_for(fake)
    for i in range(10_050):
        fake.add("contacts", {"email": f"p{i}@example.com"})
    last_allowed = client.post(SEARCH, json=search_body(after="9800", limit=200)).json()
    assert last_allowed["total"] == 10_050
    assert len(last_allowed["results"]) == 200
    assert last_allowed["paging"]["next"]["after"] == "10000"
    beyond = client.post(SEARCH, json=search_body(after="10000", limit=200))
    assert beyond.status_code == 400


def test_equal_sort_values_do_not_come_back_in_id_order(
    fake: FakeHubSpot, client: httpx.Client
) -> None:
    ids = [fake.add("contacts", {"email": f"p{i}@example.com"}, updated_at=T0) for i in range(30)]
    later = fake.add("contacts", {"email": "late@example.com"}, updated_at=T0 + 5)
    by_date = [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}]
    paged = [r["id"] for r in search_all(client, sorts=by_date, limit=7)]
    assert paged[-1] == later
    assert sorted(paged[:-1], key=int) == ids
    assert paged[:-1] != ids  # ties are not broken by id
    assert paged == search_ids(client, sorts=by_date)  # but the order is stable between pages
    newest_first = search_ids(client, sorts=[{**by_date[0], "direction": "DESCENDING"}])
    assert newest_first[0] == later


def test_sorts_given_as_strings_are_ignored(fake: FakeHubSpot, client: httpx.Client) -> None:
    for i in range(20):
        fake.add("contacts", {"email": f"p{i}@example.com"}, updated_at=T0 + i)
    by_date = sorted(search_ids(client), key=lambda i: fake.get("contacts", i)["updatedAt"])
    assert search_ids(client, sorts=["lastmodifieddate"]) != by_date


def test_search_skips_archived_records_and_lags_behind_writes() -> None:
    fake = FakeHubSpot(index_lag_ms=5_000)
    client = client_for(fake)
    old = fake.add("contacts", {"email": "old@example.com"}, updated_at=T0 - 60_000)
    gone = fake.add("contacts", {"email": "gone@example.com"}, updated_at=T0 - 60_000)
    fake.archive("contacts", gone, at=T0 - 60_000)
    fresh = fake.add("contacts", {"email": "fresh@example.com"})
    assert search_ids(client) == [old]
    fake.clock.advance(5_000)
    assert set(search_ids(client)) == {old, fresh}


# ---------------------------------------------------------------------------- reads


def test_list_pages_by_id_and_archived_lists_only_archived(
    fake: FakeHubSpot, client: httpx.Client
) -> None:
    ids = [fake.add("companies", {"name": f"Co {i}", "domain": f"co{i}.example"}) for i in range(5)]
    fake.clock.advance(1000)
    fake.archive("companies", ids[1])
    first = client.get("/crm/v3/objects/companies", params={"limit": 2}).json()
    assert [r["id"] for r in first["results"]] == [ids[0], ids[2]]
    assert first["paging"]["next"]["after"] == ids[3]
    rest = client.get("/crm/v3/objects/companies", params={"limit": 2, "after": ids[3]}).json()
    assert [r["id"] for r in rest["results"]] == [ids[3], ids[4]]
    assert "paging" not in rest
    assert set(first["results"][0]["properties"]) == {
        "createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name",
    }  # fmt: skip

    archived = client.get("/crm/v3/objects/companies", params={"archived": "true"}).json()
    (record,) = archived["results"]
    assert record["id"] == ids[1]
    assert record["archived"] is True
    assert record["archivedAt"] == iso(T0 + 1000)

    assert client.get("/crm/v3/objects/companies", params={"limit": 101}).status_code == 400


def test_get_one_by_id_or_email_and_hubspots_404(fake: FakeHubSpot, client: httpx.Client) -> None:
    ann = fake.add("contacts", {"email": "ann@example.com", "firstname": "Ann"})
    got = client.get(f"/crm/v3/objects/contacts/{ann}", params={"properties": "firstname"})
    assert got.json()["properties"]["firstname"] == "Ann"
    by_email = client.get(
        "/crm/v3/objects/contacts/ANN@example.com", params={"idProperty": "email"}
    )
    assert by_email.json()["id"] == ann

    fake.archive("contacts", ann)
    missing = client.get(f"/crm/v3/objects/contacts/{ann}")
    assert missing.status_code == 404
    assert missing.json()["category"] == "OBJECT_NOT_FOUND"
    assert missing.json()["context"] == {"id": [ann]}
    archived = client.get(f"/crm/v3/objects/contacts/{ann}", params={"archived": "true"})
    assert archived.json()["archived"] is True


def test_batch_read_reports_unknown_ids_in_a_207(fake: FakeHubSpot, client: httpx.Client) -> None:
    ann = fake.add("contacts", {"email": "ann@example.com"})
    body = {"inputs": [{"id": ann}, {"id": "999"}], "properties": ["email"]}
    body["propertiesWithHistory"] = []
    response = client.post("/crm/v3/objects/contacts/batch/read", json=body)
    assert response.status_code == 207
    result = response.json()
    assert [r["id"] for r in result["results"]] == [ann]
    (error,) = result["errors"]
    assert error["category"] == "OBJECT_NOT_FOUND"
    assert error["context"] == {"ids": ["999"]}
    assert result["numErrors"] == 1


# ---------------------------------------------------------------------------- batch writes

BATCH = "/crm/v3/objects/contacts/batch"


def refuse_bad_phone(object_type: str, properties: dict[str, str]) -> str | None:
    if properties.get("phone") == "bad":
        return "phone is not a valid phone number"
    return None


def test_one_bad_input_fails_the_whole_batch_without_trace_ids(
    fake: FakeHubSpot, client: httpx.Client
) -> None:
    fake.reject_when(refuse_bad_phone)
    inputs = [
        {"properties": {"email": "a@example.com"}},
        {"properties": {"email": "b@example.com", "phone": "bad"}},
    ]
    response = client.post(f"{BATCH}/create", json={"inputs": inputs})
    assert response.status_code == 400
    body = response.json()
    assert body["category"] == "VALIDATION_ERROR"
    assert body["message"].startswith("Property values were not valid: [")
    assert fake.all("contacts") == []  # nothing was written


def test_trace_ids_turn_a_bad_input_into_a_207_and_the_rest_is_written(
    fake: FakeHubSpot, client: httpx.Client
) -> None:
    fake.reject_when(refuse_bad_phone)
    existing = fake.add("contacts", {"email": "taken@example.com"})
    inputs = [
        {"objectWriteTraceId": "t1", "properties": {"email": "a@example.com"}},
        {"objectWriteTraceId": "t2", "properties": {"email": "b@example.com", "phone": "bad"}},
        {"objectWriteTraceId": "t3", "properties": {"email": "TAKEN@example.com"}},
    ]
    response = client.post(f"{BATCH}/create", json={"inputs": inputs})
    assert response.status_code == 207
    body = response.json()
    assert body["status"] == "COMPLETE"
    assert body["numErrors"] == 2
    (created,) = body["results"]
    assert created["properties"]["email"] == "a@example.com"
    assert created["objectWriteTraceId"] == "t1"
    invalid, conflict = sorted(body["errors"], key=lambda e: e["context"]["objectWriteTraceId"])
    assert invalid["category"] == "VALIDATION_ERROR"
    assert invalid["context"] == {"objectWriteTraceId": ["t2"]}
    assert conflict["category"] == "CONFLICT"
    assert conflict["message"] == f"Contact already exists. Existing ID: {existing}"
    assert conflict["context"] == {"objectWriteTraceId": ["t3"], "existingId": [existing]}
    assert {c["properties"]["email"] for c in fake.all("contacts")} == {
        "a@example.com", "taken@example.com",
    }  # fmt: skip


def test_an_existing_email_fails_a_plain_batch_create_with_409(
    fake: FakeHubSpot, client: httpx.Client
) -> None:
    existing = fake.add("contacts", {"email": "taken@example.com"})
    response = client.post(
        f"{BATCH}/create", json={"inputs": [{"properties": {"email": "taken@example.com"}}]}
    )
    assert response.status_code == 409
    assert response.json()["message"] == f"Contact already exists. Existing ID: {existing}"


def test_batch_update_applies_the_known_ids_and_reports_the_unknown_in_a_207(
    fake: FakeHubSpot, client: httpx.Client
) -> None:
    ann = fake.add("contacts", {"email": "ann@example.com", "firstname": "Ann", "phone": "1"})
    fake.clock.advance(60_000)
    inputs = [
        {"id": ann, "properties": {"firstname": "Anne", "phone": ""}},
        {"id": "424242", "properties": {"firstname": "Nobody"}},
    ]
    response = client.post(f"{BATCH}/update", json={"inputs": inputs})
    assert response.status_code == 207
    body = response.json()
    (updated,) = body["results"]
    assert updated["id"] == ann
    assert updated["properties"]["firstname"] == "Anne"
    (error,) = body["errors"]
    assert error["category"] == "OBJECT_NOT_FOUND"
    assert error["message"].startswith("Could not get some CONTACT objects")
    assert error["context"] == {"ids": ["424242"]}

    stored = fake.get("contacts", ann)
    assert "phone" not in stored["properties"] or stored["properties"]["phone"] is None  # cleared
    assert stored["updatedAt"] == iso(T0 + 60_000)
    assert stored["properties"]["lastmodifieddate"] == iso(T0 + 60_000)


def test_batch_update_all_good_is_a_200(fake: FakeHubSpot, client: httpx.Client) -> None:
    ann = fake.add("contacts", {"email": "ann@example.com"})
    response = client.post(
        f"{BATCH}/update", json={"inputs": [{"id": ann, "properties": {"firstname": "A"}}]}
    )
    assert response.status_code == 200
    assert set(response.json()) == {"status", "results", "startedAt", "completedAt"}


def test_upsert_by_email_updates_or_creates(fake: FakeHubSpot, client: httpx.Client) -> None:
    ann = fake.add("contacts", {"email": "ann@example.com"})
    inputs = [
        {"id": "ANN@Example.com", "idProperty": "email", "properties": {"firstname": "Ann"}},
        {"id": "new@example.com", "idProperty": "email", "properties": {"firstname": "New"}},
    ]
    response = client.post(f"{BATCH}/upsert", json={"inputs": inputs})
    assert response.status_code == 200
    results = {r["properties"]["firstname"]: r for r in response.json()["results"]}
    assert results["Ann"]["id"] == ann
    assert results["Ann"]["new"] is False
    assert results["New"]["new"] is True
    assert fake.get("contacts", results["New"]["id"])["properties"]["email"] == "new@example.com"

    by_name = [{"id": "Ann", "idProperty": "firstname", "properties": {"lastname": "X"}}]
    refused = client.post(f"{BATCH}/upsert", json={"inputs": by_name})
    assert refused.status_code == 400
    assert refused.json()["message"].startswith(
        "Unable to perform update/upsert by non-unique 0-1 property firstname"
    )


def test_more_inputs_than_the_batch_limit_are_refused(
    fake: FakeHubSpot, client: httpx.Client
) -> None:
    inputs = [{"properties": {"email": f"p{i}@example.com"}} for i in range(101)]
    response = client.post(f"{BATCH}/create", json={"inputs": inputs})
    assert response.status_code == 400
    assert response.json()["category"] == "VALIDATION_ERROR"
    assert fake.all("contacts") == []
    small = FakeHubSpot(batch_limit=10)
    assert (
        client_for(small).post(f"{BATCH}/create", json={"inputs": inputs[:11]}).status_code == 400
    )


def test_batch_archive_is_a_204_and_archives(fake: FakeHubSpot, client: httpx.Client) -> None:
    ann = fake.add("contacts", {"email": "ann@example.com"})
    response = client.post(f"{BATCH}/archive", json={"inputs": [{"id": ann}, {"id": "999"}]})
    assert response.status_code == 204
    assert fake.get("contacts", ann)["archived"] is True


# ---------------------------------------------------------------------------- rate limits


def test_rate_limit_headers_and_the_burst_429() -> None:
    fake = FakeHubSpot(burst_limit=3)
    client = client_for(fake)
    answers = [client.get("/crm/v3/objects/contacts") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    headers = answers[0].headers
    assert headers["X-HubSpot-RateLimit-Max"] == "3"
    assert headers["X-HubSpot-RateLimit-Remaining"] == "2"
    assert headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert "X-HubSpot-RateLimit-Daily" not in headers
    body = answers[3].json()
    assert body["errorType"] == "RATE_LIMIT"
    assert body["policyName"] == "TEN_SECONDLY_ROLLING"
    assert body["message"] == "You have reached your ten_secondly_rolling limit."
    fake.clock.advance(10_000)  # the rolling window has moved on
    assert client.get("/crm/v3/objects/contacts").status_code == 200


def test_the_daily_quota_429_and_its_reset() -> None:
    fake = FakeHubSpot(daily_limit=2)
    client = client_for(fake)
    first = client.get("/crm/v3/objects/contacts")
    assert first.headers["X-HubSpot-RateLimit-Daily"] == "2"
    assert first.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "1"
    assert client.post(SEARCH, json=search_body()).status_code == 200  # counts for the day too
    spent = client.get("/crm/v3/objects/contacts")
    assert spent.status_code == 429
    assert spent.json()["policyName"] == "DAILY"
    midnight = (fake.now() // 86_400_000 + 1) * 86_400_000
    fake.clock.advance(midnight - fake.now())
    assert client.get("/crm/v3/objects/contacts").status_code == 200


def test_search_has_no_rate_headers_and_its_own_secondly_limit() -> None:
    fake = FakeHubSpot(burst_limit=1, search_limit=2)
    client = client_for(fake)
    answers = [client.post(SEARCH, json=search_body()) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert not any(h.lower().startswith("x-hubspot-ratelimit") for h in answers[0].headers)
    assert answers[2].json()["message"] == "You have reached your secondly limit."
    assert client.get("/crm/v3/objects/contacts").status_code == 200  # not in the burst count
    fake.clock.advance(1_000)
    assert client.post(SEARCH, json=search_body()).status_code == 200


# ---------------------------------------------------------------------------- faults


def test_fail_next_answers_without_applying(fake: FakeHubSpot, client: httpx.Client) -> None:
    fake.fail_next(2, status=502, path="/batch/create", method="POST")
    create = {"inputs": [{"properties": {"email": "a@example.com"}}]}
    assert client.get("/crm/v3/objects/contacts").status_code == 200  # does not match
    assert client.post(f"{BATCH}/create", json=create).status_code == 502
    assert client.post(f"{BATCH}/create", json=create).status_code == 502
    assert fake.all("contacts") == []
    assert client.post(f"{BATCH}/create", json=create).status_code == 201
    assert fake.calls("POST", "/batch/create") == 3


def test_a_timeout_after_the_write_was_applied(fake: FakeHubSpot, client: httpx.Client) -> None:
    fake.fail_next(path="/batch/upsert", after_apply=True, exception=httpx.ReadTimeout)
    upsert = {"inputs": [{"id": "a@example.com", "idProperty": "email", "properties": {}}]}
    with pytest.raises(httpx.ReadTimeout):
        client.post(f"{BATCH}/upsert", json=upsert)
    assert [c["properties"]["email"] for c in fake.all("contacts")] == ["a@example.com"]
    replay = client.post(f"{BATCH}/upsert", json=upsert)  # the retry is harmless
    assert replay.json()["results"][0]["new"] is False
    assert len(fake.all("contacts")) == 1

    fake.fail_next(path="/batch/update", after_apply=True, status=500)
    (contact,) = fake.all("contacts")
    update = {"inputs": [{"id": contact["id"], "properties": {"firstname": "Ann"}}]}
    assert client.post(f"{BATCH}/update", json=update).status_code == 500
    assert fake.get("contacts", contact["id"])["properties"]["firstname"] == "Ann"


# ---------------------------------------------------------------------------- merge


def test_merge_makes_a_new_record_that_the_old_ids_lead_to(
    fake: FakeHubSpot, client: httpx.Client
) -> None:
    primary = fake.add("contacts", {"email": "ann@example.com", "firstname": "Ann"})
    secondary = fake.add("contacts", {"email": "ann@work.example", "firstname": "A", "phone": "5"})
    fake.clock.advance(1_000)
    merged = fake.merge("contacts", primary, secondary)
    assert merged not in (primary, secondary)

    record = fake.get("contacts", merged)["properties"]
    assert record["hs_merged_object_ids"] == f"{primary};{secondary}"
    assert record["firstname"] == "Ann"  # the primary's value wins
    assert record["phone"] == "5"  # the secondary fills the gaps
    assert record["email"] == "ann@example.com"
    assert record["hs_additional_emails"] == "ann@work.example"
    assert record["lastmodifieddate"] == iso(T0 + 1_000)

    for old in (primary, secondary):
        got = client.get(f"/crm/v3/objects/contacts/{old}")
        assert got.status_code == 200
        assert got.json()["id"] == merged
    assert search_ids(client) == [merged]
    listing = client.get("/crm/v3/objects/contacts").json()["results"]
    assert [r["id"] for r in listing] == [merged]
    assert (
        client.get("/crm/v3/objects/contacts", params={"archived": "true"}).json()["results"] == []
    )

    # the merged-away e-mail still finds the merged contact
    upsert = [{"id": "ann@work.example", "idProperty": "email", "properties": {"lastname": "L"}}]
    answer = client.post(f"{BATCH}/upsert", json={"inputs": upsert}).json()
    assert answer["results"][0]["id"] == merged


def test_merge_through_the_api_and_the_older_keep_the_primary_behaviour() -> None:
    fake = FakeHubSpot(merge_keeps_primary_id=True)
    client = client_for(fake)
    primary = fake.add("companies", {"name": "Acme"})
    secondary = fake.add("companies", {"name": "ACME Inc", "domain": "acme.example"})
    body = {"primaryObjectId": primary, "objectIdToMerge": secondary}
    response = client.post("/crm/v3/objects/companies/merge", json=body)
    assert response.status_code == 200
    assert response.json()["id"] == primary
    props = fake.get("companies", primary)["properties"]
    assert props["hs_merged_object_ids"] == secondary
    assert props["domain"] == "acme.example"
    assert client.get(f"/crm/v3/objects/companies/{secondary}").json()["id"] == primary


# ---------------------------------------------------------------------------- validation hook


def test_a_validator_violation_fails_the_request_and_is_recorded() -> None:
    seen: list[str] = []

    def validator(request: httpx.Request) -> None:
        seen.append(request.url.path)
        if request.method == "POST":
            raise AssertionError("body is not valid")

    fake = FakeHubSpot(validator=validator, oauth_client=("c", "s", "r"))
    client = client_for(fake)
    assert client.get("/crm/v3/objects/contacts").status_code == 200
    with pytest.raises(AssertionError, match="body is not valid"):
        client.post(SEARCH, json={})
    assert [message for _, message in fake.violations] == ["body is not valid"]
    client.post("/oauth/v1/token", data={"grant_type": "refresh_token"})  # not a CRM request
    assert seen == ["/crm/v3/objects/contacts", SEARCH]
    assert fake.calls() == 2  # the refused request is not among those received


def test_add_accepts_datetimes_and_explicit_ids(fake: FakeHubSpot) -> None:
    when = datetime(2024, 1, 2, 3, 4, 5, 678_000, tzinfo=timezone.utc)
    fake.add("companies", {"name": "Old"}, id="500", updated_at=when)
    assert fake.get("companies", "500")["updatedAt"] == "2024-01-02T03:04:05.678Z"
    assert fake.add("companies", {"name": "Next"}) == "501"


# ---------------------------------------------------------------------------- against the spec


@pytest.fixture
def validated() -> tuple[FakeHubSpot, httpx.Client]:
    specs = pytest.importorskip("synchub.testing.specs")
    validator = specs.hubspot_validator(specs.HUBSPOT_SEARCH_SORT_OBJECTS)
    fake = FakeHubSpot(validator=validator)
    return fake, client_for(fake)


def test_search_requests_the_fake_answers_are_spec_valid(
    validated: tuple[FakeHubSpot, httpx.Client],
) -> None:
    fake, client = validated
    for i in range(15):
        fake.add("companies", {"name": f"Co {i}"}, updated_at=T0 + i)
    window = [
        eq("hs_lastmodifieddate", str(T0 + 2), "GTE"),
        {"propertyName": "hs_object_id", "operator": "IN", "values": [str(i) for i in range(30)]},
    ]
    records = search_all(
        client,
        path="/crm/v3/objects/companies/search",
        filterGroups=[{"filters": window}],
        sorts=[{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
        properties=["name"],
        limit=5,
    )
    assert len(records) == 13
    assert fake.violations == []


def test_batch_requests_the_fake_answers_are_spec_valid(
    validated: tuple[FakeHubSpot, httpx.Client],
) -> None:
    fake, client = validated
    created = client.post(
        f"{BATCH}/create",
        json={"inputs": [{"properties": {"email": "a@example.com"}, "associations": []}]},
    )
    assert created.status_code == 201
    contact = created.json()["results"][0]["id"]
    calls = [
        ("update", {"inputs": [{"id": contact, "properties": {"firstname": "A"}}]}),
        ("upsert", {"inputs": [{"id": "b@example.com", "idProperty": "email", "properties": {}}]}),
        ("read", {"inputs": [{"id": contact}], "properties": [], "propertiesWithHistory": []}),
        ("archive", {"inputs": [{"id": contact}]}),
    ]
    for operation, body in calls:
        assert client.post(f"{BATCH}/{operation}", json=body).status_code < 300, operation
    with pytest.raises(AssertionError):  # the validator knows HubSpot's 100-input limit too
        client.post(f"{BATCH}/archive", json={"inputs": [{"id": str(i)} for i in range(101)]})
    assert len(fake.violations) == 1
