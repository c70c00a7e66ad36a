"""The standard connector suite (synchub.testing) catches broken connectors.

The example connector of docs/connector-guide.md (examples/synchub_example_crm) passes every
check. Broken copies of it, each with one mistake a connector author makes (issue 21), pass the
checks the suite had before and fail the new ones:

(a) the checkpoint is saved at the page's last position *before* the page's records;
(b) the cursor is the update time alone and resuming drops everything ``<=`` it (no tie-breaker);
(c) writes go to the wrong method or path, or errors are swallowed and reported ok;
(d) ``check()`` is the default one, which sends no request and says ok.

And the round trip through the hub (a two-way connection syncing twice must write nothing back to
the CRM that delivered the records) fails when the engine's echo suppression is switched off:

(e) the example PUTs whole records, whatever ``previous`` says; with ``_split_echoes`` handing every
    record to the connector (and, in a second variant, ``previous`` left empty as well), the
    first sync writes back every person the CRM just delivered.

The checks are called here the way pytest calls them (a fresh harness per check), so the proof
is the suite's own assertions; the example's own test file is also run under pytest.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from synchub import engine
from synchub.connector import (
    Checkpoint,
    CheckResult,
    Connector,
    OutRecord,
    ReadItem,
    Record,
    Rejected,
    WriteResult,
    parse_time,
)
from synchub.engine import Hub
from synchub.http import json_object

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "synchub_example_crm"
for folder in (EXAMPLE, EXAMPLE / "tests"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import synchub_example_crm  # noqa: E402
from fake_crm import FakeCrm  # noqa: E402
from synchub_example_crm import CrmConnector, Persons  # noqa: E402


def _load_example_tests() -> Any:
    spec = importlib.util.spec_from_file_location("synchub_example_crm_test_standard", EXAMPLE / "tests" / "test_standard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example_tests = _load_example_tests()
CrmHarness = example_tests.CrmHarness
ExampleChecks = example_tests.TestExampleCrm  # not collected again here

#: The checks of the suite before issue 21: the broken copies passed all of them.
OLD_CHECKS = {
    "test_settings_refuse_unknown_keys", "test_records_have_primary_keys",
    "test_checkpoints_follow_their_records_and_resume_reads_nothing_old",
    "test_second_run_reads_only_new_records", "test_a_bad_record_is_rejected_alone",
    "test_429_is_retried", "test_5xx_is_retried", "test_401_is_an_auth_error",
}


def run_suite(connector_class: type[CrmConnector]) -> dict[str, str]:
    """Every check of the suite against ``connector_class``, each with a new fake and harness:
    check name -> "passed", "failed: <message>" or "skipped: <reason>"."""
    outcome: dict[str, str] = {}
    suite = ExampleChecks()
    for name in sorted(n for n in dir(suite) if n.startswith("test_")):
        harness = CrmHarness(FakeCrm())
        harness.connector_class = connector_class
        try:
            getattr(suite, name)(harness)
        except AssertionError as exc:
            outcome[name] = f"failed: {exc}"
        except pytest.skip.Exception as exc:
            outcome[name] = f"skipped: {exc}"
        else:
            outcome[name] = "passed"
    return outcome


def failed(outcome: dict[str, str]) -> set[str]:
    return {name for name, result in outcome.items() if not result == "passed"}


# --------------------------------------------------------------------------- broken copies


def readable(page: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in page["persons"] if parse_time(i["updated_at"])]


def rejected(page: dict[str, Any]) -> Iterator[Rejected]:
    for item in page["persons"]:
        if not parse_time(item["updated_at"]):
            yield Rejected(ref=f"person {item['id']}", reason="no valid updated_at")


class CheckpointBeforePage(Persons):
    """(a) Saves the page's last position before yielding the page."""

    def read(self, state: dict[str, Any] | None) -> Iterator[ReadItem]:
        state = state or {}
        done = (parse_time(state["updated_at"]), state["id"]) if state else None
        params: dict[str, Any] = {"limit": self.connector.settings.page_size}
        if state:
            params["updated_since"] = state["updated_at"]
        while True:
            page = json_object(self.connector.session.get("/persons", params=params), "Example CRM")
            yield from rejected(page)
            items = [i for i in readable(page) if done is None or (parse_time(i["updated_at"]), i["id"]) > done]
            if items:
                yield Checkpoint({"updated_at": items[-1]["updated_at"], "id": items[-1]["id"]})
            for item in items:
                yield Record(item, ref=f"person {item['id']}")
            if not page.get("next_cursor"):
                yield Checkpoint({"updated_at": items[-1]["updated_at"], "id": items[-1]["id"]} if items else dict(state))
                return
            params = {"cursor": page["next_cursor"]}


class NoTieBreak(Persons):
    """(b) The cursor is the update time alone; resuming drops every person at or before it."""

    def read(self, state: dict[str, Any] | None) -> Iterator[ReadItem]:
        state = state or {}
        since = parse_time(state.get("updated_at"))
        params: dict[str, Any] = {"limit": self.connector.settings.page_size}
        if since:
            params["updated_since"] = state["updated_at"]
        while True:
            page = json_object(self.connector.session.get("/persons", params=params), "Example CRM")
            yield from rejected(page)
            for item in readable(page):
                if since is not None and parse_time(item["updated_at"]) <= since:  # type: ignore[operator]
                    continue
                yield Record(item, ref=f"person {item['id']}")
                state = {"updated_at": item["updated_at"]}
            yield Checkpoint(dict(state))
            if not page.get("next_cursor"):
                return
            params = {"cursor": page["next_cursor"]}


class WrongMethod(Persons):
    """(c) Updates with POST /persons/{id} instead of PUT."""

    def write(self, records: Iterable[OutRecord], fields: list[str]) -> Iterator[WriteResult]:
        for rec in records:
            path = f"/persons/{rec.external_id}" if rec.external_id else "/persons"
            try:
                saved = json_object(self.connector.session.post(path, json=rec.data), "Example CRM")
            except Exception as exc:
                yield WriteResult(rec.golden_id, ok=False, error=str(exc))
                continue
            yield WriteResult(rec.golden_id, ok=True, external_id=str(saved["id"]))


class WrongPathSwallowed(Persons):
    """(c) PUTs to /person/{id} (singular) and reports every record ok whatever the answer."""

    def write(self, records: Iterable[OutRecord], fields: list[str]) -> Iterator[WriteResult]:
        for rec in records:
            try:
                self.connector.session.request("PUT", f"/person/{rec.external_id or 'new'}", json=rec.data)
            except Exception:
                pass
            yield WriteResult(rec.golden_id, ok=True, external_id=rec.external_id or "new")


def connector_with(stream: type[Persons]) -> type[CrmConnector]:
    class Broken(CrmConnector):
        def streams(self) -> dict[str, Any]:
            return {"persons": stream(self)}

    Broken.__name__ = f"CrmConnectorWith{stream.__name__}"
    return Broken


class DefaultCheck(CrmConnector):
    """(d) Keeps Connector.check: no request, always ok."""

    def check(self) -> CheckResult:
        return Connector.check(self)


# --------------------------------------------------------------------------- the proof


def test_the_example_connector_passes_every_check() -> None:
    outcome = run_suite(CrmConnector)
    assert failed(outcome) == set(), outcome
    assert len(outcome) == 17


def test_the_example_tests_pass_under_pytest() -> None:
    """The example package's own test file, as its author runs it (the one-line suite class)."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests"],
                          cwd=EXAMPLE, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout and "failed" not in done.stdout


BROKEN = {
    "a: checkpoint before its page": (connector_with(CheckpointBeforePage), {
        "test_resuming_from_every_checkpoint_loses_nothing",
        "test_records_sharing_a_cursor_value_are_all_read",
        "test_records_sharing_a_cursor_value_are_all_read_on_resume",
    }),
    "b: <= cursor without tie-breaker": (connector_with(NoTieBreak), {
        "test_resuming_from_every_checkpoint_loses_nothing",
        "test_records_sharing_a_cursor_value_are_all_read",
        "test_records_sharing_a_cursor_value_are_all_read_on_resume",
    }),
    "c: POST instead of PUT": (connector_with(WrongMethod), {
        "test_writes_land_with_one_result_per_record", "test_a_refused_record_fails_alone",
    }),
    "c: wrong path, errors swallowed": (connector_with(WrongPathSwallowed), {
        "test_writes_land_with_one_result_per_record", "test_a_refused_record_fails_alone",
    }),
    "d: default check()": (DefaultCheck, {
        "test_check_sends_a_request", "test_check_fails_with_a_rejected_credential",
    }),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_copy_fails_the_new_checks_only(case: str) -> None:
    connector_class, expected = BROKEN[case]
    outcome = run_suite(connector_class)
    assert failed(outcome) == expected, {k: v for k, v in outcome.items() if v != "passed" or k in expected}
    assert all(outcome[name].startswith("failed: ") for name in expected), outcome
    # The checks the suite had before issue 21 let every one of these through.
    assert not failed(outcome) & OLD_CHECKS


ROUND_TRIP = "test_a_round_trip_through_the_hub_writes_nothing_back"


def _no_echo_suppression(monkeypatch: pytest.MonkeyPatch, keep_previous: bool) -> None:
    """(e) The engine without echo suppression: every record goes to the connector's write; and,
    unless ``keep_previous``, ``previous`` (what the destination holds) stays empty too."""
    monkeypatch.setattr(engine, "_split_echoes", lambda todo, fields: (list(todo), []))
    if keep_previous:
        return
    view = Hub._destination_view

    def without_previous(self: Hub, connection: str, stream_name: str, mapping: Any,
                         todo: list[tuple[OutRecord, str]], pushed: dict[str, Any]) -> None:
        view(self, connection, stream_name, mapping, todo, pushed)  # external ids only
        for rec, _h in todo:
            rec.previous = None

    monkeypatch.setattr(engine, "_overlay", lambda written, delivered, *rest: {})
    monkeypatch.setattr(Hub, "_destination_view", without_previous)


@pytest.mark.parametrize("keep_previous", [True, False], ids=["no split", "no split, no previous"])
def test_without_echo_suppression_the_round_trip_check_fails(monkeypatch: pytest.MonkeyPatch,
                                                              keep_previous: bool) -> None:
    _no_echo_suppression(monkeypatch, keep_previous)
    outcome = run_suite(CrmConnector)
    assert failed(outcome) == {ROUND_TRIP}, {k: v for k, v in outcome.items() if v != "passed"}
    message = outcome[ROUND_TRIP]
    assert message.startswith("failed: first sync") and "got 3 write request(s)" in message, message


def test_the_round_trip_check_runs_the_hub() -> None:
    """The check passes because the hub recognised the records as the CRM's own, not because
    nothing reached the push: the fake saw the hub's reads and no write."""
    harness = CrmHarness(FakeCrm())
    ExampleChecks().test_a_round_trip_through_the_hub_writes_nothing_back(harness)
    reads = [r for r in harness.fake.requests if r.method == "GET" and r.url.path == "/v1/persons"]
    assert len(reads) >= 2 and harness.writes_seen() == 0
    assert len(harness.fake.persons) == 5


def test_the_suite_names_what_was_lost() -> None:
    message = run_suite(connector_with(NoTieBreak))["test_records_sharing_a_cursor_value_are_all_read"]
    assert "resuming from checkpoint" in message and "loses" in message


def test_the_example_registers_through_the_hook() -> None:
    assert synchub_example_crm.register_connectors() == [CrmConnector]
    text = (EXAMPLE / "pyproject.toml").read_text()
    assert '[project.entry-points.synchub]\nexample_crm = "synchub_example_crm"' in text


def test_the_guide_quotes_the_example_as_it_is() -> None:
    """Each code block of docs/connector-guide.md that names a file of the example (its first
    line, a comment) is a verbatim part of that file, so the guide cannot drift from the code
    this module tests."""
    root = EXAMPLE.parents[1]
    guide = (root / "docs" / "connector-guide.md").read_text(encoding="utf-8")
    quoted = 0
    for block in re.findall(r"```python\n(.*?)```", guide, flags=re.S):
        first, _, body = block.partition("\n")
        if not first.startswith("# examples/"):
            continue
        source = (root / first[2:].strip()).read_text(encoding="utf-8")
        assert body in source, f"the guide's block from {first[2:]} no longer matches the file:\n{body}"
        quoted += 1
    assert quoted >= 6
