"""Erasure of HubSpot contacts (issue 20): ``POST /crm/v3/objects/contacts/gdpr-delete`` by id or
by e-mail, against the fake HubSpot whose every request is checked against HubSpot's OpenAPI file
(the ``fake`` fixture fails a test that sent anything the spec refuses)."""

from __future__ import annotations

import json

import httpx
import pytest

from plugins.hubspot.tests.conftest import TOKEN, make_connector
from plugins.hubspot.tests.fake_hubspot import FakeHubSpot
from synchub.connector import ErasureResult, ErasureTarget
from synchub_hubspot import ERASE_SCOPE

GDPR = "/crm/v3/objects/contacts/gdpr-delete"
STREAMS = {
    "contacts": {"index_lag_seconds": 0, "lookback_seconds": 0},
    "companies": {"index_lag_seconds": 0, "lookback_seconds": 0},
}


def erase(fake: FakeHubSpot, *targets: ErasureTarget, **settings) -> list[ErasureResult]:
    stream = make_connector(fake, settings=settings or None).streams()["contacts"]
    return list(stream.erase(list(targets)))


def sent(fake: FakeHubSpot) -> list[dict]:
    """The bodies of the GDPR deletes the fake received, in order."""
    return [json.loads(r.content) for r in fake.requests if r.url.path == GDPR]


def test_erase_by_id_sends_the_documented_request_and_confirms(fake: FakeHubSpot) -> None:
    ann = fake.add("contacts", {"email": "ann@example.com", "firstname": "Ann"})
    bob = fake.add("contacts", {"email": "bob@example.com", "firstname": "Bob"})
    target = ErasureTarget("g-ann", external_id=ann, emails=["ann@example.com"])

    [result] = erase(fake, target)

    assert result.status == "confirmed" and result.target is target
    assert sent(fake) == [{"objectId": ann}]  # the id is enough: no request by e-mail
    request = next(r for r in fake.requests if r.url.path == GDPR)
    assert request.method == "POST" and request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert fake.gdpr_deleted == [ann]
    assert [c["id"] for c in fake.all("contacts")] == [bob]
    assert fake.all("contacts", archived=True) == []  # gone for good, not in the recycle bin
    assert fake.blocklist == set()


def test_the_fake_refuses_a_gdpr_delete_the_spec_does_not_allow(fake: FakeHubSpot) -> None:
    ann = fake.add("contacts", {"email": "ann@example.com"})
    client = httpx.Client(transport=fake.transport, base_url="https://api.hubapi.com",
                          headers={"Authorization": f"Bearer {TOKEN}"})
    with pytest.raises(AssertionError, match="objectId"):
        client.post(GDPR, json={"id": ann})  # objectId is required
    assert len(fake.violations) == 1
    fake.violations.clear()  # seen; the fixture checks that nothing else was refused
    assert fake.gdpr_deleted == [] and [c["id"] for c in fake.all("contacts")] == [ann]
    # The same request, well formed, is accepted by the validator and carried out.
    assert client.post(GDPR, json={"objectId": ann}).status_code == 204
    assert fake.gdpr_deleted == [ann]


def test_an_id_hubspot_no_longer_knows_falls_back_to_the_email(fake: FakeHubSpot) -> None:
    # The hub's id is stale (say the contact was re-created in HubSpot under a new id).
    ann = fake.add("contacts", {"email": "ann@example.com"})
    target = ErasureTarget("g-ann", external_id="9999", emails=["Ann@Example.com", "ann@other.example"])

    [result] = erase(fake, target)

    assert result.status == "confirmed"
    assert sent(fake) == [
        {"objectId": "9999"},
        {"objectId": "Ann@Example.com", "idProperty": "email"},
        {"objectId": "ann@other.example", "idProperty": "email"},
    ]
    assert fake.gdpr_deleted == [ann] and fake.all("contacts") == []
    assert fake.blocklist == {"ann@other.example"}  # HubSpot blocks the address it did not hold
    assert "ann@" not in (result.detail or "").lower()


def test_a_contact_hubspot_does_not_hold_is_confirmed_as_not_held(fake: FakeHubSpot) -> None:
    ann = fake.add("contacts", {"email": "ann@example.com"})
    target = ErasureTarget("g-ann", external_id=ann)
    first = erase(fake, target)
    again = erase(fake, target)  # the hub asks again (a repeated run): nothing is left
    unknown = erase(fake, ErasureTarget("g-x", external_id="424242"))

    assert [r.status for r in [*first, *again, *unknown]] == ["confirmed"] * 3
    assert first[0].detail is not None and "not held" not in first[0].detail
    assert again[0].detail is not None and again[0].detail.startswith("not held")
    assert unknown[0].detail is not None and unknown[0].detail.startswith("not held")
    assert fake.gdpr_deleted == [ann]


def test_only_an_email_known_erases_by_email(fake: FakeHubSpot) -> None:
    ann = fake.add("contacts", {"email": "ann@example.com"})
    [result] = erase(fake, ErasureTarget("g-ann", emails=["ann@example.com"]))
    assert result.status == "confirmed"
    assert sent(fake) == [{"objectId": "ann@example.com", "idProperty": "email"}]
    assert fake.gdpr_deleted == [ann]


@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_transient_failure_is_retried_and_then_succeeds(fake: FakeHubSpot, status: int) -> None:
    ann = fake.add("contacts", {"email": "ann@example.com"})
    fake.fail_next(2, status=status, path="gdpr-delete")
    [result] = erase(fake, ErasureTarget("g-ann", external_id=ann))
    assert result.status == "confirmed"
    assert fake.calls("POST", "gdpr-delete") == 3
    assert fake.gdpr_deleted == [ann]


def test_a_persistent_failure_is_failed_and_retryable_without_secrets(fake: FakeHubSpot) -> None:
    ann = fake.add("contacts", {"email": "ann@example.com"})
    fake.fail_next(50, status=503, path="gdpr-delete",
                   body={"status": "error", "message": f"upstream down for ann@example.com ({TOKEN})"})
    [result] = erase(fake, ErasureTarget("g-ann", external_id=ann, emails=["ann@example.com"]))
    assert result.status == "failed" and result.retryable
    assert "503" in (result.detail or "")
    assert TOKEN not in (result.detail or "")
    assert "ann@example.com" not in (result.detail or "")
    assert fake.calls("POST", "gdpr-delete") == 5  # max_attempts, then the hub asks next run
    assert fake.gdpr_deleted == []


def test_a_validation_error_is_failed_and_not_retried(fake: FakeHubSpot) -> None:
    ann = fake.add("contacts", {"email": "ann@example.com"})
    fake.fail_next(1, status=400, path="gdpr-delete",
                   body={"status": "error", "category": "VALIDATION_ERROR", "message": "Invalid objectId"})
    [result] = erase(fake, ErasureTarget("g-ann", external_id=ann))
    assert result.status == "failed" and not result.retryable
    assert "Invalid objectId" in (result.detail or "")
    assert fake.calls("POST", "gdpr-delete") == 1


def test_a_missing_scope_is_failed_retryable_and_names_the_scope(fake: FakeHubSpot) -> None:
    ann = fake.add("contacts", {"email": "ann@example.com"})
    fake.fail_next(1, status=403, path="gdpr-delete",
                   body={"status": "error", "category": "MISSING_SCOPES",
                         "message": "This app hasn't been granted all required scopes to make this call."})
    [result] = erase(fake, ErasureTarget("g-ann", external_id=ann))
    assert result.status == "failed" and result.retryable
    assert ERASE_SCOPE in (result.detail or "") and "MISSING_SCOPES" in (result.detail or "")


def test_rejected_credentials_fail_every_target_after_one_request(fake: FakeHubSpot) -> None:
    wrong = "pat-na1-wrong-7d1e44c0-secret"
    ann = fake.add("contacts", {"email": "ann@example.com"})
    results = erase(fake, ErasureTarget("g-ann", external_id=ann), ErasureTarget("g-bob", emails=["bob@example.com"]),
                    token=wrong)
    assert [(r.status, r.retryable) for r in results] == [("failed", True), ("failed", True)]
    for r in results:
        assert ERASE_SCOPE in (r.detail or "") and wrong not in (r.detail or "")
    assert fake.calls("POST", "gdpr-delete") == 1  # no point sending the others
    assert fake.gdpr_deleted == []


def test_one_failing_target_does_not_stop_the_others(fake: FakeHubSpot) -> None:
    ids = [fake.add("contacts", {"email": f"p{i}@example.com"}) for i in range(3)]
    targets = [ErasureTarget(f"g{i}", external_id=ids[i]) for i in range(3)]
    results = make_connector(fake).streams()["contacts"].erase(targets)
    first = next(results)
    fake.fail_next(1, status=400, path="gdpr-delete")  # the second person's request is refused
    rest = list(results)
    assert [(r.target.golden_id, r.status, r.retryable) for r in [first, *rest]] == [
        ("g0", "confirmed", True), ("g1", "failed", False), ("g2", "confirmed", True)]
    assert fake.gdpr_deleted == [ids[0], ids[2]]


def test_an_unexpected_error_stays_with_its_target(fake: FakeHubSpot, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [fake.add("contacts", {"email": f"p{i}@example.com"}) for i in range(2)]
    stream = make_connector(fake).streams()["contacts"]
    real = stream._gdpr_delete

    def flaky(body: dict) -> bool:
        if body["objectId"] == ids[0]:
            raise ValueError("boom")
        return real(body)

    monkeypatch.setattr(stream, "_gdpr_delete", flaky)
    results = list(stream.erase([ErasureTarget("g0", external_id=ids[0]), ErasureTarget("g1", external_id=ids[1])]))
    assert [(r.status, r.retryable) for r in results] == [("failed", True), ("confirmed", True)]
    assert "ValueError: boom" in (results[0].detail or "")
    assert fake.gdpr_deleted == [ids[1]]


def test_only_the_contacts_stream_erases(fake: FakeHubSpot) -> None:
    streams = make_connector(fake, streams=STREAMS).streams()
    assert streams["contacts"].can_erase
    assert not streams["companies"].can_erase
    with pytest.raises(NotImplementedError):
        list(streams["companies"].erase([ErasureTarget("g", external_id="1")]))
    assert fake.calls("POST", "gdpr-delete") == 0
