"""The scheduler: turns the due slots of the plan into queued rows.

Each slot is inserted as one `queued` row whichever bot gets there first: the unique index
over (job, arguments, tenant, slot, try) refuses the others, so every bot that is up may
insert every slot and each still runs once. A multi-tenant job's slot is one fan-out row,
expanded into its tenants by the bot that claims it.

Slots that could not be written (the database was away) wait here. When it is back, the
missed-slot rule applies (SPEC 7): the latest waiting slot of each schedule is queued, and
the older ones are written as `skipped` ("missed"), each only if no other bot wrote that
slot first. So a slot is reported missed only when it was: the rows this bot inserted as
missed are the ones nobody ran. The same rule holds for slots that waited only for this
bot's loop (a busy machine: two slots of a per-second schedule due before it wrote
either), whose error says that instead (`OVERTAKEN`). A queued slot that no bot had room
for within its `misfire_grace` is recorded `skipped`, saying so, by the bot that claims it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime

from ..db.engine import DATABASE_ERRORS
from ..runs.record import Origin
from ..runs.repository import NewRun, Repository, RunRow
from ..runs.status import Status
from .outage import Outage
from .plan import Fire

#: At most this many unwritten slots wait (a per-second schedule through a long outage).
MAX_WAITING = 10_000
#: The error of a slot that waited through an outage while a later one of its schedule
#: came due.
MISSED = "missed: the database was away at its slot, and a later slot ran instead"
#: The error of a slot that a later one of its schedule overtook before this bot queued it
#: (its loop was busy, or the machine slept), the database up.
OVERTAKEN = ("missed: a later slot of its schedule was due before this bot queued it (the "
             "bot was busy), and ran instead")


class Scheduler:
    """The due slots not yet written as queued rows."""

    def __init__(self, repository: Repository, outage: Outage,
                 clock: Callable[[], datetime]) -> None:
        self._repository = repository
        self._outage = outage
        self._clock = clock
        self._waiting: dict[tuple[str, str, str, datetime], Fire] = {}
        #: The last write found the database away: the waiting slots waited through it.
        self._cut_off = False

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def add(self, fires: Iterable[Fire]) -> None:
        for fire in fires:
            schedule = fire.schedule
            key = (fire.spec.name, schedule.cron, repr((schedule.args, schedule.kwargs)),
                   fire.slot)
            self._waiting[key] = fire
        while len(self._waiting) > MAX_WAITING:
            self._waiting.pop(next(iter(self._waiting)))

    async def write(self) -> list[RunRow] | None:
        """Write the waiting slots: the rows that were new (none: other bots wrote them
        first), or None when the database is away (they wait) or refused them."""
        if not self._waiting:
            return []
        if self._outage.away:
            self._cut_off = True
            return None
        # In slot order (run ids follow slots); the latest of each schedule is queued.
        fires = sorted(self._waiting.items(), key=lambda item: item[1].slot)
        latest = {key[:3]: fire for key, fire in fires}  # by job, cron and arguments
        overtaken = MISSED if self._cut_off else OVERTAKEN
        runs = [self._slot(fire, None if latest[key[:3]] is fire else overtaken)
                for key, fire in fires]
        try:
            new = await self._repository.enqueue_slots(runs, self._clock())
        except DATABASE_ERRORS as exc:
            if not self._outage.failed(exc, "queueing due slots"):
                self._waiting.clear()
            self._cut_off = True
            return None
        self._outage.answered()
        self._waiting.clear()
        self._cut_off = False
        return new

    @staticmethod
    def _slot(fire: Fire, missed: str | None) -> NewRun:
        """The row of `fire`: queued, or skipped with error `missed`."""
        return NewRun(
            fire.spec.name, tuple(fire.schedule.args), dict(fire.schedule.kwargs),
            Origin.SCHEDULE, scheduled_for=fire.slot, timeout=fire.spec.cls.timeout,
            status=Status.SKIPPED if missed else Status.QUEUED, error=missed,
        )
