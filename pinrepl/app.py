"""The app: a folder, its `[tool.pinrepl]` settings, its jobs and its database engine.

`Settings.load()` reads the folder (cheap, no heavy imports). `App` is the runtime built on
it: the job registry and the models are loaded on first use, the engine is created on first
use, and `aclose()` disposes of it. Everything else (workspaces, runs, the REPL, the CLI)
receives an `App` explicitly.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigError

if TYPE_CHECKING:
    from .database import Database, Engine
    from .jobs import JobRegistry
    from .runner import Progress
    from .workspace import Workspace

_KNOWN_SETTINGS = {"jobs", "models", "database_url", "timezone", "multi_tenant"}


@dataclass(frozen=True)
class Settings:
    """What an app folder says about itself (SPEC 1)."""

    root: Path
    jobs_dir: Path
    models_path: Path | None
    database_url: str
    timezone: ZoneInfo
    multi_tenant: bool

    @classmethod
    def load(
        cls, root: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Settings of the app in `root` (default: `PINREPL_APP`, else the current directory)."""
        environ = os.environ if environ is None else environ
        root = Path(root or environ.get("PINREPL_APP") or ".").resolve()
        if not root.is_dir():
            raise ConfigError(f"app folder {root} does not exist")
        table = _read_table(root / "pyproject.toml")
        unknown = set(table) - _KNOWN_SETTINGS
        if unknown:
            raise ConfigError(
                f"{root / 'pyproject.toml'}: unknown [tool.pinrepl] setting(s): "
                f"{', '.join(sorted(unknown))}"
            )
        models = table.get("models")
        if models is not None:
            models_path: Path | None = root / _string(table, "models")
            if not models_path.is_file():
                raise ConfigError(f"models file {models_path} does not exist")
        else:
            models_path = root / "models.py" if (root / "models.py").is_file() else None
        tz_name = _string(table, "timezone", "UTC")
        try:
            timezone = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"unknown timezone {tz_name!r} in [tool.pinrepl]") from None
        multi_tenant = table.get("multi_tenant", False)
        if not isinstance(multi_tenant, bool):
            raise ConfigError("[tool.pinrepl] multi_tenant must be true or false")
        url = (
            environ.get("PINREPL_DATABASE_URL")
            or table.get("database_url")
            or "sqlite+aiosqlite:///pinrepl.db"
        )
        return cls(
            root=root,
            jobs_dir=root / _string(table, "jobs", "jobs"),
            models_path=models_path,
            database_url=str(url),
            timezone=timezone,
            multi_tenant=multi_tenant,
        )


def _read_table(pyproject: Path) -> dict[str, Any]:
    if not pyproject.is_file():
        return {}
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{pyproject}: {exc}") from None
    table = data.get("tool", {}).get("pinrepl", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{pyproject}: [tool.pinrepl] must be a table")
    return table


def _string(table: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"[tool.pinrepl] {key} must be a non-empty string")
    return value


class App:
    """An opened app. Use `async with App.open(path) as app:` or call `aclose()`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._jobs: JobRegistry | None = None
        self._models: ModuleType | bool | None = False
        self._engine: Engine | None = None

    @classmethod
    def open(
        cls, root: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> App:
        return cls(Settings.load(root, environ))

    # -- jobs ---------------------------------------------------------------------------

    @property
    def jobs(self) -> JobRegistry:
        """The job registry, discovered from the jobs folder on first use."""
        if self._jobs is None:
            from .jobs import JobRegistry

            self._jobs = JobRegistry.discover(
                self.settings.jobs_dir, default_multi_tenant=self.settings.multi_tenant
            )
        return self._jobs

    def reload(self) -> JobRegistry:
        """Re-read every job file; the new registry replaces the old one."""
        self._jobs = None
        return self.jobs

    # -- database -----------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The app's database engine (created on first use, shared by all workspaces)."""
        if self._engine is None:
            from .database import Engine

            self._engine = Engine(self.settings.database_url, self.settings.root, self.models)
        return self._engine

    @property
    def models(self) -> list[type]:
        """The app's model classes, the built-in `Tenant` first."""
        from .database import load_models

        return load_models(self.settings.models_path)

    def models_module(self) -> ModuleType | None:
        from .database import load_models_module

        return load_models_module(self.settings.models_path)

    def database(self, tenant_id: int | None = None) -> Database:
        return self.engine.database(tenant_id)

    async def init_database(self, demo: bool = False, echo: Callable[[str], Any] = print) -> None:
        """Create the tables; with `demo`, add sample rows if the database has none."""
        from .database import init_database

        await init_database(self, demo=demo, echo=echo)

    async def start_sandbox(self) -> None:
        """From now on every write of every workspace is rolled back by `aclose()`."""
        await self.engine.start_sandbox()

    @property
    def sandboxed(self) -> bool:
        return self._engine is not None and self._engine.sandboxed

    # -- runs -----------------------------------------------------------------------------

    def workspace(self, tenant: Any = None) -> Workspace:
        """A fresh workspace; `tenant` is a tenant row (see `tenant_workspace`)."""
        from .workspace import Workspace

        return Workspace(self, tenant=tenant)

    async def tenant_workspace(self, tenant: Any) -> Workspace:
        """A workspace scoped to `tenant` (an id, a name or a row); `UnknownTenant` if none."""
        from .tenancy import resolve_tenants

        (row,) = await resolve_tenants(self, [tenant])
        return self.workspace(row)

    async def run_background_job(self, name: str, /, *args: Any, **kwargs: Any) -> None:
        """Run job `name` now with `args` and `kwargs` (SPEC 3)."""
        await self.workspace().run_background_job(name, *args, **kwargs)

    runBackgroundJob = run_background_job

    async def run_job(
        self,
        name: str,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        tenants: Iterable[Any] | None = None,
        progress: Progress | None = None,
    ) -> None:
        """`run_background_job` with explicit options (see `Workspace.run_job`)."""
        await self.workspace().run_job(name, args, kwargs, tenants=tenants, progress=progress)

    async def aclose(self) -> None:
        if self._engine is not None:
            await self._engine.aclose()
            self._engine = None

    async def __aenter__(self) -> App:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
