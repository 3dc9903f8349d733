"""Planning: the next slot of every schedule in a heap, which slots are due, which missed.

The bot sleeps until the earliest slot of the heap (or its next heartbeat) and, waking,
takes the entries that are due: nothing is polled, so the work grows with the slots that
fire, not with the schedules held. A late wake-up (the machine slept, the loop was blocked,
the database was away) is caught here by the missed-slot rule of SPEC 7: of the slots that
passed, the latest one still within the job's `misfire_grace` fires once, and the others
are counted as missed. The same rule applies when a bot starts (`catch_up`).

Slots are kept as UTC datetimes: two aware datetimes of one zone compare by wall clock,
which is wrong across a daylight-saving fold.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ..errors import InvalidSchedule
from ..jobs import JobSpec
from ..runs.record import Origin, encode_args
from ..runs.repository import RunRow
from ..schedules import Schedule

log = logging.getLogger("pinrepl.bot")

#: A slot this late is still on time, whatever `misfire_grace` says: waking takes a moment.
ON_TIME = timedelta(seconds=1)
#: Counting missed slots stops here (a per-second schedule after a long outage).
COUNT_CAP = 10_000
_COUNT_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class Fire:
    """A slot to run: `schedule` of `spec` fires at `slot` (UTC)."""

    spec: JobSpec
    schedule: Schedule
    slot: datetime


@dataclass(frozen=True)
class Missed:
    """`count` slots of `schedule` that passed unrun (`capped`: at least that many), and
    whether a later one, the latest within `misfire_grace`, runs instead (`latest_runs`)."""

    spec: JobSpec
    schedule: Schedule
    count: int
    capped: bool = False
    latest_runs: bool = False


@dataclass(order=True)
class _Entry:
    at: datetime
    order: int
    spec: JobSpec = field(compare=False)
    schedule: Schedule = field(compare=False)


def misfire_grace(spec: JobSpec) -> timedelta:
    """How late a slot of `spec` may still start (the job's `misfire_grace`, seconds)."""
    return max(ON_TIME, timedelta(seconds=float(spec.cls.misfire_grace)))


def schedules_of(specs: Iterable[JobSpec]) -> list[tuple[JobSpec, Schedule]]:
    """Each job's schedules, each distinct schedule once."""
    return [(spec, schedule) for spec in specs for schedule in dict.fromkeys(spec.schedules)]


class Plan:
    """The next slot after `after` of every schedule of `specs`, earliest first."""

    def __init__(self, specs: Iterable[JobSpec], after: datetime) -> None:
        self._heap: list[_Entry] = []
        self._order = itertools.count()
        for spec, schedule in schedules_of(specs):
            self._push(spec, schedule, after)

    def __len__(self) -> int:
        return len(self._heap)

    def next_at(self) -> datetime | None:
        """The earliest planned slot (UTC), or None without schedules."""
        return self._heap[0].at if self._heap else None

    def upcoming(self) -> list[tuple[JobSpec, Schedule, datetime]]:
        """Every schedule with its next slot, in the order they fire."""
        return [(e.spec, e.schedule, e.at) for e in sorted(self._heap)]

    def pop_due(self, now: datetime) -> tuple[list[Fire], list[Missed]]:
        """Take the slots at or before `now`: those to run, and those missed."""
        fires: list[Fire] = []
        missed: list[Missed] = []
        while self._heap and self._heap[0].at <= now:
            entry = heapq.heappop(self._heap)
            spec, schedule = entry.spec, entry.schedule
            following = _utc(schedule.next_after(entry.at))
            if following > now:  # on time: the usual case, one call
                latest, passed, capped = entry.at, 0, False
            else:  # woke late: several slots passed
                latest = _utc(schedule.latest_at_or_before(now) or entry.at)
                passed, capped = count_slots(schedule, entry.at, latest)
            runs = now - latest <= misfire_grace(spec)
            if runs:
                fires.append(Fire(spec, schedule, latest))
            else:
                passed += 1
            if passed:
                missed.append(Missed(spec, schedule, passed, capped, runs))
            self._push(spec, schedule, max(now, latest))
        return fires, missed

    def _push(self, spec: JobSpec, schedule: Schedule, after: datetime) -> None:
        try:
            at = _utc(schedule.next_after(after))
        except InvalidSchedule as exc:
            log.warning("schedule %r of %s fires no more: %s", schedule.cron, spec.name, exc)
            return
        heapq.heappush(self._heap, _Entry(at, next(self._order), spec, schedule))


def catch_up(
    specs: Iterable[JobSpec], now: datetime, last_slots: dict[str, datetime]
) -> tuple[list[Fire], list[Missed]]:
    """What a starting bot runs: each schedule's latest slot at or before `now`, if within
    its job's `misfire_grace` (the claims leave out what other bots have run of it: a fan-out
    may be under way). The slots between the job's last recorded one and that one are
    missed (a job without history misses nothing)."""
    fires: list[Fire] = []
    missed: list[Missed] = []
    for spec, schedule in schedules_of(specs):
        found = schedule.latest_at_or_before(now)
        last = last_slots.get(spec.name)
        if found is None:
            continue
        latest = _utc(found)
        passed, capped, new = 0, False, last is not None and latest > last
        if last is not None and new:
            passed, capped = count_slots(schedule, last + timedelta(microseconds=1), latest)
        runs = now - latest <= misfire_grace(spec)
        if runs:
            fires.append(Fire(spec, schedule, latest))
        elif new:
            passed += 1
        if passed:
            missed.append(Missed(spec, schedule, passed, capped, runs))
    return fires, missed


def missed(spec: JobSpec, run: RunRow, now: datetime) -> bool:
    """Whether `run`, claimed at `now`, is a scheduled first try that waited past its
    job's `misfire_grace` (it is not started: SPEC 8). Tenant runs of a fan-out and retries
    are not: the slot started when its fan-out did, and a retry's time is its own."""
    first = run.origin == Origin.SCHEDULE and run.attempt == 1 and run.parent_id is None
    return first and now - run.scheduled_for > misfire_grace(spec)


def overtaken(spec: JobSpec, run: RunRow, now: datetime) -> datetime | None:
    """The next slot of `run`'s schedule if `run`, claimed at `now`, is a later try of a
    scheduled run that did not start before it (the bots were down, or busy): the next
    slot is the retry (SPEC 8), so this try is not started. None otherwise."""
    if run.origin != Origin.SCHEDULE or run.attempt == 1:
        return None
    bound = next_slot(spec, run)
    return bound if bound is not None and now >= bound else None


def next_slot(spec: JobSpec, run: RunRow) -> datetime | None:
    """The slot after `run`'s of the schedule it is a run of (None: not a scheduled run,
    or its schedule is gone): where its retries stop."""
    if run.origin != Origin.SCHEDULE:
        return None
    slots = [
        _utc(schedule.next_after(run.scheduled_for)) for schedule in dict.fromkeys(spec.schedules)
        if encode_args(schedule.args, schedule.kwargs) == run.args
    ]
    return min(slots) if slots else None


def count_slots(schedule: Schedule, start: datetime, end: datetime) -> tuple[int, bool]:
    """How many slots `start <= t < end` (at most `COUNT_CAP`; True when it stopped there)."""
    count = 0
    while start < end:
        window = min(end, start + _COUNT_WINDOW)
        count += len(schedule.between(start, window))
        if count >= COUNT_CAP:
            return COUNT_CAP, True
        start = window
    return count, False


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)
