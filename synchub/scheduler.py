"""``synchub serve``: every connection on its YAML schedule, with APScheduler 3.x, on one or many workers.

Each worker has its own in-memory APScheduler job store (APScheduler 3's job stores must not be
shared between schedulers); what the workers share is the synchub store:

* **One run at a time.** A run takes its connection's lock in the store (:mod:`synchub.locks`:
  a PostgreSQL advisory lock, released by the server when a worker dies). A worker that finds
  the lock taken skips that firing.
* **Once per schedule slot.** Every worker computes the same slots (cron times, or intervals
  counted from a fixed epoch, not from when the worker started). A firing runs only if no run
  of that connection started since its slot, checked under the lock; so when several workers
  fire for one slot, one runs and the others skip, even if the first one is already done.
* **Missed runs.** When a worker starts, a slot missed while no worker was up (a run abandoned
  by a dead worker counts as missed) runs once right away if it is at most
  ``misfire_grace_seconds`` old; older slots are dropped and the next one is waited for.
  An interval connection that never ran at all runs right away. While a worker is up,
  APScheduler applies the same grace and ``coalesce`` to firings it could not start in time.
* **Stopping.** The first SIGTERM/SIGINT stops new runs, lets each running one commit its
  batch and save its cursor (:attr:`Hub.stopping`), then exits; a second one exits at once
  (nothing is lost: uncommitted work is rolled back and read again by the next run).
* **Health and metrics** on ``serve.metrics_host:metrics_port`` (:mod:`synchub.metrics`), and
  run history older than ``serve.keep_runs_days`` is deleted daily.
* **Webhooks**, with a ``webhooks`` config section: the receiver on ``webhooks.host:port`` and a
  job that pulls the connections with queued events (:mod:`synchub.webhooks`).

A run paused because an API account's daily quota is spent gets a one-off run scheduled for
just after the quota resets.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

if TYPE_CHECKING:
    from synchub.config import Schedule
    from synchub.engine import Hub, RunSummary

log = logging.getLogger("synchub.scheduler")

#: A push skipped because its connection was busy is tried again this much later.
PUSH_RETRY_SECONDS = 30
PUSH_RETRIES = 10
#: Interval schedules count from here, so every worker fires at the same moments.
EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)


def trigger_for(sched: Schedule) -> Any:
    if sched.cron:
        return CronTrigger.from_crontab(sched.cron, timezone=sched.timezone)
    return IntervalTrigger(seconds=sched.interval_seconds() or 60, start_date=EPOCH, timezone=sched.timezone)


def last_slot(trigger: Any, now: datetime, lookback: timedelta) -> datetime | None:
    """The latest fire time of ``trigger`` in ``(now - lookback, now]``, or None."""
    since = now - lookback
    t = trigger.get_next_fire_time(None, since)
    last = None
    while t is not None and t <= now:
        last = t
        t = trigger.get_next_fire_time(t, t + timedelta(microseconds=1))
    return last


def _lookback(sched: Schedule) -> timedelta:
    return timedelta(seconds=sched.misfire_grace_seconds + 1)


def build_scheduler(hub: Hub, *, max_workers: int | None = None) -> BackgroundScheduler:
    """A scheduler with one job per connection that has a schedule (not started)."""
    threads = max_workers or hub.config.serve.threads
    scheduler = BackgroundScheduler(executors={"default": ThreadPoolExecutor(threads)}, timezone="UTC")
    for name, conn in hub.config.connections.items():
        sched = conn.schedule
        if sched is None:
            continue
        scheduler.add_job(
            run_job, trigger_for(sched), args=[hub, name, scheduler], id=f"sync:{name}", name=f"sync {name}",
            max_instances=1, coalesce=sched.coalesce, misfire_grace_time=sched.misfire_grace_seconds,
            replace_existing=True,
        )
    if hub.config.quality.schedule is not None:
        scheduler.add_job(quality_job, trigger_for(hub.config.quality.schedule), args=[hub], id="quality-report",
                          name="data-quality report", coalesce=True, max_instances=1, replace_existing=True)
    return scheduler


def catch_up(hub: Hub, scheduler: BackgroundScheduler, now: datetime | None = None) -> list[str]:
    """Schedule one run right away for every connection whose last slot was missed (see above)."""
    now = now or datetime.now(timezone.utc)
    due = []
    for name, conn in hub.config.connections.items():
        sched = conn.schedule
        if sched is None:
            continue
        slot = last_slot(trigger_for(sched), now, _lookback(sched))
        if slot is None and sched.interval and hub.store.last_run_start(name, "in" if conn.inbound else "out") is None:
            slot = EPOCH  # never ran: run now
        if slot is None:
            continue
        due.append(name)
        scheduler.add_job(run_job, DateTrigger(run_date=now), args=[hub, name, scheduler],
                          kwargs={"slot": slot}, id=f"catch-up:{name}", name=f"catch up {name}",
                          replace_existing=True, misfire_grace_time=sched.misfire_grace_seconds)
    return due


def run_job(hub: Hub, name: str, scheduler: BackgroundScheduler | None = None, slot: datetime | None = None,
            *, any_time: bool = False) -> None:
    """One scheduled firing: sync ``name`` unless a run since ``slot`` exists (default: the
    slot of this firing). ``any_time``: a one-off (the run after a quota reset), not tied to a slot."""
    from synchub.engine import BUSY, AlreadyRunning

    if hub.stopping.is_set():
        return
    sched = hub.config.connections[name].schedule
    if slot is None and sched is not None and not any_time:
        # The slot this firing serves: the latest fire time up to now (a firing can be late by
        # up to the misfire grace).
        slot = last_slot(trigger_for(sched), datetime.now(timezone.utc) + timedelta(seconds=1), _lookback(sched))
    try:
        summaries = hub.sync([name], trigger="schedule", not_before=slot)
    except AlreadyRunning:
        log.info("skipping %s: running in this or another worker", name)
        return
    except Exception:
        log.exception("scheduled sync of %s failed", name)
        return
    for s in summaries:
        log.info("run %s %s %s: %s", s.run_id, s.connection, s.direction, s.status)
        if s.status == "skipped" and s.error == BUSY and s.direction == "out" and scheduler is not None:
            # The push after this pull found the connection busy (perhaps pushing from before
            # this pull's data was committed): push once more a little later.
            schedule_push(hub, s.connection, scheduler)
        if s.status == "paused" and s.resume_at is not None and scheduler is not None:
            # The API account's daily quota is spent: run once more right after it resets
            # (the regular schedule goes on too; until the reset its runs stop at once).
            log.warning("%s paused until %s; a run is scheduled then", name, s.resume_at.isoformat())
            scheduler.add_job(run_job, DateTrigger(run_date=s.resume_at + timedelta(seconds=30)),
                              args=[hub, name, scheduler], kwargs={"any_time": True}, id=f"resume:{name}", name=f"resume {name}",
                              replace_existing=True, misfire_grace_time=3600)


def schedule_push(hub: Hub, name: str, scheduler: BackgroundScheduler, attempt: int = 1) -> None:
    scheduler.add_job(push_job, DateTrigger(run_date=datetime.now(timezone.utc) + timedelta(seconds=PUSH_RETRY_SECONDS)),
                      args=[hub, name, scheduler, attempt], id=f"push:{name}", name=f"push {name}",
                      replace_existing=True, misfire_grace_time=3600)


def push_job(hub: Hub, name: str, scheduler: BackgroundScheduler | None, attempt: int = 1) -> None:
    """The push of ``name`` only (no pull), tried again while the connection stays busy."""
    from synchub.engine import AlreadyRunning

    if hub.stopping.is_set():
        return
    try:
        summary = hub.run_connection(name, "out", trigger="schedule")
    except AlreadyRunning:
        if scheduler is not None and attempt < PUSH_RETRIES:
            schedule_push(hub, name, scheduler, attempt + 1)
        else:
            log.warning("push %s still busy after %d tries; it runs with the next pull", name, attempt)
        return
    except Exception:
        log.exception("push of %s failed", name)
        return
    log.info("run %s %s out: %s", summary.run_id, name, summary.status)


def prune_history(hub: Hub) -> int:
    keep = timedelta(days=hub.config.serve.keep_runs_days)
    n = hub.store.prune_runs(datetime.now(timezone.utc) - keep)
    if n:
        log.info("deleted %d run(s) older than %d days", n, hub.config.serve.keep_runs_days)
    return n


def quality_job(hub: Hub) -> list[str]:
    """Write the data-quality report into ``quality.out`` (its schedule in ``serve``)."""
    from synchub.quality import build_report, segments_from_config, write_report

    q = hub.config.quality
    try:
        report = build_report(hub.store, stale_days=q.stale_days, period=q.period,
                              segments=segments_from_config(hub.config))
        paths = write_report(report, hub.config.resolve(q.out))
    except Exception:  # the schedule goes on; the next firing tries again
        log.exception("the data-quality report failed")
        return []
    log.info("data-quality report written: %s", ", ".join(str(p) for p in paths))
    return [str(p) for p in paths]


def _summary_dict(s: RunSummary) -> dict[str, Any]:
    return {**s.as_dict(), "finished_at": datetime.now(timezone.utc)}


def _start_webhooks(hub: Hub, scheduler: BackgroundScheduler, metrics: Any, server: Any) -> Any:
    """The webhook receiver and its queue's consumer job (:mod:`synchub.webhooks`), when the
    config has a ``webhooks`` section; None otherwise."""
    from synchub.errors import SynchubError
    from synchub.webhooks import WebhookConsumer, WebhookReceiver, shop_domain

    wh = hub.config.webhooks
    if wh is None:
        return None
    consumer = WebhookConsumer(hub, poll_seconds=wh.poll_seconds, keep_days=wh.keep_days)
    scheduler.add_job(consumer.run_once, IntervalTrigger(seconds=wh.poll_seconds), id="webhooks",
                      name="webhook queue", max_instances=1, coalesce=True, misfire_grace_time=60)

    def wake(_connection: str) -> None:
        # A delivery was queued: run the consumer now rather than at its next poll (unless it
        # runs already: it picks the new events up on its next pass).
        if scheduler.running and not consumer.running:
            scheduler.modify_job("webhooks", next_run_time=datetime.now(timezone.utc))

    try:
        shop = wh.shopify and hub.config.connections.get(wh.shopify.connection)
        return WebhookReceiver(hub.store, wh, metrics, on_accepted=wake,
                               shopify_domain=shop_domain(shop.settings.get("shop")) if shop else None).start()
    except OSError as exc:
        if server is not None:
            server.stop()
        raise SynchubError(f"{exc}; choose another webhooks.port") from None


def serve(hub: Hub, *, console: Any = None, stop: threading.Event | None = None,
          metrics_port: int | None = None) -> None:
    """Run until SIGINT/SIGTERM (or until ``stop`` is set)."""
    from synchub.errors import SynchubError
    from synchub.metrics import Metrics, MetricsServer

    stop = stop or threading.Event()
    cfg = hub.config.serve
    metrics = Metrics()
    hub.on_run_started.append(metrics.run_started)
    hub.on_run_finished.append(lambda s: metrics.run_finished(_summary_dict(s)))
    port = cfg.metrics_port if metrics_port is None else metrics_port
    server = None
    scheduler = build_scheduler(hub)

    def health() -> tuple[bool, dict[str, Any]]:
        problems = []
        running = scheduler.running and not stop.is_set()
        if not running:
            problems.append("scheduler not running")
        try:
            hub.store.ping()
            metrics.set_store_ok(True)
        except Exception as exc:
            metrics.set_store_ok(False)
            problems.append(f"store unreachable ({type(exc).__name__})")
        return not problems, {"problems": problems, "jobs": len(scheduler.get_jobs()), "pid": os.getpid()}

    if port:
        try:
            server = MetricsServer(metrics, cfg.metrics_host, port, health=health).start()
        except OSError as exc:
            raise SynchubError(f"{exc}; choose another serve.metrics_port (or --metrics-port, 0 = off)") from None
    receiver = _start_webhooks(hub, scheduler, metrics, server)
    signals: dict[str, Any] = {"n": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        signals["n"] += 1
        if signals["n"] > 1:
            # The running batch is rolled back by the database; the next run reads it again.
            log.warning("second signal %s: exiting now", signum)
            os._exit(128 + signum)
        log.warning("received signal %s: finishing the running batches, then stopping "
                    "(send it again to exit at once)", signum)
        # Only flags here: Event.set() in a handler could wait forever on the lock of the very
        # Event the interrupted main thread holds. The main loop below polls.
        hub.stopping.set()  # the main thread never waits on this one
        signals["stop"] = True

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
    prune_history(hub)
    scheduler.add_job(prune_history, IntervalTrigger(hours=24), args=[hub], id="prune-runs", name="prune run history")
    due = catch_up(hub, scheduler)
    scheduler.start()
    metrics.set_scheduler_running(True)
    if console is not None:
        jobs = [j for j in scheduler.get_jobs() if j.id.startswith("sync:")]
        console.print(f"serving {len(jobs)} scheduled connection(s): " + ", ".join(j.name for j in jobs))
        for j in jobs:
            console.print(f"  {j.name}: next run {j.next_run_time}")
        if due:
            console.print("catching up missed runs now: " + ", ".join(due))
        if server is not None:
            console.print(f"health: {server.url}/healthz  metrics: {server.url}/metrics")
        if receiver is not None:
            console.print(f"webhooks: {receiver.url}/webhooks/ ({', '.join(receiver.config.sources())})")
    try:
        while not (signals.get("stop") or stop.is_set()):
            time.sleep(0.05)
    finally:
        hub.stopping.set()
        metrics.set_scheduler_running(False)
        if receiver is not None:
            receiver.stop()  # deliveries from now on are refused; the vendors send them again
        scheduler.shutdown(wait=True)
        if server is not None:
            server.stop()
        log.warning("stopped")
