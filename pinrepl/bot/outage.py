"""The database going away (a restart, the network): what counts as that, and the
backoff between tries.

Every part of the bot that talks to the database (the loop's heartbeat, claims, results)
reports here. The first failure is logged as one warning and the recovery as one line;
in between the tries wait 0.25 s, doubling up to at most 5 s.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy.exc import DBAPIError, DisconnectionError

from ..db.engine import first_line
from ..errors import DatabaseUnavailable

#: What a database that is not there (or not answering) raises.
DATABASE_ERRORS = (DBAPIError, DisconnectionError, OSError, TimeoutError, DatabaseUnavailable)

FIRST_DELAY = 0.25
MAX_DELAY = 5.0

log = logging.getLogger("pinrepl.bot")


class Outage:
    """Whether the database answered last time, and how long to wait before the next try."""

    def __init__(self) -> None:
        self._since: float | None = None
        self._tries = 0

    @property
    def down(self) -> bool:
        return self._since is not None

    def failed(self, error: BaseException, doing: str) -> float:
        """Note a failure while `doing` something; the seconds to wait before trying again."""
        if self._since is None:
            self._since = time.monotonic()
            log.warning("database unavailable while %s: %s; retrying (at most every %g s)",
                        doing, first_line(error), MAX_DELAY)
        self._tries += 1
        return min(MAX_DELAY, FIRST_DELAY * 2 ** (self._tries - 1))

    def answered(self) -> None:
        """The database answered: if it was away, say it is back."""
        if self._since is not None:
            log.info("database is back after %.1f s", time.monotonic() - self._since)
        self._since, self._tries = None, 0
