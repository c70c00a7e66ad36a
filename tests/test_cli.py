"""The command line on the demo: sync summary, runs, customers, conflicts, --json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synchub.cli import app
from synchub.exitcodes import PARTIAL


@pytest.fixture
def demo(demo_dir: Path, store_url: str):
    runner = CliRunner()
    cfg = str(demo_dir / "config" / "demo.yaml")
    env = {"SYNCHUB_STORE": store_url}

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, ["--config", cfg, *args], env=env)
        assert result.exit_code == code, result.output
        return result.output

    return run


def test_sync_prints_summary_store_and_export(demo, demo_dir: Path) -> None:
    output = demo("sync", code=PARTIAL)
    assert "shop/customers" in output and "newsletter/audience" in output and "fair/leads" in output
    # 3 consent disagreements + Thomas Brandl's old newsletter address: a possible duplicate
    assert "golden records: 82 from 107 source records; open conflicts: 4" in output
    assert f"export export/customers: {demo_dir / 'var' / 'export' / 'kunden_bereinigt.csv'}" in output
    assert "store: " in output


def test_sync_json_and_runs(demo) -> None:
    data = json.loads(demo("--json", "sync", code=PARTIAL))
    shop = next(r for r in data["runs"] if r["connection"] == "shop")
    assert shop["streams"]["customers"]["read"] == 45 and shop["streams"]["customers"]["rejected"] == 1
    assert shop["streams"]["customers"]["quarantined"] == 2
    assert data["totals"]["golden_active"] == 82
    runs = json.loads(demo("--json", "runs"))
    assert {r["connection"] for r in runs} == {"shop", "newsletter", "fair", "export"}
    shown = json.loads(demo("--json", "runs", "show", str(shop["run_id"])))
    assert {(r["ref"], r["field"]) for r in shown["rejected"]} == {("shop_kunden.csv:25", None)}
    text = demo("runs", "show", str(shop["run_id"]))
    assert "shop_kunden.csv:25" in text
    assert f"run {shop['run_id']} shop in [partial]" in text
    assert shown["direction"] == "in" and shown["finished_at"] and shown["worker"]
    listing = demo("runs")
    assert "partial" in listing and "export" in listing


def test_customers_search_and_show_with_provenance(demo) -> None:
    demo("sync", code=PARTIAL)
    found = json.loads(demo("--json", "customers", "search", "Köfler"))  # folded: Kofler = Köfler
    assert [c["name"] for c in found] == ["Sabine Kofler"]
    gid = found[0]["id"]
    shown = json.loads(demo("--json", "customers", "show", gid[:10]))  # an id prefix is enough
    assert shown["id"] == gid
    assert {s["connection"] for s in shown["sources"]} == {"shop", "newsletter", "fair"}
    assert shown["provenance"]["address"]["connection"] == "shop"
    notes = [t for t in shown["timeline"] if t["kind"] == "note"]
    assert [n["connection"] for n in notes] == ["fair"] and "Hauptstraße 5" in notes[0]["data"]["summary"]
    table = demo("customers", "show", gid, "--why")
    assert "source_priority" in table and "shop/customers" in table


def test_conflicts_list(demo) -> None:
    demo("sync", code=PARTIAL)
    conflicts = json.loads(demo("--json", "conflicts"))
    assert sorted((c["kind"], c["field"]) for c in conflicts) == [("field", "consent.email")] * 3 + [("possible_duplicate", None)]
    assert json.loads(demo("--json", "conflicts", "--connection", "fair")) == []
    listing = demo("conflicts")
    assert "consent.email" in listing and "possible duplicate" in listing


def test_plugins_lists_builtin_connector_and_transforms(demo) -> None:
    data = json.loads(demo("--json", "plugins"))
    assert "files" in data["connectors"]
    assert {"phone_e164", "parse_date", "map_values", "country_iso"} <= set(data["transforms"])


def test_review_commands(demo) -> None:
    demo("sync", code=PARTIAL)
    conflicts = json.loads(demo("--json", "conflicts"))
    consent = next(c for c in conflicts if c["field"] == "consent.email")
    shown = demo("conflicts", "show", str(consent["id"]))
    assert "shop/customers" in shown and "newsletter/audience" in shown and "applied meanwhile" in shown
    opt_out = next(i for i, c in enumerate(consent["candidates"], 1) if c["value"]["status"] in ("unsubscribed", "cleaned"))
    result = json.loads(demo("--json", "conflicts", "resolve", str(consent["id"]), "--pick", str(opt_out), "--by", "ops"))
    assert result["action"] == "pick"
    assert consent["id"] not in [c["id"] for c in json.loads(demo("--json", "conflicts"))]
    resolved = json.loads(demo("--json", "conflicts", "--status", "resolved"))
    assert resolved[0]["resolved_by"] == "user:ops"

    dup = next(c for c in conflicts if c["kind"] == "possible_duplicate")
    assert "score" in demo("conflicts", "show", str(dup["id"]))
    demo("conflicts", "resolve", str(dup["id"]), "--merge")
    survivor = json.loads(demo("--json", "customers", "show", dup["golden_id"]))
    assert len(survivor["sources"]) >= 2
    split = json.loads(demo("--json", "customers", "split", survivor["id"]))
    assert split["split_off"]
    assert json.loads(demo("--json", "dedupe", "--dry-run"))["merges"] == []  # the split pair stays apart


def test_quarantined_values_are_shown_by_runs_show_customers_show_and_quality(demo) -> None:
    data = json.loads(demo("--json", "sync", code=PARTIAL))
    shop = next(r for r in data["runs"] if r["connection"] == "shop")
    shown = json.loads(demo("runs", "show", str(shop["run_id"]), "--json"))
    assert {(q["ref"], q["field"], q["raw"]) for q in shown["quarantined"]} == {
        ("shop_kunden.csv:32", "birth_date", "31.02.1985"), ("shop_kunden.csv:41", "emails", "mueller(at)example.de")}
    text = demo("runs", "show", str(shop["run_id"]))
    assert "quarantined values (2)" in text and "31.02.1985" in text
    quality = json.loads(demo("quality", "--json"))
    assert quality["total"] == 3
    assert {(s["connection"], s["field"], s["count"]) for s in quality["summary"]} == {
        ("shop", "birth_date", 1), ("shop", "emails", 1), ("newsletter", "consent.email.status", 1)}
    assert all(v["reason"] and v["raw"] for v in quality["values"])
    only = json.loads(demo("quality", "--connection", "shop", "--field", "emails", "--json"))
    assert [v["source_id"] for v in only["values"]] == ["K-10040"]
    assert "mueller(at)example.de" in demo("quality")
    found = json.loads(demo("--json", "customers", "search", "Wimmer"))
    shown_customer = demo("customers", "show", found[0]["id"])
    assert "not usable: birth_date '31.02.1985'" in shown_customer and "(Geburtsdatum)" in shown_customer
