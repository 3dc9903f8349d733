"""pinrepl: named background jobs for Python apps, and the async REPL that drives them.

The public names are imported lazily, so that `import pinrepl` (done by every job file)
stays cheap: SQLAlchemy loads only with `Model` or the first database use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "App": "app",
    "Settings": "app",
    "BackgroundJob": "jobs",
    "JobRegistry": "jobs",
    "Workspace": "workspace",
    "Model": "database",
    "Tenant": "database",
    "Database": "database",
    "PinreplError": "errors",
    "ConfigError": "errors",
    "DatabaseUnavailable": "errors",
    "JobLoadError": "errors",
    "UnknownBackgroundJob": "errors",
    "BadJobArguments": "errors",
    "BackgroundJobFailed": "errors",
    "UnknownTable": "errors",
    "UnknownColumn": "errors",
    "UnknownTenant": "errors",
    "NoTenantsTable": "errors",
    "TenantViolation": "errors",
    "TranscriptError": "errors",
}

__all__ = [
    "App",
    "BackgroundJob",
    "BackgroundJobFailed",
    "BadJobArguments",
    "ConfigError",
    "Database",
    "DatabaseUnavailable",
    "JobLoadError",
    "JobRegistry",
    "Model",
    "NoTenantsTable",
    "PinreplError",
    "Settings",
    "Tenant",
    "TenantViolation",
    "TranscriptError",
    "UnknownBackgroundJob",
    "UnknownColumn",
    "UnknownTable",
    "UnknownTenant",
    "Workspace",
]

if TYPE_CHECKING:
    from .app import App, Settings
    from .database import Database, Model, Tenant
    from .errors import (
        BackgroundJobFailed,
        BadJobArguments,
        ConfigError,
        DatabaseUnavailable,
        JobLoadError,
        NoTenantsTable,
        PinreplError,
        TenantViolation,
        TranscriptError,
        UnknownBackgroundJob,
        UnknownColumn,
        UnknownTable,
        UnknownTenant,
    )
    from .jobs import BackgroundJob, JobRegistry
    from .workspace import Workspace


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pinrepl' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
