"""synchub.metrics: real HTTP requests against a MetricsServer on a free loopback port."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from synchub.metrics import Metrics, MetricsServer

T0 = datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=timezone.utc)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def run(status: str = "succeeded", *, connection: str = "shop", direction: str = "in",
        finished_at: datetime = T0, seconds: float = 12.5, api: dict[str, int] | None = None,
        **counts: int) -> dict[str, Any]:
    streams = {"customers": {"read": 10, "created": 3, "updated": 2, "unchanged": 5, "duplicates": 0,
                             "rejected": 1, "conflicts": 0, "written": 0, "write_rejected": 0,
                             "skipped": 0, "left": 0, "deleted": 0, **counts}}
    return {"connection": connection, "direction": direction, "status": status, "seconds": seconds,
            "finished_at": finished_at, "streams": streams,
            "api": {"calls": 40, "retries": 2, "throttled": 1} if api is None else api}


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=5) as c:  # no proxy from the environment
        yield c


@pytest.fixture
def serve() -> Iterator[Callable[..., MetricsServer]]:
    servers: list[MetricsServer] = []

    def start(metrics: Metrics, **kwargs: Any) -> MetricsServer:
        servers.append(MetricsServer(metrics, port=0, **kwargs).start())
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def server(metrics: Metrics, serve: Callable[..., MetricsServer]) -> MetricsServer:
    return serve(metrics)


def scrape(client: httpx.Client, server: MetricsServer) -> Samples:
    resp = client.get(f"{server.url}/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == CONTENT_TYPE_LATEST
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(resp.text) for s in family.samples}


def val(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


SHOP_IN = {"connection": "shop", "direction": "in"}


def test_two_runs_add_up(metrics: Metrics, server: MetricsServer, client: httpx.Client) -> None:
    metrics.run_started("shop", "in")
    metrics.run_started("shop", "in")
    assert val(scrape(client, server), "synchub_runs_in_progress", **SHOP_IN) == 2
    metrics.run_finished(run(seconds=12.5))
    later = T0 + timedelta(hours=1, microseconds=7)
    metrics.run_finished(run(seconds=4000, finished_at=later, read=5, write_rejected=2,
                             api={"calls": 10, "retries": 0, "throttled": 0}))

    s = scrape(client, server)
    assert val(s, "synchub_runs_total", **SHOP_IN, status="succeeded") == 2
    assert val(s, "synchub_runs_in_progress", **SHOP_IN) == 0
    rec = {"connection": "shop", "stream": "customers"}
    assert val(s, "synchub_records_total", **rec, outcome="read") == 15
    assert val(s, "synchub_records_total", **rec, outcome="created") == 6
    assert val(s, "synchub_records_total", **rec, outcome="write_rejected") == 2
    assert val(s, "synchub_records_total", **rec, outcome="duplicates") is None  # zeros are not added
    assert val(s, "synchub_rejected_records_total", **rec) == 1 + 1 + 2
    assert val(s, "synchub_api_calls_total", connection="shop") == 50
    assert val(s, "synchub_api_retries_total", connection="shop") == 2
    assert val(s, "synchub_api_throttled_total", connection="shop") == 1
    assert val(s, "synchub_run_duration_seconds_count", **SHOP_IN) == 2
    assert val(s, "synchub_run_duration_seconds_sum", **SHOP_IN) == 4012.5
    assert val(s, "synchub_run_duration_seconds_bucket", **SHOP_IN, le="15.0") == 1
    assert val(s, "synchub_run_duration_seconds_bucket", **SHOP_IN, le="3600.0") == 1
    assert val(s, "synchub_run_duration_seconds_bucket", **SHOP_IN, le="21600.0") == 2
    assert val(s, "synchub_last_success_timestamp_seconds", **SHOP_IN) == later.timestamp()
    assert val(s, "synchub_last_run_timestamp_seconds", **SHOP_IN) == later.timestamp()
    assert val(s, "synchub_last_run_failed", **SHOP_IN) == 0


def test_failed_run_flags_failure_and_keeps_last_success(
        metrics: Metrics, server: MetricsServer, client: httpx.Client) -> None:
    failed_at = T0 + timedelta(minutes=30)
    metrics.run_finished(run("partial"))
    metrics.run_finished(run("failed", finished_at=failed_at))
    s = scrape(client, server)
    assert val(s, "synchub_last_run_failed", **SHOP_IN) == 1
    assert val(s, "synchub_last_run_timestamp_seconds", **SHOP_IN) == failed_at.timestamp()
    assert val(s, "synchub_last_success_timestamp_seconds", **SHOP_IN) == T0.timestamp()
    assert val(s, "synchub_runs_total", **SHOP_IN, status="failed") == 1
    assert val(s, "synchub_runs_total", **SHOP_IN, status="partial") == 1

    metrics.run_finished(run("interrupted", finished_at=failed_at + timedelta(minutes=1)))
    s = scrape(client, server)
    assert val(s, "synchub_last_run_failed", **SHOP_IN) == 0
    assert val(s, "synchub_last_success_timestamp_seconds", **SHOP_IN) == T0.timestamp()


def test_skipped_run_counts_only_in_runs_total(
        metrics: Metrics, server: MetricsServer, client: httpx.Client) -> None:
    metrics.run_finished(run("skipped", connection="crm", direction="out"))
    s = scrape(client, server)
    assert val(s, "synchub_runs_total", connection="crm", direction="out", status="skipped") == 1
    touched = sorted(name for name, labels in s if ("connection", "crm") in labels)
    assert touched == ["synchub_runs_in_progress", "synchub_runs_total"]
    assert val(s, "synchub_runs_in_progress", connection="crm", direction="out") == 0  # never below 0


def test_file_connection_without_api_adds_no_api_series(
        metrics: Metrics, server: MetricsServer, client: httpx.Client) -> None:
    metrics.run_finished({**run(connection="files"), "api": None})
    metrics.run_finished(run(connection="files", api={"calls": 0, "retries": 0, "throttled": 0}))
    metrics.run_finished(run(connection="shop", api={"calls": 3, "retries": 0, "throttled": 0}))
    s = scrape(client, server)
    assert val(s, "synchub_records_total", connection="files", stream="customers", outcome="read") == 20
    assert not [name for name, labels in s if name.startswith("synchub_api_") and ("connection", "files") in labels]
    assert val(s, "synchub_api_calls_total", connection="shop") == 3
    assert val(s, "synchub_api_throttled_total", connection="shop") == 0


def test_exposed_metric_names(metrics: Metrics, serve: Callable[..., MetricsServer],
                              client: httpx.Client) -> None:
    server = serve(metrics)
    metrics.run_started("shop", "in")
    metrics.run_finished(run())
    families = text_string_to_metric_families(client.get(f"{server.url}/metrics").text)
    names = {s.name for f in families for s in f.samples}
    assert names == {
        "synchub_runs_total", "synchub_run_duration_seconds_bucket", "synchub_run_duration_seconds_count",
        "synchub_run_duration_seconds_sum", "synchub_records_total", "synchub_rejected_records_total",
        "synchub_api_calls_total", "synchub_api_retries_total", "synchub_api_throttled_total",
        "synchub_last_success_timestamp_seconds", "synchub_last_run_timestamp_seconds",
        "synchub_last_run_failed", "synchub_runs_in_progress", "synchub_up"}
    assert metrics.registry.get_sample_value("synchub_up") == 1
    server.stop()
    assert metrics.registry.get_sample_value("synchub_up") == 0
    with pytest.raises(httpx.TransportError):
        client.get(f"{server.url}/metrics")


def test_each_metrics_has_its_own_registry() -> None:
    a, own = Metrics(), CollectorRegistry()
    b = Metrics(own)  # would raise "Duplicated timeseries" if both used one registry
    assert b.registry is own and a.registry is not own
    a.run_finished(run())
    assert a.registry.get_sample_value("synchub_runs_total", {**SHOP_IN, "status": "succeeded"}) == 1
    assert b.registry.get_sample_value("synchub_runs_total", {**SHOP_IN, "status": "succeeded"}) is None


def test_default_health_follows_scheduler_and_store_flags(
        metrics: Metrics, server: MetricsServer, client: httpx.Client) -> None:
    resp = client.get(f"{server.url}/healthz")
    assert resp.status_code == 503
    assert resp.json()["status"] == "unhealthy"
    assert resp.json()["problems"] == ["scheduler is not running", "store not checked yet"]

    metrics.set_scheduler_running(True)
    metrics.set_store_ok(True)
    resp = client.get(f"{server.url}/healthz")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/json"
    assert resp.json() == {"status": "ok", "scheduler_running": True, "store_ok": True}

    metrics.set_store_ok(False)
    resp = client.get(f"{server.url}/healthz")
    assert resp.status_code == 503
    assert resp.json()["problems"] == ["store health check failed"]


def test_health_callable_is_asked_per_request(
        metrics: Metrics, serve: Callable[..., MetricsServer], client: httpx.Client) -> None:
    answers = [(True, {"connections": 3}), (False, {"problems": ["store unreachable"], "connections": 3})]
    server = serve(metrics, health=lambda: answers.pop(0))
    resp = client.get(f"{server.url}/healthz")
    assert (resp.status_code, resp.json()) == (200, {"status": "ok", "connections": 3})
    resp = client.get(f"{server.url}/healthz")
    assert resp.status_code == 503
    assert resp.json() == {"status": "unhealthy", "problems": ["store unreachable"], "connections": 3}


def test_health_callable_that_raises_is_unhealthy_without_the_message(
        metrics: Metrics, serve: Callable[..., MetricsServer], client: httpx.Client) -> None:
    def health() -> tuple[bool, dict[str, Any]]:
        raise ConnectionError("postgresql://sync:hunter2@db/prod refused")

    server = serve(metrics, health=health)
    resp = client.get(f"{server.url}/healthz")
    assert resp.status_code == 503
    assert resp.json() == {"status": "unhealthy", "problems": ["health check raised ConnectionError"]}
    assert "hunter2" not in resp.text and "Traceback" not in resp.text
    assert client.get(f"{server.url}/healthz").status_code == 503  # the server is still fine


def test_other_paths_and_methods(server: MetricsServer, client: httpx.Client) -> None:
    assert server.port != 0
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert client.get(f"{server.url}/").status_code == 404
    assert client.get(f"{server.url}/metrics/extra").status_code == 404
    assert client.get(f"{server.url}/metrics?name[]=synchub_up").status_code == 200
    post = client.post(f"{server.url}/healthz", content=b"{}")
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"


def test_head_sends_headers_only(server: MetricsServer) -> None:
    # Raw socket: HTTP clients drop a body sent in reply to HEAD, so they would not notice one.
    with socket.create_connection((server.host, server.port), timeout=5) as sock:
        sock.sendall(b"HEAD /metrics HTTP/1.0\r\n\r\n")
        reply = b"".join(iter(lambda: sock.recv(65536), b""))
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 ")
    assert b"Content-Length: " in head and b"Content-Length: 0" not in head
    assert body == b""


def test_port_in_use_raises_oserror_naming_it(metrics: Metrics) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=rf"127\.0\.0\.1:{port}\b"):
            MetricsServer(metrics, port=port).start()
    assert metrics.registry.get_sample_value("synchub_up") == 0
