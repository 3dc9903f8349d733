"""Control (SPEC 9) on the bots: a paused job's slots are skipped and its deferred runs wait
until it is resumed, seen by a bot that is up within a second; a running run whose cancel
is asked is cancelled by its bot within two seconds, its workspace torn down. The cancel
in `--once` runs in this process; one bot in a subprocess per database shows what a bot
that is up sees (woken by NOTIFY on PostgreSQL, whose polling is every 5 s, so what happens
within a second there is no luck of the poll)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pinrepl import App
from pinrepl.bot.process import Bot
from pinrepl.runs.control import Cancelled, RunFilter

from .conftest import Bot as BotProcess
from .conftest import bot_app, executions

JOBS = {
    "noop.py": """
        from pinrepl import BackgroundJob
        from ._record import record

        class Noop(BackgroundJob):
            async def run(self, *args):
                record("noop", args=list(args))
    """,
    "sleeper.py": """
        import asyncio
        from pinrepl import BackgroundJob
        from ._record import record

        class Sleeper(BackgroundJob):
            async def run(self):
                record("sleeper", event="start", run_id=self.current_run.id)
                try:
                    await asyncio.sleep(60)
                finally:
                    record("sleeper", event="torn down")
    """,
    "tick.py": """
        from pinrepl import BackgroundJob
        from ._record import record

        class Tick(BackgroundJob):
            def meta(self):
                self.schedule("* * * * * *")

            async def run(self):
                record("tick")
    """,
}


@pytest.fixture
def root(tmp_path: Path, database_url: str) -> Path:
    return bot_app(tmp_path / "app", JOBS, database_url, tenants=["acme", "globex"])


@pytest.fixture
async def app(root: Path, database_url: str) -> AsyncIterator[App]:
    opened = App.open(root, environ={"PINREPL_DATABASE_URL": database_url})
    try:
        yield opened
    finally:
        await opened.aclose()


async def until(found: Any, timeout: float = 20.0) -> Any:
    """Until `found()` (awaited if need be) is truthy: its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = found()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, "not seen in time"
        await asyncio.sleep(0.05)


async def is_status(app: App, run_id: int, status: str) -> bool:
    row = await app.get_run(run_id)
    return row is not None and row.status == status


def recorded(root: Path, job: str, **where: Any) -> list[dict[str, Any]]:
    return [line for line in executions(root) if line["job"] == job
            and all(line.get(k) == v for k, v in where.items())]


async def test_a_running_run_whose_cancel_is_asked_is_cancelled_by_its_bot(app: App):
    run = await app.defer("sleeper")
    bot = asyncio.create_task(Bot(app, grace=5).run(once=True))
    try:
        await until(lambda: recorded(app.settings.root, "sleeper", event="start"))
        asked = time.monotonic()
        assert await run.cancel() is True
        assert await asyncio.wait_for(bot, 10) == 1  # a run was cancelled
        took = time.monotonic() - asked
    finally:
        bot.cancel()
    row = await app.get_run(run.id)
    assert row is not None
    assert (row.status, row.error) == ("cancelled", "cancelled: asked to (cancel-runs)")
    assert took < 2.0, took
    assert recorded(app.settings.root, "sleeper", event="torn down")


async def test_a_bot_that_is_up_sees_pauses_resumes_and_cancels_at_once(
        root: Path, app: App, database_url: str):
    await app.pause_job("tick", reason="deploy")
    bot = BotProcess(root, database_url)
    try:
        bot.wait_for("started: app")
        if not database_url.startswith("sqlite"):
            bot.wait_for("listening for deferred runs")
        # The paused job's slots are skipped, saying why; its deferred run waits.
        skipped = await until(lambda: app.list_runs(RunFilter(job="tick", status="skipped")))
        assert skipped[0].error == "paused: deploy"
        held = await app.defer("tick")
        await app.defer("noop", "after")
        await until(lambda: recorded(root, "noop"))
        assert await held.status() == "queued" and recorded(root, "tick") == []

        resumed = time.time()
        assert await app.resume_job("tick") == 1
        await until(lambda: recorded(root, "tick"), timeout=10)
        assert recorded(root, "tick")[0]["at"] - resumed < 1.0

        # Paused while it is up: no slot more than a second after the pause runs.
        paused = time.time()
        await app.pause_job("tick", reason="again")

        async def skipped_again() -> list[Any]:
            rows = await app.list_runs(RunFilter(job="tick", status="skipped"), limit=1)
            return [row for row in rows if row.error == "paused: again"]

        again = await until(skipped_again, timeout=10)
        await app.resume_job("tick")
        ran = [row for row in await app.list_runs(RunFilter(job="tick"), limit=1000)
               if row.status != "skipped" and row.origin == "schedule"
               and row.scheduled_for.timestamp() > paused + 1.0
               and row.scheduled_for < again[0].scheduled_for]
        assert ran == [], ran

        sleeping = await app.defer("sleeper")
        await until(lambda: recorded(root, "sleeper", event="start"))
        asked = time.monotonic()
        assert await app.cancel_runs(RunFilter(job="sleeper")) == Cancelled(0, 1)
        await until(lambda: is_status(app, sleeping.id, "cancelled"), timeout=10)
        assert time.monotonic() - asked < 2.0
        bot.wait_for(f"cancelling run {sleeping.id}: its cancel was asked")
        assert recorded(root, "sleeper", event="torn down")
    finally:
        assert bot.stop() == 0
