"""init-database and a schema that is not what the models say: missing tables are one line,
columns that differ are named and left alone."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing

import pytest
from click.testing import CliRunner

from pinrepl import App, MissingTable
from pinrepl.cli import cli
from pinrepl.db.schema import create_scratch_database, drop_scratch_database

from ..conftest import PG_URL, needs_postgres, write_app

# pinrepl.Model holds one set of tables per process: each test has tables of its own.
MODELS = """
from sqlalchemy.orm import Mapped, mapped_column
from pinrepl import Model

class Widget(Model):
    __tablename__ = "{table}"
    id: Mapped[int] = mapped_column(primary_key=True)
{columns}
"""


def models(table, columns="    name: Mapped[str]"):
    return MODELS.format(table=table, columns=columns)


def counting(table):
    return {"count_widgets.py": f"""
        from pinrepl import BackgroundJob

        class CountWidgets(BackgroundJob):
            async def run(self):
                print("widgets:", await self.database.{table}.count())
    """}


def invoke(*args, url):
    return CliRunner().invoke(cli, list(args), env={"PINREPL_DATABASE_URL": url},
                              catch_exceptions=False)


def test_a_model_added_after_init_database_is_one_line_exit_2(tmp_path):
    before = write_app(tmp_path / "before", counting("added"), models="")
    url = f"sqlite:///{tmp_path / 'app.db'}"
    assert invoke("init-database", "--app", str(before), url=url).exit_code == 0
    # the app, with a model added
    app = write_app(tmp_path / "app", counting("added"), models=models("added"))
    result = invoke("run-background-job", "--name", "count-widgets", "--app", str(app), url=url)
    assert (result.exit_code, result.output) == (
        2, "pinrepl: the database has no table 'added'; create it with: pinrepl "
           "init-database\n")
    assert invoke("init-database", "--app", str(app), url=url).exit_code == 0
    result = invoke("run-background-job", "--name", "count-widgets", "--app", str(app), url=url)
    assert (result.exit_code, result.output) == (0, "widgets: 0\n")


@needs_postgres
def test_an_empty_postgresql_database_is_one_line_exit_2(tmp_path):
    app = write_app(tmp_path / "app", counting("pg_empty"), models=models("pg_empty"))
    empty = asyncio.run(create_scratch_database(PG_URL, app))
    try:
        result = invoke("run-background-job", "--name", "count-widgets", "--app", str(app),
                        url=empty)
        assert (result.exit_code, result.output) == (
            2, "pinrepl: the database has no table 'pg_empty'; create it with: pinrepl "
               "init-database\n")
    finally:
        asyncio.run(drop_scratch_database(empty))


async def test_a_missing_table_in_the_python_api_is_missing_table(tmp_path):
    folder = write_app(tmp_path / "app", counting("api_missing"), models=models("api_missing"))
    app = App.open(folder, environ={"PINREPL_DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}"})
    (tmp_path / "app.db").touch()  # a database, but no tables
    with pytest.raises(MissingTable, match="no table 'api_missing'"):
        await app.run_background_job("count-widgets")
    await app.aclose()


def test_init_database_names_the_columns_that_differ_and_changes_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    with closing(sqlite3.connect(tmp_path / "app.db")) as db, db:  # an older app's table
        db.execute("create table drifted (id integer primary key, name varchar)")
    app = write_app(tmp_path / "app", counting("drifted"), models=models(
        "drifted", "    label: Mapped[str]\n    size: Mapped[int]"))
    result = invoke("init-database", "--app", str(app), url=url)
    assert result.exit_code == 0
    assert result.output.splitlines()[1:-1] == [
        "differs: drifted.label is in the models, not in the database",
        "differs: drifted.size is in the models, not in the database",
        "differs: drifted.name is in the database, not in the models",
        "pinrepl creates missing tables but changes no existing one: migrate these columns "
        "with Alembic (https://alembic.sqlalchemy.org)",
    ]
    again = invoke("init-database", "--app", str(app), url=url)
    assert again.output.splitlines()[:-1] == result.output.splitlines()[:-1]  # unchanged


def test_a_column_of_another_kind_is_named(tmp_path):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    with closing(sqlite3.connect(tmp_path / "app.db")) as db, db:
        db.execute("create table retyped (id integer primary key, name varchar)")
    app = write_app(tmp_path / "app", counting("retyped"),
                    models=models("retyped", "    name: Mapped[int]"))
    result = invoke("init-database", "--app", str(app), url=url)
    assert "differs: retyped.name is INTEGER in the models, VARCHAR in the database" \
        in result.output
