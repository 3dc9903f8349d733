"""The jobs overview (`pinrepl.overview`): computed once for a moment given as `now`, and
rendered by the CLI (rich) and the REPL (plain text) alike; the last runs read from the
bot's history, each job's latest slot with its statuses counted by the database."""

from __future__ import annotations

import io
import logging
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from rich.console import Console

from pinrepl import App, DatabaseUnavailable, NoDatabase
from pinrepl.console.listing import jobs_table, jobs_text, listing
from pinrepl.db.models import Tenant
from pinrepl.overview import jobs_overview, read_history
from pinrepl.runs.history import last_runs
from pinrepl.runs.record import shown_args
from pinrepl.runs.tables import BackgroundJobRun

from .conftest import reset_database, write_app

NEW_YORK = ZoneInfo("America/New_York")
#: 01:15 EDT on the day the clocks go back: 01:00-02:00 comes twice (EDT, then EST).
AUTUMN = datetime(2026, 11, 1, 1, 15, tzinfo=NEW_YORK)

TWICE = {"report.py": """
    from pinrepl import BackgroundJob

    class Report(BackgroundJob):
        def meta(self):
            self.schedule("10 * * * *")
            self.schedule("30 1 * * *")

        async def run(self):
            pass
"""}
ZONES = {"weekly.py": """
    from pinrepl import BackgroundJob

    class Weekly(BackgroundJob):
        multi_tenant = True

        def meta(self):
            self.schedule("30 9 * * 1", "für", timezone="America/New_York", to="Zoë")
            self.schedule("0 9 * * 1")

        async def run(self, *args, **kwargs):
            pass
"""}
NEW_YORK_APP = """
    [tool.pinrepl]
    timezone = "America/New_York"
"""


def rich_text(overview) -> str:
    out = io.StringIO()
    Console(file=out, width=200, highlight=False).print(jobs_table(overview))
    return out.getvalue()


async def test_the_next_run_is_the_first_instant_inside_the_repeated_hour(tmp_path):
    """At 01:15 EDT, 01:30 EDT (05:30Z) comes before 01:10 EST (06:10Z), though 01:10
    reads earlier on the wall clock."""
    async with App.open(write_app(tmp_path / "app", TWICE, pyproject=NEW_YORK_APP)) as app:
        overview = jobs_overview(app.jobs, NEW_YORK, None, AUTUMN)
        repl = listing(app.jobs, NEW_YORK, None, AUTUMN)
    (job,) = overview.jobs
    assert job.next is not None
    assert job.next.astimezone(UTC) == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)
    assert [s.cron for s in job.schedules] == ["30 1 * * *", "10 * * * *"]  # soonest first
    assert overview.as_json()["jobs"][0]["next_run"] == "2026-11-01T01:30:00-04:00"
    rows = {"the REPL": repl.splitlines()[2],
            "the CLI": rich_text(overview).splitlines()[4]}
    for shown in rows.values():
        assert "report" in shown and "2026-11-01 01:30:00 EDT" in shown, rows
        assert "01:10:00 EST" not in shown


async def test_each_schedule_shows_its_timezone_arguments_and_next_slot(tmp_path):
    now = datetime(2026, 6, 1, 12, tzinfo=UTC)  # a Monday
    async with App.open(write_app(tmp_path / "app", ZONES)) as app:
        overview = jobs_overview(app.jobs, ZoneInfo("UTC"), None, now)
    assert overview.as_json()["jobs"][0]["schedules"] == [  # soonest first
        {"cron": "30 9 * * 1", "timezone": "America/New_York", "args": ["für"],
         "kwargs": {"to": "Zoë"}, "next": "2026-06-01T13:30:00+00:00"},
        {"cron": "0 9 * * 1", "timezone": "UTC", "args": [], "kwargs": {},
         "next": "2026-06-08T09:00:00+00:00"},
    ]
    text = jobs_text(overview).splitlines()
    assert text[2].split() == ["weekly", "30", "9", "*", "*", "1", "(America/New_York)",
                               '["für"]', '{"to":', '"Zoë"}', "2026-06-01", "13:30:00", "UTC",
                               "yes"]
    assert text[3].split() == ["0", "9", "*", "*", "1", "2026-06-08", "09:00:00", "UTC"]


def test_shown_arguments_keep_their_text():
    """The bot's log lines and the runs listing show what the schedule says."""
    assert shown_args('{"args": ["für"], "kwargs": {"to": "Zoë"}}') == ' ["für"] {"to": "Zoë"}'


SLOT = datetime(2026, 3, 2, 9, tzinfo=UTC)


def run(job, slot, status="succeeded", tenant_id=None):
    return {"job": job, "scheduled_for": slot, "status": status, "tenant_id": tenant_id,
            "args": '{"args": [], "kwargs": {}}', "bot": "bot-1", "started_at": slot,
            "finished_at": slot + timedelta(seconds=tenant_id or 1)}


@pytest.fixture
async def history(tmp_path, database_url):
    """weekly: 3 tenants in its latest slot (one failed, one still running), 5 slots
    before it; an hourly report that ran once, without tenants."""
    root = write_app(tmp_path / "app", {**ZONES, **TWICE})
    async with App.open(root, environ={"PINREPL_DATABASE_URL": database_url}) as app:
        await reset_database(app)
        await app.init_database(echo=lambda _line: None)
        database = app.database()
        try:
            for name in ("acme", "globex", "initech"):
                await database.tenants.insert(name=name)
            for week in range(1, 6):
                for tenant in (1, 2, 3):
                    await database.background_job_runs.insert(
                        **run("weekly", SLOT - timedelta(weeks=week), tenant_id=tenant))
            for tenant, status in ((1, "succeeded"), (2, "failed"), (3, "running")):
                row = run("weekly", SLOT, status, tenant)
                if status == "running":
                    row["finished_at"] = None
                await database.background_job_runs.insert(**row)
            await database.background_job_runs.insert(**run("report", SLOT - timedelta(hours=1)))
        finally:
            await database.aclose()
        yield app


async def test_before_the_sqlite_file_exists_there_are_no_runs_yet_and_no_file_is_made(
        tmp_path):
    """The engine says `NoDatabase` before it connects (which would make the file): no bot
    has run, which is known, not unknown."""
    root = write_app(tmp_path / "app", TWICE)
    async with App.open(root, environ={}) as app:
        found = await read_history(app)
        with pytest.raises(NoDatabase) as raised:
            await app.engine.check()
    said = f"no database at {root / 'pinrepl.db'}; create it with: pinrepl init-database"
    assert (found.last_runs, found.unknown, found.note) == ({}, None, f"no runs yet: {said}")
    assert str(raised.value) == said and isinstance(raised.value, DatabaseUnavailable)
    assert not (root / "pinrepl.db").exists()


async def test_the_last_run_is_the_latest_slot_with_its_statuses_counted(history):
    found = await read_history(history)
    assert found.unknown is None
    weekly, report = found.last_runs["weekly"], found.last_runs["report"]
    assert (weekly.scheduled_for, weekly.status, weekly.counts) == (
        SLOT, "running", {"failed": 1, "running": 1, "succeeded": 1})
    assert weekly.finished_at == SLOT + timedelta(seconds=2)  # the last of those that ended
    assert weekly.shown_status() == "running (1 of 3)"
    assert (report.status, report.runs) == ("succeeded", 1)


async def test_a_retried_run_counts_as_its_last_try(history):
    """globex failed its first try of the latest slot; its second try succeeded: the slot
    counts that try, not both."""
    database = history.database()
    try:
        (first,) = await database.background_job_runs.where(
            job="weekly", scheduled_for=SLOT, tenant_id=2).all()
        await database.background_job_runs.insert(
            **run("weekly", SLOT, "succeeded", 2), attempt=2, retry_of=first.id)
    finally:
        await database.aclose()
    weekly = (await read_history(history)).last_runs["weekly"]
    assert weekly.counts == {"running": 1, "succeeded": 2}


async def test_in_a_tenant_the_last_runs_are_that_tenants(history):
    (globex,) = await history.runner.resolve_tenants(["globex"])
    found = await read_history(history, globex)
    assert found.tenant == "globex"
    assert set(found.last_runs) == {"weekly"}
    assert (found.last_runs["weekly"].status, found.last_runs["weekly"].counts) == (
        "failed", {"failed": 1})


async def test_last_runs_of_named_jobs_only(history):
    database = history.database()
    try:
        assert set(await last_runs(database, ["report", "nope"])) == {"report"}
        assert set(await last_runs(database)) == {"report", "weekly"}
    finally:
        await database.aclose()


async def test_the_last_run_of_a_fan_out_fetches_a_row_per_status_not_one_per_tenant(
        tmp_path, caplog):
    """The database counts the statuses of the latest slot (item 29): its 200 tenants'
    runs, of 2 statuses, come back as 2 rows, as SQLAlchemy's echo of each fetched row
    shows, however many tenants the job fans out over."""
    async with App.open(write_app(tmp_path / "app", ZONES)) as app:
        await app.init_database(echo=lambda _line: None)
        database = app.database()
        try:
            session = database.session
            session.add_all(Tenant(name=f"tenant-{number}") for number in range(1, 201))
            await session.flush()
            session.add_all(BackgroundJobRun(**run("weekly", slot, status, tenant_id=tenant))
                            for tenant in range(1, 201)
                            for slot, status in ((SLOT - timedelta(weeks=1), "succeeded"),
                                                 (SLOT, "failed" if tenant == 7 else
                                                  "succeeded")))
            await session.commit()
            await last_runs(database, ["weekly"])  # what is looked up once (the runs table)
            caplog.set_level(logging.DEBUG, logger="sqlalchemy.engine.Engine")
            found = await last_runs(database, ["weekly"])
        finally:
            await database.aclose()
    assert found["weekly"].counts == {"failed": 1, "succeeded": 199}
    fetched = [record for record in caplog.records if record.msg == "Row %r"]
    assert len(fetched) == 2, [record.getMessage() for record in fetched]
