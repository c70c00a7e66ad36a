"""Merges made during a sync can be explained (issue 18): every record that joined a customer
and every automatic merge keeps its evidence (rule, identity keys shared, score and per-field
reasons, the thresholds in force, the run); ``customers show --why`` shows it and
``customers history`` lists what happened to a customer and who did it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from synchub import store as st
from synchub.cli import app
from synchub.review import undo_merge
from tests.helpers import rows
from tests.test_review import HEADER, _active, _hub


def _audit(hub, action: str) -> list[dict]:
    return [a for a in rows(hub.store, st.audit_t) if a["action"] == action]


def test_a_record_joining_by_identity_key_or_by_score_keeps_its_evidence(tmp_path: Path, store_url: str) -> None:
    hub = _hub(tmp_path, store_url,
               "1,Robert,Müller,robert@example.de,,1980-05-17,Hauptstraße 5,80331,München\n",
               "9,Bob,Mueller,bob.private@example.com,,1980-05-17,Hauptstr. 5,80331,München\n"
               "10,Robert,Müller,robert@example.de,,,,,\n")
    summaries = hub.sync()
    (g,) = _active(hub)
    by_source = {a["details"]["source"]: a for a in _audit(hub, "match")}
    assert set(by_source) == {"shop/people/9", "shop/people/10"}
    fuzzy, exact = by_source["shop/people/9"], by_source["shop/people/10"]
    assert fuzzy["golden_id"] == g["id"] and fuzzy["actor"] == f"run:{summaries[1].run_id}"
    assert fuzzy["details"]["rule"] == "fuzzy match" and fuzzy["details"]["identity_keys"] == []
    assert fuzzy["details"]["score"] >= fuzzy["details"]["thresholds"]["upper"] == 20.0
    assert fuzzy["details"]["outcome"] == "match" and any("birth" in r for r in fuzzy["details"]["reasons"])
    assert fuzzy["details"]["run"] == summaries[1].run_id
    assert exact["details"]["rule"] == "identity key" and exact["details"]["identity_keys"] == ["email"]


def test_a_merge_of_two_golden_records_keeps_the_evidence_of_the_record_that_linked_them(tmp_path: Path, store_url: str) -> None:
    hub = _hub(tmp_path, store_url, "1,Ann,Lee,ann@example.com,,,,,\n2,Ann,Lee,,+49 151 12345678,,,,\n")
    hub.sync(["crm"])
    assert len(_active(hub)) == 2
    (tmp_path / "data" / "shop.csv").write_text(HEADER + "7,Ann,Lee,ann@example.com,+49 151 12345678,,,,\n", encoding="utf-8")
    hub.sync(["shop"])
    (merge,) = _audit(hub, "merge")
    why = merge["details"]["evidence"]
    (moved,) = [s["source_id"] for s in rows(hub.store, st.source_t) if s["id"] in merge["details"]["source_records"]]
    # The merged-away record shared the e-mail (crm 1) or the phone (crm 2) with the linking record.
    assert why["record"] == "shop/people/7" and why["identity_keys"] == {"1": ["email"], "2": ["phone"]}[moved]
    assert why["rule"] == "identity key" and why["thresholds"] == {"upper": 20.0, "lower": 13.0} and why["run"]


def test_possible_duplicates_keep_thresholds_and_run(tmp_path: Path, store_url: str) -> None:
    hub = _hub(tmp_path, store_url,
               "1,Anna,Müller,familie.mueller@example.de,,1975-03-02,Lindenstraße 4,80331,München\n"
               "2,Peter,Müller,familie.mueller@example.de,,1972-11-20,Lindenstr. 4,80331,München\n")
    (summary,) = hub.sync(["crm"])
    (c,) = rows(hub.store, st.conflict_t)
    (cand,) = c["candidates"]
    assert cand["thresholds"] == {"upper": 20.0, "lower": 13.0} and cand["run"] == summary.run_id
    assert cand["reasons"] and cand["score"] < 20.0


@pytest.fixture
def cli(tmp_path: Path, store_url: str):
    hub = _hub(tmp_path, store_url, "1,Ann,Lee,ann@example.com,,,,,\n2,Ann,Lee,,+49 151 12345678,,,,\n")
    hub.sync(["crm"])
    (tmp_path / "data" / "shop.csv").write_text(HEADER + "7,Ann,Lee,ann@example.com,+49 151 12345678,,,,\n", encoding="utf-8")
    hub.sync(["shop"])
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(app, ["--config", str(tmp_path / "synchub.yaml"), *args])
        assert result.exit_code == 0, result.output
        return result.output

    return hub, run


def test_customers_show_why_and_history(cli) -> None:
    hub, run = cli
    (g,) = _active(hub)
    shown = run("customers", "show", g["id"], "--why")
    assert "why these records are one customer:" in shown
    # It joined the one of Ann's two records that won (by e-mail or by phone), and merged the other.
    assert re.search(r"shop/people/7 joined: identity key, same (email|phone), score \d", shown)
    assert "decided on shop/people/7" in shown and "(by run:" in shown
    loser = undo_merge(hub, g["id"], by="user:ops")
    history = json.loads(run("--json", "customers", "history", g["id"]))
    actions = [(e["action"], e["actor"]) for e in history]
    assert [a for a, _by in actions if a in ("merge", "split")] == ["merge", "split"]
    assert actions[2:4] == [("merge", "run:2"), ("match", "run:2")]  # the second run linked them
    assert ("split", "user:ops") in actions
    assert any(e["golden_id"] == loser and e["action"] == "create" for e in history)  # the merged record's own history
    assert [e["id"] for e in history] == sorted(e["id"] for e in history)
    text = run("customers", "history", g["id"])
    assert "user:ops" in text and "split" in text and "merged" in text
