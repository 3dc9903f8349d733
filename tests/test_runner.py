"""The runner, through the Python API (`App`): one run in a fresh workspace, arguments,
failures, teardown; a fan-out over tenants, which tenants, and what a `Progress` sees.

Jobs report what they saw on stdout (a JSON line per run), never through their module's
globals.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from pinrepl import (
    App,
    BackgroundJobExit,
    BackgroundJobFailed,
    BadJobArguments,
    JobDefinitionError,
    JobTimeout,
    NoTenantsTable,
    UnknownBackgroundJob,
    UnknownColumn,
    UnknownTenant,
    Workspace,
)
from pinrepl.runner import status_of
from pinrepl.runs.record import Origin, Run

from .conftest import FAN_OUT_JOBS, write_app, write_example_app

RECORD = """
import json
from pinrepl import BackgroundJob

class Record(BackgroundJob):
    multi_tenant = {multi_tenant}

    async def run(self, *args, **kwargs):
        params = self.initial_params
        fresh = "mark" not in params  # a workspace used before would carry the mark
        params["mark"] = True
        users = await self.database.users.all() if self.tenant else []
        print(json.dumps({{
            "args": args, "kwargs": kwargs, "fresh": fresh, "headers": params["_headers"],
            "tenant": self.tenant.name if self.tenant else None,
            "own_workspace": self.workspace.workspace is self.workspace,
            "user_tenants": sorted({{u.tenant_id for u in users}}),
        }}))
"""

JOBS = {
    "record.py": RECORD.format(multi_tenant=False),
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
    "exits.py": """
        import sys
        from pinrepl import BackgroundJob

        class Exits(BackgroundJob):
            async def run(self):
                sys.exit(3)
    """,
}


async def checked_out(app, count: int) -> None:
    """Until `count` connections of the app's pool are in use (a job got as far as its
    transaction), however busy the machine; 10 s at most."""
    async with asyncio.timeout(10):
        while app.engine.engine.pool.checkedout() != count:  # noqa: ASYNC110 (a pool has no event)
            await asyncio.sleep(0.01)


def records(capsys):
    """The JSON line each run of `record` printed, in order."""
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()
            if line.startswith("{")]


@pytest.fixture
async def app(make_app):
    # A URL no engine can be made for: a run that touches no database never notices it.
    async with App.open(make_app(JOBS), environ={"PINREPL_DATABASE_URL": "nosuchdb://x/y"}
                        ) as app:
        yield app


async def test_arguments_reach_run_and_the_result_is_none(app, capsys):
    assert await app.run_background_job("record", 1, "two", flag=True) is None
    (run,) = records(capsys)
    assert run["args"] == [1, "two"] and run["kwargs"] == {"flag": True}
    assert run["headers"] == {} and run["tenant"] is None
    assert run["own_workspace"] is True


async def test_every_run_gets_a_fresh_workspace(app, capsys):
    await app.runBackgroundJob("record")
    await app.runBackgroundJob("record")
    assert [run["fresh"] for run in records(capsys)] == [True, True]


async def test_a_run_that_touches_no_database_opens_none(app, capsys):
    await app.run_background_job("record")  # the URL is unusable: any engine would fail
    assert records(capsys)[0]["user_tenants"] == []


async def test_unknown_job_is_a_lookup_error_with_suggestions(app):
    with pytest.raises(UnknownBackgroundJob) as error:
        await app.run_background_job("recrod")
    assert isinstance(error.value, LookupError)
    assert str(error.value) == "unknown background job 'recrod' (did you mean: record?)"


async def test_failure_reaches_the_caller_with_a_note_naming_the_job(app):
    with pytest.raises(ValueError, match="bad value") as error:
        await app.run_background_job("fails")
    assert error.value.__notes__ == ["in background job 'fails'"]


async def test_sys_exit_in_a_job_is_a_failure_of_that_run(app):
    with pytest.raises(BackgroundJobExit, match=r"'exits' called sys.exit\(3\)") as error:
        await app.run_background_job("exits")
    assert isinstance(error.value.__cause__, SystemExit)
    assert error.value.__notes__ == ["in background job 'exits'"]


async def test_wrong_arguments_name_the_job(app):
    with pytest.raises(BadJobArguments, match=r"background job 'two-args': missing a required"):
        await app.run_background_job("two-args", "only-one")
    # counted as the caller counts them: three given, not four
    with pytest.raises(TypeError, match=r"too many .* was given 3 positional arguments\)"):
        await app.run_background_job("two-args", 1, 2, 3)


async def test_a_job_runs_another_in_a_workspace_of_its_own(app, capsys):
    caller = app.workspace()
    caller.initial_params["mark"] = True
    await caller.run_background_job("nested")
    (run,) = records(capsys)
    assert run["args"] == ["from-nested"]
    assert run["fresh"] is True  # not the caller's workspace
    assert caller.initial_params == {"_headers": {}, "mark": True}


async def test_cancelling_a_run_tears_its_workspace_down(example_app, tmp_path):
    root = write_example_app(tmp_path / "app", {"sleeps.py": """
        import asyncio
        from pinrepl import BackgroundJob

        class Sleeps(BackgroundJob):
            async def run(self):
                async with self.database.transaction():  # holds a connection
                    await self.database.users.count()
                    await asyncio.sleep(60)
    """}, demo=False)
    url = example_app.engine.url.render_as_string(hide_password=False)
    async with App.open(root, environ={"PINREPL_DATABASE_URL": url}) as app:
        task = asyncio.create_task(app.run_background_job("sleeps"))
        await checked_out(app, 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert app.engine.engine.pool.checkedout() == 0


# -- the run's record and its status -------------------------------------------------------

SEES_RUN = {
    "sees_run.py": """
        from pinrepl import BackgroundJob

        class SeesRun(BackgroundJob):
            async def run(self, nested=True):
                run = self.current_run
                print("run:", None if run is None else (run.id, run.origin, run.attempt))
                if nested:
                    await self.run_background_job("sees-run", False)
    """,
}


async def test_current_run_is_none_for_an_unrecorded_run(make_app, capsys):
    async with App.open(make_app(SEES_RUN)) as app:
        await app.run_background_job("sees-run")
    assert capsys.readouterr().out == "run: None\nrun: None\n"


async def test_current_run_is_the_record_a_run_is_given_and_not_its_nested_runs(
        make_app, capsys):
    record = Run(id=7, job="sees-run", origin=Origin.CLI, attempt=2,
                 scheduled_for=datetime(2026, 1, 1, tzinfo=UTC), tenant_id=None, timeout=None)
    async with App.open(make_app(SEES_RUN)) as app:
        await app.runner.run_once(app.jobs["sees-run"], (), {}, None, run=record)
    # The nested run is a run of its own, unrecorded: it does not inherit its parent's.
    assert capsys.readouterr().out == "run: (7, 'cli', 2)\nrun: None\n"


def test_the_status_of_an_outcome():
    assert status_of(None) == "succeeded"
    assert status_of(JobTimeout("timed out after 1 s")) == "timed_out"
    assert status_of(ValueError("bad")) == "failed"
    assert status_of(asyncio.CancelledError()) == "cancelled"
    assert status_of(KeyboardInterrupt()) == "cancelled"


# -- fan-out over tenants --------------------------------------------------------------------

TENANT_JOBS = {
    **FAN_OUT_JOBS,
    "record.py": RECORD.format(multi_tenant=True),
    "fan_in.py": """
        from pinrepl import BackgroundJob

        class FanIn(BackgroundJob):
            multi_tenant = True

            async def run(self):
                await self.run_background_job("record", "nested")
    """,
    "single.py": """
        from pinrepl import BackgroundJob

        class Single(BackgroundJob):
            async def run(self):
                print("single in", self.tenant.name if self.tenant else "no tenant")
                await self.run_background_job("record", "from-single")
    """,
    "concurrent.py": """
        import asyncio
        from pinrepl import BackgroundJob

        RUNNING = set()

        class Concurrent(BackgroundJob):
            multi_tenant = True
            tenant_concurrency = 4

            async def run(self):
                RUNNING.add(self.tenant.name)
                try:
                    print("running at once:", len(RUNNING))
                    await asyncio.sleep(0.05)
                    await self.database.users.count()
                    if self.tenant.name == "t3":
                        raise RuntimeError("t3 fails")
                    print("done", self.tenant.name)
                finally:
                    RUNNING.discard(self.tenant.name)
    """,
    "async_filter.py": """
        from pinrepl import BackgroundJob

        class AsyncFilter(BackgroundJob):
            multi_tenant = True

            async def tenants_filter(self, tenants):
                # A facade read commits and gives its connection back; the session's own
                # connection is held until the workspace is torn down, so the pool's count
                # after the run shows whether it was.
                await self.database.session.connection()
                active = await self.database.tenants.where(active=True).all()
                return tenants.where(tenants.model.id.in_([t.id for t in active]))

            async def run(self):
                print("async-filtered", self.tenant.name)
    """,
    "slow.py": """
        import asyncio
        from pinrepl import BackgroundJob

        class Slow(BackgroundJob):
            multi_tenant = True

            async def run(self):
                async with self.database.transaction():
                    await self.database.users.insert(name="half-done", email="x")
                    await asyncio.sleep(60)
    """,
}


@pytest.fixture
async def tapp(example_app, tmp_path):
    """An app of these jobs over the example app's models and demo data (tenants acme,
    globex and initech, which is inactive)."""
    root = write_example_app(tmp_path / "tapp", TENANT_JOBS, demo=False)
    url = example_app.engine.url.render_as_string(hide_password=False)
    async with App.open(root, environ={"PINREPL_DATABASE_URL": url}) as app:
        yield app


async def test_fan_out_runs_once_per_tenant_in_fresh_scoped_workspaces(tapp, capsys):
    await tapp.run_background_job("record", "x")
    runs = records(capsys)
    assert [r["tenant"] for r in runs] == ["acme", "globex", "initech"]
    assert [r["headers"] for r in runs] == [{"x-tenant-id": n} for n in (1, 2, 3)]
    assert [r["user_tenants"] for r in runs] == [[1], [2], [3]]
    assert all(r["fresh"] and r["args"] == ["x"] for r in runs)


async def test_tenants_filter_selects_tenants(tapp, capsys):
    await tapp.run_background_job("active-only")
    assert capsys.readouterr().out == "active acme\nactive globex\n"


async def test_every_tenant_runs_and_failures_are_grouped(tapp, capsys):
    with pytest.raises(BackgroundJobFailed) as error:
        await tapp.run_background_job("flaky")
    group = error.value
    assert isinstance(group, ExceptionGroup)
    assert group.total == 3
    assert [str(e) for e in group.exceptions] == ["boom in globex", "boom in initech"]
    assert [e.__notes__ for e in group.exceptions] == [
        ["in background job 'flaky' for tenant 2 (globex)"],
        ["in background job 'flaky' for tenant 3 (initech)"],
    ]
    assert capsys.readouterr().out == "ok acme\n"
    assert str(group) == "background job 'flaky' failed for 2 of 3 tenants (2 sub-exceptions)"
    with pytest.raises(BackgroundJobFailed) as again:
        await tapp.run_background_job("flaky")
    try:
        raise again.value
    except* ValueError as matched:
        assert type(matched) is BackgroundJobFailed


async def test_sys_exit_in_one_tenant_fails_that_tenant_only(tapp, capsys):
    with pytest.raises(BackgroundJobFailed) as error:
        await tapp.run_background_job("exits-in-globex")
    (exited,) = error.value.exceptions
    assert isinstance(exited, BackgroundJobExit)
    assert exited.__notes__ == ["in background job 'exits-in-globex' for tenant 2 (globex)"]
    assert capsys.readouterr().out == "ran acme\nran initech\n"


async def test_chosen_tenants_by_id_or_name(tapp, capsys):
    await tapp.run_job("record", ("a",), tenants=["globex", 1])
    assert [r["tenant"] for r in records(capsys)] == ["globex", "acme"]
    await tapp.run_job("single", tenants=["initech"])  # not multi-tenant: scoped all the same
    assert capsys.readouterr().out.startswith("single in initech\n")
    with pytest.raises(UnknownTenant, match=r"unknown tenant 'acmee' \(did you mean: acme\?\)"):
        await tapp.run_job("record", tenants=["acmee"])
    with pytest.raises(UnknownTenant, match="unknown tenant '99'"):
        await tapp.run_job("record", tenants=[99])


async def test_chosen_tenants_are_a_set(tapp, capsys):
    await tapp.run_job("record", tenants=["acme", 1, "acme", "globex", 2])
    assert [r["tenant"] for r in records(capsys)] == ["acme", "globex"]


@pytest.mark.parametrize("ref", [
    "²", "٣", "\uff11", "99999999999999999999999", "2147483648", "9223372036854775808", "-1", " 1",
])
async def test_a_tenant_id_is_ascii_digits_in_range_anything_else_is_a_name(tapp, ref):
    with pytest.raises(UnknownTenant) as error:
        await tapp.run_job("record", tenants=[ref])
    assert str(error.value) == f"unknown tenant {ref!r}"


async def test_inside_a_tenant_a_multi_tenant_job_runs_for_that_tenant_only(tapp, capsys):
    await tapp.run_job("fan-in", tenants=["globex"])
    assert [(r["tenant"], r["args"]) for r in records(capsys)] == [("globex", ["nested"])]
    await tapp.run_background_job("fan-in")
    assert [r["tenant"] for r in records(capsys)] == ["acme", "globex", "initech"]


async def test_outside_any_tenant_a_single_job_is_unscoped(tapp, capsys):
    await tapp.run_background_job("single")
    out = capsys.readouterr().out
    assert out.startswith("single in no tenant\n")
    runs = [json.loads(line) for line in out.splitlines()[1:]]
    assert [r["tenant"] for r in runs] == ["acme", "globex", "initech"]  # it fanned out


async def test_tenant_workspace_for_the_repl(tapp):
    workspace = await tapp.tenant_workspace("globex")
    assert workspace.initial_params == {"_headers": {"x-tenant-id": 2}}
    assert await workspace.database.users.count() == 2
    assert [t.name for t in await workspace.database.tenants.all()] == ["globex"]
    await workspace.aclose()
    with pytest.raises(UnknownTenant):
        await tapp.tenant_workspace("nope")


async def test_bounded_concurrency_keeps_isolation_and_error_rules(tapp, capsys):
    for n in range(1, 9):
        await tapp.database().tenants.insert(name=f"t{n}")
    with pytest.raises(BackgroundJobFailed) as error:
        await tapp.run_background_job("concurrent")
    lines = capsys.readouterr().out.splitlines()
    assert max(int(line.split(": ")[1]) for line in lines if line.startswith("running")) == 4
    done = [line.split()[1] for line in lines if line.startswith("done")]
    assert len(done) == 10 and "t3" not in done
    assert [str(e) for e in error.value.exceptions] == ["t3 fails"]
    assert tapp.engine.engine.pool.checkedout() == 0


async def test_cancelling_mid_fan_out_closes_every_workspace(tapp):
    task = asyncio.create_task(tapp.run_background_job("slow"))
    await checked_out(tapp, 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert tapp.engine.engine.pool.checkedout() == 0
    assert await tapp.database().users.where(name="half-done").count() == 0


async def test_an_async_tenants_filter_is_awaited_and_its_workspace_torn_down(tapp, capsys):
    await tapp.run_background_job("async-filter")  # no RuntimeWarning: warnings are errors
    assert capsys.readouterr().out == "async-filtered acme\nasync-filtered globex\n"
    assert tapp.engine.engine.pool.checkedout() == 0  # the filter's workspace is torn down


async def test_the_workspace_a_tenants_filter_runs_in_is_torn_down(tapp, monkeypatch):
    closed = []
    aclose = Workspace.aclose

    async def recorded(workspace):
        closed.append(workspace.tenant.name if workspace.tenant is not None else None)
        await aclose(workspace)

    monkeypatch.setattr(Workspace, "aclose", recorded)
    await tapp.run_background_job("active-only")
    # the two tenants' runs, and the filter's workspace (no tenant)
    assert sorted(closed, key=str) == [None, "acme", "globex"]


async def test_an_async_tenants_filter_that_raises_names_the_job(tapp, tmp_path):
    root = write_example_app(tmp_path / "raises", {"job.py": """
        from pinrepl import BackgroundJob

        class Job(BackgroundJob):
            multi_tenant = True

            async def tenants_filter(self, tenants):
                await self.database.session.connection()  # held until torn down
                raise LookupError("no plan")

            async def run(self):
                pass
    """}, demo=False)
    url = tapp.engine.url.render_as_string(hide_password=False)
    async with App.open(root, environ={"PINREPL_DATABASE_URL": url}) as app:
        with pytest.raises(LookupError) as raised:
            await app.run_background_job("job")
        assert raised.value.__notes__ == ["in tenants_filter of background job 'job'"]
        assert app.engine.engine.pool.checkedout() == 0


async def test_bad_tenants_filters_name_the_job(tapp):
    with pytest.raises(KeyError) as raised:
        await tapp.run_background_job("filter-raises")
    assert raised.value.__notes__ == ["in tenants_filter of background job 'filter-raises'"]
    with pytest.raises(UnknownColumn) as typo:
        await tapp.run_background_job("filter-typo")
    assert typo.value.__notes__ == ["in tenants_filter of background job 'filter-typo'"]
    with pytest.raises(JobDefinitionError, match="'filter-returns-list': tenants_filter must"):
        await tapp.run_background_job("filter-returns-list")


async def test_no_tenants_table_is_a_clear_error(tmp_path):
    root = write_app(tmp_path / "plain", {"record.py": TENANT_JOBS["record.py"]})
    (root / "empty.db").touch()
    url = f"sqlite+aiosqlite:///{root / 'empty.db'}"
    async with App.open(root, environ={"PINREPL_DATABASE_URL": url}) as app:
        with pytest.raises(NoTenantsTable, match="'record' is multi-tenant but the database"):
            await app.run_background_job("record")


class Watcher:
    """A `Progress` that prints what it is told, in between what the jobs print."""

    def start(self, tenants):
        print("start", [t.name for t in tenants])

    def running(self, tenant):
        print("running", tenant.name)

    def done(self, tenant, error):
        print("done", tenant.name, type(error).__name__ if error else "ok")


async def test_progress_names_the_tenant_running_now(tapp, capsys):
    with pytest.raises(BackgroundJobFailed):
        await tapp.run_job("flaky", progress=Watcher())
    assert capsys.readouterr().out.splitlines() == [
        "start ['acme', 'globex', 'initech']",
        "running acme", "ok acme", "done acme ok",
        "running globex", "done globex ValueError",
        "running initech", "done initech ValueError",
    ]
