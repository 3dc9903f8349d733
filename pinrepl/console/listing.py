"""How the REPL shows `jobs`: a listing of each job's schedules, next slot and last run,
times in the app's timezone, as `list-background-jobs` shows them.

The last runs are read from the bot's history through a database facade of their own,
scoped to the session's tenant, so inside a tenant they are that tenant's runs. When the
database cannot say (none yet, no runs table, unreachable, no answer), the last run is `-`
and the listing says why in one line. Loaded the first time `jobs` is shown, not at startup.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy.exc import DBAPIError

from ..db.engine import first_line
from ..db.runs import LastRun, last_runs
from ..errors import PinreplError
from ..jobs import JobRegistry, JobSpec

if TYPE_CHECKING:
    from ..app import App
    from ..db import Tenant

#: How long showing `jobs` waits for the database before it shows no last runs.
READ_TIMEOUT = 5.0
TIME_FORMAT = "%Y-%m-%d %H:%M:%S %Z"


class History(NamedTuple):
    """The last run of each job, as one tenant (or no tenant) sees them; or why they are
    unknown."""

    last_runs: Mapping[str, LastRun]
    tenant: str | None = None
    unknown: str | None = None


async def read_history(app: App, tenant: Tenant | None) -> History:
    """The last runs, read through a database facade of its own (the session's, and any
    work pending on its session, are left alone) scoped to `tenant`."""
    whose = None if tenant is None else str(tenant.name)
    try:
        database = app.database(None if tenant is None else tenant.id)
    except PinreplError as exc:
        return History({}, whose, str(exc))
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            return History(await last_runs(database), whose)
    except TimeoutError:
        return History({}, whose, f"the database did not answer within {READ_TIMEOUT:g} s")
    except PinreplError as exc:
        return History({}, whose, str(exc))
    except (DBAPIError, OSError) as exc:
        return History({}, whose, first_line(exc))
    finally:
        await database.aclose()


def listing(registry: JobRegistry, timezone: ZoneInfo, history: History | None,
            now: datetime | None = None) -> str:
    """The jobs of `registry` as a table: name, schedules, next slot, last run (left out
    without a `history`), multi-tenant; then load errors, and why the last runs are
    unknown if they are."""
    now = now or datetime.now(UTC)
    count = f"{len(registry)} background job{'' if len(registry) == 1 else 's'}"
    about = f"times in {timezone.key}"
    if history is not None and history.tenant is not None:
        about += f"; last runs of tenant {history.tenant}"
    lines = [f"{count} in {_shown(registry.root)} ({about}):"]
    header = ["name", "schedules", "next run", "last run", "multi-tenant"]
    rows = [_row(spec, timezone, history, now) for spec in registry]
    if history is None:
        header.remove("last run")
    if rows:
        lines += _aligned([header, *rows])
    lines += [f"  load error: {error}" for error in registry.errors]
    if history is not None and history.unknown is not None:
        lines.append(f"  last runs unknown: {history.unknown}")
    return "\n".join(lines)


def _row(spec: JobSpec, timezone: ZoneInfo, history: History | None, now: datetime
         ) -> list[str]:
    upcoming = [schedule.next_after(now) for schedule in spec.schedules]
    cells = [
        spec.name,
        ", ".join(schedule.cron for schedule in spec.schedules) or "-",
        min(upcoming).astimezone(timezone).strftime(TIME_FORMAT) if upcoming else "-",
    ]
    if history is not None:
        last = history.last_runs.get(spec.name)
        cells.append("-" if last is None else f"{last.shown_status()} "
                     + last.scheduled_for.astimezone(timezone).strftime(TIME_FORMAT))
    cells.append("yes" if spec.multi_tenant else "no")
    return cells


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            .rstrip() for row in rows]


def _shown(path: Path) -> str:
    """A path as a user would type it: relative to the current directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
