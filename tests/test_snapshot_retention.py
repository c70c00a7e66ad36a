"""Deletions that files cannot announce (a files stream declared a snapshot, with the safety
limit) and retention rules (dry run, erase, anonymise), issue 20. On both stores."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from synchub import privacy
from synchub import store as st
from synchub.engine import Hub
from tests.helpers import content_snapshot, hub_for, write_people_mapping

SALT = "retention-test-salt-0123456789"


def _rows(n: int, skip: tuple[int, ...] = ()) -> str:
    lines = ["id;email;first;last"]
    lines += [f"P{i:03d};p{i}@example.org;Vorname{i};Nachname{i}" for i in range(1, n + 1) if i not in skip]
    return "\n".join(lines) + "\n"


def _config(tmp: Path, store_url: str, stream_extra: str = "", extra: str = "") -> Path:
    write_people_mapping(tmp / "mappings")
    (tmp / "data").mkdir(exist_ok=True)
    cfg = tmp / "synchub.yaml"
    cfg.write_text(
        f"store: '{store_url}'\nmappings_dir: [mappings]\n"
        "match:\n  person: {keys: [email], fuzzy: false}\n"
        "connections:\n  crm:\n    connector: files\n    settings: {path: data}\n    streams:\n"
        "      people:\n        mapping: people\n"
        f"        settings: {{pattern: 'people*.csv', primary_key: id, snapshot: true}}\n{stream_extra}"
        f"privacy:\n  salt: '{SALT}'\n{extra}", encoding="utf-8")
    return cfg


@pytest.fixture
def snap(tmp_path: Path, store_url: str) -> Iterator[tuple[Hub, Path]]:
    hub = hub_for(_config(tmp_path, store_url))
    (tmp_path / "data" / "people.csv").write_text(_rows(20), encoding="utf-8")
    hub.sync()
    yield hub, tmp_path / "data" / "people.csv"
    hub.store.dispose()


def _active(hub: Hub) -> int:
    return hub.store.counts()["golden_active"]


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def test_a_record_missing_from_a_newer_snapshot_is_deleted_in_the_hub(snap: tuple[Hub, Path]) -> None:
    hub, path = snap
    assert _active(hub) == 20
    _write(path, _rows(20, skip=(5, 6)))
    run = hub.sync()[0]
    assert run.status == "succeeded" and run.streams["people"].deleted == 2
    assert _active(hub) == 18
    assert not hub.store.search_golden("p5@example.org")
    with hub.store.engine.connect() as conn:
        audit = conn.execute(sa.select(st.audit_t.c.details).where(st.audit_t.c.action == "source_deleted")).scalars().all()
    assert sorted(d["source_id"] for d in audit) == ["P005", "P006"]
    # Back in the next export: back in the hub.
    _write(path, _rows(20))
    hub.sync()
    assert _active(hub) == 20


def test_a_snapshot_that_would_delete_too_much_is_refused_until_confirmed(snap: tuple[Hub, Path]) -> None:
    hub, path = snap
    before = content_snapshot(hub.store)
    _write(path, _rows(3))  # an export cut short: 17 of 20 missing (85 %, over the default 20 %)
    run = hub.sync()[0]
    assert run.status == "failed"
    assert "17 of the 20" in (run.error or "") and "--confirm-deletions" in (run.error or "")
    assert _active(hub) == 20
    assert content_snapshot(hub.store) == before
    # The file stays unread: the next run refuses again rather than forgetting the listing.
    assert hub.sync()[0].status == "failed"
    hub.confirm_deletions = True
    run = hub.sync()[0]
    assert run.status == "succeeded" and run.streams["people"].deleted == 17
    assert _active(hub) == 3


def test_a_few_deletions_always_pass_and_the_share_is_configurable(tmp_path: Path, store_url: str) -> None:
    hub = hub_for(_config(tmp_path, store_url, stream_extra="        max_delete_share: 0.5\n"))
    path = tmp_path / "data" / "people.csv"
    _write(path, _rows(20))
    hub.sync()
    _write(path, _rows(20, skip=tuple(range(1, 10))))  # 9 of 20 (45 %): under 50 %
    assert hub.sync()[0].status == "succeeded"
    assert _active(hub) == 11
    _write(path, _rows(20, skip=tuple(range(1, 14))))  # 3 more: always allowed
    assert hub.sync()[0].status == "succeeded"
    assert _active(hub) == 7
    hub.store.dispose()


def test_a_snapshot_with_an_unreadable_row_deletes_nothing(snap: tuple[Hub, Path]) -> None:
    hub, path = snap
    text = _rows(20, skip=(7,)).replace("P010;p10@example.org;Vorname10;Nachname10", 'P010;"p10@example.org;broken')
    _write(path, text)
    run = hub.sync()[0]
    assert run.streams["people"].deleted == 0 and run.streams["people"].rejected >= 1
    assert _active(hub) == 20


def test_without_snapshot_a_missing_row_stays(tmp_path: Path, store_url: str) -> None:
    cfg = _config(tmp_path, store_url)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace(", snapshot: true", ""), encoding="utf-8")
    hub = hub_for(cfg)
    path = tmp_path / "data" / "people.csv"
    _write(path, _rows(5))
    hub.sync()
    _write(path, _rows(5, skip=(2,)))
    assert hub.sync()[0].streams["people"].deleted == 0
    assert _active(hub) == 5
    hub.store.dispose()


# ----- retention ---------------------------------------------------------------------------------

RULES = """\
  retention:
    - name: stale-leads
      filter: {last_name: {in: [Nachname1, Nachname2, Nachname3]}}
      inactive_days: 365
    - name: anonymise-old
      filter: {last_name: Nachname4}
      inactive_days: 365
      action: anonymise
"""


@pytest.fixture
def kept(tmp_path: Path, store_url: str) -> Iterator[Hub]:
    hub = hub_for(_config(tmp_path, store_url, extra=RULES))
    _write(tmp_path / "data" / "people.csv", _rows(6))
    hub.sync()
    # P001, P002 and P004 last changed at the source two years ago; P003 yesterday.
    with hub.store.begin() as conn:
        old = st.utcnow() - timedelta(days=730)
        conn.execute(st.source_t.update().where(st.source_t.c.source_id.in_(["P001", "P002", "P004"]))
                     .values(observed_at=old, confirmed_at=old, changed_at=old))
    yield hub
    hub.store.dispose()


def test_retention_dry_run_lists_and_changes_nothing_but_the_audit(kept: Hub) -> None:
    before = content_snapshot(kept.store)
    result = privacy.retention(kept, "stale-leads", apply=False, actor="user:test")
    assert sorted(c.name for c in result["found"]) == ["Vorname1 Nachname1", "Vorname2 Nachname2"]
    assert all(c.last_activity is not None and c.last_activity < st.utcnow() - timedelta(days=365) for c in result["found"])
    assert result["done"] == []
    assert _active(kept) == 6
    with kept.store.engine.connect() as conn:
        audit = conn.execute(sa.select(st.audit_t.c.details).where(st.audit_t.c.action == "retention_dry_run")).scalars().all()
    assert audit == [{"rule": "stale-leads", "found": 2, "done": 0, "failed": 0}]
    assert [r for r in content_snapshot(kept.store) if "retention" not in r] == [r for r in before if "retention" not in r]


def test_retention_run_erases_and_suppresses(kept: Hub) -> None:
    result = privacy.retention(kept, "stale-leads", apply=True, actor="user:test")
    assert len(result["done"]) == 2
    assert _active(kept) == 4
    assert not kept.store.search_golden("Nachname1") and kept.store.search_golden("Nachname3")
    reasons = [e["reason"] for e in privacy.erasures(kept)]
    assert reasons == ["retention:stale-leads", "retention:stale-leads"]
    # The file still holds them; read again, they stay out.
    with kept.store.begin() as conn:
        conn.execute(st.state_t.delete())
    run = kept.sync()[0]
    assert run.streams["people"].suppressed == 2
    assert _active(kept) == 4
    # Nobody else is reached by a second run.
    assert privacy.retention(kept, "stale-leads", apply=True, actor="user:test")["found"] == []


def test_anonymise_keeps_a_record_without_identity(kept: Hub) -> None:
    result = privacy.retention(kept, "anonymise-old", apply=True, actor="user:test")
    assert len(result["done"]) == 1
    with kept.store.engine.connect() as conn:
        anon = conn.execute(sa.select(st.golden_t).where(st.golden_t.c.status == "anonymised")).one()
        text = " ".join(str(v) for r in conn.execute(sa.select(st.golden_t, )) for v in r).lower()
    assert anon.display_name == "" and "emails" not in anon.data and "last_name" not in anon.data
    assert "nachname4" not in text and "p4@example.org" not in text
    assert _active(kept) == 5
    assert not kept.store.search_golden("Nachname4")


def test_retention_names_an_unknown_rule(kept: Hub) -> None:
    with pytest.raises(privacy.ConfigError, match="stale-leads"):
        privacy.retention(kept, "nope", apply=False, actor="user:test")


# ----- confirmation: what the quality report's staleness counts --------------------------------


def _confirmed(hub: Hub) -> dict[str, object]:
    with hub.store.engine.connect() as conn:
        return dict(conn.execute(sa.select(st.source_t.c.source_id, st.source_t.c.confirmed_at)).all())


def test_a_re_read_confirms_unchanged_records_at_most_once_a_day(snap: tuple[Hub, Path]) -> None:
    hub, path = snap
    now = st.utcnow()
    with hub.store.begin() as conn:
        conn.execute(st.source_t.update().where(st.source_t.c.source_id != "P001").values(confirmed_at=now - timedelta(days=200)))
        conn.execute(st.source_t.update().where(st.source_t.c.source_id == "P001").values(confirmed_at=now - timedelta(hours=1)))
    _write(path, _rows(21))  # a new export: the 20 rows unchanged, one new
    run = hub.sync()[0]
    assert run.streams["people"].unchanged == 20 and run.streams["people"].created == 1
    confirmed = _confirmed(hub)
    assert all(confirmed[f"P{i:03d}"] >= now for i in range(2, 22))  # type: ignore[operator]
    # confirmed an hour ago: not written again
    assert abs((confirmed["P001"] - (now - timedelta(hours=1))).total_seconds()) < 1  # type: ignore[operator]


def test_a_full_listing_confirms_the_records_it_names(snap: tuple[Hub, Path]) -> None:
    from datetime import datetime, timezone

    from synchub.connector import Reconcile
    from synchub.engine import StreamCounts

    hub, _path = snap
    with hub.store.begin() as conn:
        conn.execute(st.source_t.update().values(confirmed_at=st.utcnow() - timedelta(days=200)))
    listed_at = datetime.now(timezone.utc)
    mapping = hub.mappings.get("people")
    hub._reconcile("crm", "people", mapping, Reconcile(ids={f"P{i:03d}" for i in range(1, 21)}, as_of=listed_at),
                   0, StreamCounts())
    assert all(abs((t - listed_at).total_seconds()) < 1 for t in _confirmed(hub).values())  # type: ignore[operator]


def test_validate_names_a_bad_retention_filter_with_file_and_line(tmp_path: Path, store_url: str) -> None:
    from synchub.config import check_config

    bad = RULES.replace("{last_name: Nachname4}", "{lastname: Nachname4}")
    cfg = _config(tmp_path, store_url, extra=bad + "    - name: stale-leads\n      inactive_days: 5\n")
    _config_ok, problems = check_config(cfg)
    messages = [(p.line, p.message) for p in problems if p.severity == "error"]
    assert any("lastname" in m for _line, m in messages), messages
    assert any("second retention rule named 'stale-leads'" in m for _line, m in messages), messages
    assert all(line is not None for line, _m in messages)
    no_salt = _config(tmp_path, store_url, extra=RULES).read_text(encoding="utf-8").replace(f"  salt: '{SALT}'\n", "")
    cfg.write_text(no_salt, encoding="utf-8")
    _c, problems = check_config(cfg)
    assert any("needs privacy.salt" in p.message for p in problems)


def test_a_customer_removed_from_the_shop_export_loses_what_only_that_row_had(demo_dir: Path, store_url: str,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's case: Anna Leitner is in the shop file (with a landline only that row has) and the
    newsletter; the shop's next full export lacks her row."""
    from synchub.config import load_config

    monkeypatch.setenv("SYNCHUB_STORE", store_url)
    cfg = demo_dir / "config" / "demo.yaml"
    cfg.write_text(cfg.read_text(encoding="utf-8").replace(
        'primary_key: Kundennr}', 'primary_key: Kundennr, snapshot: true}'), encoding="utf-8")
    hub = Hub(load_config(cfg))
    hub.store.upgrade()
    hub.sync()
    export = demo_dir / "var" / "export" / "kunden_bereinigt.csv"
    assert "4471023" in export.read_text(encoding="utf-8-sig")
    shop = demo_dir / "demo" / "data" / "shop_kunden.csv"
    lines = shop.read_bytes().split(b"\n")
    # (The demo's row K-10024 lacks a column: while a snapshot holds an unreadable row it deletes
    # nothing, so the next export comes without that defect too.)
    shop.write_bytes(b"\n".join(line for line in lines if not line.startswith((b"K-10002;", b"K-10024;"))))
    run = {s.connection: s for s in hub.sync()}
    assert run["shop"].streams["customers"].deleted == 1
    [anna] = hub.store.search_golden("Leitner")
    assert anna["status"] == "active"  # still on the newsletter
    assert not anna["data"].get("phones") and "4471023" not in export.read_text(encoding="utf-8-sig")
    assert "Leitner" in export.read_text(encoding="utf-8-sig")
    hub.store.dispose()


def test_a_customer_a_source_still_delivers_is_not_inactive(kept: Hub) -> None:
    """Retention counts confirmation, not change: an export that delivers P001 unchanged every day
    keeps them, however old its last change is."""
    with kept.store.begin() as conn:
        conn.execute(st.source_t.update().where(st.source_t.c.source_id == "P001").values(confirmed_at=st.utcnow()))
    found = privacy.retention(kept, "stale-leads", apply=False, actor="user:test")["found"]
    assert [c.name for c in found] == ["Vorname2 Nachname2"]


def test_an_unreadable_row_of_an_erased_person_is_not_stored_as_a_reject(snap: tuple[Hub, Path]) -> None:
    hub, path = snap
    privacy.erase(hub, "p3@example.org", actor="user:test")
    # Their row is still in the file, now broken (one column too many), and so is another one.
    _write(path, _rows(20).replace("P003;p3@example.org;Vorname3;Nachname3", "P003;p3@example.org;Vorname3;Nachname3;x")
           .replace("P004;p4@example.org;Vorname4;Nachname4", "P004;p4@example.org;Vorname4;Nachname4;x"))
    run = hub.sync()[0]
    assert run.streams["people"].suppressed == 1 and run.streams["people"].rejected == 1
    with hub.store.engine.connect() as conn:
        raws = " ".join(r or "" for r in conn.execute(sa.select(st.rejected_t.c.raw)).scalars())
    assert "p4@example.org" in raws and "p3@example.org" not in raws


@pytest.mark.parametrize("bulk", [True, False])
def test_with_several_exports_only_the_newest_says_what_is_gone(tmp_path: Path, store_url: str, bulk: bool) -> None:
    """Three exports arrive at once (a catch-up): the oldest, by name the last, lacks two customers
    the newest holds. Read oldest first, only the newest deletes; later, an older export than the
    last one that deleted is read but deletes nothing."""
    import os
    import time

    hub = hub_for(_config(tmp_path, store_url))
    hub.bulk = bulk
    data = tmp_path / "data"
    now = time.time()
    for name, text, age in [("people_3.csv", _rows(20, skip=(5, 6)), 300), ("people_1.csv", _rows(19, skip=(7,)), 200),
                            ("people_2.csv", _rows(20), 100)]:
        _write(data / name, text)
        os.utime(data / name, (now - age, now - age))
    run = hub.sync()[0]
    assert run.status == "succeeded", run.error
    assert _active(hub) == 20 and run.streams["people"].deleted == 0
    _write(data / "people_0.csv", _rows(20, skip=(1, 2)))
    os.utime(data / "people_0.csv", (now - 500, now - 500))  # an old export dropped in again
    run = hub.sync()[0]
    assert run.streams["people"].deleted == 0 and _active(hub) == 20
    hub.store.dispose()


def test_confirm_deletions_names_the_connections_it_is_for(snap: tuple[Hub, Path], tmp_path: Path) -> None:
    from synchub import exitcodes
    from synchub.cli import _run

    hub, path = snap
    _write(path, _rows(3))
    cfg = str(tmp_path / "synchub.yaml")
    assert _run(["--config", cfg, "sync", "--confirm-deletions"]) == exitcodes.USAGE  # not for every connection at once
    assert _active(hub) == 20
    assert _run(["--config", cfg, "sync", "crm", "--confirm-deletions"]) == exitcodes.OK
    assert _active(hub) == 3


def test_the_privacy_example_config_is_valid_next_to_the_demo(tmp_path: Path, demo_dir: Path) -> None:
    import shutil

    from synchub.config import check_config
    from tests.helpers import ROOT

    folder = demo_dir / "config-with-privacy"  # a config can be a folder: the demo's file and this one
    folder.mkdir()
    shutil.copy(demo_dir / "config" / "demo.yaml", folder / "demo.yaml")
    shutil.copy(ROOT / "config" / "privacy.example.yaml", folder / "privacy.yaml")
    config, problems = check_config(folder, environ={"SYNCHUB_PRIVACY_SALT": "a-long-enough-random-salt",
                                                     "SYNCHUB_STORE": "sqlite:///" + str(tmp_path / "x.db")})
    assert [p.message for p in problems if p.severity == "error"] == []
    assert config is not None and config.privacy.retention[0].name == "stale-leads"
    assert config.quality.schedule is not None


def test_validate_warns_about_a_salt_written_in_clear_text(tmp_path: Path, store_url: str) -> None:
    from synchub.config import check_config

    cfg = _config(tmp_path, store_url)  # salt: 'retention-test-salt-...' written in the file
    _c, problems = check_config(cfg)
    [warning] = [p for p in problems if "privacy.salt" in p.message]
    assert warning.severity == "warning" and warning.line is not None and SALT not in warning.message
    cfg.write_text(cfg.read_text(encoding="utf-8").replace(f"'{SALT}'", "${MY_SALT}"), encoding="utf-8")
    _c, problems = check_config(cfg, environ={"MY_SALT": SALT})
    assert not [p for p in problems if "privacy.salt" in p.message]
