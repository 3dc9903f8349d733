"""Ctrl-C in the interactive REPL interrupts blocking code as well as awaiting code, and
`exit()` / `quit()` / `exit(n)` / `sys.exit(n)` end the session with that status."""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing

import pytest

from ..conftest import write_demo_app
from .terminal import Repl

JOBS = {
    "blocking.py": """
        import time
        from pinrepl import BackgroundJob

        class Blocking(BackgroundJob):
            async def run(self):
                async with self.database.transaction():
                    await self.database.users.insert(name="half-done", email="x")
                    print("blocking " + "started")
                    time.sleep(30)  # blocking I/O, say
    """,
    "stuck_tenants.py": """
        import asyncio, time
        from pinrepl import BackgroundJob

        class StuckTenants(BackgroundJob):
            multi_tenant = True
            tenant_concurrency = 3

            async def run(self):
                if self.tenant.name == "globex":
                    print("stuck " + "started")
                    time.sleep(30)
                await asyncio.sleep(1.5)
                print("tenant " + "finished")
    """,
}


@pytest.fixture
def app(tmp_path):
    return write_demo_app(tmp_path / "app", JOBS)


def users(app):
    with closing(sqlite3.connect(app / "pinrepl.db")) as db:
        return db.execute("select count(*) from users").fetchone()[0]


def interrupted(repl, started, *expected):
    """Send Ctrl-C once `started` is on screen (the code runs: the terminal is no longer
    the prompt's); the seconds until the last of `expected` shows. The prompt comes back
    before or after the error above it (the output reaches the screen through the prompt's
    patched stdout): a test shows the session goes on by the next line it evaluates."""
    repl.expect(started)
    sent = time.monotonic()
    repl.child.sendintr()
    for text in expected:
        repl.expect(text, timeout=5)
    return time.monotonic() - sent


@pytest.mark.parametrize("code", [
    "import time; print('sleeping ' + 'started'); time.sleep(20)",
    "print('sleeping ' + 'started'); n = sum(1 for _ in iter(int, 1))",  # a busy loop
])
def test_ctrl_c_interrupts_blocking_code(app, tmp_path, code):
    repl = Repl(app, tmp_path)
    repl.expect("jobs loaded")
    repl.child.sendline(code)
    took = interrupted(repl, "sleeping started", "Traceback (most recent call last):",
                       'File "<stdin>", line 1, in <module>', "KeyboardInterrupt")
    assert took < 1
    repl.run("6 * 7", "42")
    assert repl.quit() == 0


def test_ctrl_c_interrupts_a_blocking_job_and_tears_its_workspace_down(app, tmp_path):
    repl = Repl(app, tmp_path)
    repl.expect("jobs loaded")
    repl.child.sendline("await runBackgroundJob('blocking')")
    took = interrupted(repl, "blocking started", "/jobs/blocking.py\", line 10, in run",
                       "KeyboardInterrupt")
    assert took < 1
    repl.run("await database.users.where(name='half-done').count()", "0")  # rolled back
    assert repl.quit() == 0
    assert users(app) == 6


def test_ctrl_c_stops_a_fan_out_whose_tenant_blocks(app, tmp_path):
    repl = Repl(app, tmp_path)
    repl.expect("jobs loaded")
    repl.child.sendline("await runBackgroundJob('stuck-tenants')")
    took = interrupted(repl, "stuck started", "Cancelled")
    assert took < 1
    repl.settle(2)
    assert "tenant finished" not in repl.raw  # the other tenants were stopped too
    repl.run("6 * 7", "42")
    assert repl.quit() == 0


def test_a_second_ctrl_c_at_an_idle_prompt_clears_the_line(app, tmp_path):
    repl = Repl(app, tmp_path)
    repl.expect("jobs loaded")
    repl.child.sendline("import time; print('sleeping ' + 'started'); time.sleep(20)")
    interrupted(repl, "sleeping started", "KeyboardInterrupt")
    repl.run("'ready'", "'ready'")  # the prompt is back
    repl.settle()
    repl.child.send("undefined_name_typed")
    time.sleep(0.3)
    repl.child.sendintr()
    repl.settle()
    repl.run("6 * 7", "42")
    assert "NameError" not in repl.raw
    assert repl.quit() == 0


@pytest.mark.parametrize(("line", "status"), [
    ("exit()", 0), ("quit()", 0), ("exit(3)", 3), ("quit(4)", 4),
    ("import sys; sys.exit(5)", 5), ("sys.exit('bye')", 1),
])
def test_exit_ends_the_session_with_its_status(app, tmp_path, line, status):
    repl = Repl(app, tmp_path)
    repl.expect("jobs loaded")
    repl.child.sendline("import sys")
    repl.child.sendline(line)
    assert repl.ended() == status
    assert "Traceback" not in repl.raw


def test_exit_rolls_the_sandbox_back_first(app, tmp_path):
    repl = Repl(app, tmp_path, "--sandbox")
    repl.expect("pinrepl [sandbox] >")
    repl.run("await database.users.insert(name='Temp', email='t@x')", "name='Temp'")
    repl.child.sendline("exit(7)")
    assert repl.ended() == 7
    assert users(app) == 6
