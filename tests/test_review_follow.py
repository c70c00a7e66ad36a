"""Review items follow merges and splits (issue 18): a possible duplicate whose two records
became one is closed, one naming a merged-away record is re-pointed to its survivor, field
conflicts of a merged-away record close and come back when the merge is undone, and a field
conflict the sources no longer give is closed. Each with its reason, and in the audit."""

from __future__ import annotations

from pathlib import Path

from synchub import store as st
from synchub.golden import duplicate_fingerprint, log_possible_duplicates, merge_golden, rederive
from synchub.review import dedupe, undo_merge
from tests.helpers import hub_for, rows, write_config
from tests.test_review import CONFIG, HEADER, PEOPLE

EXACT = CONFIG.replace("merge:", "match:\n  person: {fuzzy: false}\nmerge:")


def _hub(tmp_path: Path, store_url: str, crm: str, shop: str = ""):
    cfg = write_config(tmp_path, EXACT, store_url, crm__csv=HEADER + crm, shop__csv=HEADER + shop)
    (tmp_path / "mappings" / "people.yaml").write_text(PEOPLE, encoding="utf-8")
    hub = hub_for(cfg)
    hub.sync()
    return hub


def _golden_of(hub, ref: str) -> str:
    conn_name, stream, sid = ref.split("/")
    (r,) = [s for s in rows(hub.store, st.source_t) if (s["connection"], s["stream"], s["source_id"]) == (conn_name, stream, sid)]
    return r["golden_id"]


def _conflicts(hub) -> dict[int, dict]:
    return {c["id"]: c for c in rows(hub.store, st.conflict_t)}


def _log_pairs(hub, *pairs: tuple[str, str]) -> dict[tuple[str, str], int]:
    with hub.store.begin() as conn:
        log_possible_duplicates(conn, [(a, b, 0.8, ["same name"]) for a, b in pairs], st.utcnow())
    by_pair = {(c["golden_id"], c["other_golden_id"]): c["id"] for c in _conflicts(hub).values() if c["kind"] == "possible_duplicate"}
    return {(a, b): by_pair[(min(a, b), max(a, b))] for a, b in pairs}


def _merge(hub, loser: str, survivor: str) -> None:
    now = st.utcnow()
    with hub.store.begin() as conn:
        merge_golden(conn, loser, survivor, now, "user:test", "test")
        rederive(conn, "person", {survivor}, hub.merger("person"), now, "user:test", 0)


THREE = ("1,Ann,Lee,ann@example.com,,,,,\n"
         "2,Ann,Lee,ann.lee@example.org,,,,,\n"
         "3,Bob,Stone,bob@example.com,,,,,\n")


def test_a_merge_closes_the_pair_and_repoints_items_naming_the_merged_record(tmp_path: Path, store_url: str) -> None:
    hub = _hub(tmp_path, store_url, THREE)
    a, b, c = (_golden_of(hub, f"crm/people/{i}") for i in (1, 2, 3))
    ids = _log_pairs(hub, (a, b), (b, c))
    _merge(hub, b, a)
    got = _conflicts(hub)
    pair = got[ids[(a, b)]]
    assert pair["status"] == "closed" and pair["resolved_by"] == "user:test"
    assert f"merged into {a}" in pair["resolution"]["reason"]
    moved = got[ids[(b, c)]]
    assert moved["status"] == "open"
    assert {moved["golden_id"], moved["other_golden_id"]} == {a, c}
    assert moved["fingerprint"] == duplicate_fingerprint(a, c)
    (merge,) = [e for e in hub.store.audit_of(a) if e["action"] == "merge"]
    assert merge["details"]["review_items"] == {"closed": [[ids[(a, b)], min(a, b), max(a, b)]],
                                                "repointed": [[ids[(b, c)], min(b, c), max(b, c)]]}
    # No open item names a merged-away record.
    merged = {g["id"] for g in rows(hub.store, st.golden_t, st.golden_t.c.status == "merged")}
    assert all(not {x["golden_id"], x["other_golden_id"]} & merged for x in got.values() if x["status"] == "open")


def test_undoing_the_merge_points_the_item_back_and_keeps_the_pair_apart(tmp_path: Path, store_url: str) -> None:
    hub = _hub(tmp_path, store_url, THREE)
    a, b, c = (_golden_of(hub, f"crm/people/{i}") for i in (1, 2, 3))
    ids = _log_pairs(hub, (a, b), (b, c))
    _merge(hub, b, a)
    assert undo_merge(hub, a, merged_id=b, by="user:test") == b
    got = _conflicts(hub)
    back = got[ids[(b, c)]]
    assert back["status"] == "open" and (back["golden_id"], back["other_golden_id"]) == (min(b, c), max(b, c))
    assert back["fingerprint"] == duplicate_fingerprint(b, c)
    assert got[ids[(a, b)]]["status"] == "closed"  # the undo keeps a and b apart: nothing to review
    (reopened,) = [e for e in hub.store.audit_of(b) if e["action"] == "conflicts_reopened"]
    assert reopened["details"]["conflicts"] == [ids[(b, c)]]


def test_a_pair_already_under_review_or_kept_apart_is_closed_not_repointed(tmp_path: Path, store_url: str) -> None:
    hub = _hub(tmp_path, store_url, THREE)
    a, b, c = (_golden_of(hub, f"crm/people/{i}") for i in (1, 2, 3))
    ids = _log_pairs(hub, (b, c), (a, c))
    _merge(hub, b, a)
    got = _conflicts(hub)
    assert got[ids[(b, c)]]["status"] == "closed" and "already under review" in got[ids[(b, c)]]["resolution"]["reason"]
    assert got[ids[(a, c)]]["status"] == "open"
    assert sum(1 for x in got.values() if x["status"] == "open") == 1


def test_field_conflicts_follow_a_merge_and_its_undo(tmp_path: Path, store_url: str) -> None:
    # Ann's two records disagree on her birth date (a review field); Bob is someone else.
    hub = _hub(tmp_path, store_url, "1,Ann,Lee,ann@example.com,,1990-01-02,,,\n3,Bob,Stone,bob@example.com,,,,,\n",
               "7,Ann,Lee,ann@example.com,,1990-02-01,,,\n")
    ann, bob = _golden_of(hub, "crm/people/1"), _golden_of(hub, "crm/people/3")
    (own,) = [x for x in _conflicts(hub).values() if x["field"] == "birth_date"]
    assert own["golden_id"] == ann and own["status"] == "open"
    _merge(hub, ann, bob)  # a wrong merge
    got = _conflicts(hub)
    assert got[own["id"]]["status"] == "closed" and f"merged into {bob}" in got[own["id"]]["resolution"]["reason"]
    (on_bob,) = [x for x in got.values() if x["status"] == "open"]
    assert on_bob["golden_id"] == bob and on_bob["field"] == "birth_date"  # derived on the survivor
    undo_merge(hub, bob, merged_id=ann, by="user:test")
    got = _conflicts(hub)
    # Bob no longer shows Ann's birth dates; Ann's own item is open again.
    assert got[on_bob["id"]]["status"] == "closed"
    assert got[own["id"]]["status"] == "open" and got[own["id"]]["golden_id"] == ann
    assert [x["id"] for x in got.values() if x["status"] == "open"] == [own["id"]]
    assert any(e["action"] == "conflicts_closed" and e["details"]["conflicts"] == [on_bob["id"]] for e in hub.store.audit_of(bob))


def test_a_field_conflict_the_sources_no_longer_give_is_closed(tmp_path: Path, store_url: str) -> None:
    hub = _hub(tmp_path, store_url, "1,Ann,Lee,ann@example.com,,1990-01-02,,,\n", "7,Ann,Lee,ann@example.com,,1990-02-01,,,\n")
    (old,) = _conflicts(hub).values()
    # The shop corrects the birth date to another wrong one: a new item, the old one closes.
    (tmp_path / "data" / "shop.csv").write_text(HEADER + "7,Ann,Lee,ann@example.com,,1990-03-01,,,\n", encoding="utf-8")
    hub.sync()
    got = _conflicts(hub)
    assert got[old["id"]]["status"] == "closed"
    (new,) = [x for x in got.values() if x["status"] == "open"]
    assert "1990-03-01" in str(new["candidates"])
    # Then the sources agree: nothing is left to review.
    (tmp_path / "data" / "shop.csv").write_text(HEADER + "7,Ann,Lee,ann@example.com,,1990-01-02,,,\n", encoding="utf-8")
    hub.sync()
    assert [x["status"] for x in _conflicts(hub).values()] == ["closed", "closed"]


def test_dedupe_counts_add_up(tmp_path: Path, store_url: str) -> None:
    cfg = write_config(tmp_path, EXACT, store_url,
                       crm__csv=HEADER + "1,Jürgen,Weißhaupt,jw@example.de,,1965-07-21,Agnes-Bernauer-Str. 9,80687,München\n"
                                          "2,Anna,Müller,familie.mueller@example.de,,1975-03-02,Lindenstraße 4,80331,München\n",
                       shop__csv=HEADER + "5,Juergen,Weisshaupt,juergen@example.com,,1965-07-21,Agnes-Bernauer-Straße 9,80687,München\n"
                                          "6,Peter,Müller,peter.mueller@example.de,,1972-11-20,Lindenstr. 4,80331,München\n")
    (tmp_path / "mappings" / "people.yaml").write_text(PEOPLE, encoding="utf-8")
    hub = hub_for(cfg)
    hub.sync()
    j1, j2 = _golden_of(hub, "crm/people/1"), _golden_of(hub, "shop/people/5")
    _log_pairs(hub, (j1, j2))  # under review before the dedupe merges the pair
    open_before = hub.store.counts()["open_conflicts"]
    report = dedupe(hub)
    open_after = hub.store.counts()["open_conflicts"]
    assert len(report.merges) == 1 and report.closed == 1
    assert open_after - open_before == report.logged - report.closed
    assert report.logged == len(report.possible) - sum(
        1 for a, b, *_ in report.possible if duplicate_fingerprint(a, b) in {x["fingerprint"] for x in _conflicts(hub).values()
                                                                             if x["status"] != "open"})


def test_upgrading_closes_stale_pairs_an_earlier_version_left_open(store_url: str) -> None:
    """Stores of earlier versions hold open possible duplicates whose records were merged since."""
    from synchub.migrate import upgrade

    store = st.Store(store_url)
    upgrade(store.engine, "0009")
    now = st.utcnow()
    with store.engine.begin() as conn:
        for gid, status, into in (("a", "active", None), ("b", "merged", "a"), ("c", "merged", "b"), ("d", "active", None)):
            conn.execute(st.golden_t.insert().values(id=gid, kind="person", data={}, provenance={}, display_name=gid,
                                                     search_text=gid, status=status, merged_into=into, created_at=now,
                                                     updated_at=now, version=1))
        for x, y in (("a", "c"), ("a", "d")):
            conn.execute(st.conflict_t.insert().values(
                fingerprint=duplicate_fingerprint(x, y), kind="possible_duplicate", golden_id=x, other_golden_id=y,
                connections="", candidates=[], status="open", created_at=now))
    store.upgrade()
    got = {(c["golden_id"], c["other_golden_id"]): c for c in rows(store, st.conflict_t)}
    assert got[("a", "c")]["status"] == "closed" and "merged into a" in got[("a", "c")]["resolution"]["reason"]
    assert got[("a", "d")]["status"] == "open"
    store.dispose()


def test_splitting_a_record_out_closes_the_conflicts_it_brought(tmp_path: Path, store_url: str) -> None:
    from synchub.review import split_sources

    hub = _hub(tmp_path, store_url, "1,Ann,Lee,ann@example.com,,1990-01-02,,,\n", "7,Ann,Lee,ann@example.com,,1990-02-01,,,\n")
    ann = _golden_of(hub, "crm/people/1")
    (c,) = _conflicts(hub).values()
    assert c["golden_id"] == ann and c["status"] == "open"
    split_sources(hub, ann, ["shop/people/7"], by="user:ops")
    (after,) = _conflicts(hub).values()
    assert after["status"] == "closed" and after["resolved_by"] == "user:ops"  # Ann shows only her crm record's date now
    assert any(e["action"] == "conflicts_closed" for e in hub.store.audit_of(ann))
