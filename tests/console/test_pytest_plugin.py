"""The pytest plugin as a user's test run meets it (pytest in a subprocess): a transcript item
leaves logging as it found it, and replays on a test database unless the ini says `app`."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing

from ..conftest import clean_env, needs_postgres, postgres_database, write_example_app

LOGS = {"logs.py": """
    import logging
    from pinrepl import BackgroundJob

    class Logs(BackgroundJob):
        async def run(self):
            logging.getLogger("jobs.logs").info("hello from the job")
"""}

LOGGING_STATE = """
import logging

def state():
    root = logging.getLogger()
    return root.level, [type(handler).__name__ for handler in root.handlers]
"""


def pytest_in(folder, *args, **env):
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=folder, env=clean_env(**env), capture_output=True, text=True, timeout=120,
    )


def test_a_transcript_leaves_the_root_logger_as_it_found_it(tmp_path):
    app = write_example_app(tmp_path / "app", LOGS, demo=False)
    tests = app / "tests"
    tests.mkdir()
    (tests / "logging_state.py").write_text(LOGGING_STATE)
    (tests / "test_a_before.py").write_text(textwrap.dedent("""
        from logging_state import state

        def test_before():
            (tests_dir / "before.txt").write_text(repr(state()))

        import pathlib
        tests_dir = pathlib.Path(__file__).parent
    """))
    (tests / "test_b.transcript").write_text(
        "pinrepl > await runBackgroundJob('logs')\nINFO jobs.logs: hello from the job\n")
    (tests / "test_c_after.py").write_text(textwrap.dedent("""
        import logging, pathlib
        from logging_state import state

        def test_after():
            before = (pathlib.Path(__file__).parent / "before.txt").read_text()
            assert repr(state()) == before
            assert logging.getLogger().level == logging.WARNING
    """))
    result = pytest_in(app, "-p", "no:randomly", "--rootdir", str(app), "tests")
    assert "3 passed" in result.stdout, result.stdout + result.stderr


def test_transcripts_replay_on_a_test_database_unless_the_ini_says_app(tmp_path):
    app = write_example_app(tmp_path / "app", LOGS)
    with closing(sqlite3.connect(app / "pinrepl.db")) as db, db:
        db.execute("insert into tenants (name, active) values ('developers-own', 1)")
    (app / "tests").mkdir()
    (app / "tests" / "test_tenants.transcript").write_text(
        "pinrepl > await database.tenants.count()\n3\n")
    assert "1 passed" in pytest_in(app, "tests").stdout  # the demo data of a fresh database
    (app / "pytest.ini").write_text("[pytest]\npinrepl_database = app\n")
    on_app = pytest_in(app, "tests")
    assert "1 failed" in on_app.stdout and "-3\n+4" in on_app.stdout, on_app.stdout
    with closing(sqlite3.connect(app / "pinrepl.db")) as db:
        assert db.execute("select count(*) from tenants").fetchone() == (4,)  # untouched


ADD_USER = {"add_user.py": """
    from pinrepl import BackgroundJob

    class AddUser(BackgroundJob):
        async def run(self, name):
            await self.database.users.insert(name=name, email=f"{name}@example.com")
"""}

TESTS_OF_JOBS = """
import pathlib

import pytest

HERE = pathlib.Path(__file__).parent


@pytest.mark.asyncio
async def test_a_job_runs_on_the_test_database_in_a_sandbox(pinrepl_app):
    assert pinrepl_app.settings.root == HERE.parent.parent
    await pinrepl_app.run_background_job("add-user", "zed")
    async with pinrepl_app.workspace() as workspace:
        assert await workspace.database.users.where(name="zed").count() == 1
        assert await workspace.database.tenants.count() == 3  # not the developer's 4
    (HERE / "url.txt").write_text(pinrepl_app.settings.database_url)


@pytest.mark.asyncio
async def test_b_the_next_test_sees_none_of_its_writes(pinrepl_app):
    async with pinrepl_app.workspace() as workspace:
        assert await workspace.database.users.where(name="zed").count() == 0
"""


def test_plain_tests_get_their_app_on_the_transcripts_test_database_in_a_sandbox(tmp_path):
    app = write_example_app(tmp_path / "app", ADD_USER)
    with closing(sqlite3.connect(app / "pinrepl.db")) as db, db:
        db.execute("insert into tenants (name, active) values ('developers-own', 1)")
    tests = app / "tests" / "unit"  # the app is the nearest one above the test file
    tests.mkdir(parents=True)
    (tests / "test_a_add_user.py").write_text(TESTS_OF_JOBS)
    (tests / "test_c_same_database.transcript").write_text(
        "pinrepl > import pathlib\n"
        "pinrepl > app.settings.database_url == pathlib.Path('tests/unit/url.txt').read_text()\n"
        "True\n"
        "pinrepl > await database.users.where(name='zed').count()\n0\n"
    )
    result = pytest_in(app, "-p", "no:randomly", "tests")
    assert "3 passed" in result.stdout, result.stdout + result.stderr
    with closing(sqlite3.connect(app / "pinrepl.db")) as db:
        assert db.execute("select count(*) from users where name = 'zed'").fetchone() == (0,)


@needs_postgres
def test_plain_tests_get_their_app_on_a_postgres_test_database(tmp_path):
    app = write_example_app(tmp_path / "app", ADD_USER, demo=False)
    (app / "tests").mkdir()
    (app / "tests" / "test_a_add_user.py").write_text(
        TESTS_OF_JOBS.replace("HERE.parent.parent", "HERE.parent"))
    with postgres_database() as url:
        result = pytest_in(app, "-p", "no:randomly", "tests", PINREPL_DATABASE_URL=url)
    assert "2 passed" in result.stdout, result.stdout + result.stderr


def test_the_app_fixture_without_pytest_asyncio_says_it_is_needed_in_one_line(tmp_path):
    app = write_example_app(tmp_path / "app", ADD_USER, demo=False)
    (app / "tests").mkdir()
    (app / "tests" / "test_app.py").write_text(
        "async def test_it(pinrepl_app):\n    pass\n")
    result = pytest_in(app, "-p", "no:asyncio", "tests")
    assert "1 error" in result.stdout, result.stdout + result.stderr
    error = result.stdout.split("ERROR at setup of test_it _")[1].split("\n=")[0]
    assert error.splitlines()[1:] == [
        "the pinrepl_app fixture is async and needs pytest-asyncio: pip install pytest-asyncio"]
    assert "requested an async fixture" not in result.stdout
