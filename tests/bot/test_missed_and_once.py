"""Missed slots and `--once`: a late wake-up (the bot stopped with SIGSTOP for a few
seconds) runs only the latest missed slot within `misfire_grace` and logs how many were
missed; a starting bot does the same with what passed while no bot was up; `--once` runs
what is due now, leaves what another bot claimed, exits 0 or 1, and deletes the runs
older than `keep_runs_days`."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

from pinrepl import App

from ..conftest import clean_env
from .conftest import Bot, at, bot_app, executions, runs

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

    assert re.search(r"woke up \d+\.\d s late", bot.log)
    missed = int(re.search(r"missed (\d+) slots of tick '\* \* \* \* \* \*'", bot.log)[1])
    assert missed >= 2
    slots = [at(row["scheduled_for"]).timestamp() for row in runs(root, url)]
    during = [slot for slot in slots if stopped < slot <= woke]
    assert len(during) <= 1  # at most the latest one, if within the grace
    assert len(executions(root)) == len(slots)


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
    before its first heartbeat is due, after 10 s)."""
    started = time.monotonic()
    log = process.communicate(timeout=30)[1]
    assert time.monotonic() - started < 8, log
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
    first, failed = once(root, url), once(failing, failing_url)
    results = {"first": finished(first), "failing": finished(failed)}
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
        '{"args":["party"],"kwargs":{}}')
    assert at(new_year["scheduled_for"]) == datetime(datetime.now(UTC).year, 1, 1, tzinfo=UTC)
    minutely = at(by_job["minutely"]["scheduled_for"])
    assert by_job["minutely"]["status"] == "succeeded" and minutely > earlier
    missed = int((minutely - earlier).total_seconds() // 60) - 1
    assert f"missed {missed} slots of minutely '* * * * *'" in log


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
    assert "run failed: new-year slot" in log and "RuntimeError: hangover" in log
    assert [row["status"] for row in runs(failing, failing_url)] == ["failed"]


def test_runs_older_than_keep_runs_days_are_deleted(ran_once):
    root, url, *_rest, results = ran_once
    assert "deleted 1 runs older than 30 days (keep_runs_days)" in results["first"][1]
    jobs = {row["job"] for row in runs(root, url)}
    assert "gone" not in jobs and "late" in jobs


SHARED = {
    "shared.py": """
        import asyncio
        from pinrepl import BackgroundJob

        class Shared(BackgroundJob):
            multi_tenant = True
            misfire_grace = 400 * 24 * 3600

            def meta(self):
                self.schedule("0 0 1 1 *")

            async def run(self):
                await asyncio.sleep(0.3)
    """,
}


def test_two_once_bots_share_the_tenants_of_one_slot(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    root = bot_app(tmp_path / "app", SHARED, url, [f"t{i}" for i in range(8)])
    first = once(root, url)
    time.sleep(0.5)  # the first has claimed some tenants of the slot when the second starts
    second = once(root, url)
    assert [finished(first)[0], finished(second)[0]] == [0, 0]
    rows = runs(root, url)
    assert sorted(row["tenant_id"] for row in rows) == list(range(1, 9))
    assert {row["status"] for row in rows} == {"succeeded"}
    assert len({row["bot"] for row in rows}) == 2
