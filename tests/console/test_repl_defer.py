"""`defer` and `defer_job` at the prompt (a real pseudo-terminal): the run is queued from
the session's workspace (its tenant), `await run.wait()` shows a fan-out's progress and
raises what `runBackgroundJob` would, Ctrl-C stops the waiting and not the run, and job
names complete inside `defer('`. The bot is the test's `BotDouble`."""

from __future__ import annotations

import time

import pytest

from ..conftest import invoke
from ..test_cli_defer import JOBS, BotDouble, defer_app, runs, tenant_ids
from .terminal import Repl


@pytest.fixture
def app(tmp_path):
    """The app on SQLite (a REPL test takes seconds; the one of `any_app` runs on both)."""
    return defer_app(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'test.db'}")


@pytest.fixture
def any_app(tmp_path, database_url):
    return defer_app(tmp_path, database_url)


def spawn(app, tmp_path, *args):
    """The REPL on the app's database, its jobs loaded."""
    root, env = app
    session = Repl(root, tmp_path, *args, **env)
    session.expect(f"{len(JOBS)} jobs loaded")
    return session


def test_the_banner_says_how_to_defer(app, tmp_path):
    root, env = app
    repl = Repl(root, tmp_path, **env)
    repl.expect("run = await defer('name', *args) queues it for the bots, await run.wait()")
    repl.expect(f"{len(JOBS)} jobs loaded")
    assert repl.quit() == 0


def test_defer_queues_a_run_and_its_handle_follows_it(app, tmp_path):
    repl = spawn(app, tmp_path)
    repl.run("run = await defer('hello', 'Ada', loud='yes'); print('run', 'queued')",
             "run queued")
    (row,) = runs(app)
    repl.run("run", f"<DeferredRun {row['id']} 'hello' queued>")
    repl.run("await run.status()", "'queued'")
    assert (row["origin"], row["args"]) == ("defer", {"args": ["Ada"], "kwargs": {"loud": "yes"}})
    repl.run("later = await defer_job('hello', delay=3600, priority=2, key='k'); "
             "print('run', 'later')", "run later")
    later = runs(app)[-1]
    assert (later["priority"], later["key"]) == (2, "k")
    repl.run("await defer('helo')", "UnknownBackgroundJob: unknown background job 'helo'")
    assert len(runs(app)) == 2
    assert repl.quit() == 0


def test_in_a_tenant_defer_stays_in_that_tenant(app, tmp_path):
    ids = tenant_ids(app)
    repl = spawn(app, tmp_path, "--tenant", "acme")
    repl.run("await defer('everyone')", "<DeferredRun")
    (row,) = runs(app)
    assert (row["job"], row["tenant_id"], row["parent_id"]) == ("everyone", ids["acme"], None)
    repl.run("await defer_job('everyone', tenants=['globex'])",
             "TenantViolation: tenant 'acme' may not run 'everyone' for tenant 'globex'")
    assert len(runs(app)) == 1
    assert repl.quit() == 0


def test_wait_shows_the_progress_of_a_fan_out_and_raises_its_failures(any_app, tmp_path):
    app = any_app
    ids = tenant_ids(app)
    repl = spawn(app, tmp_path)
    repl.run("run = await defer('everyone'); print('run', 'queued')", "run queued")
    repl.child.sendline("await run.wait()")
    bot = BotDouble(*app)
    (fan_out,) = bot.claim()
    tenants = sorted(bot.expand(fan_out), key=lambda run: run.tenant_id or 0)
    repl.expect(f"run {fan_out.id}: 0 of 3 tenants done, 0 failed")
    bot.finish(tenants[0])
    repl.expect(f"run {fan_out.id}: 1 of 3 tenants done, 0 failed")
    bot.finish(tenants[1], failed=True)
    repl.expect(f"run {fan_out.id}: 2 of 3 tenants done, 1 failed")
    bot.finish(tenants[2])
    repl.expect(f"run {fan_out.id}: 3 of 3 tenants done, 1 failed")
    failed = tenants[1]
    repl.expect("background job 'everyone' failed for 1 of 3 tenants")
    repl.expect(f"for tenant {failed.tenant_id} failed (run {failed.id}, try 1): "
                "ValueError: boom")
    assert failed.tenant_id in ids.values()
    repl.run("await run.status()", "'failed'")
    assert repl.quit() == 0


def test_ctrl_c_stops_the_waiting_not_the_run_and_waiting_again_works(app, tmp_path):
    repl = spawn(app, tmp_path)
    repl.run("run = await defer('hello'); print('run', 'queued')", "run queued")
    (row,) = runs(app)
    repl.child.sendline("await run.wait(); print('done', 'waiting')")
    time.sleep(0.5)
    started = time.monotonic()
    repl.child.sendintr()
    seen = repl.expect(f"stopped waiting; run {row['id']} goes on (await run.wait() to wait "
                       "again)")
    assert time.monotonic() - started < 2
    assert "done waiting" not in seen and "Cancelled" not in seen
    repl.run("await run.status()", "'queued'")
    bot = BotDouble(*app)
    (claimed,) = bot.claim()
    bot.finish(claimed)
    repl.run("await run.wait(); print('done', 'waiting')", "done waiting")
    assert [run["status"] for run in runs(app)] == ["succeeded"]
    assert repl.quit() == 0


def test_ctrl_c_on_a_job_run_here_still_says_it_was_cancelled(app, tmp_path):
    root, env = app
    (root / "jobs" / "sleepy.py").write_text(
        "import asyncio\nfrom pinrepl import BackgroundJob\n\n"
        "class Sleepy(BackgroundJob):\n    async def run(self):\n"
        "        print('sleepy started')\n        await asyncio.sleep(60)\n")
    repl = Repl(root, tmp_path, **env)
    repl.expect("3 jobs loaded")
    repl.run("await runBackgroundJob('sleepy')", "sleepy started")
    repl.child.sendintr()
    repl.expect("Cancelled: the job was stopped and its workspace torn down.")
    assert repl.quit() == 0


def test_tab_completes_job_names_inside_defer(app, tmp_path):
    repl = spawn(app, tmp_path)
    repl.child.send("run = await defer('hel")
    repl.expect("'hel")
    repl.expect(" hello")
    repl.child.send("\t")
    repl.run("', 'tab'); print('run', 'queued')", "run queued")
    repl.child.send("await defer_job('every")
    repl.expect("'every")
    repl.expect(" everyone")
    repl.child.send("\t")
    repl.run("')", "<DeferredRun")
    assert [(run["job"], run["args"]["args"]) for run in runs(app)] == \
        [("hello", ["tab"]), ("everyone", [])]
    assert repl.quit() == 0


def test_without_a_terminal_wait_draws_no_progress(app):
    root, env = app
    result = invoke("repl", "--app", root, "-e",
                    "run = await defer('everyone')\nprint(run.id)\n"
                    "await run.wait(timeout=0.3)", env=env)
    assert result.exit_code == 1
    (row,) = runs(app)
    assert result.stdout == f"{row['id']}\n"
    assert "tenants done" not in result.stderr
    # what gave up waiting, said once: no CancelledError, no asyncio frames
    assert result.stderr.splitlines()[-1] == (
        f"pinrepl.errors.WaitTimeout: run {row['id']} ('everyone') did not end within 0.3 s; "
        "it goes on: wait again, or cancel it")
    assert "CancelledError" not in result.stderr and "asyncio" not in result.stderr
