"""Deferring: handing a run to the bots (SPEC 8). `Deferrer.defer_job` checks what was asked
as `runBackgroundJob` does (the runner's `prepare`: an unknown job, arguments that do not
fit `run()`, an unknown tenant raise the same errors, and nothing is queued), then queues
the run's row through the runs repository and returns its `DeferredRun`.

What the row holds: a job of one run is one queued row (in a tenant's workspace, that
tenant's run); a multi-tenant job is a fan-out row that the first bot to claim it expands
into its tenants; chosen tenants are expanded at once. The timeout is the call's, else the
job's own. What would fail later is refused here, as `BadJobArguments` naming the argument:
a due time outside the years 1 to 9999 in UTC, a delay that is not a finite number of seconds,
a priority the `priority` column cannot hold, a timeout the run would refuse.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .errors import BadJobArguments
from .runner import Runner, check_timeout

if TYPE_CHECKING:
    from .runs.deferred import DeferredRun
    from .runs.repository import Repository
    from .workspace import Workspace


#: The priorities a run may have: what the `priority` column (a 32-bit integer on every
#: database) holds. `defer --priority` checks the same range.
PRIORITIES = range(-(2**31), 2**31)


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
    """When the run is due, in UTC: `at`, or `delay` after `now`, or `now`."""
    if at is not None and delay is not None:
        raise BadJobArguments("give at= or delay=, not both")
    if at is not None:
        if not isinstance(at, datetime) or at.utcoffset() is None:
            raise BadJobArguments(f"at= must be a timezone-aware datetime, not {at!r}")
        try:
            return at.astimezone(UTC)
        except OverflowError:
            raise BadJobArguments(f"at={at.isoformat()} is out of range: in UTC it must "
                                  "fall within the years 1 to 9999") from None
    if delay is None:
        return now
    if not isinstance(delay, timedelta) and (
            isinstance(delay, bool) or not isinstance(delay, int | float)
            or not 0 <= delay < math.inf):
        raise BadJobArguments(f"delay= must be seconds (0 or more) or a timedelta, not "
                              f"{delay!r}")
    try:
        return now + (delay if isinstance(delay, timedelta) else timedelta(seconds=delay))
    except OverflowError:
        raise BadJobArguments(f"delay={delay!r} is out of range: it must end within the "
                              "year 9999") from None


def _check_options(key: str | None, priority: int, timeout: float | None) -> None:
    if key is not None and (not isinstance(key, str) or not key or len(key) > 300):
        raise BadJobArguments(f"key= must be a text of 1 to 300 characters, not {key!r}")
    if isinstance(priority, bool) or not isinstance(priority, int) \
            or priority not in PRIORITIES:
        raise BadJobArguments(f"priority= must be a whole number from {PRIORITIES.start} to "
                              f"{PRIORITIES.stop - 1}, not {priority!r}")
    try:
        check_timeout(timeout)  # the run's own rule: what it would refuse is refused now
    except ValueError as exc:
        raise BadJobArguments(str(exc)) from None
