"""What happens in a bot, as events: runs queued, started and ended (with outcome and
duration), results written, runs of dead bots abandoned, the heartbeat, the bot up and
down, the database away and back. The worker, the results writer and the process emit
them here, in one place; the bot's log lines are one subscriber (`LogLines`), and the
metrics (`metrics.Metrics`) and the failure hook (`hooks.FailureHook`) subscribe the same
way instead of reaching into the bot.

`LogLines` gives each line about a run the fields a JSON log shows (`extra=`: `event`,
`job`, `tenant`, `run_id`, `status`, `duration`, ...); the text log shows the message only.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..runs.repository import RunRow
from ..runs.status import Status
from . import JOB_FAILURE, counted

log = logging.getLogger("pinrepl.bot")


@dataclass(frozen=True)
class SlotsQueued:
    """The scheduler queued `count` new slots."""

    count: int


@dataclass(frozen=True)
class RunStarted:
    run: RunRow
    #: How it is shown: job, arguments, tenant, slot.
    what: str
    #: When its job's code started (None: when it was claimed, `run.started_at`).
    started_at: datetime | None = None


@dataclass(frozen=True)
class RunEnded:
    """A run of this bot ended: it ran for `seconds`, or never started (`seconds` None: it
    was skipped, or failed before its code ran)."""

    run: RunRow
    what: str
    status: str
    seconds: float | None
    error: str | None = None
    failure: BaseException | None = None
    #: When its next try is due (None: none).
    retry_at: datetime | None = None
    #: A run that never started, for a reason worth a warning (a slot missed for want of
    #: room, a job that no longer loads).
    warn: bool = False


@dataclass(frozen=True)
class RunsRecorded:
    """The results of runs `ids` are written, and the statuses are theirs; those of `late`
    came after a peer had marked their runs abandoned (the status stays abandoned)."""

    ids: frozenset[int]
    late: frozenset[int] = frozenset()


@dataclass(frozen=True)
class RunsAbandoned:
    """This bot marked `runs` of dead bots (silent for `lease` seconds) abandoned; those
    of `retried` got a next try."""

    runs: tuple[RunRow, ...]
    retried: frozenset[int]
    lease: float


@dataclass(frozen=True)
class Beat:
    """The bot's heartbeat was written at `at` (the bot's clock)."""

    at: datetime


@dataclass(frozen=True)
class BotUp:
    bot: str


@dataclass(frozen=True)
class BotDown:
    bot: str
    outcomes: Counter[str]


@dataclass(frozen=True)
class DatabaseAway:
    away: bool


Event = (SlotsQueued | RunStarted | RunEnded | RunsRecorded | RunsAbandoned | Beat | BotUp
         | BotDown | DatabaseAway)
Subscriber = Callable[[Event], object]


class Events:
    """The bot's events and who hears them."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def emit(self, event: Event) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:
                log.exception("a subscriber of the bot's events failed on %r", event)


class LogLines:
    """The bot's log lines about runs; `shown(moment)` shows a time as the log does."""

    def __init__(self, shown: Callable[[datetime], str]) -> None:
        self._shown = shown

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            log.info("run started: %s", event.what, extra=fields(event.run, "run_started"))
        elif isinstance(event, RunEnded):
            self._ended(event)
        elif isinstance(event, RunsAbandoned):
            self._abandoned(event)

    def _ended(self, event: RunEnded) -> None:
        extra = fields(event.run, "run_ended", status=event.status, duration=event.seconds,
                       error=event.error)
        if event.seconds is None:  # never started
            level = logging.WARNING if event.warn or event.status == Status.FAILED else \
                logging.INFO
            log.log(level, "run %s: %s: %s", event.status, event.what, event.error,
                    exc_info=event.failure, extra={**extra, JOB_FAILURE: True})
            return
        level = logging.INFO if event.status == Status.SUCCEEDED else (
            logging.ERROR if event.status == Status.FAILED else logging.WARNING)
        retry = ""
        if event.retry_at is not None:
            retry = f"; try {event.run.attempt + 1} due {self._shown(event.retry_at)}"
            extra["retry_at"] = event.retry_at.isoformat()
        log.log(level, "run %s: %s in %.3f s%s%s", event.status, event.what, event.seconds,
                f": {event.error}" if event.error else "", retry,
                exc_info=event.failure, extra={**extra, JOB_FAILURE: True})

    def _abandoned(self, event: RunsAbandoned) -> None:
        by_bot = Counter(run.bot for run in event.runs)
        for bot, count in by_bot.items():
            runs = [run for run in event.runs if run.bot == bot]
            jobs = ", ".join(sorted({run.job for run in runs}))
            log.warning("marked %s of bot %s abandoned (no heartbeat for %g s): %s",
                        counted(count, "running run"), bot, event.lease, jobs,
                        extra={"event": "runs_abandoned", "bot": bot,
                               "run_ids": [run.id for run in runs],
                               "status": str(Status.ABANDONED)})


def fields(run: RunRow, event: str, **more: Any) -> dict[str, Any]:
    """The fields of a log line about `run` (`extra=`), those of `more` that are not None
    included."""
    found: dict[str, Any] = {"event": event, "job": run.job, "tenant": run.tenant_id,
                             "run_id": run.id, "attempt": run.attempt, "origin": run.origin}
    found.update({key: value for key, value in more.items() if value is not None})
    return found
