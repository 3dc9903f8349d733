"""The schema: `init-database` (create what is missing, add demo data) for an engine's tables.

pinrepl creates the app's tables; it does not migrate them (that is the app's Alembic's
work). Its own tables (`info={"pinrepl": "versioned"}`) are left to its own migrations
(`runs.migrate`, a layer above), which create and upgrade them.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from ..errors import DatabaseUnavailable
from .engine import Engine, database_url, first_line
from .facade import Database
from .models import Model

#: The demo data of an app without a `seed_demo`.
DEMO_TENANTS = (("acme", True), ("globex", True), ("initech", False))

#: The `info` of a table that pinrepl's migrations own (`runs.tables`).
VERSIONED = {"pinrepl": "versioned"}

#: `seed_demo(database)` of an app's models file: adds the app's own demo data, in place of
#: pinrepl's sample tenants.
Seed = Callable[[Database], Awaitable[Any]]


def versioned(model: type[Model]) -> bool:
    """Whether `model`'s table is one of pinrepl's own, versioned by its migrations: its
    rows (a bot was up) are no data of the app's, and `create_all` leaves it alone."""
    return Model.metadata.tables[model.__tablename__].info.get("pinrepl") == \
        VERSIONED["pinrepl"]


def app_tables(engine: Engine) -> dict[str, type[Model]]:
    """The engine's tables but pinrepl's versioned ones."""
    return {name: model for name, model in engine.tables.items() if not versioned(model)}


async def create_tables(engine: Engine) -> None:
    """Create the engine's tables that the database lacks, but pinrepl's versioned ones."""
    await engine.check(create=True)
    tables = [Model.metadata.tables[name] for name in app_tables(engine)]
    async with engine.engine.begin() as conn:
        await conn.run_sync(Model.metadata.create_all, tables=tables)


async def init_database(
    engine: Engine, demo: bool, seed: Seed | None, echo: Callable[[str], Any]
) -> None:
    """Create the missing tables (but pinrepl's versioned ones) and name the columns that
    differ from the models (changing nothing); with `demo`, add the demo data (see
    `add_demo_data`)."""
    await create_tables(engine)
    echo(f"tables ready in {engine.shown_url}: {', '.join(sorted(app_tables(engine)))}")
    differences = await column_differences(engine)
    for line in differences:
        echo(f"differs: {line}")
    if differences:
        echo("pinrepl creates missing tables but changes no existing one: migrate these "
             "columns with Alembic (https://alembic.sqlalchemy.org)")
    if demo:
        await add_demo_data(Database(engine), list(app_tables(engine)), seed, echo)


async def column_differences(engine: Engine) -> list[str]:
    """The columns of existing tables that the models and the database disagree on: one
    missing on either side, or of another kind (text, integer, ...); pinrepl's versioned
    tables are its migrations' to bring in line."""
    tables = app_tables(engine)
    async with engine.engine.connect() as conn:
        return await conn.run_sync(lambda sync: _compare(sync, tables))


def _compare(connection: Any, tables: dict[str, type[Model]]) -> list[str]:
    inspector = inspect(connection)
    found: list[str] = []
    for name, model in sorted(tables.items()):
        if not inspector.has_table(name):
            continue
        actual = {column["name"]: column["type"] for column in inspector.get_columns(name)}
        for column in model.__table__.columns:
            if column.name not in actual:
                found.append(f"{name}.{column.name} is in the models, not in the database")
            elif _kind(column.type) != _kind(actual[column.name]):
                found.append(
                    f"{name}.{column.name} is {column.type} in the models, "
                    f"{actual[column.name]} in the database"
                )
        found.extend(
            f"{name}.{extra} is in the database, not in the models"
            for extra in actual if extra not in model.__table__.columns
        )
    return found


def _kind(column_type: Any) -> type | None:
    """The Python type a column's values have: what a reflected type is compared by."""
    try:
        return column_type.python_type
    except NotImplementedError:
        return None


async def add_demo_data(database: Database, tables: list[str], seed: Seed | None,
                        echo: Callable[[str], Any]) -> None:
    """Add what the app's `seed` adds, and only that (SPEC 6: the app's tables plus what
    `seed_demo` adds); an app without one gets pinrepl's sample tenants. Nothing is added
    to a database whose `tables` (the built-in tenants, the app's) hold rows already."""
    try:
        for name in sorted(tables):
            if await getattr(database, name).exists():
                echo(f"demo data already present (the {name} table has rows); nothing added")
                return
        async with database.transaction():
            if seed is not None:
                await seed(database)
            else:
                for name, active in DEMO_TENANTS:
                    await database.tenants.insert(name=name, active=active)
        counts = [f"{name}: {await getattr(database, name).count()}"
                  for name in sorted(tables)]
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
