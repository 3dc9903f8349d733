"""The `pinrepl` command line: a thin click layer over `App` and the REPL.

Exit codes: 0 success, 1 a job (or REPL code) failed, 2 a usage error or any other error a
user can cause (printed as one line, never a traceback, and nothing changed), 130 Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import math
import re
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from . import __version__, durations
from .app import App
from .bot import counted
from .console.evaluator import print_exception
from .defer import PRIORITIES
from .errors import (
    BackgroundJobFailed,
    BadJobArguments,
    ConfigError,
    DashboardUnavailable,
    DatabaseRefused,
    DatabaseUnavailable,
    JobDefinitionError,
    PinreplError,
    RunFailed,
)
from .jobs import job_name_of
from .logs import LOG_FORMATS, TimedFormatter, formatter_for, logging_to_stderr
from .runs.control import LEASE, MAX_ID, ORIGINS, RunFilter
from .runs.status import STATUSES, UNSUCCESSFUL
from .settings import Settings, find_app

if TYPE_CHECKING:
    from .runs.deferred import DeferredRun

app_option = click.option(
    "--app", "app_dir", envvar="PINREPL_APP", metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="The app folder (default: $PINREPL_APP, else the nearest folder at or above the "
         "current directory with a jobs folder or a [tool.pinrepl] table).",
)


def fail(message: str, code: int = 2) -> None:
    click.echo(f"pinrepl: {message}", err=True)
    sys.exit(code)


def command(func: Callable[..., Coroutine[Any, Any, int | None]]) -> Callable[..., None]:
    """Run an async command; turn the errors a user can cause into one line and exit 2."""
    return _command(func, preload=True)


def prompt_command(func: Callable[..., Coroutine[Any, Any, int | None]]
                   ) -> Callable[..., None]:
    """`command` for the REPL: its prompt comes first, the database layer loads later."""
    return _command(func, preload=False)


def _command(func: Callable[..., Coroutine[Any, Any, int | None]], preload: bool
             ) -> Callable[..., None]:
    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        if preload:
            _imported()
        gc.enable()
        try:
            code = asyncio.run(func(*args, **kwargs))
        except PinreplError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted", 130)
        sys.exit(code or 0)

    return wrapper


def _imported() -> None:
    """Import the database layer (SQLAlchemy: most of a command's start) with the garbage
    collector off, then keep what it made out of every later collection: all of it lives
    as long as the process. A tenth of a second less CPU for every command's start."""
    from . import db  # noqa: F401

    gc.freeze()


class _Commands(click.Group):
    """pinrepl's commands: a usage error (an unknown option, a bad value, a missing
    argument) is one line naming what was wrong, exit 2, as every user error is."""

    def main(  # type: ignore[override]
        self, args: Sequence[str] | None = None, prog_name: str | None = None,
        standalone_mode: bool = True, **extra: Any,
    ) -> Any:
        try:
            return super().main(args, prog_name, standalone_mode=False, **extra)
        except click.UsageError as exc:
            see = f" (see: {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
            fail(f"{exc.format_message()}{see}", exc.exit_code)
        except click.ClickException as exc:
            fail(exc.format_message(), exc.exit_code)
        except click.Abort:
            fail("interrupted", 130)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
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
            from rich.console import Console  # rich loads only to draw
            from rich.progress import Progress

            self._bar = Progress(console=Console(stderr=True), transient=True)
            self._bar.start()
            self._task = self._bar.add_task("tenants", total=len(tenants))

    def running(self, tenant: Any) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=f"tenant {tenant.name}")

    def done(self, tenant: Any, error: BaseException | None) -> None:
        self.failed += error is not None
        if self._bar is not None:
            self._bar.update(self._task, advance=1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def summary(self) -> str:
        return (
            f"tenants: {self.total} run, {self.total - self.failed} succeeded, "
            f"{self.failed} failed"
        )


def _not_the_runs_fault(exc: BaseException) -> bool:
    """A bad setting, an unusable database (away, or refusing the statements of tables
    that differ from the models) or a job definition pinrepl cannot use is not a failure
    of the run, wherever it surfaced: one line, exit 2. Anything else raised while a job
    runs is its failure."""
    return isinstance(
        exc, ConfigError | DatabaseUnavailable | DatabaseRefused | JobDefinitionError
    )


def _parse_kwargs(pairs: tuple[str, ...]) -> dict[str, str]:
    kwargs: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise BadJobArguments(f"--kwarg {pair!r} is not KEY=VALUE (KEY a Python name)")
        if key in kwargs:
            raise BadJobArguments(f"--kwarg {key!r} is given twice ({kwargs[key]!r} and "
                                  f"{value!r})")
        kwargs[key] = value
    return kwargs


#: The longest --grace, --lease or --timeout: a week (a longer one is a typo; `inf` overflows).
MAX_SECONDS = 7 * 24 * 3600

#: The most --concurrency: more runs than this at once is a typo, and a room past
#: PostgreSQL's 32-bit integers failed only once the bot had written its due slots.
MAX_CONCURRENCY = 10_000


class _Seconds(click.FloatRange):
    """A number of seconds within the range: click's FloatRange lets `nan` through."""

    name = "number of seconds"  # click says "'abc' is not a valid {name}."

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> Any:
        seconds = super().convert(value, param, ctx)
        if math.isnan(seconds):
            self.fail(f"{value!r} is not a valid {self.name}.", param, ctx)
        return seconds


class _Count(click.IntRange):
    """A whole number within the range (click's own reads "not a valid integer range")."""

    name = "whole number"


class _Duration(click.ParamType):
    """A duration as `durations.seconds` reads it: `90`, `30s`, `5m`, `1.5h`, `2d`."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> Any:
        try:
            return durations.seconds(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _job_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--name, --kwarg and --tenant: what to run, as `run-background-job` and `defer` take
    it."""
    for option in reversed((
        click.option("--name", required=True, help="The job's name, e.g. send-newsletter."),
        click.option("--kwarg", "kwarg_pairs", multiple=True, metavar="KEY=VALUE",
                     help="A keyword argument for run(), as a string (repeatable)."),
        click.option("--tenant", "tenants", multiple=True, metavar="ID_OR_NAME",
                     help="Run for this tenant only (repeatable), multi-tenant job or not."),
    )):
        command = option(command)
    return command


@cli.command("run-background-job")
@_job_options
@click.option("--timeout", "run_timeout", type=_Seconds(min=0, min_open=True, max=MAX_SECONDS),
              metavar="SECONDS", help="Stop the run (each tenant's) after this long.")
@click.argument("args", nargs=-1)
@app_option
@command
async def run_background_job(
    name: str, kwarg_pairs: tuple[str, ...], tenants: tuple[str, ...],
    run_timeout: float | None, args: tuple[str, ...], app_dir: Path | None,
) -> int:
    """Run job NAME now, with ARGS (and --kwarg values) forwarded as strings, and wait for
    it to finish. The run is recorded in background_job_runs (origin cli)."""
    kwargs = _parse_kwargs(kwarg_pairs)
    with logging_to_stderr():
        return await _run_background_job(name, args, kwargs, tenants, run_timeout, app_dir)


async def _run_background_job(
    name: str, args: tuple[str, ...], kwargs: dict[str, str], tenants: tuple[str, ...],
    timeout: float | None, app_dir: Path | None,
) -> int:
    async with App(Settings.load(app_dir)) as app:
        # Resolving the job, its arguments and its tenants: a mistake is one line, exit 2.
        prepared = await app.runner.prepare(name, args, kwargs, tenants=tenants or None)
        report = _FanOutReport()
        terminated = asyncio.Event()
        try:
            with _cancelled_by_sigterm(terminated):
                await app.runner.execute(prepared, report, timeout=timeout, record="cli")
        except asyncio.CancelledError:
            if not terminated.is_set():
                raise  # Ctrl-C: asyncio.run says KeyboardInterrupt, exit 130
            report.close()
            click.echo("pinrepl: stopped by SIGTERM; the run was cancelled", err=True)
            return 128 + signal.SIGTERM
        except KeyboardInterrupt:
            raise  # as Ctrl-C: exit 130
        except BaseException as exc:  # the job's own, even one that is no Exception
            report.close()
            return _run_failed(exc, report)
        finally:
            report.close()
        if report.started:
            if report.total == 0:
                click.echo(f"no tenants selected for {name!r}; nothing ran", err=True)
            else:
                click.echo(report.summary(), err=True)
    return 0


@contextlib.contextmanager
def _cancelled_by_sigterm(terminated: asyncio.Event) -> Iterator[None]:
    """While the block runs, SIGTERM (a container stopped, `timeout`) cancels it as Ctrl-C
    would (and sets `terminated`), so that its run ends recorded `cancelled`, its workspace
    torn down, instead of the process vanishing with its row `running`."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def terminate() -> None:
        terminated.set()
        if task is not None:
            task.cancel()

    try:
        if task is None:
            raise RuntimeError("no task to cancel")
        loop.add_signal_handler(signal.SIGTERM, terminate)
    except (RuntimeError, ValueError):  # not in the main thread (an embedding program's)
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def _run_failed(exc: BaseException, report: _FanOutReport) -> int:
    """Show a run's failure (exit 1): its traceback, or for the fan-out the CLI ran, each
    failed tenant's and the summary. What is not the run's fault is re-raised (one line)."""
    fan_out = isinstance(exc, BackgroundJobFailed) and report.started
    failures = list(exc.exceptions) if isinstance(exc, BackgroundJobFailed) and fan_out \
        else [exc]
    if all(_not_the_runs_fault(failure) for failure in failures):
        raise failures[0]
    for failure in failures:
        print_exception(failure)  # as the REPL shows it: without pinrepl's frames
    if fan_out:
        click.echo(report.summary(), err=True)
    return 1


# -- list-background-jobs ----------------------------------------------------------------


@cli.command("list-background-jobs")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@app_option
@command
async def list_background_jobs(as_json: bool, app_dir: Path | None) -> int:
    """List the jobs: each schedule (its timezone when not the app's, its arguments, its
    next slot), next and last run in the app's timezone, tenancy, load errors.

    Exits 1 when a job file or the models file failed to load, or when the last runs
    could not be read (the reason on stderr, and in the JSON)."""
    from .overview import app_overview  # only the listings need it

    async with App(Settings.load(app_dir)) as app:
        overview = await app_overview(app)
    from .console.listing import jobs_table, jobs_text, problems

    if as_json:
        click.echo(json.dumps(overview.as_json(), indent=2, default=str))
    else:
        _print_listing(jobs_text(overview), lambda: jobs_table(overview))
    for line in problems(overview):
        click.echo(line, err=True)
    return 1 if overview.load_errors or overview.unknown else 0


def _print_listing(text: str, table: Callable[[], Any]) -> None:
    """A listing as a rich table on a terminal; as plain aligned text otherwise, so that
    `grep` and scripts read every line whole (rich would size it to 80 columns)."""
    if not sys.stdout.isatty():
        click.echo(text)
        return
    from rich.console import Console  # rich loads only to draw

    Console(highlight=False).print(table(), crop=False)


# -- generate-background-job --------------------------------------------------------------

#: A name for a new job: every part (folder or file) a module name once dashes are turned to
#: underscores, so the file imports and its class name is an identifier.
NEW_JOB_NAME = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*(?:/[a-z][a-z0-9]*(?:-[a-z0-9]+)*)*")

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
    """Write jobs/<snake_name>.py from a template with a schedule and a run().

    NAME is the job's name or its file's (weekly-report or weekly_report)."""
    try:
        settings = Settings.load(app_dir)
    except PinreplError as exc:
        fail(str(exc))
    job = name.replace("_", "-")
    if not NEW_JOB_NAME.fullmatch(job):
        fail(
            f"{name!r} is not a job name: use lowercase letters, digits and dashes (or "
            "underscores), each part starting with a letter, with '/' between folders "
            "(e.g. reports/daily-summary)"
        )
    jobs_dir = settings.jobs_dir
    path = jobs_dir / (job.replace("-", "_") + ".py")
    taken = [
        p for p in (jobs_dir.rglob("*.py") if jobs_dir.is_dir() else ())
        if job_name_of(jobs_dir, p) == job
    ]
    if taken or path.exists():
        fail(f"job {job!r} exists already: {(taken or [path])[0]}")
    class_name = "".join(part.capitalize() for part in job.split("/")[-1].split("-"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TEMPLATE.format(class_name=class_name, name=job), encoding="utf-8")
    click.echo(f"created job {job!r} in {path}")


# -- init-database -------------------------------------------------------------------------


@cli.command("init-database")
@click.option("--demo", is_flag=True, help="Add sample tenants, users and notifications.")
@app_option
@command
async def init_database(demo: bool, app_dir: Path | None) -> None:
    """Create the tables (the built-in tenants and the app's models)."""
    async with App(Settings.load(app_dir)) as app:
        app.jobs  # noqa: B018  # a folder without a jobs folder is no app: as every command
        await app.init_database(demo=demo, echo=click.echo)


# -- repl and transcripts -------------------------------------------------------------------


@cli.command("repl")
@click.option("--execute", "-e", "code", metavar="CODE",
              help="Run CODE (top-level await allowed) instead of starting the prompt.")
@click.option("--tenant", metavar="ID_OR_NAME", help="Scope `database` to this tenant.")
@click.option("--sandbox", is_flag=True,
              help="Roll back every database write of the session when it ends.")
@click.option("--echo", is_flag=True, help="Print the SQL that runs (also echo(True)).")
@click.option("--read-only", is_flag=True,
              help="The database refuses every write of the session, its jobs' too.")
@app_option
@prompt_command
async def repl(code: str | None, tenant: str | None, sandbox: bool, echo: bool,
               read_only: bool, app_dir: Path | None) -> int:
    """The async REPL: `await runBackgroundJob('name')`, `await defer('name')`, `database`,
    `jobs`, the app's models, `echo(True)`, `reload()`; `exit(n)` ends it with status n.

    With --execute, or with a standard input that is not a terminal, the code runs through
    the same evaluator and the exit status is 1 on an uncaught exception.

    With --read-only, every write of the session (the REPL's, and the jobs' it runs or
    defers) is refused by the database itself, as `pinrepl.ReadOnlySession`."""
    with logging_to_stderr():
        return await _repl(code, tenant, sandbox, echo, read_only, app_dir)


async def _repl(code: str | None, tenant: str | None, sandbox: bool, echo: bool,
                read_only: bool, app_dir: Path | None) -> int:
    from .console.repl import execute, session, shown_url  # only this command needs them

    async with App(Settings.load(app_dir), read_only=read_only) as app, \
            session(app, tenant, sandbox, echo) as console:
        if code is not None:
            return await execute(console, code, "<string>")
        if not sys.stdin.isatty():
            return await execute(console, sys.stdin.read())
        from .console.prompt import history_path, interact  # ptpython: only for a terminal

        settings = app.settings
        click.echo(
            f"pinrepl {__version__} · app {settings.root} · "
            f"database {shown_url(settings.database_url)}"
            + (" · sandbox: writes are rolled back at exit" if sandbox else "")
            + (" · read-only: the database refuses every write" if read_only else "")
        )
        click.echo(
            "await runBackgroundJob('name', *args) · run = await defer('name', *args) "
            "queues it for the bots, await run.wait() · database.<table> · jobs · app · the "
            "app's models by class name · select, func, text · echo(True) prints SQL · reload() · "
            "await use_tenant('name') · Ctrl-C interrupts · Ctrl-D or exit() quits"
        )
        return await interact(console, history_path(settings.root))


def _transcript_files(ctx: click.Context, param: click.Parameter, paths: tuple[Path, ...]
                      ) -> list[Path]:
    """PATHS as given, a folder standing for the `test_*.transcript` files below it (as
    pytest collects them), each file once."""
    from .console.transcripts import found_in  # only this command needs it

    files: list[Path] = []
    for path in paths:
        found = found_in(path) if path.is_dir() else [path]
        if not found:
            raise click.BadParameter(f"no test_*.transcript file below folder {path}", ctx,
                                     param)
        files += found
    return list(dict.fromkeys(files))


@cli.command("transcript")
@click.argument("paths", nargs=-1, required=True, callback=_transcript_files,
                type=click.Path(exists=True, path_type=Path))
@click.option("--update", is_flag=True, help="Rewrite the expected output of what differs.")
@click.option("--no-sandbox", is_flag=True, help="Keep the database writes of the replay.")
@click.option("--database", type=click.Choice(["test", "app"]), default="test",
              show_default=True,
              help="Replay on a test database made for the run, or on the app's own.")
@app_option
@command
async def transcript(paths: list[Path], update: bool, no_sandbox: bool, database: str,
                     app_dir: Path | None) -> int:
    """Replay transcript files through the REPL's evaluator and show the differences.

    PATHS are files, or folders whose test_*.transcript files (at any depth, as pytest
    collects them) all replay. Each file replays against its app (--app, else the
    nearest app folder above the file) in a sandbox of its own unless --no-sandbox."""
    from .console.transcripts import (  # only this command needs them
        Transcript,
        create_test_database,
        drop_test_database,
        replay,
        updated,
    )

    parsed = [Transcript.read(path) for path in paths]  # all malformed files fail first
    scripts = [(script, Settings.load(app_dir or find_app(script.path.parent)))
               for script in parsed]
    apps = {settings.root: settings for _script, settings in scripts}
    made: list[Settings] = []
    try:
        if database == "test":
            for root, settings in apps.items():
                apps[root] = await create_test_database(settings)
                made.append(apps[root])
        failed = 0
        for script, settings in scripts:
            async with App(apps[settings.root]) as app:
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
    finally:
        for settings in made:
            await drop_test_database(settings)
    return 1 if failed else 0


# -- the bot ---------------------------------------------------------------------------------

@cli.command("bot")
@click.option("--concurrency", type=_Count(min=1, max=MAX_CONCURRENCY), default=10,
              show_default=True, metavar="N",
              help="At most this many runs of this bot at once.")
@click.option("--grace", type=_Seconds(min=0, max=MAX_SECONDS), default=30.0,
              show_default=True, metavar="SECONDS",
              help="When stopped, how long running jobs get to finish.")
@click.option("--lease", type=_Seconds(min=1, max=MAX_SECONDS), default=LEASE.total_seconds(),
              show_default=True, metavar="SECONDS",
              help="A bot not heard from for this long is dead; its runs are abandoned.")
@click.option("--once", is_flag=True,
              help="Run what is due now, wait for it, and exit (1 if any run failed).")
@click.option("--metrics-port", type=_Count(min=0, max=65535), metavar="PORT",
              help="Serve Prometheus metrics at http://HOST:PORT/metrics (0: any free port, "
                   "logged).")
@click.option("--metrics-host", default="127.0.0.1", show_default=True, metavar="HOST",
              help="The address --metrics-port listens on.")
@click.option("--log-format", type=click.Choice(LOG_FORMATS), default="text",
              show_default=True,
              help="text: lines starting with an ISO 8601 time; json: one JSON object per "
                   "line.")
@app_option
@command
async def bot(concurrency: int, grace: float, lease: float, once: bool,
              metrics_port: int | None, metrics_host: str, log_format: str,
              app_dir: Path | None) -> int:
    """Run each job at its cron times, exactly once across all the bots of a database.

    SIGTERM or Ctrl-C stops it (running jobs get --grace seconds; a second signal cancels
    them); SIGHUP re-reads the job files."""
    from .bot.process import Bot  # only this command needs the bot

    # The bot's log is kept: each line says when.
    with logging_to_stderr(formatter_for(log_format)):
        try:
            async with App(Settings.load(app_dir)) as app:
                bot = Bot(app, concurrency=concurrency, grace=grace, lease=lease)
                with _metrics(bot, app, metrics_host, metrics_port):
                    return await bot.run(once)
        except ConfigError:
            raise  # its settings or app folder: one line, as from every command
        except PinreplError as exc:
            # What stopped the bot is the line of its log that matters most: it says when too.
            logging.getLogger("pinrepl.bot").error("%s", exc)
            return 2


def _metrics(bot: Any, app: App, host: str, port: int | None
             ) -> contextlib.AbstractContextManager[object]:
    """The bot's metrics served on `host`:`port` while it runs (None: not served)."""
    if port is None:
        return contextlib.nullcontext()
    from .bot.metrics import serving  # only a bot with --metrics-port loads prometheus_client

    return serving(bot.events, app.repository.count_queued, host, port)


@cli.command("list-background-job-runs")
@click.option("--name", metavar="JOB", help="Only the runs of this job.")
@click.option("--status", type=click.Choice(STATUSES), help="Only the runs with this status.")
@click.option("--tenant", metavar="ID_OR_NAME", help="Only this tenant's runs.")
@click.option("--origin", type=click.Choice(ORIGINS),
              help="Only the runs from there (a schedule, defer, the CLI, the REPL, the app).")
@click.option("--since", type=_Duration(), metavar="DURATION",
              help="Only the runs made in the last DURATION: 90 (seconds), 30m, 2h, 1d.")
@click.option("--limit", type=_Count(min=1, max=MAX_ID), default=50, show_default=True,
              help="At most this many runs.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array instead of a table.")
@app_option
@command
async def list_background_job_runs(name: str | None, status: str | None, tenant: str | None,
                                   origin: str | None, since: float | None, limit: int,
                                   as_json: bool, app_dir: Path | None) -> None:
    """List the runs, newest first (times in the app's timezone), with where each came
    from (origin), its try (attempt) and its fan-out (parent).

    A JOB that is neither a job of the app nor in the history is an error."""
    from .runs.history import run_as_json, tenant_names  # only this command

    async with App(Settings.load(app_dir)) as app:
        which = RunFilter(job=name, status=status, tenant_id=await _tenant_id(app, tenant),
                          origin=origin, since=_since(since))
        runs = await app.list_runs(which, limit=limit)
        tenants: dict[int, str] = {}
        if runs and not as_json:
            database = app.database()
            try:
                tenants = await tenant_names(
                    database, [run.tenant_id for run in runs if run.tenant_id is not None])
            finally:
                await database.aclose()
        zone = app.settings.timezone
    if as_json:
        click.echo(json.dumps([run_as_json(run) for run in runs], indent=2))
        return
    if not runs:
        of = f" of {name!r}" if name is not None else ""
        if tenant is not None or origin is not None or since is not None:
            click.echo(f"no {status + ' ' if status else ''}runs{of} match")
        else:
            click.echo(f"no {status} runs{of} yet" if status else f"no runs{of} yet")
        return
    from .console.listing import runs_rows, runs_table, runs_text

    rows = runs_rows(runs, zone, tenants)
    _print_listing(runs_text(rows, zone), lambda: runs_table(rows, zone))


async def _tenant_id(app: App, tenant: str | None) -> int | None:
    """The id of tenant `tenant` (None: none given); `UnknownTenant` if it is no tenant."""
    if tenant is None:
        return None
    (row,) = await app.runner.resolve_tenants([tenant])
    return int(row.id)


def _since(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.now(UTC) - timedelta(seconds=seconds)


# -- control (SPEC 9) -----------------------------------------------------------------------


def _tenants_option(help: str) -> Callable[..., Any]:
    return click.option("--tenant", "tenants", multiple=True, metavar="ID_OR_NAME", help=help)


@cli.command("pause-job")
@click.option("--name", required=True, metavar="JOB", help="The job to pause.")
@_tenants_option("Pause only this tenant's runs of it (repeatable).")
@click.option("--reason", metavar="TEXT", help="Why: shown by list-background-jobs and in "
              "the error of each slot skipped.")
@app_option
@command
async def pause_job(name: str, tenants: tuple[str, ...], reason: str | None,
                    app_dir: Path | None) -> None:
    """Pause job JOB on every bot (within a second): its slots are recorded skipped, its
    deferred runs wait until it is resumed. Runs asked for in a process of their own
    (run-background-job, the REPL) still run, with a note."""
    async with App(Settings.load(app_dir)) as app:
        await app.pause_job(name, tenants=tenants or None, reason=reason)
    where = f" for tenant{'s' if len(tenants) > 1 else ''} {', '.join(tenants)}" \
        if tenants else ""
    click.echo(f"paused {name}{where}" + (f": {reason}" if reason else ""))


@cli.command("resume-job")
@click.option("--name", required=True, metavar="JOB", help="The job to resume.")
@_tenants_option("Lift only this tenant's pause (repeatable; default: every pause of JOB).")
@app_option
@command
async def resume_job(name: str, tenants: tuple[str, ...], app_dir: Path | None) -> None:
    """Lift the pauses of job JOB: the runs that waited start."""
    async with App(Settings.load(app_dir)) as app:
        lifted = await app.resume_job(name, tenants=tenants or None)
    click.echo(f"resumed {name} ({counted(lifted, 'pause')} lifted)" if lifted
               else f"{name} was not paused{' for those tenants' if tenants else ''}: "
                    "nothing to resume")


def _run_ids(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option("--name", metavar="JOB", help="The runs of this job.")(command)
    return click.option("--id", "ids", type=_Count(min=1, max=MAX_ID), multiple=True,
                        metavar="ID", help="This run (repeatable).")(command)


def _ids_or_name(ids: tuple[int, ...], name: str | None, **others: object) -> None:
    """--id, or --name with the other filters (`others`, by option): a usage error else."""
    ctx = click.get_current_context()
    if ids and name is not None:
        raise click.UsageError("give --id or --name, not both", ctx)
    if not ids and name is None:
        raise click.UsageError("give --id ID (repeatable) or --name JOB", ctx)
    given = [f"--{option}" for option, value in others.items() if value is not None]
    if ids and given:
        raise click.UsageError(f"{', '.join(given)} go{'es' if len(given) == 1 else ''} "
                               "with --name, not with --id", ctx)


@cli.command("retry-runs")
@_run_ids
@click.option("--status", type=click.Choice(sorted(str(s) for s in UNSUCCESSFUL)),
              help="Only the runs that ended so.")
@click.option("--since", type=_Duration(), metavar="DURATION",
              help="Only the runs made in the last DURATION: 90 (seconds), 30m, 2h, 1d.")
@click.option("--tenant", metavar="ID_OR_NAME", help="Only this tenant's runs.")
@app_option
@command
async def retry_runs(ids: tuple[int, ...], name: str | None, status: str | None,
                     since: float | None, tenant: str | None, app_dir: Path | None) -> None:
    """Queue a new try of each run that did not succeed (failed, timed_out, abandoned,
    cancelled) and was not tried again since: same job, arguments and tenant, origin
    defer, due now; a fan-out's are its tenants' that did not succeed. Prints how many."""
    _ids_or_name(ids, name, status=status, since=since, tenant=tenant)
    async with App(Settings.load(app_dir)) as app:
        which = RunFilter(ids=ids, job=name, status=status,
                          tenant_id=await _tenant_id(app, tenant), since=_since(since))
        queued = await app.retry_runs(which)
    shown = f": runs {', '.join(map(str, queued))}" if 0 < len(queued) <= 20 else ""
    click.echo(f"queued {len(queued)} new {'try' if len(queued) == 1 else 'tries'}{shown}")


@cli.command("cancel-runs")
@_run_ids
@click.option("--status", type=click.Choice(["queued", "running"]),
              help="Only the runs queued, or only those running (default: both).")
@app_option
@command
async def cancel_runs(ids: tuple[int, ...], name: str | None, status: str | None,
                      app_dir: Path | None) -> None:
    """Cancel runs: a queued one at once; a running one is cancelled by its bot within a
    second or two (its workspace torn down) and recorded cancelled. Prints how many."""
    _ids_or_name(ids, name, status=status)
    async with App(Settings.load(app_dir)) as app:
        done = await app.cancel_runs(RunFilter(ids=ids, job=name, status=status))
    click.echo(f"cancelled {counted(done.queued, 'queued run')}; asked the bots to cancel "
               f"{counted(done.running, 'running run')}")


# -- defer -------------------------------------------------------------------------------


class _Moment(click.ParamType):
    """An ISO 8601 date and time (`datetime.fromisoformat`); a naive one is read later in
    the app's timezone."""

    name = "ISO 8601 date and time"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> Any:
        if isinstance(value, datetime):
            return value
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not an ISO 8601 date and time (e.g. "
                      "2026-12-24T18:00 or 2026-12-24T18:00+01:00)", param, ctx)


class _Priority(click.types.IntParamType):
    """A whole number in `PRIORITIES` (what the `priority` column holds)."""

    name = "whole number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> Any:
        number = super().convert(value, param, ctx)
        if number not in PRIORITIES:
            self.fail(f"{value!r} is not a priority: a whole number from {PRIORITIES.start} "
                      f"to {PRIORITIES.stop - 1}", param, ctx)
        return number


@cli.command("defer")
@_job_options
@click.option("--at", "at", type=_Moment(), metavar="ISO8601",
              help="Due at this time (without an offset: in the app's timezone).")
@click.option("--in", "delay", type=_Duration(), metavar="DURATION",
              help="Due after this long: 90 (seconds), 30s, 5m, 2h, 1d.")
@click.option("--key", metavar="KEY",
              help="While a run with this key is queued or running, that run is the one.")
@click.option("--priority", type=_Priority(), default=0, show_default=True, metavar="N",
              help="Lower runs first.")
@click.option("--timeout", "run_timeout", type=_Seconds(min=0, min_open=True, max=MAX_SECONDS),
              metavar="SECONDS", help="Stop the run (each tenant's) after this long.")
@click.option("--wait", is_flag=True,
              help="Wait for the run to end; exit 1 if it failed (Ctrl-C stops waiting, "
                   "not the run).")
@click.argument("args", nargs=-1)
@app_option
@command
async def defer(
    name: str, kwarg_pairs: tuple[str, ...], tenants: tuple[str, ...], at: datetime | None,
    delay: float | None, key: str | None, priority: int, run_timeout: float | None,
    wait: bool, args: tuple[str, ...], app_dir: Path | None,
) -> int:
    """Queue a run of job NAME for the bots, with ARGS (and --kwarg values) forwarded as
    strings, and print its id (on stdout, alone)."""
    if at is not None and delay is not None:
        raise click.UsageError("give --at or --in, not both", click.get_current_context())
    kwargs = _parse_kwargs(kwarg_pairs)
    with logging_to_stderr():
        async with App(Settings.load(app_dir)) as app:
            if at is not None and at.tzinfo is None:
                at = at.replace(tzinfo=app.settings.timezone)
            run = await app.defer_job(name, args, kwargs, at=at, delay=delay,
                                      tenants=tenants or None, key=key, priority=priority,
                                      timeout=run_timeout)
            click.echo(run.id)
            return await _wait_for(run) if wait else 0


class _WaitReport(_FanOutReport):
    """`run-background-job`'s progress bar and summary, fed by `DeferredRun.wait`'s
    `progress(done, failed, total)`."""

    def progress(self, done: int, failed: int, total: int) -> None:
        if not self.started and total:
            self.start([None] * total)
        self.total, self.failed = total, failed
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total)


async def _wait_for(run: DeferredRun) -> int:
    """Wait for a deferred run: 0 when it succeeded; 1 when it failed, shown as
    `run-background-job` shows a failure; Ctrl-C (130) stops the waiting, not the run."""
    report = _WaitReport()
    try:
        await run.wait(progress=report.progress)
    except asyncio.CancelledError:
        report.close()
        click.echo(f"pinrepl: stopped waiting; run {run.id} goes on "
                   "(see: pinrepl list-background-job-runs)", err=True)
        return 130
    except (RunFailed, BackgroundJobFailed) as exc:
        report.close()
        failures = list(exc.exceptions) if isinstance(exc, BackgroundJobFailed) else [exc]
        for failure in failures:
            if isinstance(failure, RunFailed) and failure.traceback:
                click.echo(failure.traceback.rstrip("\n"), err=True)
            print_exception(failure)
        if isinstance(exc, BackgroundJobFailed):
            click.echo(report.summary(), err=True)
        return 1
    finally:
        report.close()
    if run.fan_out:
        click.echo(report.summary() if report.total else
                   f"no tenants selected for {run.job!r}; nothing ran", err=True)
    return 0

# -- the dashboard ---------------------------------------------------------------------------

#: The hosts `pinrepl web` listens on without a token: this machine only.
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@cli.command("web")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Listen on this address; any other than 127.0.0.1, localhost or ::1 needs "
                   "a token.")
@click.option("--port", type=click.IntRange(0, 65535), default=8484, show_default=True,
              help="Listen on this port (0: any free one).")
@click.option("--read-only", is_flag=True,
              help="Show the runs, change nothing: no buttons, every action refused.")
@click.option("--tenant", metavar="ID_OR_NAME", help="Show only this tenant's runs.")
@click.option("--token", envvar="PINREPL_WEB_TOKEN", metavar="TOKEN",
              help="Every request must carry it (Authorization: Bearer TOKEN, or the login "
                   "page's cookie). Default: $PINREPL_WEB_TOKEN.")
@app_option
@command
async def web(host: str, port: int, read_only: bool, tenant: str | None, token: str | None,
              app_dir: Path | None) -> int:
    """Serve the dashboard: the jobs, the runs, one run, the bots, updated live, with Run
    now, Pause, Resume, Retry and Cancel (SPEC 9). Ctrl-C or SIGTERM stops it."""
    token = token or None
    if host.strip("[]") not in LOOPBACK and token is None:
        raise ConfigError(f"not serving the dashboard on {host} without a token: give --token "
                          "or set PINREPL_WEB_TOKEN (or listen on 127.0.0.1)")
    try:  # the web extra: only this command needs it
        import uvicorn

        from .web import create_app
    except ImportError as exc:
        raise ConfigError(f"pinrepl web needs the web extra ({exc.name} is missing): "
                          "pip install 'pinrepl[web]'") from None
    from .runs.migrate import check_version

    with _listening(host.strip("[]"), port) as sock, logging_to_stderr(TimedFormatter()):
        async with App(Settings.load(app_dir)) as app:
            await check_version(app.engine)  # no tables, or of another version: one line
            if tenant is not None:
                await app.runner.resolve_tenants([tenant])  # an unknown one: one line
            dashboard = create_app(app, read_only=read_only, tenant=tenant, token=token)
            config = uvicorn.Config(dashboard, host=host.strip("[]"), port=port,
                                    log_config=None, access_log=False, lifespan="off")
            logging.getLogger("pinrepl.web").info(
                "the dashboard of %s at http://%s/%s%s%s", app.settings.root, _address(sock),
                " (read-only)" if read_only else "",
                f", tenant {tenant}" if tenant else "", ", token required" if token else "")
            await uvicorn.Server(config).serve(sockets=[sock])
    return 0


def _listening(host: str, port: int) -> socket.socket:
    """A socket bound to `host`:`port` for the dashboard, bound here rather than by uvicorn
    so that an address in use is one line (`DashboardUnavailable`), not uvicorn's log lines
    and exit 3."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn does
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:  # in use, not ours to use, no such address
        sock.close()
        shown = f"[{host}]" if ":" in host else host
        raise DashboardUnavailable(
            f"cannot serve the dashboard on {shown}:{port}: {exc.strerror or exc} (choose "
            "another --port or --host)") from None
    return sock


def _address(sock: socket.socket) -> str:
    """`HOST:PORT` of a bound socket (the port it got, with --port 0), `[::1]:PORT` for
    IPv6."""
    host, port = sock.getsockname()[:2]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def main() -> None:
    gc.disable()  # until the imports are done (`_imported`)
    try:
        cli(prog_name="pinrepl")
    finally:
        # Leaving: the interpreter's last collections would walk every object SQLAlchemy and
        # the app made (a fifth of a second, as long as a bot's start); nothing left is
        # garbage worth it. Exit handlers and module teardown still run.
        gc.freeze()
