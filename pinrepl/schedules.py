"""Cron schedules: validation at load time and next run times, both by croniter.

Five fields (minute hour day month weekday), or six with seconds first, as in node-cron
and Quartz. Times are timezone-aware, in the app's timezone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo

from croniter import croniter
from croniter.croniter import CroniterError

from .errors import JobLoadError


@dataclass(frozen=True)
class Schedule:
    expression: str

    @classmethod
    def parse(cls, expression: object, where: str = "<schedule>") -> Schedule:
        """A valid schedule, or `JobLoadError` naming `where` and the expression."""
        if not isinstance(expression, str):
            raise JobLoadError(where, f"schedule must be a string, not {expression!r}")
        fields = expression.split()
        if len(fields) not in (5, 6):
            raise JobLoadError(
                where,
                f"invalid cron {expression!r}: expected 5 fields, or 6 with seconds first "
                f"(got {len(fields)})",
            )
        try:
            croniter(expression, second_at_beginning=True)
        except (CroniterError, ValueError, KeyError) as exc:
            raise JobLoadError(where, f"invalid cron {expression!r}: {exc}") from None
        return cls(expression)

    def next_after(self, moment: datetime, timezone: tzinfo) -> datetime:
        """The first time after `moment` this schedule fires, in `timezone`."""
        start = moment.astimezone(timezone)
        return croniter(self.expression, start, second_at_beginning=True).get_next(datetime)
