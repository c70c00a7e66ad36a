"""Unchanged raw rows are not prepared again (:mod:`synchub.prepare`), and the store ends the
same as when every row is prepared.

Every scenario runs the same reads into two stores of the same backend: one as shipped, one
with the raw hash switched off (every row prepared, as before the raw hash existed), and
compares what an admin or a push could see (``tests.test_bulk.snapshot``), the run counts,
and how many rows were prepared.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from synchub import plugins, prepare
from synchub import store as st
from synchub.connector import Checkpoint, Connector, ConnectorSettings, ReadItem, Record, Stream
from synchub.engine import Hub
from tests.helpers import hub_for, write_config
from tests.test_bulk import snapshot

# ----- a source that lists every row on every read -------------------------------------------------


class RowsSettings(ConnectorSettings):
    path: str


class RowsStream(Stream):
    primary_key = ("id",)

    def __init__(self, path: Path):
        self.path = path

    def read(self, state: dict[str, Any] | None) -> Iterator[ReadItem]:
        n = 0
        for n, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            row = json.loads(line)
            merged = row.pop("merged", [])
            company = row.get("company")
            links = {"company_id": ("companies", str(company))} if company else {}
            yield Record(row, ref=f"{self.path.name}:{n}", observed_at=datetime(2026, 1, 1, tzinfo=timezone.utc),
                         aliases=merged, links=links, deleted=bool(row.get("gone")))
        yield Checkpoint({"lines": n})


class RowsConnector(Connector):
    name = "rows"
    Settings = RowsSettings

    def streams(self) -> dict[str, Stream]:
        folder = Path(self.settings.path)  # type: ignore[attr-defined]
        return {name: RowsStream(folder / f"{name}.jsonl") for name in self.context.stream_settings}


class RowsPlugin:
    @plugins.hookimpl
    def register_connectors(self) -> list[type[Connector]]:
        return [RowsConnector]


@pytest.fixture
def rows_connector() -> Iterator[None]:
    plugin = RowsPlugin()
    plugins.register(plugin, name="rows-test")
    yield
    plugins.unregister(plugin)


@pytest.fixture
def prepared_rows(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Source ids of the rows prepared, in order (cleared by the test between syncs)."""
    seen: list[str] = []
    real = prepare.Preparer.prepare

    def counting(self: prepare.Preparer, item: Record, *a: Any, **k: Any) -> Any:
        seen.append(str(item.data.get("id")))
        return real(self, item, *a, **k)

    monkeypatch.setattr(prepare.Preparer, "prepare", counting)
    return seen


PEOPLE = """\
entity: person
direction: in
fields:
  emails: email
  phones: phone
  first_name: first
  last_name: last
"""
COMPANIES = "entity: company\ndirection: in\nfields:\n  name: name\n  domain: domain\n"


def _setup(folder: Path, url: str, *, people: str = PEOPLE) -> Hub:
    body = (f"defaults: {{phone_region: DE}}\nconnections:\n  crm:\n    connector: rows\n    settings: {{path: '{folder / 'data'}'}}\n"
            "    streams:\n      companies: {mapping: companies}\n      people: {mapping: people}\n")
    folder.mkdir(parents=True, exist_ok=True)
    cfg = write_config(folder, body, url)
    (folder / "mappings" / "people.yaml").write_text(people, encoding="utf-8")
    (folder / "mappings" / "companies.yaml").write_text(COMPANIES, encoding="utf-8")
    return hub_for(cfg)


def _write(folder: Path, stream: str, rows: list[dict[str, Any]]) -> None:
    (folder / "data" / f"{stream}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


ANN = {"id": "1", "email": "ann@example.org", "first": "Ann", "last": "Arndt", "phone": "0171 2345678"}
BOB = {"id": "2", "email": "bob@example.org", "first": "Bob", "last": "Bauer", "phone": "not a phone"}  # quarantined
CEM = {"id": "3", "email": "cem@example.org", "first": "Cem", "last": "Celik", "company": "c1"}  # company unknown yet
DAN = {"id": "4", "email": "dan@example.org", "first": "Dan", "last": "Dorn"}


@pytest.fixture
def twins(tmp_path: Path, store_url: str, second_url: str, rows_connector: None,
          monkeypatch: pytest.MonkeyPatch) -> tuple[Hub, Hub, list[Path]]:
    """(store as shipped, store with every row prepared) with the same files in two folders."""
    folders = [tmp_path / "skip", tmp_path / "all"]
    return _setup(folders[0], store_url), _setup(folders[1], second_url), folders


def _run(hubs: tuple[Hub, Hub], monkeypatch: pytest.MonkeyPatch, seen: list[str]) -> tuple[list[str], list[str]]:
    """Sync both stores; the second with raw hashes switched off. Returns the ids each prepared."""
    skip, everything = hubs
    seen.clear()
    a = skip.sync()
    by_skip = list(seen)
    seen.clear()
    with monkeypatch.context() as m:
        m.setattr(prepare.Preparer, "raw_hash", lambda self, item: None)
        b = everything.sync()
    assert [r.status for r in a] == [r.status for r in b] == ["succeeded"] * len(a)
    assert [r.streams for r in a] == [r.streams for r in b]
    return by_skip, list(seen)


def _snap(hub: Hub) -> dict[str, Any]:
    """``tests.test_bulk.snapshot`` with golden ids inside data (a person's ``company_id``)
    named by their source records too."""
    with hub.store.engine.connect() as conn:
        members: dict[str, list[str]] = {}
        for r in conn.execute(sa.select(st.source_t.c.golden_id, st.source_t.c.stream, st.source_t.c.source_id)):
            members.setdefault(r.golden_id, []).append(f"{r.stream}/{r.source_id}")
    snap = snapshot(hub.store)
    for source in snap["sources"]:
        if "company_id" in source["data"]:
            source["hash"] = "(hashes the random golden id of the company)"
    text = json.dumps(snap, sort_keys=True)
    for golden_id, names in members.items():
        text = text.replace(golden_id, "+".join(sorted(names)))
    return json.loads(text)


def _quarantine_logged(hub: Hub) -> list[int]:
    with hub.store.engine.connect() as conn:
        q = sa.select(st.quarantined_t.c.run_id, sa.func.count()).group_by(st.quarantined_t.c.run_id).order_by(st.quarantined_t.c.run_id)
        return [n for _run_id, n in conn.execute(q)]


def test_an_unchanged_reread_prepares_only_the_rows_that_cannot_skip(
        twins: tuple[Hub, Hub, list[Path]], monkeypatch: pytest.MonkeyPatch, prepared_rows: list[str]) -> None:
    skip, everything, folders = twins
    for f in folders:
        _write(f, "companies", [])
        _write(f, "people", [ANN, BOB, CEM, DAN])
    first = _run((skip, everything), monkeypatch, prepared_rows)
    assert first[0] == first[1] == ["1", "2", "3", "4"]
    assert _snap(skip) == _snap(everything)

    # The same rows again: Bob has a quarantined value (logged again every run) and Cem a link
    # that did not resolve; Ann and Dan are known unchanged without being prepared.
    again = _run((skip, everything), monkeypatch, prepared_rows)
    assert again == (["2", "3"], ["1", "2", "3", "4"])
    assert _snap(skip) == _snap(everything)
    assert _quarantine_logged(skip) == _quarantine_logged(everything) == [1, 1]

    # Cem's company arrives: his link resolves, so his record changes and he is prepared; from
    # then on his row skips too.
    for f in folders:
        _write(f, "companies", [{"id": "c1", "name": "Celik GmbH", "domain": "celik.de"}])
    resolved = _run((skip, everything), monkeypatch, prepared_rows)
    assert resolved[0] == ["c1", "2", "3"]
    snap = _snap(skip)
    assert snap == _snap(everything)
    cem = next(s for s in snap["sources"] if s["ref"][2] == "3")
    assert cem["data"].get("company_id"), "the link resolved on the re-read"
    settled = _run((skip, everything), monkeypatch, prepared_rows)
    assert settled[0] == ["2"]
    assert _snap(skip) == _snap(everything)


def test_changed_deleted_and_repeated_rows_are_prepared(
        twins: tuple[Hub, Hub, list[Path]], monkeypatch: pytest.MonkeyPatch, prepared_rows: list[str]) -> None:
    skip, everything, folders = twins
    for f in folders:
        _write(f, "companies", [])
        _write(f, "people", [ANN, DAN])
    _run((skip, everything), monkeypatch, prepared_rows)

    # Ann is listed twice, changed and then unchanged (the later row wins: she is unchanged),
    # Dan is deleted at the source, Eve is new and listed twice (the later row wins).
    eve_old = {"id": "5", "email": "eve@example.org", "first": "Eve", "last": "Engel"}
    eve = {**eve_old, "last": "Engel-Ebert"}
    for f in folders:
        _write(f, "people", [{**ANN, "first": "Anna"}, ANN, eve_old, {**DAN, "gone": True}, eve])
    changed = _run((skip, everything), monkeypatch, prepared_rows)
    assert changed == (["5", "4", "5"], ["1", "1", "5", "4", "5"])
    snap = _snap(skip)
    assert snap == _snap(everything)
    by_id = {s["ref"][2]: s for s in snap["sources"]}
    assert by_id["4"]["deleted"] and by_id["5"]["data"]["last_name"] == "Engel-Ebert"
    assert by_id["1"]["data"]["first_name"] == "Ann"

    # Dan comes back with exactly the row he had before his deletion: prepared, not skipped.
    for f in folders:
        _write(f, "people", [ANN, DAN, eve])
    back = _run((skip, everything), monkeypatch, prepared_rows)
    assert back[0] == ["4"]
    snap = _snap(skip)
    assert snap == _snap(everything)
    assert not {s["ref"][2]: s for s in snap["sources"]}["4"]["deleted"]


def test_a_changed_mapping_or_a_store_from_before_prepares_every_row_once_and_rewrites_nothing(
        tmp_path: Path, store_url: str, rows_connector: None, prepared_rows: list[str]) -> None:
    folder = tmp_path / "one"
    hub = _setup(folder, store_url)
    _write(folder, "companies", [])
    _write(folder, "people", [ANN, DAN])
    hub.sync()

    def versions() -> dict[str, Any]:
        with hub.store.engine.connect() as conn:
            return {"golden": sorted((r.id, r.version) for r in conn.execute(sa.select(st.golden_t.c.id, st.golden_t.c.version))),
                    "changed": sorted((r.source_id, r.changed_at) for r in conn.execute(
                        sa.select(st.source_t.c.source_id, st.source_t.c.changed_at)))}

    before = versions()
    # A store written before raw hashes existed: every row is prepared once, found unchanged
    # by its content hash, and only its raw hash is stored.
    with hub.store.begin() as conn:
        conn.execute(st.source_t.update().values(raw_hash=None))
    prepared_rows.clear()
    runs = hub.sync()
    assert prepared_rows == ["1", "4"]
    assert runs[0].streams["people"].unchanged == 2 and runs[0].streams["people"].updated == 0
    assert versions() == before
    prepared_rows.clear()
    hub.sync()
    assert prepared_rows == []

    # A mapping edit that changes nothing of these rows (a new field they do not have): the
    # fingerprint changes, so every row is prepared again, and nothing is rewritten.
    (folder / "mappings" / "people.yaml").write_text(PEOPLE + "  job_title: title\n", encoding="utf-8")
    hub2 = hub_for(folder / "synchub.yaml")
    prepared_rows.clear()
    hub2.sync()
    assert prepared_rows == ["1", "4"]
    assert versions() == before
    prepared_rows.clear()
    hub2.sync()
    assert prepared_rows == []


def test_rows_with_aliases_are_always_prepared(tmp_path: Path, store_url: str, rows_connector: None,
                                               prepared_rows: list[str]) -> None:
    folder = tmp_path / "one"
    hub = _setup(folder, store_url)
    _write(folder, "companies", [])
    _write(folder, "people", [ANN, {**DAN, "merged": ["9"]}])
    hub.sync()
    prepared_rows.clear()
    hub.sync()
    assert prepared_rows == ["4"]


def test_the_fingerprint_covers_code_mapping_keys_and_region(tmp_path: Path, store_url: str, rows_connector: None) -> None:
    folder = tmp_path / "one"
    hub = _setup(folder, store_url)
    stream = hub.connector("crm").streams()["people"]
    mapping = hub._stream_mapping(hub.config.connections["crm"].streams["people"], "in")
    assert mapping is not None
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    item = Record(dict(ANN))
    base = prepare.Preparer(mapping, stream, ["email"], "DE", now).raw_hash(item)
    assert base == prepare.Preparer(mapping, stream, ["email"], "DE", now).raw_hash(Record(dict(ANN)))
    others = {
        prepare.Preparer(mapping, stream, ["email", "phone_mobile"], "DE", now).raw_hash(item),
        prepare.Preparer(mapping, stream, ["email"], "AT", now).raw_hash(item),
        prepare.Preparer(mapping, stream, ["email"], "DE", now).raw_hash(Record({**ANN, "last": "Arndt "})),
        prepare.Preparer(mapping, stream, ["email"], "DE", now).raw_hash(Record(dict(ANN), deleted=True)),
    }
    assert base not in others and len(others) == 4
    prepare.code_fingerprint.cache_clear()
    try:
        real = Path.read_bytes
        with pytest.MonkeyPatch.context() as m:
            m.setattr(Path, "read_bytes", lambda self: real(self) + (b"#" if self.name == "normalize.py" else b""))
            assert prepare.Preparer(mapping, stream, ["email"], "DE", now).raw_hash(item) != base
    finally:
        prepare.code_fingerprint.cache_clear()
