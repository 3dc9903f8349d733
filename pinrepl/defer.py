"""Deferring: handing a run to the bots (SPEC 8). `Deferrer.defer_job` checks what was asked
as `runBackgroundJob` does (the runner's `prepare`: an unknown job, arguments that do not
fit `run()`, an unknown tenant raise the same errors, and nothing is queued), then queues
the run's row through the runs repository and returns its `DeferredRun`.

What the row holds: a job of one run is one queued row (in a tenant's workspace, that
tenant's run); a multi-tenant job is a fan-out row that the first bot to claim it expands
into its tenants; chosen tenants are expanded at once. The timeout is the call's, else the
job's own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .errors import BadJobArguments
from .runner import Runner

if TYPE_CHECKING:
    from .runs.deferred import DeferredRun
    from .runs.repository import Repository
    from .workspace import Workspace


class Deferrer:
    """Defers the jobs `runner` knows, through the repository `repository()` gives."""

    def __init__(self, runner: Runner, repository: Callable[[], Repository]) -> None:
        self._runner = runner
        self._repository = repository

    async def defer_job(
        self, name: str, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None,
        *, at: datetime | None = None, delay: float | timedelta | None = None,
        tenants: Iterable[Any] | None = None, key: str | None = None, priority: int = 0,
        timeout: float | None = None,
        caller: Workspace | None = None,
    ) -> DeferredRun:
        """Queue a run of `name` for the bots (see the module's docstring); from `caller`'s
        workspace, in its transaction (its tenant, its sandbox)."""
        from .db.models import utcnow
        from .runs.deferred import DeferredRun
        from .runs.record import Origin, check_json
        from .runs.repository import NewRun

        args, kwargs = tuple(args), dict(kwargs or {})
        prepared = await self._runner.prepare(name, args, kwargs, caller=caller,
                                              tenants=tenants)
        why = check_json(args, kwargs)
        if why is not None:
            raise BadJobArguments(f"background job {name!r}: {why}")
        now = utcnow()
        due = _due(now, at, delay)
        _check_options(key, priority, timeout)
        spec = prepared.spec
        chosen = [tenant.id for tenant in prepared.tenants] if prepared.tenants is not None \
            else None
        new = NewRun(
            spec.name, args, kwargs, Origin.DEFER,
            tenant_id=prepared.tenant.id if prepared.tenant is not None else None,
            scheduled_for=due, priority=priority, key=key,
            timeout=timeout if timeout is not None else spec.cls.timeout,
        )
        repository = self._repository()
        from .runs.migrate import check_version

        await check_version(repository.engine)
        if caller is None:
            row, _created = await repository.defer(new, chosen, now=now)
        else:  # in the caller's transaction: committed, or not, with it
            row, _created = await caller.database._run(
                lambda session: repository.defer(new, chosen, now=now, session=session),
                "background_job_runs")
        fan_out = chosen is not None or prepared.select
        return DeferredRun(repository, row, fan_out)


def _due(now: datetime, at: datetime | None, delay: float | timedelta | None) -> datetime:
    if at is not None and delay is not None:
        raise BadJobArguments("give at= or delay=, not both")
    if at is not None:
        if not isinstance(at, datetime) or at.utcoffset() is None:
            raise BadJobArguments(f"at= must be a timezone-aware datetime, not {at!r}")
        return at
    if delay is None:
        return now
    if isinstance(delay, timedelta):
        return now + delay
    if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
        raise BadJobArguments(f"delay= must be seconds (0 or more) or a timedelta, not "
                              f"{delay!r}")
    return now + timedelta(seconds=delay)


def _check_options(key: str | None, priority: int, timeout: float | None) -> None:
    if key is not None and (not isinstance(key, str) or not key or len(key) > 300):
        raise BadJobArguments(f"key= must be a text of 1 to 300 characters, not {key!r}")
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise BadJobArguments(f"priority= must be a whole number, not {priority!r}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(
            timeout, int | float) or timeout <= 0):
        raise BadJobArguments(f"timeout= must be a number of seconds above 0, not "
                              f"{timeout!r}")
