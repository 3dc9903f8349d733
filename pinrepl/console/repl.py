"""The console: what a REPL session holds (the app, its namespace, its own workspace, its
tenant) and code run through it non-interactively (`--execute`, piped stdin).

The prompt (`prompt.py`) and transcripts drive the same console through the same
`Evaluator`. The namespace exists before the job files, the models and SQLAlchemy are
loaded: a thread loads them while the user types (and then adds the app's model classes
and SQLAlchemy's `select`, `func` and `text` to the namespace, as shell_plus does), and
the first use of `jobs`, `database`, `runBackgroundJob` or `defer` waits for it. `app` is
the `App` itself (`await app.run_job(name, args, tenants=[...])`). `defer` and `defer_job`
queue a run for the bots from the session's workspace (its tenant), as
`runBackgroundJob` runs one; the handle they return waits with progress (`deferred`).
What fails to load is reported once, in one line (on stderr without a prompt); each
later use tries again and raises a fresh one-line error, and what does not need the
failed part (jobs without models) stays usable. Shown at the prompt, `jobs` is a listing
of each job's schedules, next and last run (`listing`, loaded when first shown);
`jobs['x']` is the job, which `await jobs['x'].pause(reason=...)` and `.resume()` pause and
resume for every bot, and `runs` is the run history, with `runs.retry()` and
`runs.cancel()` (`control`). With `App(..., read_only=True)` (`repl --read-only`) the
database refuses every write of the session; the prompt says `[read-only]`.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

from ..app import App
from ..errors import PinreplError, TenantViolation
from ..jobs import BackgroundJob
from .control import ConsoleJob, Runs
from .current import Current
from .evaluator import Evaluator, print_exception

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from ..jobs import JobRegistry
    from ..workspace import Workspace
    from .deferred import ConsoleRun


class Console:
    """What a REPL session holds: the app, the session's own workspace and its namespace."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._workspace: Workspace | None = None
        self._loaded = threading.Event()
        self._loader: threading.Thread | None = None
        self._jobs_loaded = False
        self._models: list[str] = []
        self._load_errors: list[str] = []
        self._echoing = False
        self.echo_when_loaded = False
        self.namespace: dict[str, Any] = {
            "__name__": "__main__",
            "__builtins__": __builtins__,
            "runBackgroundJob": self.run_background_job,
            "run_background_job": self.run_background_job,
            "defer": self.defer,
            "defer_job": self.defer_job,
            "database": Current(lambda: self.workspace.database),
            "jobs": _Jobs(self),
            "runs": Runs(self),
            "app": app,
            "BackgroundJob": BackgroundJob,
            "reload": self.reload,
            "use_tenant": self.use_tenant,
            "echo": self.echo,
            "exit": _Exit("exit"),
            "quit": _Exit("quit"),
        }

    # -- loading ------------------------------------------------------------------------

    def load(self) -> None:
        """Load jobs, models and the engine now (in this thread) and put the model
        classes in the namespace. What fails is kept, as one line, for `loaded_summary`.
        Once is enough (`--tenant` loads before the prompt's loader starts)."""
        if self._loaded.is_set():
            return
        try:
            self._jobs_loaded = self._attempt("jobs", lambda: self.app.jobs) is not None
            models = self._attempt("models", lambda: self.app.models)
            if models is not None:
                for model in models:
                    self.namespace.setdefault(model.__name__, model)
                    self._models.append(model.__name__)
                self._add_query_helpers()
                engine = self._attempt("database", lambda: self.app.engine)
                if engine is not None and self.echo_when_loaded:
                    self._set_echo(True)
        finally:
            self._loaded.set()

    def _add_query_helpers(self) -> None:
        """SQLAlchemy's `select`, `func` and `text`, for queries the facade does not cover;
        names the user has set meanwhile are kept."""
        from sqlalchemy import func, select, text  # the loader's thread: not at startup

        for name, helper in (("select", select), ("func", func), ("text", text)):
            self.namespace.setdefault(name, helper)

    def _attempt(self, part: str, load: Callable[[], Any]) -> Any:
        """`load()`, or None with its error kept as one line."""
        try:
            return load()
        except PinreplError as exc:
            self._load_errors.append(str(exc))
        except Exception as exc:
            self._load_errors.append(
                f"could not load the app's {part}: {type(exc).__name__}: {exc}"
            )
        return None

    def load_in_background(self, report: Callable[[str], None]) -> None:
        def load() -> None:
            self.load()
            report(self.loaded_summary())

        self._loader = threading.Thread(target=load, name="pinrepl-loader", daemon=True)
        self._loader.start()

    def ready(self) -> None:
        """Wait for the loader (or load now, if none was started). What failed to load
        is not raised here: each use of it tries again and says why it fails."""
        if not self._loaded.is_set():
            if self._loader is None:
                self.load()
            self._loaded.wait()

    def loaded_summary(self) -> str:
        """What loading found: the jobs and their load errors, the models, and one line
        for each part that could not be loaded."""
        lines = [self._jobs_summary("loaded")] if self._jobs_loaded else []
        if self._models:
            lines.append(f"models: {', '.join(sorted(self._models))}")
        lines.extend(f"load error: {error}" for error in self._load_errors)
        return "\n".join(lines)

    def load_error_lines(self) -> list[str]:
        """The `load error` lines of `loaded_summary` (job files, then parts of the app):
        what code run without a prompt says on stderr."""
        errors = [*(self.app.jobs.errors if self._jobs_loaded else ()), *self._load_errors]
        return [f"load error: {error}" for error in errors]

    def _jobs_summary(self, verb: str) -> str:
        registry = self.app.jobs
        count = f"{len(registry)} job{'' if len(registry) == 1 else 's'}"
        lines = [f"{count} {verb}: {', '.join(registry.names) or '-'}"]
        lines.extend(f"load error: {error}" for error in registry.errors)
        return "\n".join(lines)

    def known_job_names(self) -> list[str]:
        """The job names if they are loaded, else none: never waits (the completer asks
        while the user types)."""
        if not (self._loaded.is_set() and self._jobs_loaded):
            return []
        try:
            return self.app.jobs.names
        except PinreplError:  # a failed reload(): the next use says why
            return []

    @property
    def jobs(self) -> JobRegistry:
        self.ready()
        return self.app.jobs

    async def jobs_listing(self) -> str:
        """`jobs` as shown: each job's schedules, next run and last run (see `listing`)."""
        from .listing import listing, read_history  # loaded when first shown, not at startup

        registry = self.jobs  # first: it waits for the jobs and models to load
        history = await read_history(self.app, self.tenant)
        return listing(registry, self.app.settings.timezone, history)

    # -- workspace and tenant -------------------------------------------------------------

    @property
    def workspace(self) -> Workspace:
        self.ready()
        if self._workspace is None:
            self._workspace = self.app.workspace()
        return self._workspace

    @property
    def tenant(self) -> Any:
        return None if self._workspace is None else self._workspace.tenant

    async def tenant_id(self, tenant: Any = None) -> int | None:
        """The id of tenant `tenant` (an id, a name or a row), for what the session reads
        or controls; none given: the session's tenant, if any. In a tenant's session
        another tenant is a `TenantViolation`; `UnknownTenant` if there is none."""
        own = self.tenant
        if tenant is None:
            return None if own is None else int(own.id)
        (row,) = await self.app.runner.resolve_tenants([tenant])
        if own is not None and row.id != own.id:
            raise TenantViolation(
                f"the session of tenant {own.name!r} may not reach tenant {row.name!r}")
        return int(row.id)

    async def use_tenant(self, tenant: Any = None) -> None:
        """Scope `database` (and the jobs run from here) to `tenant`, or to none."""
        self.ready()
        workspace = (
            self.app.workspace() if tenant is None else await self.app.tenant_workspace(tenant)
        )
        old, self._workspace = self._workspace, workspace
        if old is not None:
            await old.aclose()

    # -- the namespace's functions ----------------------------------------------------------

    async def run_background_job(self, name: str, /, *args: Any, **kwargs: Any) -> None:
        """Run job `name` now, in a fresh workspace of its own (see SPEC 3), recorded in
        the runs table (origin `repl`)."""
        await self.workspace.run_job(name, args, kwargs, record="repl")

    async def defer(self, name: str, /, *args: Any, **kwargs: Any) -> ConsoleRun:
        """Queue a run of job `name` for the bots, from the session's workspace (its
        tenant, if any); `await run.wait()` waits for it (see SPEC 8)."""
        return await self.defer_job(name, args, kwargs)

    async def defer_job(
        self, name: str, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None,
        *, at: datetime | None = None, delay: float | timedelta | None = None,
        tenants: Iterable[Any] | None = None, key: str | None = None, priority: int = 0,
        timeout: float | None = None,
    ) -> ConsoleRun:
        """`defer` with explicit options, as `app.defer_job` takes them."""
        from .deferred import ConsoleRun

        run = await self.app.defer_job(
            name, args, kwargs, at=at, delay=delay, tenants=tenants, key=key,
            priority=priority, timeout=timeout, caller=self.workspace)
        return ConsoleRun(run)

    def reload(self) -> None:
        """Re-read the job files and the jobs folder's helpers: new, changed and deleted
        ones; print any load errors, and say if the models file changed (a restart uses
        it)."""
        self.ready()
        self.app.reload()
        self._jobs_loaded = True
        print(self._jobs_summary("reloaded"))
        if self.app.models_outdated is not None:
            print(self.app.models_outdated)

    def echo(self, on: bool = True) -> None:
        """Print each SQL statement the app runs (the session's and its jobs'), with its
        parameters, as it runs; `echo(False)` stops."""
        self.ready()
        self._set_echo(on)

    def _set_echo(self, on: bool) -> None:
        from sqlalchemy import event  # loaded already with the engine: not at startup

        engine = self.app.engine.engine.sync_engine
        if on and not self._echoing:
            event.listen(engine, "before_cursor_execute", _print_sql)
        elif not on and self._echoing:
            event.remove(engine, "before_cursor_execute", _print_sql)
        self._echoing = on

    @property
    def prompt(self) -> str:
        tags = []
        if self.tenant is not None:
            tags.append(str(self.tenant.name))
        if self.app.sandboxed:
            tags.append("sandbox")
        if self.app.read_only:
            tags.append("read-only")
        return f"pinrepl [{' '.join(tags)}] > " if tags else "pinrepl > "

    async def aclose(self) -> None:
        if self._workspace is not None:
            await self._workspace.aclose()
            self._workspace = None


def _print_sql(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any,
               _executemany: bool) -> None:
    """A `before_cursor_execute` listener: the statement, and its parameters if any."""
    print("\n".join(line.rstrip() for line in statement.strip().splitlines()))
    if parameters:
        print(f"-- parameters: {parameters!r}")


class _Exit:
    """`exit()` / `quit()` in the namespace: `exit(n)` ends the session with status n, as
    `sys.exit(n)` does (ptpython's own takes no status; Python's closes stdin)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, code: object = None) -> NoReturn:
        raise SystemExit(code)

    def __repr__(self) -> str:
        return f"Use {self.name}() or Ctrl-D (i.e. EOF) to exit"


class _Jobs(Current):
    """`jobs` in the namespace: the registry loaded now (lookup, `names`, iteration follow
    `reload()`; `jobs['x']` a `ConsoleJob`), shown as the console's listing, which the
    evaluator awaits (it reads the last runs and the pauses). A plain `repr()`
    (`print(jobs)`) cannot wait for the database: it leaves the last run out."""

    __slots__ = ("_console",)

    def __init__(self, console: Console) -> None:
        super().__init__(lambda: console.jobs)
        self._console = console

    def __getitem__(self, name: Any) -> ConsoleJob:
        """The job `name`, which can be paused and resumed from here."""
        return ConsoleJob(self._console, self._get()[name])

    async def __pinrepl_repr__(self) -> str:
        return await self._console.jobs_listing()

    def __repr__(self) -> str:
        from .listing import listing  # loaded when first shown, not at startup

        return listing(self._get(), self._console.app.settings.timezone, None)


def shown_url(url: str) -> str:
    """The database URL with its password hidden."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


@asynccontextmanager
async def session(app: App, tenant: str | None = None, sandbox: bool = False,
                  echo: bool = False) -> AsyncIterator[Console]:
    """A console for one REPL session (or one transcript), scoped to `tenant` and, with
    `sandbox`, inside `app.sandbox()`: its writes are rolled back when the block ends.
    With `echo`, the SQL that runs is printed from the moment the engine is loaded.
    Raises PinreplError before any prompt."""
    async with AsyncExitStack() as stack:
        if sandbox:
            await stack.enter_async_context(app.sandbox())
        console = Console(app)
        console.echo_when_loaded = echo
        stack.push_async_callback(console.aclose)
        if tenant is not None:
            await console.use_tenant(tenant)
        yield console


# -- non-interactive --------------------------------------------------------------------------


async def execute(console: Console, source: str, filename: str = "<stdin>") -> int:
    """Run `source` as the REPL would, printing values; 1 on an uncaught exception. What
    failed to load is said first, on stderr, as the prompt says it when it starts."""
    console.ready()
    for line in console.load_error_lines():
        print(line, file=sys.stderr)
    try:
        await Evaluator(console.namespace, filename).run(source, lambda v: print(repr(v)))
    except (Exception, asyncio.CancelledError) as exc:
        sys.stdout.flush()
        print_exception(exc)
        return 1
    return 0


