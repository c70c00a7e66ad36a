"""Fuzzy matching: features, blocking, scoring, hard rules, bulk dedupe/link and clustering."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pydantic import ValidationError

from synchub.similarity import (
    BULK_BLOCK,
    Counter,
    Features,
    ScoreConfig,
    blocking_keys,
    classify,
    cluster,
    dedupe,
    features,
    link,
    score,
)

HOME = {"street": "Lindenstraße 12", "postal_code": "80331", "city": "München", "country": "DE"}
HOME_SPELLED = {
    "street": "Lindenstr. 12",
    "postal_code": "80331",
    "city": "Muenchen",
    "country": "DE",
}
ELSEWHERE = {"street": "Am Markt 3", "postal_code": "20095", "city": "Hamburg", "country": "DE"}
LANDLINE = "+49891234567"  # Munich landline shared by the household
MOBILE = "+4917612345678"


def person(**fields: Any) -> dict[str, Any]:
    return {"kind": "person", **fields}


def company(**fields: Any) -> dict[str, Any]:
    return {"kind": "company", **fields}


def decide(a: dict[str, Any], b: dict[str, Any]) -> Any:
    kind = a.get("kind", "person")
    return classify(features(a, kind), features(b, kind))


def shares_block(a: dict[str, Any], b: dict[str, Any]) -> bool:
    kind = a.get("kind", "person")
    return bool(set(blocking_keys(features(a, kind))) & set(blocking_keys(features(b, kind))))


# --- cases that must match -------------------------------------------------------------------

POSITIVES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "nickname_same_birth_date": (
        person(first_name="Robert", last_name="Schneider", birth_date="1975-06-30"),
        person(first_name="Bob", last_name="Schneider", birth_date="1975-06-30"),
    ),
    "nickname_same_address": (
        person(first_name="Robert", last_name="Schneider", address=HOME),
        person(first_name="Bob", last_name="Schneider", address=HOME),
    ),
    "initial_same_birth_date": (
        person(first_name="R.", last_name="Schneider", birth_date="1975-06-30"),
        person(first_name="Robert", last_name="Schneider", birth_date="1975-06-30"),
    ),
    "initial_same_address": (
        person(first_name="R", last_name="Schneider", address=HOME),
        person(first_name="Robert", last_name="Schneider", address=HOME),
    ),
    "swapped_names": (
        person(first_name="Schneider", last_name="Robert", birth_date="1975-06-30", address=HOME),
        person(first_name="Robert", last_name="Schneider", birth_date="1975-06-30", address=HOME),
    ),
    "marriage_same_email": (
        person(
            first_name="Julia",
            last_name="Becker",
            birth_date="1985-02-11",
            emails=["julia.b@gmx.de"],
        ),
        person(
            first_name="Julia",
            last_name="Hoffmann",
            birth_date="1985-02-11",
            emails=["julia.b@gmx.de"],
        ),
    ),
    "marriage_same_mobile": (
        person(first_name="Julia", last_name="Becker", birth_date="1985-02-11", phones=[MOBILE]),
        person(first_name="Julia", last_name="Hoffmann", birth_date="1985-02-11", phones=[MOBILE]),
    ),
    "marriage_same_address": (
        person(first_name="Julia", last_name="Becker", birth_date="1985-02-11", address=HOME),
        person(first_name="Julia", last_name="Hoffmann", birth_date="1985-02-11", address=HOME),
    ),
    "work_and_private_email": (
        person(
            first_name="Stefan",
            last_name="Wagner",
            birth_date="1970-01-20",
            address=HOME,
            emails=["stefan.wagner@web.de"],
        ),
        person(
            first_name="Stefan",
            last_name="Wagner",
            birth_date="1970-01-20",
            address=HOME,
            emails=["s.wagner@bergblick-outdoor.de"],
        ),
    ),
    "moved": (
        person(first_name="Stefan", last_name="Wagner", birth_date="1970-01-20", address=HOME),
        person(first_name="Stefan", last_name="Wagner", birth_date="1970-01-20", address=ELSEWHERE),
    ),
    "typo_in_last_name": (
        person(first_name="Katharina", last_name="Schmidt", birth_date="1980-05-05", address=HOME),
        person(first_name="Katharina", last_name="Schmitt", birth_date="1980-05-05", address=HOME),
    ),
    "umlaut_spelling": (
        person(first_name="Jürgen", last_name="Müller", address=HOME),
        person(first_name="Juergen", last_name="Mueller", address=HOME_SPELLED),
    ),
    "birth_date_day_month_swapped": (
        person(first_name="Anna", last_name="Weber", birth_date="1980-03-07", address=HOME),
        person(first_name="Anna", last_name="Weber", birth_date="1980-07-03", address=HOME),
    ),
    "birth_date_one_digit": (
        person(first_name="Anna", last_name="Weber", birth_date="1980-03-07", address=HOME),
        person(first_name="Anna", last_name="Weber", birth_date="1981-03-07", address=HOME),
    ),
    "company_legal_form": (
        company(name="Bergblick Outdoor GmbH"),
        company(name="Bergblick Outdoor"),
    ),
}

NEGATIVES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "household": (
        person(first_name="Anna", last_name="Müller", address=HOME, phones=[LANDLINE]),
        person(first_name="Peter", last_name="Müller", address=HOME, phones=[LANDLINE]),
    ),
    "twins": (
        person(first_name="Lukas", last_name="Meier", birth_date="1990-04-01", address=HOME),
        person(first_name="Jonas", last_name="Meier", birth_date="1990-04-01", address=HOME),
    ),
    "father_and_son": (
        person(
            first_name="Thomas",
            last_name="Schmidt",
            birth_date="1961-03-14",
            address=HOME,
            phones=[LANDLINE],
        ),
        person(
            first_name="Thomas",
            last_name="Schmidt",
            birth_date="1989-11-02",
            address=HOME,
            phones=[LANDLINE],
        ),
    ),
    "male_and_female_form": (
        person(first_name="Daniel", last_name="Müller", address=HOME),
        person(first_name="Daniela", last_name="Müller", address=HOME),
    ),
    "swapped_fields_in_household": (
        person(first_name="Anna", last_name="Müller", address=HOME),
        person(first_name="Müller", last_name="Peter", address=HOME),
    ),
    "company_other_business": (
        company(name="Bergblick Outdoor GmbH", address=HOME, phones=[LANDLINE]),
        company(name="Bergblick Reisen GmbH", address=HOME, phones=[LANDLINE]),
    ),
}


@pytest.mark.parametrize("case", sorted(POSITIVES))
def test_positive_cases_match(case: str) -> None:
    a, b = POSITIVES[case]
    d = decide(a, b)
    assert d.outcome == "match", (d.score, d.reasons)
    # symmetric
    assert decide(b, a).outcome == "match"


@pytest.mark.parametrize("case", sorted(POSITIVES))
def test_positive_cases_share_a_blocking_key(case: str) -> None:
    a, b = POSITIVES[case]
    assert shares_block(a, b)


#: Vetoed pairs that agree on everything else, the other personal identifier included: a
#: person must decide (issue 18), so they are review items, never merged automatically.
TO_REVIEW = {"twins": "twins or siblings", "father_and_son": "father and son"}


@pytest.mark.parametrize("case", sorted(set(NEGATIVES) - set(TO_REVIEW)))
def test_negative_cases_are_distinct(case: str) -> None:
    a, b = NEGATIVES[case]
    d = decide(a, b)
    assert d.outcome == "distinct", (d.score, d.reasons)
    assert decide(b, a).outcome == "distinct"
    assert d.reasons[0].startswith("rule: ")


@pytest.mark.parametrize("case", sorted(TO_REVIEW))
def test_vetoed_pairs_that_agree_on_everything_else_go_to_review(case: str) -> None:
    a, b = NEGATIVES[case]
    for d in (decide(a, b), decide(b, a)):
        assert d.outcome == "possible" and d.veto, (d.score, d.reasons)
        assert d.reasons[0].startswith("rule: ")
        assert d.reasons[1].startswith("review: same ") and "last_name" in d.reasons[1] and TO_REVIEW[case] in d.reasons[1]


def test_a_vetoed_pair_goes_to_review_only_when_the_other_identifier_agrees() -> None:
    twins_a, twins_b = NEGATIVES["twins"]
    # The twins with different birth dates: siblings, not a question.
    assert decide(twins_a, {**twins_b, "birth_date": "1993-08-20"}).outcome == "distinct"
    # ... and without birth dates: a household like any other.
    assert decide({**twins_a, "birth_date": None}, {**twins_b, "birth_date": None}).outcome == "distinct"
    # Father and son with different first names as well: two people.
    father, son = NEGATIVES["father_and_son"]
    assert decide(father, {**son, "first_name": "Jonas"}).outcome == "distinct"


def test_a_name_that_agrees_crosswise_lifts_a_vetoed_pair_into_review_never_into_a_merge() -> None:
    # One birth date, one postcode, other house numbers; "Thomas" is the given name of one
    # record and the surname of the other, the remaining names differ (a name replaced, the
    # other entered in the wrong field). Read straight, both names disagree.
    near = {**HOME, "street": "Lindenstraße 40"}
    a = person(first_name="Thomas", last_name="Matthes", birth_date="1975-04-02", address=HOME)
    b = person(first_name="Klaus", last_name="Thomas", birth_date="1975-04-02", address=near)
    for x, y in ((a, b), (b, a)):
        d = decide(x, y)
        assert d.outcome == "possible" and d.veto and d.veto.startswith("first_name"), (d.score, d.reasons)
        assert any("agrees crosswise" in r for r in d.reasons)
        assert [(i, j, p.outcome) for i, j, p in dedupe([x, y])] == [(0, 1, "possible")]
    # Without the crosswise agreement the same pair is two people.
    other = {**b, "last_name": "Becker"}
    assert decide(a, other).outcome == "distinct"
    assert dedupe([a, other]) == []
    # ... and with birth dates that differ as well, the crosswise name does not make a question.
    assert decide(a, {**b, "birth_date": "1951-09-30"}).outcome == "distinct"


def test_hard_rules_override_a_high_score() -> None:
    upper = ScoreConfig.defaults_for("person").upper
    off = ScoreConfig.defaults_for("person").model_copy(update={"hard_rules": False})
    # Twins: surname, birth date and address agree, so the score alone says "match".
    a, b = NEGATIVES["twins"]
    fa, fb = features(a), features(b)
    s = score(fa, fb)
    assert s.value >= upper
    assert s.veto is not None and "first_name" in s.veto
    assert classify(fa, fb, off).outcome == "match"
    # Household: surname, address and landline; without the rule at least a review case.
    a, b = NEGATIVES["household"]
    assert classify(features(a), features(b), off).outcome in ("match", "possible")
    # Father and son: without the birth-date rule the full name and address would merge them.
    a, b = NEGATIVES["father_and_son"]
    assert classify(features(a), features(b), off).outcome == "match"


def test_twins_rule_names_the_first_name() -> None:
    a, b = NEGATIVES["twins"]
    d = decide(a, b)
    assert "first_name: clearly different (lukas/jonas)" in d.reasons[0]


def test_father_and_son_rule_names_the_birth_date() -> None:
    a, b = NEGATIVES["father_and_son"]
    d = decide(a, b)
    assert "birth_date" in d.reasons[0]


def test_birth_dates_two_digits_apart_are_never_merged_but_reviewed() -> None:
    # Beyond a typo: mother and daughter, or a badly typed date. A person decides.
    a = person(first_name="Anna", last_name="Weber", birth_date="1980-03-07", address=HOME)
    b = person(first_name="Anna", last_name="Weber", birth_date="1982-03-17", address=HOME)
    d = decide(a, b)
    assert d.outcome == "possible" and d.veto and "birth_date" in d.veto


def test_nickname_reason_is_reported() -> None:
    a, b = POSITIVES["nickname_same_birth_date"]
    d = decide(a, b)
    assert any(r.startswith("first_name: nickname robert~bob") for r in d.reasons)


def test_initial_scores_lower_than_full_name() -> None:
    full = person(first_name="Robert", last_name="Schneider", address=HOME)
    initial = person(first_name="R.", last_name="Schneider", address=HOME)
    other_initial = person(first_name="K.", last_name="Schneider", address=HOME)
    same = decide(full, dict(full)).score
    via_initial = decide(initial, full).score
    assert via_initial < same
    assert decide(initial, full).outcome == "match"
    assert decide(other_initial, full).outcome == "distinct"


def test_nickname_table_keeps_groups_apart() -> None:
    # Alex is short for both, but Alexander and Alexandra are two people.
    a = person(first_name="Alexander", last_name="Wolf", address=HOME)
    b = person(first_name="Alex", last_name="Wolf", address=HOME)
    c = person(first_name="Alexandra", last_name="Wolf", address=HOME)
    assert decide(a, b).outcome == "match"
    assert decide(c, b).outcome == "match"
    assert decide(a, c).outcome == "distinct"


def test_company_typo_with_same_domain_matches() -> None:
    a = company(name="Bergblik Outdoor GmbH", domain="bergblick-outdoor.de")
    b = company(name="Bergblick Outdoor GmbH", domain="www.bergblick-outdoor.de")
    assert decide(a, b).outcome == "match"


def test_company_different_vat_ids_are_distinct() -> None:
    a = company(name="Bergblick Outdoor GmbH", vat_id="DE123456789")
    b = company(name="Bergblick Outdoor GmbH", vat_id="DE 987 654 321")
    d = decide(a, b)
    assert d.outcome == "distinct"
    assert "vat_id" in d.reasons[0]


def test_names_alone_are_only_possible() -> None:
    a = person(first_name="Thomas", last_name="Müller")
    assert decide(a, dict(a)).outcome == "possible"
    # An old newsletter address does not make it less reviewable.
    b = person(first_name="Thomas", last_name="Müller", emails=["thomas.mueller@example.de"])
    c = person(first_name="Thomas", last_name="Müller", emails=["t.m.alt@example.de"])
    assert decide(b, c).outcome == "possible"


def test_namesakes_in_one_town_are_not_reviewed() -> None:
    a = person(first_name="Thomas", last_name="Müller", address=HOME)
    b = person(
        first_name="Thomas",
        last_name="Müller",
        address={"street": "Leopoldstraße 80", "postal_code": "80802", "city": "München"},
    )
    d = decide(a, b)
    assert d.outcome == "distinct", (d.score, d.reasons)
    assert score(features(a), features(b)).levels["city"] == "other_postcode"


def test_agreement_levels() -> None:
    def levels(a: dict[str, Any], b: dict[str, Any]) -> dict[str, str]:
        return score(features(person(**a)), features(person(**b))).levels

    assert levels({"last_name": "Schmidt"}, {"last_name": "Schmitt"})["last_name"] == "typo"
    assert levels({"last_name": "Meier"}, {"last_name": "Meier"})["last_name"] == "exact"
    assert levels({"last_name": "Meier"}, {"last_name": "Wagner"})["last_name"] == "different"
    assert levels({"first_name": "Katharina"}, {"first_name": "Katharnia"})["first_name"] == "typo"
    assert levels({"first_name": "Wil"}, {"first_name": "Wli"})["first_name"] == "typo"
    assert levels({"first_name": "Tim"}, {"first_name": "Tom"})["first_name"] == "different"
    assert levels({"first_name": "Karl Heinz"}, {"first_name": "Karl"})["first_name"] == "partial"
    street = levels({"address": HOME}, {"address": {**HOME, "street": "Lindenstr. 14"}})
    assert street["street"] == "other_number"
    postcode = levels({"address": HOME}, {"address": {**HOME, "postal_code": "80313"}})
    assert postcode["postcode"] == "typo"


def test_address_weight_is_capped_and_floored() -> None:
    cfg = ScoreConfig.defaults_for("person")
    full = {**HOME, "line2": "Hinterhaus", "region": "Bayern"}
    same = score(features(person(address=full)), features(person(address=dict(full))))
    assert same.value == cfg.address_cap
    other = {
        "street": "Am Markt 3",
        "line2": "c/o Weber",
        "postal_code": "20095",
        "city": "Hamburg",
        "region": "Hamburg",
        "country": "DE",
    }
    moved = score(features(person(address=full)), features(person(address=other)))
    assert moved.value == cfg.address_floor
    abroad = score(
        features(person(address=full)), features(person(address={**other, "country": "AT"}))
    )
    assert abroad.value < moved.value
    assert abroad.levels["country"] == "different"


def test_shared_email_is_strong_evidence() -> None:
    a, b = POSITIVES["marriage_same_email"]
    s = score(features(a), features(b))
    assert s.levels["email"] == "exact"
    without = score(features({**a, "emails": []}), features({**b, "emails": []}))
    assert s.value - without.value == ScoreConfig.defaults_for("person").table()["email"]["exact"]


# --- missing values, symmetry ----------------------------------------------------------------


def test_missing_values_are_neutral() -> None:
    base = person(first_name="Anna", last_name="Weber", address=HOME)
    with_more = person(
        first_name="Anna",
        last_name="Weber",
        address=HOME,
        birth_date="1980-03-07",
        emails=["anna@example.de"],
        phones=[MOBILE],
        salutation="Frau",
    )
    assert (
        score(features(base), features(with_more)).value
        == score(features(base), features(base)).value
    )
    empty = features({})
    assert score(empty, features(with_more)).value == 0.0


def test_features_tolerate_missing_and_bad_fields() -> None:
    f = features(
        {
            "first_name": None,
            "last_name": "",
            "address": None,
            "emails": None,
            "phones": ["", "not a phone"],
            "birth_date": "1980-02-30",  # invalid date
        }
    )
    assert isinstance(f, Features)
    assert f.birth == "" and f.first == "" and f.street == ""
    assert f.phones == frozenset({"not a phone"}) and not f.mobiles
    assert blocking_keys(f) == [("ph", "not a phone")]
    assert features({"address": {"street": "12"}}).house_number == "12"


def test_score_is_symmetric() -> None:
    records = [a for pair in (*POSITIVES.values(), *NEGATIVES.values()) for a in pair]
    persons = [features(r) for r in records if r["kind"] == "person"]
    for fa in persons:
        for fb in persons:
            assert score(fa, fb).value == pytest.approx(score(fb, fa).value)


def test_features_are_precomputed_keys() -> None:
    f = features(
        person(
            first_name="Jürgen",
            last_name="Müller-Lüdenscheidt",
            birth_date="1961-03-14",
            address=HOME,
            emails=["J.Mueller+shop@Example.de"],
            phones=[MOBILE, LANDLINE],
            salutation="Herr",
        )
    )
    assert f.first == "jurgen" and f.last == "muller ludenscheidt"
    assert f.last_kp and f.last_sx.startswith("M") and f.first_kp
    assert (f.birth, f.birth_year, f.birth_month, f.birth_day) == ("19610314", "1961", "03", "14")
    assert (f.street, f.house_number, f.postcode, f.city) == ("lindenstr", "12", "80331", "munchen")
    assert f.email_locals == frozenset({"jmueller"})
    assert f.mobiles == frozenset({MOBILE}) and f.landlines == frozenset({LANDLINE})
    assert f.gender == "m"


# --- configuration ---------------------------------------------------------------------------


def test_config_defaults_and_overrides() -> None:
    person_cfg = ScoreConfig.defaults_for("person")
    company_cfg = ScoreConfig.defaults_for("company")
    assert person_cfg.lower < person_cfg.upper
    assert "vat_id" in company_cfg.table() and "vat_id" not in person_cfg.table()
    heavier = person_cfg.model_copy(update={"weights": {"phone": {"landline": 12.0}}})
    assert heavier.table()["phone"]["landline"] == 12.0
    assert person_cfg.table()["phone"]["landline"] != 12.0
    a, b = NEGATIVES["household"]
    # A heavier landline raises the score but never beats the household rule.
    fa, fb = features(a), features(b)
    assert score(fa, fb, heavier).value > score(fa, fb, person_cfg).value
    assert classify(fa, fb, heavier).outcome == "distinct"


def test_config_enabled_fields() -> None:
    only_names = ScoreConfig(enabled=["first_name", "last_name"])
    a, b = POSITIVES["moved"]
    s = score(features(a), features(b), only_names)
    assert s.value == 15.0
    assert set(s.levels) == {"first_name", "last_name"}


def test_config_validation() -> None:
    with pytest.raises(ValidationError):
        ScoreConfig(unknown=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        ScoreConfig(weights={"shoe_size": {"exact": 1.0}})
    with pytest.raises(ValidationError):
        ScoreConfig(weights={"first_name": {"nearly": 1.0}})
    with pytest.raises(ValidationError):
        ScoreConfig(upper=5, lower=10)
    with pytest.raises(ValueError):
        ScoreConfig.defaults_for("animal")


# --- bulk ------------------------------------------------------------------------------------


def _sample_records() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for a, b in POSITIVES.values():
        if a["kind"] == "person":
            records += [a, b]
    for a, b in NEGATIVES.values():
        if a["kind"] == "person":
            records += [a, b]
    return records


def test_dedupe_finds_positives_and_respects_rules() -> None:
    records = _sample_records()
    pairs = dedupe(records)
    matched = {(i, j) for i, j, d in pairs if d.outcome == "match"}
    for k in range(0, len(records), 2):
        is_positive = any(records[k] is p[0] for p in POSITIVES.values())
        if is_positive:
            assert (k, k + 1) in matched
        else:
            assert (k, k + 1) not in matched
    assert all(i < j for i, j, _d in pairs)
    assert all(d.outcome in ("match", "possible") for _i, _j, d in pairs)


def test_dedupe_is_deterministic_and_order_independent() -> None:
    records = _sample_records()
    first = dedupe(records)
    again = dedupe(records)
    assert [(i, j, d.outcome, d.score, d.reasons) for i, j, d in first] == [
        (i, j, d.outcome, d.score, d.reasons) for i, j, d in again
    ]
    order = list(range(len(records)))
    random.Random(7).shuffle(order)
    shuffled = dedupe([records[k] for k in order])
    mapped = {
        (min(order[i], order[j]), max(order[i], order[j]), d.outcome, d.score)
        for i, j, d in shuffled
    }
    assert mapped == {(i, j, d.outcome, d.score) for i, j, d in first}


def test_bulk_scoring_decides_like_classify() -> None:
    """dedupe() stops scoring a pair at the first hard-rule veto; that shortcut must never
    change an outcome: every pair of the sample (household members, twins, typo'd birth dates,
    swapped names) gets from dedupe() exactly what the explaining classify() says."""
    records = _sample_records()
    rng = random.Random(3)
    for _ in range(60):  # plus noisy copies, so many pairs come close to the thresholds
        r = dict(rng.choice(records))
        if r.get("birth_date") and rng.random() < 0.5:
            d = r["birth_date"]
            r["birth_date"] = d[:8] + d[9] + d[8] if rng.random() < 0.5 else f"19{rng.randint(40, 99)}{d[4:]}"
        if r.get("first_name") and rng.random() < 0.3:
            r["first_name"] = rng.choice(["Peter", "Anna", r["first_name"][:1] + "."])
        records.append(r)
    feats = [features(r) for r in records]
    expected = set()
    for i in range(len(records)):
        for j in range(i + 1, len(records)):
            d = classify(feats[i], feats[j])
            if d.outcome != "distinct":
                expected.add((i, j, d.outcome, round(d.score, 6)))
    got = dedupe(records, max_block=len(records) + 1)
    # every pair that classify keeps must have been a candidate; compare on those
    candidates = {(i, j) for i in range(len(records)) for j in range(i + 1, len(records))
                  if set(blocking_keys(feats[i])) & set(blocking_keys(feats[j]))}
    assert {(i, j, d.outcome, round(d.score, 6)) for i, j, d in got} == {
        e for e in expected if (e[0], e[1]) in candidates}
    assert any(o == "match" for _i, _j, o, _s in expected)
    vetoed = [(i, j) for i, j in candidates
              if classify(feats[i], feats[j]).reasons[0].startswith("rule: ")]
    assert vetoed  # the shortcut was exercised


def test_big_block_does_not_explode() -> None:
    rng = random.Random(1)
    first_names = [
        "Anna",
        "Peter",
        "Maria",
        "Thomas",
        "Julia",
        "Michael",
        "Sabine",
        "Klaus",
        "Monika",
        "Stefan",
        "Ursula",
        "Andreas",
        "Petra",
        "Jürgen",
        "Heike",
        "Frank",
    ]
    records = [
        person(
            first_name=rng.choice(first_names),
            last_name="Müller",
            birth_date=f"{rng.randint(1940, 2000)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
            address={"street": f"Hauptstraße {rng.randint(1, 400)}", "postal_code": "80331"},
        )
        for _ in range(1000)
    ]
    dup = dict(records[500])
    dup["address"] = {
        "street": records[500]["address"]["street"].replace("straße", "str."),
        "postal_code": "80331",
    }
    records.append(dup)
    counter = Counter()
    pairs = dedupe(records, counter=counter)
    # All 1001 share 'ln_pc': without the limit that block alone is 500,500 comparisons.
    assert counter.oversized_blocks >= 1
    assert counter.comparisons < 60_000
    assert any((i, j) == (500, 1000) and d.outcome == "match" for i, j, d in pairs)
    smaller = Counter()
    dedupe(records, counter=smaller, max_block=BULK_BLOCK - 4)
    assert smaller.comparisons < counter.comparisons
    larger = Counter()
    dedupe(records, counter=larger, max_block=50)
    assert larger.comparisons > counter.comparisons
    # Linkage of the two halves: 501 x 500 would be 250,500 comparisons.
    cross = Counter()
    linked = link(records[:501], records[501:], counter=cross)
    assert cross.oversized_blocks >= 1
    assert cross.comparisons < 30_000
    assert any((i, j) == (500, 499) and d.outcome == "match" for i, j, d in linked)


def test_link_returns_cross_pairs_only() -> None:
    left = [POSITIVES["moved"][0], POSITIVES["typo_in_last_name"][0], NEGATIVES["twins"][0]]
    right = [
        NEGATIVES["twins"][1],
        POSITIVES["typo_in_last_name"][1],
        POSITIVES["moved"][1],
        POSITIVES["moved"][0],
    ]
    counter = Counter()
    pairs = link(left, right, counter=counter)
    got = {(i, j) for i, j, d in pairs if d.outcome == "match"}
    assert got == {(0, 2), (0, 3), (1, 1)}
    assert counter.comparisons >= len(pairs)


def test_dedupe_companies() -> None:
    records = [
        company(name="Bergblick Outdoor GmbH", address=HOME),
        company(name="Bergblick Outdoor", address=HOME),
        company(name="Bergblick Reisen GmbH", address=HOME),
    ]
    pairs = dedupe(records, "company")
    assert [(i, j, d.outcome) for i, j, d in pairs] == [(0, 1, "match")]


def test_cluster_is_transitive_and_ignores_possible() -> None:
    records = [
        person(first_name="Robert", last_name="Schneider", birth_date="1975-06-30", address=HOME),
        person(first_name="Bob", last_name="Schneider", birth_date="1975-06-30"),
        person(first_name="R.", last_name="Schneider", address=HOME),
        person(first_name="Thomas", last_name="Müller"),
        person(first_name="Thomas", last_name="Müller"),
    ]
    pairs = dedupe(records)
    outcomes = {(i, j): d.outcome for i, j, d in pairs}
    assert outcomes[(3, 4)] == "possible"
    assert cluster(len(records), pairs) == [[0, 1, 2], [3], [4]]
    assert cluster(4, [(0, 3), (3, 2)]) == [[0, 2, 3], [1]]


def test_the_classes_real_customer_data_is_judged_on() -> None:
    """Issue 18: one person's work and private records, and a newsletter sign-up with only an
    e-mail and a name, are found (for review: nothing but the name ties them); co-workers and
    a namesake elsewhere are not."""
    from synchub.match import normalize_record

    def f(**d: Any) -> Any:
        return features(normalize_record(d, "DE", []), "person")

    work = f(first_name="Jürgen", last_name="Weißhaupt", emails=["juergen.weisshaupt@bergblick-outdoor.de"],
             phones=["+49 8031 23344"], address={"street": "Industriestraße 3", "postal_code": "83022", "city": "Rosenheim", "country": "DE"})
    private = f(first_name="Juergen", last_name="Weisshaupt", emails=["juergen.weisshaupt@gmail.com"], phones=["+49 171 2345678"],
                birth_date="1965-07-21",
                address={"street": "Agnes-Bernauer-Str. 9", "postal_code": "80687", "city": "München", "country": "DE"})
    newsletter = f(first_name="Juergen", last_name="Weisshaupt", emails=["jw1965@web.de"])
    coworker = f(first_name="Anna", last_name="Berger", emails=["anna.berger@bergblick-outdoor.de"], phones=["+49 8031 23344"],
                 address={"street": "Industriestraße 3", "postal_code": "83022", "city": "Rosenheim", "country": "DE"})
    namesake = f(first_name="Jürgen", last_name="Weißhaupt", emails=["jw@t-online.de"], birth_date="1980-01-02",
                 address={"street": "Hauptstr. 1", "postal_code": "20095", "city": "Hamburg", "country": "DE"})
    for a, b in ((work, private), (newsletter, private), (newsletter, work)):
        assert set(blocking_keys(a)) & set(blocking_keys(b))  # they meet at all
        assert classify(a, b).outcome == "possible"
    assert classify(work, coworker).outcome == "distinct"
    assert classify(private, namesake).outcome == "distinct"
