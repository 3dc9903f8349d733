"""What happens in a bot, as events: runs queued, started and ended (with outcome and
duration), the bot up and down, the database away and back. The worker and the process
emit them here, in one place; the bot's log lines are one subscriber (`LogLines`), and
metrics or a dashboard subscribe the same way instead of reaching into the bot.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from ..runs.repository import RunRow

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


@dataclass(frozen=True)
class RunEnded:
    run: RunRow
    what: str
    status: str
    seconds: float
    error: str | None = None
    failure: BaseException | None = None
    #: When its next try is due (None: none).
    retry_at: datetime | None = None


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


Event = SlotsQueued | RunStarted | RunEnded | BotUp | BotDown | DatabaseAway
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
