"""Shopify connector: customers and orders over the GraphQL Admin API, consent-safe write-back.

Streams name what they read with ``resource``: ``customers`` (people, with e-mail and SMS
marketing consent, default address, tags and Shopify's own order figures) or ``orders`` (timeline
entries of their customer: totals in the shop's and the customer's currency, status, line items).

Reading
    Incremental by ``updatedAt``: each run reads the window ``(cursor - lookback, now - settle)``
    with ``query: "updated_at:>'…' AND updated_at:<'…'"`` and ``sortKey: UPDATED_AT``, paged by
    cursor. The window's end is fixed for the run, so a record changed while the run reads leaves
    the window and comes next run; cursor pagination keeps its place by sort value, so nothing
    shifts. Checkpoints fall between two seconds, never inside a group of records changed in the
    same second. Shopify refuses to page past 25,000 objects of one query, so a long read starts a
    new query from its last checkpoint every ``restart_after`` records.

    The first full read, and any window that holds more than ``bulk_threshold`` records, goes
    through a bulk operation (``bulkOperationRunQuery``): Shopify runs the query and offers a
    JSONL file. The operation's id is checkpointed at once, so a run that stops while it runs
    picks the same operation up. A failed, cancelled or expired operation (or a result link that
    expired) is started again ``bulk_retries`` times; then the read falls back to paging.

    Shopify announces no deletions (or ``customers/redact`` erasures) in the API: every
    ``reconcile_hours`` the stream lists every id it holds and yields a :class:`Reconcile`, and
    the hub erases what is gone. A customer whose consent state reads ``REDACTED`` is erased at
    once.

Throttling
    By query cost: every answer reports ``extensions.cost.throttleStatus``; when the points left
    would not pay for the next query the account waits until they are restored, and a
    ``THROTTLED`` error inside an HTTP 200 is waited out the same way (:class:`ShopifyPolicy`).

Writing (customers)
    Only to customers Shopify holds (the hub's record came from this shop), unless
    ``create_customers``. Per record: tags the hub added since its last write are added
    (``tagsAdd``), tags it wrote before and no longer has are removed (``tagsRemove``); tags
    someone set in Shopify are left alone. The customer fields in ``owned_fields`` are updated
    (``customerUpdate``). E-mail marketing consent goes through
    ``customerEmailMarketingConsentUpdate`` under the never-re-subscribe rule: before writing, the
    stream reads each customer's current consent; an opt-out in the hub unsubscribes, a customer
    who unsubscribed in Shopify is never set ``SUBSCRIBED`` (``reoptin: pending`` may ask them
    again when their newer opt-in came from themselves; otherwise they are listed for review as
    ``needs_reoptin``), and a subscription needs documented consent.

Dry runs (customers)
    ``peek`` reads what Shopify holds now, in the out mapping's shape: customers the hub knows by
    ``nodes(ids:)`` (100 a query), and, when ``create_customers`` is on (a write then takes the
    customer that holds the address), the others by ``customers(query: "email:…")``, 25 aliased
    searches a query and at most ``PEEK_BY_EMAIL`` per dry run. The plan makes the write's own
    decisions and shows their changes before -> after against those values (tags as the whole
    list before and after); it reuses the peek's reads instead of asking again.

Erasing (customers)
    ``customerRequestDataErasure`` per person, by the customer's id (or, when Shopify no longer
    knows it or the hub has none, by the customers found for the person's e-mail addresses).
    Shopify accepts the request and erases the customer later (``customers/redact``), so the
    answer is ``requested``; the customer then disappears from reads and the next reconcile.
    A customer Shopify does not hold (``DOES_NOT_EXIST``) is ``confirmed``. Needs the
    ``write_customers`` access scope.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import httpx
from pydantic import Field, SecretStr, field_validator

from synchub.connector import (
    Attention,
    Checkpoint,
    CheckResult,
    Connector,
    ConnectorSettings,
    ErasureResult,
    ErasureTarget,
    OutRecord,
    PlannedWrite,
    ReadItem,
    Reconcile,
    Record,
    Rejected,
    Stream,
    StreamSettings,
    WriteResult,
    parse_time,
)
from synchub.errors import AuthError, FatalRunError, QuotaExhausted, RetryableError
from synchub.http import (
    AccountLimiter,
    ApiSession,
    RateLimitPolicy,
    RequestRejected,
    account_key,
    host_allowed,
    json_object,
    response_json,
)
from synchub.kit import ApiKeyHeaderAuth
from synchub.kit.erasure import Failure, erase_each, scrub
from synchub.plugins import hookimpl
from synchub.redact import redact, register_secret

#: Hosts Shopify serves bulk operation results from (signed Google Cloud Storage links).
BULK_HOSTS = ("storage.googleapis.com", "storage.shopifycloud.com")
#: Shopify's limit on paging through one query.
PAGINATION_CAP = 25_000
GID_CUSTOMER = "gid://shopify/Customer/"
OPTED_OUT = frozenset({"unsubscribed", "cleaned"})
_VERSION = re.compile(r"^\d{4}-(01|04|07|10)$|^unstable$")
_SHOP = re.compile(r"^[a-z0-9][a-z0-9-]*\.myshopify\.com$")


def now() -> datetime:
    """The connector's wall clock (tests replace it)."""
    return datetime.fromtimestamp(time.time(), timezone.utc)


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


# --------------------------------------------------------------------------- settings


class ShopifySettings(ConnectorSettings):
    #: The shop: ``acme`` or ``acme.myshopify.com``.
    shop: str
    #: Admin API access token (``shpat_…``), from ``${ENV}``.
    access_token: SecretStr
    #: The Admin API version (Shopify supports each for a year; ``YYYY-01/04/07/10``).
    api_version: str = "2025-01"
    #: Override the API root (a proxy, a test server); needs ``allow_any_host`` off Shopify.
    base_url: str | None = None
    allow_any_host: bool = False
    timeout_seconds: float = Field(default=60.0, gt=0, le=300)
    max_attempts: int = Field(default=6, ge=1, le=20)
    #: Longest wait for throttling before a run gives up (it resumes from its checkpoint).
    max_wait_seconds: float = Field(default=600.0, gt=0)
    #: Hosts bulk operation results may be downloaded from.
    bulk_hosts: list[str] = Field(default_factory=lambda: list(BULK_HOSTS))

    @field_validator("shop")
    @classmethod
    def _shop(cls, v: str) -> str:
        v = v.strip().lower().removeprefix("https://").rstrip("/")
        if "." not in v:
            v += ".myshopify.com"
        if not _SHOP.match(v):
            raise ValueError("shop must be the shop's myshopify domain, e.g. acme.myshopify.com")
        return v

    @field_validator("api_version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not _VERSION.match(v):
            raise ValueError("api_version looks like 2025-01 (January, April, July or October releases)")
        return v

    def root(self) -> str:
        return (self.base_url or f"https://{self.shop}").rstrip("/")

    @property
    def graphql_path(self) -> str:
        return f"/admin/api/{self.api_version}/graphql.json"


ConsentMethod = Literal["double_opt_in", "form", "checkbox", "import", "admin", "api", "unknown"]
OwnedField = Literal["firstName", "lastName", "phone", "locale", "note", "email", "addresses"]


class ShopifyStreamSettings(StreamSettings):
    resource: Literal["customers", "orders"] = "customers"
    #: Records per page; keep the query cost under Shopify's 1000 points per query (customers:
    #: about 5 points each, orders about 37 with 10 line items).
    page_size: int | None = Field(default=None, ge=1, le=250)
    #: Line items read per order when paging (bulk reads take them all).
    line_items: int = Field(default=10, ge=1, le=250)
    settle_seconds: int = Field(default=30, ge=0)
    #: Shopify's search index can lag: re-read this much before the cursor on every run.
    lookback_seconds: int = Field(default=300, ge=0)
    #: First read: records changed from this time on (default: all).
    start_date: datetime | None = None
    #: ``first_read``: bulk for the first full read and for windows over ``bulk_threshold``;
    #: ``always``; ``never`` (paging only).
    bulk: Literal["first_read", "always", "never"] = "first_read"
    bulk_threshold: int = Field(default=PAGINATION_CAP, ge=1)
    bulk_poll_seconds: float = Field(default=10.0, gt=0)
    #: Longest wait for a bulk operation in one run (the next run picks it up again).
    bulk_timeout_seconds: float = Field(default=3600.0, gt=0)
    bulk_retries: int = Field(default=1, ge=0, le=5)
    #: Start a new query after this many records (Shopify pages at most 25,000 per query).
    restart_after: int = Field(default=20_000, ge=1, le=PAGINATION_CAP)
    #: List every id this often to find deletions (0: never).
    reconcile_hours: float = Field(default=24.0, ge=0)

    # -- writing (customers)
    #: Create Shopify customers for golden records the shop does not hold.
    create_customers: bool = False
    #: Customer fields the hub owns and writes (tags and consent are always written).
    owned_fields: list[OwnedField] = Field(default_factory=list)
    #: Tags every customer this stream writes gets.
    tags: list[str] = Field(default_factory=list)
    documented_methods: list[ConsentMethod] = Field(default_factory=lambda: ["double_opt_in", "form", "checkbox"])
    #: Someone who unsubscribed in Shopify whose newer opt-in came from themselves: ``pending``
    #: asks them again (Shopify's confirmation e-mail), ``never`` lists them for review.
    reoptin: Literal["pending", "never"] = "never"
    #: A subscription without documented consent: ``skip`` (consent left as it is) or ``pending``.
    undocumented_consent: Literal["skip", "pending"] = "skip"

    @property
    def effective_page_size(self) -> int:
        return self.page_size or (100 if self.resource == "customers" else 25)


# --------------------------------------------------------------------------- queries

CUSTOMER_FIELDS = """
id legacyResourceId firstName lastName email phone locale note state tags createdAt updatedAt
verifiedEmail taxExempt numberOfOrders
amountSpent { amount currencyCode }
emailMarketingConsent { marketingState marketingOptInLevel consentUpdatedAt }
smsMarketingConsent { marketingState marketingOptInLevel consentUpdatedAt consentCollectedFrom }
defaultAddress { address1 address2 city company countryCodeV2 province provinceCode zip phone }
"""

ORDER_FIELDS = """
id name email phone createdAt processedAt updatedAt cancelledAt test tags sourceName
displayFinancialStatus displayFulfillmentStatus currencyCode presentmentCurrencyCode
currentTotalPriceSet { shopMoney { amount currencyCode } presentmentMoney { amount currencyCode } }
customer { id }
"""

LINE_ITEM_FIELDS = "title sku quantity currentQuantity originalUnitPriceSet { presentmentMoney { amount currencyCode } }"

COUNT = {"customers": "customersCount", "orders": "ordersCount"}


def _page_query(resource: str, line_items: int) -> str:
    fields = CUSTOMER_FIELDS if resource == "customers" else (
        ORDER_FIELDS + f"lineItems(first: {line_items}) {{ pageInfo {{ hasNextPage }} nodes {{ {LINE_ITEM_FIELDS} }} }}")
    return (f"query SynchubPage($first: Int!, $after: String, $query: String) {{ "
            f"{resource}(first: $first, after: $after, sortKey: UPDATED_AT, query: $query) {{ "
            f"pageInfo {{ hasNextPage endCursor }} nodes {{ {fields} }} }} }}")


def _bulk_query(resource: str, search: str) -> str:
    fields = CUSTOMER_FIELDS if resource == "customers" else (
        ORDER_FIELDS + f"lineItems {{ edges {{ node {{ id {LINE_ITEM_FIELDS} }} }} }}")
    return f"{{ {resource}(sortKey: UPDATED_AT, query: {json.dumps(search)}) {{ edges {{ node {{ {' '.join(fields.split())} }} }} }} }}"


IDS_QUERY = ("query SynchubIds($first: Int!, $after: String, $query: String) {{ {resource}(first: $first, "
             "after: $after, sortKey: ID, query: $query) {{ pageInfo {{ hasNextPage endCursor }} nodes {{ id }} }} }}")
COUNT_QUERY = "query SynchubCount($query: String) {{ {field}(query: $query) {{ count precision }} }}"
RUN_BULK = ("mutation SynchubBulk($query: String!) { bulkOperationRunQuery(query: $query) { "
            "bulkOperation { id status } userErrors { field message code } } }")
BULK_STATUS = ("query SynchubBulkStatus($id: ID!) { node(id: $id) { ... on BulkOperation { id status errorCode "
               "objectCount rootObjectCount url partialDataUrl } } }")
CURRENT_BULK = "query SynchubCurrentBulk { currentBulkOperation(type: QUERY) { id status query } }"
CUSTOMERS_NOW = ("query SynchubConsent($ids: [ID!]!) { nodes(ids: $ids) { ... on Customer { id email tags "
                 "emailMarketingConsent { marketingState marketingOptInLevel consentUpdatedAt } } } }")
FIND_BY_EMAIL = ("query SynchubFind($query: String!) { customers(first: 1, query: $query) { nodes { id email tags "
                 "emailMarketingConsent { marketingState marketingOptInLevel consentUpdatedAt } } } }")
#: What a dry run reads of a customer: the out mapping's fields as Shopify holds them.
PEEK_FIELDS = ("id email firstName lastName phone locale tags "
               "emailMarketingConsent { marketingState marketingOptInLevel consentUpdatedAt } "
               "defaultAddress { address1 address2 city province countryCodeV2 zip }")
PEEK_BY_ID = f"query SynchubPeek($ids: [ID!]!) {{ nodes(ids: $ids) {{ ... on Customer {{ {PEEK_FIELDS} }} }} }}"


def _peek_by_email_query(n: int) -> str:
    """One document looking up ``n`` addresses: an aliased ``customers`` search per address
    (Shopify's search has no OR that is safe to rely on)."""
    params = ", ".join(f"$q{i}: String!" for i in range(n))
    parts = " ".join(f"c{i}: customers(first: 1, query: $q{i}) {{ nodes {{ {PEEK_FIELDS} }} }}" for i in range(n))
    return f"query SynchubPeekByEmail({params}) {{ {parts} }}"


CUSTOMER_UPDATE = ("mutation SynchubUpdate($input: CustomerInput!) { customerUpdate(input: $input) { "
                   "customer { id } userErrors { field message } } }")
CUSTOMER_CREATE = ("mutation SynchubCreate($input: CustomerInput!) { customerCreate(input: $input) { "
                   "customer { id } userErrors { field message } } }")
TAGS_ADD = "mutation SynchubTagsAdd($id: ID!, $tags: [String!]!) { tagsAdd(id: $id, tags: $tags) { userErrors { field message } } }"
TAGS_REMOVE = ("mutation SynchubTagsRemove($id: ID!, $tags: [String!]!) { tagsRemove(id: $id, tags: $tags) { "
               "userErrors { field message } } }")
ERASE = ("mutation SynchubErase($customerId: ID!) { customerRequestDataErasure(customerId: $customerId) { "
         "customerId userErrors { code field message } } }")
#: The access scope ``customerRequestDataErasure`` needs.
ERASE_SCOPE = "write_customers"
CONSENT_UPDATE = ("mutation SynchubConsent($input: CustomerEmailMarketingConsentUpdateInput!) { "
                  "customerEmailMarketingConsentUpdate(input: $input) { customer { id } userErrors { field message code } } }")


class ShopifyError(FatalRunError):
    """Shopify refused a query outright (a query error, not a record's problem). ``codes`` are
    the errors' ``extensions.code`` values (``ACCESS_DENIED`` for a missing scope)."""

    def __init__(self, message: str, *, codes: Iterable[str] = ()):
        super().__init__(message)
        self.codes = frozenset(codes)


class BulkFailed(RetryableError):
    """A bulk operation ended without a usable result."""


# --------------------------------------------------------------------------- records

CONSENT_STATES = {
    "SUBSCRIBED": "subscribed", "UNSUBSCRIBED": "unsubscribed", "PENDING": "pending",
    "NOT_SUBSCRIBED": "never", "INVALID": "cleaned",
}
OPT_IN_LEVELS = {"CONFIRMED_OPT_IN": "double_opt_in", "SINGLE_OPT_IN": "checkbox", "UNKNOWN": "unknown"}


def customer_record(node: dict[str, Any], shop: str) -> dict[str, Any]:
    """A customer as the stream yields it: the API's fields plus the few the mapping uses
    (``email_consent``/``sms_consent`` in the hub's words)."""
    data = dict(node)
    for key, channel in (("emailMarketingConsent", "email_consent"), ("smsMarketingConsent", "sms_consent")):
        c = node.get(key) or {}
        status = CONSENT_STATES.get(str(c.get("marketingState") or ""))
        if status:
            data[channel] = {
                "status": status, "at": c.get("consentUpdatedAt"),
                "method": OPT_IN_LEVELS.get(str(c.get("marketingOptInLevel") or ""), "unknown") if status in ("subscribed", "pending") else None,
                "source": f"shopify {shop}",
            }
    return data


def order_record(node: dict[str, Any], items: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """An order as the stream yields it, with ``customer_id``, money split out and line items as
    the hub's ``items`` (product, sku, quantity, unit price in the customer's currency)."""
    data = dict(node)
    data["customer_id"] = (node.get("customer") or {}).get("id")
    money = node.get("currentTotalPriceSet") or {}
    shop_money, paid = money.get("shopMoney") or {}, money.get("presentmentMoney") or {}
    data["total"], data["currency"] = paid.get("amount"), paid.get("currencyCode") or node.get("presentmentCurrencyCode")
    data["shop_total"], data["shop_currency"] = shop_money.get("amount"), shop_money.get("currencyCode") or node.get("currencyCode")
    if node.get("test"):
        data["status"] = "test"
    elif node.get("cancelledAt"):
        data["status"] = "cancelled"
    else:
        data["status"] = str(node.get("displayFinancialStatus") or "").lower() or None
    if items is None:
        items = ((node.get("lineItems") or {}).get("nodes")) or []
    data["items"] = [
        {"product": li.get("title"), "sku": li.get("sku") or None,
         "quantity": li.get("currentQuantity", li.get("quantity")),
         "price": ((li.get("originalUnitPriceSet") or {}).get("presentmentMoney") or {}).get("amount")}
        for li in items
    ]
    data.pop("lineItems", None)
    return data


def _reverse_lines(path: str, block: int = 1 << 16) -> Iterator[bytes]:
    """The lines of a file, last first, reading blocks from the end (bounded memory)."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        pos = fh.tell()
        tail = b""
        while pos > 0:
            step = min(block, pos)
            pos -= step
            fh.seek(pos)
            chunk = fh.read(step) + tail
            lines = chunk.split(b"\n")
            tail = lines.pop(0)
            for line in reversed(lines):
                if line.strip():
                    yield line
        if tail.strip():
            yield tail


def bulk_nodes(path: str) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Top-level objects of a bulk result file with their nested connection's nodes.

    Shopify writes each nested node on a line of its own with ``__parentId``, after its parent
    but not necessarily right after it, so the file is read from its end: a parent's children
    have all been seen when the parent comes."""
    children: dict[str, list[dict[str, Any]]] = {}
    for raw in _reverse_lines(path):
        obj = json.loads(raw)
        parent = obj.pop("__parentId", None)
        if parent is not None:
            children.setdefault(parent, []).append(obj)
            continue
        mine = children.pop(obj.get("id"), [])
        mine.reverse()
        yield obj, mine


# --------------------------------------------------------------------------- streams


class ShopifyStream(Stream):
    primary_key = ("id",)
    cursor_field = "updatedAt"

    def __init__(self, name: str, connector: ShopifyConnector, settings: ShopifyStreamSettings):
        self.name = name
        self.connector = connector
        self.settings = settings
        self.resource = settings.resource
        # What the last peek read, by golden id (the raw customer), and which records it asked
        # about (by id or by e-mail) or left out (past PEEK_BY_EMAIL).
        self._peek_nodes: dict[str, dict[str, Any]] = {}
        self._peek_asked: set[str] = set()
        self._peek_skipped: set[str] = set()

    #: Customers a dry run reads by id per ``nodes`` query.
    PEEK_BY_ID_BATCH = 100
    #: Addresses looked up per query (aliased searches, about 5 cost points each).
    PEEK_EMAILS_PER_QUERY = 25
    #: A dry run looks up at most this many customers by e-mail (one search each); the others
    #: are planned from the store alone.
    PEEK_BY_EMAIL = 250

    @property
    def can_write(self) -> bool:
        return self.resource == "customers"

    @property
    def can_peek(self) -> bool:
        return self.resource == "customers"

    @property
    def can_erase(self) -> bool:
        # Orders are the shop's records; the person is erased through their customer.
        return self.resource == "customers"

    # -- read

    def read(self, state: dict[str, Any] | None) -> Iterator[ReadItem]:
        s = self.settings
        state = dict(state or {})
        upper = _second(now() - timedelta(seconds=s.settle_seconds))
        done = parse_time(state.get("done_through"))
        if done is not None:
            since: datetime | None = done - timedelta(seconds=s.lookback_seconds)
        elif s.start_date is not None:
            start = s.start_date if s.start_date.tzinfo else s.start_date.replace(tzinfo=timezone.utc)
            since = _second(start) - timedelta(seconds=1)
        else:
            since = None
        if since is None or since < upper - timedelta(seconds=1):
            pending_bulk = state.get("bulk")
            use_bulk = bool(pending_bulk) or s.bulk == "always" or (s.bulk == "first_read" and done is None)
            if not use_bulk and s.bulk != "never":
                use_bulk = self.count(self._search(since, upper)) > s.bulk_threshold
            through = None
            if use_bulk:
                through = yield from self._read_bulk(state, since, upper)
            if through is None:
                yield from self._read_pages(state, since, upper)
            state.pop("bulk", None)
            state["done_through"] = iso(upper - timedelta(seconds=1))
            yield Checkpoint(dict(state))
        if s.reconcile_hours:
            last = parse_time(state.get("reconciled_at"))
            moment = now()
            if last is None or moment - last >= timedelta(hours=s.reconcile_hours):
                yield Reconcile(self.all_ids(), moment)
                state["reconciled_at"] = iso(moment)
                yield Checkpoint(dict(state))

    @staticmethod
    def _search(since: datetime | None, upper: datetime) -> str:
        """Records changed after the second ``since`` and before the second ``upper``. Shopify
        shows whole seconds but may keep fractions: ``>= since + 1s`` leaves out all of ``since``
        (read already) whatever the fractions are."""
        terms = [f"updated_at:>='{iso(since + timedelta(seconds=1))}'"] if since is not None else []
        return " AND ".join([*terms, f"updated_at:<'{iso(upper)}'"])

    def count(self, search: str) -> int:
        data = self.connector.graphql(COUNT_QUERY.format(field=COUNT[self.resource]), {"query": search})
        return int((data.get(COUNT[self.resource]) or {}).get("count") or 0)

    def _record(self, node: dict[str, Any], items: list[dict[str, Any]] | None = None) -> ReadItem:
        gid = node.get("id")
        ts = parse_time(node.get("updatedAt"))
        if not gid or ts is None:
            return Rejected(ref=f"{self.resource}/{gid or '?'}", reason="record without id or updatedAt",
                            raw=redact(json.dumps(node)[:500]))
        if self.resource == "orders":
            return Record(order_record(node, items), ref=f"orders/{gid}", observed_at=ts)
        consent = node.get("emailMarketingConsent") or {}
        if consent.get("marketingState") == "REDACTED":
            # Erased at the person's request (customers/redact): nothing of theirs stays.
            return Record({"id": gid, "updatedAt": node.get("updatedAt")}, ref=f"customers/{gid}", observed_at=ts, deleted=True)
        return Record(customer_record(node, self.connector.shop), ref=f"customers/{gid}", observed_at=ts)

    def _read_pages(self, state: dict[str, Any], since: datetime | None, upper: datetime) -> Iterator[ReadItem]:
        """Page the window oldest first; checkpoint between seconds; a new query every
        ``restart_after`` records (from the last checkpoint) to stay under Shopify's cap."""
        s = self.settings
        query = _page_query(self.resource, s.line_items)
        start = since
        while True:
            after = None
            search = self._search(start, upper)
            in_query = 0
            done_through: datetime | None = None  # every record up to this second was yielded
            last_ts: datetime | None = None
            restart = False
            while True:
                data = self.connector.graphql(query, {"first": s.effective_page_size, "after": after, "query": search})
                conn = data.get(self.resource) or {}
                nodes = [n for n in conn.get("nodes") or [] if isinstance(n, dict)]
                stamps = [parse_time(n.get("updatedAt")) for n in nodes]
                # One checkpoint per page, where its last group of equal seconds begins: every
                # record before it is yielded, none after it.
                cut = None
                for j in range(len(nodes) - 1, -1, -1):
                    before = stamps[j - 1] if j > 0 else last_ts
                    if stamps[j] is not None and before is not None and stamps[j] > before:
                        cut = j
                        break
                for j, node in enumerate(nodes):
                    if j == cut:
                        done_through = stamps[j - 1] if j > 0 else last_ts
                        if done_through is not None and (start is None or done_through > start):
                            state["done_through"] = iso(done_through)
                            yield Checkpoint(dict(state))
                    if self.resource == "orders" and ((node.get("lineItems") or {}).get("pageInfo") or {}).get("hasNextPage"):
                        self.connector.context.log.warning("order %s has more than %d line items; the rest are not read (raise line_items)",
                                                           node.get("name") or node.get("id"), s.line_items)
                    yield self._record(node)
                    in_query += 1
                    if stamps[j] is not None:
                        last_ts = stamps[j]
                page = conn.get("pageInfo") or {}
                if not page.get("hasNextPage"):
                    return
                after = page.get("endCursor")
                if in_query >= s.restart_after and done_through is not None and (start is None or done_through > start):
                    start, restart = done_through, True
                    break
            if not restart:
                return

    def _read_bulk(self, state: dict[str, Any], since: datetime | None, upper: datetime) -> Iterator[ReadItem]:
        """Read the window through a bulk operation; returns the moment read through, or None
        when the bulk route gave up (the caller pages instead)."""
        s = self.settings
        search = self._search(since, upper)
        pending = state.get("bulk") or {}
        op_id = pending.get("id") if pending.get("search") == search else None
        attempts = 0
        while True:
            if op_id is None:
                if attempts > s.bulk_retries:
                    self.connector.context.log.warning("%s: bulk reads failed %d times; paging instead", self.name, attempts)
                    return None
                attempts += 1
                op_id = self.connector.start_bulk(_bulk_query(self.resource, search), s)
                state["bulk"] = {"id": op_id, "search": search}
                yield Checkpoint(dict(state))  # a run that stops now picks this operation up
            try:
                path = self.connector.bulk_result(op_id, s)
            except BulkFailed as exc:
                self.connector.context.log.warning("%s: %s", self.name, exc)
                op_id = None
                continue
            try:
                if path is not None:
                    for node, children in bulk_nodes(path):
                        yield self._record(node, children)
            finally:
                if path is not None:
                    os.unlink(path)
            return upper

    def all_ids(self) -> set[str]:
        """Every id of the resource Shopify holds now (paged by id, restarting past the cap)."""
        ids: set[str] = set()
        search = None
        query = IDS_QUERY.format(resource=self.resource)
        while True:
            after, n, last = None, 0, None
            while True:
                data = self.connector.graphql(query, {"first": 250, "after": after, "query": search})
                conn = data.get(self.resource) or {}
                for node in conn.get("nodes") or []:
                    ids.add(node["id"])
                    last = node["id"]
                    n += 1
                page = conn.get("pageInfo") or {}
                if not page.get("hasNextPage"):
                    return ids
                after = page.get("endCursor")
                if n >= self.settings.restart_after and last is not None:
                    search = f"id:>{last.rsplit('/', 1)[-1]}"
                    break

    # -- write

    def peek(self, records: list[OutRecord]) -> dict[str, dict[str, Any]]:
        """For a dry run: the customers Shopify holds for these records now, by golden id, in
        the out mapping's shape (email, firstName, lastName, phone, locale, tags, address,
        consent). Customers the hub knows are read by id (``nodes``, ``PEEK_BY_ID_BATCH`` a
        query); the others, only when the stream may create customers (a write then takes an
        existing customer with the address), by e-mail, at most ``PEEK_BY_EMAIL`` of them.
        Throttling is waited out by the connector's session."""
        if self.resource != "customers":
            raise NotImplementedError(f"stream {self.name!r} ({self.resource}) cannot read its destination")
        self._peek_nodes, self._peek_asked, self._peek_skipped = {}, set(), set()
        by_gid: dict[str, list[OutRecord]] = {}
        by_email: dict[str, list[OutRecord]] = {}
        for rec in records:
            if rec.external_id:
                by_gid.setdefault(_customer_gid(rec.external_id), []).append(rec)
            elif self.settings.create_customers and str(rec.data.get("email") or "").strip():
                by_email.setdefault(str(rec.data["email"]).strip().lower(), []).append(rec)
        gids = list(by_gid)
        for start in range(0, len(gids), self.PEEK_BY_ID_BATCH):
            chunk = gids[start:start + self.PEEK_BY_ID_BATCH]
            data = self.connector.graphql(PEEK_BY_ID, {"ids": chunk})
            for node in data.get("nodes") or []:
                if isinstance(node, dict) and node.get("id") in by_gid:
                    for rec in by_gid[node["id"]]:
                        self._peek_nodes[rec.golden_id] = node
            self._peek_asked.update(rec.golden_id for gid in chunk for rec in by_gid[gid])
        emails = list(by_email)
        if len(emails) > self.PEEK_BY_EMAIL:
            self.connector.context.log.info(
                "%s: dry run looks up %d of %d customers by e-mail; the rest are planned from the store",
                self.name, self.PEEK_BY_EMAIL, len(emails))
            self._peek_skipped.update(rec.golden_id for e in emails[self.PEEK_BY_EMAIL:] for rec in by_email[e])
            emails = emails[:self.PEEK_BY_EMAIL]
        for email, node in self._find_by_emails(emails).items():
            for rec in by_email[email]:
                self._peek_nodes[rec.golden_id] = node
        self._peek_asked.update(rec.golden_id for e in emails for rec in by_email[e])
        return {gid: _held_shape(node) for gid, node in self._peek_nodes.items()}

    def _find_by_emails(self, emails: list[str]) -> dict[str, dict[str, Any]]:
        """The customer holding each of these (lower-cased) addresses, where one does:
        ``PEEK_EMAILS_PER_QUERY`` aliased searches a query."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(emails), self.PEEK_EMAILS_PER_QUERY):
            chunk = emails[start:start + self.PEEK_EMAILS_PER_QUERY]
            data = self.connector.graphql(_peek_by_email_query(len(chunk)),
                                          {f"q{i}": f"email:{json.dumps(e)}" for i, e in enumerate(chunk)})
            for i, email in enumerate(chunk):
                for node in (data.get(f"c{i}") or {}).get("nodes") or []:
                    # The search is exact; still, only an address that matches is taken.
                    if isinstance(node, dict) and str(node.get("email") or "").strip().lower() == email:
                        found[email] = node
                        break
        return found

    def plan(self, records: Iterable[OutRecord], fields: list[str]) -> Iterator[PlannedWrite]:
        """What :meth:`write` would do. Decisions are the write's own (on the consent and tags
        Shopify holds now); with ``holds`` (a peek) the changes read before -> after from what
        Shopify holds, and a customer that the write would find by its address is an update."""
        records = list(records)
        asked = self._peek_asked
        current = self.connector.current_customers(
            [r.external_id for r in records if r.external_id and r.golden_id not in asked])
        for rec in records:
            if rec.external_id and rec.golden_id in asked:
                now_held = self._peek_nodes.get(rec.golden_id)
            else:
                now_held = current.get(rec.external_id or "")
            d = self._decide(rec, now_held)
            action, changes, reason = d.action, d.changes, d.reason
            if rec.holds is not None and action in ("create", "update", "unchanged"):
                changes = self._held_changes(d, rec.holds, self._peek_nodes.get(rec.golden_id))
                action = "update" if changes else "unchanged"
            elif action == "create" and rec.golden_id in self._peek_skipped:
                why = f"not looked up in Shopify (a dry run looks up at most {self.PEEK_BY_EMAIL} by e-mail)"
                reason = f"{reason}; {why}" if reason else why
            yield PlannedWrite(rec.golden_id, action, rec.external_id, changes, reason)

    @staticmethod
    def _held_changes(d: _Decision, held: dict[str, Any], node: dict[str, Any] | None) -> dict[str, tuple[Any, Any]]:
        """What the write would change, before (what Shopify holds) -> after, only where they
        differ."""
        changes: dict[str, tuple[Any, Any]] = {}
        for f, after in d.fields.items():
            before = _address_input(held.get("address")) if f == "addresses" else held.get(f)
            same = (str(before or "").strip().lower() == str(after).strip().lower()) if f == "email" else before == after
            if not same:
                changes[f] = (before, after)
        had = {str(t) for t in held.get("tags") or []}
        after_tags = (had | set(d.tags_add)) - set(d.tags_remove)
        if after_tags != had:
            changes["tags"] = (sorted(had), sorted(after_tags))
        if d.consent is not None:
            state = ((node or {}).get("emailMarketingConsent") or {}).get("marketingState")
            if state is None:
                state = _SHOPIFY_STATES.get(str((held.get("consent") or {}).get("status") or ""))
            if state != d.consent["marketingState"]:
                changes["emailMarketingConsent"] = (state, d.consent["marketingState"])
        return changes

    def write(self, records: Iterable[OutRecord], fields: list[str]) -> Iterator[WriteResult]:
        records = list(records)
        for start in range(0, len(records), 250):
            chunk = records[start:start + 250]
            # A record the hub has no customer id for, when the stream may create customers: a
            # customer with its address may exist (made in the shop). That one is updated, and
            # decided on what it holds: its unsubscribe must not be overwritten by a create's
            # consent.
            existing: dict[str, str] = {}
            if self.settings.create_customers:
                unknown = {rec.golden_id: str(rec.data.get("email") or "").strip().lower()
                           for rec in chunk if not rec.external_id and str(rec.data.get("email") or "").strip()}
                found = self._find_by_emails(sorted(set(unknown.values())))
                existing = {gid: str(found[e]["id"]) for gid, e in unknown.items() if e in found}
            current = self.connector.current_customers(
                [r.external_id for r in chunk if r.external_id] + list(existing.values()))
            for rec in chunk:
                if rec.golden_id in existing:
                    rec.external_id = existing[rec.golden_id]
                yield self._write_one(rec, self._decide(rec, current.get(rec.external_id or "")))

    def _decide(self, rec: OutRecord, now_held: dict[str, Any] | None) -> _Decision:
        s = self.settings
        d = _Decision(rec)
        data, prev = rec.data, rec.previous or {}
        if rec.op != "upsert":
            d.action, d.reason = "skip", "Shopify customers are not removed by the hub"
            return d
        if rec.external_id and now_held is None:
            d.action, d.reason, d.final = "reject", "the customer no longer exists in Shopify", True
            return d
        if not rec.external_id and not s.create_customers:
            d.action, d.reason = "skip", "not a customer of this shop (create_customers: false)"
            return d
        held_tags = set((now_held or {}).get("tags") or [])
        wanted = {str(t) for t in data.get("tags") or []} | set(s.tags)
        had = {str(t) for t in prev.get("tags") or []}
        d.tags_add = sorted(wanted - held_tags)
        d.tags_remove = sorted((had - wanted) & held_tags)
        for f in s.owned_fields:
            value = data.get(f)
            if f == "addresses":
                value = _address_input(data.get("address"))
            if value not in (None, "", []) and (rec.previous is None or prev.get(f) != data.get(f)):
                d.fields[f] = value
        d.consent, reason, d.attention = self._consent(data, (now_held or {}).get("emailMarketingConsent") or {},
                                                       bool((now_held or {}).get("email") or data.get("email")))
        d.holds = dict(data)
        if d.consent is None and isinstance(data.get("consent"), dict):
            # What Shopify holds stays; remember it so the next write compares with it.
            d.holds["consent"] = prev.get("consent")
        d.changes = {f: (prev.get(f), v) for f, v in d.fields.items()}
        if d.tags_add or d.tags_remove:
            d.changes["tags"] = (d.tags_remove, d.tags_add)
        if d.consent is not None:
            d.changes["emailMarketingConsent"] = ((now_held or {}).get("emailMarketingConsent", {}).get("marketingState"), d.consent["marketingState"])
        if not rec.external_id:
            d.action = "create"
        elif d.changes:
            d.action = "update"
        else:
            d.action = "skip" if (reason and d.attention) else "unchanged"
        d.reason = reason
        return d

    def _consent(self, data: dict[str, Any], held: dict[str, Any], has_email: bool
                 ) -> tuple[dict[str, Any] | None, str | None, Attention | None]:
        """The consent mutation's input (None: leave Shopify's consent as it is), why, and what
        needs a person."""
        s = self.settings
        hub = data.get("consent") if isinstance(data.get("consent"), dict) else {}
        status, method, at = hub.get("status"), hub.get("method"), parse_time(hub.get("at"))
        state = held.get("marketingState")
        if not status or not has_email or state in ("REDACTED", "INVALID"):
            return None, (f"consent not written: Shopify holds {state}" if state in ("REDACTED", "INVALID") else None), None
        stamp = {"consentUpdatedAt": iso(min(at, now()))} if at is not None else {}
        if status in OPTED_OUT:
            if state in ("SUBSCRIBED", "PENDING"):
                return {"marketingState": "UNSUBSCRIBED", **stamp}, f"{status} in the hub: unsubscribed", None
            return None, None, None
        if status != "subscribed" or state in ("SUBSCRIBED", "PENDING"):
            return None, None, None
        if state == "UNSUBSCRIBED":
            opted = parse_time(held.get("consentUpdatedAt"))
            newer = method in ("double_opt_in", "form") and at is not None and (opted is None or at > opted)
            attention = Attention(
                "needs_reoptin",
                f"unsubscribed in Shopify {self.connector.shop}; the hub says subscribed" + (" (newer opt-in from the person)" if newer else ""),
                path="consent.email.status",
                values=[{"value": "unsubscribed", "connection": self.connector.context.name, "note": f"Shopify, {held.get('consentUpdatedAt') or ''}"},
                        {"value": "subscribed", "connection": "hub", "note": f"{method or ''} {hub.get('at') or ''}".strip()}])
            if newer and s.reoptin == "pending":
                return ({"marketingState": "PENDING", "marketingOptInLevel": "CONFIRMED_OPT_IN", **stamp},
                        "unsubscribed in Shopify, newer opt-in from the person: asked again (pending)", attention)
            return None, "unsubscribed in Shopify: not re-subscribed; needs re-opt-in", attention
        if method in s.documented_methods:
            level = "CONFIRMED_OPT_IN" if method == "double_opt_in" else "SINGLE_OPT_IN"
            return {"marketingState": "SUBSCRIBED", "marketingOptInLevel": level, **stamp}, None, None
        if s.undocumented_consent == "pending":
            return {"marketingState": "PENDING", "marketingOptInLevel": "CONFIRMED_OPT_IN", **stamp}, "no documented consent: asked by e-mail (pending)", None
        return None, "no documented consent (undocumented_consent: skip)", None

    def _write_one(self, rec: OutRecord, d: _Decision) -> WriteResult:
        gid = rec.external_id
        if d.action == "reject":
            return WriteResult(rec.golden_id, ok=False, external_id=gid, error=f"Shopify: {d.reason}", final=d.final)
        if d.action in ("skip", "unchanged"):
            return WriteResult(rec.golden_id, ok=True, external_id=gid, skipped=d.action == "skip",
                               attention=d.attention, holds=d.holds)
        try:
            if d.action == "create":
                gid = self.connector.create_customer(rec.data, d, self.settings)
                if gid is None:
                    return WriteResult(rec.golden_id, ok=False, error="Shopify: customerCreate returned no customer")
            else:
                if d.fields:
                    self.connector.mutate(CUSTOMER_UPDATE, {"input": {"id": gid, **d.fields}}, "customerUpdate")
                if d.tags_add:
                    self.connector.mutate(TAGS_ADD, {"id": gid, "tags": d.tags_add}, "tagsAdd")
            if d.tags_remove:
                self.connector.mutate(TAGS_REMOVE, {"id": gid, "tags": d.tags_remove}, "tagsRemove")
            if d.consent is not None:
                self.connector.mutate(CONSENT_UPDATE, {"input": {"customerId": gid, "emailMarketingConsent": d.consent}},
                                      "customerEmailMarketingConsentUpdate")
        except _UserErrors as exc:
            return WriteResult(rec.golden_id, ok=False, external_id=gid, error=f"Shopify: {exc}", final=True)
        except RetryableError as exc:
            return WriteResult(rec.golden_id, ok=False, external_id=gid, error=f"Shopify: {exc}", retryable=True)
        return WriteResult(rec.golden_id, ok=True, external_id=gid, attention=d.attention, holds=d.holds)

    # -- erase

    def erase(self, targets: list[ErasureTarget]) -> Iterator[ErasureResult]:
        """Ask Shopify to erase each person's customer (``customerRequestDataErasure``): one
        result per target, ``requested`` when Shopify accepted, ``confirmed`` when it holds no
        such customer. After the credentials were refused or the scope found missing, the
        remaining targets fail without sending anything (retried on the next run)."""
        if not self.can_erase:
            raise NotImplementedError(f"stream {self.name!r} ({self.resource}) cannot erase: only customers are erased")
        yield from erase_each(targets, self._erase_one, self._erase_failure)

    @staticmethod
    def _erase_failure(exc: Exception, target: ErasureTarget) -> Failure:
        if isinstance(exc, (AuthError, ShopifyError, RequestRejected)):
            denied = isinstance(exc, AuthError) or "ACCESS_DENIED" in getattr(exc, "codes", ()) or (
                isinstance(exc, RequestRejected) and exc.status in (401, 403))
            if denied:
                return Failure(f"Shopify refused access ({exc}); erasing customers needs the {ERASE_SCOPE} access "
                               "scope", stop=True)
            # A request Shopify refuses as such (400, a query error): sending it again cannot help.
            return Failure(f"Shopify refused the erasure request: {exc}", retryable=False)
        if isinstance(exc, QuotaExhausted):
            return Failure(f"not erased, Shopify's API limit is spent: {exc}", stop=True)
        if isinstance(exc, RetryableError):
            return Failure(f"Shopify did not answer, retries spent: {exc}")
        return Failure(f"{type(exc).__name__}: {exc}")

    def _erase_one(self, target: ErasureTarget) -> ErasureResult:
        # By the id the hub knows; when there is none, or Shopify no longer knows it (a merge
        # retired it), the customers that hold the person's addresses now.
        rounds: list[list[str] | None] = [[_customer_gid(target.external_id)]] if target.external_id else []
        rounds.append(None)
        tried: list[str] = []
        requested: list[str] = []
        for gids in rounds:
            if requested:
                break
            for gid in gids if gids is not None else self._customers_by_email(target.emails):
                tried.append(gid)
                outcome, detail = self._request_erasure(gid)
                if outcome == "requested":
                    requested.append(gid)
                elif outcome != "absent":
                    return ErasureResult(target, "failed", scrub(detail or "", target), retryable=outcome == "retry")
        if requested:
            return ErasureResult(target, "requested", f"Shopify accepted the erasure of customer(s) "
                                                      f"{', '.join(_num(g) for g in requested)}; it erases their "
                                                      "data later (customers/redact)")
        held = f"customer {', '.join(_num(g) for g in tried)}" if tried else "customer with these addresses"
        return ErasureResult(target, "confirmed", f"not held: Shopify has no {held}")

    def _request_erasure(self, gid: str) -> tuple[Literal["requested", "absent", "retry", "final"], str | None]:
        """Shopify's answer for one customer: ``requested``, ``absent`` (DOES_NOT_EXIST), or a
        refusal to ask about again (``retry``, FAILED_TO_REQUEST) or not (``final``), with why."""
        # Asking again for a customer whose erasure is pending changes nothing: safe to resend.
        data = self.connector.graphql(ERASE, {"customerId": gid}, idempotent=True)
        payload = data.get("customerRequestDataErasure") or {}
        errors = [e for e in payload.get("userErrors") or [] if isinstance(e, dict)]
        if not errors:
            return "requested", None
        codes = {str(e.get("code") or "") for e in errors}
        if codes == {"DOES_NOT_EXIST"}:
            return "absent", None
        text = redact("; ".join(f"{e.get('code') or 'error'}: {e.get('message')}" for e in errors))
        if "FAILED_TO_REQUEST" in codes:
            return "retry", f"Shopify could not take the erasure request for customer {_num(gid)} ({text})"
        return "final", f"Shopify refused the erasure request for customer {_num(gid)}: {text}"

    def _customers_by_email(self, emails: list[str]) -> list[str]:
        found: list[str] = []
        for email in dict.fromkeys(e.strip().lower() for e in emails if e and e.strip()):
            data = self.connector.graphql(FIND_BY_EMAIL, {"query": f"email:{json.dumps(email)}"})
            for node in (data.get("customers") or {}).get("nodes") or []:
                if isinstance(node, dict) and node.get("id") and node["id"] not in found:
                    found.append(str(node["id"]))
        return found


def _customer_gid(external_id: str) -> str:
    """A customer's GraphQL id from the id the hub holds: the gid the stream reads, or the
    numeric id (REST, webhooks, ``legacyResourceId``)."""
    text = str(external_id).strip()
    return GID_CUSTOMER + text if text.isdigit() else text


def _num(gid: str) -> str:
    return gid.rsplit("/", 1)[-1]


_SHOPIFY_STATES = {hub: shopify for shopify, hub in CONSENT_STATES.items()}


def _held_shape(node: dict[str, Any]) -> dict[str, Any]:
    """A customer as Shopify holds it, in the out mapping's shape (``shopify_customers_out``)."""
    a = node.get("defaultAddress") or None
    address = None
    if isinstance(a, dict):
        address = {k: v for k, v in {"street": a.get("address1"), "line2": a.get("address2"),
                                     "postal_code": a.get("zip"), "city": a.get("city"),
                                     "region": a.get("province"), "country": a.get("countryCodeV2")}.items() if v}
    c = node.get("emailMarketingConsent") or {}
    status = CONSENT_STATES.get(str(c.get("marketingState") or ""))
    consent = None
    if status:
        consent = {"status": status, "at": c.get("consentUpdatedAt"),
                   "method": OPT_IN_LEVELS.get(str(c.get("marketingOptInLevel") or ""), "unknown")
                   if status in ("subscribed", "pending") else None}
    return {"email": node.get("email"), "firstName": node.get("firstName"), "lastName": node.get("lastName"),
            "phone": node.get("phone"), "locale": node.get("locale"), "tags": sorted(str(t) for t in node.get("tags") or []),
            "address": address or None, "consent": consent}


def _address_input(address: Any) -> list[dict[str, Any]] | None:
    if not isinstance(address, dict):
        return None
    out = {"address1": address.get("street"), "address2": address.get("line2"), "zip": address.get("postal_code"),
           "city": address.get("city"), "countryCode": address.get("country")}
    out = {k: v for k, v in out.items() if v}
    return [out] if out else None


@dataclass
class _Decision:
    rec: OutRecord
    action: str = "update"
    reason: str | None = None
    final: bool = False
    fields: dict[str, Any] = field(default_factory=dict)
    tags_add: list[str] = field(default_factory=list)
    tags_remove: list[str] = field(default_factory=list)
    consent: dict[str, Any] | None = None
    attention: Attention | None = None
    holds: dict[str, Any] | None = None
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)


class _UserErrors(Exception):
    """A mutation's ``userErrors``: Shopify refused this record's change."""


# --------------------------------------------------------------------------- rate limits


class ShopifyPolicy(RateLimitPolicy):
    """Shopify: REST 429 with ``Retry-After``; GraphQL ``THROTTLED`` errors inside an HTTP 200,
    waited out from the query cost and the restore rate in ``extensions.cost.throttleStatus``.

    REST responses carry ``X-Shopify-Shop-Api-Call-Limit: used/size`` (a leaky bucket that drains
    ``leak_rate`` requests per second); when fewer than ``reserve`` slots are left the account
    pauses until the bucket has drained enough. No client-side bucket by default, since GraphQL
    is limited by query cost rather than request count.
    """

    vendor = "shopify"

    def __init__(
        self,
        *,
        rate: float | None = None,
        burst: int | None = None,
        leak_rate: float = 2.0,
        reserve: int = 2,
    ):
        self.rate = rate
        self.burst = burst
        self.leak_rate = leak_rate
        self.reserve = reserve

    def observe(self, response: httpx.Response, limiter: AccountLimiter, now: datetime) -> None:
        used, _, size = response.headers.get("X-Shopify-Shop-Api-Call-Limit", "").partition("/")
        try:
            left = float(size) - float(used)
        except ValueError:
            left = None
        if left is not None and left < self.reserve and self.leak_rate > 0:
            limiter.pause_for((self.reserve - left) / self.leak_rate)
        # GraphQL: when the points left would not pay for another query like this one, wait
        # until they are restored, instead of sending it to be throttled.
        body = response_json(response) if "json" in response.headers.get("content-type", "") else None
        try:
            cost = body["extensions"]["cost"]
            status = cost["throttleStatus"]
            needed = float(cost.get("requestedQueryCost") or 0)
            missing = needed - float(status["currentlyAvailable"])
            if missing > 0:
                limiter.pause_for((missing + 1) / float(status["restoreRate"]))
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            return

    def is_throttled(self, response: httpx.Response) -> bool:
        body = response_json(response)
        if not isinstance(body, dict):
            return False
        for error in body.get("errors") or []:
            if (
                isinstance(error, dict)
                and (error.get("extensions") or {}).get("code") == "THROTTLED"
            ):
                return True
        return False

    def throttle_wait(self, response: httpx.Response, now: datetime) -> float | None:
        wait = super().throttle_wait(response, now)
        if wait is not None:
            return wait
        body = response_json(response)
        try:
            cost = body["extensions"]["cost"]
            status = cost["throttleStatus"]
            missing = float(cost["requestedQueryCost"]) - float(status["currentlyAvailable"])
            # One point more than missing: Shopify reports whole points, the bucket has fractions.
            return max(0.0, (missing + 1) / float(status["restoreRate"]))
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            return None


# --------------------------------------------------------------------------- connector


class ShopifyConnector(Connector):
    name = "shopify"
    Settings = ShopifySettings
    StreamSettings = ShopifyStreamSettings

    def __init__(self, context: Any):
        super().__init__(context)
        s: ShopifySettings = self.settings  # type: ignore[assignment]
        token = s.access_token.get_secret_value()
        register_secret(token)
        self.shop = s.shop
        self.client: httpx.Client = context.http.build(
            s.root(), allowed_hosts=(".myshopify.com",), allow_any_host=s.allow_any_host, timeout=s.timeout_seconds,
            headers={"Accept": "application/json"}, auth=ApiKeyHeaderAuth(token, header="X-Shopify-Access-Token"),
        )
        self.session: ApiSession = context.http.session(
            self.client, policy=ShopifyPolicy(), account=account_key(s.shop), max_attempts=s.max_attempts,
            max_total_wait=s.max_wait_seconds,
        )
        self._download: httpx.Client | None = None
        self._streams: dict[str, ShopifyStream] | None = None

    def streams(self) -> dict[str, Stream]:
        if self._streams is None:
            self._streams = {name: ShopifyStream(name, self, st)  # type: ignore[arg-type]
                             for name, st in self.context.stream_settings.items()}
        return dict(self._streams)

    # -- GraphQL

    def graphql(self, query: str, variables: dict[str, Any] | None = None, *, idempotent: bool = True) -> dict[str, Any]:
        """Send one GraphQL document; return its ``data``. Throttling is waited out by the
        session; errors in the answer raise :class:`ShopifyError` (they are the query's fault)."""
        s: ShopifySettings = self.settings  # type: ignore[assignment]
        body = json_object(self.session.post(s.graphql_path, json={"query": query, "variables": variables or {}},
                                             idempotent=idempotent), "Shopify")
        errors = body.get("errors")
        if errors:
            listed = errors if isinstance(errors, list) else [errors]
            messages = "; ".join(str(e.get("message") if isinstance(e, dict) else e) for e in listed)
            codes = [str((e.get("extensions") or {}).get("code")) for e in listed
                     if isinstance(e, dict) and isinstance(e.get("extensions"), dict) and e["extensions"].get("code")]
            raise ShopifyError(f"Shopify refused the query: {redact(messages)}", codes=codes)
        data = body.get("data")
        if not isinstance(data, dict):
            raise ShopifyError("Shopify answered without data")
        return data

    def mutate(self, document: str, variables: dict[str, Any], name: str, *, idempotent: bool = True) -> dict[str, Any]:
        payload = self.graphql(document, variables, idempotent=idempotent).get(name) or {}
        errors = payload.get("userErrors") or []
        if errors:
            raise _UserErrors("; ".join(f"{'.'.join(e.get('field') or []) or name}: {e.get('message')}" for e in errors))
        return payload

    def current_customers(self, gids: list[str]) -> dict[str, dict[str, Any]]:
        """What Shopify holds now for these customers (consent, tags), 250 ids a call."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(gids), 250):
            data = self.graphql(CUSTOMERS_NOW, {"ids": gids[start:start + 250]})
            for node in data.get("nodes") or []:
                if isinstance(node, dict) and node.get("id"):
                    found[node["id"]] = node
        return found

    def create_customer(self, data: dict[str, Any], d: _Decision, s: ShopifyStreamSettings) -> str | None:
        """Create a customer. The stream's write looked the address up just before (a customer made
        in the shop, or by a create whose answer was lost, is updated instead), so a retry never
        makes a duplicate."""
        email = data.get("email")
        payload = {**d.fields, "tags": d.tags_add}
        if email:
            payload["email"] = email
        created = self.mutate(CUSTOMER_CREATE, {"input": payload}, "customerCreate", idempotent=False)
        return (created.get("customer") or {}).get("id")

    # -- bulk operations

    def start_bulk(self, query: str, s: ShopifyStreamSettings) -> str:
        """Start a bulk query; when another one of this app runs (one at a time per shop), wait
        for it first."""
        waited = 0.0
        while True:
            payload = self.graphql(RUN_BULK, {"query": query}, idempotent=False).get("bulkOperationRunQuery") or {}
            errors = payload.get("userErrors") or []
            op = payload.get("bulkOperation") or {}
            if not errors and op.get("id"):
                return str(op["id"])
            text = "; ".join(str(e.get("message")) for e in errors)
            if "in progress" not in text.lower() or waited >= s.bulk_timeout_seconds:
                raise ShopifyError(f"bulkOperationRunQuery refused: {redact(text) or 'no operation'}")
            self.context.http.sleep(s.bulk_poll_seconds)
            waited += s.bulk_poll_seconds

    def bulk_result(self, op_id: str, s: ShopifyStreamSettings) -> str | None:
        """Wait for the operation; download its file to a temporary path (None: no records).
        Raises :class:`BulkFailed` when it failed, was cancelled, expired, or its link did."""
        waited = 0.0
        while True:
            node = self.graphql(BULK_STATUS, {"id": op_id}).get("node") or {}
            status = node.get("status")
            if status == "COMPLETED":
                url = node.get("url")
                return self._fetch(url, op_id) if url else None
            if status in ("FAILED", "CANCELED", "CANCELING", "EXPIRED") or not status:
                raise BulkFailed(f"bulk operation {op_id} ended {status or 'unknown'} ({node.get('errorCode') or 'no error code'})")
            if waited >= s.bulk_timeout_seconds:
                raise RetryableError(f"bulk operation {op_id} still {status} after {waited:.0f}s; the next run continues it")
            self.context.http.sleep(s.bulk_poll_seconds)
            waited += s.bulk_poll_seconds

    def _fetch(self, url: str, op_id: str) -> str:
        s: ShopifySettings = self.settings  # type: ignore[assignment]
        target = httpx.URL(url)
        if not s.allow_any_host and (target.scheme != "https" or not host_allowed(target.host, s.bulk_hosts)):
            # The link comes from Shopify's answer; still, nothing is fetched from elsewhere (SSRF).
            raise ShopifyError(f"bulk result host {target.host!r} is not one of bulk_hosts")
        if self._download is None:
            self._download = self.context.http.build(f"{target.scheme}://{target.host}", allowed_hosts=tuple(s.bulk_hosts),
                                                     allow_any_host=s.allow_any_host, timeout=s.timeout_seconds)
        fd, path = tempfile.mkstemp(prefix="synchub-shopify-", suffix=".jsonl")
        try:
            with os.fdopen(fd, "wb") as out, self._download.stream("GET", url) as response:
                if response.status_code in (401, 403, 404, 410):
                    raise BulkFailed(f"the result of bulk operation {op_id} is gone (HTTP {response.status_code}; links expire after 7 days)")
                if response.status_code >= 300:
                    raise RetryableError(f"bulk result download: HTTP {response.status_code}")
                for chunk in response.iter_bytes():
                    out.write(chunk)
        except (httpx.TransportError, BulkFailed, RetryableError) as exc:
            os.unlink(path)
            if isinstance(exc, httpx.TransportError):
                raise RetryableError(f"bulk result download broke off: {type(exc).__name__}") from None
            raise
        return path

    def check(self) -> CheckResult:
        try:
            shop = self.graphql("query SynchubShop { shop { name myshopifyDomain currencyCode ianaTimezone } }").get("shop") or {}
        except RequestRejected as exc:
            return CheckResult(ok=False, lines=[str(exc)])
        lines = [f"shop {shop.get('name')} ({shop.get('myshopifyDomain')}), currency {shop.get('currencyCode')}"]
        lines += [f"{n}: {st.resource} read{' write' if st.can_write else ''}" for n, st in self.streams().items()]  # type: ignore[attr-defined]
        return CheckResult(ok=True, lines=lines)

    def close(self) -> None:
        self.client.close()
        if self._download is not None:
            self._download.close()


@hookimpl
def register_connectors() -> list[type[Connector]]:
    return [ShopifyConnector]
