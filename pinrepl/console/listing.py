"""How listings are shown: the jobs overview (`overview.Overview`) and the bot's runs, as
plain aligned text (the REPL's `jobs`, and the CLI when its output is not a terminal) and
as rich tables (the CLI on a terminal). Both show the same cells, times in the app's
timezone.

A job name, a tenant and a run id are never cut: in a rich table they are as wide as their
widest cell and never wrap, and every other column (a run's arguments have one of their
own) wraps, so the table fits the console whenever those fit in it; in plain text every
column is as wide as its widest cell (which `grep` reads whole). A job's schedules take one
line each, soonest next slot first, with the timezone when it is not the app's and the
arguments the bot passes.

In the REPL the last runs are the session's tenant's (see `overview.read_history`); when
the database cannot say, the last run is `-` and a line says why. Loaded the first time
`jobs` is shown, not at startup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from ..jobs import JobRegistry, shown_path
from ..overview import READ_TIMEOUT, History, JobRow, Overview, jobs_overview, read_history
from ..runs.record import shown_args, shown_arguments
from ..runs.status import NOT_RUN
from ..schedules import shown_time

if TYPE_CHECKING:
    from rich.table import Table

    from ..runs.repository import RunRow
    from ..runs.tables import BackgroundJobRun

__all__ = ["READ_TIMEOUT", "History", "listing", "read_history"]

JOB_COLUMNS = ("name", "schedules", "next run", "last run", "multi-tenant")
RUN_COLUMNS = ("id", "job", "args", "tenant", "slot", "status", "took", "origin", "attempt",
               "parent", "bot", "error")


# -- the jobs -------------------------------------------------------------------------------


def listing(registry: JobRegistry, timezone: ZoneInfo, history: History | None,
            now: datetime | None = None) -> str:
    """The REPL's `jobs`: the overview of `registry` at `now` as text, with its load
    errors and why the last runs are unknown (the last run left out without a
    `history`)."""
    overview = jobs_overview(registry, timezone, history, now)
    return "\n".join([jobs_text(overview), *(f"  {line}" for line in problems(overview))])


def jobs_text(overview: Overview) -> str:
    """The jobs as plain aligned text, under a line saying how many and where."""
    count = f"{len(overview.jobs)} background job{'' if len(overview.jobs) == 1 else 's'}"
    lines = [f"{count} in {shown_path(overview.jobs_dir, Path.cwd())} ({_about(overview)}):"]
    if overview.jobs:
        lines += aligned([_job_columns(overview), *_all_rows(overview)])
    return "\n".join(lines)


def jobs_table(overview: Overview) -> Table:
    """The jobs as a rich table."""
    return _table(f"background jobs ({_about(overview)})", _job_columns(overview),
                  _all_rows(overview), whole=("name",))


def problems(overview: Overview) -> list[str]:
    """The lines about what the listing could not show: load errors, and why the last
    runs are unknown (or why there are none)."""
    lines = [f"load error: {error.line}" for error in overview.load_errors]
    history = overview.history
    if history is not None and history.unknown is not None:
        lines.append(f"last runs unknown: {history.unknown}")
    elif history is not None and history.note is not None:
        lines.append(history.note)
    return lines


def _about(overview: Overview) -> str:
    about = f"times in {overview.timezone.key}"
    if overview.history is not None and overview.history.tenant is not None:
        about += f"; last runs of tenant {overview.history.tenant}"
    return about


def _all_rows(overview: Overview) -> list[list[str]]:
    return [row for job in overview.jobs for row in _job_rows(job, overview)]


def _job_columns(overview: Overview) -> list[str]:
    return [c for c in JOB_COLUMNS if c != "last run" or overview.history is not None]


def _job_rows(job: JobRow, overview: Overview) -> list[list[str]]:
    """A job's rows: one per schedule, its next slot beside it (so they stay side by side
    however a table wraps them); the job's other cells on the first."""
    zone = overview.timezone
    schedules = [(
        schedule.cron
        + ("" if schedule.timezone.key == zone.key else f" ({schedule.timezone.key})")
        + shown_arguments(schedule.args, schedule.kwargs),
        shown_time(schedule.next, zone) if schedule.next else "-",
    ) for schedule in job.schedules] or [("-", "-")]
    last = job.last_run
    first = [job.name + _paused(job), *schedules[0]]
    if overview.history is not None:
        first.append("-" if last is None else
                     f"{last.shown_status()} {shown_time(last.scheduled_for, zone)}")
    first.append("yes" if job.multi_tenant else "no")
    blank = [""] * (len(first) - 3)
    return [first, *(["", cron, upcoming, *blank] for cron, upcoming in schedules[1:])]


def _paused(job: JobRow) -> str:
    """' (paused: REASON)' after a paused job's name; tenants' pauses are counted."""
    whole = [p for p in job.paused if p.tenant_id is None]
    if whole:
        return f" (paused: {whole[0].reason})" if whole[0].reason else " (paused)"
    tenants = len(job.paused)
    return f" (paused for {tenants} tenant{'s' if tenants > 1 else ''})" if tenants else ""


# -- the runs -------------------------------------------------------------------------------


def runs_rows(runs: Sequence[BackgroundJobRun | RunRow], timezone: ZoneInfo,
              tenants: Mapping[int, str]) -> list[list[str]]:
    """The cells of each run (`RUN_COLUMNS`): its arguments apart from the job (in a table
    they may wrap, the job may not), the tenant with its name when it still exists, `-`
    for how long a run took that never ran or has not ended, where it came from, its
    try, its fan-out (`-`: none) and its bot (`-`: none, or in the calling process)."""
    return [[
        str(run.id), run.job, shown_args(run.args).lstrip(), _tenant(run.tenant_id, tenants),
        run.scheduled_for.astimezone(timezone).strftime("%Y-%m-%d %H:%M:%S"), run.status,
        "-" if run.finished_at is None or run.started_at is None or run.status in NOT_RUN
        else f"{(run.finished_at - run.started_at).total_seconds():.3f} s",
        run.origin, str(run.attempt), "-" if run.parent_id is None else str(run.parent_id),
        run.bot or "-", run.error or "",
    ] for run in runs]


def runs_text(rows: list[list[str]], timezone: ZoneInfo) -> str:
    """The runs as plain aligned text, each job with its arguments (as `grep` finds them:
    nothing wraps here)."""
    title = f"background job runs (times in {timezone.key}):"
    columns = [column for column in RUN_COLUMNS if column != "args"]
    joined = [[id_, f"{job} {args}".rstrip(), *rest] for id_, job, args, *rest in rows]
    return "\n".join([title, *aligned([columns, *joined])])


def runs_table(rows: list[list[str]], timezone: ZoneInfo) -> Table:
    return _table(f"background job runs (times in {timezone.key})", list(RUN_COLUMNS), rows,
                  whole=("id", "job", "tenant"))


def _tenant(tenant_id: int | None, names: Mapping[int, str]) -> str:
    if tenant_id is None:
        return "-"
    name = names.get(tenant_id)
    return str(tenant_id) if name is None else f"{tenant_id} ({name})"


# -- text and tables ---------------------------------------------------------------------


def aligned(rows: list[list[str]]) -> list[str]:
    """Rows of cells as lines of text, each column as wide as its widest cell."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            .rstrip() for row in rows]


def _table(title: str, columns: list[str], rows: list[list[str]], whole: Sequence[str] = ()
           ) -> Table:
    """A rich table whose `whole` columns are as wide as their widest cell and never wrap,
    the others wrapping (a word longer than its column folds).

    Short of room, rich narrows the columns that may wrap, down to nothing if need be, so
    the table fits whenever the `whole` ones fit. A `whole` column must not be one of them:
    rich would narrow it too and `min_width` would widen it back after, past the console's
    width, which the terminal then wraps, splitting the names on screen. When even the
    `whole` columns do not fit, rich narrows every column and `min_width` keeps these whole:
    the table is wider than the console (printed uncropped)."""
    from rich.cells import cell_len  # rich loads only to draw
    from rich.table import Table

    table = Table(title=title)
    for index, column in enumerate(columns):
        if column in whole:
            widest = max([cell_len(column), *(cell_len(row[index]) for row in rows)])
            table.add_column(column, no_wrap=True, min_width=widest)
        else:
            table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*row)
    return table
