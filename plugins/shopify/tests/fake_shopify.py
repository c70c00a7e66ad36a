"""A stateful fake of Shopify's GraphQL Admin API (2025-01), served as an ``httpx`` transport for
tests.

::

    fake = FakeShopify(validator=shopify_validator())
    ann = fake.add_customer(firstName="Ann", email="ann@example.com")
    fake.add_order(ann, total="25.00")
    client = httpx.Client(transport=fake.transport, base_url=f"https://{fake.shop}",
                          headers={"X-Shopify-Access-Token": fake.token})
    client.post(fake.graphql_path, json={"query": "{ customers(first: 50) { nodes { id } } }"})

Every request is executed for real by graphql-core against Shopify's published 2025-01 schema
(the introspection file of the specs directory), with resolvers over the fake's data. So an answer
has exactly the shape the query asked for, and a query the schema refuses gets GraphQL
``errors``. Custom scalars (``DateTime``, ``Decimal``, ``Money``, ``URL``, ``UnsignedInt64``)
travel as strings. Where a detail is not documented by Shopify, the choice made here is said so
below: "guessed" (wording or shape we could not check) or "undocumented, stricter" (the fake
refuses what Shopify might accept, so a connector that passes here is safe there).

Endpoint and auth
    ``POST https://{shop}/admin/api/{api_version}/graphql.json`` is the only API endpoint; any
    other host or path (or another method) is a 404 ``{"errors": "Not Found"}``. A missing or
    wrong ``X-Shopify-Access-Token`` is a 401 with Shopify's ``[API] Invalid API key or access
    token ...`` text (with a validator, a missing header is first a violation, see below). A
    body that is not a JSON object with a ``query`` string is a 400
    ``{"errors": {"query": "Required parameter missing or invalid"}}`` (guessed). With
    ``validator=`` (a :class:`~synchub.testing.specs.GraphQLValidator`) every request to the shop's
    ``/admin/`` paths is checked first; its problems are appended to ``violations`` (strings) and
    the request is answered 400 with the problems in ``errors``: it is never executed. Invalid
    documents without a validator are answered 200 with ``errors`` (and no ``data``), as Shopify
    does. Undocumented, stricter: a request to the bulk-file host that carries the
    ``X-Shopify-Access-Token`` header (the shop's secret, sent to Google) is a violation too.

Data
    Customers and orders are dicts with the schema's camelCase keys (``fake.customers``,
    ``fake.orders``, gid -> dict), made with :meth:`FakeShopify.add_customer` /
    :meth:`FakeShopify.add_order` and changed with the other test helpers. DateTimes are
    ``YYYY-MM-DDTHH:MM:SSZ`` (whole seconds, UTC) on the fake clock. Derived fields are computed
    when read: ``displayName``, ``numberOfOrders`` (all orders), ``amountSpent`` (sum of the
    ``currentTotalPriceSet.shopMoney`` of the orders not cancelled, shop currency), ``lastOrder``,
    ``orders``, ``addressesV2``, ``defaultAddress``. ``emailMarketingConsent`` is ``null`` for a
    customer without e-mail and ``smsMarketingConsent`` without phone (schema description). An
    order written (added, changed, moved) bumps its own ``updatedAt`` and its customers'
    (Shopify updates the customer's order statistics). Decimal amounts are written as Shopify
    writes them: no trailing zeros but one decimal place (``"25.0"``, ``"12.5"``; observed, not
    documented). A field of the schema the fake does not model answers ``null``; its name is added
    to ``fake.unmodelled``, and a non-null one is a GraphQL error saying so.

Connections (``customers``, ``orders`` and the nested ones)
    ``first`` (at most 250) with ``after`` and ``reverse``. Neither ``first`` nor ``last``: the
    error "you must provide one of first or last" (Shopify's text). ``last``/``before`` are not
    supported by the fake (an error says so). ``sortKey``: ``ID``, ``UPDATED_AT``, ``CREATED_AT``
    and for orders ``PROCESSED_AT`` (default ``PROCESSED_AT`` for ``orders``, ``ID`` elsewhere);
    ties are broken by id; other keys are errors naming the fake. Cursors are opaque and carry the
    sort value and id, so a cursor keeps its place when records change between pages (a record
    whose new sort value lies past the cursor comes again, one that moved before it is not seen
    again: as on Shopify). A cursor used with another ``sortKey`` is refused (undocumented,
    stricter). Pagination limit (shopify.dev "API limits"): a page that would start after the
    first ``pagination_cap`` (25,000) objects of the query's list is an error;
    ``pagination_cap=None`` lifts it. (Shopify's June 2025 changelog says the Admin API allows
    more than 25,000; keeping the limit is the stricter choice.) ``customersCount`` reports at
    most ``pagination_cap + 1`` with precision ``AT_LEAST`` (shopify.dev); ``ordersCount``
    at most its ``limit`` argument, else 10,000 (schema description), ``AT_LEAST`` when there
    are more. ``nodes(ids)`` takes at most 250 ids (input arrays are limited to 250).

Search syntax (the ``query`` argument)
    Terms separated by whitespace or ``AND``: ``updated_at``, ``created_at`` (and for orders
    ``processed_at``) with ``<``, ``<=``, ``>``, ``>=`` and an ISO-8601 datetime (``Z`` or an
    offset) or a date, optionally in single or double quotes; ``id`` with ``:``, ``<``, ``<=``,
    ``>``, ``>=`` and the numeric id; ``email:<address>`` (exact, case-insensitive); for orders
    ``customer_id:<numeric id>`` and ``status:any`` (accepted and ignored: the GraphQL ``orders``
    query returns every status anyway). A date or a datetime without offset is read in the shop's
    time zone (guessed). Anything else (``OR``, ``-``/``NOT``, parentheses, free text, other
    fields, equality on a time) is an error "fake: unsupported search term ..." in the answer,
    so a connector author notices: real Shopify would ignore an unknown term or match it in
    some other way, silently returning other records than intended.

Cost and throttling (shopify.dev "API rate limits"; the formula is an approximation)
    Every 200 answer carries ``extensions.cost`` with ``requestedQueryCost``,
    ``actualQueryCost`` and ``throttleStatus {maximumAvailable, currentlyAvailable,
    restoreRate}``. Requested cost: an object field costs 1 plus its selection, a scalar or enum
    0, a connection 2 + ``first`` x (1 + the selection of one node) (so nested connections
    multiply), ``pageInfo`` 0, a mutation field 10. Actual cost: the same, counting the nodes
    actually returned; the difference is refunded. A leaky bucket of ``bucket_size`` points
    refills at ``restore_rate`` points per second of the fake clock. A query whose requested cost
    exceeds what is available is answered 200 with ``errors: [{"message": "Throttled",
    "extensions": {"code": "THROTTLED", ...}}]``, ``actualQueryCost: null`` and no ``data``;
    nothing is charged. A query costing more than ``min(1000, bucket_size)`` is refused with
    ``MAX_COST_EXCEEDED`` ("Query cost is N, which exceeds the single query max cost limit
    (1000)."). Documents that do not validate cost 0 (undocumented).

Mutations
    ``customerCreate``/``customerUpdate``: ``userErrors`` "Email has already been taken", "Phone
    has already been taken", "Email is invalid", "Phone is invalid" (field ``["email"]`` /
    ``["phone"]``), "Customer does not exist" (``["id"]``); create needs an e-mail, a phone or a
    name. ``tags`` and ``addresses`` replace the old ones. ``emailMarketingConsent`` /
    ``smsMarketingConsent`` are taken on create (which needs ``email`` / ``phone`` then, per the
    schema's ``CustomerInput`` description) and refused on update with a userError pointing to
    the consent mutations (the ``customerUpdate`` argument description says to use them; the
    wording is guessed). Undocumented, stricter: a phone must be E.164 (``+4915112345678``).
    ``metafields`` are ignored. ``customerDelete`` refuses a customer with orders (guessed
    wording). ``tagsAdd``/``tagsRemove`` work on Customer and Order gids (tags are split on
    commas, matched case-insensitively); more than 250 tags is a GraphQL error.
    ``customerEmailMarketingConsentUpdate``: codes from the schema's
    ``CustomerEmailMarketingConsentUpdateUserErrorCode``: no e-mail -> ``MISSING_ARGUMENT``;
    a state other than ``SUBSCRIBED``/``UNSUBSCRIBED``/``PENDING`` -> ``INVALID``; a
    ``consentUpdatedAt`` in the future -> ``INVALID``; unknown customer -> ``INVALID`` (codes
    chosen from the enum, messages guessed). Every accepted change (and a consent given to
    ``customerCreate``) is appended to ``fake.consent_log`` as ``(gid, state)``. All these bump
    ``updatedAt``. ``customerRequestDataErasure(customerId)``: an unknown customer is a
    userError ``DOES_NOT_EXIST`` (field ``["customerId"]``, message guessed), an id that is not a
    customer gid a GraphQL error (guessed); otherwise the request is accepted (``customerId`` in
    the answer), appended to ``fake.erasure_requests`` and left pending, as Shopify carries it out
    later: nothing changes for reads until :meth:`FakeShopify.complete_erasures` redacts every
    pending customer (:meth:`FakeShopify.redact_customer`). Asking again while pending is
    accepted again (guessed). :meth:`FakeShopify.fail_erasure_requests` makes the next requests
    answer ``FAILED_TO_REQUEST``. Other mutations are errors naming the fake.

Bulk operations (shopify.dev "Perform bulk operations")
    ``bulkOperationRunQuery(query)`` validates the inner query against the schema and Shopify's
    documented restrictions: one top-level field, not ``node``/``nodes``, at least one and at most
    five connections, connections nested at most two levels; all as ``userErrors`` with code
    ``INVALID``. Undocumented, stricter: the top-level field must be a connection; connections
    must not take ``first``/``last``/``after``/``before`` (reportedly ignored by Shopify); a node
    that holds a nested connection must select ``id`` (the child lines' ``__parentId``); search
    terms the fake does not support are reported at once. One query operation at a time
    (API versions before 2026-01): "A bulk query operation for this app and shop is already in
    progress: <gid>." with ``OPERATION_IN_PROGRESS``. The new operation is ``CREATED`` in the
    mutation's answer, ``RUNNING`` afterwards and ``COMPLETED`` ``bulk_seconds`` later on the fake
    clock (the status is worked out whenever the fake is used). On completion the query runs
    against the data of that moment and a JSONL file is written: one line per node of the
    top-level connection, the nodes of a nested connection on their own lines after their parent
    with ``"__parentId"``; other nested objects stay inline. ``objectCount`` counts every line,
    ``rootObjectCount`` the top-level ones, ``fileSize`` is in bytes; nothing found: ``url``
    ``null`` (documented). Files are served at
    ``https://storage.googleapis.com/shopify-tiers-assets-prod-us-east1/bulk/{n}.jsonl?...``
    (GET only) for 7 days after completion (documented); after that, or after
    :meth:`FakeShopify.expire_bulk_files`, they answer 403 with a Google Cloud Storage XML
    ``<Error><Code>ExpiredToken</Code>...`` body (undocumented: what GCS sends for an expired
    signed URL). ``bulkOperationCancel`` makes a running operation ``CANCELING`` in its answer
    and ``CANCELED`` afterwards. :meth:`FakeShopify.fail_bulk` and
    :meth:`FakeShopify.expire_next_bulk` make the next operation end ``FAILED`` (with
    ``errorCode`` and optionally a ``partialDataUrl``) or ``EXPIRED``. Should the query fail
    on the fake's side at completion (a field it does not model), the operation ends ``FAILED``
    and the reason is put in ``violations`` so the test notices.

Faults
    :meth:`FakeShopify.fail_next` queues HTTP-level failures (the shared :class:`Fault`),
    :meth:`FakeShopify.throttle_next` forces the next GraphQL answers to be ``THROTTLED`` (each
    empties the bucket, so ``throttleStatus`` stays consistent with the refusal).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInt,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    execute,
    get_named_type,
    get_operation_ast,
    get_variable_values,
    is_leaf_type,
    parse,
    validate,
)
from graphql.utilities import value_from_ast

from plugins.hubspot.tests.fake_hubspot import FakeClock, Fault
from synchub.testing.specs import SHOPIFY_SCHEMA, _load_graphql_schema, require_specs

__all__ = ["BULK_HOST", "FakeClock", "FakeShopify", "Fault", "iso"]

BULK_HOST = "storage.googleapis.com"
BULK_PREFIX = "/shopify-tiers-assets-prod-us-east1/bulk/"
AUTH_ERROR = "[API] Invalid API key or access token (unrecognized login or wrong password)"
RATE_LIMIT_DOCS = "https://shopify.dev/api/usage/rate-limits"
MAX_PAGE = 250
MAX_INPUT_ARRAY = 250
MAX_QUERY_COST = 1000
MUTATION_COST = 10
ORDERS_COUNT_LIMIT = 10_000
BULK_FILE_TTL_MS = 7 * 86_400_000
BULK_MAX_CONNECTIONS = 5
BULK_MAX_DEPTH = 2
SHOP_TIMEZONE = "Europe/Berlin"
CONSENT_STATES = ("SUBSCRIBED", "UNSUBSCRIBED", "PENDING")
CUSTOMER_STATES = ("ENABLED", "DISABLED", "INVITED", "DECLINED")
CUSTOMER_FIELDS = frozenset(
    {
        "firstName", "lastName", "email", "phone", "tags", "note", "locale", "state",
        "emailMarketingConsent", "smsMarketingConsent", "addresses", "defaultAddress",
        "createdAt", "updatedAt", "verifiedEmail", "taxExempt",
    }
)  # fmt: skip
SORT_KEYS = {
    "customers": ("ID", "UPDATED_AT", "CREATED_AT"),
    "orders": ("ID", "UPDATED_AT", "CREATED_AT", "PROCESSED_AT"),
}
SORT_FIELDS = {"UPDATED_AT": "updatedAt", "CREATED_AT": "createdAt", "PROCESSED_AT": "processedAt"}
TIME_TERMS = {
    "customers": {"updated_at": "updatedAt", "created_at": "createdAt"},
    "orders": {"updated_at": "updatedAt", "created_at": "createdAt", "processed_at": "processedAt"},
}
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"\+[1-9]\d{6,14}")
_TERM = re.compile(
    r"""(?P<name>[a-z_]+):(?P<op><=|>=|<|>)?(?P<value>"[^"]*"|'[^']*'|[^\s"']+)(?=\s|$)"""
)
_UNSET: Any = object()


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def iso(ms: int | float) -> str:
    """Shopify's DateTime: UTC, whole seconds, ``Z``."""
    stamp = datetime.fromtimestamp(int(ms) // 1000, tz=timezone.utc)
    return f"{stamp:%Y-%m-%dT%H:%M:%SZ}"


def _parse_time(text: str, tz: ZoneInfo) -> float:
    """Epoch seconds of an ISO-8601 datetime or date; without offset it is in ``tz``."""
    text = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        stamp = datetime.fromisoformat(text).replace(tzinfo=tz)
    else:
        if not re.fullmatch(
            r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?", text
        ):
            raise ValueError(text)
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=tz)
    return stamp.timestamp()


@lru_cache(maxsize=65536)
def _secs(stamp: str) -> int:
    """Epoch seconds of a stored DateTime (``YYYY-MM-DDTHH:MM:SSZ``)."""
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())


def _to_datetime_text(value: Any) -> str:
    """A test's createdAt/updatedAt (ISO text, datetime or epoch ms) as a stored DateTime."""
    if isinstance(value, datetime):
        value = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return iso(value.timestamp() * 1000)
    if isinstance(value, (int, float)):
        return iso(value)
    return iso(_parse_time(str(value), ZoneInfo("UTC")) * 1000)


def _decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"not an amount: {value!r}") from None


def _amount(value: Decimal) -> str:
    """Shopify's Decimal text: no trailing zeros, at least one decimal place."""
    text = format(value.normalize(), "f")
    if "." not in text:
        return text + ".0"
    return text


def _money(amount: Decimal, currency: str) -> dict[str, Any]:
    return {"amount": _amount(amount), "currencyCode": currency}


def _bag(shop: Decimal, shop_cur: str, presentment: Decimal, pres_cur: str) -> dict[str, Any]:
    return {"shopMoney": _money(shop, shop_cur), "presentmentMoney": _money(presentment, pres_cur)}


def _gid_parts(gid: Any) -> tuple[str, int] | None:
    match = re.fullmatch(r"gid://shopify/(\w+)/(\d+)(\?.*)?", str(gid))
    return (match.group(1), int(match.group(2))) if match else None


def _num(gid: str) -> int:
    parts = _gid_parts(gid)
    if parts is None:
        raise ValueError(f"not a Shopify gid: {gid!r}")
    return parts[1]


def _tags(values: Iterable[str] | str | None) -> list[str]:
    """Split on commas, strip, drop empties and case-insensitive duplicates (first wins)."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    seen: set[str] = set()
    for value in values:
        for part in str(value).split(","):
            tag = part.strip()
            if tag and tag.lower() not in seen:
                seen.add(tag.lower())
                out.append(tag)
    return out


def _user_error(field: list[str] | None, message: str, code: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"field": field, "message": message}
    if code is not None:
        error["code"] = code
    return error


def _is_connection(named: Any) -> bool:
    return (
        isinstance(named, GraphQLObjectType)
        and named.name.endswith("Connection")
        and "pageInfo" in named.fields
    )


def _response_key(node: FieldNode) -> str:
    return node.alias.value if node.alias else node.name.value


def _fail(message: str, code: str | None = None) -> GraphQLError:
    return GraphQLError(message, extensions={"code": code} if code else None)


@dataclass
class BulkOp:
    n: int
    query: str
    created_ms: int
    done_ms: int
    fail: tuple[str, int] | None = None
    expire: bool = False
    status: str = "RUNNING"  # RUNNING until settled; then COMPLETED/FAILED/EXPIRED/CANCELED
    completed_ms: int | None = None
    error_code: str | None = None
    object_count: int = 0
    root_count: int = 0
    file_n: int | None = None
    partial_n: int | None = None

    @property
    def gid(self) -> str:
        return f"gid://shopify/BulkOperation/{self.n}"


@dataclass
class BulkFile:
    content: bytes
    expires_ms: int


class FakeShopify:
    """Shopify's GraphQL Admin API (customers, orders, consent, tags, bulk queries), in memory.

    ``clock`` returns epoch milliseconds (default: a :class:`FakeClock`, reachable as
    ``fake.clock``). ``validator``: a :class:`~synchub.testing.specs.GraphQLValidator` whose
    ``check`` is run on every API request (problems go to ``violations``, the request gets a 400).
    """

    def __init__(
        self,
        *,
        shop: str = "acme.myshopify.com",
        token: str = "shpat_test_token",
        api_version: str = "2025-01",
        currency: str = "EUR",
        validator: Any = None,
        clock: Callable[[], int] | None = None,
        bucket_size: int = 2000,
        restore_rate: int = 100,
        bulk_seconds: float = 5,
        pagination_cap: int | None = 25_000,
        schema: GraphQLSchema | None = None,
    ) -> None:
        if schema is None and validator is not None:
            schema = getattr(validator, "schema", None)
        if schema is None:
            path = (require_specs(SHOPIFY_SCHEMA) / SHOPIFY_SCHEMA).resolve()
            schema = _load_graphql_schema(str(path))  # the validator's cache key: resolved path
        self.schema = schema
        self.shop = shop
        self.token = token
        self.api_version = api_version
        self.graphql_path = f"/admin/api/{api_version}/graphql.json"
        self.currency = currency
        self.validator = validator
        self.clock = clock if clock is not None else FakeClock()
        self.bucket_size = bucket_size
        self.restore_rate = restore_rate
        self.max_query_cost = min(MAX_QUERY_COST, bucket_size)
        self.bulk_seconds = bulk_seconds
        self.pagination_cap = pagination_cap
        self.timezone = ZoneInfo(SHOP_TIMEZONE)

        self.customers: dict[str, dict[str, Any]] = {}
        self.orders: dict[str, dict[str, Any]] = {}
        self.deleted_customers: list[str] = []
        self.redacted_customers: list[str] = []
        #: Every accepted ``customerRequestDataErasure``, by customer gid (repeats included).
        self.erasure_requests: list[str] = []
        #: Customers whose erasure was requested and not carried out yet.
        self.pending_erasures: list[str] = []
        self._erasure_failures = 0
        self.consent_log: list[tuple[str, str]] = []
        self.requests: list[httpx.Request] = []
        self.violations: list[str] = []
        self.unmodelled: set[str] = set()
        self.throttled = 0
        self.bulk_operations: dict[str, BulkOp] = {}
        self.bulk_files: dict[int, BulkFile] = {}

        self._operations: list[frozenset[str]] = []
        self._faults: list[Fault] = []
        self._force_throttle = 0
        self._bulk_faults: list[tuple[str, int]] = []
        self._expire_next = 0
        self._available = float(bucket_size)
        self._bucket_at = self.now()
        self._next = {"Customer": 1001, "Order": 5001, "LineItem": 20001, "MailingAddress": 30001,
                      "BulkOperation": 1, "file": 1, "name": 1001}  # fmt: skip
        self._query_root = self._root_resolvers()
        self._mutation_root = self._mutation_resolvers()
        self._transport = httpx.MockTransport(self.handler)

    # ------------------------------------------------------------------ test-facing helpers

    @property
    def transport(self) -> httpx.MockTransport:
        return self._transport

    @property
    def base_url(self) -> str:
        return f"https://{self.shop}"

    def now(self) -> int:
        return int(self.clock())

    def _new(self, kind: str) -> int:
        value = self._next[kind]
        self._next[kind] += 1
        return value

    def add_customer(self, **fields: Any) -> str:
        """Put a customer in the shop as if created in the admin; returns its gid."""
        self._settle_bulk()
        self._check_fields(fields)
        email = fields.get("email")
        if email and self._find_by("email", email) is not None:
            raise ValueError(f"a customer with e-mail {email} exists")
        phone = fields.get("phone")
        if phone and self._find_by("phone", phone) is not None:
            raise ValueError(f"a customer with phone {phone} exists")
        now = iso(self.now())
        gid = f"gid://shopify/Customer/{self._new('Customer')}"
        customer: dict[str, Any] = {
            "id": gid, "firstName": None, "lastName": None, "email": None, "phone": None,
            "tags": [], "note": None, "locale": "en", "state": "DISABLED",
            "emailMarketingConsent": None, "smsMarketingConsent": None, "addresses": [],
            "defaultAddress": None, "verifiedEmail": bool(email), "taxExempt": False,
            "createdAt": now, "updatedAt": now,
        }  # fmt: skip
        self._apply_customer(customer, fields)
        if "updatedAt" not in fields and "createdAt" in fields:
            customer["updatedAt"] = customer["createdAt"]
        self.customers[gid] = customer
        return gid

    def update_customer(self, gid: str, **fields: Any) -> None:
        """Change a customer as if edited in the admin; bumps ``updatedAt`` (unless given)."""
        self._settle_bulk()
        customer = self._customer(gid)
        self._check_fields(fields)
        for key in ("email", "phone"):
            if fields.get(key) and self._find_by(key, fields[key], other_than=gid) is not None:
                raise ValueError(f"another customer has {key} {fields[key]}")
        self._apply_customer(customer, fields)
        if "updatedAt" not in fields:
            customer["updatedAt"] = iso(self.now())

    def delete_customer(self, gid: str) -> None:
        """Remove a customer; its orders stay, with ``customer: null`` (their ``updatedAt`` is
        not bumped: guessed, and the harder case for a connector)."""
        self._settle_bulk()
        self._customer(gid)
        del self.customers[gid]
        for order in self.orders.values():
            if order["customerId"] == gid:
                order["customerId"] = None
        self.deleted_customers.append(gid)

    def redact_customer(self, gid: str) -> None:
        """The outcome of Shopify's ``customers/redact``: the customer is gone for reads."""
        self.delete_customer(gid)
        self.redacted_customers.append(gid)

    def fail_erasure_requests(self, n: int = 1) -> None:
        """The next ``n`` ``customerRequestDataErasure`` calls answer ``FAILED_TO_REQUEST``."""
        self._erasure_failures += n

    def complete_erasures(self) -> list[str]:
        """Carry out the pending erasure requests, as Shopify does some time after accepting
        them: each customer is redacted (gone for reads). Returns the gids redacted."""
        done = [gid for gid in self.pending_erasures if gid in self.customers]
        for gid in done:
            self.redact_customer(gid)
        self.pending_erasures = []
        return done

    def add_order(
        self,
        customer_gid: str | None,
        *,
        line_items: list[dict[str, Any]] | None = None,
        currency: str | None = None,
        presentment_currency: str | None = None,
        total: str = "25.00",
        shop_total: str | None = None,
        processed_at: Any = None,
        created_at: Any = None,
        cancelled: bool = False,
        financial_status: str = "PAID",
        fulfillment_status: str = "UNFULFILLED",
        test: bool = False,
        email: str | None = None,
        phone: str | None = None,
        tags: Iterable[str] = (),
    ) -> str:
        """Put an order in the shop; returns its gid (its name is ``#1001``, ``#1002``, ...).

        ``total`` is in the presentment currency, ``shop_total`` (default: the same number) in
        the shop currency; ``line_items`` prices are unit prices in the presentment currency.
        """
        self._settle_bulk()
        if customer_gid is not None:
            self._customer(customer_gid)
        shop_cur = currency or self.currency
        pres_cur = presentment_currency or shop_cur
        now = iso(self.now())
        created = _to_datetime_text(created_at) if created_at is not None else now
        gid = f"gid://shopify/Order/{self._new('Order')}"
        items = (
            line_items
            if line_items is not None
            else [{"title": "Item", "sku": "SKU-1", "quantity": 1, "price": total}]
        )
        order: dict[str, Any] = {
            "id": gid,
            "name": f"#{self._new('name')}",
            "email": email if email is not None else self._customer_field(customer_gid, "email"),
            "phone": phone,
            "createdAt": created,
            "processedAt": _to_datetime_text(processed_at) if processed_at is not None else created,
            "updatedAt": now,
            "cancelledAt": now if cancelled else None,
            "closedAt": None,
            "currencyCode": shop_cur,
            "presentmentCurrencyCode": pres_cur,
            "displayFinancialStatus": financial_status,
            "displayFulfillmentStatus": fulfillment_status,
            "test": test,
            "tags": _tags(list(tags)),
            "sourceName": "web",
            "customerId": customer_gid,
            "lineItems": [],
        }
        self._set_totals(order, total, shop_total)
        order["lineItems"] = [self._line_item(order, item) for item in items]
        self.orders[gid] = order
        self._touch_customer(customer_gid)
        return gid

    def update_order(
        self,
        gid: str,
        *,
        cancelled: bool | None = None,
        customer: Any = _UNSET,
        total: str | None = None,
        shop_total: str | None = None,
        financial_status: str | None = None,
        fulfillment_status: str | None = None,
        closed: bool | None = None,
        tags: Iterable[str] | None = None,
        email: Any = _UNSET,
        processed_at: Any = None,
        test: bool | None = None,
    ) -> None:
        """Change an order as if edited in the admin; bumps its and its customers' ``updatedAt``."""
        self._settle_bulk()
        order = self._order(gid)
        now = iso(self.now())
        old_customer = order["customerId"]
        if customer is not _UNSET:
            if customer is not None:
                self._customer(customer)
            order["customerId"] = customer
        if cancelled is not None:
            order["cancelledAt"] = now if cancelled else None
        if closed is not None:
            order["closedAt"] = now if closed else None
        if total is not None or shop_total is not None:
            pres = (
                total if total is not None else order["totalPriceSet"]["presentmentMoney"]["amount"]
            )
            self._set_totals(order, pres, shop_total)
        if financial_status is not None:
            order["displayFinancialStatus"] = financial_status
        if fulfillment_status is not None:
            order["displayFulfillmentStatus"] = fulfillment_status
        if tags is not None:
            order["tags"] = _tags(list(tags))
        if email is not _UNSET:
            order["email"] = email
        if processed_at is not None:
            order["processedAt"] = _to_datetime_text(processed_at)
        if test is not None:
            order["test"] = test
        order["updatedAt"] = now
        self._touch_customer(old_customer)
        self._touch_customer(order["customerId"])

    def merge_customers(self, keep_gid: str, gone_gid: str) -> None:
        """Shopify's customer merge: ``gone``'s orders move to ``keep``, ``gone`` is deleted."""
        self._settle_bulk()
        self._customer(keep_gid)
        self._customer(gone_gid)
        if keep_gid == gone_gid:
            raise ValueError("cannot merge a customer with itself")
        now = iso(self.now())
        for order in self.orders.values():
            if order["customerId"] == gone_gid:
                order["customerId"] = keep_gid
                order["updatedAt"] = now
        del self.customers[gone_gid]
        self.deleted_customers.append(gone_gid)
        self.customers[keep_gid]["updatedAt"] = now

    def fail_next(
        self,
        n: int = 1,
        status: int = 500,
        headers: dict[str, str] | None = None,
        body: Any = None,
        path: str | None = None,
        *,
        method: str | None = None,
        after_apply: bool = False,
        exception: Any = None,
    ) -> None:
        """The next ``n`` requests whose path contains ``path`` get ``status`` (default body:
        ``{"errors": "<reason>"}``); or ``exception`` is raised. With ``after_apply`` the request
        is processed first (a write applied, then reported as failed)."""
        self._faults.append(Fault(n, status, path, method, body, headers, after_apply, exception))

    def unused_faults(self) -> int:
        """How many queued HTTP failures were not consumed."""
        return sum(f.remaining for f in self._faults)

    def throttle_next(self, n: int = 1) -> None:
        """The next ``n`` GraphQL requests are answered ``THROTTLED`` whatever the bucket holds;
        each empties the bucket (as if the app's other clients had used it), so the answer's
        ``throttleStatus`` shows why and a client that waits for the restore rate gets through."""
        self._force_throttle += n

    def fail_bulk(self, error_code: str = "INTERNAL_SERVER_ERROR", partial_lines: int = 0) -> None:
        """The next bulk query operation ends ``FAILED`` with ``error_code``; with
        ``partial_lines`` > 0 its ``partialDataUrl`` serves that many first lines."""
        self._bulk_faults.append((error_code, partial_lines))

    def expire_next_bulk(self) -> None:
        """The next bulk query operation ends ``EXPIRED`` (no ``url``)."""
        self._expire_next += 1

    def expire_bulk_files(self) -> None:
        """Every bulk file written so far answers 403 ``ExpiredToken`` from now on."""
        now = self.now()
        for file in self.bulk_files.values():
            file.expires_ms = min(file.expires_ms, now)

    def calls(self, root_field: str) -> int:
        """How many GraphQL requests selected ``root_field`` at the top of their operation."""
        return sum(1 for fields in self._operations if root_field in fields)

    def bulk_status(self, gid: str) -> str:
        """The status of a bulk operation as Shopify would report it now."""
        self._settle_bulk()
        return self.bulk_operations[gid].status

    # ------------------------------------------------------------------ data helpers

    def _check_fields(self, fields: Mapping[str, Any]) -> None:
        unknown = set(fields) - CUSTOMER_FIELDS
        if unknown:
            raise TypeError(
                f"unsupported customer fields {sorted(unknown)}; use {sorted(CUSTOMER_FIELDS)}"
            )
        if "state" in fields and fields["state"] not in CUSTOMER_STATES:
            raise ValueError(f"state must be one of {CUSTOMER_STATES}")

    def _apply_customer(self, customer: dict[str, Any], fields: Mapping[str, Any]) -> None:
        ordered = sorted(fields.items(), key=lambda kv: kv[0] == "defaultAddress")
        for key, value in ordered:
            if key == "tags":
                customer["tags"] = _tags(value)
            elif key == "addresses":
                customer["addresses"] = [self._address(a) for a in value or []]
                customer["defaultAddress"] = (
                    customer["addresses"][0]["id"] if customer["addresses"] else None
                )
            elif key == "defaultAddress":
                customer["defaultAddress"] = self._default_address_id(customer, value)
            elif key in ("createdAt", "updatedAt"):
                customer[key] = _to_datetime_text(value)
            elif key == "emailMarketingConsent":
                customer[key] = self._consent(value, sms=False)
            elif key == "smsMarketingConsent":
                customer[key] = self._consent(value, sms=True)
            else:
                customer[key] = value

    def _default_address_id(self, customer: dict[str, Any], value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, str):
            wanted = value
        else:
            address = self._address(value)
            customer["addresses"].insert(0, address)
            wanted = address["id"]
        if not any(a["id"] == wanted for a in customer["addresses"]):
            raise ValueError(f"{wanted} is not one of the customer's addresses")
        return wanted

    def _address(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        address = {k: v for k, v in fields.items() if k != "id"}
        code = address.pop("countryCode", None) or address.get("countryCodeV2")
        if code:
            address["countryCodeV2"] = code
            address.setdefault("country", _country_name(code))
        address["id"] = (
            f"gid://shopify/MailingAddress/{self._new('MailingAddress')}?model_name=CustomerAddress"
        )
        return address

    def _consent(self, value: Mapping[str, Any] | None, *, sms: bool) -> dict[str, Any] | None:
        if value is None:
            return None
        consent = {
            "marketingState": value.get("marketingState", "NOT_SUBSCRIBED"),
            "marketingOptInLevel": value.get("marketingOptInLevel", "SINGLE_OPT_IN"),
            "consentUpdatedAt": (
                _to_datetime_text(value["consentUpdatedAt"])
                if value.get("consentUpdatedAt") is not None
                else None
            ),
        }
        if sms:
            consent["consentCollectedFrom"] = value.get("consentCollectedFrom", "OTHER")
        return consent

    def _customer(self, gid: str) -> dict[str, Any]:
        try:
            return self.customers[gid]
        except KeyError:
            raise KeyError(f"no customer {gid}") from None

    def _order(self, gid: str) -> dict[str, Any]:
        try:
            return self.orders[gid]
        except KeyError:
            raise KeyError(f"no order {gid}") from None

    def _customer_field(self, gid: str | None, key: str) -> Any:
        return self.customers[gid].get(key) if gid in self.customers else None

    def _find_by(self, key: str, value: str, *, other_than: str | None = None) -> str | None:
        wanted = value.strip().lower()
        for gid, customer in self.customers.items():
            held = customer.get(key)
            if gid != other_than and held and held.strip().lower() == wanted:
                return gid
        return None

    def _touch_customer(self, gid: str | None) -> None:
        if gid is not None and gid in self.customers:
            self.customers[gid]["updatedAt"] = iso(self.now())

    def _set_totals(self, order: dict[str, Any], total: Any, shop_total: Any) -> None:
        pres = _decimal(total)
        shop = _decimal(shop_total) if shop_total is not None else pres
        bag = _bag(shop, order["currencyCode"], pres, order["presentmentCurrencyCode"])
        order["totalPriceSet"] = bag
        order["currentTotalPriceSet"] = json.loads(json.dumps(bag))
        order["_rate"] = (shop / pres) if pres else Decimal(1)

    def _line_item(self, order: dict[str, Any], item: Mapping[str, Any]) -> dict[str, Any]:
        unit = _decimal(item.get("price", "0"))
        qty = int(item.get("quantity", 1))
        rate = order["_rate"]
        shop_cur, pres_cur = order["currencyCode"], order["presentmentCurrencyCode"]
        title = item.get("title", "Item")
        variant = item.get("variantTitle")
        return {
            "id": f"gid://shopify/LineItem/{self._new('LineItem')}",
            "title": title,
            "name": item.get("name", f"{title} - {variant}" if variant else title),
            "sku": item.get("sku"),
            "quantity": qty,
            "currentQuantity": int(item.get("currentQuantity", qty)),
            "variantTitle": variant,
            "vendor": item.get("vendor"),
            "originalUnitPriceSet": _bag(
                (unit * rate).quantize(Decimal("0.01")), shop_cur, unit, pres_cur
            ),
            "discountedTotalSet": _bag(
                (unit * qty * rate).quantize(Decimal("0.01")), shop_cur, unit * qty, pres_cur
            ),
        }

    def _customer_orders(self, gid: str) -> list[dict[str, Any]]:
        return [o for o in self.orders.values() if o["customerId"] == gid]

    # ------------------------------------------------------------------ views (what GraphQL reads)

    def _shop_view(self) -> dict[str, Any]:
        return {
            "__typename": "Shop",
            "id": "gid://shopify/Shop/1",
            "name": self.shop.split(".")[0].title(),
            "myshopifyDomain": self.shop,
            "currencyCode": self.currency,
            "ianaTimezone": SHOP_TIMEZONE,
            "url": f"https://{self.shop}",
            "email": f"owner@{self.shop}",
            "contactEmail": f"owner@{self.shop}",
        }

    def _customer_view(self, customer: dict[str, Any]) -> dict[str, Any]:
        gid = customer["id"]
        addresses = customer["addresses"]
        default = next((a for a in addresses if a["id"] == customer["defaultAddress"]), None)

        def orders() -> list[dict[str, Any]]:
            return self._customer_orders(gid)

        def amount_spent(info: Any) -> dict[str, Any]:
            total = sum(
                (
                    _decimal(o["currentTotalPriceSet"]["shopMoney"]["amount"])
                    for o in orders()
                    if o["cancelledAt"] is None
                ),
                Decimal(0),
            )
            return _money(total, self.currency)

        def last_order(info: Any) -> dict[str, Any] | None:
            mine = orders()
            if not mine:
                return None
            return self._order_view(max(mine, key=lambda o: (o["createdAt"], _num(o["id"]))))

        name = " ".join(p for p in (customer["firstName"], customer["lastName"]) if p)
        email, phone = customer["email"], customer["phone"]
        consent = customer["emailMarketingConsent"]
        if email and consent is None:
            consent = {"marketingState": "NOT_SUBSCRIBED", "marketingOptInLevel": "SINGLE_OPT_IN",
                       "consentUpdatedAt": None}  # fmt: skip
        sms = customer["smsMarketingConsent"]
        if phone and sms is None:
            sms = {"marketingState": "NOT_SUBSCRIBED", "marketingOptInLevel": "SINGLE_OPT_IN",
                   "consentUpdatedAt": None, "consentCollectedFrom": "OTHER"}  # fmt: skip
        return {
            "__typename": "Customer",
            "id": gid,
            "legacyResourceId": str(_num(gid)),
            "firstName": customer["firstName"],
            "lastName": customer["lastName"],
            "displayName": name or email or phone or "",
            "email": email,
            "phone": phone,
            "tags": list(customer["tags"]),
            "note": customer["note"],
            "locale": customer["locale"],
            "state": customer["state"],
            "verifiedEmail": bool(customer["verifiedEmail"]),
            "validEmailAddress": bool(email and _EMAIL.fullmatch(email)),
            "taxExempt": bool(customer["taxExempt"]),
            "taxExemptions": [],
            "dataSaleOptOut": False,
            "createdAt": customer["createdAt"],
            "updatedAt": customer["updatedAt"],
            "emailMarketingConsent": dict(consent) if email and consent else None,
            "smsMarketingConsent": dict(sms) if phone and sms else None,
            "defaultAddress": self._address_view(default) if default else None,
            "addresses": lambda info, first=None: [
                self._address_view(a) for a in addresses[: first if first is not None else None]
            ],
            "addressesV2": lambda info, **args: self._connection(
                info, addresses, self._address_view, args, kind="addresses"
            ),
            "numberOfOrders": lambda info: str(len(orders())),
            "amountSpent": amount_spent,
            "lastOrder": last_order,
            "canDelete": lambda info: not orders(),
            "orders": lambda info, **args: self._connection(
                info, orders(), self._order_view, args, kind="orders"
            ),
        }

    def _address_view(self, address: dict[str, Any]) -> dict[str, Any]:
        view = {key: address.get(key) for key in (
            "address1", "address2", "city", "company", "country", "countryCodeV2", "firstName",
            "lastName", "phone", "province", "provinceCode", "zip", "latitude", "longitude",
        )}  # fmt: skip
        view.update(__typename="MailingAddress", id=address["id"], coordinatesValidated=False)
        view["countryCode"] = view["countryCodeV2"]
        view["name"] = " ".join(p for p in (view["firstName"], view["lastName"]) if p) or None
        lines = [view["address1"], view["address2"],
                 " ".join(p for p in (view["zip"], view["city"]) if p), view["country"]]  # fmt: skip
        view["formatted"] = lambda info, withName=False, withCompany=True: [
            p
            for p in ([view["name"]] if withName else [])
            + ([view["company"]] if withCompany else [])
            + lines
            if p
        ]
        view["formattedArea"] = ", ".join(p for p in (view["city"], view["country"]) if p) or None
        return view

    def _order_view(self, order: dict[str, Any]) -> dict[str, Any]:
        gid = order["id"]
        shop_cur, pres_cur = order["currencyCode"], order["presentmentCurrencyCode"]
        subtotal_pres = sum(
            (
                _decimal(i["discountedTotalSet"]["presentmentMoney"]["amount"])
                for i in order["lineItems"]
            ),
            Decimal(0),
        )
        subtotal = _bag((subtotal_pres * order["_rate"]).quantize(Decimal("0.01")), shop_cur,
                        subtotal_pres, pres_cur)  # fmt: skip
        zero = _bag(Decimal(0), shop_cur, Decimal(0), pres_cur)
        quantity = sum(i["quantity"] for i in order["lineItems"])
        customer_gid = order["customerId"]
        status = order["displayFinancialStatus"]
        return {
            "__typename": "Order",
            "id": gid,
            "legacyResourceId": str(_num(gid)),
            "name": order["name"],
            "email": order["email"],
            "phone": order["phone"],
            "createdAt": order["createdAt"],
            "processedAt": order["processedAt"],
            "updatedAt": order["updatedAt"],
            "cancelledAt": order["cancelledAt"],
            "closedAt": order["closedAt"],
            "closed": order["closedAt"] is not None,
            "confirmed": True,
            "currencyCode": shop_cur,
            "presentmentCurrencyCode": pres_cur,
            "totalPriceSet": order["totalPriceSet"],
            "originalTotalPriceSet": order["totalPriceSet"],
            "currentTotalPriceSet": order["currentTotalPriceSet"],
            "subtotalPriceSet": subtotal,
            "currentSubtotalPriceSet": subtotal,
            "totalTaxSet": zero,
            "currentTotalTaxSet": zero,
            "totalDiscountsSet": zero,
            "currentTotalDiscountsSet": zero,
            "totalShippingPriceSet": zero,
            "subtotalLineItemsQuantity": quantity,
            "currentSubtotalLineItemsQuantity": quantity,
            "displayFinancialStatus": status,
            "displayFulfillmentStatus": order["displayFulfillmentStatus"],
            "fullyPaid": status == "PAID",
            "unpaid": status in ("PENDING", "AUTHORIZED", "EXPIRED"),
            "test": order["test"],
            "tags": list(order["tags"]),
            "note": None,
            "sourceName": order["sourceName"],
            "taxesIncluded": False,
            "taxExempt": False,
            "customerAcceptsMarketing": False,
            "customer": lambda info: (
                self._customer_view(self.customers[customer_gid])
                if customer_gid in self.customers
                else None
            ),
            "lineItems": lambda info, **args: self._connection(
                info, order["lineItems"], self._line_item_view, args, kind="lineItems"
            ),
        }

    def _line_item_view(self, item: dict[str, Any]) -> dict[str, Any]:
        return {"__typename": "LineItem", **item}

    def _bulk_view(self, op: BulkOp, status: str | None = None) -> dict[str, Any]:
        return {
            "__typename": "BulkOperation",
            "id": op.gid,
            "type": "QUERY",
            "status": status or op.status,
            "errorCode": op.error_code,
            "createdAt": iso(op.created_ms),
            "completedAt": iso(op.completed_ms) if op.completed_ms is not None else None,
            "objectCount": str(op.object_count),
            "rootObjectCount": str(op.root_count),
            "fileSize": (
                str(len(self.bulk_files[op.file_n].content)) if op.file_n is not None else None
            ),
            "url": self._file_url(op.file_n) if op.file_n is not None else None,
            "partialDataUrl": self._file_url(op.partial_n) if op.partial_n is not None else None,
            "query": op.query,
        }

    def _node_view(self, gid: Any) -> dict[str, Any] | None:
        parts = _gid_parts(gid)
        if parts is None:
            return None
        kind = parts[0]
        if kind == "Customer" and gid in self.customers:
            return self._customer_view(self.customers[gid])
        if kind == "Order" and gid in self.orders:
            return self._order_view(self.orders[gid])
        if kind == "BulkOperation" and gid in self.bulk_operations:
            return self._bulk_view(self.bulk_operations[gid])
        if kind == "LineItem":
            for order in self.orders.values():
                for item in order["lineItems"]:
                    if item["id"] == gid:
                        return self._line_item_view(item)
        if kind == "MailingAddress":
            for customer in self.customers.values():
                for address in customer["addresses"]:
                    if _gid_parts(address["id"]) == parts:
                        return self._address_view(address)
        if kind == "Shop" and gid == "gid://shopify/Shop/1":
            return self._shop_view()
        return None

    # ------------------------------------------------------------------ connections and search

    def _connection(
        self,
        info: Any,
        items: list[dict[str, Any]],
        view: Callable[[dict[str, Any]], dict[str, Any]],
        args: Mapping[str, Any],
        *,
        kind: str,
    ) -> dict[str, Any]:
        """One page of ``items`` (stored dicts) as a connection."""
        bulk = bool(info.context and info.context.get("bulk"))
        sort_keys = SORT_KEYS.get(kind, ("ID",))
        default_sort = "PROCESSED_AT" if kind == "orders" and info.field_name == "orders" and \
            info.parent_type.name == "QueryRoot" else "ID"  # fmt: skip
        sort_key = args.get("sortKey") or default_sort
        if sort_key not in sort_keys:
            raise _fail(
                f"fake: sortKey {sort_key} is not supported for {kind} (use one of {', '.join(sort_keys)})"
            )
        query = args.get("query")
        if query:
            if kind not in TIME_TERMS:
                raise _fail(f"fake: the query argument is not supported on {info.field_name}")
            keep = self._search(query, kind)
            items = [i for i in items if keep(i)]

        def key(item: dict[str, Any]) -> tuple[int, int]:
            field = SORT_FIELDS.get(sort_key)
            return (_secs(item[field]) if field else 0, self._item_num(item))

        ordered = sorted(items, key=key, reverse=bool(args.get("reverse")))
        if bulk:
            page, position, more = ordered, 0, False
        else:
            first, last = args.get("first"), args.get("last")
            if last is not None or args.get("before") is not None:
                raise _fail(
                    "fake: last/before pagination is not supported by the fake; use first/after"
                )
            if first is None:
                raise _fail("you must provide one of first or last")
            if first < 0:
                raise _fail("first must be a non-negative number")
            if first > MAX_PAGE:
                raise _fail(
                    f"The first argument cannot exceed {MAX_PAGE} (at most {MAX_PAGE} objects per page)."
                )
            position = 0
            after = args.get("after")
            if after is not None:
                cursor_key = self._decode_cursor(after, sort_key)
                reverse = bool(args.get("reverse"))
                # position by value: the items up to the cursor (a prefix of the sorted list)
                position = sum(
                    1
                    for i in ordered
                    if (key(i) >= cursor_key if reverse else key(i) <= cursor_key)
                )
            cap = self.pagination_cap
            if cap is not None and position >= cap:
                raise _fail(
                    f"Pagination is limited to {cap} objects per query: this page would start at "
                    f"object {position + 1}. Narrow the query (e.g. an updated_at range) instead."
                )
            page = ordered[position : position + first]
            more = position + first < len(ordered)
        views = [view(item) for item in page]
        cursors = [self._encode_cursor(sort_key, key(item)) for item in page]
        return {
            "edges": [{"cursor": c, "node": v} for c, v in zip(cursors, views, strict=True)],
            "nodes": views,
            "pageInfo": {
                "hasNextPage": more,
                "hasPreviousPage": position > 0,
                "startCursor": cursors[0] if cursors else None,
                "endCursor": cursors[-1] if cursors else None,
            },
        }

    @staticmethod
    def _item_num(item: dict[str, Any]) -> int:
        return _num(item["id"])

    @staticmethod
    def _encode_cursor(sort_key: str, key: tuple[int, int]) -> str:
        raw = json.dumps({"sort": sort_key, "value": key[0], "id": key[1]}, separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @staticmethod
    def _decode_cursor(cursor: str, sort_key: str) -> tuple[int, int]:
        try:
            padded = cursor + "=" * (-len(cursor) % 4)
            data = json.loads(base64.urlsafe_b64decode(padded.encode()))
            key = (int(data["value"]), int(data["id"]))
            made_for = data["sort"]
        except (ValueError, TypeError, KeyError):
            raise _fail(f"Invalid cursor: {cursor!r}") from None
        if made_for != sort_key:
            raise _fail(
                f"Invalid cursor for the current sort: it was made for sortKey {made_for}, not {sort_key}"
            )
        return key

    def _search(self, query: str, kind: str) -> Callable[[dict[str, Any]], bool]:
        """A predicate for the supported subset of Shopify's search syntax (see module doc)."""
        checks: list[Callable[[dict[str, Any]], bool]] = []
        pos, text = 0, query.strip()
        expect_term = True
        while pos < len(text):
            if text[pos].isspace():
                pos += 1
                continue
            if not expect_term and re.match(r"AND(?=\s)", text[pos:]):
                pos += 3
                expect_term = True
                continue
            match = _TERM.match(text, pos)
            chunk = match.group(0) if match else text[pos:].split()[0]
            if match is None:
                raise self._unsupported(chunk)
            checks.append(self._term(match, kind, chunk))
            pos = match.end()
            expect_term = False
        if expect_term and checks:
            raise self._unsupported("AND")
        return lambda item: all(check(item) for check in checks)

    @staticmethod
    def _unsupported(chunk: str) -> GraphQLError:
        return _fail(
            f"fake: unsupported search term {chunk!r}. The fake understands updated_at/created_at"
            " (orders: processed_at) with <, <=, >, >=; id; email; orders: customer_id and"
            " status:any; terms joined by whitespace or AND. Real Shopify would ignore or"
            " reinterpret it."
        )

    def _term(
        self, match: re.Match[str], kind: str, chunk: str
    ) -> Callable[[dict[str, Any]], bool]:
        name, op, value = match.group("name"), match.group("op") or "", match.group("value")
        if value[:1] in "'\"" and value[-1:] == value[:1] and len(value) >= 2:
            value = value[1:-1]
        compare = {
            "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
            ">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "": lambda a, b: a == b,
        }[op]  # fmt: skip
        if name in TIME_TERMS[kind] and op:
            field = TIME_TERMS[kind][name]
            try:
                bound = _parse_time(value, self.timezone)
            except ValueError:
                raise self._unsupported(chunk) from None
            return lambda item: compare(_secs(item[field]), bound)
        if name == "id" and value.isdigit():
            number = int(value)
            return lambda item: compare(_num(item["id"]), number)
        if name == "email" and not op:
            wanted = value.lower()
            return lambda item: (item.get("email") or "").lower() == wanted
        if kind == "orders" and name == "customer_id" and not op and value.isdigit():
            return lambda item: (
                item["customerId"] is not None and _num(item["customerId"]) == int(value)
            )
        if kind == "orders" and name == "status" and not op and value == "any":
            return lambda item: True
        raise self._unsupported(chunk)

    def _count(self, items: Iterable[dict[str, Any]], query: str | None, kind: str,
               cap: int | None, beyond: int | None) -> dict[str, Any]:  # fmt: skip
        """``{count, precision}``; more than ``cap`` items report ``beyond``, ``AT_LEAST``."""
        if query:
            keep = self._search(query, kind)
            items = [i for i in items if keep(i)]
        n = len(list(items))
        if cap is not None and n > cap:
            return {"count": beyond, "precision": "AT_LEAST"}
        return {"count": n, "precision": "EXACT"}

    # ------------------------------------------------------------------ root resolvers

    def _root_resolvers(self) -> dict[str, Any]:
        def nodes(info: Any, ids: list[str]) -> list[Any]:
            if len(ids) > MAX_INPUT_ARRAY:
                raise _fail(
                    f"The input array size of {len(ids)} is greater than the maximum allowed of {MAX_INPUT_ARRAY}."
                )
            return [self._node_view(i) for i in ids]

        def orders_count(
            info: Any, query: str | None = None, limit: Any = _UNSET, savedSearchId: Any = None
        ) -> dict[str, Any]:
            cap = ORDERS_COUNT_LIMIT if limit is _UNSET else limit
            return self._count(self.orders.values(), query, "orders", cap, cap)

        def customers_count(info: Any, query: str | None = None) -> dict[str, Any]:
            cap = self.pagination_cap
            return self._count(self.customers.values(), query, "customers", cap, (cap or 0) + 1)

        def current_bulk(info: Any, type: str = "QUERY") -> dict[str, Any] | None:
            ops = [op for op in self.bulk_operations.values()] if type == "QUERY" else []
            return self._bulk_view(ops[-1]) if ops else None

        def orders(info: Any, savedSearchId: Any = None, **args: Any) -> dict[str, Any]:
            if savedSearchId is not None:
                raise _fail("fake: savedSearchId is not supported")
            return self._connection(
                info, list(self.orders.values()), self._order_view, args, kind="orders"
            )

        return {
            "shop": lambda info: self._shop_view(),
            "customers": lambda info, **args: self._connection(
                info, list(self.customers.values()), self._customer_view, args, kind="customers"
            ),
            "orders": orders,
            "customersCount": customers_count,
            "ordersCount": orders_count,
            "customer": lambda info, id: (
                self._customer_view(self.customers[id]) if id in self.customers else None
            ),
            "order": lambda info, id: (
                self._order_view(self.orders[id]) if id in self.orders else None
            ),
            "node": lambda info, id: self._node_view(id),
            "nodes": nodes,
            "currentBulkOperation": current_bulk,
        }

    def _mutation_resolvers(self) -> dict[str, Any]:
        return {
            "customerCreate": self._customer_create,
            "customerUpdate": self._customer_update,
            "customerDelete": self._customer_delete,
            "tagsAdd": lambda info, id, tags: self._tags_change(id, tags, add=True),
            "tagsRemove": lambda info, id, tags: self._tags_change(id, tags, add=False),
            "customerEmailMarketingConsentUpdate": self._consent_update,
            "customerRequestDataErasure": self._request_erasure,
            "bulkOperationRunQuery": self._bulk_run,
            "bulkOperationCancel": self._bulk_cancel,
        }

    # ------------------------------------------------------------------ mutations

    def _input_problems(
        self, data: Mapping[str, Any], self_gid: str | None
    ) -> list[dict[str, Any]]:
        errors = []
        email = data.get("email")
        if email:
            if not _EMAIL.fullmatch(email.strip()):
                errors.append(_user_error(["email"], "Email is invalid"))
            elif self._find_by("email", email, other_than=self_gid):
                errors.append(_user_error(["email"], "Email has already been taken"))
        phone = data.get("phone")
        if phone:
            if not _PHONE.fullmatch(phone.strip()):
                errors.append(_user_error(["phone"], "Phone is invalid"))
            elif self._find_by("phone", phone, other_than=self_gid):
                errors.append(_user_error(["phone"], "Phone has already been taken"))
        for key in ("tags", "addresses"):
            if isinstance(data.get(key), list) and len(data[key]) > MAX_INPUT_ARRAY:
                raise _fail(
                    f"The input array size of {len(data[key])} is greater than the maximum allowed of {MAX_INPUT_ARRAY}."
                )
        return errors

    def _input_fields(self, data: Mapping[str, Any]) -> dict[str, Any]:
        fields = {
            key: data[key]
            for key in ("email", "firstName", "lastName", "phone", "note", "locale", "taxExempt")
            if key in data
        }
        for key in ("email", "phone"):
            if isinstance(fields.get(key), str):
                fields[key] = fields[key].strip() or None
        if "tags" in data:
            fields["tags"] = data["tags"] or []
        if "addresses" in data:
            fields["addresses"] = data["addresses"] or []
        return fields

    def _customer_create(self, info: Any, input: dict[str, Any]) -> dict[str, Any]:
        errors = self._input_problems(input, None)
        if not any(input.get(k) for k in ("email", "phone", "firstName", "lastName")):
            errors.append(
                _user_error(None, "A name, phone number, or email address must be present")
            )
        if input.get("emailMarketingConsent") is not None and not input.get("email"):
            errors.append(_user_error(["emailMarketingConsent"],
                                      "An email address is required to set the email marketing consent state."))  # fmt: skip
        if input.get("smsMarketingConsent") is not None and not input.get("phone"):
            errors.append(_user_error(["smsMarketingConsent"],
                                      "A phone number is required to set the SMS consent state."))  # fmt: skip
        if errors:
            return {"customer": None, "userErrors": errors}
        fields = self._input_fields(input)
        for key in ("emailMarketingConsent", "smsMarketingConsent"):
            if input.get(key) is not None:
                consent = dict(input[key])
                consent.setdefault("consentUpdatedAt", None)
                if consent["consentUpdatedAt"] is None:
                    consent["consentUpdatedAt"] = iso(self.now())
                fields[key] = consent
        gid = self.add_customer(**fields)
        if fields.get("emailMarketingConsent"):
            self.consent_log.append((gid, fields["emailMarketingConsent"]["marketingState"]))
        return {"customer": self._customer_view(self.customers[gid]), "userErrors": []}

    def _customer_update(self, info: Any, input: dict[str, Any]) -> dict[str, Any]:
        gid = input.get("id")
        if gid is None or gid not in self.customers:
            return {
                "customer": None,
                "userErrors": [_user_error(["id"], "Customer does not exist")],
            }
        errors = self._input_problems(input, gid)
        for key, mutation in (("emailMarketingConsent", "customerEmailMarketingConsentUpdate"),
                              ("smsMarketingConsent", "customerSmsMarketingConsentUpdate")):  # fmt: skip
            if key in input:
                errors.append(
                    _user_error(
                        [key], f"To update {key}, please use the {mutation} mutation instead"
                    )
                )
        if errors:
            return {"customer": None, "userErrors": errors}
        self.update_customer(gid, **self._input_fields(input))
        return {"customer": self._customer_view(self.customers[gid]), "userErrors": []}

    def _customer_delete(self, info: Any, input: dict[str, Any]) -> dict[str, Any]:
        gid = input["id"]
        result: dict[str, Any] = {
            "deletedCustomerId": None,
            "shop": self._shop_view(),
            "userErrors": [],
        }
        if gid not in self.customers:
            result["userErrors"] = [_user_error(["id"], "Customer can't be found")]
        elif self._customer_orders(gid):
            result["userErrors"] = [
                _user_error(["id"], "Customer can't be deleted because they have orders")
            ]
        else:
            self.delete_customer(gid)
            result["deletedCustomerId"] = gid
        return result

    def _tags_change(self, gid: str, tags: list[str], *, add: bool) -> dict[str, Any]:
        if len(tags) > MAX_INPUT_ARRAY:
            raise _fail(
                f"The input array size of {len(tags)} is greater than the maximum allowed of {MAX_INPUT_ARRAY}."
            )
        record = self.customers.get(gid) or self.orders.get(gid)
        if record is None:
            return {"node": None, "userErrors": [_user_error(["id"], "Resource does not exist")]}
        given = _tags(tags) if add else [t.strip() for t in tags if t.strip()]
        if add:
            record["tags"] = _tags([*record["tags"], *given])
        else:
            gone = {t.lower() for t in given}
            record["tags"] = [t for t in record["tags"] if t.lower() not in gone]
        record["updatedAt"] = iso(self.now())
        view = self._customer_view(record) if gid in self.customers else self._order_view(record)
        return {"node": view, "userErrors": []}

    def _consent_update(self, info: Any, input: dict[str, Any]) -> dict[str, Any]:
        gid = input["customerId"]
        consent = input["emailMarketingConsent"]
        base = ["input", "emailMarketingConsent"]
        customer = self.customers.get(gid)

        def refuse(field: list[str], message: str, code: str) -> dict[str, Any]:
            return {"customer": None, "userErrors": [_user_error(field, message, code)]}

        if customer is None:
            return refuse(["input", "customerId"], "Customer not found", "INVALID")
        if not customer["email"]:
            return refuse(
                ["input", "customerId"], "Customer must have an email address", "MISSING_ARGUMENT"
            )
        state = consent["marketingState"]
        if state not in CONSENT_STATES:
            return refuse([*base, "marketingState"],
                          f"Marketing state must be one of {', '.join(CONSENT_STATES)}", "INVALID")  # fmt: skip
        when = consent.get("consentUpdatedAt")
        stamp = iso(self.now())
        if when is not None:
            try:
                seconds = _parse_time(str(when), ZoneInfo("UTC"))
            except ValueError:
                return refuse(
                    [*base, "consentUpdatedAt"], "Consent updated at is invalid", "INVALID"
                )
            if seconds > self.now() / 1000:
                return refuse(
                    [*base, "consentUpdatedAt"],
                    "Consent updated at cannot be in the future",
                    "INVALID",
                )
            stamp = iso(seconds * 1000)
        old = customer["emailMarketingConsent"] or {}
        customer["emailMarketingConsent"] = {
            "marketingState": state,
            "marketingOptInLevel": consent.get("marketingOptInLevel")
            or old.get("marketingOptInLevel")
            or "SINGLE_OPT_IN",
            "consentUpdatedAt": stamp,
        }
        customer["updatedAt"] = iso(self.now())
        self.consent_log.append((gid, state))
        return {"customer": self._customer_view(customer), "userErrors": []}

    def _request_erasure(self, info: Any, customerId: str) -> dict[str, Any]:
        parts = _gid_parts(customerId)
        if parts is None or parts[0] != "Customer":
            raise _fail(f"Invalid global id '{customerId}'")
        if self._erasure_failures > 0:
            self._erasure_failures -= 1
            error = _user_error(
                ["customerId"], "Failed to request customer data erasure.", "FAILED_TO_REQUEST"
            )
            return {"customerId": None, "userErrors": [error]}
        if customerId not in self.customers:
            error = _user_error(["customerId"], "Customer does not exist.", "DOES_NOT_EXIST")
            return {"customerId": None, "userErrors": [error]}
        self.erasure_requests.append(customerId)
        if customerId not in self.pending_erasures:
            self.pending_erasures.append(customerId)
        return {"customerId": customerId, "userErrors": []}

    # ------------------------------------------------------------------ bulk operations

    def _file_url(self, n: int) -> str:
        return (
            f"https://{BULK_HOST}{BULK_PREFIX}{n}.jsonl?X-Goog-Algorithm=GOOG4-RSA-SHA256"
            f"&X-Goog-Expires=604800&X-Goog-SignedHeaders=host&X-Goog-Signature=fake{n:04d}"
        )

    def _bulk_run(self, info: Any, query: str) -> dict[str, Any]:
        def invalid(message: str, code: str = "INVALID") -> dict[str, Any]:
            field = ["query"] if code == "INVALID" else None
            return {"bulkOperation": None, "userErrors": [_user_error(field, message, code)]}

        running = [op for op in self.bulk_operations.values() if op.status == "RUNNING"]
        if running:
            return invalid(
                f"A bulk query operation for this app and shop is already in progress: {running[-1].gid}.",
                "OPERATION_IN_PROGRESS",
            )
        problems = self._bulk_problems(query)
        if not problems:
            _lines, problems = self._bulk_lines(query)
        if problems:
            return invalid("; ".join(problems))
        now = self.now()
        op = BulkOp(self._new("BulkOperation"), query, now, now + int(self.bulk_seconds * 1000))
        if self._bulk_faults:
            op.fail = self._bulk_faults.pop(0)
        elif self._expire_next:
            self._expire_next -= 1
            op.expire = True
        self.bulk_operations[op.gid] = op
        return {"bulkOperation": self._bulk_view(op, "CREATED"), "userErrors": []}

    def _bulk_cancel(self, info: Any, id: str) -> dict[str, Any]:
        op = self.bulk_operations.get(id)
        if op is None:
            return {
                "bulkOperation": None,
                "userErrors": [_user_error(["id"], "Bulk operation does not exist")],
            }
        if op.status != "RUNNING":
            message = f"A bulk operation cannot be canceled when it is {op.status.lower()}"
            return {
                "bulkOperation": self._bulk_view(op),
                "userErrors": [_user_error(None, message)],
            }
        op.status = "CANCELED"
        op.completed_ms = self.now()
        return {"bulkOperation": self._bulk_view(op, "CANCELING"), "userErrors": []}

    def _settle_bulk(self) -> None:
        """Finish every running bulk operation whose time has come (against the data now)."""
        now = self.now()
        for op in self.bulk_operations.values():
            if op.status == "RUNNING" and op.done_ms <= now:
                self._finish_bulk(op)

    def _finish_bulk(self, op: BulkOp) -> None:
        lines, problems = self._bulk_lines(op.query)
        root_flags = [line.pop("__root") for line in lines]
        op.completed_ms = op.done_ms
        if problems:
            self.violations.append(f"fake: bulk operation {op.gid} failed: {'; '.join(problems)}")
            op.status, op.error_code = "FAILED", "INTERNAL_SERVER_ERROR"
            return
        if op.fail is not None:
            op.status, op.error_code = "FAILED", op.fail[0]
            kept = lines[: op.fail[1]]
            op.object_count = len(kept)
            op.root_count = sum(root_flags[: len(kept)])
            if kept:
                op.partial_n = self._write_file(kept, op.done_ms)
            return
        op.object_count, op.root_count = len(lines), sum(root_flags)
        if op.expire:
            op.status = "EXPIRED"
            return
        op.status = "COMPLETED"
        if lines:
            op.file_n = self._write_file(lines, op.done_ms)

    def _write_file(self, lines: list[dict[str, Any]], done_ms: int) -> int:
        n = self._new("file")
        content = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
        self.bulk_files[n] = BulkFile(content.encode(), done_ms + BULK_FILE_TTL_MS)
        return n

    def _bulk_problems(self, query: str) -> list[str]:
        try:
            document = parse(query)
        except GraphQLError as exc:
            return [f"Invalid bulk query: {exc.message}"]
        errors = validate(self.schema, document)
        if errors:
            return [f"Invalid bulk query: {e.message}" for e in errors]
        ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        if len(ops) != 1 or ops[0].operation != OperationType.QUERY:
            return ["Bulk queries must hold exactly one query operation."]
        if ops[0].variable_definitions:
            return ["fake: bulk queries cannot declare variables (there is no way to pass them)."]
        fragments = _fragments(document)
        roots = list(self._field_nodes(ops[0].selection_set, self.schema.query_type, fragments))
        if len(roots) != 1:
            return ["Bulk queries must select a single top-level field."]
        node, field_def, _owner = roots[0]
        if node.name.value in ("node", "nodes"):
            return ["The top-level node and nodes fields can't be used in bulk queries."]
        if not _is_connection(get_named_type(field_def.type)):
            return ["fake: the top-level field of a bulk query must be a connection."]
        problems: list[str] = []
        stats = {"connections": 0, "depth": 0}
        self._bulk_walk(node, get_named_type(field_def.type), fragments, 1, stats, problems)
        if stats["connections"] > BULK_MAX_CONNECTIONS:
            problems.append(
                f"Bulk queries cannot contain more than {BULK_MAX_CONNECTIONS} connections."
            )
        if stats["depth"] > BULK_MAX_DEPTH:
            problems.append(
                f"Bulk queries cannot contain connections nested more than {BULK_MAX_DEPTH} levels deep."
            )
        return problems

    def _bulk_walk(self, conn: FieldNode, conn_type: Any, fragments: Mapping[str, Any],
                   depth: int, stats: dict[str, int], problems: list[str]) -> None:  # fmt: skip
        stats["connections"] += 1
        stats["depth"] = max(stats["depth"], depth)
        name = conn.name.value
        paging = [
            a.name.value
            for a in conn.arguments or ()
            if a.name.value in ("first", "last", "after", "before")
        ]
        if paging:
            problems.append(
                f"fake: {name}: pagination arguments ({', '.join(paging)}) are not allowed in bulk queries."
            )
        for node_sel, node_type in self._node_selections(conn, conn_type, fragments):
            selected = {
                f.name.value for f, _d, _o in self._field_nodes(node_sel, node_type, fragments)
            }
            nested = False
            for child, child_def, _owner in self._field_nodes(node_sel, node_type, fragments):
                nested |= self._bulk_inner(child, child_def, fragments, depth, stats, problems)
            if nested and "id" not in selected:
                problems.append(
                    f"fake: {name}: a node holding a nested connection must select id (for __parentId)."
                )

    def _bulk_inner(self, field: FieldNode, field_def: Any, fragments: Mapping[str, Any],
                    depth: int, stats: dict[str, int], problems: list[str]) -> bool:  # fmt: skip
        if field_def is None:
            return False
        named = get_named_type(field_def.type)
        if is_leaf_type(named):
            return False
        if _is_connection(named):
            self._bulk_walk(field, named, fragments, depth + 1, stats, problems)
            return True
        nested = False
        if field.selection_set is not None:
            for child, child_def, _owner in self._field_nodes(
                field.selection_set, named, fragments
            ):
                nested |= self._bulk_inner(child, child_def, fragments, depth, stats, problems)
        return nested

    def _bulk_lines(self, query: str) -> tuple[list[dict[str, Any]], list[str]]:
        """Run a (checked) bulk query now; its JSONL lines (each with a ``__root`` flag)."""
        document = parse(query)
        result = execute(self.schema, document, root_value=self._query_root,
                         context_value={"bulk": True}, field_resolver=self._resolve)  # fmt: skip
        if result.errors:
            return [], [self._error_message(e) for e in result.errors]
        op = next(d for d in document.definitions if isinstance(d, OperationDefinitionNode))
        fragments = _fragments(document)
        node, field_def, _owner = next(
            self._field_nodes(op.selection_set, self.schema.query_type, fragments)
        )
        lines: list[dict[str, Any]] = []
        data = result.data or {}
        self._emit(
            data[_response_key(node)], node, get_named_type(field_def.type), fragments, None, lines
        )
        return lines, []

    def _emit(self, conn_data: Any, conn: FieldNode, conn_type: Any, fragments: Mapping[str, Any],
              parent: str | None, lines: list[dict[str, Any]]) -> None:  # fmt: skip
        if conn_data is None:
            return
        for node_sel, node_type, items in self._node_items(conn, conn_type, fragments, conn_data):
            for item in items:
                if item is None:
                    continue
                line: dict[str, Any] = {}
                children = []
                for child, child_def, _owner in self._field_nodes(node_sel, node_type, fragments):
                    key = _response_key(child)
                    if key not in item or key in line:
                        continue
                    named = get_named_type(child_def.type) if child_def is not None else None
                    if named is not None and _is_connection(named):
                        children.append((item[key], child, named))
                    else:
                        line[key] = item[key]
                if parent is not None:
                    line["__parentId"] = parent
                line["__root"] = parent is None
                lines.append(line)
                for child_data, child, named in children:
                    self._emit(child_data, child, named, fragments, item.get("id"), lines)
            return  # edges and nodes hold the same objects: emit them once

    def _node_selections(self, conn: FieldNode, conn_type: Any,
                         fragments: Mapping[str, Any]) -> Iterator[tuple[SelectionSetNode, Any]]:  # fmt: skip
        for item, _data in self._node_paths(conn, conn_type, fragments):
            yield item

    def _node_items(self, conn: FieldNode, conn_type: Any, fragments: Mapping[str, Any],
                    data: Mapping[str, Any]) -> Iterator[tuple[SelectionSetNode, Any, list[Any]]]:  # fmt: skip
        for (sel, node_type), getter in self._node_paths(conn, conn_type, fragments):
            yield sel, node_type, getter(data)

    def _node_paths(
        self, conn: FieldNode, conn_type: Any, fragments: Mapping[str, Any]
    ) -> Iterator[Any]:
        """(node selection set, node type) of a connection field, with a getter of its items."""
        if conn.selection_set is None:
            return
        for field, field_def, _owner in self._field_nodes(conn.selection_set, conn_type, fragments):
            name, key = field.name.value, _response_key(field)
            if field_def is None or field.selection_set is None:
                continue
            if name == "nodes":
                node_type = get_named_type(field_def.type)
                yield (field.selection_set, node_type), (lambda d, k=key: d.get(k) or [])
            elif name == "edges":
                edge_type = get_named_type(field_def.type)
                for inner, inner_def, _o in self._field_nodes(
                    field.selection_set, edge_type, fragments
                ):
                    if inner.name.value == "node" and inner.selection_set is not None:
                        inner_key = _response_key(inner)
                        yield (
                            (inner.selection_set, get_named_type(inner_def.type)),
                            (lambda d, k=key, ik=inner_key: [e.get(ik) for e in d.get(k) or []]),
                        )

    # ------------------------------------------------------------------ AST helpers and cost

    def _field_nodes(self, selection_set: SelectionSetNode | None, parent: Any,
                     fragments: Mapping[str, Any]) -> Iterator[tuple[FieldNode, Any, Any]]:  # fmt: skip
        """(field node, field definition or None, owner type) of a selection set, through
        fragments."""
        if selection_set is None:
            return
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                fields = getattr(parent, "fields", {})
                yield selection, fields.get(selection.name.value), parent
            elif isinstance(selection, InlineFragmentNode):
                owner = (
                    self.schema.get_type(selection.type_condition.name.value)
                    if selection.type_condition
                    else parent
                )
                yield from self._field_nodes(selection.selection_set, owner, fragments)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = fragments.get(selection.name.value)
                if fragment is not None:
                    owner = self.schema.get_type(fragment.type_condition.name.value)
                    yield from self._field_nodes(fragment.selection_set, owner, fragments)

    def _cost(self, selection_set: SelectionSetNode | None, parent: Any, fragments: Mapping[str, Any],
              variables: Mapping[str, Any], data: Any = _UNSET) -> int:  # fmt: skip
        """Requested cost of a selection (``data`` unset), or its actual cost over ``data``."""
        actual = data is not _UNSET
        total = 0
        for field, field_def, _owner in self._field_nodes(selection_set, parent, fragments):
            if field_def is None:
                continue
            named = get_named_type(field_def.type)
            if is_leaf_type(named):
                continue
            value = None
            if actual:
                key = _response_key(field)
                if not isinstance(data, Mapping) or data.get(key) is None:
                    continue
                value = data[key]
            if _is_connection(named):
                total += 2 + self._connection_cost(
                    field, named, fragments, variables, value, actual
                )
            elif actual and isinstance(value, list):
                total += 1 + max((self._cost(field.selection_set, named, fragments, variables, v)
                                  for v in value), default=0)  # fmt: skip
            elif actual:
                total += 1 + self._cost(field.selection_set, named, fragments, variables, value)
            else:
                total += 1 + self._cost(field.selection_set, named, fragments, variables)
        return total

    def _connection_cost(self, field: FieldNode, conn_type: Any, fragments: Mapping[str, Any],
                         variables: Mapping[str, Any], value: Any, actual: bool) -> int:  # fmt: skip
        best = 0
        if actual:
            for (sel, node_type), getter in self._node_paths(field, conn_type, fragments):
                items = getter(value)
                best = max(best, sum(1 + self._cost(sel, node_type, fragments, variables, item)
                                     for item in items if item is not None))  # fmt: skip
            return best
        size = 0
        for argument in field.arguments or ():
            if argument.name.value in ("first", "last"):
                number = value_from_ast(argument.value, GraphQLInt, variables)
                if isinstance(number, int):
                    size = max(size, number)
        for (sel, node_type), _getter in self._node_paths(field, conn_type, fragments):
            best = max(best, 1 + self._cost(sel, node_type, fragments, variables))
        return size * best

    # ------------------------------------------------------------------ transport

    def handler(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self._settle_bulk()
        self.requests.append(request)
        url = request.url
        on_shop = url.host == self.shop and url.path.startswith("/admin/")
        if on_shop:
            self._operations.append(_root_fields(request))
        if on_shop and self.validator is not None:
            problems = self.validator.check(request)
            if problems:
                where = f"{request.method} {url.path}"
                self.violations.extend(f"{where}: {p}" for p in problems)
                return _json(
                    400,
                    {
                        "errors": "fake: request refused by the schema validator: "
                        + "; ".join(problems)
                    },
                )
        if url.host == BULK_HOST and request.headers.get("X-Shopify-Access-Token"):
            self.violations.append(
                f"{request.method} {url.host}{url.path}: the X-Shopify-Access-Token header was sent "
                "to the bulk file host (a third party); download result files without it"
            )
        fault = Fault.take(self._faults, request)
        if fault is not None:
            if not fault.after_apply:
                return self._fault(fault, request)
        response = self._dispatch(request)
        if fault is not None:
            return self._fault(fault, request)
        return response

    def _fault(self, fault: Fault, request: httpx.Request) -> httpx.Response:
        fault.raise_exception(request)
        headers = dict(fault.headers or {})
        body = fault.body
        if body is None:
            body = {"errors": httpx.codes.get_reason_phrase(fault.status) or "Simulated fault"}
        if isinstance(body, (bytes, str)):
            return httpx.Response(fault.status, headers=headers, content=body)
        headers.setdefault("Content-Type", "application/json; charset=utf-8")
        return httpx.Response(fault.status, headers=headers, content=json.dumps(body))

    def _dispatch(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.host == BULK_HOST and url.path.startswith(BULK_PREFIX):
            return self._serve_file(request)
        if url.host != self.shop or url.path != self.graphql_path or request.method != "POST":
            return _json(404, {"errors": "Not Found"})
        if request.headers.get("X-Shopify-Access-Token") != self.token:
            return _json(401, {"errors": AUTH_ERROR})
        try:
            envelope = json.loads(request.content or b"null")
        except ValueError:
            envelope = None
        if not isinstance(envelope, dict) or not isinstance(envelope.get("query"), str):
            return _json(400, {"errors": {"query": "Required parameter missing or invalid"}})
        variables = envelope.get("variables") or {}
        if not isinstance(variables, dict):
            return _json(400, {"errors": {"variables": "must be a JSON object"}})
        return _json(
            200, self._graphql(envelope["query"], variables, envelope.get("operationName"))
        )

    def _serve_file(self, request: httpx.Request) -> httpx.Response:
        if request.method != "GET":
            return httpx.Response(405, headers={"Content-Type": "application/xml; charset=UTF-8"},
                                  content=_gcs_error("MethodNotAllowed", "The specified method is not allowed."))  # fmt: skip
        match = re.fullmatch(r"(\d+)\.jsonl", request.url.path[len(BULK_PREFIX) :])
        file = self.bulk_files.get(int(match.group(1))) if match else None
        if file is None:
            return httpx.Response(404, headers={"Content-Type": "application/xml; charset=UTF-8"},
                                  content=_gcs_error("NoSuchKey", "The specified key does not exist."))  # fmt: skip
        if self.now() >= file.expires_ms:
            expired = datetime.fromtimestamp(file.expires_ms / 1000, tz=timezone.utc)
            details = f"Request signature expired at: {expired:%Y-%m-%dT%H:%M:%S}+00:00"
            return httpx.Response(403, headers={"Content-Type": "application/xml; charset=UTF-8"},
                                  content=_gcs_error("ExpiredToken", "The provided token has expired.", details))  # fmt: skip
        return httpx.Response(
            200, headers={"Content-Type": "application/jsonl"}, content=file.content
        )

    # ------------------------------------------------------------------ GraphQL execution

    def _throttle_status(self) -> dict[str, Any]:
        return {
            "maximumAvailable": float(self.bucket_size),
            "currentlyAvailable": int(self._available),
            "restoreRate": float(self.restore_rate),
        }

    def _cost_extension(self, requested: int, actual: int | None) -> dict[str, Any]:
        return {"cost": {"requestedQueryCost": requested, "actualQueryCost": actual,
                         "throttleStatus": self._throttle_status()}}  # fmt: skip

    def _refill(self) -> None:
        now = self.now()
        elapsed = max(0, now - self._bucket_at) / 1000
        self._available = min(
            float(self.bucket_size), self._available + elapsed * self.restore_rate
        )
        self._bucket_at = now

    def _graphql(
        self, query: str, variables: dict[str, Any], operation_name: Any
    ) -> dict[str, Any]:
        self._refill()
        try:
            document = parse(query)
        except GraphQLError as exc:
            return {"errors": [exc.formatted], "extensions": self._cost_extension(0, 0)}
        errors = validate(self.schema, document)
        if errors:
            return {
                "errors": [e.formatted for e in errors],
                "extensions": self._cost_extension(0, 0),
            }
        operation = get_operation_ast(
            document, operation_name if isinstance(operation_name, str) else None
        )
        if operation is None:
            message = (
                "An operation name is required"
                if operation_name is None
                else f"No operation named {operation_name!r}"
            )
            return {"errors": [{"message": message}], "extensions": self._cost_extension(0, 0)}
        coerced = get_variable_values(self.schema, operation.variable_definitions or [], variables)
        if isinstance(coerced, list):
            return {
                "errors": [e.formatted for e in coerced],
                "extensions": self._cost_extension(0, 0),
            }
        coerced = getattr(coerced, "coerced", coerced)  # graphql-core 3.3: VariableValues
        fragments = _fragments(document)
        is_mutation = operation.operation == OperationType.MUTATION
        root_type = self.schema.mutation_type if is_mutation else self.schema.query_type
        if is_mutation:
            requested = MUTATION_COST * sum(
                1 for _ in self._field_nodes(operation.selection_set, root_type, fragments)
            )
        else:
            requested = self._cost(operation.selection_set, root_type, fragments, coerced)
        if requested > self.max_query_cost:
            message = (
                f"Query cost is {requested}, which exceeds the single query max cost limit "
                f"({self.max_query_cost})."
            )
            error = {"message": message, "extensions": {"code": "MAX_COST_EXCEEDED", "cost": requested,
                                                        "maxCost": self.max_query_cost}}  # fmt: skip
            return {"errors": [error], "extensions": self._cost_extension(requested, None)}
        if self._force_throttle > 0 or requested > self._available:
            if self._force_throttle > 0:  # as if the app's other clients had emptied the bucket
                self._force_throttle -= 1
                self._available = 0.0
            self.throttled += 1
            error = {
                "message": "Throttled",
                "extensions": {"code": "THROTTLED", "documentation": RATE_LIMIT_DOCS},
            }
            return {"errors": [error], "extensions": self._cost_extension(requested, None)}
        self._available -= requested
        result = execute(
            self.schema,
            document,
            root_value=self._mutation_root if is_mutation else self._query_root,
            context_value={"bulk": False},
            variable_values=variables,
            operation_name=operation_name if isinstance(operation_name, str) else None,
            field_resolver=self._resolve,
        )
        if is_mutation:
            actual = requested
        else:
            actual = self._cost(operation.selection_set, root_type, fragments, coerced, result.data)
        self._available = min(float(self.bucket_size), self._available + max(0, requested - actual))
        body: dict[str, Any] = {}
        if result.errors:
            body["errors"] = [self._format_error(e) for e in result.errors]
        body["data"] = result.data
        body["extensions"] = self._cost_extension(requested, actual)
        return body

    def _error_message(self, error: GraphQLError) -> str:
        message = error.message
        match = re.fullmatch(r"Cannot return null for non-nullable field (\w+\.\w+)\.", message)
        if match and match.group(1) in self.unmodelled:
            message += f" (fake: {match.group(1)} is not modelled by the fake)"
        return message

    def _format_error(self, error: GraphQLError) -> dict[str, Any]:
        formatted = dict(error.formatted)
        formatted["message"] = self._error_message(error)
        return formatted

    def _resolve(self, source: Any, info: Any, **args: Any) -> Any:
        name = info.field_name
        if isinstance(source, Mapping):
            if name not in source:
                where = f"{info.parent_type.name}.{name}"
                if info.parent_type in (self.schema.query_type, self.schema.mutation_type):
                    raise _fail(f"fake: {where} is not modelled by the fake")
                self.unmodelled.add(where)
                return None
            value = source[name]
        else:
            value = getattr(source, name, None)
        return value(info, **args) if callable(value) else value


# --------------------------------------------------------------------------------------------
# Module helpers
# --------------------------------------------------------------------------------------------


def _json(status: int, body: Any) -> httpx.Response:
    return httpx.Response(status, headers={"Content-Type": "application/json; charset=utf-8"},
                          content=json.dumps(body))  # fmt: skip


def _gcs_error(code: str, message: str, details: str | None = None) -> bytes:
    extra = f"<Details>{details}</Details>" if details else ""
    return (
        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
        f"<Message>{message}</Message>{extra}</Error>"
    ).encode()


def _fragments(document: Any) -> dict[str, FragmentDefinitionNode]:
    return {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}


def _root_fields(request: httpx.Request) -> frozenset[str]:
    """The field names at the top of the request's operation (empty when it does not parse)."""
    try:
        envelope = json.loads(request.content or b"null")
        document = parse(envelope["query"])
    except (ValueError, TypeError, KeyError, GraphQLError):
        return frozenset()
    name = envelope.get("operationName")
    operation = get_operation_ast(document, name if isinstance(name, str) else None)
    if operation is None:
        return frozenset()
    fragments = _fragments(document)
    names: set[str] = set()

    def walk(selection_set: SelectionSetNode) -> None:
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                names.add(selection.name.value)
            elif isinstance(selection, InlineFragmentNode):
                walk(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode) and selection.name.value in fragments:
                walk(fragments[selection.name.value].selection_set)

    walk(operation.selection_set)
    return frozenset(names)


def _country_name(code: str) -> str | None:
    try:
        import pycountry

        country = pycountry.countries.get(alpha_2=str(code).upper())
    except (ImportError, LookupError, KeyError):
        return None
    return country.name if country is not None else None
