"""The REPL's `jobs` listing: each job's schedules, next slot and last run (the bot's
history, as the session's tenant sees it), in the app's timezone; `-` for a job never run,
and for every job when the database has no runs table or no database at all."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from pinrepl import App, Schedule

from ..conftest import clean_env, invoke, reset_database, run_cli, write_app
from .terminal import Repl

JOBS = {
    "greet.py": """
        from pinrepl import BackgroundJob

        class Greet(BackgroundJob):
            multi_tenant = True

            def meta(self):
                self.schedule("0 9 * * 1")

            async def run(self):
                print("hello", self.tenant.name)
    """,
    "hello.py": """
        from pinrepl import BackgroundJob

        class Hello(BackgroundJob):
            async def run(self):
                print("hello")
    """,
}
PARIS = """
    [tool.pinrepl]
    timezone = "Europe/Paris"
"""
MODELS = "from pinrepl import Model\n"
SLOT = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)  # 09:00 in Paris


def next_slots(cron: str, zone: str, before: datetime) -> list[str]:
    """The next slot of a schedule after `before` and the one after it, as the listing
    shows them in Paris: a command that started at `before` shows one of them (the second
    if a slot passed while it ran)."""
    schedule = Schedule(cron, timezone=zone)
    first = schedule.next_after(before)
    return [slot.astimezone(ZoneInfo("Europe/Paris")).strftime("%Y-%m-%d %H:%M:%S %Z")
            for slot in (first, schedule.next_after(first))]


def next_greet(before: datetime) -> list[str]:
    return next_slots("0 9 * * 1", "Europe/Paris", before)


def last_run(line: str) -> str:
    """The last-run cell of a row of the listing."""
    return re.split(r" {2,}", line.strip())[3]


def run(job, scheduled_for, status="succeeded", tenant_id=None):
    return {"job": job, "scheduled_for": scheduled_for, "status": status,
            "tenant_id": tenant_id, "args": '{"args": [], "kwargs": {}}', "bot": "bot-1",
            "started_at": scheduled_for, "finished_at": scheduled_for + timedelta(seconds=2)}


async def _prepare(root, url, runs):
    """The app's tables, tenants 1 (acme) and 2 (globex), and `runs` in the history."""
    async with App.open(root, environ={"PINREPL_DATABASE_URL": url}) as app:
        await reset_database(app)
        await app.init_database(echo=lambda _line: None)
        database = app.database()
        try:
            for name in ("acme", "globex"):
                await database.tenants.insert(name=name, active=True)
            for row in runs:
                await database.background_job_runs.insert(**row)
        finally:
            await database.aclose()


@pytest.fixture
def app_with_runs(tmp_path, database_url):
    """Greet's latest slot ran for both tenants, globex's run failed; an earlier slot
    succeeded. Hello never ran."""
    root = write_app(tmp_path / "app", JOBS, pyproject=PARIS, models=MODELS)
    asyncio.run(_prepare(root, database_url, [
        run("greet", SLOT - timedelta(days=7), tenant_id=1),
        run("greet", SLOT, tenant_id=1),
        run("greet", SLOT, "failed", tenant_id=2),
    ]))
    return root, {"PINREPL_DATABASE_URL": database_url}


def test_jobs_shows_the_last_run_and_next_slot_in_the_apps_timezone(app_with_runs):
    root, env = app_with_runs
    before = datetime.now(UTC)
    result = invoke("repl", "--app", root, "-e", "jobs", env=env)
    assert (result.exit_code, result.stderr) == (0, "")
    last = "failed (1 of 2) 2025-01-06 09:00:00 CET"
    assert result.stdout.splitlines() in ([
        f"2 background jobs in {root / 'jobs'} (times in Europe/Paris):",
        f"  name   schedules  next run                 {'last run':<{len(last)}}  multi-tenant",
        f"  greet  0 9 * * 1  {upcoming}  {last}  yes",
        f"  hello  -          -                        {'-':<{len(last)}}  no",
    ] for upcoming in next_greet(before)), result.stdout


def test_inside_a_tenant_jobs_shows_that_tenants_last_runs(app_with_runs):
    root, env = app_with_runs
    for tenant, last in (("acme", "succeeded"), ("globex", "failed")):
        result = invoke("repl", "--app", root, "--tenant", tenant, "-e", "jobs", env=env)
        lines = result.stdout.splitlines()
        assert lines[0].endswith(f"(times in Europe/Paris; last runs of tenant {tenant}):")
        assert last_run(lines[2]) == f"{last} 2025-01-06 09:00:00 CET"
    switched = invoke("repl", "--app", root, "-e",
                      "await use_tenant('acme')\njobs\nawait use_tenant(None)\njobs", env=env)
    shown = [line for line in switched.stdout.splitlines() if line.startswith("  greet")]
    assert [last_run(line) for line in shown] == [
        "succeeded 2025-01-06 09:00:00 CET", "failed (1 of 2) 2025-01-06 09:00:00 CET"]


def test_jobs_still_looks_up_lists_and_iterates(app_with_runs):
    root, env = app_with_runs
    before = datetime.now(UTC)
    result = invoke("repl", "--app", root, "-e",
                    "jobs.names\n[job.name for job in jobs]\nlen(jobs), 'hello' in jobs\n"
                    "jobs['hello'].name\njobs\n_.names\nprint(jobs)", env=env)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:4] == ["['greet', 'hello']", "['greet', 'hello']", "(2, True)", "'hello'"]
    assert "failed (1 of 2)" in lines[6] and lines[8] == "['greet', 'hello']"
    # print() cannot wait for the database: it leaves the last run out.
    assert lines[9:] in ([
        f"2 background jobs in {root / 'jobs'} (times in Europe/Paris):",
        "  name   schedules  next run                 multi-tenant",
        f"  greet  0 9 * * 1  {upcoming}  yes",
        "  hello  -          -                        no",
    ] for upcoming in next_greet(before)), result.stdout


def test_without_a_runs_table_every_last_run_is_a_dash(tmp_path):
    root = write_app(tmp_path / "app", JOBS, pyproject=PARIS)
    with closing(sqlite3.connect(root / "pinrepl.db")):  # a database, but no tables
        pass
    result = invoke("repl", "--app", root, "-e", "jobs")
    assert (result.exit_code, result.stderr) == (0, "")
    assert [last_run(line) for line in result.stdout.splitlines()[1:]] == [
        "last run", "-", "-"]


def test_without_a_database_the_listing_shows_and_says_why(tmp_path):
    root = write_app(tmp_path / "app", JOBS)
    result = invoke("repl", "--app", root, "-e", "jobs")
    assert (result.exit_code, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert [last_run(line) for line in lines[2:4]] == ["-", "-"]
    assert lines[4:] == [f"  no runs yet: no database at {root / 'pinrepl.db'}; "
                         "create it with: pinrepl init-database"]
    assert not (root / "pinrepl.db").exists()


EVERY_SECOND = """
    from pinrepl import BackgroundJob

    class Tick(BackgroundJob):
        def meta(self):
            self.schedule("* * * * * *")

        async def run(self):
            pass
"""


def test_a_run_of_the_bot_shows_in_jobs_at_the_prompt(tmp_path):
    root = write_app(tmp_path / "app", {"tick.py": EVERY_SECOND})
    assert run_cli("init-database", cwd=root).returncode == 0
    ran = run_cli("bot", "--once", cwd=root, env=clean_env())
    assert ran.returncode == 0, ran.stderr
    repl = Repl(root, tmp_path)
    repl.expect("1 job loaded")
    before = datetime.now(UTC)
    repl.run("jobs", "last run")
    row = repl.expect("no")
    days = {f"{day:%Y-%m-%d}" for day in (before, datetime.now(UTC))}  # midnight may pass
    assert any(f"tick  * * * * * *  {day}" in row for day in days), row
    assert row.count(" UTC") == 2 and "succeeded " in row
    assert repl.quit() == 0


ZONED = {"weekly.py": """
    from pinrepl import BackgroundJob

    class Weekly(BackgroundJob):
        def meta(self):
            self.schedule("0 9 * * 1")
            self.schedule("30 9 * * 1", "für", timezone="America/New_York", to="Zoë")

        async def run(self, *args, **kwargs):
            pass
"""}


def test_jobs_shows_each_schedule_with_its_timezone_arguments_and_next_slot(tmp_path):
    root = write_app(tmp_path / "app", ZONED, pyproject=PARIS)
    before = datetime.now(UTC)
    result = invoke("repl", "--app", root, "-e", "print(jobs)")
    rows = result.stdout.splitlines()[2:]
    assert len(rows) == 2
    paris = next(row for row in rows if "0 9 * * 1 " in row)
    new_york = next(row for row in rows if "30 9 * * 1" in row)
    assert any(slot in paris for slot in next_slots("0 9 * * 1", "Europe/Paris", before))
    assert "(" not in paris
    assert any(f'30 9 * * 1 (America/New_York) ["für"] {{"to": "Zoë"}}  {slot}' in new_york
               for slot in next_slots("30 9 * * 1", "America/New_York", before)), new_york
    assert rows[0].startswith("  weekly  ")  # the soonest first, on the job's row


def test_with_a_models_file_that_does_not_import_jobs_still_shows_the_last_runs(tmp_path):
    """The history is pinrepl's own table: it needs none of the app's models."""
    root = write_app(tmp_path / "app", JOBS, pyproject=PARIS, models="import nope_not_here\n")
    url = f"sqlite+aiosqlite:///{root / 'pinrepl.db'}"
    asyncio.run(_prepare(write_app(tmp_path / "other", JOBS, models=MODELS), url,
                         [run("greet", SLOT, tenant_id=1)]))
    result = invoke("repl", "--app", root, "-e", "jobs")
    (greet,) = [line for line in result.stdout.splitlines() if line.startswith("  greet")]
    assert last_run(greet) == "succeeded 2025-01-06 09:00:00 CET"
