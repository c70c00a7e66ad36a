"""Declarative mappings: short and long forms, transform chains, constants, lists, timeline."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from synchub.errors import MappingError, RecordValidationError
from synchub.mapping import compile_mapping
from synchub.plugins import get_transforms
from synchub.yamlfile import load_yaml


def _mapping(tmp_path: Path, text: str):
    p = tmp_path / "m.yaml"
    p.write_text(text, encoding="utf-8")
    mapping, problems = compile_mapping(load_yaml(p), get_transforms(), defaults={"phone_region": "CH"})
    assert problems == [], problems
    assert mapping is not None
    return mapping


def test_short_and_long_forms_constants_and_lists(tmp_path: Path) -> None:
    m = _mapping(tmp_path, """
entity: person
fields:
  first_name: {path: name.first, transform: title}
  last_name: name.last
  emails: [E-Mail, {path: E-Mail 2, transform: email}]
  phones: {path: Tel, transform: phone_e164}
  tags: {path: Tags, transform: split, args: {sep: ";"}}
  address.country: {path: Land, transforms: [trim, country_iso]}
  consent.email.status: {path: NL, transform: map_values, args: {values: {ja: subscribed, nein: never}}}
  lead_source.origin: {value: trade_fair}
  custom.shoe_size: {path: Size, transform: default, args: {value: "unknown"}}
""")
    out = m.to_canonical({
        "name": {"first": "ANNA", "last": "Lüthi"}, "E-Mail": "a@example.ch", "E-Mail 2": " Anna@Work.CH ",
        "Tel": "044 668 18 00", "Tags": "a; b;;", "Land": " Schweiz ", "NL": "Ja",
    })
    assert out == {
        "kind": "person", "first_name": "Anna", "last_name": "Lüthi", "emails": ["a@example.ch", "anna@work.ch"],
        "phones": ["+41446681800"], "tags": ["a", "b"], "address": {"country": "CH"},
        "consent": {"email": {"status": "subscribed"}}, "lead_source": {"origin": "trade_fair"},
        "custom": {"shoe_size": "unknown"},
    }


def test_bad_value_names_field_and_source(tmp_path: Path) -> None:
    m = _mapping(tmp_path, "entity: person\nfields:\n  birth_date: {path: GebDat, transform: parse_date, args: {format: '%d.%m.%Y'}}\n")
    with pytest.raises(MappingError) as excinfo:
        m.to_canonical({"GebDat": "31.02.1985"})
    assert excinfo.value.field == "birth_date"
    assert "birth_date (from 'GebDat')" in str(excinfo.value) and "31.02.1985" in str(excinfo.value)


def test_schema_violation_is_a_record_error(tmp_path: Path) -> None:
    m = _mapping(tmp_path, "entity: person\nfields:\n  purchases.orders_count: n\n")
    with pytest.raises(RecordValidationError) as excinfo:
        m.to_canonical({"n": "-3"})
    assert excinfo.value.field == "purchases.orders_count"


def test_out_mapping_and_field_order(tmp_path: Path) -> None:
    m = _mapping(tmp_path, """
entity: person
direction: out
fields:
  ID: id
  Mail: emails.0
  Umsatz: {path: purchases.total_spent, transform: format_decimal, args: {decimal_comma: true, places: 2}}
""")
    assert m.field_names == ["ID", "Mail", "Umsatz"]
    assert m.apply({"id": "g1", "emails": ["a@x.de", "b@x.de"], "purchases": {"total_spent": "1234.5"}}) == {
        "ID": "g1", "Mail": "a@x.de", "Umsatz": "1.234,50"}


def test_interactions_and_observed_at(tmp_path: Path) -> None:
    m = _mapping(tmp_path, """
entity: person
observed_at: {path: changed, transform: parse_datetime}
fields:
  emails: mail
interactions:
  - kind: note
    fields:
      summary: note
      occurred_at: {path: when, transform: parse_date}
""")
    default = datetime(2024, 1, 1, tzinfo=timezone.utc)
    rec = {"mail": "a@x.de", "note": "call back", "when": "2024-06-18", "changed": "2024-06-19T10:00:00Z"}
    assert m.observed(rec) == datetime(2024, 6, 19, 10, tzinfo=timezone.utc)
    assert m.interactions_of(rec, default) == [{"kind": "note", "summary": "call back", "occurred_at": "2024-06-18"}]
    assert m.interactions_of({"mail": "a@x.de"}, default) == []  # no note: no entry


def test_mappings_cannot_run_code(tmp_path: Path) -> None:
    p = tmp_path / "m.yaml"
    p.write_text("entity: person\nfields:\n  first_name: {path: x, transform: \"__import__('os').system\"}\n", encoding="utf-8")
    _mapping_obj, problems = compile_mapping(load_yaml(p), get_transforms())
    assert any("unknown transform" in str(pr) for pr in problems)
    p.write_text("!!python/object/apply:os.system ['true']\n", encoding="utf-8")
    with pytest.raises(yaml.YAMLError):
        load_yaml(p)


def test_every_shipped_mapping_compiles() -> None:
    root = Path(__file__).resolve().parents[1] / "mappings"
    files = sorted(root.glob("*.yaml"))
    assert files
    for f in files:
        mapping, problems = compile_mapping(load_yaml(f), get_transforms())
        assert problems == [] and mapping is not None, (f, problems)


def test_quarantined_values_name_their_source_field(tmp_path: Path) -> None:
    m = _mapping(tmp_path, """
entity: person
fields:
  phones: [tel, mobil]
  address.country: land
interactions:
  - kind: order
    fields:
      summary: note
      amount: betrag
""")
    default = datetime(2024, 1, 1, tzinfo=timezone.utc)
    problems: list[dict] = []
    entries = m.interactions_of({"note": "order 1", "betrag": "viel"}, default, problems)
    assert entries and "amount" not in entries[0]
    assert [(p["field"], p["raw"]) for p in problems] == [("interaction.amount", "viel")]
    assert m.source_of("interaction.amount") == "betrag"
    assert m.source_of("address.country") == "land"
    assert m.source_of("phones") == "tel"  # the first of several sources
    assert m.source_of("interaction.summary") == "note" and m.source_of("birth_date") is None
