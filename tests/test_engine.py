"""End-to-end syncs on both store backends: the demo data, re-runs, crashes, merges, consent."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from synchub import store as st
from synchub.store import Store
from tests.helpers import content_snapshot, demo_hub, hub_for, rows, write_config

EXPECTED_REJECTS = {
    ("shop_kunden.csv:25", None),  # a column missing
    ("newsletter.csv:21", "Email Address"),  # empty primary key
    ("messe_leads.csv:23", "Lead-ID"),  # nothing but a company name
}
#: Rows that land without one value: (ref, canonical field, source column, raw value).
EXPECTED_QUARANTINE = {
    ("shop_kunden.csv:32", "birth_date", "Geburtsdatum", "31.02.1985"),
    ("shop_kunden.csv:41", "emails", "E-Mail", "mueller(at)example.de"),
    ("newsletter.csv:30", "consent.email.status", "Status", "maybe"),
}


def _golden_by_email(store: Store, email: str) -> dict:
    with store.engine.connect() as conn:
        gid = conn.execute(
            sa.select(st.key_t.c.golden_id).distinct().where(st.key_t.c.key_type == "email", st.key_t.c.key_value == email)
        ).scalar_one()
    g = store.get_golden(gid)
    assert g is not None
    return g


def test_demo_sync_lands_everything_valid_and_rejects_broken_rows(demo_dir: Path, store_url: str) -> None:
    hub = demo_hub(demo_dir, store_url)
    summaries = hub.sync()
    by_conn = {s.connection: s for s in summaries}
    assert [s.connection for s in summaries] == ["shop", "newsletter", "fair", "export"]
    assert by_conn["shop"].streams["customers"].read == 45
    assert by_conn["shop"].streams["customers"].rejected == 1
    assert by_conn["newsletter"].streams["audience"].rejected == 1
    assert by_conn["fair"].streams["leads"].rejected == 1
    assert by_conn["shop"].streams["customers"].quarantined == 2
    assert by_conn["newsletter"].streams["audience"].quarantined == 1
    assert all(s.status in ("succeeded", "partial") for s in summaries)
    counts = hub.store.counts()
    # 78 distinct emails + 2 leads without email, of which Kern shares his mobile with his shop
    # record; plus three rows that land without their bad value: Wimmer (birth date) and Hofer
    # (consent) with emails found nowhere else, and Müller without his unusable email.
    assert counts["golden_active"] == 82
    assert counts["source_records"] == 107
    rejected = rows(hub.store, st.rejected_t)
    assert {(r["ref"], r["field"]) for r in rejected} == EXPECTED_REJECTS
    assert all(r["reason"] for r in rejected)
    logged = rows(hub.store, st.quarantined_t)
    assert {(r["ref"], r["field"], r["source"], r["raw"]) for r in logged} == EXPECTED_QUARANTINE
    assert all(r["reason"] and r["status"] == "quarantined" for r in logged)
    held = {(q["source_id"], q["field"]) for q in hub.store.quarantined_values()}
    assert held == {("K-10031", "birth_date"), ("K-10040", "emails"), ("raphael.hofer@example.at", "consent.email.status")}
    wimmer = _golden_by_email(hub.store, "andreas.wimmer@example.de")
    assert wimmer["data"]["first_name"] == "Andreas" and "birth_date" not in wimmer["data"]
    assert by_conn["export"].streams["customers"].written == 82


def test_person_in_three_sources_becomes_one_golden_record_with_provenance(demo_dir: Path, store_url: str) -> None:
    hub = demo_hub(demo_dir, store_url)
    hub.sync()
    g = _golden_by_email(hub.store, "sabine.kofler@example.at")
    sources = hub.store.source_records_of(g["id"])
    assert sorted(s["connection"] for s in sources) == ["fair", "newsletter", "shop"]
    prov = g["provenance"]
    assert prov["address"]["connection"] == "shop"  # source_priority: shop first
    assert prov["address"]["rule"] == "source_priority"
    assert prov["emails"]["rule"] in ("union", "agreed")
    for unit in ("first_name", "emails", "address"):
        assert prov[unit]["observed_at"] and prov[unit]["source_id"]


def test_opt_out_wins_and_is_logged_as_conflict(demo_dir: Path, store_url: str) -> None:
    hub = demo_hub(demo_dir, store_url)
    hub.sync()
    mueller = _golden_by_email(hub.store, "claudia.mueller@example.de")
    assert mueller["data"]["consent"]["email"]["status"] == "unsubscribed"
    conflicts = rows(hub.store, st.conflict_t, st.conflict_t.c.golden_id == mueller["id"])
    assert [c["field"] for c in conflicts] == ["consent.email"]
    assert {c["connection"] for c in conflicts[0]["candidates"]} == {"shop", "newsletter"}
    assert conflicts[0]["applied"]["value"]["status"] == "unsubscribed"


def test_duplicates_in_one_file_merge(demo_dir: Path, store_url: str) -> None:
    hub = demo_hub(demo_dir, store_url)
    hub.sync()
    huber = _golden_by_email(hub.store, "michael.huber@example.de")
    shop_sources = [s for s in hub.store.source_records_of(huber["id"]) if s["connection"] == "shop"]
    assert sorted(s["source_id"] for s in shop_sources) == ["K-10017", "K-10038"]


def test_rerun_changes_nothing_and_writes_nothing(demo_dir: Path, store_url: str) -> None:
    hub = demo_hub(demo_dir, store_url)
    hub.sync()
    export = demo_dir / "var" / "export" / "kunden_bereinigt.csv"
    before = content_snapshot(hub.store)
    stat = export.stat()
    audit_before = len(rows(hub.store, st.audit_t))
    os.utime(demo_dir / "demo" / "data" / "shop_kunden.csv")  # touched, not changed
    summaries = hub.sync()
    for s in summaries:
        for c in s.streams.values():
            assert (c.created, c.updated, c.duplicates, c.rejected, c.written, c.conflicts) == (0, 0, 0, 0, 0, 0), s
    assert content_snapshot(hub.store) == before
    assert export.stat().st_mtime_ns == stat.st_mtime_ns
    assert len(rows(hub.store, st.audit_t)) == audit_before


def test_crash_between_commit_and_cursor_save_reruns_to_the_same_store(
    demo_dir: Path, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = demo_hub(demo_dir, f"sqlite:///{tmp_path / 'reference.db'}")
    reference.sync()
    expected = content_snapshot(reference.store)

    hub = demo_hub(demo_dir, store_url)
    calls = {"n": 0}
    real = Store.save_state

    def crash(self: Store, *args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 2:  # the second stream's data is committed, its cursor not yet saved
            raise KeyboardInterrupt("power cut")
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Store, "save_state", crash)
    with pytest.raises(KeyboardInterrupt):
        hub.sync()
    monkeypatch.setattr(Store, "save_state", real)
    assert hub.store.get_state("newsletter", "audience") is None  # committed rows, no cursor
    hub.sync()
    assert content_snapshot(hub.store) == expected
    runs = hub.store.recent_runs(50)
    assert any(r["status"] == "failed" for r in runs)


def test_crash_inside_a_batch_rolls_back_and_rerun_finishes(
    demo_dir: Path, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = demo_hub(demo_dir, f"sqlite:///{tmp_path / 'reference.db'}")
    reference.sync()
    hub = demo_hub(demo_dir, store_url)
    import synchub.apply as apply

    real = apply.rederive

    def boom(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt("killed mid-batch")

    monkeypatch.setattr(apply, "rederive", boom)
    with pytest.raises(KeyboardInterrupt):
        hub.sync(["shop"])
    assert hub.store.counts()["source_records"] == 0  # the batch's transaction rolled back
    monkeypatch.setattr(apply, "rederive", real)
    hub.sync()
    assert content_snapshot(hub.store) == content_snapshot(reference.store)


CONFIG = """
connections:
  a:
    connector: files
    settings: {path: data}
    streams:
      people: {mapping: people, settings: {pattern: "a*.csv", primary_key: id}}
  b:
    connector: files
    settings: {path: data}
    streams:
      people: {mapping: people, settings: {pattern: "b*.csv", primary_key: id}}
match:
  person: {keys: [email, phone]}
merge:
  person:
    source_priority: [a, b]
    fields:
      first_name: {rule: source_priority}
"""

PEOPLE = """
entity: person
fields:
  first_name: first
  last_name: last
  emails: email
  phones: phone
  consent.email.status: consent
  consent.email.method: method
  consent.email.at: {path: at, transform: parse_datetime}
"""


def _people_hub(tmp_path: Path, store_url: str, a: str, b: str):
    cfg = write_config(tmp_path, CONFIG, store_url, a__csv=a, b__csv=b)
    (tmp_path / "mappings" / "people.yaml").write_text(PEOPLE, encoding="utf-8")
    return hub_for(cfg)


def test_record_linking_two_golden_records_merges_them(tmp_path: Path, store_url: str) -> None:
    hub = _people_hub(tmp_path, store_url,
                      a="id,first,last,email,phone,consent\n1,Ann,Lee,ann@example.com,,\n2,Ann,Lee,,+4915112345678,\n",
                      b="id,first,last,email,phone,consent\n",)
    hub.sync()
    assert hub.store.counts()["golden_active"] == 2
    (tmp_path / "data" / "b.csv").write_text(
        "id,first,last,email,phone,consent\n9,Annie,Lee,ann@example.com,+49 151 12345678,\n", encoding="utf-8")
    summary = hub.sync(["b"])[0]
    assert summary.streams["people"].duplicates == 2  # matched one golden record and merged the other into it
    assert hub.store.counts()["golden_active"] == 1
    merged = rows(hub.store, st.golden_t, st.golden_t.c.status == "merged")
    assert len(merged) == 1 and merged[0]["merged_into"]
    survivor = hub.store.get_golden(merged[0]["id"])  # an old id leads to the survivor
    assert survivor is not None and survivor["status"] == "active"
    assert survivor["data"]["first_name"] == "Ann"  # a outranks b
    assert len(hub.store.source_records_of(survivor["id"])) == 3
    actions = [a["action"] for a in hub.store.audit_of(survivor["id"])]
    assert "merge" in actions


@pytest.mark.parametrize("order", ["ab", "ba"])
@pytest.mark.parametrize(
    ("opt_out", "opt_in", "expected"),
    [
        # an opt-out beats an older opt-in, and a newer one that did not come from the person
        (("unsubscribed", "2024-05-01"), ("subscribed", "2024-01-01", "form"), "unsubscribed"),
        (("unsubscribed", "2024-01-01"), ("subscribed", "2024-05-01", "import"), "unsubscribed"),
        (("cleaned", "2024-01-01"), ("subscribed", "2024-05-01", "checkbox"), "cleaned"),
        # a newer opt-in the person made themselves (double opt-in, form) renews consent
        (("unsubscribed", "2024-01-01"), ("subscribed", "2024-05-01", "double_opt_in"), "subscribed"),
    ],
)
def test_opt_out_rule_in_either_order(tmp_path: Path, store_url: str, order: str, opt_out: tuple, opt_in: tuple, expected: str) -> None:
    header = "id,first,last,email,phone,consent,method,at\n"
    a = header + f"1,Ann,Lee,ann@example.com,,{opt_out[0]},import,{opt_out[1]}\n"
    b = header + f"7,Ann,Lee,ann@example.com,,{opt_in[0]},{opt_in[2]},{opt_in[1]}\n"
    hub = _people_hub(tmp_path, store_url, a=a, b=b)
    for name in order:
        hub.sync([name])
    g = rows(hub.store, st.golden_t, st.golden_t.c.status == "active")
    assert len(g) == 1
    assert g[0]["data"]["consent"]["email"]["status"] == expected


def test_changed_row_updates_golden_record_and_keeps_cursor_per_file(tmp_path: Path, store_url: str) -> None:
    header = "id,first,last,email,phone,consent,method,at\n"
    hub = _people_hub(tmp_path, store_url, a=header + "1,Ann,Lee,ann@example.com,,,,\n2,Bo,Kim,bo@example.com,,,,\n", b=header)
    hub.sync(["a"])
    (tmp_path / "data" / "a.csv").write_text(header + "1,Ann,Lee-Smith,ann@example.com,,,,\n2,Bo,Kim,bo@example.com,,,,\n", encoding="utf-8")
    c = hub.sync(["a"])[0].streams["people"]
    assert (c.read, c.updated, c.unchanged, c.created) == (2, 1, 1, 0)
    ann = _golden_by_email(hub.store, "ann@example.com")
    assert ann["data"]["last_name"] == "Lee-Smith" and ann["version"] == 2
    state = hub.store.get_state("a", "people")
    assert state is not None and set(state["files"]) == {"a.csv"}
    assert hub.sync(["a"])[0].streams["people"].read == 0  # nothing new: the file is not read again


def test_silence_does_not_revoke_an_opt_out(tmp_path: Path, store_url: str) -> None:
    """A source that said "unsubscribed" and later says nothing about consent (an archived
    Mailchimp member, an export without the column) keeps the opt-out; an explicit newer
    statement replaces it."""
    header = "id,first,last,email,phone,consent,method,at\n"
    hub = _people_hub(tmp_path, store_url,
                      a=header + "1,Ann,Lee,ann@example.com,,unsubscribed,form,2024-05-01\n",
                      b=header + "7,Ann,Lee,ann@example.com,,subscribed,import,2024-01-01\n")
    hub.sync()

    def golden() -> dict:
        [g] = [g for g in rows(hub.store, st.golden_t, st.golden_t.c.status == "active")
               if "ann@example.com" in g["data"]["emails"]]
        return g["data"]

    assert golden()["consent"]["email"]["status"] == "unsubscribed"
    (tmp_path / "data" / "a.csv").write_text(header + "1,Anna,Lee,ann@example.com,,,,\n", encoding="utf-8")
    hub.sync(["a"])
    assert golden()["first_name"] == "Anna"
    assert golden()["consent"]["email"]["status"] == "unsubscribed"
    (tmp_path / "data" / "a.csv").write_text(  # the same silent row again, and a new one
        header + "1,Anna,Lee,ann@example.com,,,,\n2,Bob,Roe,bob@example.com,,,,\n", encoding="utf-8")
    summary = hub.sync(["a"])[0]
    assert (summary.streams["people"].unchanged, summary.streams["people"].created) == (1, 1)
    (tmp_path / "data" / "a.csv").write_text(
        header + "1,Anna,Lee,ann@example.com,,subscribed,double_opt_in,2025-02-01\n", encoding="utf-8")
    hub.sync(["a"])
    assert golden()["consent"]["email"]["status"] == "subscribed"


def test_batched_lookups_search_by_their_in_list_on_sqlite(demo_dir: Path, tmp_path: Path) -> None:
    """Every ``... IN (ids)`` lookup of a sync must be planned as a search on the listed column.
    SQLite has no statistics; given another indexed equality in the same WHERE (e.g. ``status =
    'active'``) it may walk that index over the whole table instead: at 100k records that was
    0.64 s per 900 ids, and the cost of each batch grew with the store. Plans do not depend on
    the table's size, so the demo data shows them."""
    import re
    import sqlite3

    db = tmp_path / "plans.db"
    hub = demo_hub(demo_dir, f"sqlite:///{db}")
    seen: dict[str, Any] = {}

    @sa.event.listens_for(hub.store.engine, "before_cursor_execute")
    def grab(_conn, _cursor, statement, parameters, _context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and " IN (" in statement and not executemany:
            seen.setdefault(statement, parameters)

    hub.sync()
    for f in (demo_dir / "demo").rglob("*.csv"):  # read again: lookups against a filled store
        os.utime(f, (f.stat().st_mtime + 5, f.stat().st_mtime + 5))
    hub.sync()
    assert len(seen) >= 10
    raw = sqlite3.connect(db)
    try:
        for statement, params in seen.items():
            in_columns = {col for _t, col in re.findall(r'"?(\w+)"?\.(\w+) IN \(', statement)}
            plan = " | ".join(row[3] for row in raw.execute("EXPLAIN QUERY PLAN " + statement, params))
            assert any(re.search(rf"SEARCH \w+ USING .*\b{c}=\?", plan) for c in in_columns), (statement, plan)
    finally:
        raw.close()


def test_a_crowded_blocking_key_becomes_a_stop_key_across_batches(tmp_path: Path, store_url: str) -> None:
    """60 different Müllers in one postcode, synced in batches of 20: their shared blocking key
    (last name + postcode) grows past MAX_BLOCK (50) and becomes a stop key: its rows go, and
    it is neither stored nor looked up again. Keys of few records stay."""
    from synchub import similarity

    first = ["Anna", "Bernd", "Clara", "Dieter", "Eva", "Frank", "Gisela", "Heinz", "Ines", "Jens"]
    lines = ["id,email,first,last,zip,city,born"]
    for i in range(60):
        lines.append(f"{i},m{i}@example.de,{first[i % 10]}{'' if i < 10 else chr(97 + i // 10)},Müller,80331,München,"
                     f"{1930 + i}-0{1 + i % 9}-1{i % 10}")  # no two share a birth date
    mapping = ("entity: person\nfields:\n  emails: email\n  first_name: first\n  last_name: last\n"
               "  address.postal_code: zip\n  address.city: city\n  address.country: {value: DE}\n  birth_date: born\n")
    cfg = write_config(tmp_path, """
        defaults: {batch_size: 20}
        connections:
          crm:
            connector: files
            settings: {path: data}
            streams:
              people: {mapping: muellers, settings: {pattern: "people.csv", primary_key: id}}
        """, store_url, people__csv="\n".join(lines) + "\n")
    (tmp_path / "mappings" / "muellers.yaml").write_text(mapping, encoding="utf-8")
    hub = hub_for(cfg)
    hub.sync()
    assert hub.store.counts()["golden_active"] == 60  # all different people
    ln_pc = {v for g in rows(hub.store, st.golden_t)
             for t, v in similarity.blocking_keys(similarity.features(g["data"], "person")) if t == "ln_pc"}
    assert len(ln_pc) == 1
    stops = {(r["key_type"], r["key_value"]) for r in rows(hub.store, st.stop_t)}
    assert ("ln_pc", next(iter(ln_pc))) in stops
    stored = {(r["key_type"], r["key_value"]) for r in rows(hub.store, st.match_key_t)}
    assert not stored & stops
    assert sum(1 for t, _v in stored if t == "dob_pc") == 60  # keys of one record each stay
    sizes: dict[tuple[str, str], int] = {}
    for r in rows(hub.store, st.match_key_t):
        sizes[(r["key_type"], r["key_value"])] = sizes.get((r["key_type"], r["key_value"]), 0) + 1
    # No block holds more than MAX_BLOCK plus one batch.
    assert max(sizes.values()) <= similarity.MAX_BLOCK + 20
