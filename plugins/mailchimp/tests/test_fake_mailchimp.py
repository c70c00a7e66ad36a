"""The Mailchimp fake behaves as Mailchimp's Marketing API 3.0 does (see ``fake_mailchimp``), and
every request these tests send is accepted by the Marketing API's OpenAPI description."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from plugins.mailchimp.tests.fake_mailchimp import FakeMailchimp, iso, subscriber_hash
from synchub.testing.specs import MAILCHIMP_MERGE_FIELD_VALUES, mailchimp_validator

KEY = "0123456789abcdef0123456789abcdef-us6"
BASE = "https://us6.api.mailchimp.com/3.0"
T0 = 1_700_000_000_000  # the fake clock's start
MEMBERS = "/lists/list1/members"


def client_for(fake: FakeMailchimp, key: str = KEY, base: str = BASE) -> httpx.Client:
    return httpx.Client(
        transport=fake.transport, base_url=base, auth=httpx.BasicAuth("synchub", key)
    )


def member_path(email: str) -> str:
    return f"{MEMBERS}/{subscriber_hash(email)}"


def put(client: httpx.Client, email: str, **body: Any) -> httpx.Response:
    return client.put(
        member_path(email), json={"email_address": email, "status_if_new": "subscribed", **body}
    )


def problem(response: httpx.Response, status: int, title: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["title"] == title
    assert body["status"] == status
    assert body["type"].startswith("https://mailchimp.com/developer/")
    assert body["instance"]
    return body


@pytest.fixture
def fake() -> Iterator[FakeMailchimp]:
    fake = FakeMailchimp(api_key=KEY, validator=mailchimp_validator(MAILCHIMP_MERGE_FIELD_VALUES))
    fake.add_list("list1", "Newsletter")
    yield fake
    assert fake.violations == []  # every request a test sent passed the spec validator


@pytest.fixture
def client(fake: FakeMailchimp) -> httpx.Client:
    return client_for(fake)


@pytest.fixture
def bare() -> FakeMailchimp:
    """A fake without the validator, for requests the spec itself refuses."""
    fake = FakeMailchimp(api_key=KEY)
    fake.add_list("list1")
    return fake


# ---------------------------------------------------------------------------- auth, lists, routes


def test_ping_and_auth_errors(fake: FakeMailchimp, client: httpx.Client) -> None:
    assert fake.dc == "us6"
    assert client.get("/ping").json() == {"health_status": "Everything's Chimpy!"}
    wrong_key = client_for(fake, key="ffffffffffffffffffffffffffffffff-us6").get("/ping")
    body = problem(wrong_key, 401, "API Key Invalid")
    assert body["detail"].startswith("Your API key may be invalid")
    wrong_dc = client_for(fake, base="https://us1.api.mailchimp.com/3.0").get("/ping")
    problem(wrong_dc, 401, "API Key Invalid")
    assert fake.calls("GET", "/ping") == 3


def test_list_and_unknown_routes(
    fake: FakeMailchimp, client: httpx.Client, bare: FakeMailchimp
) -> None:
    fake.add_member("list1", "ann@example.com")
    fake.add_member("list1", "bob@example.com", status="unsubscribed")
    audience = client.get("/lists/list1").json()
    assert (audience["id"], audience["name"]) == ("list1", "Newsletter")
    assert audience["stats"]["member_count"] == 1
    assert audience["stats"]["unsubscribe_count"] == 1
    problem(client.get("/lists/nope"), 404, "Resource Not Found")
    with pytest.raises(AssertionError):  # the spec has no such path
        client.get("/lists/list1/nonsense")
    fake.violations.clear()
    plain = client_for(bare)
    problem(plain.get("/lists/list1/nonsense"), 404, "Resource Not Found")
    not_allowed = plain.put("/ping")
    problem(not_allowed, 405, "Method Not Allowed")
    assert not_allowed.headers["Allow"] == "GET"


# ---------------------------------------------------------------------------- members: shape, PUT


def test_member_has_the_api_shape_and_is_found_by_hash_email_or_contact_id(
    fake: FakeMailchimp, client: httpx.Client
) -> None:
    added = fake.add_member(
        "list1",
        "Ann@Example.com",
        merge_fields={"FNAME": "Ann", "LNAME": "Lee"},
        tags=("vip",),
        language="de",
        vip=True,
        location={"country_code": "DE"},
    )
    assert added["id"] == subscriber_hash("ann@example.com")
    assert added["email_address"] == "Ann@Example.com"
    for key in (added["id"], "ann@example.com", added["contact_id"]):
        assert client.get(f"{MEMBERS}/{key}").json() == added
    for name in (
        "unique_email_id", "contact_id", "web_id", "email_type", "interests", "stats",
        "ip_signup", "timestamp_signup", "ip_opt", "timestamp_opt", "member_rating",
        "email_client", "source", "list_id", "_links",
    ):  # fmt: skip
        assert name in added, name
    assert isinstance(added["web_id"], int)
    assert added["full_name"] == "Ann Lee"
    assert added["merge_fields"] == {
        "FNAME": "Ann", "LNAME": "Lee", "ADDRESS": "", "PHONE": "", "BIRTHDAY": "",
    }  # fmt: skip
    assert added["status"] == "subscribed"
    assert added["last_changed"] == iso(T0) == "2023-11-14T22:13:20+00:00"
    assert (added["language"], added["vip"]) == ("de", True)
    assert added["location"]["country_code"] == "DE"
    assert set(added["location"]) >= {"latitude", "longitude", "gmtoff", "timezone", "region"}
    assert [t["name"] for t in added["tags"]] == ["vip"] and added["tags_count"] == 1
    problem(client.get(member_path("nobody@example.com")), 404, "Resource Not Found")


def test_put_creates_with_status_if_new_and_updates_without_changing_status(
    fake: FakeMailchimp, client: httpx.Client
) -> None:
    created = put(client, "new@example.com", status_if_new="pending",
                  merge_fields={"FNAME": "Nia", "NOPE": "x"})  # fmt: skip
    assert created.status_code == 200, created.text
    assert created.json()["status"] == "pending"
    assert created.json()["merge_fields"]["FNAME"] == "Nia"
    assert fake.ignored_merge_fields == [("new@example.com", "NOPE")]

    fake.clock.advance(5_000)
    updated = put(client, "new@example.com", status_if_new="subscribed",
                  merge_fields={"LNAME": "Noor"}).json()  # fmt: skip
    assert updated["status"] == "pending"  # status_if_new only applies to new members
    assert updated["merge_fields"]["FNAME"] == "Nia" and updated["merge_fields"]["LNAME"] == "Noor"
    assert updated["last_changed"] == iso(T0 + 5_000)
    assert updated["contact_id"] == created.json()["contact_id"]

    confirmed = put(client, "new@example.com", status="subscribed").json()
    assert confirmed["status"] == "subscribed"
    address = {
        "addr1": "1 Main St",
        "city": "Berlin",
        "state": "BE",
        "zip": "10115",
        "country": "DE",
    }
    with_address = put(client, "new@example.com", merge_fields={"ADDRESS": address}).json()
    assert with_address["merge_fields"]["ADDRESS"]["city"] == "Berlin"
    partial = put(client, "new@example.com", merge_fields={"ADDRESS": {"addr1": "x"}})
    assert problem(partial, 400, "Invalid Resource")["detail"] == "Your merge fields were invalid."


def test_the_validator_is_live_and_refuses_what_the_spec_refuses(
    fake: FakeMailchimp, client: httpx.Client, bare: FakeMailchimp
) -> None:
    path = member_path("ann@example.com")
    with pytest.raises(AssertionError, match="status_if_new"):
        client.put(path, json={"email_address": "ann@example.com"})
    with pytest.raises(AssertionError, match="bogus"):
        client.put(path, json={"email_address": "ann@example.com", "status_if_new": "bogus"})
    with pytest.raises(AssertionError, match="count"):
        client.get(MEMBERS, params={"count": 1001})
    assert len(fake.violations) == 3
    assert fake.member("list1", "ann@example.com") is None
    fake.violations.clear()

    plain = client_for(bare)  # the fake refuses them too
    missing = plain.put(path, json={"email_address": "ann@example.com"})
    assert "status_if_new" in problem(missing, 400, "Invalid Resource")["detail"]
    problem(plain.get(MEMBERS, params={"count": 1001}), 400, "Invalid Resource")
    bad = plain.put(
        member_path("x"), json={"email_address": "not-an-email", "status_if_new": "subscribed"}
    )
    assert (
        problem(bad, 400, "Invalid Resource")["detail"] == "Please provide a valid email address."
    )


def test_put_under_a_hash_that_is_not_the_emails_is_refused(client: httpx.Client) -> None:
    wrong = client.put(member_path("other@example.com"),
                       json={"email_address": "ann@example.com", "status_if_new": "subscribed"})  # fmt: skip
    problem(wrong, 400, "Invalid Resource")
    by_email = client.put(f"{MEMBERS}/ann@example.com",
                          json={"email_address": "ann@example.com", "status_if_new": "subscribed"})  # fmt: skip
    assert by_email.status_code == 200


def test_compliance_state_refuses_resubscribing(fake: FakeMailchimp, client: httpx.Client) -> None:
    fake.add_member("list1", "gone@example.com")
    fake.set_status("list1", "gone@example.com", "unsubscribed")
    fake.add_member("list1", "bounced@example.com")
    fake.set_status("list1", "bounced@example.com", "cleaned")

    refused = put(client, "gone@example.com", status="subscribed")
    body = problem(refused, 400, "Member In Compliance State")
    assert body["detail"] == (
        "gone@example.com is in a compliance state due to unsubscribe, bounce, or compliance "
        "review and cannot be subscribed."
    )
    patched = client.patch(member_path("gone@example.com"), json={"status": "subscribed"})
    problem(patched, 400, "Member In Compliance State")
    problem(put(client, "bounced@example.com", status="pending"), 400, "Member In Compliance State")
    assert put(client, "gone@example.com", status="pending").json()["status"] == "pending"
    assert fake.member("list1", "bounced@example.com")["status"] == "cleaned"
    # without a status, PUT leaves an unsubscribed member alone (status_if_new does not apply)
    fake.add_member("list1", "quiet@example.com", status="unsubscribed")
    assert put(client, "quiet@example.com").json()["status"] == "unsubscribed"


def test_permanently_deleted_emails_are_forgotten(
    fake: FakeMailchimp, client: httpx.Client
) -> None:
    fake.add_member("list1", "forget@example.com")
    fake.add_member("list1", "other@example.com")
    deleted = client.post(f"{member_path('forget@example.com')}/actions/delete-permanent")
    assert deleted.status_code == 204
    problem(client.get(member_path("forget@example.com")), 404, "Resource Not Found")
    listed = client.get(MEMBERS).json()
    assert [m["email_address"] for m in listed["members"]] == ["other@example.com"]
    assert client.get(MEMBERS, params={"status": "archived"}).json()["total_items"] == 0

    refused = problem(put(client, "forget@example.com"), 400, "Forgotten Email Not Subscribed")
    assert refused["detail"] == (
        "forget@example.com was permanently deleted and cannot be re-imported. "
        "The contact must re-subscribe to get back on the list."
    )
    posted = client.post(MEMBERS, json={"email_address": "forget@example.com", "status": "pending"})
    problem(posted, 400, "Forgotten Email Not Subscribed")
    assert fake.member("list1", "forget@example.com") is None
    assert fake.members("list1") == [fake.member("list1", "other@example.com")]


def test_email_changes_keep_contact_id(fake: FakeMailchimp, client: httpx.Client) -> None:
    before = fake.add_member("list1", "old@example.com")
    fake.clock.advance(1_000)
    after = fake.change_email("list1", "old@example.com", "new@example.com")
    assert after["id"] == subscriber_hash("new@example.com") != before["id"]
    assert (after["contact_id"], after["web_id"]) == (before["contact_id"], before["web_id"])
    assert after["unique_email_id"] != before["unique_email_id"]
    assert after["last_changed"] == iso(T0 + 1_000)
    problem(client.get(member_path("old@example.com")), 404, "Resource Not Found")
    assert (
        client.get(f"{MEMBERS}/{before['contact_id']}").json()["email_address"] == "new@example.com"
    )

    # a PUT whose body names another address renames the member found at the hash
    renamed = client.put(member_path("new@example.com"),
                         json={"email_address": "third@example.com", "status_if_new": "subscribed"})  # fmt: skip
    assert renamed.json()["id"] == subscriber_hash("third@example.com")
    assert renamed.json()["contact_id"] == before["contact_id"]
    assert fake.member("list1", "new@example.com") is None


def test_archive_then_put_unarchives(fake: FakeMailchimp, client: httpx.Client) -> None:
    fake.add_member("list1", "arch@example.com")
    assert client.delete(member_path("arch@example.com")).status_code == 204
    assert client.get(member_path("arch@example.com")).json()["status"] == "archived"
    assert client.get(MEMBERS).json()["total_items"] == 0
    archived = client.get(MEMBERS, params={"status": "archived"}).json()
    assert [m["email_address"] for m in archived["members"]] == ["arch@example.com"]
    posted = client.post(
        MEMBERS, json={"email_address": "arch@example.com", "status": "subscribed"}
    )
    problem(posted, 400, "Member Exists")
    back = put(client, "arch@example.com", status_if_new="pending").json()
    assert back["status"] == "pending"  # no status given: status_if_new
    assert client.get(MEMBERS).json()["total_items"] == 1


def test_patch_and_post(fake: FakeMailchimp, client: httpx.Client) -> None:
    problem(client.patch(member_path("nobody@example.com"), json={"language": "fr"}), 404,
            "Resource Not Found")  # fmt: skip
    new = client.post(MEMBERS, json={"email_address": "p@example.com", "status": "subscribed",
                                     "tags": ["a", "b"], "merge_fields": {"FNAME": "Pat"}})  # fmt: skip
    assert new.status_code == 200 and new.json()["tags_count"] == 2
    again = client.post(MEMBERS, json={"email_address": "P@example.com", "status": "subscribed"})
    assert problem(again, 400, "Member Exists")["detail"].startswith("P@example.com is already")
    patched = client.patch(member_path("p@example.com"), json={"status": "unsubscribed",
                                                              "merge_fields": {"LNAME": "Poe"}})  # fmt: skip
    assert patched.json()["status"] == "unsubscribed"
    assert patched.json()["merge_fields"]["FNAME"] == "Pat"
    assert patched.json()["merge_fields"]["LNAME"] == "Poe"


# ---------------------------------------------------------------------------- batch subscribe


def batch(client: httpx.Client, members: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    params = extra.pop("params", None)
    response = client.post("/lists/list1", json={"members": members, **extra}, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def test_batch_subscribe_outcomes(fake: FakeMailchimp, client: httpx.Client) -> None:
    fake.add_member("list1", "old@example.com")
    fake.add_member("list1", "unsub@example.com", status="unsubscribed")
    fake.add_member("list1", "forget@example.com")
    fake.delete_permanent("list1", "forget@example.com")
    entries = [
        {
            "email_address": "new@example.com",
            "status": "subscribed",
            "merge_fields": {"FNAME": "N"},
        },
        {"email_address": "old@example.com", "status": "subscribed"},
        {"email_address": "not-an-email", "status": "subscribed"},
    ]
    first = batch(client, entries)
    assert [m["email_address"] for m in first["new_members"]] == ["new@example.com"]
    assert first["updated_members"] == [] and first["total_created"] == 1
    assert first["errors"] == [
        {
            "email_address": "old@example.com",
            "error": "old@example.com is already a list member. Use PUT to insert or update list members.",
            "error_code": "ERROR_CONTACT_EXISTS",
        },
        {
            "email_address": "not-an-email",
            "error": "not-an-email looks fake or invalid, please enter a real email address.",
            "error_code": "ERROR_GENERIC",
        },
    ]
    assert first["error_count"] == 2

    second = batch(client, [
        {"email_address": "old@example.com", "status": "subscribed", "merge_fields": {"FNAME": "O"}},
        {"email_address": "unsub@example.com", "status": "subscribed"},
        {"email_address": "forget@example.com", "status": "subscribed"},
    ], update_existing=True)  # fmt: skip
    assert [m["merge_fields"]["FNAME"] for m in second["updated_members"]] == ["O"]
    errors = {e["email_address"]: e for e in second["errors"]}
    assert errors["unsub@example.com"]["error_code"] == "ERROR_GENERIC"
    assert "is in a compliance state" in errors["unsub@example.com"]["error"]
    assert (
        "was permanently deleted and cannot be re-imported" in errors["forget@example.com"]["error"]
    )
    assert (second["total_updated"], second["error_count"]) == (1, 2)


def test_batch_duplicates_and_the_500_limit(
    fake: FakeMailchimp, client: httpx.Client, bare: FakeMailchimp
) -> None:
    twice = [
        {"email_address": "dup@example.com", "status": "subscribed"},
        {"email_address": "DUP@example.com", "status": "unsubscribed"},
    ]
    strict = batch(client, twice)
    assert strict["total_created"] == 1 and strict["error_count"] == 1
    assert strict["errors"][0]["email_address"] == "DUP@example.com"
    fake.delete_permanent("list1", "dup@example.com")
    skipped = batch(client, [{**e, "email_address": f"x{e['email_address'].lower()}"} for e in twice],
                    params={"skip_duplicate_check": "true"})  # fmt: skip
    assert (skipped["total_created"], skipped["error_count"]) == (1, 0)
    assert skipped["new_members"][0]["status"] == "subscribed"  # the first appearance wins

    many = [{"email_address": f"m{i}@example.com", "status": "subscribed"} for i in range(501)]
    with pytest.raises(AssertionError, match="500"):
        client.post("/lists/list1", json={"members": many})
    fake.violations.clear()
    refused = client_for(bare).post("/lists/list1", json={"members": many})
    problem(refused, 400, "Invalid Resource")
    assert bare.members("list1") == []


# ---------------------------------------------------------------------------- listing


def emails(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [m["email_address"] for m in response.json()["members"]]


def test_paging_covers_every_member_once(fake: FakeMailchimp, client: httpx.Client) -> None:
    for i in range(25):
        fake.add_member("list1", f"p{i:02d}@example.com", at=T0)
    first = client.get(MEMBERS).json()
    assert len(first["members"]) == 10 and first["total_items"] == 25
    seen: list[str] = []
    for offset in range(0, 25, 10):
        seen += emails(client.get(MEMBERS, params={"count": 10, "offset": offset}))
    assert sorted(seen) == [f"p{i:02d}@example.com" for i in range(25)]


def test_status_filter(fake: FakeMailchimp, client: httpx.Client) -> None:
    fake.add_member("list1", "s@example.com")
    fake.add_member("list1", "u@example.com", status="unsubscribed")
    fake.add_member("list1", "c@example.com", status="cleaned")
    fake.add_member("list1", "a@example.com")
    fake.archive("list1", "a@example.com")
    assert set(emails(client.get(MEMBERS))) == {"s@example.com", "u@example.com", "c@example.com"}
    for status, expected in (("unsubscribed", "u"), ("cleaned", "c"), ("archived", "a")):
        assert emails(client.get(MEMBERS, params={"status": status})) == [f"{expected}@example.com"]
    assert fake.members("list1", status="subscribed") == [fake.member("list1", "s@example.com")]


def test_since_and_before_are_exclusive_at_second_precision(
    fake: FakeMailchimp, client: httpx.Client, bare: FakeMailchimp
) -> None:
    fake.add_member("list1", "t0@example.com", at=T0)
    fake.add_member("list1", "t0half@example.com", at=T0 + 500)  # same second as T0
    fake.add_member("list1", "t1@example.com", at=T0 + 1_000)
    fake.add_member("list1", "t2@example.com", at=T0 + 2_000)

    def between(**params: str) -> set[str]:
        return set(emails(client.get(MEMBERS, params={"count": 100, **params})))

    assert between(since_last_changed=iso(T0)) == {"t1@example.com", "t2@example.com"}
    assert between(before_last_changed=iso(T0 + 2_000)) == {
        "t0@example.com", "t0half@example.com", "t1@example.com",
    }  # fmt: skip
    assert between(since_last_changed=iso(T0), before_last_changed=iso(T0 + 2_000)) == {
        "t1@example.com"
    }
    assert between(since_last_changed="2023-11-14T22:13:20Z") == between(since_last_changed=iso(T0))
    # an unencoded '+' arrives as a space: not a time
    unencoded = client_for(bare).get(f"{MEMBERS}?since_last_changed=2023-11-14T22:13:20+00:00")
    problem(unencoded, 400, "Invalid Resource")


def test_ties_do_not_come_back_in_insertion_order(
    fake: FakeMailchimp, client: httpx.Client
) -> None:
    added = [f"tie{i:02d}@example.com" for i in range(20)]
    for email in added:
        fake.add_member("list1", email, at=T0)
    fake.add_member("list1", "later@example.com", at=T0 + 60_000)
    params = {"count": 100, "sort_field": "last_changed", "sort_dir": "ASC"}
    ascending = emails(client.get(MEMBERS, params=params))
    assert ascending[-1] == "later@example.com"
    assert sorted(ascending[:-1]) == added and ascending[:-1] != added
    assert emails(client.get(MEMBERS, params=params)) == ascending  # stable between calls
    descending = emails(client.get(MEMBERS, params={**params, "sort_dir": "DESC"}))
    assert descending[0] == "later@example.com"
    unsorted = emails(client.get(MEMBERS, params={"count": 100}))
    assert sorted(unsorted) == sorted(ascending) and unsorted[:20] != added


def test_fields_and_exclude_fields(fake: FakeMailchimp, client: httpx.Client) -> None:
    fake.add_member("list1", "f@example.com", merge_fields={"FNAME": "Fay"})
    picked = client.get(
        MEMBERS, params={"fields": "members.email_address,members.merge_fields.FNAME,total_items"}
    )
    assert picked.json() == {
        "members": [{"email_address": "f@example.com", "merge_fields": {"FNAME": "Fay"}}],
        "total_items": 1,
    }
    dropped = client.get(
        MEMBERS, params={"exclude_fields": "members._links,members.stats,_links"}
    ).json()
    assert "_links" not in dropped and "stats" not in dropped["members"][0]
    assert dropped["members"][0]["email_address"] == "f@example.com"
    one = client.get(member_path("f@example.com"), params={"fields": "id,status"}).json()
    assert one == {"id": subscriber_hash("f@example.com"), "status": "subscribed"}


# ---------------------------------------------------------------------------- tags, merge fields


def test_member_tags(fake: FakeMailchimp, client: httpx.Client) -> None:
    fake.add_member("list1", "tag@example.com", tags=("Old",))
    path = f"{member_path('tag@example.com')}/tags"
    fake.clock.advance(3_000)
    body = {"tags": [{"name": "New", "status": "active"}, {"name": "old", "status": "inactive"}]}
    assert client.post(path, json=body).status_code == 204
    assert fake.tags_of("list1", "tag@example.com") == {"New"}
    listed = client.get(path).json()
    assert listed["total_items"] == 1
    assert listed["tags"][0]["name"] == "New"
    assert listed["tags"][0]["date_added"] == iso(T0 + 3_000)
    assert isinstance(listed["tags"][0]["id"], int)
    assert fake.member("list1", "tag@example.com")["last_changed"] == iso(T0 + 3_000)
    missing = client.post(f"{member_path('nobody@example.com')}/tags", json=body)
    problem(missing, 404, "Resource Not Found")


def test_merge_fields(fake: FakeMailchimp, client: httpx.Client) -> None:
    listed = client.get("/lists/list1/merge-fields").json()
    assert [(f["merge_id"], f["tag"], f["type"]) for f in listed["merge_fields"]] == [
        (1, "FNAME", "text"), (2, "LNAME", "text"), (3, "ADDRESS", "address"),
        (4, "PHONE", "phone"), (5, "BIRTHDAY", "birthday"),
    ]  # fmt: skip
    assert listed["total_items"] == 5 and listed["list_id"] == "list1"
    made = client.post("/lists/list1/merge-fields", json={"name": "Company name", "type": "text"})
    assert made.status_code == 200
    assert (made.json()["tag"], made.json()["merge_id"]) == ("COMPANYNAM", 6)
    again = client.post(
        "/lists/list1/merge-fields", json={"name": "x", "type": "text", "tag": "COMPANYNAM"}
    )
    problem(again, 400, "Invalid Resource")
    fake.add_merge_field("list1", "SHOE", type="number")
    saved = put(client, "m@example.com", merge_fields={"COMPANYNAM": "ACME", "SHOE": "42"}).json()
    assert saved["merge_fields"]["COMPANYNAM"] == "ACME" and saved["merge_fields"]["SHOE"] == 42
    page = client.get("/lists/list1/merge-fields", params={"count": 2, "offset": 6}).json()
    assert [f["tag"] for f in page["merge_fields"]] == ["SHOE"] and page["total_items"] == 7


# ---------------------------------------------------------------------------- limits and faults


def test_concurrency_cap_gives_a_bare_429(fake: FakeMailchimp) -> None:
    fake.latency = 0.3
    barrier = threading.Barrier(11)
    statuses: list[httpx.Response] = []

    def hit() -> None:
        with client_for(fake) as own:
            barrier.wait()
            statuses.append(own.get("/ping"))

    threads = [threading.Thread(target=hit) for _ in range(11)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    refused = [r for r in statuses if r.status_code == 429]
    assert len(refused) == 1 and sum(r.status_code == 200 for r in statuses) == 10
    assert refused[0].content == b"" and "json" not in refused[0].headers["content-type"]
    assert fake.max_in_flight == 11
    fake.latency = 0.0
    with client_for(fake) as again:
        assert again.get("/ping").status_code == 200


def test_fail_next_and_throttle_next(fake: FakeMailchimp, client: httpx.Client) -> None:
    fake.fail_next("GET", "/ping", status=503)
    problem(client.get("/ping"), 503, "Service Unavailable")
    fake.fail_next(status=500, body=b"")
    bare_500 = client.get("/ping")
    assert (bare_500.status_code, bare_500.content) == (500, b"")
    fake.fail_next(path_contains="/members", exception=httpx.ConnectTimeout)
    assert client.get("/ping").status_code == 200  # does not match
    with pytest.raises(httpx.ConnectTimeout):
        client.get(MEMBERS)
    fake.throttle_next(times=2, status=403)
    for _ in range(2):
        throttled = client.get("/ping")
        assert (throttled.status_code, throttled.content) == (403, b"")
        assert throttled.headers["content-type"] == "text/html"
    assert client.get("/ping").status_code == 200


def test_fail_next_after_apply_applies_then_fails(
    fake: FakeMailchimp, client: httpx.Client
) -> None:
    fake.fail_next("PUT", "/members/", exception=httpx.ReadTimeout, after_apply=True)
    with pytest.raises(httpx.ReadTimeout):
        put(client, "late@example.com", merge_fields={"FNAME": "Lou"})
    assert fake.member("list1", "late@example.com")["merge_fields"]["FNAME"] == "Lou"
    fake.fail_next("POST", "/tags", status=500, after_apply=True)
    failed = client.post(f"{member_path('late@example.com')}/tags",
                         json={"tags": [{"name": "t", "status": "active"}]})  # fmt: skip
    assert failed.status_code == 500
    assert fake.tags_of("list1", "late@example.com") == {"t"}
    assert fake.calls("PUT") == 1 and fake.calls(path_contains="/tags") == 1
