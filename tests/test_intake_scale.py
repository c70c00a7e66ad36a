"""Issue 16 at a small scale: a dirty DACH export and a US export with an invalid phone in every
fifth row land with fewer than 0.1 % of rows rejected, every quarantined value reported with its
reason, and no row lost.

The data comes from ``bench/intake_data.py``, shared with ``bench/intake_bench.py`` (which runs
the same exports at 100,000 rows through the CLI and measures its exit code). Every row carries
its truth: which values were planted bad and what the hub should do with each, which phone
number it was built from, which rows are junk that must be rejected. ``intake_data.analyse``
compares the store with it; these tests assert on that and on the store directly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from bench import intake_data
from synchub import store as st
from tests.helpers import hub_for, rows

ROWS = 5000  # three planted junk rows (0.06 %) per ROWS, see intake_data._junk_kind
pytestmark = pytest.mark.slow


def _sync(tmp_path: Path, store_url: str, kind: str, encoding: str | None = None):
    exp = intake_data.GENERATORS[kind].export
    (tmp_path / "data").mkdir()
    info, truths = intake_data.write_export(tmp_path / "data" / exp.file_name, kind, ROWS,
                                            encoding=encoding, junk_every=ROWS)
    assert info["junk_rows"] == 3
    hub = hub_for(intake_data.write_config(tmp_path, kind, store_url))
    [summary] = hub.sync([exp.connection])
    return hub, summary, summary.streams[exp.stream], truths


def _check_intake(hub, summary, counts, truths, kind: str) -> dict:
    """What issue 16 asks of every export; returns the analysis for export-specific checks."""
    run = summary.run_id
    rejected = rows(hub.store, st.rejected_t, st.rejected_t.c.run_id == run)
    logged = rows(hub.store, st.quarantined_t, st.quarantined_t.c.run_id == run)
    with hub.store.engine.connect() as conn:
        landed = conn.execute(sa.select(sa.func.count()).select_from(st.source_t)).scalar_one()

    # Fewer than 0.1 % of rows rejected; the run says partial exactly when some were.
    assert counts.rejected == len(rejected) < ROWS * 0.001
    assert summary.status == ("partial" if rejected else "succeeded")
    # No row lost silently: every row of the file was read and either landed or was rejected.
    assert counts.read == ROWS == landed + len(rejected)
    assert counts.created + counts.duplicates + counts.updated + counts.unchanged + counts.rejected == counts.read
    # Every quarantined (or unverified) value is reported with its reason and the value as read.
    assert logged, "a dirty export without a single quarantined value: the generator or the engine is broken"
    assert all(q["reason"] and q["reason"].strip() and q["raw"] for q in logged)
    assert counts.quarantined == sum(q["status"] == "quarantined" for q in logged)
    assert counts.unverified == sum(q["status"] == "unverified" for q in logged)

    report = intake_data.analyse(hub.store, run, kind, truths)
    # Rejected are exactly the planted junk rows (a stub of placeholders, a row with an unquoted
    # delimiter, a row without its customer number) and rows with nothing identifying left;
    # every planted bad value got its outcome; no valid value was quarantined; valid phone
    # numbers landed as the number they were built from.
    assert report["rejects_of_planted_junk"] == report["planted_junk"] == 3
    assert report["problems"] == []
    return report


def test_dach_export(tmp_path: Path, store_url: str) -> None:
    # Excel writes either encoding; each backend reads one (the benchmark: cp1252 at 100k).
    encoding = "cp1252" if store_url.startswith("sqlite") else "utf-8-sig"
    hub, summary, counts, truths = _sync(tmp_path, store_url, "dach", encoding)
    try:
        report = _check_intake(hub, summary, counts, truths, "dach")
        fields = {q["field"] for q in report["reasons"]}
        assert {"phones", "emails", "birth_date", "address.postal_code", "address.country"} <= fields
        # The examples of the issue: too many digits (CH) quarantined, a spreadsheet number too.
        outcome = {(p["defect"], p["outcome"]): p["count"] for p in report["planted"]}
        assert outcome.get(("too many digits (CH)", "quarantined"))
        assert outcome.get(("spreadsheet number", "quarantined"))
        assert report["valid_phones_landed"] > ROWS // 2
    finally:
        hub.store.dispose()


def test_us_export_with_invalid_phones_in_a_fifth_of_the_rows(tmp_path: Path, store_url: str) -> None:
    hub, summary, counts, truths = _sync(tmp_path, store_url, "us")
    try:
        _check_intake(hub, summary, counts, truths, "us")
        invalid = [t for t in truths if t.invalid_phone_row]
        assert len(invalid) == ROWS // 5
        records = {r["source_id"]: r for r in rows(hub.store, st.source_t)}
        statuses = {"quarantined": 0, "unverified": 0}
        unverified_kept: set[str] = set()
        for t in invalid:
            rec = records.get(t.source_id)
            assert rec is not None, f"line {t.line}: the row was rejected for its phone {t.phone_raw!r}"
            [entry] = [e for e in rec["quarantine"] or () if e["field"] == "phones" and e["raw"] == t.phone_raw]
            assert entry["reason"]
            statuses[entry["status"]] += 1
            phones = rec["data"].get("phones") or []
            if entry["status"] == "quarantined":
                assert phones == [], f"line {t.line}: {t.phone_raw!r} quarantined but the record has {phones}"
            else:  # kept, flagged: made-up area codes, exchanges starting with 0 or 1
                assert phones == [entry["kept"]]
                unverified_kept.add(entry["kept"])
            assert rec["data"].get("first_name") or rec["data"].get("last_name")  # the rest of the row landed
        assert statuses["quarantined"] and statuses["unverified"]
        assert counts.unverified == statuses["unverified"]
        # Identity keys (the US config matches on e-mail *and* phone) never rest on an
        # unverified number: (123) 456-7890 in many rows must not merge those customers.
        phone_keys = {k["key_value"] for k in rows(hub.store, st.key_t, st.key_t.c.key_type == "phone")}
        assert phone_keys, "valid phones should be identity keys in this config"
        assert not phone_keys & unverified_kept
    finally:
        hub.store.dispose()
