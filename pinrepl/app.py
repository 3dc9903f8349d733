"""The app: the one place that knows all its parts and wires them together.

`App(settings)` loads nothing until asked: the job registry, the models and the engine are
made on first use, then the runner from them. Each part is handed only what it needs: the
runner gets the registry and a way to open a database, a workspace gets its tenant, its
database opener and the runner's `run_job`. `aclose()` disposes of the engine and takes
back what loading added to the interpreter's imports (the app folder on `sys.path`, the
job modules).

Control (SPEC 9) is here too, for the CLI, the REPL and the dashboard alike: pausing and
resuming jobs, retrying and cancelling runs, listing runs and bots. Each checks what it is
given (an unknown job is `UnknownBackgroundJob`, an unknown tenant `UnknownTenant`, a bad
filter `BadRunFilter`: nothing changes) and the tables' version, then runs the
repository's statements.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

from .defer import Deferrer
from .errors import (
    ConfigError,
    JobLoadError,
    NoTenantsGiven,
    ReadOnlySession,
    UnknownBackgroundJob,
)
from .jobs import AppImports, JobRegistry, shown_path
from .runner import Runner
from .runs.record import Origin
from .settings import Settings
from .workspace import Progress, Workspace

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from .db import Database, Engine, Model, Tenant
    from .runs.control import BotRow, Cancelled, Pause, RunFilter
    from .runs.deferred import DeferredRun
    from .runs.recorder import Recorder
    from .runs.repository import Repository, RunRow


#: pinrepl's tables, as control's errors name them.
_CONTROL_TABLES = ("background_job_runs", "background_job_bots", "background_job_pauses")


class App:
    """An opened app. Use `async with App.open(path) as app:` or call `aclose()`."""

    def __init__(self, settings: Settings, *, read_only: bool = False) -> None:
        self.settings = settings
        #: The database refuses every write of this app's engine (`repl --read-only`).
        self.read_only = read_only
        self._jobs: JobRegistry | None = None
        self._models: tuple[ModuleType | None, list[type[Model]]] | None = None
        self._engine: Engine | None = None
        self._runner: Runner | None = None
        self._repository: Repository | None = None
        self._recording: Recorder | None = None
        self._imports = AppImports(settings.root, settings.jobs_dir)

    @classmethod
    def open(
        cls, root: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> App:
        return cls(Settings.load(root, environ))

    # -- jobs -----------------------------------------------------------------------------

    @property
    def jobs(self) -> JobRegistry:
        """The job registry, discovered from the jobs folder on first use; `ConfigError`
        when there is no jobs folder."""
        if self._jobs is None:
            jobs_dir = self.settings.jobs_dir
            if not jobs_dir.is_dir():
                raise ConfigError(f"no jobs folder at {jobs_dir} (the app is {self.settings.root})")
            self._imports.add()
            self._jobs = JobRegistry.discover(
                self.settings.jobs_dir,
                default_multi_tenant=self.settings.multi_tenant,
                timezone=self.settings.timezone,
            )
            if self._runner is not None:
                self._runner.jobs = self._jobs
        return self._jobs

    def reload(self) -> JobRegistry:
        """Re-read every job file and helper module of the jobs folder; the new registry
        replaces the old one. The models stay as loaded (see `models_outdated`)."""
        self._jobs = None
        return self.jobs

    @property
    def models_outdated(self) -> str | None:
        """One line if the models file changed since it was loaded, else None: a running
        process cannot swap its models (their tables are defined once), so `reload()`
        leaves them and only a restart uses the change."""
        path = self.settings.models_path
        if self._models is None or path is None:
            return None
        from .models_file import changed_since_loaded  # loaded already with the models

        if not changed_since_loaded(path):
            return None
        return (f"{shown_path(path, self.settings.root)} changed since it was loaded, and "
                "models cannot be swapped while running: restart to use the change")

    # -- database -------------------------------------------------------------------------

    @property
    def models(self) -> list[type[Model]]:
        """The app's tables: the built-in ones first, then the models file's."""
        return self._load_models()[1]

    @property
    def models_module(self) -> ModuleType | None:
        return self._load_models()[0]

    def _load_models(self) -> tuple[ModuleType | None, list[type[Model]]]:
        if self._models is None:
            from .models_file import load_models  # SQLAlchemy loads on first database use

            self._imports.add()
            self._models = load_models(self.settings.models_path, self.settings.root)
        return self._models

    @property
    def engine(self) -> Engine:
        """The app's database engine (created on first use, shared by all workspaces)."""
        if self._engine is None:
            from .db import Engine  # SQLAlchemy loads on first database use

            self._engine = Engine(self.settings.database_url, self.settings.root, self.models,
                                  read_only=self.read_only)
        return self._engine

    def database(self, tenant_id: int | None = None) -> Database:
        """A database facade of its own (close it with `aclose()`)."""
        from .db import Database  # SQLAlchemy loads on first database use

        return Database(self.engine, tenant_id)

    async def init_database(self, demo: bool = False, echo: Callable[[str], Any] = print) -> None:
        """Create the missing tables, then create or upgrade pinrepl's own tables
        (`runs.migrate`); with `demo`, add sample rows if there are none."""
        from .db.schema import add_demo_data, app_tables, init_database  # SQLAlchemy here
        from .runs.migrate import upgrade  # and Alembic only here

        await init_database(self.engine, demo=False, seed=None, echo=echo)
        await upgrade(self.engine, echo)
        if demo:
            seed = getattr(self.models_module, "seed_demo", None)
            await add_demo_data(self.database(), list(app_tables(self.engine)), seed, echo)

    def sandbox(self) -> Any:
        """`async with app.sandbox():` every database write made inside, by any workspace,
        is rolled back when the block ends."""
        return self.engine.sandbox()

    @property
    def sandboxed(self) -> bool:
        return self._engine is not None and self._engine.sandboxed

    # -- runs -----------------------------------------------------------------------------

    @property
    def runner(self) -> Runner:
        if self._runner is None:
            self._runner = Runner(self.jobs, self.database, recorder=self._recorder,
                                  defer_job=self.defer_job)
        return self._runner

    def workspace(self, tenant: Tenant | None = None) -> Workspace:
        """A fresh workspace; `tenant` is a tenant row (see `tenant_workspace`)."""
        return self.runner.workspace(tenant)

    async def tenant_workspace(self, tenant: Any) -> Workspace:
        """A workspace scoped to `tenant` (an id, a name or a row); `UnknownTenant` if none."""
        (row,) = await self.runner.resolve_tenants([tenant])
        return self.workspace(row)

    async def run_background_job(self, name: str, /, *args: Any, **kwargs: Any) -> None:
        """Run job `name` now with `args` and `kwargs` (SPEC 3)."""
        await self.runner.run_job(name, args, kwargs)

    runBackgroundJob = run_background_job

    async def run_job(
        self,
        name: str,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        tenants: Iterable[Any] | None = None,
        progress: Progress | None = None,
        timeout: float | None = None,
        record: bool | str = False,
    ) -> None:
        """`run_background_job` with explicit options (see `Workspace.run_job`); `record`
        records the run in `background_job_runs` (True: origin `app`; or the origin)."""
        origin = (Origin.APP if record is True else record) or None
        await self.runner.run_job(
            name, tuple(args), dict(kwargs or {}), tenants=tenants, progress=progress,
            timeout=timeout, record=origin,
        )

    def _recorder(self) -> Recorder:
        from .runs.recorder import Recorder  # SQLAlchemy loads on first database use

        if self._recording is None:
            self._recording = Recorder(lambda: self.repository)
        return self._recording

    # -- deferred runs --------------------------------------------------------------------

    @property
    def repository(self) -> Repository:
        """Every statement on pinrepl's own tables (`runs.repository`)."""
        if self._repository is None:
            from .runs.repository import Repository  # SQLAlchemy loads on first database use

            self._repository = Repository(self.engine)
        return self._repository

    async def defer(self, name: str, /, *args: Any, **kwargs: Any) -> DeferredRun:
        """Queue a run of job `name` with `args` and `kwargs` for the bots (SPEC 8)."""
        return await self.defer_job(name, args, kwargs)

    async def defer_job(
        self, name: str, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None,
        *, at: datetime | None = None, delay: float | timedelta | None = None,
        tenants: Iterable[Any] | None = None, key: str | None = None, priority: int = 0,
        timeout: float | None = None,
        caller: Workspace | None = None,
    ) -> DeferredRun:
        """`defer` with explicit options: due `at` or after `delay` (seconds or a
        timedelta), over chosen `tenants`, one queued or running run per `key`, lower
        `priority` first, bounded by `timeout` seconds; from `caller`'s workspace (its
        tenant) if given."""
        return await Deferrer(self.runner, lambda: self.repository).defer_job(
            name, args, kwargs, at=at, delay=delay, tenants=tenants, key=key,
            priority=priority, timeout=timeout, caller=caller)

    # -- control (SPEC 9) -----------------------------------------------------------------

    async def pause_job(self, name: str, *, tenants: Iterable[Any] | None = None,
                        reason: str | None = None) -> None:
        """Pause job `name` (with `tenants`: those tenants' runs of it only), for `reason`:
        every bot sees it within a second. Its slots are recorded `skipped` (`paused:
        REASON`), its other queued runs wait until it is resumed; in-process runs still
        run, with a note. Pausing a paused job again changes only its reason (if given)."""
        self._check_job(name)
        tenant_ids = await self._tenant_ids(tenants, "pause")
        repository = await self._control()
        from .db.models import utcnow

        async with self._explaining():
            await repository.pause(name, tenant_ids, reason, utcnow())

    async def resume_job(self, name: str, *, tenants: Iterable[Any] | None = None) -> int:
        """Lift the pauses of job `name`: every one of it (its tenants' too), or with
        `tenants` only those tenants'; how many were lifted. The runs that waited start."""
        tenant_ids = await self._tenant_ids(tenants, "resume")
        repository = await self._control()
        async with self._explaining():
            if not self._names_a_job(name) and not await repository.pauses(name):
                self._check_job(name)  # raises, suggesting names
            return await repository.resume(name, tenant_ids)

    async def pauses(self) -> list[Pause]:
        """Every pause in force, by job then tenant."""
        repository = await self._control()
        async with self._explaining():
            return await repository.pauses()

    async def retry_runs(self, filter: RunFilter) -> list[int]:
        """Queue a new try of each run of `filter` that did not succeed (`failed`,
        `timed_out`, `abandoned`, `cancelled`) and has no later try: same job, arguments
        and tenant, origin `defer`, due now; the new runs' ids. A fan-out's try is one of
        each of its tenants that did not succeed."""
        repository = await self._control()
        from .db.models import utcnow

        async with self._explaining():
            await self._check_filter(repository, filter)
            return await repository.retry(filter, utcnow())

    async def cancel_runs(self, filter: RunFilter) -> Cancelled:
        """Cancel the runs of `filter` (without a status: those queued or running): queued,
        `cancelled` at once; running, cancelled by their bots within a second or two
        (their workspaces torn down) and recorded `cancelled`."""
        repository = await self._control()
        from .db.models import utcnow

        async with self._explaining():
            await self._check_filter(repository, filter)
            return await repository.cancel(filter, utcnow())

    async def list_runs(self, filter: RunFilter, *, limit: int = 50,
                        before: int | None = None) -> list[RunRow]:
        """The runs of `filter`, newest first: at most `limit`, older than run `before`
        (the last one of the page before) if given."""
        repository = await self._control()
        async with self._explaining():
            runs = await repository.list_runs(filter, limit=limit, before=before)
            if not runs and before is None:
                await self._check_filter(repository, filter)
        return runs

    async def get_run(self, run_id: int) -> RunRow | None:
        """Run `run_id`'s row (None: no such run, or deleted by retention)."""
        repository = await self._control()
        async with self._explaining():
            return await repository.get(run_id)

    async def bots(self) -> list[BotRow]:
        """The bots that are up (or not yet found dead) with their running runs."""
        repository = await self._control()
        async with self._explaining():
            return await repository.bots()

    async def _control(self) -> Repository:
        from .runs.migrate import check_version

        await check_version(self.engine)
        return self.repository

    def _explaining(self) -> _Explaining:
        return _Explaining(self.engine)

    def _names_a_job(self, name: str) -> bool:
        """Whether `name` is a job of the app, loaded or not (a file that fails to load)."""
        try:
            self.jobs.get(name)
        except UnknownBackgroundJob:
            return False
        except JobLoadError:
            pass
        return True

    def _check_job(self, name: str) -> None:
        if not self._names_a_job(name):
            raise UnknownBackgroundJob(name, self.jobs.names)

    async def _check_filter(self, repository: Repository, filter: RunFilter) -> None:
        """`UnknownBackgroundJob` for a filter's job that is neither the app's nor in the
        history."""
        job = filter.job
        if job is not None and not self._names_a_job(job) and not await repository.has_job(job):
            raise UnknownBackgroundJob(job, self.jobs.names)

    async def _tenant_ids(self, tenants: Iterable[Any] | None, doing: str) -> list[int] | None:
        """The ids of `tenants` (None: not given); `NoTenantsGiven` for an empty list, which
        would otherwise mean the whole job."""
        if tenants is None:
            return None
        refs = list(tenants)
        if not refs:
            raise NoTenantsGiven(f"the tenants given name no tenant: leave them out to {doing} "
                                 "the whole job")
        return [t.id for t in await self.runner.resolve_tenants(refs)]

    async def aclose(self) -> None:
        try:
            if self._engine is not None:
                await self._engine.aclose()
                self._engine = None
        finally:
            self._imports.undo()

    async def __aenter__(self) -> App:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class _Explaining:
    """`async with`: a database error about pinrepl's tables (a column dropped by hand, a
    lock held too long) as its one-line error, and a write a read-only session's database
    refused (`ReadOnlySession`) without the driver's error and frames under it.

    A class, not `contextlib.asynccontextmanager`: contextlib puts back the first
    traceback of an exception its generator raises again (the driver's frames with it),
    and one raised anew there would show contextlib's own frames."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        from sqlalchemy.exc import DBAPIError  # loaded already: the statements need it

        if isinstance(exc, ReadOnlySession):
            raise exc.with_traceback(None) from None
        if isinstance(exc, DBAPIError):
            problem = await self._engine.explain(exc, _CONTROL_TABLES)
            raise problem or exc from None
