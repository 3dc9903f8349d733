"""Recording the runs made in the calling process (SPEC 8): `run-background-job` (origin
`cli`), `runBackgroundJob` at the REPL's prompt (`repl`), and application code that asks
(`app.run_job(..., record=True)`, `app`).

A recorded run is a `running` row held by no bot from its start (peers never abandon it:
no bot's lease covers the calling process) and ends with its outcome; a fan-out is a row
whose tenants' rows point to it. A database without pinrepl's tables, or with tables of
another version, runs them unrecorded, with one warning; an app without a database (no
SQLite file yet) runs them unrecorded and says nothing.

A recorded run of a paused job (SPEC 9) still runs, the caller asked for it: one warning
line says it is paused, and why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.exc import DBAPIError

from ..db.engine import first_line
from ..db.models import utcnow
from ..errors import (
    ConfigError,
    DatabaseReadOnly,
    DatabaseUnavailable,
    MissingTable,
    NoDatabase,
    TablesOutdated,
)
from ..tracebacks import format_exception
from .record import Run
from .repository import NewRun, Repository, Result
from .status import Status
from .tables import RUNS

log = logging.getLogger("pinrepl")


class Recorder:
    """Records in-process runs through the repository `repository()` gives (made on first
    use: an app whose models file does not load runs its jobs unrecorded, its load error
    said already)."""

    def __init__(self, repository: Callable[[], Repository]) -> None:
        self._repository_of = repository
        self._repository: Repository | None = None
        self._usable: bool | None = None
        #: Why runs are not recorded, until it has been said (once, after a run ended).
        self._unsaid: str | None = None

    async def started(self, job: str, args: tuple[Any, ...], kwargs: dict[str, Any], *,
                      origin: str, tenant_id: int | None = None,
                      parent_id: int | None = None, timeout: float | None = None
                      ) -> Run | None:
        """The record of a run that starts now (None: not recorded)."""
        if not await self._can_record():
            return None
        new = NewRun(job, args, kwargs, origin, tenant_id=tenant_id, parent_id=parent_id,
                     timeout=timeout, status=Status.RUNNING)
        assert self._repository is not None
        try:
            row, _created = await self._repository.defer(new, notify=False)
        except DBAPIError as exc:
            explained = await self._repository.engine.explain(exc, [RUNS.name])
            if not isinstance(explained, DatabaseReadOnly):
                raise explained or exc from None
            self._unsaid, self._usable = str(explained), False  # a read-only replica, say
            return None
        if parent_id is None:
            await self._note_paused(job, tenant_id)
        return row.as_run()

    async def _note_paused(self, job: str, tenant_id: int | None) -> None:
        """Say, in one line, that `job` (for `tenant_id`, or any of its tenants for a
        fan-out) is paused, when it is: it runs anyway."""
        assert self._repository is not None
        pauses = [p for p in await self._repository.pauses(job)
                  if p.tenant_id is None or tenant_id is None or p.tenant_id == tenant_id]
        if not pauses:
            return
        whole = next((p for p in pauses if p.tenant_id is None), None)
        shown = pauses if whole is None else [whole]
        reasons = sorted({p.reason for p in shown if p.reason})
        why = f" ({'; '.join(reasons)})" if reasons else ""
        where = "" if whole is not None else " for " + (
            "tenant " if len(shown) == 1 else "tenants ") + ", ".join(
            str(p.tenant_id) for p in shown)
        log.warning("background job %r is paused%s%s: it runs anyway, as asked (pinrepl "
                    "resume-job --name %s lifts the pause)", job, where, why, job)

    async def ended(self, run: Run | None, error: BaseException | None, status: str) -> None:
        """Record how `run` ended (`status`; `error` for a run that did not succeed). For a
        run that could not be recorded, say why, once: after it ran, so that a run stopped
        by the database itself (no tenants table, say) ends with that one line alone."""
        if run is None or self._repository is None:
            if self._unsaid is not None and not _the_databases(error):
                log.warning("runs are not recorded: %s", self._unsaid)
                self._unsaid = None
            return
        now: datetime = utcnow()
        try:
            await self._repository.finish([Result(
                run.id, status, now,
                f"{type(error).__name__}: {error}" if error is not None else None,
                format_exception(error) if error is not None else None,
                parent_id=run.parent_id,
            )], now)
        except DBAPIError as exc:  # the run itself is over: its outcome stands
            log.warning("could not record how run %d ended (%s): %s", run.id, status,
                        first_line(exc))

    async def _can_record(self) -> bool:
        if self._usable is None:
            from .migrate import check_version

            try:
                self._repository = self._repository_of()
                await check_version(self._repository.engine)
                self._usable = True
            except ConfigError:  # the models file does not load: said when it was loaded
                self._usable = False
            except NoDatabase:  # an app without a database yet: nothing to record in
                self._usable = False
            except (MissingTable, TablesOutdated) as exc:
                self._unsaid = str(exc)
                self._usable = False
        return self._usable


def _the_databases(error: BaseException | None) -> bool:
    """Whether `error` is the database's own (for a fan-out: every tenant's is)."""
    if isinstance(error, BaseExceptionGroup):
        return all(_the_databases(each) for each in error.exceptions)
    return isinstance(error, DatabaseUnavailable)
