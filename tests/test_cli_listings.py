"""`list-background-jobs` and `list-background-job-runs` as a user and a script read
them: whole names whatever the width (plain aligned text when piped, a rich table on a
terminal), each schedule's timezone, arguments and next slot, and an exit status a
monitoring script can trust (1 when the last runs could not be read, or a part of the app
did not load)."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import sys
from contextlib import closing
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pexpect
import pytest
from rich.cells import cell_len
from rich.console import Console

from pinrepl import App, Schedule
from pinrepl.console.listing import jobs_table, runs_rows, runs_table
from pinrepl.overview import app_overview
from pinrepl.runs.history import list_runs, tenant_names
from pinrepl.runs.record import args_hash

from .conftest import _on_postgres, clean_env, invoke, one_line, reset_database, write_app
from .console.terminal import ANSI

ARGS = "(a, *rest, to='x')"
LONG_NAMES = {
    "reports/daily_summary.py": f"""
        from pinrepl import BackgroundJob

        class DailySummary(BackgroundJob):
            multi_tenant = True

            def meta(self):
                self.schedule("30 9 * * 1-5", "sales", timezone="America/New_York",
                              to="Jürgen Müller <jm@example.com>")
                self.schedule("0 18 * * 1-5", "sales", to="team@example.com")

            async def run{ARGS}:
                pass
    """,
    "broken/collide_a.py": f"""
        from pinrepl import BackgroundJob

        class CollideA(BackgroundJob):
            def meta(self):
                self.schedule("*/5 * * * *", "a long argument to fill the line")

            async def run{ARGS}:
                pass
    """,
    "broken/collide/x.py": f"""
        from pinrepl import BackgroundJob

        class X(BackgroundJob):
            def meta(self):
                self.schedule("*/5 * * * *", "another long argument to fill it")

            async def run{ARGS}:
                pass
    """,
}
NAMES = ("reports/daily-summary", "broken/collide-a", "broken/collide/x")
PARIS_ZONE = ZoneInfo("Europe/Paris")
PARIS = """
    [tool.pinrepl]
    timezone = "Europe/Paris"
"""


@pytest.fixture
def app(tmp_path):
    return write_app(tmp_path / "app", LONG_NAMES, pyproject=PARIS)


def on_a_terminal(app, *args, columns=80):
    """The screen of `pinrepl ARGS` in a pseudo-terminal of `columns`, and its status."""
    child = pexpect.spawn(sys.executable, ["-m", "pinrepl", *args], cwd=str(app),
                          env=clean_env(TERM="xterm"), encoding="utf-8", timeout=60,
                          dimensions=(50, columns))
    child.expect(pexpect.EOF)
    child.close()
    return ANSI.sub("", child.before), child.exitstatus


def table_of(screen):
    """The lines of the table on `screen`, down to its bottom edge (not a line on stderr)."""
    lines = screen.splitlines()
    bottom = max(index for index, line in enumerate(lines) if line.startswith("└"))
    return lines[:bottom + 1]


def rows_named(text, name):
    """The lines of `text` that name `name` as a whole word, as `grep -w` finds them."""
    return [line for line in text.splitlines() if name in line.replace("│", " ").split()]


def drawn(table, width):
    """The lines of `table` drawn on a console of `width` columns, as the CLI prints it."""
    out = io.StringIO()
    Console(file=out, width=width, highlight=False).print(table, crop=False)
    return out.getvalue().splitlines()


def fits_with_whole(lines, width, wholes):
    """Every line fits in `width` (else the terminal wraps it, splitting what it shows)
    and each of `wholes` is on one line."""
    text = "\n".join(lines)
    assert max(cell_len(line) for line in lines) <= width, text
    for whole in wholes:
        assert any(whole in line for line in lines), text


# -- whole names ------------------------------------------------------------------------------


def test_piped_the_job_listing_is_plain_text_with_whole_names(app):
    result = invoke("list-background-jobs", "--app", app)
    assert result.exit_code == 0, result.output
    for name in NAMES:
        assert len(rows_named(result.stdout, name)) == 1, result.stdout
    assert "…" not in result.stdout and "│" not in result.stdout


def test_on_an_80_column_terminal_names_are_never_cut(app):
    screen, status = on_a_terminal(app, "list-background-jobs")
    assert status == 0, screen
    assert "┏" in screen  # a rich table
    for name in NAMES:
        assert len(rows_named(screen, name)) == 1, screen
    fits_with_whole(table_of(screen), 80, NAMES)


@pytest.mark.parametrize("width", [60, 80, 100])
async def test_the_jobs_table_fits_the_console_with_whole_names(app, width):
    async with App.open(app) as opened:
        overview = await app_overview(opened)
    fits_with_whole(drawn(jobs_table(overview), width), width, NAMES)


# -- schedules --------------------------------------------------------------------------------


def next_slots(cron, zone, before):
    """The next slot of a schedule after `before` and the one after it: a command that
    started at `before` shows one of them (the second if a slot passed while it ran)."""
    schedule = Schedule(cron, zone)
    first = schedule.next_after(before)
    return first, schedule.next_after(first)


def test_each_schedule_shows_its_timezone_arguments_and_next_slot(app):
    before = datetime.now(UTC)
    listed = json.loads(invoke("list-background-jobs", "--json", "--app", app).stdout)
    job = next(job for job in listed["jobs"] if job["name"] == "reports/daily-summary")
    expected = {
        ("30 9 * * 1-5", "America/New_York"): (["sales"], {"to": "Jürgen Müller <jm@example.com>"}),
        ("0 18 * * 1-5", "Europe/Paris"): (["sales"], {"to": "team@example.com"}),
    }
    assert {(s["cron"], s["timezone"]): (s["args"], s["kwargs"]) for s in job["schedules"]} \
        == expected
    for schedule in job["schedules"]:
        upcoming = next_slots(schedule["cron"], schedule["timezone"], before)
        assert datetime.fromisoformat(schedule["next"]) in upcoming
        assert schedule["next"].endswith(("+01:00", "+02:00"))  # in the app's timezone
    assert job["next_run"] == min((s["next"] for s in job["schedules"]),
                                  key=datetime.fromisoformat)

    table = invoke("list-background-jobs", "--app", app).stdout
    (first,) = rows_named(table, "reports/daily-summary")
    lines = table.splitlines()
    both = [first, lines[lines.index(first) + 1]]
    new_york = next(line for line in both if "30 9 * * 1-5" in line)
    paris = next(line for line in both if "0 18 * * 1-5" in line)
    assert '(America/New_York) ["sales"] {"to": "Jürgen Müller <jm@example.com>"}' in new_york
    assert '0 18 * * 1-5 ["sales"] {"to": "team@example.com"}' in paris  # the app's: no zone
    for line, cron, zone in ((new_york, "30 9 * * 1-5", "America/New_York"),
                             (paris, "0 18 * * 1-5", "Europe/Paris")):
        shown = [slot.astimezone(PARIS_ZONE).strftime("%Y-%m-%d %H:%M:%S %Z")
                 for slot in next_slots(cron, zone, before)]
        assert any(slot in line for slot in shown), (line, shown)  # its own next slot


# -- when the listing cannot say everything -----------------------------------------------------


def test_an_unreachable_database_is_said_on_stderr_and_in_the_json_and_exits_1(app):
    env = {"PINREPL_DATABASE_URL": "postgresql://nobody:secret@127.0.0.1:1/db"}
    table = invoke("list-background-jobs", "--app", app, env=env)
    assert table.exit_code == 1
    assert len(rows_named(table.stdout, "reports/daily-summary")) == 1  # listed all the same
    (line,) = table.stderr.splitlines()
    assert line.startswith("last runs unknown: cannot reach database "
                           "postgresql+asyncpg://nobody:***@127.0.0.1:1/db")
    listed = invoke("list-background-jobs", "--json", "--app", app, env=env)
    assert listed.exit_code == 1
    assert json.loads(listed.stdout)["last_runs_unknown"] == line.removeprefix(
        "last runs unknown: ")


def test_a_runs_table_it_cannot_read_is_said_and_exits_1(app):
    with closing(sqlite3.connect(app / "pinrepl.db")) as db:
        db.execute("create table background_job_runs (id integer primary key)")
    result = invoke("list-background-jobs", "--json", "--app", app)
    assert result.exit_code == 1
    reason = json.loads(result.stdout)["last_runs_unknown"]
    assert reason and "background_job_runs" in reason
    assert result.stderr == f"last runs unknown: {reason}\n"


def drop_column(url, table, column):
    statement = f"alter table {table} drop column {column}"
    if url.startswith("sqlite"):
        with closing(sqlite3.connect(url.partition(":///")[2])) as db, db:
            db.execute(statement)
    else:
        asyncio.run(_on_postgres(url, statement))


def test_a_runs_table_missing_a_column_is_the_line_the_runs_listing_says(app, database_url):
    """The last runs are unknown for the reason `list-background-job-runs` gives, the one
    line naming the table, the column and init-database, not the database's own error."""
    env = {"PINREPL_DATABASE_URL": database_url}
    assert invoke("init-database", "--app", app, env=env).exit_code == 0
    drop_column(database_url, "background_job_runs", "finished_at")
    reason = one_line(invoke("list-background-job-runs", "--app", app, env=env))
    assert reason.startswith(
        "table 'background_job_runs' of the database has no column 'finished_at'")
    table = invoke("list-background-jobs", "--app", app, env=env)
    assert (table.exit_code, table.stderr) == (1, f"last runs unknown: {reason}\n")
    assert len(rows_named(table.stdout, "reports/daily-summary")) == 1  # listed all the same
    listed = invoke("list-background-jobs", "--json", "--app", app, env=env)
    assert json.loads(listed.stdout)["last_runs_unknown"] == reason


def test_without_a_database_yet_there_are_no_runs_and_it_exits_0(app):
    result = invoke("list-background-jobs", "--json", "--app", app)
    assert result.exit_code == 0
    assert json.loads(result.stdout)["last_runs_unknown"] is None
    assert result.stderr == (f"no runs yet: no database at {app / 'pinrepl.db'}; create it "
                             "with: pinrepl init-database\n")
    assert not (app / "pinrepl.db").exists()


HELLO = {"hello.py": """
    from pinrepl import BackgroundJob

    class Hello(BackgroundJob):
        def meta(self):
            self.schedule("0 * * * *")

        async def run(self):
            pass
"""}


def test_a_models_file_that_does_not_import_lists_the_jobs_with_its_load_error(tmp_path):
    root = write_app(tmp_path / "app", HELLO, models="import nope_not_here\n")
    # The tables, made by another app on its database file, and one run of hello.
    made = invoke("init-database", "--app", write_app(tmp_path / "other", HELLO),
                  env={"PINREPL_DATABASE_URL": f"sqlite:///{root / 'pinrepl.db'}"})
    assert made.exit_code == 0, made.output
    slot = datetime(2026, 3, 2, 9, tzinfo=UTC)
    with closing(sqlite3.connect(root / "pinrepl.db")) as db, db:
        # A raw insert gives every NOT NULL column (the defaults are SQLAlchemy's).
        db.execute("insert into background_job_runs (job, args, args_hash, scheduled_for, "
                   "status, bot, started_at, origin, attempt, priority, created_at, "
                   "not_before) values ('hello', '{}', ?, ?, 'failed', 'b', ?, 'schedule', "
                   "1, 0, ?, ?)", (args_hash("{}"), *[slot.isoformat(" ")] * 4))
    error = f"{root / 'models.py'}:1: ModuleNotFoundError: No module named 'nope_not_here'"

    table = invoke("list-background-jobs", "--app", root)
    assert table.exit_code == 1
    (row,) = rows_named(table.stdout, "hello")
    assert "failed 2026-03-02 09:00:00 UTC" in row  # the history needs none of the models
    assert table.stderr == f"load error: {error}\n"
    listed = json.loads(invoke("list-background-jobs", "--json", "--app", root).stdout)
    assert listed["errors"] == [{"file": "models.py", "error": error}]
    assert [job["name"] for job in listed["jobs"]] == ["hello"]


# -- the runs ---------------------------------------------------------------------------------


def runs_row(job, slot, status, tenant_id=None, args='{"args": [], "kwargs": {}}'):
    return {"job": job, "scheduled_for": slot, "status": status, "tenant_id": tenant_id,
            "args": args, "bot": "bot-on-a-machine-with-a-long-name-1234",
            "started_at": slot, "finished_at": slot + timedelta(seconds=1.5),
            "error": "RuntimeError: the report server is down for maintenance until Monday"
            if status == "failed" else None}


async def _history(root, runs):
    async with App.open(root) as app:
        await reset_database(app)
        await app.init_database(echo=lambda _line: None)
        database = app.database()
        try:
            for name in ("acme", "globex"):
                await database.tenants.insert(name=name)
            for row in runs:
                await database.background_job_runs.insert(**row)
        finally:
            await database.aclose()


SLOT = datetime(2026, 3, 2, 8, tzinfo=UTC)


@pytest.fixture
def history(app):
    asyncio.run(_history(app, [
        runs_row("reports/daily-summary", SLOT, "succeeded", 1,
                 '{"args": ["für"], "kwargs": {"to": "Zoë"}}'),
        runs_row("reports/daily-summary", SLOT, "failed", 2),
        runs_row("broken/collide-a", SLOT + timedelta(hours=1), "skipped", 9),
    ]))
    return app


def test_piped_the_runs_listing_is_plain_text_with_whole_names(history):
    result = invoke("list-background-job-runs", "--app", history)
    assert (result.exit_code, result.stderr) == (0, ""), result.output
    (skipped,) = rows_named(result.stdout, "broken/collide-a")
    assert skipped.split()[:11] == ["3", "broken/collide-a", "9", "2026-03-02", "10:00:00",
                                    "skipped", "-", "schedule", "1", "-",
                                    "bot-on-a-machine-with-a-long-name-1234"]
    (acme,) = rows_named(result.stdout, "(acme)")
    assert acme.split()[:5] == ["1", "reports/daily-summary", '["für"]', '{"to":', '"Zoë"}']
    assert " 1 (acme) " in acme and "1.500 s" in acme
    (globex,) = rows_named(result.stdout, "(globex)")
    assert " 2 (globex) " in globex and "failed" in globex
    assert "until Monday" in globex  # nothing cut


RUN_WHOLES = ("broken/collide-a", "reports/daily-summary", "2 (globex)", "1 (acme)")


def test_on_an_80_column_terminal_run_ids_jobs_and_tenants_are_never_cut(history):
    screen, status = on_a_terminal(history, "list-background-job-runs")
    assert status == 0, screen
    assert "┏" in screen
    fits_with_whole(table_of(screen), 80, RUN_WHOLES)


@pytest.mark.parametrize("width", [80, 100])
async def test_the_runs_table_fits_the_console_with_whole_jobs_and_tenants(history, width):
    """The job is whole, its arguments wrap in a column of their own."""
    async with App.open(history) as opened:
        database = opened.database()
        try:
            runs = await list_runs(database)
            tenants = await tenant_names(database, [run.tenant_id for run in runs
                                                    if run.tenant_id is not None])
        finally:
            await database.aclose()
        zone = opened.settings.timezone
    lines = drawn(runs_table(runs_rows(runs, zone, tenants), zone), width)
    fits_with_whole(lines, width, RUN_WHOLES)
    ids = [line.split("│")[1].strip() for line in lines if line.startswith("│")]
    assert {"1", "2", "3"} <= set(ids), "\n".join(lines)  # each id whole in its cell


@pytest.mark.parametrize(("options", "said"), [
    ((), "no runs yet"),
    (("--name", "hello"), "no runs of 'hello' yet"),
    (("--status", "failed"), "no failed runs yet"),
])
def test_an_empty_runs_listing_says_so(tmp_path, options, said):
    root = write_app(tmp_path / "app", HELLO)
    assert invoke("init-database", "--app", root).exit_code == 0
    result = invoke("list-background-job-runs", "--app", root, *options)
    assert (result.exit_code, result.stdout, result.stderr) == (0, f"{said}\n", "")
    assert invoke("list-background-job-runs", "--json", "--app", root, *options).stdout == \
        "[]\n"



@pytest.mark.parametrize(("limit", "message"), [
    ("x", "'x' is not a valid whole number."),
    ("2.5", "'2.5' is not a valid whole number."),
    ("0", "0 is not in the range 1<=x<=9223372036854775807."),
])
def test_a_limit_that_is_no_count_says_what_it_must_be(tmp_path, limit, message):
    """As the bot's --concurrency says it (click's own reads "not a valid integer range")."""
    root = write_app(tmp_path / "app", HELLO)
    assert one_line(invoke("list-background-job-runs", "--limit", limit, "--app", root)) == (
        f"Invalid value for '--limit': {message} (see: pinrepl list-background-job-runs --help)")
