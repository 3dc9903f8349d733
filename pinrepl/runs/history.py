"""The run history read back: each job's last run, the runs newest first, the jobs
that have runs (SPEC 7).

They read through a workspace's `database` facade, so they commit, take their turn in a
sandbox, say a database error about the environment (a runs table that lacks a column) as
its one line and, in a tenant's workspace, see that tenant's runs only. `list-background-jobs`,
`list-background-job-runs` and the REPL's `jobs` listing use them.

Reading the last runs costs the same however long the history is: each job's latest slot is
found at the end of the (job, slot) index, and that slot's statuses are counted by the
database, not loaded row by row.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Executable, Select, exists, func, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from ..db.facade import Database, Query
from ..db.models import Tenant
from ..db.scope import FACADE, tenant_filter
from ..errors import MissingTable
from .record import arguments
from .status import slot_status
from .tables import BackgroundJobRun

if TYPE_CHECKING:
    from .repository import RunRow

TABLE = BackgroundJobRun.__tablename__
#: SQLite takes at most 500 selects in one UNION.
_JOBS_PER_STATEMENT = 100
FIELDS = ("id", "job", "tenant_id", "args", "scheduled_for", "status", "bot", "started_at",
          "finished_at", "error", "origin", "attempt", "parent_id", "priority", "key",
          "created_at", "timeout", "not_before", "traceback", "retry_of", "cancel_requested_at")


@dataclass(frozen=True)
class LastRun:
    """A job's latest slot: its status (of all its runs: see `status.slot_status`), when
    it was, when its last run ended, and how many runs it had by status."""

    job: str
    scheduled_for: datetime
    status: str
    finished_at: datetime | None
    counts: dict[str, int]

    @property
    def runs(self) -> int:
        return sum(self.counts.values())

    def shown_status(self) -> str:
        """`failed`, or `failed (2 of 160)` for a slot of several runs."""
        if self.runs == 1:
            return self.status
        return f"{self.status} ({self.counts.get(self.status, 0)} of {self.runs})"

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.status, "scheduled_for": self.scheduled_for.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "runs": self.runs, "counts": self.counts,
        }


async def last_runs(database: Database, jobs: Iterable[str] | None = None
                    ) -> dict[str, LastRun]:
    """The last run of each of `jobs` that has one (default: every job in the history), by
    job name; {} when the database has no runs table."""
    if not await database.has_table(TABLE):
        return {}
    names = sorted(set(jobs) if jobs is not None else await job_names(database))
    if not names:
        return {}
    rows: list[Any] = []
    for start in range(0, len(names), _JOBS_PER_STATEMENT):
        rows += await _rows(database, _latest_slots(
            tuple(names[start:start + _JOBS_PER_STATEMENT]), database.tenant_id), TABLE)
    by_job: dict[str, list[Any]] = {}
    for row in rows:
        by_job.setdefault(row[0], []).append(row)
    found: dict[str, LastRun] = {}
    for job, statuses in by_job.items():
        counts = {status: count for _job, _slot, status, count, _ended in statuses}
        ended = [last for *_, last in statuses if last is not None]
        found[job] = LastRun(job, statuses[0][1], slot_status(counts),
                             max(ended) if ended else None, dict(sorted(counts.items())))
    return found


@functools.lru_cache(maxsize=64)
def _latest_slots(jobs: tuple[str, ...], tenant_id: int | None) -> Executable:
    """The statement of `_latest_slot` for each of `jobs`, filtered by the facade; built
    once per jobs and tenant (statements are immutable): building it was half the time of a
    jobs page, which the dashboard serves every 2 s."""
    parts = [_latest_slot(job, tenant_id) for job in jobs]
    statement = parts[0] if len(parts) == 1 else union_all(*parts)
    return statement.execution_options(**FACADE)


def _latest_slot(job: str, tenant_id: int | None) -> Select:
    """The statuses of the latest slot of `job`, counted (and when its last run ended); a
    fan-out's row is left out once it has tenant runs, which are counted instead, and a try
    once it was retried (a slot counts the last try of each run).

    Each job is a statement of its own: its latest slot is the end of its part of the
    (job, scheduled_for) index, and that slot's rows are found by the index too, so the
    cost does not grow with the slots before it (a join of all jobs' latest slots lets
    PostgreSQL misjudge its size and plan a parallel scan)."""
    run = BackgroundJobRun
    scope = tenant_filter(run, tenant_id)
    latest = select(func.max(run.scheduled_for)).where(run.job == job, *scope)
    tenant_run = aliased(BackgroundJobRun)
    expanded = exists().where(tenant_run.parent_id == run.id)  # its tenants speak for it
    later = aliased(BackgroundJobRun)
    retried = exists().where(  # a later try speaks for it (found by the retries' index)
        later.retry_of == func.coalesce(run.retry_of, run.id), later.attempt > run.attempt)
    return (
        select(run.job, run.scheduled_for, run.status, func.count(), func.max(run.finished_at))
        .where(run.job == job, run.scheduled_for == latest.scalar_subquery(), ~expanded,
               ~retried, *scope)
        .group_by(run.job, run.scheduled_for, run.status)
    )


async def tenant_names(database: Database, ids: Iterable[int]) -> dict[int, str]:
    """The names of the tenants of `ids` that exist (the history outlives a deleted
    tenant); none without a tenants table."""
    wanted = sorted(set(ids))
    if not wanted or not await database.has_table(Tenant.__tablename__):
        return {}
    statement = select(Tenant.id, Tenant.name).where(Tenant.id.in_(wanted))
    return {id_: name for id_, name in await _rows(database, statement, Tenant.__tablename__)}


async def job_names(database: Database) -> set[str]:
    """The jobs that have runs in the history (none when there is no runs table)."""
    if not await database.has_table(TABLE):
        return set()
    statement = select(BackgroundJobRun.job).distinct()
    return {job for (job,) in await _rows(database, statement, TABLE)}


async def _rows(database: Database, statement: Any, table: str) -> list[Any]:
    """The rows of `statement` on `table`, read as the facade's own calls are (`_run`,
    this package's): committed, in their turn in a sandbox, and a database error about the
    environment (a missing column, a lock timeout) raised as its one-line error."""

    async def read(session: AsyncSession) -> list[Any]:
        return list((await session.execute(statement)).all())

    return await database._run(read, table)


async def list_runs(database: Database, job: str | None = None, status: str | None = None,
                    limit: int = 50) -> list[BackgroundJobRun]:
    """The runs, newest slot first, of `job` and with `status` if given.
    `MissingTable` when the database has no runs table."""
    if not await database.has_table(TABLE):
        raise MissingTable([TABLE])
    query: Query = database.background_job_runs
    if job is not None:
        query = query.where(job=job)
    if status is not None:
        query = query.where(status=status)
    return await query.order_by("-scheduled_for", "-id").limit(limit).all()


def run_as_json(run: BackgroundJobRun | RunRow) -> dict[str, Any]:
    """A run's fields (of its model or its `RunRow`), times as ISO 8601 (UTC), `args` as
    the object it holds."""
    values = {name: getattr(run, name) for name in FIELDS}
    values["args"] = arguments(run.args)
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}
