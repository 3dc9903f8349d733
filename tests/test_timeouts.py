"""Timeouts (SPEC 8), through the Python API: a run past its `timeout` is stopped, awaiting
or blocking, with `JobTimeout`; its workspace is torn down and its transaction rolled back;
each tenant's run has its own clock; only the overdue run is interrupted. And the warning
of a blocked event loop, which names the run and the line.

Jobs sleep a few tenths of a second; a run that is not stopped would take 5 s or more.
"""

from __future__ import annotations

import asyncio
import threading
import time
import traceback

import pytest

from pinrepl import App, BackgroundJobFailed, JobTimeout
from pinrepl.blocking import watch_stalls

from .conftest import write_app, write_example_app

JOBS = {
    "awaits.py": """
        import asyncio
        from pinrepl import BackgroundJob

        class Awaits(BackgroundJob):
            timeout = 0.3

            async def run(self, seconds=5):
                await asyncio.sleep(seconds)
                print("awaited", seconds)
    """,
    "sleeps.py": """
        import time
        from pinrepl import BackgroundJob

        class Sleeps(BackgroundJob):
            timeout = 0.3

            async def run(self, seconds=5):
                time.sleep(seconds)  # blocks the event loop
                print("slept", seconds)
    """,
    "spins.py": """
        import time
        from pinrepl import BackgroundJob

        class Spins(BackgroundJob):
            timeout = 0.3

            async def run(self):
                end = time.monotonic() + 5
                while time.monotonic() < end:  # a busy loop
                    pass
    """,
    "catches.py": """
        import time
        from pinrepl import BackgroundJob

        class Catches(BackgroundJob):
            timeout = 0.3

            async def run(self):
                try:
                    time.sleep(5)
                except BaseException:
                    print("caught it, returning as if done")
    """,
    "unlimited.py": """
        import time
        from pinrepl import BackgroundJob

        class Unlimited(BackgroundJob):
            async def run(self, seconds):
                time.sleep(seconds)
                print("unlimited slept", seconds)
    """,
    "parent.py": """
        from pinrepl import BackgroundJob

        class Parent(BackgroundJob):
            timeout = 0.3

            async def run(self):
                await self.run_background_job("unlimited", 5)
    """,
    "own_error.py": """
        from pinrepl import BackgroundJob

        class OwnError(BackgroundJob):
            timeout = 5

            async def run(self):
                raise TimeoutError("the job's own: a server did not answer")
    """,
}


@pytest.fixture
async def app(make_app):
    async with App.open(make_app(JOBS), environ={"PINREPL_DATABASE_URL": "nosuchdb://x/y"}
                        ) as app:
        yield app


async def run(app: App, name: str, *args, **options) -> float:
    """`run_job(name, args, **options)` as application code calls it; the seconds it
    took."""
    start = time.monotonic()
    try:
        await app.workspace().run_job(name, args, **options)
    finally:
        took = time.monotonic() - start
    return took


async def timed_out(app: App, name: str, *args, **options) -> tuple[JobTimeout, float]:
    start = time.monotonic()
    with pytest.raises(JobTimeout) as raised:
        await run(app, name, *args, **options)
    return raised.value, time.monotonic() - start


def job_lines(error: BaseException, job_file: str) -> list[str]:
    """The lines of `job_file` in the traceback of what stopped the run."""
    cause = error.__cause__
    assert cause is not None
    seen = traceback.extract_tb(cause.__traceback__)
    while cause.__context__ is not None:  # the cancellation, raised at the await
        cause = cause.__context__
        seen += traceback.extract_tb(cause.__traceback__)
    return [frame.line or "" for frame in seen if frame.filename.endswith(job_file)]


async def test_an_awaiting_job_is_cancelled_at_its_timeout(app, capsys):
    error, took = await timed_out(app, "awaits")
    assert str(error) == "timed out after 0.3 s" and error.timeout == 0.3
    assert error.__notes__ == ["in background job 'awaits'"]
    assert isinstance(error, TimeoutError)
    assert 0.3 <= took < 0.6
    assert job_lines(error, "awaits.py") == ["await asyncio.sleep(seconds)"]
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(("name", "line"), [
    ("sleeps", "time.sleep(seconds)  # blocks the event loop"),
    ("spins", "while time.monotonic() < end:  # a busy loop"),
])
async def test_a_job_that_blocks_the_loop_is_interrupted(app, capsys, name, line):
    error, took = await timed_out(app, name)
    assert str(error) == "timed out after 0.3 s"
    assert error.__notes__ == [f"in background job {name!r}"]
    assert took < 1.3  # the contract: within a second of the deadline
    assert job_lines(error, f"{name}.py")[-1] == line  # where it was stopped
    assert capsys.readouterr().out == ""


async def test_a_job_that_catches_the_interrupt_still_timed_out(app, capsys):
    error, took = await timed_out(app, "catches")
    assert str(error) == "timed out after 0.3 s" and took < 1.3
    assert capsys.readouterr().out == "caught it, returning as if done\n"


async def test_a_calls_timeout_overrides_the_jobs(app, capsys):
    assert await run(app, "awaits", 0.5, timeout=2) >= 0.5  # more time than the class gives
    assert capsys.readouterr().out == "awaited 0.5\n"
    error, took = await timed_out(app, "unlimited", 5, timeout=0.2)  # a job without one
    assert str(error) == "timed out after 0.2 s" and took < 1.2
    assert (await run(app, "unlimited", 0.1)) >= 0.1  # none: no limit
    assert capsys.readouterr().out == "unlimited slept 0.1\n"


@pytest.mark.parametrize("seconds", [0, -1, "5", True, float("inf")])
async def test_a_bad_timeout_is_refused_before_the_job_runs(app, capsys, seconds):
    with pytest.raises(ValueError, match="it must be a number of seconds above 0"):
        await run(app, "unlimited", 0, timeout=seconds)
    assert capsys.readouterr().out == ""


async def test_the_repl_summary_shows_the_timeout(app):
    assert "\n  timeout 0.3 s\n" in repr(app.jobs["awaits"])


async def test_a_jobs_own_timeout_error_is_not_a_timeout(app):
    with pytest.raises(TimeoutError) as raised:
        await run(app, "own-error")
    assert not isinstance(raised.value, JobTimeout)


async def test_the_parents_deadline_covers_the_runs_it_starts(app):
    error, took = await timed_out(app, "parent")
    assert error.__notes__ == ["in background job 'parent'"] and took < 1.3


async def test_only_the_overdue_run_is_interrupted(app, capsys):
    """A run whose deadline passes while another run's code blocks the loop waits: the
    blocking run has no timeout and is not interrupted."""
    results = await asyncio.gather(
        run(app, "awaits", timeout=0.1), run(app, "unlimited", 0.6), return_exceptions=True)
    assert isinstance(results[0], JobTimeout)
    assert results[1] >= 0.6  # type: ignore[operator]
    assert capsys.readouterr().out == "unlimited slept 0.6\n"


async def test_a_run_in_another_thread_is_stopped_when_it_awaits(app):
    """Signals reach the main thread only: elsewhere awaiting code is still stopped."""
    outcome: list[BaseException | None] = []

    def in_a_thread() -> None:
        async def main() -> None:
            try:
                await run(app, "awaits")
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        asyncio.run(main())

    thread = threading.Thread(target=in_a_thread)
    thread.start()
    await asyncio.to_thread(thread.join, 5)
    (error,) = outcome
    assert isinstance(error, JobTimeout)


# -- what the database sees -------------------------------------------------------------------

DATABASE_JOBS = {
    "half_done.py": """
        import asyncio
        import time
        from pinrepl import BackgroundJob

        class HalfDone(BackgroundJob):
            timeout = 0.5

            async def run(self, how):
                async with self.database.transaction():
                    await self.database.users.insert(name="half-done", email="x")
                    if how == "blocks":
                        time.sleep(5)
                    else:
                        await asyncio.sleep(5)
    """,
    "tenants.py": """
        import asyncio
        import time
        from pinrepl import BackgroundJob

        class Tenants(BackgroundJob):
            multi_tenant = True
            timeout = 0.5

            async def run(self):
                # Each tenant takes 0.3 s: over one clock for all, the third would time out.
                if self.tenant.name == "globex":
                    time.sleep(5)
                await asyncio.sleep(0.3)
                print("done", self.tenant.name)
    """,
}


@pytest.fixture
async def dapp(example_app, tmp_path):
    """These jobs over the example app's models and demo data (tenants acme, globex and
    initech)."""
    root = write_example_app(tmp_path / "dapp", DATABASE_JOBS, demo=False)
    url = example_app.engine.url.render_as_string(hide_password=False)
    async with App.open(root, environ={"PINREPL_DATABASE_URL": url}) as app:
        yield app


@pytest.mark.parametrize("how", ["awaits", "blocks"])
async def test_a_timed_out_runs_transaction_is_rolled_back_and_its_workspace_torn_down(
        dapp, how):
    error, took = await timed_out(dapp, "half-done", how)
    assert str(error) == "timed out after 0.5 s" and took < 1.5
    assert dapp.engine.engine.pool.checkedout() == 0
    assert await dapp.database().users.where(name="half-done").count() == 0


async def test_each_tenant_has_its_own_clock(dapp, capsys):
    with pytest.raises(BackgroundJobFailed) as raised:
        await run(dapp, "tenants", tenants=["acme", "globex", "initech"])
    (error,) = raised.value.exceptions
    assert isinstance(error, JobTimeout)
    assert error.__notes__ == ["in background job 'tenants' for tenant 2 (globex)"]
    assert capsys.readouterr().out == "done acme\ndone initech\n"
    assert dapp.engine.engine.pool.checkedout() == 0


# -- the stall warning ------------------------------------------------------------------------

STALLS = {
    "stalls.py": """
        import asyncio
        import time
        from pinrepl import BackgroundJob

        class Stalls(BackgroundJob):
            async def run(self, seconds):
                await asyncio.sleep(0)
                time.sleep(seconds)
    """,
    "_slow.py": """
        import time

        def slow_helper(seconds):
            time.sleep(seconds)
    """,
    "helper_stalls.py": """
        from pinrepl import BackgroundJob
        from ._slow import slow_helper

        class HelperStalls(BackgroundJob):
            async def run(self):
                slow_helper(0.5)
    """,
}


async def test_a_blocked_loop_is_a_warning_naming_the_run_and_its_line(tmp_path):
    root = write_app(tmp_path / "app", STALLS)
    warnings: list[str] = []
    async with App.open(root, environ={"PINREPL_DATABASE_URL": "nosuchdb://x/y"}) as app:
        with watch_stalls(asyncio.get_running_loop(), warnings.append, threshold=0.2):
            await run(app, "stalls", 0.5)
            await asyncio.sleep(0.1)  # the loop runs again: the next stall is another
            await run(app, "helper-stalls")
            await asyncio.sleep(0.5)  # awaiting blocks nothing
    path = root / "jobs"
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("the event loop has been blocked for ")
    assert f"by background job 'stalls', at {path / 'stalls.py'}:9 (jobs must not block: " \
           "await asyncio.to_thread(...) for a blocking call)" in warnings[0]
    # The line of the job's own file, not of the helper module it calls.
    assert f"by background job 'helper-stalls', at {path / 'helper_stalls.py'}:7" \
        in warnings[1]


async def test_no_warning_below_the_threshold():
    warnings: list[str] = []
    with watch_stalls(asyncio.get_running_loop(), warnings.append, threshold=0.5):
        time.sleep(0.2)  # noqa: ASYNC251 (blocks, but less than the threshold)
        await asyncio.sleep(0.3)
    assert warnings == []
