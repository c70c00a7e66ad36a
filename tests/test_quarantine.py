"""Field-level quarantine: one bad value costs that value, never the whole customer (issue 16).

Each test here failed on the code before quarantine: a bad phone, e-mail, date, country, postal
code, number or consent status rejected the whole record.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from synchub import quarantine
from synchub import store as st
from synchub.errors import RecordError
from synchub.match import normalize_record
from synchub.normalize import NormalizationError, normalize_phone, normalize_phone_lenient
from tests.helpers import hub_for, rows, write_config

MAPPING = """\
entity: person
direction: in
fields:
  first_name: first
  last_name: last
  emails: email
  phones: [phone, mobile]
  birth_date: {path: born, transform: parse_date, args: {format: "%d.%m.%Y"}}
  address.postal_code: zip
  address.country: {path: country, transform: country_iso}
  consent.email.status: {path: newsletter, transform: map_values, args: {values: {ja: subscribed, nein: unsubscribed}}}
  purchases.orders_count: orders
"""

CONFIG = """\
defaults: {phone_region: DE}
connections:
  shop:
    connector: files
    settings: {path: data}
    streams:
      people:
        mapping: q_people
        settings: {pattern: "people*.csv", primary_key: id}
match:
  person: {keys: [email, phone]}
"""

HEADER = "id;first;last;email;phone;mobile;born;zip;country;newsletter;orders\n"


def _hub(tmp_path: Path, store_url: str, csv: str):
    cfg = write_config(tmp_path, CONFIG, store_url, **{"people__csv": HEADER + csv})
    (tmp_path / "mappings" / "q_people.yaml").write_text(MAPPING, encoding="utf-8")
    return hub_for(cfg)


def _goldens(hub) -> list[dict]:
    return [g for g in rows(hub.store, st.golden_t) if g["status"] == "active"]


def test_bad_values_are_quarantined_and_the_customer_lands(tmp_path: Path, store_url: str) -> None:
    hub = _hub(tmp_path, store_url,
               "1;Jörg;Müller;joerg(at)example.de;+41 33 20379-872;0171 1234567;31.02.1985;8O331;DE;vielleicht;drei\n"
               "2;Max;Huber;max@example.de;;;;80331;Atlantis;;\n")
    [summary] = hub.sync(["shop"])
    counts = summary.streams["people"]
    assert (counts.read, counts.created, counts.rejected) == (2, 2, 0)
    assert counts.quarantined == 7
    assert summary.status == "succeeded"
    g, max_ = sorted(_goldens(hub), key=lambda g: g["data"]["first_name"])
    # What was usable landed; nothing of what was not.
    assert g["data"]["first_name"] == "Jörg" and g["data"]["last_name"] == "Müller"
    assert g["data"]["phones"] == ["+491711234567"]
    for gone in ("emails", "birth_date", "consent", "purchases"):
        assert gone not in g["data"], gone
    assert g["data"]["address"] == {"country": "DE"}
    assert max_["data"]["address"] == {"postal_code": "80331"}
    held = {(q["field"], q["source"], q["raw"]) for q in hub.store.quarantined_values()}
    assert held == {
        ("emails", "email", "joerg(at)example.de"),
        ("phones", "phone", "+41 33 20379-872"),
        ("birth_date", "born", "31.02.1985"),
        ("address.postal_code", "zip", "8O331"),
        ("address.country", "country", "Atlantis"),
        ("consent.email.status", "newsletter", "vielleicht"),
        ("purchases.orders_count", "orders", "drei"),
    }
    logged = rows(hub.store, st.quarantined_t)
    assert len(logged) == 7 and {r["run_id"] for r in logged} == {summary.run_id}
    assert {(r["ref"], r["source_id"]) for r in logged} == {("people.csv:2", "1"), ("people.csv:3", "2")}
    assert all(r["reason"] for r in logged)
    # Reasons say why without repeating the value (it is in ``raw``).
    phone = next(r for r in logged if r["field"] == "phones")
    assert phone["reason"] == "not a valid phone number (wrong number of digits for its country)"


def test_quarantined_values_never_become_identity_keys(tmp_path: Path, store_url: str) -> None:
    # Two different people whose exports share the same unusable e-mail and phone strings.
    hub = _hub(tmp_path, store_url,
               "1;Anna;Berger;info(at)firma.de;12;;;;;;\n"
               "2;Max;Huber;info(at)firma.de;12;;;;;;\n")
    [summary] = hub.sync(["shop"])
    assert summary.streams["people"].created == 2
    assert len(_goldens(hub)) == 2
    keys = rows(hub.store, st.key_t)
    assert not [k for k in keys if k["key_type"] in ("email", "phone")]


def test_unverified_phone_is_kept_but_never_an_identity_key(tmp_path: Path, store_url: str) -> None:
    # (123) area codes do not exist: possible (ten digits), not valid. A made-up number shared by
    # many rows must not merge them, even with ``phone`` as an identity key.
    cfg = CONFIG.replace("phone_region: DE", "phone_region: US")
    hub_path = write_config(tmp_path, cfg, store_url, **{"people__csv": HEADER +
                            "1;Anna;Smith;;(123) 456-7890;;;;;;\n2;Bob;Jones;;(123) 456-7890;;;;;;\n"})
    (tmp_path / "mappings" / "q_people.yaml").write_text(MAPPING, encoding="utf-8")
    hub = hub_for(hub_path)
    [summary] = hub.sync(["shop"])
    counts = summary.streams["people"]
    assert (counts.created, counts.quarantined, counts.unverified) == (2, 0, 2)
    goldens = _goldens(hub)
    assert len(goldens) == 2
    assert all(g["data"]["phones"] == ["+11234567890"] for g in goldens)
    assert not [k for k in rows(hub.store, st.key_t) if k["key_type"] == "phone"]
    flagged = hub.store.quarantined_values(status="unverified")
    assert {(q["source_id"], q["kept"]) for q in flagged} == {("1", "+11234567890"), ("2", "+11234567890")}
    assert hub.store.quarantined_values(status="quarantined") == []


def test_record_with_nothing_usable_left_is_rejected_with_every_reason(tmp_path: Path, store_url: str) -> None:
    hub = _hub(tmp_path, store_url,
               "1;;;kaputt;abc;;;;;;\n"
               "2;Eva;;;;;;;;;\n")
    [summary] = hub.sync(["shop"])
    counts = summary.streams["people"]
    assert (counts.created, counts.rejected) == (1, 1)
    assert summary.status == "partial"
    [rej] = rows(hub.store, st.rejected_t)
    assert rej["ref"] == "people.csv:2" and rej["field"] == "identity"
    assert "nothing usable" in rej["reason"] and "emails:" in rej["reason"] and "phones:" in rej["reason"]
    assert rej["raw"] and "kaputt" in rej["raw"]
    # A rejected record's values are in its reject, not counted again as quarantined.
    assert counts.quarantined == 0 and rows(hub.store, st.quarantined_t) == []


def test_fixing_the_value_at_the_source_clears_it_and_an_unchanged_reread_writes_nothing(tmp_path: Path, store_url: str) -> None:
    hub = _hub(tmp_path, store_url, "1;Eva;Roth;eva(at)example.de;;;;;;;\n")
    hub.sync(["shop"])
    assert len(hub.store.quarantined_values()) == 1
    before = rows(hub.store, st.source_t)

    # The same file again (touched): the record is unchanged, nothing is rewritten.
    data = tmp_path / "data" / "people.csv"
    data.write_text(data.read_text(encoding="utf-8") + "", encoding="utf-8")
    [again] = hub.sync(["shop"])
    assert again.streams["people"].created == again.streams["people"].updated == 0
    assert rows(hub.store, st.source_t)[0]["changed_at"] == before[0]["changed_at"]

    # Fixed at the source: the value lands and leaves the quarantine.
    data.write_text(HEADER + "1;Eva;Roth;eva@example.de;;;;;;;\n", encoding="utf-8")
    [fixed] = hub.sync(["shop"])
    assert fixed.streams["people"].quarantined == 0
    assert hub.store.quarantined_values() == []
    [g] = _goldens(hub)
    assert g["data"]["emails"] == ["eva@example.de"]


def test_a_different_bad_value_is_a_change(tmp_path: Path, store_url: str) -> None:
    hub = _hub(tmp_path, store_url, "1;Eva;Roth;eva(at)example.de;;;;;;;\n")
    hub.sync(["shop"])
    (tmp_path / "data" / "people.csv").write_text(HEADER + "1;Eva;Roth;eva[at]example.de;;;;;;;\n", encoding="utf-8")
    hub.sync(["shop"])
    assert [q["raw"] for q in hub.store.quarantined_values()] == ["eva[at]example.de"]


def test_normalize_record_keeps_the_good_values_of_a_list() -> None:
    problems: list[dict] = []
    data = normalize_record({"emails": ["A@Example.de", "b(at)example.de"], "phones": ["0171 1234567", "x"],
                             "address": {"postal_code": "ABCDE", "country": "DE"}}, "DE", problems)
    assert data["emails"] == ["a@example.de"] and data["phones"] == ["+491711234567"]
    assert "postal_code" not in data["address"]
    assert [(p["field"], p["raw"], p["rule"]) for p in problems] == [
        ("emails", "b(at)example.de", "email"), ("phones", "x", "phone"), ("address.postal_code", "ABCDE", "postal_code")]
    # Without a problems list the old contract holds: the first bad value raises.
    with pytest.raises(RecordError):
        normalize_record({"emails": ["b(at)example.de"]}, "DE")


@pytest.mark.parametrize(("raw", "region", "expected"), [
    ("+43 417 4411-677", "DE", ("+434174411677", False)),  # right length for AT, no known range
    ("(123) 456-7890", "US", ("+11234567890", False)),  # US area codes never start with 1
    ("0171 1234567", "DE", ("+491711234567", True)),
    ("+41 44 668 18 00", "DE", ("+41446681800", True)),
])
def test_possible_numbers_are_kept_unverified(raw: str, region: str, expected: tuple[str, bool]) -> None:
    assert normalize_phone_lenient(raw, region) == expected


@pytest.mark.parametrize("raw", ["+41 33 20379-872", "12", "+49 171 1", "abc", "4.91711234567E+11"])
def test_impossible_numbers_are_refused_by_both(raw: str) -> None:
    with pytest.raises(NormalizationError):
        normalize_phone_lenient(raw, "DE")
    with pytest.raises(NormalizationError):
        normalize_phone(raw, "DE")


def test_strict_phone_still_refuses_possible_only_numbers() -> None:
    with pytest.raises(NormalizationError):
        normalize_phone("(123) 456-7890", "US")


def test_identifiable() -> None:
    assert quarantine.identifiable("person", {"last_name": "Roth"})
    assert quarantine.identifiable("person", {"phones": ["+491711234567"]})
    assert not quarantine.identifiable("person", {"address": {"city": "Wien"}, "tags": ["vip"]})
    assert quarantine.identifiable("company", {"domain": "example.de"})


def test_unverified_phones_are_no_match_evidence(tmp_path: Path, store_url: str) -> None:
    # Namesakes exported with the same placeholder number: the number says nothing about them.
    cfg = CONFIG.replace("phone_region: DE", "phone_region: US").replace("keys: [email, phone]", "keys: [email]")
    path = write_config(tmp_path, cfg, store_url, **{"people__csv": HEADER +
                        "1;Andrew;Brown;;(123) 456-7890;;;10001;US;;\n2;Andrew;Brown;;(123) 456-7890;;;10001;US;;\n"})
    (tmp_path / "mappings" / "q_people.yaml").write_text(MAPPING, encoding="utf-8")
    hub = hub_for(path)
    [summary] = hub.sync(["shop"])
    assert summary.streams["people"].created == 2
    assert len(_goldens(hub)) == 2


def test_reasons_do_not_repeat_the_raw_value() -> None:
    e = quarantine.entry("consent.email.status", "maybe", "'maybe' is not one of the allowed values: 'subscribed'",
                         rule="map_values")
    assert e["reason"] == "the value is not one of the allowed values: 'subscribed'" and e["raw"] == "maybe"
    e = quarantine.entry("phones", "12", "not a valid phone number: '12' (too few digits)", rule="phone")
    assert e["reason"] == "not a valid phone number (too few digits)"
