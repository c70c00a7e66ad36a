"""Quality-report benchmark: ``synchub.quality`` on a store of N synthetic customers.

1. Writes N shop-export rows with the sync benchmark's generator (``bench/sync_bench.py``:
   the same seeded customers, 5 % second accounts that merge) and syncs them into a fresh store
   with the ``synchub`` command (untimed, in a process of its own).
2. Ages the store so the freshness figures have something to show: the live source records
   fall into ten groups (``id % 10``) last confirmed by a source 0, 45, ..., 405 days ago.
3. In a fresh child process (so its peak RSS is the report's own, plus the imports), times
   ``build_report`` (SQL aggregates and streaming passes over the golden and source records)
   and then the files (``write_report``: HTML with matplotlib plots, JSON, CSV), and reports the
   peak RSS, the RSS before the report and the headline figures.

Backends: SQLite (a file in the work dir) and PostgreSQL (``--pg-url``, a schema of its own,
dropped afterwards unless ``--keep``); ``--no-postgres`` skips PostgreSQL.

Usage (from the repo root, with the project's venv)::

    .venv/bin/python bench/quality_bench.py --records 100000 --no-postgres
    .venv/bin/python bench/quality_bench.py --records 100000 --workdir /tmp/qb --keep   # keep store and report
    .venv/bin/python bench/quality_bench.py --workdir /tmp/qb --reuse --no-postgres     # report only, same store
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import sync_bench  # noqa: E402  (needs the repository root on sys.path)

#: Segments counted in the benchmark's report (the generated store has no outbound streams).
SEGMENTS = {
    "germany": {"address.country": "DE"},
    "newsletter": {"consent.email.status": "subscribed"},
    "big spenders": {"purchases.total_spent": {"gte": 500}},
}
AGE_STEP_DAYS = 45


def synchub_command() -> list[str]:
    beside = Path(sys.executable).parent / "synchub"
    return [str(beside)] if beside.exists() else [sys.executable, "-m", "synchub.cli"]


def sync_store(config: Path) -> float:
    """The first sync of ``config`` in a process of its own; returns its seconds."""
    t = time.perf_counter()
    done = subprocess.run([*synchub_command(), "--config", str(config), "sync"], cwd=config.parent,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode not in (0, 6):  # 6: partial (some rows rejected)
        raise SystemExit(f"sync failed ({done.returncode}): {done.stderr[-2000:]}")
    return time.perf_counter() - t


def age_store(url: str, now: datetime) -> None:
    """Spread the live source records over ten ages since a source last confirmed them (0 to 405 days)."""
    from synchub.store import Store, source_t

    store = Store(url)
    try:
        with store.engine.begin() as conn:
            for k in range(10):
                conn.execute(source_t.update().where((source_t.c.id % 10) == k)
                             .values(confirmed_at=now - timedelta(days=k * AGE_STEP_DAYS)))
        store.analyze()
    finally:
        store.dispose()


def run_child(url: str, out_dir: str, result_path: str, stale_days: int) -> int:
    """Time the report on ``url``; write the measurement as JSON to ``result_path``."""
    import matplotlib  # imported before the baseline: the import is not the report's cost

    from synchub import quality
    from synchub.store import Store

    matplotlib.use("Agg")
    import matplotlib.figure

    store = Store(url)
    base_rss = sync_bench._maxrss_mb()
    t0 = time.perf_counter()
    report = quality.build_report(store, stale_days=stale_days, segments=SEGMENTS)
    t1 = time.perf_counter()
    build_rss = sync_bench._maxrss_mb()
    paths = quality.write_report(report, Path(out_dir))
    t2 = time.perf_counter()
    store.dispose()
    result = {
        "build_s": round(t1 - t0, 2), "write_s": round(t2 - t1, 2), "total_s": round(t2 - t0, 2),
        "rss_before_mb": base_rss, "peak_rss_build_mb": build_rss, "peak_rss_mb": sync_bench._maxrss_mb(),
        "files": {p.suffix[1:]: p.stat().st_size for p in paths}, "paths": [str(p) for p in paths],
        "figures": {
            "active_customers": report["summary"]["active_customers"],
            "source_records": report["summary"]["source_records"],
            "stale": report["stale"]["stale"], "stale_share": report["stale"]["share"],
            "merges_auto": report["duplicates"]["totals"]["merges_auto"],
            "open_review_items": report["duplicates"]["open_review_items"],
            "email_statuses": report["email_health"]["statuses"],
            "segments": {s["name"]: s.get("size") for s in report["segments"]},
        },
    }
    Path(result_path).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


def measure(url: str, out_dir: Path, stale_days: int) -> dict[str, Any]:
    result_path = out_dir / "result.json"
    done = subprocess.run([sys.executable, __file__, "--child", "--url", url, "--out", str(out_dir),
                           "--result", str(result_path), "--stale-days", str(stale_days)],
                          stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"report failed: {done.stderr[-3000:]}")
    return json.loads(result_path.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--dup-rate", type=float, default=0.05)
    ap.add_argument("--stale-days", type=int, default=90)
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--pg-url", default=sync_bench.DEFAULT_PG_URL)
    ap.add_argument("--workdir", type=Path, help="where stores, data and reports go (default: a temp dir)")
    ap.add_argument("--reuse", action="store_true", help="report on the stores already in --workdir (no sync)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir and the PostgreSQL schema")
    ap.add_argument("--json", type=Path, help="write the results here too")
    # child mode
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return run_child(args.url, args.out, args.result, args.stale_days)

    root = args.workdir or Path(tempfile.mkdtemp(prefix="synchub-quality-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    backends = ["sqlite"]
    if not args.no_postgres:
        why = sync_bench.pg_reachable(args.pg_url)
        if why:
            print(f"PostgreSQL skipped: {why}")
        else:
            backends.append("postgres")
    results = []
    schemas = []
    try:
        data_file = root / sync_bench.DATA_FILE
        if not args.reuse:
            info = sync_bench.write_csv(data_file, args.records, seed=args.seed, dup_rate=args.dup_rate,
                                        encoding="utf-8")
            print(f"generated {info['rows']:,} rows ({info['duplicates']:,} second accounts) in {info['seconds']} s")
        for backend in backends:
            state = root / backend / "bench-state.json"
            if args.reuse:
                url = json.loads(state.read_text(encoding="utf-8"))["url"]
                sync_s = None
            else:
                shutil.rmtree(root / backend, ignore_errors=True)
                config, schema = sync_bench.prepare_backend(root, backend, data_file, args.pg_url, with_export=False)
                if schema:
                    schemas.append(schema)
                    url = sync_bench.pg_url_with_schema(args.pg_url, schema)
                else:
                    url = f"sqlite:///{root / backend / 'store.db'}"
                sync_s = round(sync_store(config), 1)
                age_store(url, datetime.now(timezone.utc))
                state.write_text(json.dumps({"url": url}), encoding="utf-8")
                print(f"{backend}: synced in {sync_s} s")
            out_dir = root / backend / "report"
            r = measure(url, out_dir, args.stale_days)
            r.update(backend=backend, records=args.records if not args.reuse else None, sync_s=sync_s)
            results.append(r)
            print(f"{backend}: build {r['build_s']} s, files {r['write_s']} s, peak RSS {r['peak_rss_mb']} MB "
                  f"(build {r['peak_rss_build_mb']} MB, before {r['rss_before_mb']} MB); report in {out_dir}")
    finally:
        if not args.keep:
            for schema in schemas:
                sync_bench.pg_admin(args.pg_url, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            if args.workdir is None:
                shutil.rmtree(root, ignore_errors=True)
    print()
    print("| backend | active customers | source records | build report | write html/json/csv | peak RSS (before) | html KB |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        f = r["figures"]
        print(f"| {r['backend']} | {f['active_customers']:,} | {f['source_records']:,} | {r['build_s']} s "
              f"| {r['write_s']} s | {r['peak_rss_mb']} MB ({r['rss_before_mb']} MB) | {r['files']['html'] // 1024} |")
    for r in results:
        print(f"{r['backend']} figures: {json.dumps(r['figures'], ensure_ascii=False)}")
    if args.json:
        args.json.write_text(json.dumps({"results": results}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
