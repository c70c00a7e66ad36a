"""A stateful fake of Mailchimp's Marketing API 3.0 (audiences and members), served as an ``httpx``
transport for tests.

::

    fake = FakeMailchimp(api_key="0123456789abcdef0123456789abcdef-us6")
    fake.add_list("list1", "Newsletter")
    fake.add_member("list1", "ann@example.com", merge_fields={"FNAME": "Ann"})
    client = httpx.Client(transport=fake.transport, base_url="https://us6.api.mailchimp.com/3.0",
                          auth=httpx.BasicAuth("synchub", fake.api_key))
    client.get("/lists/list1/members", params={"count": 1000, "since_last_changed": "..."})

Field names and shapes follow the Marketing API's OpenAPI description (3.0.81, ``List_Members``)
plus the member fields the live API has added since (``contact_id``, ``full_name``, ``web_id``,
``source``). Error texts that connectors see in the field ("Member In Compliance State",
"Forgotten Email Not Subscribed", ...) are Mailchimp's own. Where a detail is not documented, the
choice made here is the stricter one, and is said so below ("undocumented").

Auth, hosts and errors
    HTTP Basic with any user name and the API key as password; the host must be
    ``<dc>.api.mailchimp.com`` with the key's data centre (``-us6``) and every path is under
    ``/3.0``. Anything else is a 401 "API Key Invalid". Every error is a problem-detail document
    (``type``, ``title``, ``status``, ``detail``, ``instance``) sent as
    ``application/problem+json``; validation errors add ``errors: [{field, message}]``. Unknown
    routes get 404 "Resource Not Found"; a known path with a method the fake does not serve gets
    405 "Method Not Allowed" with an ``Allow`` header.

Concurrency
    Mailchimp allows 10 simultaneous connections per key. The fake counts requests in flight;
    one that would exceed ``max_concurrent`` is refused at once with a *bare* 429 (empty body,
    ``text/html``), which is what connectors must treat as "slow down". ``max_in_flight`` records
    the most requests seen at once, the refused one included (so a connector that overshoots
    shows 11). With ``latency`` > 0 each accepted request sleeps that many real seconds while it
    counts, so concurrent clients really overlap. ``throttle_next`` queues bare 429/403 answers.

Members (``/lists/{list_id}/members[/{subscriber_hash}]``)
    * ``{subscriber_hash}`` may be the MD5 of the lower-cased e-mail, the e-mail itself, or the
      member's ``contact_id``. The e-mail is stored as given; its MD5 is its ``id``.
      Undocumented, stricter: the MD5 must be lower-case hex (an upper-case one finds nobody).
    * PUT needs ``email_address`` and ``status_if_new``; a new member gets ``status`` if given,
      else ``status_if_new``; an existing one keeps its status unless ``status`` is given. A body
      e-mail different from the member found at the hash changes the member's address (new
      ``id`` and ``unique_email_id``; ``contact_id`` and ``web_id`` stay). Undocumented,
      stricter: a PUT whose hash finds nobody and is neither the body e-mail nor its MD5 is
      refused (400) instead of creating a member under a wrong hash.
    * Compliance: "subscribed" is refused ("Member In Compliance State") for a member that is
      unsubscribed or cleaned; "pending" (a new opt-in e-mail) is allowed after an unsubscribe
      but not for a cleaned address. Subscribing (or "pending") an address that was permanently
      deleted from the list is refused ("Forgotten Email Not Subscribed"); undocumented: adding
      it as unsubscribed/transactional is accepted. The same rules hold in POST, PATCH and batch
      subscribe (there as ``errors[]`` entries). Undocumented, stricter: the compliance state
      survives archiving.
    * Archived members (DELETE) stay addressable: GET answers them with status ``archived``;
      listings show them only with ``status=archived``. PUT/PATCH/batch update unarchives them
      with the given ``status``; undocumented, stricter: a PUT without ``status`` uses
      ``status_if_new`` (not the old status), a PATCH without ``status`` restores the status held
      before archiving. Undocumented, stricter: POST ``/members`` of an archived address is a
      "Member Exists" error (use PUT).
    * ``actions/delete-permanent`` removes the member; its e-mail is then "forgotten" in that
      list: 404 on every read, absent from every listing.
    * Merge fields: unknown tags are ignored silently (recorded in ``ignored_merge_fields``);
      tags match exactly (undocumented, stricter: ``fname`` is not ``FNAME``). Address fields
      take an object with ``addr1``, ``city``, ``state`` and ``zip`` (or ``""`` to clear);
      undocumented, stricter: the double-space-separated string form is refused. Number fields
      take numbers, birthday fields ``MM/DD``. Bad values: 400 "Invalid Resource", "Your merge
      fields were invalid." (``skip_merge_validation=true`` skips the required-field check).
    * Every change (also a tag change) sets ``last_changed`` to the fake clock's now. Timestamps
      are ISO 8601 with ``+00:00`` and whole seconds.

Listing (``GET /lists/{list_id}/members``)
    ``count`` (default 10, at most 1000), ``offset``, ``status``, ``since_last_changed`` and
    ``before_last_changed``, ``sort_field`` (``timestamp_opt``, ``timestamp_signup``,
    ``last_changed``) with ``sort_dir``, ``fields`` / ``exclude_fields`` (comma-separated dotted
    paths, e.g. ``members.email_address,total_items``). ``total_items`` counts every member
    matching the filters. Undocumented, stricter: both time filters are exclusive
    (``last_changed > since`` and ``< before``) and compare whole seconds, so a cursor taken from
    the newest ``last_changed`` misses later changes within the same second; an unparsable time
    is a 400. Members with equal sort values, and all members without ``sort_field``, come back in
    a stable pseudo-random order (seeded), never in insertion order; empty timestamps sort first
    in ascending order.

Batch subscribe (``POST /lists/{list_id}``)
    At most 500 members. Each needs ``email_address`` and ``status``. Outcomes per member:
    ``new_members``, ``updated_members`` (only with ``update_existing``) or ``errors[]`` with
    ``error_code`` ``ERROR_CONTACT_EXISTS`` (already a member) or ``ERROR_GENERIC`` (invalid
    address, compliance, forgotten, bad merge fields, duplicate). Undocumented, stricter: an
    address listed twice is an error for its second entry unless ``skip_duplicate_check=true``,
    in which case later entries are ignored ("the status of the first appearance ... will be
    saved"). ``tags`` on an entry are added (replaced with ``sync_tags``).

Tags and merge fields
    Member tags: ``GET``/``POST .../members/{hash}/tags`` (``inactive`` removes, unknown names
    are created); undocumented, stricter: names match case-insensitively, the first spelling
    wins. ``/lists/{id}/merge-fields``: GET (``count``/``offset``/``type``/``required``) and POST
    (``tag`` defaults to the name's letters, upper-cased, at most 10; a duplicate tag is a 400).

Faults
    ``fail_next`` (status, body, headers, an ``httpx`` exception, optionally after the request was
    applied) and ``throttle_next`` act on the next matching requests, in the order queued.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx

from plugins.hubspot.tests.fake_hubspot import FakeClock, Fault

__all__ = ["FakeClock", "FakeMailchimp", "Fault", "iso", "subscriber_hash"]

ERROR_TYPE = "https://mailchimp.com/developer/marketing/docs/errors/"
PROBLEM_JSON = "application/problem+json; charset=utf-8"
JSON = "application/json; charset=utf-8"
MAX_COUNT = 1000
BATCH_MAX_MEMBERS = 500
STATUSES = ("subscribed", "unsubscribed", "cleaned", "pending", "transactional")
LIST_STATUSES = (*STATUSES, "archived")
SORT_FIELDS = ("timestamp_opt", "timestamp_signup", "last_changed")
MERGE_TYPES = (
    "text", "number", "address", "phone", "date", "url", "imageurl", "radio", "dropdown",
    "birthday", "zip",
)  # fmt: skip
DEFAULT_MERGE_FIELDS = (
    ("FNAME", "First Name", "text"),
    ("LNAME", "Last Name", "text"),
    ("ADDRESS", "Address", "address"),
    ("PHONE", "Phone Number", "phone"),
    ("BIRTHDAY", "Birthday", "birthday"),
)
MERGE_OPTIONS: dict[str, dict[str, Any]] = {
    "text": {"size": 25},
    "address": {"default_country": 164},
    "phone": {"phone_format": "none"},
    "birthday": {"date_format": "MM/DD"},
    "date": {"date_format": "MM/DD/YYYY"},
}
ADDRESS_REQUIRED = ("addr1", "city", "state", "zip")
ADDRESS_PARTS = ("addr1", "addr2", "city", "state", "zip", "country")

AUTH_TITLE = "API Key Invalid"
AUTH_DETAIL = "Your API key may be invalid, or you've attempted to access the wrong datacenter."
NOT_FOUND_DETAIL = "The requested resource could not be found."
INVALID_DETAIL = (
    "The resource submitted could not be validated. "
    "For field-specific details, see the 'errors' array."
)
MERGE_INVALID_DETAIL = "Your merge fields were invalid."
BAD_EMAIL_DETAIL = "Please provide a valid email address."

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
EMAIL_RE = re.compile(rf"[^@\s\"(),:;<>\[\]\\]+@{_LABEL}(?:\.{_LABEL})*\.[A-Za-z]{{2,}}")
MD5_RE = re.compile(r"[0-9a-fA-F]{32}")
BIRTHDAY_RE = re.compile(r"(0[1-9]|1[0-2])/(0[1-9]|[12]\d|3[01])")


def compliance_detail(email: str) -> str:
    return (
        f"{email} is in a compliance state due to unsubscribe, bounce, or compliance review "
        "and cannot be subscribed."
    )


def forgotten_detail(email: str) -> str:
    return (
        f"{email} was permanently deleted and cannot be re-imported. "
        "The contact must re-subscribe to get back on the list."
    )


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: the MD5 of the lower-cased address."""
    return hashlib.md5(email.strip().lower().encode("utf-8")).hexdigest()


def to_ms(value: int | float | datetime) -> int:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return int(value.timestamp() * 1000)
    return int(value)


def iso(ms: int | None) -> str:
    """Mailchimp's timestamp format: UTC, whole seconds, ``+00:00``; ``""`` when unset."""
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms // 1000, tz=timezone.utc).isoformat()


def parse_iso(text: str) -> float:
    """An ISO 8601 time (``Z`` or an offset; none means UTC) as epoch seconds; ValueError if not."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    stamp = datetime.fromisoformat(value)  # a '+' sent unencoded arrives as ' ': refused
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def valid_email(value: Any) -> bool:
    return isinstance(value, str) and EMAIL_RE.fullmatch(value.strip()) is not None


class ApiError(Exception):
    """An error answer, raised from deep inside a handler."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        errors: list[dict[str, str]] | None = None,
        *,
        allow: str = "",
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors
        self.allow = allow


@dataclass
class MergeField:
    merge_id: int
    tag: str
    name: str
    type: str
    required: bool = False
    default_value: str = ""
    public: bool = True
    display_order: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    help_text: str = ""


@dataclass
class Member:
    email: str
    status: str
    contact_id: str
    web_id: int
    unique_email_id: str
    created: int
    last_changed: int
    merge: dict[str, Any] = field(default_factory=dict)
    tags: dict[str, int] = field(default_factory=dict)  # tag key (lower) -> date added (ms)
    interests: dict[str, bool] = field(default_factory=dict)
    email_type: str = "html"
    language: str = ""
    vip: bool = False
    location: dict[str, Any] = field(default_factory=dict)
    ip_signup: str = ""
    timestamp_signup: int | None = None
    ip_opt: str = ""
    timestamp_opt: int | None = None
    unsubscribe_reason: str = ""
    source: str = "API - Generic"
    archived: bool = False
    #: The status held before archiving; compliance rules look at it while archived.
    status_before_archive: str = ""

    @property
    def id(self) -> str:
        return subscriber_hash(self.email)

    @property
    def compliance_status(self) -> str:
        return self.status_before_archive if self.archived else self.status


@dataclass
class Audience:
    id: str
    name: str
    web_id: int
    created: int
    merge_fields: dict[str, MergeField] = field(default_factory=dict)  # tag -> field
    members: dict[str, Member] = field(default_factory=dict)  # id (md5) -> member
    forgotten: set[str] = field(default_factory=set)  # lower-cased addresses
    tags: dict[str, tuple[int, str]] = field(default_factory=dict)  # lower name -> (id, name)
    next_merge_id: int = 1


class _Transport(httpx.MockTransport):
    """A MockTransport with a real async side: with an ``httpx.AsyncClient`` the latency is
    awaited (``asyncio.sleep``), so concurrent async requests overlap as on the network."""

    def __init__(
        self,
        handler: Callable[[httpx.Request], httpx.Response],
        async_handler: Callable[[httpx.Request], Any],
    ) -> None:
        super().__init__(handler)
        self._async_handler = async_handler

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._async_handler(request)


class FakeMailchimp:
    """Mailchimp's Marketing API 3.0 lists, members, tags and merge fields, in memory.

    ``clock`` returns epoch milliseconds (default: a :class:`FakeClock`, reachable as
    ``fake.clock``). ``validator`` is called with every ``/3.0/...`` request (or its ``validate``
    method is); an ``AssertionError`` it raises is recorded in ``violations`` and propagates out
    of the transport so the test fails. ``seed`` fixes the generated ids and the order of ties.
    """

    def __init__(
        self,
        api_key: str = "0123456789abcdef0123456789abcdef-us6",
        validator: Any = None,
        clock: Callable[[], int] | None = None,
        max_concurrent: int = 10,
        latency: float = 0.0,
        seed: int = 0,
    ) -> None:
        if "-" not in api_key:
            raise ValueError("a Mailchimp API key ends with '-<dc>', e.g. '-us6'")
        self.api_key = api_key
        self.dc = api_key.rsplit("-", 1)[1]
        self.host = f"{self.dc}.api.mailchimp.com"
        self.validator = validator
        self.clock = clock if clock is not None else FakeClock()
        self.max_concurrent = max_concurrent
        self.latency = latency
        self.seed = seed

        self.requests: list[httpx.Request] = []
        self.violations: list[tuple[httpx.Request, str]] = []
        #: (email, tag) of every merge field a write named that the list does not have.
        self.ignored_merge_fields: list[tuple[str, str]] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._flight_lock = threading.Lock()
        self._lock = threading.RLock()
        self._lists: dict[str, Audience] = {}
        self._faults: list[Fault] = []
        self._rng = random.Random(seed)
        self._serial = 0
        self._next_tag_id = 1_000
        self._transport = _Transport(self._handle, self._handle_async)

    # ------------------------------------------------------------------ test-facing helpers

    @property
    def transport(self) -> httpx.MockTransport:
        return self._transport

    @property
    def base_url(self) -> str:
        return f"https://{self.host}/3.0"

    def now(self) -> int:
        return int(self.clock())

    def add_list(self, list_id: str = "list1", name: str = "Newsletter") -> dict[str, Any]:
        """Create an audience with Mailchimp's default merge fields (FNAME, LNAME, ADDRESS,
        PHONE, BIRTHDAY; merge ids 1-5); returns it as the API shows it."""
        with self._lock:
            if list_id in self._lists:
                raise ValueError(f"list {list_id} exists")
            audience = Audience(list_id, name, self._rng.randrange(10**5, 10**6), self.now())
            self._lists[list_id] = audience
            for tag, label, kind in DEFAULT_MERGE_FIELDS:
                self._new_merge_field(audience, tag, label, kind)
            return self._list_view(audience)

    def add_merge_field(
        self, list_id: str, tag: str, name: str | None = None, type: str = "text"
    ) -> dict[str, Any]:
        with self._lock:
            audience = self._audience(list_id)
            if tag in audience.merge_fields:
                raise ValueError(f"merge field {tag} exists in {list_id}")
            merge = self._new_merge_field(audience, tag, name or tag.title(), type)
            return self._merge_field_view(audience, merge)

    def add_member(
        self,
        list_id: str,
        email: str,
        status: str = "subscribed",
        merge_fields: dict[str, Any] | None = None,
        tags: Iterable[str] = (),
        language: str = "",
        at: int | datetime | None = None,
        vip: bool = False,
        location: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Put a member in the list as if they had signed up there (``at``: when; sets
        ``timestamp_signup``, ``timestamp_opt`` and ``last_changed``). No compliance checks."""
        with self._lock:
            audience = self._audience(list_id)
            if subscriber_hash(email) in audience.members:
                raise ValueError(f"{email} is already in {list_id}")
            when = to_ms(at) if at is not None else self.now()
            member = self._new_member(audience, email.strip(), status, when, "Admin Add")
            member.timestamp_signup = when
            member.timestamp_opt = when if status == "subscribed" else None
            values, _ = self._merge_values(audience, email, merge_fields or {}, {}, check=False)
            member.merge = values
            member.language, member.vip = language, vip
            member.location.update(location or {})
            for name in tags:
                self._tag(audience, member, name, when)
            return self._member_view(audience, member)

    def set_status(
        self,
        list_id: str,
        email: str,
        status: str,
        at: int | datetime | None = None,
        reason: str = "",
    ) -> dict[str, Any]:
        """The person or Mailchimp changes a member's status (an unsubscribe link, a bounce
        cleaning the address, a confirmed opt-in). No compliance checks."""
        if status not in STATUSES:
            raise ValueError(f"status is one of {STATUSES}")
        with self._lock:
            audience, member = self._existing(list_id, email)
            when = to_ms(at) if at is not None else self.now()
            member.archived = False
            member.status = status
            member.unsubscribe_reason = reason if status == "unsubscribed" else ""
            if status == "subscribed":
                member.timestamp_opt = when
            member.last_changed = when
            return self._member_view(audience, member)

    def change_email(
        self, list_id: str, old_email: str, new_email: str, at: int | datetime | None = None
    ) -> dict[str, Any]:
        """The subscriber changes their address (Mailchimp's "upemail"): new ``id`` and
        ``unique_email_id``; ``contact_id`` and ``web_id`` stay."""
        with self._lock:
            audience, member = self._existing(list_id, old_email)
            if subscriber_hash(new_email) in audience.members:
                raise ValueError(f"{new_email} is already in {list_id}")
            self._rename(audience, member, new_email.strip())
            member.last_changed = to_ms(at) if at is not None else self.now()
            return self._member_view(audience, member)

    def archive(self, list_id: str, email: str, at: int | datetime | None = None) -> None:
        with self._lock:
            _, member = self._existing(list_id, email)
            self._archive(member, to_ms(at) if at is not None else self.now())

    def delete_permanent(self, list_id: str, email: str) -> None:
        with self._lock:
            audience, member = self._existing(list_id, email)
            self._forget(audience, member)

    def member(self, list_id: str, email: str) -> dict[str, Any] | None:
        """The member as GET shows it (archived ones with status ``archived``), or None."""
        with self._lock:
            audience = self._audience(list_id)
            member = audience.members.get(subscriber_hash(email))
            return None if member is None else self._member_view(audience, member)

    def members(self, list_id: str, status: str | None = None) -> list[dict[str, Any]]:
        """Members in the order added; like the API, archived ones only with ``status="archived"``."""
        with self._lock:
            audience = self._audience(list_id)
            return [
                self._member_view(audience, m)
                for m in sorted(audience.members.values(), key=lambda m: m.created)
                if self._status_matches(m, status)
            ]

    def tags_of(self, list_id: str, email: str) -> set[str]:
        with self._lock:
            audience, member = self._existing(list_id, email)
            return {audience.tags[key][1] for key in member.tags}

    def forgotten(self, list_id: str) -> set[str]:
        """The (lower-cased) addresses permanently deleted from the list."""
        with self._lock:
            return set(self._audience(list_id).forgotten)

    def calls(self, method: str | None = None, path_contains: str | None = None) -> int:
        return sum(
            1
            for r in list(self.requests)
            if (method is None or r.method.upper() == method.upper())
            and (path_contains is None or path_contains in r.url.path)
        )

    def fail_next(
        self,
        method: str | None = None,
        path_contains: str | None = None,
        *,
        status: int = 500,
        body: Any = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
        exception: Any = None,
        after_apply: bool = False,
    ) -> None:
        """Make the next ``times`` requests matching ``method`` and ``path_contains`` fail.

        The answer is ``status`` with ``body`` (default: a problem-detail document; ``b""``: a
        bare response; a dict: JSON; str/bytes: sent as is), or ``exception`` is raised (an
        ``httpx`` exception class or instance). With ``after_apply=True`` the request is
        processed first, so a write is applied and then reported as failed (unknown outcome).
        """
        with self._lock:
            self._faults.append(
                Fault(times, status, path_contains, method, body, headers, after_apply, exception)
            )

    def throttle_next(self, times: int = 1, status: int = 429) -> None:
        """The next ``times`` requests get a bare ``status`` (empty body, ``text/html``), as
        Mailchimp's throttling answers look to a client."""
        self.fail_next(status=status, body=b"", headers={"Content-Type": "text/html"}, times=times)

    # ------------------------------------------------------------------ transport

    def _handle(self, request: httpx.Request) -> httpx.Response:
        refused = self._admit(request)
        if refused is not None:
            return refused
        try:
            if self.latency > 0:
                time.sleep(self.latency)
            return self._process(request)
        finally:
            self._leave()

    async def _handle_async(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        refused = self._admit(request)
        if refused is not None:
            return refused
        try:
            if self.latency > 0:
                await asyncio.sleep(self.latency)
            return self._process(request)
        finally:
            self._leave()

    def _admit(self, request: httpx.Request) -> httpx.Response | None:
        """Validate and record the request and count it in flight; a bare 429 past the cap."""
        request.read()
        path = request.url.path
        if self.validator is not None and (path == "/3.0" or path.startswith("/3.0/")):
            check = getattr(self.validator, "validate", self.validator)
            try:
                check(request)
            except AssertionError as exc:
                self.violations.append((request, str(exc)))
                raise
        self.requests.append(request)
        with self._flight_lock:
            arriving = self._in_flight + 1
            self.max_in_flight = max(self.max_in_flight, arriving)
            if arriving > self.max_concurrent:
                return httpx.Response(429, headers={"Content-Type": "text/html"}, content=b"")
            self._in_flight = arriving
        return None

    def _leave(self) -> None:
        with self._flight_lock:
            self._in_flight -= 1

    def _process(self, request: httpx.Request) -> httpx.Response:
        fault = self._take_fault(request)
        if fault is not None and not fault.after_apply:
            return self._fault(fault, request)
        with self._lock:
            response = self._dispatch(request)
        if fault is not None:
            return self._fault(fault, request)
        return response

    def _take_fault(self, request: httpx.Request) -> Fault | None:
        with self._lock:
            return Fault.take(self._faults, request)

    def _fault(self, fault: Fault, request: httpx.Request) -> httpx.Response:
        fault.raise_exception(request)
        body = fault.body
        headers = dict(fault.headers or {})
        if body is None:
            title = {500: "Internal Server Error", 503: "Service Unavailable"}.get(
                fault.status, "Simulated Fault"
            )
            with self._lock:
                body = self._problem(fault.status, title, "A simulated fault.")
        if isinstance(body, (bytes, str)):
            if body == b"" or body == "":
                headers.setdefault("Content-Type", "text/html")
            return httpx.Response(fault.status, headers=headers, content=body)
        headers.setdefault("Content-Type", PROBLEM_JSON if fault.status >= 400 else JSON)
        return httpx.Response(fault.status, headers=headers, content=json.dumps(body))

    def _dispatch(self, request: httpx.Request) -> httpx.Response:
        if not self._authenticated(request):
            return self._error_response(ApiError(401, AUTH_TITLE, AUTH_DETAIL))
        try:
            status, body = self._route(request)
        except ApiError as err:
            return self._error_response(err)
        if body is None:
            return httpx.Response(status)
        fields = _path_list(request.url.params.get_list("fields"))
        excluded = _path_list(request.url.params.get_list("exclude_fields"))
        if request.method == "GET" and fields:
            body = _pick(body, fields)
        if request.method == "GET" and excluded:
            body = _drop(body, excluded)
        return httpx.Response(status, headers={"Content-Type": JSON}, content=json.dumps(body))

    def _authenticated(self, request: httpx.Request) -> bool:
        if request.url.host != self.host:
            return False
        auth = request.headers.get("Authorization", "")
        scheme, _, credentials = auth.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return False
        _, sep, password = decoded.partition(":")
        return bool(sep) and password == self.api_key

    def _instance(self) -> str:
        self._serial += 1
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake-mailchimp/{self.seed}/{self._serial}"))

    def _problem(self, status: int, title: str, detail: str, **extra: Any) -> dict[str, Any]:
        body = {
            "type": ERROR_TYPE,
            "title": title,
            "status": status,
            "detail": detail,
            "instance": self._instance(),
        }
        body.update(extra)
        return body

    def _error_response(self, err: ApiError) -> httpx.Response:
        extra: dict[str, Any] = {"errors": err.errors} if err.errors is not None else {}
        headers = {"Content-Type": PROBLEM_JSON}
        if err.allow:
            headers["Allow"] = err.allow
        body = self._problem(err.status, err.title, err.detail, **extra)
        return httpx.Response(err.status, headers=headers, content=json.dumps(body))

    # ------------------------------------------------------------------ routing

    def _route(self, request: httpx.Request) -> tuple[int, Any]:
        path = request.url.path
        if not (path == "/3.0" or path.startswith("/3.0/")):
            raise _not_found()
        parts = [p for p in path[len("/3.0") :].split("/") if p]
        method = request.method
        query = request.url.params
        if parts == ["ping"]:
            self._allow(method, "GET")
            return 200, {"health_status": "Everything's Chimpy!"}
        if parts == ["lists"]:
            self._allow(method, "GET")
            return self._get_lists(query)
        if len(parts) < 2 or parts[0] != "lists":
            raise _not_found()
        audience = self._lists.get(parts[1])
        rest = parts[2:]
        if not rest:
            self._allow(method, "GET", "POST")
            audience = self._need(audience)
            if method == "GET":
                view = self._list_view(audience)
                if query.get("include_total_contacts") == "true":
                    view["stats"]["total_contacts"] = len(audience.members)
                return 200, view
            return self._batch_subscribe(audience, self._body(request), query)
        if rest == ["merge-fields"]:
            self._allow(method, "GET", "POST")
            audience = self._need(audience)
            if method == "GET":
                return self._get_merge_fields(audience, query)
            return self._post_merge_field(audience, self._body(request))
        if rest[0] == "segments":
            audience = self._need(audience)
            if len(rest) == 1:
                self._allow(method, "GET", "POST")
                if method == "GET":
                    return self._get_segments(audience, query)
                return self._post_segment(audience, self._body(request))
            if len(rest) == 2:
                self._allow(method, "GET", "POST")
                seg = self._segment(audience, rest[1])
                if method == "GET":
                    return 200, self._segment_view(audience, seg)
                return self._segment_members(audience, seg, self._body(request))
            raise _not_found()
        if rest[0] != "members":
            raise _not_found()
        if len(rest) == 1:
            self._allow(method, "GET", "POST")
            audience = self._need(audience)
            if method == "GET":
                return self._list_members(audience, query)
            return self._post_member(audience, self._body(request), query)
        key = rest[1]
        if len(rest) == 2:
            self._allow(method, "GET", "PUT", "PATCH", "DELETE")
            audience = self._need(audience)
            if method == "GET":
                return 200, self._member_view(audience, self._find_or_404(audience, key))
            if method == "PUT":
                return self._put_member(audience, key, self._body(request), query)
            if method == "PATCH":
                return self._patch_member(audience, key, self._body(request), query)
            self._archive(self._find_or_404(audience, key), self.now())
            return 204, None
        if rest[2:] == ["tags"]:
            self._allow(method, "GET", "POST")
            audience = self._need(audience)
            member = self._find_or_404(audience, key)
            if method == "GET":
                return self._get_tags(audience, member, query)
            return self._post_tags(audience, member, self._body(request))
        if rest[2:] == ["actions", "delete-permanent"]:
            self._allow(method, "POST")
            audience = self._need(audience)
            self._forget(audience, self._find_or_404(audience, key))
            return 204, None
        raise _not_found()

    @staticmethod
    def _allow(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise ApiError(
                405,
                "Method Not Allowed",
                "The requested method and resource are not compatible. See the Allow header "
                "for this resource's available methods.",
                allow=", ".join(allowed),
            )

    @staticmethod
    def _need(audience: Audience | None) -> Audience:
        if audience is None:
            raise _not_found()
        return audience

    def _body(self, request: httpx.Request) -> dict[str, Any]:
        try:
            body = json.loads(request.content or b"{}")
        except ValueError:
            raise ApiError(
                400,
                "JSON Parse Error",
                "We encountered an unspecified JSON parsing error.",
            ) from None
        if not isinstance(body, dict):
            raise _invalid("", "Schema describes object, " + type(body).__name__ + " found instead")
        return body

    # ------------------------------------------------------------------ lists and merge fields

    def _audience(self, list_id: str) -> Audience:
        audience = self._lists.get(list_id)
        if audience is None:
            raise KeyError(f"no list {list_id}")
        return audience

    def _list_view(self, audience: Audience) -> dict[str, Any]:
        live = [m for m in audience.members.values() if not m.archived]
        count = {s: sum(1 for m in live if m.status == s) for s in STATUSES}
        return {
            "id": audience.id,
            "web_id": audience.web_id,
            "name": audience.name,
            "contact": {
                "company": "Synchub Test",
                "address1": "",
                "address2": "",
                "city": "",
                "state": "",
                "zip": "",
                "country": "DE",
                "phone": "",
            },
            "permission_reminder": "You signed up on our website.",
            "use_archive_bar": True,
            "campaign_defaults": {
                "from_name": "Synchub",
                "from_email": "news@example.org",
                "subject": "",
                "language": "en",
            },
            "notify_on_subscribe": "",
            "notify_on_unsubscribe": "",
            "date_created": iso(audience.created),
            "list_rating": 0,
            "email_type_option": False,
            "subscribe_url_short": f"http://eepurl.com/{audience.id}",
            "subscribe_url_long": (
                f"https://synchub.{self.dc}.list-manage.com/subscribe?u=0&id={audience.id}"
            ),
            "beamer_address": "",
            "visibility": "prv",
            "double_optin": False,
            "has_welcome": False,
            "marketing_permissions": False,
            "modules": [],
            "stats": {
                "member_count": count["subscribed"],
                "unsubscribe_count": count["unsubscribed"],
                "cleaned_count": count["cleaned"],
                "member_count_since_send": count["subscribed"],
                "unsubscribe_count_since_send": count["unsubscribed"],
                "cleaned_count_since_send": count["cleaned"],
                "campaign_count": 0,
                "merge_field_count": len(audience.merge_fields),
                "avg_sub_rate": 0,
                "avg_unsub_rate": 0,
                "target_sub_rate": 0,
                "open_rate": 0,
                "click_rate": 0,
                "last_sub_date": "",
                "last_unsub_date": "",
            },
            "_links": [],
        }

    def _get_lists(self, query: httpx.QueryParams) -> tuple[int, Any]:
        count, offset = _paging(query)
        lists = sorted(self._lists.values(), key=lambda a: a.created)
        return 200, {
            "lists": [self._list_view(a) for a in lists[offset : offset + count]],
            "total_items": len(lists),
            "_links": [],
        }

    def _new_merge_field(self, audience: Audience, tag: str, name: str, kind: str) -> MergeField:
        if kind not in MERGE_TYPES:
            raise ValueError(f"merge field type is one of {MERGE_TYPES}")
        merge = MergeField(
            merge_id=audience.next_merge_id,
            tag=tag,
            name=name,
            type=kind,
            display_order=audience.next_merge_id + 1,  # EMAIL (merge id 0) is shown first
            options=dict(MERGE_OPTIONS.get(kind, {})),
        )
        audience.next_merge_id += 1
        audience.merge_fields[tag] = merge
        return merge

    def _merge_field_view(self, audience: Audience, merge: MergeField) -> dict[str, Any]:
        return {
            "merge_id": merge.merge_id,
            "tag": merge.tag,
            "name": merge.name,
            "type": merge.type,
            "required": merge.required,
            "default_value": merge.default_value,
            "public": merge.public,
            "display_order": merge.display_order,
            "options": dict(merge.options),
            "help_text": merge.help_text,
            "list_id": audience.id,
            "_links": [],
        }

    def _get_merge_fields(self, audience: Audience, query: httpx.QueryParams) -> tuple[int, Any]:
        count, offset = _paging(query)
        fields = sorted(audience.merge_fields.values(), key=lambda f: f.display_order)
        if query.get("type"):
            fields = [f for f in fields if f.type == query["type"]]
        if query.get("required") in ("true", "false"):
            fields = [f for f in fields if f.required == (query["required"] == "true")]
        return 200, {
            "merge_fields": [
                self._merge_field_view(audience, f) for f in fields[offset : offset + count]
            ],
            "list_id": audience.id,
            "total_items": len(fields),
            "_links": [],
        }

    def _post_merge_field(self, audience: Audience, body: dict[str, Any]) -> tuple[int, Any]:
        name = body.get("name")
        kind = body.get("type")
        if not isinstance(name, str) or not name.strip():
            raise _invalid("name", "This value should not be blank.")
        if kind not in MERGE_TYPES:
            raise _invalid("type", "Data did not match any of the schemas described in anyOf.")
        tag = body.get("tag")
        if tag is None or tag == "":
            tag = "".join(c for c in name.upper() if "A" <= c <= "Z")[:10]
            if not tag:
                tag = f"MMERGE{audience.next_merge_id}"
        tag = str(tag).upper()
        if len(tag) > 10 or not re.fullmatch(r"[A-Z0-9_]+", tag):
            raise _invalid("tag", "A merge tag has at most 10 letters, digits or underscores.")
        if tag in audience.merge_fields or tag == "EMAIL":
            raise _invalid(
                "tag", f'A Merge Field with the tag "{tag}" already exists for this list.'
            )
        merge = self._new_merge_field(audience, tag, name, kind)
        merge.required = bool(body.get("required", False))
        merge.default_value = str(body.get("default_value", "") or "")
        merge.public = bool(body.get("public", True))
        merge.help_text = str(body.get("help_text", "") or "")
        if isinstance(body.get("display_order"), int):
            merge.display_order = body["display_order"]
        if isinstance(body.get("options"), dict):
            merge.options.update(body["options"])
        return 200, self._merge_field_view(audience, merge)

    # ------------------------------------------------------------------ members: reads

    def _find(self, audience: Audience, key: str) -> Member | None:
        if "@" in key:
            return audience.members.get(subscriber_hash(key))
        member = audience.members.get(key)
        if member is not None:
            return member
        return next((m for m in audience.members.values() if m.contact_id == key), None)

    def _find_or_404(self, audience: Audience, key: str) -> Member:
        member = self._find(audience, key)
        if member is None:
            raise _not_found()
        return member

    def _existing(self, list_id: str, email: str) -> tuple[Audience, Member]:
        audience = self._audience(list_id)
        member = audience.members.get(subscriber_hash(email))
        if member is None:
            raise KeyError(f"{email} is not in {list_id}")
        return audience, member

    def _member_view(self, audience: Audience, member: Member) -> dict[str, Any]:
        merge = {}
        for tag in audience.merge_fields:
            value = member.merge.get(tag, "")
            merge[tag] = dict(value) if isinstance(value, dict) else value
        status = "archived" if member.archived else member.status
        full_name = " ".join(
            str(member.merge.get(t, "")).strip() for t in ("FNAME", "LNAME") if member.merge.get(t)
        )
        view: dict[str, Any] = {
            "id": member.id,
            "email_address": member.email,
            "unique_email_id": member.unique_email_id,
            "contact_id": member.contact_id,
            "full_name": full_name,
            "web_id": member.web_id,
            "email_type": member.email_type,
            "status": status,
        }
        if status == "unsubscribed" and member.unsubscribe_reason:
            view["unsubscribe_reason"] = member.unsubscribe_reason
        view.update(
            {
                "consents_to_one_to_one_messaging": True,
                "merge_fields": merge,
                "interests": dict(member.interests),
                "stats": {"avg_open_rate": 0, "avg_click_rate": 0},
                "ip_signup": member.ip_signup,
                "timestamp_signup": iso(member.timestamp_signup),
                "ip_opt": member.ip_opt,
                "timestamp_opt": iso(member.timestamp_opt),
                "member_rating": 2,
                "last_changed": iso(member.last_changed),
                "language": member.language,
                "vip": member.vip,
                "email_client": "",
                "location": {
                    "latitude": 0,
                    "longitude": 0,
                    "gmtoff": 0,
                    "dstoff": 0,
                    "country_code": "",
                    "timezone": "",
                    "region": "",
                    **member.location,
                },
                "marketing_permissions": [],
                "source": member.source,
                "tags_count": len(member.tags),
                "tags": [
                    {"id": audience.tags[key][0], "name": audience.tags[key][1]}
                    for key in member.tags
                ],
                "list_id": audience.id,
                "_links": [],
            }
        )
        return view

    @staticmethod
    def _status_matches(member: Member, status: str | None) -> bool:
        if status == "archived":
            return member.archived
        if member.archived:
            return False
        return status is None or member.status == status

    def _tie_key(self, member: Member) -> str:
        return hashlib.sha256(f"{self.seed}/{member.contact_id}".encode()).hexdigest()

    def _list_members(self, audience: Audience, query: httpx.QueryParams) -> tuple[int, Any]:
        count, offset = _paging(query)
        status = query.get("status")
        if status is not None and status not in LIST_STATUSES:
            raise _invalid("status", f"Value must be one of: {', '.join(LIST_STATUSES)}")
        since = _time_param(query, "since_last_changed")
        before = _time_param(query, "before_last_changed")
        members = [m for m in audience.members.values() if self._status_matches(m, status)]
        if since is not None:
            members = [m for m in members if m.last_changed // 1000 > since]
        if before is not None:
            members = [m for m in members if m.last_changed // 1000 < before]
        if query.get("email_type"):
            members = [m for m in members if m.email_type == query["email_type"]]
        if query.get("vip_only") == "true":
            members = [m for m in members if m.vip]
        if query.get("unique_email_id"):
            members = [m for m in members if m.unique_email_id == query["unique_email_id"]]
        members.sort(key=self._tie_key)
        sort_field = query.get("sort_field")
        if sort_field is not None:
            if sort_field not in SORT_FIELDS:
                raise _invalid("sort_field", f"Value must be one of: {', '.join(SORT_FIELDS)}")
            sort_dir = query.get("sort_dir", "ASC")
            if sort_dir not in ("ASC", "DESC"):
                raise _invalid("sort_dir", "Value must be one of: ASC, DESC")

            def value(member: Member) -> int:
                ms = getattr(member, sort_field)
                return -1 if ms is None else ms // 1000

            members.sort(key=value, reverse=sort_dir == "DESC")  # stable: ties keep tie order
        page = members[offset : offset + count]
        return 200, {
            "members": [self._member_view(audience, m) for m in page],
            "list_id": audience.id,
            "total_items": len(members),
            "_links": [],
        }

    # ------------------------------------------------------------------ tags as static segments

    def _segment(self, audience: Audience, seg_id: str) -> str:
        for key, (tid, _name) in audience.tags.items():
            if str(tid) == seg_id:
                return key
        raise _not_found()

    def _segment_view(self, audience: Audience, key: str) -> dict[str, Any]:
        tid, name = audience.tags[key]
        count = sum(1 for m in audience.members.values() if key in m.tags and not m.archived)
        return {"id": tid, "name": name, "member_count": count, "type": "static", "created_at": iso(self.now()),
                "updated_at": iso(self.now()), "options": {}, "list_id": audience.id, "_links": []}

    def _get_segments(self, audience: Audience, query: httpx.QueryParams) -> tuple[int, Any]:
        count, offset = _paging(query)
        kind = query.get("type")
        if kind is not None and kind not in ("saved", "static", "fuzzy"):
            raise _invalid("type", "Value must be one of: saved, static, fuzzy")
        keys = sorted(audience.tags, key=lambda k: audience.tags[k][0]) if kind in (None, "static") else []
        return 200, {"segments": [self._segment_view(audience, k) for k in keys[offset:offset + count]],
                     "list_id": audience.id, "total_items": len(keys), "_links": []}

    def _post_segment(self, audience: Audience, body: dict[str, Any]) -> tuple[int, Any]:
        name = str(body.get("name") or "").strip()
        if not name:
            raise _invalid("name", "This value should not be blank.")
        if "static_segment" not in body and "options" not in body:
            raise _invalid("static_segment", "Either static_segment or options is required.")
        key = name.lower()
        if key in audience.tags:
            raise ApiError(400, "Invalid Resource", "Sorry, that tag already exists.")
        self._next_tag_id += 1
        audience.tags[key] = (self._next_tag_id, name)
        now = self.now()
        for email in body.get("static_segment") or []:
            member = audience.members.get(subscriber_hash(str(email)))
            if member is not None:
                self._tag(audience, member, name, now)
                member.last_changed = now
        return 200, self._segment_view(audience, key)

    def _segment_members(self, audience: Audience, key: str, body: dict[str, Any]) -> tuple[int, Any]:
        """Static segment add/remove (how tags are set in bulk). Addresses not in the audience
        are reported as errors and otherwise ignored, as the API describes."""
        name = audience.tags[key][1]
        add, remove = body.get("members_to_add") or [], body.get("members_to_remove") or []
        for what, items in (("members_to_add", add), ("members_to_remove", remove)):
            if len(items) > BATCH_MAX_MEMBERS:
                raise _invalid(what, f"A maximum of {BATCH_MAX_MEMBERS} members can be sent.")
        now = self.now()
        added, removed, errors = [], [], []
        for emails, adding in ((add, True), (remove, False)):
            for email in emails:
                member = audience.members.get(subscriber_hash(str(email)))
                if member is None or member.archived:
                    errors.append({"email_addresses": [email], "error": "Email address is not subscribed to the list"})
                    continue
                if adding:
                    self._tag(audience, member, name, now)
                    added.append(self._member_view(audience, member))
                else:
                    member.tags.pop(key, None)
                    removed.append(self._member_view(audience, member))
                member.last_changed = now
        return 200, {"members_added": added, "members_removed": removed, "errors": errors,
                     "total_added": len(added), "total_removed": len(removed), "error_count": len(errors), "_links": []}

    def _get_tags(
        self, audience: Audience, member: Member, query: httpx.QueryParams
    ) -> tuple[int, Any]:
        count, offset = _paging(query)
        tags = [
            {
                "id": audience.tags[key][0],
                "name": audience.tags[key][1],
                "date_added": iso(added),
            }
            for key, added in member.tags.items()
        ]
        return 200, {"tags": tags[offset : offset + count], "total_items": len(tags), "_links": []}

    # ------------------------------------------------------------------ members: writes

    def _new_member(
        self, audience: Audience, email: str, status: str, when: int, source: str
    ) -> Member:
        member = Member(
            email=email,
            status=status,
            contact_id=self._rng.getrandbits(128).to_bytes(16, "big").hex(),
            web_id=self._rng.randrange(10**8, 10**9),
            unique_email_id=self._rng.getrandbits(40).to_bytes(5, "big").hex(),
            created=when,
            last_changed=when,
            source=source,
        )
        audience.members[member.id] = member
        return member

    def _rename(self, audience: Audience, member: Member, new_email: str) -> None:
        del audience.members[member.id]
        if subscriber_hash(new_email) != member.id:
            member.unique_email_id = self._rng.getrandbits(40).to_bytes(5, "big").hex()
        member.email = new_email
        audience.members[member.id] = member

    def _archive(self, member: Member, when: int) -> None:
        if not member.archived:
            member.status_before_archive = member.status
            member.archived = True
        member.last_changed = when

    def _forget(self, audience: Audience, member: Member) -> None:
        del audience.members[member.id]
        audience.forgotten.add(member.email.lower())

    def _tag(self, audience: Audience, member: Member, name: str, when: int) -> None:
        key = name.strip().lower()
        if key not in audience.tags:
            self._next_tag_id += 1
            audience.tags[key] = (self._next_tag_id, name.strip())
        member.tags.setdefault(key, when)

    def _merge_values(
        self,
        audience: Audience,
        email: str,
        incoming: Any,
        current: dict[str, Any],
        *,
        check: bool = True,
        creating: bool = False,
    ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """The member's merge values after applying ``incoming``, and the ignored tags."""
        if not isinstance(incoming, dict):
            raise _invalid("merge_fields", "Schema describes object, NULL found instead")
        values = dict(current)
        ignored: list[tuple[str, str]] = []
        problems: list[dict[str, str]] = []
        for tag, raw in incoming.items():
            spec = audience.merge_fields.get(tag)
            if spec is None:
                ignored.append((email, str(tag)))
                continue
            value, problem = _merge_value(spec, raw)
            if problem:
                problems.append({"field": tag, "message": problem})
            elif value in ("", None):
                values.pop(tag, None)
            else:
                values[tag] = value
        if check and creating:
            for spec in audience.merge_fields.values():
                if spec.required and values.get(spec.tag) in (None, "") and not spec.default_value:
                    problems.append({"field": spec.tag, "message": "Please enter a value"})
        if problems:
            raise ApiError(400, "Invalid Resource", MERGE_INVALID_DETAIL, problems)
        return values, ignored

    def _check_status_change(
        self, audience: Audience, member: Member | None, email: str, status: str
    ) -> None:
        if status not in STATUSES:
            raise _invalid("status", f"Value must be one of: {', '.join(STATUSES)}")
        if member is not None:
            before = member.compliance_status
            if (status == "subscribed" and before in ("unsubscribed", "cleaned")) or (
                status == "pending" and before == "cleaned"
            ):
                raise ApiError(400, "Member In Compliance State", compliance_detail(email))
        forgotten = email.lower() in audience.forgotten
        if forgotten and status in ("subscribed", "pending"):
            if member is None or member.compliance_status not in ("subscribed", "pending"):
                raise ApiError(400, "Forgotten Email Not Subscribed", forgotten_detail(email))

    def _write(
        self,
        audience: Audience,
        member: Member | None,
        email: str,
        body: dict[str, Any],
        status: str | None,
        *,
        skip_merge_validation: bool = False,
        sync_tags: bool = False,
    ) -> tuple[Member, bool]:
        """Create (``member`` None) or update a member from a request body; all checks run
        before anything changes. Returns (member, created)."""
        email = email.strip()
        if not valid_email(email):
            raise ApiError(400, "Invalid Resource", BAD_EMAIL_DETAIL)
        if member is None and status is None:
            raise _invalid("status", "Schema describes string, NULL found instead")
        if member is not None and member.archived and status is None:
            status = member.status_before_archive
        renamed = member is not None and subscriber_hash(email) != member.id
        if renamed:
            other = audience.members.get(subscriber_hash(email))
            if other is not None:
                raise ApiError(400, "Member Exists", _exists_detail(email))
        if status is not None and (member is None or member.archived or status != member.status):
            self._check_status_change(audience, member, email, status)
        elif renamed and member is not None:
            self._check_status_change(audience, None, email, member.status)
        merge, ignored = self._merge_values(
            audience,
            email,
            body.get("merge_fields", {}),
            member.merge if member is not None else {},
            check=not skip_merge_validation,
            creating=member is None,
        )
        stamps = {k: _body_time(body, k) for k in ("timestamp_signup", "timestamp_opt")}
        tags = body.get("tags")
        if tags is not None and (
            not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)
        ):
            raise _invalid("tags", "Schema describes array of strings")

        now = self.now()
        created = member is None
        if member is None:
            assert status is not None
            member = self._new_member(audience, email, status, now, "API - Generic")
            if status == "subscribed":
                member.timestamp_opt = now
            elif status == "pending":
                member.timestamp_signup = now
        else:
            if renamed:
                self._rename(audience, member, email)
            else:
                member.email = email
            if status is not None and (member.archived or status != member.status):
                if status == "subscribed":
                    member.timestamp_opt = now
                if status != "unsubscribed":
                    member.unsubscribe_reason = ""
            if status is not None:
                member.status = status
            member.archived = False
        member.merge = merge
        self.ignored_merge_fields.extend(ignored)
        for name in ("email_type", "language", "ip_signup", "ip_opt"):
            if isinstance(body.get(name), str):
                setattr(member, name, body[name])
        if isinstance(body.get("vip"), bool):
            member.vip = body["vip"]
        if isinstance(body.get("interests"), dict):
            member.interests.update({str(k): bool(v) for k, v in body["interests"].items()})
        if isinstance(body.get("location"), dict):
            member.location.update(
                {k: body["location"][k] for k in ("latitude", "longitude") if k in body["location"]}
            )
        for name, stamp in stamps.items():
            if stamp is not None:
                setattr(member, name, stamp)
        if tags is not None:
            if sync_tags:
                member.tags = {
                    k: v for k, v in member.tags.items() if k in {t.strip().lower() for t in tags}
                }
            for name in tags:
                if name.strip():
                    self._tag(audience, member, name, now)
        member.last_changed = now
        return member, created

    def _put_member(
        self, audience: Audience, key: str, body: dict[str, Any], query: httpx.QueryParams
    ) -> tuple[int, Any]:
        for name in ("email_address", "status_if_new"):
            if body.get(name) in (None, ""):
                raise _invalid(
                    name,
                    "Schema describes string, NULL found instead",
                    detail=f"The resource submitted could not be validated: '{name}' is required.",
                )
        email = body["email_address"]
        if not valid_email(email):
            raise ApiError(400, "Invalid Resource", BAD_EMAIL_DETAIL)
        if body["status_if_new"] not in STATUSES:
            raise _invalid("status_if_new", f"Value must be one of: {', '.join(STATUSES)}")
        member = self._find(audience, key)
        if (
            member is None
            and key != subscriber_hash(email)
            and key.lower() != email.strip().lower()
        ):
            raise ApiError(
                400,
                "Invalid Resource",
                "The subscriber hash in the URL does not match the email address given.",
            )
        status = body.get("status")
        if member is None and status is None:
            status = body["status_if_new"]
        if member is not None and member.archived and status is None:
            status = body["status_if_new"]
        member, _ = self._write(
            audience,
            member,
            email,
            body,
            status,
            skip_merge_validation=query.get("skip_merge_validation") == "true",
        )
        return 200, self._member_view(audience, member)

    def _patch_member(
        self, audience: Audience, key: str, body: dict[str, Any], query: httpx.QueryParams
    ) -> tuple[int, Any]:
        member = self._find_or_404(audience, key)
        email = body.get("email_address", member.email)
        if not isinstance(email, str):
            raise ApiError(400, "Invalid Resource", BAD_EMAIL_DETAIL)
        member, _ = self._write(
            audience,
            member,
            email,
            body,
            body.get("status"),
            skip_merge_validation=query.get("skip_merge_validation") == "true",
        )
        return 200, self._member_view(audience, member)

    def _post_member(
        self, audience: Audience, body: dict[str, Any], query: httpx.QueryParams
    ) -> tuple[int, Any]:
        email = body.get("email_address")
        if email in (None, ""):
            raise _invalid("email_address", "Schema describes string, NULL found instead")
        if not valid_email(email):
            raise ApiError(400, "Invalid Resource", BAD_EMAIL_DETAIL)
        if body.get("status") in (None, ""):
            raise _invalid("status", "Schema describes string, NULL found instead")
        if self._find(audience, email) is not None:
            raise ApiError(400, "Member Exists", _exists_detail(email))
        member, _ = self._write(
            audience,
            None,
            email,
            body,
            body["status"],
            skip_merge_validation=query.get("skip_merge_validation") == "true",
        )
        return 200, self._member_view(audience, member)

    def _post_tags(
        self, audience: Audience, member: Member, body: dict[str, Any]
    ) -> tuple[int, Any]:
        tags = body.get("tags")
        if not isinstance(tags, list):
            raise _invalid("tags", "Schema describes array, NULL found instead")
        for i, tag in enumerate(tags):
            if not isinstance(tag, dict) or not str(tag.get("name", "")).strip():
                raise _invalid(f"tags.item:{i}.name", "This value should not be blank.")
            if tag.get("status") not in ("active", "inactive"):
                raise _invalid(f"tags.item:{i}.status", "Value must be one of: active, inactive")
        now = self.now()
        for tag in tags:
            if tag["status"] == "active":
                self._tag(audience, member, tag["name"], now)
            else:
                member.tags.pop(str(tag["name"]).strip().lower(), None)
        member.last_changed = now
        return 204, None

    def _batch_subscribe(
        self, audience: Audience, body: dict[str, Any], query: httpx.QueryParams
    ) -> tuple[int, Any]:
        entries = body.get("members")
        if not isinstance(entries, list):
            raise _invalid("members", "Schema describes array, NULL found instead")
        if len(entries) > BATCH_MAX_MEMBERS:
            raise _invalid(
                "members",
                f"Schema describes array with at most {BATCH_MAX_MEMBERS} items, "
                f"{len(entries)} found instead",
            )
        update_existing = body.get("update_existing") is True
        sync_tags = body.get("sync_tags") is True
        skip_duplicates = query.get("skip_duplicate_check") == "true"
        skip_merge_validation = query.get("skip_merge_validation") == "true"
        new: list[Member] = []
        updated: list[Member] = []
        errors: list[dict[str, str]] = []
        seen: set[str] = set()
        for entry in entries:
            entry = entry if isinstance(entry, dict) else {}
            email = entry.get("email_address")
            shown = email if isinstance(email, str) else ""
            if not valid_email(email):
                errors.append(
                    _batch_error(
                        shown, f"{shown} looks fake or invalid, please enter a real email address."
                    )
                )
                continue
            lowered = email.strip().lower()
            if lowered in seen:
                if not skip_duplicates:
                    errors.append(
                        _batch_error(email, f"{email} was listed more than once in this request.")
                    )
                continue
            seen.add(lowered)
            status = entry.get("status")
            if status in (None, ""):
                errors.append(_batch_error(email, "The status is required.", field_name="status"))
                continue
            existing = audience.members.get(subscriber_hash(email))
            if existing is not None and not update_existing:
                errors.append(
                    _batch_error(email, _exists_detail(email), code="ERROR_CONTACT_EXISTS")
                )
                continue
            try:
                member, created = self._write(
                    audience,
                    existing,
                    email,
                    entry,
                    status,
                    skip_merge_validation=skip_merge_validation,
                    sync_tags=sync_tags,
                )
            except ApiError as err:
                problem = (err.errors or [{}])[0]
                errors.append(
                    _batch_error(
                        email,
                        err.detail,
                        field_name=problem.get("field", ""),
                        field_message=problem.get("message", ""),
                    )
                )
                continue
            (new if created else updated).append(member)
        return 200, {
            "new_members": [self._member_view(audience, m) for m in new],
            "updated_members": [self._member_view(audience, m) for m in updated],
            "errors": errors,
            "total_created": len(new),
            "total_updated": len(updated),
            "error_count": len(errors),
            "_links": [],
        }


# ---------------------------------------------------------------------- helpers


def _not_found() -> ApiError:
    return ApiError(404, "Resource Not Found", NOT_FOUND_DETAIL)


def _invalid(field_name: str, message: str, *, detail: str = INVALID_DETAIL) -> ApiError:
    return ApiError(400, "Invalid Resource", detail, [{"field": field_name, "message": message}])


def _exists_detail(email: str) -> str:
    return f"{email} is already a list member. Use PUT to insert or update list members."


def _batch_error(
    email: str,
    error: str,
    *,
    code: str = "ERROR_GENERIC",
    field_name: str = "",
    field_message: str = "",
) -> dict[str, str]:
    entry = {"email_address": email, "error": error, "error_code": code}
    if field_name:
        entry["field"] = field_name
        entry["field_message"] = field_message
    return entry


def _int_param(query: httpx.QueryParams, name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _invalid(name, f"{raw!r} is not an integer") from None
    if value < 0:
        raise _invalid(name, "must not be negative")
    return value


def _paging(query: httpx.QueryParams) -> tuple[int, int]:
    count = _int_param(query, "count", 10)
    if count > MAX_COUNT:
        raise _invalid("count", f"count is at most {MAX_COUNT}")
    return count, _int_param(query, "offset", 0)


def _time_param(query: httpx.QueryParams, name: str) -> float | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return parse_iso(raw)
    except ValueError:
        raise _invalid(name, f"{raw!r} is not an ISO 8601 time") from None


def _body_time(body: dict[str, Any], name: str) -> int | None:
    raw = body.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(parse_iso(str(raw)) * 1000)
    except ValueError:
        raise _invalid(name, f"{raw!r} is not an ISO 8601 time") from None


def _merge_value(spec: MergeField, raw: Any) -> tuple[Any, str]:
    """(stored value, problem) for a merge field value from a request."""
    if raw is None or raw == "":
        return "", ""
    if spec.type == "address":
        if not isinstance(raw, dict):
            return None, "Please enter a complete address"
        parts = {k: str(raw.get(k, "") or "").strip() for k in ADDRESS_PARTS}
        if not all(parts[k] for k in ADDRESS_REQUIRED):
            return None, "Please enter a complete address"
        parts["country"] = parts["country"] or "US"
        return parts, ""
    if isinstance(raw, (dict, list, bool)):
        return None, "Please enter a valid value"
    if spec.type == "number":
        if isinstance(raw, (int, float)):
            return raw, ""
        try:
            number = float(str(raw))
        except ValueError:
            return None, "Please enter a number"
        return (int(number) if number.is_integer() else number), ""
    text = str(raw)
    if spec.type == "birthday" and not BIRTHDAY_RE.fullmatch(text):
        return None, "Please enter a month and day (MM/DD)"
    return text, ""


def _path_list(values: list[str]) -> list[list[str]]:
    return [p.strip().split(".") for v in values for p in v.split(",") if p.strip()]


def _pick(node: Any, paths: list[list[str]]) -> Any:
    """Keep only ``paths`` (dotted, applied through lists) of a response."""
    if isinstance(node, list):
        return [_pick(item, paths) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        below = [p[1:] for p in paths if p[0] == key]
        if not below:
            continue
        out[key] = value if any(not p for p in below) else _pick(value, below)
    return out


def _drop(node: Any, paths: list[list[str]]) -> Any:
    """Remove ``paths`` (dotted, applied through lists) from a response."""
    if isinstance(node, list):
        return [_drop(item, paths) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        below = [p[1:] for p in paths if p[0] == key]
        if any(not p for p in below):
            continue
        out[key] = _drop(value, below) if below else value
    return out
