"""Segment filters: which golden records an outbound stream receives."""

from __future__ import annotations

import pytest

from synchub.segment import FilterError, compile_filter

ANN = {
    "first_name": "Ann", "lifecycle_stage": "customer", "address": {"country": "DE", "city": "Köln"},
    "purchases": {"total_spent": "120.50", "currency": "EUR", "last_order_at": "2026-03-01"},
    "tags": ["VIP", "newsletter"], "consent": {"email": {"status": "subscribed", "method": "form"}},
    "lead_source": {"origin": "trade_fair"},
}
BOB = {"first_name": "Bob", "lifecycle_stage": "lead", "address": {"country": "FR"}, "tags": [],
       "consent": {"email": {"status": "unsubscribed"}}}


@pytest.mark.parametrize(("spec", "ann", "bob"), [
    ({}, True, True),
    ({"lifecycle_stage": "customer"}, True, False),
    ({"lifecycle_stage": {"in": ["customer", "evangelist"]}}, True, False),
    ({"address.country": {"in": ["DE", "AT", "CH"]}}, True, False),
    ({"address.country": {"not_in": ["DE"]}}, False, True),
    ({"purchases.total_spent": {"gte": 100}}, True, False),
    ({"purchases.total_spent": {"gt": 120.5}}, False, False),
    ({"purchases.total_spent": {"lt": 200, "gt": 100}}, True, False),
    ({"purchases.last_order_at": {"gte": "2026-01-01"}}, True, False),
    ({"tags": {"contains": "vip"}}, True, False),  # text ignores case
    ({"tags": {"contains_any": ["x", "newsletter"]}}, True, False),
    ({"tags": {"contains_all": ["vip", "x"]}}, False, False),
    ({"consent.email.status": {"not_in": ["unsubscribed", "cleaned"]}}, True, False),
    ({"lead_source.origin": {"exists": True}}, True, False),
    ({"lead_source.origin": {"exists": False}}, False, True),
    ({"lead_source.origin": {"ne": "trade_fair"}}, False, True),  # absent counts as "not equal"
    ({"any": [{"address.country": "FR"}, {"tags": {"contains": "vip"}}]}, True, True),
    ({"not": {"address.country": "DE"}}, False, True),
])
def test_filters(spec, ann, bob):
    keep = compile_filter(spec)
    assert (keep(ANN), keep(BOB)) == (ann, bob)


@pytest.mark.parametrize(("spec", "where"), [
    ({"lifecycle": "customer"}, "lifecycle"),
    ({"address.country": {"like": "D%"}}, "address.country.like"),
    ({"any": []}, "any"),
    ({"purchases.total_spent": {"gte": [1]}}, "purchases.total_spent.gte"),
    ({"lead_source.origin": {"exists": "yes"}}, "lead_source.origin.exists"),
])
def test_bad_filters_name_the_place(spec, where):
    with pytest.raises(FilterError) as exc:
        compile_filter(spec)
    assert exc.value.path == where


def test_company_fields_only_for_companies():
    assert compile_filter({"domain": "acme.de"}, "company")({"domain": "ACME.de"})
    with pytest.raises(FilterError):
        compile_filter({"domain": "acme.de"}, "person")


def test_custom_attributes_are_allowed():
    assert compile_filter({"custom.kundennummer": {"exists": True}})({"custom": {"kundennummer": "K1"}})


def test_a_bad_filter_in_the_config_names_file_line_and_field(tmp_path):
    from synchub.config import load_config
    from synchub.errors import ConfigError
    from tests.helpers import write_config

    cfg = write_config(tmp_path, """
        connections:
          export:
            connector: files
            direction: out
            settings: {path: out}
            streams:
              customers:
                mapping: export_customers
                filter:
                  lifecycle: customer
                settings: {pattern: "kunden.csv"}
        """, "sqlite:///x.db")
    with pytest.raises(ConfigError) as exc:
        load_config(cfg, environ={})
    text = str(exc.value)
    assert "synchub.yaml:" in text and "unknown field 'lifecycle'" in text and "filter" in text
