"""The bot process: `Bot(app).run()` is `pinrepl bot` (SPEC 7 and 8).

A bot is a scheduler and a worker sharing one database. Its loop sleeps until the earliest
planned slot or its next heartbeat, whichever comes first; it hands the due slots to the
scheduler, which writes them as queued rows, and wakes the worker, which claims queued runs
(scheduled and deferred alike) as it has room. The heartbeat is beaten by this loop
itself, so a bot whose loop is stuck (or whose machine slept) is seen as dead by the
others, and its running runs are marked abandoned (and retried, for a job with
`retries`). Each beat also marks the runs of dead bots abandoned, and now and then deletes
the runs older than `keep_runs_days`. A database outage is logged once; every part waits
until the database answers again, then goes on at once. A statement the database refuses
(a table of another version, a read-only database) stops the bot as a signal would, and
`run` raises it as one line.

On PostgreSQL the bot (but `--once`) holds one connection of its own that LISTENs for the
notification a deferring transaction sends when it commits (and for control's: a resume,
a cancel asked, SPEC 9), so an idle bot starts a run deferred now at once; polling (`poll`
seconds) stays as the safety net, and is all there is on SQLite or behind a pooler in
transaction mode (PgBouncer), which cannot hold a LISTEN.

What happens is emitted as `events`: the log lines, the failure hook (`hooks`) and, with
`--metrics-port`, the metrics hear them there. The bot waits for the `on_failure` calls
under way before it exits, as for its runs.

Signals: SIGTERM or SIGINT stops claiming and gives the running runs up to `--grace`
seconds before cancelling them (a second signal cancels at once); SIGHUP re-reads the job
files and plans again. `run(once=True)` runs what is due now (the latest slot within
`misfire_grace` of each schedule, the deferred runs due now) and returns 0 when all of it
succeeded, else 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text

from ..app import App
from ..blocking import watch_stalls
from ..db.engine import DATABASE_ERRORS, first_line, is_outage
from ..db.models import utcnow
from ..errors import BadJobArguments, DatabaseRefused, DatabaseUnavailable, PinreplError
from ..runner import check_arguments
from ..runs.control import LEASE
from ..runs.repository import CHANNEL, CONTROL, RunRow
from ..runs.status import Status
from . import counted
from .events import (
    Beat,
    BotDown,
    BotUp,
    DatabaseAway,
    Events,
    LogLines,
    RunEnded,
    RunsAbandoned,
    SlotsQueued,
)
from .hooks import FailureHook
from .outage import Outage
from .plan import Missed, Plan, catch_up, misfire_grace, schedules_of
from .results import Results
from .scheduler import MISSED, OVERTAKEN, Scheduler
from .worker import Worker, next_try, not_retried

#: A wake-up this much later than planned is reported (the machine slept, the loop blocked).
LATE = timedelta(seconds=2)
#: How often the runs older than `keep_runs_days` are deleted.
RETENTION_EVERY = 3600.0
#: How often an idle worker looks for queued runs: on SQLite, and on PostgreSQL as the
#: safety net of LISTEN.
POLL_SQLITE, POLL_LISTENING = 0.5, 5.0

log = logging.getLogger("pinrepl.bot")


class Bot:
    """One bot of `app`: at most `concurrency` runs at once, `grace` seconds for them to
    finish when stopped, dead once it has not beaten for `lease` seconds; `clock` is the
    time (UTC) its planning and records use."""

    def __init__(self, app: App, *, concurrency: int = 10, grace: float = 30.0,
                 lease: float = LEASE.total_seconds(),
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.app = app
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.id = f"{self.host}:{self.pid}:{secrets.token_hex(2)}"
        self.grace, self.lease = grace, lease
        self._clock = clock
        self._concurrency = concurrency
        self._repository = app.repository
        self._wakeup = asyncio.Event()
        self.events = Events()
        self._outage = Outage(self._probe, on_refused=self._refused,
                              on_change=self._database_changed)
        self.events.subscribe(LogLines(self._shown))
        self._hooks = FailureHook(app.runner, lambda: app.jobs)
        self.events.subscribe(self._hooks)
        self._results = Results(self._repository, self._outage, clock, bot=self.id,
                                events=self.events)
        self._scheduler = Scheduler(self._repository, self._outage, clock)
        self._listening = False
        self._worker = Worker(
            app.runner, lambda: app.jobs, self._repository, self._results, self._outage,
            self.events, bot=self.id, concurrency=concurrency, lease=lease, clock=clock,
            shown=self._shown, poll=POLL_SQLITE,
        )
        self._hurry = asyncio.Event()
        self._stopping: asyncio.Task[None] | None = None
        self._reload = False
        self._retention_due = 0.0

    @property
    def outcomes(self) -> Counter[str]:
        """How this bot's own runs ended, by status."""
        return self._worker.outcomes

    async def run(self, once: bool = False) -> int:
        """Run until stopped (exit status 0), or with `once` until what is due now has run
        (0 if all of it succeeded, else 1). `MissingTable`, `TablesOutdated` or
        `DatabaseUnavailable` if the bot cannot start; a `PinreplError` if the database
        refused its statements."""
        from ..runs.migrate import check_version

        await check_version(self.app.engine)
        now = self._clock()
        try:
            await self._repository.register(self.id, self.host, self.pid, now,
                                            timedelta(seconds=self.lease))
            fires, missed = catch_up(self.app.jobs, now, await self._repository.last_slots())
        except DATABASE_ERRORS as exc:
            if not is_outage(exc):
                raise await self._explain(exc, "starting") from None
            raise DatabaseUnavailable(
                f"cannot reach database {self.app.engine.shown_url}: {first_line(exc)}"
            ) from None
        plan = None if once else Plan(self.app.jobs, now)
        stalls = watch_stalls(asyncio.get_running_loop(), lambda line: log.warning("%s", line))
        with self._signals(), stalls:  # from the banner to the very end of the flush
            self.events.emit(BotUp(self.id))
            self._banner(plan, len(fires))
            self._report(missed)
            self._scheduler.add(fires)
            writer = asyncio.create_task(self._results.serve())
            # `--once` runs what is due as it starts, woken by its own runs ending: no
            # connection of its own to LISTEN on.
            listener = None if self.app.engine.is_sqlite or once else asyncio.create_task(
                self._listen())
            cancels = asyncio.create_task(self._worker.watch_cancels())  # SPEC 9
            try:
                await self._write_slots()
                # A first beat before any claim: what dead bots left is queued again (or
                # abandoned) before this bot looks for work, `--once` included.
                beat_at = time.monotonic() + await self._beat(now, registered=True)
                serving = asyncio.create_task(self._worker.serve(once=once))
                serving.add_done_callback(lambda _task: self._wakeup.set())
                await self._loop(plan, now, serving, beat_at)
                self._worker.stop_claiming()
                await asyncio.wait({serving}, timeout=5.0)
                serving.cancel()
                await self._worker.finish_runs(self.grace, self._hurry)
            finally:
                if listener is not None:
                    listener.cancel()
                cancels.cancel()
                self._results.stop()
                await asyncio.wait({writer}, timeout=5.0)  # a write under way ends first
                writer.cancel()  # unless the database hangs
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
                await self._results.flush(max(self.grace, 5.0))
                await self._hooks.finish(max(self.grace, 5.0), self._hurry)
                with contextlib.suppress(*DATABASE_ERRORS):
                    await self._repository.unregister(self.id)
                await self._outage.aclose()
        self.events.emit(BotDown(self.id, self.outcomes))
        log.info("bot %s stopped: %s", self.id, _summary(self.outcomes),
                 extra={"event": "bot_stopped", "bot": self.id, "runs": dict(self.outcomes)})
        if self._outage.refused is not None:
            raise await self._explain(*self._outage.refused) from None
        failed = sum(self.outcomes[s] for s in (Status.FAILED, Status.TIMED_OUT,
                                                Status.CANCELLED, Status.ABANDONED))
        return 1 if once and failed else 0

    # -- the loop ---------------------------------------------------------------------------

    async def _loop(self, plan: Plan | None, horizon: datetime,
                    serving: asyncio.Task[None], beat_at: float) -> None:
        """Queue due slots and beat until stopped (`plan` None: until the worker is done)."""
        while True:
            self._wakeup.clear()  # before looking: what happens from here on wakes the sleep
            if self._stopping is not None:
                if self._stopping.done():
                    return
            elif serving.done():
                return
            now = self._clock()
            if plan is not None and self._stopping is None:
                if self._reload:
                    plan = self._reloaded(horizon)
                fires, missed = plan.pop_due(now)
                horizon = now
                self._report(missed)
                self._scheduler.add(fires)
            if self._scheduler.waiting:
                await self._write_slots()
            if time.monotonic() >= beat_at and not self._outage.away:
                beat_at = time.monotonic() + await self._beat(now)
            await self._sleep(plan, beat_at)

    async def _sleep(self, plan: Plan | None, beat_at: float) -> None:
        """Until the next slot, the next beat, the database's return or a signal; a late
        wake-up is reported."""
        timeout = beat_at - time.monotonic()
        next_at = plan.next_at() if plan is not None and self._stopping is None else None
        if next_at is not None:
            timeout = min(timeout, (next_at - self._clock()).total_seconds())
        planned = self._clock() + timedelta(seconds=max(timeout, 0.0))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(timeout, 0.0)):
                await self._wakeup.wait()
        late = self._clock() - planned
        if late > LATE:
            log.warning("woke up %.1f s late (the machine slept, or the event loop was "
                        "blocked): catching up", late.total_seconds())

    async def _write_slots(self) -> None:
        new = await self._scheduler.write()
        if not new:
            return
        said = {MISSED: "missed %s of %s while the database was away: only the latest runs",
                OVERTAKEN: "%s of %s came due together before this bot could queue them (it "
                           "was busy): only the latest runs, the others are skipped"}
        missed = Counter((row.error, row.job) for row in new if row.status == Status.SKIPPED
                         and row.error in said)
        for (error, job), count in sorted(missed.items()):
            log.warning(said[error], counted(count, "slot"), job,
                        extra={"event": "slots_missed", "job": job, "count": count})
        paused = [row for row in new if row.status == Status.SKIPPED and row.error not in said]
        for row in paused:  # its job is paused (SPEC 9): logged and counted as ended
            self.events.emit(RunEnded(row, self._worker.what(row), Status.SKIPPED, None,
                                      row.error))
        self.events.emit(SlotsQueued(len(new) - missed.total() - len(paused)))
        self._worker.wake()

    def _database_changed(self, away: bool) -> None:
        self.events.emit(DatabaseAway(away))
        self._wakeup.set()

    async def _beat(self, now: datetime, registered: bool = False) -> float:
        """Heartbeat (not when this bot has just `registered` at `now`), abandoned runs of
        dead bots, retention; the seconds to the next beat."""
        try:
            if not registered and not await self._repository.beat(
                    self.id, self.host, self.pid, now, timedelta(seconds=self.lease)):
                log.warning("this bot had not beaten for the lease (%g s) and was taken for "
                            "dead: its running runs may have been marked abandoned", self.lease)
            self.events.emit(Beat(now))
            retried: set[int] = set()
            abandoned = await self._repository.abandon_dead(
                self.id, timedelta(seconds=self.lease), now,
                lambda run, status, now: _noted(retried, run.id,
                                                self._retry_abandoned(run, status, now)),
                requeue=self._unexpanded_fan_out)
            if time.monotonic() >= self._retention_due:
                cutoff = now - timedelta(days=self.app.settings.keep_runs_days)
                deleted = await self._repository.prune(cutoff)
                self._retention_due = time.monotonic() + RETENTION_EVERY
                if deleted:
                    log.info("deleted %s older than %s (keep_runs_days)",
                             counted(deleted, "run"),
                             counted(self.app.settings.keep_runs_days, "day"))
        except DATABASE_ERRORS as exc:
            self._outage.failed(exc, "beating")
            return 0.0  # beat again as soon as the database is back
        self._outage.answered()
        if abandoned:
            self.events.emit(RunsAbandoned(tuple(abandoned), frozenset(retried), self.lease))
            self._worker.wake()
        return self.lease / 3

    def _unexpanded_fan_out(self, run: RunRow) -> bool:
        """A fan-out still held by a bot is one whose tenants were never queued (once they
        are, no bot holds it)."""
        try:
            return run.is_fan_out and self.app.jobs.get(run.job).multi_tenant
        except PinreplError:
            return False

    def _retry_abandoned(self, run: RunRow, status: str, now: datetime
                         ) -> tuple[datetime | None, str | None]:
        """When the next try of `run`, abandoned, is due; or why it has none when the
        next slot stopped it."""
        try:
            spec = self.app.jobs.get(run.job)
        except PinreplError:
            return None, None
        due, stopped_by = next_try(spec, run, status, None, now)
        return due, None if stopped_by is None else not_retried(self._shown(stopped_by))

    async def _probe(self) -> None:
        async with self.app.engine.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def _listen(self) -> None:
        """LISTEN for deferred runs on a connection of this bot's own (asyncpg only), and
        wake the worker on each notification; listen again after an outage."""
        while True:
            try:
                async with self.app.engine.engine.connect() as conn:
                    raw = await conn.get_raw_connection()
                    driver: Any = raw.driver_connection
                    if not hasattr(driver, "add_listener"):
                        log.info("the database driver cannot LISTEN: polling every %g s",
                                 POLL_SQLITE)
                        return
                    lost = asyncio.Event()
                    await driver.add_listener(CHANNEL, lambda *_: self._worker.wake())
                    # Pauses, resumes and cancels (SPEC 9): claim now, look for cancels.
                    await driver.add_listener(CONTROL, lambda *_: self._worker.control())
                    driver.add_termination_listener(lambda *_, lost=lost: lost.set())
                    self._set_poll(POLL_LISTENING)
                    log.info("listening for deferred runs (LISTEN %s, %s; polling every %g "
                             "s as well)", CHANNEL, CONTROL, POLL_LISTENING)
                    self._worker.wake()  # what was deferred while not listening
                    await lost.wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_outage(exc):
                    log.warning("cannot LISTEN for deferred runs (%s): polling every %g s",
                                first_line(exc), POLL_SQLITE)
                    self._set_poll(POLL_SQLITE)
                    return
            self._set_poll(POLL_SQLITE)
            await asyncio.sleep(POLL_SQLITE)
            await self._outage.back()

    def _set_poll(self, seconds: float) -> None:
        self._worker.poll = seconds

    async def _explain(self, error: BaseException, doing: str) -> PinreplError:
        """The one line for a statement the database refused while `doing` something."""
        if isinstance(error, PinreplError):
            return error
        from sqlalchemy.exc import DBAPIError

        if isinstance(error, DBAPIError):
            explained = await self.app.engine.explain(
                error, ("background_job_runs", "background_job_bots"))
            if explained is not None:
                return explained
        return DatabaseRefused(
            f"the database refused the bot's statement while {doing}: {first_line(error)} "
            "(pinrepl init-database upgrades pinrepl's tables)"
        )

    def _reloaded(self, after: datetime) -> Plan:
        self._reload = False
        registry = self.app.reload()
        plan = Plan(registry, after)
        log.info("reloaded the job files: %s, %s", counted(len(registry), "job"),
                 counted(len(plan), "schedule"))
        for error in registry.errors:
            log.warning("load error: %s", error)
        if self.app.models_outdated is not None:
            log.warning("%s", self.app.models_outdated)
        return plan

    # -- signals ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        stops = (signal.SIGTERM, signal.SIGINT)
        for number in stops:
            loop.add_signal_handler(number, self._stop, number.name)
        loop.add_signal_handler(signal.SIGHUP, self._hang_up)
        try:
            yield
        finally:
            for number in (*stops, signal.SIGHUP):
                loop.remove_signal_handler(number)

    def _stop(self, name: str) -> None:
        if self._stopping is None:
            log.info("%s: claiming no more runs; %d running get up to %g s to finish (a "
                     "second signal cancels them now)", name, self._worker.running, self.grace)
            self._begin_stop()
        else:
            log.warning("%s again: cancelling the running runs now", name)
            self._hurry.set()

    def _refused(self) -> None:
        """The database refused a statement: stop as a signal would."""
        if self._stopping is None:
            log.info("claiming no more runs; %d running get up to %g s to finish",
                     self._worker.running, self.grace)
            self._begin_stop()

    def _begin_stop(self) -> None:
        self._worker.stop_claiming()  # now: a claim answered in this loop pass starts nothing
        self._stopping = asyncio.create_task(
            self._worker.finish_runs(self.grace, self._hurry))
        self._stopping.add_done_callback(lambda _task: self._wakeup.set())

    def _hang_up(self) -> None:
        log.info("SIGHUP: re-reading the job files")
        self._reload = True
        self._wakeup.set()

    # -- what it says -----------------------------------------------------------------------

    def _banner(self, plan: Plan | None, due: int) -> None:
        app = self.app
        jobs = app.jobs
        mode = f"--once: {counted(due, 'slot')} due now" if plan is None else (
            f"{counted(len(plan), 'schedule')} of {counted(len(jobs), 'job')}")
        log.info("bot %s started: app %s, database %s, %s; concurrency %d, lease %g s, "
                 "grace %g s", self.id, app.settings.root, app.engine.shown_url, mode,
                 self._concurrency, self.lease, self.grace,
                 extra={"event": "bot_started", "bot": self.id})
        for spec, schedule, slot in plan.upcoming() if plan is not None else ():
            args = f" args {list(schedule.args)} {schedule.kwargs}" if (
                schedule.args or schedule.kwargs) else ""
            log.info("schedule %s %r (%s)%s: next %s, misfire_grace %g s", spec.name,
                     schedule.cron, schedule.timezone.key, args,
                     slot.astimezone(schedule.timezone).isoformat(),
                     misfire_grace(spec).total_seconds(),
                     extra={"event": "schedule", "job": spec.name, "cron": schedule.cron})
        for spec, schedule in schedules_of(jobs):
            try:
                check_arguments(spec, schedule.args, schedule.kwargs)
            except BadJobArguments as exc:
                log.warning("schedule %r of %s will fail: %s", schedule.cron, spec.name, exc)
        for error in jobs.errors:
            log.warning("load error: %s", error)

    def _report(self, missed: list[Missed]) -> None:
        for miss in missed:
            why = ("only the latest within misfire_grace (%g s) runs" if miss.latest_runs
                   else "all older than misfire_grace (%g s)")
            log.warning("missed %s%s of %s %r: " + why, "at least " if miss.capped else "",
                        counted(miss.count, "slot"), miss.spec.name, miss.schedule.cron,
                        misfire_grace(miss.spec).total_seconds(),
                        extra={"event": "slots_missed", "job": miss.spec.name,
                               "cron": miss.schedule.cron, "count": miss.count})

    def _shown(self, slot: datetime) -> str:
        return slot.astimezone(self.app.settings.timezone).isoformat()


def _noted(retried: set[int], run_id: int, decided: tuple[datetime | None, str | None]
           ) -> tuple[datetime | None, str | None]:
    """`decided`, with `run_id` added to `retried` when it has a next try."""
    if decided[0] is not None:
        retried.add(run_id)
    return decided


def _summary(outcomes: Counter[str]) -> str:
    return ", ".join(f"{count} {status}" for status, count in sorted(outcomes.items())) or \
        "no runs"
