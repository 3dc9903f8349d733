"""pinrepl: named background jobs for Python apps, and the async REPL that drives them.

The public API is `__all__`. The names of the database layer load lazily, so that
`import pinrepl` (done by every job file) stays cheap: SQLAlchemy loads with `Model` or the
first database use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.4.0"

from .app import App
from .errors import (
    AmbiguousTenant,
    BackgroundJobExit,
    BackgroundJobFailed,
    BadJobArguments,
    ConfigError,
    DatabaseReadOnly,
    DatabaseRefused,
    DatabaseUnavailable,
    InvalidSchedule,
    InvalidTimezone,
    JobDefinitionError,
    JobLoadError,
    JobTimeout,
    LockTimeout,
    MissingColumn,
    MissingTable,
    NoDatabase,
    NoTenantsTable,
    PinreplError,
    ReadOnlySession,
    RunFailed,
    SandboxBusy,
    TablesOutdated,
    TenantViolation,
    TranscriptError,
    UnknownBackgroundJob,
    UnknownColumn,
    UnknownTable,
    UnknownTenant,
    WaitTimeout,
)
from .jobs import BackgroundJob, JobRegistry, JobSpec
from .retry import Retry
from .runs import Run, Status
from .schedules import Schedule
from .settings import Settings
from .workspace import Progress, Workspace

if TYPE_CHECKING:
    from .db import Database, Model, Query, Table, Tenant
    from .runs.deferred import DeferredRun

_DATABASE_NAMES = ("Database", "Model", "Query", "Table", "Tenant")

__all__ = [
    "AmbiguousTenant",
    "App",
    "BackgroundJob",
    "BackgroundJobExit",
    "BackgroundJobFailed",
    "BadJobArguments",
    "ConfigError",
    "Database",
    "DatabaseReadOnly",
    "DatabaseRefused",
    "DatabaseUnavailable",
    "DeferredRun",
    "InvalidSchedule",
    "InvalidTimezone",
    "JobDefinitionError",
    "JobLoadError",
    "JobRegistry",
    "JobSpec",
    "JobTimeout",
    "LockTimeout",
    "MissingColumn",
    "MissingTable",
    "Model",
    "NoDatabase",
    "NoTenantsTable",
    "PinreplError",
    "Progress",
    "Query",
    "ReadOnlySession",
    "Retry",
    "Run",
    "RunFailed",
    "SandboxBusy",
    "Schedule",
    "Settings",
    "Status",
    "Table",
    "TablesOutdated",
    "Tenant",
    "TenantViolation",
    "TranscriptError",
    "UnknownBackgroundJob",
    "UnknownColumn",
    "UnknownTable",
    "UnknownTenant",
    "WaitTimeout",
    "Workspace",
]


def __getattr__(name: str) -> Any:
    if name == "DeferredRun":  # SQLAlchemy loads here, with the runs repository
        from .runs.deferred import DeferredRun

        return DeferredRun
    if name not in _DATABASE_NAMES:
        raise AttributeError(f"module 'pinrepl' has no attribute {name!r}")
    from . import db  # SQLAlchemy loads here, on first use of a database name

    value = getattr(db, name)
    globals()[name] = value
    return value
