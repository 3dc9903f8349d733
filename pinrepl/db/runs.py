"""The bot's run history read back: each job's last run, the runs newest first, the jobs
that have runs (SPEC 7).

They read through a workspace's `database` facade, so they commit, take their turn in a
sandbox and, in a tenant's workspace, see that tenant's runs only. `list-background-jobs`,
`list-background-job-runs` and the REPL's `jobs` listing use them.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import aliased

from ..errors import MissingTable
from ..statuses import slot_status
from .facade import Database, Query
from .models import BackgroundJobRun

TABLE = BackgroundJobRun.__tablename__
FIELDS = ("id", "job", "tenant_id", "args", "scheduled_for", "status", "bot", "started_at",
          "finished_at", "error")


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


async def last_runs(database: Database) -> dict[str, LastRun]:
    """Each job's last run, by job name ({} when the database has no runs table)."""
    if not await database.has_table(TABLE):
        return {}
    runs = database.background_job_runs
    model = BackgroundJobRun
    other = aliased(BackgroundJobRun)
    latest = select(func.max(other.scheduled_for)).where(other.job == model.job)
    rows = await runs.where(model.scheduled_for == latest.scalar_subquery()).all()
    by_job: dict[str, list[BackgroundJobRun]] = {}
    for row in rows:
        by_job.setdefault(row.job, []).append(row)
    found: dict[str, LastRun] = {}
    for job, slot_rows in by_job.items():
        ended = [r.finished_at for r in slot_rows if r.finished_at is not None]
        found[job] = LastRun(
            job, slot_rows[0].scheduled_for, slot_status(r.status for r in slot_rows),
            max(ended) if ended else None, dict(Counter(r.status for r in slot_rows)),
        )
    return found


async def job_names(database: Database) -> set[str]:
    """The jobs that have runs in the history (none when there is no runs table)."""
    if not await database.has_table(TABLE):
        return set()
    statement = select(BackgroundJobRun.job).distinct()
    async with database.transaction():  # commits, and takes its turn in a sandbox
        return set(await database.session.scalars(statement))


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


def arguments(args: str) -> Any:
    """What a run's `args` column holds: {"args": [...], "kwargs": {...}} (the text itself
    if it is not JSON)."""
    try:
        return json.loads(args)
    except ValueError:
        return args


def shown_args(args: str) -> str:
    """' ["a"] {"b": 1}' for a run's `args` column, '' when the schedule has none."""
    values = arguments(args)
    try:
        positional, keywords = values["args"], values["kwargs"]
    except (TypeError, KeyError):
        return f" {args}"
    shown = [json.dumps(positional)] if positional else []
    shown += [json.dumps(keywords)] if keywords else []
    return "".join(f" {part}" for part in shown)


def run_as_json(run: BackgroundJobRun) -> dict[str, Any]:
    """A run's fields, times as ISO 8601 (UTC), `args` as the object it holds."""
    values = {name: getattr(run, name) for name in FIELDS}
    values["args"] = arguments(run.args)
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}
