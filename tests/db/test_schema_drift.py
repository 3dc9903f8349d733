"""A table of the database that lacks a column of its model (an app's, or pinrepl's runs
table) is one line naming the table, the column and `init-database`, exit 2, from the
commands that meet it; not a SQLAlchemy traceback."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing

import pytest
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError

from pinrepl import App

from ..conftest import _on_postgres, invoke, needs_postgres, one_line, postgres_database, write_app

# pinrepl.Model holds one set of tables per process: each test has tables of its own.
MODELS = """
from sqlalchemy.orm import Mapped, mapped_column
from pinrepl import Model

class Gadget(Model):
    __tablename__ = "{table}"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    size: Mapped[int]
"""

JOBS = {"count_gadgets.py": """
    from pinrepl import BackgroundJob

    class CountGadgets(BackgroundJob):
        async def run(self):
            print("gadgets:", len(await self.database.{table}.all()))
"""}


def init_app(tmp_path, table, url):
    """An app whose model `table` has (id, name, size), on a database made by
    init-database."""
    jobs = {path: source.replace("{table}", table) for path, source in JOBS.items()}
    root = write_app(tmp_path / "app", jobs, models=MODELS.format(table=table))
    env = {"PINREPL_DATABASE_URL": url}
    assert invoke("init-database", "--app", root, env=env).exit_code == 0
    return root, env


def drop_column_on_sqlite(path, table, column):
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(f"alter table {table} drop column {column}")


def test_a_model_column_missing_from_the_table_is_one_line_from_run_background_job(
        tmp_path):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    root, env = init_app(tmp_path, "gadgets_a", url)
    drop_column_on_sqlite(tmp_path / "app.db", "gadgets_a", "size")
    result = invoke("run-background-job", "--name", "count-gadgets", "--app", root, env=env)
    assert one_line(result) == (
        "table 'gadgets_a' of the database has no column 'size' (its model has it); "
        "pinrepl init-database lists the columns that differ")


def test_a_runs_table_missing_a_column_is_one_line_from_list_background_job_runs(tmp_path):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    root, env = init_app(tmp_path, "gadgets_b", url)
    drop_column_on_sqlite(tmp_path / "app.db", "background_job_runs", "error")
    result = invoke("list-background-job-runs", "--app", root, env=env)
    assert one_line(result) == (
        "table 'background_job_runs' of the database has no column 'error' (its model has "
        "it); pinrepl init-database lists the columns that differ")


def test_a_missing_column_names_them_all_when_several_are_missing(tmp_path):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    root, env = init_app(tmp_path, "gadgets_c", url)
    drop_column_on_sqlite(tmp_path / "app.db", "gadgets_c", "size")
    drop_column_on_sqlite(tmp_path / "app.db", "gadgets_c", "name")
    result = invoke("run-background-job", "--name", "count-gadgets", "--app", root, env=env)
    assert one_line(result).startswith(
        "table 'gadgets_c' of the database has no columns 'name', 'size' (its model has them)")


@needs_postgres
@pytest.mark.parametrize("command", ["run-background-job", "list-background-job-runs"])
def test_a_missing_column_is_one_line_on_postgresql(tmp_path, command):
    with postgres_database() as url:
        gadgets = f"gadgets_pg_{command[:3]}"
        root, env = init_app(tmp_path, gadgets, url)
        args = ["--name", "count-gadgets"] if command == "run-background-job" else []
        # A run is recorded before it starts: the runs table keeps its columns for it.
        drop_error = () if args else ("alter table background_job_runs drop column error",)
        asyncio.run(_on_postgres(url, f"alter table {gadgets} drop column size", *drop_error))
        result = invoke(command, *args, "--app", root, env=env)
        table, column = (gadgets, "size") if args else ("background_job_runs", "error")
        assert one_line(result).startswith(
            f"table {table!r} of the database has no column {column!r}")


def test_a_broken_constraint_caught_in_a_loop_does_not_look_at_the_schema(tmp_path):
    """Only an error that can be a missing table or column sends SQLite's schema queries
    (a connection and a look at each table): code catching IntegrityError pays none."""
    root, env = init_app(tmp_path, "gadgets_e", f"sqlite:///{tmp_path / 'app.db'}")
    statements: list[str] = []

    async def insert_one_then_duplicates() -> None:
        async with App.open(root, environ=env) as app:
            database = app.database()
            try:
                await database.gadgets_e.insert(id=1, name="a", size=1)
                event.listen(app.engine.engine.sync_engine, "before_cursor_execute",
                             lambda _conn, _cursor, statement, *_: statements.append(statement))
                for _ in range(3):
                    with pytest.raises(IntegrityError):
                        await database.gadgets_e.insert(id=1, name="a", size=1)
            finally:
                await database.aclose()

    asyncio.run(insert_one_then_duplicates())
    assert [s for s in statements if "sqlite_master" in s or "PRAGMA" in s.upper()] == []
    assert sum("INSERT" in s for s in statements) == 3
