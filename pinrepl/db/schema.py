"""The schema: `init-database` (create what is missing, add demo data) for an engine's tables.

pinrepl creates tables; it does not migrate them (that is Alembic's work).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from ..errors import DatabaseUnavailable
from .engine import Engine, database_url, first_line
from .facade import Database
from .models import Model

DEMO_TENANTS = (("acme", True), ("globex", True), ("initech", False))

#: `seed_demo(database)` of an app's models file: adds the app's own demo rows.
Seed = Callable[[Database], Awaitable[Any]]


async def create_tables(engine: Engine) -> None:
    """Create the engine's tables that the database lacks."""
    await engine.check(create=True)
    tables = [Model.metadata.tables[name] for name in engine.tables]
    async with engine.engine.begin() as conn:
        await conn.run_sync(Model.metadata.create_all, tables=tables)


async def init_database(
    engine: Engine, demo: bool, seed: Seed | None, echo: Callable[[str], Any]
) -> None:
    """Create the tables; with `demo`, add sample tenants (and `seed`'s rows) unless the
    database has tenants already."""
    await create_tables(engine)
    echo(f"tables ready in {engine.shown_url}: {', '.join(sorted(engine.tables))}")
    if demo:
        await add_demo_data(Database(engine), seed, echo)


async def add_demo_data(database: Database, seed: Seed | None, echo: Callable[[str], Any]
                        ) -> None:
    try:
        if await database.tenants.exists():
            echo("demo data already present (the tenants table has rows); nothing added")
            return
        async with database.transaction():
            for name, active in DEMO_TENANTS:
                await database.tenants.insert(name=name, active=active)
            if seed is not None:
                await seed(database)
        counts = [f"{name}: {await getattr(database, name).count()}" for name in database.tables]
        echo(f"demo data added ({', '.join(counts)})")
    finally:
        await database.aclose()


async def create_scratch_database(url: str, root: Path) -> str:
    """The URL of a new, empty database beside the one `url` names, for a test run: a
    temporary SQLite file, or on PostgreSQL `<name>_test` on the same server (made anew).
    `drop_scratch_database` removes it."""
    parsed = database_url(url, root)
    if parsed.get_backend_name() == "sqlite":
        folder = tempfile.mkdtemp(prefix="pinrepl-test-")
        return parsed.set(database=str(Path(folder) / "test.db")).render_as_string(False)
    name = f"{parsed.database or 'pinrepl'}_test"
    await _on_server(parsed, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
                     f'CREATE DATABASE "{name}"')
    return parsed.set(database=name).render_as_string(False)


async def drop_scratch_database(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        shutil.rmtree(Path(parsed.database or "").parent, ignore_errors=True)
        return
    await _on_server(parsed, f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)')


async def _on_server(url: URL, *statements: str) -> None:
    """Run `statements` outside a transaction, connected to the `postgres` database of
    `url`'s server."""
    server = create_async_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        async with server.connect() as conn:
            for statement in statements:
                await conn.exec_driver_sql(statement)
    except (OSError, DBAPIError) as exc:
        raise DatabaseUnavailable(
            f"cannot make a test database on {url.render_as_string()}: {first_line(exc)}"
        ) from None
    finally:
        await server.dispose()
