"""On-demand runs are records too (SPEC 8): `run-background-job` (origin `cli`),
`runBackgroundJob` at the REPL (`repl`), and application code that asks (`app`); in the
calling process, as before, and never retried."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from pinrepl import App

from ..conftest import clean_env, invoke, run_cli, write_app

JOBS = {
    "hello.py": """
        from pinrepl import BackgroundJob

        class Hello(BackgroundJob):
            retries = 3

            async def run(self, who="world"):
                run = self.current_run
                print("hello", who, run.origin if run else None, run.id if run else None)
    """,
    "fails.py": """
        from pinrepl import BackgroundJob

        class Fails(BackgroundJob):
            retries = 3

            async def run(self):
                raise ValueError("no luck")
    """,
    "slow.py": """
        import asyncio
        from pinrepl import BackgroundJob

        class Slow(BackgroundJob):
            async def run(self):
                await asyncio.sleep(30)
    """,
    "each.py": """
        from pinrepl import BackgroundJob

        class Each(BackgroundJob):
            multi_tenant = True

            async def run(self):
                if self.tenant.name == "globex":
                    raise RuntimeError("not globex")
    """,
}


@pytest.fixture
def app_dir(tmp_path: Path, database_url: str) -> tuple[Path, dict[str, str]]:
    env = {"PINREPL_DATABASE_URL": database_url}
    root = write_app(tmp_path / "app", JOBS)
    assert invoke("init-database", "--demo", "--app", root, env=env).exit_code == 0
    return root, env


def listed(root: Path, env: dict[str, str]) -> list[dict[str, Any]]:
    result = invoke("list-background-job-runs", "--json", "--app", root, env=env)
    assert result.exit_code == 0, result.output
    return sorted(json.loads(result.stdout), key=lambda run: run["id"])


def test_a_cli_run_is_recorded_with_origin_cli(app_dir):
    root, env = app_dir
    result = invoke("run-background-job", "--name", "hello", "you", "--app", root, env=env)
    assert result.exit_code == 0, result.output
    (run,) = listed(root, env)
    assert (run["job"], run["origin"], run["status"], run["attempt"]) == (
        "hello", "cli", "succeeded", 1)
    assert run["args"] == {"args": ["you"], "kwargs": {}} and run["bot"] is None
    assert f"hello you cli {run['id']}" in result.stdout  # the job saw its record


def test_a_failed_cli_run_is_recorded_failed_with_its_traceback_and_not_retried(app_dir):
    root, env = app_dir
    result = invoke("run-background-job", "--name", "fails", "--app", root, env=env)
    assert result.exit_code == 1
    (run,) = listed(root, env)
    assert run["status"] == "failed" and run["error"] == "ValueError: no luck"
    assert "ValueError: no luck" in run["traceback"]


def test_a_cli_run_past_its_timeout_is_timed_out(app_dir):
    root, env = app_dir
    result = invoke("run-background-job", "--name", "slow", "--timeout", "0.3", "--app", root,
                    env=env)
    assert result.exit_code == 1
    assert "JobTimeout" in result.output
    (run,) = listed(root, env)
    assert run["status"] == "timed_out" and run["timeout"] == 0.3


def test_a_cli_fan_out_records_its_row_and_one_per_tenant(app_dir):
    root, env = app_dir
    result = invoke("run-background-job", "--name", "each", "--app", root, env=env)
    assert result.exit_code == 1
    fan_out, *tenants = listed(root, env)
    assert fan_out["tenant_id"] is None and fan_out["status"] == "failed"
    assert {run["parent_id"] for run in tenants} == {fan_out["id"]}
    assert sorted((run["tenant_id"], run["status"]) for run in tenants) == [
        (1, "succeeded"), (2, "failed"), (3, "succeeded")]


def test_a_bad_cli_call_records_nothing(app_dir):
    root, env = app_dir
    assert invoke("run-background-job", "--name", "helo", "--app", root, env=env).exit_code == 2
    assert invoke("run-background-job", "--name", "hello", "a", "b", "--app", root,
                  env=env).exit_code == 2
    assert listed(root, env) == []


def test_the_repl_records_its_runs_with_origin_repl(app_dir):
    root, env = app_dir
    result = run_cli("repl", "--execute", "await runBackgroundJob('hello', 'repl user')",
                     cwd=root, env=clean_env(**env))
    assert result.returncode == 0, result.stderr
    (run,) = listed(root, env)
    assert (run["origin"], run["status"]) == ("repl", "succeeded")


def test_application_code_records_only_when_asked(app_dir):
    root, env = app_dir

    async def main() -> None:
        async with App.open(root, environ=env) as app:
            await app.run_background_job("hello")
            await app.run_job("hello", ["app"], record=True)

    asyncio.run(main())
    (run,) = listed(root, env)
    assert (run["origin"], run["args"]["args"]) == ("app", ["app"])


def test_without_pinrepl_tables_runs_go_unrecorded_with_one_warning(tmp_path):
    root = write_app(tmp_path / "app", JOBS)
    with closing(sqlite3.connect(root / "pinrepl.db")) as db, db:
        db.execute("create table tenants (id integer primary key, name text, active bool, "
                   "created_at timestamp)")
    result = invoke("run-background-job", "--name", "hello", "--app", root)
    assert result.exit_code == 0, result.output
    assert "hello world None None" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if "not recorded" in line]
    assert len(warnings) == 1 and "background_job_runs" in warnings[0]


def test_sigterm_ends_a_cli_run_recorded_cancelled(app_dir):
    import signal
    import subprocess
    import sys
    import time

    root, env = app_dir
    process = subprocess.Popen(
        [sys.executable, "-m", "pinrepl", "run-background-job", "--name", "slow", "--app",
         str(root)], env=clean_env(**env), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not [r for r in listed(root, env) if r["status"] == "running"]:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err
    (run,) = listed(root, env)
    assert run["status"] == "cancelled"
