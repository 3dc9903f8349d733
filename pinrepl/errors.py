"""Every exception pinrepl raises on purpose, in one place.

`PinreplError` marks an error a user can fix (bad name, bad setting, bad input): its
message is one line, and the CLI prints it and exits 2. `ConfigError` and
`DatabaseUnavailable` are about the app's environment, whenever they happen; the others are
the caller's mistakes when a run is prepared, and a job's failure when its own code raises
them. Failures of a job's own code are not wrapped: they reach the caller as they were
raised, with a note naming the job.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


def suggest(word: str, candidates: Iterable[str]) -> str:
    """' (did you mean: a, b?)' for the close matches of `word`, or ''. Case is ignored
    (`ACME` suggests `acme`), and the candidates are shown as they are spelled."""
    spelled: dict[str, str] = {}
    for candidate in candidates:
        spelled.setdefault(candidate.casefold(), candidate)
    close = difflib.get_close_matches(word.casefold(), list(spelled), n=3, cutoff=0.6)
    return f" (did you mean: {', '.join(spelled[c] for c in close)}?)" if close else ""


class PinreplError(Exception):
    """An error the user can fix; its message is one line that says what was wrong."""


class ConfigError(PinreplError):
    """The app folder, its `[tool.pinrepl]` settings or the database URL are not usable."""


class DatabaseUnavailable(PinreplError):
    """The database cannot be reached or does not exist yet."""


class NoDatabase(DatabaseUnavailable):
    """The app's SQLite file does not exist yet (`pinrepl init-database` makes it): no bot
    has run there, since a bot needs the database."""


class MissingTable(DatabaseUnavailable):
    """The database lacks a table the app needs: `pinrepl init-database` creates it."""

    def __init__(self, tables: Sequence[str], why: str = "") -> None:
        names = ", ".join(repr(name) for name in tables)
        lacks = f"table {names}; create it" if len(tables) == 1 else \
            f"tables {names}; create them"
        super().__init__(f"{why}the database has no {lacks} with: pinrepl init-database")
        self.tables = list(tables)


class DatabaseReadOnly(DatabaseUnavailable):
    """The database refuses writes (a read-only file, a read-only server)."""


class ReadOnlySession(DatabaseReadOnly):
    """A write refused because the session is read-only (`repl --read-only`): the database
    itself refuses it (PostgreSQL read-only transactions, SQLite `query_only`), whether
    the REPL or a job it runs or defers asked for it."""


class DatabaseRefused(PinreplError):
    """The database refused a statement for a reason that trying again does not change: a
    column that differs from pinrepl's tables, a missing permission."""


class MissingColumn(DatabaseRefused):
    """A table of the database lacks columns its model has. pinrepl creates missing tables
    but changes no existing one: `pinrepl init-database` lists the columns that differ."""

    def __init__(self, table: str, columns: Sequence[str]) -> None:
        names = ", ".join(repr(name) for name in columns)
        lacks, has = ("column", "it") if len(columns) == 1 else ("columns", "them")
        super().__init__(
            f"table {table!r} of the database has no {lacks} {names} (its model has {has}); "
            "pinrepl init-database lists the columns that differ"
        )
        self.table = table
        self.columns = list(columns)


class MetricsUnavailable(PinreplError):
    """The bot cannot serve its metrics where it was told to (a port in use, an address
    it may not listen on)."""


class DashboardUnavailable(PinreplError):
    """`pinrepl web` cannot listen where it was told to (a port in use, an address it may
    not listen on)."""


class LockTimeout(PinreplError):
    """A statement waited too long for a lock another transaction holds."""


class SandboxBusy(LockTimeout):
    """A session waited too long for its turn on the sandbox's one connection."""


class JobLoadError(PinreplError):
    """A job file that cannot be used: import error, no job class or two, bad cron, ..."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class UnknownBackgroundJob(PinreplError, LookupError):
    """No job has that name. The message suggests close names."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        super().__init__(f"unknown background job {name!r}{suggest(name, known)}")
        self.name = name

    def __str__(self) -> str:  # LookupError would quote the message like a KeyError
        return self.args[0]


#: The name issue 14's API uses (coord/API.md) for the same error.
UnknownJob = UnknownBackgroundJob


class BadJobArguments(PinreplError, TypeError):
    """The arguments do not fit the job's `run()` signature."""


class BadRunFilter(PinreplError, ValueError):
    """A filter of runs that cannot be used (SPEC 9): an unknown status or origin, run ids
    given with the other filters, a `since` without a timezone."""


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


class AmbiguousTenant(UnknownTenant):
    """A tenant reference that is one tenant's id and another's name (a tenant named `2`);
    `id:2` or `name:2` chooses. A prefixed reference that is also another tenant's whole name
    (a tenant named `id:2`) is one too; `name:id:2` chooses that tenant. It is an
    `UnknownTenant`, so catching `UnknownTenant` catches it."""


class NoTenantsTable(MissingTable):
    """A multi-tenant run needs the `tenants` table, and the database has none."""


class NoTenantsGiven(PinreplError, ValueError):
    """Tenants asked for as an empty list (`pause(tenants=[])`): it names no tenant, and
    leaving them out is what means the whole job."""


class TenantViolation(PinreplError):
    """A call from one tenant's workspace tried to reach another tenant's rows or runs."""


class TranscriptError(PinreplError):
    """A transcript file that cannot be read as a transcript (names the file and line)."""


class BackgroundJobExit(Exception):
    """A job called `sys.exit()`: a failure of that run like any other, not the end of the
    caller (the `SystemExit` is its `__cause__`)."""


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

    def derive(self, excs: Sequence[Exception]) -> BackgroundJobFailed:  # type: ignore[override]
        return BackgroundJobFailed(self.message, excs, self.total)


class InvalidSchedule(PinreplError, ValueError):
    """A schedule that cannot be used: a bad or never-firing cron, or an unknown timezone.

    The message is one line naming the cron expression and what is wrong with it."""

    def __init__(self, cron: object, problem: str) -> None:
        super().__init__(f"invalid cron {cron!r}: {problem}")
        self.cron = cron
        self.problem = problem


class InvalidTimezone(InvalidSchedule):
    """A schedule whose timezone is unusable; the message blames the timezone, not the
    cron."""

    def __init__(self, cron: object, timezone: object, message: str) -> None:
        super(InvalidSchedule, self).__init__(message)
        self.cron = cron
        self.timezone = timezone
        self.problem = message


class TablesOutdated(DatabaseRefused):
    """pinrepl's own tables are of another version than this pinrepl's (SPEC 8): one
    line naming `init-database`, exit 2."""


class JobTimeout(PinreplError, TimeoutError):
    """A run went past its `timeout` and was stopped (SPEC 8): "timed out after 1 s", with
    the note every failure of a run has naming the job and the tenant ("in background job
    'slow' for tenant 2 (acme)"); `timeout` is the limit in seconds. Its cause is what
    stopped the job's code (the cancellation, or the interrupt of code that blocked)."""

    def __init__(self, message: str, *, timeout: float | None = None) -> None:
        super().__init__(message)
        self.timeout = timeout


class WaitTimeout(PinreplError, TimeoutError):
    """`await run.wait(timeout=)` gave up before the run ended: "run 12 ('hello') did not
    end within 1 s; it goes on: wait again, or cancel it". Waiting stops nothing; `run_id`
    is the run's, `timeout` the seconds waited."""

    def __init__(self, message: str, *, run_id: int, timeout: float) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.timeout = timeout


class RunFailed(PinreplError):
    """A deferred run that did not succeed, as `await run.wait()` raises it: the message
    names the job, the tenant, the status and the error; `.status`, `.error` and
    `.traceback` are the run's."""

    def __init__(self, message: str, *, run_id: int, status: str, error: str | None,
                 traceback: str | None) -> None:
        super().__init__(message)
        self.run_id = run_id
        self.status = status
        self.error = error
        self.traceback = traceback
