"""The failure hook (SPEC 9): a job's `on_failure(run)` is called once for each run the bots
execute that failed for good (`failed` or `timed_out` with no try left, or `abandoned`), in
a fresh workspace of the run's tenant, with the run's record; a run that is retried, or
that succeeds in the end, does not call it; what the hook raises is logged, never retried.
A bot runs in this process here (`Bot(app).run(once=True)`, as `pinrepl bot --once`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pinrepl import App
from pinrepl.bot.process import Bot
from pinrepl.db.models import utcnow

from ..conftest import invoke, write_app
from .conftest import bot_app, executions

#: A base class of the app's jobs, in a helper module: the hook every job below inherits.
HOOKED = """
from pinrepl import BackgroundJob
from ._record import record


class Hooked(BackgroundJob):
    async def on_failure(self, run):
        record("hook", failed=run.job, run_id=run.id, status=run.status, error=run.error,
               attempt=run.attempt, traceback=run.traceback,
               tenant=self.tenant.name if self.tenant else None,
               current=self.current_run.id)
        if run.job == "hook-fails":
            raise RuntimeError("the hook broke")
"""

JOBS = {
    "_hooked.py": HOOKED,
    "fails.py": """
        from pinrepl import Retry
        from ._hooked import Hooked
        from ._record import record

        class Fails(Hooked):
            retries = Retry(attempts=1, delay=0, jitter=False)

            async def run(self):
                record("fails", attempt=self.current_run.attempt)
                raise ValueError("always")
    """,
    "flaky.py": """
        from pinrepl import Retry
        from ._hooked import Hooked
        from ._record import record

        class Flaky(Hooked):
            retries = Retry(attempts=2, delay=0, jitter=False)

            async def run(self):
                record("flaky", attempt=self.current_run.attempt)
                if self.current_run.attempt == 1:
                    raise ValueError("once")
    """,
    "slow.py": """
        import asyncio
        from ._hooked import Hooked

        class Slow(Hooked):
            timeout = 0.2

            async def run(self):
                await asyncio.sleep(30)
    """,
    "hook_fails.py": """
        from ._hooked import Hooked

        class HookFails(Hooked):
            async def run(self):
                raise ValueError("the run broke")
    """,
    "per_tenant.py": """
        from ._hooked import Hooked

        class PerTenant(Hooked):
            multi_tenant = True

            async def run(self):
                if self.tenant.name == "globex":
                    raise ValueError("globex fails")
    """,
    "works.py": """
        from ._hooked import Hooked
        from ._record import record

        class Works(Hooked):
            async def run(self):
                record("works")
    """,
    "plain.py": """
        from pinrepl import BackgroundJob

        class Plain(BackgroundJob):
            async def run(self):
                raise ValueError("no hook here")
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


def hooks(app: App) -> list[dict[str, Any]]:
    return [line for line in executions(app.settings.root) if line["job"] == "hook"]


async def test_on_failure_is_called_once_per_run_failed_for_good(app: App, caplog):
    fails = await app.defer("fails")
    flaky = await app.defer("flaky")
    slow = await app.defer("slow")
    plain = await app.defer("plain")
    await app.defer("per-tenant")
    with caplog.at_level(logging.INFO, "pinrepl.bot"):
        assert await Bot(app, grace=5).run(once=True) == 1
    called = {(hook["failed"], hook["tenant"]): hook for hook in hooks(app)}
    assert len(called) == len(hooks(app)) == 3  # once each
    assert set(called) == {("fails", None), ("slow", None), ("per-tenant", "globex")}
    # After its last try only: the record is that try's, with how it ended.
    last = called["fails", None]
    assert (last["attempt"], last["status"], last["error"]) == (2, "failed", "ValueError: always")
    assert last["run_id"] == last["current"] != fails.id  # current_run is the failed run
    assert 'raise ValueError("always")' in last["traceback"]
    assert "pinrepl/" not in last["traceback"]
    assert called["slow", None]["status"] == "timed_out"
    assert called["slow", None]["run_id"] == slow.id
    assert await flaky.status() == "succeeded" and await plain.status() == "failed"
    # The hooks that ran raised nothing.
    assert not [r for r in caplog.records if r.getMessage().startswith("on_failure")]


async def test_what_on_failure_raises_is_logged_with_its_traceback_and_never_retried(
        app: App, caplog):
    await app.defer("hook-fails")
    with caplog.at_level(logging.INFO, "pinrepl.bot"):
        await Bot(app, grace=5).run(once=True)
    assert len(hooks(app)) == 1
    (logged,) = [r for r in caplog.records if r.getMessage().startswith("on_failure")]
    assert logged.levelname == "ERROR"
    assert logged.getMessage().startswith("on_failure of hook-fails run ")
    assert logged.getMessage().endswith(" failed: RuntimeError: the hook broke")
    assert logged.exc_info is not None and getattr(logged, "job_failure", False)
    assert (logged.job, logged.status) == ("hook-fails", "failed")  # type: ignore[attr-defined]


async def test_a_run_marked_abandoned_calls_on_failure_on_the_bot_that_marked_it(app: App):
    run = await app.defer("works")
    repository = app.repository
    (claimed,) = await repository.claim("dead", ["works"], 1, utcnow())
    await repository.register("dead", "host", 1, utcnow() - timedelta(minutes=5))
    await Bot(app, grace=5, lease=1).run(once=True)
    assert await run.status() == "abandoned"
    (hook,) = hooks(app)
    assert (hook["failed"], hook["run_id"], hook["status"]) == ("works", claimed.id,
                                                               "abandoned")
    assert "its bot stopped beating" in hook["error"]


def test_an_on_failure_that_is_not_async_is_a_load_error(tmp_path: Path):
    root = write_app(tmp_path / "app", {"sync_hook.py": """
        from pinrepl import BackgroundJob

        class SyncHook(BackgroundJob):
            async def run(self):
                pass

            def on_failure(self, run):
                pass
    """})
    result = invoke("list-background-jobs", "--app", root)
    assert "SyncHook.on_failure() must be 'async def'" in result.output
