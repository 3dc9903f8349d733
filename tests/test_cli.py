"""The `pinrepl` command in a subprocess, on temp app folders."""

from __future__ import annotations

import sqlite3
import sys
from contextlib import closing

import pytest

from .conftest import REPO, clean_env, needs_postgres, run_cli, write_app

JOBS = {
    "send_email.py": """
        from pinrepl import BackgroundJob

        class SendEmail(BackgroundJob):
            async def run(self, address, message):
                print(f"email to {address}: {message}")
    """,
    "risky_operation.py": """
        from pinrepl import BackgroundJob

        class RiskyOperation(BackgroundJob):
            async def run(self):
                raise RuntimeError("the risky operation failed")
    """,
    "count_users.py": """
        from pinrepl import BackgroundJob

        class CountUsers(BackgroundJob):
            async def run(self):
                print("users:", await self.database.users.count())
    """,
}

MODELS = """
from sqlalchemy.orm import Mapped, mapped_column
from pinrepl import Model

class User(Model):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]

async def seed_demo(database):
    await database.users.insert(name="Ann")
"""


@pytest.fixture
def app(tmp_path):
    return write_app(tmp_path / "app", JOBS, models=MODELS)


def test_job_runs_with_arguments_and_is_awaited(app):
    result = run_cli("run-background-job", "--name", "send-email", "a@b.example", "Welcome!",
                     cwd=app)
    assert (result.returncode, result.stdout, result.stderr) == (
        0, "email to a@b.example: Welcome!\n", "")


def test_failing_job_exits_1_with_its_traceback(app):
    result = run_cli("run-background-job", "--name", "risky-operation", cwd=app)
    assert result.returncode == 1
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert "RuntimeError: the risky operation failed\nin background job 'risky-operation'" \
        in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--name", "send-emial"],
     "pinrepl: unknown background job 'send-emial' (did you mean: send-email?)\n"),
    (["--name", "send-email", "only-address"],
     "pinrepl: background job 'send-email': missing a required argument: 'message' "
     "(run(address, message) was given 1 positional argument)\n"),
    (["--name", "send-email", "a", "b", "c"],
     "pinrepl: background job 'send-email': too many positional arguments "
     "(run(address, message) was given 3 positional arguments)\n"),
    (["--name", "send-email", "a", "b", "--kwarg", "cc=x"],
     "pinrepl: background job 'send-email': got an unexpected keyword argument 'cc' "
     "(run(address, message) was given 2 positional arguments and keyword argument(s) cc)\n"),
])
def test_usage_errors_exit_2_with_one_line(app, args, message):
    result = run_cli("run-background-job", *args, cwd=app)
    assert (result.returncode, result.stderr, result.stdout) == (2, message, "")


def test_missing_name_is_a_usage_error(app):
    result = run_cli("run-background-job", cwd=app)
    assert result.returncode == 2
    assert "Missing option '--name'" in result.stderr


def test_init_database_then_run_a_job_that_reads_it(app):
    result = run_cli("run-background-job", "--name", "count-users", cwd=app)
    assert result.returncode == 2
    assert result.stderr.startswith("pinrepl: no database at ")
    assert "pinrepl init-database" in result.stderr
    assert not (app / "pinrepl.db").exists()  # an error changes nothing

    result = run_cli("init-database", "--demo", cwd=app)
    assert result.returncode == 0, result.stderr
    assert "demo data added" in result.stdout
    again = run_cli("init-database", "--demo", cwd=app)
    assert "already present" in again.stdout
    with closing(sqlite3.connect(app / "pinrepl.db")) as db:
        rows = db.execute("select count(*) from users").fetchone()
    assert rows == (1,)
    assert run_cli("run-background-job", "--name", "count-users", cwd=app).stdout == "users: 1\n"


@pytest.mark.parametrize(("url", "message"), [
    ("not a url", "pinrepl: cannot parse database URL 'not a url'\n"),
    ("nosuchdb://x/y", "pinrepl: cannot use database URL nosuchdb://x/y: "),
    ("postgresql+asyncpg://nobody:secret@127.0.0.1:1/db",
     "pinrepl: cannot reach database postgresql+asyncpg://nobody:***@127.0.0.1:1/db: "),
    ("sqlite:////nonexistent-dir/x.db", "pinrepl: no database at /nonexistent-dir/x.db"),
])
def test_bad_database_urls_are_one_line(app, url, message):
    result = run_cli("run-background-job", "--name", "count-users", cwd=app,
                     env=clean_env(PINREPL_DATABASE_URL=url))
    assert result.returncode == 2
    assert result.stderr.startswith(message)
    assert result.stderr.count("\n") == 1
    assert "secret" not in result.stderr


def test_init_database_on_an_unreachable_server(app):
    result = run_cli("init-database", cwd=app, env=clean_env(
        PINREPL_DATABASE_URL="postgresql://127.0.0.1:1/db"))
    assert result.returncode == 2
    assert result.stderr.startswith("pinrepl: cannot reach database postgresql+asyncpg://")


@needs_postgres
def test_postgres_database(app):
    from .conftest import PG_URL

    env = clean_env(PINREPL_DATABASE_URL=PG_URL)
    result = run_cli("init-database", cwd=app, env=env)
    assert result.returncode == 0, result.stderr
    result = run_cli("run-background-job", "--name", "count-users", cwd=app, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("users: ")


def test_generate_background_job(app):
    result = run_cli("generate-background-job", "--name", "reports/daily-summary", cwd=app)
    assert result.returncode == 0, result.stderr
    path = app / "jobs" / "reports" / "daily_summary.py"
    assert path.is_file()
    listing = run_cli("list-background-jobs", "--json", cwd=app)
    assert '"name": "reports/daily-summary"' in listing.stdout
    assert '"0 * * * *"' in listing.stdout
    ran = run_cli("run-background-job", "--name", "reports/daily-summary", "x", cwd=app)
    assert ran.stdout == "reports/daily-summary: ran with ('x',) {}\n"


@pytest.mark.parametrize("name", ["../x", "", "two words", "Caps", "a_b", "-x", "x/../y", "/x"])
def test_generate_refuses_names_that_are_not_job_names(app, name):
    before = sorted(p.name for p in (app / "jobs").rglob("*"))
    result = run_cli("generate-background-job", "--name", name, cwd=app)
    assert result.returncode == 2
    assert "is not a job name" in result.stderr and result.stderr.count("\n") == 1
    assert sorted(p.name for p in (app / "jobs").rglob("*")) == before


def test_generate_refuses_an_existing_job(app):
    original = (app / "jobs" / "send_email.py").read_text()
    result = run_cli("generate-background-job", "--name", "send-email", cwd=app)
    assert result.returncode == 2
    assert result.stderr.startswith("pinrepl: job 'send-email' exists already")
    assert (app / "jobs" / "send_email.py").read_text() == original


def test_an_app_folder_without_jobs_says_so(tmp_path):
    result = run_cli("run-background-job", "--name", "x", cwd=tmp_path)
    assert (result.returncode, result.stderr) == (
        2, f"pinrepl: unknown background job 'x'; there is no jobs folder at {tmp_path}/jobs\n")


def test_app_option_and_environment(app, tmp_path):
    by_option = run_cli("run-background-job", "--app", str(app), "--name", "send-email", "a", "b",
                        cwd=tmp_path)
    assert by_option.stdout == "email to a: b\n"
    by_env = run_cli("run-background-job", "--name", "send-email", "a", "b", cwd=tmp_path,
                     env=clean_env(PINREPL_APP=str(app)))
    assert by_env.stdout == "email to a: b\n"
    missing = run_cli("list-background-jobs", "--app", str(tmp_path / "nope"), cwd=tmp_path)
    assert missing.returncode == 2


def test_bad_settings_are_one_line(tmp_path):
    app = write_app(tmp_path / "a", JOBS, pyproject='[tool.pinrepl]\ntimezone = "Nowhere/x"\n')
    for command in (["list-background-jobs"], ["run-background-job", "--name", "send-email"],
                    ["init-database"], ["generate-background-job", "--name", "x"]):
        result = run_cli(*command, cwd=app)
        assert (result.returncode, result.stderr) == (
            2, "pinrepl: unknown timezone 'Nowhere/x' in [tool.pinrepl]\n"), command


def test_broken_models_file_is_one_line(tmp_path):
    app = write_app(tmp_path / "a", JOBS, models="import nope_not_here\n")
    result = run_cli("init-database", cwd=app)
    assert result.returncode == 2
    assert result.stderr == (
        f"pinrepl: {app / 'models.py'}:1: ModuleNotFoundError: No module named 'nope_not_here'\n"
    )
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("command", ["run-background-job", "list-background-jobs",
                                     "generate-background-job", "init-database"])
def test_every_command_has_help(app, command):
    result = run_cli(command, "--help", cwd=app)
    assert result.returncode == 0 and "Usage: pinrepl " + command in result.stdout


def test_console_script_and_module_agree():
    import subprocess

    script = subprocess.run([sys.executable, "-m", "pinrepl", "--help"], capture_output=True,
                            text=True, cwd=REPO, env=clean_env())
    assert script.returncode == 0 and "run-background-job" in script.stdout


def test_example_app_quick_start(tmp_path):
    env = clean_env(PINREPL_DATABASE_URL=f"sqlite:///{tmp_path / 'demo.db'}")
    assert run_cli("init-database", "--demo", cwd=REPO, env=env).returncode == 0
    result = run_cli("run-background-job", "--name", "send-newsletter", cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr
    assert "newsletter sent to alice@acme.example" in result.stdout
    assert "frank@initech.example" not in result.stdout  # initech is inactive
    assert result.stderr == "tenants: 2 run, 2 succeeded, 0 failed\n"
    for name in ("deliver-notifications", "maintenance"):
        assert run_cli("run-background-job", "--name", name, cwd=REPO, env=env).returncode == 0
    email = run_cli("run-background-job", "--name", "send-email", "a@b.example", "hi", cwd=REPO,
                    env=env)
    assert email.stdout == "email to a@b.example: hi\n"
    assert run_cli("run-background-job", "--name", "risky-operation", cwd=REPO,
                   env=env).returncode == 1


def test_a_job_whose_own_code_hits_a_pinrepl_error_is_a_job_failure(tmp_path):
    app = write_app(tmp_path / "a", {"typo.py": """
        from pinrepl import BackgroundJob

        class Typo(BackgroundJob):
            async def run(self):
                await self.database.userz.count()
    """, "calls_unknown.py": """
        from pinrepl import BackgroundJob

        class CallsUnknown(BackgroundJob):
            async def run(self):
                await self.run_background_job("nope")
    """}, models=MODELS)
    assert run_cli("init-database", cwd=app).returncode == 0
    for name, message in (("typo", "UnknownTable: unknown table 'userz'"),
                          ("calls-unknown", "UnknownBackgroundJob: unknown background job")):
        result = run_cli("run-background-job", "--name", name, cwd=app)
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith("Traceback (most recent call last):")
        assert message in result.stderr
        assert f"in background job '{name}'" in result.stderr


def test_running_a_job_that_failed_to_load_is_one_line(tmp_path):
    app = write_app(tmp_path / "a", {"broken.py": "def (:\n"})
    result = run_cli("run-background-job", "--name", "broken", cwd=app)
    assert (result.returncode, result.stderr) == (
        2, "pinrepl: jobs/broken.py: SyntaxError: invalid syntax (line 1)\n")
