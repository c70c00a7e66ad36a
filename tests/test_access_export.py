"""The access and portability export (issue 20): everything the hub holds about one person,
with where it came from, as JSON and as a readable page; on both stores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synchub import privacy
from synchub import store as st
from synchub.cli import app
from synchub.config import load_config
from synchub.engine import Hub
from synchub.errors import NotFoundError
from synchub.review import resolve_conflict


@pytest.fixture
def hub(demo_dir: Path, store_url: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SYNCHUB_STORE", store_url)
    h = Hub(load_config(demo_dir / "config" / "demo.yaml"))
    h.store.upgrade()
    h.sync()
    yield h
    h.store.dispose()


def test_the_export_holds_every_record_merged_into_the_person_with_its_sources(hub: Hub) -> None:
    # Thomas Brandl is two customers with a possible duplicate between them; merge them.
    dup = next(c for c in hub.store.list_conflicts("open") if c["kind"] == "possible_duplicate")
    result = resolve_conflict(hub, dup["id"], merge=True, by="user:test")
    export = privacy.access_export(hub.store, result["survivor"])
    assert export["name"] == "Thomas Brandl"
    assert {g["id"] for g in export["golden_records"]} == {result["survivor"], result["merged"]}
    emails = {e for s in export["source_records"] for e in (s["data"].get("emails") or [])}
    assert {"thomas.brandl@example.de", "thomas.brandl.alt@example.de"} <= {e.lower() for e in emails}
    assert export["sources"] == sorted({f"{s['connection']}/{s['stream']}" for s in export["source_records"]})
    assert len(export["sources"]) >= 2
    assert any(c["id"] == dup["id"] for c in export["conflicts"])
    assert any(a["action"] == "merge" and a["actor"] == "user:test" for a in export["audit"])
    # What a destination holds (the demo's file export keeps no per-record state; a CRM would).
    with hub.store.begin() as conn:
        st.record_pushes(conn, "crm", "contacts", [{"connection": "crm", "stream": "contacts", "golden_id": result["merged"],
                                                   "payload_hash": "h" * 64, "payload": {"email": "thomas.brandl.alt@example.de"},
                                                   "external_id": "501", "pushed_at": st.utcnow()}])
    export = privacy.access_export(hub.store, result["survivor"])
    [written] = export["written_to_destinations"]
    assert written["connection"] == "crm" and written["external_id"] == "501"
    # A merged-away id leads to the same export.
    assert privacy.access_export(hub.store, result["merged"])["customer"] == result["survivor"]
    # JSON round-trips; the page escapes what it shows.
    assert json.loads(privacy.to_json(export))["customer"] == result["survivor"]
    page = privacy.to_html(export)
    assert "thomas.brandl.alt@example.de" in page.lower() and "<script" not in page
    with pytest.raises(NotFoundError):
        privacy.access_export(hub.store, "nope")


def test_the_page_escapes_values(hub: Hub) -> None:
    customer = next(iter(hub.store.search_golden("Kofler")))
    export = privacy.access_export(hub.store, customer["id"])
    export["source_records"][0]["data"]["note"] = "<img src=x onerror=alert(1)>"
    page = privacy.to_html(export)
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_customers_export_command(hub: Hub, demo_dir: Path, tmp_path: Path) -> None:
    customer = next(iter(hub.store.search_golden("Kofler")))
    runner = CliRunner()
    cfg = str(demo_dir / "config" / "demo.yaml")
    env = {"SYNCHUB_STORE": hub.store.url}
    out = runner.invoke(app, ["--config", cfg, "customers", "export", customer["id"]], env=env)
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["customer"] == customer["id"]
    target = tmp_path / "kofler.html"
    out = runner.invoke(app, ["--config", cfg, "customers", "export", customer["id"], "--format", "html", "-o", str(target)], env=env)
    assert out.exit_code == 0 and target.read_text(encoding="utf-8").startswith("<!doctype html>")
