"""Control of the runs (SPEC 9), as plain values: a pause in force (`Pause`), which runs a
command means (`RunFilter`: by ids, or by job, status, tenant, origin and age), what a
cancel did (`Cancelled`), and a bot that is up with its running runs (`BotRow`).

The CLI, the REPL and the dashboard build these and hand them to the app's control
methods (`App.pause_job`, `retry_runs`, `cancel_runs`, `list_runs`, ...), whose statements
are the repository's. Cheap to import: no SQLAlchemy.

What a filter means: the runs of `ids`, when given (of tenant `tenant_id` only, if set: a
tenant's session or dashboard reaches no other tenant's run; the other fields must be
unset); else every run of `job` (if set) with `status`, of tenant `tenant_id`, from
`origin`, made (`created_at`) at or after `since`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ..errors import BadRunFilter
from .record import Origin
from .status import STATUSES

if TYPE_CHECKING:
    from .repository import RunRow

#: A bot's lease when it says none (the bots' default `--lease`).
LEASE = timedelta(seconds=30)
#: Where a run can come from (`origin`).
ORIGINS = (Origin.SCHEDULE, Origin.DEFER, Origin.CLI, Origin.REPL, Origin.APP)
#: The largest id a run can have (a BIGINT), and the most runs a listing can ask for: a
#: larger number is no statement's parameter on either database.
MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class Pause:
    """A pause in force: of job `job` (`tenant_id` None: all of it), or of one tenant's
    runs of it; why (`reason`, if given) and since when."""

    job: str
    tenant_id: int | None
    reason: str | None
    since: datetime

    @property
    def error(self) -> str:
        """The `error` of a slot skipped for it: `paused: REASON`."""
        return paused_error(self.reason)


def paused_error(reason: str | None) -> str:
    """`paused: REASON` (`paused` without one)."""
    return f"paused: {reason}" if reason else "paused"


@dataclass(frozen=True)
class Cancelled:
    """What a cancel did: `queued` runs cancelled at once, `running` runs whose bots were
    asked to cancel them (each is recorded `cancelled` within a second or two)."""

    queued: int
    running: int

    @property
    def total(self) -> int:
        return self.queued + self.running


@dataclass(frozen=True)
class RunFilter:
    """Which runs: those of `ids` (of `tenant_id` only, if set); or every run of `job`,
    `status`, `tenant_id`, `origin`, made since `since` (each unset field: any).
    `BadRunFilter` for a status or an origin that does not exist, ids mixed with the other
    fields (but `tenant_id`), or a naive `since`."""

    ids: tuple[int, ...] = ()
    job: str | None = None
    status: str | None = None
    tenant_id: int | None = None
    origin: str | None = None
    since: datetime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", tuple(self.ids))
        if self.status is not None and self.status not in STATUSES:
            raise BadRunFilter(f"unknown status {self.status!r} (one of: "
                               f"{', '.join(STATUSES)})")
        if self.origin is not None and self.origin not in ORIGINS:
            raise BadRunFilter(f"unknown origin {self.origin!r} (one of: "
                               f"{', '.join(ORIGINS)})")
        if self.since is not None and self.since.utcoffset() is None:
            raise BadRunFilter(f"since must be a timezone-aware datetime, not {self.since!r}")
        if self.ids and self.by_fields:
            raise BadRunFilter("give run ids (of a tenant, at most), or a job and the other "
                               "filters, not both")
        for run_id in self.ids:
            if isinstance(run_id, bool) or not isinstance(run_id, int) \
                    or not 0 < run_id <= MAX_ID:
                raise BadRunFilter(f"a run id is a whole number from 1 to {MAX_ID}, not "
                                   f"{run_id!r}")

    @property
    def by_fields(self) -> bool:
        """Whether any field but `ids` and `tenant_id` is set."""
        return any(value is not None for value in (
            self.job, self.status, self.origin, self.since))


@dataclass(frozen=True)
class BotRow:
    """A bot that is registered (up, or not yet given up for dead), and its running runs."""

    id: str
    host: str
    pid: int
    started_at: datetime
    beat_at: datetime
    #: When it is dead unless it beats again (None: a bot of pinrepl 0.3.0).
    expires_at: datetime | None
    running: list[RunRow] = field(default_factory=list)

    def up(self, now: datetime) -> bool:
        """Whether its lease holds at `now`: if not, its peers take it for dead (a bot of
        0.3.0, which did not say its lease, is judged by the default one)."""
        return now < (self.expires_at or self.beat_at + LEASE)
