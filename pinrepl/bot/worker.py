"""The worker: claims queued runs, scheduled and deferred alike, only as this bot has room,
and executes them through the app's runner (`Runner.run_once`, the one place job code
runs: a fresh workspace, the timeout, `current_run`).

Room is `--concurrency` for all of this bot's runs, and a job's `tenant_concurrency` for
the tenant runs of one fan-out on this bot. A claim takes the runs it has room for now
(lowest priority first, then oldest due); the tenant runs of a fan-out this bot runs
already are claimed up to that fan-out's room, and tenant runs of another fan-out beyond
its room are put back at once for any bot.

What a claimed row is decides what happens to it:
- a scheduled first try still queued `misfire_grace` after its slot: `skipped`, with why;
- a scheduled run whose earlier slot still runs (`overlap = False`): `skipped`;
- a fan-out row of a multi-tenant job: its `tenants_filter` runs, and the row is expanded
  into one queued run per tenant, in one transaction, for any bot to claim;
- anything else runs. A failure that the job's `retries` cover queues the next try with
  the failure (`results`); a scheduled run retries only before its schedule's next slot.

Between claims the worker sleeps until woken (a deferred run's notification, a run that
ended, the scheduler's new slots) or until the next queued run is due, at most `poll`
seconds: polling stays as the safety net.

Control (SPEC 9): pauses need nothing here (the claim leaves a paused job's runs queued,
and its slots are written `skipped`). A cancel asked of a running run (`cancel-runs`) is
found by `watch_cancels`: woken by the control notification (PostgreSQL), else every `poll`
seconds, and only while this bot runs something (an idle bot reads nothing for it); the
run's task is cancelled, its workspace torn down, and it is recorded `cancelled`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from ..db import Tenant
from ..db.engine import DATABASE_ERRORS, is_outage
from ..errors import BadJobArguments, PinreplError
from ..jobs import JobRegistry, JobSpec
from ..retry import retry_delay
from ..runner import Runner, check_arguments, status_of
from ..runs.record import Origin, encode_args, shown_args
from ..runs.repository import Repository, Result, RunRow
from ..runs.status import Status
from ..tracebacks import format_exception
from . import counted
from .events import Events, RunEnded, RunStarted
from .outage import Outage
from .plan import misfire_grace, missed, next_slot, overtaken
from .results import Results

log = logging.getLogger("pinrepl.bot")

#: How `outcomes` counts a try that failed and got another (its status is its row's).
RETRIED = "retried"
#: After a run ends while others of this bot still run, how long the worker waits at most
#: for more of them to end before it claims (it claims at once when all have ended): one
#: claim then takes the room several left, instead of a transaction per ended run. Never
#: more than the room there is, and an idle bot claims at once.
GATHER = 0.005

Clock = Callable[[], datetime]


class Worker:
    """Claims and runs the queued runs of the jobs `jobs()` gives, as bot `bot` with room
    for `concurrency` runs; `serve()` until `stop_claiming()`."""

    def __init__(
        self, runner: Runner, jobs: Callable[[], JobRegistry], repository: Repository,
        results: Results, outage: Outage, events: Events, *, bot: str, concurrency: int,
        lease: float, clock: Clock, shown: Callable[[datetime], str], poll: float,
    ) -> None:
        self._runner = runner
        self._jobs = jobs
        self._repository = repository
        self._results = results
        self._outage = outage
        self._events = events
        self._bot = bot
        self._concurrency = concurrency
        self._lease = timedelta(seconds=lease)
        self._clock = clock
        self._shown = shown
        #: How long an idle worker sleeps at most before it looks for queued runs.
        self.poll = poll
        self._tasks: set[asyncio.Task[None]] = set()
        #: The row each task runs (or expands).
        self._executing: dict[asyncio.Task[None], int] = {}
        #: This bot's running tenant runs, by fan-out.
        self._by_parent: Counter[int] = Counter()
        #: The fan-outs this bot runs tenants of, with their job: their tenant runs are
        #: claimed by fan-out, as many as its room here (a claim of fresh runs that took
        #: more would put the rest back), until none is left.
        self._parent_jobs: dict[int, str] = {}
        self._wake = asyncio.Event()
        self._claiming = True
        #: Set while this bot runs nothing.
        self._drained = asyncio.Event()
        self._drained.set()
        #: A run ended since the last claim.
        self._freed = False
        #: This bot's runs under way, by (job, arguments' hash, tenant): the overlap rule.
        self._running_here: Counter[tuple[str, str, int | None]] = Counter()
        #: How this bot's own runs ended, by status (or `RETRIED`).
        self.outcomes: Counter[str] = Counter()
        #: The tasks running job code, by run id (a cancel asked of one cancels it).
        self._cancellable: dict[int, asyncio.Task[None]] = {}
        #: The runs cancelled because their cancel was asked.
        self._cancel_asked: set[int] = set()
        #: Set by the control notification: look for cancels asked now.
        self._control = asyncio.Event()

    @property
    def running(self) -> int:
        return len(self._tasks)

    def wake(self) -> None:
        self._wake.set()

    def control(self) -> None:
        """A control notification (pause, resume, cancel): claim, and look for cancels."""
        self._control.set()
        self._wake.set()

    # -- cancels asked (SPEC 9) ---------------------------------------------------------------

    async def watch_cancels(self) -> None:
        """Cancel the runs of this bot whose cancel was asked, until cancelled: a look when
        notified, else every `poll` seconds while this bot runs job code."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll):
                    await self._control.wait()
            self._control.clear()
            if not self._cancellable:
                continue
            try:
                asked = await self._repository.cancels_asked(self._bot)
            except DATABASE_ERRORS:
                continue  # the outage is the others' to report; look again later
            for run_id in sorted(asked - self._cancel_asked):
                task = self._cancellable.get(run_id)
                if task is not None:
                    log.info("cancelling run %d: its cancel was asked", run_id,
                             extra={"event": "run_cancelling", "run_id": run_id})
                    self._cancel_asked.add(run_id)
                    task.cancel()

    # -- claiming ---------------------------------------------------------------------------

    async def serve(self, once: bool = False) -> None:
        """Claim and start runs as room frees up, until `stop_claiming()`; with `once`,
        until nothing due is left to claim and this bot's runs have ended."""
        while self._claiming:
            await self._gather()
            self._wake.clear()
            try:
                claimed = await self._claim()
            except DATABASE_ERRORS as exc:
                if not self._outage.failed(exc, "claiming runs"):
                    return
                await self._outage.back()
                await self._put_back_lost_claims()
                continue
            except Exception:
                log.exception("unexpected error while claiming runs; trying again")
                await asyncio.sleep(1.0)
                continue
            if once and not claimed and not self._tasks:
                await self._results.settled()  # a retry is queued with its failure
                if await self._claim():
                    continue
                # A fan-out due now that a peer is still expanding, or whose tenants are
                # still queued or running, has tenants this bot may yet take: wait for it.
                fanned = [spec.name for spec in self._jobs() if spec.multi_tenant]
                if not await self._repository.fan_outs_under_way(fanned, self._clock()):
                    return
                await self._sleep()
                continue
            if claimed and self._room() > 0:
                continue  # there may be more
            await self._sleep()

    async def _gather(self) -> None:
        """Wait for the runs still running to end, at most `GATHER` seconds, when the room
        comes from a run that ended (see `GATHER`)."""
        freed, self._freed = self._freed, False
        if not freed or not self._tasks:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(GATHER):
                await self._drained.wait()

    async def _sleep(self) -> None:
        timeout = self.poll
        if self._room() > 0:
            try:
                due = await self._repository.next_due(self._names())
            except DATABASE_ERRORS:
                due = None
            left = (due - self._clock()).total_seconds() if due is not None else timeout
            if left > 0:  # due already but not claimable here (a fan-out at its room)
                timeout = min(timeout, left)
        try:
            async with asyncio.timeout(timeout):
                await self._wake.wait()
        except TimeoutError:
            pass

    def _room(self) -> int:
        return self._concurrency - len(self._tasks)

    def _names(self) -> list[str]:
        return [spec.name for spec in self._jobs()]

    async def _claim(self) -> bool:
        """One round of claims; whether anything was claimed."""
        names = self._names()
        now = self._clock()
        claimed: list[RunRow] = []
        for parent in list(self._parent_jobs):
            running = self._by_parent[parent]
            spec = self._spec_of_parent(parent)
            room = min(self._room() - len(claimed),
                       (spec.tenant_concurrency if spec else 1) - running)
            if room > 0:
                taken = await self._repository.claim(self._bot, names, room, now,
                                                     parent=parent)
                if not taken and not running:  # none of its tenants is left here
                    del self._parent_jobs[parent]
                claimed += taken
        room = self._room() - len(claimed)
        if room > 0:
            fresh = await self._repository.claim(self._bot, names, room, now,
                                                 not_parents=list(self._parent_jobs))
            claimed += await self._within_fan_out_room(fresh)
        self._outage.answered()
        if not claimed:
            return False
        handled = 0
        try:
            tenants = await self._tenants({r.tenant_id for r in claimed if r.tenant_id})
            for row in claimed:
                await self._take(row, tenants, now)
                handled += 1
        except BaseException:
            # What was claimed and not started goes back for any bot (if the database
            # lets it: else a peer marks it abandoned once this bot is gone).
            with contextlib.suppress(*DATABASE_ERRORS):
                await self._repository.release(self._bot, [r.id for r in claimed[handled:]])
            raise
        return True

    async def _within_fan_out_room(self, rows: list[RunRow]) -> list[RunRow]:
        """`rows` without the tenant runs past their fan-out's room here (put back)."""
        kept: list[RunRow] = []
        back: list[int] = []
        taken: Counter[int] = Counter()
        for row in rows:
            if row.parent_id is not None:
                spec = self._spec(row.job)
                limit = spec.tenant_concurrency if spec is not None else 1
                if self._by_parent[row.parent_id] + taken[row.parent_id] >= limit:
                    back.append(row.id)
                    continue
                taken[row.parent_id] += 1
            kept.append(row)
        await self._repository.release(self._bot, back)
        return kept

    async def _tenants(self, ids: set[int]) -> dict[int, Tenant]:
        if not ids:
            return {}
        database = self._runner.workspace().database
        try:
            found = await database.session.scalars(select(Tenant).where(Tenant.id.in_(ids)))
            return {tenant.id: tenant for tenant in found}
        finally:
            await database.aclose()

    def _spec(self, job: str) -> JobSpec | None:
        try:
            return self._jobs().get(job)
        except PinreplError:  # gone since it was queued, or its file no longer loads
            return None

    def _spec_of_parent(self, parent: int) -> JobSpec | None:
        job = self._parent_jobs.get(parent)
        return self._spec(job) if job is not None else None

    # -- what a claimed row is ----------------------------------------------------------------

    async def _take(self, row: RunRow, tenants: dict[int, Tenant], now: datetime) -> None:
        if not self._claiming:  # claimed as the bot stopped: put back for another bot
            await self._repository.release(self._bot, [row.id])
            return
        spec = self._spec(row.job)
        if spec is None:
            self._end_unrun(row, Status.FAILED,
                            f"failed: background job {row.job!r} no longer loads on this bot",
                            now)
            return
        scheduled = row.origin == Origin.SCHEDULE and row.attempt == 1 and \
            row.parent_id is None
        if missed(spec, row, now):
            grace = misfire_grace(spec).total_seconds()
            self._end_unrun(row, Status.SKIPPED,
                            f"skipped: not started within misfire_grace ({grace:g} s) of its "
                            "slot (no bot had room, or none was up)", now, warn=True)
            return
        if (bound := overtaken(spec, row, now)) is not None:
            self._end_unrun(row, Status.SKIPPED,
                            f"skipped: try {row.attempt} did not start before the next slot, "
                            f"{self._shown(bound)}, which is the retry", now, warn=True)
            return
        if spec.multi_tenant and row.is_fan_out:
            self._start(row, self._expand(row, spec))
            return
        if scheduled and row.tenant_id in await self._busy(row, spec, now):
            self._end_unrun(row, Status.SKIPPED,
                            "skipped: the run of an earlier slot is still running", now)
            return
        arguments = self._arguments(row, spec)
        try:
            check_arguments(spec, *arguments)
        except BadJobArguments as exc:  # run() changed since it was deferred: no retry
            self._end_unrun(row, Status.FAILED, f"failed: {exc}", now)
            return
        tenant = tenants.get(row.tenant_id) if row.tenant_id is not None else None
        if row.tenant_id is not None and tenant is None:
            self._end_unrun(row, Status.FAILED,
                            f"failed: tenant {row.tenant_id} no longer exists", now)
            return
        if row.parent_id is not None:
            self._by_parent[row.parent_id] += 1
            self._parent_jobs[row.parent_id] = row.job
        self._running_here[(row.job, row.args_hash, row.tenant_id)] += 1
        self._cancellable[row.id] = self._start(row, self._execute(row, spec, tenant, arguments))

    async def _busy(self, run: RunRow, spec: JobSpec, now: datetime) -> set[int | None]:
        """The tenants (None: no tenant) of `run`'s (job, arguments) whose earlier slot still
        runs, here or on a live bot (none for a job with `overlap = True`)."""
        if spec.cls.overlap or run.origin != Origin.SCHEDULE:
            return set()
        here = {tenant for (job, args, tenant), count in self._running_here.items()
                if count and (job, args) == (run.job, run.args_hash)}
        return here | await self._repository.busy_elsewhere(run, self._bot, now - self._lease)

    def _end_unrun(self, row: RunRow, status: str, error: str, now: datetime,
                   warn: bool = False) -> None:
        self._results.add(Result(row.id, status, now, error, parent_id=row.parent_id))
        self.outcomes[status] += 1
        self._events.emit(RunEnded(row, self.what(row, None), status, None, error, warn=warn))

    async def _put_back_lost_claims(self) -> None:
        """A claim whose answer the outage lost may have taken rows this bot never saw:
        they would stay `running` on a bot that beats. Put back this bot's running rows
        that it neither runs nor has a result of waiting to be written."""
        keep = {*self._executing.values(), *self._results.pending()}
        with contextlib.suppress(*DATABASE_ERRORS):  # else the next outage tries again
            lost = await self._repository.release_lost(self._bot, keep)
            if lost:
                log.warning("put back %s that a claim cut off by the outage had taken",
                            counted(lost, "queued run"))

    def _start(self, row: RunRow, work: Any) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._drained.clear()
        self._tasks.add(task)
        self._executing[task] = row.id
        task.add_done_callback(self._ended)
        return task

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        run_id = self._executing.pop(task, None)
        if run_id is not None and self._cancellable.get(run_id) is task:
            del self._cancellable[run_id]
            self._cancel_asked.discard(run_id)
        self._freed = True
        self._wake.set()
        if not self._tasks:
            self._drained.set()

    # -- running -----------------------------------------------------------------------------

    async def _expand(self, row: RunRow, spec: JobSpec) -> None:
        """A fan-out: select its tenants and queue one run each (or fail the row)."""
        now = self._clock()
        selected = await self._select(spec)
        if isinstance(selected, Exception):
            error = f"{type(selected).__name__}: {selected}"
            self.outcomes[Status.FAILED] += 1
            finished_at = self._clock()
            self._results.add(Result(row.id, Status.FAILED, finished_at, error,
                                     _traceback(selected), started_at=now))
            self._events.emit(RunEnded(
                row, f"{self.what(row, None)}: its tenants could not be selected",
                Status.FAILED, (finished_at - now).total_seconds(), error, selected))
            return
        if not selected:
            log.info("no tenants selected for %s; nothing ran", self.what(row, None))
        while True:
            try:
                queued = await self._repository.expand(
                    row, self._bot, [t.id for t in selected], self._clock(),
                    skipped=[t for t in await self._busy(row, spec, now) if t is not None])
                break
            except DATABASE_ERRORS as exc:
                if not self._outage.failed(exc, "queueing a fan-out's tenants"):
                    return
                await self._outage.back()
        if queued is None:
            log.warning("fan-out %s was taken from this bot (it had not beaten for the "
                        "lease): its tenants are another bot's to queue",
                        self.what(row, None))
        self._wake.set()

    async def _select(self, spec: JobSpec) -> list[Tenant] | Exception:
        """The tenants the job's `tenants_filter` selects, or its failure; through an
        outage, selected again once the database is back."""
        while True:
            try:
                return await self._runner.select_tenants(spec)
            except Exception as exc:
                if not is_outage(exc):
                    return exc
                self._outage.failed(exc, "selecting tenants")
                await self._outage.back()

    async def _execute(self, row: RunRow, spec: JobSpec, tenant: Tenant | None,
                       arguments: tuple[tuple[Any, ...], dict[str, Any]]) -> None:
        what = self.what(row, tenant)
        args, kwargs = arguments
        timeout = row.timeout if row.timeout is not None else spec.cls.timeout
        started_at = self._clock()
        run = row.as_run(started_at)
        self._events.emit(RunStarted(row, what, started_at))
        status, error, failure = Status.SUCCEEDED, None, None
        try:
            await self._runner.run_once(spec, args, kwargs, tenant, run=run, timeout=timeout)
        except asyncio.CancelledError:
            status, error = Status.CANCELLED, (
                "cancelled: asked to (cancel-runs)" if row.id in self._cancel_asked
                else "cancelled: the bot stopped before the run ended")
            raise
        except BaseException as exc:  # the job's, even a KeyboardInterrupt or a class of its
            # own: its run's outcome, never the bot's end (its signals never raise here)
            status, error, failure = status_of(exc), f"{type(exc).__name__}: {exc}", exc
        finally:
            self._running_here[(row.job, row.args_hash, row.tenant_id)] -= 1
            if row.parent_id is not None:
                self._by_parent[row.parent_id] -= 1
                if self._by_parent[row.parent_id] <= 0:
                    del self._by_parent[row.parent_id]
            finished_at = self._clock()
            retry_at, error = self._retry(row, spec, status, failure, finished_at, error)
            self._results.add(Result(
                row.id, status, finished_at, error,
                _traceback(failure) if failure is not None else None, started_at,
                retry_at, row.parent_id))
            # A try that gets another is `retried`: `bot --once` fails for the runs that
            # ended for good only.
            self.outcomes[RETRIED if retry_at is not None else status] += 1
            took = (finished_at - started_at).total_seconds()  # as recorded
            self._events.emit(RunEnded(row, what, status, took, error, failure, retry_at))

    def _arguments(self, row: RunRow, spec: JobSpec) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """A scheduled run's arguments are its schedule's own values (they need not be
        JSON); a deferred run's come from its row."""
        if row.origin == Origin.SCHEDULE:
            for schedule in spec.schedules:
                if encode_args(schedule.args, schedule.kwargs) == row.args:
                    return tuple(schedule.args), dict(schedule.kwargs)
        return row.arguments

    def _retry(self, row: RunRow, spec: JobSpec, status: str, failure: BaseException | None,
               now: datetime, error: str | None) -> tuple[datetime | None, str | None]:
        """When the next try is due (None: none), and the error saying why not when the
        next slot comes first."""
        if status not in (Status.FAILED, Status.TIMED_OUT):
            return None, error
        due, stopped_by = next_try(spec, row, status, failure, now)
        if stopped_by is not None:
            return None, f"{error}{not_retried(self._shown(stopped_by))}"
        return due, error

    # -- stopping ----------------------------------------------------------------------------

    def stop_claiming(self) -> None:
        """From now on claim nothing, and start nothing a claim under way brings (it is put
        back): called by the signal's handler itself, before any other callback runs."""
        self._claiming = False
        self._wake.set()

    async def finish_runs(self, grace: float, hurry: asyncio.Event) -> None:
        """Let the running runs finish for up to `grace` seconds (less if `hurry` is set),
        then cancel the others; return when every one has ended."""
        deadline = time.monotonic() + grace
        hurried = asyncio.create_task(hurry.wait())
        try:
            while self._tasks and not hurry.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                await asyncio.wait({*self._tasks, hurried}, timeout=left,
                                   return_when=asyncio.FIRST_COMPLETED)
        finally:
            hurried.cancel()
        running = list(self._tasks)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    def what(self, row: RunRow, tenant: Tenant | None = None) -> str:
        """How `row` is shown in the log: job, arguments, tenant, slot (or due time), try."""
        where = ""
        if tenant is not None:
            where = f" tenant {tenant.id} ({tenant.name})"
        elif row.tenant_id is not None:
            where = f" tenant {row.tenant_id}"
        origin = "slot" if row.origin == Origin.SCHEDULE else f"{row.origin} run {row.id} due"
        attempt = f" try {row.attempt}" if row.attempt > 1 else ""
        return (f"{row.job}{shown_args(row.args)}{where} {origin} "
                f"{self._shown(row.scheduled_for)}{attempt}")


def next_try(spec: JobSpec, row: RunRow, status: str, failure: BaseException | None,
             now: datetime) -> tuple[datetime | None, datetime | None]:
    """When the next try of `row`, which ended at `now` with `status` (and `failure`), is
    due by the job's `retries` (None: it does not retry), and the next slot of its schedule
    when that is what stopped it: a scheduled run retries only before its next slot."""
    delay = retry_delay(spec.retry, row.attempt, status, failure)
    if delay is None:
        return None, None
    due = now + timedelta(seconds=delay)
    bound = next_slot(spec, row)
    if bound is not None and due >= bound:
        return None, bound
    return due, None


def not_retried(next_slot: str) -> str:
    """What a scheduled run's error adds when its next slot, shown as `next_slot`, stopped
    its retry (SPEC 8)."""
    return (f" (not retried: the next try would be due at or after the next slot, "
            f"{next_slot}, which is the retry)")


def _traceback(exc: BaseException) -> str:
    """The traceback a run's row keeps: the job's frames, not pinrepl's."""
    return format_exception(exc)
