"""The REPL's control of jobs and runs (SPEC 9): `runs`, the run history at the prompt,
with `runs.retry()` and `runs.cancel()`; and `jobs['x']`, a job that can be paused and
resumed.

`await runs(job=, status=, tenant=, origin=, since=, limit=50)` returns the runs' records,
newest first, as a list shown as `list-background-job-runs` shows them (its table, as
plain text: `listing`). `since` is a duration (`'2h'`, seconds, a `timedelta`: that long
ago) or a datetime (a naive one in the app's timezone). `runs.retry(...)` and
`runs.cancel(...)` do what `retry-runs` and `cancel-runs` do, through the app's control
methods, and return what they did, shown as how many runs they queued or cancelled.
`await jobs['x'].pause(reason=...)` and `.resume()` pause and resume the job for every bot.

In a tenant's session (`--tenant`, `use_tenant`) all of them are that tenant's: its runs,
its runs retried or cancelled, its pauses; naming another tenant is a `TenantViolation`,
and the id of another tenant's run matches nothing, as the id of no run does.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..durations import seconds
from ..errors import BadRunFilter

if TYPE_CHECKING:
    from ..jobs import JobSpec
    from ..runs.control import RunFilter
    from ..runs.repository import RunRow
    from .repl import Console


class Runs:
    """`runs` in the namespace: the run history (call it), `retry`, `cancel`."""

    def __init__(self, console: Console) -> None:
        self._console = console

    def __repr__(self) -> str:
        return ("runs: await runs(job=None, status=None, tenant=None, origin=None, "
                "since=None, limit=50) shows the history; await runs.retry(job=, status=, "
                "tenant=, since=, id=) queues a new try of the runs that did not succeed; "
                "await runs.cancel(job=, status=, id=) cancels queued and running runs")

    async def __call__(self, job: str | None = None, status: str | None = None,
                       tenant: Any = None, origin: str | None = None,
                       since: str | float | timedelta | datetime | None = None,
                       limit: int = 50) -> RunList:
        """The runs, newest first, of `job`, with `status`, of `tenant`, from `origin`,
        made since `since` (each: if given); at most `limit`."""
        from ..runs.control import MAX_ID

        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= MAX_ID:
            raise BadRunFilter(f"limit is a whole number of runs, from 1 to {MAX_ID}, not "
                               f"{limit!r}")
        run_filter = await self._filter(job=job, status=status, tenant=tenant, origin=origin,
                                        since=since)
        app = self._console.app
        rows = await app.list_runs(run_filter, limit=limit)  # an unknown job: one line
        return RunList(rows, await self._shown(rows, run_filter))

    async def retry(self, job: str | None = None, status: str | None = None,
                    tenant: Any = None, since: str | float | timedelta | datetime | None = None,
                    id: int | Iterable[int] | None = None) -> Retried:
        """Queue a new try (origin `defer`) of each run among those asked for that did not
        succeed (`failed`, `timed_out`, `abandoned`, `cancelled`): of run `id` (or ids),
        or of `job`'s runs with `status`, of `tenant`, since `since`."""
        run_filter = await self._filter(job=job, status=status, tenant=tenant, since=since,
                                        ids=id, command="retry")
        return Retried(await self._console.app.retry_runs(run_filter))

    async def cancel(self, job: str | None = None, status: str | None = None,
                     id: int | Iterable[int] | None = None) -> CancelledRuns:
        """Cancel run `id` (or ids), or `job`'s runs with `status` (`queued` or
        `running`; default both): a queued run at once, a running one by its bot within a
        second or two."""
        if status not in (None, "queued", "running"):
            raise BadRunFilter(f"runs.cancel() cancels queued or running runs, not {status!r}")
        run_filter = await self._filter(job=job, status=status, ids=id, command="cancel")
        done = await self._console.app.cancel_runs(run_filter)
        return CancelledRuns(done.queued, done.running)

    # -- what was asked ------------------------------------------------------------------

    async def _filter(self, *, job: str | None = None, status: str | None = None,
                      tenant: Any = None, origin: str | None = None,
                      since: str | float | timedelta | datetime | None = None,
                      ids: int | Iterable[int] | None = None, command: str | None = None
                      ) -> RunFilter:
        from ..runs.control import RunFilter  # with the runs: SQLAlchemy is loaded by now

        self._console.ready()
        chosen = _ids(ids)
        if command is not None and not chosen and job is None:
            raise BadRunFilter(f"runs.{command}() needs the runs: id=ID (or ids), or job=NAME")
        return RunFilter(ids=chosen, job=job, status=status,
                         tenant_id=await self._console.tenant_id(tenant), origin=origin,
                         since=self._since(since))

    def _since(self, since: str | float | timedelta | datetime | None) -> datetime | None:
        from ..db.models import utcnow

        if since is None or isinstance(since, datetime):
            if since is not None and since.utcoffset() is None:  # the app's wall clock
                return since.replace(tzinfo=self._console.app.settings.timezone)
            return since
        if isinstance(since, timedelta):
            return utcnow() - since
        if (isinstance(since, int | float) and not isinstance(since, bool)) \
                or isinstance(since, str):
            try:
                return utcnow() - timedelta(seconds=seconds(since))
            except ValueError as exc:
                raise BadRunFilter(f"since: {exc}") from None
        raise BadRunFilter(f"since is a duration ('2h', seconds, a timedelta) or a "
                           f"datetime, not {since!r}")

    async def _shown(self, rows: list[RunRow], run_filter: RunFilter) -> str:
        """The runs as `list-background-job-runs` prints them without a terminal."""
        from ..runs.history import tenant_names
        from .listing import runs_rows, runs_text

        if not rows:
            of = f" of {run_filter.job!r}" if run_filter.job is not None else ""
            status = f"{run_filter.status} " if run_filter.status is not None else ""
            return f"no {status}runs{of} yet"
        zone = self._console.app.settings.timezone
        names = await tenant_names(self._console.workspace.database,
                                   [row.tenant_id for row in rows if row.tenant_id is not None])
        return runs_text(runs_rows(rows, zone, names), zone)


def _ids(ids: int | Iterable[int] | None) -> tuple[int, ...]:
    if ids is None:
        return ()
    if isinstance(ids, int) and not isinstance(ids, bool):
        return (ids,)
    if isinstance(ids, str | bytes) or not isinstance(ids, Iterable):
        raise BadRunFilter(f"id is a run id or several, not {ids!r}")
    return tuple(ids)


class RunList(list["RunRow"]):
    """The runs `runs()` found (their records, a list), shown as their table."""

    def __init__(self, rows: Iterable[RunRow], shown: str) -> None:
        super().__init__(rows)
        self._shown = shown

    def __repr__(self) -> str:
        return self._shown


class Retried(list[int]):
    """The ids of the new tries `runs.retry()` queued, shown as how many."""

    def __repr__(self) -> str:
        if not self:
            return "queued no new tries (no run asked for had failed, timed out, been " \
                "abandoned or cancelled)"
        tries = "try" if len(self) == 1 else "tries"
        return f"queued {len(self)} new {tries}: run{'s' if len(self) > 1 else ''} " \
            f"{', '.join(map(str, self))}"


class CancelledRuns:
    """What `runs.cancel()` did (as `Cancelled`: `queued`, `running`, `total`), shown as
    how many runs it cancelled."""

    def __init__(self, queued: int, running: int) -> None:
        self.queued = queued
        self.running = running

    @property
    def total(self) -> int:
        return self.queued + self.running

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CancelledRuns):
            return (self.queued, self.running) == (other.queued, other.running)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        if not self.total:
            return "cancelled no runs (none asked for was queued or running)"
        parts = []
        if self.queued:
            parts.append(f"cancelled {_runs(self.queued, 'queued')}")
        if self.running:
            parts.append(f"asked the bots to cancel {_runs(self.running, 'running')} "
                         "(cancelled within a second or two)")
        return "; ".join(parts)


def _runs(count: int, which: str) -> str:
    return f"{count} {which} run{'' if count == 1 else 's'}"


class ConsoleJob:
    """`jobs['x']` at the prompt: the job (`JobSpec`: its name, schedules, ...) that can
    be paused and resumed, for every bot, from here."""

    def __init__(self, console: Console, spec: JobSpec) -> None:
        self._console = console
        self._spec = spec

    def __getattr__(self, name: str) -> Any:
        return getattr(self._spec, name)

    def __dir__(self) -> list[str]:
        return sorted({*dir(self._spec), "pause", "resume"})

    def __repr__(self) -> str:
        return repr(self._spec)

    def __eq__(self, other: object) -> bool:
        spec = other._spec if isinstance(other, ConsoleJob) else other
        return self._spec == spec

    __hash__ = None  # type: ignore[assignment]

    async def pause(self, reason: str | None = None, *, tenants: Iterable[Any] | None = None
                    ) -> None:
        """Pause the job (of `tenants` only, if given): every bot skips its slots
        (recorded `skipped`, `paused: REASON`) and leaves its deferred runs queued until it
        is resumed; runs asked for in process still run, with a note."""
        chosen = await self._tenants(tenants)
        await self._console.app.pause_job(self._spec.name, tenants=chosen, reason=reason)
        of = "" if chosen is None else f" for {_tenants(chosen)}"
        why = f" ({reason})" if reason else ""
        print(f"paused {self._spec.name!r}{of}{why}: the bots skip its slots and leave its "
              "deferred runs queued until it is resumed")

    async def resume(self, *, tenants: Iterable[Any] | None = None) -> None:
        """Lift the job's pause (of `tenants` only, if given)."""
        chosen = await self._tenants(tenants)
        lifted = await self._console.app.resume_job(self._spec.name, tenants=chosen)
        of = "" if chosen is None else f" for {_tenants(chosen)}"
        if not lifted:
            print(f"{self._spec.name!r} was not paused{of}")
            return
        pauses = "pause" if lifted == 1 else "pauses"
        print(f"resumed {self._spec.name!r}{of} ({lifted} {pauses} lifted)")

    async def _tenants(self, tenants: Iterable[Any] | None) -> list[Any] | None:
        """The tenants asked for (one may be given alone); in a tenant's session, that
        tenant (another is a `TenantViolation`)."""
        if isinstance(tenants, str | int):
            tenants = [tenants]
        own = self._console.tenant
        if own is None:
            return None if tenants is None else list(tenants)
        for tenant in tenants or ():
            await self._console.tenant_id(tenant)  # raises for another tenant
        return [own]


def _tenants(tenants: list[Any]) -> str:
    names = [str(getattr(tenant, "name", tenant)) for tenant in tenants]
    return ("tenant " if len(names) == 1 else "tenants ") + ", ".join(names)
