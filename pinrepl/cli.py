"""The `pinrepl` command line: a thin click layer over `App` and the REPL.

Exit codes: 0 success, 1 a job (or REPL code) failed, 2 a usage error or any other error a
user can cause (printed as one line, never a traceback, and nothing changed), 130 Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import sys
import traceback
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any

import click

from .app import App, Settings
from .errors import BackgroundJobFailed, ConfigError, DatabaseUnavailable, PinreplError
from .repl import configure_logging

app_option = click.option(
    "--app", "app_dir", envvar="PINREPL_APP", metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="The app folder (default: $PINREPL_APP, else the current directory).",
)


def fail(message: str, code: int = 2) -> None:
    click.echo(f"pinrepl: {message}", err=True)
    sys.exit(code)


def command(func: Callable[..., Coroutine[Any, Any, int | None]]) -> Callable[..., None]:
    """Run an async command; turn the errors a user can cause into one line and exit 2."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            code = asyncio.run(func(*args, **kwargs))
        except PinreplError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted", 130)
        sys.exit(code or 0)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pinrepl")
def cli() -> None:
    """Named background jobs for Python apps, and the async REPL that drives them."""


# -- run-background-job ------------------------------------------------------------------


class _FanOutReport:
    """Progress bar (on a terminal) and the closing summary of a multi-tenant run."""

    def __init__(self) -> None:
        self.total = self.failed = 0
        self.started = False
        self._bar: Any = None

    def start(self, tenants: list[Any]) -> None:
        self.started, self.total = True, len(tenants)
        if sys.stderr.isatty() and tenants:
            from rich.console import Console
            from rich.progress import Progress

            self._bar = Progress(console=Console(stderr=True), transient=True)
            self._bar.start()
            self._task = self._bar.add_task("tenants", total=len(tenants))

    def done(self, tenant: Any, error: BaseException | None) -> None:
        self.failed += error is not None
        if self._bar is not None:
            self._bar.update(self._task, advance=1, description=f"tenant {tenant.name}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def summary(self) -> str:
        return (
            f"tenants: {self.total} run, {self.total - self.failed} succeeded, "
            f"{self.failed} failed"
        )


def _raised_by_job(exc: BaseException) -> bool:
    """Did the job's own code raise `exc` (the runner noted the job on it)? A bad setting or
    an unreachable database is the app's environment at fault, wherever it surfaced."""
    notes = getattr(exc, "__notes__", ())
    return not isinstance(exc, ConfigError | DatabaseUnavailable) and any(
        note.startswith(("in background job", "in tenants_filter")) for note in notes
    )


@cli.command("run-background-job")
@click.option("--name", required=True, help="The job's name, e.g. send-newsletter.")
@click.option(
    "--tenant", "tenants", multiple=True, metavar="ID_OR_NAME",
    help="Run for this tenant only (repeatable), multi-tenant job or not.",
)
@click.argument("args", nargs=-1)
@app_option
@command
async def run_background_job(
    name: str, tenants: tuple[str, ...], args: tuple[str, ...], app_dir: Path | None
) -> int:
    """Run job NAME now, with ARGS forwarded as strings, and wait for it to finish."""
    configure_logging()
    async with App(Settings.load(app_dir)) as app:
        spec = app.jobs.get(name)
        report = _FanOutReport()
        try:
            await app.run_job(name, args, tenants=tenants or None, progress=report)
        except BackgroundJobFailed as group:
            report.close()
            for exc in group.exceptions:
                traceback.print_exception(exc)
            click.echo(report.summary(), err=True)
            return 1
        except Exception as exc:
            if isinstance(exc, PinreplError) and not _raised_by_job(exc):
                raise  # a usage error: one line, exit 2
            report.close()
            traceback.print_exception(exc)
            return 1
        finally:
            report.close()
        if report.started:
            if report.total == 0:
                click.echo(f"no tenants selected for {spec.name!r}; nothing ran", err=True)
            else:
                click.echo(report.summary(), err=True)
    return 0


# -- list-background-jobs ----------------------------------------------------------------


@cli.command("list-background-jobs")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@app_option
def list_background_jobs(as_json: bool, app_dir: Path | None) -> None:
    """List the jobs: schedules, next run in the app's timezone, tenancy, load errors.

    Exits 1 when a job file failed to load."""
    try:
        settings = Settings.load(app_dir)
        registry = App(settings).jobs
    except PinreplError as exc:
        fail(str(exc))
    now = datetime.now(UTC)
    rows = []
    for spec in registry:
        upcoming = [s.next_after(now, settings.timezone) for s in spec.schedules]
        shown_next = min(upcoming).strftime("%Y-%m-%d %H:%M:%S %Z") if upcoming else "-"
        rows.append({
            "name": spec.name,
            "file": str(spec.path.relative_to(settings.root)),
            "schedules": [s.expression for s in spec.schedules],
            "next_run": min(upcoming).isoformat() if upcoming else None,
            "multi_tenant": spec.multi_tenant,
            "shown_next": shown_next,
        })
    errors = [{"file": e.path, "error": e.message} for e in registry.errors]
    if as_json:
        for row in rows:
            del row["shown_next"]
        click.echo(json.dumps(
            {"timezone": settings.timezone.key, "jobs": rows, "errors": errors}, indent=2
        ))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"background jobs (times in {settings.timezone.key})")
        for column in ("name", "schedules", "next run", "multi-tenant"):
            table.add_column(column)
        for row in rows:
            table.add_row(
                row["name"], "\n".join(row["schedules"]) or "-",
                row["shown_next"], "yes" if row["multi_tenant"] else "no",
            )
        console = Console(soft_wrap=True)
        console.print(table)
        for error in errors:
            Console(stderr=True, soft_wrap=True, highlight=False).print(
                f"load error: {error['file']}: {error['error']}", markup=False
            )
    sys.exit(1 if errors else 0)


# -- generate-background-job --------------------------------------------------------------

TEMPLATE = '''\
from pinrepl import BackgroundJob


class {class_name}(BackgroundJob):
    def meta(self):
        self.schedule("0 * * * *")  # every hour, on the hour

    async def run(self, *args, **kwargs):
        print("{name}: ran with", args, kwargs)
'''


@cli.command("generate-background-job")
@click.option("--name", required=True, help="The new job's name, e.g. reports/daily-summary.")
@app_option
def generate_background_job(name: str, app_dir: Path | None) -> None:
    """Write jobs/<snake_name>.py from a template with a schedule and a run()."""
    from .jobs import JOB_NAME, job_name_of

    try:
        settings = Settings.load(app_dir)
    except PinreplError as exc:
        fail(str(exc))
    if not JOB_NAME.fullmatch(name):
        fail(
            f"{name!r} is not a job name: use lowercase letters, digits and dashes, "
            "with '/' between folders (e.g. reports/daily-summary)"
        )
    jobs_dir = settings.jobs_dir
    path = jobs_dir / (name.replace("-", "_") + ".py")
    taken = [
        p for p in (jobs_dir.rglob("*.py") if jobs_dir.is_dir() else ())
        if job_name_of(jobs_dir, p) == name
    ]
    if taken or path.exists():
        fail(f"job {name!r} exists already: {(taken or [path])[0]}")
    class_name = "".join(part.capitalize() for part in name.split("/")[-1].split("-"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TEMPLATE.format(class_name=class_name, name=name), encoding="utf-8")
    click.echo(f"created {path}")


# -- init-database -------------------------------------------------------------------------


@cli.command("init-database")
@click.option("--demo", is_flag=True, help="Add sample tenants, users and notifications.")
@app_option
@command
async def init_database(demo: bool, app_dir: Path | None) -> None:
    """Create the tables (the built-in tenants and the app's models)."""
    async with App(Settings.load(app_dir)) as app:
        await app.init_database(demo=demo, echo=click.echo)


# -- repl and transcripts -------------------------------------------------------------------


@cli.command("repl")
@click.option("--execute", "-e", "code", metavar="CODE",
              help="Run CODE (top-level await allowed) instead of starting the prompt.")
@click.option("--tenant", metavar="ID_OR_NAME", help="Scope `database` to this tenant.")
@click.option("--sandbox", is_flag=True,
              help="Roll back every database write of the session when it ends.")
@app_option
@command
async def repl(code: str | None, tenant: str | None, sandbox: bool, app_dir: Path | None
               ) -> int:
    """The async REPL: `await runBackgroundJob('name')`, `database`, `jobs`, `reload()`.

    With --execute, or with a standard input that is not a terminal, the code runs through
    the same evaluator and the exit status is 1 on an uncaught exception."""
    from .repl import execute, history_path, interact, open_console, shown_url

    configure_logging()
    async with App(Settings.load(app_dir)) as app:
        console = await open_console(app, tenant, sandbox)
        try:
            if code is not None:
                return await execute(console, code, "<string>")
            if not sys.stdin.isatty():
                return await execute(console, sys.stdin.read())
            settings = app.settings
            click.echo(
                f"pinrepl {_version()} · app {settings.root} · "
                f"database {shown_url(settings.database_url)}"
                + (" · sandbox: writes are rolled back at exit" if sandbox else "")
            )
            click.echo(
                "await runBackgroundJob('name', *args) · database.<table> · jobs · reload() · "
                "await use_tenant('name') · Ctrl-C stops a job · Ctrl-D quits"
            )
            await interact(console, history_path(app))
        finally:
            await console.aclose()
    return 0


def _version() -> str:
    from . import __version__

    return __version__


@cli.command("transcript")
@click.argument("files", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--update", is_flag=True, help="Rewrite the expected output of what differs.")
@click.option("--no-sandbox", is_flag=True, help="Keep the database writes of the replay.")
@app_option
@command
async def transcript(files: tuple[Path, ...], update: bool, no_sandbox: bool,
                     app_dir: Path | None) -> int:
    """Replay transcript FILES through the REPL's evaluator and show the differences."""
    from .transcripts import Transcript, replay, updated

    parsed = [Transcript.read(path) for path in files]  # all malformed files fail first
    failed = 0
    async with App(Settings.load(app_dir)) as app:
        for script in parsed:
            outcomes = await replay(script, app, sandbox=not no_sandbox)
            bad = [o for o in outcomes if not o.passed]
            if bad and update:
                script.path.write_text(updated(script, outcomes), encoding="utf-8")
                click.echo(f"{script.path}: updated {len(bad)} of {len(outcomes)} examples")
                continue
            for outcome in bad:
                click.echo(outcome.difference(script.path) + "\n", err=True)
            failed += bool(bad)
            click.echo(f"{script.path}: {len(outcomes) - len(bad)} of {len(outcomes)} "
                       "examples passed")
    return 1 if failed else 0


def main() -> None:
    cli(prog_name="pinrepl")
