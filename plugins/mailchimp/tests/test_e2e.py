"""End to end: HubSpot contacts and a CSV newsletter import become one deduplicated segment in a
Mailchimp audience; an unsubscribe made in Mailchimp stays there and reaches HubSpot.

The vendors are the stateful fakes, mounted with respx on their real hosts, so the hub builds
its clients as in production; every request is checked against the vendors' OpenAPI files.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import respx

from plugins.hubspot.tests.fake_hubspot import FakeClock, FakeHubSpot
from plugins.mailchimp.tests.fake_mailchimp import FakeMailchimp
from synchub import store as st
from synchub.testing.specs import HUBSPOT_SEARCH_SORT_OBJECTS, hubspot_validator
from tests.helpers import hub_for, rows, write_config

HS_TOKEN = "pat-na1-e2e-secret-token"
MC_KEY = "fedcba9876543210fedcba9876543210-us6"
LIST = "aud1"

CONFIG = """
connections:
  crm:
    connector: hubspot
    direction: both
    settings: {token: "${HS_TOKEN}"}
    streams:
      contacts:
        mapping: hubspot_contacts
        write_mapping: hubspot_contacts_out
        settings: {index_lag_seconds: 0, lookback_seconds: 0, archived_sweep_hours: null}
  import:
    connector: files
    direction: in
    settings: {path: data}
    streams:
      audience: {mapping: newsletter, settings: {pattern: "newsletter*.csv", primary_key: Email Address}}
  mc:
    connector: mailchimp
    direction: both
    settings: {api_key: "${MC_KEY}"}
    streams:
      newsletter:
        mapping: mailchimp_members
        write_mapping: mailchimp_members_out
        filter: {lifecycle_stage: {in: [customer, evangelist]}}
        settings: {list_id: aud1, tags: [crm-customers], settle_seconds: 0, lookback_seconds: 0}
"""

NEWSLETTER = """\
Email Address,First Name,Last Name,Language,Tags,Status,Opt-in Time,Last Changed
ANN@example.com,Ann,Lee,de,,subscribed,2025-03-01 10:00:00,2025-03-01 10:00:00
bob@example.com,Bob,Roe,de,,subscribed,2025-03-02 10:00:00,2025-03-02 10:00:00
cara@example.com,Cara,Diaz,en,,subscribed,2025-03-03 10:00:00,2025-03-03 10:00:00
"""


class WallClock(FakeClock):
    """The vendors' clocks are the wall clock, as the connectors' are (ms since the epoch);
    ``advance`` only moves them back in time for setup, never ahead of the connectors."""

    def __init__(self) -> None:
        super().__init__(0)
        self.offset = -60_000  # setup happens "a minute ago"

    def __call__(self) -> int:
        return int(time.time() * 1000) + self.offset

    def advance(self, ms: float) -> int:
        self.offset = min(0, self.offset + int(ms))
        return self()


@pytest.fixture
def vendors(store_url: str, tmp_path: Path, spec):
    """Both fakes on their real hosts, on the wall clock."""
    clock = WallClock()
    hubspot = FakeHubSpot(token=HS_TOKEN, validator=hubspot_validator(HUBSPOT_SEARCH_SORT_OBJECTS), clock=clock)
    mailchimp = FakeMailchimp(api_key=MC_KEY, validator=spec, clock=clock)
    mailchimp.add_list(LIST, "Customers")
    with respx.mock(assert_all_called=False) as mock:
        mock.route(host="api.hubapi.com").mock(side_effect=hubspot.transport.handle_request)
        mock.route(host="us6.api.mailchimp.com").mock(side_effect=mailchimp.transport.handle_request)
        yield hubspot, mailchimp
    assert hubspot.violations == [] and mailchimp.violations == []


def _writes(fake: FakeMailchimp, since: int) -> list[str]:
    return [f"{r.method} {r.url.path}" for r in fake.requests[since:] if r.method != "GET"]


def test_crm_segment_lands_deduplicated_and_an_unsubscribe_flows_back(vendors, tmp_path: Path, store_url: str):
    hubspot, mailchimp = vendors
    for first, last, email, stage in [("Ann", "Lee", "ann@example.com", "customer"),
                                      ("Bob", "Roe", "bob@example.com", "customer"),
                                      ("Cara", "Díaz", "cara@example.com", "evangelist"),
                                      ("Dan", "Fox", "dan@example.com", "lead"),
                                      ("Eve", "Ray", "eve@example.com", "customer")]:
        hubspot.add("contacts", {"email": email, "firstname": first, "lastname": last, "lifecyclestage": stage})
    # Eve was on the list and unsubscribed through the link in a campaign.
    mailchimp.add_member(LIST, "eve@example.com", merge_fields={"FNAME": "Eve"})
    mailchimp.clock.advance(1000)
    mailchimp.set_status(LIST, "eve@example.com", "unsubscribed", reason="not interested")
    cfg = write_config(tmp_path, CONFIG, store_url, newsletter__csv=NEWSLETTER)
    hub = hub_for(cfg, {"HS_TOKEN": HS_TOKEN, "MC_KEY": MC_KEY})

    first = hub.sync()
    assert all(s.status in ("succeeded", "partial") for s in first), [(s.connection, s.status, s.error) for s in first]
    second = hub.sync()
    assert all(s.status in ("succeeded", "partial") for s in second), [(s.connection, s.status, s.error) for s in second]

    # Three people were in HubSpot and in the import: one golden record each.
    active = rows(hub.store, st.golden_t, st.golden_t.c.status == "active")
    for email in ("ann@example.com", "bob@example.com", "cara@example.com"):
        assert sum(email in g["data"].get("emails", []) for g in active) == 1
    # The audience holds the customers' segment, deduplicated, with merge fields and the tag.
    members = {m["email_address"]: m for m in mailchimp.members(LIST)}
    assert set(members) == {"ann@example.com", "bob@example.com", "cara@example.com", "eve@example.com"}
    assert members["ann@example.com"]["status"] == "subscribed"  # documented double opt-in
    assert members["cara@example.com"]["merge_fields"]["LNAME"] == "Díaz"
    assert members["bob@example.com"]["merge_fields"]["FNAME"] == "Bob"
    assert {t["name"] for t in members["ann@example.com"]["tags"]} == {"crm-customers"}
    assert "dan@example.com" not in members  # a lead: not in the segment
    # Eve is still unsubscribed, and HubSpot received the unsubscribe.
    assert members["eve@example.com"]["status"] == "unsubscribed"
    [eve] = [c for c in hubspot.all("contacts") if c["properties"].get("email") == "eve@example.com"]
    assert eve["properties"].get("synchub_email_status") == "unsubscribed"
    # Nobody was subscribed twice or added as a second member.
    batches = [json.loads(r.content) for r in mailchimp.requests if r.method == "POST" and r.url.path.endswith(f"/lists/{LIST}")]
    sent = [m["email_address"].lower() for b in batches for m in b["members"]]
    assert len(sent) == len(set(sent))
    assert all(not (m["email_address"] == "eve@example.com" and m["status"] == "subscribed") for b in batches for m in b["members"])

    # An unchanged re-run writes nothing to Mailchimp.
    before, before_hs = len(mailchimp.requests), len(hubspot.requests)
    last = hub.sync()
    assert _writes(mailchimp, before) == []
    # The run history counts every request the vendors received.
    recorded = sum(hub.store.get_run(s.run_id)["api_calls"] for s in last)
    assert recorded == len(mailchimp.requests) - before + len(hubspot.requests) - before_hs > 0


def test_a_customer_who_leaves_the_segment_is_untagged_and_dry_run_shows_it(vendors, tmp_path: Path, store_url: str):
    hubspot, mailchimp = vendors
    ann = hubspot.add("contacts", {"email": "ann@example.com", "firstname": "Ann", "lastname": "Lee", "lifecyclestage": "customer"})
    cfg = write_config(tmp_path, CONFIG, store_url, newsletter__csv=NEWSLETTER)
    hub = hub_for(cfg, {"HS_TOKEN": HS_TOKEN, "MC_KEY": MC_KEY})
    hub.sync()
    assert mailchimp.tags_of(LIST, "ann@example.com") == {"crm-customers"}
    # Marketing narrows the segment to evangelists (a lifecycle stage only moves forward in
    # the hub, so the filter changes rather than Ann).
    hub.config.connections["mc"].streams["newsletter"].filter = {"lifecycle_stage": "evangelist"}
    before = len(mailchimp.requests)
    plan = hub.plan("mc")["newsletter"]
    assert {p.action for p in plan} == {"leave"}
    assert _writes(mailchimp, before) == []  # a dry run writes nothing
    [summary] = [s for s in hub.sync(["mc"]) if s.connection == "mc" and s.direction == "out"]
    assert summary.streams["newsletter"].left == 1
    assert mailchimp.tags_of(LIST, "ann@example.com") == set()
    assert mailchimp.member(LIST, "ann@example.com")["status"] == "subscribed"  # untagged, not removed
    assert ann  # the HubSpot contact is untouched by any of this


OUT_ONLY = """
connections:
  import:
    connector: files
    direction: in
    settings: {path: data}
    streams:
      audience: {mapping: newsletter, settings: {pattern: "newsletter*.csv", primary_key: Email Address}}
  mc:
    connector: mailchimp
    direction: out
    settings: {api_key: "${MC_KEY}"}
    streams:
      newsletter:
        mapping: mailchimp_members_out
        settings: {list_id: aud1}
"""


def test_refusals_land_on_the_reopt_in_list_once_and_are_not_retried(vendors, tmp_path: Path, store_url: str):
    """RELIABILITY 15/16 through the engine: with a write-only Mailchimp connection the hub says
    subscribed (the import) while Mailchimp holds an opt-out or a permanent deletion."""
    from typer.testing import CliRunner

    from synchub.cli import app

    _hubspot, mailchimp = vendors
    mailchimp.add_member(LIST, "bob@example.com")
    mailchimp.set_status(LIST, "bob@example.com", "unsubscribed")
    mailchimp.add_member(LIST, "cara@example.com")
    mailchimp.delete_permanent(LIST, "cara@example.com")
    cfg = write_config(tmp_path, OUT_ONLY, store_url, newsletter__csv=NEWSLETTER)
    env = {"MC_KEY": MC_KEY}
    runner = CliRunner()
    hub = hub_for(cfg, env)
    hub.run_connection("import", "in")  # read only; the push comes later
    # The dry run names what consent rules hold back, and writes nothing.
    before = len(mailchimp.requests)
    result = runner.invoke(app, ["--config", str(cfg), "--json", "sync", "mc", "--dry-run"], env=env)
    assert result.exit_code == 0, result.output
    plan = {p["reason"] or p["action"]: p for p in json.loads(result.stdout)["plans"]["mc"]["newsletter"]}
    assert any("re-opt-in" in k for k in plan), plan
    assert _writes(mailchimp, before) == []

    [push] = [s for s in hub.sync(["mc"]) if s.connection == "mc"]
    counts = push.streams["newsletter"]
    assert (counts.written, counts.skipped, counts.write_rejected) == (1, 1, 1)  # ann; bob held back; cara refused
    assert mailchimp.member(LIST, "bob@example.com")["status"] == "unsubscribed"
    assert mailchimp.member(LIST, "cara@example.com") is None
    reopt = hub.store.list_conflicts("open", kind="needs_reoptin")
    assert len(reopt) == 2
    result = runner.invoke(app, ["--config", str(cfg), "--json", "conflicts", "--kind", "needs_reoptin"], env=env)
    assert {r["golden_id"] for r in json.loads(result.stdout)} == {r["golden_id"] for r in reopt}
    assert {r["email"] for r in json.loads(result.stdout)} == {"bob@example.com", "cara@example.com"}  # whom to ask

    # The next run neither retries the refusal nor logs the entries again.
    before = len(mailchimp.requests)
    [push] = [s for s in hub.sync(["mc"]) if s.connection == "mc"]
    assert _writes(mailchimp, before) == []
    assert len(hub.store.list_conflicts("open", kind="needs_reoptin")) == 2


def test_an_address_change_in_mailchimp_reaches_the_crm_without_a_second_member(vendors, tmp_path: Path, store_url: str):
    hubspot, mailchimp = vendors
    ann = hubspot.add("contacts", {"email": "ann@example.com", "firstname": "Ann", "lastname": "Lee", "lifecyclestage": "customer"})
    cfg = write_config(tmp_path, CONFIG, store_url, newsletter__csv=NEWSLETTER.splitlines()[0] + "\n")
    hub = hub_for(cfg, {"HS_TOKEN": HS_TOKEN, "MC_KEY": MC_KEY})
    mailchimp.add_member(LIST, "ann@example.com", merge_fields={"FNAME": "Ann"})
    hub.sync()
    mailchimp.clock.advance(60_000)  # now on the wall clock
    mailchimp.change_email(LIST, "ann@example.com", "ann.lee@example.org")  # upemail
    time.sleep(1.1)  # last_changed has whole seconds; reads take what changed before this second
    hub.sync()  # Mailchimp's change comes in; the CRM push follows in the same sync
    assert hubspot.get("contacts", ann)["properties"]["email"] == "ann.lee@example.org"
    assert [m["email_address"] for m in mailchimp.members(LIST)] == ["ann.lee@example.org"]
    [g] = [g for g in rows(hub.store, st.golden_t, st.golden_t.c.status == "active")]
    assert g["data"]["emails"][0] == "ann.lee@example.org"


def test_the_dry_run_diffs_against_what_the_audience_holds_now(vendors, tmp_path: Path, store_url: str):
    """The issue's case: a member subscribed in Mailchimp as "Juergen" with the tag vip, never written
    by the hub (a write-only connection): the dry run shows an update from what Mailchimp holds, not
    a create from nothing; offline it can only say what the store knows."""
    _hubspot, mailchimp = vendors
    mailchimp.add_member(LIST, "ann@example.com", merge_fields={"FNAME": "Juergen", "LNAME": "Lee"}, tags=["vip"])
    cfg = write_config(tmp_path, OUT_ONLY, store_url, newsletter__csv=NEWSLETTER.replace("Ann,Lee", "Jürgen,Lee"))
    hub = hub_for(cfg, {"MC_KEY": MC_KEY})
    hub.run_connection("import", "in")
    before = len(mailchimp.requests)
    ann = next(p for p in hub.plan("mc")["newsletter"] if p.changes.get("merge_fields.FNAME"))
    assert ann.action == "update"
    assert ann.changes["merge_fields.FNAME"] == ("Juergen", "Jürgen")
    assert "merge_fields.LNAME" not in ann.changes  # Mailchimp holds it already
    assert _writes(mailchimp, before) == []
    offline = {p.golden_id: p for p in hub.plan("mc", offline=True)["newsletter"]}[ann.golden_id]
    assert offline.action == "create" and offline.changes["merge_fields"][0] is None
    assert offline.changes["merge_fields"][1]["FNAME"] == "Jürgen"
