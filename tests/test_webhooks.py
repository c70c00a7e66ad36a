"""Webhooks in (issue 21): signatures of HubSpot, Shopify and Mailchimp deliveries, the durable
queue in the store (a 200 is only sent once the event is committed), and the consumer that
pulls the named connection and settles the events only after a successful run.

Signatures are computed here with hmac/base64 directly, from the vendors' documented rules,
not with :mod:`synchub.webhooks`' own helpers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import sqlalchemy as sa

from synchub import plugins
from synchub.config import WebhooksConfig, load_config
from synchub.engine import Hub
from synchub.errors import ConfigError
from synchub.locks import connection_lock
from synchub.metrics import Metrics
from synchub.redact import redact
from synchub.scheduler import serve
from synchub.store import Store, run_t
from synchub.webhooks import (
    QueuedEvent,
    WebhookConsumer,
    WebhookReceiver,
    enqueue,
    pending_events,
    webhook_event_t,
)
from tests.helpers import ROOT, write_config, write_people_mapping
from tests.outcome_connector import OutcomePlugin

HUBSPOT_SECRET = "hs-client-secret-7f3a9c1e"
SHOPIFY_SECRET = "shpss_5b2d8e0f4a6c1b9d"
MC_SECRET = "Zq3kT9vLm2Xp8RwYc4NfBd7HsJ6GtUe1"
EMAIL = "hannelore.zwirbelgruber@example.org"


def wh_config(**extra: Any) -> dict[str, Any]:
    return {
        "host": "127.0.0.1", "max_body_bytes": 4096,
        "hubspot": {"connection": "crm", "secret": HUBSPOT_SECRET},
        "shopify": {"connection": "shop", "secret": SHOPIFY_SECRET},
        "mailchimp": {"connection": "mc", "secret": MC_SECRET},
        **extra,
    }


class Running:
    def __init__(self, store: Store, receiver: WebhookReceiver, metrics: Metrics):
        self.store, self.receiver, self.metrics = store, receiver, metrics
        self.url = receiver.url

    def count(self, vendor: str, outcome: str) -> float:
        value = self.metrics.registry.get_sample_value("synchub_webhooks_total", {"vendor": vendor, "outcome": outcome})
        return value or 0.0

    def rows(self) -> list[dict[str, Any]]:
        with self.store.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(webhook_event_t).order_by(webhook_event_t.c.id))]


def start_receiver(store_url: str, **extra: Any) -> Iterator[Running]:
    store = Store(store_url)
    store.upgrade()
    metrics = Metrics()
    receiver = WebhookReceiver(store, WebhooksConfig.model_validate(wh_config(**extra)), metrics, port=0).start()
    try:
        yield Running(store, receiver, metrics)
    finally:
        receiver.stop()
        store.dispose()


@pytest.fixture
def hooks(store_url: str) -> Iterator[Running]:
    yield from start_receiver(store_url)


# ----- how the vendors sign (independently of synchub.webhooks) -------------------------------


def hubspot_headers(url: str, body: bytes, *, secret: str = HUBSPOT_SECRET, ts_ms: int | None = None,
                    method: str = "POST", signed_url: str | None = None) -> dict[str, str]:
    ts = str(ts_ms if ts_ms is not None else int(time.time() * 1000))
    source = method.encode() + (signed_url or url).encode() + body + ts.encode()
    sig = base64.b64encode(hmac.new(secret.encode(), source, hashlib.sha256).digest()).decode()
    return {"X-HubSpot-Signature-v3": sig, "X-HubSpot-Request-Timestamp": ts, "Content-Type": "application/json"}


def hubspot_body(event_id: int = 101, object_id: int = 5001, **extra: Any) -> bytes:
    event = {"eventId": event_id, "subscriptionId": 77, "portalId": 1234, "appId": 9, "occurredAt": 1735689600000,
             "subscriptionType": "contact.propertyChange", "attemptNumber": 0, "objectId": object_id,
             "propertyName": "email", "propertyValue": EMAIL, "changeSource": "CRM_UI", **extra}
    return json.dumps([event]).encode()


def shopify_headers(body: bytes, *, secret: str = SHOPIFY_SECRET, webhook_id: str = "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
                    topic: str = "customers/update") -> dict[str, str]:
    sig = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    return {"X-Shopify-Hmac-Sha256": sig, "X-Shopify-Topic": topic, "X-Shopify-Shop-Domain": "acme.myshopify.com",
            "X-Shopify-Webhook-Id": webhook_id, "X-Shopify-API-Version": "2025-01", "Content-Type": "application/json"}


def shopify_body(customer_id: int = 706405506930370084) -> bytes:
    return json.dumps({"id": customer_id, "email": EMAIL, "first_name": "Hannelore", "last_name": "Zwirbelgruber",
                       "updated_at": "2025-01-01T10:00:00+01:00"}).encode()


def mailchimp_body(kind: str = "subscribe", member_id: str = "8a25ff1d98") -> bytes:
    return urlencode({"type": kind, "fired_at": "2025-01-01 09:00:00", "data[id]": member_id, "data[list_id]": "a6b5da1054",
                      "data[email]": EMAIL, "data[email_type]": "html", "data[merges][FNAME]": "Hannelore"}).encode()


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


# ----- HubSpot ---------------------------------------------------------------------------------


def test_hubspot_valid_replayed_forged_and_stale(hooks: Running) -> None:
    url = f"{hooks.url}/webhooks/hubspot"
    body = hubspot_body()
    r = httpx.post(url, content=body, headers=hubspot_headers(url, body))
    assert r.status_code == 200
    rows = hooks.rows()
    assert len(rows) == 1
    row = rows[0]
    assert (row["vendor"], row["connection"], row["status"], row["attempts"]) == ("hubspot", "crm", "pending", 0)
    assert row["topic"] == "contact.propertyChange" and row["object_ids"] == ["5001"]
    assert EMAIL not in json.dumps(row, default=str)  # the property value is not kept

    # HubSpot retries the same event (attemptNumber goes up, new timestamp and signature): one row.
    again = hubspot_body(attemptNumber=1)
    r = httpx.post(url, content=again, headers=hubspot_headers(url, again))
    assert r.status_code == 200 and len(hooks.rows()) == 1

    # Forged: another secret, a body changed after signing, a signature for another URL, none at all.
    other = hubspot_body(event_id=102)
    assert httpx.post(url, content=other, headers=hubspot_headers(url, other, secret="not-the-secret")).status_code == 401
    assert httpx.post(url, content=other, headers=hubspot_headers(url, body)).status_code == 401
    assert httpx.post(url, content=other, headers=hubspot_headers(url, other,
                      signed_url="https://evil.example/webhooks/hubspot")).status_code == 401
    assert httpx.post(url, content=other, headers={"Content-Type": "application/json"}).status_code == 401
    # Stale: correctly signed, but 6 minutes ago (a captured request played back later).
    old = int((time.time() - 360) * 1000)
    assert httpx.post(url, content=other, headers=hubspot_headers(url, other, ts_ms=old)).status_code == 401
    # ... while 4 minutes is still fine.
    recent = int((time.time() - 240) * 1000)
    assert httpx.post(url, content=other, headers=hubspot_headers(url, other, ts_ms=recent)).status_code == 200

    assert len(hooks.rows()) == 2
    assert (hooks.count("hubspot", "accepted"), hooks.count("hubspot", "replayed"), hooks.count("hubspot", "forged"),
            hooks.count("hubspot", "stale")) == (2, 1, 4, 1)


def test_hubspot_signs_the_full_url_with_some_escapes_decoded(store_url: str) -> None:
    for running in start_receiver(store_url, public_url="https://hooks.example.com/sync/"):
        target = "/webhooks/hubspot?app=a%3Ab%2Fc%40d&name=x%20y"
        body = hubspot_body()
        # HubSpot decodes %3A %2F %40 (and a few more) before signing, but not %20.
        signed = "https://hooks.example.com/sync/webhooks/hubspot?app=a:b/c@d&name=x%20y"
        r = httpx.post(running.url + target, content=body, headers=hubspot_headers("", body, signed_url=signed))
        assert r.status_code == 200
        as_sent = "https://hooks.example.com/sync" + target  # not decoded: a different string
        r = httpx.post(running.url + target, content=hubspot_body(event_id=7),
                       headers=hubspot_headers("", hubspot_body(event_id=7), signed_url=as_sent))
        assert r.status_code == 401
        # The URL the receiver was called on is not the one HubSpot signed: refused.
        local = running.url + "/webhooks/hubspot"
        r = httpx.post(local, content=hubspot_body(event_id=8), headers=hubspot_headers(local, hubspot_body(event_id=8)))
        assert r.status_code == 401
        assert len(running.rows()) == 1


def test_hubspot_batch_queues_each_event_and_refuses_malformed_bodies(hooks: Running) -> None:
    url = f"{hooks.url}/webhooks/hubspot"
    events = [json.loads(hubspot_body(event_id=i, object_id=100 + i))[0] for i in range(3)]
    body = json.dumps(events).encode()
    assert httpx.post(url, content=body, headers=hubspot_headers(url, body)).status_code == 200
    assert sorted(r["object_ids"][0] for r in hooks.rows()) == ["100", "101", "102"]
    # A batch with one new event among known ones: the new one is queued, nothing twice.
    body = json.dumps([*events, json.loads(hubspot_body(event_id=9, object_id=109))[0]]).encode()
    assert httpx.post(url, content=body, headers=hubspot_headers(url, body)).status_code == 200
    assert len(hooks.rows()) == 4
    for bad in (b"not json", b"{}", b"[]", json.dumps([{"objectId": 1}]).encode()):
        assert httpx.post(url, content=bad, headers=hubspot_headers(url, bad)).status_code == 400
    assert hooks.count("hubspot", "invalid") == 4 and len(hooks.rows()) == 4


# ----- Shopify ---------------------------------------------------------------------------------


def test_shopify_valid_replayed_and_forged(hooks: Running) -> None:
    url = f"{hooks.url}/webhooks/shopify"
    body = shopify_body()
    r = httpx.post(url, content=body, headers=shopify_headers(body))
    assert r.status_code == 200
    [row] = hooks.rows()
    assert (row["vendor"], row["connection"], row["topic"]) == ("shopify", "shop", "customers/update")
    assert row["event_id"] == "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"
    assert row["object_ids"] == ["706405506930370084", "gid://shopify/Customer/706405506930370084"]
    assert EMAIL not in json.dumps(row, default=str)
    # A duplicate delivery (same X-Shopify-Webhook-Id): 200, not queued again.
    assert httpx.post(url, content=body, headers=shopify_headers(body)).status_code == 200
    assert len(hooks.rows()) == 1
    # Forged: signed with another secret, or a body changed after signing, or no signature.
    other = shopify_body(1)
    assert httpx.post(url, content=other, headers=shopify_headers(other, secret="shpss_wrong", webhook_id="x1")).status_code == 401
    assert httpx.post(url, content=other, headers=shopify_headers(body, webhook_id="x2")).status_code == 401
    unsigned = {k: v for k, v in shopify_headers(other, webhook_id="x3").items() if k != "X-Shopify-Hmac-Sha256"}
    assert httpx.post(url, content=other, headers=unsigned).status_code == 401
    # Signed, but without the delivery id the queue needs to recognise a replay: 400.
    no_id = {k: v for k, v in shopify_headers(other).items() if k != "X-Shopify-Webhook-Id"}
    assert httpx.post(url, content=other, headers=no_id).status_code == 400
    # A new delivery of another change is queued.
    assert httpx.post(url, content=other, headers=shopify_headers(other, webhook_id="x4")).status_code == 200
    assert len(hooks.rows()) == 2
    assert (hooks.count("shopify", "accepted"), hooks.count("shopify", "replayed"), hooks.count("shopify", "forged"),
            hooks.count("shopify", "invalid")) == (2, 1, 3, 1)


def test_a_shopify_delivery_older_than_the_replay_window_is_stale(hooks: Running) -> None:
    """Replays are recognised by webhook id for keep_days (7); a captured delivery sent again after
    its row was pruned is refused by its X-Shopify-Triggered-At."""
    from datetime import datetime, timedelta, timezone

    url = f"{hooks.url}/webhooks/shopify"
    body = shopify_body()
    old = (datetime.now(timezone.utc) - timedelta(days=8)).isoformat()
    recent = (datetime.now(timezone.utc) - timedelta(hours=30)).isoformat()  # Shopify retries for a while
    r = httpx.post(url, content=body, headers={**shopify_headers(body, webhook_id="s1"), "X-Shopify-Triggered-At": old})
    assert r.status_code == 401 and hooks.rows() == []
    r = httpx.post(url, content=body, headers={**shopify_headers(body, webhook_id="s2"), "X-Shopify-Triggered-At": recent})
    assert r.status_code == 200 and len(hooks.rows()) == 1
    assert hooks.count("shopify", "stale") == 1


def test_more_requests_at_once_than_the_receiver_takes_are_told_to_come_back(hooks: Running) -> None:
    from synchub.webhooks import MAX_CONCURRENT

    for _ in range(MAX_CONCURRENT):  # every slot taken by requests still being read
        hooks.receiver.slots.acquire()
    try:
        body = shopify_body()
        r = httpx.post(f"{hooks.url}/webhooks/shopify", content=body, headers=shopify_headers(body))
        assert r.status_code == 503 and r.headers["Retry-After"] == "5" and hooks.rows() == []
    finally:
        for _ in range(MAX_CONCURRENT):
            hooks.receiver.slots.release()
    body = shopify_body()
    assert httpx.post(f"{hooks.url}/webhooks/shopify", content=body, headers=shopify_headers(body)).status_code == 200


# ----- Mailchimp -------------------------------------------------------------------------------


def test_mailchimp_url_check_secret_and_replays(hooks: Running) -> None:
    url = f"{hooks.url}/webhooks/mailchimp/{MC_SECRET}"
    # Mailchimp checks a new webhook URL with a GET.
    assert httpx.get(url).status_code == 200
    body = mailchimp_body()
    assert httpx.post(url, content=body, headers=FORM).status_code == 200
    [row] = hooks.rows()
    assert (row["vendor"], row["connection"], row["topic"], row["object_ids"]) == ("mailchimp", "mc", "subscribe", ["8a25ff1d98"])
    assert EMAIL not in json.dumps(row, default=str)
    # The same delivery again: 200, queued once.
    assert httpx.post(url, content=body, headers=FORM).status_code == 200
    assert len(hooks.rows()) == 1
    # Another event is queued.
    assert httpx.post(url, content=mailchimp_body("unsubscribe"), headers=FORM).status_code == 200
    assert len(hooks.rows()) == 2
    # A wrong secret (one character off, a prefix, none): refused, for GET and POST.
    wrong = MC_SECRET[:-1] + ("x" if MC_SECRET[-1] != "x" else "y")
    for bad in (f"/webhooks/mailchimp/{wrong}", f"/webhooks/mailchimp/{MC_SECRET[:10]}", "/webhooks/mailchimp",
                "/webhooks/mailchimp/"):
        assert httpx.post(hooks.url + bad, content=mailchimp_body("profile"), headers=FORM).status_code == 401
    assert httpx.get(f"{hooks.url}/webhooks/mailchimp/{wrong}").status_code == 401
    # Not a Mailchimp event.
    assert httpx.post(url, content=b"type=nonsense&data[id]=1", headers=FORM).status_code == 400
    assert len(hooks.rows()) == 2
    assert (hooks.count("mailchimp", "validated"), hooks.count("mailchimp", "accepted"),
            hooks.count("mailchimp", "replayed"), hooks.count("mailchimp", "forged"),
            hooks.count("mailchimp", "invalid")) == (1, 2, 1, 5, 1)


# ----- every vendor ----------------------------------------------------------------------------


def test_body_too_large_is_refused_and_not_queued(hooks: Running) -> None:
    big = b"[" + b" " * 5000 + b"]"  # max_body_bytes is 4096 here
    url = f"{hooks.url}/webhooks/hubspot"
    assert httpx.post(url, content=big, headers=hubspot_headers(url, big)).status_code == 413
    assert httpx.post(f"{hooks.url}/webhooks/shopify", content=big, headers=shopify_headers(big)).status_code == 413
    # Far past the limit: answered without reading the body and the connection closed, so the
    # client sees the 413 or, when it is still sending, a reset connection.
    very_big = b"x" * 200_000
    try:
        r = httpx.post(f"{hooks.url}/webhooks/mailchimp/{MC_SECRET}", content=very_big, headers=FORM)
        assert r.status_code == 413
    except httpx.TransportError:
        pass
    assert hooks.rows() == []
    assert (hooks.count("hubspot", "invalid"), hooks.count("shopify", "invalid"), hooks.count("mailchimp", "invalid")) == (1, 1, 1)


def test_a_request_without_content_length_is_refused(hooks: Running) -> None:
    host, port = "127.0.0.1", hooks.receiver.port
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        answer = s.recv(1024)
    assert answer.startswith(b"HTTP/1.0 411") or answer.startswith(b"HTTP/1.1 411")
    assert hooks.rows() == [] and hooks.count("shopify", "invalid") == 1


def test_other_urls_and_methods(store_url: str) -> None:
    for running in start_receiver(store_url, mailchimp=None):
        assert httpx.get(f"{running.url}/webhooks/hubspot").status_code == 405
        assert httpx.put(f"{running.url}/webhooks/shopify", content=b"{}").status_code == 405
        assert httpx.post(f"{running.url}/webhooks/stripe", content=b"{}").status_code == 404
        assert httpx.post(f"{running.url}/webhooks/hubspot/extra", content=b"{}").status_code == 404
        # Mailchimp is not configured here: its URL does not exist.
        assert httpx.get(f"{running.url}/webhooks/mailchimp/{MC_SECRET}").status_code == 404
        assert httpx.get(f"{running.url}/metrics").status_code == 404
        assert running.rows() == []


def test_a_store_failure_is_answered_503_so_the_vendor_retries(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'gone.db'}")  # never upgraded: there is no queue table
    metrics = Metrics()
    receiver = WebhookReceiver(store, WebhooksConfig.model_validate(wh_config()), metrics, port=0).start()
    try:
        body = shopify_body()
        r = httpx.post(f"{receiver.url}/webhooks/shopify", content=body, headers=shopify_headers(body))
        assert r.status_code == 503
        assert metrics.registry.get_sample_value("synchub_webhooks_total", {"vendor": "shopify", "outcome": "error"}) == 1
    finally:
        receiver.stop()
        store.dispose()


def test_no_secret_and_no_personal_data_in_the_logs(hooks: Running, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="synchub")
    url = f"{hooks.url}/webhooks/mailchimp/{MC_SECRET}"
    httpx.get(url)
    httpx.post(url, content=mailchimp_body(), headers=FORM)
    httpx.post(f"{hooks.url}/webhooks/mailchimp/wrong-{MC_SECRET[:20]}", content=mailchimp_body(), headers=FORM)
    body = shopify_body()
    httpx.post(f"{hooks.url}/webhooks/shopify", content=body, headers=shopify_headers(body))
    httpx.post(f"{hooks.url}/webhooks/shopify", content=body, headers=shopify_headers(body, secret="shpss_wrong", webhook_id="z"))
    hs = f"{hooks.url}/webhooks/hubspot"
    httpx.post(hs, content=hubspot_body(), headers=hubspot_headers(hs, hubspot_body()))
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "webhook" in text  # something was logged at all
    for secret_or_data in (MC_SECRET, SHOPIFY_SECRET, HUBSPOT_SECRET, EMAIL, "Hannelore", "Zwirbelgruber"):
        assert secret_or_data not in text
    assert redact(f"/webhooks/mailchimp/{MC_SECRET}") == "/webhooks/mailchimp/***"  # registered with the config


# ----- durability: acknowledged means stored ---------------------------------------------------

_RECEIVER = """
import json, sys, time
from synchub.config import WebhooksConfig
from synchub.store import Store
from synchub.webhooks import WebhookReceiver
store = Store(sys.argv[1])
store.upgrade()
receiver = WebhookReceiver(store, WebhooksConfig.model_validate(json.loads(sys.argv[2])), port=0).start()
print(receiver.port, flush=True)
time.sleep(300)
"""


def test_an_acknowledged_webhook_survives_kill_9(store_url: str, tmp_path: Path) -> None:
    cfg = wh_config()
    cfg["shopify"]["connection"] = "crm"
    proc = subprocess.Popen([sys.executable, "-c", _RECEIVER, store_url, json.dumps(cfg)], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())  # type: ignore[union-attr]
        body = shopify_body()
        r = httpx.post(f"http://127.0.0.1:{port}/webhooks/shopify", content=body, headers=shopify_headers(body))
        assert r.status_code == 200
        os.kill(proc.pid, signal.SIGKILL)  # right after the acknowledgement: nothing may be lost
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    hub = outcome_hub(tmp_path, store_url)
    try:
        [event] = pending_events(hub.store)
        assert (event["connection"], event["vendor"], event["status"]) == ("crm", "shopify", "pending")
        # A new worker's consumer pulls the connection and settles the event.
        assert WebhookConsumer(hub).run_once() == {"crm": "done"}
        assert pending_events(hub.store) == []
        assert webhook_runs(hub) == ["succeeded"]
    finally:
        hub.store.dispose()


# ----- the consumer ------------------------------------------------------------------------------


_plugin = OutcomePlugin()


@pytest.fixture(autouse=True)
def _outcome_connector() -> Iterator[None]:
    plugins.register(_plugin, name="outcome")
    yield
    plugins.unregister(_plugin)


def outcome_hub(tmp_path: Path, store_url: str, outcome: str = "ok", webhooks: str = "") -> Hub:
    write_people_mapping(tmp_path / "mappings")
    body = ("match:\n  person: {keys: [email], fuzzy: false}\nconnections:\n"
            f"  crm:\n    connector: outcome\n    settings: {{outcome: {outcome}}}\n"
            "    streams:\n      people: {mapping: people}\n" + webhooks)
    hub = Hub(load_config(write_config(tmp_path, body, store_url), environ={}))
    hub.store.upgrade()
    return hub


def webhook_runs(hub: Hub) -> list[str]:
    with hub.store.engine.connect() as conn:
        q = sa.select(run_t.c.status).where(run_t.c.trigger == "webhook", run_t.c.connection == "crm").order_by(run_t.c.id)
        return list(conn.execute(q).scalars())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def hub(tmp_path: Path, store_url: str) -> Iterator[Hub]:
    h = outcome_hub(tmp_path, store_url)
    yield h
    h.store.dispose()


def statuses(hub: Hub) -> list[tuple[str, int]]:
    with hub.store.engine.connect() as conn:
        q = sa.select(webhook_event_t.c.status, webhook_event_t.c.attempts).order_by(webhook_event_t.c.id)
        return [tuple(r) for r in conn.execute(q)]  # type: ignore[misc]


def test_consumer_marks_events_done_only_after_a_successful_run(hub: Hub) -> None:
    assert enqueue(hub.store, "hubspot", "crm", [QueuedEvent("e1", "contact.creation", ["1"]), QueuedEvent("e2")]) == 2
    seen: list[list[tuple[str, int]]] = []
    # While the run is going on, its events are still pending.
    hub.on_run_started.append(lambda name, direction: seen.append(statuses(hub)))
    assert WebhookConsumer(hub).run_once() == {"crm": "done"}
    assert seen == [[("pending", 0), ("pending", 0)]]
    assert statuses(hub) == [("done", 0), ("done", 0)]
    assert webhook_runs(hub) == ["succeeded"]
    # Nothing pending: no run.
    assert WebhookConsumer(hub).run_once() == {}
    assert webhook_runs(hub) == ["succeeded"]


def test_a_failed_run_leaves_events_pending_and_backs_off(hub: Hub) -> None:
    hub.config.connections["crm"].settings["outcome"] = "failed"
    enqueue(hub.store, "shopify", "crm", [QueuedEvent("w1", "customers/update", ["7"])])
    clock = Clock()
    consumer = WebhookConsumer(hub, poll_seconds=5, clock=clock)
    assert consumer.run_once() == {"crm": "failed"}
    assert statuses(hub) == [("pending", 1)]
    assert consumer.run_once() == {"crm": "waiting"}  # backing off: no run
    assert webhook_runs(hub) == ["failed"]
    clock.now += 11  # 5 s * 2
    assert consumer.run_once() == {"crm": "failed"}
    assert statuses(hub) == [("pending", 2)]
    clock.now += 19  # 5 s * 4 = 20 s since the last failure: still waiting
    assert consumer.run_once() == {"crm": "waiting"}
    clock.now += 2
    hub.config.connections["crm"].settings["outcome"] = "ok"  # the API is back
    assert consumer.run_once() == {"crm": "done"}
    assert statuses(hub) == [("done", 2)]
    assert webhook_runs(hub) == ["failed", "failed", "succeeded"]


def test_a_crashing_run_leaves_events_pending(hub: Hub) -> None:
    hub.config.connections["crm"].settings["outcome"] = "crash"
    enqueue(hub.store, "mailchimp", "crm", [QueuedEvent("m1", "profile")])
    assert WebhookConsumer(hub).run_once() == {"crm": "failed"}
    assert statuses(hub) == [("pending", 1)]


def test_a_busy_connection_keeps_its_events_for_the_next_pass(hub: Hub) -> None:
    enqueue(hub.store, "hubspot", "crm", [QueuedEvent("e1")])
    consumer = WebhookConsumer(hub)
    with connection_lock(hub.store, "crm") as got:  # another job or worker runs it
        assert got
        assert consumer.run_once() == {"crm": "busy"}
    assert statuses(hub) == [("pending", 0)] and webhook_runs(hub) == []
    assert consumer.run_once() == {"crm": "done"}
    assert statuses(hub) == [("done", 0)]


def test_events_arriving_during_a_run_wait_for_the_next_one(hub: Hub) -> None:
    enqueue(hub.store, "hubspot", "crm", [QueuedEvent("before")])
    # An event that arrives once the run has started: the run may have read past its change.
    hub.on_run_started.append(lambda name, direction: enqueue(hub.store, "hubspot", "crm", [QueuedEvent(f"during-{len(webhook_runs(hub))}")]))
    consumer = WebhookConsumer(hub)
    assert consumer.run_once() == {"crm": "done"}
    with hub.store.engine.connect() as conn:
        rows = {r.event_id: r.status for r in conn.execute(sa.select(webhook_event_t))}
    assert rows == {"before": "done", "during-1": "pending"}


def test_events_of_a_connection_the_config_lacks_are_kept(hub: Hub) -> None:
    enqueue(hub.store, "hubspot", "gone", [QueuedEvent("e1")])
    assert WebhookConsumer(hub).run_once() == {"gone": "unknown"}
    assert statuses(hub) == [("pending", 0)]


def test_done_events_are_pruned_after_keep_days(hub: Hub) -> None:
    enqueue(hub.store, "hubspot", "crm", [QueuedEvent("old"), QueuedEvent("new")])
    WebhookConsumer(hub).run_once()
    with hub.store.begin() as conn:
        conn.execute(webhook_event_t.update().where(webhook_event_t.c.event_id == "old")
                     .values(processed_at=datetime.now(timezone.utc) - timedelta(days=8)))
    WebhookConsumer(hub, keep_days=7).run_once()
    with hub.store.engine.connect() as conn:
        assert sorted(conn.execute(sa.select(webhook_event_t.c.event_id)).scalars()) == ["new"]


# ----- config and serve --------------------------------------------------------------------------


def _hub_config(tmp_path: Path, webhooks: str, env: dict[str, str]) -> Path:
    write_people_mapping(tmp_path / "mappings")
    body = ("connections:\n"
            "  crm: {connector: hubspot, settings: {access_token: '${HS_TOKEN}'}, streams: {contacts: {mapping: people}}}\n"
            "  mc: {connector: outcome, streams: {people: {mapping: people}}}\n"
            "  out: {connector: hubspot, direction: out, settings: {access_token: '${HS_TOKEN}'}, streams: {}}\n"
            + webhooks)
    return write_config(tmp_path, body, f"sqlite:///{tmp_path / 'c.db'}")


def test_config_checks_the_webhook_connections(tmp_path: Path) -> None:
    env = {"HS_TOKEN": "pat-na1-0000", "HUBSPOT_APP_SECRET": HUBSPOT_SECRET, "MC_SECRET": MC_SECRET}
    good = _hub_config(tmp_path, "webhooks:\n  port: 8471\n  public_url: https://hooks.example.com/\n"
                                 "  hubspot: {connection: crm, secret: '${HUBSPOT_APP_SECRET}'}\n", env)
    cfg = load_config(good, environ=env, check_plugins=False)
    assert cfg.webhooks is not None and list(cfg.webhooks.sources()) == ["hubspot"]
    assert cfg.webhooks.public_url == "https://hooks.example.com"
    assert HUBSPOT_SECRET not in repr(cfg) and redact(HUBSPOT_SECRET) == "***"

    bad = _hub_config(tmp_path, "webhooks:\n"
                                "  hubspot: {connection: nowhere, secret: '${HUBSPOT_APP_SECRET}'}\n"
                                "  shopify: {connection: crm, secret: '${HUBSPOT_APP_SECRET}'}\n"
                                "  mailchimp: {connection: mc, secret: abcdefghijkl}\n", env)
    with pytest.raises(ConfigError) as err:
        load_config(bad, environ=env, check_plugins=False)
    problems = {p.field: p.message for p in err.value.problems}
    assert "no connection named 'nowhere'" in problems["webhooks.hubspot.connection"]
    assert "not 'shopify'" in problems["webhooks.shopify.connection"]
    assert "at least 24 characters" in problems["webhooks.mailchimp.secret"]
    assert all(p.line for p in err.value.problems if p.field.startswith("webhooks"))

    outbound = _hub_config(tmp_path, "webhooks:\n  hubspot: {connection: out, secret: '${HUBSPOT_APP_SECRET}'}\n", env)
    with pytest.raises(ConfigError, match="outbound only"):
        load_config(outbound, environ=env, check_plugins=False)
    empty = _hub_config(tmp_path, "webhooks: {port: 8471}\n", env)
    with pytest.raises(ConfigError, match="at least one of hubspot, shopify, mailchimp"):
        load_config(empty, environ=env, check_plugins=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_receives_webhooks_and_pulls_the_connection(tmp_path: Path, store_url: str) -> None:
    hub = outcome_hub(tmp_path, store_url)
    port = _free_port()
    # The config check wants a shopify connection for shopify webhooks; the test connector
    # stands in for it here.
    hub.config.webhooks = WebhooksConfig.model_validate(
        {"port": port, "poll_seconds": 3600, "shopify": {"connection": "crm", "secret": SHOPIFY_SECRET}})
    stop = threading.Event()
    t = threading.Thread(target=serve, args=(hub,), kwargs={"stop": stop, "metrics_port": _free_port()})
    t.start()
    try:
        deadline = time.monotonic() + 20
        r = None
        while time.monotonic() < deadline:
            try:
                body = shopify_body()
                r = httpx.post(f"http://127.0.0.1:{port}/webhooks/shopify", content=body, headers=shopify_headers(body))
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        assert r is not None and r.status_code == 200
        # The delivery wakes the queue at once (the poll interval is an hour here).
        while time.monotonic() < deadline and (not webhook_runs(hub) or pending_events(hub.store)):
            time.sleep(0.1)
        assert webhook_runs(hub) == ["succeeded"]
        assert pending_events(hub.store) == []
    finally:
        stop.set()
        t.join(30)
        hub.store.dispose()
    assert not t.is_alive()
    with pytest.raises(httpx.ConnectError):  # stopped with serve
        httpx.post(f"http://127.0.0.1:{port}/webhooks/shopify", content=b"{}")


def test_the_readme_example_is_a_valid_webhooks_section() -> None:
    import re

    import yaml

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Webhooks", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```yaml\n(.*?)```", section, flags=re.S)
    assert block is not None
    env = {"HUBSPOT_APP_SECRET": HUBSPOT_SECRET, "SHOPIFY_API_SECRET": SHOPIFY_SECRET, "MAILCHIMP_WEBHOOK_SECRET": MC_SECRET}
    filled = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], block.group(1))
    cfg = WebhooksConfig.model_validate(yaml.safe_load(filled)["webhooks"])
    assert list(cfg.sources()) == ["hubspot", "shopify", "mailchimp"] and cfg.port == 8471
    for url in ("/webhooks/hubspot", "/webhooks/shopify", "/webhooks/mailchimp/<MAILCHIMP_WEBHOOK_SECRET>"):
        assert url in section


def test_a_privacy_deletion_forgets_the_tool_s_copy_before_the_pull(hub: Hub) -> None:
    """HubSpot's contact.privacyDeletion (and Shopify's customers/redact) say the tool erased a
    person: the hub's copy of that record goes at once, not whenever a full listing notices."""
    from synchub import store as st

    hub.sync()  # the outcome connector's record "1" (Ann)
    enqueue(hub.store, "hubspot", "crm", [QueuedEvent("p1", "contact.privacyDeletion", ["1"])])

    def deleted() -> bool:
        with hub.store.engine.connect() as conn:
            return bool(conn.execute(sa.select(st.source_t.c.deleted).where(st.source_t.c.source_id == "1")).scalar_one())

    seen: list[bool] = []
    hub.on_run_started.append(lambda name, direction: seen.append(deleted()))
    assert WebhookConsumer(hub).run_once() == {"crm": "done"}
    assert seen == [True]  # gone before the pull started
    with hub.store.engine.connect() as conn:
        why = conn.execute(sa.select(st.audit_t.c.details).where(st.audit_t.c.action == "source_deleted")).scalars().all()
    assert [d["why"] for d in why] == ["erased in the tool for privacy (webhook)"]


def test_shopify_redact_names_the_customer_by_its_gid() -> None:
    from synchub.webhooks import shopify_events

    [event] = shopify_events(json.dumps({"shop_domain": "acme.myshopify.com", "customer": {"id": 123, "email": "x@y.z"}}).encode(),
                             "w1", "customers/redact")
    assert "gid://shopify/Customer/123" in event.object_ids and "x@y.z" not in event.object_ids


def test_a_webhook_of_another_shop_of_the_same_app_is_refused(store_url: str) -> None:
    """A public app's secret signs every installing shop's webhooks: a delivery naming another shop
    must not trigger this connection (nor delete a record whose number happens to match)."""
    from synchub.webhooks import shop_domain

    assert shop_domain("acme") == "acme.myshopify.com" and shop_domain("ACME.myshopify.com") == "acme.myshopify.com"
    store = Store(store_url)
    store.upgrade()
    receiver = WebhookReceiver(store, WebhooksConfig.model_validate(wh_config()), Metrics(), port=0,
                               shopify_domain="acme.myshopify.com").start()
    try:
        body = shopify_body()
        other = {**shopify_headers(body, webhook_id="o1"), "X-Shopify-Shop-Domain": "other.myshopify.com"}
        assert httpx.post(f"{receiver.url}/webhooks/shopify", content=body, headers=other).status_code == 401
        ours = shopify_headers(body, webhook_id="o2")  # names acme.myshopify.com
        assert httpx.post(f"{receiver.url}/webhooks/shopify", content=body, headers=ours).status_code == 200
        with store.engine.connect() as conn:
            assert [r.event_id for r in conn.execute(sa.select(webhook_event_t.c.event_id))] == ["o2"]
    finally:
        receiver.stop()
        store.dispose()
