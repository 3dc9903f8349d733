"""Signals, three bots side by side: `--grace` running out cancels the runs left (recorded
`cancelled`, the job sees its cancellation); a second signal cancels at once; SIGHUP
re-reads the job files. (SIGTERM while jobs run that finish in time: test_bot_run.)"""

from __future__ import annotations

import signal
import textwrap
import time
from collections import Counter

import pytest

from .conftest import Bot, bot_app, executions, runs

#: One worker runs this module: its tests share a module fixture (pytest-xdist).
pytestmark = pytest.mark.xdist_group("bot_signals")

SLEEPER = {
    "sleeper.py": """
        import asyncio
        from pinrepl import BackgroundJob
        from ._record import record

        class Sleeper(BackgroundJob):
            def meta(self):
                self.schedule("* * * * * *")

            async def run(self):
                record("sleeper")
                try:
                    await asyncio.sleep(60)
                except asyncio.CancelledError:
                    record("sleeper", cancelled=True)
                    raise
    """,
}
TICK = """
    from pinrepl import BackgroundJob

    class {name}(BackgroundJob):
        def meta(self):
            self.schedule("* * * * * *")

        async def run(self):
            pass
"""


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """Each scenario's app, URL, bot, exit status and seconds from the first signal to
    the exit."""
    base = tmp_path_factory.mktemp("signals")
    apps = {}
    for name, jobs in (("grace", SLEEPER), ("twice", SLEEPER),
                       ("reload", {"tick.py": TICK.format(name="Tick")})):
        url = f"sqlite+aiosqlite:///{base / name}.db"
        apps[name] = (bot_app(base / name, jobs, url), url)
    (base / "reload" / "models.py").write_text("# no tables yet\n")
    bots = {
        "grace": Bot(*apps["grace"], "--grace", "0.5"),
        "twice": Bot(*apps["twice"], "--grace", "60"),
        "reload": Bot(*apps["reload"]),
    }
    for bot in bots.values():
        bot.wait_for("run succeeded" if bot is bots["reload"] else "run started: sleeper")

    (apps["reload"][0] / "jobs" / "tock.py").write_text(textwrap.dedent(TICK.format(name="Tock")))
    (apps["reload"][0] / "models.py").write_text("# no tables yet, still\n")
    bots["reload"].send(signal.SIGHUP)
    signalled = {}
    signalled["grace"] = time.monotonic()
    bots["grace"].send(signal.SIGTERM)
    signalled["twice"] = time.monotonic()
    bots["twice"].send(signal.SIGINT)
    bots["twice"].wait_for("claiming no more runs")
    bots["twice"].send(signal.SIGTERM)
    bots["reload"].wait_for("run succeeded: tock", timeout=10)
    signalled["reload"] = time.monotonic()
    bots["reload"].send(signal.SIGTERM)
    results = {}
    for name, bot in bots.items():
        status = bot.process.wait(30)
        results[name] = (*apps[name], bot, status, time.monotonic() - signalled[name])
    return results


def test_runs_still_running_when_the_grace_ends_are_cancelled(stopped):
    root, url, bot, status, took = stopped["grace"]
    assert status == 0, bot.log
    assert took < 10
    statuses = Counter(row["status"] for row in runs(root, url))
    # A slot queued before the signal and not started is left queued, for the next bot.
    assert statuses["cancelled"] == 1 and set(statuses) <= {"cancelled", "skipped", "queued"}
    (cancelled,) = [row for row in runs(root, url) if row["status"] == "cancelled"]
    assert cancelled["error"].startswith("cancelled")
    assert [e.get("cancelled", False) for e in executions(root)] == [False, True]
    assert "run cancelled: sleeper slot" in bot.log


def test_a_second_signal_cancels_at_once(stopped):
    root, url, bot, status, took = stopped["twice"]
    assert status == 0, bot.log
    assert took < 10  # not the 60 s of --grace
    assert "SIGINT: claiming no more runs" in bot.log
    assert "SIGTERM again: cancelling the running runs now" in bot.log
    assert "cancelled" in {row["status"] for row in runs(root, url)}


def test_sighup_rereads_the_job_files(stopped):
    root, url, bot, status, _took = stopped["reload"]
    assert status == 0, bot.log
    assert "SIGHUP: re-reading the job files" in bot.log
    assert "reloaded the job files: 2 jobs, 2 schedules" in bot.log
    assert ("WARNING pinrepl.bot: models.py changed since it was loaded, and models cannot "
            "be swapped while running: restart to use the change") in bot.log
    jobs = Counter(row["job"] for row in runs(root, url) if row["status"] == "succeeded")
    assert jobs["tock"] >= 1 and jobs["tick"] >= 2
