"""``synchub serve``: jobs from YAML schedules, one run per connection at a time, clean stop."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from prometheus_client.parser import text_string_to_metric_families

from synchub.config import Schedule
from synchub.engine import AlreadyRunning
from synchub.errors import SynchubError
from synchub.locks import connection_lock
from synchub.scheduler import (
    build_scheduler,
    catch_up,
    last_slot,
    prune_history,
    push_job,
    run_job,
    serve,
    trigger_for,
)
from synchub.store import Store, rejected_t, run_t
from tests.helpers import demo_hub


def test_jobs_follow_the_yaml_schedules(demo_dir: Path, tmp_path: Path) -> None:
    hub = demo_hub(demo_dir, f"sqlite:///{tmp_path / 's.db'}")
    scheduler = build_scheduler(hub)
    jobs = {j.id: j for j in scheduler.get_jobs()}
    assert set(jobs) == {"sync:shop", "sync:newsletter", "sync:fair"}  # export has no schedule
    assert isinstance(jobs["sync:shop"].trigger, IntervalTrigger)
    assert jobs["sync:shop"].trigger.interval.total_seconds() == 15 * 60
    assert isinstance(jobs["sync:fair"].trigger, CronTrigger)
    for job in jobs.values():
        assert job.max_instances == 1 and job.coalesce is True and job.misfire_grace_time == 300


def test_a_connection_never_runs_twice_at_once(demo_dir: Path, store_url: str) -> None:
    hub = demo_hub(demo_dir, store_url)
    with connection_lock(hub.store, "shop") as got:
        assert got
        with pytest.raises(AlreadyRunning):
            hub.run_connection("shop", "in")
        with pytest.raises(AlreadyRunning):
            hub.sync(["shop"])  # asked for by name: refused
        # Syncing everything skips the busy one and runs the others.
        statuses = {(s.connection, s.direction): s.status for s in hub.sync()}
        assert statuses[("shop", "in")] == "skipped"
        assert statuses[("newsletter", "in")] in ("succeeded", "partial")
        assert statuses[("export", "out")] == "succeeded"
    with connection_lock(hub.store, "export") as got:
        assert got
        statuses = {(s.connection, s.direction): s.status for s in hub.sync()}
        assert statuses[("export", "out")] == "skipped"  # busy push: skipped, not an error
        with pytest.raises(AlreadyRunning):
            hub.sync(["export"])
    assert hub.run_connection("shop", "in").status in ("succeeded", "partial")


_HOLDER = """
import sys, time
from synchub.locks import connection_lock
from synchub.store import Store
with connection_lock(Store(sys.argv[1]), "shop") as got:
    print("got" if got else "busy", flush=True)
    time.sleep(120)
"""


def test_the_lock_holds_across_processes_and_dies_with_its_worker(store_url: str, tmp_path: Path) -> None:
    """Another process holds the run lock: this one is refused; kill -9 it and the lock is free."""
    store = Store(store_url)
    store.upgrade()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, store_url], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "got"
        with connection_lock(store, "shop") as got:
            assert not got
        with connection_lock(store, "other") as got:
            assert got
        holder.kill()
        holder.wait(10)
        deadline = time.monotonic() + 10
        while True:
            with connection_lock(store, "shop") as got:
                if got:
                    break
            assert time.monotonic() < deadline, "the lock of a killed worker was never released"
            time.sleep(0.1)
    finally:
        holder.kill()
        store.dispose()


def test_a_run_left_running_by_a_dead_worker_is_marked_abandoned(demo_dir: Path, store_url: str) -> None:
    hub = demo_hub(demo_dir, store_url)
    dead = hub.store.start_run("shop", "schedule", "in")  # its worker died: no lock is held
    summary = hub.run_connection("shop", "in")
    assert summary.status in ("succeeded", "partial")
    run = hub.store.get_run(dead)
    assert run is not None and run["status"] == "abandoned" and run["finished_at"] is not None
    assert "worker stopped" in run["error"]
    assert hub.store.get_run(summary.run_id)["direction"] == "in"


def test_a_slot_served_by_another_worker_is_skipped(demo_dir: Path, store_url: str) -> None:
    hub = demo_hub(demo_dir, store_url)
    slot = datetime.now(timezone.utc) - timedelta(seconds=5)
    first = hub.sync(["shop"], trigger="schedule", not_before=slot)
    assert first[0].status in ("succeeded", "partial")
    again = hub.sync(["shop"], trigger="schedule", not_before=slot)
    assert [s.status for s in again] == ["skipped"]
    assert len([r for r in hub.store.recent_runs(50) if r["connection"] == "shop"]) == 1
    later = hub.sync(["shop"], trigger="schedule", not_before=datetime.now(timezone.utc))
    assert later[0].status in ("succeeded", "partial")


def test_slots_are_the_same_on_every_worker() -> None:
    every_15m = trigger_for(Schedule(interval="15m"))
    now = datetime(2026, 12, 4, 10, 7, 30, tzinfo=timezone.utc)
    assert last_slot(every_15m, now, timedelta(hours=1)) == datetime(2026, 12, 4, 10, 0, tzinfo=timezone.utc)
    assert last_slot(every_15m, now, timedelta(minutes=5)) is None  # missed longer ago than that
    daily = trigger_for(Schedule(cron="0 6 * * *"))
    assert last_slot(daily, now, timedelta(hours=5)) == datetime(2026, 12, 4, 6, 0, tzinfo=timezone.utc)
    assert last_slot(daily, now, timedelta(hours=4)) is None


def test_a_missed_run_runs_once_when_a_worker_is_back(demo_dir: Path, store_url: str) -> None:
    cfg = demo_dir / "config" / "demo.yaml"
    text = cfg.read_text(encoding="utf-8").replace("{interval: 15m}", "{interval: 1h, misfire_grace_seconds: 7200}")
    cfg.write_text(text.replace('{cron: "0 6 * * *"}', '{cron: "0 6 * * *", misfire_grace_seconds: 60}'), encoding="utf-8")
    hub = demo_hub(demo_dir, store_url)
    now = datetime.now(timezone.utc)
    scheduler = build_scheduler(hub)
    due = catch_up(hub, scheduler, now)
    # shop: its last hourly slot is within the 2h grace; newsletter (1h interval) never ran.
    assert "shop" in due and "newsletter" in due
    # fair (daily at 06:00, 60 s grace) is due only in the minute after 06:00
    assert ("fair" in due) == (now.hour == 6 and now.minute == 0)
    jobs = {j.id: j for j in scheduler.get_jobs()}
    slot = jobs["catch-up:shop"].kwargs["slot"]
    run_job(hub, "shop", None, slot=slot)
    run_job(hub, "shop", None, slot=slot)  # a second worker coming back for the same slot
    runs = [r for r in hub.store.recent_runs(50) if r["connection"] == "shop"]
    assert len(runs) == 1 and runs[0]["trigger"] == "schedule"
    # A worker starting later schedules a catch-up too, but its run finds the slot served.
    hub2 = demo_hub(demo_dir, store_url)
    scheduler2 = build_scheduler(hub2)
    assert "shop" in catch_up(hub2, scheduler2, now)
    run_job(hub2, "shop", None, slot=scheduler2.get_job("catch-up:shop").kwargs["slot"])
    assert len([r for r in hub.store.recent_runs(50) if r["connection"] == "shop"]) == 1


def test_a_run_killed_with_its_worker_is_caught_up(demo_dir: Path, store_url: str) -> None:
    hub = demo_hub(demo_dir, store_url)
    slot = datetime.now(timezone.utc) - timedelta(seconds=1)
    hub.store.start_run("shop", "schedule", "in")  # started for the slot, then the worker died
    run_job(hub, "shop", None, slot=slot)
    runs = {r["status"] for r in hub.store.recent_runs(50) if r["connection"] == "shop"}
    assert "abandoned" in runs and runs & {"succeeded", "partial"}


def test_run_history_is_kept_for_the_configured_days(demo_dir: Path, store_url: str) -> None:
    hub = demo_hub(demo_dir, store_url)
    old = hub.store.start_run("shop", "cli", "in")
    hub.store.finish_run(old, "partial", {"streams": {}})
    with hub.store.begin() as conn:
        conn.execute(run_t.update().where(run_t.c.id == old).values(started_at=datetime.now(timezone.utc) - timedelta(days=91)))
        conn.execute(rejected_t.insert().values(run_id=old, connection="shop", stream="customers", reason="x",
                                                created_at=datetime.now(timezone.utc)))
    fresh = hub.run_connection("shop", "in").run_id
    assert prune_history(hub) == 1
    assert hub.store.get_run(old) is None and hub.store.rejected_for_run(old) == []
    assert hub.store.get_run(fresh) is not None


def test_serve_runs_jobs_and_stops_cleanly(demo_dir: Path, tmp_path: Path) -> None:
    cfg = demo_dir / "config" / "demo.yaml"
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("{interval: 15m}", "{interval: 1s}"), encoding="utf-8")
    hub = demo_hub(demo_dir, f"sqlite:///{tmp_path / 's.db'}")
    stop = threading.Event()
    # A free port, not the config's default 9464, which may be taken on the test machine.
    t = threading.Thread(target=serve, args=(hub,), kwargs={"stop": stop, "metrics_port": _free_port()})
    t.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(r["connection"] == "shop" for r in hub.store.recent_runs()):
        time.sleep(0.2)
    stop.set()
    t.join(30)
    assert not t.is_alive()
    runs = [r for r in hub.store.recent_runs(100) if r["connection"] == "shop"]
    assert runs and all(r["status"] != "running" for r in runs)
    assert all(r["trigger"] == "schedule" for r in runs)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_exposes_health_and_metrics_of_its_runs(demo_dir: Path, store_url: str) -> None:
    cfg = demo_dir / "config" / "demo.yaml"
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("{interval: 15m}", "{interval: 1h}"), encoding="utf-8")
    hub = demo_hub(demo_dir, store_url)
    port = _free_port()
    stop = threading.Event()
    t = threading.Thread(target=serve, args=(hub,), kwargs={"stop": stop, "metrics_port": port})
    t.start()
    try:
        base = f"http://127.0.0.1:{port}"

        def shop_counted() -> dict[tuple[str, ...], float]:
            try:
                text = httpx.get(f"{base}/metrics", timeout=5).text
            except httpx.HTTPError:
                return {}
            samples = {}
            for fam in text_string_to_metric_families(text):
                for s in fam.samples:
                    samples[(s.name, *sorted(s.labels.items()))] = s.value
            done = any(k[0] == "synchub_runs_total" and ("connection", "shop") in k[1:] for k in samples)
            return samples if done else {}

        deadline = time.monotonic() + 30
        samples: dict = {}
        while time.monotonic() < deadline and not (samples := shop_counted()):
            time.sleep(0.2)
        assert samples, "the catch-up run of shop never showed up in /metrics"
        read = samples[("synchub_records_total", ("connection", "shop"), ("outcome", "read"), ("stream", "customers"))]
        runs = [r for r in hub.store.recent_runs(50) if r["connection"] == "shop" and r["direction"] == "in"]
        assert read == sum(r["counts"]["streams"]["customers"]["read"] for r in runs) > 0
        assert samples[("synchub_up",)] == 1
        assert ("synchub_last_success_timestamp_seconds", ("connection", "shop"), ("direction", "in")) in samples
        health = httpx.get(f"{base}/healthz", timeout=5)
        assert health.status_code == 200 and health.json()["status"] == "ok"
    finally:
        stop.set()
        t.join(60)
    assert not t.is_alive()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_a_push_that_finds_its_connection_busy_is_tried_again(demo_dir: Path, store_url: str) -> None:
    hub = demo_hub(demo_dir, store_url)
    scheduler = build_scheduler(hub)
    scheduler.start(paused=True)  # jobs are stored (and replaced) but none runs by itself
    with connection_lock(hub.store, "export") as got:
        assert got  # another worker is pushing the export
        run_job(hub, "shop", scheduler)
    runs = {(r["connection"], r["direction"]) for r in hub.store.recent_runs(50)}
    assert ("shop", "in") in runs and ("export", "out") not in runs
    retry = scheduler.get_job("push:export")
    assert retry is not None and retry.func is push_job
    with connection_lock(hub.store, "export") as got:
        assert got  # still busy at the first retry: tried again later
        retry.func(*retry.args, **retry.kwargs)
    again = scheduler.get_job("push:export")
    assert again is not None and again.args[-1] == 2
    again.func(*again.args, **again.kwargs)
    assert ("shop", "in") in runs and len([r for r in hub.store.recent_runs(50) if r["connection"] == "shop"]) == 1
    scheduler.shutdown(wait=False)
    exports = [r for r in hub.store.recent_runs(50) if r["connection"] == "export"]
    assert len(exports) == 1 and exports[0]["status"] == "succeeded"
    assert (demo_dir / "var" / "export" / "kunden_bereinigt.csv").exists()


def test_serve_refuses_a_taken_metrics_port_clearly(demo_dir: Path, tmp_path: Path) -> None:
    hub = demo_hub(demo_dir, f"sqlite:///{tmp_path / 's.db'}")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SynchubError, match=rf"127\.0\.0\.1:{port}.*metrics_port"):
            serve(hub, stop=threading.Event(), metrics_port=port)
    assert hub.store.recent_runs() == []  # nothing ran
