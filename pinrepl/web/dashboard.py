"""What the dashboard's pages show and what its buttons do, over one `App`: the jobs
overview (`overview`) and the App methods of SPEC 9 (`list_runs`, `get_run`, `bots`,
`pauses`, `pause_job`, `resume_job`, `retry_runs`, `cancel_runs`, `defer`), the ones the
CLI and the REPL call. Nothing here writes SQL of its own, renders HTML or knows HTTP.

With a tenant (`pinrepl web --tenant T`) everything is that tenant's: its runs only (a
fan-out's own row has no tenant: it is left out), its last runs, and the buttons act for it
alone: Run now runs the job for that tenant, Pause and Resume pause and resume its runs of
the job, Retry and Cancel reach only its runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..errors import BadRunFilter, UnknownBackgroundJob, UnknownTenant
from ..overview import Overview, app_overview, jobs_overview, read_history
from ..runs.control import BotRow, Pause, RunFilter
from ..runs.history import tenant_names
from ..runs.repository import RunRow
from ..runs.status import UNSUCCESSFUL
from .filters import RunsQuery

if TYPE_CHECKING:
    from ..app import App
    from ..db import Tenant

#: Runs on one page of the runs page.
PAGE = 50
#: The failed tenants a fan-out's page lists (the counts say how many there are in all).
FAILED_SHOWN = 100


@dataclass(frozen=True)
class JobsPage:
    overview: Overview
    #: The pauses in force, by job (those of other tenants left out with a tenant).
    pauses: Mapping[str, Sequence[Pause]]


@dataclass(frozen=True)
class RunsPage:
    query: RunsQuery
    runs: list[RunRow]
    #: `before=` for the next, older page (None: this is the last).
    older: int | None
    tenants: Mapping[int, str]


@dataclass(frozen=True)
class RunPage:
    run: RunRow
    #: Every try of the run, the first first.
    tries: list[Any]
    tenants: Mapping[int, str]
    #: A fan-out's tenant runs counted by status (their last tries); None: not a fan-out.
    counts: Mapping[str, int] | None = None
    #: A fan-out's tenants whose last try did not succeed (at most `FAILED_SHOWN`).
    failed: list[RunRow] = field(default_factory=list)

    @property
    def retryable(self) -> bool:
        return self.run.status in UNSUCCESSFUL

    @property
    def cancellable(self) -> bool:
        return self.run.status in ("queued", "running")


@dataclass(frozen=True)
class Done:
    """What an action did, said in one line, and the run to go to (None: stay)."""

    message: str
    run_id: int | None = None


class Dashboard:
    """The dashboard's reads and actions over `app`, as `tenant` (a reference: an id or a
    name; None: every tenant) sees them."""

    def __init__(self, app: App, tenant: Any = None) -> None:
        self.app = app
        self._tenant_ref = tenant
        self._tenant: Tenant | None = None
        self._lock = asyncio.Lock()

    @property
    def timezone(self) -> Any:
        return self.app.settings.timezone

    async def tenant(self) -> Tenant | None:
        """The dashboard's tenant row (None: all tenants), resolved once."""
        if self._tenant_ref is None:
            return None
        async with self._lock:
            if self._tenant is None:
                (self._tenant,) = await self.app.runner.resolve_tenants([self._tenant_ref])
        return self._tenant

    async def _tenant_id(self) -> int | None:
        tenant = await self.tenant()
        return None if tenant is None else int(tenant.id)

    # -- reading -----------------------------------------------------------------------------

    async def jobs(self, now: datetime | None = None) -> JobsPage:
        tenant = await self.tenant()
        if tenant is None:
            overview = await app_overview(self.app, now)
        else:
            overview = jobs_overview(self.app.jobs, self.timezone,
                                     await read_history(self.app, tenant), now,
                                     app_root=self.app.settings.root)
        pauses: dict[str, list[Pause]] = {}
        for pause in await self.app.pauses():
            if tenant is None or pause.tenant_id in (None, tenant.id):
                pauses.setdefault(pause.job, []).append(pause)
        return JobsPage(overview, pauses)

    async def runs(self, query: RunsQuery) -> RunsPage:
        """One page of runs, newest first, as `query` filters them."""
        run_filter = RunFilter(job=query.job, status=query.status,
                               tenant_id=await self._tenant_filter(query.tenant),
                               origin=query.origin, since=query.since_at)
        try:
            rows = await self.app.list_runs(run_filter, limit=PAGE + 1, before=query.before)
        except UnknownBackgroundJob as exc:  # neither the app's nor in the history
            raise BadRunFilter(str(exc)) from None
        older = rows[PAGE - 1].id if len(rows) > PAGE else None
        rows = rows[:PAGE]
        return RunsPage(query, rows, older, await self._names(rows))

    async def _tenant_filter(self, ref: str | None) -> int | None:
        mine = await self.tenant()
        if ref is None:
            return None if mine is None else int(mine.id)
        try:
            (tenant,) = await self.app.runner.resolve_tenants([ref])
        except UnknownTenant as exc:
            raise BadRunFilter(str(exc)) from None
        if mine is not None and tenant.id != mine.id:
            raise BadRunFilter(f"this dashboard shows the runs of tenant {mine.name!r} only")
        return int(tenant.id)

    async def run(self, run_id: int) -> RunPage | None:
        """A run's page; None when there is no such run (or it is not the tenant's)."""
        run = await self._own_run(run_id)
        if run is None:
            return None
        first = run.retry_of or run.id
        database = self.app.database()
        try:
            later = await database.background_job_runs.where(retry_of=first).order_by(
                "attempt").all()
        finally:
            await database.aclose()
        head = run if run.id == first else await self.app.get_run(first)
        tries = ([head] if head is not None else []) + list(later)
        counts: Mapping[str, int] | None = None
        failed: list[RunRow] = []
        if run.tenant_id is None and run.parent_id is None and self._multi_tenant(run.job):
            counts = await self.app.repository.count_tenant_runs(run.id)
            failed = await self.app.repository.tenant_runs(run.id, unsuccessful=True,
                                                           limit=FAILED_SHOWN)
        ids = [t.tenant_id for t in [*tries, *failed]]
        return RunPage(run, tries, await self._names(ids), counts, failed)

    def _multi_tenant(self, job: str) -> bool:
        try:
            return bool(self.app.jobs.get(job).multi_tenant)
        except Exception:  # a job gone from the app, or one that does not load
            return False

    async def _own_run(self, run_id: int) -> RunRow | None:
        run: RunRow | None = await self.app.get_run(run_id)
        mine = await self._tenant_id()
        if run is None or (mine is not None and run.tenant_id != mine):
            return None
        return run

    async def _names(self, rows_or_ids: Sequence[Any]) -> dict[int, str]:
        ids = [r if isinstance(r, int) or r is None else r.tenant_id for r in rows_or_ids]
        wanted = [i for i in ids if i is not None]
        if not wanted:
            return {}
        database = self.app.database()
        try:
            return await tenant_names(database, wanted)
        finally:
            await database.aclose()

    async def bots(self) -> list[BotRow]:
        """The bots that are up, each with its running runs (the tenant's only, with one)."""
        mine = await self._tenant_id()
        found = list(await self.app.bots())
        if mine is None:
            return found
        return [_with_running(bot, [r for r in bot.running if r.tenant_id == mine])
                for bot in found]

    async def names_of(self, runs: Sequence[RunRow]) -> dict[int, str]:
        return await self._names(runs)

    # -- acting ------------------------------------------------------------------------------

    def _job(self, name: str) -> str:
        """`name` if it is a job of the app; `UnknownBackgroundJob` (404) otherwise."""
        if name not in self.app.jobs.names:
            self.app.jobs.get(name)  # raises, with the names it may have meant
        return name

    async def run_now(self, name: str) -> Done:
        tenant = await self.tenant()
        if tenant is None:
            run = await self.app.defer(self._job(name))
            return Done(f"run {run.id} of {name} queued", run.id)
        fan_out = await self.app.defer_job(self._job(name), tenants=[tenant])
        # The fan-out's own row has no tenant (this dashboard hides it): the tenant's row is
        # the run to go to.
        rows = await self.app.repository.tenant_runs(fan_out.id)
        run_id = rows[0].id if rows else fan_out.id
        return Done(f"run {run_id} of {name} queued for tenant {tenant.name}", run_id)

    async def pause(self, name: str, reason: str | None) -> Done:
        tenant = await self.tenant()
        await self.app.pause_job(self._job(name), tenants=None if tenant is None else [tenant],
                                 reason=reason or None)
        whose = "" if tenant is None else f" for tenant {tenant.name}"
        return Done(f"{name} paused{whose}" + (f": {reason}" if reason else ""))

    async def resume(self, name: str) -> Done:
        tenant = await self.tenant()
        lifted = await self.app.resume_job(self._job(name),
                                           tenants=None if tenant is None else [tenant])
        whose = "" if tenant is None else f" for tenant {tenant.name}"
        return Done(f"{name} resumed{whose}" if lifted else f"{name} was not paused{whose}")

    async def retry(self, run_id: int) -> Done | None:
        """A new try of the run (None: no such run); it says so when the run succeeded or
        has not ended."""
        run = await self._own_run(run_id)
        if run is None:
            return None
        new = await self.app.retry_runs(await self._one(run_id))
        if not new:
            return Done(f"run {run_id} is {run.status}: only a run that failed, timed out, was "
                        "abandoned or cancelled is retried", run_id)
        return Done(f"run {run_id} retried: run {new[0]} queued", new[0])

    async def cancel(self, run_id: int) -> Done | None:
        run = await self._own_run(run_id)
        if run is None:
            return None
        done = await self.app.cancel_runs(await self._one(run_id))
        if done.running:
            return Done(f"run {run_id} is being cancelled: its bot stops it within a second "
                        "or two", run_id)
        if done.queued:
            return Done(f"run {run_id} cancelled", run_id)
        return Done(f"run {run_id} is {run.status}: only a queued or running run is cancelled",
                    run_id)

    async def _one(self, run_id: int) -> RunFilter:
        """Run `run_id`, if it is the dashboard's tenant's (with one)."""
        return RunFilter(ids=(run_id,), tenant_id=await self._tenant_id())


def _with_running(bot: BotRow, running: list[RunRow]) -> BotRow:
    return replace(bot, running=running)

