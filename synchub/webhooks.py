"""Webhooks in (issue 21): HubSpot, Shopify and Mailchimp tell ``synchub serve`` that records
changed, and the connection's pull runs within seconds instead of at its next schedule slot.

Three parts:

* :class:`WebhookReceiver`: a small HTTP server (standard library ``ThreadingHTTPServer`` in a
  daemon thread, like :mod:`synchub.metrics`) on ``webhooks.host:port``, with one URL per vendor:
  ``POST /webhooks/hubspot``, ``POST /webhooks/shopify``, ``GET|POST /webhooks/mailchimp/<secret>``.
  It checks each delivery, writes its events to the ``webhook_event`` table and answers 2xx only
  once that transaction has committed: an acknowledged delivery is in the store even if the
  process dies the next moment (SQLite runs with ``synchronous=FULL``; a PostgreSQL commit is
  durable). When the store cannot take it the answer is 503, and the vendor delivers again.
* the ``webhook_event`` table: the durable queue. One row per event, unique per (vendor,
  connection, event id), so a delivery sent again is answered 200 but queued once (counted as
  ``replayed``). Rows are ``pending`` until a pull that started after they arrived succeeded,
  then ``done``; done rows are deleted after ``webhooks.keep_days``.
* :class:`WebhookConsumer`: a ``serve`` job (every ``poll_seconds``, and woken by each accepted
  delivery) that runs ``Hub.run_connection(connection, "in", trigger="webhook")`` for every
  connection with pending events. The connector's incremental read picks up what the events
  name. A connection busy in another job or worker keeps its events pending for the next pass;
  a failed run keeps them pending too (``attempts`` + 1) and the connection waits a growing
  back-off before it is tried again.

How each vendor's delivery is checked (the vendors' documentation, checked in 2025):

* HubSpot, signature v3 (developers.hubspot.com/docs/api/webhooks/validating-requests, and the
  developer platform's "request validation" page): ``X-HubSpot-Signature-v3`` is the base64 of
  HMAC-SHA256, keyed with the app's client secret, over the UTF-8 string method + full request URL
  (scheme and host included) + raw body + the ``X-HubSpot-Request-Timestamp`` header as sent
  (milliseconds since the epoch). In the URL, a fixed set of percent-escapes is decoded first
  (``%3A : %2F / %3F ? %40 @ %21 ! %24 $ %27 ' %28 ( %29 ) %2A * %2C , %3B ;``), nothing else.
  Requests whose timestamp is more than 5 minutes old are refused (HubSpot's own Python client
  uses the same 300 s window). The body is a JSON array of events; ``eventId`` is documented as
  not guaranteed unique on its own, so an event is known by portal, subscription, event id,
  object and time (everything but ``attemptNumber``, which a retry increments).
* Shopify (shopify.dev/docs/apps/build/webhooks/verify-deliveries): ``X-Shopify-Hmac-Sha256`` is
  the base64 of HMAC-SHA256 of the raw body keyed with the app's client secret; duplicate
  deliveries carry the same ``X-Shopify-Webhook-Id``, the queue's event id.
* Mailchimp (mailchimp.com/developer/marketing/guides/sync-audience-data-webhooks/) signs
  nothing: the URL holds a long random secret of ours, compared in constant time. Mailchimp
  checks a new webhook URL with a GET (answered 200); events are form-encoded POSTs
  (``type=subscribe|unsubscribe|profile|upemail|cleaned|campaign``, ``data[...]`` fields). With
  no delivery id, an event is known by an HMAC of its body (keyed with the URL secret, so the
  stored id says nothing about whom it concerns).

Responses: 200 accepted or replayed; 401 forged (bad or missing signature, wrong URL secret) or
stale; 400 malformed; 411 without ``Content-Length``; 413 over ``max_body_bytes``; 404/405 for
other URLs and methods; 503 when the store failed. Every outcome is counted in
``synchub_webhooks_total{vendor,outcome}``. Nothing of a body is logged or stored except event
ids, topics and the vendors' object ids (no e-mail addresses), and the Mailchimp secret is
registered with :mod:`synchub.redact`, so the URL holding it is masked in any log line.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from synchub.metrics import BackgroundServer, ThreadedServer
from synchub.redact import redact
from synchub.store import JSONOrNull, UTCDateTime, utcnow

if TYPE_CHECKING:
    from synchub.config import WebhooksConfig
    from synchub.engine import Hub
    from synchub.metrics import Metrics
    from synchub.store import Store

log = logging.getLogger("synchub.webhooks")

VENDORS = ("hubspot", "shopify", "mailchimp")
#: HubSpot refuses nothing older than this itself; we refuse requests signed longer ago.
HUBSPOT_MAX_AGE_MS = 5 * 60 * 1000
#: The percent-escapes HubSpot's v3 instructions decode in the URL before signing.
_HUBSPOT_ESCAPES = re.compile(r"%(3A|2F|3F|40|21|24|27|28|29|2A|2C|3B)", re.I)
MAILCHIMP_TYPES = frozenset({"subscribe", "unsubscribe", "profile", "upemail", "cleaned", "campaign"})
#: A failed webhook run waits ``poll_seconds * 2**failures`` before the next, at most this long.
MAX_BACKOFF_SECONDS = 900.0
#: A body over the limit but at most this many times it is read and dropped, so the client
#: sees the 413 instead of a reset connection; larger ones are answered without reading.
_DRAIN_FACTOR = 4
PENDING, DONE = "pending", "done"
#: Deliveries the receiver handles at once (vendors retry a 503; a slow client cannot pile up threads).
MAX_CONCURRENT = 32
#: The outcomes counted in ``synchub_webhooks_total`` (see :mod:`synchub.metrics`).
OUTCOMES = ("accepted", "replayed", "forged", "stale", "invalid", "error", "validated")


class WebhookEvent(SQLModel, table=True):
    """One event a vendor delivered: which connection it concerns and whether a pull that
    started after it arrived has finished successfully (``done``) or not yet (``pending``)."""

    __tablename__ = "webhook_event"
    __table_args__ = (
        sa.UniqueConstraint("vendor", "connection", "event_id", name="uq_webhook_event"),
        sa.Index("ix_webhook_event_pending", "status", "connection"),
    )
    id: int | None = Field(default=None, primary_key=True)
    connection: str = Field(max_length=100)
    vendor: str = Field(max_length=16)
    #: Shopify's X-Shopify-Webhook-Id, HubSpot's event key, Mailchimp's body HMAC: for replays.
    event_id: str = Field(max_length=200)
    #: HubSpot subscriptionType, Shopify X-Shopify-Topic, Mailchimp type.
    topic: str = Field(default="", max_length=200)
    #: The vendor's ids of the records the event names (never e-mail addresses).
    object_ids: list[str] | None = Field(default=None, sa_column=sa.Column(JSONOrNull, nullable=True))
    received_at: datetime = Field(sa_column=sa.Column(UTCDateTime(), nullable=False))
    status: str = Field(default=PENDING, max_length=16)  # pending | done
    #: Webhook runs that failed while the event was pending.
    attempts: int = Field(default=0)
    processed_at: datetime | None = Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=True))


webhook_event_t: sa.Table = SQLModel.metadata.tables["webhook_event"]


# --------------------------------------------------------------------------- the queue


@dataclass
class QueuedEvent:
    event_id: str
    topic: str = ""
    object_ids: list[str] = field(default_factory=list)


def enqueue(store: Store, vendor: str, connection: str, events: Iterable[QueuedEvent]) -> int:
    """Queue ``events`` in one transaction; returns how many were new (the others were queued
    before: replays). Returns only after the commit."""
    insert: Any
    if store.dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    now = utcnow()
    new = 0
    with store.begin() as conn:
        for ev in events:
            stmt = insert(webhook_event_t).values(
                connection=connection, vendor=vendor, event_id=ev.event_id[:200], topic=ev.topic[:200],
                object_ids=ev.object_ids[:100] or None, received_at=now, status=PENDING, attempts=0,
            ).on_conflict_do_nothing(index_elements=["vendor", "connection", "event_id"])
            # RETURNING says whether a row went in (rowcount is not reliable here on psycopg).
            new += conn.execute(stmt.returning(webhook_event_t.c.id)).first() is not None
    return new


def pending_connections(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        q = sa.select(webhook_event_t.c.connection).where(webhook_event_t.c.status == PENDING).distinct()
        return sorted(conn.execute(q).scalars())


def pending_events(store: Store, connection: str | None = None) -> list[dict[str, Any]]:
    """The pending events (of ``connection``), oldest first."""
    t = webhook_event_t
    q = sa.select(t).where(t.c.status == PENDING).order_by(t.c.id)
    if connection is not None:
        q = q.where(t.c.connection == connection)
    with store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]


def _last_pending_id(store: Store, connection: str) -> int | None:
    t = webhook_event_t
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.max(t.c.id)).where(t.c.status == PENDING, t.c.connection == connection)).scalar()


def _finish(store: Store, connection: str, up_to: int, ok: bool) -> int:
    """Pending events of ``connection`` up to id ``up_to``: done (``ok``) or one attempt more."""
    t = webhook_event_t
    q = t.update().where(t.c.status == PENDING, t.c.connection == connection, t.c.id <= up_to)
    q = q.values(status=DONE, processed_at=utcnow()) if ok else q.values(attempts=t.c.attempts + 1)
    with store.begin() as conn:
        return conn.execute(q).rowcount or 0


#: Events that say a vendor erased a person for privacy: the hub forgets its copy of them
#: (their record in that tool) at once, as a full listing that lacks them would.
PRIVACY_TOPICS = frozenset({"contact.privacyDeletion", "customers/redact"})


def privacy_objects(store: Store, connection: str, up_to: int) -> set[str]:
    """The vendor ids named by pending privacy-deletion events of ``connection`` up to ``up_to``."""
    t = webhook_event_t
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(t.c.object_ids).where(
            t.c.status == PENDING, t.c.connection == connection, t.c.id <= up_to, t.c.topic.in_(sorted(PRIVACY_TOPICS))))
        return {str(i) for (ids,) in rows for i in ids or ()}


def forget_objects(conn: sa.Connection, connection: str, object_ids: Iterable[str]) -> int:
    """An erasure: these vendor ids leave the queued events of ``connection`` (the events stay,
    so a pending one still triggers its pull for the others). Returns the events changed."""
    gone = {str(i) for i in object_ids}
    t = webhook_event_t
    changed = 0
    for row in conn.execute(sa.select(t.c.id, t.c.object_ids).where(t.c.connection == connection,
                                                                     t.c.object_ids.is_not(None))):
        ids = list(row.object_ids or [])
        if gone.intersection(ids):
            left = [i for i in ids if i not in gone]
            conn.execute(t.update().where(t.c.id == row.id).values(object_ids=left or None))
            changed += 1
    return changed


def prune_events(store: Store, older_than: datetime) -> int:
    """Delete done events processed before ``older_than``."""
    t = webhook_event_t
    with store.begin() as conn:
        return conn.execute(t.delete().where(t.c.status == DONE, t.c.processed_at < older_than)).rowcount or 0


# --------------------------------------------------------------------------- checking deliveries


@dataclass
class Reply:
    """What the receiver answers, and the outcome it counts (None: not counted)."""

    status: int
    outcome: str | None
    text: str = "ok"
    vendor: str | None = None
    new: int = 0
    headers: dict[str, str] = field(default_factory=dict)


def shop_domain(shop: Any) -> str | None:
    """A Shopify connection's ``shop`` setting as the domain its webhooks name (``acme`` ->
    ``acme.myshopify.com``)."""
    if not shop:
        return None
    text = str(shop).strip().lower().removeprefix("https://").rstrip("/")
    return text if "." in text else f"{text}.myshopify.com"


def hubspot_signature(secret: str, method: str, url: str, body: bytes, timestamp: str) -> str:
    """HubSpot's v3 signature of a request (see the module docstring)."""
    uri = _HUBSPOT_ESCAPES.sub(lambda m: chr(int(m.group(1), 16)), url)
    message = method.upper().encode() + uri.encode("utf-8") + body + timestamp.encode("utf-8")
    return base64.b64encode(hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()).decode()


def shopify_signature(secret: str, body: bytes) -> str:
    """Shopify's ``X-Shopify-Hmac-Sha256`` of a body."""
    return base64.b64encode(hmac.new(secret.encode("utf-8"), body, hashlib.sha256).digest()).decode()


def _moment(text: str | None) -> datetime | None:
    """An ISO-8601 header value as an aware datetime (None if absent or unreadable)."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _same(expected: str, given: str | None) -> bool:
    """Constant-time comparison of two header values."""
    if not given:
        return False
    return hmac.compare_digest(expected.encode("utf-8"), given.strip().encode("utf-8", "replace"))


class Invalid(ValueError):
    """A delivery whose signature holds but whose content is not what the vendor sends."""


def _ids(*values: Any) -> list[str]:
    out: list[str] = []
    for v in values:
        if isinstance(v, list):
            out.extend(_ids(*v))
        elif isinstance(v, (int, str)) and not isinstance(v, bool) and str(v).strip():
            out.append(str(v).strip()[:100])
    return list(dict.fromkeys(out))


def hubspot_events(body: bytes) -> list[QueuedEvent]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Invalid("the body is not JSON") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data or not all(isinstance(e, dict) for e in data):
        raise Invalid("the body is not a list of events")
    events = []
    for e in data:
        if e.get("eventId") is None:
            raise Invalid("an event has no eventId")
        key = ":".join(str(e.get(k, "")) for k in ("portalId", "subscriptionId", "eventId", "objectId", "occurredAt"))
        events.append(QueuedEvent(
            event_id=key, topic=str(e.get("subscriptionType") or e.get("eventType") or ""),
            object_ids=_ids(e.get("objectId"), e.get("fromObjectId"), e.get("toObjectId"), e.get("primaryObjectId"),
                            e.get("mergedObjectIds")),
        ))
    return events


def shopify_events(body: bytes, webhook_id: str | None, topic: str | None) -> list[QueuedEvent]:
    if not webhook_id or not webhook_id.strip():
        raise Invalid("no X-Shopify-Webhook-Id")
    if not topic or not topic.strip():
        raise Invalid("no X-Shopify-Topic")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise Invalid("the body is not JSON") from None
    ids: list[str] = []
    if isinstance(data, dict):
        customer = data.get("customer")
        ids = _ids(data.get("id"), customer.get("id") if isinstance(customer, dict) else None)
        if topic.strip().startswith("customers/"):  # the hub knows Shopify customers by their gid
            ids += [f"gid://shopify/Customer/{i}" for i in ids if i.isdigit()]
    return [QueuedEvent(event_id=webhook_id.strip(), topic=topic.strip(), object_ids=ids)]


def mailchimp_events(body: bytes, secret: str) -> list[QueuedEvent]:
    try:
        form = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise Invalid("the body is not UTF-8") from None
    kind = (form.get("type") or [""])[0]
    if kind not in MAILCHIMP_TYPES:
        raise Invalid("no known event type")
    key = "mc:" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    ids = _ids((form.get("data[id]") or [None])[0], (form.get("data[new_id]") or [None])[0])
    return [QueuedEvent(event_id=key, topic=kind, object_ids=ids)]


class WebhookReceiver(BackgroundServer):
    """Checks and queues deliveries on ``config.host:config.port`` from a daemon thread.

    ``port`` overrides the configured port (0 picks a free one, readable as ``.port`` after
    :meth:`start`). ``on_accepted(connection)`` is called after new events were committed (serve
    wakes the consumer with it). ``clock`` gives the time in seconds (tests)."""

    purpose = "receive webhooks"
    thread_name = "webhooks"

    def __init__(self, store: Store, config: WebhooksConfig, metrics: Metrics | None = None, *,
                 port: int | None = None, on_accepted: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.time, shopify_domain: str | None = None) -> None:
        super().__init__(config.host, config.port if port is None else port)
        self.store, self.config, self.metrics = store, config, metrics
        #: The shop the Shopify connection reads (``acme.myshopify.com``): an app's secret signs the
        #: webhooks of every shop that installed it, so another shop's delivery is refused.
        self.shopify_domain = shopify_domain.lower() if shopify_domain else None
        self.on_accepted = on_accepted
        self.clock = clock
        #: Requests handled at once (a thread each); more are answered 503 at once.
        self.slots = threading.BoundedSemaphore(MAX_CONCURRENT)
        if metrics is not None:  # every series from the start (at 0), so the first forgery shows as a rise
            for vendor in config.sources():
                for outcome in OUTCOMES:
                    metrics.webhook_received(vendor, outcome, 0)

    def started(self) -> None:
        log.info("receiving webhooks on %s/webhooks/ (%s)", self.url, ", ".join(self.config.sources()))

    # ----- one request ----------------------------------------------------------------------

    def route(self, path: str) -> tuple[str | None, str | None]:
        """``(vendor, URL secret)`` of a request path; vendor None for no webhook URL."""
        parts = path.split("/")
        if len(parts) < 3 or parts[0] != "" or parts[1] != "webhooks" or parts[2] not in VENDORS:
            return None, None
        if parts[2] == "mailchimp":
            if len(parts) == 3 or (len(parts) == 4 and parts[3] == ""):
                return "mailchimp", ""
            return ("mailchimp", parts[3]) if len(parts) == 4 else (None, None)
        return (parts[2], None) if len(parts) == 3 else (None, None)

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        """Check one request and queue its events; never raises. ``target``: the request target
        as sent (path and query), ``headers`` looked up case-insensitively."""
        return self.count(self._handle(method, target, headers, body))

    def count(self, reply: Reply) -> Reply:
        """Count ``reply``'s outcome in the metrics (for a configured vendor)."""
        if reply.outcome is not None and reply.vendor in self.config.sources() and self.metrics is not None:
            self.metrics.webhook_received(reply.vendor, reply.outcome)
        return reply

    def _handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        vendor, url_secret = self.route(urlsplit(target).path)
        sources = self.config.sources()
        if vendor is None or vendor not in sources:
            return Reply(404, None, "not found")
        src = sources[vendor]
        secret = src.secret.get_secret_value()
        allowed = ("GET", "POST") if vendor == "mailchimp" else ("POST",)
        if method not in allowed:
            return Reply(405, None, "method not allowed", vendor, headers={"Allow": ", ".join(allowed)})
        if vendor == "mailchimp" and not hmac.compare_digest(secret.encode(), (url_secret or "").encode("utf-8", "replace")):
            return self._refused(vendor, "forged", "unauthorized", headers)
        if vendor == "mailchimp" and method == "GET":
            return Reply(200, "validated", "ok", vendor)  # Mailchimp checking the URL exists
        if len(body) > self.config.max_body_bytes:
            return Reply(413, "invalid", "request body too large", vendor)
        try:
            if vendor == "hubspot":
                timestamp = (headers.get("X-HubSpot-Request-Timestamp") or "").strip()
                expected = hubspot_signature(secret, method, self._full_url(target, headers), body, timestamp)
                if not timestamp or not _same(expected, headers.get("X-HubSpot-Signature-v3")):
                    return self._refused(vendor, "forged", "invalid signature", headers)
                try:
                    age = self.clock() * 1000 - int(timestamp)
                except ValueError:
                    return self._refused(vendor, "stale", "invalid request timestamp", headers)
                # A timestamp as far in the future is refused too: only clock skew could explain it.
                if abs(age) > HUBSPOT_MAX_AGE_MS:
                    return self._refused(vendor, "stale", "request timestamp too old", headers)
                events = hubspot_events(body)
            elif vendor == "shopify":
                if not _same(shopify_signature(secret, body), headers.get("X-Shopify-Hmac-Sha256")):
                    return self._refused(vendor, "forged", "invalid signature", headers)
                shop = (headers.get("X-Shopify-Shop-Domain") or "").strip().lower()
                if self.shopify_domain and shop != self.shopify_domain:
                    return self._refused(vendor, "invalid", "a webhook of another shop", headers)
                # Replays are known by their webhook id for keep_days; an older delivery (a
                # captured one sent again after its row was pruned) is refused as stale.
                triggered = _moment(headers.get("X-Shopify-Triggered-At"))
                if triggered is not None and self.clock() - triggered.timestamp() > self.config.keep_days * 86400:
                    return self._refused(vendor, "stale", "delivery older than the replay window", headers)
                events = shopify_events(body, headers.get("X-Shopify-Webhook-Id"), headers.get("X-Shopify-Topic"))
            else:
                events = mailchimp_events(body, secret)
        except Invalid as exc:
            log.warning("webhook %s refused: %s", vendor, exc)
            return Reply(400, "invalid", f"bad request: {exc}", vendor)
        try:
            new = enqueue(self.store, vendor, src.connection, events)
        except Exception as exc:  # the vendor delivers again later; the message may hold data
            log.error("webhook %s could not be queued: %s", vendor, type(exc).__name__)
            return Reply(503, "error", "try again later", vendor, headers={"Retry-After": "30"})
        if not new:
            log.info("webhook %s for %s: already queued (replay), %d event(s)", vendor, src.connection, len(events))
            return Reply(200, "replayed", "ok", vendor)
        log.info("webhook %s for %s: %d new event(s) queued", vendor, src.connection, new)
        if self.on_accepted is not None:
            try:
                self.on_accepted(src.connection)
            except Exception:
                log.exception("waking the webhook queue failed")
        return Reply(200, "accepted", "ok", vendor, new=new)

    def _refused(self, vendor: str, outcome: str, text: str, headers: Mapping[str, str]) -> Reply:
        log.warning("webhook %s refused: %s (%s)", vendor, text, headers.get("X-Forwarded-For") or "direct")
        return Reply(401, outcome, text, vendor)

    def _full_url(self, target: str, headers: Mapping[str, str]) -> str:
        """The URL HubSpot called: ``public_url`` + path, or rebuilt from the request headers."""
        if self.config.public_url:
            return self.config.public_url + target
        proto = (headers.get("X-Forwarded-Proto") or "http").split(",")[0].strip()
        host = (headers.get("X-Forwarded-Host") or headers.get("Host") or f"{self.host}:{self.port}").split(",")[0].strip()
        return f"{proto}://{host}{target}"


class _Handler(BaseHTTPRequestHandler):
    server: ThreadedServer
    #: Seconds a client may take to send its request: a slow one does not hold a thread forever.
    timeout = 15

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_POST

    def _serve(self) -> None:
        owner = self.server.owner
        # At most MAX_CONCURRENT requests at once (one thread each): more are told to come back.
        if not owner.slots.acquire(blocking=False):
            self.close_connection = True
            return self._reply(owner.count(Reply(503, "error", "busy, try again later", None, headers={"Retry-After": "5"})))
        try:
            self._serve_one(owner)
        finally:
            owner.slots.release()

    def _serve_one(self, owner: Any) -> None:
        body = b""
        if self.command in ("POST", "PUT", "PATCH"):
            vendor, _ = owner.route(urlsplit(self.path).path)
            length = self.headers.get("Content-Length")
            if self.headers.get("Transfer-Encoding") or length is None or not length.strip().isdigit():
                self.close_connection = True
                return self._reply(owner.count(Reply(411, "invalid", "Content-Length required", vendor)))
            n = int(length)
            limit = owner.config.max_body_bytes
            if n > limit:
                if n <= limit * _DRAIN_FACTOR:
                    self._drain(n)
                self.close_connection = True
                return self._reply(owner.count(Reply(413, "invalid", "request body too large", vendor)))
            body = self.rfile.read(n)
            if len(body) < n:  # the client went away
                self.close_connection = True
                return
        try:
            reply = owner.handle(self.command, self.path, self.headers, body)  # type: ignore[arg-type]
        except Exception as exc:  # handle() does not raise; be safe anyway
            log.error("webhook request failed: %s", type(exc).__name__)
            reply = Reply(500, None, "internal error")
        self._reply(reply)

    def _drain(self, n: int) -> None:
        while n > 0:
            chunk = self.rfile.read(min(n, 65536))
            if not chunk:
                return
            n -= len(chunk)

    def _reply(self, reply: Reply) -> None:
        body = (reply.text + "\n").encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        # The request line of a Mailchimp delivery holds its URL secret: masked by redact().
        log.debug("webhooks %s: %s", self.address_string(), redact(format % args))


WebhookReceiver.handler = _Handler


# --------------------------------------------------------------------------- the consumer


class WebhookConsumer:
    """Runs the pull of each connection with pending events and settles them (module docstring).

    One instance per ``serve``; :meth:`run_once` is its job. Thread-safe: a pass that finds
    another pass running returns at once."""

    def __init__(self, hub: Hub, *, poll_seconds: float = 5.0, keep_days: int = 7,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.hub, self.poll_seconds, self.keep_days, self.clock = hub, poll_seconds, keep_days, clock
        self._not_before: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._pass = threading.Lock()
        self._pruned_at: float | None = None
        self._warned: set[str] = set()

    @property
    def running(self) -> bool:
        return self._pass.locked()

    def run_once(self) -> dict[str, str]:
        """One pass; returns ``{connection: outcome}``: ``done`` (pull succeeded or partial, its
        events are done), ``failed`` (events stay pending, attempts + 1, back-off), ``paused`` /
        ``interrupted`` (stay pending), ``busy`` (running elsewhere), ``waiting`` (back-off),
        ``unknown`` (not an inbound connection of this config)."""
        if not self._pass.acquire(blocking=False):
            return {}
        try:
            return self._run_once()
        finally:
            self._pass.release()

    def _run_once(self) -> dict[str, str]:
        from synchub.engine import AlreadyRunning

        hub, store = self.hub, self.hub.store
        results: dict[str, str] = {}
        self._prune()
        for name in pending_connections(store):
            if hub.stopping.is_set():
                break
            conn = hub.config.connections.get(name)
            if conn is None or not conn.inbound:
                if name not in self._warned:
                    log.warning("webhook events for %s are pending, but the config has no inbound connection of "
                                "that name; they are kept", name)
                    self._warned.add(name)
                results[name] = "unknown"
                continue
            if self.clock() < self._not_before.get(name, 0.0):
                results[name] = "waiting"
                continue
            # Every event up to here arrived before the pull starts, so the pull reads the changes
            # they name (the vendor sent them after the change); later ones wait for the next pull.
            up_to = _last_pending_id(store, name)
            if up_to is None:
                continue
            try:
                erased = privacy_objects(store, name, up_to)
                if erased:
                    n = hub.forget_at_source(name, erased, "erased in the tool for privacy (webhook)")
                    log.info("webhooks of %s: %d record(s) erased there for privacy left the hub", name, n)
                summary = hub.run_connection(name, "in", trigger="webhook")
            except AlreadyRunning:
                log.info("webhook pull of %s: busy in another job or worker; its events stay queued", name)
                results[name] = "busy"
                continue
            except Exception as exc:
                log.error("webhook pull of %s failed: %s", name, redact(type(exc).__name__))
                results[name] = self._failed(name, up_to)
                continue
            if summary.status in ("succeeded", "partial"):
                n = _finish(store, name, up_to, ok=True)
                self._failures.pop(name, None)
                self._not_before.pop(name, None)
                log.info("webhook pull of %s (run %s): %s; %d event(s) done", name, summary.run_id, summary.status, n)
                results[name] = "done"
            elif summary.status == "paused" and summary.resume_at is not None:
                wait = (summary.resume_at - datetime.now(timezone.utc)).total_seconds()
                self._not_before[name] = self.clock() + max(wait, self.poll_seconds)
                results[name] = "paused"
            elif summary.status in ("interrupted", "skipped"):
                results[name] = summary.status
            else:
                results[name] = self._failed(name, up_to)
        return results

    def _failed(self, name: str, up_to: int) -> str:
        _finish(self.hub.store, name, up_to, ok=False)
        n = self._failures[name] = self._failures.get(name, 0) + 1
        delay = min(self.poll_seconds * 2 ** min(n, 16), MAX_BACKOFF_SECONDS)
        self._not_before[name] = self.clock() + delay
        log.warning("webhook pull of %s failed (%d in a row); its events stay queued, next try in %.0f s", name, n, delay)
        return "failed"

    def _prune(self) -> None:
        now = self.clock()
        if self._pruned_at is not None and now - self._pruned_at < 3600:
            return
        self._pruned_at = now
        try:
            n = prune_events(self.hub.store, utcnow() - timedelta(days=self.keep_days))
        except Exception as exc:
            log.warning("pruning processed webhook events failed: %s", type(exc).__name__)
            return
        if n:
            log.info("deleted %d processed webhook event(s) older than %d days", n, self.keep_days)
