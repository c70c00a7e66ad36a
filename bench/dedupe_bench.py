"""Full re-cluster benchmark: ``synchub dedupe`` over a synthetic store of N person records.

Builds a store of N golden person records straight in the database, each with its one source
record (so the setup does not depend on the sync path): realistic German/Swiss/Austrian
customers from ``sync_bench``'s generator, mapped through ``mappings/shop_kunden.yaml``. A share of them (``--dup-rate``, default
5 %) are *fuzzy* duplicates of an earlier person: another e-mail address, and a typo or a
spelling variant in a name (Müller/Mueller, a swapped letter, a nickname) — no exact identity
key joins them, only the scorer can. Then it times ``synchub.review.dedupe`` (dry run, then
for real) in a fresh child process and prints seconds, pairs compared, planted pairs found
(recall), other merges (an upper bound of false merges), and peak RSS.

    .venv/bin/python bench/dedupe_bench.py --records 100000            # SQLite
    .venv/bin/python bench/dedupe_bench.py --records 20000 --postgres  # PostgreSQL too

Target (issue: identity resolution): 100k records in <= 10 s on a 2-core machine, memory not
growing faster than the data.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
NICK = {"Robert": "Bob", "Michael": "Micha", "Thomas": "Tom", "Alexander": "Alex", "Katharina": "Kathrin",
        "Johannes": "Hans", "Christian": "Chris", "Andreas": "Andi", "Stefan": "Stephan", "Susanne": "Susi"}
UMLAUT = {"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss"}


def _variant(name: str, r: random.Random) -> str:
    if name in NICK and r.random() < 0.5:
        return NICK[name]
    if any(u in name for u in UMLAUT) and r.random() < 0.6:
        for u, t in UMLAUT.items():
            name = name.replace(u, t)
        return name
    if len(name) > 4:  # swap two inner letters
        i = r.randrange(1, len(name) - 2)
        return name[:i] + name[i + 1] + name[i] + name[i + 2:]
    return name


def build(store_url: str, n: int, dup_rate: float, seed: int) -> dict[str, Any]:
    """Fill an empty store with n golden person records; returns the planted duplicate pairs."""
    from sync_bench import COLUMNS, CustomerGenerator  # type: ignore[import-not-found]

    from synchub import match
    from synchub import store as st
    from synchub.mapping import MappingLibrary
    from synchub.plugins import get_transforms

    mapping = MappingLibrary([REPO / "mappings"], get_transforms(), {"phone_region": "DE"}).get("shop_kunden")
    store = st.Store(store_url)
    store.upgrade()
    gen = CustomerGenerator(seed=seed, dup_rate=0.0)
    r = random.Random(seed)
    ids: list[str] = []
    planted: list[tuple[str, str]] = []
    now = st.utcnow()
    batch: list[dict[str, Any]] = []
    started = time.perf_counter()
    for row in gen.rows(n):
        data = match.normalize_record(mapping.to_canonical(dict(zip(COLUMNS, row, strict=True))), "DE")
        gid = uuid.uuid4().hex
        ids.append(gid)
        batch.append({"id": gid, "kind": "person", "status": "active", "data": data, "provenance": {},
                      "display_name": "", "search_text": "", "version": 1, "created_at": now, "updated_at": now})
        if len(batch) >= 2000:
            _flush(store, batch)
            batch = []
    _flush(store, batch)
    # Second pass: planted duplicates, each a variant of an earlier record.
    dups = int(n * dup_rate)
    with store.engine.connect() as conn:
        import sqlalchemy as sa

        sample = r.sample(ids, dups)
        originals = {}
        for chunk in [sample[k:k + 900] for k in range(0, len(sample), 900)]:
            for row in conn.execute(sa.select(st.golden_t.c.id, st.golden_t.c.data).where(st.golden_t.c.id.in_(chunk))):
                originals[row.id] = row.data
    batch = []
    for oid in sample:
        d = json.loads(json.dumps(originals[oid]))
        d["emails"] = [f"{uuid.uuid4().hex[:10]}@example.org"]
        d.pop("phones", None)
        if d.get("first_name") and r.random() < 0.5:
            d["first_name"] = _variant(d["first_name"], r)
        elif d.get("last_name"):
            d["last_name"] = _variant(d["last_name"], r)
        gid = uuid.uuid4().hex
        planted.append((oid, gid))
        batch.append({"id": gid, "kind": "person", "status": "active", "data": d, "provenance": {},
                      "display_name": "", "search_text": "", "version": 1, "created_at": now, "updated_at": now})
    _flush(store, batch)
    store.dispose()
    return {"records": n + dups, "planted": planted, "build_seconds": round(time.perf_counter() - started, 1)}


def _flush(store: Any, batch: list[dict[str, Any]]) -> None:
    """Insert golden records, each with the one source record a sync would have stored for it,
    so a merge moves real rows and re-derives the survivor from its sources."""
    from synchub import store as st

    if batch:
        sources = [{"connection": "shop", "stream": "customers", "source_id": g["id"], "kind": "person",
                    "golden_id": g["id"], "data": g["data"], "content_hash": g["id"],
                    "observed_at": g["created_at"], "first_seen_at": g["created_at"],
                    "changed_at": g["created_at"], "deleted": False} for g in batch]
        with store.begin() as conn:
            conn.execute(st.golden_t.insert(), batch)
            conn.execute(st.source_t.insert(), sources)


def child(store_url: str, planted_path: str, result_path: str) -> None:
    from synchub.config import Config
    from synchub.engine import Hub, tune_gc
    from synchub.review import dedupe
    from synchub.store import Store

    tune_gc()  # as the CLI does
    hub = Hub(Config(store=store_url), Store(store_url))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    dry = dedupe(hub, "person", dry_run=True)
    real = dedupe(hub, "person")
    planted = {tuple(sorted(p)) for p in json.loads(Path(planted_path).read_text())}
    merged = {tuple(sorted((a, b))) for a, b, _s, _r in dry.merges}
    # a planted pair counts as found when both ended in one golden record
    found = 0
    for a, b in planted:
        ga, gb = hub.store.get_golden(a), hub.store.get_golden(b)
        found += bool(ga and gb and ga["id"] == gb["id"])
    Path(result_path).write_text(json.dumps({
        "dry_run_seconds": round(dry.seconds, 2), "dedupe_seconds": round(real.seconds, 2),
        "compared": dry.compared, "merges": len(dry.merges), "possible": len(dry.possible),
        "planted": len(planted), "planted_found": found,
        "other_merges": len([m for m in merged if m not in planted]),
        "rss_before_mb": round(rss_before), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, nargs="+", default=[100_000])
    p.add_argument("--dup-rate", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--postgres", action="store_true", help="also on PostgreSQL")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(*args.child)
        return 0
    print("| backend | records | planted dups | found | other merges | possible | pairs compared | dry-run s | dedupe s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in args.records:
        for backend in ["sqlite"] + (["postgresql"] if args.postgres else []):
            with tempfile.TemporaryDirectory() as tmp:
                schema = None
                if backend == "sqlite":
                    url = f"sqlite:///{tmp}/store.db"
                else:
                    import sqlalchemy as sa

                    schema = f"bench_{uuid.uuid4().hex[:8]}"
                    admin = sa.create_engine(PG_URL)
                    with admin.begin() as c:
                        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
                    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
                info = build(url, n, args.dup_rate, args.seed)
                Path(tmp, "planted.json").write_text(json.dumps(info["planted"]))
                subprocess.run([sys.executable, __file__, "--child", url, f"{tmp}/planted.json", f"{tmp}/result.json"], check=True)
                res = json.loads(Path(tmp, "result.json").read_text())
                print(f"| {backend} | {info['records']:,} | {res['planted']:,} | {res['planted_found']:,} | {res['other_merges']:,} | "
                      f"{res['possible']:,} | {res['compared']:,} | {res['dry_run_seconds']} | {res['dedupe_seconds']} | {res['peak_rss_mb']} |",
                      flush=True)
                if schema:
                    with admin.begin() as c:
                        c.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    return 0


if __name__ == "__main__":
    sys.exit(main())
