"""The ``synchub`` command line (typer + rich). Every listing command takes ``--json``."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
import re
import sys
import traceback
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from synchub import exitcodes
from synchub.errors import ConfigError, NotFoundError, SynchubError
from synchub.redact import install_log_redaction, redact

log = logging.getLogger(__name__)

# Locals in a traceback can hold record contents and secrets: never shown.
app = typer.Typer(help="synchub: keep customer data in sync across CRM, email, shop and files.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)
runs_app = typer.Typer(help="Recent sync runs.", invoke_without_command=True)
customers_app = typer.Typer(help="Golden customer records.", no_args_is_help=True)
conflicts_app = typer.Typer(help="Conflicts the merge rules could not decide, for review.", invoke_without_command=True)
app.add_typer(runs_app, name="runs")
app.add_typer(customers_app, name="customers")
app.add_typer(conflicts_app, name="conflicts")
users_app = typer.Typer(help="Accounts of the web console and the REST API.", no_args_is_help=True)
app.add_typer(users_app, name="users")

#: Width of a console whose output is piped: no line is ever broken (tables as wide as their cells).
_UNWRAPPED = 1_000_000


def _console(stderr: bool = False) -> Console:
    """A console for stdout or stderr. On a terminal it fits the terminal; piped or redirected,
    rich would break lines at 80 columns, so lines stay whole there (messages and table rows)."""
    console = Console(stderr=stderr)
    if console.is_terminal:
        return console
    return Console(stderr=stderr, width=_UNWRAPPED, soft_wrap=True)


out = _console()
err = _console(stderr=True)


class State:
    config_path: Optional[Path] = None  # noqa: UP045
    json: bool = False
    #: The command has told about its non-zero outcome itself (a sync's failed runs).
    reported: bool = False


state = State()


@app.callback()
def main_options(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Config file or folder (default: config/synchub.yaml).", envvar="SYNCHUB_CONFIG"),  # noqa: UP045
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output (-vv for debug)."),
) -> None:
    state.config_path = config
    state.json = json_out
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    install_log_redaction()


def _hub():  # type: ignore[no-untyped-def]
    from synchub.config import load_config
    from synchub.engine import Hub, tune_gc

    config = load_config(state.config_path)
    hub = Hub(config)
    hub.store.upgrade()
    tune_gc()  # the commands that run syncs or dedupes; after the heavy imports, which it freezes
    return hub


def _store():  # type: ignore[no-untyped-def]
    from synchub.config import load_config
    from synchub.store import Store

    config = load_config(state.config_path, check_plugins=False)
    store = Store(config.store_url())
    store.upgrade()
    return store


def _emit_json(obj: Any) -> None:
    out.print_json(json.dumps(obj, default=str, ensure_ascii=False))


def _ts(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    return "" if value is None else str(value)


# ----- outcomes and errors ----------------------------------------------------------------------

#: Where a database error's text goes on to the statement, its bound values or a server's
#: DETAIL line (``Key (email)=(...)``): record contents, never printed.
_DB_DETAILS = re.compile(r"\s*(?:\[SQL: |\[parameters: |\(Background on this error at: |DETAIL: )")


def _clean(text: object) -> str:
    """An error text fit to print: secrets masked, database statements and values cut off."""
    return _DB_DETAILS.split(redact(text), maxsplit=1)[0].rstrip()


def _error(code: int, message: str, problems: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The JSON error object: ``{"code", "exit_code", "message", "problems"}``."""
    return {"code": exitcodes.name(code), "exit_code": code, "message": message, "problems": problems or []}


def _exit(code: int) -> NoReturn:
    """End a command that has printed its result (and, if it failed, why) with ``code``."""
    state.reported = True
    raise typer.Exit(code)


# ----- validate / sync --------------------------------------------------------------------------


@app.command()
def validate(strict: bool = typer.Option(False, "--strict", help="Fail on warnings too.")) -> None:
    """Check the config and every mapping it uses; list every problem (errors and warnings) with
    file, line and field, all in one run."""
    from synchub.config import check_config

    config, problems = check_config(state.config_path)
    warnings = [p for p in problems if p.severity == "warning"]
    if config is None or len(warnings) < len(problems) or (strict and warnings):
        raise ConfigError(problems or "the config could not be read")
    if state.json:
        _emit_json({"ok": True, "files": config.source_files, "connections": sorted(config.connections),
                    "warnings": [dataclasses.asdict(p) | {"message": redact(p.message)} for p in warnings]})
        return
    for p in warnings:
        err.print(f"  {redact(p)}", markup=False, highlight=False)
    out.print(f"[green]config is valid[/]: {', '.join(config.source_files)}; connections: {', '.join(sorted(config.connections))}")


@app.command()
def sync(
    connections: list[str] = typer.Argument(None, help="Connections to run (default: all)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what a push would create, update, untag or archive, "
                                 "and what consent rules would hold back; write nothing, read nothing into the store."),
    bulk: bool | None = typer.Option(None, "--bulk/--no-bulk", help="Load in bulk (match in memory, commit in large "
                                     "units) or batch by batch; default: defaults.bulk_load in the config."),
    confirm_deletions: bool = typer.Option(False, "--confirm-deletions", help="Let full listings and file snapshots "
                                           "delete more than max_delete_share of a stream (after checking the source)."),
    offline: bool = typer.Option(False, "--offline", help="With --dry-run: plan from the store alone, without asking "
                                 "any destination (what the hub last wrote or the destination last delivered)."),
) -> None:
    """Pull from inbound connections, match and merge, then push to outbound connections."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    hub = _hub()
    if bulk is not None:
        hub.bulk = bulk
    if confirm_deletions and not connections:
        raise typer.BadParameter("name the connection(s) whose deletions you checked: "
                                 "synchub sync <connection> --confirm-deletions", param_hint="'--confirm-deletions'")
    hub.confirm_deletions = confirm_deletions
    if dry_run:
        _dry_run(hub, connections, offline=offline)
        return
    progress_cm = Progress(SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed} records"),
                           TimeElapsedColumn(), console=err, transient=True, disable=state.json or not err.is_terminal)
    tasks: dict[tuple[str, str], Any] = {}
    with progress_cm as progress:
        def report(connection: str, stream: str, n: int) -> None:
            key = (connection, stream)
            if key not in tasks:
                tasks[key] = progress.add_task(f"{connection}/{stream}", total=None)
            progress.update(tasks[key], completed=n)

        summaries = hub.sync(connections or None, progress=report)
    counts = hub.store.counts()
    code = exitcodes.worst(exitcodes.for_run(s.status, busy=_busy(s)) for s in summaries)
    if state.json:
        result: dict[str, Any] = {"runs": [s.as_dict() for s in summaries], "store": hub.store.display_url, "totals": counts}
        if code:
            result["error"] = _error(code, "; ".join(_run_outcome(s) for s in summaries
                                                    if exitcodes.for_run(s.status, busy=_busy(s))))
        _emit_json(result)
    else:
        _print_summary(summaries, hub.store.display_url, counts)
    if code:
        _exit(code)


def _busy(summary: Any) -> bool:
    """A run skipped because another job or worker held the connection."""
    from synchub.engine import BUSY

    return bool(summary.status == "skipped" and summary.error == BUSY)


def _run_outcome(s: Any) -> str:
    """What became of a run that did not simply succeed, in a few words."""
    if _busy(s):
        return f"{s.connection} {s.direction} skipped: {s.error}"
    if s.status == "partial":
        rejected = sum(c.rejected + c.write_rejected for c in s.streams.values())
        return f"{s.connection} {s.direction} partial: {rejected} record(s) rejected (synchub runs show {s.run_id})"
    return f"{s.connection} {s.direction} {s.status}: {_clean(s.error or '')}".rstrip(": ")


def _dry_run(hub: Any, connections: list[str] | None, *, offline: bool = False) -> None:
    from synchub.errors import FatalRunError, RetryableError

    names = connections or [n for n, c in hub.config.connections.items() if c.outbound]
    report: dict[str, Any] = {}
    notes: list[str] = []
    for name in names:
        try:
            plans = hub.plan(name, offline=offline)
        except (RetryableError, FatalRunError, OSError) as exc:
            # The destination cannot be asked (no network, a refused token): what the store says.
            notes.append(f"{name}: could not ask the destination ({_clean(exc)}); planned from the store alone")
            plans = hub.plan(name, offline=True)
        who = hub.store.contacts_of({p.golden_id for items in plans.values() for p in items})
        report[name] = {s: [{"golden_id": p.golden_id, "name": who.get(p.golden_id, ("", None))[0],
                             "email": who.get(p.golden_id, ("", None))[1], "action": p.action,
                             "external_id": p.external_id, "changes": {k: list(v) for k, v in p.changes.items()},
                             "reason": p.reason}
                            for p in items] for s, items in plans.items()}
    sizes = {(n, s): members for n, s, _e, _f, members in hub.segment_sizes(report)}
    if state.json:
        _emit_json({"dry_run": True, "offline": offline, "plans": report, "notes": notes,
                    "segments": {n: {s: sizes.get((n, s)) for s in streams} for n, streams in report.items()}})
        return
    for name, streams in report.items():
        for sname, items in streams.items():
            counts: dict[str, int] = {}
            for it in items:
                counts[it["action"]] = counts.get(it["action"], 0) + 1
            summary = ", ".join(f"{n} {a}" for a, n in sorted(counts.items())) or "nothing to do"
            size = f"segment of {sizes[(name, sname)]} customer(s); " if (name, sname) in sizes else ""
            table = Table(title=f"dry run {name}/{sname}: {size}{summary}")
            for col in ("e-mail", "name", "action", "changes (field: before -> after)", "why"):
                table.add_column(col)
            for it in items:
                if it["action"] == "unchanged":
                    continue
                changes = "; ".join(f"{k}: {_fmt(b)} -> {_fmt(a)}" for k, (b, a) in it["changes"].items())
                table.add_row(it["email"] or "", it["name"] or it["golden_id"][:12], it["action"], changes, it["reason"] or "")
            out.print(table)
    for note in notes:
        err.print(f"[yellow]{escape(note)}[/]", highlight=False)
    err.print("dry run: nothing was written; inbound connections were not read (the plan uses the store as it is"
              + (", no destination was asked)" if offline else ")"))


def _print_summary(summaries: list[Any], store_url: str, counts: dict[str, int]) -> None:
    table = Table(title="sync summary")
    for col in ("run", "source", "status", "read", "created", "updated", "unchanged", "duplicates merged", "rejected",
                "quarantined", "conflicts", "written", "held back", "left", "gone"):
        table.add_column(col, justify="right" if col not in ("source", "status") else "left")
    for s in summaries:
        for stream, c in s.streams.items():
            table.add_row(str(s.run_id), f"{s.connection}/{stream}", s.status, str(c.read), str(c.created), str(c.updated),
                          str(c.unchanged), str(c.duplicates), str(c.rejected + c.write_rejected), str(c.quarantined),
                          str(c.conflicts), str(c.written), str(c.skipped), str(c.left), str(c.deleted))
        if not s.streams:
            table.add_row(str(s.run_id), s.connection, s.status, *[""] * 12)
    out.print(table)
    for s in summaries:
        if s.status == "paused":
            err.print(f"[yellow]{s.connection} paused until {s.resume_at}:[/] {escape(_clean(s.error or ''))} "
                      "(what was read is kept; the next run after that time goes on from the saved cursor)", highlight=False)
        elif _busy(s):
            err.print(f"[yellow]{s.connection} skipped:[/] {escape(s.error)}", highlight=False)
        elif s.error:
            err.print(f"[red]{s.connection} {s.status}:[/] {escape(_clean(s.error))}", highlight=False)
    out.print(f"store: {store_url}")
    out.print(f"golden records: {counts['golden_active']} from {counts['source_records']} source records; "
              f"open conflicts: {counts['open_conflicts']}; rejected records (all runs): {counts['rejected']}")
    for s in summaries:
        for stream, target in s.targets.items():
            out.print(f"export {s.connection}/{stream}: {target}")
    if any(c.rejected for s in summaries for c in s.streams.values()):
        out.print("rejected rows: synchub runs show <run> lists them with file, line, field and reason")
    if any(c.quarantined or c.unverified for s in summaries for c in s.streams.values()):
        out.print("quarantined values (records landed without them): synchub quality lists them with field, raw value and reason")


@app.command()
def check(connection: str) -> None:
    """Verify a connection's credentials and paths; print what it can read and write."""
    hub = _hub()
    result = hub.check(connection)  # the connector's own check, plus mapped columns the source lacks
    if state.json:
        checked: dict[str, Any] = {"ok": result.ok, "lines": result.lines}
        if not result.ok:
            checked["error"] = _error(exitcodes.FAILED, f"check of {connection} failed")
        _emit_json(checked)
    else:
        for line in result.lines:
            out.print(line)
        out.print("[green]ok[/]" if result.ok else "[red]check failed[/]")
    if not result.ok:
        _exit(exitcodes.FAILED)


# ----- runs -------------------------------------------------------------------------------------


@runs_app.callback()
def runs_list(ctx: typer.Context, limit: int = typer.Option(20, help="How many runs."), connection: Optional[str] = typer.Option(None)) -> None:  # noqa: UP045
    """List recent runs (``synchub runs show ID`` for one)."""
    if ctx.invoked_subcommand:
        return
    store = _store()
    runs = store.recent_runs(limit, connection)
    if state.json:
        _emit_json(runs)
        return
    table = Table(title="recent runs")
    for col in ("id", "connection", "dir", "trigger", "status", "started", "seconds", "read", "changed", "rejected",
                "retries", "worker", "error"):
        table.add_column(col)
    for r in runs:
        streams = (r["counts"] or {}).get("streams", {})
        read = sum(c.get("read", 0) for c in streams.values())
        changed = sum(c.get("created", 0) + c.get("updated", 0) + c.get("duplicates", 0) + c.get("written", 0) for c in streams.values())
        rejected = sum(c.get("rejected", 0) + c.get("write_rejected", 0) for c in streams.values())
        secs = (r["finished_at"] - r["started_at"]).total_seconds() if r["finished_at"] else None
        table.add_row(str(r["id"]), r["connection"], r["direction"], r["trigger"], r["status"], _ts(r["started_at"]),
                      f"{secs:.1f}" if secs is not None else "", str(read), str(changed), str(rejected),
                      str(r["retries"]), r["worker"], (r["error"] or "")[:60])
    out.print(table)


@runs_app.command("show")
def runs_show(run_id: int) -> None:
    """One run with its counts per stream and its rejected records."""
    store = _store()
    run = store.get_run(run_id)
    if run is None:
        raise NotFoundError(f"no run {run_id}")
    rejected = store.rejected_for_run(run_id)
    quarantined = store.quarantined_for_run(run_id)
    if state.json:
        _emit_json({**run, "rejected": rejected, "quarantined": quarantined})
        return
    out.print(f"run {run['id']} {run['connection']} {run['direction']} \\[{run['status']}] "
              f"{_ts(run['started_at'])} -> {_ts(run['finished_at'])} (trigger {run['trigger']}, worker {run['worker']})")
    if run["api_calls"] or run["retries"] or run["throttled"]:
        out.print(f"API: {run['api_calls']} request(s), {run['retries']} retried, {run['throttled']} throttled")
    if run["error"]:
        out.print(f"error: {run['error']}")
    for stream, c in (run["counts"] or {}).get("streams", {}).items():
        out.print(f"  {stream}: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    if rejected:
        table = Table(title=f"rejected records ({len(rejected)})")
        for col in ("where", "source id", "field", "reason"):
            table.add_column(col)
        for r in rejected:
            table.add_row(r["ref"], r["source_id"] or "", r["field"] or "", r["reason"])
        out.print(table)
    if quarantined:
        out.print(_quarantine_table(f"quarantined values ({len(quarantined)}): the records landed without them", quarantined))


# ----- customers --------------------------------------------------------------------------------


@customers_app.command("search")
def customers_search(text: str, limit: int = typer.Option(20)) -> None:
    """Find golden records by name, e-mail, phone (any format), source id, company or city."""
    from synchub.config import load_config

    store = _store()
    region = load_config(state.config_path, check_plugins=False).defaults.phone_region
    rows = store.search_golden(text, limit, phone_region=region)
    if state.json:
        _emit_json([{"id": r["id"], "kind": r["kind"], "name": r["display_name"], "data": r["data"]} for r in rows])
        return
    table = Table(title=f"customers matching {text!r}")
    for col in ("id", "name", "email", "phone", "city"):
        table.add_column(col)
    for r in rows:
        d = r["data"]
        table.add_row(r["id"], r["display_name"], (d.get("emails") or [""])[0], (d.get("phones") or [""])[0], (d.get("address") or {}).get("city", ""))
    out.print(table)
    if not rows:
        out.print("no match")


@customers_app.command("show")
def customers_show(golden_id: str, why: bool = typer.Option(False, "--why", help="Show why each value won and what lost.")) -> None:
    """One golden record: every field with its value, source and when it was observed."""
    store = _store()
    rec = store.get_golden(golden_id)
    if rec is None:
        raise NotFoundError(f"no customer {golden_id!r}")
    sources = store.source_records_of(rec["id"])
    timeline = store.timeline_of(rec["id"])
    evidence = [a for a in store.audit_of(rec["id"], limit=500) if a["action"] in ("match", "merge")]
    if state.json:
        _emit_json({**rec, "sources": [{k: s[k] for k in ("connection", "stream", "source_id", "observed_at", "deleted", "quarantine")}
                                       for s in sources],
                    "timeline": [{k: t[k] for k in ("kind", "occurred_at", "connection", "stream", "source_id", "data")} for t in timeline],
                    "match_evidence": [{k: a[k] for k in ("at", "actor", "action", "details")} for a in evidence]})
        return
    from synchub.schema import field_units

    out.print(f"[bold]{rec['display_name']}[/] ({rec['kind']}, {rec['id']}, {rec['status']}, version {rec['version']})")
    table = Table()
    for col in ("field", "value", "source", "observed"):
        table.add_column(col)
    if why:
        table.add_column("why")
    from synchub.merge import provenance_of

    prov = rec["provenance"] or {}
    for unit, value in field_units(rec["data"]).items():
        p = provenance_of(prov, unit)
        row = [unit, _fmt(value), f"{p.get('connection', '')}/{p.get('stream', '')} #{p.get('source_id', '')}", (p.get("observed_at") or "")[:19]]
        if why:
            reason = p.get("rule", "")
            losing = p.get("losing") or []
            if losing:
                reason += "; lost: " + "; ".join(f"{_fmt(lv['value'])} ({lv['connection']} {lv['observed_at'][:10]})" for lv in losing)
            if p.get("sources"):
                reason += "; from: " + ", ".join(f"{s['connection']}#{s['source_id']}" for s in p["sources"])
            row.append(reason)
        table.add_row(*row)
    out.print(table)
    refs = ", ".join(f"{s['connection']}/{s['stream']}#{s['source_id']}" for s in sources)
    out.print(f"source records: {refs}")
    if why and evidence:
        out.print("why these records are one customer:")
        for a in reversed(evidence):
            out.print(f"  {_ts(a['at'])[:19]} {_describe_event(a)}", markup=False, highlight=False)
    for s in sources:
        for q in (s.get("quarantine") or []) if not s["deleted"] else []:
            label = "unverified" if q.get("status") == "unverified" else "not usable"
            out.print(f"{label}: {q['field']} {q.get('raw')!r} from {s['connection']}/{s['stream']}#{s['source_id']}"
                      f"{' (' + q['source'] + ')' if q.get('source') else ''}: {q['reason']}", markup=False, highlight=False)
    if timeline:
        out.print("timeline:")
        for t in timeline:
            summary = (t["data"].get("summary") or "").replace("\n", " ")
            out.print(f"  {_ts(t['occurred_at'])[:10]} {t['kind']} ({t['connection']}) {summary[:100]}", markup=False)


def _describe_event(a: dict[str, Any]) -> str:
    """One audit entry in a line: what happened, on what evidence, by whom."""
    d = a["details"] or {}
    by = f" (by {a['actor']})"
    if a["action"] == "match":
        return f"{d.get('source')} joined: {_evidence_text(d)}{by}"
    if a["action"] == "merge":
        why = d.get("evidence") or {}
        items = d.get("review_items") or {}
        text = f"merged {d.get('merged')} into it: {d.get('reason')}"
        if why:
            text += f"; {_evidence_text(why)}" + (f", decided on {why['record']}" if why.get("record") else "")
        if items.get("closed") or items.get("repointed"):
            text += f"; review items closed {[i[0] for i in items.get('closed', [])]}, re-pointed {[i[0] for i in items.get('repointed', [])]}"
        return text + by
    if a["action"] == "split":
        what = f"restored {d['restored']}" if d.get("restored") else f"split out {d.get('new')}"
        return f"split: {what} with source records {d.get('source_records')}{by}"
    if a["action"] == "resolve":
        return f"conflict {d.get('conflict')} resolved: {_fmt({k: v for k, v in d.items() if k != 'conflict'})}{by}"
    return f"{a['action']}: {_fmt(d)}{by}"


def _evidence_text(d: dict[str, Any]) -> str:
    parts = [d.get("rule") or "match"]
    if d.get("identity_keys"):
        parts.append("same " + ", ".join(d["identity_keys"]))
    if d.get("score") is not None:
        t = d.get("thresholds") or {}
        parts.append(f"score {d['score']}" + (f" (merge at >= {t['upper']}, review at >= {t['lower']})" if t else ""))
    if d.get("reasons"):
        parts.append("; ".join(d["reasons"]))
    if d.get("run"):
        parts.append(f"run {d['run']}")
    return ", ".join(parts)


@customers_app.command("history")
def customers_history(golden_id: str, limit: int = typer.Option(200, help="At most this many entries.")) -> None:
    """Everything that happened to a customer: created, matched, merged, split, decided, with the
    evidence and who did it, oldest first (also of the records merged into it)."""
    store = _store()
    rec = store.get_golden(golden_id)
    if rec is None:
        raise NotFoundError(f"no customer {golden_id!r}")
    events = [(rec["id"], a) for a in store.audit_of(rec["id"], limit=limit)]
    for merged in {(a["details"] or {}).get("merged") for _g, a in events if a["action"] == "merge"} - {None}:
        events += [(merged, a) for a in store.audit_of(merged, limit=limit)]
    events.sort(key=lambda e: e[1]["id"])
    if state.json:
        _emit_json([{"golden_id": g, **{k: a[k] for k in ("id", "at", "actor", "action", "details")}} for g, a in events])
        return
    table = Table(title=f"history of {rec['display_name']} ({rec['id']})")
    for col in ("at", "record", "action", "what", "by"):
        table.add_column(col)
    for g, a in events:
        what = _describe_event(a).removesuffix(f" (by {a['actor']})")
        table.add_row(_ts(a["at"])[:19], g[:12], a["action"], what, a["actor"])
    out.print(table)


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


# ----- conflicts --------------------------------------------------------------------------------


@conflicts_app.callback()
def conflicts_list(
    ctx: typer.Context,
    status: str = typer.Option("open", help="open, resolved, dismissed, closed (by the hub: no longer applies) or all"),
    connection: Optional[str] = typer.Option(None),  # noqa: UP045
    field: Optional[str] = typer.Option(None),  # noqa: UP045
    older_than_days: Optional[int] = typer.Option(None, help="Only conflicts older than this many days."),  # noqa: UP045
    kind: Optional[str] = typer.Option(None, help="field, possible_duplicate or needs_reoptin (people a destination "  # noqa: UP045
                                       "refuses to subscribe: the list for a re-opt-in campaign)"),
) -> None:
    """List conflicts for review."""
    if ctx.invoked_subcommand:
        return
    store = _store()
    older = datetime.now(timezone.utc) - timedelta(days=older_than_days) if older_than_days is not None else None
    rows = store.list_conflicts(None if status == "all" else status, connection=connection, field=field, older_than=older, kind=kind)
    who = store.contacts_of(r["golden_id"] for r in rows)
    for r in rows:  # whom to ask (a re-opt-in campaign needs the address)
        r["name"], r["email"] = who.get(r["golden_id"], ("", None))
    if state.json:
        _emit_json(rows)
        return
    table = Table(title="conflicts")
    for col in ("id", "customer", "e-mail", "field", "candidates", "applied", "status", "since"):
        table.add_column(col)
    for r in rows:
        if r["kind"] == "possible_duplicate":
            cands = f"{r['golden_id'][:12]} ~ {r['other_golden_id'][:12]}: score {r['candidates'][0].get('score')}"
        else:
            cands = "; ".join(f"{_fmt(c['value'])} ({c['connection']})" for c in r["candidates"])
        table.add_row(str(r["id"]), f"{r['name'] or ''} {r['golden_id'][:12]}".strip(), r["email"] or "",
                      r["field"] or "possible duplicate", cands,
                      _fmt((r["applied"] or {}).get("value")), r["status"], _ts(r["created_at"]))
    out.print(table)


@conflicts_app.command("show")
def conflicts_show(conflict_id: int) -> None:
    """One conflict, candidates side by side."""
    store = _store()
    rows = [c for c in store.list_conflicts(None, limit=1, id=conflict_id)]
    if not rows:
        raise NotFoundError(f"no conflict {conflict_id}")
    c = rows[0]
    if state.json:
        _emit_json(c)
        return
    out.print(f"conflict {c['id']} [{c['status']}] {c['kind']} on customer {c['golden_id']}"
              + (f" and {c['other_golden_id']}" if c["other_golden_id"] else "") + f", field {c['field'] or '-'}, rule {c['rule']}")
    table = Table()
    table.add_column("#")
    if c["kind"] == "possible_duplicate":
        for col in ("score", "reasons"):
            table.add_column(col)
        for i, cand in enumerate(c["candidates"], 1):
            table.add_row(str(i), str(cand.get("score")), "; ".join(cand.get("reasons", [])))
        for gid in (c["golden_id"], c["other_golden_id"]):
            g = store.get_golden(gid)
            if g:
                out.print(f"  {gid}: {g['display_name']} | {_fmt(g['data'].get('emails', []))} | {_fmt(g['data'].get('address', {}))} | {g['data'].get('birth_date', '')}")
    else:
        for col in ("value", "source", "observed"):
            table.add_column(col)
        for i, cand in enumerate(c["candidates"], 1):
            if c["kind"] == "field":
                source, seen = f"{cand['connection']}/{cand['stream']} #{cand['source_id']}", cand["observed_at"][:19]
            else:  # needs_reoptin and other notes a write left: who holds what, and a note
                source, seen = str(cand.get("connection", "")), str(cand.get("note", ""))
            table.add_row(str(i), _fmt(cand.get("value")), source, seen)
    out.print(table)
    out.print(f"applied meanwhile: {_fmt((c['applied'] or {}).get('value'))}")
    if c["status"] != "open":
        out.print(f"{c['status']} by {c['resolved_by']} at {_ts(c['resolved_at'])}: {_fmt(c['resolution'])}")


@conflicts_app.command("resolve")
def conflicts_resolve(
    conflict_id: int,
    pick: Optional[int] = typer.Option(None, help="Take candidate N (from conflicts show)."),  # noqa: UP045
    value: Optional[str] = typer.Option(None, help="Set this value (JSON or text)."),  # noqa: UP045
    merge: bool = typer.Option(False, "--merge", help="Possible duplicate: merge the two customers."),
    keep_apart: bool = typer.Option(False, "--keep-apart", help="Possible duplicate: they are different customers."),
    dismiss: bool = typer.Option(False, "--dismiss", help="Close without changing anything."),
    by: str = typer.Option(None, "--by", help="Who decides (default: $USER).", envvar="USER"),
) -> None:
    """Resolve a conflict; the decision goes to the audit log and is remembered."""
    from synchub.review import resolve_conflict

    if sum([pick is not None, value is not None, merge, keep_apart, dismiss]) != 1:
        raise typer.BadParameter("give exactly one of --pick, --value, --merge, --keep-apart, --dismiss")
    hub = _hub()
    if not hub.store.list_conflicts(None, limit=1, id=conflict_id):
        raise NotFoundError(f"no conflict {conflict_id}")
    result = resolve_conflict(hub, conflict_id, pick=pick, value=value, merge=merge, keep_apart=keep_apart,
                              dismiss=dismiss, by=f"user:{by or 'unknown'}")
    if state.json:
        _emit_json(result)
    else:
        out.print(f"conflict {conflict_id}: {_fmt(result)}")


@customers_app.command("export")
def customers_export(
    golden_id: str,
    fmt: str = typer.Option("json", "--format", help="json or html"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),  # noqa: UP045
) -> None:
    """Everything the hub holds about one person (access and portability request), with sources."""
    from synchub.privacy import access_export, to_html, to_json

    if fmt not in ("json", "html"):
        raise typer.BadParameter(f"{fmt!r} is not one of 'json', 'html'", param_hint="'--format'")
    export = access_export(_store(), golden_id)
    text = to_json(export) if fmt == "json" else to_html(export)
    if output is None:
        sys.stdout.write(text + "\n")
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"{export['name']} ({export['customer']}): {len(export['source_records'])} source records "
                  f"from {', '.join(export['sources']) or 'no source'} -> {output}", highlight=False)


@customers_app.command("erase")
def customers_erase(
    who: str = typer.Argument(..., help="Customer id (or prefix, or a merged-away id) or e-mail address."),
    yes: bool = typer.Option(False, "--yes", help="Do it; without it, only show what would be erased where."),
    fan_out: bool = typer.Option(True, "--fan-out/--hub-only", help="Also ask every connection holding them to erase "
                                 "them (default); --hub-only leaves the receipts for the connections' next runs."),
    by: str = typer.Option(None, "--by", help="Who asks (default: $USER).", envvar="USER"),
) -> None:
    """Erase a person (right to erasure): from the hub, from every tool that holds them, and for good
    (their e-mails and source ids go on the suppression list, so no source re-creates them)."""
    from synchub.privacy import erase, find_person, plan_erasure

    hub = _hub()
    if not yes:
        plan = plan_erasure(hub, find_person(hub, who))
        if state.json:
            _emit_json({"dry_run": True, "customer": plan.golden_id, "name": plan.name, "records": len(plan.sources),
                        "receipts": [{k: r[k] for k in ("connection", "stream", "status", "detail")} for r in plan.receipts]})
            return
        out.print(f"Would erase [bold]{escape(plan.name or plan.golden_id)}[/] ({plan.golden_id}): "
                  f"{len(plan.golden_ids)} customer record(s), {len(plan.sources)} source record(s).", highlight=False)
        for r in plan.receipts:
            what = {"pending": "asked to erase" if r["targets"] else "rewritten", "manual": "manual",
                    "failed": "cannot be reached now (asked again on its next run)"}[r["status"]]
            out.print(f"  {r['connection']}/{r['stream']}: {what}" + (f" - {escape(r['detail'])}" if r["detail"] else ""),
                      highlight=False)
        out.print("Nothing was changed. Run again with --yes to erase.")
        return
    plan = erase(hub, who, actor=f"user:{by or 'cli'}", fan=fan_out)
    rows = _receipt_rows(hub, plan.erasure_id)
    if state.json:
        _emit_json({"erasure": plan.erasure_id, "customer": plan.golden_id, "records": len(plan.sources),
                    "deleted": plan.deleted, "receipts": rows})
    else:
        out.print(f"Erased {len(plan.golden_ids)} customer record(s) and {len(plan.sources)} source record(s) "
                  f"(erasure {plan.erasure_id}).", highlight=False)
        _print_receipts(rows)
    if any(r["status"] == "failed" for r in rows):
        _exit(exitcodes.FAILED)


def _receipt_rows(hub: Any, erasure_id: int | None) -> list[dict[str, Any]]:
    from synchub.privacy import erasures

    found = erasures(hub, erasure_id=erasure_id)
    return [{k: r[k] for k in ("id", "connection", "stream", "status", "detail", "attempts", "updated_at", "to_remove")}
            for r in (found[0]["receipts"] if found else [])]


def _print_receipts(rows: list[dict[str, Any]]) -> None:
    colour = {"confirmed": "green", "requested": "green", "failed": "red", "manual": "yellow", "pending": "yellow"}
    for r in rows:
        out.print(f"  receipt {r['id']} {r['connection']}/{r['stream']}: [{colour.get(r['status'], 'white')}]{r['status']}[/]"
                  + (f" - {escape(r['detail'])}" if r["detail"] else "")
                  + (f": {escape(', '.join(r['to_remove']))} (then: synchub erasures done {r['id']})" if r.get("to_remove") else ""),
                  highlight=False)


erasures_app = typer.Typer(help="Erasures and their receipts per connection.", invoke_without_command=True)
app.add_typer(erasures_app, name="erasures")


@erasures_app.callback()
def erasures_list(ctx: typer.Context, limit: int = typer.Option(50, help="How many erasures.")) -> None:
    """Erasures, newest first, with each connection's receipt."""
    if ctx.invoked_subcommand is not None:
        return
    from synchub.privacy import erasures

    rows = erasures(_hub(), limit)
    if state.json:
        _emit_json({"erasures": rows})
        return
    if not rows:
        out.print("no erasures")
    for e in rows:
        out.print(f"erasure {e['id']} at {_ts(e['requested_at'])} by {escape(e['requested_by'])} ({escape(e['reason'])})",
                  highlight=False)
        _print_receipts(e["receipts"])


@erasures_app.command("done")
def erasures_done(receipt_id: int, by: str = typer.Option(None, "--by", envvar="USER")) -> None:
    """Confirm that a manual receipt's records were removed at the source (the hub then forgets their ids)."""
    from synchub.privacy import mark_done

    mark_done(_hub(), receipt_id, actor=f"user:{by or 'cli'}")
    if state.json:
        _emit_json({"receipt": receipt_id, "status": "confirmed"})
    else:
        out.print(f"receipt {receipt_id} confirmed")


@erasures_app.command("lift")
def erasures_lift(email: str, by: str = typer.Option(None, "--by", envvar="USER")) -> None:
    """An erased person signed up again: take their e-mail address off the suppression list so a
    new record with it may land (what the sources held before stays out)."""
    from synchub.privacy import lift

    if not lift(_hub(), email, actor=f"user:{by or 'cli'}"):
        raise NotFoundError("that address is not on the suppression list")
    if state.json:
        _emit_json({"lifted": True})
    else:
        out.print("taken off the suppression list")


@erasures_app.command("retry")
def erasures_retry(connection: Optional[str] = typer.Option(None, help="Only this connection.")) -> None:  # noqa: UP045
    """Ask the connections again about every erasure they have not confirmed (each run does too)."""
    from synchub.privacy import fan_out

    done = fan_out(_hub(), connection=connection)
    if state.json:
        _emit_json({"receipts": done})
    else:
        out.print(", ".join(f"{n} {k}" for k, n in sorted(done.items())) or "nothing to retry")
    if done.get("failed"):
        _exit(exitcodes.FAILED)


retention_app = typer.Typer(help="Retention rules (privacy.retention in the config).", no_args_is_help=True)
app.add_typer(retention_app, name="retention")


@retention_app.command("run")
def retention_run(
    rule: list[str] = typer.Argument(None, help="Rules to run (default: all)."),
    apply: bool = typer.Option(False, "--apply", help="Erase/anonymise; without it only list whom each rule reaches."),
    sample: int = typer.Option(20, help="How many customers to list per rule."),
    by: str = typer.Option(None, "--by", envvar="USER"),
) -> None:
    """Who the retention rules reach (a dry run, audited), or with --apply, carry them out."""
    from synchub.privacy import retention

    hub = _hub()
    names = rule or [r.name for r in hub.config.privacy.retention]
    if not names:
        raise ConfigError("no retention rules configured (privacy.retention)")
    results = [retention(hub, n, apply=apply, actor=f"user:{by or 'cli'}") for n in names]
    if state.json:
        _emit_json({"rules": [{**r, "found": [c.__dict__ for c in r["found"]]} for r in results]})
    else:
        for r in results:
            verb = {"erase": "erased", "anonymise": "anonymised"}.get(r["action"], "done")
            head = f"{r['rule']}: {len(r['found'])} customer(s)"
            out.print(head + (f", {len(r['done'])} {verb}, {len(r['failed'])} failed" if apply else
                              f" would be {verb} (dry run; --apply to do it)"), highlight=False)
            for c in r["found"][:sample]:
                out.print(f"  {c.golden_id}  {escape(c.name)}  last activity {_ts(c.last_activity) or 'never'}", highlight=False)
    if any(r["failed"] for r in results):
        _exit(exitcodes.FAILED)


quality_app = typer.Typer(help="Values not usable or unverified; `quality report`: the data-quality review.",
                          invoke_without_command=True)
app.add_typer(quality_app, name="quality")


@quality_app.command("report")
def quality_report(
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder for the report (default: quality.out)."),  # noqa: UP045
    stale_days: Optional[int] = typer.Option(None, help="Days without a source confirming a customer before it counts as stale."),  # noqa: UP045
    period: Optional[str] = typer.Option(None, help="week or month: the buckets of the figures over time."),  # noqa: UP045
) -> None:
    """Write the data-quality report: an HTML page with plots, and its JSON and CSV twins."""
    from synchub.config import load_config
    from synchub.quality import build_report, segments_from_config, write_report
    from synchub.store import Store

    config = load_config(state.config_path)
    store = Store(config.store_url())
    store.upgrade()
    q = config.quality
    if period not in (None, "week", "month"):
        raise typer.BadParameter(f"{period!r} is not one of 'week', 'month'", param_hint="'--period'")
    report = build_report(store, stale_days=stale_days or q.stale_days, period=period or q.period,
                          segments=segments_from_config(config))
    paths = write_report(report, out_dir or config.resolve(q.out))
    if state.json:
        _emit_json({"files": [str(p) for p in paths], "summary": report.get("summary")})
    else:
        for p in paths:
            out.print(str(p), highlight=False)


@customers_app.command("split")
def customers_split(
    golden_id: str,
    source: list[str] = typer.Option(None, "--source", help="Move this source record (connection/stream/id) out; repeatable."),
    merged: Optional[str] = typer.Option(None, "--merged", help="Undo the merge of this customer id (default: the latest merge)."),  # noqa: UP045
    by: str = typer.Option(None, "--by", envvar="USER"),
) -> None:
    """Undo a merge (default: the latest one into this customer), or split source records out."""
    from synchub.review import split_sources, undo_merge

    hub = _hub()
    rec = hub.store.get_golden(golden_id)
    if rec is None:
        raise NotFoundError(f"no customer {golden_id!r}")
    actor = f"user:{by or 'unknown'}"
    new_id = split_sources(hub, rec["id"], source, by=actor) if source else undo_merge(hub, rec["id"], merged_id=merged, by=actor)
    if state.json:
        _emit_json({"customer": rec["id"], "split_off": new_id})
    else:
        out.print(f"{rec['id']} split; {new_id} is a customer of its own again (kept apart from now on)")


@app.command()
def dedupe(
    kind: str = typer.Option("person", help="person or company"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show what would merge."),
    rebuild_keys: bool = typer.Option(False, "--rebuild-keys", help="Also recompute every record's blocking keys (after turning fuzzy matching on)."),
) -> None:
    """Re-cluster all golden records with the current match rules."""
    from synchub.review import dedupe as run_dedupe
    from synchub.review import rebuild_match_keys

    if kind not in ("person", "company"):
        raise typer.BadParameter(f"{kind!r} is not one of 'person', 'company'", param_hint="'--kind'")
    hub = _hub()
    if rebuild_keys and not dry_run:
        n = rebuild_match_keys(hub, kind)
        if not state.json:
            out.print(f"blocking keys rebuilt for {n} records")
    report = run_dedupe(hub, kind, dry_run=dry_run)
    if state.json:
        _emit_json({"dry_run": dry_run, "compared": report.compared, "seconds": round(report.seconds, 3),
                    "review_items": {"logged": report.logged, "closed": report.closed, "repointed": report.repointed},
                    "merges": [{"merge": a, "into": b, "score": s, "reasons": r} for a, b, s, r in report.merges],
                    "possible": [{"a": a, "b": b, "score": s, "reasons": r} for a, b, s, r in report.possible]})
        return
    verb = "would merge" if dry_run else "merged"
    for loser, survivor, score, reasons in report.merges:
        a, b = hub.store.get_golden(loser, follow_merges=False), hub.store.get_golden(survivor, follow_merges=False)
        out.print(f"{verb}: {a['display_name'] if a else loser} ({loser[:12]}) into {b['display_name'] if b else survivor} ({survivor[:12]}), score {score:.3f}: {'; '.join(reasons)}", markup=False)
    if dry_run:
        out.print(f"{len(report.merges)} {verb}, {len(report.possible)} possible duplicates to review; "
                  f"{report.compared} pairs compared in {report.seconds:.2f}s")
        return
    out.print(f"{len(report.merges)} {verb}, {len(report.possible)} possible duplicates found: {report.logged} new review "
              f"items, the rest already under review, kept apart or merged; the merges closed {report.closed} and "
              f"re-pointed {report.repointed} review items of the merged records; "
              f"{report.compared} pairs compared in {report.seconds:.2f}s")


# ----- serve / plugins --------------------------------------------------------------------------


@app.command()
def serve(
    metrics_port: Optional[int] = typer.Option(  # noqa: UP045
        None, help="Port of /healthz and /metrics (default: serve.metrics_port in the config; 0 = off)."),
) -> None:
    """Run every connection on its schedule until SIGINT/SIGTERM (a second signal exits at once).

    Several workers may serve one PostgreSQL store: each connection runs on one of them at a time."""
    from synchub.scheduler import serve as run_serve

    hub = _hub()
    run_serve(hub, console=err, metrics_port=metrics_port)


@app.command()
def web(
    host: Optional[str] = typer.Option(None, help="Listen here (default: web.host in the config, 127.0.0.1)."),  # noqa: UP045
    port: Optional[int] = typer.Option(None, help="Port (default: web.port in the config, 8470)."),  # noqa: UP045
) -> None:
    """Serve the admin console's REST API (OpenAPI at /api/v1/openapi.json) until Ctrl-C."""
    import uvicorn

    from synchub.web.api import create_app

    hub = _hub()
    cfg = hub.config.web
    err.print(f"synchub web on http://{host or cfg.host}:{port or cfg.port}/api/v1/ (store {hub.store.display_url})")
    uvicorn.run(create_app(hub), host=host or cfg.host, port=port or cfg.port, log_level="warning",
                proxy_headers=True, server_header=False)


def _quarantine_table(title: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=title)
    for col in ("where", "source id", "field", "source field", "raw value", "status", "reason"):
        table.add_column(col)
    for q in rows:
        where = q.get("ref") or f"{q.get('connection', '')}/{q.get('stream', '')}"
        table.add_row(where, q.get("source_id") or "", q["field"], q.get("source") or "", str(q.get("raw") or ""),
                      q.get("status", "quarantined"), q["reason"])
    return table


@quality_app.callback()
def quality(
    ctx: typer.Context,
    connection: Optional[str] = typer.Option(None, help="Only this connection."),  # noqa: UP045
    stream: Optional[str] = typer.Option(None, help="Only this stream."),  # noqa: UP045
    field: Optional[str] = typer.Option(None, help="Only this canonical field, e.g. phones."),  # noqa: UP045
    status: Optional[str] = typer.Option(None, help="quarantined or unverified (default: both)."),  # noqa: UP045
    limit: int = typer.Option(1000, help="How many values to list (the summary counts all)."),
) -> None:
    """Values the store holds but cannot use (quarantined) or uses unverified, per source record,
    with field, raw value and reason: what data care should fix at the source. ``quality report``:
    the whole data-quality and freshness review."""
    if ctx.invoked_subcommand is not None:
        return
    store = _store()
    if status not in (None, "quarantined", "unverified"):
        raise typer.BadParameter("--status must be quarantined or unverified")
    values = store.quarantined_values(connection=connection, stream=stream, field=field, status=status, limit=None)
    summary: dict[tuple[str, str, str, str, str], int] = {}
    for q in values:
        k = (q["connection"], q["stream"], q["field"], q.get("status", "quarantined"), q.get("rule") or "")
        summary[k] = summary.get(k, 0) + 1
    counted = [{"connection": k[0], "stream": k[1], "field": k[2], "status": k[3], "rule": k[4], "count": n}
               for k, n in sorted(summary.items(), key=lambda kv: (-kv[1], kv[0]))]
    if state.json:
        _emit_json({"total": len(values), "summary": counted, "values": values[:limit]})
        return
    if not values:
        out.print("no quarantined or unverified values")
        return
    table = Table(title=f"values not usable or unverified: {len(values)}")
    for col in ("connection/stream", "field", "status", "rule", "count"):
        table.add_column(col, justify="right" if col == "count" else "left")
    for c in counted:
        table.add_row(f"{c['connection']}/{c['stream']}", c["field"], c["status"], c["rule"], str(c["count"]))
    out.print(table)
    out.print(_quarantine_table(f"values ({min(limit, len(values))} of {len(values)})", values[:limit]))


@app.command()
def plugins(
    name: Optional[str] = typer.Argument(None, help="Show only this plugin or connector."),  # noqa: UP045
) -> None:
    """List installed plugins: package and version, connectors (streams, settings schemas),
    transforms, merge rules and shipped mappings; and plugins that were skipped, with why."""
    from synchub.plugins import (
        describe_plugins,
        failed_plugins,
        get_connectors,
        get_merge_rules,
        get_transforms,
        schema_fields,
    )

    # The skipped plugins are listed below: no warning lines from loading them as well.
    plugin_log = logging.getLogger("synchub.plugins")
    level = plugin_log.level
    plugin_log.setLevel(logging.ERROR)
    try:
        report = describe_plugins()
    finally:
        plugin_log.setLevel(level)
    shown = [p for p in report["plugins"]
             if name is None or name == p["name"] or any(c["name"] == name for c in p["connectors"])]
    problems = report["problems"]
    if name is not None:
        problems = [p for p in problems if p["plugin"] == name]
        if not shown and not problems:
            raise NotFoundError(f"no plugin or connector named {name!r} (synchub plugins lists them)")
    if state.json:
        info: dict[str, Any] = {
            "connectors": sorted(get_connectors()), "transforms": sorted(get_transforms()),
            "merge_rules": sorted(get_merge_rules()), "plugins": shown,
            "failed": failed_plugins if name is None else {p["plugin"]: p["message"] for p in problems},
            "problems": problems,
        }
        if problems:
            info["error"] = _error(exitcodes.FAILED, "plugin(s) failed to load: " + ", ".join(p["plugin"] for p in problems))
        _emit_json(info)
    else:
        if name is None:
            out.print("connectors: " + ", ".join(sorted(get_connectors())), highlight=False)
            out.print("transforms: " + ", ".join(sorted(get_transforms())), highlight=False)
            out.print("merge rules: " + ", ".join(sorted(get_merge_rules())), highlight=False)
        for p in shown:
            origin = ", ".join(x for x in (
                f"{p['distribution']} {p['version'] or ''}".strip() if p["distribution"] else "no distribution",
                f"entry point {p['name']} = {p['entry_point']}" if p["entry_point"] else p["kind"],
            ) if x)
            out.print()
            out.print(f"[bold]plugin {escape(p['name'])}[/] ({escape(origin)})", highlight=False)
            for c in p["connectors"]:
                out.print(f"  [bold]connector {escape(c['name'])}[/]: {escape(c['description'] or c['class'])}", highlight=False)
                streams = ", ".join(c["streams"]) if c["streams"] is not None else c["streams_note"]
                out.print(f"    streams: {escape(streams)}", highlight=False)
                for title, key in (("connection settings", "settings_schema"), ("stream settings", "stream_settings_schema")):
                    schema = c[key]
                    if "error" in schema:
                        out.print(f"    {title}: no JSON schema ({escape(schema['error'])})", highlight=False)
                        continue
                    rows = schema_fields(schema)
                    if not rows:
                        out.print(f"    {title}: none", highlight=False)
                        continue
                    table = Table(title=f"{c['name']}: {title}", title_justify="left", padding=(0, 1))
                    for col in ("setting", "type", "default", "description"):
                        table.add_column(col)
                    for r in rows:
                        default = "required" if r["required"] else json.dumps(r["default"], default=str, ensure_ascii=False)
                        table.add_row(r["name"], r["type"], default, r["description"])
                    out.print(table)
            for label, key in (("transforms", "transforms"), ("merge rules", "merge_rules")):
                if p[key]:
                    out.print(f"  {label}: {escape(', '.join(p[key]))}", highlight=False)
            for m in p["mappings"]:
                out.print(f"  mappings in {escape(m['path'])}: {escape(', '.join(m['mappings']) or '(none)')}", highlight=False)
        for problem in problems:
            where = f" ({problem['origin']})" if problem["origin"] else ""
            err.print(f"[yellow]plugin {escape(problem['plugin'])} failed to load:[/] {escape(_clean(problem['message']))}"
                      f"{escape(where)}", highlight=False)
    if problems:
        _exit(exitcodes.FAILED)


@app.command("new-connector")
def new_connector(
    name: str = typer.Argument(..., help="The connector's name, e.g. acme_crm (lower case, digits, _ or -)."),
    directory: Path = typer.Option(Path("."), "--dir", help="Create the package folder in this folder."),
) -> None:
    """Write a ready-to-install connector package for a paged HTTP API: pyproject.toml with the
    synchub entry point, the connector, a fake API and tests that run the standard suite."""
    from synchub.scaffold import new_connector as scaffold

    created = scaffold(name, directory)
    if state.json:
        _emit_json({"package": str(created.root), "distribution": created.distribution, "module": created.module,
                    "connector": created.connector, "files": [str(f) for f in created.files]})
        return
    out.print(f"[green]created[/] {escape(str(created.root))} (connector {escape(created.connector)}, "
              f"package {escape(created.distribution)})", highlight=False)
    for f in created.files:
        out.print(f"  {escape(str(f.relative_to(created.root)))}", highlight=False)
    out.print(f"next: pip install -e {escape(str(created.root))} && pytest {escape(str(created.root))}", highlight=False)


# ----- users ----------------------------------------------------------------------------------


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


@users_app.command("add")
def users_add(
    name: str,
    role: str = typer.Option(..., "--role", help="admin, steward, marketing or viewer."),
    language: Optional[str] = typer.Option(None, "--language", help="de or en (default: the browser's)."),  # noqa: UP045
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from the first line of stdin."),
) -> None:
    """Create an account (the password is asked for twice, or read from stdin)."""
    from synchub import accounts

    user = accounts.add_user(_store(), name, role, _read_password(password_stdin), language=language, by="cli")
    if state.json:
        _emit_json({"name": user.name, "role": user.role, "language": user.language})
    else:
        out.print(f"user {escape(user.name)} added ({user.role})")


@users_app.command("list")
def users_list() -> None:
    """List the accounts with their roles."""
    from synchub import accounts

    users = accounts.list_users(_store())
    if state.json:
        _emit_json({"users": users})
        return
    table = Table("name", "role", "language", "status", "created")
    for u in users:
        table.add_row(escape(u["name"]), u["role"], u["language"] or "", "disabled" if u["disabled"] else "active", _ts(u["created_at"]))
    out.print(table)


def _change_user(name: str, **changes: Any) -> None:
    from synchub import accounts

    user = accounts.change_user(_store(), name, by="cli", **changes)
    if state.json:
        _emit_json({"name": user.name, "role": user.role, "language": user.language, "disabled": user.disabled})
    else:
        out.print(f"user {escape(user.name)}: {user.role}, {'disabled' if user.disabled else 'active'}")


@users_app.command("disable")
def users_disable(name: str) -> None:
    """Disable an account: it can no longer log in; its sessions end and its API tokens are revoked."""
    _change_user(name, disabled=True)


@users_app.command("enable")
def users_enable(name: str) -> None:
    """Enable a disabled account again (its old API tokens stay revoked)."""
    _change_user(name, disabled=False)


@users_app.command("set")
def users_set(
    name: str,
    role: Optional[str] = typer.Option(None, "--role"),  # noqa: UP045
    language: Optional[str] = typer.Option(None, "--language"),  # noqa: UP045
    password: bool = typer.Option(False, "--password", help="Set a new password (asked for twice)."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the new password from stdin."),
) -> None:
    """Change an account's role, language or password."""
    new = _read_password(password_stdin) if (password or password_stdin) else None
    _change_user(name, role=role, language=language, password=new)


@users_app.command("token")
def users_token(name: str, label: str = typer.Option("script", "--label", help="What the token is for.")) -> None:
    """Create an API token for scripts (shown once; send it as 'Authorization: Bearer <token>')."""
    from synchub import accounts

    token = accounts.add_token(_store(), name, label, by="cli")
    if state.json:
        _emit_json({"name": name, "label": label, "token": token})
    else:
        out.print(token, highlight=False)
        err.print("[yellow]Shown once:[/] store it in your script's secret store.")


# ----- --json after the command name -----------------------------------------------------------


def _takes_json(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` with a ``--json`` option of its own, so the flag may follow the command name
    (``synchub runs show 3 --json``) as well as precede it (``synchub --json runs show 3``)."""
    signature = inspect.signature(command, eval_str=True)

    @functools.wraps(command)
    def with_json(*args: Any, json_after: bool = False, **kwargs: Any) -> Any:
        if json_after:
            state.json = True
        return command(*args, **kwargs)

    flag = inspect.Parameter("json_after", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                             default=typer.Option(False, "--json", help="Machine-readable output (as --json before the command)."))
    with_json.__signature__ = signature.replace(parameters=[*signature.parameters.values(), flag])  # type: ignore[attr-defined]
    return with_json


def _json_everywhere(typer_app: typer.Typer) -> None:
    """Give every command and command group below ``typer_app`` the ``--json`` option: one place,
    so a command added later takes it too."""
    for info in typer_app.registered_commands:
        info.callback = _takes_json(info.callback)  # type: ignore[arg-type]
    for group in typer_app.registered_groups:
        sub = group.typer_instance
        if sub is None:
            continue
        if sub.registered_callback is not None and sub.registered_callback.callback is not None:
            sub.registered_callback.callback = _takes_json(sub.registered_callback.callback)
        _json_everywhere(sub)


_json_everywhere(app)


# ----- entry point ------------------------------------------------------------------------------


def main() -> None:
    """Entry point: run the app and exit with the outcome's code (:mod:`synchub.exitcodes`). An
    error is a message on stderr; with ``--json``, an error object on stdout."""
    sys.exit(_run(sys.argv[1:]))


def _run(argv: list[str]) -> int:
    state.json = state.reported = False
    try:
        code = app(args=argv, prog_name="synchub", standalone_mode=False)
    except KeyboardInterrupt:
        code = exitcodes.INTERRUPTED
    except Exception as exc:
        return _report(exc, json_out=state.json or _json_asked(argv))
    code = code if isinstance(code, int) else exitcodes.OK
    if code == exitcodes.INTERRUPTED and not state.reported:  # Ctrl-C: typer turned it into an exit
        _show(exitcodes.INTERRUPTED, "interrupted", json_out=state.json or _json_asked(argv))
    return code


def _json_asked(argv: list[str]) -> bool:
    """``--json`` on the command line, for errors found before the option was parsed."""
    return "--json" in (argv[:argv.index("--")] if "--" in argv else argv)


def _report(exc: Exception, *, json_out: bool) -> int:
    """Tell about ``exc`` and return its exit code."""
    if hasattr(exc, "show") and hasattr(exc, "exit_code") and hasattr(exc, "format_message"):
        # click's own: usage errors (unknown command or option, bad argument) and the like
        if json_out:
            _emit_json({"error": _error(exc.exit_code, redact(exc.format_message()))})
        else:
            exc.show()
        return int(exc.exit_code)
    if isinstance(exc, ConfigError):
        problems = [{k: redact(v) if isinstance(v, str) else v for k, v in dataclasses.asdict(p).items()} for p in exc.problems]
        if json_out:
            _emit_json({"error": _error(exitcodes.CONFIG, redact(exc), problems)})
        else:
            err.print("[red]config problems:[/]")
            for p in exc.problems:
                err.print(f"  {redact(p)}", markup=False, highlight=False)
        return exitcodes.CONFIG
    if isinstance(exc, typer.Abort):
        code, message = exitcodes.INTERRUPTED, "aborted"
    else:
        code, message = _classify(exc)
    _show(code, message, json_out=json_out)
    return code


def _classify(exc: Exception) -> tuple[int, str]:
    """The exit code of an error and a message that holds no secret and no record contents."""
    engine = sys.modules.get("synchub.engine")
    if engine is not None and isinstance(exc, engine.AlreadyRunning):
        return exitcodes.BUSY, _clean(exc)
    if isinstance(exc, NotFoundError):
        return exitcodes.NOT_FOUND, _clean(exc)
    if isinstance(exc, SynchubError):  # written to be read (store errors, refused reviews, ...)
        return exitcodes.FAILED, _clean(exc)
    name = type(exc).__name__
    sa_exc = sys.modules.get("sqlalchemy.exc")
    if isinstance(exc, OSError) or (sa_exc is not None and isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError))):
        # The store or a file cannot be reached: the first line says why (host, port, path).
        return exitcodes.FAILED, f"{name}: {_clean(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    # Anything else is a bug. Its text may quote a value it choked on, so only the type and
    # where it was raised are printed; -vv logs the whole traceback (secrets masked).
    log.debug("unexpected error", exc_info=exc)
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" in {Path(where.filename).name}:{where.lineno} ({where.name})" if where else ""
    return exitcodes.FAILED, f"unexpected {name}{at}; run with -vv for the traceback"


def _show(code: int, message: str, *, json_out: bool) -> None:
    if json_out:
        _emit_json({"error": _error(code, message)})
    else:
        err.print(f"[red]{'error' if code != exitcodes.INTERRUPTED else 'stopped'}:[/] {escape(message)}", highlight=False)


if __name__ == "__main__":
    main()
