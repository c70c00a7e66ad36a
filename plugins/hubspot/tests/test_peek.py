"""Dry runs against what HubSpot holds now (issue 21): ``ObjectStream.peek`` reads the records
with ``batch/read`` (by id, or by e-mail for contacts the hub knows no id of) and the plan shows
HubSpot's values as "before". Every request is validated against HubSpot's OpenAPI files by the
fake (see conftest); a dry run sends no write.
"""

from __future__ import annotations

import json
from pathlib import Path

from plugins.hubspot.tests.conftest import TOKEN, http_factory, make_connector
from plugins.hubspot.tests.fake_hubspot import FakeHubSpot
from synchub.config import load_config
from synchub.connector import OutRecord
from synchub.engine import Hub
from tests.helpers import write_config

READ = "/batch/read"

#: The hub learns people from a shop export only; HubSpot is written, never read, so the hub
#: never wrote (nor read) what HubSpot holds.
CONFIG = """
connections:
  shop:
    connector: files
    direction: in
    settings: {path: data}
    streams:
      customers:
        mapping: shop_kunden
        settings: {pattern: "shop*.csv", primary_key: Kundennr}
  crm:
    connector: hubspot
    direction: out
    settings: {token: "${HUBSPOT_TOKEN}", account: "4711"}
    streams:
      contacts: {mapping: hubspot_contacts_out}
match:
  person: {keys: [email]}
"""

SHOP = ("Kundennr;Vorname;Nachname;E-Mail;Telefon;Straße;PLZ;Ort;Land\n"
        "K1;Jürgen;Meier;juergen@example.com;;Hauptstr. 1;50667;Köln;Deutschland\n"
        "K2;Cleo;Neu;cleo@example.com;;;;;\n")


def _hub(tmp_path: Path, store_url: str, fake: FakeHubSpot) -> Hub:
    cfg = write_config(tmp_path, CONFIG, store_url, shop__csv=SHOP)
    hub = Hub(load_config(cfg, environ={"HUBSPOT_TOKEN": TOKEN}), http=http_factory(fake))
    hub.store.upgrade()
    return hub


def _writes(fake: FakeHubSpot, since: int = 0) -> list[str]:
    """Requests after the first ``since`` that could change HubSpot (anything but a read)."""
    return [f"{r.method} {r.url.path}" for r in fake.requests[since:]
            if r.method != "GET" and not r.url.path.endswith(("/batch/read", "/search"))]


def _bodies(fake: FakeHubSpot, path_end: str = READ) -> list[dict]:
    return [json.loads(r.content) for r in fake.requests if r.url.path.endswith(path_end)]


def test_the_dry_run_diffs_against_what_hubspot_holds_now(tmp_path: Path, store_url: str, fake: FakeHubSpot) -> None:
    """The issue's case for HubSpot: a contact the hub never wrote, held with another first name
    and a job title the hub does not know, is an update from HubSpot's values, not a create."""
    fake.add("contacts", {"email": "juergen@example.com", "firstname": "Juergen", "lastname": "Meier",
                          "city": "Köln", "zip": "50667", "jobtitle": "CTO"})
    hub = _hub(tmp_path, store_url, fake)
    hub.run_connection("shop", "in")
    before = len(fake.requests)
    plans = {p.golden_id: p for p in hub.plan("crm")["contacts"]}
    by_first = {}
    for p in plans.values():
        by_first[hub.store.get_golden(p.golden_id)["data"]["first_name"]] = p
    juergen, cleo = by_first["Jürgen"], by_first["Cleo"]
    assert juergen.action == "update"
    assert juergen.changes["firstname"] == ("Juergen", "Jürgen")
    assert juergen.changes["address"] == (None, "Hauptstr. 1")
    # What HubSpot holds already, and what the hub has no value for (never cleared), is no change.
    assert not {"lastname", "city", "zip", "email", "jobtitle"} & set(juergen.changes)
    assert cleo.action == "create" and cleo.changes["firstname"] == (None, "Cleo")
    assert _writes(fake, before) == []
    # One batch read by e-mail, as the spec takes it (the fake validated it).
    [body] = _bodies(fake)
    assert body["idProperty"] == "email" and body["propertiesWithHistory"] == []
    assert sorted(i["id"] for i in body["inputs"]) == ["cleo@example.com", "juergen@example.com"]
    assert {"firstname", "lastname", "email", "address", "city"} <= set(body["properties"])
    assert fake.violations == []
    # Offline: the store alone knows nothing of HubSpot's values.
    offline = {p.golden_id: p for p in hub.plan("crm", offline=True)["contacts"]}[juergen.golden_id]
    assert offline.action == "create" and offline.changes["firstname"] == (None, "Jürgen")
    assert len(_bodies(fake)) == 1, "an offline plan asks nothing"


def _out(golden: str, external_id: str | None = None, previous: dict | None = None, **data: object) -> OutRecord:
    return OutRecord(golden_id=golden, data=data, external_id=external_id, previous=previous)


def test_known_ids_are_read_by_id_and_a_lost_one_would_fail(fake: FakeHubSpot) -> None:
    held = fake.add("contacts", {"email": "ann@example.com", "firstname": "Anne", "lastname": "Lee"})
    a = fake.add("contacts", {"email": "max@example.com", "firstname": "Max"})
    b = fake.add("contacts", {"email": "maxi@example.com", "firstname": "Maxi", "phone": "+4915100000"})
    merged = fake.merge("contacts", a, b)
    stream = make_connector(fake).streams()["contacts"]
    records = [
        # The hub wrote "Ann" before; someone changed it to "Anne" in HubSpot since.
        _out("g-ann", held, {"email": "ann@example.com", "firstname": "Ann", "lastname": "Lee"},
             email="ann@example.com", firstname="Ann", lastname="Lee"),
        _out("g-gone", "999999", email="gone@example.com", firstname="Gone"),
        _out("g-max", b, email="maxi@example.com", firstname="Maxi", phone="+4915100000"),
    ]
    held_now = stream.peek(records)
    assert held_now["g-ann"] == {"email": "ann@example.com", "firstname": "Anne", "lastname": "Lee"}
    assert "g-gone" not in held_now
    # An id a merge retired reaches the merged record.
    assert held_now["g-max"]["firstname"] in ("Max", "Maxi") and merged != b
    [body] = _bodies(fake)
    assert "idProperty" not in body and sorted(i["id"] for i in body["inputs"]) == sorted([held, "999999", b])
    for rec in records:
        rec.holds = held_now.get(rec.golden_id)
    plans = {p.golden_id: p for p in stream.plan(records, [])}
    # The hub's value did not change since its last write: the write sends nothing, whatever
    # HubSpot holds now, and the plan says so.
    assert plans["g-ann"].action == "unchanged" and plans["g-ann"].changes == {}
    assert plans["g-gone"].action == "reject" and "999999" in (plans["g-gone"].reason or "")
    assert plans["g-max"].action in ("update", "unchanged")
    assert _writes(fake) == []


def test_a_value_changed_in_the_hub_shows_hubspots_value_as_before(fake: FakeHubSpot) -> None:
    cid = fake.add("contacts", {"email": "ann@example.com", "firstname": "Anne", "city": "Bonn"})
    stream = make_connector(fake).streams()["contacts"]
    rec = _out("g1", cid, {"email": "ann@example.com", "firstname": "Ann", "city": "Köln"},
               email="ann@example.com", firstname="Annie", city="Köln", numberofemployees=None)
    rec.holds = stream.peek([rec])["g1"]
    [plan] = stream.plan([rec], [])
    # firstname: what HubSpot holds -> what the write sends; city is not sent (unchanged in the hub).
    assert plan.action == "update" and plan.changes == {"firstname": ("Anne", "Annie")}


def test_many_records_are_read_in_batches_of_100(fake: FakeHubSpot) -> None:
    ids = [fake.add("contacts", {"email": f"k{i}@example.com", "firstname": f"K{i}"}) for i in range(230)]
    for i in range(120):
        fake.add("contacts", {"email": f"e{i}@example.com", "firstname": f"E{i}"})
    stream = make_connector(fake).streams()["contacts"]
    records = [_out(f"k{i}", cid, email=f"k{i}@example.com", firstname="X") for i, cid in enumerate(ids)]
    records += [_out(f"e{i}", None, email=f"E{i}@Example.com", firstname="X") for i in range(150)]
    # Neither an id nor an e-mail: nothing to look up by.
    records.append(_out("nobody", None, firstname="Nobody"))
    held = stream.peek(records)
    assert len(held) == 230 + 120
    assert held["k7"]["firstname"] == "K7" and held["e7"]["email"] == "e7@example.com"
    bodies = _bodies(fake)
    by_id = [b for b in bodies if "idProperty" not in b]
    by_email = [b for b in bodies if b.get("idProperty") == "email"]
    assert [len(b["inputs"]) for b in by_id] == [100, 100, 30]
    assert [len(b["inputs"]) for b in by_email] == [100, 50]
    assert len(fake.requests) == 5 and _writes(fake) == []
    records[-1].holds = None
    plans = {p.golden_id: p for p in stream.plan(records[-3:], [])}
    assert plans["e149"].action == "create" and plans["nobody"].action == "create"


def test_companies_are_read_by_id_only(fake: FakeHubSpot) -> None:
    acme = fake.add("companies", {"name": "Acme GmbH", "domain": "acme.de", "numberofemployees": "50"})
    stream = make_connector(fake, streams={"companies": {}}).streams()["companies"]
    records = [_out("c1", acme, name="ACME GmbH", domain="acme.de", numberofemployees=50),
               _out("c2", None, name="New Co", domain="new.example")]
    held = stream.peek(records)
    assert set(held) == {"c1"}
    for rec in records:
        rec.holds = held.get(rec.golden_id)
    plans = {p.golden_id: p for p in stream.plan(records, [])}
    assert plans["c1"].action == "update" and plans["c1"].changes == {"name": ("Acme GmbH", "ACME GmbH")}
    assert plans["c2"].action == "create"
    assert [r.url.path for r in fake.requests] == ["/crm/v3/objects/companies/batch/read"]
