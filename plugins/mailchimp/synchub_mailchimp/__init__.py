"""Mailchimp connector: audience members read incrementally, written in batches, consent first.

One stream per audience (``list_id`` in the stream's settings).

Reading lists the audience's members changed in a window ``(cursor - lookback, now - settle)``,
sorted by ``last_changed`` and paged by ``count``/``offset``. The window's upper end is fixed for
the run, so a member changed while the run reads leaves the window and is read by the next run; a
member leaving shifts the offsets of those after it, which ``total_items`` shows, and the read
steps back by that many (re-reading a few is harmless, skipping one is not). Archived members are
read in a second pass (``status=archived``). Members are keyed by ``contact_id``, which survives
an address change, so an ``upemail`` arrives as a change of the same member.

Writing sends, per batch of up to 500 members, ``POST /lists/{list_id}`` (batch subscribe):
members Mailchimp already holds with ``update_existing: true``, all others with
``update_existing: false``, so a member the hub did not know about is never changed by a status
the hub guessed: Mailchimp answers "already a list member", and that member gets a ``PUT`` by
subscriber hash with ``status_if_new`` only (its status stays as it is). Tags are set per tag in
batches (tags are static segments: ``members_to_add``/``members_to_remove``, 500 a call).

Consent is enforced here, not only by the hub's merge rules. Before writing, the connector lists
the audience's members that are not subscribed (unsubscribed, cleaned, archived, pending,
transactional), so it knows what Mailchimp holds right now:

* ``subscribed`` is never sent for a member Mailchimp holds as unsubscribed or cleaned. When the
  hub's opt-in is newer and came from the person, ``reoptin: pending`` sends ``pending`` (Mailchimp
  e-mails a confirmation); otherwise the member goes on the *needs re-opt-in* list (a conflict of
  kind ``needs_reoptin`` for review) and nothing is sent.
* A new member goes in as ``subscribed`` only with documented consent (``documented_methods``);
  otherwise as ``pending`` or not at all (``undocumented_consent``).
* An opt-out in the hub unsubscribes the member in Mailchimp; an opted-out person who is not in
  the audience is not added.
* Mailchimp's own refusals ("Member In Compliance State", "Forgotten Email Not Subscribed") are
  final rejections: logged, put on the needs re-opt-in list, not retried until the record changes.

A request that times out with unknown outcome is never sent again as the same batch: its members
go out one by one as idempotent ``PUT`` requests keyed by subscriber hash.

Erasing a person sends ``POST /lists/{list_id}/members/{subscriber_hash}/actions/delete-permanent``
for each of their addresses (and for the member the hub's id names, which may hold an address the
hub no longer knows). Mailchimp then refuses the address for good: re-adding it is the final
rejection "Forgotten Email Not Subscribed" (see above).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal
from urllib.parse import quote

import httpx
from pydantic import Field, SecretStr, field_validator, model_validator

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
    Record,
    Rejected,
    Stream,
    StreamSettings,
    WriteResult,
    parse_time,
)
from synchub.errors import AuthError, ConfigError, QuotaExhausted, RetryableError
from synchub.http import ApiSession, RateLimitPolicy, RequestRejected, account_key, json_object
from synchub.kit import BasicAuth, OffsetPaginator
from synchub.kit.erasure import Failure, erase_each
from synchub.plugins import hookimpl
from synchub.redact import register_secret

API_DOMAIN = "api.mailchimp.com"
#: Statuses Mailchimp holds as "this person must not be subscribed by an API call".
OPTED_OUT = frozenset({"unsubscribed", "cleaned"})
#: Members with these statuses are listed before writing, so the connector knows who they are.
NOT_SUBSCRIBED = ("unsubscribed", "cleaned", "archived", "pending", "transactional")
#: How Mailchimp names a member's signup source -> how the hub names the consent method.
SOURCE_METHODS = (
    ("form", "form"), ("signup", "form"), ("import", "import"), ("admin", "admin"), ("api", "api"),
)
MEMBER_FIELDS = (
    "id", "email_address", "unique_email_id", "contact_id", "full_name", "web_id", "email_type",
    "status", "unsubscribe_reason", "merge_fields", "stats", "ip_signup", "timestamp_signup",
    "ip_opt", "timestamp_opt", "member_rating", "last_changed", "language", "vip", "location",
    "source", "tags", "list_id",
)
#: Texts by which Mailchimp says a member may not be (re)subscribed.
COMPLIANCE = re.compile(r"compliance state|member in compliance", re.I)
FORGOTTEN = re.compile(r"permanently deleted|forgotten email", re.I)
#: Written members whose tags are set together (tags go in calls of 500 members per tag).
TAG_WINDOW = 2500
ALREADY_MEMBER = re.compile(r"already a list member", re.I)
_TITLE = re.compile(r'"title"\s*:\s*"([^"]*)"')
_DETAIL = re.compile(r'"detail"\s*:\s*"([^"]*)"')


def now() -> datetime:
    """The connector's wall clock (tests replace it)."""
    return datetime.fromtimestamp(time.time(), timezone.utc)


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: the MD5 of the lower-cased address."""
    return hashlib.md5(email.strip().lower().encode(), usedforsecurity=False).hexdigest()


def data_centre(api_key: str) -> str:
    """The data centre an API key belongs to: its suffix after the last ``-`` (``us6``)."""
    _, sep, dc = api_key.rpartition("-")
    if not sep or not re.fullmatch(r"[a-z]{2,4}\d{1,3}", dc):
        raise ValueError("a Mailchimp API key ends in its data centre, e.g. ...-us6")
    return dc


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00")


# --------------------------------------------------------------------------- settings


class MailchimpSettings(ConnectorSettings):
    #: The API key, from ``${ENV}``; its suffix names the data centre (``...-us6``).
    api_key: SecretStr
    #: Override the API root (a proxy, a test server); needs ``allow_any_host`` off Mailchimp.
    base_url: str | None = None
    allow_any_host: bool = False
    #: Connections with the same account share one budget of 10 simultaneous requests;
    #: by default the budget is keyed by the API key.
    account: str | None = None
    #: Mailchimp ends requests after 120 s.
    timeout_seconds: float = Field(default=120.0, gt=0, le=300)
    #: Simultaneous requests per API key (Mailchimp allows 10).
    max_concurrent: int = Field(default=10, ge=1, le=10)
    max_attempts: int = Field(default=5, ge=1, le=20)

    @field_validator("api_key")
    @classmethod
    def _key(cls, v: SecretStr) -> SecretStr:
        data_centre(v.get_secret_value())
        return v

    def root(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        return f"https://{data_centre(self.api_key.get_secret_value())}.{API_DOMAIN}/3.0"


class MailchimpStreamSettings(StreamSettings):
    #: The audience (list) id.
    list_id: str
    #: Members per page when reading (Mailchimp allows up to 1000).
    page_size: int = Field(default=1000, ge=1, le=1000)
    #: Members changed this recently before a run are left for the next run.
    settle_seconds: int = Field(default=60, ge=0)
    #: Re-read this much before the saved cursor on every run (re-reads cost no writes).
    lookback_seconds: int = Field(default=300, ge=0)
    #: First read: members changed from this time on (default: all).
    start_date: datetime | None = None
    #: Read archived members too (as members with status ``archived``).
    read_archived: bool = True

    # -- writing
    #: Members per batch subscribe call (Mailchimp allows up to 500).
    batch_size: int = Field(default=500, ge=1, le=500)
    #: Consent methods that count as documented consent for adding someone as ``subscribed``.
    documented_methods: list[Literal["double_opt_in", "form", "checkbox", "import", "admin", "api", "unknown"]] = Field(
        default_factory=lambda: ["double_opt_in", "form", "checkbox"]
    )
    #: A new member without documented consent: ``pending`` (Mailchimp asks them by e-mail) or
    #: ``skip`` (not added).
    undocumented_consent: Literal["pending", "skip"] = "skip"
    #: Someone who opted out in Mailchimp whose newer opt-in came from themselves (a form, a
    #: double opt-in elsewhere): ``pending`` re-asks them by e-mail, ``never`` only lists them
    #: for review.
    reoptin: Literal["pending", "never"] = "never"
    #: Members archived in Mailchimp by someone else are left archived unless this is on.
    unarchive: bool = False
    #: Tags every member this stream sends gets (and loses when it leaves the segment).
    tags: list[str] = Field(default_factory=list)
    #: Merge field values every member this stream sends gets (``{"SOURCE": "crm"}``).
    merge_fields: dict[str, str] = Field(default_factory=dict)
    #: Create merge fields the mapping writes but the audience lacks (as text fields).
    create_merge_fields: bool = False
    #: A member whose golden record left the stream's filter: ``untag`` (remove ``tags``),
    #: ``archive``, ``keep``, or ``delete_permanent`` (needs ``allow_permanent_delete``).
    on_leave: Literal["untag", "archive", "keep", "delete_permanent"] = "untag"
    allow_permanent_delete: bool = False

    @model_validator(mode="after")
    def _leave(self) -> MailchimpStreamSettings:
        if self.on_leave == "delete_permanent" and not self.allow_permanent_delete:
            raise ValueError("on_leave: delete_permanent erases members for good; set allow_permanent_delete: true to mean it")
        for tag in self.merge_fields:
            _check_merge_tag(tag)
        return self


def _check_merge_tag(tag: str) -> str:
    if not re.fullmatch(r"[A-Z0-9_]{1,10}", tag):
        raise ValueError(f"merge field tag {tag!r}: up to 10 upper-case letters, digits or _")
    return tag


# --------------------------------------------------------------------------- reading


def _consent_method(member: dict[str, Any]) -> str:
    if member.get("status") == "subscribed" and member.get("ip_opt") and member.get("timestamp_opt"):
        return "double_opt_in"
    source = str(member.get("source") or "").lower()
    for needle, method in SOURCE_METHODS:
        if needle in source:
            return method
    return "unknown"


def member_record(member: dict[str, Any], list_id: str) -> dict[str, Any]:
    """A member as the stream yields it: the API's fields plus a few derived ones the mapping
    uses (``member_key``, ``tag_names``, ``consent_at``, ``consent_method``, ``consent_source``)."""
    data = dict(member)
    status = member.get("status")
    data["member_key"] = member.get("contact_id") or member.get("id") or subscriber_hash(str(member.get("email_address") or ""))
    data["tag_names"] = [t.get("name") for t in member.get("tags") or [] if isinstance(t, dict) and t.get("name")]
    if status in ("subscribed", "pending"):
        data["consent_at"] = member.get("timestamp_opt") or member.get("timestamp_signup") or member.get("last_changed")
    else:
        data["consent_at"] = member.get("last_changed")
    if status in ("unsubscribed", "cleaned"):
        data["unsubscribe_at"] = member.get("last_changed")
    data["consent_method"] = _consent_method(member)
    data["consent_source"] = f"mailchimp audience {list_id}"
    return data


class AudienceStream(Stream):
    """The members of one Mailchimp audience."""

    primary_key = ("member_key",)
    cursor_field = "last_changed"
    handles_leave = True

    def __init__(self, name: str, connector: MailchimpConnector, settings: MailchimpStreamSettings):
        self.name = name
        self.connector = connector
        self.settings = settings
        self.list_id = settings.list_id
        #: During :meth:`erase`: whether the audience exists (None: not asked yet).
        self._audience_known: bool | None = None

    @property
    def session(self) -> ApiSession:
        return self.connector.session

    @property
    def members_path(self) -> str:
        return f"lists/{self.list_id}/members"

    # -- read

    def read(self, state: dict[str, Any] | None) -> Iterator[ReadItem]:
        """The cursor is ``done_through``: every member changed at or before that second has
        been read (``last_changed`` has whole seconds). Checkpoints fall only between two
        seconds, never inside a group of members changed in the same second."""
        s = self.settings
        state = dict(state or {})
        upper = now() - timedelta(seconds=s.settle_seconds)
        passes = [("done_through", None)] + ([("archived_done_through", "archived")] if s.read_archived else [])
        for key, status in passes:
            done = parse_time(state.get(key))
            if done is not None:
                since = done - timedelta(seconds=s.lookback_seconds)
            elif s.start_date is not None:
                start = s.start_date if s.start_date.tzinfo else s.start_date.replace(tzinfo=timezone.utc)
                since = start - timedelta(seconds=1)
            else:
                since = None
            if since is not None and since >= upper - timedelta(seconds=1):
                continue
            for item in self._read_window(since, upper, status):
                if isinstance(item, datetime):
                    state[key] = iso(item)
                    yield Checkpoint(dict(state))
                else:
                    yield item
            # Members changed before ``upper`` (exclusive) are all read.
            state[key] = iso(upper - timedelta(seconds=1))
            yield Checkpoint(dict(state))

    def _read_window(self, since: datetime | None, upper: datetime, status: str | None) -> Iterator[ReadItem | datetime]:
        """Members with ``since < last_changed < upper``, oldest first; between them, the
        moments through which everything has come (for checkpoints)."""
        s = self.settings
        params: dict[str, Any] = {
            "count": s.page_size, "sort_field": "last_changed", "sort_dir": "ASC",
            "before_last_changed": iso(upper),
            "fields": ",".join([*(f"members.{f}" for f in MEMBER_FIELDS), "total_items"]),
        }
        if since is not None:
            params["since_last_changed"] = iso(since)
        if status is not None:
            params["status"] = status
        # Members that leave the window while we page (changed or archived meanwhile) move
        # the ones after them up; ``total_items`` shows it and the paginator steps back so none
        # is skipped (re-reads are harmless). ``count`` is in ``params`` already.
        pager = OffsetPaginator(items_key="members", page_size=None, total_key="total_items",
                                step_back_on_shrink=True, parse=self.connector.json)
        last_second: datetime | None = None  # of the last member yielded
        for pg in pager.pages(self.session, self.members_path, params):
            members, offset = pg.items, pg.offset or 0
            page: list[tuple[datetime | None, ReadItem]] = []
            for i, member in enumerate(members):
                if not isinstance(member, dict) or not member.get("email_address"):
                    page.append((None, Rejected(ref=f"{self.list_id}/members?offset={offset + i}",
                                                reason="member without an email address", raw=str(member)[:500])))
                    continue
                ts = parse_time(member.get("last_changed"))
                page.append((ts, Record(member_record(member, self.list_id), ref=f"{self.list_id}/{member.get('id')}",
                                        observed_at=ts)))
            # One checkpoint per page, where the page's last group of equal seconds begins.
            stamps = [ts for ts, _ in page if ts is not None]
            cut, through = None, None
            if stamps:
                last = stamps[-1]
                for j in range(len(page) - 1, -1, -1):
                    ts = page[j][0]
                    if ts is not None and ts < last:
                        cut, through = j + 1, ts
                        break
                if cut is None and last_second is not None and last > last_second:
                    cut, through = 0, last_second
            for j, (ts, item) in enumerate(page):
                if j == cut:
                    yield through  # type: ignore[misc]
                yield item
                if ts is not None:
                    last_second = ts if last_second is None else max(last_second, ts)

    # -- what Mailchimp holds now

    def not_subscribed(self) -> dict[str, dict[str, Any]]:
        """Members that are not subscribed, by lower-cased address: ``{status, contact_id,
        last_changed}``. Listed once per write, so consent decisions rest on Mailchimp's state
        at that moment, not on the last read."""
        found: dict[str, dict[str, Any]] = {}
        for status in NOT_SUBSCRIBED:
            for m in self.connector.listing(self.members_path, "members", {
                "status": status,
                "fields": "members.email_address,members.status,members.contact_id,members.last_changed,total_items",
            }):
                if m.get("email_address"):
                    found[str(m["email_address"]).lower()] = {
                        "status": m.get("status") or status, "contact_id": m.get("contact_id"),
                        "last_changed": parse_time(m.get("last_changed")),
                    }
        return found

    # -- write

    #: A dry run looks members up one by one up to this many records; more, and it lists the
    #: audience (1,000 members a call) instead.
    PEEK_ONE_BY_ONE = 200

    def peek(self, records: list[OutRecord]) -> dict[str, dict[str, Any]]:
        """The audience's members for these records as they are now (address, merge fields,
        language, status, tag names), by golden id: for a dry run's before -> after."""
        wanted = {str(r.data.get("email_address") or "").strip().lower(): r.golden_id for r in records}
        wanted.pop("", None)
        fields = ["email_address", "merge_fields", "language", "status", "tags"]
        members: list[dict[str, Any]] = []
        if len(wanted) <= self.PEEK_ONE_BY_ONE:
            for email in wanted:
                try:
                    members.append(self.connector.json(self.session.get(
                        f"{self.members_path}/{subscriber_hash(email)}", params={"fields": ",".join(fields)})))
                except RequestRejected as exc:
                    if exc.status != 404:  # not in the audience: nothing held
                        raise
        else:
            members = list(self.connector.listing(self.members_path, "members", {
                "fields": ",".join([*(f"members.{f}" for f in fields), "total_items"])}))
        out: dict[str, dict[str, Any]] = {}
        for m in members:
            gid = wanted.get(str(m.get("email_address") or "").lower())
            if gid is not None:
                out[gid] = {"email_address": m.get("email_address"), "merge_fields": dict(m.get("merge_fields") or {}),
                            "language": m.get("language") or None, "status": m.get("status"),
                            "tags": sorted(t.get("name") for t in m.get("tags") or [] if isinstance(t, dict) and t.get("name"))}
        return out

    def plan(self, records: Iterable[OutRecord], fields: list[str]) -> Iterator[PlannedWrite]:
        records = list(records)
        if not records:
            return
        held = self.not_subscribed()
        for rec in records:
            if rec.holds is not None and rec.previous is None:
                # In the audience although the hub never wrote it there: an update, not a create.
                rec.previous = {"email_address": rec.holds.get("email_address")}
            d = self._decide(rec, held)
            changes: dict[str, tuple[Any, Any]] = {}
            if d.action in ("create", "update"):
                before = rec.holds if rec.holds is not None else (rec.previous or {})
                for k in ("email_address", "language"):
                    if before.get(k) != d.body.get(k) and d.body.get(k) is not None:
                        changes[k] = (before.get(k), d.body.get(k))
                bmf = before.get("merge_fields") or {}
                for k, v in (d.body.get("merge_fields") or {}).items():
                    if bmf.get(k) != v:
                        changes[f"merge_fields.{k}"] = (bmf.get(k), v)
                if d.status is not None and d.status != d.current_status:
                    changes["status"] = (d.current_status, d.status)
                if rec.holds is not None:
                    had = set(rec.holds.get("tags") or [])
                    after = (had | d.tags_add) - d.tags_remove
                    if after != had:
                        changes["tags"] = (sorted(had), sorted(after))
                elif d.tags_add or d.tags_remove:
                    changes["tags"] = (sorted(d.tags_remove), sorted(d.tags_add))
                if d.action == "update" and not changes:
                    d.action = "unchanged"
            yield PlannedWrite(rec.golden_id, d.action, rec.external_id, changes, d.reason)

    def write(self, records: Iterable[OutRecord], fields: list[str]) -> Iterator[WriteResult]:
        records = list(records)
        if not records:
            return
        self.connector.ensure_merge_fields(self.list_id, self.settings, records)
        held = self.not_subscribed()
        batch: list[_Decision] = []
        sent: list[tuple[_Decision, WriteResult]] = []
        leaving: list[_Decision] = []
        opting_out: list[_Decision] = []
        for rec in records:
            d = self._decide(rec, held)
            if d.action in ("create", "update"):
                batch.append(d)
                if len(batch) >= self.settings.batch_size:
                    sent += self._send(batch)
                    batch = []
                    if len(sent) >= TAG_WINDOW:
                        yield from self._tag_and_finish(sent)
                        sent = []
            elif d.action == "leave":
                leaving.append(d)
            elif d.action == "optout":
                opting_out.append(d)
            elif d.action == "skip":
                yield WriteResult(rec.golden_id, ok=True, external_id=rec.external_id, skipped=True, attention=d.attention)
            else:
                yield WriteResult(rec.golden_id, ok=False, external_id=rec.external_id, error=f"Mailchimp: {d.reason}")
        if batch:
            sent += self._send(batch)
        if sent:
            yield from self._tag_and_finish(sent)
        if opting_out:
            yield from self._opt_out(opting_out)
        if leaving:
            yield from self._leave(leaving)

    def _tag_and_finish(self, sent: list[tuple[_Decision, WriteResult]]) -> Iterator[WriteResult]:
        """Tags for the members written so far, one call per tag and 500 members; a member whose
        tags could not be set is reported failed (its write is repeated next run, harmlessly)."""
        failed = self._apply_tags([d for d, r in sent if r.ok])
        for d, r in sent:
            if r.ok and d.rec.golden_id in failed:
                r = WriteResult(d.rec.golden_id, ok=False, external_id=r.external_id, error=failed[d.rec.golden_id])
            yield r

    def _opt_out(self, items: list[_Decision]) -> Iterator[WriteResult]:
        """Opt-outs for people the hub does not know to be in the audience: a PATCH, which never
        creates a member; not there (404) means there is nothing to unsubscribe."""
        results: dict[str, WriteResult] = {}

        def one(d: _Decision) -> None:
            path = f"{self.members_path}/{subscriber_hash(d.email)}"
            gid = d.rec.golden_id
            try:
                m = self.connector.json(self.session.request("PATCH", path, json={"status": "unsubscribed"}, idempotent=True))
                results[gid] = self._written(d, m.get("contact_id") or m.get("id"), m.get("status"))
            except RequestRejected as exc:
                if exc.status == 404:
                    results[gid] = WriteResult(gid, ok=True, skipped=True, external_id=d.rec.external_id)
                else:
                    results[gid] = self._rejection(d, exc.body or str(exc))
            except RetryableError as exc:
                results[gid] = WriteResult(gid, ok=False, external_id=d.rec.external_id, error=f"Mailchimp: {exc}")

        self._each(items, one)
        for d in items:
            yield results[d.rec.golden_id]

    # -- deciding, one record at a time

    def _decide(self, rec: OutRecord, held: dict[str, dict[str, Any]]) -> _Decision:
        s = self.settings
        if rec.op in ("leave", "delete"):
            return self._decide_leave(rec, held)
        data = rec.data
        prev = rec.previous or {}
        hub_emails = [str(e).lower() for e in (data.get("emails") or []) if e]
        email = str(data.get("email_address") or "").strip()
        # Mailchimp's address for this member, while the hub still knows it: changing it would
        # be an address change the person did not make; adding the hub's other address would
        # make a second member.
        theirs = str(prev.get("email_address") or "").strip()
        if theirs and (theirs.lower() in hub_emails or not email):
            email = theirs
        d = _Decision(rec=rec, email=email)
        if not email or "@" not in email:
            d.action, d.reason = "reject", "no email address to send"
            return d
        consent = data.get("consent") or {}
        hub_status = consent.get("status")
        method = consent.get("method")
        at = parse_time(consent.get("at"))
        info = held.get(email.lower())
        current = info["status"] if info else None
        known = bool(rec.external_id) or info is not None or bool(rec.previous and rec.previous.get("email_address"))
        d.current_status = current if current else ("subscribed" if known else None)
        d.body = self._body(data, email)
        d.tags_add, d.tags_remove = self._tag_changes(data, prev)
        documented = hub_status == "subscribed" and method in s.documented_methods
        from_person = hub_status == "subscribed" and method in ("double_opt_in", "form")

        if current == "cleaned" and hub_status != "subscribed":
            # Bounced: Mailchimp sends nothing there any more and takes no status change.
            d.action, d.reason = "skip", "cleaned (bounced) in Mailchimp"
            return d
        if hub_status in OPTED_OUT:
            if current == "archived":
                d.action, d.reason = "skip", "opted out in the hub, archived in Mailchimp"
            elif known:
                d.action, d.status = "update", "unsubscribed"
            else:
                # Maybe in the audience as subscribed, unknown to the hub: unsubscribe it if it
                # is there, never add it.
                d.action, d.status = "optout", "unsubscribed"
                d.reason = f"{hub_status} in the hub: unsubscribed if in the audience, never added"
            return d
        if current in OPTED_OUT:
            opted_at = info.get("last_changed") if info else None
            newer = from_person and at is not None and (opted_at is None or at > opted_at)
            attention = Attention(
                "needs_reoptin",
                f"{current} in Mailchimp audience {self.list_id}; the hub says {hub_status or 'nothing'}"
                + (" (newer opt-in from the person)" if newer else ""),
                path="consent.email.status",
                values=[{"value": current, "connection": self.connector.context.name, "note": f"Mailchimp, {opted_at or ''}"},
                        {"value": hub_status, "connection": "hub", "note": f"{method or ''} {consent.get('at') or ''}".strip()}],
            )
            if newer and s.reoptin == "pending" and current == "unsubscribed":
                d.action, d.status, d.attention = "update", "pending", attention
                d.reason = "opted out in Mailchimp, newer opt-in from the person: asked again (pending)"
                return d
            if hub_status == "subscribed":
                d.action, d.attention = "skip", attention
                d.reason = f"{current} in Mailchimp: not re-subscribed; needs re-opt-in"
                return d
            # Nothing to change about consent: keep the member's data current, status as it is.
            d.action, d.status = "update", "unsubscribed"
            return d
        if current == "archived" and not (s.unarchive or rec.returning):
            d.action, d.reason = "skip", "archived in Mailchimp (unarchive: false)"
            return d
        if known and current != "archived":
            d.action = "update"
            if current in ("pending", "transactional") and documented:
                d.status = "subscribed"
            else:
                d.status = current or "subscribed"
            return d
        # A new member (as far as Mailchimp's not-subscribed lists and the hub know), or an
        # archived one brought back: the same consent rules as for someone new.
        d.action = "update" if current == "archived" else "create"
        if documented:
            d.status = "subscribed"
        elif hub_status in ("subscribed", "pending", None, "never") and s.undocumented_consent == "pending":
            d.status = "pending"
        else:
            d.action = "skip"
            d.reason = "no documented consent (undocumented_consent: skip)"
        return d

    def _decide_leave(self, rec: OutRecord, held: dict[str, dict[str, Any]]) -> _Decision:
        s = self.settings
        prev = rec.previous or {}
        email = str(prev.get("email_address") or rec.data.get("email_address") or "")
        d = _Decision(rec=rec, email=email)
        d.action = "leave"
        info = held.get(email.lower()) if email else None
        if not email or (info and info["status"] == "archived"):
            d.reason = "not in the audience"
            d.leave = "keep"
            return d
        d.leave = s.on_leave
        if s.on_leave == "untag":
            d.tags_remove = {t for t in s.tags}
            d.reason = f"left the segment: untag {', '.join(sorted(d.tags_remove)) or '(no tags configured)'}"
        else:
            d.reason = f"left the segment: {s.on_leave.replace('_', ' ')}"
        return d

    def _body(self, data: dict[str, Any], email: str) -> dict[str, Any]:
        body: dict[str, Any] = {"email_address": email}
        merge = {**{k: v for k, v in (data.get("merge_fields") or {}).items() if v not in (None, "")}, **self.settings.merge_fields}
        if merge:
            body["merge_fields"] = {k: (str(v) if not isinstance(v, (dict, int, float)) else v) for k, v in merge.items()}
        if data.get("language"):
            body["language"] = str(data["language"])
        if isinstance(data.get("vip"), bool):
            body["vip"] = data["vip"]
        return body

    def _tag_changes(self, data: dict[str, Any], prev: dict[str, Any]) -> tuple[set[str], set[str]]:
        wanted = {str(t) for t in data.get("tags") or []} | set(self.settings.tags)
        had = {str(t) for t in prev.get("tags") or []}
        return wanted - had, had - wanted

    # -- sending

    def _send(self, batch: list[_Decision]) -> list[tuple[_Decision, WriteResult]]:
        """One batch: members Mailchimp holds with update_existing, the others without."""
        results: dict[str, WriteResult] = {}
        by_email: dict[str, _Decision] = {}
        dupes: list[_Decision] = []
        for d in batch:
            if d.email.lower() in by_email:
                dupes.append(d)  # two golden records, one address: the second waits a run
            else:
                by_email[d.email.lower()] = d
        for update_existing in (True, False):
            group = [d for d in by_email.values() if (d.action == "update") == update_existing]
            if group:
                self._batch_subscribe(group, update_existing, results)
        out = [(d, results[d.rec.golden_id]) for d in by_email.values()]
        for d in dupes:
            out.append((d, WriteResult(d.rec.golden_id, ok=False, external_id=d.rec.external_id,
                                       error=f"Mailchimp: {d.email} is also sent for another golden record in this batch")))
        return out

    def _batch_subscribe(self, group: list[_Decision], update_existing: bool, results: dict[str, WriteResult]) -> None:
        members = []
        for d in group:
            m = dict(d.body)
            m["status"] = d.status
            members.append(m)
        try:
            response = self.session.post(f"lists/{self.list_id}", json={"members": members, "update_existing": update_existing},
                                         idempotent=False)
        except RetryableError as exc:
            # Outcome unknown (timeout, 5xx after the request went out): never the same batch
            # again; each member goes as an idempotent PUT keyed by its subscriber hash.
            self.connector.context.log.warning("batch subscribe to %s: %s; sending its %d members one by one",
                                               self.list_id, exc, len(group))
            self._each(group, lambda d: self._one(d, results, "update" if update_existing else "create"))
            return
        except RequestRejected as exc:
            if len(group) > 1 and exc.status == 400:
                half = len(group) // 2
                self._batch_subscribe(group[:half], update_existing, results)
                self._batch_subscribe(group[half:], update_existing, results)
                return
            for d in group:
                results[d.rec.golden_id] = self._rejection(d, exc.body or str(exc))
            return
        body = self.connector.json(response)
        by_email = {d.email.lower(): d for d in group}
        again: list[_Decision] = []
        for err in body.get("errors") or []:
            d = by_email.pop(str(err.get("email_address") or "").lower(), None)
            if d is None:
                continue
            text = str(err.get("error") or "")
            if err.get("error_code") == "ERROR_CONTACT_EXISTS" or ALREADY_MEMBER.search(text):
                again.append(d)  # a member the hub did not know: update it, status untouched
            else:
                results[d.rec.golden_id] = self._rejection(d, text)
        returned = {str(m.get("email_address") or "").lower(): m
                    for m in [*(body.get("new_members") or []), *(body.get("updated_members") or [])] if isinstance(m, dict)}
        for email, d in by_email.items():
            m = returned.get(email, {})
            results[d.rec.golden_id] = self._written(d, m.get("contact_id") or d.rec.external_id or m.get("id"), m.get("status") or d.status)
        if again:
            self._each(again, lambda d: self._one(d, results, "merge"))

    def _one(self, d: _Decision, results: dict[str, WriteResult], mode: str) -> None:
        """One member, safe to repeat: ``create`` is a PUT by subscriber hash with
        ``status_if_new`` (a member that exists keeps its status); ``update`` a PATCH with the
        decided status; ``merge`` a PATCH of the member's data with its status untouched.
        A PATCH never creates a member."""
        body = dict(d.body)
        path = f"{self.members_path}/{subscriber_hash(d.email)}"
        try:
            if mode == "create":
                body["status_if_new"] = d.status
                response = self.session.request("PUT", path, json=body)
            else:
                if mode == "update" and d.status is not None:
                    body["status"] = d.status
                response = self.session.request("PATCH", path, json=body, idempotent=True)
        except RequestRejected as exc:
            results[d.rec.golden_id] = self._rejection(d, exc.body or str(exc))
            return
        except RetryableError as exc:
            results[d.rec.golden_id] = WriteResult(d.rec.golden_id, ok=False, external_id=d.rec.external_id,
                                                   error=f"Mailchimp: {exc}")
            return
        m = self.connector.json(response)
        results[d.rec.golden_id] = self._written(d, m.get("contact_id") or d.rec.external_id or m.get("id"), m.get("status"))

    def _written(self, d: _Decision, external_id: str | None, status: str | None) -> WriteResult:
        holds = dict(d.rec.data)
        holds["email_address"] = d.email
        holds["consent"] = {**(holds.get("consent") or {}), "status": _hub_status(status)}
        holds["tags"] = sorted(({str(t) for t in (d.rec.previous or {}).get("tags") or []} | d.tags_add) - d.tags_remove)
        return WriteResult(d.rec.golden_id, ok=True, external_id=external_id, holds=holds, attention=d.attention)

    def _rejection(self, d: _Decision, text: str) -> WriteResult:
        title = _TITLE.search(text)
        detail = _DETAIL.search(text)
        message = " ".join(x for x in ((title.group(1) if title else None), (detail.group(1) if detail else None)) if x) or text
        final = bool(COMPLIANCE.search(text) or FORGOTTEN.search(text))
        attention = None
        if final:
            state = "permanently deleted" if FORGOTTEN.search(text) else "in compliance state (opted out or bounced)"
            attention = Attention("needs_reoptin", f"Mailchimp refuses {d.email}: {state}", path="consent.email.status",
                                  values=[{"value": state, "connection": self.connector.context.name, "note": message[:300]}])
        return WriteResult(d.rec.golden_id, ok=False, external_id=d.rec.external_id, error=f"Mailchimp: {message}"[:1000],
                           final=final, attention=attention)

    def _each(self, items: list[_Decision], fn: Callable[[_Decision], None]) -> None:
        """Run per-member requests side by side, within the API key's connection cap."""
        workers = min(self.connector.settings.max_concurrent, len(items))  # type: ignore[attr-defined]
        if workers <= 1:
            for d in items:
                fn(d)
            return
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mailchimp") as pool:
            list(pool.map(fn, items))

    # -- tags: one call per tag and 500 members

    def _apply_tags(self, done: list[_Decision]) -> dict[str, str]:
        """Set the tag changes of ``done``; returns the golden ids whose changes failed."""
        adds: dict[str, list[_Decision]] = {}
        removes: dict[str, list[_Decision]] = {}
        for d in done:
            for t in d.tags_add:
                adds.setdefault(t, []).append(d)
            for t in d.tags_remove:
                removes.setdefault(t, []).append(d)
        failed: dict[str, str] = {}
        if not adds and not removes:
            return failed
        ids = self.connector.tag_ids(self.list_id, set(adds) | set(removes), create=set(adds))
        for tag in sorted(set(adds) | set(removes)):
            seg = ids.get(tag)
            if seg is None:
                continue  # removing a tag the audience does not have: nothing to do
            add, remove = adds.get(tag, []), removes.get(tag, [])
            for i in range(0, max(len(add), len(remove)), 500):
                chunk_add, chunk_remove = add[i:i + 500], remove[i:i + 500]
                body: dict[str, Any] = {}
                if chunk_add:
                    body["members_to_add"] = [d.email for d in chunk_add]
                if chunk_remove:
                    body["members_to_remove"] = [d.email for d in chunk_remove]
                try:
                    # Adding and removing the same members again changes nothing: safe to repeat.
                    self.session.post(f"lists/{self.list_id}/segments/{seg}", json=body, idempotent=True)
                except (RequestRejected, RetryableError) as exc:
                    for d in [*chunk_add, *chunk_remove]:
                        failed[d.rec.golden_id] = f"Mailchimp: tag {tag!r} not set: {exc}"
        return failed

    # -- records that left the segment

    def _leave(self, leaving: list[_Decision]) -> Iterator[WriteResult]:
        results: dict[str, WriteResult] = {}
        failed = self._apply_tags([d for d in leaving if d.leave == "untag" and d.tags_remove])
        for d in leaving:
            if d.leave in ("archive", "delete_permanent"):
                continue
            gid = d.rec.golden_id
            results[gid] = WriteResult(gid, ok=gid not in failed, external_id=d.rec.external_id, error=failed.get(gid))

        def remove(d: _Decision) -> None:
            path = f"{self.members_path}/{subscriber_hash(d.email)}"
            try:
                if d.leave == "archive":
                    self.session.request("DELETE", path)
                else:
                    self.session.post(f"{path}/actions/delete-permanent", idempotent=True)
                results[d.rec.golden_id] = WriteResult(d.rec.golden_id, ok=True, external_id=d.rec.external_id)
            except RequestRejected as exc:
                ok = exc.status == 404  # already gone
                results[d.rec.golden_id] = WriteResult(d.rec.golden_id, ok=ok, external_id=d.rec.external_id,
                                                       error=None if ok else f"Mailchimp: {exc}")
            except RetryableError as exc:
                results[d.rec.golden_id] = WriteResult(d.rec.golden_id, ok=False, external_id=d.rec.external_id,
                                                       error=f"Mailchimp: {exc}")

        self._each([d for d in leaving if d.leave in ("archive", "delete_permanent")], remove)
        for d in leaving:
            yield results[d.rec.golden_id]

    # -- erasing

    def erase(self, targets: list[ErasureTarget]) -> Iterator[ErasureResult]:
        """Delete each person's members for good, one ``delete-permanent`` per address. 204 and
        404 (no such member: never there, or deleted already) both confirm. One result per
        target; after the API key was refused, the quota spent or the audience found missing,
        the remaining targets fail without sending anything (retried on the next run)."""
        self._audience_known = None
        yield from erase_each(targets, self._erase_one, self._erase_failure)

    def _erase_failure(self, exc: Exception, target: ErasureTarget) -> Failure:
        if isinstance(exc, AuthError):
            return Failure(f"Mailchimp refused the API key ({exc}); erasing needs a valid key of a user who may "
                           f"delete contacts of audience {self.list_id}", stop=True)
        if isinstance(exc, (QuotaExhausted, _AudienceMissing)):
            return Failure(f"not erased: {exc}", stop=True)
        if isinstance(exc, RequestRejected):
            if exc.status in (401, 403):
                return Failure(f"Mailchimp refused access ({exc}); erasing needs an API key of a user who may delete "
                               f"contacts of audience {self.list_id}")
            # 400: Mailchimp refuses the request itself; sending it again cannot help.
            return Failure(f"Mailchimp refused the permanent delete: {exc}", retryable=exc.status not in (400, 422))
        if isinstance(exc, RetryableError):
            return Failure(f"Mailchimp did not answer, retries spent: {exc}")
        return Failure(f"{type(exc).__name__}: {exc}")

    def _erase_one(self, target: ErasureTarget) -> ErasureResult:
        hashes = list(dict.fromkeys(subscriber_hash(e) for e in target.emails if e and e.strip()))
        ext = str(target.external_id or "").strip()
        if ext and ext.lower() not in hashes:
            # The stream's source id is the member's contact_id (an address change keeps it) or
            # its hash; both look alike (32 hex digits). Ask for the member it names: its
            # address may not be among the hub's.
            found = self._member_hash(ext)
            if found is not None and found not in hashes:
                hashes.append(found)
        if not hashes:
            return ErasureResult(target, "confirmed", f"not held: no member of audience {self.list_id} to erase")
        deleted = 0
        for h in hashes:
            try:
                # Deleting again answers 404: safe to resend after a timeout.
                self.session.post(f"{self.members_path}/{h}/actions/delete-permanent", idempotent=True)
                deleted += 1
            except RequestRejected as exc:
                if exc.status != 404:
                    raise
                self._check_audience()
        if not deleted:
            return ErasureResult(target, "confirmed", f"not held: no member of audience {self.list_id}")
        return ErasureResult(target, "confirmed", f"{deleted} member(s) of audience {self.list_id} permanently deleted"
                                                  + (f", {len(hashes) - deleted} not held" if deleted < len(hashes) else ""))

    def _member_hash(self, key: str) -> str | None:
        """The subscriber hash of the member ``key`` (a contact_id) names; None: no such member."""
        try:
            body = self.connector.json(self.session.get(f"{self.members_path}/{quote(key, safe='')}",
                                                        params={"fields": "id,email_address"}))
        except RequestRejected as exc:
            if exc.status != 404:
                raise
            self._check_audience()
            return None
        if body.get("email_address"):
            return subscriber_hash(str(body["email_address"]))
        return str(body["id"]).lower() if body.get("id") else None

    def _check_audience(self) -> None:
        """Mailchimp answers 404 for a missing audience too: make sure a 404 means "no such
        member" before it counts as erased (once per call of :meth:`erase`)."""
        if self._audience_known is None:
            try:
                self.session.get(f"lists/{self.list_id}", params={"fields": "id"})
                self._audience_known = True
            except RequestRejected as exc:
                if exc.status != 404:
                    raise
                self._audience_known = False
        if not self._audience_known:
            raise _AudienceMissing(f"Mailchimp has no audience {self.list_id} (check the stream's list_id)")


def _hub_status(status: str | None) -> str | None:
    return {"transactional": "never", "archived": None}.get(status, status) if status else None


class _AudienceMissing(Exception):
    """The stream's audience does not exist (a 404 then says nothing about a member)."""


@dataclass
class _Decision:
    rec: OutRecord
    email: str
    action: str = "skip"  # create | update | skip | reject | leave
    status: str | None = None
    current_status: str | None = None
    body: dict[str, Any] = field(default_factory=dict)
    tags_add: set[str] = field(default_factory=set)
    tags_remove: set[str] = field(default_factory=set)
    reason: str | None = None
    attention: Attention | None = None
    leave: str | None = None


# --------------------------------------------------------------------------- the connector


class MailchimpPolicy(RateLimitPolicy):
    """Mailchimp: 10 simultaneous connections per API key, no rate headers; bare 403/429 = throttle."""

    vendor = "mailchimp"
    bare_error_is_throttle = True

    def __init__(self, *, max_concurrent: int = 10):
        self.max_concurrent = max_concurrent


class MailchimpConnector(Connector):
    name = "mailchimp"
    Settings = MailchimpSettings
    StreamSettings = MailchimpStreamSettings

    def __init__(self, context: Any):
        super().__init__(context)
        s: MailchimpSettings = self.settings  # type: ignore[assignment]
        key = s.api_key.get_secret_value()
        register_secret(key)
        root = s.root()
        self.client: httpx.Client = context.http.build(
            root + "/", allowed_hosts=("." + API_DOMAIN,), allow_any_host=s.allow_any_host,
            timeout=s.timeout_seconds, headers={"Accept": "application/json"}, auth=BasicAuth("synchub", key),
        )
        self.session: ApiSession = context.http.session(
            self.client, policy=MailchimpPolicy(max_concurrent=s.max_concurrent),
            account=s.account or account_key(key), max_attempts=s.max_attempts,
        )
        self._streams: dict[str, AudienceStream] | None = None
        self._merge_fields: dict[str, set[str]] = {}
        self._tags: dict[str, dict[str, int]] = {}

    @staticmethod
    def json(response: httpx.Response) -> dict[str, Any]:
        return json_object(response, "Mailchimp", empty_ok=True)

    def streams(self) -> dict[str, Stream]:
        if self._streams is None:
            self._streams = {
                name: AudienceStream(name, self, settings)  # type: ignore[arg-type]
                for name, settings in self.context.stream_settings.items()
            }
        return dict(self._streams)

    # -- merge fields and tags of an audience

    def listing(self, path: str, key: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every item of a collection (``key`` in each page), 1000 a page until ``total_items``.
        For collections that do not move while listed; the member read has its own paging."""
        pager = OffsetPaginator(items_key=key, page_size=1000, limit_param="count", total_key="total_items",
                                parse=self.json)
        yield from (x for x in pager.items(self.session, path, params) if isinstance(x, dict))

    def merge_field_tags(self, list_id: str) -> set[str]:
        if list_id not in self._merge_fields:
            self._merge_fields[list_id] = {
                str(f["tag"]) for f in self.listing(f"lists/{list_id}/merge-fields", "merge_fields", {}) if f.get("tag")}
        return self._merge_fields[list_id]

    def ensure_merge_fields(self, list_id: str, settings: MailchimpStreamSettings, records: list[OutRecord]) -> None:
        """Every merge field the records carry must exist in the audience (Mailchimp drops
        unknown ones silently). Missing ones are created when the stream allows it."""
        wanted = set(settings.merge_fields)
        for rec in records:
            wanted |= {k for k, v in (rec.data.get("merge_fields") or {}).items() if v not in (None, "")}
        missing = sorted(wanted - self.merge_field_tags(list_id))
        if not missing:
            return
        if not settings.create_merge_fields:
            raise ConfigError(f"Mailchimp audience {list_id} has no merge field(s) {', '.join(missing)}: create them "
                              "in Mailchimp, remove them from the mapping, or set create_merge_fields: true")
        for tag in missing:
            _check_merge_tag(tag)
            try:
                self.session.post(f"lists/{list_id}/merge-fields", json={"name": tag.title(), "tag": tag, "type": "text"},
                                  idempotent=False)
            except RetryableError:
                pass  # unknown outcome: the list below tells
            self._merge_fields.pop(list_id, None)
        still = sorted(set(missing) - self.merge_field_tags(list_id))
        if still:
            raise ConfigError(f"Mailchimp audience {list_id}: could not create merge field(s) {', '.join(still)}")

    def tag_ids(self, list_id: str, names: set[str], *, create: set[str]) -> dict[str, int]:
        """Tag name -> static segment id, creating the tags in ``create`` that do not exist."""
        if list_id not in self._tags or not names <= set(self._tags[list_id]):
            self._tags[list_id] = {
                str(x.get("name")): int(x["id"])
                for x in self.listing(f"lists/{list_id}/segments", "segments",
                                      {"type": "static", "fields": "segments.id,segments.name,total_items"})
                if x.get("id") is not None}
        known = self._tags[list_id]
        for name in sorted(create - set(known)):
            body = self.json(self.session.post(f"lists/{list_id}/segments", json={"name": name, "static_segment": []},
                                               idempotent=False))
            if body.get("id") is not None:
                known[name] = int(body["id"])
        return {n: known[n] for n in names if n in known}

    def check(self) -> CheckResult:
        lines: list[str] = []
        ok = True
        try:
            self.json(self.session.get("ping"))
        except AuthError as exc:
            return CheckResult(ok=False, lines=[f"API key rejected: {exc}"])
        lines.append(f"API reachable at {self.client.base_url.host}")
        for name, stream in self.streams().items():
            assert isinstance(stream, AudienceStream)
            try:
                body = self.json(self.session.get(f"lists/{stream.list_id}", params={"fields": "id,name,stats.member_count"}))
                count = (body.get("stats") or {}).get("member_count")
                lines.append(f"{name}: audience {body.get('name')!r} ({stream.list_id}), {count} subscribed members; "
                             f"merge fields: {', '.join(sorted(self.merge_field_tags(stream.list_id)))}")
            except RequestRejected as exc:
                ok = False
                lines.append(f"{name}: cannot read audience {stream.list_id}: {exc}")
        return CheckResult(ok=ok, lines=lines)

    def close(self) -> None:
        self.client.close()


@hookimpl
def register_connectors() -> list[type[Connector]]:
    return [MailchimpConnector]
