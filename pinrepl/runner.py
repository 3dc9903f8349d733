"""runBackgroundJob: one run in a fresh workspace, or a fan-out with one per tenant.

Every run gets its own `Workspace`, torn down in a `finally` whatever happens. A failing
run's exception reaches the caller with a note naming the job (and tenant). A fan-out runs
every tenant even when some fail, then raises `BackgroundJobFailed` holding the failures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from .errors import BackgroundJobFailed, BadJobArguments, TenantViolation
from .tenancy import resolve_tenants, select_tenants
from .workspace import Workspace

if TYPE_CHECKING:
    from .app import App
    from .jobs import JobSpec



class Progress(Protocol):
    """What a caller may watch of a fan-out (the CLI draws a progress bar with it)."""

    def start(self, tenants: list[Any]) -> None: ...

    def done(self, tenant: Any, error: BaseException | None) -> None: ...


async def run_job(
    app: App,
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    caller: Workspace | None = None,
    tenants: Iterable[Any] | None = None,
    progress: Progress | None = None,
) -> None:
    """Run job `name`; see `App.run_job` for the options."""
    spec = app.jobs.get(name)
    inherited = caller.tenant if caller is not None else None
    if inherited is not None:
        # Inside a tenant's workspace a run stays in that tenant: no fan-out from there.
        if tenants is not None:
            for tenant in await resolve_tenants(app, tenants):
                if tenant.id != inherited.id:
                    raise TenantViolation(
                        f"tenant {inherited.name!r} may not run {name!r} for tenant "
                        f"{tenant.name!r}"
                    )
        await run_once(app, spec, args, kwargs, inherited)
        return
    if tenants is not None:
        chosen = await resolve_tenants(app, tenants)
    elif spec.multi_tenant:
        chosen = await select_tenants(app, spec)
    else:
        await run_once(app, spec, args, kwargs, None)
        return
    await fan_out(app, spec, args, kwargs, chosen, progress)


async def run_once(
    app: App, spec: JobSpec, args: tuple[Any, ...], kwargs: dict[str, Any], tenant: Any
) -> None:
    """One run of `spec` in a fresh workspace (for `tenant`, or none)."""
    workspace = Workspace(app, tenant)
    try:
        job = spec.cls(workspace)
        try:
            running = job.run(*args, **kwargs)
        except TypeError as exc:  # an `async def` only binds its arguments when called
            raise BadJobArguments(f"background job {spec.name!r}: {exc}") from None
        try:
            await running
        except Exception as exc:
            where = f" for tenant {tenant.id} ({tenant.name})" if tenant is not None else ""
            exc.add_note(f"in background job {spec.name!r}{where}")
            raise
    finally:
        await workspace.aclose()


async def fan_out(
    app: App,
    spec: JobSpec,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    tenants: list[Any],
    progress: Progress | None = None,
) -> None:
    """Run `spec` once per tenant; every tenant runs, failures are raised together."""
    failures: list[Exception] = []
    if progress is not None:
        progress.start(tenants)

    async def one(tenant: Any) -> None:
        error: Exception | None = None
        try:
            await run_once(app, spec, args, kwargs, tenant)
        except Exception as exc:
            error = exc
            failures.append(exc)
        if progress is not None:
            progress.done(tenant, error)

    # A sandbox is one connection: its savepoints cannot interleave, so no concurrency.
    concurrency = 1 if app.sandboxed else spec.tenant_concurrency
    if concurrency == 1:
        for tenant in tenants:
            await one(tenant)
    else:
        limit = asyncio.Semaphore(concurrency)

        async def bounded(tenant: Any) -> None:
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
