"""``customers search``: by name (folded), full e-mail, phone in any format and source id, on
both stores (issue 18: a full e-mail address never matched, the query was folded and the
stored search text was not)."""

from __future__ import annotations

import pytest

from synchub.store import search_terms
from tests.helpers import demo_hub


@pytest.fixture
def hub(demo_dir, store_url):
    hub = demo_hub(demo_dir, store_url)
    hub.sync(["shop", "newsletter", "fair"])
    return hub


def names(rows) -> list[str]:
    return [r["display_name"] for r in rows]


@pytest.mark.parametrize("query", [
    "claudia.mueller@example.de",      # as stored
    "Claudia.Mueller@EXAMPLE.de",      # as the newsletter spelled it
    " <claudia.mueller@example.de> ",  # pasted from a mail client
    "Müller Claudia",                  # name words in any order, folded
    "claudia mueller",
])
def test_finds_a_person_by_email_or_name(hub, query: str) -> None:
    assert names(hub.store.search_golden(query, phone_region="DE")) == ["Claudia Müller"]


@pytest.mark.parametrize("query", ["08821 945113", "+49 8821 945113", "0049-8821-945113", "+4988219451 13", "(08821) 94 51 13"])
def test_finds_a_person_by_phone_in_any_format(hub, query: str) -> None:
    assert names(hub.store.search_golden(query, phone_region="DE")) == ["Claudia Müller"]


def test_a_partial_number_is_a_substring_of_the_stored_number(hub) -> None:
    assert names(hub.store.search_golden("945113", phone_region="DE")) == ["Claudia Müller"]


def test_finds_by_source_id_and_by_qualified_source_ref(hub) -> None:
    assert names(hub.store.search_golden("K-10004")) == ["Claudia Müller"]
    assert names(hub.store.search_golden("shop/customers/K-10004")) == ["Claudia Müller"]
    assert hub.store.search_golden("shop/customers/K-99999") == []


def test_an_unknown_address_finds_nobody(hub) -> None:
    assert hub.store.search_golden("claudia.mueller@example.com", phone_region="DE") == []
    assert hub.store.search_golden("nobody@example.de", phone_region="DE") == []


def test_search_terms() -> None:
    assert search_terms("Claudia.Mueller@Example.DE", "DE") == [["claudia.mueller@example.de"]]
    assert search_terms("0171 2345678", "DE") == [["+491712345678", "1712345678"]]
    assert search_terms("Jürgen Weißhaupt", "DE") == [["jurgen"], ["weisshaupt"]]
    assert search_terms("Straße", "DE") == [["strasse"]]
