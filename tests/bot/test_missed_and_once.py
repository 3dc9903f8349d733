"""Missed slots and `--once`: a late wake-up (the bot stopped with SIGSTOP for a few
seconds) runs only the latest missed slot within `misfire_grace` and logs how many were
missed; a starting bot does the same with what passed while no bot was up; `--once` runs
what is due now, leaves what another bot claimed, exits 0 or 1, and deletes the runs
older than `keep_runs_days`."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import pinrepl
from pinrepl import App
from pinrepl.bot.scheduler import OVERTAKEN

from ..conftest import clean_env
from .conftest import Bot, at, bot_app, executions, fan_outs, runs, tenant_runs

#: One worker runs this module: its tests share a module fixture (pytest-xdist).
pytestmark = pytest.mark.xdist_group("bot_once")

TICK = {
    "tick.py": """
        from pinrepl import BackgroundJob
        from ._record import record

        class Tick(BackgroundJob):
            misfire_grace = 1.5

            def meta(self):
                self.schedule("* * * * * *")

            async def run(self):
                record("tick")
    """,
}


def test_after_a_late_wake_up_only_the_latest_slot_within_misfire_grace_runs(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    root = bot_app(tmp_path / "app", TICK, url)
    bot = Bot(root, url)
    bot.wait_for("run succeeded: tick", count=2)
    bot.send(signal.SIGSTOP)
    stopped = time.time()
    time.sleep(4)
    bot.send(signal.SIGCONT)
    woke = time.time()
    bot.wait_for("missed", timeout=10)
    bot.wait_for("run succeeded: tick", count=bot.log.count("run succeeded: tick") + 1)
    assert bot.stop() == 0, bot.log

    log = bot.log
    assert re.search(r"woke up \d+\.\d s late", log)
    assert re.search(r"missed \d+ slots of tick '\* \* \* \* \* \*': only the latest "
                     r"within misfire_grace \(1\.5 s\) runs", log)
    # Every slot the log calls missed (a slot popped just before SIGSTOP says so apart).
    missed = sum(int(count) for count in re.findall(r"missed (\d+) slots? of tick", log))
    assert missed >= 2
    rows = runs(root, url)
    slots = sorted(at(row["scheduled_for"]).timestamp() for row in rows)
    # On a loaded machine a slot may be claimed after its misfire_grace, overtaken by the
    # next one before the bot could queue it, or due while the one before still ran: it is
    # recorded so.
    skipped = [row for row in rows if row["status"] == "skipped"]
    loaded = (OVERTAKEN, "skipped: the run of an earlier slot is still running")
    assert all("misfire_grace (1.5 s)" in row["error"] or row["error"] in loaded
               for row in skipped), [row["error"] for row in skipped]
    assert len(executions(root)) == len(slots) - len(skipped)
    ((before, caught_up),) = [(a, b) for a, b in itertools.pairwise(slots) if b - a > 1]
    assert caught_up - before - 1 == missed  # the latest within the grace ran, none before
    assert woke - 1.5 <= caught_up < woke + 1
    assert stopped - 1 <= before < stopped + 1


JOBS = {
    "minutely.py": """
        from pinrepl import BackgroundJob

        class Minutely(BackgroundJob):
            misfire_grace = 3600

            def meta(self):
                self.schedule("* * * * *")

            async def run(self):
                pass
    """,
    "yearly.py": """
        from pinrepl import BackgroundJob

        class Yearly(BackgroundJob):
            def meta(self):
                self.schedule("0 0 1 1 *")  # long ago, beyond its misfire_grace

            async def run(self):
                pass
    """,
    "new_year.py": """
        from pinrepl import BackgroundJob

        class NewYear(BackgroundJob):
            misfire_grace = 400 * 24 * 3600

            def meta(self):
                self.schedule("0 0 1 1 *", "party")

            async def run(self, what):
                pass
    """,
}
FAILING = {
    "new_year.py": """
        from pinrepl import BackgroundJob

        class NewYear(BackgroundJob):
            misfire_grace = 400 * 24 * 3600

            def meta(self):
                self.schedule("0 0 1 1 *")

            async def run(self):
                raise RuntimeError("hangover")
    """,
}


def once(root, url):
    return subprocess.Popen(
        [sys.executable, "-m", "pinrepl", "bot", "--once", "--app", str(root)],
        env=clean_env(PINREPL_DATABASE_URL=url), stderr=subprocess.PIPE, text=True)


def finished(process):
    """The exit status and log of a `bot --once`, which ends as soon as its runs have (long
    before its next heartbeat is due, after 10 s): its log says so, timed, however long
    the process took to start on a busy machine."""
    log = process.communicate(timeout=60)[1]
    timed = [line for line in log.splitlines() if line[:4].isdigit()]

    def when(line: str) -> datetime:
        return datetime.fromisoformat(line.split(" ", 1)[0])

    last_event = max(when(line) for line in timed if "run " in line or "started:" in line)
    assert (when(timed[-1]) - last_event).total_seconds() < 5, log  # stopped at once
    return process.returncode, log


async def _add_runs(root, url, rows):
    async with App.open(root, environ={"PINREPL_DATABASE_URL": url}) as app:
        database = app.database()
        try:
            for row in rows:
                await database.background_job_runs.insert(**{
                    "args": '{"args":[],"kwargs":{}}', "status": "succeeded",
                    "bot": "earlier", "started_at": row["scheduled_for"], **row})
        finally:
            await database.aclose()


@pytest.fixture(scope="module")
def ran_once(tmp_path_factory):
    """Two apps, each bot --once run side by side (then the first app's once more)."""
    base = tmp_path_factory.mktemp("once")
    url, failing_url = (f"sqlite+aiosqlite:///{base / name}.db" for name in ("ok", "failing"))
    root = bot_app(base / "ok", JOBS, url)
    failing = bot_app(base / "failing", FAILING, failing_url)
    now = datetime.now(UTC)
    earlier = now.replace(second=0, microsecond=0) - timedelta(minutes=10)
    asyncio.run(_add_runs(root, url, [
        {"job": "minutely", "scheduled_for": earlier},
        {"job": "gone", "scheduled_for": now - timedelta(days=40)},
        # A slot older than keep_runs_days that ran recently stays.
        {"job": "late", "scheduled_for": now - timedelta(days=40), "started_at": now},
    ]))
    started = datetime.now(UTC)
    first, failed = once(root, url), once(failing, failing_url)
    results = {"first": finished(first), "failing": finished(failed)}
    results["window"] = (started, datetime.now(UTC))
    results["again"] = finished(once(root, url))
    return root, url, failing, failing_url, earlier, results


def test_once_runs_what_is_due_now_and_exits_0(ran_once):
    root, url, _f, _fu, earlier, results = ran_once
    status, log = results["first"]
    assert status == 0, log
    rows = runs(root, url)
    by_job = {}
    for row in rows:  # newest first: each job's latest
        by_job.setdefault(row["job"], row)
    assert "yearly" not in by_job
    new_year = by_job["new-year"]
    assert new_year["status"] == "succeeded" and new_year["args"] == (
        {"args": ["party"], "kwargs": {}})
    assert at(new_year["scheduled_for"]) == datetime(datetime.now(UTC).year, 1, 1, tzinfo=UTC)
    # This bot's run of minutely: the bot run again after it may have run the next minute's.
    (bot,) = re.findall(r"bot (\S+) started", log)
    (ran,) = [row for row in rows if row["job"] == "minutely" and row["bot"] == bot]
    minutely = at(ran["scheduled_for"])
    assert ran["status"] == "succeeded" and minutely > earlier
    missed = int((minutely - earlier).total_seconds() // 60) - 1
    assert f"missed {missed} slots of minutely '* * * * *'" in log


def test_every_line_the_bot_logs_starts_with_its_time(ran_once):
    """ISO 8601 in UTC to the millisecond, so that a log appended to a file says when."""
    *_rest, results = ran_once
    started, ended = results["window"]
    lines = results["first"][1].splitlines()
    assert len(lines) >= 3
    for line in lines:
        stamp, level, logger, _message = line.split(" ", 3)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", stamp), line
        assert started - timedelta(seconds=1) < at(stamp) < ended, line
        assert level in ("INFO", "WARNING") and logger.endswith(":"), line  # LEVEL name:


def test_once_leaves_the_slots_another_bot_claimed(ran_once):
    root, url, *_rest, results = ran_once
    status, log = results["again"]
    assert status == 0, log
    assert "run started: new-year" not in log
    assert len([row for row in runs(root, url) if row["job"] == "new-year"]) == 1


def test_once_exits_1_when_a_run_failed(ran_once):
    _root, _url, failing, failing_url, _earlier, results = ran_once
    status, log = results["failing"]
    assert status == 1
    assert "--once: 1 slot due now" in log
    assert "run failed: new-year slot" in log and "RuntimeError: hangover" in log
    assert [row["status"] for row in runs(failing, failing_url)] == ["failed"]


def test_a_failed_runs_traceback_shows_the_jobs_frames_not_pinrepls(ran_once):
    """As `run-background-job` and the REPL show it: what is left is the job's code."""
    _root, _url, failing, _failing_url, _earlier, results = ran_once
    log = results["failing"][1]
    job = str(failing / "jobs" / "new_year.py")
    assert re.findall(r'File "([^"]+)", line \d+, in (\w+)', log) == [(job, "run")], log
    assert "Traceback (most recent call last):" in log
    assert "RuntimeError: hangover\nin background job 'new-year'\n" in log
    assert f"{Path(pinrepl.__file__).parent}{os.sep}" not in log, log


def test_runs_older_than_keep_runs_days_are_deleted(ran_once):
    root, url, *_rest, results = ran_once
    assert "deleted 1 run older than 30 days (keep_runs_days)" in results["first"][1]
    jobs = {row["job"] for row in runs(root, url)}
    assert "gone" not in jobs and "late" in jobs
    # A job that is no longer in the app is still listed by name: it is in the history.
    assert [row["job"] for row in runs(root, url, "--name", "late")] == ["late"]


SHARED = {
    "shared.py": """
        import asyncio
        from pathlib import Path
        from pinrepl import BackgroundJob

        class Shared(BackgroundJob):
            multi_tenant = True
            misfire_grace = 400 * 24 * 3600

            def meta(self):
                self.schedule("0 0 1 1 *")

            async def run(self):
                # The first tenant waits for the test to say the second bot is up (an
                # event the test sees, not a guess at how long a bot takes to start).
                go = Path(__file__).resolve().parent.parent / "go"
                for _ in range(600):
                    if go.exists():
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.3)
    """,
}


def test_two_once_bots_share_the_tenants_of_one_slot(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    root = bot_app(tmp_path / "app", SHARED, url, [f"t{i}" for i in range(8)])
    first = Bot(root, url, "--once")
    first.wait_for("run started: shared")  # one tenant at a time, the first one waiting
    second = Bot(root, url, "--once")
    second.wait_for("started: app")
    (root / "go").touch()  # both bots are up: the tenants go on, shared
    assert [first.process.wait(30), second.process.wait(30)] == [0, 0], first.log + second.log
    rows = runs(root, url)
    assert [row["status"] for row in fan_outs(rows)] == ["succeeded"]
    rows = tenant_runs(rows)
    assert sorted(row["tenant_id"] for row in rows) == list(range(1, 9))
    assert {row["status"] for row in rows} == {"succeeded"}
    assert len({row["bot"] for row in rows}) == 2


QUICK = {
    "quick.py": """
        import asyncio
        from pinrepl import BackgroundJob

        class Quick(BackgroundJob):
            multi_tenant = True
            misfire_grace = 400 * 24 * 3600

            def meta(self):
                self.schedule("0 0 1 1 *")

            async def run(self):
                await asyncio.sleep(0.01)
    """,
}


def test_each_run_records_when_it_started_not_when_it_was_claimed(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    root = bot_app(tmp_path / "app", QUICK, url, [f"t{i}" for i in range(60)])
    status, log = finished(once(root, url))  # quick runs: claimed several at a time
    assert status == 0, log
    rows = sorted(tenant_runs(runs(root, url)), key=lambda row: at(row["started_at"]))
    assert len(rows) == 60
    # One tenant at a time: each run starts after the one before it ended.
    for earlier, later in itertools.pairwise(rows):
        assert at(earlier["finished_at"]) <= at(later["started_at"])
    logged = dict(re.findall(r"run succeeded: quick tenant (\d+) .* in (\d+\.\d+) s", log))
    for row in rows:
        took = at(row["finished_at"]) - at(row["started_at"])
        assert f"{took.total_seconds():.3f}" == logged[str(row["tenant_id"])]
