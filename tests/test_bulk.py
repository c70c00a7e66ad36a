"""The bulk path (:mod:`synchub.bulk`) and the incremental path give the same store.

Every scenario syncs the same input twice, once forced through each path, into two stores of
the same backend, and compares what an admin or a push could see: which source records form
each golden record, its data, provenance and status, the identity and blocking keys, the
conflicts, keep-apart decisions and overrides. Golden ids are random, so each golden record is
named by its source records.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from synchub import plugins
from synchub import store as st
from synchub.connector import Checkpoint, Connector, ConnectorSettings, ReadItem, Record, Stream
from synchub.engine import Hub
from synchub.store import Store
from tests.helpers import ROOT, demo_hub, hub_for, write_config

FEBRL = ROOT / "bench" / "data" / "febrl" / "dataset1.csv"


# ----- a source with checkpoints and merged ids -------------------------------------------------


class ListingSettings(ConnectorSettings):
    path: str
    #: A checkpoint after every ``every`` records (each one a unit of a bulk load).
    every: int = 3


class ListingStream(Stream):
    primary_key = ("id",)

    def __init__(self, settings: ListingSettings):
        self.settings = settings

    def read(self, state: dict[str, Any] | None) -> Iterator[ReadItem]:
        lines = Path(self.settings.path).read_text(encoding="utf-8").splitlines()
        start = (state or {}).get("line", 0)
        for n, line in enumerate(lines[start:], start + 1):
            row = json.loads(line)
            merged = row.pop("merged", [])
            yield Record(row, ref=f"line {n}", observed_at=datetime(2026, 1, 1, tzinfo=timezone.utc), aliases=merged)
            if n % self.settings.every == 0:
                yield Checkpoint({"line": n})
        yield Checkpoint({"line": len(lines)})


class ListingConnector(Connector):
    name = "listing"
    Settings = ListingSettings

    def streams(self) -> dict[str, Stream]:
        return {name: ListingStream(self.settings) for name in self.context.stream_settings}  # type: ignore[arg-type]


class ListingPlugin:
    @plugins.hookimpl
    def register_connectors(self) -> list[type[Connector]]:
        return [ListingConnector]


@pytest.fixture
def listing():
    plugin = ListingPlugin()
    plugins.register(plugin, name="listing")
    yield
    plugins.unregister(plugin)


# ----- what is compared -----------------------------------------------------------------------------


def snapshot(store: Store, *, mask_times: bool = False) -> dict[str, Any]:
    """The store's content with every golden id replaced by the sorted refs of its source records,
    and each distinct observation time (a run's start, for sources that give none) by its rank
    (or by ``*`` with ``mask_times``)."""
    raw = _snapshot(store)
    times: set[str] = set()

    def walk(obj: Any, fn: Any) -> Any:
        if isinstance(obj, dict):
            return {k: (fn(v) if k == "observed_at" and isinstance(v, str) else walk(v, fn)) for k, v in obj.items()}
        if isinstance(obj, list):
            return [walk(v, fn) for v in obj]
        return obj

    walk(raw, lambda v: times.add(v))
    rank = {t: "*" if mask_times else f"t{i}" for i, t in enumerate(sorted(times))}
    return walk(raw, lambda v: rank[v])


def _snapshot(store: Store) -> dict[str, Any]:
    with store.engine.connect() as conn:
        members: dict[str, list[str]] = {}
        for s in conn.execute(sa.select(st.source_t)):
            members.setdefault(s.golden_id, []).append(f"{s.connection}/{s.stream}/{s.source_id}")
        name = {g: "+".join(sorted(m)) for g, m in members.items()}
        goldens = {}
        for g in conn.execute(sa.select(st.golden_t).where(st.golden_t.c.status != "merged")):
            goldens[name.get(g.id, "(no sources)")] = {"data": g.data, "provenance": g.provenance, "status": g.status,
                                                       "display": g.display_name, "search": g.search_text}
        sources = sorted((
            {"golden": name[s.golden_id], "ref": [s.connection, s.stream, s.source_id], "data": s.data,
             "hash": s.content_hash, "deleted": s.deleted, "quarantine": s.quarantine, "observed_at": s.observed_at.isoformat()}
            for s in conn.execute(sa.select(st.source_t))), key=lambda r: r["ref"])
        keys = sorted((k.key_type, k.key_value, name[k.golden_id]) for k in conn.execute(sa.select(st.key_t)))
        match_keys = sorted((k.key_type, k.key_value, name.get(k.golden_id, "?")) for k in conn.execute(sa.select(st.match_key_t)))
        stops = sorted((k.key_type, k.key_value) for k in conn.execute(sa.select(st.stop_t)))
        conflicts = sorted(_conflict(c, name) for c in conn.execute(sa.select(st.conflict_t)))
        apart = sorted([*sorted([name.get(d.golden_a), name.get(d.golden_b)], key=str), d.decision]
                       for d in conn.execute(sa.select(st.decision_t)))
        overrides = sorted((name.get(o.golden_id), o.field, json.dumps(o.value)) for o in conn.execute(sa.select(st.override_t)))
        interactions = sorted(json.dumps([name.get(i.golden_id), i.connection, i.stream, i.source_id, i.data], sort_keys=True)
                              for i in conn.execute(sa.select(st.interaction_t)))
    return {"goldens": goldens, "sources": sources, "keys": keys, "match_keys": match_keys, "stops": stops,
            "conflicts": conflicts, "apart": apart, "overrides": overrides, "interactions": interactions}


def _conflict(c: Any, name: dict[str, str]) -> str:
    pair = [name.get(c.golden_id), name.get(c.other_golden_id) if c.other_golden_id else None]
    if c.kind == "possible_duplicate":
        pair.sort(key=str)  # the pair is stored in the order of its (random) golden ids
    # Which run logged it is left out: after a crash, the rerun (another run) logs it.
    candidates = [{k: v for k, v in cand.items() if k != "run"} for cand in c.candidates]
    return json.dumps([c.kind, *pair, c.field, candidates, c.rule, c.applied, c.status], sort_keys=True, default=str)


def assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    for part in a:
        assert a[part] == b[part], f"bulk and incremental differ in {part}"


def _sync(hub: Hub, bulk: bool, *names: str) -> list[Any]:
    hub.bulk = bulk
    return hub.sync(list(names) or None)


# ----- scenarios ----------------------------------------------------------------------------------


def test_demo_data_gives_the_same_store_either_way(demo_dir: Path, store_url: str, second_url: str, tmp_path: Path) -> None:
    import shutil

    other = tmp_path / "other"
    shutil.copytree(demo_dir, other, ignore=shutil.ignore_patterns("other"))
    bulk_hub, inc_hub = demo_hub(demo_dir, store_url), demo_hub(other, second_url)
    inc_hub.config.defaults.batch_size = 7  # many batches, so matching across batches is exercised
    a = _sync(bulk_hub, True)
    b = _sync(inc_hub, False)
    assert [s.streams for s in a] == [s.streams for s in b]
    snap = snapshot(bulk_hub.store)
    assert len(snap["goldens"]) > 50 and snap["conflicts"]
    assert_same(snap, snapshot(inc_hub.store))


FEBRL_MAPPING = """\
description: FEBRL rows as persons
entity: person
direction: in
fields:
  first_name: given_name
  last_name: surname
  address.street: street
  address.line2: address_2
  address.city: suburb
  address.postal_code: postcode
  address.region: state
  address.country: {value: AU}
  birth_date: {path: date_of_birth, transform: parse_date, args: {formats: ['%Y%m%d']}}
"""


def _febrl_files(tmp: Path, store_url: str, halves: bool) -> Path:
    """FEBRL dataset1 (500 people, 500 fuzzy duplicates) as a CSV export, optionally in two
    files of two connections (the second one a new stream once the first is synced)."""
    tmp.mkdir(parents=True, exist_ok=True)
    with FEBRL.open(encoding="utf-8") as f:
        rows = [{k.strip(): (v or "").strip() for k, v in r.items()} for r in csv.DictReader(f, skipinitialspace=True)]
    for r in rows:
        r["street"] = f"{r['street_number']} {r['address_1']}".strip()
    cols = ["rec_id", "given_name", "surname", "street", "address_2", "suburb", "postcode", "state", "date_of_birth"]

    def text(part: list[dict[str, str]]) -> str:
        lines = [";".join(cols)] + [";".join(r[c].replace(";", " ") for c in cols) for r in part]
        return "\n".join(lines) + "\n"

    files = {"crm__csv": text(rows[::2]), "shop__csv": text(rows[1::2])} if halves else {"all__csv": text(rows)}
    conns = ""
    for fname in files:
        stem = fname.split("__")[0]
        conns += (f"  {stem}:\n    connector: files\n    settings: {{path: data}}\n    streams:\n"
                  f"      people: {{mapping: febrl, settings: {{pattern: {stem}.csv, primary_key: rec_id}}}}\n")
    cfg = write_config(tmp, "connections:\n" + conns, store_url, **files)
    (tmp / "mappings" / "febrl.yaml").write_text(FEBRL_MAPPING, encoding="utf-8")
    return cfg


def test_fuzzy_duplicates_form_the_same_clusters_either_way(store_url: str, second_url: str, tmp_path: Path) -> None:
    bulk_hub = hub_for(_febrl_files(tmp_path / "a", store_url, halves=False))
    inc_hub = hub_for(_febrl_files(tmp_path / "b", second_url, halves=False))
    inc_hub.config.defaults.batch_size = 100
    _sync(bulk_hub, True)
    _sync(inc_hub, False)
    snap = snapshot(bulk_hub.store)
    merged = [g for g in snap["goldens"] if "+" in g]
    assert 300 < len(merged) <= 500  # most of the 500 fuzzy pairs found, nothing merged wildly
    assert_same(snap, snapshot(inc_hub.store))


def test_a_bulk_load_past_its_memory_limit_goes_on_incrementally(store_url: str, second_url: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    from synchub import bulk

    monkeypatch.setattr(bulk, "UNIT", 400)
    monkeypatch.setattr(bulk, "HOLD_MAX", 300)
    bulk_hub = hub_for(_febrl_files(tmp_path / "a", store_url, halves=False))
    inc_hub = hub_for(_febrl_files(tmp_path / "b", second_url, halves=False))
    inc_hub.config.defaults.batch_size = 100
    held: list[int] = []
    real = bulk.BulkState.held
    monkeypatch.setattr(bulk.BulkState, "held", lambda self: held.append(real(self)) or held[-1])
    with caplog.at_level("INFO", logger="synchub.engine"):
        _sync(bulk_hub, True)
    assert "the rest of the stream loads incrementally" in caplog.text
    assert max(held) <= 300 + 400, "the limit is checked after every unit"
    _sync(inc_hub, False)
    assert_same(snapshot(bulk_hub.store), snapshot(inc_hub.store))


def test_a_new_stream_against_admin_decisions_gives_the_same_store_either_way(
        store_url: str, second_url: str, tmp_path: Path) -> None:
    """The second connection arrives once the first is synced and an admin kept two of its
    people apart and chose a value by hand: the bulk load (chosen on its own, a new stream)
    respects both as the incremental path does."""
    hubs = []
    for sub, url in (("a", store_url), ("b", second_url)):
        hub = hub_for(_febrl_files(tmp_path / sub, url, halves=True))
        _sync(hub, False, "crm")
        with hub.store.begin() as conn:
            by_source = {r.source_id: r.golden_id for r in conn.execute(sa.select(st.source_t.c.source_id, st.source_t.c.golden_id))}
            now = datetime(2026, 2, 1, tzinfo=timezone.utc)
            # Two crm people a shop record could join both of: kept apart by an admin.
            a, b = sorted([by_source["rec-0-org"], by_source["rec-1-dup-0"]]) if "rec-1-dup-0" in by_source else sorted(
                list(by_source.values())[:2])
            conn.execute(st.decision_t.insert().values(golden_a=a, golden_b=b, decision="keep_apart", decided_by="user:ann",
                                                       decided_at=now))
            for sid in ("rec-10-org", "rec-12-org"):
                if sid in by_source:
                    conn.execute(st.override_t.insert().values(golden_id=by_source[sid], field="last_name", value="Chosen",
                                                               decided_by="user:ann", decided_at=now))
        hubs.append(hub)
    bulk_hub, inc_hub = hubs
    inc_hub.config.defaults.batch_size = 50
    bulk_hub.bulk = None  # chosen on its own: the shop stream is new and the store small
    bulk_hub.sync(["shop"])
    _sync(inc_hub, False, "shop")
    snap = snapshot(bulk_hub.store)
    assert snap["apart"] and snap["overrides"]
    assert any(g["data"].get("last_name") == "Chosen" and "shop" in name for name, g in snap["goldens"].items())
    assert_same(snap, snapshot(inc_hub.store))


def test_merged_ids_and_checkpointed_units_give_the_same_store_either_way(
        listing: None, store_url: str, second_url: str, tmp_path: Path) -> None:
    """A source that checkpoints every 3 records (each one a bulk unit) and later says two of
    its records were merged (``aliases``): later units re-key and merge what earlier units wrote."""
    people = [
        {"id": "1", "email": "ann@example.org", "first": "Ann", "last": "Weber"},
        {"id": "2", "email": "bob@example.org", "first": "Bob", "last": "Huber"},
        {"id": "3", "email": "ann.w@example.org", "first": "Anna", "last": "Weber"},
        {"id": "4", "email": "cid@example.org", "first": "Cid", "last": "Maier"},
        {"id": "5", "email": "ann.w@example.org", "first": "Anna", "last": "Weber", "merged": ["3"]},
        {"id": "6", "email": "dora@example.org", "first": "Dora", "last": "Lang"},
        {"id": "7", "email": "bob@example.org", "first": "Robert", "last": "Huber", "merged": ["2", "99"]},
        {"id": "8", "email": "eve@example.org", "first": "Eve", "last": "Kurz", "merged": ["4", "6"]},
    ]
    snaps = []
    for sub, url, bulk in (("a", store_url, True), ("b", second_url, False)):
        folder = tmp_path / sub
        folder.mkdir()
        data = folder / "people.jsonl"
        data.write_text("".join(json.dumps(p) + "\n" for p in people), encoding="utf-8")
        cfg = write_config(folder, f"connections:\n  src:\n    connector: listing\n    settings: {{path: '{data}'}}\n"
                                   "    streams:\n      people: {mapping: people}\n", url)
        (folder / "mappings" / "people.yaml").write_text(
            "entity: person\ndirection: in\nfields:\n  emails: email\n  first_name: first\n  last_name: last\n",
            encoding="utf-8")
        hub = hub_for(cfg)
        _sync(hub, bulk)
        snaps.append(snapshot(hub.store))
    bulk_snap, inc_snap = snaps
    # 3 re-keyed to 5; 2 dropped into 7 (99 never existed); 4 re-keyed to 8, then 6 dropped into it.
    assert set(bulk_snap["goldens"]) == {"src/people/1", "src/people/5", "src/people/7", "src/people/8"}
    assert_same(bulk_snap, inc_snap)


def test_a_crash_inside_a_bulk_unit_leaves_nothing_and_the_rerun_finishes(
        store_url: str, second_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from synchub import apply

    hub = hub_for(_febrl_files(tmp_path / "a", store_url, halves=False))
    calls = {"n": 0}
    real = apply.rederive

    def crash_on_second(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr("synchub.bulk.UNIT", 400)
    monkeypatch.setattr(apply, "rederive", crash_on_second)
    [summary] = _sync(hub, True)
    assert summary.status == "failed"
    first_unit = hub.store.counts()["source_records"]
    assert first_unit == 400  # the first unit committed, the second rolled back whole
    monkeypatch.setattr(apply, "rederive", real)
    hub.bulk = None  # the stream is known now: the rerun goes on batch by batch
    [summary] = hub.sync()
    assert summary.status == "succeeded"
    ref = hub_for(_febrl_files(tmp_path / "b", second_url, halves=False))
    _sync(ref, True)
    assert_same(snapshot(hub.store, mask_times=True), snapshot(ref.store, mask_times=True))
