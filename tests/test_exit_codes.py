"""Exit codes and JSON errors of every command (issue 16): cron, systemd and CI see a failure.

In-process tests call the real entry point ``synchub.cli.main`` (it ends in ``sys.exit``);
subprocess tests run ``synchub`` itself, at least one per exit code, so the code the shell sees
is proven too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from synchub import exitcodes, plugins
from synchub.cli import main
from synchub.exitcodes import (
    BUSY,
    CONFIG,
    FAILED,
    INTERRUPTED,
    NOT_FOUND,
    OK,
    PARTIAL,
    PAUSED,
    USAGE,
)
from synchub.locks import connection_lock
from synchub.store import Store
from tests.helpers import write_config, write_people_mapping
from tests.outcome_connector import MAIN, PRIVATE_NAME, OutcomePlugin

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "tok-5ecr3t-0123456789"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def error(self) -> dict[str, Any]:
        """The JSON error object on stdout."""
        return json.loads(self.out)["error"]


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # No forced colours or widths from the calling terminal: the output is piped.
    env = {k: v for k, v in os.environ.items()
           if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS", "LINES", "SYNCHUB_CONFIG")}
    env.update(extra or {})
    return env


def _synchub() -> list[str]:
    exe = shutil.which("synchub", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "synchub.cli"]


def proc(*args: str, plugin: bool = False, env: dict[str, str] | None = None, timeout: float = 120) -> Result:
    """``synchub ARGS`` in a subprocess (with the outcome connector registered if ``plugin``)."""
    cmd = [sys.executable, "-c", MAIN] if plugin else _synchub()
    p = subprocess.run([*cmd, *args], cwd=ROOT, env=_env(env), capture_output=True, text=True, timeout=timeout)
    return Result(p.returncode, p.stdout, p.stderr)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
    """``synchub ARGS`` in this process, through ``main()``: the exit code it exits with."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["synchub", *args])
        try:
            main()
            code = 0  # returning without sys.exit
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


@pytest.fixture
def demo(demo_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The demo config with a SQLite store of its own (SYNCHUB_STORE, seen by subprocesses too)."""
    monkeypatch.setenv("SYNCHUB_STORE", f"sqlite:///{tmp_path / 'demo.db'}")
    return str(demo_dir / "config" / "demo.yaml")


@pytest.fixture
def synced(demo: str, cli) -> str:
    assert cli("-c", demo, "sync").code == PARTIAL  # the demo's shop export has 3 unreadable rows
    return demo


@pytest.fixture
def outcomes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """``outcomes(a="ok", b={"outcome": "reject"})``: a config of outcome connections."""
    plugin = OutcomePlugin()
    plugins.register(plugin, name="outcome")
    write_people_mapping(tmp_path / "mappings")
    monkeypatch.setenv("CRM_TOKEN", TOKEN)

    def make(**connections: str | dict[str, Any]) -> str:
        body = "match:\n  person: {keys: [email], fuzzy: false}\nconnections:\n"
        for name, spec in connections.items():
            settings = {"outcome": spec} if isinstance(spec, str) else dict(spec)
            settings.setdefault("token", "${CRM_TOKEN}")
            body += (f"  {name}:\n    connector: outcome\n    settings: {json.dumps(settings)}\n"
                     "    streams:\n      people: {mapping: people}\n")
        return str(write_config(tmp_path, body, f"sqlite:///{tmp_path / 'outcomes.db'}"))

    yield make
    plugins.unregister(plugin)


# ----- the table ---------------------------------------------------------------------------------


def test_every_outcome_has_a_distinct_named_code() -> None:
    codes = [OK, FAILED, USAGE, CONFIG, NOT_FOUND, BUSY, PARTIAL, PAUSED, INTERRUPTED]
    assert len(set(codes)) == len(codes) and OK == 0 and USAGE == 2  # 2 is click's usage error
    assert set(exitcodes.NAMES) == set(codes) and len(set(exitcodes.NAMES.values())) == len(codes)
    assert set(exitcodes.SEVERITY) == set(codes) - {USAGE, CONFIG, NOT_FOUND}


@pytest.mark.parametrize(("runs", "expected"), [
    ([], OK),
    ([("succeeded", False), ("skipped", False)], OK),
    ([("succeeded", False), ("paused", False)], PAUSED),
    ([("paused", False), ("partial", False)], PARTIAL),
    ([("partial", False), ("skipped", True)], BUSY),
    ([("skipped", True), ("interrupted", False)], INTERRUPTED),
    ([("interrupted", False), ("failed", False), ("partial", False)], FAILED),
    ([("abandoned", False)], FAILED),
])
def test_the_worst_run_decides(runs: list[tuple[str, bool]], expected: int) -> None:
    assert exitcodes.worst(exitcodes.for_run(status, busy=busy) for status, busy in runs) == expected


# ----- sync --------------------------------------------------------------------------------------


def test_sync_of_the_demo_is_partial_then_ok(demo: str) -> None:
    first = proc("-c", demo, "sync")
    assert first.code == PARTIAL, first.err
    assert "shop/customers" in first.out and "rejected rows: synchub runs show" in first.out
    again = proc("-c", demo, "sync")  # nothing changed: nothing read, nothing rejected
    assert again.code == OK, again.err


@pytest.mark.parametrize(("connections", "expected"), [
    ({"a": "ok"}, OK),
    ({"a": "ok", "b": "reject"}, PARTIAL),
    ({"a": "paused", "b": "ok"}, PAUSED),
    ({"a": "reject", "b": "paused"}, PARTIAL),
    ({"a": "paused", "b": "interrupted", "c": "reject"}, INTERRUPTED),
    ({"a": "interrupted", "b": "failed", "c": "ok"}, FAILED),
])
def test_sync_exits_with_the_worst_outcome_of_its_runs(outcomes, cli, connections: dict[str, str], expected: int) -> None:
    cfg = outcomes(**connections)
    result = cli("-c", cfg, "--json", "sync")
    assert result.code == expected, result.out + result.err
    data = result.json()
    assert {r["connection"] for r in data["runs"]} == set(connections)  # the normal result is all there
    if expected == OK:
        assert "error" not in data
    else:
        assert data["error"]["code"] == exitcodes.NAMES[expected] and data["error"]["exit_code"] == expected


def test_a_failed_sync_exits_1_and_masks_the_token(outcomes) -> None:
    cfg = outcomes(crm="failed")
    text = proc("-c", cfg, "sync", plugin=True)
    assert text.code == FAILED
    assert "crm failed" in text.err and "AuthError" in text.err
    as_json = proc("-c", cfg, "sync", "--json", plugin=True)
    assert as_json.code == FAILED
    error = as_json.error()
    assert error["code"] == "failed" and error["exit_code"] == FAILED and "crm" in error["message"]
    for output in (text.out, text.err, as_json.out, as_json.err):
        assert TOKEN not in output
    assert "***" in text.err and "***" in as_json.out


def test_a_paused_sync_exits_7(outcomes) -> None:
    result = proc("-c", outcomes(crm="paused"), "sync", plugin=True)
    assert result.code == PAUSED, result.err
    assert "crm paused until" in result.err


def test_an_unexpected_error_exits_1_without_record_contents(outcomes, cli) -> None:
    cfg = outcomes(crm="crash")
    text = cli("-c", cfg, "sync")
    assert text.code == FAILED
    assert "ValueError" in text.err and "Traceback" not in text.err + text.out
    as_json = cli("-c", cfg, "sync", "--json")
    assert as_json.code == FAILED and as_json.error()["code"] == "failed"
    for output in (text.out, text.err, as_json.out, as_json.err):
        assert PRIVATE_NAME not in output and "Zwirbelgruber" not in output


def test_ctrl_c_during_a_sync_exits_130(outcomes, tmp_path: Path) -> None:
    marker = tmp_path / "reading"
    cfg = outcomes(crm={"outcome": "hang", "marker": str(marker)})
    p = subprocess.Popen([sys.executable, "-c", MAIN, "-c", cfg, "sync"], cwd=ROOT, env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline, "the sync never started reading"
            time.sleep(0.05)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == INTERRUPTED, out + err
    assert "Traceback" not in err


def test_sync_of_a_connection_that_is_not_configured_is_a_config_error(demo: str, cli) -> None:
    result = cli("-c", demo, "sync", "nope")
    assert result.code == CONFIG
    assert "no connection named 'nope'" in result.err


def test_busy_connection(demo: str, store_url: str, monkeypatch: pytest.MonkeyPatch, cli) -> None:
    """Another run holds shop's lock: asked for by name it is busy (5); a sync of everything
    skips it and says busy too, even though the other runs landed (partial)."""
    monkeypatch.setenv("SYNCHUB_STORE", store_url)
    store = Store(store_url)
    store.upgrade()
    try:
        with connection_lock(store, "shop") as got:
            assert got
            named = proc("-c", demo, "sync", "shop")  # another process: the lock of this one holds
            assert named.code == BUSY, named.out + named.err
            assert "already running" in named.err
            as_json = proc("-c", demo, "--json", "sync", "shop")
            assert as_json.code == BUSY
            assert as_json.error() == {"code": "busy", "exit_code": BUSY, "problems": [],
                                       "message": "connection 'shop' is already running (in this or another worker)"}
            everything = cli("-c", demo, "sync")
            assert everything.code == BUSY, everything.out + everything.err
            assert "shop skipped: busy" in everything.err
            assert "newsletter/audience" in everything.out  # the others ran
    finally:
        store.dispose()


# ----- validate / check --------------------------------------------------------------------------


def test_validate(demo: str, cli) -> None:
    assert cli("-c", demo, "validate").code == OK
    bad = Path(demo).with_name("bad.yaml")
    bad.write_text(Path(demo).read_text(encoding="utf-8").replace("schedule: {interval: 15m}", "shedule: {interval: 15m}"),
                   encoding="utf-8")
    text = proc("-c", str(bad), "validate")
    assert text.code == CONFIG, text.err
    assert "connections.shop.shedule" in text.err and str(bad) in text.err
    for args in (["--json", "validate"], ["validate", "--json"]):
        result = cli("-c", str(bad), *args)
        assert result.code == CONFIG
        error = result.error()
        assert error["code"] == "config" and error["exit_code"] == CONFIG
        (problem,) = [p for p in error["problems"] if p["field"] == "connections.shop.shedule"]
        assert problem["file"] == str(bad) and isinstance(problem["line"], int) and problem["line"] > 1
        assert problem["message"]


def test_a_missing_config_is_a_config_error(tmp_path: Path, cli) -> None:
    result = cli("-c", str(tmp_path / "nowhere.yaml"), "--json", "runs")
    assert result.code == CONFIG
    assert result.error()["problems"][0]["message"] == "config file not found"


def test_check(demo: str, outcomes, cli) -> None:
    assert cli("-c", demo, "check", "shop").code == OK
    assert cli("-c", demo, "check", "nope").code == CONFIG
    cfg = outcomes(crm={"outcome": "ok", "check_ok": False})
    failed = proc("-c", cfg, "check", "crm", plugin=True)
    assert failed.code == FAILED and "check failed" in failed.out
    as_json = cli("-c", cfg, "check", "crm", "--json")
    assert as_json.code == FAILED
    data = as_json.json()
    assert data["ok"] is False and data["error"]["code"] == "failed"


# ----- runs, customers, conflicts ----------------------------------------------------------------


def test_runs(synced: str, cli) -> None:
    assert cli("-c", synced, "runs").code == OK
    runs = cli("-c", synced, "runs", "--json").json()
    assert cli("-c", synced, "runs", "show", str(runs[0]["id"])).code == OK
    missing = proc("-c", synced, "runs", "show", "999")
    assert missing.code == NOT_FOUND and "no run 999" in missing.err and missing.out == ""
    for args in (["--json", "runs", "show", "999"], ["runs", "show", "999", "--json"], ["runs", "--json", "show", "999"]):
        result = cli("-c", synced, *args)
        assert result.code == NOT_FOUND
        assert result.error() == {"code": "not_found", "exit_code": NOT_FOUND, "message": "no run 999", "problems": []}
    usage = proc("-c", synced, "runs", "show", "abc")
    assert usage.code == USAGE and "run_id" in usage.err
    usage_json = proc("-c", synced, "runs", "show", "abc", "--json")
    assert usage_json.code == USAGE
    assert usage_json.error()["code"] == "usage" and "run_id" in usage_json.error()["message"]


def test_customers(synced: str, cli) -> None:
    found = cli("-c", synced, "--json", "customers", "search", "kofler")
    assert found.code == OK
    gid = found.json()[0]["id"]
    assert cli("-c", synced, "customers", "search", "nobody-by-that-name").code == OK  # no match is no error
    assert cli("-c", synced, "customers", "show", gid).code == OK
    missing = proc("-c", synced, "customers", "show", "nope")
    assert missing.code == NOT_FOUND and "no customer 'nope'" in missing.err
    assert cli("-c", synced, "customers", "show", "nope", "--json").error()["code"] == "not_found"
    assert cli("-c", synced, "customers", "split", "nope").code == NOT_FOUND
    refused = cli("-c", synced, "customers", "split", gid, "--json")  # it has no merge to undo
    assert refused.code == FAILED and "no merge to undo" in refused.error()["message"]
    sources = cli("-c", synced, "--json", "customers", "show", gid).json()["sources"]
    fair = next(s for s in sources if s["connection"] == "fair")
    split = cli("-c", synced, "customers", "split", gid, "--source", f"fair/{fair['stream']}/{fair['source_id']}")
    assert split.code == OK, split.err


def test_conflicts(synced: str, cli) -> None:
    listing = cli("-c", synced, "--json", "conflicts")
    assert listing.code == OK
    cid = str(listing.json()[0]["id"])
    assert cli("-c", synced, "conflicts", "show", cid).code == OK
    missing = proc("-c", synced, "conflicts", "show", "999")
    assert missing.code == NOT_FOUND and "no conflict 999" in missing.err
    assert cli("-c", synced, "conflicts", "resolve", "999", "--dismiss").code == NOT_FOUND
    nothing_chosen = cli("-c", synced, "conflicts", "resolve", cid)
    assert nothing_chosen.code == USAGE and "give exactly one of" in nothing_chosen.err
    assert cli("-c", synced, "conflicts", "resolve", cid, "--dismiss").code == OK
    again = cli("-c", synced, "conflicts", "resolve", cid, "--dismiss", "--json")
    assert again.code == FAILED and again.error()["message"] == f"conflict {cid} is already dismissed"


# ----- dedupe, plugins, serve, usage -------------------------------------------------------------


def test_dedupe(synced: str, cli) -> None:
    assert cli("-c", synced, "dedupe", "--dry-run").code == OK
    assert cli("-c", synced, "dedupe").code == OK
    bad = cli("-c", synced, "dedupe", "--kind", "nope")
    assert bad.code == USAGE and "Traceback" not in bad.err


def test_plugins(cli, monkeypatch: pytest.MonkeyPatch) -> None:
    assert proc("plugins").code == OK
    monkeypatch.setitem(plugins.failed_plugins, "broken", "ImportError: no module named 'broken_dep'")
    result = cli("plugins")
    assert result.code == FAILED and "plugin broken failed to load" in result.err
    as_json = cli("plugins", "--json")
    assert as_json.code == FAILED and as_json.json()["failed"] == {"broken": "ImportError: no module named 'broken_dep'"}
    assert as_json.json()["error"]["code"] == "failed"


def test_serve_stops_with_0_on_sigterm(demo: str) -> None:
    p = subprocess.Popen([*_synchub(), "-c", demo, "serve", "--metrics-port", "0"], cwd=ROOT, env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stderr is not None
        seen = []
        for line in p.stderr:
            seen.append(line)
            if line.startswith("serving "):
                break
        else:
            pytest.fail("serve ended early: " + "".join(seen))
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == OK


def test_serve_failures(demo: str, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = proc("-c", demo, "serve", "--metrics-port", str(port), timeout=60)
    assert result.code == FAILED and "choose another serve.metrics_port" in result.err
    assert proc("-c", str(tmp_path / "missing.yaml"), "serve").code == CONFIG


def test_usage_errors(cli) -> None:
    text = proc("bogus")
    assert text.code == USAGE and "No such command 'bogus'" in text.err
    as_json = cli("--json", "bogus")
    assert as_json.code == USAGE and as_json.error()["code"] == "usage"


# ----- --json on either side, every command ------------------------------------------------------


def _stable(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _stable(v) for k, v in data.items() if k != "seconds"}
    return data


def test_json_before_or_after_the_command_name(synced: str, cli) -> None:
    run_id = str(cli("-c", synced, "--json", "runs").json()[0]["id"])
    gid = cli("-c", synced, "--json", "customers", "search", "kofler").json()[0]["id"]
    cid = str(cli("-c", synced, "--json", "conflicts").json()[0]["id"])
    reads = [["validate"], ["check", "shop"], ["runs"], ["runs", "--limit", "2"], ["runs", "show", run_id],
             ["customers", "search", "kofler"], ["customers", "show", gid], ["conflicts"], ["conflicts", "show", cid],
             ["dedupe", "--dry-run"], ["plugins"], ["sync", "--dry-run"]]
    for args in reads:
        before = cli("-c", synced, "--json", *args)
        after = cli("-c", synced, *args, "--json")
        assert (before.code, after.code) == (OK, OK), (args, after.out, after.err)
        assert _stable(after.json()) == _stable(before.json()), args
    # commands that change the store: the flag after the name gives JSON too
    assert "runs" in cli("-c", synced, "sync", "--json").json()
    assert cli("-c", synced, "conflicts", "resolve", cid, "--dismiss", "--json").json()["action"] == "dismiss"
    assert cli("-c", synced, "dedupe", "--json").json()["dry_run"] is False


# ----- piped output is not wrapped ---------------------------------------------------------------


def test_piped_errors_and_tables_are_not_wrapped(outcomes, cli) -> None:
    long_name = "Maximiliane" * 25  # 275 characters
    cfg = outcomes(crm={"outcome": "ok", "first": long_name})
    assert cli("-c", cfg, "sync").code == OK
    table = proc("-c", cfg, "customers", "search", "example")
    assert table.code == OK
    assert any(long_name in line for line in table.out.splitlines()), table.out
    long_id = "x" * 150
    missing = proc("-c", cfg, "customers", "show", long_id)
    assert missing.code == NOT_FOUND
    assert f"no customer '{long_id}'" in missing.err.splitlines()[-1]


# ----- the store cannot be reached ---------------------------------------------------------------


def test_an_unreachable_store_exits_1_with_a_message(demo: str, monkeypatch: pytest.MonkeyPatch, cli) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("SYNCHUB_STORE", f"postgresql+psycopg://synchub:{TOKEN}@127.0.0.1:{port}/none?connect_timeout=5")
    text = cli("-c", demo, "runs")
    assert text.code == FAILED
    assert "Traceback" not in text.err and "OperationalError" in text.err and TOKEN not in text.err
    as_json = cli("-c", demo, "runs", "--json")
    assert as_json.code == FAILED and as_json.error()["code"] == "failed" and TOKEN not in as_json.out
