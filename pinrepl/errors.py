"""Every exception pinrepl raises on purpose, in one place.

`PinreplError` marks an error a user caused (bad name, bad setting, bad input): the CLI
prints its message as one line and exits 2. Failures of a job's own code are not
wrapped: they reach the caller as they were raised, with a note naming the job.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


def suggest(word: str, candidates: Iterable[str]) -> str:
    """' (did you mean: a, b?)' for the close matches of `word`, or ''."""
    close = difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.6)
    return f" (did you mean: {', '.join(close)}?)" if close else ""


class PinreplError(Exception):
    """An error the user can fix; its message is one line that says what was wrong."""


class ConfigError(PinreplError):
    """The app folder, its `[tool.pinrepl]` settings or the database URL are not usable."""


class DatabaseUnavailable(PinreplError):
    """The database cannot be reached or does not exist yet."""


class JobLoadError(PinreplError):
    """A job file that cannot be used: import error, no job class or two, bad cron, ..."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class UnknownBackgroundJob(PinreplError, LookupError):
    """No job has that name. The message suggests close names."""

    def __init__(self, name: str, known: Sequence[str], hint: str = "") -> None:
        super().__init__(f"unknown background job {name!r}{suggest(name, known)}{hint}")
        self.name = name

    def __str__(self) -> str:  # LookupError would quote the message like a KeyError
        return self.args[0]


class BadJobArguments(PinreplError, TypeError):
    """The arguments do not fit the job's `run()` signature."""


class JobDefinitionError(PinreplError):
    """A job class is usable but one of its hooks returned something unusable."""


class UnknownTable(PinreplError, AttributeError):
    """`database.<name>` names no table. The message lists the tables there are."""


class UnknownColumn(PinreplError, AttributeError):
    """A query names a column its table does not have."""


class UnknownTenant(PinreplError, LookupError):
    """No tenant has that id or name."""

    def __str__(self) -> str:
        return self.args[0]


class NoTenantsTable(PinreplError):
    """A multi-tenant run needs the `tenants` table, and the database has none."""


class TenantViolation(PinreplError):
    """A call from one tenant's workspace tried to reach another tenant's rows or runs."""


class TranscriptError(PinreplError):
    """A transcript file that cannot be read as a transcript (names the file and line)."""


class BackgroundJobFailed(ExceptionGroup):
    """A multi-tenant run in which some tenants failed: one exception per failed tenant.

    `total` is the number of tenants that ran; the others completed.
    """

    total: int = 0

    def __new__(cls, message: str, exceptions: Sequence[Exception], total: int = 0):
        self = super().__new__(cls, message, exceptions)
        self.total = total
        return self

    def __init__(self, message: str, exceptions: Sequence[Exception], total: int = 0) -> None:
        super().__init__(message, exceptions)

    def derive(self, excs: Sequence[Exception]) -> BackgroundJobFailed:
        return BackgroundJobFailed(self.message, excs, self.total)
