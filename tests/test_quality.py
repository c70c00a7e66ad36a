"""The data-quality report (``synchub.quality``) on the demo store, SQLite and PostgreSQL: each
figure checked against a count computed here from the rows, after changing the store where a
figure would otherwise be trivial; the CSV and HTML twins checked for injection and escaping."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from synchub import quality
from synchub.review import resolve_conflict
from synchub.store import Store, audit_t, conflict_t, golden_t, source_t, utcnow
from tests.helpers import demo_hub


@pytest.fixture
def hub(demo_dir, store_url):
    hub = demo_hub(demo_dir, store_url)
    hub.sync(["shop", "newsletter", "fair"])
    yield hub
    hub.store.dispose()


def _all(store: Store, table: sa.Table, *where: Any) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(table).where(*where))]


def _stream(rows: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(r for r in rows if f"{r['connection']}/{r['stream']}" == name)


def _field(stream: dict[str, Any], field: str) -> dict[str, Any] | None:
    return next((f for f in stream["fields"] if f["field"] == field), None)


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------


def test_counts_and_completeness_match_the_rows(hub) -> None:
    store = hub.store
    report = quality.build_report(store)
    goldens = _all(store, golden_t, golden_t.c.status == "active")
    live = _all(store, source_t, source_t.c.deleted.is_(False))
    persons = [g for g in goldens if g["kind"] == "person"]
    assert persons, "the demo syncs persons"
    assert report["summary"]["customers"]["person"]["active"] == len(persons)
    assert report["summary"]["active_customers"] == len(goldens)
    assert report["summary"]["source_records"] == len(live)
    per_stream = Counter(f"{r['connection']}/{r['stream']}" for r in live)
    assert {f"{r['connection']}/{r['stream']}": r["records"] for r in report["summary"]["streams"]} == dict(per_stream)

    # e-mail completeness of each stream = its records with a non-empty e-mail list
    for name, n in per_stream.items():
        stream = _stream(report["completeness"]["streams"], name)
        with_email = sum(1 for r in live if f"{r['connection']}/{r['stream']}" == name and r["data"].get("emails"))
        assert stream["records"] == n
        emails = _field(stream, "emails")
        assert emails is not None and emails["filled"] == with_email
        assert emails["share"] == round(with_email / n, 4)
    # a nested field is flattened: postcodes of the shop
    shop = [r for r in live if r["connection"] == "shop"]
    postcodes = sum(1 for r in shop if (r["data"].get("address") or {}).get("postal_code"))
    assert postcodes > 0
    assert _field(_stream(report["completeness"]["streams"], "shop/customers"), "address.postal_code")["filled"] == postcodes
    # golden completeness: last names of active persons
    golden = next(g for g in report["completeness"]["golden"] if g["kind"] == "person")
    assert _field(golden, "last_name")["filled"] == sum(1 for g in persons if g["data"].get("last_name"))


def test_quarantined_values_show_in_validity_and_completeness(hub) -> None:
    store = hub.store
    live = _all(store, source_t, source_t.c.deleted.is_(False))
    expected: Counter[tuple[str, str]] = Counter()
    for r in live:
        for field in {e["field"] for e in r["quarantine"] or () if e.get("status", "quarantined") == "quarantined"}:
            expected[(f"{r['connection']}/{r['stream']}", field)] += 1
    assert expected, "the demo data holds unusable values on purpose"
    # one more, made here: a second shop record loses its birth date to the quarantine
    victim = next(r for r in live if r["connection"] == "shop" and r["data"].get("birth_date") and not r["quarantine"])
    data = {k: v for k, v in victim["data"].items() if k != "birth_date"}
    entry = {"field": "birth_date", "rule": "parse_date", "raw": "30.02.1990", "status": "quarantined",
             "reason": "not a date in format dd.mm.yyyy", "source": "Geburtsdatum"}
    with store.engine.begin() as conn:
        conn.execute(source_t.update().where(source_t.c.id == victim["id"]).values(data=data, quarantine=[entry]))
    expected[("shop/customers", "birth_date")] += 1

    report = quality.build_report(store)
    got = {(f"{s['connection']}/{s['stream']}", f["field"]): f["quarantined"]
           for s in report["validity"]["streams"] for f in s["fields"]}
    assert got == dict(expected)
    shop_v = _stream(report["validity"]["streams"], "shop/customers")
    birth = _field(shop_v, "birth_date")
    shop_rows = [r for r in _all(store, source_t, source_t.c.connection == "shop")]
    filled = sum(1 for r in shop_rows if r["data"].get("birth_date"))
    flagged_without_value = sum(1 for r in shop_rows if not r["data"].get("birth_date")
                                and any(e["field"] == "birth_date" for e in r["quarantine"] or ()))
    assert birth["delivered"] == filled + flagged_without_value
    assert birth["quarantined_share"] == round(birth["quarantined"] / len(shop_rows), 4)
    assert _field(_stream(report["completeness"]["streams"], "shop/customers"), "birth_date")["quarantined"] \
        == flagged_without_value
    reasons = [r for r in report["validity"]["reasons"]
               if r["connection"] == "shop" and r["field"] == "birth_date" and r["rule"] == "parse_date"]
    assert sum(r["values"] for r in reasons) == expected[("shop/customers", "birth_date")]
    assert report["summary"]["quarantined_records"] == sum(1 for r in _all(store, source_t) if r["quarantine"])


def _last_observed(store: Store) -> dict[str, datetime | None]:
    """When a source last confirmed each active customer (``confirmed_at``, else ``changed_at``)."""
    last: dict[str, datetime | None] = {g["id"]: None for g in _all(store, golden_t, golden_t.c.status == "active")}
    for r in _all(store, source_t, source_t.c.deleted.is_(False)):
        seen = r["confirmed_at"] or r["changed_at"]
        if r["golden_id"] in last and (last[r["golden_id"]] is None or seen > last[r["golden_id"]]):
            last[r["golden_id"]] = seen
    return last


def test_stale_customers_follow_confirmed_at(hub) -> None:
    store = hub.store
    now = utcnow()
    cutoff = now - timedelta(days=90)

    def expected() -> int:
        return sum(1 for t in _last_observed(store).values() if t is None or t < cutoff)

    before = quality.build_report(store, now=now)
    assert before["stale"]["stale"] == expected()
    assert _stream(before["stale"]["streams"], "shop/customers")["stale"] == 0

    # one customer known only to the shop was last delivered 200 days ago
    sources = _all(store, source_t)
    owners = Counter(r["golden_id"] for r in sources)
    shop_only = next(r for r in sources if r["connection"] == "shop" and owners[r["golden_id"]] == 1)
    with store.engine.begin() as conn:
        conn.execute(source_t.update().where(source_t.c.id == shop_only["id"])
                     .values(confirmed_at=now - timedelta(days=200), observed_at=now - timedelta(days=200)))
    after = quality.build_report(store, now=now)
    assert after["stale"]["stale"] == expected() == before["stale"]["stale"] + 1
    assert _stream(after["stale"]["streams"], "shop/customers")["stale"] == 1
    buckets = {b["age"]: b["customers"] for b in after["stale"]["last_confirmed"]}
    assert sum(buckets.values()) == after["stale"]["active"]
    assert buckets["181–365 days"] == sum(
        1 for t in _last_observed(store).values() if t is not None and now - timedelta(days=365) <= t < now - timedelta(days=180))
    # a shorter window makes more customers stale, never fewer
    assert quality.build_report(store, now=now, stale_days=0)["stale"]["stale"] == after["stale"]["active"]


def test_email_health_and_consent_coverage_match_golden_data(hub) -> None:
    store = hub.store
    report = quality.build_report(store)
    persons = [g["data"] for g in _all(store, golden_t, golden_t.c.status == "active", golden_t.c.kind == "person")]
    statuses = Counter(((d.get("consent") or {}).get("email") or {}).get("status") or "none" for d in persons)
    health = report["email_health"]
    assert {k: v for k, v in health["statuses"].items() if v} == dict(statuses)
    assert health["persons"] == len(persons)
    assert statuses["unsubscribed"] and statuses["cleaned"], "the demo has opt-outs and bounces"
    listed = sum(statuses[s] for s in ("subscribed", "pending", "unsubscribed", "cleaned"))
    assert health["opt_out_rate"] == round(statuses["unsubscribed"] / listed, 4)
    assert health["cleaned_rate"] == round(statuses["cleaned"] / listed, 4)
    email = next(c for c in report["consent_coverage"]["channels"] if c["channel"] == "email")
    assert email["known"] == len(persons) - statuses["none"]
    assert email["granted"] == statuses["subscribed"]
    assert email["reachable"] == sum(1 for d in persons if d.get("emails"))
    post = next(c for c in report["consent_coverage"]["channels"] if c["channel"] == "post")
    assert post["known"] == sum(1 for d in persons if ((d.get("consent") or {}).get("post") or {}).get("status"))


def test_segments_are_counted_with_the_segment_filters(hub) -> None:
    store = hub.store
    segments = {
        **quality.segments_from_config(hub.config),
        "dach-subscribers": {"address.country": {"in": ["AT", "CH"]}, "consent.email.status": "subscribed"},
        "typo": {"adress.country": "DE"},
    }
    report = quality.build_report(store, segments=segments)
    sizes = {s["name"]: s for s in report["segments"]}
    persons = [g["data"] for g in _all(store, golden_t, golden_t.c.status == "active", golden_t.c.kind == "person")]
    assert sizes["export/customers"]["size"] == len(persons)  # an outbound stream without a filter
    dach = sum(1 for d in persons if (d.get("address") or {}).get("country") in ("AT", "CH")
               and ((d.get("consent") or {}).get("email") or {}).get("status") == "subscribed")
    assert dach > 0
    assert sizes["dach-subscribers"]["size"] == dach
    assert "adress.country" in sizes["typo"]["error"] and "size" not in sizes["typo"]


def test_duplicates_and_review_items_over_time(hub) -> None:
    store = hub.store
    now = utcnow()
    # one review item is three weeks old; a possible duplicate is merged by a reviewer
    conflicts = _all(store, conflict_t)
    field_item = next(c for c in conflicts if c["kind"] == "field")
    with store.engine.begin() as conn:
        conn.execute(conflict_t.update().where(conflict_t.c.id == field_item["id"])
                     .values(created_at=now - timedelta(days=21)))
    dup = next(c for c in conflicts if c["kind"] == "possible_duplicate")
    resolve_conflict(hub, dup["id"], merge=True, by="user:alice")

    report = quality.build_report(store, now=now)
    d = report["duplicates"]
    rows = _all(store, conflict_t)
    assert d["open_review_items"] == {k: sum(1 for c in rows if c["kind"] == k and c["status"] == "open")
                                      for k in {c["kind"] for c in rows}}
    assert len(d["periods"]) >= 4  # from three weeks back to this week, gaps filled
    merges = _all(store, audit_t, audit_t.c.action == "merge")
    assert d["totals"]["merges_manual"] == sum(1 for m in merges if not m["actor"].startswith("run:")) == 1
    assert d["totals"]["merges_auto"] == sum(1 for m in merges if m["actor"].startswith("run:"))
    assert d["totals"]["matches"] == len(_all(store, audit_t, audit_t.c.action == "match"))
    # open at each period's end, by the definition, per period
    for p in d["periods"]:
        start = datetime.fromisoformat(p["start"]).replace(tzinfo=timezone.utc)
        end = start + timedelta(days=7)
        for kind in p["review_open"]:
            open_then = sum(1 for c in rows if c["kind"] == kind and c["created_at"] < end
                            and (c["status"] == "open" or (c["resolved_at"] is not None and c["resolved_at"] >= end)))
            assert p["review_open"][kind] == open_then, (p["period"], kind)
    assert d["periods"][0]["review_open"]["field"] == 1  # the old item, alone in its week
    assert d["periods"][-1]["review_open"] == d["open_review_items"]
    assert sum(p["review_created"]["possible_duplicate"] for p in d["periods"]) == \
        sum(1 for c in rows if c["kind"] == "possible_duplicate")
    assert d["periods"][-1]["merges_manual"] == 1
    assert d["oldest_open"].startswith((now - timedelta(days=21)).date().isoformat())
    monthly = quality.build_report(store, now=now, period="month")["duplicates"]
    assert sum(p["matches"] for p in monthly["periods"]) == d["totals"]["matches"]


def test_an_empty_store_gives_an_empty_report(store, tmp_path: Path) -> None:
    report = quality.build_report(store)
    assert report["summary"]["active_customers"] == 0
    assert report["stale"]["share"] is None and report["email_health"]["opt_out_rate"] is None
    assert report["duplicates"]["periods"] == []
    paths = quality.write_report(report, tmp_path)
    assert [p.suffix for p in paths] == [".html", ".json", ".csv"]
    assert "Nothing to show" in paths[0].read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# the files
# ---------------------------------------------------------------------------------------------


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: Counter[str] = Counter()
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags[tag] += 1
        self.attrs.extend(attrs)


def _inject(store: Store) -> None:
    """Customer-provided text where the report shows it: a custom field's name, a reason."""
    row = _all(store, source_t, source_t.c.connection == "fair")[0]
    data = {**row["data"], "custom": {"<script>alert(1)</script>": "x", "=cmd|' /C calc'!A0": "y"}}
    entries = [{"field": "phones", "rule": "phone", "raw": "x", "status": "quarantined",
                "reason": "<img src=x onerror=alert(2)> +SUM(1)"},
               {"field": "=cmd|' /C calc'!A0", "rule": "@SUM(1+1)", "raw": "y", "status": "quarantined",
                "reason": "-2+3"}]
    with store.engine.begin() as conn:
        conn.execute(source_t.update().where(source_t.c.id == row["id"]).values(data=data, quarantine=entries))


def test_html_is_self_contained_escaped_and_has_plots(hub) -> None:
    _inject(hub.store)
    now = utcnow()
    report = quality.build_report(hub.store, now=now, segments=quality.segments_from_config(hub.config))
    page = quality.render_html(report)
    parser = _Tags()
    parser.feed(page)
    parser.close()
    assert parser.tags["svg"] >= 6  # completeness, validity, stale, duplicates, e-mail, consent, segments
    assert parser.tags["table"] >= 5
    assert parser.tags["script"] == 0 and parser.tags["img"] == 0
    assert not any(name.startswith("on") for name, _ in parser.attrs)
    assert not [name for name, _ in parser.attrs if name == "src"]
    assert not [v for name, v in parser.attrs if name.endswith("href") and not (v or "").startswith("#")]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "<script" not in page.lower()
    # the same report renders to the same bytes (ids in the SVGs are salted, not random)
    assert quality.render_html(report) == page


def test_csv_is_excel_ready_and_never_a_formula(hub, tmp_path: Path) -> None:
    _inject(hub.store)
    report = quality.build_report(hub.store)
    out = tmp_path / "reports"
    html_path, json_path, csv_path = quality.write_report(report, out)
    day = report["generated_at"][:10]
    assert [p.name for p in (html_path, json_path, csv_path)] == [f"quality-{day}.{x}" for x in ("html", "json", "csv")]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (html_path, json_path, csv_path))
    assert json.loads(json_path.read_text(encoding="utf-8")) == json.loads(json.dumps(report))
    raw = csv_path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig")), delimiter=";"))
    assert tuple(rows[0]) == quality.CSV_HEADER
    assert all(len(r) == 6 for r in rows)
    cells = [c for r in rows for c in r]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@")]
    assert "'=cmd|' /C calc'!A0" in [r[3] for r in rows]
    assert any(r[4].startswith("quarantined values (phone): <img") for r in rows)
    assert "quarantined values (@SUM(1+1)): -2+3" in [r[4] for r in rows]
    # the figures are those of the report
    by_key = {(r[0], r[1], r[2], r[3], r[4]): r[5] for r in rows[1:]}
    persons = report["summary"]["customers"]["person"]["active"]
    assert by_key[("summary", "", "", "person", "customers_active")] == str(persons)
    email = _field(_stream(report["completeness"]["streams"], "newsletter/audience"), "emails")
    assert by_key[("completeness", "newsletter", "audience", "emails", "filled")] == str(email["filled"])


def test_write_report_refuses_an_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pdf"):
        quality.write_report({"generated_at": "2026-01-01T00:00:00Z"}, tmp_path, formats=("pdf",))


@pytest.mark.parametrize(("value", "cell"), [
    ("=1+1", "'=1+1"), ("+49 171", "'+49 171"), ("-x", "'-x"), ("@A1", "'@A1"), ("\t=1", "'\t=1"),
    ("a=1", "a=1"), (42, "42"), (0.25, "0.25"), (1.0, "1"), (None, ""),
])
def test_csv_cells(value: Any, cell: str) -> None:
    assert quality._csv_cell(value) == cell


# ---------------------------------------------------------------------------------------------
# the command, the schedule in serve, the REST API
# ---------------------------------------------------------------------------------------------


def test_the_command_the_schedule_and_the_api(hub, demo_dir: Path, store_url: str, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from synchub import accounts, exitcodes
    from synchub.cli import _run
    from synchub.config import load_config
    from synchub.scheduler import build_scheduler, quality_job
    from synchub.web.api import create_app

    monkeypatch.setenv("SYNCHUB_STORE", store_url)
    cfg = demo_dir / "config" / "demo.yaml"
    assert _run(["--config", str(cfg), "quality", "report", "-o", str(tmp_path / "cli")]) == exitcodes.OK
    written = sorted(p.suffix for p in (tmp_path / "cli").iterdir())
    assert written == [".csv", ".html", ".json"]
    report = json.loads(next((tmp_path / "cli").glob("*.json")).read_text(encoding="utf-8"))
    assert report["summary"]["active_customers"] == len(_all(hub.store, golden_t, golden_t.c.status == "active"))
    assert [g["name"] for g in report["segments"]] == ["export/customers"]  # the config's segments
    assert _run(["--config", str(cfg), "quality", "report", "--period", "year"]) == exitcodes.USAGE

    # serve: a schedule in the config adds the job; the job writes into quality.out.
    cfg.write_text(cfg.read_text(encoding="utf-8") + "\nquality: {out: ../reports, schedule: {cron: '0 6 1 * *'}}\n",
                   encoding="utf-8")
    scheduled = hub.__class__(load_config(cfg))
    job = build_scheduler(scheduled).get_job("quality-report")
    assert job is not None and job.func is quality_job and "day='1'" in str(job.trigger)
    paths = quality_job(scheduled)
    assert paths and all(Path(p).parent == (demo_dir / "reports").resolve() for p in paths)
    scheduled.store.dispose()

    # The API: figures for marketing, the page with a CSP that allows its inline styles only.
    accounts.add_user(hub.store, "mara", "marketing", "a long enough password 1")
    accounts.add_user(hub.store, "vic", "viewer", "a long enough password 1")
    client = TestClient(create_app(hub))
    mara = {"Authorization": f"Bearer {accounts.add_token(hub.store, 'mara', 'test')}"}
    vic = {"Authorization": f"Bearer {accounts.add_token(hub.store, 'vic', 'test')}"}
    figures = client.get("/api/v1/quality", headers=mara)
    assert figures.status_code == 200 and figures.json()["summary"] == report["summary"]
    page = client.get("/api/v1/quality.html", headers=mara)
    assert page.status_code == 200 and page.text.count("<svg") >= 5
    csp = page.headers["content-security-policy"]
    assert "script-src" not in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert client.get("/api/v1/quality", headers=vic).status_code == 403


def test_reasons_in_the_report_hold_no_customer_value(hub) -> None:
    """A check's reason may quote the value it refused (in another spelling than the raw value):
    the report keeps the reason, never the value."""
    store = hub.store
    row = _all(store, source_t, source_t.c.connection == "shop")[0]
    entry = {"field": "emails", "rule": "email", "status": "quarantined", "raw": " max@mustermann",
             "reason": "not a plausible email address: 'max@mustermann' (domain has no dot)"}
    with store.engine.begin() as conn:
        conn.execute(source_t.update().where(source_t.c.id == row["id"]).values(quarantine=[entry]))
    report = quality.build_report(store)
    text = json.dumps(report) + quality.render_csv(report)
    assert "mustermann" not in text
    assert any(r["reason"] == "not a plausible email address: '…' (domain has no dot)" for r in report["validity"]["reasons"])
