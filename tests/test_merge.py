"""Survivorship rules, each with its fallback, and the protected consent rule."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import pytest

from synchub.config import EntityMergeConfig, FieldRule
from synchub.merge import (
    Candidate,
    Merger,
    consent,
    longest,
    max_by_order,
    most_complete,
    most_frequent,
    most_recent,
    source_priority,
)

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)


def c(value, conn="a", days=0, sid="1") -> Candidate:
    return Candidate(value, conn, "s", sid, T0 + timedelta(days=days))


def test_most_recent_is_deterministic_on_ties() -> None:
    assert most_recent([c("x", days=1), c("y", days=2)]).value == "y"
    assert most_recent([c("x", "a"), c("y", "b")]).value == "y"  # tie: by connection name
    assert most_recent([c("x", "b"), c("y", "a")]).value == "x"


def test_source_priority_and_when_it_cannot_decide() -> None:
    cands = [c("shop", "shop"), c("crm", "crm", days=5)]
    assert source_priority(cands, priority=["shop", "crm"]).value == "shop"
    assert source_priority(cands, priority=["crm", "shop"]).value == "crm"
    assert source_priority(cands, priority=["other"]) is None
    assert source_priority(cands, priority=None) is None


def test_most_complete_most_frequent_longest() -> None:
    full = {"street": "Hauptstr. 5", "postal_code": "80331", "city": "München"}
    assert most_complete([c({"city": "München"}, days=9), c(full)]).value == full
    assert most_complete([c({"city": "A"}), c({"city": "B"})]) is None  # equally complete: undecided
    assert most_frequent([c("Anna", sid="1"), c("Anna", sid="2"), c("Ana", sid="3", days=9)]).value == "Anna"
    assert most_frequent([c("Anna"), c("Ana")]) is None
    assert longest([c("A."), c("Anna-Lena")]).value == "Anna-Lena"
    assert longest([c("Anna"), c("Anne")]) is None


def test_max_by_order_only_moves_forward() -> None:
    assert max_by_order([c("customer"), c("lead", days=10)]).value == "customer"
    assert max_by_order([c("x"), c("y")]) is None


def test_fallbacks_chain_to_most_recent() -> None:
    merger = Merger(EntityMergeConfig(source_priority=["crm"], fields={
        "first_name": FieldRule(rule="most_frequent", fallback="source_priority"),
        "last_name": FieldRule(rule="longest", fallback=None),
    }))
    sources = [
        {"data": {"first_name": "Bob", "last_name": "Lee"}, "connection": "shop", "stream": "s", "source_id": "1", "observed_at": T0},
        {"data": {"first_name": "Robert", "last_name": "Lea"}, "connection": "crm", "stream": "s", "source_id": "2", "observed_at": T0 - timedelta(days=1)},
    ]
    derived = merger.derive("person", sources)
    assert derived.data["first_name"] == "Robert"  # frequency tie -> source priority (crm)
    assert derived.provenance["first_name"]["rule"] == "source_priority"
    assert derived.provenance["first_name"]["losing"][0]["value"] == "Bob"
    assert derived.data["last_name"] == "Lea"  # longest tie, no fallback -> source priority, then recency
    assert derived.provenance["last_name"]["rule"] == "source_priority"
    no_priority = Merger(EntityMergeConfig(fields={"last_name": FieldRule(rule="longest", fallback=None)}))
    assert no_priority.derive("person", sources).provenance["last_name"]["rule"] == "most_recent"


def test_union_keeps_all_values_with_the_newest_source_first() -> None:
    merger = Merger(EntityMergeConfig())
    derived = merger.derive("person", [
        {"data": {"emails": ["old@x.de", "work@x.de"]}, "connection": "a", "stream": "s", "source_id": "1", "observed_at": T0},
        {"data": {"emails": ["new@x.de", "work@x.de"]}, "connection": "b", "stream": "s", "source_id": "2", "observed_at": T0 + timedelta(days=1)},
    ])
    assert derived.data["emails"] == ["new@x.de", "work@x.de", "old@x.de"]
    assert {s["connection"] for s in derived.provenance["emails"]["sources"]} == {"a", "b"}


def test_person_and_company_defaults_differ() -> None:
    merger = Merger(EntityMergeConfig())
    srcs = [
        {"data": {"name": "Bergblick Outdoor GmbH"}, "connection": "crm", "stream": "s", "source_id": "1", "observed_at": T0},
        {"data": {"name": "Bergblick Outdoor"}, "connection": "shop", "stream": "s", "source_id": "2", "observed_at": T0},
    ]
    derived = merger.derive("company", srcs)
    assert derived.data["name"] == "Bergblick Outdoor GmbH"  # tie -> longest
    assert [n.field for n in derived.conflicts] == ["name"]  # a company's name is protected: review


def test_admin_override_wins_and_says_so() -> None:
    merger = Merger(EntityMergeConfig())
    derived = merger.derive("person", [
        {"data": {"birth_date": "1980-01-02"}, "connection": "a", "stream": "s", "source_id": "1", "observed_at": T0},
    ], {"birth_date": {"value": "1980-02-01", "by": "user:ops", "at": T0}})
    assert derived.data["birth_date"] == "1980-02-01"
    assert derived.provenance["birth_date"]["rule"] == "admin"
    assert derived.provenance["birth_date"]["losing"][0]["value"] == "1980-01-02"


OPT_OUTS = [("unsubscribed", "import"), ("cleaned", "api")]
OPT_INS = [("subscribed", "checkbox"), ("subscribed", "import"), ("pending", "api")]


@pytest.mark.parametrize("out", OPT_OUTS)
@pytest.mark.parametrize("opt_in_later", [False, True])
def test_opt_out_survives_every_merge_order(out: tuple[str, str], opt_in_later: bool) -> None:
    """An opt-out wins over opt-ins from other sources that did not come from the person,
    whatever their age and whatever order the sources arrive in."""
    day = 30 if opt_in_later else -30
    cands = [
        c({"status": out[0], "method": out[1], "at": "2024-01-01"}, "newsletter", sid="n"),
        *[c({"status": s, "method": m, "at": (T0 + timedelta(days=day)).date().isoformat()}, f"src{i}", sid=str(i))
          for i, (s, m) in enumerate(OPT_INS)],
    ]
    for order in itertools.permutations(cands):
        winner = consent(list(order))
        assert winner is not None and winner.value["status"] == out[0]
    merger = Merger(EntityMergeConfig(fields={"consent.email": FieldRule(rule="most_recent")}))
    for order in itertools.permutations(cands):
        sources = [{"data": {"consent": {"email": x.value}}, "connection": x.connection, "stream": "s",
                    "source_id": x.source_id, "observed_at": x.observed_at} for x in order]
        derived = merger.derive("person", sources)
        assert derived.data["consent"]["email"]["status"] == out[0]  # config cannot weaken consent
        assert [n.field for n in derived.conflicts] == ["consent.email"]


def test_newer_double_opt_in_renews_consent() -> None:
    cands = [c({"status": "unsubscribed", "at": "2024-01-01"}, "crm"),
             c({"status": "subscribed", "method": "double_opt_in", "at": "2024-03-01"}, "newsletter")]
    assert consent(cands).value["status"] == "subscribed"
    cands[1] = c({"status": "subscribed", "method": "double_opt_in", "at": "2023-12-01"}, "newsletter")
    assert consent(cands).value["status"] == "unsubscribed"  # older than the opt-out


def test_documented_status_beats_never() -> None:
    assert consent([c({"status": "never"}, days=5), c({"status": "subscribed", "method": "form"})]).value["status"] == "subscribed"
