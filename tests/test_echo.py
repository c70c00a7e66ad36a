"""Echo suppression (issue 21): what a destination delivered is never written back to it unchanged,
whatever the connector's write does with ``previous``; a change made in one tool reaches the others
once and comes back to none. With a two-way "tool" connector that PUTs whole records (as a naive
third-party connector does) and records every write; on both stores. The built-in connectors'
round trips are in their e2e tests (plugins/*/tests/test_e2e.py) and tests/test_erasure_vendors.py."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from synchub import plugins
from synchub.connector import Connector, OutRecord, ReadItem, Record, Stream, WriteResult
from synchub.engine import Hub
from tests.helpers import ROOT, hub_for, write_people_mapping

OUT_MAPPING = """\
entity: person
direction: out
fields:
  email: emails.0
  first: first_name
  last: last_name
"""


class ToolStream(Stream):
    name = "people"
    primary_key = ("id",)
    #: The tool's records by id, and every write it received.
    held: ClassVar[dict[str, dict[str, Any]]] = {}
    writes: ClassVar[list[tuple[str, dict[str, Any], dict[str, Any] | None]]] = []

    def read(self, state: dict[str, Any] | None) -> Iterator[ReadItem]:
        for rid, data in sorted(self.held.items()):
            yield Record({"id": rid, **data}, ref=f"tool:{rid}")

    def write(self, records: Iterable[OutRecord], fields: list[str]) -> Iterator[WriteResult]:
        for rec in records:  # a whole-record PUT, no diffing against ``previous``
            rid = rec.external_id or f"T{len(self.held) + 1}"
            self.writes.append((rid, dict(rec.data), rec.previous))
            self.held[rid] = {k: rec.data.get(k) for k in ("email", "first", "last")}
            yield WriteResult(rec.golden_id, ok=True, external_id=rid)


class ToolConnector(Connector):
    name = "echo-tool"

    def streams(self) -> dict[str, Stream]:
        return {"people": ToolStream()}


class ToolPlugin:
    @plugins.hookimpl
    def register_connectors(self) -> list[type[Connector]]:
        return [ToolConnector]


@pytest.fixture
def hub(tmp_path: Path, store_url: str) -> Iterator[Hub]:
    plugin = ToolPlugin()
    plugins.register(plugin, name="echo-tool-test")
    write_people_mapping(tmp_path / "mappings")
    (tmp_path / "mappings" / "tool_out.yaml").write_text(OUT_MAPPING, encoding="utf-8")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "people.csv").write_text("id;email;first;last\nF1;cara@example.org;Cara;Diaz\n", encoding="utf-8")
    ToolStream.held = {"1": {"email": "ann@example.org", "first": "Ann", "last": "Lee"},
                       "2": {"email": "bob@example.org", "first": "Bob", "last": "Roe"}}
    ToolStream.writes = []
    cfg = tmp_path / "synchub.yaml"
    cfg.write_text(
        f"store: '{store_url}'\nmappings_dir: [mappings, '{ROOT / 'mappings'}']\n"
        "match:\n  person: {keys: [email], fuzzy: false}\n"
        "connections:\n"
        "  crm:\n    connector: echo-tool\n    direction: both\n"
        "    streams:\n      people: {mapping: people, write_mapping: tool_out}\n"
        "  files:\n    connector: files\n    settings: {path: data}\n"
        "    streams:\n      people: {mapping: people, settings: {pattern: 'people*.csv', primary_key: id}}\n"
        "  export:\n    connector: files\n    direction: out\n    settings: {path: out}\n"
        "    streams:\n      people: {mapping: export_customers, settings: {file: people.csv}}\n",
        encoding="utf-8")
    h = hub_for(cfg)
    yield h
    h.store.dispose()
    plugins.unregister(plugin)


def test_the_first_push_writes_back_nothing_the_tool_delivered(hub: Hub) -> None:
    hub.sync()
    # Only Cara (from the file) is new to the tool; Ann and Bob came from it.
    assert [(w[1]["email"]) for w in ToolStream.writes] == ["cara@example.org"]
    out = {(s.connection, s.direction): s for s in hub.sync()}
    assert ToolStream.writes[1:] == []  # nothing on a second run either
    assert out[("crm", "out")].streams["people"].written == 0


def test_a_change_in_the_tool_reaches_the_others_once_and_comes_back_to_none(hub: Hub, tmp_path: Path) -> None:
    hub.sync()
    ToolStream.writes.clear()
    ToolStream.held["1"]["last"] = "Lee-Smith"
    hub.sync()
    assert ToolStream.writes == []  # not echoed back to the tool
    export = (tmp_path / "out" / "people.csv").read_text(encoding="utf-8")
    assert "Lee-Smith" in export  # reached the export
    hub.sync()
    hub.sync()
    assert ToolStream.writes == []


def test_a_change_elsewhere_is_written_once_and_not_again_after_the_tool_delivers_it(hub: Hub, tmp_path: Path) -> None:
    hub.sync()
    hub.sync()  # the tool delivers Cara, whom the first run wrote to it
    ToolStream.writes.clear()
    (tmp_path / "data" / "people.csv").write_text("id;email;first;last\nF1;cara@example.org;Carla;Diaz\n", encoding="utf-8")
    hub.sync()
    assert [(w[1]["first"]) for w in ToolStream.writes] == ["Carla"]
    for _ in range(3):  # the tool now delivers Carla back: no ping-pong
        hub.sync()
    assert len(ToolStream.writes) == 1


def test_the_dry_run_shows_echoes_as_unchanged(hub: Hub) -> None:
    for name in ("crm", "files"):
        hub.run_connection(name, "in")
    plan = hub.plan("crm")["people"]
    actions = sorted((p.action, p.reason or "") for p in plan)
    assert [a for a, _r in actions] == ["create", "unchanged", "unchanged"]
    assert all("delivered them" in r for a, r in actions if a == "unchanged")



# ----- the dry run: names, e-mails, why a record leaves, without the destination ---------------


class LeavingToolStream(ToolStream):
    handles_leave = True
    #: The destination cannot be reached: its own plan fails as a connector's retries would end.
    unreachable: ClassVar[bool] = False

    def plan(self, records: Iterable[OutRecord], fields: list[str]) -> Iterator[Any]:
        if self.unreachable:
            from synchub.errors import RetryableError

            raise RetryableError("connection refused after 4 attempts")
        yield from super().plan(records, fields)


def test_the_dry_run_names_each_row_says_why_a_record_leaves_and_works_without_the_destination(
        hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from synchub import exitcodes
    from synchub.cli import _run

    monkeypatch.setattr(ToolConnector, "streams", lambda self: {"people": LeavingToolStream()})
    hub.sync()
    cfg = tmp_path / "synchub.yaml"
    text = cfg.read_text(encoding="utf-8").replace(
        "people: {mapping: people, write_mapping: tool_out}",
        "people: {mapping: people, write_mapping: tool_out, filter: {last_name: {in: [Lee, Diaz]}}}")
    cfg.write_text(text, encoding="utf-8")

    def dry(*extra: str) -> dict[str, Any]:
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert _run(["--config", str(cfg), "--json", "sync", "crm", "--dry-run", *extra]) == exitcodes.OK
        return json.loads(buf.getvalue())

    for extra in ((), ("--offline",)):
        result = dry(*extra)
        assert result["segments"] == {"crm": {"people": 2}}  # Ann Lee and Cara Diaz are in it
        [bob] = [r for r in result["plans"]["crm"]["people"] if r["action"] == "leave"]
        assert (bob["name"], bob["email"]) == ("Bob Roe", "bob@example.org")
        assert bob["reason"] == "last_name is 'Roe', wanted in ['Lee', 'Diaz']"
    LeavingToolStream.unreachable = True
    try:
        result = dry()
    finally:
        LeavingToolStream.unreachable = False
    assert "could not ask the destination" in result["notes"][0]
    assert [r["email"] for r in result["plans"]["crm"]["people"] if r["action"] == "leave"] == ["bob@example.org"]
    assert ToolStream.writes[-1][1]["email"] == "cara@example.org"  # the dry runs wrote nothing


def test_a_value_emptied_in_the_tool_is_not_taken_for_held(hub: Hub, tmp_path: Path) -> None:
    """Only fields the tool's inbound mapping does not read are taken from the hub's last write:
    a field it reads and delivers empty was emptied there. So when Cara's next change goes out,
    the connector is told the tool holds no last name (a connector that sends only what changed
    sends Diaz again), not the Diaz the hub once wrote."""
    hub.sync()
    hub.sync()  # the tool delivers Cara, whom the first run wrote to it
    [cara_id] = [rid for rid, d in ToolStream.held.items() if d["email"] == "cara@example.org"]
    ToolStream.writes.clear()
    ToolStream.held[cara_id]["last"] = None
    hub.sync()
    (tmp_path / "data" / "people.csv").write_text("id;email;first;last\nF1;cara@example.org;Carla;Diaz\n", encoding="utf-8")
    hub.sync()
    [(rid, data, previous)] = ToolStream.writes
    assert (rid, data["first"], data["last"]) == (cara_id, "Carla", "Diaz")
    assert previous is not None and previous.get("last") is None and previous.get("first") == "Cara"
