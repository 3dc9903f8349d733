"""The REPL: a console over an app (namespace, own workspace, tenant, sandbox) and the two
ways to drive it: ptpython in asyncio mode, or code run non-interactively.

Both go through `Evaluator`, as do transcripts. The interactive prompt appears before the
job files, the models and SQLAlchemy are loaded: a thread loads them while the user types,
and the first use of `jobs`, `database` or `runBackgroundJob` waits for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from .app import App
from .evaluator import Evaluator, print_exception
from .jobs import BackgroundJob

if TYPE_CHECKING:
    from .jobs import JobRegistry
    from .workspace import Workspace


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Logs to whatever `sys.stderr` is at the time (the REPL patches it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging() -> None:
    """Log INFO and up to the current stderr, as `LEVEL logger: message`."""
    root = logging.getLogger()
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)


class Console:
    """What a REPL session holds: the app, the session's own workspace and its namespace."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._workspace: Workspace | None = None
        self._loaded = threading.Event()
        self._loader: threading.Thread | None = None
        self._load_error: BaseException | None = None
        self.namespace: dict[str, Any] = {
            "__name__": "__main__",
            "__builtins__": __builtins__,
            "runBackgroundJob": self.run_background_job,
            "run_background_job": self.run_background_job,
            "database": _Current(lambda: self.workspace.database),
            "jobs": _Current(lambda: self.jobs),
            "BackgroundJob": BackgroundJob,
            "reload": self.reload,
            "use_tenant": self.use_tenant,
        }

    # -- loading ------------------------------------------------------------------------

    def load(self) -> None:
        """Load jobs, models and the engine now (in this thread)."""
        try:
            self.app.jobs  # noqa: B018 - discovery happens on first access
            self.app.engine  # noqa: B018
        except BaseException as exc:
            self._load_error = exc
        finally:
            self._loaded.set()

    def load_in_background(self, report: Callable[[str], None]) -> None:
        def load() -> None:
            self.load()
            report(self.loaded_summary())

        self._loader = threading.Thread(target=load, name="pinrepl-loader", daemon=True)
        self._loader.start()

    def ready(self) -> None:
        """Wait for the loader; re-raise what it failed with."""
        if not self._loaded.is_set():
            if self._loader is None:
                self.load()
            self._loaded.wait()
        if self._load_error is not None:
            raise self._load_error

    def loaded_summary(self) -> str:
        if self._load_error is not None:
            return f"pinrepl: could not load the app: {self._load_error}"
        registry = self.app.jobs
        lines = [f"{len(registry)} jobs loaded: {', '.join(registry.names) or '-'}"]
        lines.extend(f"load error: {error}" for error in registry.errors)
        return "\n".join(lines)

    @property
    def jobs(self) -> JobRegistry:
        self.ready()
        return self.app.jobs

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
        """Run job `name` now, in a fresh workspace of its own (see SPEC 3)."""
        await self.workspace.run_background_job(name, *args, **kwargs)

    def reload(self) -> None:
        """Re-read the job files: new, changed and deleted ones; print any load errors."""
        self.ready()
        self.app.reload()
        print(self.loaded_summary().replace("jobs loaded", "jobs reloaded", 1))

    @property
    def prompt(self) -> str:
        tags = []
        if self.tenant is not None:
            tags.append(str(self.tenant.name))
        if self.app.sandboxed:
            tags.append("sandbox")
        return f"pinrepl [{' '.join(tags)}] > " if tags else "pinrepl > "

    async def aclose(self) -> None:
        if self._workspace is not None:
            await self._workspace.aclose()
            self._workspace = None


class _Current:
    """Stands for whatever `get()` returns now (the session's database follows
    `use_tenant`, `jobs` follows `reload()`)."""

    __slots__ = ("_get",)

    def __init__(self, get: Callable[[], Any]) -> None:
        self._get = get

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._get(), attr)

    def __getitem__(self, key: Any) -> Any:
        return self._get()[key]

    def __iter__(self) -> Any:
        return iter(self._get())

    def __len__(self) -> int:
        return len(self._get())

    def __contains__(self, item: Any) -> bool:
        return item in self._get()

    def __dir__(self) -> list[str]:
        return dir(self._get())

    def __repr__(self) -> str:
        return repr(self._get())


def shown_url(url: str) -> str:
    """The database URL with its password hidden."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def history_path(app: App, environ: dict[str, str] | None = None) -> Path:
    """The app's history file, outside the repository: $XDG_STATE_HOME/pinrepl/history/."""
    environ = dict(os.environ) if environ is None else environ
    state = Path(environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    root = app.settings.root
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return state / "pinrepl" / "history" / f"{root.name}-{digest}"


async def open_console(app: App, tenant: str | None, sandbox: bool) -> Console:
    """A console, sandboxed and scoped as asked; raises PinreplError before any prompt."""
    console = Console(app)
    if sandbox:
        await app.start_sandbox()
    if tenant is not None:
        await console.use_tenant(tenant)
    return console


# -- non-interactive --------------------------------------------------------------------------


async def execute(console: Console, source: str, filename: str = "<stdin>") -> int:
    """Run `source` as the REPL would, printing values; 1 on an uncaught exception."""
    console.ready()
    try:
        await Evaluator(console.namespace, filename).run(source, lambda v: print(repr(v)))
    except (Exception, asyncio.CancelledError) as exc:
        sys.stdout.flush()
        print_exception(exc)
        return 1
    return 0


# -- interactive ----------------------------------------------------------------------------


async def interact(console: Console, history: Path) -> None:
    """ptpython in asyncio mode over `console`, until Ctrl-D or exit()."""
    from prompt_toolkit.formatted_text import AnyFormattedText
    from ptpython.prompt_style import PromptStyle
    from ptpython.repl import PythonRepl, embed

    evaluator = Evaluator(console.namespace)

    class Prompt(PromptStyle):
        def in_prompt(self) -> AnyFormattedText:
            return [("class:prompt", console.prompt)]

        def in2_prompt(self, width: int) -> AnyFormattedText:
            return [("class:prompt.dots", "...".ljust(width))]

        def out_prompt(self) -> AnyFormattedText:
            return []

    def configure(repl: PythonRepl) -> None:
        repl.all_prompt_styles["pinrepl"] = Prompt()
        repl.prompt_style = "pinrepl"
        repl.confirm_exit = False
        repl.enable_input_validation = False  # a syntax error prints its traceback
        repl.show_signature = False
        repl.show_docstring = False
        repl.enable_output_formatting = False
        repl.insert_blank_line_after_output = False
        repl.title = "pinrepl"

        async def eval_async(line: str) -> object:
            shown: list[Any] = []
            await evaluator.run(line, shown.append)
            for value in shown[:-1]:
                repl._show_result(value)
            return shown[-1] if shown else None

        handle_exception = repl._handle_exception

        def show_exception(exc: BaseException) -> None:
            if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
                repl.app.output.write("Cancelled: the job was stopped and its workspace "
                                      "torn down.\n")
                repl.app.output.flush()
                return
            from .evaluator import user_traceback

            try:
                raise user_traceback(exc)
            except BaseException as raised:  # ptpython reads sys.exc_info()
                handle_exception(raised)

        repl.eval_async = eval_async  # type: ignore[method-assign]
        repl._handle_exception = show_exception  # type: ignore[method-assign]
        loaded_once = False

        def after_render(_app: Any) -> None:
            nonlocal loaded_once
            if not loaded_once:  # start loading once the first prompt is on screen
                loaded_once = True
                console.load_in_background(print)

        repl.app.after_render += after_render

    history.parent.mkdir(parents=True, exist_ok=True)
    await embed(
        globals=console.namespace,
        configure=configure,
        history_filename=str(history),
        patch_stdout=True,
        return_asyncio_coroutine=True,
    )
