"""HubSpot CRM connector: contacts and companies, read incrementally and written in batches.

Reading goes through the CRM search API, sorted by last-modified time, and copes with its limits:

* **10,000 results per query**: a query is never paged past the cap. Before the cap the read
  restarts with a new query that starts where the records read so far end.
* **Many records with one timestamp** (a bulk update or an import): the group of records with
  that timestamp is read on its own, sorted by ``hs_object_id`` and keyed by the last id seen, so
  a group of any size is read completely, in bounded queries, without looping.
* **Search index lag**: records changed in the last ``index_lag_seconds`` before a run starts
  are left for the next run (the index may not show them yet); ``lookback_seconds`` re-reads an
  overlap on top of that, for portals whose index lags more. The saved cursor is therefore never
  later than the run's start.
* **Deletions** never show in searches: a periodic sweep lists archived records
  (``archived=true``) and reports them as deleted.
* **Merges**: a contact that absorbed others lists their ids in ``hs_merged_object_ids``; the hub
  re-keys what it holds under those ids instead of keeping a duplicate.

The cursor is the pair (last-modified ms, object id): every checkpoint is a place where all
records before it in that order are committed.

Writing sends only the properties that changed since the last write, 100 inputs per batch call:
``batch/update`` when the HubSpot id is known, ``batch/upsert`` by a unique property (``email``
for contacts) otherwise, ``batch/create`` as the last resort. Empty values never clear a HubSpot
property unless it is listed in ``clear_properties``. A 207 multi-status rejects the failed inputs
one by one; a batch refused as a whole (400) is split until the bad inputs are found.

Dry runs (``synchub sync --dry-run``) read what HubSpot holds now with ``batch/read`` (100 inputs a
call, the out mapping's properties): by id when the hub knows it, otherwise by the upsert property
(``idProperty: email`` for contacts). The plan shows the properties the write would send whose
value differs from HubSpot's, before -> after; a record HubSpot holds is an update even when the
hub never wrote it, and a known id HubSpot no longer holds is a ``reject`` (the update would fail).

Erasing (contacts only) sends ``POST /crm/v3/objects/contacts/gdpr-delete`` per person: by the
HubSpot id when the hub knows it, otherwise (and when HubSpot no longer knows that id) by each of
the person's e-mail addresses (``idProperty: email``). HubSpot answers 204 for an address it does
not hold too, and blocklists it, so the person cannot come back through a form or an import.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone, tzinfo
from typing import Any, Literal
from zoneinfo import ZoneInfo

import httpx
from pydantic import Field, SecretStr, field_validator, model_validator

from synchub.connector import (
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
)
from synchub.errors import AuthError, FatalRunError, QuotaExhausted, RetryableError
from synchub.http import (
    AccountLimiter,
    ApiSession,
    OAuthToken,
    RateLimitPolicy,
    RequestRejected,
    TokenGrant,
    account_key,
    header_number,
    json_object,
    next_midnight,
    response_json,
)
from synchub.kit import CursorPaginator, refresh_token_grant
from synchub.kit.erasure import Failure, erase_each
from synchub.plugins import hookimpl
from synchub.redact import redact, register_secret

API_HOSTS = ("api.hubapi.com", "api.hubspot.com")
#: HubSpot refuses to page a search past this many results.
SEARCH_CAP = 10_000
#: The last-modified property each object type is searched and sorted by.
MODIFIED_PROPERTY = {"contacts": "lastmodifieddate", "companies": "hs_lastmodifieddate"}
#: Properties read when a stream's settings do not replace them (custom ones go in ``properties``).
DEFAULT_PROPERTIES = {
    "contacts": [
        "email", "hs_additional_emails", "firstname", "lastname", "salutation", "phone", "mobilephone",
        "company", "jobtitle", "address", "city", "zip", "state", "country", "hs_language",
        "lifecyclestage", "hs_analytics_source", "createdate", "associatedcompanyid",
    ],
    "companies": [
        "name", "domain", "phone", "address", "address2", "city", "zip", "state", "country",
        "industry", "numberofemployees", "lifecyclestage", "createdate",
    ],
}
#: Read always: the cursor, and the ids a merge retired.
SYSTEM_PROPERTIES = ("hs_object_id", "hs_merged_object_ids")
#: The scope a GDPR delete of contacts needs.
ERASE_SCOPE = "crm.objects.contacts.write"


def now_ms() -> int:
    """Wall-clock time in ms since the epoch (tests replace it)."""
    return int(time.time() * 1000)


# --------------------------------------------------------------------------- settings


class OAuthSettings(ConnectorSettings):
    """An OAuth app's refresh credentials; the access token is refreshed ahead of expiry."""

    client_id: str
    client_secret: SecretStr
    refresh_token: SecretStr
    #: A current access token, if one is at hand (otherwise the first request refreshes).
    access_token: SecretStr | None = None
    token_path: str = "/oauth/v1/token"


class HubSpotSettings(ConnectorSettings):
    #: Private-app token (or an OAuth access token without refresh), from ``${ENV}``.
    token: SecretStr | None = None
    oauth: OAuthSettings | None = None
    base_url: str = "https://api.hubapi.com"
    #: Allow a base URL outside HubSpot's hosts (a proxy, a test server). Off by default (SSRF).
    allow_any_host: bool = False
    #: The HubSpot account (portal id). Connections with the same account share one rate budget;
    #: by default the budget is keyed by the credentials.
    account: str | None = None
    timeout_seconds: float = Field(default=30.0, gt=0)
    #: Client-side budget per account: requests per second and burst (HubSpot allows 100 or
    #: 190 per 10 s depending on the plan; the rate-limit headers pause the account earlier).
    requests_per_second: float = Field(default=10.0, gt=0)
    burst: int = Field(default=10, ge=1)
    #: The CRM search endpoints have a lower limit of their own (about 5 per second).
    search_requests_per_second: float = Field(default=4.0, gt=0)
    #: The daily quota resets at midnight in the account's time zone.
    daily_reset_timezone: str = "UTC"
    max_attempts: int = Field(default=5, ge=1, le=20)

    @model_validator(mode="after")
    def _one_credential(self) -> HubSpotSettings:
        if (self.token is None) == (self.oauth is None):
            raise ValueError("set exactly one of token (private app) or oauth (refresh credentials)")
        return self

    @field_validator("daily_reset_timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except Exception:
            raise ValueError(f"unknown time zone {v!r}") from None
        return v


class HubSpotStreamSettings(StreamSettings):
    #: HubSpot object type; defaults to the stream's name.
    object: Literal["contacts", "companies"] | None = None
    #: Extra properties to read (the allow-list for custom properties), added to the defaults.
    properties: list[str] = Field(default_factory=list)
    #: Replace the default property list instead of adding to it.
    replace_default_properties: bool = False
    page_size: int = Field(default=200, ge=1, le=200)
    #: Records changed this recently before a run are left for the next run (search index lag).
    index_lag_seconds: int = Field(default=60, ge=0)
    #: Re-read this much before the saved cursor on every run, for records the search index
    #: showed later than ``index_lag_seconds`` (re-reads of unchanged records cost no writes).
    lookback_seconds: int = Field(default=300, ge=0)
    #: How often archived (deleted) records are swept; 0 = every run, null = never.
    archived_sweep_hours: float | None = Field(default=24.0, ge=0)
    #: First read: records modified from this time on (default: everything).
    start_date: datetime | None = None
    #: Writes: unique-value property to upsert by when the HubSpot id is unknown
    #: (``email`` for contacts; companies have none by default and are created).
    upsert_property: str | None = None
    #: Properties a write may clear in HubSpot when the hub's value is empty.
    clear_properties: list[str] = Field(default_factory=list)
    batch_size: int = Field(default=100, ge=1, le=100)


# --------------------------------------------------------------------------- helpers


def parse_ms(value: Any) -> int | None:
    """HubSpot timestamps: ms-epoch numbers or strings, or ISO-8601 strings."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return int(value)
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def utcnow() -> datetime:
    """The connector's wall clock as a datetime (follows :func:`now_ms`)."""
    return datetime.fromtimestamp(now_ms() / 1000, timezone.utc)


def _stamp(obj: dict[str, Any], prop: str) -> int | None:
    return parse_ms((obj.get("properties") or {}).get(prop)) or parse_ms(obj.get("updatedAt"))


def _position(ts: int, last_id: str | None) -> tuple[int, float]:
    """Order of cursor positions: (ts, id) is after every id of ts once the group is done (None)."""
    if last_id is None:
        return ts, float("inf")
    try:
        return ts, float(last_id)
    except ValueError:
        return ts, float("-inf")


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat().replace("+00:00", "Z")


def _text_value(value: Any) -> str:
    """A property value as HubSpot takes it: text; lists as ``;``-joined multi-select values."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ";".join(_text_value(v) for v in value if v not in (None, ""))
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    return str(value)


def _is_empty(value: Any) -> bool:
    return value is None or not _text_value(value).strip()


def _filter(prop: str, operator: str, value: Any) -> dict[str, Any]:
    """One search filter."""
    return {"propertyName": prop, "operator": operator, "value": str(value)}


# --------------------------------------------------------------------------- the stream


class ObjectStream(Stream):
    """Contacts or companies of one HubSpot account."""

    primary_key = ("id",)

    def __init__(self, name: str, connector: HubSpotConnector, settings: HubSpotStreamSettings):
        self.name = name
        self.connector = connector
        self.settings = settings
        self.object = settings.object or name
        if self.object not in MODIFIED_PROPERTY:
            raise FatalRunError(f"stream {name!r}: unknown HubSpot object {self.object!r} (contacts, companies)")
        self.modified = MODIFIED_PROPERTY[self.object]
        self.cursor_field = self.modified
        self.upsert_property = settings.upsert_property or ("email" if self.object == "contacts" else None)
        base = [] if settings.replace_default_properties else DEFAULT_PROPERTIES[self.object]
        seen: dict[str, None] = {}
        for prop in [*base, *settings.properties, self.modified, *SYSTEM_PROPERTIES]:
            seen.setdefault(prop, None)
        self.properties = list(seen)
        #: Golden ids whose HubSpot id the last :meth:`peek` did not find.
        self._peek_missing: set[str] = set()

    # ----- reading ---------------------------------------------------------------------------

    def read(self, state: dict[str, Any] | None) -> Iterator[ReadItem]:
        state = dict(state or {})
        # One start time for all streams of the connection's run: a contact read by this run was
        # changed no later than the companies this run reads, so its company is there.
        started = self.connector.run_started_ms()
        upper = started - self.settings.index_lag_seconds * 1000
        ts = state.get("ts")
        last_id = state.get("id")
        if ts is None:
            start = self.settings.start_date
            ts = (parse_ms(start.isoformat()) or 0) - 1 if start else -1
            last_id = None
        ts = int(ts)
        # Checkpoints never go behind where this run started (a lookback re-reads, it does not
        # move the cursor back).
        self._floor: tuple[int, str | None] = (ts, None if last_id is None else str(last_id))
        self._last: tuple[int, str | None] | None = None
        self._started = started
        if self.settings.lookback_seconds and state.get("ts") is not None:
            # Records the index showed late were changed shortly before the previous run asked
            # (up to ``lookback_seconds`` before): re-read from there, if that is below the
            # cursor. A quiet portal whose cursor is far behind re-reads nothing.
            queried = int(state.get("queried_at") or ts)
            lowest = queried - self.settings.lookback_seconds * 1000
            if lowest < ts or (lowest == ts and last_id is not None):
                ts, last_id = lowest, None
        self._swept_at = state.get("swept_at")
        # The rest of a group of equal timestamps a previous run stopped inside of.
        if last_id is not None:
            yield from self._read_group(ts, str(last_id))
        while True:
            restart = yield from self._read_window(ts, upper)
            if restart is None:
                break
            # A page full of one timestamp (a bulk update): read that group by id, skipping
            # what this window already yielded of it, and go on after it.
            restart_at, seen = restart
            yield from self._read_group(restart_at, None, skip=seen)
            ts = restart_at
        if self._sweep_due(started):
            yield from self._sweep_archived()
            self._swept_at = _iso(started)
        final = self._last or self._floor
        yield Checkpoint(self._state(*final))

    def _state(self, ts: int, last_id: str | None) -> dict[str, Any]:
        if _position(ts, last_id) < _position(*self._floor):
            ts, last_id = self._floor  # a lookback re-read never moves the cursor back
        self._last = (ts, last_id)
        state: dict[str, Any] = {"ts": ts, "id": last_id, "queried_at": self._started}
        if self._swept_at:
            state["swept_at"] = self._swept_at
        return state

    def _search(self, filters: list[dict[str, Any]], sort: str, after: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "filterGroups": [{"filters": filters}],
            "sorts": [{"propertyName": sort, "direction": "ASCENDING"}],
            "properties": self.properties,
            "limit": self.settings.page_size,
            # The spec requires ``after``; "0" is the first page.
            "after": after or "0",
        }
        response = self.connector.search_session.post(
            f"/crm/v3/objects/{self.object}/search", json=body, idempotent=True
        )
        return self.connector.json(response)

    def _read_window(self, ts: int, upper: int) -> Iterator[ReadItem]:
        """Records modified after ``ts`` up to ``upper``, in time order.

        A query is paged by offset with a one-record overlap: each page must start with the
        record the previous page ended with. If it does not, the result set moved between the
        requests (a record left or entered the window, or HubSpot ordered equal timestamps
        differently) and a record at the boundary could be out of sight, so a new query starts
        at the newest timestamp read (``GTE``, skipping the ids already yielded with it). The
        same happens before the 10,000-result cap.

        Returns None when the window is complete, or a timestamp and the ids yielded with it
        when that timestamp's group fills a page (a bulk update): the caller reads the group by
        id and goes on after it.
        """
        if upper <= ts:
            return None
        lo, inclusive, seen = ts, False, set()  # seen: ids already yielded with timestamp lo
        size = self.settings.page_size
        while True:  # one query
            filters = [_filter(self.modified, "LTE", upper)]
            if lo >= 0:
                filters.insert(0, _filter(self.modified, "GTE" if inclusive else "GT", lo))
            # anchor: id and timestamp of the last record of the previous page
            offset, anchor, anchor_ts = 0, None, None
            newest, newest_ids = (lo, set(seen)) if inclusive else (None, set())
            restart = False
            while True:
                page = self._search(filters, self.modified, str(offset - 1) if offset else None)
                results = page.get("results") or []
                if offset:
                    moved = not results or str(results[0].get("id")) != anchor
                    # A group of equal timestamps across the boundary: HubSpot may order ties
                    # differently on each request, so its rest is asked for by keyset.
                    straddles = len(results) > 1 and _stamp(results[1], self.modified) == anchor_ts
                    if moved or straddles:
                        restart = True
                        break
                    results = results[1:]
                stamps = [_stamp(r, self.modified) for r in results]
                done = None
                for r, t in zip(results, stamps, strict=True):
                    if t is None:
                        continue
                    if newest is None or t > newest:
                        if newest is not None:
                            done = newest
                        newest, newest_ids = t, set()
                    newest_ids.add(str(r.get("id")))
                yield from self._records([r for r in results if str(r.get("id")) not in seen])
                more = (page.get("paging") or {}).get("next")
                if not more or not results:
                    if newest is not None:
                        yield Checkpoint(self._state(newest, None))
                    return None
                if done is not None:
                    yield Checkpoint(self._state(done, None))
                if newest is not None and len(newest_ids) >= size:
                    return newest, newest_ids
                seen = set()  # ids of lo were skipped on the first page, where they come first
                anchor, anchor_ts = str(results[-1].get("id")), stamps[-1]
                if len(stamps) > 1 and stamps[-1] == stamps[-2]:
                    # The page ends in a group of equal timestamps that may go on: ask for the
                    # rest by keyset right away rather than by offset.
                    restart = True
                    break
                offset += size if offset == 0 else size - 1
                if offset - 1 + size > SEARCH_CAP:
                    restart = True
                    break
            if restart:
                if newest is None:
                    continue  # nothing readable yet: ask again from the same place
                lo, inclusive, seen = newest, True, newest_ids

    def _read_group(self, ts: int, after_id: str | None, skip: set[str] | None = None) -> Iterator[ReadItem]:
        """Every record modified exactly at ``ts`` with an id after ``after_id``, by id
        (records whose id is in ``skip`` were yielded already and are not yielded again).
        Each page is a new query keyed by the last id (no offsets), so records that leave the
        group meanwhile cannot shift others out of sight, and a group of any size is read."""
        last = after_id
        while True:
            filters = [_filter(self.modified, "EQ", ts)]
            if last is not None:
                filters.append(_filter("hs_object_id", "GT", last))
            page = self._search(filters, "hs_object_id", None)
            results = page.get("results") or []
            fresh = [r for r in results if not skip or str(r.get("id")) not in skip]
            yield from self._records(fresh)
            if results:
                last = str(results[-1]["id"])
                yield Checkpoint(self._state(ts, last))
            if len(results) < self.settings.page_size or not ((page.get("paging") or {}).get("next")):
                yield Checkpoint(self._state(ts, None))
                return

    def _records(self, results: list[dict[str, Any]], *, deleted: bool = False) -> Iterator[ReadItem]:
        for obj in results:
            oid = obj.get("id")
            props = obj.get("properties") or {}
            ref = f"hubspot {self.object}/{oid}"
            if not oid:
                yield Rejected(ref=f"hubspot {self.object}", reason="object without an id", raw=redact(str(obj))[:2000])
                continue
            ms = _stamp(obj, self.modified)
            if ms is None and not deleted:
                yield Rejected(ref=ref, reason=f"no valid {self.modified}", field=self.modified,
                               raw=redact(str(obj))[:2000])
                continue
            data = {k: v for k, v in props.items()}
            data["id"] = str(oid)
            data["createdAt"] = obj.get("createdAt")
            data["updatedAt"] = obj.get("updatedAt")
            data["archived"] = bool(obj.get("archived") or deleted)
            data["_ms"] = ms
            merged = [m for m in str(props.get("hs_merged_object_ids") or "").split(";") if m.strip()]
            links = {}
            company = props.get("associatedcompanyid")
            if self.object == "contacts" and company:
                links["company_id"] = (self.connector.company_stream, str(company))
            observed = datetime.fromtimestamp(ms / 1000, timezone.utc) if ms is not None else None
            yield Record(data, ref=ref, observed_at=observed, deleted=deleted, aliases=merged, links=links)

    def _sweep_due(self, now: int) -> bool:
        hours = self.settings.archived_sweep_hours
        if hours is None:
            return False
        last = parse_ms(self._swept_at)
        return last is None or now - last >= hours * 3_600_000

    def _sweep_archived(self) -> Iterator[ReadItem]:
        pager = CursorPaginator(items_key="results", next_cursor="paging.next.after", parse=self.connector.json)
        params = {"archived": "true", "limit": 100, "properties": ",".join(self.properties)}
        for page in pager.pages(self.connector.session, f"/crm/v3/objects/{self.object}", params):
            yield from self._records(page.items, deleted=True)

    # ----- writing ---------------------------------------------------------------------------

    def write(self, records: Iterable[OutRecord], fields: list[str]) -> Iterator[WriteResult]:
        size = self.settings.batch_size
        buffers: dict[str, list[tuple[OutRecord, dict[str, str]]]] = {"update": [], "upsert": [], "create": []}
        for rec in records:
            props = self._changed_properties(rec)
            if not props:
                # Nothing HubSpot does not already have: no call.
                yield WriteResult(rec.golden_id, ok=True, external_id=rec.external_id)
                continue
            if rec.external_id:
                op = "update"
            elif self.upsert_property and props.get(self.upsert_property, rec.data.get(self.upsert_property)):
                op = "upsert"
                if self.upsert_property not in props:
                    props[self.upsert_property] = _text_value(rec.data[self.upsert_property])
            else:
                op = "create"
            buf = buffers[op]
            buf.append((rec, props))
            if len(buf) >= size:
                yield from self._send(op, buf)
                buffers[op] = []
        for op, buf in buffers.items():
            if buf:
                yield from self._send(op, buf)

    def _changed_properties(self, rec: OutRecord) -> dict[str, str]:
        previous = rec.previous or {}
        out: dict[str, str] = {}
        for key, value in rec.data.items():
            if key == "id" or key.startswith("_"):
                continue
            if _is_empty(value):
                # Only a configured property may be cleared, and only if it may hold a value.
                if key in self.settings.clear_properties and (rec.previous is None or not _is_empty(previous.get(key))):
                    out[key] = ""
                continue
            text = _text_value(value)
            if rec.previous is not None and key in previous and _text_value(previous[key]) == text:
                continue
            out[key] = text
        return out

    def _send(self, op: str, batch: list[tuple[OutRecord, dict[str, str]]]) -> Iterator[WriteResult]:
        # Every input carries a trace id (the golden id): HubSpot then answers a partly failed
        # batch with a 207 that names each failed input, instead of failing the whole batch.
        if op == "update":
            inputs = [{"id": rec.external_id, "properties": props, "objectWriteTraceId": rec.golden_id}
                      for rec, props in batch]
        elif op == "upsert":
            prop = self.upsert_property
            inputs = [{"id": props[prop], "idProperty": prop, "properties": props,
                       "objectWriteTraceId": rec.golden_id} for rec, props in batch]
        else:
            inputs = [{"properties": props, "associations": [], "objectWriteTraceId": rec.golden_id}
                      for rec, props in batch]
        path = f"/crm/v3/objects/{self.object}/batch/{op}"
        try:
            # update and upsert set the same values again when repeated: safe to resend after a
            # timeout. A create is not: its outcome is unknown, so it is not resent.
            response = self.connector.session.post(path, json={"inputs": inputs}, idempotent=op != "create")
        except RequestRejected as exc:
            if len(batch) > 1 and exc.status in (400, 409, 422):
                # Refused as a whole because of some inputs: find them by halving.
                half = len(batch) // 2
                yield from self._send(op, batch[:half])
                yield from self._send(op, batch[half:])
                return
            for rec, _props in batch:
                yield WriteResult(rec.golden_id, ok=False, external_id=rec.external_id, error=str(exc))
            return
        except RetryableError as exc:
            # Retries are spent (HubSpot errors, timeouts): these records stay unwritten and go
            # again on the next run; the run goes on with the next batch.
            for rec, _props in batch:
                yield WriteResult(rec.golden_id, ok=False, external_id=rec.external_id,
                                  error=f"not written, retried next run: {exc}", retryable=True)
            return
        yield from self._results(op, batch, self.connector.json(response))

    def _results(self, op: str, batch: list[tuple[OutRecord, dict[str, str]]], body: dict[str, Any]) -> Iterator[WriteResult]:
        results = body.get("results") or []
        errors = body.get("errors") or []
        pending = list(batch)
        by_id = {rec.external_id: (rec, p) for rec, p in batch if rec.external_id}
        key = self.upsert_property

        def take(match: Any) -> tuple[OutRecord, dict[str, str]] | None:
            for i, item in enumerate(pending):
                if match(item):
                    return pending.pop(i)
            return None

        failed: list[tuple[OutRecord, str]] = []
        unnamed: list[str] = []
        for err in errors:
            message = str(err.get("message") or err.get("category") or "rejected")
            context = err.get("context") or {}
            if context.get("objectWriteTraceId"):
                # The inputs it is about, by our trace ids; other context (existingId of a
                # CONFLICT) names records in HubSpot, not inputs.
                ids = [str(i) for i in context["objectWriteTraceId"]]
            else:
                ids = [str(i) for k, v in context.items() if k in ("ids", "id", "emails") and isinstance(v, list) for i in v]
            hit = False
            for ident in ids:
                found = take(lambda item, ident=ident: item[0].golden_id == ident
                             or item[0].external_id == ident
                             or (key is not None and str(item[1].get(key, "")).lower() == ident.lower()))
                if found is not None:
                    failed.append((found[0], message))
                    hit = True
            if not hit:
                unnamed.append(message)
        for res in results:
            rid = str(res.get("id") or "")
            props = res.get("properties") or {}
            found = None
            trace = res.get("objectWriteTraceId")
            if trace:
                found = take(lambda item, trace=trace: item[0].golden_id == trace)
            if found is None and op == "update" and rid in by_id:
                found = take(lambda item, rid=rid: item[0].external_id == rid)
            if found is None and op == "upsert" and key and props.get(key):
                # The upsert key is unique in HubSpot: matching by it cannot mix up records.
                value = str(props[key]).lower()
                found = take(lambda item, value=value: str(item[1].get(key, "")).lower() == value)
            if found is None:
                continue  # never guess by other values: an unmatched input is reported below
            yield WriteResult(found[0].golden_id, ok=True, external_id=rid or found[0].external_id)
        for rec, msg in failed:
            yield WriteResult(rec.golden_id, ok=False, external_id=rec.external_id, error=f"HubSpot: {msg}")
        for rec, _p in pending:
            # In the batch but neither in the results nor named by an error.
            why = unnamed[0] if unnamed else "no result for this input in HubSpot's response"
            yield WriteResult(rec.golden_id, ok=False, external_id=rec.external_id, error=f"HubSpot: {why}")

    # ----- dry runs ---------------------------------------------------------------------------

    def peek(self, records: list[OutRecord]) -> dict[str, dict[str, Any]]:
        """What HubSpot holds now for these records, by golden id: the out mapping's properties
        as HubSpot has them. Records with a HubSpot id are read by id, the others by their
        upsert property (``email`` for contacts), both with ``batch/read``, ``batch_size`` inputs
        a call; records with neither are not looked up (a write creates them). Ids HubSpot does
        not know are remembered, so the plan can say a write would fail."""
        self._peek_missing = set()
        by_id: dict[str, list[OutRecord]] = {}
        by_key: dict[str, list[OutRecord]] = {}
        key = self.upsert_property
        for rec in records:
            if rec.external_id:
                by_id.setdefault(str(rec.external_id), []).append(rec)
            elif key and not _is_empty(rec.data.get(key)):
                by_key.setdefault(_text_value(rec.data[key]).strip().lower(), []).append(rec)
        wanted = list(dict.fromkeys(k for rec in records for k in rec.data if k != "id" and not k.startswith("_")))
        # Also what the answers are matched back by (merged ids, the upsert key).
        extra = ["hs_merged_object_ids", *([key] if key else []),
                 *(["hs_additional_emails"] if self.object == "contacts" and key == "email" else [])]
        properties = list(dict.fromkeys([*wanted, *extra]))
        held: dict[str, dict[str, Any]] = {}

        def keep(rec: OutRecord, obj: dict[str, Any]) -> None:
            props = obj.get("properties") or {}
            held[rec.golden_id] = {k: props.get(k) for k in dict.fromkeys(rec.data) if k != "id" and not k.startswith("_")}

        size = self.settings.batch_size
        ids = list(by_id)
        for start in range(0, len(ids), size):
            chunk = ids[start:start + size]
            for obj in self._batch_read(chunk, properties, None):
                props = obj.get("properties") or {}
                # A merge gives the record a new id; HubSpot answers a read by an old one with it.
                names = [str(obj.get("id") or ""),
                         *(m.strip() for m in str(props.get("hs_merged_object_ids") or "").split(";"))]
                for name in names:
                    for rec in by_id.get(name, []):
                        keep(rec, obj)
            self._peek_missing.update(rec.golden_id for i in chunk for rec in by_id[i] if rec.golden_id not in held)
        keys = list(by_key)
        for start in range(0, len(keys), size):
            chunk = keys[start:start + size]
            for obj in self._batch_read(chunk, properties, key):
                props = obj.get("properties") or {}
                values = [props.get(key), *(str(props.get("hs_additional_emails") or "").split(";")
                                            if key == "email" else [])]
                for value in values:
                    for rec in by_key.get(str(value or "").strip().lower(), []):
                        if rec.golden_id not in held:
                            keep(rec, obj)
        return held

    def _batch_read(self, keys: list[str], properties: list[str], id_property: str | None) -> list[dict[str, Any]]:
        """One ``batch/read`` call; keys HubSpot does not hold are simply not in the answer
        (it names them in a 207's errors)."""
        body: dict[str, Any] = {"inputs": [{"id": k} for k in keys], "properties": properties,
                                "propertiesWithHistory": []}
        if id_property:
            body["idProperty"] = id_property
        response = self.connector.session.post(f"/crm/v3/objects/{self.object}/batch/read",
                                               params={"archived": "false"}, json=body, idempotent=True)
        results = self.connector.json(response).get("results") or []
        return [r for r in results if isinstance(r, dict)]

    def plan(self, records: Iterable[OutRecord], fields: list[str]) -> Iterator[PlannedWrite]:
        """What :meth:`write` would do. With what HubSpot holds now (``holds``, from
        :meth:`peek`): the properties the write would send whose value differs from HubSpot's,
        before -> after; a record HubSpot holds is an update even when the hub never wrote it
        (the upsert by e-mail reaches it). Without: the store-only diff."""
        missing = self._peek_missing
        for rec in records:
            if rec.op != "upsert" or (rec.holds is None and rec.golden_id not in missing):
                yield from Stream.plan(self, [rec], fields)
                continue
            if rec.holds is None:
                yield PlannedWrite(rec.golden_id, "reject", rec.external_id,
                                   reason=f"HubSpot no longer holds {self.object} {rec.external_id}: the update would fail")
                continue
            changes: dict[str, tuple[Any, Any]] = {}
            for prop, text in self._changed_properties(rec).items():
                before = rec.holds.get(prop)
                had = "" if _is_empty(before) else _text_value(before)
                if prop == "email":
                    had, text = had.lower(), text.lower()
                if had.strip() != text.strip():
                    changes[prop] = (before, rec.data.get(prop))
            yield PlannedWrite(rec.golden_id, "update" if changes else "unchanged", rec.external_id, changes)

    # ----- erasing ---------------------------------------------------------------------------

    @property
    def can_erase(self) -> bool:
        # A data-subject erasure is about people: companies are not erased.
        return self.object == "contacts"

    def erase(self, targets: list[ErasureTarget]) -> Iterator[ErasureResult]:
        """GDPR-delete each person's contact: by id, else (or when HubSpot does not know the id)
        by each e-mail. One result per target; a failure stays with its target. After the
        credentials were refused or the daily quota is spent, the remaining targets fail
        without sending anything (retried on the next run)."""
        if not self.can_erase:
            raise NotImplementedError(f"stream {self.name!r} ({self.object}) cannot erase: only contacts are erased")
        yield from erase_each(targets, self._erase_one, self._erase_failure)

    @staticmethod
    def _erase_failure(exc: Exception, target: ErasureTarget) -> Failure:
        if isinstance(exc, AuthError):
            return Failure(f"HubSpot refused the credentials ({exc}); erasing contacts needs a token with scope "
                           f"{ERASE_SCOPE}", stop=True)
        if isinstance(exc, QuotaExhausted):
            return Failure(f"not erased, HubSpot's API quota is spent: {exc}", stop=True)
        if isinstance(exc, RequestRejected):
            if exc.status == 403:
                return Failure(f"HubSpot refused access ({exc}); erasing contacts needs a token with scope {ERASE_SCOPE}")
            # 400/422: HubSpot refuses the request itself; sending it again cannot help.
            return Failure(f"HubSpot refused the GDPR delete: {exc}", retryable=exc.status not in (400, 422))
        if isinstance(exc, RetryableError):
            return Failure(f"HubSpot did not answer, retries spent: {exc}")
        return Failure(f"{type(exc).__name__}: {exc}")

    def _erase_one(self, target: ErasureTarget) -> ErasureResult:
        emails = list({e.strip().lower(): e.strip() for e in target.emails if e and e.strip()}.values())
        if target.external_id:
            if self._gdpr_delete({"objectId": str(target.external_id)}):
                return ErasureResult(target, "confirmed", f"HubSpot contact {target.external_id} permanently deleted")
            if not emails:
                return ErasureResult(target, "confirmed", f"not held: HubSpot does not know contact {target.external_id}")
        for email in emails:
            # 204 whether HubSpot held the address or not; one it did not hold is blocklisted.
            self._gdpr_delete({"objectId": email, "idProperty": "email"})
        if not emails:
            return ErasureResult(target, "confirmed", "not held: no HubSpot id and no e-mail address to erase by")
        lost = f"contact {target.external_id} not found, " if target.external_id else ""
        return ErasureResult(target, "confirmed", f"{lost}permanently deleted by e-mail ({len(emails)} "
                                                  f"address{'es' if len(emails) > 1 else ''}; addresses HubSpot "
                                                  "did not hold are blocklisted)")

    def _gdpr_delete(self, body: dict[str, str]) -> bool:
        """True: deleted (204); False: HubSpot does not know the contact (404)."""
        try:
            # Deleting again is harmless (an unknown id answers 404): safe to resend.
            self.connector.session.post(f"/crm/v3/objects/{self.object}/gdpr-delete", json=body, idempotent=True)
        except RequestRejected as exc:
            if exc.status == 404:
                return False
            raise
        return True


# --------------------------------------------------------------------------- rate limits

#: A child of the HTTP layer's logger: its pauses show with the layer's own messages.
_http_log = logging.getLogger("synchub.http.hubspot")


class HubSpotPolicy(RateLimitPolicy):
    """HubSpot: a per-interval burst limit and a daily quota, both announced in headers.

    When ``X-HubSpot-RateLimit-Remaining`` falls to ``reserve`` (default 5 % of the interval's
    max, at least 1), the whole account pauses for one interval, so 429s stay rare. A 429 whose
    body names the ``DAILY`` policy, or ``X-HubSpot-RateLimit-Daily-Remaining: 0``, stops at the
    next midnight in ``daily_reset_tz``.
    """

    vendor = "hubspot"

    def __init__(
        self,
        *,
        rate: float | None = 10.0,
        burst: int | None = 100,
        reserve: int | None = None,
        daily_reset_tz: tzinfo = timezone.utc,
    ):
        self.rate = rate
        self.burst = burst
        self.reserve = reserve
        self.daily_reset_tz = daily_reset_tz

    def observe(self, response: httpx.Response, limiter: AccountLimiter, now: datetime) -> None:
        remaining = header_number(response, "X-HubSpot-RateLimit-Remaining")
        interval_ms = header_number(response, "X-HubSpot-RateLimit-Interval-Milliseconds")
        maximum = header_number(response, "X-HubSpot-RateLimit-Max")
        if remaining is not None and interval_ms:
            reserve = self.reserve
            if reserve is None:
                reserve = max(1, int((maximum or 0) * 0.05))
            if remaining <= reserve:
                _http_log.info(
                    "hubspot: %d requests left in this window, pausing %.1fs",
                    remaining,
                    interval_ms / 1000,
                )
                limiter.pause_for(interval_ms / 1000)
        daily_remaining = header_number(response, "X-HubSpot-RateLimit-Daily-Remaining")
        if daily_remaining is not None and daily_remaining <= 0:
            limiter.exhaust(next_midnight(now, self.daily_reset_tz))

    def quota_resume_at(self, response: httpx.Response, now: datetime) -> datetime | None:
        body = response_json(response)
        policy = body.get("policyName") if isinstance(body, dict) else None
        daily_remaining = header_number(response, "X-HubSpot-RateLimit-Daily-Remaining")
        if policy == "DAILY" or (daily_remaining is not None and daily_remaining <= 0):
            return next_midnight(now, self.daily_reset_tz)
        return None


class HubSpotSearchPolicy(RateLimitPolicy):
    """The CRM search endpoints' own per-second limit, on top of the account's budget."""

    vendor = "hubspot-search"

    def __init__(self, rate: float):
        self.rate = rate
        self.burst = 1


# --------------------------------------------------------------------------- the connector


class HubSpotConnector(Connector):
    name = "hubspot"
    Settings = HubSpotSettings
    StreamSettings = HubSpotStreamSettings

    def __init__(self, context: Any):
        super().__init__(context)
        s: HubSpotSettings = self.settings  # type: ignore[assignment]
        self.client: httpx.Client = context.http.build(
            s.base_url, allowed_hosts=API_HOSTS, allow_any_host=s.allow_any_host,
            timeout=s.timeout_seconds, headers={"Accept": "application/json"},
        )
        self.token = self._token(s)
        account = s.account or account_key(
            s.oauth.refresh_token.get_secret_value() if s.oauth else s.token.get_secret_value()  # type: ignore[union-attr]
        )
        policy = HubSpotPolicy(rate=s.requests_per_second, burst=s.burst,
                               daily_reset_tz=ZoneInfo(s.daily_reset_timezone))
        self.session: ApiSession = context.http.session(
            self.client, policy=policy, account=account, token=self.token, max_attempts=s.max_attempts,
            now=lambda: utcnow(),
        )
        self.search_session: ApiSession = _SearchSession(self.session, context.http.session(
            self.client, policy=HubSpotSearchPolicy(s.search_requests_per_second), account=account,
            token=self.token, max_attempts=1, now=lambda: utcnow(),
        ))
        self._streams: dict[str, ObjectStream] | None = None
        self._run_started: int | None = None

    def run_started_ms(self) -> int:
        """When this connection's run started reading (the same for all its streams)."""
        if self._run_started is None:
            self._run_started = now_ms()
        return self._run_started

    def _token(self, s: HubSpotSettings) -> OAuthToken:
        if s.token is not None:
            register_secret(s.token.get_secret_value())
            return OAuthToken(s.token.get_secret_value())
        oauth = s.oauth
        assert oauth is not None

        def refresh(refresh_token: str | None) -> TokenGrant:
            return refresh_token_grant(
                self.client, oauth.token_path, client_id=oauth.client_id,
                client_secret=oauth.client_secret.get_secret_value(),
                refresh_token=refresh_token or oauth.refresh_token.get_secret_value(),
                now=utcnow, vendor="HubSpot",
            )

        access = oauth.access_token.get_secret_value() if oauth.access_token else ""
        register_secret(oauth.client_secret.get_secret_value())
        return OAuthToken(
            access, refresh_token=oauth.refresh_token.get_secret_value(), refresh=refresh,
            # No current token: treat it as expired so the first request refreshes.
            expires_at=None if access else datetime(1970, 1, 1, tzinfo=timezone.utc),
            now=lambda: utcnow(),
        )

    @staticmethod
    def json(response: httpx.Response) -> dict[str, Any]:
        return json_object(response, "HubSpot")

    def streams(self) -> dict[str, Stream]:
        if self._streams is None:
            built = {
                name: ObjectStream(name, self, settings)  # type: ignore[arg-type]
                for name, settings in self.context.stream_settings.items()
            }
            # Companies first, so the contacts read after them find their company in the hub.
            self._streams = dict(sorted(built.items(), key=lambda kv: kv[1].object != "companies"))
        return dict(self._streams)

    @property
    def company_stream(self) -> str:
        for name, stream in (self._streams or {}).items():
            if stream.object == "companies":
                return name
        return "companies"

    def granted_scopes(self) -> list[str] | None:
        """The token's scopes from HubSpot's token-info endpoints, None when they cannot be listed."""
        s: HubSpotSettings = self.settings  # type: ignore[assignment]
        token = self.token.get()
        try:
            if s.oauth is not None:
                response = self.session.get(f"/oauth/v1/access-tokens/{token}")
            else:
                response = self.session.post("/oauth/v2/private-apps/get/access-token-info",
                                             json={"tokenKey": token}, idempotent=True)
        except RequestRejected:
            return None
        scopes = self.json(response).get("scopes")
        return [str(x) for x in scopes] if isinstance(scopes, list) else None

    def check(self) -> CheckResult:
        s: HubSpotSettings = self.settings  # type: ignore[assignment]
        lines: list[str] = []
        ok = True
        try:
            scopes = self.granted_scopes()
        except AuthError as exc:
            return CheckResult(ok=False, lines=[f"credentials rejected: {exc}"])
        if scopes is None:
            lines.append("scopes: HubSpot did not list them; read access is tried below, write access shows on the first push")
        for name, stream in self.streams().items():
            assert isinstance(stream, ObjectStream)
            read_scope, write_scope = f"crm.objects.{stream.object}.read", f"crm.objects.{stream.object}.write"
            try:
                body = self.json(self.session.get(f"/crm/v3/objects/{stream.object}",
                                                  params={"limit": 1, "archived": "false"}))
                seen = "at least one record" if body.get("results") else "no records yet"
                lines.append(f"{name}: can read {stream.object} ({seen}); {len(stream.properties)} properties per record")
            except AuthError as exc:
                return CheckResult(ok=False, lines=[*lines, f"{name}: credentials rejected: {exc}"])
            except RequestRejected as exc:
                ok = False
                hint = f" (missing scope {read_scope}?)" if exc.status == 403 else ""
                lines.append(f"{name}: cannot read {stream.object}{hint}: {exc}")
            how = f"batch/update, batch/{'upsert by ' + stream.upsert_property if stream.upsert_property else 'create'}"
            if scopes is None:
                lines.append(f"{name}: writes would use {how} (needs {write_scope})")
            elif write_scope in scopes:
                lines.append(f"{name}: can write {stream.object} ({how})")
            else:
                # Not a failure by itself: a read-only connection needs no write scope.
                lines.append(f"{name}: cannot write {stream.object}: the token lacks scope {write_scope}")
            if scopes is not None and read_scope not in scopes:
                lines.append(f"{name}: the token lacks scope {read_scope}")
                ok = False
        lines.append(f"account budget: {s.requests_per_second:g} requests/s, "
                     f"search {s.search_requests_per_second:g}/s")
        return CheckResult(ok=ok, lines=lines)

    def close(self) -> None:
        self.client.close()


class _SearchSession:
    """Search requests wait for the search limiter, then go through the account's session
    (so they also count against the account's budget and get its retries)."""

    def __init__(self, main: ApiSession, search: ApiSession):
        self.main = main
        self.search = search

    def post(self, url: str, **kw: Any) -> httpx.Response:
        self.search.limiter.acquire()
        return self.main.post(url, **kw)


@hookimpl
def register_connectors() -> list[type[Connector]]:
    return [HubSpotConnector]

