"""Erasure of Mailchimp audience members (issue 20): ``POST .../members/{hash}/actions/delete-permanent``
per address, against the fake Mailchimp whose every request is checked against the Mailchimp
OpenAPI file (the ``fake`` fixture fails a test that sent anything the spec refuses)."""

from __future__ import annotations

import httpx
import pytest

from plugins.mailchimp.tests.conftest import API_KEY, LIST, make_connector
from plugins.mailchimp.tests.fake_mailchimp import FakeMailchimp
from plugins.mailchimp.tests.test_mailchimp import out, posts
from synchub.connector import ErasureResult, ErasureTarget
from synchub_mailchimp import subscriber_hash

MEMBERS = f"/3.0/lists/{LIST}/members"


def delete_path(email: str) -> str:
    return f"{MEMBERS}/{subscriber_hash(email)}/actions/delete-permanent"


def erase(fake: FakeMailchimp, *targets: ErasureTarget, settings: dict | None = None,
          list_id: str = LIST) -> list[ErasureResult]:
    conn = make_connector(fake, settings=settings, streams={"newsletter": {"list_id": list_id}})
    return list(conn.streams()["newsletter"].erase(list(targets)))


def deletes(fake: FakeMailchimp) -> list[str]:
    """The paths of the permanent deletes the fake received, in order."""
    return [r.url.path for r in fake.requests if r.method == "POST" and r.url.path.endswith("/delete-permanent")]


def test_erase_sends_the_documented_request_and_confirms(fake: FakeMailchimp) -> None:
    ann = fake.add_member(LIST, "Ann@Example.com", merge_fields={"FNAME": "Ann"})
    fake.add_member(LIST, "bob@example.com")
    target = ErasureTarget("g-ann", external_id=ann["contact_id"], emails=["ann@example.com"])

    [result] = erase(fake, target)

    assert result.status == "confirmed" and result.target is target
    assert deletes(fake) == [delete_path("ann@example.com")]  # the hash of the lower-cased address
    # The contact_id was looked up first: it named the same member, which is deleted once.
    assert fake.calls("GET", f"{MEMBERS}/{ann['contact_id']}") == 1
    request = next(r for r in fake.requests if r.url.path.endswith("/delete-permanent"))
    assert request.content == b""  # the operation takes no body
    assert request.url.host == "us6.api.mailchimp.com" and request.headers["Authorization"].startswith("Basic ")
    assert fake.forgotten(LIST) == {"ann@example.com"}
    assert fake.member(LIST, "ann@example.com") is None
    assert [m["email_address"] for m in fake.members(LIST)] == ["bob@example.com"]
    assert fake.members(LIST, status="archived") == []
    assert "ann@" not in (result.detail or "").lower()


def test_the_fake_refuses_a_permanent_delete_the_spec_does_not_allow(fake: FakeMailchimp) -> None:
    fake.add_member(LIST, "ann@example.com")
    client = httpx.Client(transport=fake.transport, base_url=f"https://{fake.host}", auth=("synchub", API_KEY))
    with pytest.raises(AssertionError, match="bogus"):
        client.post(delete_path("ann@example.com"), params={"bogus": "1"})  # undeclared parameter
    with pytest.raises(AssertionError):
        client.delete(delete_path("ann@example.com"))  # the operation is a POST
    assert len(fake.violations) == 2
    fake.violations.clear()  # seen; the fixture checks that nothing else was refused
    assert fake.forgotten(LIST) == set() and fake.member(LIST, "ann@example.com") is not None
    assert client.post(delete_path("ann@example.com")).status_code == 204
    assert fake.forgotten(LIST) == {"ann@example.com"}


def test_an_address_mailchimp_does_not_hold_is_confirmed_as_not_held(fake: FakeMailchimp) -> None:
    fake.add_member(LIST, "ann@example.com")
    target = ErasureTarget("g-ann", emails=["ann@example.com"])
    first = erase(fake, target)
    again = erase(fake, target)  # asked again on a later run: nothing is left
    never = erase(fake, ErasureTarget("g-x", emails=["nobody@example.com"]))

    assert [r.status for r in [*first, *again, *never]] == ["confirmed"] * 3
    assert first[0].detail is not None and "not held" not in first[0].detail
    assert again[0].detail is not None and again[0].detail.startswith("not held")
    assert never[0].detail is not None and never[0].detail.startswith("not held")
    assert fake.forgotten(LIST) == {"ann@example.com"}


def test_every_address_and_the_member_the_id_names_are_erased(fake: FakeMailchimp) -> None:
    # Mailchimp's member changed address (contact_id stays); the hub knows the old address and
    # another one that was never in the audience.
    ann = fake.add_member(LIST, "ann@old.example")
    fake.clock.advance(1000)
    fake.change_email(LIST, "ann@old.example", "ann@new.example")
    target = ErasureTarget("g-ann", external_id=ann["contact_id"], emails=["ann@old.example", "ann@work.example"])

    [result] = erase(fake, target)

    assert result.status == "confirmed"
    assert sorted(deletes(fake)) == sorted(delete_path(e) for e in ("ann@old.example", "ann@work.example", "ann@new.example"))
    assert fake.forgotten(LIST) == {"ann@new.example"}
    assert fake.members(LIST) == []


@pytest.mark.parametrize("key", ["contact_id", "id"])
def test_the_id_alone_finds_the_member(fake: FakeMailchimp, key: str) -> None:
    ann = fake.add_member(LIST, "ann@example.com")
    [result] = erase(fake, ErasureTarget("g-ann", external_id=ann[key]))
    assert result.status == "confirmed"
    assert deletes(fake) == [delete_path("ann@example.com")]
    assert fake.forgotten(LIST) == {"ann@example.com"}


def test_an_id_mailchimp_does_not_know_is_not_held(fake: FakeMailchimp) -> None:
    [result] = erase(fake, ErasureTarget("g-x", external_id="0" * 32))
    assert result.status == "confirmed" and (result.detail or "").startswith("not held")
    assert deletes(fake) == []
    assert fake.calls("GET", f"/lists/{LIST}") == 2  # the member (404), then the audience (there)


def test_a_missing_audience_is_not_taken_for_not_held(fake: FakeMailchimp) -> None:
    results = erase(fake, ErasureTarget("a", emails=["a@example.com"]), ErasureTarget("b", emails=["b@example.com"]),
                    list_id="no-such-list")
    assert [(r.status, r.retryable) for r in results] == [("failed", True), ("failed", True)]
    assert "no audience no-such-list" in (results[0].detail or "")
    assert len(deletes(fake)) == 1  # the second person is not tried against a missing audience


@pytest.mark.parametrize("status, body", [(500, None), (503, None), (429, b"")])
def test_a_transient_failure_is_retried_and_then_succeeds(fake: FakeMailchimp, status: int, body) -> None:
    fake.add_member(LIST, "ann@example.com")
    fake.fail_next("POST", "delete-permanent", status=status, body=body, times=2)
    [result] = erase(fake, ErasureTarget("g-ann", emails=["ann@example.com"]))
    assert result.status == "confirmed"
    assert len(deletes(fake)) == 3
    assert fake.forgotten(LIST) == {"ann@example.com"}


def test_a_persistent_failure_is_failed_and_retryable_without_secrets(fake: FakeMailchimp) -> None:
    fake.add_member(LIST, "ann@example.com")
    body = {"type": "about:blank", "title": "Service Unavailable", "status": 503,
            "detail": f"ann@example.com could not be deleted (key {API_KEY})", "instance": "x"}
    fake.fail_next("POST", "delete-permanent", status=503, body=body, times=50)
    [result] = erase(fake, ErasureTarget("g-ann", emails=["ann@example.com"]))
    assert result.status == "failed" and result.retryable
    assert "503" in (result.detail or "")
    assert API_KEY not in (result.detail or "") and API_KEY.split("-")[0] not in (result.detail or "")
    assert "ann@example.com" not in (result.detail or "")
    assert len(deletes(fake)) == 5  # max_attempts, then the hub asks again next run
    assert fake.forgotten(LIST) == set()


def test_a_validation_error_is_failed_and_not_retried(fake: FakeMailchimp) -> None:
    fake.add_member(LIST, "ann@example.com")
    body = {"type": "about:blank", "title": "Invalid Resource", "status": 400,
            "detail": "The resource submitted could not be validated.", "instance": "x"}
    fake.fail_next("POST", "delete-permanent", status=400, body=body)
    [result] = erase(fake, ErasureTarget("g-ann", emails=["ann@example.com"]))
    assert result.status == "failed" and not result.retryable
    assert "Invalid Resource" in (result.detail or "")
    assert len(deletes(fake)) == 1


def test_a_forbidden_answer_is_failed_retryable_and_says_what_access_is_needed(fake: FakeMailchimp) -> None:
    fake.add_member(LIST, "ann@example.com")
    body = {"type": "about:blank", "title": "Forbidden", "status": 403,
            "detail": "You don't have permission to access this resource.", "instance": "x"}
    fake.fail_next("POST", "delete-permanent", status=403, body=body)
    [result] = erase(fake, ErasureTarget("g-ann", emails=["ann@example.com"]))
    assert result.status == "failed" and result.retryable
    assert "Forbidden" in (result.detail or "") and "may delete contacts" in (result.detail or "")


def test_a_rejected_api_key_fails_every_target_after_one_request(fake: FakeMailchimp) -> None:
    wrong = "ffffffffffffffffffffffffffffffff-us6"
    results = erase(fake, ErasureTarget("a", emails=["a@example.com"]), ErasureTarget("b", emails=["b@example.com"]),
                    settings={"api_key": wrong})
    assert [(r.status, r.retryable) for r in results] == [("failed", True), ("failed", True)]
    for r in results:
        assert "API Key Invalid" in (r.detail or "") and wrong not in (r.detail or "")
    assert len(deletes(fake)) == 1


def test_one_failing_target_does_not_stop_the_others(fake: FakeMailchimp) -> None:
    for i in range(3):
        fake.add_member(LIST, f"p{i}@example.com")
    targets = [ErasureTarget(f"g{i}", emails=[f"p{i}@example.com"]) for i in range(3)]
    results = make_connector(fake).streams()["newsletter"].erase(targets)
    first = next(results)
    fake.fail_next("POST", "delete-permanent", status=400)  # the second person's request is refused
    rest = list(results)
    assert [(r.target.golden_id, r.status, r.retryable) for r in [first, *rest]] == [
        ("g0", "confirmed", True), ("g1", "failed", False), ("g2", "confirmed", True)]
    assert fake.forgotten(LIST) == {"p0@example.com", "p2@example.com"}


@pytest.mark.parametrize("batch_times_out", [False, True])
def test_re_adding_an_erased_address_is_a_final_rejection(fake: FakeMailchimp, batch_times_out: bool) -> None:
    fake.add_member(LIST, "ann@example.com")
    [erased] = erase(fake, ErasureTarget("g-ann", emails=["ann@example.com"]))
    assert erased.status == "confirmed"
    if batch_times_out:
        # The batch's outcome is unknown: its members go one by one as PUTs, refused the same way.
        fake.fail_next("POST", f"/lists/{LIST}$", status=500, times=10)
    stream = make_connector(fake).streams()["newsletter"]
    results = {r.golden_id: r for r in stream.write([out("g-ann", "ann@example.com"), out("g-ok", "ok@example.com")], [])}

    ann = results["g-ann"]
    assert not ann.ok and ann.final and "permanently deleted" in (ann.error or "")
    assert ann.attention is not None and ann.attention.kind == "needs_reoptin"
    assert results["g-ok"].ok
    assert fake.member(LIST, "ann@example.com") is None
    assert fake.calls("PUT") == (2 if batch_times_out else 0)
    if not batch_times_out:
        assert len(posts(fake, f"/lists/{LIST}")) == 1  # one batch, the refused member not sent again
