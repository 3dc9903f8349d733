"""The pytest plugin as a user's test run meets it (pytest in a subprocess): a transcript item
leaves logging as it found it, and replays on a test database unless the ini says `app`."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing

from ..conftest import clean_env, write_example_app

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


def pytest_in(folder, *args):
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=folder, env=clean_env(), capture_output=True, text=True, timeout=120,
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
