"""The REPL: interactive in a real pseudo-terminal (pexpect, TERM=dumb, a temporary HOME),
and non-interactive through the same evaluator."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing

import pytest

from pinrepl.console.repl import shown_url

from ..conftest import run_cli, write_demo_app
from .terminal import Repl

JOBS = {
    "hello.py": """
        import logging
        from pinrepl import BackgroundJob

        class Hello(BackgroundJob):
            async def run(self, name="world"):
                print(f"hello {name}")
                logging.getLogger("jobs.hello").info("greeted %s", name)
    """,
    "sleepy.py": """
        import asyncio
        from pinrepl import BackgroundJob

        class Sleepy(BackgroundJob):
            async def run(self):
                async with self.database.transaction():
                    await self.database.users.insert(name="half-done", email="x")
                    print("sleepy started")
                    await asyncio.sleep(60)
    """,
    "add_user.py": """
        from pinrepl import BackgroundJob

        class AddUser(BackgroundJob):
            async def run(self, name):
                await self.database.users.insert(name=name, email=f"{name}@example.com")
    """,
}


@pytest.fixture
def app(tmp_path):
    return write_demo_app(tmp_path / "app", JOBS)


def test_top_level_await_runs_a_job_and_its_output_shows(app, tmp_path):
    repl = Repl(app, tmp_path)
    screen = repl.expect("3 jobs loaded: add-user, hello, sleepy")
    assert f"app {app}" in screen and "database sqlite+aiosqlite:///" in screen
    repl.run("await runBackgroundJob('hello', 'pinrepl')", "hello pinrepl",
             "INFO jobs.hello: greeted pinrepl")
    repl.run("await run_background_job('hello')", "hello world")
    repl.run("await database.users.count()", "6")
    repl.run("jobs['hello'].name + '!'", "'hello!'")
    assert repl.quit() == 0  # Ctrl-D: no "do you really want to exit?"


def test_ctrl_c_cancels_a_long_job_and_the_repl_stays_usable(app, tmp_path):
    repl = Repl(app, tmp_path)
    repl.expect("jobs loaded")
    repl.run("await runBackgroundJob('sleepy')", "sleepy started")
    started = time.monotonic()
    repl.child.sendintr()
    repl.expect("Cancelled: the job was stopped and its workspace torn down.")
    assert time.monotonic() - started < 1
    repl.run("await database.users.where(name='half-done').count()", "0")  # rolled back
    repl.run("6 * 7", "42")
    assert repl.quit() == 0


def test_errors_print_a_traceback_and_keep_the_session(app, tmp_path):
    repl = Repl(app, tmp_path)
    repl.expect("jobs loaded")
    repl.run("1 +* 2", "SyntaxError")
    repl.run("await runBackgroundJob('helo')", "did you mean: hello?")
    repl.run("database.userz", "unknown table 'userz'")
    repl.run("'still here'", "'still here'")
    assert repl.quit() == 0


def test_reload_sees_new_and_deleted_job_files(app, tmp_path):
    repl = Repl(app, tmp_path)
    repl.expect("3 jobs loaded")
    (app / "jobs" / "fresh.py").write_text(
        "from pinrepl import BackgroundJob\n\nclass Fresh(BackgroundJob):\n"
        "    async def run(self):\n        print('fresh ran')\n")
    (app / "jobs" / "hello.py").unlink()
    (app / "jobs" / "broken.py").write_text("def (:\n")
    repl.run("reload()", "3 jobs reloaded: add-user, fresh, sleepy",
             "load error: jobs/broken.py: SyntaxError")
    repl.run("await runBackgroundJob('fresh')", "fresh ran")
    repl.run("await runBackgroundJob('hello')", "unknown background job 'hello'")
    assert repl.quit() == 0


def test_a_broken_job_file_does_not_stop_startup(app, tmp_path):
    (app / "jobs" / "broken.py").write_text("import no_such_module\n")
    repl = Repl(app, tmp_path)
    repl.expect("3 jobs loaded")
    repl.expect("load error: ")
    repl.expect("ModuleNotFoundError: No module named 'no_such_module'")
    repl.run("await runBackgroundJob('hello')", "hello world")
    assert repl.quit() == 0


def test_sandbox_rolls_back_every_write_of_the_session(app, tmp_path):
    repl = Repl(app, tmp_path, "--sandbox")
    repl.expect("sandbox: writes are rolled back at exit")
    repl.expect("pinrepl [sandbox] >")
    repl.run("await database.users.insert(name='Temp', email='t@x')", "name='Temp'")
    repl.run("await runBackgroundJob('add-user', 'jobber')")
    repl.run("await database.users.count()", "8")
    assert repl.quit() == 0
    with closing(sqlite3.connect(app / "pinrepl.db")) as db:
        assert db.execute("select count(*) from users").fetchone() == (6,)


def test_history_survives_a_restart(app, tmp_path):
    repl = Repl(app, tmp_path)
    repl.expect("jobs loaded")
    repl.run("1234 + 1", "1235")
    assert repl.quit() == 0
    history = list((tmp_path / ".local" / "state" / "pinrepl" / "history").iterdir())
    assert len(history) == 1 and history[0].name.startswith("app-")
    assert "1234 + 1" in history[0].read_text()
    again = Repl(app, tmp_path)
    again.expect("jobs loaded")
    again.press_until("\x1b[A", "1234 + 1")  # up arrow: the last line of the previous session
    again.child.send("\r")
    again.expect("1235")
    assert again.quit() == 0


def test_tenant_scope_shows_in_the_prompt_and_can_switch(app, tmp_path):
    repl = Repl(app, tmp_path, "--tenant", "acme")
    repl.expect("pinrepl [acme] >")
    repl.run("await database.users.count()", "3")
    repl.run("await use_tenant('globex')", "pinrepl [globex] >")
    repl.run("await database.users.count()", "2")
    repl.run("await use_tenant(None)")
    repl.run("await database.users.count()", "6")
    assert repl.quit() == 0


# -- non-interactive -------------------------------------------------------------------------


def test_execute_prints_values_like_the_repl(app):
    result = run_cli("repl", "--execute",
                     "await runBackgroundJob('hello', 'x')\nawait database.users.count()\n"
                     "n = 2; n * 21\nNone", cwd=app)
    assert (result.returncode, result.stdout, result.stderr) == (
        0, "hello x\n6\n42\n", "INFO jobs.hello: greeted x\n")


def test_piped_stdin_runs_through_the_same_evaluator(app):
    result = run_cli("repl", cwd=app, input="import asyncio\nawait asyncio.sleep(0)\n'done'\n")
    assert (result.returncode, result.stdout) == (0, "'done'\n")


def test_uncaught_exception_exits_1_with_a_traceback(app):
    result = run_cli("repl", "-e", "print('before')\nawait runBackgroundJob('helo')\n"
                     "print('after')", cwd=app)
    assert result.returncode == 1
    assert result.stdout == "before\n"
    assert result.stderr.startswith("Traceback (most recent call last):\n"
                                    '  File "<string>", line 2, in <module>')
    assert result.stderr.endswith("UnknownBackgroundJob: unknown background job 'helo' "
                                  "(did you mean: hello?)\n")


def test_syntax_error_exits_1(app):
    result = run_cli("repl", "-e", "1 +* 2", cwd=app)
    assert result.returncode == 1 and "SyntaxError" in result.stderr


def test_unknown_tenant_is_one_line_before_any_prompt(app):
    result = run_cli("repl", "--tenant", "acmee", "-e", "1", cwd=app)
    assert (result.returncode, result.stderr, result.stdout) == (
        2, "pinrepl: unknown tenant 'acmee' (did you mean: acme?)\n", "")


def test_sandbox_with_execute(app):
    result = run_cli("repl", "--sandbox", "-e",
                     "await runBackgroundJob('add-user', 'z')\nawait database.users.count()",
                     cwd=app)
    assert result.stdout == "7\n"
    assert run_cli("repl", "-e", "await database.users.count()", cwd=app).stdout == "6\n"


def test_passwords_are_hidden_in_the_banner():
    assert shown_url("postgresql://bob:s3cret@db:5432/app") == "postgresql://bob:***@db:5432/app"
    assert shown_url("sqlite+aiosqlite:///x.db") == "sqlite+aiosqlite:///x.db"
