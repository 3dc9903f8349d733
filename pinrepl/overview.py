"""The jobs overview: what `list-background-jobs`, the REPL's `jobs` (and a later web
dashboard) show about an app's jobs, computed once, as plain data, for each to render.

For each job: its schedules (cron, own timezone, arguments, next slot), its next slot, its
last run (the bot's latest slot of the job, as one tenant or no tenant sees the history),
whether it is multi-tenant; for the app: the load errors, and why the last runs are unknown
when they are (the database unreachable, a runs table it cannot read, no answer in time).

Times are aware datetimes, compared as instants: two datetimes of one zone compare by wall
clock, which is wrong inside the hour the clocks go back (see `schedules`). `now` is a
parameter, so the overview of any moment can be computed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy.exc import DBAPIError

from .db import Database, Engine
from .db.engine import first_line
from .errors import InvalidSchedule, MissingTable, NoDatabase, PinreplError, TablesOutdated
from .jobs import JobRegistry, JobSpec, shown_path
from .runs.control import Pause
from .runs.history import LastRun, last_runs
from .runs.migrate import check_version
from .runs.repository import Repository
from .runs.tables import BUILT_IN
from .schedules import Schedule

if TYPE_CHECKING:
    from .app import App
    from .db import Tenant

#: How long reading the last runs waits for the database before it says it did not answer.
READ_TIMEOUT = 5.0


@dataclass(frozen=True)
class ScheduleRow:
    """One schedule of a job, and its next slot (None: it never fires again)."""

    cron: str
    timezone: ZoneInfo
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    next: datetime | None

    @classmethod
    def of(cls, schedule: Schedule, now: datetime) -> ScheduleRow:
        try:
            upcoming: datetime | None = schedule.next_after(now)
        except InvalidSchedule:  # every wall-clock time it names falls in a gap, for ever
            upcoming = None
        return cls(schedule.cron, schedule.timezone, schedule.args, schedule.kwargs, upcoming)

    def as_json(self, timezone: ZoneInfo) -> dict[str, Any]:
        return {"cron": self.cron, "timezone": self.timezone.key, "args": list(self.args),
                "kwargs": dict(self.kwargs), "next": _iso(self.next, timezone)}


@dataclass(frozen=True)
class JobRow:
    """One job: its schedules, soonest next slot first, and its next slot (the earliest
    instant of theirs), its last run (None: never run, or unknown), its tenancy."""

    name: str
    file: str
    schedules: tuple[ScheduleRow, ...]
    last_run: LastRun | None
    multi_tenant: bool
    #: The pauses in force (of the whole job: `tenant_id` None; or of tenants' runs of it).
    paused: tuple[Pause, ...] = ()

    @property
    def next(self) -> datetime | None:
        return self.schedules[0].next if self.schedules else None

    def as_json(self, timezone: ZoneInfo) -> dict[str, Any]:
        return {
            "name": self.name, "file": self.file,
            "schedules": [schedule.as_json(timezone) for schedule in self.schedules],
            "next_run": _iso(self.next, timezone),
            "last_run": self.last_run.as_json() if self.last_run else None,
            "multi_tenant": self.multi_tenant,
            "paused": [{"tenant_id": p.tenant_id, "reason": p.reason,
                        "since": _iso(p.since, timezone)} for p in self.paused],
        }


@dataclass(frozen=True)
class LoadError:
    """A part of the app that did not load: a job file, or the models file."""

    file: str
    error: str
    #: The line a user reads: the file and what is wrong.
    line: str


@dataclass(frozen=True)
class History:
    """The last run of each job, as one tenant (or no tenant) sees them. `unknown` says
    why they could not be read; `note` why there are none when that is worth saying (no
    database yet: no bot has run)."""

    last_runs: Mapping[str, LastRun]
    tenant: str | None = None
    unknown: str | None = None
    note: str | None = None
    pauses: Mapping[str, tuple[Pause, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Overview:
    """The jobs of an app at one moment (`now`), times shown in `timezone`. `history` is
    None when the last runs were not asked for."""

    jobs_dir: Path
    timezone: ZoneInfo
    now: datetime
    jobs: tuple[JobRow, ...]
    load_errors: tuple[LoadError, ...] = ()
    history: History | None = field(default=None)

    @property
    def unknown(self) -> str | None:
        """Why the last runs are unknown, if they are."""
        return None if self.history is None else self.history.unknown

    def as_json(self) -> dict[str, Any]:
        return {
            "timezone": self.timezone.key,
            "jobs": [job.as_json(self.timezone) for job in self.jobs],
            "errors": [{"file": e.file, "error": e.error} for e in self.load_errors],
            "last_runs_unknown": self.unknown,
        }


def jobs_overview(registry: JobRegistry, timezone: ZoneInfo, history: History | None,
                  now: datetime | None = None, *, app_root: Path | None = None,
                  load_errors: Iterable[LoadError] = ()) -> Overview:
    """The overview of `registry` at `now` (default: now), last runs from `history`; job
    files shown relative to `app_root` if given."""
    now = now or datetime.now(UTC)
    runs = history.last_runs if history is not None else {}
    pauses = history.pauses if history is not None else {}
    jobs = tuple(
        JobRow(spec.name, shown_path(spec.path, app_root), _schedules(spec, now),
               runs.get(spec.name), spec.multi_tenant, pauses.get(spec.name, ()))
        for spec in registry
    )
    errors = [LoadError(e.path, e.message, str(e)) for e in registry.errors]
    return Overview(registry.root, timezone, now, jobs, (*errors, *load_errors), history)


async def app_overview(app: App, now: datetime | None = None) -> Overview:
    """The overview `list-background-jobs` shows: every job, the load errors of the job
    files and of the models file, and the last runs (of every tenant)."""
    registry = app.jobs
    models_error = _models_error(app)
    history = await read_history(app)
    return jobs_overview(registry, app.settings.timezone, history, now,
                         app_root=app.settings.root,
                         load_errors=[models_error] if models_error else [])


async def read_history(app: App, tenant: Tenant | None = None) -> History:
    """The last runs of the app's jobs, read through a database facade of their own (a
    session's, and any work pending on it, are left alone) scoped to `tenant`; or why they
    could not be read."""
    whose = None if tenant is None else str(tenant.name)
    try:
        names = app.jobs.names
        engine, own = _history_engine(app)
    except PinreplError as exc:
        return History({}, whose, unknown=str(exc))
    database = Database(engine, None if tenant is None else tenant.id)
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            tables = True
            try:
                await check_version(engine)  # `TablesOutdated` is raised: one line, exit 2
            except MissingTable:  # no runs yet: `last_runs` says none
                tables = False
            found = await last_runs(database, names)
            paused: dict[str, tuple[Pause, ...]] = {}
            for pause in await Repository(engine).pauses() if tables else []:
                paused[pause.job] = (*paused.get(pause.job, ()), pause)
            return History(found, whose, pauses=paused)
    except TablesOutdated:
        raise
    except NoDatabase as exc:  # no bot has run (a bot needs it): no history, known as such
        return History({}, whose, note=f"no runs yet: {exc}")
    except TimeoutError:
        return History({}, whose, unknown=f"the database did not answer within {READ_TIMEOUT:g} s")
    except PinreplError as exc:
        return History({}, whose, unknown=str(exc))
    except (DBAPIError, OSError) as exc:
        return History({}, whose, unknown=first_line(exc))
    finally:
        await database.aclose()
        if own:
            await engine.aclose()


def _history_engine(app: App) -> tuple[Engine, bool]:
    """The app's engine; or, when its models file does not load, an engine of pinrepl's
    own tables only (the history needs none of the app's models), to be closed after."""
    if _models_error(app) is None:
        return app.engine, False
    return Engine(app.settings.database_url, app.settings.root, BUILT_IN), True


def _models_error(app: App) -> LoadError | None:
    try:
        _ = app.models  # loaded once, the failure kept (see models_file)
    except PinreplError as exc:
        path = app.settings.models_path
        shown = shown_path(path, app.settings.root) if path else "models"
        return LoadError(shown, str(exc), str(exc))
    return None


def _schedules(spec: JobSpec, now: datetime) -> tuple[ScheduleRow, ...]:
    """The job's schedules, soonest next slot first (by instant; one that never fires
    again last); schedules with the same next slot keep their order."""
    rows = [ScheduleRow.of(schedule, now) for schedule in spec.schedules]
    return tuple(sorted(rows, key=lambda row: (row.next is None,
                                               row.next.astimezone(UTC) if row.next else now)))


def _iso(moment: datetime | None, timezone: ZoneInfo) -> str | None:
    return moment.astimezone(timezone).isoformat() if moment is not None else None
