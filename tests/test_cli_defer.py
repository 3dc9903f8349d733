"""`pinrepl defer` as a script uses it: the run's id alone on stdout, the run queued as
asked (arguments, tenants, due time, key, priority, timeout), every mistake one line, exit
2 and nothing queued; with `--wait`, the exit status of the run (0, 1) as
`run-background-job` gives it, and Ctrl-C stops the waiting, not the run.

The bot is played in this process (`BotDouble`: claiming and finishing rows through the
repository), so that waiting, progress and exit codes are tested apart from the bot."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pinrepl import App
from pinrepl.db.models import utcnow
from pinrepl.runs.repository import Result, RunRow
from pinrepl.runs.status import Status

from .conftest import REPO, clean_env, invoke, one_line, write_app

JOBS = {
    "hello.py": """
        from pinrepl import BackgroundJob

        class Hello(BackgroundJob):
            async def run(self, name="world", *, loud="no"):
                print("hello", name)
    """,
    "everyone.py": """
        from pinrepl import BackgroundJob

        class Everyone(BackgroundJob):
            multi_tenant = True

            async def run(self):
                print("hi", self.tenant.name)
    """,
}

TRACEBACK = ('Traceback (most recent call last):\n  File "jobs/hello.py", line 5, in run\n'
             '    raise ValueError("boom")\nValueError: boom\n')


class BotDouble:
    """A bot played in the test's process through the runs repository: it claims what is
    due, expands fan-outs over the tenants their job selects, and ends runs as told."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env

    def claim(self, parent: int | None = None) -> list[RunRow]:
        async def claim(app: App) -> list[RunRow]:
            return await app.repository.claim("double", app.jobs.names, 100, utcnow(),
                                              parent=parent)
        return self._with_app(claim)

    def expand(self, fan_out: RunRow) -> list[RunRow]:
        """The fan-out's tenant runs, claimed."""
        async def expand(app: App) -> None:
            tenants = await app.runner.select_tenants(app.jobs.get(fan_out.job))
            await app.repository.expand(fan_out, "double", [t.id for t in tenants], utcnow())
        self._with_app(expand)
        return self.claim(parent=fan_out.id)

    def finish(self, run: RunRow, failed: bool = False) -> None:
        async def finish(app: App) -> None:
            now = utcnow()
            result = Result(run.id, Status.FAILED if failed else Status.SUCCEEDED, now,
                            error="ValueError: boom" if failed else None,
                            traceback=TRACEBACK if failed else None, started_at=now,
                            parent_id=run.parent_id, bot="double")
            await app.repository.finish([result], now)
        self._with_app(finish)

    def _with_app(self, use):
        async def main():
            async with App.open(self.root, environ=self.env) as app:
                return await use(app)
        return asyncio.run(main())


def defer_app(tmp_path: Path, database_url: str) -> tuple[Path, dict[str, str]]:
    """An app of `JOBS` over the example app's models and demo data (tenants acme,
    globex, initech), in Europe/Paris, and the environment that points at its database."""
    root = write_app(tmp_path / "app", JOBS,
                     pyproject='[tool.pinrepl]\ntimezone = "Europe/Paris"\n')
    (root / "models.py").symlink_to(REPO / "models.py")
    env = {"PINREPL_DATABASE_URL": database_url}
    result = invoke("init-database", "--demo", "--app", root, env=env)
    assert result.exit_code == 0, result.output
    return root, env


@pytest.fixture
def app(tmp_path: Path, database_url: str) -> tuple[Path, dict[str, str]]:
    return defer_app(tmp_path, database_url)


def defer(app: tuple[Path, dict[str, str]], *args: str):
    root, env = app
    return invoke("defer", "--app", root, *args, env=env)


def runs(app: tuple[Path, dict[str, str]]) -> list[dict]:
    root, env = app
    result = invoke("list-background-job-runs", "--json", "--app", root, env=env)
    assert result.exit_code == 0, result.output
    return sorted(json.loads(result.stdout), key=lambda run: run["id"])


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text)


def tenant_ids(app: tuple[Path, dict[str, str]]) -> dict[str, int]:
    root, env = app
    result = invoke("repl", "--app", root, "-e",
                    "print({t.name: t.id for t in await database.tenants.all()})", env=env)
    assert result.exit_code == 0, result.output
    return eval(result.stdout)


# -- queueing ---------------------------------------------------------------------------


def test_it_prints_only_the_id_and_queues_the_run_as_asked(app):
    result = defer(app, "--name", "hello", "Ada", "--kwarg", "loud=yes", "--priority", "-5",
                   "--key", "greet-ada", "--timeout", "90")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    (run,) = runs(app)
    assert result.stdout == f"{run['id']}\n"
    assert run["job"] == "hello" and run["status"] == "queued" and run["origin"] == "defer"
    assert run["args"] == {"args": ["Ada"], "kwargs": {"loud": "yes"}}
    assert (run["priority"], run["key"], run["timeout"]) == (-5, "greet-ada", 90)
    assert run["tenant_id"] is None and run["parent_id"] is None
    assert moment(run["not_before"]) == moment(run["created_at"])  # due now


def test_the_same_key_while_queued_is_the_same_run(app):
    first = defer(app, "--name", "hello", "--key", "once")
    second = defer(app, "--name", "hello", "Bob", "--key", "once")
    assert first.stdout == second.stdout and second.exit_code == 0
    assert len(runs(app)) == 1


def test_a_naive_at_is_in_the_apps_timezone_and_an_offset_is_kept(app):
    defer(app, "--name", "hello", "--at", "2026-12-24T18:00")
    defer(app, "--name", "hello", "--at", "2026-12-24T18:00+00:00")
    defer(app, "--name", "hello", "--at", "2026-07-01 09:30:00")  # summer time
    due = [moment(run["scheduled_for"]) for run in runs(app)]
    assert due == [datetime(2026, 12, 24, 17, 0, tzinfo=UTC),
                   datetime(2026, 12, 24, 18, 0, tzinfo=UTC),
                   datetime(2026, 7, 1, 7, 30, tzinfo=UTC)]
    assert all(moment(run["not_before"]) == at for run, at in zip(runs(app), due, strict=True))


@pytest.mark.parametrize(("given", "seconds"), [
    ("90", 90), ("30s", 30), ("5m", 300), ("2h", 7200), ("1d", 86400), ("1.5h", 5400),
    ("0", 0),
])
def test_in_is_a_duration_from_now(app, given, seconds):
    result = defer(app, "--name", "hello", "--in", given)
    assert result.exit_code == 0, result.output
    (run,) = runs(app)
    assert moment(run["scheduled_for"]) - moment(run["created_at"]) \
        == timedelta(seconds=seconds)
    assert run["status"] == "queued"


def test_a_tenant_given_is_a_fan_out_over_that_tenant_only(app):
    ids = tenant_ids(app)
    result = defer(app, "--name", "everyone", "--tenant", "globex")
    assert result.exit_code == 0, result.output
    parent, child = runs(app)
    assert result.stdout == f"{parent['id']}\n"
    assert (parent["tenant_id"], parent["status"]) == (None, "running")
    assert (child["parent_id"], child["tenant_id"], child["status"]) == \
        (parent["id"], ids["globex"], "queued")


def test_a_multi_tenant_job_is_one_fan_out_row_for_the_bots_to_expand(app):
    defer(app, "--name", "everyone")
    (run,) = runs(app)
    assert (run["job"], run["tenant_id"], run["status"]) == ("everyone", None, "queued")


# -- mistakes: one line, exit 2, nothing queued -------------------------------------------


@pytest.mark.parametrize(("args", "said"), [
    (["--name", "helo"], "unknown background job 'helo'"),
    (["--name", "hello", "a", "b"], "too many positional arguments"),
    (["--name", "hello", "--kwarg", "shout=1"], "unexpected keyword argument 'shout'"),
    (["--name", "hello", "--kwarg", "loud"], "--kwarg 'loud' is not KEY=VALUE"),
    (["--name", "everyone", "--tenant", "umbrella"], "unknown tenant 'umbrella'"),
    (["--name", "hello", "--at", "christmas"],
     "Invalid value for '--at': 'christmas' is not an ISO 8601 date and time"),
    (["--name", "hello", "--in", "5 minutes"],
     "Invalid value for '--in': '5 minutes' is not a duration"),
    (["--name", "hello", "--in", "-5m"], "is not a duration"),
    (["--name", "hello", "--in", "400d"], "at most a year"),
    (["--name", "hello", "--in", "5m", "--at", "2026-12-24T18:00"],
     "give --at or --in, not both"),
    (["--name", "hello", "--timeout", "0"], "Invalid value for '--timeout'"),
    (["--name", "hello", "--priority", "high"], "'high' is not a valid whole number"),
    (["--name", "hello", "--priority", str(2**31)], "is not a priority: a whole number from"),
    (["--name", "hello", "--key", "k" * 301], "key= must be a text of 1 to 300 characters"),
    (["--name", "hello", "--at", "9999-12-31T23:59:59-05:00"],
     "at=9999-12-31T23:59:59-05:00 is out of range: in UTC it must fall within the years 1 "
     "to 9999"),
    (["--name", "hello", "--at", "0001-01-01T00:00+05:00"], "at=0001-01-01T00:00:00+05:00 is"),
    (["hello"], "Missing option '--name'"),
])
def test_a_mistake_is_one_line_exit_2_and_queues_nothing(app, args, said):
    assert said in one_line(defer(app, *args))
    assert runs(app) == []


def test_without_pinrepls_tables_it_says_init_database(tmp_path, database_url):
    root = write_app(tmp_path / "app", JOBS)
    if database_url.startswith("sqlite"):  # a database, of other tables
        path = database_url.removeprefix("sqlite+aiosqlite:///")
        subprocess.run([sys.executable, "-c", f"import sqlite3; sqlite3.connect({path!r})"
                        ".execute('create table other (a)')"], check=True)
    line = one_line(invoke("defer", "--app", root, "--name", "hello",
                           env={"PINREPL_DATABASE_URL": database_url}))
    assert "background_job_runs" in line and "pinrepl init-database" in line


def test_without_a_database_it_says_init_database(tmp_path):
    root = write_app(tmp_path / "app", JOBS)
    line = one_line(invoke("defer", "--app", root, "--name", "hello"))
    assert line == f"no database at {root / 'pinrepl.db'}; create it with: " \
                   "pinrepl init-database"
    assert not (root / "pinrepl.db").exists()


def test_an_unreachable_database_is_one_line(tmp_path):
    root = write_app(tmp_path / "app", JOBS)
    line = one_line(invoke("defer", "--app", root, "--name", "hello",
                           env={"PINREPL_DATABASE_URL": "postgresql://u@127.0.0.1:1/x"}))
    assert line.startswith("cannot reach database")


# -- --wait ---------------------------------------------------------------------------------


class Waiting:
    """`pinrepl defer ... --wait` in a subprocess, while the test plays the bot."""

    def __init__(self, app: tuple[Path, dict[str, str]], *args: str) -> None:
        root, env = app
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pinrepl", "defer", *args, "--wait"], cwd=root,
            env=clean_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.id = int(self.process.stdout.readline())

    def ended(self) -> tuple[int, str, str]:
        out, err = self.process.communicate(timeout=30)
        return self.process.returncode, out, err


def test_wait_exits_0_when_the_run_succeeded(app):
    waiting = Waiting(app, "--name", "hello")
    bot = BotDouble(*app)
    (run,) = bot.claim()
    assert run.id == waiting.id
    time.sleep(0.3)  # it waits while the run runs
    assert waiting.process.poll() is None
    bot.finish(run)
    assert waiting.ended() == (0, "", "")


def test_wait_exits_1_and_shows_the_failure_as_run_background_job_does(app):
    waiting = Waiting(app, "--name", "hello")
    bot = BotDouble(*app)
    (run,) = bot.claim()
    bot.finish(run, failed=True)
    code, out, err = waiting.ended()
    assert (code, out) == (1, "")
    assert err.startswith(TRACEBACK)
    assert f"background job 'hello' failed (run {run.id}, try 1): ValueError: boom" in err
    assert "pinrepl/" not in err  # no frames of pinrepl's


def test_wait_on_a_fan_out_says_each_failed_tenant_and_the_summary(app):
    ids = tenant_ids(app)
    waiting = Waiting(app, "--name", "everyone")
    bot = BotDouble(*app)
    (fan_out,) = bot.claim()
    tenants = bot.expand(fan_out)
    assert {run.tenant_id for run in tenants} == {ids["acme"], ids["globex"], ids["initech"]}
    for run in tenants:
        bot.finish(run, failed=run.tenant_id == ids["globex"])
    code, out, err = waiting.ended()
    assert (code, out) == (1, "")
    assert f"for tenant {ids['globex']} failed" in err and err.count("ValueError: boom\n") == 2
    assert err.endswith("tenants: 3 run, 2 succeeded, 1 failed\n")
    assert [run["status"] for run in runs(app) if run["id"] == waiting.id] == ["failed"]


def test_wait_on_a_fan_out_that_succeeded_prints_the_summary(app):
    waiting = Waiting(app, "--name", "everyone")
    bot = BotDouble(*app)
    (fan_out,) = bot.claim()
    for run in bot.expand(fan_out):
        bot.finish(run)
    assert waiting.ended() == (0, "", "tenants: 3 run, 3 succeeded, 0 failed\n")


def test_ctrl_c_stops_the_waiting_not_the_run(app):
    waiting = Waiting(app, "--name", "hello")
    time.sleep(0.5)
    waiting.process.send_signal(signal.SIGINT)
    code, out, err = waiting.ended()
    assert (code, out) == (130, "")
    assert err == f"pinrepl: stopped waiting; run {waiting.id} goes on (see: pinrepl " \
                  "list-background-job-runs)\n"
    assert [run["status"] for run in runs(app)] == ["queued"]


def test_wait_on_a_terminal_draws_the_fan_outs_progress(app):
    import pexpect

    from .console.terminal import ANSI

    root, env = app
    child = pexpect.spawn(sys.executable, ["-m", "pinrepl", "defer", "--name", "everyone",
                                           "--wait"], cwd=str(root),
                          env=clean_env(TERM="xterm", **env), encoding="utf-8", timeout=20,
                          dimensions=(24, 100))
    child.expect(r"(\d+)\r\n")
    bot = BotDouble(*app)
    (fan_out,) = bot.claim()
    assert fan_out.id == int(child.match[1])
    first, *others = bot.expand(fan_out)
    bot.finish(first)
    child.expect("33%")
    for run in others:
        bot.finish(run)
    child.expect(pexpect.EOF)
    assert "tenants: 3 run, 3 succeeded, 0 failed" in ANSI.sub("", child.before)
    child.close()
    assert child.exitstatus == 0


FAILING = {
    "sometimes.py": """
        from pinrepl import BackgroundJob

        class Sometimes(BackgroundJob):
            multi_tenant = True

            async def run(self, why):
                if self.tenant.name == "globex":
                    raise ValueError(why)
    """,
}


def test_wait_for_the_real_bot(tmp_path):
    root = write_app(tmp_path / "app", FAILING)
    (root / "models.py").symlink_to(REPO / "models.py")
    assert invoke("init-database", "--demo", "--app", root).exit_code == 0
    waiting = Waiting((root, {}), "--name", "sometimes", "boom")
    bot = subprocess.run([sys.executable, "-m", "pinrepl", "bot", "--once"], cwd=root,
                         env=clean_env(), capture_output=True, text=True, timeout=60)
    assert bot.returncode == 1, bot.stderr
    code, out, err = waiting.ended()
    assert (code, out) == (1, "")
    assert "Traceback (most recent call last):" in err and "raise ValueError(why)" in err
    assert "ValueError: boom" in err
    assert err.endswith("tenants: 3 run, 2 succeeded, 1 failed\n")
