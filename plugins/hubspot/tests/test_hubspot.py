"""HubSpot end to end through the hub: pull contacts and companies, match and merge, push back.

Every request reaches a stateful fake HubSpot and is validated against HubSpot's OpenAPI files
(see conftest). Store tests run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from plugins.hubspot.tests.conftest import TOKEN, http_factory
from plugins.hubspot.tests.fake_hubspot import FakeHubSpot
from synchub import cli
from synchub.config import load_config
from synchub.engine import Hub
from synchub.http import LimiterRegistry
from synchub.store import audit_t, golden_t, outbound_t, rejected_t, source_t
from tests.helpers import rows, write_config

CONFIG = """
connections:
  crm:
    connector: hubspot
    direction: both
    settings: {token: "${HUBSPOT_TOKEN}", account: "4711"}
    streams:
      companies: {mapping: hubspot_companies, write_mapping: hubspot_companies_out,
                  settings: {index_lag_seconds: 0}}
      contacts: {mapping: hubspot_contacts, write_mapping: hubspot_contacts_out,
                 settings: {index_lag_seconds: 0, archived_sweep_hours: 0}}
"""
MATCH = """
match:
  person: {keys: [email, phone_mobile]}
  company: {keys: [domain]}
"""

SHOP = """
  shop:
    connector: files
    direction: in
    settings: {path: data}
    streams:
      customers:
        mapping: shop_kunden
        settings: {pattern: "shop*.csv", primary_key: Kundennr}
"""


def make_hub(tmp_path: Path, store_url: str, fake: FakeHubSpot, extra: str = "", **files: str) -> Hub:
    cfg = write_config(tmp_path, CONFIG + extra + MATCH, store_url, **files)
    hub = Hub(load_config(cfg, environ={"HUBSPOT_TOKEN": TOKEN}), http=http_factory(fake))
    hub.store.upgrade()
    return hub


def seed(fake: FakeHubSpot) -> dict[str, str]:
    ids = {}
    ids["acme"] = fake.add("companies", {"name": "Acme GmbH", "domain": "acme.de", "city": "Köln"})
    ids["ann"] = fake.add("contacts", {"email": "Ann.Meier@Example.com", "firstname": "Ann", "lastname": "Meier",
                                       "associatedcompanyid": ids["acme"], "lifecyclestage": "customer"})
    ids["bob"] = fake.add("contacts", {"email": "bob@example.com", "firstname": "Bob", "lastname": "Berg",
                                       "phone": "0221 123456", "country": "Germany"})
    fake.clock.advance(5_000)
    return ids


def golden(hub: Hub, kind: str = "person") -> list[dict]:
    return rows(hub.store, golden_t, golden_t.c.kind == kind, golden_t.c.status == "active")


def test_pull_maps_contacts_and_links_their_company(tmp_path: Path, store_url: str, fake: FakeHubSpot) -> None:
    ids = seed(fake)
    hub = make_hub(tmp_path, store_url, fake)
    [pull, push] = hub.sync(["crm"])
    assert pull.status == "succeeded", pull.error
    people = {g["data"]["first_name"]: g for g in golden(hub)}
    companies = golden(hub, "company")
    assert set(people) == {"Ann", "Bob"} and len(companies) == 1
    ann = people["Ann"]["data"]
    assert ann["emails"] == ["ann.meier@example.com"]
    assert ann["lifecycle_stage"] == "customer"
    assert ann["company_id"] == companies[0]["id"], "the contact's company is the golden company"
    assert people["Bob"]["data"]["phones"] == ["+49221123456"]
    assert people["Bob"]["data"]["address"]["country"] == "DE"
    # Both came from HubSpot and nothing changed in the hub: nothing to write.
    assert push.status == "succeeded", push.error
    assert fake.calls("POST", "/batch/") == 0
    sources = rows(hub.store, source_t, source_t.c.connection == "crm")
    assert {s["source_id"] for s in sources} == {ids["acme"], ids["ann"], ids["bob"]}


def test_golden_changes_from_another_source_are_written_back_once(tmp_path: Path, store_url: str, fake: FakeHubSpot) -> None:
    ids = seed(fake)
    shop = "Kundennr;Vorname;Nachname;E-Mail;Telefon;Straße;PLZ;Ort;Land\n" \
           "K1;Ann;Meier;ann.meier@example.com;;Hauptstr. 1;50667;Köln;Deutschland\n" \
           "K2;Cleo;Neu;cleo@example.com;;;;;\n"
    hub = make_hub(tmp_path, store_url, fake, SHOP, shop__csv=shop)
    summaries = hub.sync()
    assert all(s.status == "succeeded" for s in summaries), [(s.connection, s.error) for s in summaries]
    # Ann: known in HubSpot, gets the shop's address (only those properties); Cleo: new, upserted.
    ann = fake.get("contacts", ids["ann"])["properties"]
    assert ann["address"] == "Hauptstr. 1" and ann["zip"] == "50667" and ann["city"] == "Köln"
    assert ann["firstname"] == "Ann"
    cleo = [c for c in fake.all("contacts") if c["properties"].get("email") == "cleo@example.com"]
    assert len(cleo) == 1
    writes = [r for r in fake.requests if "/batch/" in r.url.path]
    assert sorted(r.url.path.rsplit("/", 1)[1] for r in writes) == ["update", "upsert"]
    update = json.loads(next(r for r in writes if r.url.path.endswith("update")).content)
    sent = update["inputs"][0]["properties"]
    assert set(sent) == {"address", "zip", "city", "country"}, "only the changed properties are sent"
    # The external id of the new contact is remembered; the next sync writes nothing.
    out = {o["golden_id"]: o for o in rows(hub.store, outbound_t, outbound_t.c.stream == "contacts")}
    assert any(o["external_id"] == cleo[0]["id"] for o in out.values())
    before = len(fake.requests)
    fake.clock.advance(10_000)
    again = hub.sync()
    assert all(s.status == "succeeded" for s in again)
    assert fake.calls("POST", "/batch/") == len(writes), "an unchanged re-run makes no write call"
    assert len(fake.requests) > before  # it did read


def test_hubspot_merge_rekeys_instead_of_duplicating(tmp_path: Path, store_url: str, fake: FakeHubSpot) -> None:
    a = fake.add("contacts", {"email": "max@example.com", "firstname": "Max", "lastname": "Power"})
    b = fake.add("contacts", {"email": "m.power@work.example", "firstname": "Maximilian", "lastname": "Power"})
    fake.clock.advance(5_000)
    hub = make_hub(tmp_path, store_url, fake)
    hub.sync(["crm"])
    assert len(golden(hub)) == 2
    merged = fake.merge("contacts", a, b)
    fake.clock.advance(5_000)
    [pull, _push] = hub.sync(["crm"])
    assert pull.status == "succeeded", pull.error
    people = golden(hub)
    assert len(people) == 1, "HubSpot merged them: the hub keeps one customer"
    assert set(people[0]["data"]["emails"]) == {"max@example.com", "m.power@work.example"}
    srcs = rows(hub.store, source_t, source_t.c.connection == "crm", source_t.c.stream == "contacts")
    assert [s["source_id"] for s in srcs] == [merged]
    assert any(r["action"] in ("rekey", "merge") for r in rows(hub.store, audit_t))
    # Downstream keeps one record too: pushing creates nothing new in HubSpot.
    assert len(fake.all("contacts")) == 1


def test_archived_contact_is_deleted_in_the_hub(tmp_path: Path, store_url: str, fake: FakeHubSpot) -> None:
    ids = seed(fake)
    hub = make_hub(tmp_path, store_url, fake)
    hub.sync(["crm"])
    fake.archive("contacts", ids["bob"])
    fake.clock.advance(5_000)
    hub.sync(["crm"])
    owner = {s["source_id"]: s["golden_id"] for s in rows(hub.store, source_t, source_t.c.stream == "contacts")}
    status = {g["id"]: g["status"] for g in rows(hub.store, golden_t, golden_t.c.kind == "person")}
    assert status == {owner[ids["ann"]]: "active", owner[ids["bob"]]: "deleted"}


def test_rejected_write_is_logged_and_retried_next_run(tmp_path: Path, store_url: str, fake: FakeHubSpot) -> None:
    shop = "Kundennr;Vorname;Nachname;E-Mail\nK1;Eve;Bad;eve@example.com\nK2;Fred;Good;fred@example.com\n"
    hub = make_hub(tmp_path, store_url, fake, SHOP, shop__csv=shop)
    fake.reject_when(lambda t, props: "Property values were not valid: lastname" if props.get("lastname") == "Bad" else None)
    summaries = {s.connection + s.direction: s for s in hub.sync()}
    push = summaries["crmout"]
    assert push.status == "partial"
    assert push.streams["contacts"].written == 1 and push.streams["contacts"].write_rejected == 1
    rej = rows(hub.store, rejected_t, rejected_t.c.connection == "crm")
    assert len(rej) == 1 and "not valid" in rej[0]["reason"]
    assert [c["properties"]["email"] for c in fake.all("contacts")] == ["fred@example.com"]
    # HubSpot accepts it now: the next run writes the rejected record, and only it.
    fake._rejections.clear()
    fake.clock.advance(5_000)
    hub.sync()
    assert sorted(c["properties"]["email"] for c in fake.all("contacts")) == ["eve@example.com", "fred@example.com"]


def test_daily_quota_pauses_the_run_and_the_next_run_finishes(tmp_path: Path, store_url: str) -> None:
    import synchub_hubspot
    from synchub.testing.specs import HUBSPOT_SEARCH_SORT_OBJECTS, hubspot_validator

    fake = FakeHubSpot(token=TOKEN, validator=hubspot_validator(HUBSPOT_SEARCH_SORT_OBJECTS), daily_limit=10)
    mp = pytest.MonkeyPatch()
    mp.setattr(synchub_hubspot, "now_ms", fake.clock)
    try:
        # One change a second: the default 5-minute lookback re-reads 300 of them next run.
        for i in range(2400):
            fake.add("contacts", {"email": f"c{i}@example.com", "firstname": f"C{i}"})
            fake.clock.advance(1000)
        fake.clock.advance(5_000)
        hub = make_hub(tmp_path, store_url, fake)
        first = hub.run_connection("crm", "in")
        assert first.status == "paused" and first.resume_at is not None, first.error
        landed = len(golden(hub))
        assert 0 < landed < 2400, "what was read before the quota ran out is kept"
        state = hub.store.get_state("crm", "contacts")
        assert state and state["ts"] > 0
        # After midnight the quota is back (the fake's day rolls over; the account's stop is
        # lifted as a new process would find it).
        fake.clock.advance(86_400_000)
        hub.http.registry = LimiterRegistry()
        second = hub.run_connection("crm", "in")
        assert second.status == "succeeded", second.error
        people = golden(hub)
        assert len(people) == 2400
        assert len({p["data"]["emails"][0] for p in people}) == 2400
        assert fake.violations == []
    finally:
        mp.undo()


def test_check_reports_what_the_connection_can_do(tmp_path: Path, store_url: str, fake: FakeHubSpot,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    seed(fake)
    cfg = write_config(tmp_path, CONFIG + MATCH, store_url)
    monkeypatch.setenv("HUBSPOT_TOKEN", TOKEN)
    factory = http_factory(fake)
    real_init = Hub.__init__

    def init(self, config, store=None, *, http=None):
        real_init(self, config, store, http=factory)

    monkeypatch.setattr(Hub, "__init__", init)
    result = CliRunner().invoke(cli.app, ["--config", str(cfg), "check", "crm"])
    assert result.exit_code == 0, result.output
    assert "can read contacts" in result.output and "can read companies" in result.output
    assert "can write contacts" in result.output
    assert TOKEN not in result.output
    fake.scopes.discard("crm.objects.contacts.write")
    result = CliRunner().invoke(cli.app, ["--config", str(cfg), "check", "crm"])
    assert "lacks scope crm.objects.contacts.write" in result.output
    assert "can write companies" in result.output
    fake.expire_token(TOKEN)
    result = CliRunner().invoke(cli.app, ["--config", str(cfg), "check", "crm"])
    assert result.exit_code != 0
    assert "credentials rejected" in result.output
    assert TOKEN not in result.output


def test_token_never_reaches_logs_errors_or_store(tmp_path: Path, store_url: str, fake: FakeHubSpot,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    seed(fake)
    hub = make_hub(tmp_path, store_url, fake)
    fake.fail_next(3, status=503, path="/search")
    fake.expire_token(TOKEN)
    [pull, *_] = hub.sync(["crm"])
    assert pull.status == "failed" and "AuthError" in (pull.error or "")
    assert TOKEN not in caplog.text
    assert TOKEN not in (pull.error or "")
    with hub.store.engine.connect() as conn:
        for table in (source_t, rejected_t, audit_t, outbound_t):
            for row in conn.execute(sa.select(table)):
                assert TOKEN not in str(tuple(row))


def test_connections_on_one_portal_share_one_budget(fake: FakeHubSpot) -> None:
    from plugins.hubspot.tests.conftest import make_connector

    factory = http_factory(fake)
    a = make_connector(fake, settings={"account": "4711"}, factory=factory)
    b = make_connector(fake, settings={"account": "4711"}, factory=factory)
    other = make_connector(fake, settings={"account": "999"}, factory=factory)
    assert a.session.limiter is b.session.limiter, "one HubSpot portal, one rate budget"
    assert a.session.limiter is not other.session.limiter
    # Without an account setting the budget is keyed by the credentials (never the token itself).
    c = make_connector(fake, factory=factory)
    d = make_connector(fake, factory=factory)
    assert c.session.limiter is d.session.limiter
    assert TOKEN not in c.session.account
    # A quota stop seen by one connection stops the other without a request.
    from datetime import datetime, timedelta, timezone

    from synchub.errors import QuotaExhausted

    a.session.limiter.exhaust(datetime.now(timezone.utc) + timedelta(hours=3))
    sent = len(fake.requests)
    with pytest.raises(QuotaExhausted):
        list(b.streams()["contacts"].read(None))
    assert len(fake.requests) == sent
