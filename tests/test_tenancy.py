"""Multi-tenancy: fan-out per tenant, tenant-scoped data, isolated failures."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing

import pytest

from pinrepl import (
    App,
    BackgroundJobFailed,
    JobDefinitionError,
    NoTenantsTable,
    TenantViolation,
    UnknownTenant,
)

from .conftest import REPO, clean_env, run_cli, write_app, write_demo_app

JOBS = {
    "record.py": """
        from pinrepl import BackgroundJob

        SEEN = []

        class Record(BackgroundJob):
            multi_tenant = True

            async def run(self, *args):
                users = await self.database.users.order_by("id").all()
                SEEN.append({
                    "tenant": self.tenant.name if self.tenant else None,
                    "header": self.initial_params["_headers"].get("x-tenant-id"),
                    "workspace": self.workspace,
                    "user_tenants": {u.tenant_id for u in users},
                    "args": args,
                })
    """,
    "flaky.py": """
        from pinrepl import BackgroundJob

        DONE = []

        class Flaky(BackgroundJob):
            multi_tenant = True

            async def run(self):
                if self.tenant.name in ("globex", "initech"):
                    raise ValueError(f"boom in {self.tenant.name}")
                DONE.append(self.tenant.name)
                print("ok", self.tenant.name)
    """,
    "active_only.py": """
        from pinrepl import BackgroundJob

        class ActiveOnly(BackgroundJob):
            multi_tenant = True

            def tenants_filter(self, tenants):
                return tenants.where(active=True)

            async def run(self):
                print("active", self.tenant.name)
    """,
    "filter_raises.py": """
        from pinrepl import BackgroundJob

        class FilterRaises(BackgroundJob):
            multi_tenant = True

            def tenants_filter(self, tenants):
                raise KeyError("no such filter")

            async def run(self):
                pass
    """,
    "filter_returns_list.py": """
        from pinrepl import BackgroundJob

        class FilterReturnsList(BackgroundJob):
            multi_tenant = True

            def tenants_filter(self, tenants):
                return ["acme"]

            async def run(self):
                pass
    """,
    "nobody.py": """
        from pinrepl import BackgroundJob

        class Nobody(BackgroundJob):
            multi_tenant = True

            def tenants_filter(self, tenants):
                return tenants.where(name="nobody")

            async def run(self):
                print("ran anyway")
    """,
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

        STATE = {"now": 0, "max": 0, "done": []}

        class Concurrent(BackgroundJob):
            multi_tenant = True
            tenant_concurrency = 4

            async def run(self):
                STATE["now"] += 1
                STATE["max"] = max(STATE["max"], STATE["now"])
                try:
                    await asyncio.sleep(0.05)
                    await self.database.users.count()
                    if self.tenant.name == "t3":
                        raise RuntimeError("t3 fails")
                    STATE["done"].append(self.tenant.name)
                finally:
                    STATE["now"] -= 1
    """,
    "slow.py": """
        import asyncio
        from pinrepl import BackgroundJob

        class Slow(BackgroundJob):
            multi_tenant = True

            async def run(self):
                async with self.database.transaction():
                    await self.database.users.insert(name="half-done", email="x")
                    print("started", self.tenant.name, flush=True)
                    await asyncio.sleep(60)
    """,
    "cross_write.py": """
        from pinrepl import BackgroundJob

        class CrossWrite(BackgroundJob):
            async def run(self, what):
                other = 1 if self.tenant.id != 1 else 2
                if what == "insert":
                    await self.database.users.insert(name="x", email="x", tenant_id=other)
                elif what == "update":
                    await self.database.users.update(tenant_id=other)
                elif what == "record":
                    user = await self.database.users.first()
                    await user.update(tenant_id=other)
                elif what == "tenants":
                    await self.database.tenants.insert(name="sneaky")
                elif what == "fan-out":
                    await self.workspace.run_job("record", tenants=[other])
    """,
}


@pytest.fixture
def tapp(example_app, tmp_path):
    """An app of these jobs over the example app's models and demo data."""
    root = write_app(tmp_path / "tapp", JOBS)
    (root / "models.py").symlink_to(REPO / "models.py")
    app = App.open(root, environ={"PINREPL_DATABASE_URL": str(example_app.engine.url)})
    yield app


def module_of(app, job):
    return app.jobs.get(job).cls.run.__globals__


async def test_fan_out_runs_once_per_tenant_in_fresh_scoped_workspaces(tapp):
    await tapp.run_background_job("record", "x")
    seen = module_of(tapp, "record")["SEEN"]
    assert [s["tenant"] for s in seen] == ["acme", "globex", "initech"]
    assert [s["header"] for s in seen] == [1, 2, 3]
    assert [s["user_tenants"] for s in seen] == [{1}, {2}, {3}]
    assert len({id(s["workspace"]) for s in seen}) == 3
    assert {s["args"] for s in seen} == {("x",)}
    await tapp.aclose()


async def test_tenants_filter_selects_tenants(tapp, capsys):
    await tapp.run_background_job("active-only")
    assert capsys.readouterr().out == "active acme\nactive globex\n"
    await tapp.aclose()


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
    assert module_of(tapp, "flaky")["DONE"] == ["acme"]
    assert str(group) == "background job 'flaky' failed for 2 of 3 tenants (2 sub-exceptions)"
    with pytest.raises(BackgroundJobFailed) as again:
        await tapp.run_background_job("flaky")
    try:
        raise again.value
    except* ValueError as matched:
        assert type(matched) is BackgroundJobFailed
    await tapp.aclose()


async def test_chosen_tenants_by_id_or_name(tapp):
    await tapp.run_job("record", ("a",), tenants=["globex", 1])
    seen = module_of(tapp, "record")["SEEN"]
    assert [s["tenant"] for s in seen] == ["globex", "acme"]
    await tapp.run_job("single", tenants=["initech"])  # not multi-tenant: scoped all the same
    assert seen[-1]["tenant"] == "initech"
    with pytest.raises(UnknownTenant, match=r"unknown tenant 'acmee' \(did you mean: acme\?\)"):
        await tapp.run_job("record", tenants=["acmee"])
    with pytest.raises(UnknownTenant, match="unknown tenant '99'"):
        await tapp.run_job("record", tenants=[99])
    await tapp.aclose()


async def test_inside_a_tenant_a_multi_tenant_job_runs_for_that_tenant_only(tapp):
    await tapp.run_job("fan-in", tenants=["globex"])
    seen = module_of(tapp, "record")["SEEN"]
    assert [(s["tenant"], s["args"]) for s in seen] == [("globex", ("nested",))]
    await tapp.run_background_job("fan-in")
    assert [s["tenant"] for s in seen[1:]] == ["acme", "globex", "initech"]
    await tapp.aclose()


async def test_outside_any_tenant_a_single_job_is_unscoped(tapp, capsys):
    await tapp.run_background_job("single")
    assert capsys.readouterr().out == "single in no tenant\n"
    seen = module_of(tapp, "record")["SEEN"]
    assert [s["tenant"] for s in seen] == ["acme", "globex", "initech"]  # it fanned out
    await tapp.aclose()


@pytest.mark.parametrize("what", ["insert", "update", "record", "tenants", "fan-out"])
async def test_writes_to_another_tenant_are_refused(tapp, what):
    before = await tapp.database().users.order_by("id").all()
    with pytest.raises(BackgroundJobFailed) as error:
        await tapp.run_job("cross-write", (what,), tenants=["acme"])
    (violation,) = error.value.exceptions
    assert isinstance(violation, TenantViolation)
    after = await tapp.database().users.order_by("id").all()
    assert [(u.id, u.tenant_id, u.name) for u in after] == \
        [(u.id, u.tenant_id, u.name) for u in before]
    assert await tapp.database().tenants.count() == 3
    await tapp.aclose()


async def test_tenant_workspace_for_the_repl(tapp):
    workspace = await tapp.tenant_workspace("globex")
    assert workspace.initial_params == {"_headers": {"x-tenant-id": 2}}
    assert await workspace.database.users.count() == 2
    assert [t.name for t in await workspace.database.tenants.all()] == ["globex"]
    await workspace.aclose()
    with pytest.raises(UnknownTenant):
        await tapp.tenant_workspace("nope")
    await tapp.aclose()


async def test_bounded_concurrency_keeps_isolation_and_error_rules(tapp):
    for n in range(1, 9):
        await tapp.database().tenants.insert(name=f"t{n}")
    with pytest.raises(BackgroundJobFailed) as error:
        await tapp.run_background_job("concurrent")
    state = module_of(tapp, "concurrent")["STATE"]
    assert state["max"] == 4
    assert len(state["done"]) == 10 and "t3" not in state["done"]
    assert [str(e) for e in error.value.exceptions] == ["t3 fails"]
    assert tapp.engine.engine.pool.checkedout() == 0
    await tapp.aclose()


async def test_cancelling_mid_fan_out_closes_every_workspace(tapp):
    task = asyncio.create_task(tapp.run_background_job("slow"))
    await asyncio.sleep(0.5)
    assert tapp.engine.engine.pool.checkedout() == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert tapp.engine.engine.pool.checkedout() == 0
    assert await tapp.database().users.where(name="half-done").count() == 0
    await tapp.aclose()


async def test_bad_tenants_filters_name_the_job(tapp):
    with pytest.raises(KeyError) as raised:
        await tapp.run_background_job("filter-raises")
    assert raised.value.__notes__ == ["in tenants_filter of background job 'filter-raises'"]
    with pytest.raises(JobDefinitionError, match="'filter-returns-list': tenants_filter must"):
        await tapp.run_background_job("filter-returns-list")
    await tapp.aclose()


async def test_no_tenants_table_is_a_clear_error(tmp_path):
    root = write_app(tmp_path / "plain", {"record.py": JOBS["record.py"]})
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    sqlite3.connect(tmp_path / "empty.db").close()
    async with App.open(root, environ={"PINREPL_DATABASE_URL": url}) as app:
        with pytest.raises(NoTenantsTable, match="'record' is multi-tenant but the database"):
            await app.run_background_job("record")


# -- the CLI -------------------------------------------------------------------------------


@pytest.fixture
def cli_app(tmp_path):
    return write_demo_app(tmp_path / "capp", JOBS)


def test_cli_fan_out_summary_and_failures(cli_app):
    ok = run_cli("run-background-job", "--name", "active-only", cwd=cli_app)
    assert (ok.returncode, ok.stdout) == (0, "active acme\nactive globex\n")
    assert ok.stderr == "tenants: 2 run, 2 succeeded, 0 failed\n"
    failed = run_cli("run-background-job", "--name", "flaky", cwd=cli_app)
    assert failed.returncode == 1
    assert failed.stdout == "ok acme\n"
    assert failed.stderr.count("Traceback") == 2
    assert "ValueError: boom in globex\nin background job 'flaky' for tenant 2 (globex)" \
        in failed.stderr
    assert failed.stderr.endswith("tenants: 3 run, 1 succeeded, 2 failed\n")


def test_cli_tenant_option(cli_app):
    one = run_cli("run-background-job", "--name", "active-only", "--tenant", "initech",
                  cwd=cli_app)
    assert (one.returncode, one.stdout) == (0, "active initech\n")
    two = run_cli("run-background-job", "--name", "active-only", "--tenant", "2",
                  "--tenant", "acme", cwd=cli_app)
    assert two.stdout == "active globex\nactive acme\n"


@pytest.mark.parametrize(("args", "code", "stderr"), [
    (["--name", "active-only", "--tenant", "acmee"], 2,
     "pinrepl: unknown tenant 'acmee' (did you mean: acme?)\n"),
    (["--name", "nobody"], 0, "no tenants selected for 'nobody'; nothing ran\n"),
    (["--name", "filter-returns-list"], 2,
     "pinrepl: background job 'filter-returns-list': tenants_filter must return a query of "
     "tenants (like tenants.where(active=True)), not list\n"),
])
def test_cli_tenant_errors(cli_app, args, code, stderr):
    result = run_cli("run-background-job", *args, cwd=cli_app)
    assert (result.returncode, result.stderr, result.stdout) == (code, stderr, "")


def test_cli_filter_that_raises_is_a_job_failure(cli_app):
    result = run_cli("run-background-job", "--name", "filter-raises", cwd=cli_app)
    assert result.returncode == 1
    assert "KeyError: 'no such filter'\nin tenants_filter of background job 'filter-raises'" \
        in result.stderr


def test_cli_no_tenants_table(tmp_path):
    root = write_app(tmp_path / "bare", {"record.py": JOBS["record.py"]})
    sqlite3.connect(root / "pinrepl.db").close()
    result = run_cli("run-background-job", "--name", "record", cwd=root)
    assert result.returncode == 2
    assert result.stderr == (
        "pinrepl: background job 'record' is multi-tenant but the database has no tenants "
        "table; create it with: pinrepl init-database\n"
    )


def test_cli_ctrl_c_mid_fan_out_rolls_back_and_exits_130(cli_app):
    process = subprocess.Popen(
        [sys.executable, "-m", "pinrepl", "run-background-job", "--name", "slow"],
        cwd=cli_app, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline() == "started acme\n"
    started = time.monotonic()
    os.kill(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=10)
    assert time.monotonic() - started < 5
    assert process.returncode == 130
    assert err.endswith("pinrepl: interrupted\n")
    with closing(sqlite3.connect(cli_app / "pinrepl.db", timeout=0.5)) as db:
        count = db.execute("select count(*) from users where name = 'half-done'").fetchone()
        assert count == (0,)
        db.execute("insert into tenants (name, active) values ('unlocked', 1)")  # no lock
        db.commit()


def test_cli_shows_progress_over_tenants_on_a_terminal(tmp_path):
    import pexpect

    root = write_demo_app(tmp_path / "p", {"slowish.py": """
        import asyncio
        from pinrepl import BackgroundJob

        class Slowish(BackgroundJob):
            multi_tenant = True

            async def run(self):
                await asyncio.sleep(0.5)
    """})
    child = pexpect.spawn(sys.executable, ["-m", "pinrepl", "run-background-job", "--name",
                                           "slowish"], cwd=str(root),
                          env=clean_env(TERM="xterm"), encoding="utf-8", timeout=20)
    child.expect("tenant acme")  # the bar's description follows the tenants as they finish
    child.expect("━")
    child.expect("tenants: 3 run, 3 succeeded, 0 failed")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
