"""Cron schedules: the public `Schedule` object and the slots it fires at (SPEC 7).

This module owns what a cron expression means in time: checking it (five fields, or six
with seconds first, as in node-cron and Quartz, or an alias such as `@daily`, which means
its five-field form in every way, the daylight-saving rule included), and turning it into
*slots*, the instants it fires at in its own timezone, by Debian cron's daylight-saving rule:

- A *fixed-time* schedule (its seconds, minute and hour fields do not start with `*`) fires
  once per matching wall-clock time: at its first occurrence when the clocks go back, and
  at the first instant after the gap when they go forward (several times in one gap, and
  the time just after it, make one slot).
- Any other schedule follows real time: it fires at every instant whose wall-clock time
  matches, so `0 * * * *` fires 25 times on a 25-hour day and 23 times on a 23-hour day.

croniter matches the fields, always against naive wall-clock times, where there is no
daylight saving; this module maps those wall-clock times to instants. It follows Python's
model of a timezone (PEP 495): a wall-clock time has one instant, none (a gap) or two (a
fold). Searches stop 60 years away: croniter gives up on 50 years without a match.

Slots are aware datetimes in the schedule's timezone. Compare them as instants (`<`,
`astimezone(UTC)`): Python compares two datetimes of one zone by wall clock, ignoring
`fold`, and never finds a time of a fold equal (`==`) to a datetime of another zone.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from types import ModuleType
from typing import Any, NoReturn
from zoneinfo import ZoneInfo, available_timezones

from .errors import InvalidSchedule, InvalidTimezone, JobLoadError, suggest

_SECOND = timedelta(seconds=1)
_HORIZON = timedelta(days=366 * 60)
_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")
#: The aliases of Vixie and Debian cron that name a schedule (not `@reboot`), and the
#: five-field form each stands for.
ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def _cron() -> ModuleType:
    """croniter, imported on first use: it takes longer to import than the rest of pinrepl
    together, and `import pinrepl` (every job file, the REPL before its first prompt)
    should not wait for it."""
    return importlib.import_module("croniter.croniter")  # the module, not its class


def _refusals() -> tuple[type[Exception], ...]:
    """What croniter raises for a cron it refuses."""
    cron = _cron()
    return (cron.CroniterError, cron.CroniterBadTypeRangeError, ValueError, KeyError,
            IndexError)


class Schedule:
    """A cron expression in a timezone, with the arguments the bot passes to `run()`.

    Immutable and hashable; equal when cron, timezone, `args` and `kwargs` are equal.
    `InvalidSchedule` for a bad cron, one that never fires, or an unknown timezone.
    """

    __slots__ = ("_args", "_cron", "_fields", "_fixed_time", "_kwargs", "_timezone")

    _cron: str
    _fields: str
    _timezone: ZoneInfo
    _args: tuple[Any, ...]
    _kwargs: dict[str, Any]
    _fixed_time: bool

    def __init__(
        self,
        cron: str,
        timezone: str | ZoneInfo = "UTC",
        *,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        fields = _check_cron(cron)
        time_fields = fields[:3] if len(fields) == 6 else fields[:2]
        object.__setattr__(self, "_cron", cron)
        object.__setattr__(self, "_fields", " ".join(fields))
        object.__setattr__(self, "_timezone", _zone(cron, timezone))
        object.__setattr__(self, "_args", tuple(args))
        object.__setattr__(self, "_kwargs", dict(kwargs or {}))
        object.__setattr__(self, "_fixed_time", not any(f.startswith("*") for f in time_fields))

    @classmethod
    def parse(
        cls,
        cron: str,
        where: str = "<schedule>",
        timezone: str | ZoneInfo = "UTC",
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Schedule:
        """`Schedule(...)` for job loading: `JobLoadError` naming `where` if invalid."""
        try:
            return cls(cron, timezone, args=args, kwargs=kwargs)
        except InvalidSchedule as exc:
            raise JobLoadError(where, str(exc)) from None

    # -- the object ---------------------------------------------------------------------

    @property
    def cron(self) -> str:
        """The cron expression as given (an alias stays an alias)."""
        return self._cron

    @property
    def timezone(self) -> ZoneInfo:
        return self._timezone

    @property
    def args(self) -> tuple[Any, ...]:
        return self._args

    @property
    def kwargs(self) -> dict[str, Any]:
        """A copy: the bot calls `run(*args, **kwargs)`."""
        return dict(self._kwargs)

    @property
    def fixed_time(self) -> bool:
        """Debian cron's rule: no seconds, minute or hour field starts with `*`."""
        return self._fixed_time

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"Schedule is immutable (cannot set {name!r})")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"Schedule is immutable (cannot delete {name!r})")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self._cron, self._timezone.key, self._args, self._kwargs))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schedule):
            return NotImplemented
        return (self._cron, self._timezone.key, self._args, self._kwargs) == (
            other._cron, other._timezone.key, other._args, other._kwargs
        )

    def __hash__(self) -> int:
        return hash((self._cron, self._timezone.key, _frozen(self._args), _frozen(self._kwargs)))

    def __repr__(self) -> str:
        extra = f", args={self._args!r}" if self._args else ""
        extra += f", kwargs={self._kwargs!r}" if self._kwargs else ""
        return f"Schedule({self._cron!r}, timezone={self._timezone.key!r}{extra})"

    # -- slots --------------------------------------------------------------------------

    def between(self, start: datetime, end: datetime) -> list[datetime]:
        """The slots `start <= t < end`, ascending."""
        first, last = _utc(start, "start", up=True), _utc(end, "end", up=True) - _SECOND
        if last < first:
            return []
        return [self._aware(t) for t in self._slots(first, last)]

    def next_after(self, moment: datetime) -> datetime:
        """The first slot strictly after `moment`.

        `InvalidSchedule` if there is none within 60 years (a real-time schedule whose
        every wall-clock time falls in a daylight-saving gap)."""
        first = _utc(moment, "moment", up=False) + _SECOND
        for t in self._slots(first, None):
            return self._aware(t)
        zone = self._timezone.key
        raise InvalidSchedule(self._cron, f"never fires in {zone} within 60 years of {moment}")

    def latest_at_or_before(self, moment: datetime) -> datetime | None:
        """The last slot `t <= moment` (None if none within 60 years), for missed-slot catch-up.

        Steps back over croniter's wall-clock matches until one can be an instant at or
        before `moment`, then lists the slots from there to `moment`."""
        last = _utc(moment, "moment", up=False)
        top, stop = self._wall_ceiling(last), _shift(self._wall(last), -_HORIZON)
        while True:
            for wall in self._walls_down(top, stop):
                low = min(self._instants(wall) or self._readings(wall))
                if low <= last:
                    break
            else:
                return None
            slots = list(self._slots(low, last))
            if slots:
                return self._aware(slots[-1])
            last, top = low - _SECOND, self._wall_floor(low) - _SECOND  # a gap: look earlier

    # -- how: naive UTC instants and naive wall-clock times -----------------------------

    def _slots(self, first: datetime, last: datetime | None) -> Iterator[datetime]:
        """Slots `first <= t <= last` (naive UTC, ascending); `last=None`: 60 years on."""
        top = self._wall_ceiling(last) if last is not None else _shift(self._wall(first), _HORIZON)
        walls = self._walls_up(self._wall_floor(first), top)
        instants = self._fixed_time_instants(walls) if self._fixed_time else self._real_time(walls)
        previous = None
        for t in instants:
            if last is not None and t > last:
                return
            if t >= first and (previous is None or t > previous):
                yield t
                previous = t

    def _fixed_time_instants(self, walls: Iterator[datetime]) -> Iterator[datetime]:
        """Debian's rule: each wall-clock time's first instant, or the end of its gap."""
        for wall in walls:
            instants = self._instants(wall)
            yield instants[0] if instants else self._gap_end(wall)

    def _real_time(self, walls: Iterator[datetime]) -> Iterator[datetime]:
        """Every instant whose wall-clock time is one of `walls`, in order: the times of a
        fold are gathered, to give their first occurrences, then their second ones."""
        wall = next(walls, None)
        while wall is not None:
            instants = self._instants(wall)
            if len(instants) < 2:
                yield from instants
                wall = next(walls, None)
                continue
            fold_end = wall + (instants[1] - instants[0])
            fold: list[tuple[datetime, ...]] = []
            while len(instants) == 2 and wall < fold_end:
                fold.append(instants)
                wall = next(walls, None)
                if wall is None:
                    break
                instants = self._instants(wall)
            yield from (first for first, _ in fold)
            yield from (second for _, second in fold)

    def _instants(self, wall: datetime) -> tuple[datetime, ...]:
        """The instants (naive UTC) showing `wall`: one, two in a fold, none in a gap."""
        first, second = self._readings(wall)
        if first == second:
            return (first,)
        return (first, second) if first < second else ()

    def _readings(self, wall: datetime) -> tuple[datetime, datetime]:
        """`wall` read with fold=0 and with fold=1 (PEP 495), as naive UTC. In a fold these
        are its two instants; in a gap, fold=0 reads it with the offset before the gap and
        gives an instant after the gap, fold=1 one before it."""
        zone = self._timezone
        return (
            wall - _offset(wall.replace(tzinfo=zone, fold=0)),
            wall - _offset(wall.replace(tzinfo=zone, fold=1)),
        )

    def _gap_end(self, wall: datetime) -> datetime:
        """The first instant after the gap `wall` is in: the first showing a later time."""
        high, low = self._readings(wall)  # shows a later time; shows an earlier one
        while high - low > _SECOND:
            middle = low + (high - low) // _SECOND // 2 * _SECOND
            low, high = (low, middle) if self._wall(middle) > wall else (middle, high)
        return high

    def _wall(self, instant: datetime) -> datetime:
        """The naive wall-clock time at `instant` (naive UTC)."""
        return instant.replace(tzinfo=UTC).astimezone(self._timezone).replace(tzinfo=None, fold=0)

    def _wall_floor(self, first: datetime) -> datetime:
        """No instant from `first` on shows an earlier wall-clock time (its fold included),
        and no gap that ends at or after `first` starts earlier."""
        wall = self._wall(first)
        return min(wall - self._fold_length(wall), self._wall(first - _SECOND) + _SECOND)

    def _wall_ceiling(self, last: datetime) -> datetime:
        """No instant up to `last` shows a later wall-clock time (its fold included)."""
        wall = self._wall(last)
        return wall + self._fold_length(wall)

    def _fold_length(self, wall: datetime) -> timedelta:
        """How long the fold `wall` is in lasts (0 outside folds)."""
        first, second = self._readings(wall)
        return max(second - first, timedelta(0))

    def _walls_up(self, first: datetime, last: datetime) -> Iterator[datetime]:
        """croniter's wall-clock matches `first <= w <= last`, ascending."""
        matches = _cron().croniter(self._fields, first - _SECOND, second_at_beginning=True)
        while True:
            try:
                wall = matches.get_next(datetime)
            except _cron().CroniterBadDateError:
                return
            if wall > last:
                return
            yield wall

    def _walls_down(self, last: datetime, stop: datetime) -> Iterator[datetime]:
        """croniter's wall-clock matches `stop <= w <= last`, descending."""
        matches = _cron().croniter(self._fields, last + _SECOND, second_at_beginning=True)
        while True:
            try:
                wall = matches.get_prev(datetime)
            except _cron().CroniterBadDateError:
                return
            if wall < stop:
                return
            yield wall

    def _aware(self, instant: datetime) -> datetime:
        return instant.replace(tzinfo=UTC).astimezone(self._timezone)


def shown_time(moment: datetime, timezone: tzinfo | None = None) -> str:
    """`2026-11-01 01:30:00 EDT`: a slot as listings show it, in `timezone` if given."""
    shown = moment.astimezone(timezone) if timezone is not None else moment
    return shown.strftime("%Y-%m-%d %H:%M:%S %Z")


def earliest(moments: Iterable[datetime]) -> datetime | None:
    """The earliest of aware `moments` by the instant, not the wall clock (two datetimes of
    one zone compare by wall clock, which a repeated hour makes wrong)."""
    return min(moments, key=lambda moment: moment.astimezone(UTC), default=None)


def _check_cron(cron: object) -> list[str]:
    """The fields of a usable cron (an alias's five); else `InvalidSchedule` saying what is
    wrong."""
    if not isinstance(cron, str):
        raise InvalidSchedule(cron, f"must be a string, not {type(cron).__name__}")
    fields = _expanded(cron).split()
    if len(fields) not in (5, 6):
        raise InvalidSchedule(
            cron, f"expected 5 fields, or 6 with seconds first (got {len(fields)})"
        )
    try:
        _cron().croniter(" ".join(fields), datetime(2000, 1, 1), second_at_beginning=True
                         ).get_next(datetime)
    except _cron().CroniterBadDateError:
        raise InvalidSchedule(cron, "never fires (no date matches its day fields)") from None
    except _refusals() as exc:
        raise InvalidSchedule(cron, _what_is_wrong(fields, exc)) from None
    return fields


def _expanded(cron: str) -> str:
    """The five fields an alias stands for; any other cron as it is."""
    if not cron.strip().startswith("@"):
        return cron
    try:
        return ALIASES[cron.strip()]
    except KeyError:
        known = ", ".join(ALIASES)
        raise InvalidSchedule(cron, f"unknown alias (known: {known})") from None


def _what_is_wrong(fields: list[str], exc: Exception) -> str:
    """'bad minute field '61'' when one field is refused alone, else croniter's words."""
    names = ("second", *_FIELDS) if len(fields) == 6 else _FIELDS
    for index, (name, value) in enumerate(zip(names, fields, strict=True)):
        alone = ["*"] * len(fields)
        alone[index] = value
        try:
            _cron().croniter(" ".join(alone), datetime(2000, 1, 1), second_at_beginning=True)
        except _refusals():
            return f"bad {name} field {value!r}"
    return " ".join(re.sub(r"^\[.*?\]\s*", "", str(exc)).split()) or type(exc).__name__


def _zone(cron: str, timezone: object) -> ZoneInfo:
    if isinstance(timezone, ZoneInfo) and timezone.key:
        return timezone
    if not isinstance(timezone, str):
        raise InvalidTimezone(cron, timezone, f"the timezone of schedule {cron!r} must be a "
                              f"zone name, not {timezone!r}")
    try:
        return ZoneInfo(timezone)
    except (KeyError, ValueError, OSError):
        close = suggest(timezone, available_timezones())
        raise InvalidTimezone(
            cron, timezone, f"unknown timezone {timezone!r} for schedule {cron!r}{close}"
        ) from None


def _utc(moment: datetime, name: str, *, up: bool) -> datetime:
    """`moment` as naive UTC on a whole second, rounded up or down."""
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, not {moment!r}")
    utc = moment.astimezone(UTC).replace(tzinfo=None)
    whole = utc.replace(microsecond=0)
    return whole + _SECOND if up and whole != utc else whole


def _offset(aware: datetime) -> timedelta:
    offset = aware.utcoffset()
    assert offset is not None  # a ZoneInfo always has one
    return offset


def _shift(wall: datetime, by: timedelta) -> datetime:
    try:
        return wall + by
    except OverflowError:
        return datetime.max if by > timedelta(0) else datetime.min


def _frozen(value: Any) -> Any:
    """A hashable stand-in for a JSON-ish value; equal values give equal stand-ins."""
    if isinstance(value, Mapping):
        return frozenset((key, _frozen(item)) for key, item in value.items())
    if isinstance(value, list | tuple):
        return tuple(_frozen(item) for item in value)
    try:
        hash(value)
    except TypeError:
        return type(value).__name__
    return value


def _rebuild(
    cron: str, timezone: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Schedule:
    return Schedule(cron, timezone, args=args, kwargs=kwargs)
