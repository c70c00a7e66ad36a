"""FEBRL benchmark of the fuzzy matcher (:mod:`synchub.similarity`).

Runs :func:`synchub.similarity.dedupe` on FEBRL dataset1-3 and :func:`synchub.similarity.link`
on dataset4a x dataset4b with the **default** person configuration and reports, per dataset:
true pairs, predicted pairs (outcome ``match``), precision, recall, F1 (pairwise, directly on
the predicted pairs and again after transitive clustering), the ``possible`` band (and how
many of those are true pairs), how many true pairs the hard rules veto (and so the highest
recall any threshold could reach), candidate pairs compared and seconds, wall clock and CPU
(features + blocking + scoring in one cold run, excluding CSV reading and the diagnostics).

Ground truth: ``rec-N-org`` and ``rec-N-dup-K`` with the same N are the same person.  The
``soc_sec_id`` column is never used.  Each row becomes a canonical person dict
(``first_name``, ``last_name``, ``address`` with street = street_number + address_1, line2,
city, postal_code, region, country ``AU``; ``birth_date`` from ``yyyymmdd`` when it is a valid
date).

A second configuration, ``hard_rules=False`` (the household vetoes switched off), is run as a
diagnostic because FEBRL's generator replaces given names (in 10-15 % of the true pairs) and
birth dates (4-5 %) by unrelated values, which the household rules treat exactly like twins or
father and son (see bench/README.md); its timings are taken with warm caches.  Use
``--only-default`` to skip it.

Usage::

    .venv/bin/python bench/febrl_bench.py [--data bench/data/febrl] [--json out.json]
                                          [--only-default] [--sweep]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
import time
from collections import defaultdict
from itertools import combinations
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from synchub import similarity  # noqa: E402

#: The copy kept in the repository (origin and licence: SOURCES.md there).
DEFAULT_DATA = Path(__file__).resolve().parent / "data" / "febrl"


def read_rows(path: Path) -> list[dict[str, str]]:
    """Rows of one FEBRL CSV (a space after every comma, empty field = missing)."""
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, skipinitialspace=True)
        header = [h.strip() for h in next(reader)]
        return [dict(zip(header, (v.strip() for v in row), strict=False)) for row in reader if row]


def _iso_date(value: str) -> str | None:
    if len(value) != 8 or not value.isdigit():
        return None
    try:
        return dt.date(int(value[:4]), int(value[4:6]), int(value[6:])).isoformat()
    except ValueError:
        return None


def to_person(row: dict[str, str]) -> dict[str, Any]:
    """Map one FEBRL row to a canonical person dict (soc_sec_id is left out on purpose)."""
    street = " ".join(p for p in (row.get("street_number", ""), row.get("address_1", "")) if p)
    address = {
        "street": street or None,
        "line2": row.get("address_2") or None,
        "city": row.get("suburb") or None,
        "postal_code": row.get("postcode") or None,
        "region": row.get("state") or None,
        "country": "AU",
    }
    person: dict[str, Any] = {
        "kind": "person",
        "first_name": row.get("given_name") or None,
        "last_name": row.get("surname") or None,
        "address": {k: v for k, v in address.items() if v},
    }
    birth = _iso_date(row.get("date_of_birth", ""))
    if birth:
        person["birth_date"] = birth
    return {k: v for k, v in person.items() if v is not None}


def entity(rec_id: str) -> str:
    """``rec-12-dup-3`` -> ``12``."""
    return rec_id.split("-")[1]


def true_pairs_dedupe(ids: list[str]) -> set[tuple[int, int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, rid in enumerate(ids):
        groups[entity(rid)].append(i)
    return {(i, j) for g in groups.values() for i, j in combinations(sorted(g), 2)}


def true_pairs_link(left: list[str], right: list[str]) -> set[tuple[int, int]]:
    by_entity: dict[str, list[int]] = defaultdict(list)
    for j, rid in enumerate(right):
        by_entity[entity(rid)].append(j)
    return {(i, j) for i, rid in enumerate(left) for j in by_entity.get(entity(rid), ())}


def prf(predicted: set[tuple[int, int]], truth: set[tuple[int, int]]) -> dict[str, float]:
    tp = len(predicted & truth)
    p = tp / len(predicted) if predicted else 1.0
    r = tp / len(truth) if truth else 1.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"tp": tp, "precision": p, "recall": r, "f1": f1}


def cluster_pairs_dedupe(n: int, pairs: list[tuple[int, int, Any]]) -> set[tuple[int, int]]:
    out: set[tuple[int, int]] = set()
    for group in similarity.cluster(n, pairs):
        out.update(combinations(group, 2))
    return out


def cluster_pairs_link(n_left: int, pairs: list[tuple[int, int, Any]]) -> set[tuple[int, int]]:
    # Offset the right-hand indices so one union-find covers both files.
    shifted = [(i, n_left + j, d) for i, j, d in pairs]
    n = n_left + 1 + max((j for _i, j, _d in pairs), default=0)
    out: set[tuple[int, int]] = set()
    for group in similarity.cluster(n, shifted):
        left = [x for x in group if x < n_left]
        right = [x - n_left for x in group if x >= n_left]
        out.update((i, j) for i in left for j in right)
    return out


def _roots(n: int, edges: list[tuple[int, int]]) -> list[int]:
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in edges:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    return [find(x) for x in range(n)]


def review_figures(n: int, offset: int, matched: set[tuple[int, int]], possible: set[tuple[int, int]],
                   truth: set[tuple[int, int]]) -> dict[str, Any]:
    """What the hub does with the pairs: automatic merges (transitive), and review items
    between the customers they form (one per pair of customers, as the hub logs them).
    ``offset`` shifts right-hand indices (0 for dedupe)."""
    shift = lambda pairs: [(i, j + offset) for i, j in pairs]  # noqa: E731
    auto = _roots(n, shift(matched))
    items: dict[tuple[int, int], bool] = {}
    for i, j in possible:
        a, b = auto[i], auto[j + offset]
        if a != b:
            key = (min(a, b), max(a, b))
            items[key] = items.get(key, False) or (i, j) in truth
    both = _roots(n, shift(matched) + [(a, b) for a, b in items])
    auto_tp = sum(1 for i, j in truth if auto[i] == auto[j + offset])
    auto_pairs: dict[int, int] = defaultdict(int)
    for x in range(n):
        auto_pairs[auto[x]] += 1
    if offset:  # link: pairs across the two files in each cluster
        left: dict[int, int] = defaultdict(int)
        for x in range(offset):
            left[auto[x]] += 1
        predicted = sum(left[r] * (size - left[r]) for r, size in auto_pairs.items())
    else:
        predicted = sum(size * (size - 1) // 2 for size in auto_pairs.values())
    found = sum(1 for i, j in truth if both[i] == both[j + offset])
    return {
        "auto_precision": auto_tp / predicted if predicted else 1.0,
        "auto_recall": auto_tp / len(truth) if truth else 1.0,
        "review_items": len(items),
        "review_true": sum(items.values()),
        "auto_review_recall": found / len(truth) if truth else 1.0,
    }


def run_dataset(name: str, data: Path, cfg: similarity.ScoreConfig) -> dict[str, Any]:
    counter = similarity.Counter()
    if name == "dataset4":
        left_rows = read_rows(data / "dataset4a.csv")
        right_rows = read_rows(data / "dataset4b.csv")
        left = [to_person(r) for r in left_rows]
        right = [to_person(r) for r in right_rows]
        truth = true_pairs_link([r["rec_id"] for r in left_rows], [r["rec_id"] for r in right_rows])
        started, cpu = time.perf_counter(), time.process_time()
        pairs = similarity.link(left, right, "person", cfg, counter=counter)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        records = f"{len(left)}+{len(right)}"
        clustered = cluster_pairs_link(len(left), pairs)
        lf = [similarity.features(r) for r in left]
        rf = [similarity.features(r) for r in right]
    else:
        rows = read_rows(data / f"{name}.csv")
        recs = [to_person(r) for r in rows]
        truth = true_pairs_dedupe([r["rec_id"] for r in rows])
        started, cpu = time.perf_counter(), time.process_time()
        pairs = similarity.dedupe(recs, "person", cfg, counter=counter)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        records = str(len(recs))
        clustered = cluster_pairs_dedupe(len(recs), pairs)
        lf = rf = [similarity.features(r) for r in recs]
    matched = {(i, j) for i, j, d in pairs if d.outcome == "match"}
    possible = {(i, j) for i, j, d in pairs if d.outcome == "possible"}
    direct = prf(matched, truth)
    after = prf(clustered, truth)
    n_left = len(lf)
    review = review_figures(n_left + (len(rf) if name == "dataset4" else 0), n_left if name == "dataset4" else 0,
                            matched, possible, truth)
    # Diagnostic (not timed): how many true pairs the hard rules forbid, whatever the score.
    vetoes: dict[str, int] = defaultdict(int)
    for i, j in truth:
        veto = similarity.score(lf[i], rf[j], cfg).veto
        if veto is not None:
            vetoes[veto.split(":", 1)[0]] += 1
    allowed = len(truth) - sum(vetoes.values())
    return {
        "dataset": "dataset4a/4b" if name == "dataset4" else name,
        "records": records,
        "true_pairs": len(truth),
        "predicted": len(matched),
        **direct,
        "f1_clustered": after["f1"],
        "possible": len(possible),
        "possible_true": len(possible & truth),
        **review,
        "vetoed_true": dict(vetoes),
        "recall_ceiling": allowed / len(truth) if truth else 1.0,
        "compared": counter.comparisons,
        "seconds": seconds,
        "cpu_seconds": cpu,
    }


SWEEP = (12.0, 14.0, 16.0, 18.0, 20.0, 22.0)


def sweep(name: str, data: Path, cfg: similarity.ScoreConfig) -> dict[str, Any]:
    """F1 at other ``upper`` thresholds (same weights and rules): how the default was chosen."""
    everything = cfg.model_copy(update={"upper": 1e9, "lower": -1e9})
    if name == "dataset4":
        left_rows = read_rows(data / "dataset4a.csv")
        right_rows = read_rows(data / "dataset4b.csv")
        truth = true_pairs_link([r["rec_id"] for r in left_rows], [r["rec_id"] for r in right_rows])
        pairs = similarity.link(
            [to_person(r) for r in left_rows],
            [to_person(r) for r in right_rows],
            "person",
            everything,
        )
    else:
        rows = read_rows(data / f"{name}.csv")
        truth = true_pairs_dedupe([r["rec_id"] for r in rows])
        pairs = similarity.dedupe([to_person(r) for r in rows], "person", everything)
    out: dict[str, Any] = {"dataset": "dataset4a/4b" if name == "dataset4" else name}
    for th in SWEEP:
        out[str(th)] = prf({(i, j) for i, j, d in pairs if d.score >= th}, truth)
    return out


def sweep_table(rows: list[dict[str, Any]]) -> str:
    head = "| dataset | " + " | ".join(f"F1 @ upper={th:g}" for th in SWEEP) + " |"
    lines = [head, "|" + " --- |" * (len(SWEEP) + 1)]
    for r in rows:
        cells = " | ".join(f"{r[str(th)]['f1']:.4f}" for th in SWEEP)
        lines.append(f"| {r['dataset']} | {cells} |")
    return "\n".join(lines)


def review_table(results: list[dict[str, Any]]) -> str:
    """The issue-18 target: automatic merges precise, automatic merges plus review items complete."""
    lines = ["| dataset | auto precision | auto recall | auto + review recall | review items (true) | review precision |",
             "|" + " --- |" * 6]
    for r in results:
        prec = r["review_true"] / r["review_items"] if r["review_items"] else 1.0
        lines.append(f"| {r['dataset']} | {r['auto_precision']:.4f} | {r['auto_recall']:.4f} | {r['auto_review_recall']:.4f} "
                     f"| {r['review_items']} ({r['review_true']}) | {prec:.4f} |")
    return "\n".join(lines)


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| dataset | records | true pairs | predicted | precision | recall | F1 | F1 clustered "
        "| possible (true) | true pairs vetoed | recall ceiling | compared | seconds (CPU) |"
    )
    lines = [head, "|" + " --- |" * 13]
    for r in results:
        vetoed = ", ".join(f"{k} {v}" for k, v in sorted(r["vetoed_true"].items())) or "0"
        lines.append(
            f"| {r['dataset']} | {r['records']} | {r['true_pairs']} | {r['predicted']} "
            f"| {r['precision']:.4f} | {r['recall']:.4f} | {r['f1']:.4f} | {r['f1_clustered']:.4f} "
            f"| {r['possible']} ({r['possible_true']}) | {vetoed} | {r['recall_ceiling']:.4f} "
            f"| {r['compared']} "
            f"| {r['seconds']:.2f} ({r['cpu_seconds']:.2f}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder with the FEBRL CSVs"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument(
        "--only-default", action="store_true", help="skip the hard_rules=False diagnostic run"
    )
    parser.add_argument(
        "--sweep", action="store_true", help="also print F1 for other upper thresholds"
    )
    args = parser.parse_args(argv)
    needed = ["dataset1.csv", "dataset2.csv", "dataset3.csv", "dataset4a.csv", "dataset4b.csv"]
    missing = [n for n in needed if not (args.data / n).is_file()]
    if missing:
        print(f"FEBRL data not found in {args.data} (missing: {', '.join(missing)})", file=sys.stderr)
        return 1

    default = similarity.ScoreConfig.defaults_for("person")
    runs = [("default", default)]
    if not args.only_default:
        runs.append(("hard_rules=False", default.model_copy(update={"hard_rules": False})))
    report: dict[str, Any] = {"config": default.model_dump(), "runs": {}}
    for label, cfg in runs:
        results = [
            run_dataset(n, args.data, cfg) for n in ("dataset1", "dataset2", "dataset3", "dataset4")
        ]
        report["runs"][label] = results
        print(
            f"\n### {label} (upper={cfg.upper}, lower={cfg.lower}, hard_rules={cfg.hard_rules})\n"
        )
        print(table(results))
        print("\nAutomatic merges (transitive) and review items between the customers they form:\n")
        print(review_table(results))
        if args.sweep:
            swept = [
                sweep(n, args.data, cfg) for n in ("dataset1", "dataset2", "dataset3", "dataset4")
            ]
            report["runs"][f"{label} sweep"] = swept
            print(f"\nThreshold sweep ({label}):\n")
            print(sweep_table(swept))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
