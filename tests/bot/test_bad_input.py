"""What a user can get wrong with the bot's commands: bad options, no database, a database
without the bot's tables or whose tables differ, an unknown job. Each is one line and
exit 2, and changes nothing. What stops the bot once it has read its settings is the last
line of its log, which starts with its time as every line of the log does."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from contextlib import closing

import pytest

from pinrepl import App

from ..conftest import invoke, one_line, write_app
from .conftest import bot_app

TICK = {
    "tick.py": """
        from pinrepl import BackgroundJob

        class Tick(BackgroundJob):
            def meta(self):
                self.schedule("* * * * * *")

            async def run(self):
                pass
    """,
}


def last_line(result, command):
    """The one error line of `command` (see `one_line`); for the bot, the last line of its
    log: its time, `ERROR pinrepl.bot: `, the message."""
    if command[0] != "bot":
        return one_line(result)
    assert (result.exit_code, result.stdout) == (2, ""), result.output
    last = result.stderr.splitlines()[-1]
    timed = re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00 ERROR pinrepl\.bot: (.+)",
                         last)
    assert timed is not None, result.stderr
    return timed[1]


@pytest.fixture
def app(tmp_path):
    return write_app(tmp_path / "app", TICK)


@pytest.mark.parametrize("options", [
    ["--concurrency", "0"], ["--concurrency", "99999999999"], ["--concurrency", "10001"],
    ["--grace", "-1"], ["--lease", "soon"], ["--lease", "0.5"],
    ["--every", "1"], ["--lease", "inf"], ["--lease", "1e300"], ["--lease", "nan"],
    ["--grace", "nan"], ["--grace", "inf"], ["--grace", "1e300"],
])
def test_bad_options_are_a_usage_error_naming_the_option(app, options):
    error = one_line(invoke("bot", "--app", app, *options))
    assert options[0] in error and error.endswith("(see: pinrepl bot --help)")
    assert not (app / "pinrepl.db").exists()


@pytest.mark.parametrize(("options", "message"), [
    (["--grace", "abc"], "'--grace': 'abc' is not a valid number of seconds. "),
    (["--lease", "nan"], "'--lease': 'nan' is not a valid number of seconds. "),
    (["--concurrency", "x"], "'--concurrency': 'x' is not a valid whole number. "),
])
def test_a_value_that_is_no_number_says_what_it_must_be(app, options, message):
    assert one_line(invoke("bot", "--app", app, *options)) == (
        f"Invalid value for {message}(see: pinrepl bot --help)")


@pytest.mark.parametrize("command", [["bot"], ["bot", "--once"], ["list-background-job-runs"]])
def test_no_database_is_one_line(app, command):
    line = last_line(invoke(*command, "--app", app), command)
    assert line == f"no database at {app / 'pinrepl.db'}; create it with: pinrepl init-database"
    assert not (app / "pinrepl.db").exists()


@pytest.mark.parametrize("command", [["bot"], ["bot", "--once"], ["list-background-job-runs"]])
def test_a_database_without_the_bots_tables_is_one_line(app, command):
    with closing(sqlite3.connect(app / "pinrepl.db")) as db:
        db.execute("create table unrelated (id integer)")
    line = last_line(invoke(*command, "--app", app), command)
    assert line.startswith("the database has no table") and "'background_job_runs'" in line
    assert line.endswith(" with: pinrepl init-database")
    with closing(sqlite3.connect(app / "pinrepl.db")) as db:
        tables = db.execute("select name from sqlite_master where type = 'table'").fetchall()
    assert tables == [("unrelated",)]


def test_an_unreachable_database_is_one_line(app):
    url = "postgresql://nobody:secret@127.0.0.1:1/db"
    line = last_line(invoke("bot", "--app", app, env={"PINREPL_DATABASE_URL": url}), ["bot"])
    assert line.startswith("cannot reach database postgresql+asyncpg://nobody:***@127.0.0.1:1/db")


def test_list_background_jobs_needs_no_database(app):
    result = invoke("list-background-jobs", "--json", "--app", app)
    assert result.exit_code == 0, result.output
    assert '"last_run": null' in result.stdout
    assert not (app / "pinrepl.db").exists()


def test_list_background_job_runs_refuses_an_unknown_status(app):
    result = invoke("list-background-job-runs", "--status", "done", "--app", app)
    assert result.exit_code == 2
    assert "Invalid value for '--status'" in result.stderr


async def _rename_column(root, url, column, to):
    async with App.open(root, environ={"PINREPL_DATABASE_URL": url}) as app, \
            app.engine.engine.begin() as conn:
        await conn.exec_driver_sql(f"alter table background_job_runs rename column {column} "
                                   f"to {to}")


def test_a_runs_table_that_differs_stops_the_bot_with_one_line(tmp_path, database_url):
    root = bot_app(tmp_path / "app", TICK, database_url)
    asyncio.run(_rename_column(root, database_url, "error", "reason"))
    result = invoke("bot", "--once", "--app", root, env={"PINREPL_DATABASE_URL": database_url})
    assert last_line(result, ["bot"]) == (
        "table 'background_job_runs' of the database has no column 'error' (its "
        "model has it); pinrepl init-database lists the columns that differ")
    assert "database unavailable" not in result.stderr
