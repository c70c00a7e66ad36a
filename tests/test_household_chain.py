"""A record that matches two people must not carry one into the other's customer (issue 18).

Twins John and Carly Benger share a surname, a birth date and an address; the hard rules keep
them apart (a review item). A third record with no first name matches each of them on its own.
Before, whichever twin it met first and the other twin then merged: a wrong merge that mixed
two people's data, made without a person, by the order of the rows. Now a customer is joined
only by a record the hard rules allow with every one of its records, and a record that would
bridge two customers whose records are vetoed does not merge them. In every order, on the
bulk and the incremental path and on both stores: the twins are never in one customer, and
what was not merged is a review item."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.conftest import _pg_schema
from tests.helpers import hub_for, members_of, write_config
from tests.test_determinism import febrl_hub
from tests.test_review import CONFIG, HEADER, PEOPLE

#: FEBRL columns, in the order of tests.test_determinism.COLS
ROWS = {
    "john": ["r-john", "john", "benger", "1 gellibrand street", "grandview", "carnegie", "4011", "nsw", "19710126"],
    "carly": ["r-carly", "carly", "benger", "1 gellibrand street", "grandview", "carnegie", "4011", "nsw", "19710126"],
    "nameless": ["r-nameless", "", "benger", "1 gellibrand street", "grandview", "carnegie", "4011", "nsw", "19710126"],
    "carly2": ["r-carly2", "carly", "benger", "1 gellibrand st", "grandview", "carnegie", "4011", "nsw", "19710126"],
}


def _sync(tmp: Path, store_url: str, order: tuple[str, ...], bulk: bool) -> tuple[list[set[str]], int]:
    hub = febrl_hub(tmp, store_url, [ROWS[name] for name in order])
    hub.bulk = bulk
    [summary] = hub.sync()
    assert summary.status == "succeeded"
    open_review = hub.store.list_conflicts("open", kind="possible_duplicate")
    customers = members_of(hub.store)
    hub.store.dispose()
    return customers, len(open_review)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("bulk", [True, False], ids=["bulk", "incremental"])
def test_a_record_without_first_name_never_merges_twins(tmp_path: Path, backend: str, bulk: bool) -> None:
    names = ("john", "carly", "nameless", "carly2")
    for n, order in enumerate(itertools.permutations(names)):
        if backend == "postgresql" and n % 4:
            continue  # every fourth of the 24 orders on PostgreSQL
        schema = _pg_schema() if backend == "postgresql" else None
        url = next(schema) if schema else f"sqlite:///{tmp_path / f's{n}.db'}"
        try:
            customers, review = _sync(tmp_path / f"o{n}", url, order, bulk)
        finally:
            if schema:
                schema.close()  # drops the schema
        assert not any({"r-john", "r-carly"} <= c or {"r-john", "r-carly2"} <= c for c in customers), (order, customers)
        # Carly's two records are one customer in every order; John is apart, with a review item.
        assert any({"r-carly", "r-carly2"} <= c for c in customers), (order, customers)
        assert review >= 1, order


def test_dedupe_never_merges_twins_through_a_record_without_first_name(tmp_path: Path, store_url: str) -> None:
    from synchub.review import dedupe

    # Exact matching only during the sync (all e-mails differ): four customers, then `dedupe`.
    crm = HEADER + ("1,Jonas,Huber,jonas@example.de,,1993-08-19,Lindenstraße 12,80331,München\n"
                    "2,Lukas,Huber,lukas@example.de,,1993-08-19,Lindenstraße 12,80331,München\n"
                    "3,,Huber,huber@example.de,,1993-08-19,Lindenstraße 12,80331,München\n"
                    "4,Lukas,Huber,l.huber@example.org,,1993-08-19,Lindenstr. 12,80331,München\n")
    cfg = write_config(tmp_path, CONFIG.replace("merge:", "match:\n  person: {fuzzy: false}\nmerge:"), store_url, crm__csv=crm)
    (tmp_path / "mappings" / "people.yaml").write_text(PEOPLE, encoding="utf-8")
    hub = hub_for(cfg)
    hub.sync()
    report = dedupe(hub)
    assert report.merges, "Lukas's two records are one person"
    customers = members_of(hub.store)
    assert not any({"1", "2"} <= c or {"1", "4"} <= c for c in customers), customers
    assert any({"2", "4"} <= c for c in customers), customers
    assert report.possible, "the twins are a question for a person"
