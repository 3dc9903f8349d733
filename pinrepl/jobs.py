"""Jobs and their registry: the `BackgroundJob` base class, and discovery of `jobs/**.py`.

A job's name is its file's path under the jobs folder without `.py`, underscores turned to
dashes. Each file is imported once per discovery, and so is every helper module of the jobs
folder, however it is imported (`from ._helpers import x`, `from jobs._helpers import x`);
a file that cannot be used (an import error, a bad cron, schedule arguments that `run()`
does not take, a job attribute of the wrong kind) becomes a `JobLoadError` in
`JobRegistry.errors` and every other job stays usable. `AppImports` is what an app adds to
the interpreter's imports, taken back when the app closes; `modules_in` finds the loaded
modules of a folder (to forget them, or to know the app's loggers); `shown_path` shows a
path as a user reads it. Importing this module is cheap (every job file does it): no
SQLAlchemy.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import itertools
import math
import os
import re
import sys
import traceback
import types
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from .errors import JobLoadError, UnknownBackgroundJob
from .retry import Retry, as_retry, is_retries
from .schedules import Schedule, shown_time

if TYPE_CHECKING:
    from .db import Database, Query, Tenant
    from .runs.deferred import DeferredRun
    from .runs.record import Run
    from .workspace import Workspace

JOB_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*(?:/[a-z0-9]+(?:-[a-z0-9]+)*)*")
_packages = itertools.count()
_package_roots: dict[str, Path] = {}
#: App folders on `sys.path` because of an open app, with how many open apps use each; and
#: those of them pinrepl put there (a folder that was there before stays when they close).
_app_folders: Counter[str] = Counter()
_inserted: set[str] = set()


class BackgroundJob:
    """Subclass this in a file of `jobs/`; override `run()`, optionally `meta()`,
    `tenants_filter()` and `on_failure()`. Custom properties are plain class attributes."""

    #: Run once per tenant. `None` means the app's `multi_tenant` setting.
    multi_tenant: bool | None = None
    #: How many tenants of a fan-out may run at once (1: one after another).
    tenant_concurrency: int = 1
    #: The bot: how many seconds late a missed slot may still run (SPEC 7).
    misfire_grace: float = 60
    #: The bot: run a slot even while the run of an earlier one is still running.
    overlap: bool = False
    #: Seconds each run (each tenant's, in a fan-out) may take before it is stopped with
    #: `JobTimeout`; None: no limit. A call's own `timeout=` overrides it.
    timeout: float | None = None
    #: The bots: more tries of a run that failed. `n` means `Retry(attempts=n)`; 0 or None
    #: none.
    retries: int | Retry | None = None

    def __init__(self, workspace: Workspace | None = None) -> None:
        self.workspace = workspace
        self._schedules: list[tuple[Any, tuple[Any, ...], str | None, dict[str, Any]]] = []

    def meta(self) -> None:
        """Called once when the job is loaded; call `self.schedule(cron)` here."""

    def schedule(self, cron: str, *args: Any, timezone: str | None = None, **kwargs: Any
                 ) -> None:
        """Run this job at the times of `cron` (5 fields, or 6 with seconds first) with
        `run(*args, **kwargs)`, in `timezone` (default: the app's)."""
        self._schedules.append((cron, args, timezone, kwargs))

    def tenants_filter(self, tenants: Query) -> Query | Awaitable[Query]:
        """Which tenants a multi-tenant run covers (default: all); may be `async def`."""
        return tenants

    async def run(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError

    async def on_failure(self, run: Run) -> None:
        """Called once when a run the bots execute has failed for good (`failed` or
        `timed_out` with no try left, or `abandoned`), in a fresh workspace of the run's
        tenant, with the run's record (`run.status`, `run.error`, `run.traceback`, ...).
        What it raises is logged, never retried. Default: nothing."""

    # -- the workspace's services ---------------------------------------------------------

    @property
    def database(self) -> Database:
        return self._services().database

    @property
    def run_background_job(self) -> Callable[..., Awaitable[None]]:
        return self._services().run_background_job

    runBackgroundJob = run_background_job  # the Pinstripe spelling

    @property
    def defer(self) -> Callable[..., Awaitable[DeferredRun]]:
        """`await self.defer(name, *args, **kwargs)`: queue a run for the bots, in this
        run's transaction (it exists only if the transaction commits)."""
        return self._services().defer

    @property
    def defer_job(self) -> Callable[..., Awaitable[DeferredRun]]:
        return self._services().defer_job

    @property
    def initial_params(self) -> dict[str, Any]:
        return self._services().initial_params

    @property
    def tenant(self) -> Tenant | None:
        return self._services().tenant

    @property
    def current_run(self) -> Run | None:
        """This run's record (`id`, `origin`, `attempt`, `scheduled_for`, `tenant_id`,
        `timeout`, ...), or None for a run that is not recorded. A run this one starts
        has its own (None unless it is recorded too)."""
        return self._services().current_run

    def _services(self) -> Workspace:
        if self.workspace is None:
            raise RuntimeError(
                f"{type(self).__name__} has no workspace: services exist only inside run()"
            )
        return self.workspace


@dataclass
class JobSpec:
    """A loaded job: its name, file, class and what `meta()` declared."""

    name: str
    path: Path
    cls: type[BackgroundJob]
    schedules: list[Schedule] = field(default_factory=list)
    multi_tenant: bool = False

    @property
    def tenant_concurrency(self) -> int:
        return self.cls.tenant_concurrency  # checked when loaded: a whole number >= 1

    @property
    def timeout(self) -> float | None:
        """The class's `timeout` (checked when loaded: seconds > 0, or None)."""
        return self.cls.timeout

    @property
    def retry(self) -> Retry | None:
        """The job's retry policy (from its `retries`), or None: no retries."""
        return as_retry(self.cls.retries)  # checked when loaded

    @property
    def has_on_failure(self) -> bool:
        """Whether the job (or a base class of it) defines `on_failure`."""
        return self.cls.on_failure is not BackgroundJob.on_failure

    @functools.cached_property
    def signature(self) -> inspect.Signature:
        """The signature of `run()`, `self` included."""
        return inspect.signature(self.cls.run)

    @functools.cached_property
    def call_signature(self) -> inspect.Signature:
        """The signature of `run()` as a caller counts its arguments: without `self`."""
        return self.signature.replace(parameters=list(self.signature.parameters.values())[1:])

    def misfit(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        """Why `run(*args, **kwargs)` does not fit `run()` (in Python's words), or None."""
        try:
            self.signature.bind(None, *args, **kwargs)
        except TypeError as exc:
            return str(exc)
        return None

    def __repr__(self) -> str:
        """A summary for the REPL: name, file, `run()`, schedules with their next run,
        timeout and retries, tenancy."""
        lines = [
            f"background job {self.name!r} ({shown_path(self.path, Path.cwd())})",
            f"  run{self.call_signature}",
        ]
        now = datetime.now(UTC)
        for schedule in self.schedules:
            arguments = ", ".join([*map(repr, schedule.args),
                                   *(f"{k}={v!r}" for k, v in schedule.kwargs.items())])
            upcoming = shown_time(schedule.next_after(now))
            lines.append(f"  schedule {schedule.cron}"
                         + (f" with ({arguments})" if arguments else "")
                         + f", next {upcoming}")
        if not self.schedules:
            lines.append("  no schedule")
        limits = [f"timeout {self.timeout:g} s"] if self.timeout is not None else []
        if self.retry is not None:
            limits.append(f"{self.retry.attempts} retr{'y' if self.retry.attempts == 1 else 'ies'}")
        if limits:
            lines.append(f"  {', '.join(limits)}")
        at_once = self.tenant_concurrency
        lines.append(
            f"  multi-tenant, {at_once} tenant{'s' if at_once > 1 else ''} at a time"
            if self.multi_tenant else "  not multi-tenant"
        )
        return "\n".join(lines)


class JobRegistry:
    """The jobs of one app: `names`, lookup by name (`registry['x']`), load `errors`."""

    def __init__(
        self, root: Path, jobs: dict[str, JobSpec], broken: dict[str, list[JobLoadError]]
    ) -> None:
        self.root = root
        self._jobs = jobs
        self._broken = broken
        #: One `JobLoadError` per file that could not be loaded.
        self.errors = [error for errors in broken.values() for error in errors]

    @classmethod
    def discover(
        cls, root: Path, default_multi_tenant: bool = False, timezone: ZoneInfo | None = None
    ) -> JobRegistry:
        """Load every job file under `root`; schedules without a timezone get `timezone`."""
        defaults = _Defaults(default_multi_tenant, timezone or ZoneInfo("UTC"))
        files = sorted(
            p for p in root.rglob("*.py")
            if not any(part.startswith(("_", ".")) for part in p.relative_to(root).parts)
        ) if root.is_dir() else []
        package = _job_package(root)
        by_name: dict[str, list[Path]] = {}
        for path in files:
            by_name.setdefault(job_name_of(root, path), []).append(path)
        jobs: dict[str, JobSpec] = {}
        broken: dict[str, list[JobLoadError]] = {}
        for name, paths in by_name.items():
            if len(paths) > 1:
                broken[name] = [
                    JobLoadError(
                        shown_path(p, Path.cwd()),
                        f"job name {name!r} is taken by several files: "
                        + ", ".join(shown_path(other, Path.cwd()) for other in paths),
                    )
                    for p in paths
                ]
                continue
            try:
                jobs[name] = _load(package, root, name, paths[0], defaults)
            except JobLoadError as exc:
                broken[name] = [exc]
        return cls(root, jobs, broken)

    @property
    def names(self) -> list[str]:
        return sorted(self._jobs)

    def get(self, name: str) -> JobSpec:
        """The job called `name`; `UnknownBackgroundJob` or its `JobLoadError` if none."""
        try:
            return self._jobs[name]
        except KeyError:
            if name in self._broken:
                # A fresh error each time: raising the stored one would grow its notes and
                # traceback with every run that meets it.
                error = self._broken[name][0]
                raise JobLoadError(error.path, error.message) from None
            raise UnknownBackgroundJob(name, self.names) from None

    __getitem__ = get

    def __contains__(self, name: object) -> bool:
        return name in self._jobs

    def __iter__(self) -> Iterator[JobSpec]:
        return iter(self._jobs[name] for name in self.names)

    def __len__(self) -> int:
        return len(self._jobs)

    def __repr__(self) -> str:
        count = f"{len(self)} background job{'' if len(self) == 1 else 's'}"
        lines = [f"{count} in {shown_path(self.root, Path.cwd())}:"]
        width = max((len(n) for n in self.names), default=0)
        for spec in self:
            crons = ", ".join(s.cron for s in spec.schedules) or "-"
            tenancy = "  multi-tenant" if spec.multi_tenant else ""
            lines.append(f"  {spec.name:<{width}}  {crons}{tenancy}")
        lines.extend(f"  load error: {e}" for e in self.errors)
        return "\n".join(lines)


def job_name_of(root: Path, path: Path) -> str:
    """`jobs/reports/daily_summary.py` -> `reports/daily-summary`."""
    return path.relative_to(root).with_suffix("").as_posix().replace("_", "-")


def shown_path(path: Path, folder: Path | None) -> str:
    """`path` as a user reads it: relative to `folder` when inside it (the current
    directory, for a path to type; the app folder, for a file of the app), else as it is."""
    if folder is not None and path.is_relative_to(folder):
        return str(path.relative_to(folder))
    return str(path)


def _job_package(root: Path) -> str:
    """A fresh package whose `__path__` is the jobs folder, so job files may import their
    `_helpers` relatively; a new one per discovery, and every module of the folder imported
    before forgotten, so `reload()` runs the files as they are now."""
    forget_modules(root)
    name = f"pinrepl_jobs_{next(_packages)}"
    _package_roots[name] = root
    module = types.ModuleType(name)
    module.__path__ = [str(root)]
    sys.modules[name] = module
    return name


@dataclass(frozen=True)
class _Defaults:
    multi_tenant: bool
    timezone: ZoneInfo


def forget_modules(root: Path) -> None:
    """Take out of `sys.modules` every module of the folder `root`: the job packages made
    for it, and any module whose file or package folder is in it, whatever name it was
    imported by (`jobs._helpers` through the app folder on `sys.path`, say)."""
    stale = [p for p, r in _package_roots.items() if r == root]
    for package in stale:
        del _package_roots[package]
    gone = {name for name in sys.modules if name.split(".")[0] in stale}
    for name in gone.union(modules_in(root)):
        del sys.modules[name]
    importlib.invalidate_caches()


def modules_in(folder: Path) -> list[str]:
    """The names in `sys.modules` of the modules whose file or package folder is in
    `folder`, whatever name they were imported by. Compared as strings, without resolving
    each module's path: an app's modules were found through the folder as given or as
    resolved (the app folder on `sys.path`), so both count."""
    folders = tuple({os.path.join(str(folder), ""), os.path.join(str(folder.resolve()), "")})
    return [name for name, module in list(sys.modules.items()) if _in_folder(module, folders)]


def _in_folder(module: types.ModuleType | None, folders: tuple[str, ...]) -> bool:
    places = [getattr(module, "__file__", None), *(getattr(module, "__path__", None) or ())]
    return any(
        isinstance(place, str) and os.path.join(place, "").startswith(folders)
        for place in places
    )


class AppImports:
    """What an open app adds to the interpreter's imports: its folder on `sys.path` (so its
    files import each other by name) and the modules of its jobs folder. `undo()` takes
    them back once no other open app of the same folder needs them.

    The models module stays: its tables are defined once per process (SQLAlchemy's
    metadata keeps them), so importing the file again would define them twice."""

    def __init__(self, root: Path, jobs_dir: Path) -> None:
        self._folder = str(root.resolve())
        self._jobs_dir = jobs_dir
        self._open = False

    def add(self) -> None:
        """Make the app folder importable (idempotent)."""
        if self._open:
            return
        self._open = True
        _app_folders[self._folder] += 1
        if self._folder not in sys.path:
            sys.path.insert(0, self._folder)
            _inserted.add(self._folder)

    def undo(self) -> None:
        if not self._open:
            return
        self._open = False
        _app_folders[self._folder] -= 1
        if _app_folders[self._folder] > 0:
            return
        del _app_folders[self._folder]
        forget_modules(self._jobs_dir)
        if self._folder in _inserted:
            _inserted.discard(self._folder)
            with contextlib.suppress(ValueError):
                sys.path.remove(self._folder)


def _load(package: str, root: Path, name: str, path: Path, defaults: _Defaults) -> JobSpec:
    shown = shown_path(path, Path.cwd())
    if not JOB_NAME.fullmatch(name):
        raise JobLoadError(shown, f"{name!r} is not a job name (lowercase letters, digits, _)")
    module_name = f"{package}.{path.relative_to(root).with_suffix('').as_posix().replace('/', '.')}"
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise JobLoadError(shown, _describe_import_error(exc, path)) from exc
    classes = [
        obj for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, BackgroundJob)
        and obj is not BackgroundJob and obj.__module__ == module.__name__
    ]
    if len(classes) != 1:
        found = ", ".join(c.__name__ for c in classes)
        raise JobLoadError(
            shown,
            "defines no BackgroundJob subclass" if not classes
            else f"defines {len(classes)} BackgroundJob subclasses ({found}); one per file",
        )
    cls = classes[0]
    if cls.run is BackgroundJob.run:
        raise JobLoadError(shown, f"{cls.__name__} defines no run()")
    if not inspect.iscoroutinefunction(cls.run):
        raise JobLoadError(shown, f"{cls.__name__}.run() must be 'async def'")
    if not inspect.iscoroutinefunction(cls.on_failure):
        raise JobLoadError(shown, f"{cls.__name__}.on_failure() must be 'async def'")
    try:
        declared = cls()
        declared.meta()
    except Exception as exc:
        raise JobLoadError(shown, f"meta() raised {type(exc).__name__}: {exc}") from exc
    schedules = [
        Schedule.parse(cron, where=shown, timezone=timezone or defaults.timezone,
                       args=args, kwargs=kwargs)
        for cron, args, timezone, kwargs in declared._schedules
    ]
    multi_tenant = defaults.multi_tenant if cls.multi_tenant is None else cls.multi_tenant
    spec = JobSpec(name, path, cls, schedules, multi_tenant)
    for schedule in schedules:
        _check_schedule_arguments(spec, schedule, shown)
    _check_attributes(cls, shown)
    return spec


def _check_schedule_arguments(spec: JobSpec, schedule: Schedule, shown: str) -> None:
    """A load error unless the bot's `run(*schedule.args, **schedule.kwargs)` fits `run()`:
    else the job would list fine and fail at every slot."""
    why = spec.misfit(schedule.args, schedule.kwargs)
    if why is not None:
        given = ", ".join([*map(repr, schedule.args),
                           *(f"{k}={v!r}" for k, v in schedule.kwargs.items())])
        raise JobLoadError(
            shown,
            f"schedule {schedule.cron!r} passes ({given}), which "
            f"{spec.cls.__name__}.run{spec.call_signature} does not take: {why}",
        )


def _is_bool(value: object) -> bool:
    return isinstance(value, bool)


def _is_bool_or_none(value: object) -> bool:
    return value is None or isinstance(value, bool)


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_seconds(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0)


def _is_timeout(value: object) -> bool:
    return value is None or (_is_seconds(value) and value > 0)  # type: ignore[operator]


#: The job attributes pinrepl reads: a test of each, and what it must be, for the error.
_ATTRIBUTES: dict[str, tuple[Callable[[object], bool], str]] = {
    "multi_tenant": (_is_bool_or_none,
                     "True, False, or None for the app's multi_tenant setting"),
    "tenant_concurrency": (_is_positive_int, "a whole number of at least 1"),
    "misfire_grace": (_is_seconds, "a number of seconds, 0 or more"),
    "overlap": (_is_bool, "True or False"),
    "timeout": (_is_timeout, "a number of seconds above 0, or None for no limit"),
    "retries": (is_retries, "a whole number of tries, 0 or more, a pinrepl.Retry(...), or "
                            "None"),
}


def _check_attributes(cls: type[BackgroundJob], shown: str) -> None:
    """A load error for a job attribute pinrepl reads that is of the wrong kind, as a bad
    `[tool.pinrepl]` setting is: `multi_tenant = "no"` would be true."""
    for attribute, (fits, what) in _ATTRIBUTES.items():
        value = getattr(cls, attribute)
        if not fits(value):
            raise JobLoadError(
                shown, f"{cls.__name__}.{attribute} = {value!r}: it must be {what}"
            )


def _describe_import_error(exc: Exception, path: Path) -> str:
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} (line {exc.lineno})"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
    where = f" (line {frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"
