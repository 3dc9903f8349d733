"""The bot process: `Bot(app).run()` is `pinrepl bot` (SPEC 7).

One loop does the scheduling: it sleeps until the earliest planned slot or its next
heartbeat, whichever comes first, hands the due slots to the dispatcher, and beats. The
heartbeat is beaten by this loop itself, so a bot whose loop is stuck (or whose machine
slept) is seen as dead by the others, and its running runs are marked abandoned. Each beat
also marks the runs of dead bots abandoned, and now and then deletes the runs older than
`keep_runs_days`. A database outage is logged once and retried with backoff; the plan
keeps going, and the slots it missed are caught up by the missed-slot rule. A statement
the database refuses (a table whose columns differ, a read-only database) stops the bot as
a signal would, and `run` raises it as one line.

Signals: SIGTERM or SIGINT stops claiming and gives the running runs up to `--grace`
seconds before cancelling them (a second signal cancels at once); SIGHUP re-reads the job
files and plans again. `run(once=True)` runs what is due now and returns 0 when all of it
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
from collections.abc import Iterator
from datetime import datetime, timedelta

from ..app import App
from ..db.engine import first_line
from ..db.models import utcnow
from ..errors import BadJobArguments, DatabaseUnavailable
from ..runner import check_arguments
from . import counted
from .dispatch import Dispatcher
from .outage import DATABASE_ERRORS, Outage, is_outage
from .plan import Missed, Plan, catch_up, misfire_grace, schedules_of
from .results import Results
from .store import Store

#: A wake-up this much later than planned is reported (the machine slept, the loop blocked).
LATE = timedelta(seconds=2)
#: How often the runs older than `keep_runs_days` are deleted.
RETENTION_EVERY = 3600.0

log = logging.getLogger("pinrepl.bot")


class Bot:
    """One bot of `app`: at most `concurrency` runs at once, `grace` seconds for them to
    finish when stopped, dead once it has not beaten for `lease` seconds."""

    def __init__(self, app: App, *, concurrency: int = 10, grace: float = 30.0,
                 lease: float = 30.0) -> None:
        self.app = app
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.id = f"{self.host}:{self.pid}:{secrets.token_hex(2)}"
        self.grace, self.lease = grace, lease
        self._store = Store(app.engine, self.id, lease)
        self._outage = Outage(on_refused=self._refused)
        self._results = Results(self._store, self._outage)
        self._wakeup = asyncio.Event()
        self._dispatcher = Dispatcher(
            app.runner, self._store, self._results, self._outage, concurrency=concurrency,
            shown=self._shown, on_idle=self._wakeup.set,
        )
        self._concurrency = concurrency
        self._hurry = asyncio.Event()
        self._stopping: asyncio.Task[None] | None = None
        self._reload = False
        self._retention_due = 0.0

    @property
    def outcomes(self) -> Counter[str]:
        """How this bot's own runs ended, by status."""
        return self._dispatcher.outcomes

    async def run(self, once: bool = False) -> int:
        """Run until stopped (exit status 0), or with `once` until what is due now has run
        (0 if all of it succeeded, else 1). `MissingTable` or `DatabaseUnavailable` if the
        bot cannot start; a `PinreplError` (`DatabaseRefused`, ...) if the database refused
        its statements."""
        await self._store.require_tables()
        now = utcnow()
        try:
            await self._store.register(self.host, self.pid, now)
            fires, missed = catch_up(self.app.jobs, now, await self._store.last_slots())
        except DATABASE_ERRORS as exc:
            if not is_outage(exc):
                raise await self._store.explain(exc, "starting") from None
            raise DatabaseUnavailable(
                f"cannot reach database {self.app.engine.shown_url}: {first_line(exc)}"
            ) from None
        plan = None if once else Plan(self.app.jobs, now)
        self._banner(plan, len(fires))
        self._report(missed)
        writer = asyncio.create_task(self._results.serve())
        with self._signals():  # until the very end: a late signal must not kill the flush
            try:
                self._dispatcher.start()
                self._dispatcher.add(fires)
                await self._loop(plan, now)
                await self._dispatcher.stop_claiming()
                await self._dispatcher.finish_runs(self.grace, self._hurry)
            finally:
                self._results.stop()
                await asyncio.wait({writer}, timeout=5.0)  # a write under way ends first
                writer.cancel()  # unless the database hangs
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
                await self._results.flush(max(self.grace, 5.0))
                with contextlib.suppress(*DATABASE_ERRORS):
                    await self._store.unregister()
        log.info("bot %s stopped: %s", self.id, _summary(self.outcomes))
        if self._outage.refused is not None:
            raise await self._store.explain(*self._outage.refused) from None
        failed = self.outcomes["failed"] + self.outcomes["cancelled"]
        return 1 if once and failed else 0

    # -- the loop ---------------------------------------------------------------------------

    async def _loop(self, plan: Plan | None, horizon: datetime) -> None:
        """Fire due slots and beat until stopped (`plan` None: until the dispatcher is idle)."""
        beat_at = 0.0
        while True:
            self._wakeup.clear()  # before looking: what happens from here on wakes the sleep
            if self._stopping is not None:
                if self._stopping.done():
                    return
            elif plan is None and self._dispatcher.idle:
                return
            now = utcnow()
            if plan is not None and self._stopping is None:
                if self._reload:
                    plan = self._reloaded(horizon)
                fires, missed = plan.pop_due(now)
                horizon = now
                self._report(missed)
                self._dispatcher.add(fires)
            if time.monotonic() >= beat_at:
                beat_at = time.monotonic() + await self._beat(now)
            await self._sleep(plan, beat_at)

    async def _sleep(self, plan: Plan | None, beat_at: float) -> None:
        """Until the next slot, the next beat or a signal; a late wake-up is reported."""
        timeout = beat_at - time.monotonic()
        next_slot = plan.next_at() if plan is not None and self._stopping is None else None
        if next_slot is not None:
            timeout = min(timeout, (next_slot - utcnow()).total_seconds())
        planned = utcnow() + timedelta(seconds=max(timeout, 0.0))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(timeout, 0.0)):
                await self._wakeup.wait()
        late = utcnow() - planned
        if late > LATE:
            log.warning("woke up %.1f s late (the machine slept, or the event loop was "
                        "blocked): catching up", late.total_seconds())

    async def _beat(self, now: datetime) -> float:
        """Heartbeat, abandoned runs of dead bots, retention; the seconds to the next beat."""
        try:
            if not await self._store.beat(self.host, self.pid, now):
                log.warning("this bot had not beaten for the lease (%g s) and was taken for "
                            "dead: its running runs may have been marked abandoned", self.lease)
            abandoned = await self._store.abandon_dead(now)
            if time.monotonic() >= self._retention_due:
                cutoff = now - timedelta(days=self.app.settings.keep_runs_days)
                deleted = await self._store.delete_older_than(cutoff)
                self._retention_due = time.monotonic() + RETENTION_EVERY
                if deleted:
                    log.info("deleted %s older than %s (keep_runs_days)",
                             counted(deleted, "run"),
                             counted(self.app.settings.keep_runs_days, "day"))
        except DATABASE_ERRORS as exc:
            delay = self._outage.failed(exc, "beating")
            return self.lease / 3 if delay is None else delay
        self._outage.answered()
        by_bot = Counter(run.bot for run in abandoned)
        for bot, count in by_bot.items():
            jobs = ", ".join(sorted({run.job for run in abandoned if run.bot == bot}))
            log.warning("marked %s of bot %s abandoned (no heartbeat for %g s): %s",
                        counted(count, "running run"), bot, self.lease, jobs)
        return self.lease / 3

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
                     "second signal cancels them now)", name, self._dispatcher.running, self.grace)
            self._begin_stop()
        else:
            log.warning("%s again: cancelling the running runs now", name)
            self._hurry.set()

    def _refused(self) -> None:
        """The database refused a statement: stop as a signal would."""
        if self._stopping is None:
            log.info("claiming no more runs; %d running get up to %g s to finish",
                     self._dispatcher.running, self.grace)
            self._begin_stop()

    def _begin_stop(self) -> None:
        self._stopping = asyncio.create_task(self._stop_runs())
        self._stopping.add_done_callback(lambda _task: self._wakeup.set())

    async def _stop_runs(self) -> None:
        await self._dispatcher.stop_claiming()
        await self._dispatcher.finish_runs(self.grace, self._hurry)

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
                 self._concurrency, self.lease, self.grace)
        for spec, schedule, slot in plan.upcoming() if plan is not None else ():
            args = f" args {list(schedule.args)} {schedule.kwargs}" if (
                schedule.args or schedule.kwargs) else ""
            log.info("schedule %s %r (%s)%s: next %s, misfire_grace %g s", spec.name,
                     schedule.cron, schedule.timezone.key, args,
                     slot.astimezone(schedule.timezone).isoformat(),
                     misfire_grace(spec).total_seconds())
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
                        misfire_grace(miss.spec).total_seconds())

    def _shown(self, slot: datetime) -> str:
        return slot.astimezone(self.app.settings.timezone).isoformat()


def _summary(outcomes: Counter[str]) -> str:
    return ", ".join(f"{count} {status}" for status, count in sorted(outcomes.items())) or \
        "no runs"
