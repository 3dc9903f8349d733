"""The failure hook: a job's `on_failure(run)`, called once for each run of this bot that
failed for good (SPEC 9).

A run has failed for good when it ended `failed` or `timed_out` with no try left, or when
this bot marked it `abandoned` (its bot died) without queueing a next try. `FailureHook`
hears it from the bot's events: a run this bot ran is called for once its result is
written on time (`RunsRecorded`), so that a run a peer marked abandoned meanwhile is
called for by that peer only; an abandoned one as soon as it is marked. Each call runs
through the runner (`Runner.call_on_failure`: a fresh workspace of the run's tenant, the
job's timeout); what it raises is logged as a job's failure is, and never retried. The
bot waits for the calls under way before it exits, as for its runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace

from ..errors import PinreplError
from ..jobs import JobRegistry, JobSpec
from ..runner import Runner
from ..runs.record import Run
from ..runs.repository import RunRow
from ..runs.status import Status
from ..tracebacks import format_exception
from . import JOB_FAILURE
from .events import Event, RunEnded, RunsAbandoned, RunsRecorded

log = logging.getLogger("pinrepl.bot")

#: The statuses of a run that failed: for good when no next try is queued.
FAILED = frozenset({Status.FAILED, Status.TIMED_OUT})


class FailureHook:
    """Calls `on_failure` of the jobs `jobs()` gives, through `runner`; a subscriber of
    the bot's events."""

    def __init__(self, runner: Runner, jobs: Callable[[], JobRegistry]) -> None:
        self._runner = runner
        self._jobs = jobs
        #: Runs of this bot that failed for good, until their result is written.
        self._failed: dict[int, Run] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunEnded):
            if event.status in FAILED and event.retry_at is None and self._spec(event.run):
                traceback = format_exception(event.failure) if event.failure else None
                self._failed[event.run.id] = _record(event.run, event.status, event.error,
                                                     traceback)
        elif isinstance(event, RunsRecorded):
            for run_id in event.late:
                self._failed.pop(run_id, None)
            for run_id in event.ids:
                run = self._failed.pop(run_id, None)
                if run is not None:
                    self._call(run)
        elif isinstance(event, RunsAbandoned):
            for row in event.runs:
                if row.id not in event.retried and self._spec(row):
                    self._call(_record(row, Status.ABANDONED, row.error, None))

    @property
    def calling(self) -> int:
        """How many calls are under way."""
        return len(self._tasks)

    async def finish(self, within: float, hurry: asyncio.Event | None = None) -> None:
        """Let the calls under way end for up to `within` seconds (less once `hurry` is
        set), then cancel the others."""
        deadline = time.monotonic() + within
        while self._tasks and not (hurry is not None and hurry.is_set()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            waits = set(self._tasks)
            hurried = asyncio.ensure_future(hurry.wait()) if hurry is not None else None
            try:
                await asyncio.wait(waits | ({hurried} if hurried else set()), timeout=left,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                if hurried is not None:
                    hurried.cancel()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spec(self, row: RunRow) -> JobSpec | None:
        """The job of `row` if it has an `on_failure` (None: none, or it no longer loads)."""
        try:
            spec = self._jobs().get(row.job)
        except PinreplError:
            return None
        return spec if spec.has_on_failure else None

    def _call(self, run: Run) -> None:
        task = asyncio.create_task(self._on_failure(run))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_failure(self, run: Run) -> None:
        spec = self._spec_of(run)
        if spec is None:
            return
        what = f"{run.job} run {run.id}" + (
            f" tenant {run.tenant_id}" if run.tenant_id is not None else "")
        extra = {"event": "on_failure_failed", "job": run.job, "tenant": run.tenant_id,
                 "run_id": run.id, "status": run.status}
        tenant = None
        if run.tenant_id is not None:
            try:
                (tenant,) = await self._runner.resolve_tenants([f"id:{run.tenant_id}"])
            except Exception as exc:  # the tenant is gone, the database is away...
                log.error("on_failure of %s not called: its tenant could not be read: %s",
                          what, exc, extra=extra)
                return
        try:
            await self._runner.call_on_failure(spec, tenant, run)
        except asyncio.CancelledError:
            log.warning("on_failure of %s cancelled: the bot stopped before it ended", what,
                        extra={**extra, "event": "on_failure_cancelled"})
            raise
        except Exception as exc:
            log.error("on_failure of %s failed: %s: %s", what, type(exc).__name__, exc,
                      exc_info=exc, extra={**extra, JOB_FAILURE: True})

    def _spec_of(self, run: Run) -> JobSpec | None:
        with contextlib.suppress(PinreplError):
            return self._jobs().get(run.job)
        return None


def _record(row: RunRow, status: str, error: str | None, traceback: str | None) -> Run:
    """The record `on_failure` gets: the run's, with how it ended."""
    return replace(row.as_run(), status=str(status), error=error, traceback=traceback)

