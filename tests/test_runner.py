"""runBackgroundJob from Python: fresh workspaces, arguments, failures, teardown."""

from __future__ import annotations

import asyncio

import pytest

from pinrepl import App, BadJobArguments, UnknownBackgroundJob

JOBS = {
    "record.py": """
        from pinrepl import BackgroundJob

        SEEN = []

        class Record(BackgroundJob):
            async def run(self, *args, **kwargs):
                SEEN.append((args, kwargs, self.workspace, self.initial_params, self.tenant))
    """,
    "two_args.py": """
        from pinrepl import BackgroundJob

        class TwoArgs(BackgroundJob):
            async def run(self, address, message):
                print(address, message)
    """,
    "fails.py": """
        from pinrepl import BackgroundJob

        class Fails(BackgroundJob):
            async def run(self):
                raise ValueError("bad value")
    """,
    "nested.py": """
        from pinrepl import BackgroundJob

        class Nested(BackgroundJob):
            async def run(self):
                await self.runBackgroundJob("record", "from-nested")
    """,
    "sleeps.py": """
        import asyncio
        from pinrepl import BackgroundJob

        class Sleeps(BackgroundJob):
            async def run(self):
                async with self.database.transaction():  # holds a connection
                    await self.database.users.count()
                    await asyncio.sleep(60)
    """,
}


@pytest.fixture
def app(make_app):
    return App.open(make_app(JOBS))


def seen(app):
    return app.jobs.get("record").cls.run.__globals__["SEEN"]


async def test_arguments_reach_run_and_the_result_is_none(app):
    assert await app.run_background_job("record", 1, "two", flag=True) is None
    ((args, kwargs, workspace, params, tenant),) = seen(app)
    assert args == (1, "two") and kwargs == {"flag": True}
    assert params == {"_headers": {}} and tenant is None
    assert workspace.workspace is workspace


async def test_every_run_gets_a_fresh_workspace(app):
    await app.runBackgroundJob("record")
    await app.runBackgroundJob("record")
    first, second = seen(app)
    assert first[2] is not second[2]
    assert first[3] is not second[3]


async def test_unknown_job_is_a_lookup_error_with_suggestions(app):
    with pytest.raises(UnknownBackgroundJob) as error:
        await app.run_background_job("recrod")
    assert isinstance(error.value, LookupError)
    assert str(error.value) == "unknown background job 'recrod' (did you mean: record?)"


async def test_failure_reaches_the_caller_with_a_note_naming_the_job(app):
    with pytest.raises(ValueError, match="bad value") as error:
        await app.run_background_job("fails")
    assert error.value.__notes__ == ["in background job 'fails'"]


async def test_wrong_arguments_name_the_job(app):
    with pytest.raises(BadJobArguments, match=r"background job 'two-args': missing a required"):
        await app.run_background_job("two-args", "only-one")
    # counted as the caller counts them: three given, not four
    with pytest.raises(TypeError, match=r"too many .* was given 3 positional arguments\)"):
        await app.run_background_job("two-args", 1, 2, 3)


async def test_a_job_runs_another_in_a_workspace_of_its_own(app):
    caller = app.workspace()
    await caller.run_background_job("nested")
    ((args, _, workspace, _, _),) = seen(app)
    assert args == ("from-nested",)
    assert workspace is not caller


async def test_a_run_that_touches_no_database_opens_no_engine(app):
    await app.run_background_job("record")
    assert app._engine is None


async def test_cancelling_a_run_tears_its_workspace_down(example_app, make_app):
    root = make_app(JOBS)
    (root / "models.py").symlink_to(example_app.settings.models_path)
    app = App.open(root, environ={"PINREPL_DATABASE_URL": str(example_app.engine.url)})
    task = asyncio.create_task(app.run_background_job("sleeps"))
    await asyncio.sleep(0.3)
    assert app.engine.engine.pool.checkedout() == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert app.engine.engine.pool.checkedout() == 0
    await app.aclose()
