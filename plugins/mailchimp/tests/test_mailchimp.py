"""The Mailchimp connector against the fake Mailchimp: incremental reads, batch writes, and the
consent rules it enforces itself (RELIABILITY 4, 5, 13, 15, 16). Every request is checked
against the Mailchimp OpenAPI file by the ``fake`` fixture."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from plugins.mailchimp.tests.conftest import LIST, http_factory, make_connector
from plugins.mailchimp.tests.fake_mailchimp import FakeMailchimp
from synchub.connector import OutRecord, Record
from synchub.errors import AuthError, ConfigError
from synchub.testing import read_all
from synchub_mailchimp import data_centre, subscriber_hash

# --------------------------------------------------------------------------- helpers


def out(gid: str, email: str, *, first: str = "Ann", status: str | None = "subscribed", method: str | None = "double_opt_in",
        at: str | None = "2026-01-01T00:00:00+00:00", tags: list[str] | None = None, previous: dict | None = None,
        external_id: str | None = None, op: str = "upsert", emails: list[str] | None = None) -> OutRecord:
    data: dict[str, Any] = {"email_address": email, "emails": emails or [email], "merge_fields": {"FNAME": first}}
    if status:
        data["consent"] = {"status": status, "method": method, "at": at}
    if tags:
        data["tags"] = tags
    return OutRecord(golden_id=gid, data=data, external_id=external_id, previous=previous, op=op)  # type: ignore[arg-type]


def write(fake: FakeMailchimp, records: list[OutRecord], **stream: Any) -> dict[str, Any]:
    conn = make_connector(fake, streams={"newsletter": stream})
    results = list(conn.streams()["newsletter"].write(records, []))
    return {r.golden_id: r for r in results}


def posts(fake: FakeMailchimp, path_end: str) -> list[dict[str, Any]]:
    return [json.loads(r.content) for r in fake.requests if r.method == "POST" and r.url.path.endswith(path_end)]


# --------------------------------------------------------------------------- settings


def test_data_centre_comes_from_the_key_suffix():
    assert data_centre("abc-us21") == "us21"
    with pytest.raises(ValueError):
        data_centre("no-suffix-here!")


def test_requests_go_to_the_keys_data_centre(fake: FakeMailchimp):
    conn = make_connector(fake)
    assert conn.check().ok
    assert {r.url.host for r in fake.requests} == {"us6.api.mailchimp.com"}


def test_wrong_key_is_an_auth_error_not_retried(fake: FakeMailchimp):
    conn = make_connector(fake, settings={"api_key": "ffffffffffffffffffffffffffffffff-us6"})
    with pytest.raises(AuthError):
        read_all(conn.streams()["newsletter"], None)
    assert len(fake.requests) == 1


# --------------------------------------------------------------------------- reading


def test_read_maps_status_tags_merge_fields_and_location(fake: FakeMailchimp):
    fake.add_member(LIST, "ann@example.com", merge_fields={"FNAME": "Ann", "LNAME": "Lee"}, tags=["vip"], language="de")
    fake.add_member(LIST, "bob@example.com", status="pending")
    fake.clock.advance(500)
    fake.set_status(LIST, "bob@example.com", "unsubscribed", reason="too many mails")
    fake.clock.advance(3000)
    records, rejected, cps, _ = read_all(make_connector(fake).streams()["newsletter"], None)
    assert rejected == [] and cps
    by = {r.data["email_address"]: r.data for r in records}
    assert by["ann@example.com"]["tag_names"] == ["vip"]
    assert by["ann@example.com"]["merge_fields"]["LNAME"] == "Lee"
    assert by["ann@example.com"]["language"] == "de"
    assert by["ann@example.com"]["member_key"] == fake.member(LIST, "ann@example.com")["contact_id"]
    assert by["bob@example.com"]["status"] == "unsubscribed"
    assert by["bob@example.com"]["unsubscribe_at"] == by["bob@example.com"]["last_changed"]


def test_read_resumes_from_its_cursor_and_reads_changes_once(fake: FakeMailchimp):
    for i in range(5):
        fake.add_member(LIST, f"p{i}@example.com")
        fake.clock.advance(1500)
    fake.clock.advance(2000)
    stream = make_connector(fake).streams()["newsletter"]
    first, _r, cps, _ = read_all(stream, None)
    assert len(first) == 5
    fake.set_status(LIST, "p2@example.com", "unsubscribed")
    fake.clock.advance(2000)
    again, _r, _c, _ = read_all(stream, cps[-1].state)
    assert [r.data["email_address"] for r in again] == ["p2@example.com"]
    assert again[0].data["status"] == "unsubscribed"


def test_an_address_change_is_the_same_member(fake: FakeMailchimp):
    """upemail: the member keeps its contact_id, so the hub sees a change of one record."""
    fake.add_member(LIST, "old@example.com")
    fake.clock.advance(2000)
    stream = make_connector(fake).streams()["newsletter"]
    [before], _r, cps, _ = read_all(stream, None)
    fake.change_email(LIST, "old@example.com", "new@example.com")
    fake.clock.advance(2000)
    [after], _r, _c, _ = read_all(stream, cps[-1].state)
    assert after.data["member_key"] == before.data["member_key"]
    assert after.data["email_address"] == "new@example.com"


def test_more_members_in_one_second_than_a_page_are_all_read_and_never_checkpointed_inside(fake: FakeMailchimp):
    for i in range(2300):
        fake.add_member(LIST, f"bulk{i}@example.com")  # one import: all in the same second
    fake.clock.advance(1000)
    for i in range(3):
        fake.add_member(LIST, f"late{i}@example.com")
    fake.clock.advance(2000)
    stream = make_connector(fake).streams()["newsletter"]
    records, _r, _cps, items = read_all(stream, None)
    assert len({r.data["email_address"] for r in records}) == 2303
    # The only checkpoints: after the whole import second, and at the end.
    first_cp = next(i for i, x in enumerate(items) if not isinstance(x, Record))
    assert sum(isinstance(x, Record) for x in items[:first_cp]) >= 2300


def test_a_member_changed_during_the_read_shifts_the_pages_and_nobody_is_skipped(fake: FakeMailchimp):
    for i in range(2500):
        fake.add_member(LIST, f"m{i:04d}@example.com")
        if i % 7 == 0:
            fake.clock.advance(1000)
    fake.clock.advance(2000)
    factory = http_factory(fake)
    pages = []

    def meddle(request: httpx.Request) -> httpx.Response:
        response = fake.transport.handle_request(request)
        if request.url.path.endswith("/members") and request.url.params.get("status") is None:
            pages.append(request.url.params.get("offset"))
            if len(pages) == 1:
                # Early members change while the read pages on: they leave the window.
                for i in (3, 4, 5):
                    fake.set_status(LIST, f"m{i:04d}@example.com", "unsubscribed")
        return response

    factory.transport = httpx.MockTransport(meddle)
    conn = make_connector(fake, factory=factory, streams={"newsletter": {"read_archived": False}})
    records, _r, cps, _ = read_all(conn.streams()["newsletter"], None)
    seen = {r.data["email_address"] for r in records}
    assert len(seen) == 2500
    missing = {f"m{i:04d}@example.com" for i in range(2500)} - seen - {f"m{i:04d}@example.com" for i in (3, 4, 5)}
    assert missing == set(), f"skipped: {sorted(missing)[:5]}"
    assert "997" in pages, "the read stepped back by the three members that left"
    # The three changed members come with the next run.
    fake.clock.advance(2000)
    again, _r, _c, _ = read_all(conn.streams()["newsletter"], cps[-1].state)
    assert {r.data["email_address"] for r in again} >= {f"m{i:04d}@example.com" for i in (3, 4, 5)}


def test_archived_members_are_read_in_their_own_pass(fake: FakeMailchimp):
    fake.add_member(LIST, "gone@example.com", status="unsubscribed")
    fake.clock.advance(1000)
    fake.archive(LIST, "gone@example.com")
    fake.clock.advance(2000)
    records, _r, _c, _ = read_all(make_connector(fake).streams()["newsletter"], None)
    assert [(r.data["email_address"], r.data["status"]) for r in records] == [("gone@example.com", "archived")]


# --------------------------------------------------------------------------- writing: batches


def test_new_members_go_in_batches_of_at_most_500(fake: FakeMailchimp):
    records = [out(f"g{i}", f"new{i}@example.com", first=f"N{i}") for i in range(1200)]
    results = write(fake, records)
    assert all(r.ok for r in results.values())
    batches = posts(fake, f"/lists/{LIST}")
    assert [len(b["members"]) for b in batches] == [500, 500, 200]
    assert all(b["update_existing"] is False for b in batches)
    assert len(fake.members(LIST)) == 1200
    assert fake.member(LIST, "new7@example.com")["merge_fields"]["FNAME"] == "N7"
    assert results["g7"].external_id == fake.member(LIST, "new7@example.com")["contact_id"]


def test_the_spec_limit_of_500_is_enforced_by_the_checker(fake: FakeMailchimp, spec):
    client = httpx.Client(transport=fake.transport, base_url=fake.base_url + "/", auth=("x", fake.api_key))
    members = [{"email_address": f"x{i}@example.com", "status": "subscribed"} for i in range(501)]
    with pytest.raises(AssertionError, match="500"):
        client.post(f"lists/{LIST}", json={"members": members})
    fake.violations.clear()


def test_members_mailchimp_holds_are_updated_with_their_status_kept(fake: FakeMailchimp):
    fake.add_member(LIST, "ann@example.com", merge_fields={"FNAME": "Ann"})
    fake.add_member(LIST, "pat@example.com", status="pending")
    ann = fake.member(LIST, "ann@example.com")
    results = write(fake, [
        out("a", "ann@example.com", first="Anna", external_id=ann["contact_id"], status="pending", method="import"),
        out("p", "pat@example.com", first="Pat", status=None),
    ], undocumented_consent="pending")
    assert results["a"].ok and results["p"].ok
    assert fake.member(LIST, "ann@example.com")["status"] == "subscribed"  # not downgraded to pending
    assert fake.member(LIST, "ann@example.com")["merge_fields"]["FNAME"] == "Anna"
    assert fake.member(LIST, "pat@example.com")["status"] == "pending"
    [batch] = posts(fake, f"/lists/{LIST}")
    assert batch["update_existing"] is True


def test_a_member_the_hub_did_not_know_keeps_its_status(fake: FakeMailchimp):
    """Sent as new (update_existing false); Mailchimp says it exists; then a PATCH of its data
    without a status, so a subscribed member is never turned into pending."""
    fake.add_member(LIST, "ann@example.com")
    results = write(fake, [out("a", "ann@example.com", first="Anna", status=None)], undocumented_consent="pending")
    assert results["a"].ok
    assert fake.member(LIST, "ann@example.com")["status"] == "subscribed"
    assert fake.member(LIST, "ann@example.com")["merge_fields"]["FNAME"] == "Anna"
    [patch] = [json.loads(r.content) for r in fake.requests if r.method == "PATCH"]
    assert "status" not in patch


def test_undocumented_consent_is_skipped_or_pending_per_config(fake: FakeMailchimp):
    records = [out("i", "imported@example.com", method="import"), out("n", "nothing@example.com", status=None)]
    results = write(fake, records)
    assert all(r.ok and r.skipped for r in results.values())
    assert fake.members(LIST) == []
    results = write(fake, records, undocumented_consent="pending")
    assert all(r.ok and not r.skipped for r in results.values())
    assert {m["status"] for m in fake.members(LIST)} == {"pending"}


# --------------------------------------------------------------------------- writing: consent


def test_never_resubscribes_an_opt_out_and_lists_it_for_reopt_in(fake: FakeMailchimp):
    """RELIABILITY 15: the CRM says subscribed, Mailchimp says unsubscribed or cleaned."""
    fake.add_member(LIST, "unsub@example.com")
    fake.add_member(LIST, "bounce@example.com")
    fake.clock.advance(1000)
    fake.set_status(LIST, "unsub@example.com", "unsubscribed")
    fake.set_status(LIST, "bounce@example.com", "cleaned")
    results = write(fake, [out("u", "unsub@example.com", at="2020-01-01T00:00:00+00:00"),
                           out("b", "bounce@example.com")])
    for gid in "ub":
        assert results[gid].ok and results[gid].skipped
        assert results[gid].attention is not None and results[gid].attention.kind == "needs_reoptin"
    assert posts(fake, f"/lists/{LIST}") == []  # nothing subscribed
    assert fake.member(LIST, "unsub@example.com")["status"] == "unsubscribed"
    assert fake.member(LIST, "bounce@example.com")["status"] == "cleaned"


def test_a_newer_opt_in_from_the_person_is_asked_again_only_where_allowed(fake: FakeMailchimp):
    fake.add_member(LIST, "ann@example.com")
    fake.set_status(LIST, "ann@example.com", "unsubscribed")
    later = "2099-01-01T00:00:00+00:00"
    results = write(fake, [out("a", "ann@example.com", method="form", at=later)])
    assert results["a"].skipped and fake.member(LIST, "ann@example.com")["status"] == "unsubscribed"
    results = write(fake, [out("a", "ann@example.com", method="form", at=later)], reoptin="pending")
    assert results["a"].ok and not results["a"].skipped and results["a"].attention is not None
    assert fake.member(LIST, "ann@example.com")["status"] == "pending"
    # An import is not the person's own opt-in: never asked again on its strength.
    fake.set_status(LIST, "ann@example.com", "unsubscribed")
    results = write(fake, [out("a", "ann@example.com", method="import", at=later)], reoptin="pending")
    assert results["a"].skipped and fake.member(LIST, "ann@example.com")["status"] == "unsubscribed"


def test_an_opt_out_in_the_hub_unsubscribes_and_never_adds(fake: FakeMailchimp):
    fake.add_member(LIST, "ann@example.com")
    results = write(fake, [out("a", "ann@example.com", status="unsubscribed", method="form"),
                           out("b", "bob@example.com", status="unsubscribed")])
    assert fake.member(LIST, "ann@example.com")["status"] == "unsubscribed"
    assert results["b"].skipped and fake.member(LIST, "bob@example.com") is None


def test_permanently_deleted_is_final_and_not_retried(fake: FakeMailchimp):
    """RELIABILITY 16: "Forgotten Email Not Subscribed" is final."""
    fake.add_member(LIST, "forgot@example.com")
    fake.delete_permanent(LIST, "forgot@example.com")
    results = write(fake, [out("f", "forgot@example.com"), out("o", "ok@example.com")])
    assert results["o"].ok
    f = results["f"]
    assert not f.ok and f.final and "permanently deleted" in f.error
    assert f.attention is not None and f.attention.kind == "needs_reoptin"
    assert len(posts(fake, f"/lists/{LIST}")) == 1  # one batch, no retry of the refused member


def test_compliance_refusal_in_a_race_is_final(fake: FakeMailchimp):
    """The member unsubscribes between the connector's status listing and its batch: Mailchimp
    refuses ("compliance state"); the record is a final rejection, the batch's others land."""
    fake.add_member(LIST, "ann@example.com")
    ann = fake.member(LIST, "ann@example.com")
    factory = http_factory(fake)

    def race(request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path.endswith(f"/lists/{LIST}"):
            fake.set_status(LIST, "ann@example.com", "unsubscribed")
        return fake.transport.handle_request(request)

    factory.transport = httpx.MockTransport(race)
    conn = make_connector(fake, factory=factory)
    results = {r.golden_id: r for r in conn.streams()["newsletter"].write(
        [out("a", "ann@example.com", external_id=ann["contact_id"], method="form",
             previous={"email_address": "ann@example.com", "consent": {"status": "subscribed"}}),
         out("b", "bob@example.com")], [])}
    assert results["b"].ok
    assert not results["a"].ok and results["a"].final and "compliance" in results["a"].error.lower()
    assert fake.member(LIST, "ann@example.com")["status"] == "unsubscribed"


# --------------------------------------------------------------------------- writing: faults


def test_a_timed_out_batch_is_resent_member_by_member_as_idempotent_puts(fake: FakeMailchimp):
    """RELIABILITY 5: the batch went through but the answer was lost; the retry is PUT by
    subscriber hash, so nothing is doubled and nobody's status is guessed."""
    fake.fail_next("POST", f"/lists/{LIST}$", exception=httpx.ReadTimeout, after_apply=True)
    records = [out(f"g{i}", f"t{i}@example.com") for i in range(12)]
    results = write(fake, records)
    assert all(r.ok for r in results.values())
    puts = [r for r in fake.requests if r.method == "PUT"]
    assert len(puts) == 12
    assert {r.url.path.rsplit("/", 1)[1] for r in puts} == {subscriber_hash(f"t{i}@example.com") for i in range(12)}
    assert len(fake.members(LIST)) == 12


def test_at_most_ten_requests_at_once_and_bare_403_is_throttling(fake: FakeMailchimp):
    """RELIABILITY 4: ten simultaneous connections per key; a bare 403/429 means slow down."""
    fake.latency = 0.02
    fake.fail_next("POST", f"/lists/{LIST}$", exception=httpx.ReadTimeout, after_apply=True)
    fake.throttle_next(1, status=403)  # the first request (a listing) is throttled, then retried
    results = write(fake, [out(f"g{i}", f"c{i}@example.com") for i in range(40)])
    assert all(r.ok for r in results.values())
    assert sum(r.method == "PUT" for r in fake.requests) == 40
    assert 1 < fake.max_in_flight <= 10


def test_ten_is_shared_by_connections_on_one_key(fake: FakeMailchimp):
    import threading

    fake.latency = 0.02
    factory = http_factory(fake)
    errors = []

    def run(n: int) -> None:
        try:
            for _ in range(2):
                fake.fail_next("POST", f"/lists/{LIST}$", exception=httpx.ReadTimeout, after_apply=True)
            conn = make_connector(fake, factory=factory)
            list(conn.streams()["newsletter"].write([out(f"{n}-{i}", f"s{n}x{i}@example.com") for i in range(20)], []))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert fake.max_in_flight <= 10


# --------------------------------------------------------------------------- merge fields and tags


def test_missing_merge_fields_stop_the_write_unless_creation_is_allowed(fake: FakeMailchimp):
    rec = out("a", "ann@example.com")
    rec.data["merge_fields"]["KDNR"] = "K-17"
    with pytest.raises(ConfigError, match="KDNR"):
        write(fake, [rec])
    assert posts(fake, f"/lists/{LIST}") == []
    results = write(fake, [rec], create_merge_fields=True)
    assert results["a"].ok
    assert fake.member(LIST, "ann@example.com")["merge_fields"]["KDNR"] == "K-17"
    assert fake.ignored_merge_fields == []


def test_tags_are_set_in_bulk_per_tag(fake: FakeMailchimp):
    records = [out(f"g{i}", f"t{i}@example.com", tags=["crm"] if i % 2 else []) for i in range(600)]
    results = write(fake, records, tags=["newsletter-de"])
    assert all(r.ok for r in results.values())
    assert fake.tags_of(LIST, "t1@example.com") == {"crm", "newsletter-de"}
    assert fake.tags_of(LIST, "t2@example.com") == {"newsletter-de"}
    segment_posts = [r for r in fake.requests if r.method == "POST" and "/segments/" in r.url.path]
    assert len(segment_posts) == 3  # newsletter-de: 500 + 100, crm: 300
    assert results["g1"].holds["tags"] == ["crm", "newsletter-de"]


def test_leaving_the_segment_untags_or_archives(fake: FakeMailchimp):
    fake.add_member(LIST, "ann@example.com", tags=["crm-customers"])
    fake.add_member(LIST, "bob@example.com", tags=["crm-customers"])
    prev = {"email_address": "ann@example.com", "tags": ["crm-customers"]}
    results = write(fake, [out("a", "ann@example.com", op="leave", previous=prev)], tags=["crm-customers"])
    assert results["a"].ok and fake.tags_of(LIST, "ann@example.com") == set()
    assert fake.member(LIST, "ann@example.com")["status"] == "subscribed"
    prev = {"email_address": "bob@example.com", "tags": ["crm-customers"]}
    results = write(fake, [out("b", "bob@example.com", op="leave", previous=prev)], on_leave="archive")
    assert results["b"].ok and fake.member(LIST, "bob@example.com")["status"] == "archived"


def test_permanent_delete_on_leave_must_be_asked_for():
    from pydantic import ValidationError

    from synchub_mailchimp import MailchimpStreamSettings

    with pytest.raises(ValidationError, match="allow_permanent_delete"):
        MailchimpStreamSettings(list_id="x", on_leave="delete_permanent")
    MailchimpStreamSettings(list_id="x", on_leave="delete_permanent", allow_permanent_delete=True)


def test_plan_shows_what_write_would_do_and_sends_nothing(fake: FakeMailchimp):
    fake.add_member(LIST, "ann@example.com", merge_fields={"FNAME": "Ann"})
    fake.add_member(LIST, "out@example.com")
    fake.set_status(LIST, "out@example.com", "unsubscribed")
    ann = fake.member(LIST, "ann@example.com")
    conn = make_connector(fake)
    plan = {p.golden_id: p for p in conn.streams()["newsletter"].plan([
        out("a", "ann@example.com", first="Anna", external_id=ann["contact_id"],
            previous={"email_address": "ann@example.com", "merge_fields": {"FNAME": "Ann"}}),
        out("n", "new@example.com"),
        out("o", "out@example.com"),
    ], [])}
    assert plan["a"].action == "update" and plan["a"].changes["merge_fields.FNAME"] == ("Ann", "Anna")
    assert plan["n"].action == "create" and plan["n"].changes["status"] == (None, "subscribed")
    assert plan["o"].action == "skip" and "re-opt-in" in plan["o"].reason
    assert all(r.method == "GET" for r in fake.requests)


def test_the_example_configs_validate_together(tmp_path):
    """config/hubspot.example.yaml + config/mailchimp.example.yaml, as the README suggests."""
    import shutil
    from pathlib import Path

    from synchub.config import load_config

    root = Path(__file__).resolve().parents[3]
    (tmp_path / "config").mkdir()
    for name in ("hubspot.example.yaml", "mailchimp.example.yaml"):
        shutil.copy(root / "config" / name, tmp_path / "config" / name)
    (tmp_path / "mappings").symlink_to(root / "mappings")
    cfg = load_config(tmp_path / "config", environ={"HUBSPOT_TOKEN": "pat-x", "MAILCHIMP_API_KEY": "abc-us6"})
    stream = cfg.connections["newsletter"].streams["customers_de"]
    assert stream.filter and stream.write_mapping == "mailchimp_members_out"


def test_archived_stay_archived_unless_unarchive_and_cleaned_take_no_status(fake: FakeMailchimp):
    fake.add_member(LIST, "arch@example.com")
    fake.archive(LIST, "arch@example.com")
    fake.add_member(LIST, "bounce@example.com")
    fake.set_status(LIST, "bounce@example.com", "cleaned")
    results = write(fake, [out("a", "arch@example.com"), out("b", "bounce@example.com", status="unsubscribed")])
    assert results["a"].skipped and "archived" in (fake.member(LIST, "arch@example.com")["status"])
    assert results["b"].skipped and fake.member(LIST, "bounce@example.com")["status"] == "cleaned"
    assert posts(fake, f"/lists/{LIST}") == []
    results = write(fake, [out("a", "arch@example.com")], unarchive=True)
    assert results["a"].ok and fake.member(LIST, "arch@example.com")["status"] == "subscribed"
