"""The runner: the only code that runs a job. One run in a fresh workspace, a fan-out with
one run per tenant, and which tenants a run covers.

A run has two phases. `prepare` resolves what the caller asked for (the job, its arguments,
the tenants the caller chose) and raises the caller's mistakes; `execute` runs the job's
code (its `tenants_filter`, then `run()`), and whatever it raises is the job's failure.
Every run gets its own `Workspace`, torn down in a `finally`, and so does the job's
`tenants_filter` (which may be `async def`). A failing run's exception reaches the caller
with a note naming the job (and tenant). A fan-out runs every tenant even when some fail,
then raises `BackgroundJobFailed`.

`run_once` is the one place a job's `run()` runs, for in-process calls and the bots alike,
so its limits live there: the run's `timeout` (the call's, else the job's; each tenant's
run of a fan-out on its own clock) is enforced by `deadline.guard`, which also lets
`blocking.watch_stalls` name the run whose code blocks the loop; the run's record, if it
has one, is its workspace's `current_run`. `status_of` says which status a run's outcome
is.

A tenant reference is a row, an int (an id), or a string: `id:2` and `name:2` say which,
and a bare `2` is an id or a name, refused as ambiguous when it is one tenant's id and
another's name. A prefixed reference that is also, whole, another tenant's name (a tenant
named `id:2`) is refused as ambiguous too; `name:id:2` chooses that one.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .blocking import ActiveRun
from .deadline import guard
from .errors import (
    AmbiguousTenant,
    BackgroundJobExit,
    BackgroundJobFailed,
    BadJobArguments,
    JobDefinitionError,
    JobTimeout,
    NoTenantsTable,
    TenantViolation,
    UnknownTenant,
    suggest,
)
from .jobs import JobRegistry, JobSpec
from .runs.status import Status
from .workspace import DeferJob, Progress, Workspace

if TYPE_CHECKING:
    from .db import Database, Query, Tenant
    from .runs.record import Run
    from .runs.recorder import Recorder

#: Tenant ids are ASCII digits that fit `tenants.id`, an INTEGER column (32 bits on
#: PostgreSQL); anything else is a name.
MAX_TENANT_ID = 2**31 - 1


@dataclass(frozen=True)
class Prepared:
    """A run resolved and ready: the job, its arguments, and its tenants. `tenants` is
    None for one run in `tenant` (or in none), else a list for a fan-out over those; with
    `select`, a fan-out over the tenants the job's `tenants_filter` selects when it runs."""

    spec: JobSpec
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    tenant: Tenant | None = None
    tenants: list[Tenant] | None = None
    select: bool = False


class Runner:
    """Runs the jobs of `jobs` (replaced by `reload()`), in workspaces whose database
    `open_database(tenant_id)` opens."""

    def __init__(self, jobs: JobRegistry, open_database: Callable[[int | None], Database],
                 *, recorder: Callable[[], Recorder] | None = None,
                 defer_job: DeferJob | None = None) -> None:
        self.jobs = jobs
        self._recorder = recorder
        self._defer_job = defer_job
        self._open_database = open_database

    def workspace(self, tenant: Tenant | None = None, run: Run | None = None) -> Workspace:
        """A fresh workspace, in `tenant` or in none, of the recorded `run` if any."""
        return Workspace(tenant, self._open_database, self.run_job, run, self._defer_job)

    async def run_job(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], *,
        caller: Workspace | None = None, tenants: Iterable[Any] | None = None,
        progress: Progress | None = None,
        timeout: float | None = None,
        record: str | None = None,
    ) -> None:
        """Run job `name` now (SPEC 3); `caller` is the workspace it is called from;
        `timeout` (seconds) bounds each run instead of the job's own `timeout`; `record`
        (an origin) records the run, and each tenant's, in the runs table."""
        check_timeout(timeout)
        prepared = await self.prepare(name, args, kwargs, caller=caller, tenants=tenants)
        await self.execute(prepared, progress, timeout=timeout, record=record)

    # -- phase 1: what was asked ----------------------------------------------------------

    async def prepare(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], *,
        caller: Workspace | None = None, tenants: Iterable[Any] | None = None,
    ) -> Prepared:
        """Resolve a run; raises `UnknownBackgroundJob`, `JobLoadError`, `BadJobArguments`,
        `UnknownTenant` or `TenantViolation` for what the caller got wrong. No code of the
        job runs here (its `tenants_filter` runs with it, in `execute`)."""
        spec = self.jobs.get(name)
        check_arguments(spec, args, kwargs)
        chosen = None if tenants is None else await self.resolve_tenants(tenants)
        inherited = caller.tenant if caller is not None else None
        if inherited is not None:
            # Inside a tenant's workspace a run stays in that tenant: no fan-out from there.
            for tenant in chosen or ():
                if tenant.id != inherited.id:
                    raise TenantViolation(
                        f"tenant {inherited.name!r} may not run {name!r} for tenant "
                        f"{tenant.name!r}"
                    )
            return Prepared(spec, args, kwargs, tenant=inherited)
        return Prepared(spec, args, kwargs, tenants=chosen,
                        select=chosen is None and spec.multi_tenant)

    async def resolve_tenants(self, refs: Iterable[Any]) -> list[Tenant]:
        """Tenant rows for `refs` (rows, ids, names, `id:N` or `name:X`), each once, in the
        order given; `UnknownTenant`, or `AmbiguousTenant` for a reference that means two
        tenants (see the module's docstring)."""
        database = self._open_database(None)
        try:
            await _require_tenants_table(database, None)
            found: dict[int, Tenant] = {}
            for ref in refs:
                tenant = await _find_tenant(database, ref)
                found.setdefault(tenant.id, tenant)
            return list(found.values())
        finally:
            await database.aclose()

    # -- phase 2: running it --------------------------------------------------------------

    async def execute(
        self, prepared: Prepared, progress: Progress | None = None, *,
        timeout: float | None = None,
        record: str | None = None,
    ) -> None:
        """Run what `prepare` resolved: whatever this raises is the job's failure (or the
        environment's: a setting, the database). `timeout`: as for `run_once`, for each
        run (each tenant's, in a fan-out); `record`: as for `run_job`."""
        check_timeout(timeout)
        p = prepared
        recorder = self._recorder() if record is not None and self._recorder else None
        limit = p.spec.timeout if timeout is None else timeout
        tenant_id = p.tenant.id if p.tenant is not None else None
        async with _recording(recorder, record, p, tenant_id, None, limit) as run:
            tenants = await self.select_tenants(p.spec) if p.select else p.tenants
            if tenants is None:
                await self.run_once(p.spec, p.args, p.kwargs, p.tenant, timeout=timeout,
                                    run=run)
            else:
                await self.fan_out(p.spec, p.args, p.kwargs, tenants, progress,
                                   timeout=timeout, record=(recorder, record, run))

    async def run_once(
        self, spec: JobSpec, args: tuple[Any, ...], kwargs: dict[str, Any],
        tenant: Tenant | None, *,
        timeout: float | None = None,
        run: Run | None = None,
    ) -> None:
        """One run of `spec` in a fresh workspace (for `tenant`, or none), whose
        `current_run` is `run` (the record of a recorded run, else None). It is stopped
        `timeout` seconds after it starts (default: the job's `timeout`; None: no limit)
        with `JobTimeout`, its workspace torn down (see `deadline` for code that blocks)."""
        check_timeout(timeout)
        limit = spec.timeout if timeout is None else timeout
        workspace = self.workspace(tenant, run)
        where = f" for tenant {tenant.id} ({tenant.name})" if tenant is not None else ""
        active = ActiveRun(f"background job {spec.name!r}{where}", str(spec.path),
                           run_id=None if run is None else run.id)
        try:
            try:
                await guard(spec.cls(workspace).run(*args, **kwargs), active, limit)
            except SystemExit as exit_:
                raise BackgroundJobExit(
                    f"background job {spec.name!r} called sys.exit({exit_.code!r})"
                ) from exit_
        except BaseException as exc:  # a stop from outside (a cancel, Ctrl-C) is no failure
            if not isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
                exc.add_note(f"in background job {spec.name!r}{where}")
            raise
        finally:
            await workspace.aclose()

    async def call_on_failure(self, spec: JobSpec, tenant: Tenant | None, run: Run) -> None:
        """The job's `on_failure(run)` for `run`, a run that failed for good, in a fresh
        workspace (for `tenant`, or none) whose `current_run` is `run`, within the job's
        `timeout` as a run is. What it raises has a note naming the job."""
        workspace = self.workspace(tenant, run)
        where = f" for tenant {tenant.id} ({tenant.name})" if tenant is not None else ""
        active = ActiveRun(f"on_failure of background job {spec.name!r}{where}",
                           str(spec.path), run_id=run.id)
        try:
            try:
                await guard(spec.cls(workspace).on_failure(run), active, spec.timeout)
            except SystemExit as exit_:
                raise BackgroundJobExit(
                    f"on_failure of background job {spec.name!r} called sys.exit({exit_.code!r})"
                ) from exit_
        except Exception as exc:
            exc.add_note(f"in on_failure of background job {spec.name!r}{where} "
                         f"(run {run.id})")
            raise
        finally:
            await workspace.aclose()

    async def fan_out(
        self, spec: JobSpec, args: tuple[Any, ...], kwargs: dict[str, Any],
        tenants: list[Tenant], progress: Progress | None = None, *,
        timeout: float | None = None,
        record: tuple[Recorder | None, str | None, Run | None] = (None, None, None),
    ) -> None:
        """Run `spec` once per tenant; every tenant runs, failures are raised together.
        Only KeyboardInterrupt and cancellation stop a fan-out. Each tenant's run has its
        own clock for `timeout` (as for `run_once`); with a `record` (recorder, origin and
        the fan-out's run), each tenant's run is recorded too."""
        recorder, origin, parent = record
        prepared = Prepared(spec, args, kwargs)
        seconds = spec.timeout if timeout is None else timeout
        failures: list[Exception] = []
        if progress is not None:
            progress.start(tenants)

        async def one(tenant: Tenant) -> None:
            if progress is not None:
                progress.running(tenant)
            error: Exception | None = None
            try:
                async with _recording(recorder if parent else None, origin, prepared,
                                      tenant.id, parent, seconds) as run:
                    await self.run_once(spec, args, kwargs, tenant, timeout=timeout, run=run)
            except Exception as exc:
                error = exc
                failures.append(exc)
            if progress is not None:
                progress.done(tenant, error)

        if spec.tenant_concurrency == 1:
            for tenant in tenants:
                await one(tenant)
        else:
            limit = asyncio.Semaphore(spec.tenant_concurrency)

            async def bounded(tenant: Tenant) -> None:
                async with limit:
                    await one(tenant)

            async with asyncio.TaskGroup() as group:
                for tenant in tenants:
                    group.create_task(bounded(tenant))
        if failures:
            raise BackgroundJobFailed(
                f"background job {spec.name!r} failed for {len(failures)} of {len(tenants)} "
                "tenants",
                failures,
                total=len(tenants),
            )

    async def select_tenants(self, spec: JobSpec) -> list[Tenant]:
        """The tenants `spec`'s `tenants_filter` selects, in id order. The filter runs in a
        workspace of its own (its `self.database` and so on), torn down afterwards."""
        database = self._open_database(None)
        try:
            await _require_tenants_table(database, spec.name)
            tenants = database.tenants
            async with self.workspace() as workspace:
                query = await _tenants_filter(spec, workspace, tenants)
                model: Any = tenants.model
                return await query.order_by(model.id).all()
        finally:
            await database.aclose()


def check_timeout(timeout: object) -> None:
    """`ValueError` unless `timeout` is None or a number of seconds above 0."""
    if timeout is not None and not (
            isinstance(timeout, int | float) and not isinstance(timeout, bool)
            and 0 < timeout < float("inf")):
        raise ValueError(f"timeout={timeout!r}: it must be a number of seconds above 0, "
                         "or None")


def status_of(error: BaseException | None) -> Status:
    """The status of a run that raised `error` (None: it returned): `timed_out` for a
    `JobTimeout`, `cancelled` for a cancellation or a KeyboardInterrupt, else `failed`.
    The bot records it; the CLI reports it."""
    if error is None:
        return Status.SUCCEEDED
    if isinstance(error, JobTimeout):
        return Status.TIMED_OUT
    if isinstance(error, asyncio.CancelledError | KeyboardInterrupt):
        return Status.CANCELLED
    return Status.FAILED


@asynccontextmanager
async def _recording(recorder: Recorder | None, origin: str | None, prepared: Prepared,
                     tenant_id: int | None, parent: Run | None, timeout: float | None
                     ) -> AsyncIterator[Run | None]:
    """The record of the run the block makes (None: not recorded), ended with how the block
    ended. Recording never hides the run's own error."""
    if recorder is None or origin is None:
        yield None
        return
    run = await recorder.started(
        prepared.spec.name, prepared.args, prepared.kwargs, origin=origin,
        tenant_id=tenant_id, parent_id=parent.id if parent is not None else None,
        timeout=timeout)
    try:
        yield run
    except BaseException as exc:
        with contextlib.suppress(Exception):
            await recorder.ended(run, exc, status_of(exc))
        raise
    await recorder.ended(run, None, Status.SUCCEEDED)


def check_arguments(spec: JobSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """`BadJobArguments` unless `run(*args, **kwargs)` fits the job's signature; the
    message counts the arguments as the caller does (without `self`)."""
    why = spec.misfit(args, kwargs)
    if why is not None:
        given = f"{len(args)} positional argument{'s' if len(args) != 1 else ''}"
        if kwargs:
            given += f" and keyword argument(s) {', '.join(kwargs)}"
        raise BadJobArguments(
            f"background job {spec.name!r}: {why} (run{spec.call_signature} was given {given})"
        )


async def _tenants_filter(spec: JobSpec, workspace: Workspace, tenants: Query) -> Query:
    """What the job's `tenants_filter` returns (awaited if it is `async def`), checked to be
    a query of tenants; its exceptions carry a note naming the job."""
    try:
        query = spec.cls(workspace).tenants_filter(tenants)
        if inspect.isawaitable(query):
            query = await query
    except Exception as exc:
        exc.add_note(f"in tenants_filter of background job {spec.name!r}")
        raise
    if getattr(query, "model", None) is not tenants.model:
        raise JobDefinitionError(
            f"background job {spec.name!r}: tenants_filter must return a query of "
            f"tenants (like tenants.where(active=True)), not {type(query).__name__}"
        )
    return query


def _as_id(text: str) -> int | None:
    """`text` as a tenant id if it can be one, else None."""
    return int(text) if text.isascii() and text.isdigit() and int(text) <= MAX_TENANT_ID \
        else None


#: Why `id:x` (or an int) names no tenant when `x` cannot be an id.
NOT_AN_ID = f": a tenant id is a whole number up to {MAX_TENANT_ID}"


async def _find_tenant(database: Database, ref: Any) -> Tenant:
    """The one tenant `ref` means; `UnknownTenant` or `AmbiguousTenant`."""
    model: type[Tenant] = database.tenants.model  # type: ignore[assignment]
    if isinstance(ref, model):
        return ref
    text = str(ref)
    if isinstance(ref, int) and not isinstance(ref, bool):
        # Checked like any id: past the column's range a driver raises its own error.
        tenant_id = _as_id(text)
        return await _one_tenant(database, text, tenant_id, None,
                                 why=NOT_AN_ID if tenant_id is None else "")
    kind, _, rest = text.partition(":")
    if kind == "id" and rest:
        tenant_id = _as_id(rest)
        return await _one_tenant(database, text, tenant_id, None, whole=text,
                                 why=NOT_AN_ID if tenant_id is None else "")
    if kind == "name" and rest:
        return await _one_tenant(database, text, None, rest, whole=text)
    return await _one_tenant(database, text, _as_id(text), text)


async def _one_tenant(database: Database, ref: str, tenant_id: int | None, name: str | None,
                      *, whole: str | None = None, why: str = "") -> Tenant:
    """The tenant whose id is `tenant_id` or whose name is `name` (or, for a prefixed
    reference, whose name is the `whole` reference): one, else an error (`why` says why
    none)."""
    tenants = database.tenants
    by_id = await tenants.where(id=tenant_id).first() if tenant_id is not None else None
    by_name = await tenants.where(name=name).first() if name is not None else None
    _refuse_both(ref, (by_id, "is the id of"), (by_name, "the name of"),
                 f"choose with id:{ref} or name:{ref}")
    meant = by_id or by_name
    by_whole = await tenants.where(name=whole).first() if whole is not None else None
    _refuse_both(ref, (meant, "chooses"), (by_whole, "is the whole name of"),
                 f"choose that one with name:{ref}")
    tenant = meant or by_whole
    if tenant is None:
        names = [t.name for t in await tenants.all()]
        raise UnknownTenant(f"unknown tenant {ref!r}{why or suggest(name or ref, names)}")
    return tenant


def _refuse_both(ref: str, one: tuple[Tenant | None, str], other: tuple[Tenant | None, str],
                 advice: str) -> None:
    """`AmbiguousTenant` when `ref` reaches two different tenants, each in its own way."""
    (first, first_how), (second, second_how) = one, other
    if first is not None and second is not None and first.id != second.id:
        raise AmbiguousTenant(
            f"tenant {ref!r} is ambiguous: it {first_how} tenant {first.id} "
            f"({first.name!r}) and {second_how} tenant {second.id}; {advice}"
        )


async def _require_tenants_table(database: Database, job: str | None) -> None:
    if not await database.has_table("tenants"):
        why = f"background job {job!r} is multi-tenant but " if job else "there are no tenants: "
        raise NoTenantsTable(["tenants"], why)
