"""The floor under the sync's throughput: what one record costs before the store is involved.

Times, on the same synthetic shop export as ``sync_bench.py`` and with the same config, in one
process and without touching the store:

1. ``read``    - the files connector parsing the CSV into records;
2. ``prepare`` - what the engine does to every record before matching (``synchub.prepare.Preparer.prepare``): map it
                 through ``mappings/shop_kunden.yaml``, validate it against the canonical model,
                 normalise e-mails, phones (E.164), names and dates, derive identity keys and the
                 content hash;
3. ``features`` - the fuzzy matcher's comparison features and blocking keys of each record.

A full sync does all of this and then matches, merges and writes; so no sync can be faster than
the sum of these on one core. Usage (from the repo root)::

    .venv/bin/python bench/floor_bench.py --records 20000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sync_bench  # the generator and config of the sync benchmark


def measure(n: int, seed: int, dup_rate: float) -> dict[str, float]:
    from synchub import similarity
    from synchub.config import load_config
    from synchub.connector import Record
    from synchub.engine import Hub, tune_gc
    from synchub.prepare import Preparer
    from synchub.store import utcnow

    tune_gc()  # as the CLI does
    with tempfile.TemporaryDirectory(prefix="synchub-floor-") as tmp:
        root = Path(tmp)
        data = root / sync_bench.DATA_FILE
        sync_bench.write_csv(data, n, seed=seed, dup_rate=dup_rate, encoding="utf-8")
        config, _schema = sync_bench.prepare_backend(root, "sqlite", data, "", False, None)
        hub = Hub(load_config(config))
        stream = hub.connector("shop").streams()["customers"]
        mapping = hub._stream_mapping(hub.config.connections["shop"].streams["customers"], "in")
        assert mapping is not None
        preparer = Preparer(mapping, stream, list(hub.config.match_config(mapping.entity).keys),
                            hub.config.defaults.phone_region, utcnow())
        out: dict[str, float] = {}

        t = time.perf_counter()
        items = [i for i in stream.read({}) if isinstance(i, Record)]
        out["read"] = time.perf_counter() - t

        rejects: list[tuple] = []

        def reject(*why: object) -> None:
            rejects.append(why)

        t = time.perf_counter()
        prepared = [preparer.prepare(i, reject) for i in items]
        out["prepare"] = time.perf_counter() - t

        t = time.perf_counter()
        for p in prepared:
            if p is not None:
                similarity.blocking_keys(similarity.features(p.data, mapping.entity))
        out["features"] = time.perf_counter() - t
        out["records"] = len(items)
        out["rejected"] = len(rejects)
        hub.store.dispose()
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--dup-rate", type=float, default=0.05)
    args = ap.parse_args(argv)
    r = measure(args.records, args.seed, args.dup_rate)
    n = r["records"]
    total = 0.0
    print(f"{n:,} records ({int(r['rejected'])} rejected), one process, no store:")
    print("| step | seconds | µs per record | records/s |")
    print("|---|---|---|---|")
    for step in ("read", "prepare", "features"):
        total += r[step]
        print(f"| {step} | {r[step]:.2f} | {r[step] / n * 1e6:.0f} | {n / r[step]:,.0f} |")
    print(f"| all three | {total:.2f} | {total / n * 1e6:.0f} | {n / total:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
