"""`DeferredRun`: the handle `defer()` returns, to follow a run the bots execute.

`wait()` reads the run's row until it has ended (polling, every 50 ms at first and at most
every half second), then resolves to None when it succeeded or raises what
`runBackgroundJob` would have: `RunFailed` for one run, `BackgroundJobFailed` holding one
`RunFailed` per tenant that did not succeed for a fan-out. Waiting stops nothing: a
cancelled `wait()`, or one past its `timeout` (`WaitTimeout`), leaves the run to the bots.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ..db.models import utcnow
from ..errors import BackgroundJobFailed, RunFailed, WaitTimeout
from .control import RunFilter
from .repository import Repository, RunRow
from .status import FINAL, Status

#: `progress(done, failed, total)` of a fan-out's tenant runs, while `wait()` waits.
WaitProgress = Callable[[int, int, int], object]

_FIRST_POLL, _MAX_POLL = 0.05, 0.5


class DeferredRun:
    """A run queued for the bots: `id`, `job`, `await status()`, `await wait()`,
    `await cancel()`."""

    def __init__(self, repository: Repository, row: RunRow, fan_out: bool) -> None:
        self._repository = repository
        self._row = row
        self.id = row.id
        self.job = row.job
        #: Whether it runs once per tenant (its tenant runs are what `wait` reports).
        self.fan_out = fan_out

    def __repr__(self) -> str:
        return f"<DeferredRun {self.id} {self.job!r} {self._row.status}>"

    async def status(self) -> str:
        """The run's status now (`queued`, `running`, `succeeded`, ...): its latest try's."""
        if self._row.status in FINAL:
            self._row = await self._repository.last_try(self._row)
            return self._row.status
        row = await self._repository.get(self._row.id)
        if row is None:
            raise RunFailed(f"run {self.id} of {self.job!r} is no longer in the history",
                            run_id=self.id, status="deleted", error=None, traceback=None)
        self._row = await self._repository.last_try(row) if row.status in FINAL else row
        return self._row.status

    async def wait(self, timeout: float | None = None,
                   progress: WaitProgress | None = None) -> None:
        """Until the run has ended: None if it succeeded, else `RunFailed` (a fan-out:
        `BackgroundJobFailed` of one `RunFailed` per tenant that did not succeed).
        `WaitTimeout` (a `TimeoutError`) after `timeout` seconds: the run goes on."""
        limit = asyncio.timeout(timeout)
        try:
            async with limit:
                await self._until_ended(progress)
        except TimeoutError:
            if timeout is None or not limit.expired():  # not ours: from what wait() called
                raise
            raise WaitTimeout(f"run {self.id} ({self.job!r}) did not end within {timeout:g} s; "
                              "it goes on: wait again, or cancel it",
                              run_id=self.id, timeout=timeout) from None
        if progress is not None and self.fan_out:
            await self._progress(progress)
        row = self._row
        if row.status in (Status.SUCCEEDED, Status.SKIPPED):
            return
        tenants = await self._repository.tenant_runs(row.id) if self.fan_out else []
        if not tenants:
            raise run_failed(row)
        failures = [run_failed(run) for run in tenants
                    if run.status not in (Status.SUCCEEDED, Status.SKIPPED)]
        raise BackgroundJobFailed(
            f"background job {row.job!r} failed for {len(failures)} of {len(tenants)} "
            "tenants", failures, total=len(tenants))

    async def _until_ended(self, progress: WaitProgress | None) -> None:
        poll = _FIRST_POLL
        shown = -1.0
        while await self.status() not in FINAL:
            if progress is not None and self.fan_out and time.monotonic() - shown > 0.2:
                await self._progress(progress)
                shown = time.monotonic()
            await asyncio.sleep(poll)
            poll = min(_MAX_POLL, poll * 1.5)

    async def _progress(self, progress: WaitProgress) -> None:
        counts = await self._repository.count_tenant_runs(self.id)
        total = sum(counts.values())
        live = counts.get(Status.QUEUED, 0) + counts.get(Status.RUNNING, 0)
        ok = counts.get(Status.SUCCEEDED, 0) + counts.get(Status.SKIPPED, 0)
        progress(total - live, total - live - ok, total)

    async def cancel(self) -> bool:
        """Cancel the run (SPEC 9): still queued, it is `cancelled` at once; running, its
        bot cancels it within a second or two (its workspace torn down) and records it
        `cancelled`; a fan-out's tenant runs go with it. Whether there was anything to
        cancel (False: it had ended, or its cancel was asked already)."""
        done = await self._repository.cancel(RunFilter(ids=(self.id,)), utcnow())
        return done.total > 0


def run_failed(row: RunRow) -> RunFailed:
    """The `RunFailed` of a run that did not succeed."""
    where = f" for tenant {row.tenant_id}" if row.tenant_id is not None else ""
    why = f": {row.error}" if row.error else ""
    return RunFailed(
        f"background job {row.job!r}{where} {row.status} (run {row.id}, try {row.attempt})"
        f"{why}", run_id=row.id, status=row.status, error=row.error, traceback=row.traceback)
