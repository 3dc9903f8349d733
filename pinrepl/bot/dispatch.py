"""Dispatching: claiming the runs of due slots within this bot's room, and running them
through the app's runner (`Runner.run_once`: a fresh workspace per run, torn down whatever
happens).

A slot of a job without tenants is one run. A slot of a multi-tenant job is one run per
tenant that its `tenants_filter` selects when the slot is first served. A bot claims a run
only when it can start it now: `--concurrency` bounds all its runs, the job's
`tenant_concurrency` the runs of one fan-out. So the tenants of a slot spread over the
bots that are up: each claims the next tenants as it has room, and a tenant that another
bot claimed first is simply not returned to it.

One refinement: when the runs of a fan-out take a few milliseconds, a claim per run would
cost more than the runs, so while runs of a slot are under way a bot also claims the
tenants it expects to start within `LOOK_AHEAD` (from the runs of this slot it has
finished), at most `MAX_BATCH` at once; as each run ends, the next starts at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..db import Tenant
from ..db.models import utcnow
from ..db.runs import shown_args
from ..jobs import JobSpec
from ..runner import Runner
from . import JOB_FAILURE, counted
from .outage import DATABASE_ERRORS, Outage, is_outage
from .plan import Fire, misfire_grace
from .results import Results
from .store import Claimed, Result, Store, args_key

LOOK_AHEAD = 0.05
MAX_BATCH = 200

log = logging.getLogger("pinrepl.bot")


@dataclass(eq=False)
class SlotWork:
    """The runs of one slot of one (job, arguments) that this bot may still claim."""

    spec: JobSpec
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    key: str
    slot: datetime
    #: A multi-tenant job's tenants, selected when the slot is first served.
    tenants: list[Tenant] | None = None
    position: int = 0
    #: Claimed and waiting for room (the look-ahead).
    queued: deque[tuple[int, Tenant]] = field(default_factory=deque)
    running: int = 0
    finished: int = 0
    busy: float = 0.0
    #: Earlier slots of the same (job, arguments) that this one replaced unclaimed.
    replaced: int = 0

    @property
    def started(self) -> bool:
        return self.tenants is not None

    @property
    def tenant_room(self) -> int:
        return self.spec.tenant_concurrency - self.running

    def look_ahead(self) -> int:
        """How many more runs to claim than can start now."""
        if not self.finished or not self.busy:
            return 0
        per_second = self.finished / self.busy * self.spec.tenant_concurrency
        return min(MAX_BATCH, int(per_second * LOOK_AHEAD))


class Dispatcher:
    """Claims and starts the runs of the slots it is given; `serve()` does it as room
    frees up, until `stop_claiming()`."""

    def __init__(
        self, runner: Runner, store: Store, results: Results, outage: Outage, *,
        concurrency: int, shown: Callable[[datetime], str], on_idle: Callable[[], Any],
    ) -> None:
        self._runner = runner
        self._store = store
        self._results = results
        self._outage = outage
        self._concurrency = concurrency
        self._shown = shown
        self._on_idle = on_idle
        self._pending: list[SlotWork] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._claiming = True
        self._serving: asyncio.Task[None] | None = None
        #: This bot's runs claimed `running` and not yet ended, by (job, args, tenant).
        self._running: Counter[tuple[str, str, int | None]] = Counter()
        #: How this bot's own runs ended, by status.
        self.outcomes: Counter[str] = Counter()

    @property
    def running(self) -> int:
        return len(self._tasks)

    @property
    def idle(self) -> bool:
        return not self._pending and not self._tasks

    def add(self, fires: Iterable[Fire]) -> None:
        """Serve these slots. Identical ones (same job, arguments and slot) are one; a
        later slot of a (job, arguments) whose earlier one could not be claimed yet (no
        room, no database) replaces it: the earlier one is missed (SPEC 7)."""
        for fire in fires:
            schedule = fire.schedule
            key = args_key(schedule.args, schedule.kwargs)
            earlier = [w for w in self._pending
                       if (w.spec.name, w.key) == (fire.spec.name, key) and not w.started]
            if any(w.slot >= fire.slot for w in earlier):
                continue
            work = SlotWork(fire.spec, schedule.args, schedule.kwargs, key, fire.slot)
            for old in earlier:
                self._pending.remove(old)
                work.replaced += old.replaced + 1
            self._pending.append(work)
        self._wake.set()

    def start(self) -> None:
        self._serving = asyncio.create_task(self._serve())

    async def stop_claiming(self, within: float = 5.0) -> None:
        """Claim nothing more; the runs claimed but not started are recorded `cancelled`.
        A claim under way gets `within` seconds to return (a database that hangs)."""
        if not self._claiming:
            return
        self._claiming = False
        self._wake.set()
        if self._serving is not None:
            await asyncio.wait({self._serving}, timeout=within)
            self._serving.cancel()
        for work in self._pending:
            for run_id, tenant in work.queued:
                self._ended(work, run_id, tenant, "cancelled", "cancelled: the bot stopped")
        self._pending.clear()

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

    # -- claiming ---------------------------------------------------------------------------

    async def _serve(self) -> None:
        while self._claiming:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._serve_pending()
            except DATABASE_ERRORS as exc:
                delay = self._outage.failed(exc, "claiming runs")
                if delay is not None:  # None: refused, and the bot stops
                    asyncio.get_running_loop().call_later(delay, self._wake.set)
            except Exception:
                log.exception("unexpected error while claiming runs; trying again")
                asyncio.get_running_loop().call_later(1.0, self._wake.set)

    def _room(self) -> int:
        return self._concurrency - len(self._tasks)

    async def _serve_pending(self) -> None:
        for work in list(self._pending):
            if not self._claiming:
                return
            if self._expired(work):
                continue
            if work.spec.multi_tenant:
                await self._serve_fan_out(work)
            elif self._room() > 0:
                claims = await self._claim(work, [None])
                self._drop(work)
                for claim in claims:
                    self._take(work, claim, None)

    def _expired(self, work: SlotWork) -> bool:
        """A slot that nothing could be claimed for within its `misfire_grace` (no room,
        or no database) is missed."""
        if work.started or utcnow() - work.slot <= misfire_grace(work.spec):
            return False
        log.warning("missed %s of %s up to %s: nothing could be claimed within "
                    "misfire_grace (%g s)", counted(work.replaced + 1, "slot"), work.spec.name,
                    self._shown(work.slot), misfire_grace(work.spec).total_seconds())
        self._drop(work)
        return True

    async def _serve_fan_out(self, work: SlotWork) -> None:
        if work.tenants is None and not await self._select(work):
            return
        assert work.tenants is not None
        self._start_queued(work)
        while self._claiming and work.position < len(work.tenants):
            room = max(0, min(self._room(), work.tenant_room))
            ahead = work.look_ahead()
            # Without room, claim ahead only while runs of this slot are under way here (as
            # each ends, its room goes to the next queued one, without waiting for a claim),
            # and only once half the look-ahead is used: claims in batches, not one per run.
            if not room and not (work.running and len(work.queued) <= ahead // 2):
                break
            want = room + ahead - len(work.queued)
            if want <= 0:
                break
            batch = work.tenants[work.position:work.position + want]
            work.position += len(batch)
            by_id: dict[int | None, Tenant] = {tenant.id: tenant for tenant in batch}
            for claim in await self._claim(work, list(by_id)):
                self._take(work, claim, by_id.get(claim.tenant_id))
        if work.position >= len(work.tenants) and not work.queued:
            self._drop(work)

    async def _select(self, work: SlotWork) -> bool:
        """Select the tenants of a multi-tenant slot; a failure other than an outage (a
        `tenants_filter` that raises, no tenants table) is the slot's, recorded as one
        failed run without a tenant."""
        try:
            work.tenants = await self._runner.select_tenants(work.spec)
        except Exception as exc:
            if is_outage(exc):
                raise
            await self._fail_slot(work, exc)
            return False
        self._outage.answered()
        if not work.tenants:
            log.info("no tenants selected for %s at slot %s; nothing ran", work.spec.name,
                     self._shown(work.slot))
            self._drop(work)
            return False
        return True

    async def _fail_slot(self, work: SlotWork, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        if await self._store.record_failure(work.spec.name, work.key, work.slot, utcnow(),
                                            error):
            self.outcomes["failed"] += 1
            log.error("run failed: %s: its tenants could not be selected: %s",
                      self._what(work, None), error, exc_info=exc, extra={JOB_FAILURE: True})
        self._drop(work)

    async def _claim(self, work: SlotWork, tenants: list[int | None]) -> list[Claimed]:
        here = None if work.spec.cls.overlap else [
            tenant for tenant in tenants if self._running[(work.spec.name, work.key, tenant)]]
        claims = await self._store.claim(
            work.spec.name, work.key, work.slot, tenants, utcnow(), busy_here=here)
        self._outage.answered()
        if work.replaced:
            log.warning("did not claim %s of %s before %s in time (no database, or no "
                        "room): missed unless another bot ran them",
                        counted(work.replaced, "slot"),
                        work.spec.name, self._shown(work.slot))
            work.replaced = 0
        return claims

    def _take(self, work: SlotWork, claim: Claimed, tenant: Tenant | None) -> None:
        if claim.status == "skipped":
            self.outcomes["skipped"] += 1
            log.info("run skipped: %s: the run of an earlier slot is still running",
                     self._what(work, tenant))
            return
        self._running[(work.spec.name, work.key, claim.tenant_id)] += 1
        if tenant is None:
            self._start(work, claim.id, None)
        else:
            work.queued.append((claim.id, tenant))
            self._start_queued(work)

    def _drop(self, work: SlotWork) -> None:
        if work in self._pending:
            self._pending.remove(work)
        self._idle_now()

    # -- running ----------------------------------------------------------------------------

    def _start_queued(self, work: SlotWork) -> None:
        while work.queued and self._room() > 0 and work.tenant_room > 0:
            self._start(work, *work.queued.popleft())

    def _start(self, work: SlotWork, run_id: int, tenant: Tenant | None) -> None:
        work.running += 1
        task = asyncio.create_task(self._run(work, run_id, tenant))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, work: SlotWork, run_id: int, tenant: Tenant | None) -> None:
        log.info("run started: %s", self._what(work, tenant))
        started_at, began = utcnow(), time.monotonic()
        status, error, failure = "succeeded", None, None
        try:
            await self._runner.run_once(work.spec, work.args, work.kwargs, tenant)
        except asyncio.CancelledError:
            status, error = "cancelled", "cancelled: the bot stopped before the run ended"
            raise
        except Exception as exc:
            status, error, failure = "failed", f"{type(exc).__name__}: {exc}", exc
        finally:
            self._tasks.discard(asyncio.current_task())
            work.running -= 1
            work.finished += 1
            work.busy += time.monotonic() - began
            self._ended(work, run_id, tenant, status, error, started_at, failure)
            self._wake.set()

    def _ended(
        self, work: SlotWork, run_id: int, tenant: Tenant | None, status: str,
        error: str | None, started_at: datetime | None = None,
        failure: Exception | None = None,
    ) -> None:
        finished_at = utcnow()
        self._results.add(Result(run_id, status, finished_at, error, started_at))
        self._running[(work.spec.name, work.key, None if tenant is None else tenant.id)] -= 1
        self.outcomes[status] += 1
        level = logging.INFO if status == "succeeded" else (
            logging.ERROR if status == "failed" else logging.WARNING)
        took = (finished_at - started_at).total_seconds() if started_at is not None else 0.0
        log.log(level, "run %s: %s in %.3f s%s", status, self._what(work, tenant), took,
                f": {error}" if error else "", exc_info=failure, extra={JOB_FAILURE: True})
        self._idle_now()

    def _idle_now(self) -> None:
        if self.idle:
            self._on_idle()

    def _what(self, work: SlotWork, tenant: Tenant | None) -> str:
        where = f" tenant {tenant.id} ({tenant.name})" if tenant is not None else ""
        return f"{work.spec.name}{shown_args(work.key)}{where} slot {self._shown(work.slot)}"
