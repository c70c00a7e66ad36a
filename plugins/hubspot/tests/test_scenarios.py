"""The HubSpot connector against the faults in ``RELIABILITY.md``, one scenario per test.

Stream level only: ``stream.read(state)`` and ``stream.write(records, fields)`` against the
stateful fake HubSpot (every request validated against HubSpot's OpenAPI files, see conftest).
No store, no hub. Each test names the RELIABILITY item it proves. A test marked
``xfail(strict=True)`` shows a bug that is still open; its reason says what is wrong.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from plugins.hubspot.tests import fake_hubspot
from plugins.hubspot.tests.conftest import TOKEN, http_factory, make_connector
from plugins.hubspot.tests.fake_hubspot import DAY_MS, SEARCH_RESULT_CAP, FakeHubSpot
from synchub.connector import Checkpoint, OutRecord, ReadItem, Record, Stream, WriteResult
from synchub.errors import AuthError, QuotaExhausted
from synchub.http import HttpClientFactory

SEARCH = "/crm/v3/objects/contacts/search"
PAGE = 200  # the connector's default (and HubSpot's largest) search page
MINUTE = 60_000
OAUTH = {"client_id": "app-123", "client_secret": "cs-9f8e7d6c5b4a",
         "refresh_token": "rt-1a2b3c4d5e6f"}


# --------------------------------------------------------------------------- helpers


class Recorder:
    """A transport in front of the fake that remembers the status of every answer."""

    def __init__(self, fake: FakeHubSpot):
        self.fake = fake
        self.answers: list[tuple[str, str, int]] = []  # (method, path, status)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        response = self.fake.transport.handle_request(request)
        self.answers.append((request.method, request.url.path, response.status_code))
        return response

    def statuses(self, path_contains: str = "/crm/") -> list[int]:
        return [status for _m, path, status in self.answers if path_contains in path]


def recorded(fake: FakeHubSpot) -> tuple[HttpClientFactory, Recorder]:
    """An HTTP factory for ``fake`` (fresh budgets) whose answers are recorded."""
    recorder = Recorder(fake)
    factory = http_factory(fake)
    factory.transport = httpx.MockTransport(recorder)
    return factory, recorder


def stream_of(fake: FakeHubSpot, name: str = "contacts", *,
              factory: HttpClientFactory | None = None,
              settings: dict[str, Any] | None = None, **stream_settings: Any) -> Stream:
    """The stream of a new connector (one connector per run: a run's start time is the
    connector's); no index lag and no lookback unless given."""
    stream_settings.setdefault("index_lag_seconds", 0)
    stream_settings.setdefault("lookback_seconds", 0)
    connector = make_connector(fake, settings=settings, streams={name: stream_settings},
                               factory=factory)
    return connector.streams()[name]


def add_contacts(fake: FakeHubSpot, n: int, *, first: int, step: int = 1000,
                 group: int = 1, tag: str = "c") -> list[str]:
    """``n`` contacts modified from ``first`` on, ``group`` of them per timestamp, ``step`` ms
    apart; returns their ids in time order."""
    return [
        fake.add("contacts", {"email": f"{tag}{i}@example.com", "firstname": f"F{i}"},
                 updated_at=first + (i // group) * step)
        for i in range(n)
    ]


def records(items: Iterable[ReadItem]) -> list[Record]:
    return [i for i in items if isinstance(i, Record)]


def checkpoints(items: Iterable[ReadItem]) -> list[Checkpoint]:
    return [i for i in items if isinstance(i, Checkpoint)]


def ids(items: Iterable[ReadItem]) -> list[str]:
    return [r.data["id"] for r in records(items)]


def read(stream: Stream, state: dict[str, Any] | None = None) -> list[ReadItem]:
    return list(stream.read(state))


def position(state: dict[str, Any]) -> tuple[int, float]:
    """A checkpoint's place in (timestamp, id) order; no id = the whole timestamp is done."""
    return state["ts"], float("inf") if state["id"] is None else int(state["id"])


def record_position(record: Record) -> tuple[int, float]:
    return record.data["_ms"], int(record.data["id"])


def before_each_checkpoint(
        items: list[ReadItem]) -> Iterator[tuple[Checkpoint, set[str], set[str]]]:
    """Every checkpoint with the ids of the records yielded before it, and of those among them
    that it covers (at or before its (timestamp, id) place; the others may come again)."""
    seen: list[Record] = []
    for item in items:
        if isinstance(item, Record):
            seen.append(item)
        elif isinstance(item, Checkpoint):
            place = position(item.state)
            yield (item, {r.data["id"] for r in seen},
                   {r.data["id"] for r in seen if record_position(r) <= place})


def out(golden_id: str, external_id: str | None = None, previous: dict[str, Any] | None = None,
        **data: Any) -> OutRecord:
    return OutRecord(golden_id, data, external_id=external_id, previous=previous)


def write(stream: Stream, outs: Iterable[OutRecord]) -> dict[str, WriteResult]:
    results = list(stream.write(outs, []))
    by_golden = {r.golden_id: r for r in results}
    assert len(by_golden) == len(results), "one result per record"
    return by_golden


def sent(fake: FakeHubSpot, path_contains: str) -> list[dict[str, Any]]:
    """The JSON bodies of the requests whose path contains ``path_contains``."""
    return [json.loads(r.content) for r in fake.requests if path_contains in r.url.path]


def emails_in(fake: FakeHubSpot) -> list[str]:
    return sorted(c["properties"]["email"] for c in fake.all("contacts"))


def next_midnight_ms(ms: int) -> int:
    return (ms // DAY_MS + 1) * DAY_MS


def as_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, timezone.utc)


@pytest.fixture
def quick_fake(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fake formats and parses every record's timestamps on every search. Both are pure
    functions: memoized, no answer changes and the 10,000-record tests run about 5x faster."""
    monkeypatch.setattr(fake_hubspot, "iso", functools.lru_cache(maxsize=None)(fake_hubspot.iso))
    monkeypatch.setattr(fake_hubspot, "parse_time",
                        functools.lru_cache(maxsize=None)(fake_hubspot.parse_time))


# --------------------------------------------------------------------------- 1. burst limit


def test_read_under_burst_limit_slows_down_on_rate_limit_headers(
        fake: FakeHubSpot, caplog: pytest.LogCaptureFixture) -> None:
    """RELIABILITY 1: with 5 requests per 10 s (and 5 searches per second) a read of 1,000
    contacts plus a sweep of 600 archived ones gets every record, pauses on
    ``X-HubSpot-RateLimit-Remaining``, and under 5 % of its requests are answered 429."""
    fake.burst_limit = 5
    fake.search_limit = 5
    now = fake.now()
    live = add_contacts(fake, 1000, first=now - 3_000_000)
    gone = add_contacts(fake, 600, first=now - 1_000_000, tag="gone")
    for cid in gone:
        fake.archive("contacts", cid, at=now - 500_000)
    factory, recorder = recorded(fake)
    stream = stream_of(fake, factory=factory, page_size=50, archived_sweep_hours=0)

    with caplog.at_level(logging.INFO, logger="synchub.http"):
        items = read(stream)

    got = records(items)
    assert sorted(r.data["id"] for r in got if not r.deleted) == sorted(live)
    assert sorted(r.data["id"] for r in got if r.deleted) == sorted(gone)
    statuses = recorder.statuses()
    sweeps = fake.calls("GET", "/crm/v3/objects/contacts")
    assert sweeps == 6 and sweeps > fake.burst_limit, "the sweep alone exceeds one burst window"
    assert statuses.count(429) < 0.05 * len(statuses), statuses
    assert any("pausing" in r.getMessage() for r in caplog.records), \
        "the connector did not pause on X-HubSpot-RateLimit-Remaining"


def test_write_of_300_changed_contacts_under_burst_limit(
        fake: FakeHubSpot, caplog: pytest.LogCaptureFixture) -> None:
    """RELIABILITY 1: 300 changed contacts in batches of 10 (30 calls) under a limit of 5 calls
    per 10 s: every record is written, under 5 % of the calls are answered 429."""
    fake.burst_limit = 5
    contact_ids = add_contacts(fake, 300, first=fake.now() - 1_000_000)
    factory, recorder = recorded(fake)
    stream = stream_of(fake, factory=factory, batch_size=10)
    outs = [out(f"g{i}", cid, previous={"firstname": f"F{i}"}, firstname=f"New{i}")
            for i, cid in enumerate(contact_ids)]

    with caplog.at_level(logging.INFO, logger="synchub.http"):
        results = write(stream, outs)

    assert all(r.ok for r in results.values()), [r for r in results.values() if not r.ok][:3]
    assert {c["properties"]["firstname"] for c in fake.all("contacts")} == \
        {f"New{i}" for i in range(300)}
    statuses = recorder.statuses()
    assert fake.calls("POST", "batch/update") >= 30
    assert statuses.count(429) < 0.05 * len(statuses), statuses
    assert any("pausing" in r.getMessage() for r in caplog.records)


def test_search_pacing_follows_the_fake_clock(fake: FakeHubSpot) -> None:
    """RELIABILITY 1: searches are paced at ``search_requests_per_second`` on the fake's clock."""
    now = fake.now()
    add_contacts(fake, 400, first=now - 1_000_000)
    got = ids(read(stream_of(fake, page_size=10, archived_sweep_hours=None)))
    assert len(set(got)) == len(got) == 400
    searches = fake.calls("POST", SEARCH)
    assert searches >= 40
    elapsed_s = (fake.now() - now) / 1000
    assert elapsed_s <= searches / 4 + 5, f"{searches} searches took {elapsed_s:.0f} s of fake time"


# --------------------------------------------------------------------------- 2. daily quota


def test_daily_quota_mid_read_stops_at_a_checkpoint_and_resumes_after_reset(
        fake: FakeHubSpot) -> None:
    """RELIABILITY 2: the daily quota runs out after 7 of 10 pages: ``QuotaExhausted`` with a
    ``resume_at`` (a midnight UTC); every checkpoint before it is a correct resume point; after
    the reset a fresh connector resumes from the last one, reads the rest and nothing before it."""
    fake.daily_limit = 7
    now = fake.now()
    all_ids = add_contacts(fake, 1000, first=now - 2_000_000)
    items: list[ReadItem] = []
    with pytest.raises(QuotaExhausted) as stop:
        for item in stream_of(fake, page_size=100).read(None):
            items.append(item)
    resume_at = stop.value.resume_at
    assert resume_at is not None and resume_at.utcoffset() == timedelta(0)
    assert (resume_at.hour, resume_at.minute, resume_at.second) == (0, 0, 0)
    assert resume_at > as_datetime(now)
    assert fake.calls("POST", SEARCH) == 8, "7 pages and the refused 8th"
    cps = checkpoints(items)
    assert cps, "the pages read before the quota ran out were checkpointed"
    last = cps[-1].state
    _cp, seen, covered = next(b for b in before_each_checkpoint(items) if b[0] is cps[-1])
    assert len(covered) >= 600

    # The day rolls over on the fake's clock; a new process, new budgets, same saved state.
    fake.clock.advance(next_midnight_ms(fake.now()) - fake.now() + 1000)
    resumed = ids(read(stream_of(fake, page_size=100), last))
    assert seen | set(resumed) == set(all_ids), "records were lost"
    assert not covered & set(resumed), "records the checkpoint covers were read again"
    assert len(resumed) == len(set(resumed)) == len(all_ids) - len(covered)

    # Every earlier checkpoint is a correct resume point too.
    fake.daily_limit = None
    for cp, seen, covered in before_each_checkpoint(items):
        again = set(ids(read(stream_of(fake, page_size=100, archived_sweep_hours=None), cp.state)))
        assert seen | again == set(all_ids) and not covered & again, cp.state


def test_quota_resume_at_is_the_next_midnight_of_the_connectors_clock(fake: FakeHubSpot) -> None:
    """RELIABILITY 2: ``resume_at`` is the next reset as the connector's clock sees it."""
    fake.daily_limit = 0
    add_contacts(fake, 3, first=fake.now() - 10_000)
    with pytest.raises(QuotaExhausted) as stop:
        read(stream_of(fake))
    assert stop.value.resume_at == as_datetime(next_midnight_ms(fake.now()))


# --------------------------------------------------------------------------- 3-5. write faults


def test_batch_failing_every_retry_is_reported_retryable_and_the_others_land(
        fake: FakeHubSpot) -> None:
    """RELIABILITY 12/13: every attempt of the first of three batch calls gets a 500: its 100
    records come back ``ok=False, retryable=True``, the other 150 are in HubSpot; writing the
    failed ones again succeeds."""
    outs = [out(f"g{i}", email=f"p{i}@example.com", firstname=f"P{i}") for i in range(250)]
    stream = stream_of(fake)
    attempts = stream.connector.settings.max_attempts
    fake.fail_next(attempts, status=500, path="batch/")

    results = write(stream, outs)

    failed = {g for g, r in results.items() if not r.ok}
    assert failed == {f"g{i}" for i in range(100)}, "exactly the first batch failed"
    assert all(results[g].retryable for g in failed)
    assert all(results[g].ok and results[g].external_id for g in results.keys() - failed)
    assert emails_in(fake) == sorted(f"p{i}@example.com" for i in range(100, 250))
    assert fake.calls("POST", "batch/upsert") == attempts + 2

    again = write(stream_of(fake), [o for o in outs if o.golden_id in failed])
    assert all(r.ok for r in again.values())
    assert emails_in(fake) == sorted(f"p{i}@example.com" for i in range(250))


def test_multi_status_rejects_only_the_invalid_records(fake: FakeHubSpot) -> None:
    """RELIABILITY 13: a 207 rejects two invalid inputs: they get ``ok=False`` with HubSpot's
    message, the others ``ok=True`` with their HubSpot id, and HubSpot holds exactly those."""
    fake.reject_when(lambda kind, props: "INVALID_PHONE_NUMBER: bad phone"
                     if props.get("phone") == "not a phone" else None)
    outs = [out(f"g{i}", email=f"m{i}@example.com",
                phone="not a phone" if i in (3, 7) else f"+4930{i:05d}") for i in range(10)]

    results = write(stream_of(fake), outs)

    bad = {"g3", "g7"}
    for g in bad:
        assert not results[g].ok and not results[g].retryable
        assert results[g].error and "INVALID_PHONE_NUMBER: bad phone" in results[g].error
    in_hubspot = {c["properties"]["email"]: c["id"] for c in fake.all("contacts")}
    assert sorted(in_hubspot) == sorted(f"m{i}@example.com" for i in range(10) if i not in (3, 7))
    for i in range(10):
        if f"g{i}" not in bad:
            assert results[f"g{i}"].ok
            assert results[f"g{i}"].external_id == in_hubspot[f"m{i}@example.com"]
    assert fake.calls("POST", "batch/") == 1


def test_multi_status_conflict_blames_only_the_conflicting_input(fake: FakeHubSpot) -> None:
    """RELIABILITY 13: A takes B's e-mail (a CONFLICT naming B as the existing contact) while B
    gets a new first name in the same batch: only A fails."""
    a = fake.add("contacts", {"email": "a@example.com", "firstname": "A"})
    b = fake.add("contacts", {"email": "b@example.com", "firstname": "B"})
    results = write(stream_of(fake), [
        out("gA", a, previous={"email": "a@example.com"}, email="b@example.com"),
        out("gB", b, previous={"firstname": "B"}, firstname="Bea"),
    ])
    assert not results["gA"].ok and "already exists" in (results["gA"].error or "")
    assert fake.get("contacts", b)["properties"]["firstname"] == "Bea", "HubSpot applied B"
    assert results["gB"].ok, results["gB"].error


def test_timeout_after_an_applied_upsert_is_retried_harmlessly(fake: FakeHubSpot) -> None:
    """RELIABILITY 12: HubSpot applies an upsert but the answer times out; the upsert is sent
    again: one contact per e-mail, every result ok."""
    fake.fail_next(1, path="batch/upsert", after_apply=True, exception=httpx.ReadTimeout)
    outs = [out(f"g{i}", email=f"t{i}@example.com", firstname=f"T{i}") for i in range(3)]

    results = write(stream_of(fake), outs)

    assert fake.calls("POST", "batch/upsert") == 2, "sent, timed out, sent again"
    assert emails_in(fake) == [f"t{i}@example.com" for i in range(3)]
    by_email = {c["properties"]["email"]: c["id"] for c in fake.all("contacts")}
    assert {g: (r.ok, r.external_id) for g, r in results.items()} == \
        {f"g{i}": (True, by_email[f"t{i}@example.com"]) for i in range(3)}


def test_timeout_after_an_applied_create_is_not_sent_again(fake: FakeHubSpot) -> None:
    """RELIABILITY 12: a create whose answer timed out may have been applied, so it is not resent:
    the result is ``ok=False, retryable=True`` and HubSpot holds one company, not two."""
    fake.fail_next(1, path="batch/create", after_apply=True, exception=httpx.ReadTimeout)
    stream = stream_of(fake, "companies")

    results = write(stream, [out("g1", name="Acme GmbH", domain="acme.example")])

    assert not results["g1"].ok and results["g1"].retryable
    assert fake.calls("POST", "batch/create") == 1
    assert [c["properties"]["name"] for c in fake.all("companies")] == ["Acme GmbH"]


def test_timeout_after_an_applied_company_upsert_by_a_unique_property_is_harmless(
        fake: FakeHubSpot) -> None:
    """RELIABILITY 12: the README's remedy for company creates: with a unique custom property
    as ``upsert_property``, a write whose answer timed out is sent again and still leaves one
    company."""
    fake.unique_properties = {**fake.unique_properties, "companies": {"synchub_id"}}
    fake.fail_next(1, path="batch/upsert", after_apply=True, exception=httpx.ReadTimeout)
    stream = stream_of(fake, "companies", upsert_property="synchub_id")

    results = write(stream, [out("g1", synchub_id="g1", name="Acme GmbH")])

    assert fake.calls("POST", "batch/upsert") == 2
    [company] = fake.all("companies")
    assert results["g1"].ok and results["g1"].external_id == company["id"]


# --------------------------------------------------------------------------- 6-8. search limits


@pytest.mark.slow
@pytest.mark.parametrize("group", [1, 50], ids=["distinct-timestamps", "groups-of-50"])
def test_more_than_10000_changed_contacts_in_one_read(
        fake: FakeHubSpot, quick_fake: None, group: int) -> None:
    """RELIABILITY 6: 10,500 changed contacts (each with its own timestamp, or 50 per timestamp)
    are read in one run without paging past result 10,000, in close to N/200 searches, with
    checkpoints that never go backwards.

    Measured: distinct timestamps 53 searches, the minimum (ceil(10,500 / 200)); groups of 50
    equal timestamps 70, because a page that ends inside a group asks for the group's rest by
    keyset (HubSpot may order ties differently on each request, so offsets are not trusted
    there) and re-reads the part of the group it already had."""
    n = 10_500
    all_ids = add_contacts(fake, n, first=fake.now() - 50_000_000, group=group)
    factory, recorder = recorded(fake)

    items = read(stream_of(fake, factory=factory, archived_sweep_hours=None))

    got = ids(items)
    assert set(got) == set(all_ids) and len(got) <= n + group, "every contact, few read twice"
    assert set(recorder.statuses()) == {200}, "no request was refused (the 10,000 cap)"
    for body in sent(fake, SEARCH):
        assert int(body["after"]) + body["limit"] <= SEARCH_RESULT_CAP
    minimum = -(-n // PAGE)
    bound = minimum + 2 if group == 1 else minimum * 14 // 10
    assert fake.calls("POST", SEARCH) <= bound
    positions = [position(cp.state) for cp in checkpoints(items)]
    assert positions == sorted(positions), "a checkpoint went backwards"
    assert positions[-1] == (max(r.data["_ms"] for r in records(items)), float("inf"))


@pytest.mark.slow
def test_10001_contacts_with_one_timestamp(fake: FakeHubSpot, quick_fake: None) -> None:
    """RELIABILITY 7: 10,001 contacts share one timestamp (a bulk update): the read ends, in a
    bounded number of searches, with all of them; resuming from a checkpoint taken inside the
    group reads exactly the rest of the group.

    Measured: 53 searches (minimum 51); the resume from the middle: 26 searches for 4,801."""
    n = 10_001
    all_ids = add_contacts(fake, n, first=fake.now() - 50_000_000, group=n)
    factory, recorder = recorded(fake)

    items = read(stream_of(fake, factory=factory, archived_sweep_hours=None))

    assert set(ids(items)) == set(all_ids) and len(ids(items)) == n
    assert set(recorder.statuses()) == {200}
    minimum = -(-n // PAGE)
    assert fake.calls("POST", SEARCH) <= minimum + 5, "bounded: no loop over the group"
    inside = [cp for cp in checkpoints(items) if cp.state["id"] is not None]
    assert inside, "the group is checkpointed by id as it is read"
    positions = [position(cp.state) for cp in checkpoints(items)]
    assert positions == sorted(positions)

    middle = inside[len(inside) // 2].state
    before = fake.calls("POST", SEARCH)
    rest = ids(read(stream_of(fake, archived_sweep_hours=None), middle))
    expected = {i for i in all_ids if int(i) > int(middle["id"])}
    assert set(rest) == expected and len(rest) == len(expected), "the rest of the group, only"
    assert fake.calls("POST", SEARCH) - before <= -(-len(expected) // PAGE) + 2


def test_equal_timestamps_across_page_boundaries_resume_from_every_checkpoint(
        fake: FakeHubSpot) -> None:
    """RELIABILITY 8: with pages of 10, groups of equal timestamps straddle page boundaries
    (a group of 6 across the first boundary, one of 25 across three); resuming from every
    checkpoint misses nothing and re-reads nothing before the checkpoint."""
    now = fake.now()
    sizes = [1] * 8 + [6] + [1] * 4 + [25] + [1] * 7  # groups at positions 8-13 and 18-42
    all_ids: list[str] = []
    for k, size in enumerate(sizes):
        all_ids += add_contacts(fake, size, first=now - 1_000_000 + k * 1000, group=size,
                                tag=f"k{k}-")
    items = read(stream_of(fake, page_size=10, archived_sweep_hours=None))

    assert set(ids(items)) == set(all_ids)
    cps = checkpoints(items)
    assert len(cps) > 3
    for cp, seen, covered in before_each_checkpoint(items):
        resumed = set(ids(read(stream_of(fake, page_size=10, archived_sweep_hours=None), cp.state)))
        assert seen | resumed == set(all_ids), f"records missing after resuming from {cp.state}"
        assert not covered & resumed, f"records before {cp.state} were read again"


def test_equal_timestamps_reordered_between_requests_lose_nothing(fake: FakeHubSpot) -> None:
    """RELIABILITY 8: HubSpot does not promise the same order of equal timestamps from one
    request to the next (the connector's docstring counts on it too). Here every search orders
    the ties differently (the fake's tie order follows its ``seed``); 40 timestamps with 4
    contacts each, pages of 10, so most page boundaries fall inside a group: five reads, each
    with other orders, each gets every contact."""
    all_ids = add_contacts(fake, 160, first=fake.now() - 1_000_000, group=4)
    factory = http_factory(fake)

    def reorder_ties(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/search"):
            fake.seed += 1
        return fake.transport.handle_request(request)

    factory.transport = httpx.MockTransport(reorder_ties)
    missing: dict[int, list[str]] = {}
    for trial in range(5):
        fake.seed = 1000 * trial
        got = ids(read(stream_of(fake, factory=factory, page_size=10, archived_sweep_hours=None)))
        if set(all_ids) - set(got):
            missing[trial] = sorted(set(all_ids) - set(got), key=int)
    assert not missing, f"never read, by trial: {missing}"


# --------------------------------------------------------------------------- 9-10. time


def test_cursor_stays_behind_run_start_and_mid_run_changes_are_read_next_run(
        fake: FakeHubSpot) -> None:
    """RELIABILITY 9: the saved cursor is at most the run's start minus ``index_lag_seconds``; a
    contact changed just before the run (inside that margin) and one changed while the run is
    going are both read by the next run."""
    start = fake.now()
    old = add_contacts(fake, 300, first=start - 1_000_000)
    recent = fake.add("contacts", {"email": "recent@example.com"}, updated_at=start - 20_000)
    items: list[ReadItem] = []
    for item in stream_of(fake, index_lag_seconds=60, page_size=100).read(None):
        items.append(item)
        if len(records(items)) == 100 and isinstance(item, Record):
            fake.clock.advance(1000)  # someone edits a contact the run has not reached yet
            fake.update("contacts", old[-1], {"firstname": "Changed"})

    cps = checkpoints(items)
    assert all(cp.state["ts"] <= start - MINUTE for cp in cps)
    assert set(ids(items)) == set(old[:-1]), "neither the recent nor the edited contact yet"
    fake.clock.advance(2 * MINUTE)
    second = records(read(stream_of(fake, index_lag_seconds=60, page_size=100), cps[-1].state))
    assert {r.data["id"] for r in second} == {recent, old[-1]}
    edited = next(r for r in second if r.data["id"] == old[-1])
    assert edited.data["firstname"] == "Changed"


def change(fake: FakeHubSpot, how: str, contact_ids: list[str]) -> None:
    """Someone edits, deletes or merges contacts in HubSpot."""
    if how == "edited":
        fake.update("contacts", contact_ids[0], {"firstname": "Changed"})
    elif how == "archived":
        fake.archive("contacts", contact_ids[0])
    else:
        fake.merge("contacts", contact_ids[0], contact_ids[1])


@pytest.mark.parametrize("how", ["edited", "archived", "merged"])
def test_contacts_changed_mid_read_do_not_hide_other_contacts(fake: FakeHubSpot, how: str) -> None:
    """RELIABILITY 9: while page 1 is being handled, contacts on it are edited, archived or
    merged; they leave the search results, so offsets move; the run and the next one together
    still read every contact."""
    all_ids = add_contacts(fake, 500, first=fake.now() - 1_000_000)
    items: list[ReadItem] = []
    for item in stream_of(fake).read(None):
        items.append(item)
        if isinstance(item, Record) and len(records(items)) == 200:
            fake.clock.advance(1000)
            change(fake, how, all_ids[10:12])
    fake.clock.advance(MINUTE)
    second = ids(read(stream_of(fake), checkpoints(items)[-1].state))
    missing = set(all_ids) - set(ids(items)) - set(second)
    assert not missing, f"never read: {sorted(missing)}"


def test_contact_leaving_while_another_enters_mid_read_hides_none(fake: FakeHubSpot) -> None:
    """RELIABILITY 9/10: the index shows changes 30 s late, the connector keeps back 10 s (and
    looks back 300 s). While page 1 is handled a contact on it is edited and a contact changed
    20 s before the run appears in the index: every contact is still read by this run or the
    next."""
    fake.index_lag_ms = 30_000
    now = fake.now()
    all_ids = add_contacts(fake, 500, first=now - 1_000_000)
    late = fake.add("contacts", {"email": "late@example.com"}, updated_at=now - 20_000)
    settings = {"index_lag_seconds": 10, "lookback_seconds": 300}
    items: list[ReadItem] = []
    for item in stream_of(fake, **settings).read(None):
        items.append(item)
        if isinstance(item, Record) and len(records(items)) == 200:
            fake.clock.advance(15_000)  # ``late`` shows in the index from now on
            change(fake, "edited", all_ids[10:11])
    fake.clock.advance(MINUTE)
    second = ids(read(stream_of(fake, **settings), checkpoints(items)[-1].state))
    missing = {*all_ids, late} - set(ids(items)) - set(second)
    assert not missing, f"never read: {sorted(missing)}"


def test_contact_hidden_by_search_index_lag_is_read_next_run(fake: FakeHubSpot) -> None:
    """RELIABILITY 10: the search index shows changes 30 s late, the connector keeps back only
    10 s: a contact changed 20 s before the run is not found by it, and the next run reads it."""
    fake.index_lag_ms = 30_000
    now = fake.now()
    older = fake.add("contacts", {"email": "older@example.com"}, updated_at=now - 120_000)
    lagging = fake.add("contacts", {"email": "lagging@example.com"}, updated_at=now - 20_000)
    first = read(stream_of(fake, index_lag_seconds=10))
    assert ids(first) == [older]
    assert checkpoints(first)[-1].state["ts"] <= now - 10_000
    fake.clock.advance(MINUTE)
    second = read(stream_of(fake, index_lag_seconds=10), checkpoints(first)[-1].state)
    assert ids(second) == [lagging]


def test_lookback_rereads_an_overlap_without_moving_the_cursor_back(fake: FakeHubSpot) -> None:
    """RELIABILITY 10: ``lookback_seconds`` re-reads what changed shortly before the previous run
    asked the index; no checkpoint of that run is behind the saved cursor."""
    now = fake.now()
    all_ids = add_contacts(fake, 10, first=now - 100_000, step=10_000)  # now-100 s .. now-10 s
    saved = checkpoints(read(stream_of(fake)))[-1].state
    assert saved["ts"] == now - 10_000

    fake.clock.advance(MINUTE)
    items = read(stream_of(fake, lookback_seconds=35), saved)

    # The previous run asked at ``now`` (no index lag here): what changed within 35 s before
    # that may have been indexed late and is read again.
    assert ids(items) == all_ids[-3:], "the contacts changed within 35 s before the last run asked"
    assert all(position(cp.state) >= position(saved) for cp in checkpoints(items))
    assert checkpoints(items)[-1].state["ts"] == saved["ts"]


def test_lookback_from_inside_a_group_never_moves_the_cursor_back(fake: FakeHubSpot) -> None:
    """RELIABILITY 7/10: a run resumed inside a group of 1,000 equal timestamps with a lookback
    re-reads, but none of its checkpoints is behind the saved (timestamp, id)."""
    all_ids = add_contacts(fake, 1000, first=fake.now() - 50_000_000, group=1000)
    first = read(stream_of(fake, page_size=100, archived_sweep_hours=None))
    saved = [cp for cp in checkpoints(first) if cp.state["id"] is not None][5].state

    again = read(stream_of(fake, page_size=100, archived_sweep_hours=None, lookback_seconds=300),
                 saved)

    assert set(ids(again)) >= {i for i in all_ids if int(i) > int(saved["id"])}
    behind = [cp.state for cp in checkpoints(again) if position(cp.state) < position(saved)]
    assert not behind, f"saved {saved}, then {behind[:3]}"


# --------------------------------------------------------------------------- 11. deletions


def test_archived_contacts_come_as_deletions_when_the_sweep_is_due(fake: FakeHubSpot) -> None:
    """RELIABILITY 11: with ``archived_sweep_hours: 0`` every run lists the archived contacts and
    yields them as ``Record(deleted=True)``; the final state records when it swept."""
    now = fake.now()
    live = add_contacts(fake, 3, first=now - 100_000)
    gone = add_contacts(fake, 2, first=now - 90_000, tag="gone")
    for cid in gone:
        fake.archive("contacts", cid, at=now - 50_000)
    started = fake.now()

    items = read(stream_of(fake, archived_sweep_hours=0))

    got, final = records(items), items[-1]
    assert sorted(r.data["id"] for r in got if not r.deleted) == sorted(live)
    assert sorted(r.data["id"] for r in got if r.deleted) == sorted(gone)
    assert all(r.data["archived"] for r in got if r.deleted)
    assert isinstance(final, Checkpoint)
    swept = datetime.fromisoformat(final.state["swept_at"].replace("Z", "+00:00"))
    assert swept >= as_datetime(started)


def test_archived_sweep_waits_until_due_and_swept_at_is_kept_in_every_checkpoint(
        fake: FakeHubSpot) -> None:
    """RELIABILITY 11: a sweep done an hour ago (every 24 h): no listing call, no deletion, and
    every checkpoint keeps ``swept_at``; a day later the sweep runs and moves it."""
    now = fake.now()
    add_contacts(fake, 100, first=now - 500_000)
    gone = fake.add("contacts", {"email": "gone@example.com"}, updated_at=now - 600_000)
    fake.archive("contacts", gone, at=now - 600_000)
    swept_at = as_datetime(now - 3_600_000).isoformat().replace("+00:00", "Z")
    state = {"ts": now - 700_000, "id": None, "swept_at": swept_at}

    items = read(stream_of(fake, page_size=20, archived_sweep_hours=24), state)

    assert len(records(items)) == 100 and not any(r.deleted for r in records(items))
    assert fake.calls("GET") == 0, "the sweep was not due"
    assert len(checkpoints(items)) > 2
    assert all(cp.state.get("swept_at") == swept_at for cp in checkpoints(items))

    fake.clock.advance(DAY_MS)
    later = read(stream_of(fake, page_size=20, archived_sweep_hours=24),
                 checkpoints(items)[-1].state)
    assert [r.data["id"] for r in records(later) if r.deleted] == [gone]
    assert checkpoints(later)[-1].state["swept_at"] != swept_at


# --------------------------------------------------------------------------- 12. merges


def test_merged_contact_is_read_with_both_old_ids_as_aliases(fake: FakeHubSpot) -> None:
    """RELIABILITY 17: HubSpot merges two contacts into a new one with a new id; the next read
    yields it with ``aliases`` naming both old ids, and the old ids no longer come."""
    now = fake.now()
    a = fake.add("contacts", {"email": "max@example.com"}, updated_at=now - 100_000)
    b = fake.add("contacts", {"email": "m.power@example.com"}, updated_at=now - 90_000)
    state = checkpoints(read(stream_of(fake)))[-1].state
    fake.clock.advance(1000)

    merged = fake.merge("contacts", a, b)
    fake.clock.advance(1000)
    got = records(read(stream_of(fake), state))

    assert merged not in (a, b)
    assert [r.data["id"] for r in got] == [merged]
    assert sorted(got[0].aliases) == sorted([a, b])
    assert "m.power@example.com" in got[0].data["hs_additional_emails"]


# --------------------------------------------------------------------------- 13. writes


def test_write_sends_only_changed_properties_and_skips_unchanged_records(fake: FakeHubSpot) -> None:
    """RELIABILITY 12: only properties that differ from ``OutRecord.previous`` are sent; a record
    with nothing changed makes no call and is reported ok with its id."""
    ann = fake.add("contacts", {"email": "ann@example.com", "firstname": "Ann", "lastname": "Lee"})
    bob = fake.add("contacts", {"email": "bob@example.com", "firstname": "Bob"})
    stream = stream_of(fake)
    previous_ann = {"email": "ann@example.com", "firstname": "Ann", "lastname": "Lee"}

    results = write(stream, [
        out("g-ann", ann, previous=previous_ann, email="ann@example.com", firstname="Ann",
            lastname="Smith"),
        out("g-bob", bob, previous={"email": "bob@example.com", "firstname": "Bob"},
            email="bob@example.com", firstname="Bob"),
    ])

    assert [b["inputs"] for b in sent(fake, "/batch/")] == [
        [{"id": ann, "properties": {"lastname": "Smith"}, "objectWriteTraceId": "g-ann"}]]
    assert results["g-ann"].ok and results["g-ann"].external_id == ann
    assert results["g-bob"].ok and results["g-bob"].external_id == bob
    assert fake.get("contacts", ann)["properties"]["lastname"] == "Smith"

    calls = len(fake.requests)
    unchanged = write(stream, [out("g-bob", bob, previous={"firstname": "Bob"}, firstname="Bob")])
    assert unchanged["g-bob"].ok and len(fake.requests) == calls, "no call for an unchanged record"


def test_empty_values_clear_only_the_properties_listed_in_clear_properties(
        fake: FakeHubSpot) -> None:
    """RELIABILITY 12: an empty hub value never clears a HubSpot property, unless the property is
    in ``clear_properties``."""
    cid = fake.add("contacts",
                   {"email": "cleo@example.com", "phone": "+4930123", "jobtitle": "CEO"})
    previous = {"email": "cleo@example.com", "phone": "+4930123", "jobtitle": "CEO"}
    record = out("g1", cid, previous=previous, email="cleo@example.com", phone="", jobtitle=None)

    nothing = write(stream_of(fake), [record])
    assert nothing["g1"].ok and fake.calls("POST", "/batch/") == 0, "nothing to clear: no call"

    cleared = write(stream_of(fake, clear_properties=["jobtitle"]), [record])
    assert cleared["g1"].ok
    assert [b["inputs"][0]["properties"] for b in sent(fake, "/batch/")] == [{"jobtitle": ""}]
    props = fake.get("contacts", cid)["properties"]
    assert props["phone"] == "+4930123" and props.get("jobtitle") is None


def test_250_new_contacts_are_upserted_in_3_calls(fake: FakeHubSpot) -> None:
    """RELIABILITY 12: 100 inputs per batch call: 250 upserts by e-mail take exactly 3 calls,
    and each result carries the id HubSpot gave the contact."""
    outs = [out(f"g{i}", email=f"u{i}@example.com", firstname=f"U{i}") for i in range(250)]

    results = write(stream_of(fake), outs)

    assert fake.calls("POST") == 3 and fake.calls("POST", "batch/upsert") == 3
    assert [len(b["inputs"]) for b in sent(fake, "batch/upsert")] == [100, 100, 50]
    by_email = {c["properties"]["email"]: c["id"] for c in fake.all("contacts")}
    assert len(by_email) == 250
    assert all(results[f"g{i}"].ok and results[f"g{i}"].external_id == by_email[f"u{i}@example.com"]
               for i in range(250))


def test_each_record_takes_the_right_batch_endpoint(fake: FakeHubSpot) -> None:
    """RELIABILITY 12: a known HubSpot id is updated by id (``batch/update``), a contact with an
    e-mail is upserted by e-mail, a contact without one is created."""
    known = fake.add("contacts", {"email": "known@example.com", "firstname": "K"})
    results = write(stream_of(fake), [
        out("g-known", known, previous={"firstname": "K"}, firstname="Kim"),
        out("g-mail", email="new@example.com", firstname="Nia"),
        out("g-anon", firstname="Anon", phone="+4930999"),
    ])

    assert [r.url.path.rsplit("/", 1)[1] for r in fake.requests] == ["update", "upsert", "create"]
    assert sent(fake, "batch/update")[0]["inputs"][0]["id"] == known
    upsert = sent(fake, "batch/upsert")[0]["inputs"][0]
    assert (upsert["id"], upsert["idProperty"]) == ("new@example.com", "email")
    people = {c["properties"]["firstname"]: c for c in fake.all("contacts")}
    assert sorted(people) == ["Anon", "Kim", "Nia"]
    assert people["Anon"]["properties"].get("email") is None
    for golden, name in (("g-known", "Kim"), ("g-mail", "Nia"), ("g-anon", "Anon")):
        assert results[golden].ok and results[golden].external_id == people[name]["id"]


# --------------------------------------------------------------------------- 14. auth


def test_401_is_an_auth_error_sent_once_and_without_the_token(
        fake: FakeHubSpot, caplog: pytest.LogCaptureFixture) -> None:
    """RELIABILITY 14: a private-app token HubSpot refuses: ``AuthError`` after one request, for
    reads and writes; the token is in no message and no log record."""
    wrong = "pat-na1-revoked-7c1d2e3f-secret"
    add_contacts(fake, 3, first=fake.now() - 10_000)
    caplog.set_level(logging.DEBUG)

    with pytest.raises(AuthError) as on_read:
        read(stream_of(fake, settings={"token": wrong}))
    assert fake.calls() == 1, "a 401 is not retried"
    with pytest.raises(AuthError) as on_write:
        write(stream_of(fake, settings={"token": wrong}), [out("g1", email="x@example.com")])
    assert fake.calls() == 2

    texts = [str(on_read.value), repr(on_read.value), str(on_write.value)]
    texts += [r.getMessage() for r in caplog.records]
    assert not [t for t in texts if wrong in t or TOKEN in t]


def test_expired_oauth_token_is_refreshed_once_and_never_logged(
        fake: FakeHubSpot, caplog: pytest.LogCaptureFixture) -> None:
    """RELIABILITY 14: with OAuth, the first request gets a token; when it expires mid-read the
    401 is answered by one refresh and the read goes on. A second 401 right after a refresh is an
    ``AuthError``. No token or secret is in any message or log record."""
    fake.oauth_client = (OAUTH["client_id"], OAUTH["client_secret"], OAUTH["refresh_token"])
    all_ids = add_contacts(fake, 500, first=fake.now() - 1_000_000)
    factory, recorder = recorded(fake)
    settings = {"token": None, "oauth": OAUTH}
    caplog.set_level(logging.DEBUG)

    got: list[str] = []
    for item in stream_of(fake, factory=factory, settings=settings).read(None):
        if isinstance(item, Record):
            got.append(item.data["id"])
            if len(got) == 200:
                fake.expire_token()
    assert sorted(got) == sorted(all_ids)
    assert fake.calls("POST", "/oauth/v1/token") == 2, "one token at the start, one refresh"
    assert recorder.statuses().count(401) == 1

    fake.fail_next(10, status=401, path=SEARCH)
    with pytest.raises(AuthError) as refused:
        read(stream_of(fake, settings=settings))
    assert fake.calls("POST", "/oauth/v1/token") == 4, "a new token, then one refresh on the 401"

    bearer = {r.headers["Authorization"].split()[1] for r in fake.requests
              if r.url.path.startswith("/crm/")}
    secrets = {*bearer, OAUTH["client_secret"], OAUTH["refresh_token"]}
    assert len(bearer) >= 3
    texts = [str(refused.value), repr(refused.value)] + [r.getMessage() for r in caplog.records]
    leaks = [(s, t) for t in texts for s in secrets if s in t]
    assert not leaks


def test_oauth_token_is_refreshed_ahead_of_expiry(fake: FakeHubSpot) -> None:
    """RELIABILITY 14: half-way through a read the token's lifetime is over (by the connector's
    clock): it is refreshed before the next request, so HubSpot never answers 401."""
    fake.oauth_client = (OAUTH["client_id"], OAUTH["client_secret"], OAUTH["refresh_token"])
    all_ids = add_contacts(fake, 300, first=fake.now() - 1_000_000)
    factory, recorder = recorded(fake)
    got: list[str] = []
    for item in stream_of(fake, factory=factory, settings={"token": None, "oauth": OAUTH},
                          page_size=100).read(None):
        if isinstance(item, Record):
            got.append(item.data["id"])
            if len(got) == 100:
                fake.clock.advance(fake_hubspot.OAUTH_EXPIRES_IN_S * 1000 + 1000)
    assert sorted(got) == sorted(all_ids)
    assert recorder.statuses().count(401) == 0
    assert fake.calls("POST", "/oauth/v1/token") == 2
