"""Identity resolution end to end on both backends: hard cases, undo, split, conflicts, dedupe."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from synchub import store as st
from synchub.review import ReviewError, dedupe, resolve_conflict, split_sources, undo_merge
from tests.helpers import content_snapshot, hub_for, rows, write_config

CONFIG = """
connections:
  crm:
    connector: files
    settings: {path: data}
    streams:
      people: {mapping: people, settings: {pattern: "crm*.csv", primary_key: id}}
  shop:
    connector: files
    settings: {path: data}
    streams:
      people: {mapping: people, settings: {pattern: "shop*.csv", primary_key: id}}
merge:
  person:
    source_priority: [crm, shop]
    fields:
      birth_date: {rule: source_priority, review: true}
"""

PEOPLE = """
entity: person
fields:
  first_name: first
  last_name: last
  emails: email
  phones: phone
  birth_date: born
  address.street: street
  address.postal_code: zip
  address.city: city
  address.country: {value: DE}
"""

HEADER = "id,first,last,email,phone,born,street,zip,city\n"


def _hub(tmp_path: Path, store_url: str, crm: str, shop: str = ""):
    cfg = write_config(tmp_path, CONFIG, store_url, crm__csv=HEADER + crm, shop__csv=HEADER + shop)
    (tmp_path / "mappings" / "people.yaml").write_text(PEOPLE, encoding="utf-8")
    return hub_for(cfg)


def _active(hub) -> list[dict]:
    return rows(hub.store, st.golden_t, st.golden_t.c.status == "active")


def _by_first(hub) -> dict[str, dict]:
    return {g["data"].get("first_name"): g for g in _active(hub)}


def test_household_members_stay_apart_even_with_a_shared_email(tmp_path: Path, store_url: str) -> None:
    hub = _hub(tmp_path, store_url,
               "1,Anna,Müller,familie.mueller@example.de,+49 89 1234567,1975-03-02,Lindenstraße 4,80331,München\n"
               "2,Peter,Müller,familie.mueller@example.de,+49 89 1234567,1972-11-20,Lindenstr. 4,80331,München\n")
    hub.sync()
    assert sorted(_by_first(hub)) == ["Anna", "Peter"]
    conflicts = rows(hub.store, st.conflict_t)
    assert [c["kind"] for c in conflicts] == ["possible_duplicate"]  # an admin should look at it


def test_nickname_typo_and_umlaut_variants_merge_across_sources(tmp_path: Path, store_url: str) -> None:
    hub = _hub(tmp_path, store_url,
               "1,Robert,Müller,robert@example.de,,1980-05-17,Hauptstraße 5,80331,München\n",
               "9,Bob,Mueller,bob.private@example.com,,1980-05-17,Hauptstr. 5,80331,München\n")
    summaries = hub.sync()
    assert len(_active(hub)) == 1
    g = _active(hub)[0]
    assert g["data"]["first_name"] == "Robert"  # crm outranks shop
    assert set(g["data"]["emails"]) == {"robert@example.de", "bob.private@example.com"}
    assert summaries[1].streams["people"].duplicates == 1


def test_undo_merge_of_two_existing_golden_records(tmp_path: Path, store_url: str) -> None:
    # Ann (email) and Ann (mobile) are two golden records until a third record links them.
    hub = _hub(tmp_path, store_url,
               "1,Ann,Lee,ann@example.com,,,,,\n2,Ann,Lee,,+49 151 12345678,,,,\n")
    hub.sync(["crm"])
    state_before = {g["id"]: (g["data"], g["provenance"], sorted(s["source_id"] for s in hub.store.source_records_of(g["id"])))
                    for g in _active(hub)}
    assert len(state_before) == 2
    (tmp_path / "data" / "shop.csv").write_text(HEADER + "7,Ann,Lee,ann@example.com,+49 151 12345678,,,,\n", encoding="utf-8")
    hub.sync(["shop"])
    (merged,) = _active(hub)
    assert len(hub.store.source_records_of(merged["id"])) == 3
    restored = undo_merge(hub, merged["id"], by="user:test")
    assert restored in state_before
    # The shop record stays with the survivor; take it out again to compare with the state before it came.
    split_sources(hub, merged["id"], ["shop/people/7"], by="user:test")
    with hub.store.engine.begin() as conn:
        conn.execute(st.source_t.delete().where(st.source_t.c.connection == "shop"))
    after = {g["id"]: (g["data"], g["provenance"], sorted(s["source_id"] for s in hub.store.source_records_of(g["id"])))
             for g in _active(hub) if hub.store.source_records_of(g["id"])}
    assert after == state_before
    actions = [a["action"] for a in hub.store.audit_of(merged["id"])]
    assert actions.count("split") == 2 and "merge" in actions


def test_kept_apart_stays_apart_on_later_runs_and_dedupe(tmp_path: Path, store_url: str) -> None:
    hub = _hub(tmp_path, store_url, "1,Ann,Lee,ann@example.com,,1990-01-01,,,\n",
               "7,Ann,Lee,ann@example.com,,1990-01-01,,,\n")
    hub.sync()
    (g,) = _active(hub)
    new_id = split_sources(hub, g["id"], ["shop/people/7"], by="user:test")
    assert len(_active(hub)) == 2
    (tmp_path / "data" / "shop.csv").write_text(HEADER + "7,Ann,Lee,ann@example.com,,1990-01-01,Neuer Weg 1,,\n", encoding="utf-8")
    hub.sync(["shop"])  # the changed record is matched again...
    assert len(_active(hub)) == 2  # ...but the admin's decision holds
    report = dedupe(hub)
    assert report.merges == [] and len(_active(hub)) == 2
    assert hub.store.get_golden(new_id)["status"] == "active"


def test_field_conflict_resolution_is_remembered(tmp_path: Path, store_url: str) -> None:
    hub = _hub(tmp_path, store_url, "1,Ann,Lee,ann@example.com,,1990-01-02,,,\n",
               "7,Ann,Lee,ann@example.com,,1990-02-01,,,\n")
    hub.sync()
    (conflict,) = [c for c in rows(hub.store, st.conflict_t) if c["field"] == "birth_date"]
    assert conflict["applied"]["value"] == "1990-01-02"  # crm first, meanwhile
    with pytest.raises(ReviewError):
        resolve_conflict(hub, conflict["id"], merge=True)
    shop_candidate = next(i for i, c in enumerate(conflict["candidates"], 1) if c["connection"] == "shop")
    resolve_conflict(hub, conflict["id"], pick=shop_candidate, by="user:ops")
    (g,) = _active(hub)
    assert g["data"]["birth_date"] == "1990-02-01" and g["provenance"]["birth_date"]["rule"] == "admin"
    os_touch = tmp_path / "data" / "crm.csv"
    os_touch.write_text(HEADER + "1,Ann,Lee,ann@example.com,,1990-01-02,Am Hang 2,,\n", encoding="utf-8")
    hub.sync()
    (g,) = _active(hub)
    assert g["data"]["birth_date"] == "1990-02-01"
    assert [c["status"] for c in rows(hub.store, st.conflict_t)] == ["resolved"]  # not logged again
    audit = [a for a in hub.store.audit_of(g["id"]) if a["action"] == "resolve"]
    assert audit and audit[0]["actor"] == "user:ops"
    with pytest.raises(ReviewError, match="already resolved"):
        resolve_conflict(hub, conflict["id"], dismiss=True)


def test_consent_can_only_be_overridden_towards_an_opt_out(tmp_path: Path, store_url: str) -> None:
    hub = _hub(tmp_path, store_url, "1,Ann,Lee,ann@example.com,,,,,\n")
    hub.sync()
    (g,) = _active(hub)
    with hub.store.engine.begin() as conn:
        conn.execute(st.conflict_t.insert().values(
            fingerprint="x" * 64, kind="field", golden_id=g["id"], field="consent.email", connections="crm",
            candidates=[{"value": {"status": "subscribed"}, "connection": "crm", "stream": "people", "source_id": "1", "observed_at": "2024-01-01"}],
            rule="consent", applied={"value": {"status": "unsubscribed"}}, status="open", created_at=st.utcnow()))
        cid = conn.execute(sa.select(st.conflict_t.c.id)).scalar_one()
    with pytest.raises(ReviewError, match="opt-out"):
        resolve_conflict(hub, cid, pick=1)
    resolve_conflict(hub, cid, value='{"status": "unsubscribed", "method": "admin"}')
    (g,) = _active(hub)
    assert g["data"]["consent"]["email"]["status"] == "unsubscribed"


def test_possible_duplicate_resolved_by_merge_or_keep_apart(tmp_path: Path, store_url: str) -> None:
    hub = _hub(tmp_path, store_url,
               "1,Anna,Müller,familie.mueller@example.de,,1975-03-02,Lindenstraße 4,80331,München\n"
               "2,Peter,Müller,familie.mueller@example.de,,1972-11-20,Lindenstr. 4,80331,München\n")
    hub.sync()
    (c,) = rows(hub.store, st.conflict_t)
    resolve_conflict(hub, c["id"], keep_apart=True, by="user:ops")
    assert len(_active(hub)) == 2
    # the same pair is not logged again
    (tmp_path / "data" / "crm.csv").write_text(HEADER + "1,Anna,Müller,familie.mueller@example.de,,1975-03-02,Lindenstraße 4a,80331,München\n"
                                               "2,Peter,Müller,familie.mueller@example.de,,1972-11-20,Lindenstr. 4,80331,München\n", encoding="utf-8")
    hub.sync()
    assert len(rows(hub.store, st.conflict_t)) == 1


def test_dedupe_dry_run_then_merge(tmp_path: Path, store_url: str) -> None:
    cfg_text = CONFIG.replace("merge:", "match:\n  person: {fuzzy: false}\nmerge:")
    cfg = write_config(tmp_path, cfg_text, store_url,
                       crm__csv=HEADER + "1,Jürgen,Weißhaupt,jw@example.de,,1965-07-21,Agnes-Bernauer-Str. 9,80687,München\n",
                       shop__csv=HEADER + "5,Juergen,Weisshaupt,juergen@example.com,,1965-07-21,Agnes-Bernauer-Straße 9,80687,München\n")
    (tmp_path / "mappings" / "people.yaml").write_text(PEOPLE, encoding="utf-8")
    hub = hub_for(cfg)
    hub.sync()
    assert len(_active(hub)) == 2  # exact matching only: different emails
    report = dedupe(hub, dry_run=True)
    assert len(report.merges) == 1 and len(_active(hub)) == 2 and report.compared >= 1
    report = dedupe(hub)
    (g,) = _active(hub)
    assert g["data"]["first_name"] == "Jürgen" and len(hub.store.source_records_of(g["id"])) == 2
    assert dedupe(hub).merges == []


def test_dedupe_merges_several_clusters_at_once_and_each_merge_undoes(tmp_path: Path, store_url: str) -> None:
    # Two customers, three and two golden records each (exact matching only, all e-mails differ),
    # plus a household member who must stay on her own.
    cfg_text = CONFIG.replace("merge:", "match:\n  person: {fuzzy: false}\nmerge:")
    cfg = write_config(tmp_path, cfg_text, store_url,
                       crm__csv=HEADER + "1,Jürgen,Weißhaupt,jw@example.de,,1965-07-21,Agnes-Bernauer-Str. 9,80687,München\n"
                                         "2,Anna,Schmidt,anna@example.de,,1990-02-03,Ring 1,10115,Berlin\n"
                                         "3,Petra,Weißhaupt,petra@example.de,,1968-01-30,Agnes-Bernauer-Str. 9,80687,München\n",
                       shop__csv=HEADER + "5,Juergen,Weisshaupt,juergen@example.com,,1965-07-21,Agnes-Bernauer-Straße 9,80687,München\n"
                                          "6,Jürgen,Weishaupt,j.w@example.org,,1965-07-21,Agnes-Bernauer-Str. 9,80687,München\n"
                                          "7,Anna,Schmit,a.schmidt@example.com,,1990-02-03,Ring 1,10115,Berlin\n")
    (tmp_path / "mappings" / "people.yaml").write_text(PEOPLE, encoding="utf-8")
    hub = hub_for(cfg)
    hub.sync()
    before = {g["id"]: (g["data"], sorted(s["source_id"] for s in hub.store.source_records_of(g["id"])))
              for g in _active(hub)}
    assert len(before) == 6
    report = dedupe(hub)
    assert len(report.merges) == 3
    survivors = _by_first(hub)
    assert sorted(survivors) == ["Anna", "Jürgen", "Petra"]
    assert sorted(s["source_id"] for s in hub.store.source_records_of(survivors["Jürgen"]["id"])) == ["1", "5", "6"]
    merged = rows(hub.store, st.golden_t, st.golden_t.c.status == "merged")
    assert {m["merged_into"] for m in merged} == {survivors["Jürgen"]["id"], survivors["Anna"]["id"]}
    # Undo every merge: each record comes back with exactly its own source records.
    for m in merged:
        undo_merge(hub, m["merged_into"], merged_id=m["id"], by="user:test")
    after = {g["id"]: (g["data"], sorted(s["source_id"] for s in hub.store.source_records_of(g["id"])))
             for g in _active(hub)}
    assert after == before
    # The undone pairs stay apart (two records merged into the same third one are not kept
    # apart from each other: nobody said they differ).
    undone = {frozenset((m["id"], m["merged_into"])) for m in merged}
    again = dedupe(hub, dry_run=True).merges
    assert not {frozenset((a, b)) for a, b, *_ in again} & undone


def test_matching_is_identical_on_sqlite_and_postgresql(tmp_path: Path, store_url: str) -> None:
    crm = ("1,Robert,Müller,robert@example.de,,1980-05-17,Hauptstraße 5,80331,München\n"
           "2,Anna,Müller,familie.mueller@example.de,+49 89 1234567,1975-03-02,Lindenstraße 4,80331,München\n"
           "3,Peter,Müller,familie.mueller@example.de,+49 89 1234567,1972-11-20,Lindenstr. 4,80331,München\n")
    shop = ("9,Bob,Mueller,bob@example.com,,1980-05-17,Hauptstr. 5,80331,München\n"
            "8,Petra,Schmidt,petra@example.de,,1988-08-08,Ring 1,10115,Berlin\n")
    ref = _hub(tmp_path / "ref", f"sqlite:///{tmp_path / 'ref.db'}", crm, shop) if (tmp_path / "ref").mkdir() is None else None
    ref.sync()
    hub = _hub(tmp_path, store_url, crm, shop)
    hub.sync()
    assert content_snapshot(hub.store) == content_snapshot(ref.store)
    assert len(_active(hub)) == 4


def test_turning_fuzzy_matching_on_later(tmp_path: Path, store_url: str) -> None:
    from synchub.review import rebuild_match_keys

    cfg_text = CONFIG.replace("merge:", "match:\n  person: {fuzzy: false}\nmerge:")
    cfg = write_config(tmp_path, cfg_text, store_url,
                       crm__csv=HEADER + "1,Jürgen,Weißhaupt,jw@example.de,,1965-07-21,Agnes-Bernauer-Str. 9,80687,München\n",
                       shop__csv=HEADER)
    (tmp_path / "mappings" / "people.yaml").write_text(PEOPLE, encoding="utf-8")
    hub_for(cfg).sync()
    assert rows(hub_for(cfg).store, st.match_key_t) == []  # no blocking keys without fuzzy matching
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("{fuzzy: false}", "{fuzzy: true}"), encoding="utf-8")
    hub = hub_for(cfg)
    assert rebuild_match_keys(hub) == 1
    (tmp_path / "data" / "shop.csv").write_text(
        HEADER + "5,Juergen,Weisshaupt,juergen@example.com,,1965-07-21,Agnes-Bernauer-Straße 9,80687,München\n", encoding="utf-8")
    assert hub.sync(["shop"])[0].streams["people"].duplicates == 1
    assert len(_active(hub)) == 1


def _two_anns_with_decisions(tmp_path: Path, store_url: str, newer_on: str):
    """Ann (e-mail) and Ann (mobile), two golden records, each with an admin's decision on
    ``last_name``, the one that will be merged away also on ``first_name``. A shop record then
    links them; the record with the smaller id survives (``match.Resolver``), and ``newer_on``
    says which of the two decided last_name later. Returns the hub, survivor and loser ids."""
    hub = _hub(tmp_path, store_url, "1,Ann,Lee,ann@example.com,,,,,\n2,Ann,Lee,,+49 151 12345678,,,,\n")
    hub.sync(["crm"])
    survivor, loser = sorted(g["id"] for g in _active(hub))
    early, late = st.utcnow().replace(year=2024), st.utcnow().replace(year=2025)
    with hub.store.engine.begin() as conn:
        conn.execute(st.override_t.insert(), [
            {"golden_id": survivor, "field": "last_name", "value": "Lee-Smith", "decided_by": "user:a",
             "decided_at": late if newer_on == "survivor" else early},
            {"golden_id": loser, "field": "last_name", "value": "Lee-Jones", "decided_by": "user:b",
             "decided_at": late if newer_on == "loser" else early},
            {"golden_id": loser, "field": "first_name", "value": "Annie", "decided_by": "user:b", "decided_at": early}])
    (tmp_path / "data" / "shop.csv").write_text(HEADER + "7,Ann,Lee,ann@example.com,+49 151 12345678,,,,\n", encoding="utf-8")
    hub.sync(["shop"])  # merges the two
    assert [g["id"] for g in _active(hub)] == [survivor]
    return hub, survivor, loser


def _decisions(hub, golden_id: str) -> dict[str, str]:
    return {r["field"]: r["value"] for r in rows(hub.store, st.override_t, st.override_t.c.golden_id == golden_id)}


@pytest.mark.parametrize("newer_on", ["survivor", "loser"])
def test_a_merge_keeps_the_newest_admin_decision_per_field_and_undo_gives_each_its_own(
        tmp_path: Path, store_url: str, newer_on: str) -> None:
    hub, survivor, loser = _two_anns_with_decisions(tmp_path, store_url, newer_on)
    newest = "Lee-Smith" if newer_on == "survivor" else "Lee-Jones"
    merged = hub.store.get_golden(survivor)
    # Both decided last_name: the later decision holds for the merged customer, whichever record
    # survived; first_name was decided once and comes along.
    assert merged["data"]["last_name"] == newest and merged["data"]["first_name"] == "Annie"
    assert merged["provenance"]["last_name"]["rule"] == "admin"
    assert _decisions(hub, survivor) == {"last_name": newest, "first_name": "Annie"}
    assert undo_merge(hub, survivor, by="user:test") == loser
    assert _decisions(hub, survivor) == {"last_name": "Lee-Smith"}
    assert _decisions(hub, loser) == {"last_name": "Lee-Jones", "first_name": "Annie"}
    assert hub.store.get_golden(survivor)["data"]["last_name"] == "Lee-Smith"
    assert (hub.store.get_golden(loser)["data"]["last_name"], hub.store.get_golden(loser)["data"]["first_name"]) == ("Lee-Jones", "Annie")


def test_undo_after_a_new_decision_keeps_the_new_one_on_the_survivor(tmp_path: Path, store_url: str) -> None:
    hub, survivor, loser = _two_anns_with_decisions(tmp_path, store_url, "loser")
    with hub.store.engine.begin() as conn:  # an admin decides last_name of the merged customer again, as resolve_conflict does
        conn.execute(st.override_t.delete().where(st.override_t.c.golden_id == survivor, st.override_t.c.field == "last_name"))
        conn.execute(st.override_t.insert().values(golden_id=survivor, field="last_name", value="Lee",
                                                   decided_by="user:c", decided_at=st.utcnow()))
    undo_merge(hub, survivor, by="user:test")
    # The new decision stays with the survivor; both older last_name decisions were superseded
    # (SQLite may even have given the new row the id of the replaced one).
    assert _decisions(hub, survivor) == {"last_name": "Lee"}
    assert _decisions(hub, loser) == {"first_name": "Annie"}
    assert hub.store.get_golden(survivor)["data"]["last_name"] == "Lee"
    assert not rows(hub.store, st.override_t, st.override_t.c.golden_id.like("parked:%"))
