"""The workspace: the fresh context one run of a job gets, and its teardown.

A workspace is handed what it needs: its tenant, a way to open its database, a way to
run further jobs (the runner's) and, for a recorded run, its record (`current_run`). It
is cheap to make: its database is opened on first use, so a run that never touches the
database opens no session. `aclose()` closes whatever was
opened (the session goes back to the pool) and is called in a `finally` by every run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from .db import Database, Tenant
    from .runs.deferred import DeferredRun
    from .runs.record import Run


class Progress(Protocol):
    """What a caller may watch of a fan-out (the CLI draws a progress bar with it)."""

    def start(self, tenants: list[Tenant]) -> None:
        """The fan-out will run these tenants."""

    def running(self, tenant: Tenant) -> None:
        """`tenant`'s run starts now."""

    def done(self, tenant: Tenant, error: BaseException | None) -> None:
        """`tenant`'s run ended, with `error` if it failed."""


class RunJob(Protocol):
    """How a workspace runs further jobs (the runner's `run_job`)."""

    async def __call__(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], *,
        caller: Workspace | None = None, tenants: Iterable[Any] | None = None,
        progress: Progress | None = None,
        timeout: float | None = None,
        record: str | None = None,
    ) -> None: ...


class DeferJob(Protocol):
    """How a workspace queues runs for the bots (the app's deferrer), in its own session."""

    async def __call__(
        self, name: str, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None,
        *, at: datetime | None = None, delay: float | timedelta | None = None,
        tenants: Iterable[Any] | None = None, key: str | None = None, priority: int = 0,
        timeout: float | None = None,
        caller: Workspace | None = None,
    ) -> DeferredRun: ...


class Workspace:
    """Services of one context: `database`, `run_background_job`, `initial_params`,
    `defer` (queue a run for the bots, in this workspace's transaction), `tenant` (a tenant
    row or None), `current_run` (the run's record, None for a run that is not recorded or
    a workspace that is no run's) and `workspace` (itself)."""

    __slots__ = ("_database", "_defer_job", "_open_database", "_run_job", "current_run",
                 "initial_params", "tenant")

    def __init__(
        self, tenant: Tenant | None, open_database: Callable[[int | None], Database],
        run_job: RunJob, current_run: Run | None = None, defer_job: DeferJob | None = None,
    ) -> None:
        self.tenant = tenant
        self.current_run = current_run
        self.initial_params: dict[str, Any] = {
            "_headers": {} if tenant is None else {"x-tenant-id": tenant.id}
        }
        self._open_database = open_database
        self._run_job = run_job
        self._defer_job = defer_job
        self._database: Database | None = None

    @property
    def workspace(self) -> Workspace:
        return self

    @property
    def tenant_id(self) -> int | None:
        return None if self.tenant is None else self.tenant.id

    @property
    def database(self) -> Database:
        if self._database is None:
            self._database = self._open_database(self.tenant_id)
        return self._database

    async def run_background_job(self, name: str, /, *args: Any, **kwargs: Any) -> None:
        """Run job `name` in a fresh workspace of its own; this one stays untouched.
        Inside a tenant's workspace the run stays in that tenant."""
        await self._run_job(name, args, kwargs, caller=self)

    runBackgroundJob = run_background_job  # the contract's alias

    async def run_job(
        self,
        name: str,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        tenants: Iterable[Any] | None = None,
        progress: Progress | None = None,
        timeout: float | None = None,
        record: str | None = None,
    ) -> None:
        """`run_background_job` with explicit options: `tenants` (ids, names or rows) runs
        the job for exactly those tenants, multi-tenant or not (inside a tenant's workspace
        only that tenant may be chosen); `progress` is told when a fan-out starts and as
        each tenant starts and finishes; `timeout` (seconds) bounds each run, each tenant's
        on its own clock, instead of the job's `timeout`: past it the run is stopped with
        `JobTimeout`; `record` (an origin: `cli`, `repl`, `app`) records the run in
        `background_job_runs`."""
        await self._run_job(
            name, tuple(args), dict(kwargs or {}), caller=self, tenants=tenants,
            progress=progress, timeout=timeout, record=record,
        )

    async def defer(self, name: str, /, *args: Any, **kwargs: Any) -> DeferredRun:
        """Queue a run of job `name` for the bots, in this workspace's transaction: inside
        `async with database.transaction():` it exists only if that commits (SPEC 8)."""
        return await self.defer_job(name, args, kwargs)

    async def defer_job(
        self, name: str, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> DeferredRun:
        """`defer` with explicit options (`at`, `delay`, `tenants`, `key`, `priority`,
        `timeout`: see `App.defer_job`)."""
        if self._defer_job is None:
            raise RuntimeError("this workspace cannot defer runs (it has no app)")
        return await self._defer_job(name, args, kwargs, caller=self, **options)

    async def aclose(self) -> None:
        database, self._database = self._database, None
        if database is not None:
            await database.aclose()

    async def __aenter__(self) -> Workspace:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        where = f" tenant={self.tenant.name!r}" if self.tenant is not None else ""
        return f"<Workspace{where}>"
