"""The `pinrepl` command line, in this process through click's CliRunner (messages and exit
codes), and in a subprocess only where a real process matters (a terminal, a signal,
`python -m pinrepl`, the interpreter's own PYTHONPATH)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing

import pytest

import pinrepl
from pinrepl.bot import JOB_FAILURE
from pinrepl.errors import ConfigError
from pinrepl.logs import TimedFormatter
from pinrepl.settings import Settings

from .conftest import (
    FAN_OUT_JOBS,
    PG_URL,
    REPO,
    clean_env,
    invoke,
    needs_postgres,
    one_line,
    run_cli,
    write_app,
    write_example_app,
)

JOBS = {
    **FAN_OUT_JOBS,
    "send_email.py": """
        from pinrepl import BackgroundJob

        class SendEmail(BackgroundJob):
            async def run(self, address, message):
                print(f"email to {address}: {message}")
    """,
    "letter.py": """
        from pinrepl import BackgroundJob

        class Letter(BackgroundJob):
            async def run(self, address, *, subject, cc="nobody"):
                print(f"to {address}, cc {cc}: {subject}")
    """,
    "risky_operation.py": """
        from pinrepl import BackgroundJob

        class RiskyOperation(BackgroundJob):
            async def run(self):
                raise RuntimeError("the risky operation failed")
    """,
    "parse_count.py": """
        from pinrepl import BackgroundJob

        def parse(text):
            return int(text)

        class ParseCount(BackgroundJob):
            async def run(self, text):
                try:
                    parse(text)
                except ValueError as exc:
                    raise RuntimeError("cannot parse the count") from exc
    """,
    "count_users.py": """
        from pinrepl import BackgroundJob

        class CountUsers(BackgroundJob):
            async def run(self):
                print("users:", await self.database.users.count())
    """,
    "add_user.py": """
        from pinrepl import BackgroundJob

        class AddUser(BackgroundJob):
            async def run(self):
                await self.database.users.insert(name="Zed", email="zed@x.example")
    """,
    "odd.py": """
        from pinrepl import BackgroundJob

        class Odd(BaseException):
            pass

        class OddEnd(BackgroundJob):
            async def run(self):
                raise Odd("not an Exception")
    """,
    "exits.py": """
        import sys
        from pinrepl import BackgroundJob

        class Exits(BackgroundJob):
            async def run(self):
                print("about to exit")
                sys.exit(3)
    """,
    "typo.py": """
        from pinrepl import BackgroundJob

        class Typo(BackgroundJob):
            async def run(self):
                await self.database.userz.count()
    """,
    "calls_unknown.py": """
        from pinrepl import BackgroundJob

        class CallsUnknown(BackgroundJob):
            async def run(self):
                await self.run_background_job("nope")
    """,
    "calls_badly.py": """
        from pinrepl import BackgroundJob

        class CallsBadly(BackgroundJob):
            async def run(self):
                await self.run_background_job("send-email", "only-one")
    """,
    "newsletter_then_fail.py": """
        from pinrepl import BackgroundJob

        class NewsletterThenFail(BackgroundJob):
            async def run(self):
                await self.run_background_job("flaky")
    """,
    "add_user_per_tenant.py": """
        from pinrepl import BackgroundJob

        class AddUserPerTenant(BackgroundJob):
            multi_tenant = True

            async def run(self):
                await self.database.users.insert(name="Zed", email="zed@x.example")
    """,
    "nobody.py": """
        from pinrepl import BackgroundJob

        class Nobody(BackgroundJob):
            multi_tenant = True

            def tenants_filter(self, tenants):
                return tenants.where(name="nobody")

            async def run(self):
                print("ran anyway")
    """,
}


@pytest.fixture
def app(tmp_path):
    """An app over the example app's models, with no database yet."""
    return write_example_app(tmp_path / "app", JOBS, demo=False)


@pytest.fixture
def demo(app, database_url):
    """(app, environment): the app with the demo data (tenants acme, globex and initech,
    which is inactive) in a database of the test's own, on SQLite and PostgreSQL."""
    env = {"PINREPL_DATABASE_URL": database_url}
    made = invoke("init-database", "--demo", "--app", app, env=env)
    assert made.exit_code == 0, made.output
    return app, env


def run(app, *args, env=None):
    return invoke("run-background-job", "--app", app, *args, env=env)


# -- run-background-job --------------------------------------------------------------------


def test_job_runs_with_arguments_and_is_awaited(app):
    result = run(app, "--name", "send-email", "a@b.example", "Welcome!")
    assert (result.exit_code, result.stdout, result.stderr) == (
        0, "email to a@b.example: Welcome!\n", "")


def test_keyword_arguments_are_forwarded_as_strings(app):
    result = run(app, "--name", "letter", "ann@x.org", "--kwarg", "subject=Hi there",
                 "--kwarg", "cc=a=b")
    assert (result.exit_code, result.stdout) == (0, "to ann@x.org, cc a=b: Hi there\n")


@pytest.mark.parametrize("pair", ["subject", "=Hi", "1st=Hi", "sub-ject=Hi"])
def test_a_malformed_kwarg_is_one_line(app, pair):
    result = run(app, "--name", "letter", "ann@x.org", "--kwarg", pair)
    assert one_line(result) == f"--kwarg {pair!r} is not KEY=VALUE (KEY a Python name)"


def test_failing_job_exits_1_with_its_traceback(app):
    result = run(app, "--name", "risky-operation")
    assert result.exit_code == 1
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert "RuntimeError: the risky operation failed\nin background job 'risky-operation'" \
        in result.stderr


def test_a_kwarg_given_twice_is_one_line(app):
    result = run(app, "--name", "letter", "ann@x.org", "--kwarg", "subject=a",
                 "--kwarg", "subject=b")
    assert one_line(result) == "--kwarg 'subject' is given twice ('a' and 'b')"


@pytest.mark.parametrize("args", [["--name", "parse-count", "x"], ["--name", "flaky"]])
def test_a_failing_jobs_traceback_shows_the_jobs_frames_not_pinrepls(demo, args):
    """As the REPL shows it: the job's frames, chained exceptions and notes, and none of
    the frames of pinrepl (the CLI, the runner, the database facade) that ran it."""
    app, env = demo
    result = run(app, *args, env=env)
    assert result.exit_code == 1, result.output
    frames = re.findall(r'File "([^"]+)", line \d+, in (\w+)', result.stderr)
    job = str(app / "jobs" / (args[1].replace("-", "_") + ".py"))
    if args[1] == "parse-count":
        assert frames == [(job, "run"), (job, "parse"), (job, "run")], result.stderr
        assert "ValueError: invalid literal for int() with base 10: 'x'\n\nThe above " \
            "exception was the direct cause of the following exception:" in result.stderr
        assert result.stderr.endswith(
            "RuntimeError: cannot parse the count\nin background job 'parse-count'\n")
    else:  # a fan-out: each failed tenant's traceback
        assert frames == [(job, "run")] * 2, result.stderr
        assert result.stderr.count("in background job 'flaky' for tenant") == 2


def test_the_bots_log_leaves_out_pinrepls_frames_of_a_jobs_failure_only(tmp_path):
    """A failure the bot marks as a job's is shown as above (tests/bot shows it end to
    end); an error of the bot's own keeps pinrepl's frames, for a bug report."""
    try:
        Settings.load(tmp_path / "nowhere")  # raised in pinrepl's own code
    except ConfigError:
        exc_info = sys.exc_info()
    shown = {
        marked: TimedFormatter().format(logging.makeLogRecord(
            {"msg": "failed", "exc_info": exc_info, **({JOB_FAILURE: True} if marked else {})}))
        for marked in (True, False)
    }
    files = {marked: re.findall(r'File "([^"]+)"', text) for marked, text in shown.items()}
    assert files[True] == [__file__], shown[True]
    assert files[False][0] == __file__ and len(files[False]) > 1, shown[False]
    assert all(os.path.dirname(pinrepl.__file__) in file for file in files[False][1:])
    assert shown[True].endswith("pinrepl.errors.ConfigError: " + str(exc_info[1]))


@pytest.mark.parametrize(("args", "message"), [
    (["--name", "send-emial"], "unknown background job 'send-emial' (did you mean: send-email?)"),
    (["--name", "send-email", "only-address"],
     "background job 'send-email': missing a required argument: 'message' "
     "(run(address, message) was given 1 positional argument)"),
    (["--name", "send-email", "a", "b", "c"],
     "background job 'send-email': too many positional arguments "
     "(run(address, message) was given 3 positional arguments)"),
    (["--name", "send-email", "a", "b", "--kwarg", "cc=x"],
     "background job 'send-email': got an unexpected keyword argument 'cc' "
     "(run(address, message) was given 2 positional arguments and keyword argument(s) cc)"),
])
def test_usage_errors_exit_2_with_one_line(app, args, message):
    assert one_line(run(app, *args)) == message


def test_missing_name_is_a_usage_error(app):
    result = run(app)
    assert result.exit_code == 2
    assert "Missing option '--name'" in result.stderr


@pytest.mark.parametrize(("job", "error"), [
    ("typo", "UnknownTable: unknown table 'userz'"),
    ("calls-unknown", "UnknownBackgroundJob: unknown background job 'nope'"),
    ("calls-badly", "BadJobArguments: background job 'send-email': missing a required"),
    ("exits", "BackgroundJobExit: background job 'exits' called sys.exit(3)"),
    ("odd", "Odd: not an Exception"),  # a BaseException of its own
])
def test_what_a_jobs_own_code_raises_is_its_failure(demo, job, error):
    app, env = demo
    result = run(app, "--name", job, env=env)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert f"{error}" in result.stderr
    assert result.stderr.endswith(f"in background job '{job}'\n")


def test_a_failed_fan_out_inside_a_job_is_that_jobs_failure(demo):
    app, env = demo
    result = run(app, "--name", "newsletter-then-fail", env=env)
    assert result.exit_code == 1
    assert "BackgroundJobFailed: background job 'flaky' failed for 2 of 3 tenants" \
        in result.stderr
    assert "in background job 'newsletter-then-fail'" in result.stderr
    assert "tenants:" not in result.stderr  # no summary of a fan-out the CLI did not run


def test_running_a_job_that_failed_to_load_is_one_line(tmp_path, monkeypatch):
    app = write_app(tmp_path / "a", {"broken.py": "def (:\n"})
    monkeypatch.chdir(app)  # file names are shown as typed from here
    assert one_line(run(app, "--name", "broken")) == \
        "jobs/broken.py: SyntaxError: invalid syntax (line 1)"


def test_without_a_database_a_job_that_reads_it_is_one_line_and_creates_nothing(app):
    message = one_line(run(app, "--name", "count-users"))
    assert message.startswith("no database at ") and "pinrepl init-database" in message
    assert not (app / "pinrepl.db").exists()

    made = invoke("init-database", "--demo", "--app", app)
    assert made.exit_code == 0, made.output
    assert "demo data added (notifications: 12, tenants: 3, users: 6)" in made.stdout
    again = invoke("init-database", "--demo", "--app", app)
    assert "already present" in again.stdout
    with closing(sqlite3.connect(app / "pinrepl.db")) as db:
        assert db.execute("select count(*) from users").fetchone() == (6,)
    assert run(app, "--name", "count-users").stdout == "users: 6\n"


@pytest.mark.parametrize(("url", "message"), [
    ("not a url", "cannot parse database URL 'not a url'"),
    ("nosuchdb://x/y", "cannot use database URL nosuchdb://x/y: "),
    ("postgresql+asyncpg://nobody:secret@127.0.0.1:1/db",
     "cannot reach database postgresql+asyncpg://nobody:***@127.0.0.1:1/db: "),
    ("sqlite:////nonexistent-dir/x.db", "no database at /nonexistent-dir/x.db"),
])
def test_bad_database_urls_are_one_line(app, url, message):
    result = run(app, "--name", "count-users", env={"PINREPL_DATABASE_URL": url})
    assert one_line(result).startswith(message)
    assert "secret" not in result.stderr


def test_init_database_on_an_unreachable_server(app):
    result = invoke("init-database", "--app", app,
                    env={"PINREPL_DATABASE_URL": "postgresql://127.0.0.1:1/db"})
    assert one_line(result).startswith("cannot reach database postgresql+asyncpg://")


@pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=needs_postgres)],
                         indirect=True)
def test_postgres_database(demo):
    app, env = demo
    result = run(app, "--name", "count-users", env=env)
    assert (result.exit_code, result.stdout) == (0, "users: 6\n")


@contextlib.contextmanager
def read_only(path):
    """`path` read-only for this process, even for root (who ignores file modes)."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        yield
        path.chmod(0o644)
        return
    if shutil.which("chattr") is None or subprocess.run(
        ["chattr", "+i", str(path)], capture_output=True
    ).returncode != 0:
        pytest.skip("root cannot make a file read-only here (no chattr +i)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.mark.parametrize("job", ["add-user", "add-user-per-tenant"])
def test_writing_to_a_read_only_database_is_one_line(app, job):
    assert invoke("init-database", "--demo", "--app", app).exit_code == 0
    database = app / "pinrepl.db"
    with read_only(database):
        result = run(app, "--name", job)
        message = one_line(result)
    assert "read-only" in message and str(database) in message, message
    with closing(sqlite3.connect(database)) as db:
        assert db.execute("select count(*) from users where name = 'Zed'").fetchone() == (0,)


# -- run-background-job over tenants ---------------------------------------------------------


def test_fan_out_summary_and_failures(demo):
    app, env = demo
    ok = run(app, "--name", "active-only", env=env)
    assert (ok.exit_code, ok.stdout) == (0, "active acme\nactive globex\n")
    assert ok.stderr == "tenants: 2 run, 2 succeeded, 0 failed\n"
    failed = run(app, "--name", "flaky", env=env)
    assert failed.exit_code == 1
    assert failed.stdout == "ok acme\n"
    assert failed.stderr.count("Traceback") == 2
    assert "ValueError: boom in globex\nin background job 'flaky' for tenant 2 (globex)" \
        in failed.stderr
    assert failed.stderr.endswith("tenants: 3 run, 1 succeeded, 2 failed\n")


def test_sys_exit_in_one_tenant_fails_that_tenant_and_the_others_run(demo):
    app, env = demo
    result = run(app, "--name", "exits-in-globex", env=env)
    assert (result.exit_code, result.stdout) == (1, "ran acme\nran initech\n")
    assert "BackgroundJobExit: background job 'exits-in-globex' called sys.exit(3)\n" \
        "in background job 'exits-in-globex' for tenant 2 (globex)" in result.stderr
    assert result.stderr.endswith("tenants: 3 run, 2 succeeded, 1 failed\n")


def test_tenant_option(demo):
    app, env = demo
    one = run(app, "--name", "active-only", "--tenant", "initech", env=env)
    assert (one.exit_code, one.stdout) == (0, "active initech\n")
    two = run(app, "--name", "active-only", "--tenant", "2", "--tenant", "acme", env=env)
    assert two.stdout == "active globex\nactive acme\n"


def test_a_tenant_chosen_twice_runs_once(demo):
    app, env = demo
    result = run(app, "--name", "active-only", "--tenant", "acme", "--tenant", "1",
                 "--tenant", "acme", env=env)
    assert (result.exit_code, result.stdout) == (0, "active acme\n")
    assert result.stderr == "tenants: 1 run, 1 succeeded, 0 failed\n"


@pytest.mark.parametrize("ref", ["²", "٣", "99999999999999999999999", "2147483648", "acmee"])
def test_an_unknown_tenant_is_one_line(demo, ref):
    app, env = demo
    message = one_line(run(app, "--name", "active-only", "--tenant", ref, env=env))
    assert message.startswith(f"unknown tenant {ref!r}")


@pytest.mark.parametrize(("job", "code", "stderr"), [
    ("nobody", 0, "no tenants selected for 'nobody'; nothing ran\n"),
    ("filter-returns-list", 2,
     "pinrepl: background job 'filter-returns-list': tenants_filter must return a query of "
     "tenants (like tenants.where(active=True)), not list\n"),
])
def test_tenants_filter_outcomes(demo, job, code, stderr):
    app, env = demo
    result = run(app, "--name", job, env=env)
    assert (result.exit_code, result.stderr, result.stdout) == (code, stderr, "")


@pytest.mark.parametrize(("job", "error"), [
    ("filter-raises", "KeyError: 'no such filter'"),
    ("filter-typo", "UnknownColumn: tenants has no column 'plan'"),
])
def test_a_tenants_filter_that_raises_is_a_job_failure(demo, job, error):
    app, env = demo
    result = run(app, "--name", job, env=env)
    assert result.exit_code == 1
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert f"{error}" in result.stderr
    assert result.stderr.endswith(f"\nin tenants_filter of background job '{job}'\n")


def test_no_tenants_table(tmp_path):
    root = write_app(tmp_path / "bare", {"flaky.py": JOBS["flaky.py"]})
    sqlite3.connect(root / "pinrepl.db").close()
    assert one_line(run(root, "--name", "flaky")) == (
        "background job 'flaky' is multi-tenant but the database has no table 'tenants'; "
        "create it with: pinrepl init-database"
    )


SLOW = {"slow.py": """
    import asyncio
    from pinrepl import BackgroundJob

    class Slow(BackgroundJob):
        multi_tenant = True

        async def run(self):
            async with self.database.transaction():
                await self.database.users.insert(name="half-done", email="x")
                print("started", self.tenant.name, flush=True)
                await asyncio.sleep(60)
    """}


def test_ctrl_c_mid_fan_out_rolls_back_and_exits_130(tmp_path):
    app = write_example_app(tmp_path / "app", SLOW)
    process = subprocess.Popen(
        [sys.executable, "-m", "pinrepl", "run-background-job", "--name", "slow"],
        cwd=app, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert process.stdout.readline() == "started acme\n"
    started = time.monotonic()
    os.kill(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=10)
    assert time.monotonic() - started < 5
    assert process.returncode == 130
    assert err.endswith("pinrepl: interrupted\n")
    with closing(sqlite3.connect(app / "pinrepl.db", timeout=0.5)) as db:
        count = db.execute("select count(*) from users where name = 'half-done'").fetchone()
        assert count == (0,)
        db.execute("insert into tenants (name, active) values ('unlocked', 1)")  # no lock
        db.commit()


def test_progress_bar_over_tenants_on_a_terminal(tmp_path):
    import pexpect

    app = write_example_app(tmp_path / "app", {"slowish.py": """
        import asyncio
        from pinrepl import BackgroundJob

        class Slowish(BackgroundJob):
            multi_tenant = True

            async def run(self):
                await asyncio.sleep(0.5)
    """})
    child = pexpect.spawn(sys.executable, ["-m", "pinrepl", "run-background-job", "--name",
                                           "slowish"], cwd=str(app),
                          env=clean_env(TERM="xterm"), encoding="utf-8", timeout=20)
    child.expect("tenant acme")  # named while it runs
    child.expect("━")
    child.expect("tenant globex")
    child.expect("tenants: 3 run, 3 succeeded, 0 failed")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


# -- the app and its settings ----------------------------------------------------------------


def test_app_option_and_environment(app, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    by_option = invoke("run-background-job", "--app", app, "--name", "send-email", "a", "b")
    assert by_option.stdout == "email to a: b\n"
    by_env = invoke("run-background-job", "--name", "send-email", "a", "b",
                    env={"PINREPL_APP": str(app)})
    assert by_env.stdout == "email to a: b\n"
    missing = invoke("list-background-jobs", "--app", tmp_path / "nope")
    assert missing.exit_code == 2


def test_the_app_is_found_from_any_folder_inside_it(app, monkeypatch):
    inside = app / "jobs" / "sub"
    inside.mkdir()
    monkeypatch.chdir(inside)
    result = invoke("run-background-job", "--name", "send-email", "a", "b")
    assert (result.exit_code, result.stdout) == (0, "email to a: b\n")
    made = invoke("generate-background-job", "--name", "weekly-report")
    assert made.exit_code == 0, made.output
    assert (app / "jobs" / "weekly_report.py").is_file()


@pytest.mark.parametrize(("pyproject", "message"), [
    (b'[tool.pinrepl]\ntimezone = "Nowhere/x"\n', "unknown timezone 'Nowhere/x' in [tool.pinrepl]"),
    (b"tool = 5\n", "{pyproject}: 'tool' must be a table"),
    (b"[tool]\npinrepl = 5\n", "{pyproject}: [tool.pinrepl] must be a table"),
    (b"[tool.pinrepl]\njobs = '\xe9t\xe9'\n", "{pyproject}: not UTF-8 text"),
    (b"[tool.pinrepl\n", "{pyproject}: Expected ']' at the end of a table declaration"),
])
@pytest.mark.parametrize("command", [["list-background-jobs"],
                                     ["run-background-job", "--name", "send-email"],
                                     ["init-database"], ["generate-background-job", "--name", "x"],
                                     ["transcript", "t.transcript"], ["bot", "--once"],
                                     ["list-background-job-runs"], ["repl", "-e", "1"]])
def test_bad_settings_are_one_line(tmp_path, monkeypatch, pyproject, message, command):
    app = write_app(tmp_path / "a", JOBS)
    (app / "pyproject.toml").write_bytes(pyproject)
    (app / "t.transcript").write_text("pinrepl > 1\n1\n")
    monkeypatch.chdir(app)
    result = invoke(*command)
    assert one_line(result).startswith(message.format(pyproject=app / "pyproject.toml"))
    assert sorted(p.name for p in (app / "jobs").iterdir()) == sorted(JOBS)


def test_broken_models_file_is_one_line(tmp_path):
    app = write_app(tmp_path / "a", JOBS, models="import nope_not_here\n")
    assert one_line(invoke("init-database", "--app", app)) == (
        f"{app / 'models.py'}:1: ModuleNotFoundError: No module named 'nope_not_here'"
    )


@pytest.mark.parametrize("command", ["run-background-job", "list-background-jobs",
                                     "generate-background-job", "init-database", "transcript",
                                     "repl", "bot", "list-background-job-runs"])
def test_every_command_has_help(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "Usage: pinrepl " in result.stdout


def test_python_m_pinrepl_is_the_command():
    script = subprocess.run([sys.executable, "-m", "pinrepl", "--help"], capture_output=True,
                            text=True, cwd=REPO, env=clean_env())
    assert script.returncode == 0 and "run-background-job" in script.stdout


def test_example_app_quick_start(tmp_path):
    env = {"PINREPL_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}"}
    assert invoke("init-database", "--demo", "--app", REPO, env=env).exit_code == 0
    result = run(REPO, "--name", "send-newsletter", env=env)
    assert result.exit_code == 0, result.output
    assert "newsletter sent to alice@acme.example" in result.stdout
    assert "frank@initech.example" not in result.stdout  # initech is inactive
    assert result.stderr == "tenants: 2 run, 2 succeeded, 0 failed\n"
    for name in ("deliver-notifications", "maintenance"):
        assert run(REPO, "--name", name, env=env).exit_code == 0
    assert run(REPO, "--name", "maintenance", env=env).stderr == \
        "INFO jobs.maintenance: removed 0 delivered notifications\n"
    email = run(REPO, "--name", "send-email", "a@b.example", "hi", env=env)
    assert email.stdout == "email to a@b.example: hi\n"
    assert run(REPO, "--name", "risky-operation", env=env).exit_code == 1


MODELS = """
from sqlalchemy.orm import Mapped, mapped_column
from pinrepl import Model

class Order(Model):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    item: Mapped[str]
"""

USES_MODELS = {"place_order.py": """
    from pinrepl import BackgroundJob
    from models import Order

    class PlaceOrder(BackgroundJob):
        async def run(self, item):
            order = await self.database.orders.insert(item=item)
            print(type(order) is Order, Order is self.database.orders.model, order.item)
"""}


MODELS_FIRST = """
import asyncio, sys
from pinrepl import App

async def main():
    async with App.open(sys.argv[1]) as app:
        assert app.models  # the models load before any job file imports them
        await app.run_background_job("place-order", "tea")

asyncio.run(main())
"""


@pytest.mark.parametrize("on_pythonpath", [False, True])
def test_a_job_imports_the_apps_models(tmp_path, on_pythonpath):
    """In a process of its own: PYTHONPATH is the interpreter's, read when it starts."""
    app = write_app(tmp_path / "app", USES_MODELS, models=MODELS)
    env = clean_env(**({"PYTHONPATH": str(app)} if on_pythonpath else {}))
    assert run_cli("init-database", cwd=app, env=env).returncode == 0
    jobs_first = run_cli("run-background-job", "--app", str(app), "--name", "place-order",
                         "tea", cwd=tmp_path, env=env)
    models_first = subprocess.run([sys.executable, "-c", MODELS_FIRST, str(app)], cwd=tmp_path,
                                  env=env, capture_output=True, text=True, timeout=60)
    for result in (jobs_first, models_first):
        assert (result.returncode, result.stdout, result.stderr) == (0, "True True tea\n", "")


# -- list-background-jobs --------------------------------------------------------------------

GOOD = """
from pinrepl import BackgroundJob

class Good(BackgroundJob):
    def meta(self):
        self.schedule("0 * * * *")
        self.schedule("30 0 12 * * 1")

    async def run(self):
        pass
"""


def test_list_jobs_and_load_errors(tmp_path, monkeypatch):
    app = write_app(tmp_path / "a", {"good.py": GOOD, "syntax.py": "def oops(:\n"}, pyproject="""
        [tool.pinrepl]
        timezone = "Europe/Paris"
    """)
    monkeypatch.chdir(app)
    result = invoke("list-background-jobs", "--json", "--app", app)
    assert result.exit_code == 1  # a load error is a problem an ops script must see
    listing = json.loads(result.stdout)
    assert listing["timezone"] == "Europe/Paris"
    (good,) = listing["jobs"]
    assert good["name"] == "good"
    assert sorted(s["cron"] for s in good["schedules"]) == ["0 * * * *", "30 0 12 * * 1"]
    assert good["next_run"].endswith(("+01:00", "+02:00"))
    assert listing["errors"] == [
        {"file": "jobs/syntax.py", "error": "SyntaxError: invalid syntax (line 1)"}
    ]
    table = invoke("list-background-jobs", "--app", app)
    assert "good" in table.stdout and "0 * * * *" in table.stdout
    assert "CET" in table.stdout or "CEST" in table.stdout
    assert "load error: jobs/syntax.py: SyntaxError" in table.stderr


def test_list_with_no_errors_exits_0(tmp_path):
    result = invoke("list-background-jobs", "--json", "--app",
                    write_app(tmp_path / "a", {"good.py": GOOD}))
    assert result.exit_code == 0
    assert json.loads(result.stdout)["errors"] == []


def test_a_cron_that_never_fires_is_a_load_error_and_the_rest_are_listed(tmp_path,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = write_app(tmp_path / "a", {"good.py": GOOD, "feb_31.py": """
        from pinrepl import BackgroundJob

        class Feb31(BackgroundJob):
            def meta(self):
                self.schedule("0 0 31 2 *")

            async def run(self):
                pass
    """})
    result = invoke("list-background-jobs", "--json", "--app", app)
    assert result.exit_code == 1
    listing = json.loads(result.stdout)
    assert [job["name"] for job in listing["jobs"]] == ["good"]
    ((error),) = listing["errors"]
    assert error["file"] == "a/jobs/feb_31.py" and "'0 0 31 2 *'" in error["error"]
    assert "never" in error["error"]


@pytest.mark.parametrize("command", [["list-background-jobs"],
                                     ["run-background-job", "--name", "good"],
                                     ["bot", "--once"], ["init-database"]])
def test_a_missing_jobs_folder_is_one_line_saying_where_it_looked(tmp_path, command):
    app = write_app(tmp_path / "a", {"good.py": GOOD}, pyproject="""
        [tool.pinrepl]
        jobs = "tasks"
    """)
    assert f"no jobs folder at {app / 'tasks'}" in one_line(invoke(*command, "--app", app))
    assert not (app / "pinrepl.db").exists()


def test_init_database_in_a_folder_that_is_no_app_creates_nothing(tmp_path, monkeypatch):
    folder = tmp_path / "not-an-app"
    folder.mkdir()
    monkeypatch.chdir(folder)
    assert one_line(invoke("init-database", "--app", folder)) == (
        f"no jobs folder at {folder / 'jobs'} (the app is {folder})")
    assert list(folder.iterdir()) == []


# -- generate-background-job -------------------------------------------------------------------


def test_generate_background_job(app):
    result = invoke("generate-background-job", "--app", app, "--name", "reports/daily-summary")
    assert result.exit_code == 0, result.output
    path = app / "jobs" / "reports" / "daily_summary.py"
    assert result.stdout == f"created job 'reports/daily-summary' in {path}\n"
    listing = json.loads(invoke("list-background-jobs", "--json", "--app", app).stdout)
    (made,) = [job for job in listing["jobs"] if job["name"] == "reports/daily-summary"]
    assert [s["cron"] for s in made["schedules"]] == ["0 * * * *"]
    ran = run(app, "--name", "reports/daily-summary", "x")
    assert ran.stdout == "reports/daily-summary: ran with ('x',) {}\n"


@pytest.mark.parametrize("name", ["weekly_report", "weekly-report"])
def test_generate_takes_the_file_name_or_the_job_name(app, name):
    result = invoke("generate-background-job", "--app", app, "--name", name)
    path = app / "jobs" / "weekly_report.py"
    assert (result.exit_code, result.stdout) == (
        0, f"created job 'weekly-report' in {path}\n")
    assert "class WeeklyReport(BackgroundJob):" in path.read_text()
    assert run(app, "--name", "weekly-report").exit_code == 0


@pytest.mark.parametrize("name", ["../x", "", "two words", "Caps", "-x", "x/../y", "/x",
                                  "1abc", "reports/2024", "a__b", "a_"])
def test_generate_refuses_names_that_are_not_job_names(app, name):
    before = sorted(p.name for p in (app / "jobs").rglob("*"))
    result = invoke("generate-background-job", "--app", app, "--name", name)
    assert "is not a job name" in one_line(result)
    assert sorted(p.name for p in (app / "jobs").rglob("*")) == before


@pytest.mark.parametrize("name", ["send-email", "send_email"])
def test_generate_refuses_an_existing_job(app, name):
    original = (app / "jobs" / "send_email.py").read_text()
    result = invoke("generate-background-job", "--app", app, "--name", name)
    assert one_line(result).startswith("job 'send-email' exists already")
    assert (app / "jobs" / "send_email.py").read_text() == original


# -- transcript ------------------------------------------------------------------------------

TENANTS = {
    "a_inserts.transcript": "pinrepl > await database.tenants.insert(name='extra')\n...\n",
    "b_counts.transcript": "pinrepl > await database.tenants.count()\n3\n",
}


def write_transcripts(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return [folder / name for name in files]


def test_each_transcript_replays_in_a_sandbox_of_its_own(app):
    assert invoke("init-database", "--demo", "--app", app).exit_code == 0
    files = write_transcripts(app / "tests", TENANTS)
    for database in ("test", "app"):
        result = invoke("transcript", "--database", database, *files)
        assert result.exit_code == 0, result.output
        assert result.stdout.count("1 of 1 examples passed") == 2


def test_transcripts_replay_on_a_test_database_unless_told_the_apps(app):
    assert invoke("init-database", "--demo", "--app", app).exit_code == 0
    with closing(sqlite3.connect(app / "pinrepl.db")) as db, db:
        db.execute("insert into tenants (name, active) values ('developers-own', 1)")
    (path,) = write_transcripts(app / "tests", {"t.transcript": TENANTS["b_counts.transcript"]})
    assert invoke("transcript", path).exit_code == 0  # a fresh database with the demo data
    on_app = invoke("transcript", "--database", "app", path)
    assert on_app.exit_code == 1
    assert "-3\n+4" in on_app.stderr
    with closing(sqlite3.connect(app / "pinrepl.db")) as db:  # the sandbox left it as found
        assert db.execute("select count(*) from tenants").fetchone() == (4,)


@needs_postgres
def test_on_postgresql_the_test_database_is_made_and_dropped(app):
    import asyncio

    import asyncpg
    from sqlalchemy.engine import make_url

    name = f"pinrepl_t{os.getpid()}"
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    (path,) = write_transcripts(app / "tests", {"t.transcript": (
        "pinrepl > from sqlalchemy import text\n"
        "pinrepl > (await database.session.execute(text('select current_database()')))"
        ".scalar()\n"
        f"'{name}_test'\n\n" + TENANTS["b_counts.transcript"]
    )})
    result = invoke("transcript", path, env={"PINREPL_DATABASE_URL": url})
    assert result.exit_code == 0, result.output

    async def databases():
        connection = await asyncpg.connect(PG_URL)
        try:
            return {row[0] for row in await connection.fetch("select datname from pg_database")}
        finally:
            await connection.close()

    assert not {name, f"{name}_test"} & asyncio.run(databases())


def test_a_transcript_replays_against_the_nearest_app_above_it(app, tmp_path, monkeypatch):
    files = write_transcripts(app / "tests" / "deep", {"t.transcript": (
        "pinrepl > await runBackgroundJob('send-email', 'a', 'b')\nemail to a: b\n")})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = invoke("transcript", *files)
    assert (result.exit_code, result.stderr) == (0, ""), result.output


def test_a_folder_replays_every_test_transcript_below_it_as_pytest_collects(app, monkeypatch):
    fails = "pinrepl > 1\n2\n"
    write_transcripts(app / "tests", {
        "test_counts.transcript": "pinrepl > 1 + 1\n2\n",
        "notes.transcript": fails,  # not a test_ file: pytest leaves it out too
    })
    write_transcripts(app / "tests" / "deep", {"test_email.transcript": (
        "pinrepl > await runBackgroundJob('send-email', 'a', 'b')\nemail to a: b\n")})
    write_transcripts(app / "tests" / ".hidden", {"test_hidden.transcript": fails})
    write_transcripts(app / "tests" / "venv", {"test_venv.transcript": fails})
    monkeypatch.chdir(app)
    result = invoke("transcript", "tests", "tests/deep/test_email.transcript")
    assert (result.exit_code, result.stderr) == (0, ""), result.output
    assert result.stdout == (
        "tests/deep/test_email.transcript: 1 of 1 examples passed\n"  # once, though named
        "tests/test_counts.transcript: 1 of 1 examples passed\n"
    )


def test_a_folder_without_test_transcripts_is_one_line(app, monkeypatch):
    write_transcripts(app / "tests", {"notes.transcript": "pinrepl > 1\n1\n"})
    monkeypatch.chdir(app)
    assert one_line(invoke("transcript", "tests")) == (
        "Invalid value for 'PATHS...': no test_*.transcript file below folder tests "
        "(see: pinrepl transcript --help)")


@pytest.mark.parametrize(("args", "expected"), [
    (["nosuch"], "No such command 'nosuch'. (see: pinrepl --help)"),
    (["run-background-job", "--bogus"],
     "No such option '--bogus'. (see: pinrepl run-background-job --help)"),
    (["run-background-job"],
     "Missing option '--name'. (see: pinrepl run-background-job --help)"),
])
def test_click_usage_errors_are_one_line_too(args, expected):
    assert one_line(invoke(*args)) == expected
