"""The fast mapping and validation path gives exactly what the reference path gives.

A small seeded version of ``bench/prepare_corpus.py``: the shop benchmark's export, the intake
benchmark's dirty DACH and US rows, the demo files, the API connectors' records from the plugin
tests' fakes, and dirty variants for every mapping in ``mappings/``, each record mapped both ways
(``synchub.mapping.FAST_PATH``) and compared as ``repr``: canonical data, interactions, observed
time, owner, errors and every problem list.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from bench import prepare_corpus as pc
from synchub import mapping as mapping_mod
from synchub import schema
from synchub.schema import Company, Interaction, Person, fast_dump


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> list[pc.Corpus]:
    return pc.build(tmp_path_factory.mktemp("corpus"), shop=800, intake=600, api=120, fuzz=250, seed=7)


def test_every_mapping_is_covered(corpora: list[pc.Corpus]) -> None:
    names = {c.mapping.name for c in corpora}
    assert {p.stem for p in (Path(pc.ROOT) / "mappings").glob("*.yaml")} <= names
    assert sum(len(c.records) for c in corpora) > 5000


def test_fast_path_matches_reference(corpora: list[pc.Corpus]) -> None:
    report = pc.compare(corpora, pc.Report())
    assert report.compared > 5000
    assert report.mismatches == 0, "\n".join(report.examples)


def test_comparison_catches_a_difference(corpora: list[pc.Corpus], monkeypatch: pytest.MonkeyPatch) -> None:
    """The check can fail: a fast path that drops one field is reported."""
    real = schema.fast_dump

    def lossy(model, data):  # type: ignore[no-untyped-def]
        out = real(model, data)
        if out is not None and "last_name" in out:
            out = {k: v for k, v in out.items() if k != "last_name"}
        return out

    monkeypatch.setattr(mapping_mod, "fast_dump", lossy)
    shop = [c for c in corpora if c.label.startswith("shop:")]
    report = pc.compare(shop, pc.Report())
    assert report.mismatches > 0


def test_comparison_catches_a_different_problem_list(corpora: list[pc.Corpus], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mapping_mod.quarantine, "entry",
                        lambda field, raw, reason, **kw: {"field": field, "reason": reason,
                                                          "fast": mapping_mod.FAST_PATH, **kw})
    dirty = [c for c in corpora if c.label.startswith("dach:")]
    report = pc.compare(dirty, pc.Report())
    assert report.mismatches > 0


@pytest.mark.parametrize(("model", "data"), [
    (Person, {"emails": [" a@b.de ", "a@b.de", ""], "first_name": " Anna\u00a0", "custom": {" k ": None, "n": 1}}),
    (Person, {"lead_source": {"at": "2024-01-05T00:00:00Z", "origin": "shop"}, "birth_date": "1990-02-28"}),
    (Person, {"purchases": {"orders_count": "007", "total_spent": "0001.50", "currency": "EUR",
                            "by_currency": {"EUR": {"orders_count": 0, "total_spent": "0.00"}}}}),
    (Person, {"consent": {"email": {"status": "never", "at": "2024-01-05T10:00:00+01:00"}}, "lifecycle_stage": "lead"}),
    (Person, {"address": {}, "first_name": "\x1cx", "last_name": "ab\udcff"}),
    (Person, {"address": {"country": "de"}}),
    (Person, {"purchases": {"orders_count": -1, "total_spent": Decimal("NaN")}}),
    (Person, {"first_name": 5, "custom": {"x": [1]}}),
    (Company, {"employee_count": "12", "name": "ACME", "kind": "company"}),
    (Interaction, {"kind": "order", "occurred_at": "2024-01-05T10:00:00.5Z", "items": [{"quantity": "2"}, {}]}),
])
def test_fast_dump_is_model_dump_or_nothing(model, data) -> None:  # type: ignore[no-untyped-def]
    try:
        expected = model.model_validate(data).model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    except ValueError:
        expected = None
    got = fast_dump(model, data)
    if got is not None:
        assert repr(got) == repr(expected)
