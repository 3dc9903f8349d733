"""The version of pinrepl's own tables (`tables`), and their upgrade in place (SPEC 8).

The tables are versioned by Alembic with a version table of pinrepl's own
(`pinrepl_alembic_version`) and the revisions shipped in `migrations/`: an app's own tables
and its own Alembic setup (`alembic_version`) are never read or written. `upgrade` is
`init-database`'s: it creates the tables, or brings them to this pinrepl's revision keeping
every row; a database of pinrepl 0.1.0 (the tables, no version table) is stamped `0001`
first. `check_version` is what the bots, `defer` and the listings ask before using the
tables: one SELECT, once per engine.

Safe while bots are up: each revision is one short transaction (PostgreSQL waits at most
the engine's lock timeout for the table, SQLite takes its write lock at once), so a bot
sees the tables before or after a revision, never halfway; a bot of another version then
stops with `TablesOutdated` and must be restarted with this pinrepl.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import column, inspect, select, table
from sqlalchemy.exc import DBAPIError

from ..db.engine import IMMEDIATE, Engine
from ..errors import MissingTable, TablesOutdated
from .tables import BOTS, PAUSES, RUNS

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection

#: The version table of pinrepl's own tables, beside any `alembic_version` of the app's.
VERSION_TABLE = "pinrepl_alembic_version"
#: Every revision in `migrations/versions`, oldest first (a test checks them against it):
#: listed here so that `check_version` needs no Alembic.
REVISIONS = ("0001", "0002", "0003", "0004")
HEAD = REVISIONS[-1]
SCRIPTS = Path(__file__).with_name("migrations")

_VERSION = table(VERSION_TABLE, column("version_num"))
#: The engines whose tables were found at `HEAD` (or brought there).
_CURRENT: weakref.WeakSet[Engine] = weakref.WeakSet()


async def upgrade(engine: Engine, echo: Callable[[str], Any]) -> None:
    """Create pinrepl's tables, or upgrade them to `HEAD` in place; say which in one line."""
    await engine.check(create=True)
    # SQLite: the write lock at once, for a migration reads the tables before it alters them.
    source = engine.engine.execution_options(**{IMMEDIATE: True}) if engine.is_sqlite \
        else engine.engine
    try:
        async with source.connect() as conn:
            echo(await conn.run_sync(_upgrade))
    except DBAPIError as exc:  # a lock held past the lock timeout, say: one line
        problem = await engine.explain(exc, [RUNS.name, BOTS.name, PAUSES.name])
        raise problem or exc from None
    _CURRENT.add(engine)


async def check_version(engine: Engine) -> None:
    """Raise `TablesOutdated` unless pinrepl's tables are at this pinrepl's revision
    (`MissingTable` when they are not there at all)."""
    if engine in _CURRENT:
        return
    await engine.check()
    try:
        async with engine.engine.connect() as conn:
            found = list((await conn.execute(select(_VERSION.c.version_num))).scalars())
    except DBAPIError as exc:
        problem = await engine.explain(exc, [VERSION_TABLE])
        if not isinstance(problem, MissingTable):
            raise problem or exc from None
        # The tables of every version (0.1.0 had no version table).
        missing = [t.name for t in (RUNS, BOTS) if not await engine.has_table(t.name)]
        if missing:
            raise MissingTable(missing) from None
        found = []
    if found == [HEAD]:
        _CURRENT.add(engine)
        return
    raise TablesOutdated(_outdated(found))


def _outdated(found: list[str]) -> str:
    fix = "upgrade them with: pinrepl init-database"
    if not found:
        return f"pinrepl's tables have no version (pinrepl 0.1.0 made them); {fix}"
    shown = ", ".join(found)
    if all(revision in REVISIONS for revision in found):
        return f"pinrepl's tables are at version {shown}, this pinrepl needs {HEAD}; {fix}"
    return (f"pinrepl's tables are at version {shown}, of a newer pinrepl than this one "
            f"(which needs {HEAD}): use that pinrepl (pinrepl init-database never downgrades)")


def _upgrade(connection: Connection) -> str:
    """What `upgrade` does, on a sync connection outside a transaction; the line it says."""
    from alembic import command  # Alembic loads only for init-database
    from alembic.runtime.migration import MigrationContext

    config = _config(connection)
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    found = context.get_current_revision()
    there = inspect(connection).has_table(RUNS.name)
    if found is None and there:
        found = _unversioned(connection)
        command.stamp(config, found)
    elif found is not None and not there:  # the tables were dropped, not the version
        command.stamp(config, "base")
        found = None
    if found is not None and found not in REVISIONS:
        raise TablesOutdated(_outdated([found]))
    connection.commit()  # Alembic then opens a transaction of its own per revision
    if found == HEAD:
        return f"pinrepl tables up to date (version {HEAD})"
    command.upgrade(config, HEAD)
    if found is None:
        return f"pinrepl tables created (version {HEAD})"
    return f"pinrepl tables upgraded from {found} to {HEAD}"


def _unversioned(connection: Connection) -> str:
    """The revision of tables that have no version table: pinrepl 0.1.0's (`0001`), or,
    made by `create_all` of a later pinrepl's models, that pinrepl's (`0002`: 0.2.0's;
    `HEAD`)."""
    columns = {c["name"] for c in inspect(connection).get_columns(RUNS.name)}
    if "cancel_requested_at" in columns:
        return HEAD
    return "0002" if "args_hash" in columns else REVISIONS[0]


def _config(connection: Connection) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPTS))
    config.set_main_option("path_separator", "os")
    config.attributes["connection"] = connection
    return config
