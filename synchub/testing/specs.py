"""Check the requests a connector sends against the vendors' published API descriptions.

Connector tests mock the vendor with respx, so a request the real API would refuse can still make
a test pass. The validators here close that gap: give them the ``httpx.Request`` objects a test
captured and they raise :class:`SpecViolation` (an ``AssertionError``) naming every problem.

::

    from synchub.testing.specs import hubspot_validator

    def test_upsert_is_valid(respx_mock):
        route = respx_mock.post(...).respond(200, json=...)
        ...  # run the connector
        hubspot_validator().validate_all(call.request for call in route.calls)

What is checked
---------------
* :class:`OpenApiValidator` (HubSpot CRM v3 contacts and companies, Mailchimp Marketing 3.0):
  the path and method exist; path and query parameters have the declared types; no undeclared
  query parameter is sent (see below); the JSON body satisfies the operation's schema; the
  ``Authorization`` header meets the operation's security requirement; and the limits that the
  vendors state only in prose (:class:`Limit`, each named in the message). The validation
  itself is done by `openapi-core <https://github.com/python-openapi/openapi-core>`_ through a
  small adapter from ``httpx.Request`` (openapi-core ships adapters for requests, werkzeug,
  starlette and others, but not for httpx).
* :class:`GraphQLValidator` (Shopify GraphQL Admin API 2025-01): the endpoint, the access-token
  header, the JSON envelope, the document against the schema (graphql-core) and the variables
  against their declared types.

Paths are matched relative to the spec's server, so a request to ``https://api.hubapi.com/...``,
to ``https://us1.api.mailchimp.com/3.0/...`` or to a local mock such as
``http://127.0.0.1:4010/...`` (Prism serves Mailchimp without the ``/3.0`` base path) is checked
against the same operation.

Decisions and deviations from the bare specs
--------------------------------------------
* **Strict by default.** The specs are stricter than the live APIs in places (see the specs'
  README, "Known spec problems"). Nothing is relaxed unless a test asks for it with a
  :class:`Relaxation`, e.g. ``hubspot_validator(HUBSPOT_SEARCH_OPTIONAL_FIELDS)``; each predefined
  relaxation says why the live API accepts what the spec refuses. A connector should rather send
  the fields the spec requires (empty arrays are accepted) than rely on a relaxation.
* **Undeclared query parameters are errors** (``allow_unknown_query_params=False``). The specs
  list every query parameter an operation takes; the live APIs ignore any other one silently,
  so a misspelt ``propertes=email`` would quietly return different data.
* **OAuth 2 means a bearer token.** openapi-core accepts any request for an ``oauth2`` scheme;
  here it requires ``Authorization: Bearer <token>`` (RFC 6750), which is how HubSpot's OAuth and
  private-app tokens are sent. HubSpot's spec lists ``private_apps`` and ``developer_hapikey``
  schemes too, but no operation accepts them, so neither does the validator.
* **Prose limits** (HubSpot: 100 inputs per batch, search ``limit`` up to 200, at most 5 filter
  groups of at most 6 filters and 18 filters in all, ``query`` up to 3000 characters; Mailchimp:
  500 members per batch subscribe, ``count`` up to 1000) are checked as extra rules, see
  :data:`HUBSPOT_LIMITS` and :data:`MAILCHIMP_LIMITS`.
* **Shopify's schema** declares two object fields deprecated whose interface fields are not;
  graphql-core 3.3 refuses to validate documents against such a schema, so those two fields are
  loaded as not deprecated (deprecation has no effect on whether a query is valid).

Specs are parsed once per process and file (``functools.lru_cache``); validating one request
takes about 1-4 ms (most of it in openapi-core), a query already seen takes microseconds.
"""

from __future__ import annotations

import copy
import functools
import gzip
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from graphql import (
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    build_client_schema,
    get_variable_values,
    parse,
    validate_schema,
)
from graphql import validate as validate_document
from jsonschema_path import SchemaPath
from openapi_core.datatypes import RequestParameters
from openapi_core.security.exceptions import SecurityProviderError
from openapi_core.security.factories import SecurityProviderFactory
from openapi_core.security.providers import BaseProvider
from openapi_core.templating.paths.exceptions import OperationNotFound, PathError
from openapi_core.templating.paths.finders import APICallPathFinder
from openapi_core.validation.request import (
    V30RequestBodyValidator,
    V30RequestParametersValidator,
    V30RequestSecurityValidator,
)
from openapi_core.validation.request.exceptions import (
    MissingRequiredParameter,
    MissingRequiredRequestBody,
    ParameterValidationError,
)
from werkzeug.datastructures import Headers, ImmutableMultiDict

from synchub.redact import redact

__all__ = [
    "BUNDLED_SPECS_DIR",
    "HUBSPOT_BATCH_READ_WITHOUT_PROPERTY_LISTS",
    "HUBSPOT_CREATE_WITHOUT_ASSOCIATIONS",
    "HUBSPOT_LIMITS",
    "HUBSPOT_RELAXATIONS",
    "HUBSPOT_SEARCH_OPTIONAL_FIELDS",
    "HUBSPOT_SEARCH_SORT_OBJECTS",
    "HUBSPOT_SPECS",
    "MAILCHIMP_LIMITS",
    "MAILCHIMP_MERGE_FIELD_VALUES",
    "MAILCHIMP_RELAXATIONS",
    "MAILCHIMP_SPEC",
    "SHOPIFY_GRAPHQL_PATH",
    "SHOPIFY_SCHEMA",
    "GraphQLValidator",
    "Limit",
    "OpenApiValidator",
    "Relaxation",
    "SpecViolation",
    "drop_required",
    "hubspot_validator",
    "mailchimp_validator",
    "require_specs",
    "shopify_validator",
    "specs_dir",
]

#: Environment variable naming another specs directory with the same layout (default:
#: :data:`BUNDLED_SPECS_DIR`).
SPECS_DIR_ENV = "SYNCHUB_SPECS_DIR"
#: The copies kept in the repository, ``tests/specs`` (origin and licences: ``SOURCES.md`` there).
BUNDLED_SPECS_DIR = Path(__file__).resolve().parents[2] / "tests" / "specs"

HUBSPOT_SPECS = ("hubspot/crm-contacts-v3.json", "hubspot/crm-companies-v3.json")
MAILCHIMP_SPEC = "mailchimp/marketing-3.0.81.openapi3-converted.json"
SHOPIFY_SCHEMA = "shopify/admin-graphql-2025-01.introspection.json.gz"
#: The one endpoint of the GraphQL Admin API, for the schema version above.
SHOPIFY_GRAPHQL_PATH = "/admin/api/2025-01/graphql.json"

# A problem line quotes values from the request; keep a huge body from flooding the report.
_MAX_PROBLEM_CHARS = 400


# --------------------------------------------------------------------------------------------
# Where the specs are
# --------------------------------------------------------------------------------------------


def _configured_specs_dir() -> Path:
    env = os.environ.get(SPECS_DIR_ENV)
    return Path(env) if env else BUNDLED_SPECS_DIR


def specs_dir() -> Path | None:
    """The specs directory: ``$SYNCHUB_SPECS_DIR``, else the repository's ``tests/specs``;
    ``None`` when that directory does not exist."""
    path = _configured_specs_dir()
    return path if path.is_dir() else None


def require_specs(*relpaths: str) -> Path:
    """Return the specs directory for a test or fixture that needs ``relpaths`` in it.

    The specs ship with the repository, so a missing directory or file fails the test (it is
    never skipped), with a message naming what is missing.
    """
    base = _configured_specs_dir()
    if not base.is_dir():
        missing = [base]
    else:
        missing = [base / rel for rel in relpaths if not (base / rel).is_file()]
    if missing:
        where = f"${SPECS_DIR_ENV}" if os.environ.get(SPECS_DIR_ENV) else "the repository's tests/specs"
        pytest.fail(
            f"API spec(s) not found: {', '.join(str(p) for p in missing)} "
            f"(looked in {where}; see tests/specs/SOURCES.md)",
            pytrace=False,
        )
    return base


# --------------------------------------------------------------------------------------------
# The error
# --------------------------------------------------------------------------------------------


class SpecViolation(AssertionError):
    """A request that the vendor's API description does not accept.

    ``problems`` lists every problem found, one line each; the message holds all of them.
    """

    def __init__(self, what: str, problems: Sequence[str]):
        self.what = what
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(redact(f"{what}:\n{lines}"))


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_PROBLEM_CHARS else text[: _MAX_PROBLEM_CHARS - 3] + "..."


def _json_path(parts: Iterable[Any]) -> str:
    """``['inputs', 0, 'id']`` -> ``inputs[0].id``."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).isidentifier():
            out += f".{part}" if out else str(part)
        else:
            out += f"[{json.dumps(part)}]"
    return out


# --------------------------------------------------------------------------------------------
# Relaxations: opt-in edits of a spec where it refuses what the live API accepts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Relaxation:
    """An edit applied to the copy of a spec the validator uses (the file is never touched).

    ``apply`` changes the parsed spec in place and raises ``ValueError`` when the part it edits
    is not there (the spec changed and the relaxation should be reviewed).
    """

    name: str
    why: str
    apply: Callable[[dict[str, Any]], None]


def _schema(spec: dict[str, Any], name: str) -> dict[str, Any]:
    try:
        return spec["components"]["schemas"][name]
    except KeyError:
        raise ValueError(f"the spec has no schema {name!r}") from None


def drop_required(
    schemas: str | Sequence[str], *fields: str, name: str = "", why: str = ""
) -> Relaxation:
    """A relaxation that removes ``fields`` from ``required`` of each named schema in
    ``components.schemas`` (so it applies to every operation using those schemas)."""
    names = (schemas,) if isinstance(schemas, str) else tuple(schemas)

    def apply(spec: dict[str, Any]) -> None:
        for schema in names:
            target = _schema(spec, schema)
            required = target.get("required", [])
            absent = [f for f in fields if f not in required]
            if absent:
                raise ValueError(f"{schema}.required does not list {absent}")
            target["required"] = [f for f in required if f not in fields]
            if not target["required"]:
                del target["required"]

    return Relaxation(name or f"{'+'.join(names)}-optional-{'+'.join(fields)}", why, apply)


#: HubSpot search: the spec requires ``after``, ``filterGroups``, ``limit``, ``properties`` and
#: ``sorts``. HubSpot's search guide sends requests with only some of them (only
#: ``filterGroups``, or only ``query``); the API defaults the others (first page, 10 results,
#: default properties, no sort).
HUBSPOT_SEARCH_OPTIONAL_FIELDS = drop_required(
    "PublicObjectSearchRequest",
    "after",
    "filterGroups",
    "limit",
    "properties",
    "sorts",
    name="hubspot-search-optional-fields",
    why="the live search API defaults after, filterGroups, limit, properties and sorts",
)

#: HubSpot create (single and batch): the spec requires ``associations``; the objects guides
#: create records with only ``properties``.
HUBSPOT_CREATE_WITHOUT_ASSOCIATIONS = drop_required(
    ("SimplePublicObjectInputForCreate", "SimplePublicObjectBatchInputForCreate"),
    "associations",
    name="hubspot-create-without-associations",
    why="the live API creates records from properties alone",
)

#: HubSpot batch read: the spec requires ``properties`` and ``propertiesWithHistory``; the live
#: API returns the default properties when they are left out.
HUBSPOT_BATCH_READ_WITHOUT_PROPERTY_LISTS = drop_required(
    "BatchReadInputSimplePublicObjectId",
    "properties",
    "propertiesWithHistory",
    name="hubspot-batch-read-without-property-lists",
    why="the live batch read defaults properties and propertiesWithHistory",
)


def _sorts_as_objects(spec: dict[str, Any]) -> None:
    sorts = _schema(spec, "PublicObjectSearchRequest").get("properties", {}).get("sorts")
    if not isinstance(sorts, dict) or sorts.get("items", {}).get("type") != "string":
        raise ValueError("PublicObjectSearchRequest.sorts is no longer an array of strings")
    sorts["items"] = {
        "anyOf": [
            {"type": "string"},
            {
                "type": "object",
                "required": ["propertyName"],
                "properties": {
                    "propertyName": {"type": "string"},
                    "direction": {"type": "string", "enum": ["ASCENDING", "DESCENDING"]},
                },
            },
        ]
    }


#: HubSpot search: the spec types ``sorts`` items as strings, but HubSpot's search guide (and
#: the API) take objects ``{"propertyName": ..., "direction": "ASCENDING"|"DESCENDING"}``; the
#: mismatch is known from HubSpot's generated clients (hubspot-api-python #236,
#: hubspot-api-nodejs #14/#559). This accepts either form.
HUBSPOT_SEARCH_SORT_OBJECTS = Relaxation(
    "hubspot-search-sort-objects",
    "the live search API sorts by {propertyName, direction} objects; the spec says strings",
    _sorts_as_objects,
)


def _walk(node: Any, fn: Callable[[dict[str, Any]], None]) -> None:
    if isinstance(node, dict):
        fn(node)
        for value in node.values():
            _walk(value, fn)
    elif isinstance(node, list):
        for value in node:
            _walk(value, fn)


def _untyped_merge_field_values(spec: dict[str, Any]) -> None:
    changed = 0

    def fix(node: dict[str, Any]) -> None:
        nonlocal changed
        props = node.get("properties")
        merge_fields = props.get("merge_fields") if isinstance(props, dict) else None
        values = (
            merge_fields.get("additionalProperties") if isinstance(merge_fields, dict) else None
        )
        if isinstance(values, dict) and "type" in values:
            del values["type"]
            changed += 1

    _walk(spec, fix)
    if not changed:
        raise ValueError("no merge_fields schema with typed values found")


#: Mailchimp members: the OAS 3 conversion types every ``merge_fields`` value as ``object``
#: (a conversion artefact), so ``{"FNAME": "Ann"}`` is refused. Mailchimp's merge-field docs
#: take strings and numbers (and an object for address fields). This leaves the values untyped.
MAILCHIMP_MERGE_FIELD_VALUES = Relaxation(
    "mailchimp-merge-field-values",
    "merge field values are strings, numbers or address objects; the conversion says objects",
    _untyped_merge_field_values,
)

#: Every HubSpot relaxation, for a test that wants the spec as lenient as the live API.
HUBSPOT_RELAXATIONS = (
    HUBSPOT_SEARCH_OPTIONAL_FIELDS,
    HUBSPOT_CREATE_WITHOUT_ASSOCIATIONS,
    HUBSPOT_BATCH_READ_WITHOUT_PROPERTY_LISTS,
    HUBSPOT_SEARCH_SORT_OBJECTS,
)
#: Every Mailchimp relaxation.
MAILCHIMP_RELAXATIONS = (MAILCHIMP_MERGE_FIELD_VALUES,)


# --------------------------------------------------------------------------------------------
# Limits the vendors state only in prose
# --------------------------------------------------------------------------------------------

#: (query parameters as name -> values, parsed JSON body or None) -> problems
LimitCheck = Callable[[Mapping[str, list[str]], Any], Iterable[str]]


@dataclass(frozen=True)
class Limit:
    """A rule the spec does not express in its schemas. ``operations`` holds the
    ``(METHOD, spec path template)`` pairs it applies to; empty means every operation.
    ``check`` returns the problems it finds; they are reported prefixed with ``[name]``."""

    name: str
    source: str
    check: LimitCheck
    operations: frozenset[tuple[str, str]] = frozenset()

    def applies_to(self, method: str, template: str) -> bool:
        return not self.operations or (method, template) in self.operations


HUBSPOT_BATCH_MAX_INPUTS = 100
HUBSPOT_SEARCH_MAX_LIMIT = 200
# The numbers disagree between sources: the spec's prose says "Up to 6 groups"; the search
# guide, as integrators quote it, says 5 filter groups of at most 6 filters, 18 filters in all;
# HubSpot's changelog of 2024-08 announced 5 groups, 10 filters per group, 25 in all. These are
# the smallest stated numbers, so a request within them is accepted whichever source is current.
HUBSPOT_SEARCH_MAX_FILTER_GROUPS = 5
HUBSPOT_SEARCH_MAX_FILTERS_PER_GROUP = 6
HUBSPOT_SEARCH_MAX_FILTERS = 18
HUBSPOT_SEARCH_MAX_QUERY_CHARS = 3000
MAILCHIMP_BATCH_MAX_MEMBERS = 500
MAILCHIMP_MAX_COUNT = 1000


def _body_list_max(field: str, maximum: int, what: str) -> LimitCheck:
    def check(query: Mapping[str, list[str]], body: Any) -> Iterable[str]:
        items = body.get(field) if isinstance(body, dict) else None
        if isinstance(items, list) and len(items) > maximum:
            yield f"{field} has {len(items)} items; {what} at most {maximum}"

    return check


def _hubspot_search_limit(query: Mapping[str, list[str]], body: Any) -> Iterable[str]:
    limit = body.get("limit") if isinstance(body, dict) else None
    if isinstance(limit, int) and limit > HUBSPOT_SEARCH_MAX_LIMIT:
        yield f"limit is {limit}; a search returns at most {HUBSPOT_SEARCH_MAX_LIMIT} per page"


def _hubspot_search_query_length(query: Mapping[str, list[str]], body: Any) -> Iterable[str]:
    text = body.get("query") if isinstance(body, dict) else None
    if isinstance(text, str) and len(text) > HUBSPOT_SEARCH_MAX_QUERY_CHARS:
        yield f"query has {len(text)} characters; at most {HUBSPOT_SEARCH_MAX_QUERY_CHARS}"


def _hubspot_filter_groups(body: Any) -> list[list[Any]]:
    groups = body.get("filterGroups") if isinstance(body, dict) else None
    if not isinstance(groups, list):
        return []
    return [
        g["filters"] for g in groups if isinstance(g, dict) and isinstance(g.get("filters"), list)
    ]


def _hubspot_filters_per_group(query: Mapping[str, list[str]], body: Any) -> Iterable[str]:
    for i, filters in enumerate(_hubspot_filter_groups(body)):
        if len(filters) > HUBSPOT_SEARCH_MAX_FILTERS_PER_GROUP:
            yield (
                f"filterGroups[{i}].filters has {len(filters)} filters; "
                f"at most {HUBSPOT_SEARCH_MAX_FILTERS_PER_GROUP} per group"
            )


def _hubspot_filters_total(query: Mapping[str, list[str]], body: Any) -> Iterable[str]:
    total = sum(len(f) for f in _hubspot_filter_groups(body))
    if total > HUBSPOT_SEARCH_MAX_FILTERS:
        yield f"the search has {total} filters in all; at most {HUBSPOT_SEARCH_MAX_FILTERS}"


def _mailchimp_count(query: Mapping[str, list[str]], body: Any) -> Iterable[str]:
    for value in query.get("count", []):
        if value.strip().lstrip("-").isdigit() and int(value) > MAILCHIMP_MAX_COUNT:
            yield f"count is {value}; Mailchimp pages hold at most {MAILCHIMP_MAX_COUNT} items"


_HUBSPOT_OBJECTS = ("contacts", "companies")
_HUBSPOT_BATCH_OPS = frozenset(
    ("POST", f"/crm/v3/objects/{obj}/batch/{op}")
    for obj in _HUBSPOT_OBJECTS
    for op in ("create", "read", "update", "upsert", "archive")
)
_HUBSPOT_SEARCH_OPS = frozenset(
    ("POST", f"/crm/v3/objects/{obj}/search") for obj in _HUBSPOT_OBJECTS
)

#: HubSpot limits stated outside the spec's schemas.
HUBSPOT_LIMITS = (
    Limit(
        "hubspot-batch-max-100-inputs",
        "HubSpot CRM docs: batch endpoints take up to 100 inputs per request (no maxItems)",
        _body_list_max("inputs", HUBSPOT_BATCH_MAX_INPUTS, "a HubSpot batch request takes"),
        _HUBSPOT_BATCH_OPS,
    ),
    Limit(
        "hubspot-search-limit-max-200",
        "spec prose: search limit 'up to 200 objects'",
        _hubspot_search_limit,
        _HUBSPOT_SEARCH_OPS,
    ),
    Limit(
        "hubspot-search-max-5-filter-groups",
        "HubSpot search guide: at most 5 filterGroups (the spec's prose says 6)",
        _body_list_max("filterGroups", HUBSPOT_SEARCH_MAX_FILTER_GROUPS, "a search takes"),
        _HUBSPOT_SEARCH_OPS,
    ),
    Limit(
        "hubspot-search-max-6-filters-per-group",
        "HubSpot search guide: at most 6 filters in each filter group",
        _hubspot_filters_per_group,
        _HUBSPOT_SEARCH_OPS,
    ),
    Limit(
        "hubspot-search-max-18-filters",
        "HubSpot search guide: at most 18 filters in all",
        _hubspot_filters_total,
        _HUBSPOT_SEARCH_OPS,
    ),
    Limit(
        "hubspot-search-query-max-3000-chars",
        "spec prose: search query 'up to 3000 characters'",
        _hubspot_search_query_length,
        _HUBSPOT_SEARCH_OPS,
    ),
)

#: Mailchimp limits stated outside the spec's schemas.
MAILCHIMP_LIMITS = (
    Limit(
        "mailchimp-batch-subscribe-max-500-members",
        "spec prose: 'Up to 500 members may be added or updated with each API call'",
        _body_list_max("members", MAILCHIMP_BATCH_MAX_MEMBERS, "a batch subscribe takes"),
        frozenset({("POST", "/lists/{list_id}")}),
    ),
    Limit(
        "mailchimp-static-segment-max-500-members-to-add",
        "spec prose: 'A maximum of 500 members can be sent' (members_to_add)",
        _body_list_max("members_to_add", MAILCHIMP_BATCH_MAX_MEMBERS, "a static segment update takes"),
        frozenset({("POST", "/lists/{list_id}/segments/{segment_id}")}),
    ),
    Limit(
        "mailchimp-static-segment-max-500-members-to-remove",
        "spec prose: 'A maximum of 500 members can be sent' (members_to_remove)",
        _body_list_max("members_to_remove", MAILCHIMP_BATCH_MAX_MEMBERS, "a static segment update takes"),
        frozenset({("POST", "/lists/{list_id}/segments/{segment_id}")}),
    ),
    # The spec also declares `maximum: 1000` on each `count` parameter; repeated here so the
    # limit holds for every operation whatever the spec version says.
    Limit(
        "mailchimp-count-max-1000",
        "Mailchimp docs and spec: count is at most 1000",
        _mailchimp_count,
    ),
)


# --------------------------------------------------------------------------------------------
# OpenAPI: loading, the httpx adapter, bearer tokens
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def _load_openapi(path: str, relaxations: tuple[Relaxation, ...]) -> dict[str, Any]:
    """The parsed spec with ``relaxations`` applied; parsed once per process and combination."""
    spec = json.loads(Path(path).read_text(encoding="utf-8"))
    if not str(spec.get("openapi", "")).startswith("3.0"):
        raise ValueError(f"{path}: not an OpenAPI 3.0 document")
    for relaxation in relaxations:
        try:
            relaxation.apply(spec)
        except ValueError as exc:
            raise ValueError(
                f"relaxation {relaxation.name!r} does not apply to {path}: {exc}"
            ) from exc
    return spec


class _HttpxOpenAPIRequest:
    """An ``httpx.Request`` seen through openapi-core's ``Request`` protocol.

    ``host_url`` and ``path`` are those of the spec's server plus the request's path relative to
    that server, so a request sent to a mock server is matched like one sent to the vendor.
    """

    def __init__(self, request: httpx.Request, host_url: str, path: str):
        self.host_url = host_url
        self.path = path
        self.method = request.method.lower()
        self.body: bytes | None = request.content or None
        self.content_type = request.headers.get("content-type", "").lower()
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(list(request.url.params.multi_items())),
            header=Headers(list(request.headers.multi_items())),
            cookie=ImmutableMultiDict(),
        )


class _BearerTokenProvider(BaseProvider):
    """``oauth2``/``openIdConnect``: the access token travels as ``Authorization: Bearer``."""

    def __call__(self, parameters: RequestParameters) -> Any:
        header = parameters.header.get("Authorization")
        if not header:
            raise SecurityProviderError("no Authorization header")
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise SecurityProviderError(f"Authorization uses {scheme!r}, not 'Bearer <token>'")
        if not token.strip():
            raise SecurityProviderError("the Bearer token is empty")
        return token


class _SecurityProviders(SecurityProviderFactory):
    PROVIDERS = {  # noqa: RUF012 - same shape as the base class attribute
        **SecurityProviderFactory.PROVIDERS,
        "oauth2": _BearerTokenProvider,
        "openIdConnect": _BearerTokenProvider,
    }


_SECURITY_PROVIDERS = _SecurityProviders()
_HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _describe_scheme(scheme: Mapping[str, Any]) -> str:
    kind = scheme.get("type")
    if kind in ("oauth2", "openIdConnect"):
        return "Authorization: Bearer <token>"
    if kind == "http":
        return f"Authorization: {str(scheme.get('scheme', '')).title()} <credentials>"
    if kind == "apiKey":
        return f"{scheme.get('in')} {scheme.get('name')!r}"
    return str(kind)


class _SpecFile:
    """One OpenAPI file, ready to validate: the (relaxed) document, its server, openapi-core's
    path finder and validators."""

    def __init__(self, path: str, relaxations: tuple[Relaxation, ...]):
        self.path = path
        self.label = "/".join(Path(path).parts[-2:])
        self.doc = _load_openapi(path, relaxations)
        servers = self.doc.get("servers") or []
        if not servers:
            raise ValueError(f"{path}: the validator needs an absolute server URL in 'servers'")
        server = servers[0]
        url = server["url"]
        for var, spec in (server.get("variables") or {}).items():
            url = url.replace("{" + var + "}", str(spec.get("default", "")))
        parts = urlsplit(url)
        if not parts.scheme or not parts.netloc:
            raise ValueError(f"{path}: the validator needs an absolute server URL, got {url!r}")
        self.host_url = f"{parts.scheme}://{parts.netloc}"
        self.base_path = parts.path.rstrip("/")
        schema_path = SchemaPath.from_dict(self.doc)
        self.finder = APICallPathFinder(schema_path)
        options: dict[str, Any] = {"security_provider_factory": _SECURITY_PROVIDERS}
        self.security = V30RequestSecurityValidator(schema_path, **options)
        self.parameters = V30RequestParametersValidator(schema_path, **options)
        self.body = V30RequestBodyValidator(schema_path, **options)

    def relative_path(self, raw_path: str) -> str:
        """The request path relative to the server: the server's base path (``/3.0``) is
        dropped when present, a path without it (a mock server) is taken as it is."""
        base = self.base_path
        if base and (raw_path == base or raw_path.startswith(base + "/")):
            return raw_path[len(base) :] or "/"
        return raw_path

    def url_for(self, rel: str) -> str:
        """The URL under the spec's own server that openapi-core matches paths against."""
        return self.host_url + self.base_path + rel

    def methods_for(self, rel: str) -> set[str]:
        """The methods the spec has on the path that ``rel`` matches (none if no path does)."""
        for method in _HTTP_METHODS:
            try:
                template = self.finder.find(method, self.url_for(rel)).path_result.pattern
            except PathError:
                continue
            return {m.upper() for m in self.doc["paths"][template] if m in _HTTP_METHODS}
        return set()

    def operation(self, method: str, template: str) -> dict[str, Any]:
        return self.doc["paths"][template][method.lower()]

    def declared_parameters(self, method: str, template: str, location: str) -> set[str]:
        item = self.doc["paths"][template]
        params = [*item.get("parameters", []), *item[method.lower()].get("parameters", [])]
        names = set()
        for param in params:
            param = self._deref(param)
            if param.get("in") == location:
                names.add(param["name"])
        return names

    def security_schemes(self, method: str, template: str) -> list[dict[str, Any]]:
        operation = self.operation(method, template)
        return operation.get("security", self.doc.get("security", []))

    def _deref(self, node: dict[str, Any]) -> dict[str, Any]:
        ref = node.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#/"):
            return node
        target: Any = self.doc
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        return target


# --------------------------------------------------------------------------------------------
# OpenAPI validator
# --------------------------------------------------------------------------------------------


class OpenApiValidator:
    """Validates ``httpx.Request`` objects against one or more OpenAPI 3.0 files.

    Several files (HubSpot publishes contacts and companies separately, both on
    ``https://api.hubapi.com``) act as one API: a request is checked against the file that has
    its path.

    :param relaxations: edits applied to the validator's copy of each file (default: none).
    :param limits: extra rules from the vendor's prose (:data:`HUBSPOT_LIMITS`, ...).
    :param allow_unknown_query_params: accept query parameters the operation does not declare.
    """

    def __init__(
        self,
        *spec_files: str | Path,
        relaxations: Iterable[Relaxation] = (),
        limits: Iterable[Limit] = (),
        allow_unknown_query_params: bool = False,
    ):
        if not spec_files:
            raise ValueError("OpenApiValidator needs at least one spec file")
        self.relaxations = tuple(relaxations)
        self.limits = tuple(limits)
        self.allow_unknown_query_params = allow_unknown_query_params
        self._files = [_SpecFile(str(Path(f).resolve()), self.relaxations) for f in spec_files]
        self.label = ", ".join(f.label for f in self._files)

    def validate(self, request: httpx.Request) -> None:
        """Raise :class:`SpecViolation` unless the spec accepts ``request``."""
        problems, where = self._check(request)
        if problems:
            raise SpecViolation(
                f"{request.method} {request.url} is not accepted by {where}", problems
            )

    def check(self, request: httpx.Request) -> list[str]:
        """The problems :meth:`validate` would report; empty when the request is valid."""
        return self._check(request)[0]

    def validate_all(self, requests: Iterable[httpx.Request]) -> int:
        """Validate every request; raise one :class:`SpecViolation` listing each invalid one.
        Returns how many were validated (so a test can tell that some were)."""
        return _validate_all(self.validate, requests)

    # -- internals ---------------------------------------------------------------------------

    def _check(self, request: httpx.Request) -> tuple[list[str], str]:
        """(problems, the spec file and operation the request was checked against)."""
        request.read()  # a streamed body must be loaded before it can be checked
        raw_path = request.url.raw_path.decode("ascii").split("?", 1)[0]
        method = request.method.upper()

        # The file that has this path and method. A path no file has is an unknown path; a path
        # that exists, but not with this method, is an unknown method.
        allowed: set[str] = set()
        for spec in self._files:
            rel = spec.relative_path(raw_path)
            try:
                found = spec.finder.find(method.lower(), spec.url_for(rel))
            except OperationNotFound:
                allowed |= spec.methods_for(rel)
                continue
            except PathError:
                continue
            template = found.path_result.pattern
            problems = self._check_operation(spec, request, method, rel, template)
            return problems, f"{spec.label} (operation {method} {template})"

        if allowed:
            problem = f"method: the spec has no {method} on this path (only {sorted(allowed)})"
        else:
            problem = f"path: {raw_path!r} matches no path of the spec"
        return [problem], self.label

    def _check_operation(
        self, spec: _SpecFile, request: httpx.Request, method: str, rel: str, template: str
    ) -> list[str]:
        adapted = _HttpxOpenAPIRequest(request, spec.host_url, spec.base_path + rel)
        problems: list[str] = []

        if any(True for _ in spec.security.iter_errors(adapted)):
            problems.append(self._security_problem(spec, method, template, adapted))

        for error in spec.parameters.iter_errors(adapted):
            problems.append(_parameter_problem(error))

        if not self.allow_unknown_query_params:
            declared = spec.declared_parameters(method, template, "query")
            for name in dict.fromkeys(request.url.params.keys()):
                if name not in declared:
                    known = ", ".join(sorted(declared)) or "none"
                    problems.append(
                        f"query parameter {name!r}: not declared for this operation "
                        f"(declared: {known})"
                    )

        if "requestBody" in spec.operation(method, template):
            if request.content and not adapted.content_type:
                problems.append("body: sent without a Content-Type header")
            else:
                for error in spec.body.iter_errors(adapted):
                    problems.extend(_body_problems(error))
        elif request.content:
            problems.append(
                f"body: the operation takes no body, but {len(request.content)} bytes were sent"
            )

        if self.limits:
            query = {k: request.url.params.get_list(k) for k in request.url.params.keys()}
            body = _json_body(request)
            for limit in self.limits:
                if limit.applies_to(method, template):
                    problems += [
                        f"[{limit.name}] {p} ({limit.source})" for p in limit.check(query, body)
                    ]

        return [_clip(p) for p in problems]

    @staticmethod
    def _security_problem(
        spec: _SpecFile, method: str, template: str, adapted: _HttpxOpenAPIRequest
    ) -> str:
        schemes = spec.doc.get("components", {}).get("securitySchemes", {})
        reasons = []
        for requirement in spec.security_schemes(method, template):
            for name in requirement:
                scheme = schemes.get(name, {})
                try:
                    _SECURITY_PROVIDERS.create(SchemaPath.from_dict(scheme))(adapted.parameters)
                except SecurityProviderError as exc:
                    reasons.append(f"{name} ({_describe_scheme(scheme)}): {exc}")
                except KeyError:
                    reasons.append(f"{name}: unsupported security scheme")
        return "security: the request meets no security requirement of the operation: " + "; ".join(
            reasons
        )


def _parameter_problem(error: Exception) -> str:
    if isinstance(error, MissingRequiredParameter):
        return f"{error.location} parameter {error.name!r}: required but missing"
    if isinstance(error, ParameterValidationError):
        cause = error.__cause__
        schema_errors = list(getattr(cause, "schema_errors", None) or [])
        detail = (
            "; ".join(e.message for e in schema_errors) if schema_errors else str(cause or error)
        )
        return f"{error.location} parameter {error.name!r}: {detail}"
    return f"parameters: {error}"


def _body_problems(error: Exception) -> list[str]:
    if isinstance(error, MissingRequiredRequestBody):
        return ["body: missing, but the operation requires one"]
    cause = error.__cause__
    schema_errors = list(getattr(cause, "schema_errors", None) or [])
    if not schema_errors:
        return [f"body: {cause or error}"]
    problems = []
    for e in schema_errors:
        where = _json_path(e.absolute_path)
        problems.append(f"body {where}: {e.message}" if where else f"body: {e.message}")
    return problems


def _json_body(request: httpx.Request) -> Any:
    if "json" not in request.headers.get("content-type", "") or not request.content:
        return None
    try:
        return json.loads(request.content)
    except ValueError:
        return None  # openapi-core reports the unreadable body


def _validate_all(
    validate: Callable[[httpx.Request], None], requests: Iterable[httpx.Request]
) -> int:
    count = 0
    failures: list[str] = []
    for count, request in enumerate(requests, start=1):
        try:
            validate(request)
        except SpecViolation as exc:
            failures.append(f"request #{count}: {exc}")
    if failures:
        raise SpecViolation(
            f"{len(failures)} of {count} requests are not accepted by the spec",
            [f.replace("\n", "\n    ") for f in failures],
        )
    return count


# --------------------------------------------------------------------------------------------
# GraphQL
# --------------------------------------------------------------------------------------------


def _undeprecate_interface_implementations(types: list[dict[str, Any]]) -> None:
    """Shopify's schema marks a few object fields deprecated while the interface field they
    implement is not; graphql-core >= 3.3 then refuses to validate any document against it.
    Deprecation does not change which queries are valid, so such fields are loaded as not
    deprecated."""
    by_name = {t["name"]: t for t in types}

    def live_fields(type_name: str) -> set[str]:
        fields = by_name.get(type_name, {}).get("fields") or []
        return {f["name"] for f in fields if not f.get("isDeprecated")}

    for type_ in types:
        interfaces = type_.get("interfaces") or []
        live = set().union(*(live_fields(i["name"]) for i in interfaces)) if interfaces else set()
        for field in type_.get("fields") or []:
            if field.get("isDeprecated") and field["name"] in live:
                field["isDeprecated"] = False
                field["deprecationReason"] = None


@functools.lru_cache(maxsize=8)
def _load_graphql_schema(path: str) -> GraphQLSchema:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:
        introspection = json.load(fh)
    data = copy.deepcopy(introspection.get("data", introspection))
    _undeprecate_interface_implementations(data["__schema"]["types"])
    schema = build_client_schema(data)
    errors = validate_schema(schema)
    if errors:
        raise ValueError(f"{path}: invalid GraphQL schema: {errors[0].message}")
    return schema


def _graphql_problem(error: GraphQLError) -> str:
    where = ", ".join(f"line {loc.line} column {loc.column}" for loc in error.locations or [])
    return f"{error.message} ({where})" if where else error.message


@functools.lru_cache(maxsize=4096)
def _document_problems(schema_path: str, query: str) -> tuple[Any, tuple[str, ...]]:
    """(parsed document or None, problems) for one query text; queries repeat with new
    variables, so this is worth caching."""
    try:
        document = parse(query)
    except GraphQLError as exc:
        return None, (f"syntax: {_graphql_problem(exc)}",)
    errors = validate_document(_load_graphql_schema(schema_path), document)
    return document, tuple(_graphql_problem(e) for e in errors)


class GraphQLValidator:
    """Validates GraphQL requests against a schema from an introspection result (JSON, or
    gzipped JSON).

    :param endpoint_path: the path every request must go to (e.g. :data:`SHOPIFY_GRAPHQL_PATH`);
        ``None`` accepts any path.
    :param required_headers: headers every request must carry (e.g. the access token).
    """

    def __init__(
        self,
        introspection_file: str | Path,
        *,
        endpoint_path: str | None = None,
        required_headers: Iterable[str] = (),
    ):
        self.path = str(Path(introspection_file).resolve())
        self.label = "/".join(Path(self.path).parts[-2:])
        self.schema = _load_graphql_schema(self.path)
        self.endpoint_path = endpoint_path
        self.required_headers = tuple(required_headers)

    def validate(self, request: httpx.Request) -> None:
        """Raise :class:`SpecViolation` unless ``request`` is a valid GraphQL request."""
        problems = self.check(request)
        if problems:
            raise SpecViolation(
                f"{request.method} {request.url} is not valid for {self.label}", problems
            )

    def check(self, request: httpx.Request) -> list[str]:
        """The problems :meth:`validate` would report; empty when the request is valid."""
        request.read()
        problems: list[str] = []
        if request.method != "POST":
            problems.append(f"method: GraphQL requests are POSTs, not {request.method}")
        if self.endpoint_path is not None and request.url.path != self.endpoint_path:
            problems.append(
                f"path: {request.url.path!r} is not the endpoint {self.endpoint_path!r}"
            )
        for name in self.required_headers:
            if not request.headers.get(name, "").strip():
                problems.append(f"header {name!r}: required but missing")
        if "json" not in request.headers.get("content-type", ""):
            problems.append("body: Content-Type must be application/json")
        try:
            envelope = json.loads(request.content or b"null")
        except ValueError as exc:
            return [*problems, f"body: not JSON ({exc})"]
        if not isinstance(envelope, dict) or not isinstance(envelope.get("query"), str):
            return [*problems, 'body: must be a JSON object with a "query" string']
        variables = envelope.get("variables")
        operation_name = envelope.get("operationName")
        if variables is not None and not isinstance(variables, dict):
            return [*problems, 'body: "variables" must be a JSON object']
        if operation_name is not None and not isinstance(operation_name, str):
            return [*problems, 'body: "operationName" must be a string']
        return [*problems, *self.check_query(envelope["query"], variables, operation_name)]

    def validate_query(
        self,
        query: str,
        variables: Mapping[str, Any] | None = None,
        operation_name: str | None = None,
    ) -> None:
        """Raise :class:`SpecViolation` unless ``query`` (with ``variables``) is valid."""
        problems = self.check_query(query, variables, operation_name)
        if problems:
            raise SpecViolation(f"GraphQL document is not valid for {self.label}", problems)

    def check_query(
        self,
        query: str,
        variables: Mapping[str, Any] | None = None,
        operation_name: str | None = None,
    ) -> list[str]:
        """The problems :meth:`validate_query` would report."""
        document, problems = _document_problems(self.path, query)
        if document is None or problems:
            return list(problems)
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        if operation_name is not None:
            operations = [o for o in operations if o.name and o.name.value == operation_name]
            if not operations:
                return [f"operationName: no operation named {operation_name!r}"]
        elif len(operations) > 1:
            return ["operationName: required when the document holds several operations"]
        coerced = get_variable_values(
            self.schema, operations[0].variable_definitions or [], dict(variables or {})
        )
        if isinstance(coerced, list):  # a list of errors; else the coerced values
            return [f"variables: {_graphql_problem(e)}" for e in coerced]
        return []

    def validate_all(self, requests: Iterable[httpx.Request]) -> int:
        """Validate every request; raise one :class:`SpecViolation` listing each invalid one.
        Returns how many were validated."""
        return _validate_all(self.validate, requests)


# --------------------------------------------------------------------------------------------
# The project's vendors
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _openapi_validator(
    files: tuple[str, ...], relaxations: tuple[Relaxation, ...], limits: tuple[Limit, ...]
) -> OpenApiValidator:
    return OpenApiValidator(*files, relaxations=relaxations, limits=limits)


def hubspot_validator(
    *relaxations: Relaxation, limits: Iterable[Limit] = HUBSPOT_LIMITS
) -> OpenApiValidator:
    """HubSpot CRM v3 contacts and companies (strict unless ``relaxations`` are given), with
    :data:`HUBSPOT_LIMITS`. Fails the calling test when the specs are missing."""
    base = require_specs(*HUBSPOT_SPECS)
    files = tuple(str(base / rel) for rel in HUBSPOT_SPECS)
    return _openapi_validator(files, relaxations, tuple(limits))


def mailchimp_validator(
    *relaxations: Relaxation, limits: Iterable[Limit] = MAILCHIMP_LIMITS
) -> OpenApiValidator:
    """Mailchimp Marketing API 3.0 (OAS 3 conversion of 3.0.81; strict unless ``relaxations``
    are given, e.g. :data:`MAILCHIMP_MERGE_FIELD_VALUES`), with :data:`MAILCHIMP_LIMITS`."""
    base = require_specs(MAILCHIMP_SPEC)
    return _openapi_validator((str(base / MAILCHIMP_SPEC),), relaxations, tuple(limits))


@functools.lru_cache(maxsize=4)
def _shopify_validator(path: str) -> GraphQLValidator:
    return GraphQLValidator(
        path, endpoint_path=SHOPIFY_GRAPHQL_PATH, required_headers=("X-Shopify-Access-Token",)
    )


def shopify_validator() -> GraphQLValidator:
    """Shopify GraphQL Admin API 2025-01: endpoint :data:`SHOPIFY_GRAPHQL_PATH`, header
    ``X-Shopify-Access-Token``, document and variables against the schema."""
    base = require_specs(SHOPIFY_SCHEMA)
    return _shopify_validator(str(base / SHOPIFY_SCHEMA))
