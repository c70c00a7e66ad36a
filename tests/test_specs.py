"""The spec validators of synchub.testing.specs: each one passes a valid request and fails an
invalid one with a message naming the problem. The vendors' specs ship with the repository
(tests/specs, see SOURCES.md there); a missing one fails these tests, it never skips them."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import httpx
import pytest

from synchub.testing.specs import (
    BUNDLED_SPECS_DIR,
    HUBSPOT_CREATE_WITHOUT_ASSOCIATIONS,
    HUBSPOT_RELAXATIONS,
    HUBSPOT_SEARCH_OPTIONAL_FIELDS,
    HUBSPOT_SEARCH_SORT_OBJECTS,
    HUBSPOT_SPECS,
    MAILCHIMP_MERGE_FIELD_VALUES,
    MAILCHIMP_SPEC,
    SHOPIFY_GRAPHQL_PATH,
    SHOPIFY_SCHEMA,
    GraphQLValidator,
    OpenApiValidator,
    SpecViolation,
    drop_required,
    hubspot_validator,
    mailchimp_validator,
    require_specs,
    shopify_validator,
    specs_dir,
)

HUBSPOT = "https://api.hubapi.com/crm/v3/objects"
BEARER = {"Authorization": "Bearer pat-na1-test"}
MAILCHIMP = "https://us1.api.mailchimp.com/3.0"
BASIC = {"Authorization": "Basic " + base64.b64encode(b"anystring:key-us1").decode()}
MEMBER_HASH = hashlib.md5(b"a@example.com").hexdigest()
SHOPIFY = "https://example.myshopify.com" + SHOPIFY_GRAPHQL_PATH
SHOPIFY_TOKEN = {"X-Shopify-Access-Token": "shpat_test"}
CUSTOMERS_QUERY = (
    '{ customers(first: 10, query: "updated_at:>=2024-01-01", sortKey: UPDATED_AT) '
    "{ pageInfo { hasNextPage endCursor } nodes { id email updatedAt } } }"
)


def post(url: str, body: object, headers: dict[str, str] | None = None) -> httpx.Request:
    return httpx.Request("POST", url, json=body, headers=BEARER if headers is None else headers)


def violation(validator: OpenApiValidator | GraphQLValidator, request: httpx.Request) -> str:
    with pytest.raises(SpecViolation) as info:
        validator.validate(request)
    return str(info.value)


def upsert(n: int) -> dict:
    return {
        "inputs": [
            {
                "id": f"c{i}@example.com",
                "idProperty": "email",
                "properties": {"email": f"c{i}@example.com"},
            }
            for i in range(n)
        ]
    }


def search(**fields: object) -> dict:
    """A search body with every field the strict spec requires."""
    return {
        "after": "",
        "filterGroups": [],
        "limit": 100,
        "properties": ["email"],
        "sorts": [],
        **fields,
    }


def filter_groups(*sizes: int) -> list[dict]:
    flt = {"propertyName": "lastmodifieddate", "operator": "GTE", "value": "1704067200000"}
    return [{"filters": [flt] * n} for n in sizes]


@pytest.fixture(scope="module")
def hubspot() -> OpenApiValidator:
    return hubspot_validator()


@pytest.fixture(scope="module")
def mailchimp() -> OpenApiValidator:
    return mailchimp_validator()


@pytest.fixture(scope="module")
def shopify() -> GraphQLValidator:
    return shopify_validator()


# -- finding the specs ---------------------------------------------------------------------------


def test_specs_are_found_in_the_repository_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNCHUB_SPECS_DIR", raising=False)
    bundled = Path(__file__).resolve().parent / "specs"
    assert specs_dir() == BUNDLED_SPECS_DIR == bundled
    assert require_specs(*HUBSPOT_SPECS, MAILCHIMP_SPEC, SHOPIFY_SCHEMA) == bundled


def test_bundled_specs_match_their_recorded_checksums() -> None:
    text = (BUNDLED_SPECS_DIR / "SOURCES.md").read_text(encoding="utf-8")
    recorded = dict(
        (name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", text, flags=re.M)
    )
    assert sorted(recorded) == sorted((*HUBSPOT_SPECS, MAILCHIMP_SPEC, SHOPIFY_SCHEMA))
    for name, digest in recorded.items():
        assert hashlib.sha256((BUNDLED_SPECS_DIR / name).read_bytes()).hexdigest() == digest, name


def test_specs_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SYNCHUB_SPECS_DIR", str(tmp_path))
    assert specs_dir() == tmp_path
    monkeypatch.setenv("SYNCHUB_SPECS_DIR", str(tmp_path / "absent"))
    assert specs_dir() is None


def test_missing_specs_fail_and_never_skip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SYNCHUB_SPECS_DIR", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match=r"hubspot/crm-contacts-v3\.json"):
        require_specs(*HUBSPOT_SPECS)
    monkeypatch.setenv("SYNCHUB_SPECS_DIR", str(tmp_path / "absent"))
    with pytest.raises(pytest.fail.Exception, match="absent"):
        require_specs(SHOPIFY_SCHEMA)
    monkeypatch.setenv("SYNCHUB_SPECS_DIR", str(tmp_path))
    (tmp_path / "x.json").write_text("{}")
    assert require_specs("x.json") == tmp_path


# -- HubSpot -------------------------------------------------------------------------------------


def test_hubspot_valid_batch_upsert_passes(hubspot: OpenApiValidator) -> None:
    hubspot.validate(post(f"{HUBSPOT}/contacts/batch/upsert", upsert(2)))
    hubspot.validate(post(f"{HUBSPOT}/contacts/batch/upsert", upsert(100)))


def test_hubspot_body_errors_name_the_field(hubspot: OpenApiValidator) -> None:
    message = violation(
        hubspot, post(f"{HUBSPOT}/contacts/batch/upsert", {"inputs": [{"id": 123}]})
    )
    assert "POST /crm/v3/objects/contacts/batch/upsert" in message
    assert "body inputs[0].id: 123 is not of type 'string'" in message
    assert "body inputs[0]: 'properties' is a required property" in message


def test_hubspot_unknown_path_and_method_fail(hubspot: OpenApiValidator) -> None:
    assert "matches no path" in violation(
        hubspot, httpx.Request("GET", f"{HUBSPOT}/contactz", headers=BEARER)
    )
    message = violation(
        hubspot, httpx.Request("DELETE", f"{HUBSPOT}/contacts/batch/upsert", headers=BEARER)
    )
    assert "no DELETE on this path (only ['POST'])" in message


def test_hubspot_search_is_strict_unless_relaxed(hubspot: OpenApiValidator) -> None:
    body = search()
    del body["sorts"]
    request = post(f"{HUBSPOT}/contacts/search", body)
    assert "'sorts' is a required property" in violation(hubspot, request)
    hubspot_validator(HUBSPOT_SEARCH_OPTIONAL_FIELDS).validate(request)
    hubspot.validate(post(f"{HUBSPOT}/contacts/search", search(filterGroups=filter_groups(1))))


def test_hubspot_sort_objects_need_their_relaxation(hubspot: OpenApiValidator) -> None:
    # The spec types sorts as strings; the live API takes {propertyName, direction} objects.
    sort = {"propertyName": "lastmodifieddate", "direction": "ASCENDING"}
    request = post(f"{HUBSPOT}/contacts/search", search(sorts=[sort]))
    assert "body sorts[0]" in violation(hubspot, request)
    relaxed = hubspot_validator(HUBSPOT_SEARCH_SORT_OBJECTS)
    relaxed.validate(request)
    bad_direction = post(f"{HUBSPOT}/contacts/search", search(sorts=[{**sort, "direction": "UP"}]))
    assert "body sorts[0]" in violation(relaxed, bad_direction)


def test_hubspot_create_needs_associations_unless_relaxed(hubspot: OpenApiValidator) -> None:
    request = post(
        f"{HUBSPOT}/companies/batch/create", {"inputs": [{"properties": {"name": "ACME"}}]}
    )
    assert "'associations' is a required property" in violation(hubspot, request)
    hubspot_validator(HUBSPOT_CREATE_WITHOUT_ASSOCIATIONS).validate(request)
    hubspot.validate(
        post(
            f"{HUBSPOT}/companies/batch/create",
            {"inputs": [{"properties": {"name": "ACME"}, "associations": []}]},
        )
    )


def test_hubspot_prose_limits(hubspot: OpenApiValidator) -> None:
    message = violation(hubspot, post(f"{HUBSPOT}/contacts/batch/upsert", upsert(101)))
    assert "[hubspot-batch-max-100-inputs] inputs has 101 items" in message

    message = violation(hubspot, post(f"{HUBSPOT}/contacts/search", search(limit=201)))
    assert "[hubspot-search-limit-max-200] limit is 201" in message
    hubspot.validate(post(f"{HUBSPOT}/contacts/search", search(limit=200)))

    hubspot.validate(
        post(f"{HUBSPOT}/companies/search", search(filterGroups=filter_groups(6, 6, 6)))
    )
    message = violation(
        hubspot, post(f"{HUBSPOT}/companies/search", search(filterGroups=filter_groups(*[1] * 6)))
    )
    assert "[hubspot-search-max-5-filter-groups]" in message
    message = violation(
        hubspot, post(f"{HUBSPOT}/companies/search", search(filterGroups=filter_groups(7)))
    )
    assert "[hubspot-search-max-6-filters-per-group] filterGroups[0].filters has 7" in message
    message = violation(
        hubspot, post(f"{HUBSPOT}/companies/search", search(filterGroups=filter_groups(5, 5, 5, 4)))
    )
    assert "[hubspot-search-max-18-filters] the search has 19 filters" in message


def test_hubspot_authorization(hubspot: OpenApiValidator) -> None:
    url = f"{HUBSPOT}/contacts/batch/upsert"
    assert "no Authorization header" in violation(hubspot, post(url, upsert(1), headers={}))
    assert "not 'Bearer <token>'" in violation(hubspot, post(url, upsert(1), headers=BASIC))
    hubspot.validate(post(url, upsert(1), headers={"Authorization": "Bearer oauth-access-token"}))


def test_hubspot_query_parameters(hubspot: OpenApiValidator) -> None:
    query = "limit=100&after=abc&properties=email&properties=firstname&archived=false"
    ok = f"{HUBSPOT}/contacts?{query}"
    hubspot.validate(httpx.Request("GET", ok, headers=BEARER))
    message = violation(
        hubspot, httpx.Request("GET", f"{HUBSPOT}/contacts?limit=ten", headers=BEARER)
    )
    assert "query parameter 'limit': Failed to cast value to integer" in message
    message = violation(
        hubspot, httpx.Request("GET", f"{HUBSPOT}/contacts?propertes=email", headers=BEARER)
    )
    assert "query parameter 'propertes': not declared" in message
    lenient = OpenApiValidator(
        *(require_specs(*HUBSPOT_SPECS) / p for p in HUBSPOT_SPECS), allow_unknown_query_params=True
    )
    lenient.validate(httpx.Request("GET", f"{HUBSPOT}/contacts?propertes=email", headers=BEARER))


def test_hubspot_paths_match_relative_to_the_server(hubspot: OpenApiValidator) -> None:
    # A local mock (Prism on loopback) and the companies file, through the same validator.
    hubspot.validate(
        httpx.Request(
            "GET",
            "http://127.0.0.1:4010/crm/v3/objects/contacts/a@example.com?idProperty=email",
            headers=BEARER,
        )
    )
    hubspot.validate(
        httpx.Request(
            "PATCH",
            f"{HUBSPOT}/companies/123",
            json={"properties": {"name": "ACME"}},
            headers=BEARER,
        )
    )


def test_validate_all_reports_every_bad_request(hubspot: OpenApiValidator) -> None:
    good = post(f"{HUBSPOT}/contacts/batch/upsert", upsert(1))
    assert hubspot.validate_all([good, good]) == 2
    with pytest.raises(SpecViolation) as info:
        hubspot.validate_all(
            [
                good,
                post(f"{HUBSPOT}/contacts/batch/upsert", upsert(101)),
                good,
                post(f"{HUBSPOT}/x", {}),
            ]
        )
    assert "2 of 4 requests" in str(info.value)
    assert "request #2" in str(info.value) and "request #4" in str(info.value)


def test_relaxations_are_documented_and_fail_loudly_when_stale() -> None:
    for relaxation in HUBSPOT_RELAXATIONS:
        assert relaxation.why
    with pytest.raises(ValueError, match="does not apply"):
        hubspot_validator(drop_required("PublicObjectSearchRequest", "query"))


def test_validators_are_built_once(hubspot: OpenApiValidator) -> None:
    assert hubspot_validator() is hubspot
    assert hubspot_validator(*HUBSPOT_RELAXATIONS) is hubspot_validator(*HUBSPOT_RELAXATIONS)


# -- Mailchimp -----------------------------------------------------------------------------------


def test_mailchimp_member_upsert_needs_status_if_new(mailchimp: OpenApiValidator) -> None:
    url = f"{MAILCHIMP}/lists/abc123/members/{MEMBER_HASH}"
    request = httpx.Request("PUT", url, json={"email_address": "a@example.com"}, headers=BASIC)
    assert "'status_if_new' is a required property" in violation(mailchimp, request)
    body = {"email_address": "a@example.com", "status_if_new": "subscribed"}
    mailchimp.validate(httpx.Request("PUT", url, json=body, headers=BASIC))
    # Prism serves the paths without the /3.0 base path.
    mailchimp.validate(
        httpx.Request(
            "PUT",
            f"http://127.0.0.1:4011/lists/abc123/members/{MEMBER_HASH}",
            json=body,
            headers=BASIC,
        )
    )


def test_mailchimp_merge_fields_need_their_relaxation(mailchimp: OpenApiValidator) -> None:
    body = {
        "email_address": "a@example.com",
        "status_if_new": "subscribed",
        "merge_fields": {"FNAME": "Ann"},
    }
    request = httpx.Request(
        "PUT", f"{MAILCHIMP}/lists/abc123/members/{MEMBER_HASH}", json=body, headers=BASIC
    )
    assert "body merge_fields.FNAME" in violation(mailchimp, request)
    mailchimp_validator(MAILCHIMP_MERGE_FIELD_VALUES).validate(request)


def test_mailchimp_prose_limits(mailchimp: OpenApiValidator) -> None:
    def batch(n: int) -> httpx.Request:
        members = [{"email_address": f"m{i}@example.com", "status": "subscribed"} for i in range(n)]
        return httpx.Request(
            "POST", f"{MAILCHIMP}/lists/abc123", json={"members": members}, headers=BASIC
        )

    mailchimp.validate(batch(500))
    assert "[mailchimp-batch-subscribe-max-500-members] members has 501 items" in violation(
        mailchimp, batch(501)
    )

    mailchimp.validate(
        httpx.Request("GET", f"{MAILCHIMP}/lists/abc123/members?count=1000&offset=0", headers=BASIC)
    )
    request = httpx.Request("GET", f"{MAILCHIMP}/lists/abc123/members?count=1001", headers=BASIC)
    assert "[mailchimp-count-max-1000]" in violation(mailchimp, request)


def test_mailchimp_needs_basic_auth(mailchimp: OpenApiValidator) -> None:
    url = f"{MAILCHIMP}/lists/abc123/members?since_last_changed=2024-01-01T00:00:00Z"
    assert "basicAuth" in violation(mailchimp, httpx.Request("GET", url, headers=BEARER))
    mailchimp.validate(httpx.Request("GET", url, headers=BASIC))


# -- Shopify -------------------------------------------------------------------------------------


def shopify_request(query: str, variables: dict | None = None) -> httpx.Request:
    return httpx.Request(
        "POST", SHOPIFY, json={"query": query, "variables": variables}, headers=SHOPIFY_TOKEN
    )


def test_shopify_valid_query_passes(shopify: GraphQLValidator) -> None:
    shopify.validate(shopify_request(CUSTOMERS_QUERY))
    shopify.validate_query(CUSTOMERS_QUERY)


def test_shopify_unknown_field_fails(shopify: GraphQLValidator) -> None:
    message = violation(
        shopify, shopify_request("{ customers(first: 10) { nodes { id emailAddress } } }")
    )
    assert "Cannot query field 'emailAddress' on type 'Customer'" in message


def test_shopify_argument_of_wrong_type_fails(shopify: GraphQLValidator) -> None:
    message = violation(shopify, shopify_request('{ customers(first: "ten") { nodes { id } } }'))
    assert 'Int cannot represent non-integer value: "ten"' in message


def test_shopify_variables_are_checked(shopify: GraphQLValidator) -> None:
    query = (
        "query Page($first: Int!, $after: String) "
        "{ customers(first: $first, after: $after) { nodes { id } } }"
    )
    shopify.validate(shopify_request(query, {"first": 50, "after": None}))
    message = violation(shopify, shopify_request(query, {"first": "ten"}))
    assert "variables: Variable '$first'" in message and "ten" in message
    with pytest.raises(SpecViolation, match=r"variables: Variable '\$first'"):
        shopify.validate_query(query)  # $first is required


def test_shopify_envelope_is_checked(shopify: GraphQLValidator) -> None:
    request = httpx.Request(
        "POST",
        "https://example.myshopify.com/admin/api/2024-10/graphql.json",
        json={"query": "{ shop { name } }"},
    )
    message = violation(shopify, request)
    assert "X-Shopify-Access-Token" in message and "is not the endpoint" in message
    assert "syntax" in violation(
        shopify, shopify_request("{ customers(first: 10 { nodes { id } } }")
    )
