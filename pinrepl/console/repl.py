"""The console: what a REPL session holds (the app, its namespace, its own workspace, its
tenant) and code run through it non-interactively (`--execute`, piped stdin).

The prompt (`prompt.py`) and transcripts drive the same console through the same
`Evaluator`. The namespace exists before the job files, the models and SQLAlchemy are
loaded: a thread loads them while the user types, and the first use of `jobs`, `database`
or `runBackgroundJob` waits for it.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from ..app import App
from ..jobs import BackgroundJob
from .evaluator import Evaluator, print_exception

if TYPE_CHECKING:
    from ..jobs import JobRegistry
    from ..workspace import Workspace


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


@asynccontextmanager
async def session(app: App, tenant: str | None = None, sandbox: bool = False
                  ) -> AsyncIterator[Console]:
    """A console for one REPL session (or one transcript), scoped to `tenant` and, with
    `sandbox`, inside `app.sandbox()`: its writes are rolled back when the block ends.
    Raises PinreplError before any prompt."""
    async with AsyncExitStack() as stack:
        if sandbox:
            await stack.enter_async_context(app.sandbox())
        console = Console(app)
        stack.push_async_callback(console.aclose)
        if tenant is not None:
            await console.use_tenant(tenant)
        yield console


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


