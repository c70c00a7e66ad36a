"""A stateful fake of HubSpot's CRM v3 API, served as an ``httpx`` transport for tests.

::

    fake = FakeHubSpot(daily_limit=1000, burst_limit=100)
    contact_id = fake.add("contacts", {"email": "ann@example.com", "firstname": "Ann"})
    client = httpx.Client(transport=fake.transport, base_url="https://api.hubapi.com",
                          headers={"Authorization": "Bearer pat-test-token"})
    client.post("/crm/v3/objects/contacts/search", json={"limit": 100})

The fake follows HubSpot's documented and observed behaviour, including the parts that break
naive connectors. Where a detail is not documented, the choice made here is the stricter one and
is said so below.

Search (``POST /crm/v3/objects/{type}/search``)
    * filterGroups are ORed, the filters of a group ANDed; at most 5 groups, 6 filters a group and
      18 filters in all (HubSpot's search guide); ``limit`` at most 200 (default 10).
    * At most 10,000 results per query: a page that reaches past result 10,000 (``after`` +
      ``limit`` > 10,000) is refused with a 400, although ``paging.next.after`` is still offered
      on the page that ends at 10,000 (as HubSpot does).
    * Only the first sort is applied. Records with equal sort values, and all records when no sort
      is given, come back in a stable pseudo-random order, never in id order. Sorts given as strings
      (the vendor OpenAPI file types ``sorts`` as ``string[]``) are ignored, as the real API ignores
      them; only ``{"propertyName", "direction"}`` objects sort.
    * Archived and merged-away records are never found; with ``index_lag_ms`` a record modified less
      than that long ago is not found yet (the search index lags behind writes).
    * Search responses carry no ``X-HubSpot-RateLimit-*`` headers and do not count against the
      ten-second burst limit; they have their own per-second limit (``search_limit``, 5 in reality,
      not enforced unless given).

Batch writes (``/batch/create|update|upsert|read|archive``)
    * More than ``batch_limit`` inputs: 400.
    * By default an invalid input (see :meth:`FakeHubSpot.reject_when`) or an existing e-mail fails
      the *whole* batch (400 / 409) and nothing is written. A 207 multi-status with the good inputs
      applied comes only when every input carries an ``objectWriteTraceId``; each error then names
      the input in ``context.objectWriteTraceId`` (HubSpot's error-handling guide). Pass
      ``multi_status="always"`` to get 207s without trace ids.
    * An update of an unknown id is a 207 with an ``OBJECT_NOT_FOUND`` error whose
      ``context.ids`` names the id; the other inputs are applied. Batch read does the same.
    * Results come back in a stable pseudo-random order, not in input order.
    * A property set to ``""`` is cleared; contact e-mails are stored lower-cased.

Merge (``POST /crm/v3/objects/{type}/merge`` or :meth:`FakeHubSpot.merge`)
    As HubSpot does since its "updated merge functionality for contacts and companies": a new
    record with a new id replaces both; its ``hs_merged_object_ids`` lists both old ids; the
    primary's values win, the secondary's fill the gaps, a secondary e-mail is kept in
    ``hs_additional_emails``. Reads by an old id (GET, batch read, updates) reach the new record,
    which answers with its new id. The old ids never appear in search, listings or the archived
    listing. ``merge_keeps_primary_id=True`` gives the older behaviour (the primary keeps its id).

GDPR delete (``POST /crm/v3/objects/contacts/gdpr-delete``)
    ``{"objectId": id}`` removes the contact for good (also an archived one, also by an id a
    merge retired): it leaves every listing, the archived one included, and its id answers 404
    from then on. An unknown id is a 404 ``OBJECT_NOT_FOUND``. With ``"idProperty": "email"`` the
    contact holding the address (primary or additional) is removed; an address no contact holds
    is put on ``fake.blocklist`` (the operation's description) and answered 204 as well. Every
    removed id is appended to ``fake.gdpr_deleted``. Undocumented: what a later write of a
    blocklisted address gets; the fake does not refuse such writes. Companies have no GDPR delete
    (404).

Rate limits and auth
    Every non-search response carries ``X-HubSpot-RateLimit-Max``, ``-Remaining`` and
    ``-Interval-Milliseconds`` (a rolling 10 s window), plus ``-Daily`` and ``-Daily-Remaining``
    when ``daily_limit`` is set. Past a limit: 429 with ``errorType: RATE_LIMIT`` and
    ``policyName`` ``TEN_SECONDLY_ROLLING`` (configurable) or ``DAILY``; the daily quota resets
    at midnight UTC of the fake clock. A wrong token gets 401 ``INVALID_AUTHENTICATION``, an
    expired OAuth token 401 ``EXPIRED_AUTHENTICATION``; ``POST /oauth/v1/token`` refreshes.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs

import httpx

BASE_URL = "https://api.hubapi.com"
DAY_MS = 86_400_000
BURST_WINDOW_MS = 10_000
SEARCH_WINDOW_MS = 1_000
SEARCH_MAX_LIMIT = 200
SEARCH_RESULT_CAP = 10_000
MAX_FILTER_GROUPS = 5
MAX_FILTERS_PER_GROUP = 6
MAX_FILTERS_TOTAL = 18
LIST_MAX_LIMIT = 100
OAUTH_EXPIRES_IN_S = 1800
PORTAL_ID = 12345678

OBJECT_TYPE_IDS = {"contacts": "0-1", "companies": "0-2"}
SINGULAR = {"contacts": "CONTACT", "companies": "COMPANY"}
LASTMODIFIED = {"contacts": "lastmodifieddate", "companies": "hs_lastmodifieddate"}
#: Always returned, whatever properties were asked for.
ALWAYS_RETURNED = {
    "contacts": ("createdate", "hs_object_id", "lastmodifieddate"),
    "companies": ("createdate", "hs_lastmodifieddate", "hs_object_id"),
}
#: Returned when no properties are asked for (HubSpot's search guide).
DEFAULT_PROPERTIES = {
    "contacts": (
        "createdate",
        "email",
        "firstname",
        "hs_object_id",
        "lastmodifieddate",
        "lastname",
    ),
    "companies": ("createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"),
}
#: Searched by the free-text ``query``.
QUERY_PROPERTIES = {
    "contacts": ("email", "firstname", "lastname", "phone", "company"),
    "companies": ("name", "domain", "website", "phone"),
}
DATE_PROPERTIES = frozenset({"createdate", "lastmodifieddate", "hs_lastmodifieddate"})
SYSTEM_PROPERTIES = frozenset({"hs_object_id", *DATE_PROPERTIES})
OPERATORS = frozenset(
    {
        "EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "NOT_IN",
        "HAS_PROPERTY", "NOT_HAS_PROPERTY", "CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN",
    }
)  # fmt: skip
AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can "
    "find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)
NOT_FOUND_MESSAGE = "Object not found.  objectId are usually numeric."

Rejection = Callable[[str, dict[str, str]], "str | None"]


class FakeClock:
    """A clock in epoch milliseconds that moves only when told to."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self.now = int(start_ms)

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: float) -> int:
        self.now += int(ms)
        return self.now


@dataclass
class Record:
    id: str
    properties: dict[str, str]
    created: int
    updated: int
    archived_at: int | None = None


@dataclass
class Fault:
    remaining: int
    status: int
    path: str | None
    method: str | None
    body: Any
    headers: dict[str, str] | None
    after_apply: bool
    exception: Any

    @staticmethod
    def take(faults: list[Fault], request: httpx.Request) -> Fault | None:
        """The first queued fault that matches ``request``, with one of its uses spent; used-up
        faults leave ``faults`` (changed in place)."""
        fault = next((f for f in faults if f.remaining > 0 and f.matches(request)), None)
        if fault is not None:
            fault.remaining -= 1
            faults[:] = [f for f in faults if f.remaining > 0]
        return fault

    def raise_exception(self, request: httpx.Request) -> None:
        """When the fault is an exception (a dropped connection, a timeout), raise it."""
        if self.exception is None:
            return
        exc = self.exception
        if isinstance(exc, type):
            exc = exc("simulated fault", request=request) if issubclass(exc, httpx.RequestError) else exc("simulated fault")
        raise exc

    def matches(self, request: httpx.Request) -> bool:
        if self.method is not None and request.method.upper() != self.method.upper():
            return False
        if self.path is not None and self.path.endswith("$"):  # "/lists/l1$": that path exactly
            return request.url.path.endswith(self.path[:-1])
        return self.path is None or self.path in request.url.path


class ApiError(Exception):
    """An error answer, raised from deep inside a handler."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("message", ""))
        self.status = status
        self.body = body


def to_ms(value: int | float | datetime) -> int:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return int(value.timestamp() * 1000)
    return int(value)


def iso(ms: int) -> str:
    """HubSpot's timestamp format: UTC, milliseconds, ``Z``."""
    stamp = datetime.fromtimestamp(ms // 1000, tz=timezone.utc)
    return f"{stamp:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def parse_time(value: Any) -> int:
    """A filter value for a date-time property: epoch milliseconds or ISO-8601."""
    text = str(value).strip()
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return to_ms(stamp)


def as_number(value: str) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class FakeHubSpot:
    """HubSpot's CRM v3 objects API for contacts and companies, in memory.

    ``clock`` returns epoch milliseconds (default: a :class:`FakeClock`, reachable as
    ``fake.clock``). ``validator`` is called with every ``/crm/...`` request (or its ``validate``
    method is); an ``AssertionError`` it raises is recorded in ``violations`` and propagates out
    of the transport so the test fails. ``oauth_client=(client_id, client_secret, refresh_token)``
    enables ``POST /oauth/v1/token``.
    """

    def __init__(
        self,
        *,
        token: str = "pat-test-token",
        validator: Any = None,
        clock: Callable[[], int] | None = None,
        daily_limit: int | None = None,
        burst_limit: int | None = None,
        index_lag_ms: int = 0,
        batch_limit: int = 100,
        search_limit: int | None = None,
        oauth_client: tuple[str, str, str] | None = None,
        multi_status: str = "trace_id",
        merge_keeps_primary_id: bool = False,
        burst_policy_name: str = "TEN_SECONDLY_ROLLING",
        unique_properties: dict[str, set[str]] | None = None,
        first_id: int = 1,
        seed: int = 0,
    ) -> None:
        if multi_status not in ("trace_id", "always"):
            raise ValueError("multi_status is 'trace_id' or 'always'")
        self.clock = clock if clock is not None else FakeClock()
        self.validator = validator
        self.daily_limit = daily_limit
        self.burst_limit = burst_limit
        self.search_limit = search_limit
        self.index_lag_ms = index_lag_ms
        self.batch_limit = batch_limit
        self.multi_status = multi_status
        self.merge_keeps_primary_id = merge_keeps_primary_id
        self.burst_policy_name = burst_policy_name
        self.unique_properties = unique_properties or {"contacts": {"email"}, "companies": set()}
        self.seed = seed
        self.oauth_client = oauth_client
        #: Scopes the token-info endpoints report (tests remove some to see ``check`` notice).
        self.scopes = {f"crm.objects.{t}.{a}" for t in OBJECT_TYPE_IDS for a in ("read", "write")}

        self.requests: list[httpx.Request] = []
        self.violations: list[tuple[httpx.Request, str]] = []
        #: Ids of contacts removed by a GDPR delete, in order.
        self.gdpr_deleted: list[str] = []
        #: Lower-cased addresses a GDPR delete by e-mail found no contact for (HubSpot blocks them).
        self.blocklist: set[str] = set()
        self._records: dict[str, dict[str, Record]] = {t: {} for t in OBJECT_TYPE_IDS}
        self._aliases: dict[str, dict[str, str]] = {t: {} for t in OBJECT_TYPE_IDS}
        self._next_id = first_id
        self._tokens: dict[str, int | None] = {token: None}  # token -> expiry (ms) or None
        self._expired: dict[str, int] = {}  # token -> when it stopped working
        self._token_serial = 0
        self._faults: list[Fault] = []
        self._rejections: list[Rejection] = []
        self._burst: deque[int] = deque()
        self._search: deque[int] = deque()
        self._daily_day = -1
        self._daily_used = 0
        self._serial = 0
        self._transport = httpx.MockTransport(self._handle)

    # ------------------------------------------------------------------ test-facing helpers

    @property
    def transport(self) -> httpx.MockTransport:
        return self._transport

    def now(self) -> int:
        return int(self.clock())

    def add(
        self,
        object_type: str,
        properties: dict[str, Any],
        *,
        id: str | int | None = None,
        updated_at: int | datetime | None = None,
        created_at: int | datetime | None = None,
    ) -> str:
        """Put a record in the CRM as if someone had created it there; returns its id."""
        self._check_type(object_type)
        updated = to_ms(updated_at) if updated_at is not None else self.now()
        created = to_ms(created_at) if created_at is not None else updated
        record_id = self._new_id() if id is None else self._claim_id(str(id))
        record = Record(record_id, {}, created, updated)
        self._assign(object_type, record, properties)
        self._records[object_type][record_id] = record
        return record_id

    def update(
        self,
        object_type: str,
        id: str | int,
        properties: dict[str, Any],
        *,
        updated_at: int | datetime | None = None,
    ) -> None:
        """Change a record as if someone had edited it in HubSpot ("" clears a property)."""
        record = self._live(object_type, str(id))
        if record is None:
            raise KeyError(f"no {object_type} {id}")
        self._assign(object_type, record, properties)
        record.updated = to_ms(updated_at) if updated_at is not None else self.now()

    def archive(self, object_type: str, id: str | int, *, at: int | datetime | None = None) -> None:
        """Delete (archive) a record as if someone had deleted it in HubSpot."""
        record = self._live(object_type, str(id))
        if record is None:
            raise KeyError(f"no {object_type} {id}")
        when = to_ms(at) if at is not None else self.now()
        record.archived_at = when
        record.updated = when

    def merge(self, object_type: str, primary_id: str | int, secondary_id: str | int) -> str:
        """Merge two records as HubSpot does; returns the id of the resulting record."""
        self._check_type(object_type)
        primary = self._live(object_type, str(primary_id))
        secondary = self._live(object_type, str(secondary_id))
        if primary is None or secondary is None or primary is secondary:
            raise KeyError(f"cannot merge {object_type} {primary_id} and {secondary_id}")
        return self._merge(object_type, primary, secondary).id

    def get(self, object_type: str, id: str | int) -> dict[str, Any]:
        """The record with every property (an old merged id reaches the merged record)."""
        self._check_type(object_type)
        record = self._find(object_type, str(id), archived=None)
        if record is None:
            raise KeyError(f"no {object_type} {id}")
        return self._render(object_type, record, list(self._all_properties(object_type, record)))

    def all(self, object_type: str, *, archived: bool = False) -> list[dict[str, Any]]:
        """Every live (or, with ``archived=True``, archived) record, in id order."""
        self._check_type(object_type)
        return [
            self.get(object_type, r.id)
            for r in self._ordered_by_id(object_type)
            if (r.archived_at is not None) == archived
        ]

    def fail_next(
        self,
        n: int = 1,
        *,
        status: int = 500,
        path: str | None = None,
        method: str | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        after_apply: bool = False,
        exception: Any = None,
    ) -> None:
        """Make the next ``n`` requests whose path contains ``path`` (and method matches) fail.

        The answer is ``status`` with ``body`` (default: a HubSpot-style error), or ``exception``
        is raised (an ``httpx`` exception class or instance). With ``after_apply=True`` the
        request is processed first, so a write is applied and then reported as failed: the
        "timeout after the server applied the write" fault.
        """
        self._faults.append(Fault(n, status, path, method, body, headers, after_apply, exception))

    def reject_when(self, predicate: Rejection) -> None:
        """Refuse batch/single write inputs for which ``predicate(object_type, properties)``
        returns a message (a HubSpot ``VALIDATION_ERROR``)."""
        self._rejections.append(predicate)

    def expire_token(self, token: str | None = None) -> None:
        """Make ``token`` (default: the newest valid token) stop working, as on expiry."""
        if token is None:
            token = next(reversed(self._tokens), None)
        if token is not None and token in self._tokens:
            del self._tokens[token]
            self._expired[token] = self.now()

    @property
    def tokens(self) -> list[str]:
        """The access tokens that work now."""
        now = self.now()
        return [t for t, exp in self._tokens.items() if exp is None or exp > now]

    def calls(self, method: str | None = None, path_contains: str | None = None) -> int:
        return sum(
            1
            for r in self.requests
            if (method is None or r.method.upper() == method.upper())
            and (path_contains is None or path_contains in r.url.path)
        )

    # ------------------------------------------------------------------ transport

    def _handle(self, request: httpx.Request) -> httpx.Response:
        request.read()
        if request.url.path.startswith("/crm/") and self.validator is not None:
            check = getattr(self.validator, "validate", self.validator)
            try:
                check(request)
            except AssertionError as exc:
                self.violations.append((request, str(exc)))
                raise
        self.requests.append(request)

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
        body = fault.body
        if body is None:
            body = self._error("internal error", category=None)
        headers = {"Content-Type": "application/json;charset=utf-8", **(fault.headers or {})}
        content = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return httpx.Response(fault.status, headers=headers, content=content)

    def _dispatch(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/oauth/v1/token":
            return self._oauth(request)
        if request.url.path.startswith("/oauth/v1/access-tokens/"):
            return self._token_info(request.url.path.rsplit("/", 1)[1])
        if request.url.path == "/oauth/v2/private-apps/get/access-token-info" and request.method == "POST":
            return self._token_info(str(self._body(request).get("tokenKey", "")))
        refused = self._authenticate(request)
        if refused is not None:
            return refused
        is_search = request.method == "POST" and request.url.path.endswith("/search")
        limited, headers = self._count_request(is_search)
        if limited is not None:
            return limited
        try:
            status, body = self._route(request)
        except ApiError as err:
            status, body = err.status, err.body
        return self._json(status, body, headers)

    def _json(
        self, status: int, body: Any, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        headers = dict(headers or {})
        if body is None:
            return httpx.Response(status, headers=headers)
        headers["Content-Type"] = "application/json;charset=utf-8"
        return httpx.Response(status, headers=headers, content=json.dumps(body))

    def _correlation_id(self) -> str:
        self._serial += 1
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake-hubspot/{self.seed}/{self._serial}"))

    def _error(self, message: str, category: str | None = "VALIDATION_ERROR", **extra: Any) -> dict:
        body: dict[str, Any] = {"status": "error", "message": message}
        body["correlationId"] = self._correlation_id()
        body.update(extra)
        if category is not None:
            body["category"] = category
        return body

    # ------------------------------------------------------------------ auth

    def _authenticate(self, request: httpx.Request) -> httpx.Response | None:
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else None
        now = self.now()
        if token is not None and token in self._tokens:
            expiry = self._tokens[token]
            if expiry is None or expiry > now:
                return None
            del self._tokens[token]
            self._expired[token] = expiry
        if token is not None and token in self._expired:
            ago = max(1, (now - self._expired[token]) // 1000)
            message = f"The OAuth token used to make this call expired {ago} second(s) ago."
            return self._json(401, self._error(message, "EXPIRED_AUTHENTICATION"))
        return self._json(401, self._error(AUTH_MESSAGE, "INVALID_AUTHENTICATION"))

    def _token_info(self, token: str) -> httpx.Response:
        """Token metadata with its scopes: ``GET /oauth/v1/access-tokens/{token}`` (OAuth) and
        ``POST /oauth/v2/private-apps/get/access-token-info`` (private apps)."""
        if token not in self.tokens:
            return self._json(404, self._error("token not found", "OBJECT_NOT_FOUND"))
        return self._json(200, {"hub_id": PORTAL_ID, "hubId": PORTAL_ID, "scopes": sorted(self.scopes),
                                "token_type": "access"})

    def _oauth(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        if request.method != "POST" or self.oauth_client is None:
            return self._json(404, {"status": "error", "message": "not found"})
        client_id, client_secret, refresh_token = self.oauth_client
        checks = (
            (form.get("grant_type") == "refresh_token", "BAD_GRANT_TYPE", "unsupported grant"),
            (form.get("client_id") == client_id, "BAD_CLIENT_ID", "missing or unknown client id"),
            (form.get("client_secret") == client_secret, "BAD_CLIENT_SECRET", "bad client secret"),
            (
                form.get("refresh_token") == refresh_token,
                "BAD_REFRESH_TOKEN",
                "missing or unknown refresh token",
            ),
        )
        for ok, status, message in checks:
            if not ok:
                body = {"status": status, "message": message}
                body["correlationId"] = self._correlation_id()
                return self._json(400, body)
        self._token_serial += 1
        access = f"oauth-access-{self._token_serial}"
        self._tokens[access] = self.now() + OAUTH_EXPIRES_IN_S * 1000
        body = {
            "token_type": "bearer",
            "refresh_token": refresh_token,
            "access_token": access,
            "expires_in": OAUTH_EXPIRES_IN_S,
        }
        return self._json(200, body)

    # ------------------------------------------------------------------ rate limits

    def _count_request(self, is_search: bool) -> tuple[httpx.Response | None, dict[str, str]]:
        now = self.now()
        day = now // DAY_MS
        if day != self._daily_day:
            self._daily_day, self._daily_used = day, 0
        while self._burst and self._burst[0] <= now - BURST_WINDOW_MS:
            self._burst.popleft()
        while self._search and self._search[0] <= now - SEARCH_WINDOW_MS:
            self._search.popleft()

        if self.daily_limit is not None and self._daily_used >= self.daily_limit:
            body = self._rate_error("You have reached your daily limit.", "DAILY")
            headers = {} if is_search else self._rate_headers(0)
            return self._json(429, body, headers), headers
        if is_search:
            if self.search_limit is not None and len(self._search) >= self.search_limit:
                body = self._error("You have reached your secondly limit.", "RATE_LIMITS")
                return self._json(429, body), {}
            self._search.append(now)
            self._daily_used += 1
            return None, {}
        burst_max = self.burst_limit if self.burst_limit is not None else 100
        if self.burst_limit is not None and len(self._burst) >= self.burst_limit:
            policy = self.burst_policy_name
            body = self._rate_error(f"You have reached your {policy.lower()} limit.", policy)
            headers = self._rate_headers(0)
            return self._json(429, body, headers), headers
        self._burst.append(now)
        self._daily_used += 1
        return None, self._rate_headers(max(0, burst_max - len(self._burst)))

    def _rate_headers(self, remaining: int) -> dict[str, str]:
        headers = {
            "X-HubSpot-RateLimit-Max": str(self.burst_limit or 100),
            "X-HubSpot-RateLimit-Remaining": str(remaining),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(BURST_WINDOW_MS),
        }
        if self.daily_limit is not None:
            headers["X-HubSpot-RateLimit-Daily"] = str(self.daily_limit)
            left = max(0, self.daily_limit - self._daily_used)
            headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(left)
        return headers

    def _rate_error(self, message: str, policy: str) -> dict[str, Any]:
        return {
            "status": "error",
            "message": message,
            "errorType": "RATE_LIMIT",
            "correlationId": self._correlation_id(),
            "policyName": policy,
            "requestId": self._correlation_id(),
        }

    # ------------------------------------------------------------------ routing

    def _route(self, request: httpx.Request) -> tuple[int, Any]:
        match = re.fullmatch(r"/crm/v3/objects/([^/]+)(?:/(.+))?", request.url.path)
        if match is None:
            raise ApiError(404, self._error("resource not found", None))
        object_type, rest = match.group(1), match.group(2)
        if object_type not in OBJECT_TYPE_IDS:
            raise ApiError(400, self._error(f"Unable to infer object type from: {object_type}"))
        method = request.method
        query = request.url.params
        if rest is None:
            if method == "GET":
                return self._list(object_type, query)
            if method == "POST":
                return self._create_one(object_type, self._body(request))
        elif rest == "search" and method == "POST":
            return self._do_search(object_type, self._body(request))
        elif rest == "merge" and method == "POST":
            return self._merge_endpoint(object_type, self._body(request))
        elif rest == "gdpr-delete" and method == "POST" and object_type == "contacts":
            return self._gdpr_delete(object_type, self._body(request))
        elif rest.startswith("batch/") and method == "POST":
            operation = rest[len("batch/") :]
            handler = {
                "create": self._batch_create,
                "update": self._batch_update,
                "upsert": self._batch_upsert,
                "read": self._batch_read,
                "archive": self._batch_archive,
            }.get(operation)
            if handler is not None:
                return handler(object_type, self._batch_inputs(request), query)
        elif "/" not in rest:
            if method == "GET":
                return self._get_one(object_type, rest, query)
            if method == "PATCH":
                return self._patch_one(object_type, rest, self._body(request), query)
            if method == "DELETE":
                record = self._find(object_type, rest)
                if record is not None:
                    self.archive(object_type, record.id)
                return 204, None
        raise ApiError(405 if rest else 404, self._error("resource not found", None))

    def _body(self, request: httpx.Request) -> dict[str, Any]:
        try:
            body = json.loads(request.content or b"{}")
        except ValueError as exc:
            raise ApiError(400, self._error(f"Invalid input JSON: {exc}")) from None
        if not isinstance(body, dict):
            raise ApiError(400, self._error("Invalid input JSON: expected an object"))
        return body

    def _batch_inputs(self, request: httpx.Request) -> dict[str, Any]:
        body = self._body(request)
        inputs = body.get("inputs")
        if not isinstance(inputs, list):
            raise ApiError(400, self._error("Invalid input JSON: inputs must be an array"))
        if len(inputs) > self.batch_limit:
            message = f"Too many inputs: {len(inputs)}. The maximum is {self.batch_limit}."
            raise ApiError(400, self._error(message))
        return body

    # ------------------------------------------------------------------ records

    def _check_type(self, object_type: str) -> None:
        if object_type not in OBJECT_TYPE_IDS:
            raise ValueError(f"unknown object type {object_type!r}")

    def _new_id(self) -> str:
        record_id = str(self._next_id)
        self._next_id += 1
        return record_id

    def _claim_id(self, record_id: str) -> str:
        if record_id.isdigit():
            self._next_id = max(self._next_id, int(record_id) + 1)
        return record_id

    def _assign(self, object_type: str, record: Record, properties: dict[str, Any]) -> None:
        for name, value in properties.items():
            if name in SYSTEM_PROPERTIES:
                continue
            if value is None or value == "":
                record.properties.pop(name, None)
                continue
            text = ("true" if value else "false") if isinstance(value, bool) else str(value)
            if object_type == "contacts" and name == "email":
                text = text.strip().lower()
            record.properties[name] = text

    def _live(self, object_type: str, record_id: str) -> Record | None:
        return self._find(object_type, record_id, archived=False)

    def _find(
        self,
        object_type: str,
        key: str,
        *,
        id_property: str | None = None,
        archived: bool | None = False,
    ) -> Record | None:
        """A record by id (following merges) or by a unique property; ``archived=None``: any."""
        if id_property and id_property != "hs_object_id":
            candidates = [
                r
                for r in self._records[object_type].values()
                if self._has_value(object_type, r, id_property, key)
            ]
        else:
            target = self._aliases[object_type].get(key, key)
            record = self._records[object_type].get(target)
            candidates = [record] if record is not None else []
        for record in candidates:
            if archived is None or (record.archived_at is not None) == archived:
                return record
        return None

    def _has_value(self, object_type: str, record: Record, name: str, value: str) -> bool:
        if object_type == "contacts" and name == "email":
            wanted = value.strip().lower()
            others = record.properties.get("hs_additional_emails", "").split(";")
            return record.properties.get("email") == wanted or wanted in others
        return record.properties.get(name) == value

    def _ordered_by_id(self, object_type: str) -> list[Record]:
        return sorted(self._records[object_type].values(), key=lambda r: self._id_key(r.id))

    @staticmethod
    def _id_key(record_id: str) -> tuple[int, str]:
        return (int(record_id), "") if record_id.isdigit() else (1 << 62, record_id)

    def _tie_key(self, record_id: str) -> str:
        return hashlib.sha256(f"{self.seed}:{record_id}".encode()).hexdigest()

    def _all_properties(self, object_type: str, record: Record) -> dict[str, str]:
        values = dict(record.properties)
        values["hs_object_id"] = record.id
        values["createdate"] = iso(record.created)
        values[LASTMODIFIED[object_type]] = iso(record.updated)
        return values

    def _render(
        self, object_type: str, record: Record, requested: list[str] | None
    ) -> dict[str, Any]:
        values = self._all_properties(object_type, record)
        if requested:
            names = list(dict.fromkeys([*requested, *ALWAYS_RETURNED[object_type]]))
        else:
            names = list(DEFAULT_PROPERTIES[object_type])
        out: dict[str, Any] = {
            "id": record.id,
            "properties": {name: values.get(name) for name in sorted(names)},
            "createdAt": iso(record.created),
            "updatedAt": iso(record.updated),
            "archived": record.archived_at is not None,
        }
        if record.archived_at is not None:
            out["archivedAt"] = iso(record.archived_at)
        return out

    def _shuffled(self, items: list[tuple[str, Any]]) -> list[Any]:
        """Batch results in a stable order that is not the input order."""
        return [item for _, item in sorted(items, key=lambda pair: self._tie_key(pair[0]))]

    # ------------------------------------------------------------------ reads

    @staticmethod
    def _property_list(query: httpx.QueryParams) -> list[str]:
        names: list[str] = []
        for value in query.get_list("properties"):
            names.extend(p.strip() for p in value.split(",") if p.strip())
        return names

    def _list(self, object_type: str, query: httpx.QueryParams) -> tuple[int, Any]:
        try:
            limit = int(query.get("limit", 10))
        except ValueError:
            raise ApiError(400, self._error("limit must be an integer")) from None
        if limit > LIST_MAX_LIMIT or limit < 1:
            message = f"limit must be between 1 and {LIST_MAX_LIMIT}, got {limit}"
            raise ApiError(400, self._error(message))
        archived = query.get("archived", "false").lower() == "true"
        after = query.get("after")
        records = [
            r
            for r in self._ordered_by_id(object_type)
            if (r.archived_at is not None) == archived
            and (after is None or self._id_key(r.id) >= self._id_key(after))
        ]
        page, rest = records[:limit], records[limit:]
        body: dict[str, Any] = {
            "results": [self._render(object_type, r, self._property_list(query)) for r in page]
        }
        if rest:
            nxt = rest[0].id
            link = f"{BASE_URL}/crm/v3/objects/{object_type}?limit={limit}&after={nxt}"
            if archived:
                link += "&archived=true"
            body["paging"] = {"next": {"after": nxt, "link": link}}
        return 200, body

    def _get_one(self, object_type: str, key: str, query: httpx.QueryParams) -> tuple[int, Any]:
        id_property = self._id_property(object_type, query.get("idProperty"), read=True)
        archived = query.get("archived", "false").lower() == "true"
        record = self._find(object_type, key, id_property=id_property, archived=archived)
        if record is None:
            raise ApiError(
                404, self._error(NOT_FOUND_MESSAGE, "OBJECT_NOT_FOUND", context={"id": [key]})
            )
        return 200, self._render(object_type, record, self._property_list(query))

    def _batch_read(
        self, object_type: str, body: dict[str, Any], query: httpx.QueryParams
    ) -> tuple[int, Any]:
        started = self.now()
        id_property = self._id_property(object_type, body.get("idProperty"), read=True)
        archived = query.get("archived", "false").lower() == "true"
        requested = body.get("properties") or []
        found: list[tuple[str, Any]] = []
        missing: list[str] = []
        for item in body["inputs"]:
            key = str(item.get("id", ""))
            record = self._find(object_type, key, id_property=id_property, archived=archived)
            if record is None:
                missing.append(key)
            else:
                found.append((record.id, self._render(object_type, record, requested)))
        errors = []
        if missing:
            errors.append(self._not_found_error(object_type, missing))
        return self._batch_answer(200, self._shuffled(found), errors, started)

    def _not_found_error(
        self, object_type: str, ids: list[str], trace: str | None = None
    ) -> dict[str, Any]:
        context: dict[str, list[str]] = {"ids": ids}
        if trace is not None:
            context["objectWriteTraceId"] = [trace]
        return {
            "status": "error",
            "category": "OBJECT_NOT_FOUND",
            "message": f"Could not get some {SINGULAR[object_type]} objects, they may be deleted "
            "or not exist. Check that ids are valid.",
            "context": context,
        }

    def _batch_answer(
        self, ok_status: int, results: list[Any], errors: list[dict], started: int
    ) -> tuple[int, Any]:
        body: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if errors:
            body["numErrors"] = len(errors)
            body["errors"] = errors
        body["startedAt"] = iso(started)
        body["completedAt"] = iso(self.now())
        return (207 if errors else ok_status), body

    # ------------------------------------------------------------------ search

    def _do_search(self, object_type: str, body: dict[str, Any]) -> tuple[int, Any]:
        try:
            limit = int(body.get("limit", 10))
            after = int(body.get("after") or 0)
        except (TypeError, ValueError):
            raise ApiError(400, self._error("limit and after must be integers")) from None
        if limit > SEARCH_MAX_LIMIT:
            message = f"limit must be less than or equal to {SEARCH_MAX_LIMIT}, got {limit}"
            raise ApiError(400, self._error(message))
        limit = max(limit, 1)
        groups = body.get("filterGroups") or []
        self._check_filter_groups(groups)
        if after + limit > SEARCH_RESULT_CAP:
            message = (
                f"The search endpoints are limited to {SEARCH_RESULT_CAP} total results for any "
                f"given query: after ({after}) + limit ({limit}) is past result "
                f"{SEARCH_RESULT_CAP}."
            )
            raise ApiError(400, self._error(message))

        visible_until = self.now() - self.index_lag_ms
        query_text = str(body.get("query") or "").strip().lower()
        matched = [
            r
            for r in self._records[object_type].values()
            if r.archived_at is None
            and (self.index_lag_ms <= 0 or r.updated <= visible_until)
            and (not groups or any(self._group_matches(object_type, r, g) for g in groups))
            and (not query_text or self._query_matches(object_type, r, query_text))
        ]
        ordered = self._sort(object_type, matched, body.get("sorts") or [])
        page = ordered[after : after + limit]
        result: dict[str, Any] = {
            "total": len(matched),
            "results": [self._render(object_type, r, body.get("properties")) for r in page],
        }
        if after + limit < len(matched):
            result["paging"] = {"next": {"after": str(after + limit)}}
        return 200, result

    def _check_filter_groups(self, groups: Any) -> None:
        if not isinstance(groups, list):
            raise ApiError(400, self._error("filterGroups must be an array"))
        if len(groups) > MAX_FILTER_GROUPS:
            message = f"Too many filter groups ({len(groups)}). The maximum is {MAX_FILTER_GROUPS}."
            raise ApiError(400, self._error(message))
        total = 0
        for group in groups:
            filters = group.get("filters") if isinstance(group, dict) else None
            if not isinstance(filters, list):
                raise ApiError(400, self._error("each filter group needs a filters array"))
            if len(filters) > MAX_FILTERS_PER_GROUP:
                message = (
                    f"Too many filters in a filter group ({len(filters)}). "
                    f"The maximum is {MAX_FILTERS_PER_GROUP}."
                )
                raise ApiError(400, self._error(message))
            total += len(filters)
            for item in filters:
                if not isinstance(item, dict) or not item.get("propertyName"):
                    raise ApiError(400, self._error("a filter needs a propertyName"))
                if item.get("operator") not in OPERATORS:
                    message = f"Unknown filter operator: {item.get('operator')!r}"
                    raise ApiError(400, self._error(message))
        if total > MAX_FILTERS_TOTAL:
            message = f"Too many filters ({total}). The maximum is {MAX_FILTERS_TOTAL}."
            raise ApiError(400, self._error(message))

    def _group_matches(self, object_type: str, record: Record, group: dict[str, Any]) -> bool:
        return all(self._filter_matches(object_type, record, f) for f in group["filters"])

    def _query_matches(self, object_type: str, record: Record, text: str) -> bool:
        return any(
            text in record.properties.get(name, "").lower()
            for name in QUERY_PROPERTIES[object_type]
        )

    def _comparable(self, name: str, value: Any) -> tuple[int, Any]:
        """A sort/compare key: dates and ids as numbers, numbers as numbers, else folded text."""
        if name in DATE_PROPERTIES:
            try:
                return (0, parse_time(value))
            except ValueError:
                message = f"{value!r} is not a valid date-time value for {name}"
                raise ApiError(400, self._error(message)) from None
        number = as_number(value)
        if number is not None:
            return (0, number)
        return (1, str(value).casefold())

    def _filter_matches(self, object_type: str, record: Record, spec: dict[str, Any]) -> bool:
        name, operator = spec["propertyName"], spec["operator"]
        actual = self._all_properties(object_type, record).get(name)
        present = actual not in (None, "")
        if operator == "HAS_PROPERTY":
            return present
        if operator == "NOT_HAS_PROPERTY":
            return not present
        if operator in ("IN", "NOT_IN"):
            values = spec.get("values") or []
            hit = present and any(
                self._comparable(name, actual) == self._comparable(name, v) for v in values
            )
            return hit if operator == "IN" else not hit
        if operator in ("CONTAINS_TOKEN", "NOT_CONTAINS_TOKEN"):
            pattern = re.escape(str(spec.get("value", "")).lower()).replace(r"\*", ".*")
            tokens = [actual.lower(), *re.split(r"[^0-9a-z]+", actual.lower())] if present else []
            hit = any(re.fullmatch(pattern, token) for token in tokens)
            return hit if operator == "CONTAINS_TOKEN" else not hit
        if operator == "BETWEEN":
            low = self._comparable(name, spec.get("value"))
            high = self._comparable(name, spec.get("highValue"))
            return present and low <= self._comparable(name, actual) <= high
        wanted = self._comparable(name, spec.get("value"))
        if operator == "NEQ":
            return not present or self._comparable(name, actual) != wanted
        if not present:
            return False
        have = self._comparable(name, actual)
        if have[0] != wanted[0]:  # a number against text: compare as text
            have, wanted = (1, str(actual).casefold()), (1, str(spec.get("value")).casefold())
        return {
            "EQ": have == wanted,
            "LT": have < wanted,
            "LTE": have <= wanted,
            "GT": have > wanted,
            "GTE": have >= wanted,
        }[operator]

    def _sort(self, object_type: str, records: list[Record], sorts: list[Any]) -> list[Record]:
        ordered = sorted(records, key=lambda r: self._tie_key(r.id))
        first = sorts[0] if sorts else None
        if not isinstance(first, dict) or not first.get("propertyName"):
            return ordered  # HubSpot ignores sorts given as strings
        name = first["propertyName"]
        descending = str(first.get("direction", "ASCENDING")).upper() == "DESCENDING"

        def value(record: Record) -> str | None:
            return self._all_properties(object_type, record).get(name)

        present = [r for r in ordered if value(r) not in (None, "")]
        missing = [r for r in ordered if value(r) in (None, "")]
        present.sort(key=lambda r: self._comparable(name, value(r)), reverse=descending)
        return present + missing

    # ------------------------------------------------------------------ writes

    def _id_property(self, object_type: str, name: str | None, *, read: bool = False) -> str | None:
        if not name or (name == "hs_object_id" and read):
            return None
        if name not in self.unique_properties.get(object_type, set()):
            message = (
                f"Unable to perform update/upsert by non-unique {OBJECT_TYPE_IDS[object_type]} "
                f"property {name} in portal ID {PORTAL_ID}"
            )
            raise ApiError(400, self._error(message))
        return name

    def _rejection(self, object_type: str, properties: dict[str, Any]) -> dict[str, Any] | None:
        """The validation error for these input properties, if any."""
        values = {k: "" if v is None else str(v) for k, v in properties.items()}
        for predicate in self._rejections:
            message = predicate(object_type, values)
            if message:
                detail = [{"isValid": False, "message": message, "error": "INVALID_VALUE"}]
                text = "Property values were not valid: " + json.dumps(
                    detail, separators=(",", ":")
                )
                return {"status": "error", "category": "VALIDATION_ERROR", "message": text}
        return None

    def _conflict(
        self, object_type: str, properties: dict[str, Any], own: Record | None
    ) -> dict[str, Any] | None:
        """A contact e-mail that another live contact already has."""
        email = properties.get("email")
        if object_type != "contacts" or not email:
            return None
        other = self._find(object_type, str(email), id_property="email")
        if other is None or other is own:
            return None
        return {
            "status": "error",
            "category": "CONFLICT",
            "message": f"Contact already exists. Existing ID: {other.id}",
            "context": {"existingId": [other.id]},
        }

    def _write_batch(
        self,
        object_type: str,
        inputs: list[dict[str, Any]],
        apply: Callable[[dict[str, Any]], tuple[str, Any] | dict[str, Any]],
        ok_status: int,
    ) -> tuple[int, Any]:
        """Run ``apply`` on every input, all-or-nothing unless multi-status is on.

        ``apply`` returns ``(id, result)`` or an error dict; an error marked ``"_partial"`` fails
        only its own input even without multi-status (unknown ids in an update).
        """
        started = self.now()
        traced = self.multi_status == "always" or (
            bool(inputs) and all(item.get("objectWriteTraceId") for item in inputs)
        )
        snapshot = self._snapshot() if not traced else None
        results: list[tuple[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for item in inputs:
            outcome = apply(item)
            if isinstance(outcome, tuple):
                results.append(outcome)
                continue
            partial = outcome.pop("_partial", False)
            trace = item.get("objectWriteTraceId")
            if trace:
                outcome.setdefault("context", {})["objectWriteTraceId"] = [str(trace)]
            if not traced and not partial:
                assert snapshot is not None
                self._restore(snapshot)
                status = 409 if outcome["category"] == "CONFLICT" else 400
                whole = self._error(outcome["message"], outcome["category"])
                raise ApiError(status, whole)
            errors.append(outcome)
        return self._batch_answer(
            ok_status, self._shuffled(results), self._grouped(errors), started
        )

    def _grouped(self, errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Unknown ids without a trace id are reported together, in one error."""
        untraced = [
            e
            for e in errors
            if e["category"] == "OBJECT_NOT_FOUND" and "objectWriteTraceId" not in e["context"]
        ]
        if len(untraced) < 2:
            return errors
        ids = [i for e in untraced for i in e["context"]["ids"]]
        others = [e for e in errors if e not in untraced]
        first = untraced[0]
        first["context"]["ids"] = ids
        return [first, *others]

    def _snapshot(self) -> Any:
        copy = {
            t: {
                i: Record(r.id, dict(r.properties), r.created, r.updated, r.archived_at)
                for i, r in recs.items()
            }
            for t, recs in self._records.items()
        }
        return copy, self._next_id

    def _restore(self, snapshot: Any) -> None:
        self._records, self._next_id = snapshot

    def _result(self, object_type: str, record: Record, item: dict[str, Any]) -> dict[str, Any]:
        out = self._render(object_type, record, list(item.get("properties") or {}))
        if item.get("objectWriteTraceId"):
            out["objectWriteTraceId"] = str(item["objectWriteTraceId"])
        return out

    def _create(self, object_type: str, item: dict[str, Any]) -> tuple[str, Any] | dict[str, Any]:
        properties = item.get("properties") or {}
        problem = self._rejection(object_type, properties) or self._conflict(
            object_type, properties, None
        )
        if problem is not None:
            return problem
        now = self.now()
        record = Record(self._new_id(), {}, now, now)
        self._assign(object_type, record, properties)
        self._records[object_type][record.id] = record
        return record.id, self._result(object_type, record, item)

    def _update(
        self, object_type: str, item: dict[str, Any], *, upsert: bool = False
    ) -> tuple[str, Any] | dict[str, Any]:
        properties = dict(item.get("properties") or {})
        key = str(item.get("id", ""))
        id_property = self._id_property(object_type, item.get("idProperty"))
        record = self._find(object_type, key, id_property=id_property)
        if record is None and not upsert:
            error = self._not_found_error(object_type, [key])
            error["_partial"] = True
            return error
        problem = self._rejection(object_type, properties) or self._conflict(
            object_type, properties, record
        )
        if problem is not None:
            return problem
        now = self.now()
        created = record is None
        if record is None:
            assert id_property is not None
            properties.setdefault(id_property, key)
            record = Record(self._new_id(), {}, now, now)
            self._records[object_type][record.id] = record
        self._assign(object_type, record, properties)
        record.updated = now
        result = self._result(object_type, record, item)
        if upsert:
            result["new"] = created
        return record.id, result

    def _batch_create(
        self, object_type: str, body: dict[str, Any], query: httpx.QueryParams
    ) -> tuple[int, Any]:
        return self._write_batch(
            object_type, body["inputs"], lambda item: self._create(object_type, item), 201
        )

    def _batch_update(
        self, object_type: str, body: dict[str, Any], query: httpx.QueryParams
    ) -> tuple[int, Any]:
        for item in body["inputs"]:
            self._id_property(object_type, item.get("idProperty"))
        self._check_duplicates(body["inputs"])
        return self._write_batch(
            object_type, body["inputs"], lambda item: self._update(object_type, item), 200
        )

    def _batch_upsert(
        self, object_type: str, body: dict[str, Any], query: httpx.QueryParams
    ) -> tuple[int, Any]:
        inputs = body["inputs"]
        for item in inputs:
            if not item.get("idProperty"):
                raise ApiError(400, self._error("idProperty is required for each upsert input"))
            self._id_property(object_type, item["idProperty"])
        self._check_duplicates(inputs)
        return self._write_batch(
            object_type, inputs, lambda item: self._update(object_type, item, upsert=True), 200
        )

    def _batch_archive(
        self, object_type: str, body: dict[str, Any], query: httpx.QueryParams
    ) -> tuple[int, Any]:
        for item in body["inputs"]:
            record = self._live(object_type, str(item.get("id", "")))
            if record is not None:
                self.archive(object_type, record.id)
        return 204, None

    def _check_duplicates(self, inputs: list[dict[str, Any]]) -> None:
        seen: set[str] = set()
        dupes: list[str] = []
        for item in inputs:
            key = str(item.get("id", "")).lower()
            if key in seen:
                dupes.append(str(item.get("id")))
            seen.add(key)
        if dupes:
            message = f"Duplicate IDs found in batch input: {dupes}. IDs must be unique"
            raise ApiError(400, self._error(message))

    def _create_one(self, object_type: str, body: dict[str, Any]) -> tuple[int, Any]:
        outcome = self._create(object_type, body)
        if isinstance(outcome, dict):
            raise ApiError(
                409 if outcome["category"] == "CONFLICT" else 400,
                self._error(outcome["message"], outcome["category"]),
            )
        return 201, outcome[1]

    def _patch_one(
        self, object_type: str, key: str, body: dict[str, Any], query: httpx.QueryParams
    ) -> tuple[int, Any]:
        item = {"id": key, "properties": body.get("properties") or {}}
        if query.get("idProperty"):
            item["idProperty"] = query["idProperty"]
        outcome = self._update(object_type, item)
        if isinstance(outcome, dict):
            if outcome.pop("_partial", False):
                raise ApiError(
                    404, self._error(NOT_FOUND_MESSAGE, "OBJECT_NOT_FOUND", context={"id": [key]})
                )
            raise ApiError(
                409 if outcome["category"] == "CONFLICT" else 400,
                self._error(outcome["message"], outcome["category"]),
            )
        return 200, outcome[1]

    # ------------------------------------------------------------------ GDPR delete

    def _gdpr_delete(self, object_type: str, body: dict[str, Any]) -> tuple[int, Any]:
        key = body.get("objectId")
        if not isinstance(key, str) or not key.strip():
            raise ApiError(400, self._error("Invalid input JSON: objectId is required"))
        id_property = self._id_property(object_type, body.get("idProperty"), read=True)
        record = self._find(object_type, key, id_property=id_property, archived=None)
        if record is None:
            if id_property == "email":
                self.blocklist.add(key.strip().lower())
                return 204, None
            raise ApiError(
                404, self._error(NOT_FOUND_MESSAGE, "OBJECT_NOT_FOUND", context={"id": [key]})
            )
        del self._records[object_type][record.id]
        aliases = self._aliases[object_type]
        for old, target in list(aliases.items()):
            if target == record.id:
                del aliases[old]
        self.gdpr_deleted.append(record.id)
        return 204, None

    # ------------------------------------------------------------------ merge

    def _merge_endpoint(self, object_type: str, body: dict[str, Any]) -> tuple[int, Any]:
        primary = self._live(object_type, str(body.get("primaryObjectId", "")))
        secondary = self._live(object_type, str(body.get("objectIdToMerge", "")))
        if primary is None or secondary is None:
            missing = [
                str(body.get(k, ""))
                for k, r in (("primaryObjectId", primary), ("objectIdToMerge", secondary))
                if r is None
            ]
            raise ApiError(
                404, self._error(NOT_FOUND_MESSAGE, "OBJECT_NOT_FOUND", context={"id": missing})
            )
        if primary is secondary:
            raise ApiError(400, self._error("Cannot merge an object with itself"))
        merged = self._merge(object_type, primary, secondary)
        return 200, self._render(object_type, merged, None)

    def _merge(self, object_type: str, primary: Record, secondary: Record) -> Record:
        now = self.now()
        values = {**secondary.properties, **primary.properties}
        if object_type == "contacts":
            extra = [
                e
                for e in [
                    *primary.properties.get("hs_additional_emails", "").split(";"),
                    secondary.properties.get("email", ""),
                    *secondary.properties.get("hs_additional_emails", "").split(";"),
                ]
                if e and e != values.get("email")
            ]
            if extra:
                values["hs_additional_emails"] = ";".join(dict.fromkeys(extra))
        earlier = [
            i
            for r in (primary, secondary)
            for i in r.properties.get("hs_merged_object_ids", "").split(";")
            if i
        ]
        records = self._records[object_type]
        aliases = self._aliases[object_type]
        if self.merge_keeps_primary_id:
            result = primary
            gone = [secondary.id]
            merged_ids = [*earlier, secondary.id]
        else:
            result = Record(self._new_id(), {}, min(primary.created, secondary.created), now)
            gone = [primary.id, secondary.id]
            merged_ids = [*earlier, primary.id, secondary.id]
            records[result.id] = result
        for old in gone:
            records.pop(old, None)
            aliases[old] = result.id
        for old, target in list(aliases.items()):
            if target in gone:
                aliases[old] = result.id
        values["hs_merged_object_ids"] = ";".join(dict.fromkeys(merged_ids))
        result.properties = values
        result.created = min(primary.created, secondary.created)
        result.updated = now
        return result
