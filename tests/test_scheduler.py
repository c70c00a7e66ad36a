"""``synchub serve``: jobs from YAML schedules, one run per connection at a time, clean stop."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from synchub.engine import AlreadyRunning
from synchub.scheduler import build_scheduler, serve
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


def test_a_connection_never_runs_twice_at_once(demo_dir: Path, tmp_path: Path) -> None:
    hub = demo_hub(demo_dir, f"sqlite:///{tmp_path / 's.db'}")
    import synchub.engine as engine

    lock = engine._running.setdefault("shop", threading.Lock())
    lock.acquire()
    try:
        try:
            hub.run_connection("shop", "in")
        except AlreadyRunning:
            pass
        else:
            raise AssertionError("a second run of a running connection must be refused")
    finally:
        lock.release()
    assert hub.run_connection("shop", "in").status in ("succeeded", "partial")


def test_serve_runs_jobs_and_stops_cleanly(demo_dir: Path, tmp_path: Path) -> None:
    cfg = demo_dir / "config" / "demo.yaml"
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("{interval: 15m}", "{interval: 1s}"), encoding="utf-8")
    hub = demo_hub(demo_dir, f"sqlite:///{tmp_path / 's.db'}")
    stop = threading.Event()
    t = threading.Thread(target=serve, args=(hub,), kwargs={"stop": stop})
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
