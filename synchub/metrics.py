"""Prometheus metrics and a health endpoint for ``synchub serve``.

A small HTTP server (standard library ``ThreadingHTTPServer`` in a daemon thread) on a local port:

* ``GET /metrics``: Prometheus text format, so a scraper can graph and alert on the syncs;
* ``GET /healthz``: JSON, 200 ``{"status": "ok", ...}`` or 503 ``{"status": "unhealthy",
  "problems": [...]}``, for a container or load-balancer health probe.

Exposed series (label values are connection and stream names from the config, never secrets):

* ``synchub_runs_total{connection,direction,status}``: finished runs, including skipped ones
  (another worker had the run); skipped runs count nowhere else.
* ``synchub_run_duration_seconds{connection,direction}``: histogram, buckets 1 s to 6 h.
* ``synchub_records_total{connection,stream,outcome}``: per-record outcomes (read, created, ...).
* ``synchub_rejected_records_total{connection,stream}``: rejected + write_rejected. These are also
  in records_total, kept here too so "are records being rejected?" is one simple alert.
* ``synchub_api_calls_total``, ``synchub_api_retries_total``, ``synchub_api_throttled_total``
  ``{connection}``: vendor API traffic, to see rate limiting coming.
* ``synchub_last_success_timestamp_seconds{connection,direction}``: finish time of the last
  succeeded or partial run, for "has not synced in N hours" alerts.
* ``synchub_last_run_timestamp_seconds`` and ``synchub_last_run_failed`` (0/1)
  ``{connection,direction}``: the last run whatever its outcome.
* ``synchub_runs_in_progress{connection,direction}`` and ``synchub_up`` (1 while serving).
* ``synchub_webhooks_total{vendor,outcome}``: webhook requests (:mod:`synchub.webhooks`) by
  outcome: ``accepted`` (queued), ``replayed`` (already queued: answered 200, not queued again),
  ``forged`` (bad or missing signature or URL secret), ``stale`` (HubSpot timestamp older than 5
  minutes), ``invalid`` (malformed, too large), ``error`` (the store could not take it: 503, the
  vendor retries), ``validated`` (Mailchimp's GET that checks the URL).

Every ``Metrics`` has its own ``CollectorRegistry``, so tests and several hubs in one process do not
collide. The ``*_created`` series prometheus_client adds to counters and histograms are left out:
they are not needed here, and switching them off in the library would be process-wide.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase

log = logging.getLogger(__name__)

OUTCOMES = ("read", "created", "updated", "unchanged", "duplicates", "rejected", "conflicts",
            "written", "write_rejected", "skipped", "left", "deleted")
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 10800, 21600)

HealthCheck = Callable[[], tuple[bool, dict[str, Any]]]


class _WithoutCreated:
    """Collects the given metrics without their ``*_created`` samples."""

    def __init__(self, metrics: list[MetricWrapperBase]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        for metric in self._metrics:
            for family in metric.collect():
                family.samples = [s for s in family.samples if not s.name.endswith("_created")]
                yield family


class Metrics:
    """What the hub reports: fed by the scheduler, read by :class:`MetricsServer`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        cd = ["connection", "direction"]
        # Counter names are given with "_total"; prometheus_client strips and re-adds it.
        self._runs = Counter("synchub_runs_total", "Finished sync runs.", [*cd, "status"], registry=None)
        self._duration = Histogram("synchub_run_duration_seconds", "Duration of sync runs (not skipped ones).",
                                   cd, buckets=DURATION_BUCKETS, registry=None)
        self._records = Counter("synchub_records_total", "Records by outcome.",
                                ["connection", "stream", "outcome"], registry=None)
        self._rejected = Counter("synchub_rejected_records_total", "Records rejected on read or write.",
                                 ["connection", "stream"], registry=None)
        self._api = {key: Counter(f"synchub_api_{key}_total", text, ["connection"], registry=None) for key, text in (
            ("calls", "Vendor API requests."), ("retries", "Vendor API requests retried."),
            ("throttled", "Vendor API responses that asked us to slow down."))}
        self._last_success = Gauge("synchub_last_success_timestamp_seconds",
                                   "Finish time of the last succeeded or partial run.", cd, registry=None)
        self._last_run = Gauge("synchub_last_run_timestamp_seconds", "Finish time of the last run.", cd, registry=None)
        self._last_failed = Gauge("synchub_last_run_failed", "1 if the last run failed, else 0.", cd, registry=None)
        self._in_progress = Gauge("synchub_runs_in_progress", "Runs started and not finished.", cd, registry=None)
        self._up = Gauge("synchub_up", "1 while the metrics server is serving.", registry=None)
        self._webhooks = Counter("synchub_webhooks_total", "Webhook requests by vendor and outcome.",
                                 ["vendor", "outcome"], registry=None)
        self.registry.register(_WithoutCreated([
            self._runs, self._duration, self._records, self._rejected, *self._api.values(), self._last_success,
            self._last_run, self._last_failed, self._in_progress, self._up, self._webhooks]))
        self._running: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self.store_ok: bool | None = None  # None: not checked yet
        self.scheduler_running = False

    def run_started(self, connection: str, direction: str) -> None:
        self._set_running(connection, direction, +1)

    def run_finished(self, run: dict[str, Any]) -> None:
        """Record a finished run (see the module docstring); ends a ``run_started`` of the same pair."""
        conn, direction, status = str(run["connection"]), str(run["direction"]), str(run["status"])
        self._set_running(conn, direction, -1)
        self._runs.labels(conn, direction, status).inc()
        if status == "skipped":
            return
        self._duration.labels(conn, direction).observe(max(float(run.get("seconds") or 0), 0.0))
        for stream, counts in (run.get("streams") or {}).items():
            for outcome in OUTCOMES:
                if (n := counts.get(outcome) or 0) > 0:
                    self._records.labels(conn, stream, outcome).inc(n)
            # Always create the series (at 0), so the first rejection shows up as an increase.
            rejected = (counts.get("rejected") or 0) + (counts.get("write_rejected") or 0)
            self._rejected.labels(conn, stream).inc(max(rejected, 0))
        api = run.get("api") or {}
        if any(api.get(key) for key in self._api):
            for key, counter in self._api.items():
                counter.labels(conn).inc(max(api.get(key) or 0, 0))
        finished = _unix_time(run.get("finished_at"))
        self._last_run.labels(conn, direction).set(finished)
        self._last_failed.labels(conn, direction).set(1 if status == "failed" else 0)
        if status in ("succeeded", "partial"):
            self._last_success.labels(conn, direction).set(finished)

    def webhook_received(self, vendor: str, outcome: str, n: int = 1) -> None:
        """Count a webhook request of ``vendor`` (hubspot, shopify, mailchimp) by ``outcome``."""
        self._webhooks.labels(vendor, outcome).inc(n)

    def set_store_ok(self, ok: bool) -> None:
        self.store_ok = bool(ok)

    def set_scheduler_running(self, ok: bool) -> None:
        self.scheduler_running = bool(ok)

    def set_up(self, up: bool) -> None:
        self._up.set(1 if up else 0)

    def health(self) -> tuple[bool, dict[str, Any]]:
        """The default health check: the scheduler is running and the last store check passed."""
        problems = []
        if not self.scheduler_running:
            problems.append("scheduler is not running")
        if self.store_ok is None:
            problems.append("store not checked yet")
        elif not self.store_ok:
            problems.append("store health check failed")
        details: dict[str, Any] = {"scheduler_running": self.scheduler_running, "store_ok": self.store_ok}
        if problems:
            details["problems"] = problems
        return not problems, details

    def _set_running(self, connection: str, direction: str, step: int) -> None:
        with self._lock:  # never below 0, even for a run_finished without run_started
            n = max(self._running.get((connection, direction), 0) + step, 0)
            self._running[(connection, direction)] = n
            self._in_progress.labels(connection, direction).set(n)


def _unix_time(value: datetime | None) -> float:
    if value is None:
        return time.time()
    if value.tzinfo is None:  # documented as aware UTC; be lenient with naive UTC
        value = value.replace(tzinfo=timezone.utc)
    return value.timestamp()


class ThreadedServer(ThreadingHTTPServer):
    """A thread per request; ``owner`` is the :class:`BackgroundServer` the handler answers for."""

    daemon_threads = True
    allow_reuse_address = os.name != "nt"  # on Windows it would let us share a port in use
    owner: Any


class ThreadedServer6(ThreadedServer):
    address_family = socket.AF_INET6


class BackgroundServer:
    """An HTTP server on ``host:port`` in a daemon thread (the metrics endpoint, the webhook
    receiver). ``port=0`` picks a free port, readable as ``.port`` after :meth:`start`."""

    #: The request handler; it finds this object as ``self.server.owner``.
    handler: type[BaseHTTPRequestHandler]
    #: What it does, for a port that cannot be bound (``cannot serve metrics on ...``).
    purpose = "serve"
    #: The thread's name: ``synchub-<name>-<port>``.
    thread_name = "server"

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._server: ThreadedServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> Any:
        if self._server is not None:
            return self
        cls = ThreadedServer6 if ":" in self.host else ThreadedServer
        try:
            server = cls((self.host, self.port), self.handler)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot {self.purpose} on {self.host}:{self.port}: {exc.strerror or exc}") from exc
        server.owner = self
        self.port = server.server_address[1]
        self._server = server
        # A short poll interval keeps stop() quick; the wake-ups are negligible.
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"synchub-{self.thread_name}-{self.port}", daemon=True)
        self._thread.start()
        self.started()
        return self

    def started(self) -> None:
        """Called once the server listens."""

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


class _Handler(BaseHTTPRequestHandler):
    server: ThreadedServer

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/metrics":
            self._send(200, CONTENT_TYPE_LATEST, generate_latest(self.server.owner.metrics.registry))
        elif path == "/healthz":
            ok, body = self.server.owner.check_health()
            self._send(200 if ok else 503, "application/json", json.dumps(body, default=str).encode())
        else:
            self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n")

    def do_HEAD(self) -> None:
        self.do_GET()

    def _not_allowed(self) -> None:
        self._send(405, "text/plain; charset=utf-8", b"method not allowed\n", {"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _not_allowed

    def _send(self, code: int, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("metrics %s: " + format, self.address_string(), *args)


class MetricsServer(BackgroundServer):
    """Serves ``GET /metrics`` and ``GET /healthz`` on ``host:port`` from a daemon thread.

    ``health`` returns ``(ok, details)`` and is called for every /healthz request; without it the
    health is :meth:`Metrics.health`. ``port=0`` picks a free port, readable as ``.port`` after start.
    """

    handler = _Handler
    purpose = "serve metrics"
    thread_name = "metrics"

    def __init__(self, metrics: Metrics, host: str = "127.0.0.1", port: int = 9464,
                 health: HealthCheck | None = None) -> None:
        super().__init__(host, port)
        self.metrics = metrics
        self.health = health or metrics.health

    def started(self) -> None:
        self.metrics.set_up(True)
        log.info("serving metrics on %s/metrics and health on %s/healthz", self.url, self.url)

    def stop(self) -> None:
        if self._server is not None:
            self.metrics.set_up(False)
        super().stop()

    def check_health(self) -> tuple[bool, dict[str, Any]]:
        """Run the health check; returns ``(ok, response body)``. Never raises."""
        try:
            ok, details = self.health()
            body = dict(details or {})
        except Exception as exc:  # the message could hold a secret: report the type only
            log.warning("metrics health check raised %s", type(exc).__name__)
            return False, {"status": "unhealthy", "problems": [f"health check raised {type(exc).__name__}"]}
        if ok:
            return True, {**body, "status": "ok"}
        problems = body.pop("problems", None) or ["health check failed"]
        return False, {**body, "status": "unhealthy", "problems": [str(p) for p in problems]}
