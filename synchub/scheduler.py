"""``synchub serve``: every connection on its YAML schedule, with APScheduler 3.x.

One job per scheduled connection; ``max_instances=1`` and the engine's per-connection lock make
sure a connection never runs twice at once in this process (across several workers on one
PostgreSQL store, see the operations issue). A run that was missed by less than
``misfire_grace_seconds`` still runs, once (``coalesce``). Interval connections run once right
away when serving starts; cron connections wait for their time. SIGINT/SIGTERM stop the scheduler
after the running jobs finish their current run. A run paused because an API account's daily
quota is spent gets a one-off run scheduled for just after the quota resets.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

if TYPE_CHECKING:
    from synchub.engine import Hub

log = logging.getLogger("synchub.scheduler")


def build_scheduler(hub: Hub, *, max_workers: int = 4) -> BackgroundScheduler:
    """A scheduler with one job per connection that has a schedule (not started)."""
    scheduler = BackgroundScheduler(executors={"default": ThreadPoolExecutor(max_workers)}, timezone="UTC")
    for name, conn in hub.config.connections.items():
        sched = conn.schedule
        if sched is None:
            continue
        extra: dict[str, Any] = {}
        if sched.cron:
            trigger: Any = CronTrigger.from_crontab(sched.cron, timezone=sched.timezone)
        else:
            trigger = IntervalTrigger(seconds=sched.interval_seconds() or 60, timezone=sched.timezone)
            # An interval connection syncs right away when serve starts, then every interval.
            extra["next_run_time"] = datetime.now(timezone.utc)
        scheduler.add_job(
            run_job, trigger, args=[hub, name, scheduler], id=f"sync:{name}", name=f"sync {name}",
            max_instances=1, coalesce=sched.coalesce, misfire_grace_time=sched.misfire_grace_seconds,
            replace_existing=True, **extra,
        )
    return scheduler


def run_job(hub: Hub, name: str, scheduler: BackgroundScheduler | None = None) -> None:
    from synchub.engine import AlreadyRunning

    try:
        summaries = hub.sync([name], trigger="schedule")
    except AlreadyRunning:
        log.info("skipping %s: still running", name)
        return
    except Exception:
        log.exception("scheduled sync of %s failed", name)
        return
    for s in summaries:
        log.info("run %s %s: %s", s.run_id, s.connection, s.status)
        if s.status == "paused" and s.resume_at is not None and scheduler is not None:
            # The API account's daily quota is spent: run once more right after it resets
            # (the regular schedule goes on too; until the reset its runs stop at once).
            log.warning("%s paused until %s; a run is scheduled then", name, s.resume_at.isoformat())
            scheduler.add_job(run_job, DateTrigger(run_date=s.resume_at + timedelta(seconds=30)),
                              args=[hub, name, scheduler], id=f"resume:{name}", name=f"resume {name}",
                              replace_existing=True, misfire_grace_time=3600)


def serve(hub: Hub, *, console: Any = None, stop: threading.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM (or until ``stop`` is set)."""
    stop = stop or threading.Event()
    scheduler = build_scheduler(hub)
    jobs = scheduler.get_jobs()

    def on_signal(signum: int, _frame: Any) -> None:
        log.warning("received signal %s: finishing running jobs, then stopping", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
    scheduler.start()
    if console is not None:
        console.print(f"serving {len(jobs)} scheduled connection(s): " + ", ".join(j.name for j in jobs))
        for j in scheduler.get_jobs():
            console.print(f"  {j.name}: next run {j.next_run_time}")
    try:
        stop.wait()
    finally:
        scheduler.shutdown(wait=True)
        log.warning("stopped")
