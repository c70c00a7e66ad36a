"""Intake benchmark: dirty 100k-row exports through the real CLI, field-level quarantine at scale.

The "Done when" of issue 16: on a generated 100k-row DACH export and a US export with invalid
phones in a fifth of the rows, fewer than 0.1 % of rows are rejected, every quarantined value is
reported with its reason, and the run exits with the documented code.

Per export (``dach``, ``us``; data from ``bench/intake_data.py``, fixed seed):

1. writes the export into a fresh folder (``data/``), a config and, for the US export, its own
   mapping (the DACH export uses the repository's ``mappings/shop_kunden.yaml``);
2. runs ``synchub -c <config> --json sync`` as a subprocess into a fresh SQLite store and keeps
   its exit code, wall time and peak RSS; then ``synchub runs show <run> --json``;
3. reads the store and checks: rows in the file = rows read = source records + rejected
   records; the run's counts add up; every quarantined value has a reason and its raw value;
   the run's ``quarantined_value`` rows are exactly the source records' ``quarantine``
   entries; every planted bad value got the outcome it should (quarantined / unverified);
   no value the generator wrote as valid was quarantined; valid phone numbers landed as the
   number they were built from; planted junk rows and only rows without anything identifying
   were rejected; the exit code is the one ``synchub/exitcodes.py`` documents for the status.

Prints a report (markdown) and exits 1 when a check fails or 0.1 % or more rows were rejected.

Usage (from the repo root)::

    .venv/bin/python bench/intake_bench.py                        # 100,000 rows each (make bench-intake)
    .venv/bin/python bench/intake_bench.py --records 20000 --exports us --keep --workdir bench/out
    .venv/bin/python bench/intake_bench.py --dach-encoding utf-8-sig --json bench/out/intake.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import intake_data  # noqa: E402  (needs the repository root on sys.path)
from bench.sync_bench import code_fingerprint  # noqa: E402

REJECT_LIMIT_PCT = 0.1


def synchub_command() -> list[str]:
    """The CLI of the Python running this script (its venv), else ``synchub`` on PATH."""
    beside = Path(sys.executable).parent / "synchub"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("synchub")
    if found:
        return [found]
    raise SystemExit("synchub is not installed next to this Python nor on PATH (make install)")


def run_cli(args: list[str], cwd: Path, out_path: Path) -> dict[str, Any]:
    """Run the CLI with stdout to ``out_path``; return exit code, wall seconds, peak RSS of the child."""
    env = {k: v for k, v in os.environ.items() if k != "SYNCHUB_CONFIG"}
    t = time.perf_counter()
    with open(out_path, "wb") as out, open(out_path.with_suffix(".stderr"), "wb") as err:
        proc = subprocess.Popen(synchub_command() + args, cwd=cwd, stdout=out, stderr=err, env=env)
        _pid, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    rss_mb = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
    text = out_path.read_text(encoding="utf-8", errors="replace")
    try:
        doc = json.loads(text) if text.strip() else None
    except json.JSONDecodeError:
        doc = None
    return {"exit_code": proc.returncode, "seconds": round(seconds, 2), "peak_rss_mb": round(rss_mb),
            "json": doc, "stdout_tail": text[-2000:] if doc is None else "",
            "stderr_tail": out_path.with_suffix(".stderr").read_text(encoding="utf-8", errors="replace")[-2000:]}


def exit_code_info(code: int, status: str | None) -> dict[str, Any]:
    """The name of ``code`` and the code documented for ``status``, from synchub/exitcodes.py
    when it exists (it is being defined while this benchmark is written)."""
    try:
        from synchub import exitcodes
    except ImportError:
        return {"name": None, "expected": None}
    expected = exitcodes.for_run(status) if status else None
    return {"name": exitcodes.name(code) if code else "ok", "expected": expected}


def bench_export(kind: str, n: int, root: Path, args: argparse.Namespace) -> dict[str, Any]:
    from synchub.store import Store

    folder = root / kind
    (folder / "data").mkdir(parents=True)
    exp = intake_data.GENERATORS[kind].export
    encoding = args.dach_encoding if kind == "dach" else None
    info, truths = intake_data.write_export(folder / "data" / exp.file_name, kind, n, seed=args.seed,
                                            encoding=encoding, junk_every=args.junk_every)
    print(f"{kind}: generated {n:,} rows ({info['bytes'] / 1e6:.1f} MB, {info['encoding']}, "
          f"{info['junk_rows']} planted junk rows, {info['second_accounts']:,} second accounts) in {info['seconds']}s",
          flush=True)
    config = intake_data.write_config(folder, kind, "sqlite:///store.db")
    sync = run_cli(["-c", str(config), "--json", "sync"], folder, folder / "sync.json")
    doc = sync["json"] or {}
    runs = doc.get("runs") or []
    run = runs[0] if runs else {}
    status = run.get("status")
    result: dict[str, Any] = {
        "export": kind, "generated": info, "exit_code": sync["exit_code"], "seconds": sync["seconds"],
        "rows_per_second": round(n / sync["seconds"]) if sync["seconds"] else None,
        "peak_rss_mb": sync["peak_rss_mb"], "status": status, "run_error": run.get("error"),
        "cli_counts": (run.get("streams") or {}).get(exp.stream), "cli_error": doc.get("error"),
        **{f"exit_code_{k}": v for k, v in exit_code_info(sync["exit_code"], status).items()},
    }
    print(f"{kind}: synchub sync exited {sync['exit_code']} after {sync['seconds']}s (status {status})", flush=True)
    if not run:
        result["problems"] = [f"the CLI printed no run: {sync['stdout_tail']!r} {sync['stderr_tail']!r}"]
        return result
    shown = run_cli(["-c", str(config), "--json", "runs", "show", str(run["run_id"])], folder, folder / "runs_show.json")
    shown_doc = shown["json"] or {}
    result["runs_show"] = {"exit_code": shown["exit_code"], "keys": sorted(shown_doc),
                           "rejected_listed": len(shown_doc.get("rejected") or []),
                           "lists_quarantined_values": any("quarantin" in k for k in shown_doc)}
    store = Store(f"sqlite:///{folder / 'store.db'}")
    try:
        report = intake_data.analyse(store, run["run_id"], kind, truths)
    finally:
        store.dispose()
    result.update(report)
    problems = list(report["problems"])
    if result["cli_counts"] and {k: result["cli_counts"].get(k) for k in ("read", "rejected", "quarantined", "unverified")} != \
            {"read": report["read"], "rejected": report["rejected"], "quarantined": report["quarantined"],
             "unverified": report["unverified"]}:
        problems.append(f"the CLI's counts {result['cli_counts']} differ from the store's")
    if result["exit_code_expected"] is not None and sync["exit_code"] != result["exit_code_expected"]:
        problems.append(f"exit code {sync['exit_code']}, documented for status {status}: {result['exit_code_expected']}")
    if status != ("partial" if report["rejected"] else "succeeded"):
        problems.append(f"status {status} with {report['rejected']} rejected rows")
    if report["rejected_pct"] >= REJECT_LIMIT_PCT:
        problems.append(f"{report['rejected_pct']} % of rows rejected (limit {REJECT_LIMIT_PCT} %)")
    result["problems"] = problems
    return result


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.3f} %" if whole else "-"


def report(results: list[dict[str, Any]], code: dict[str, Any]) -> str:
    out = ["| export | rows | rejected | quarantined values | unverified values | golden records | status "
           "| exit code | seconds | rows/s | peak RSS MB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "rows" not in r:
            out.append(f"| {r['export']} | {r['generated']['rows']:,} | – | – | – | – | {r['status']} | {r['exit_code']} "
                       f"| {r['seconds']} | – | {r['peak_rss_mb']} |")
            continue
        name = f" (`{r['exit_code_name']}`)" if r.get("exit_code_name") else ""
        out.append(f"| {r['export']} | {r['rows']:,} | {r['rejected']} ({r['rejected_pct']:.3f} %) | {r['quarantined']:,} "
                   f"| {r['unverified']:,} | {r['golden_active']:,} | {r['status']} | {r['exit_code']}{name} "
                   f"| {r['seconds']:.1f} | {r['rows_per_second']:,} | {r['peak_rss_mb']} |")
    for r in results:
        out += ["", f"### {r['export']}: {r['generated']['rows']:,} rows, {r['generated']['encoding']}"]
        if "rows" not in r:
            out += [f"- {p}" for p in r.get("problems", [])]
            continue
        out += [
            f"- read {r['read']:,} = landed {r['landed']:,} + rejected {r['rejected']} "
            f"({'ok' if r['read'] == r['landed'] + r['rejected'] == r['rows'] else 'MISMATCH'}); "
            f"golden records {r['golden_active']:,} for {r['persons_landed']:,} generated people among the landed rows",
            f"- rejected: {r['reject_reasons'] or 'none'} (planted junk rows: {r['planted_junk']}, "
            f"rejected of them: {r['rejects_of_planted_junk']})",
            f"- quarantined by field: {r['quarantined_by_field']}; unverified by field: {r['unverified_by_field']}",
            f"- quarantined values without a reason: {r['values_without_reason']}, without the raw value: {r['values_without_raw']}",
            f"- valid phone numbers landed as built: {r['valid_phones_landed']:,}; landed otherwise although "
            f"the country was readable: {r['valid_phones_wrong']}; of rows whose country was misspelled (read in "
            f"the default region): {r['valid_phones_country_unreadable'] or 'none'}",
            f"- landed with nothing identifying (no name, e-mail or phone): {r['landed_without_identity']} "
            f"(lines {r['landed_without_identity_lines']})",
            f"- golden records holding several generated people: {r['golden_records_with_several_people']} "
            f"({r['merges_sharing_a_phone']} of them with a phone number in common, {r['merges_sharing_an_unverified_phone']} "
            f"with an unverified one in common); people split over several golden records: {r['people_split']}",
        ]
        if r["valid_phones_country_unreadable_examples"]:
            out.append("- misread phones, e.g. " + "; ".join(f"`{e}`" for e in r["valid_phones_country_unreadable_examples"][:4]))
        for ex in r["merge_examples"][:3]:
            out.append("- merged: " + " + ".join(f"`{e}`" for e in ex))
        if r["invalid_phone_rows"]:
            out.append(f"- rows with an invalid phone: {r['invalid_phone_rows']:,} "
                       f"({_pct(r['invalid_phone_rows'], r['rows'])}): {r['invalid_phone_outcome']}")
        shown = r.get("runs_show") or {}
        out.append(f"- `synchub runs show {r['run_id']} --json`: exit {shown.get('exit_code')}, lists "
                   f"{shown.get('rejected_listed')} rejected records; quarantined values listed: "
                   f"{'yes' if shown.get('lists_quarantined_values') else 'no'}")
        out += ["", "| field | status | reason | values | examples |", "|---|---|---|---|---|"]
        for q in r["reasons"]:
            ex = ", ".join(f"`{e}`" for e in q["examples"])
            out.append(f"| {q['field']} | {q['status']} | {q['reason']} | {q['count']:,} | {ex} |")
        out += ["", "| planted defect | field | expected | outcome | values |", "|---|---|---|---|---|"]
        for p in r["planted"]:
            out.append(f"| {p['defect']} | {p['field']} | {p['expected']} | {p['outcome']} | {p['count']:,} |")
        if r["problems"]:
            out += ["", "**Problems:**"] + [f"- {p}" for p in r["problems"]]
    out += ["", f"code: git {code['git_head']}{' + uncommitted changes in synchub/ or plugins/' if code['dirty'] else ''}, "
            f"synchub+plugins sources {code['sources_sha1']}"]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=100_000, help="rows per export (default 100000)")
    p.add_argument("--exports", nargs="+", choices=sorted(intake_data.GENERATORS), default=["dach", "us"])
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--dach-encoding", default="cp1252", choices=["cp1252", "utf-8-sig"],
                   help="encoding of the DACH export (default cp1252, as Excel writes it)")
    p.add_argument("--junk-every", type=int, default=10_000,
                   help="three planted junk rows per this many rows (default 10000; 0: none)")
    p.add_argument("--workdir", type=Path, default=None, help="where the temp folder goes (default: system temp)")
    p.add_argument("--keep", action="store_true", help="keep the data, configs and stores")
    p.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.records < 1:
        p.error("--records must be positive")

    code = code_fingerprint()
    print(f"code: git {code['git_head']}{' + uncommitted changes' if code['dirty'] else ''}, "
          f"synchub+plugins sources {code['sources_sha1']}", flush=True)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="synchub-intake-", dir=args.workdir))
    results: list[dict[str, Any]] = []
    try:
        for kind in args.exports:
            results.append(bench_export(kind, args.records, root, args))
    finally:
        code_after = code_fingerprint()
        print()
        print(report(results, code))
        if code_after["sources_sha1"] != code["sources_sha1"]:
            print(f"note: synchub/plugins sources changed while measuring ({code['sources_sha1']} -> "
                  f"{code_after['sources_sha1']}): the exports may have run different code")
        if args.json:
            meta = {"date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                    "python": platform.python_version(), "cpus": os.cpu_count(),
                    "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                    "code_before": code, "code_after": code_after}
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1, ensure_ascii=False, default=str),
                                 encoding="utf-8")
            print(f"wrote {args.json}")
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 1 if any(r.get("problems") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
