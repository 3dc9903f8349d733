"""The database going away (a restart, the network) told from the database refusing what it
was asked, and the backoff between tries.

Every part of the bot that talks to the database (the loop's heartbeat, claims, results)
reports its failures here. An outage is logged as one warning and the recovery as one
line; in between the tries wait 0.25 s, doubling up to at most 5 s. Any other database
error (a missing table or column, a read-only database) would be the same on every try:
it is logged as an error and the bot stops (`refused`; the command exits 2).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError

from ..db.engine import first_line
from ..errors import DatabaseReadOnly, DatabaseUnavailable, MissingTable

#: Whatever a database call can raise: the database went away, or it refused the statement
#: (`is_outage` tells which).
DATABASE_ERRORS = (DBAPIError, DisconnectionError, OSError, TimeoutError, DatabaseUnavailable)

#: PostgreSQL's SQLSTATE classes of a server that is away or not taking work now: connection
#: exception, insufficient resources, operator intervention (shutting down, starting up, a
#: statement cancelled), system error.
_PG_AWAY = ("08", "53", "57", "58")
#: SQLite's primary result codes of a database that cannot be used now: busy, locked, I/O
#: error, disk full, cannot open, locking protocol.
_SQLITE_AWAY = frozenset({5, 6, 10, 13, 14, 15})

FIRST_DELAY = 0.25
MAX_DELAY = 5.0

log = logging.getLogger("pinrepl.bot")


def is_outage(error: BaseException) -> bool:
    """Whether `error` says the database is away or not answering (try again later), rather
    than that it refused what it was asked (trying again would change nothing)."""
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        sqlstate = getattr(error.orig, "sqlstate", None)
        if isinstance(sqlstate, str):
            return sqlstate.startswith(_PG_AWAY)
        code = getattr(error.orig, "sqlite_errorcode", None)
        if isinstance(code, int):
            return (code & 0xFF) in _SQLITE_AWAY
        return isinstance(error, OperationalError | InterfaceError)
    if isinstance(error, MissingTable | DatabaseReadOnly):
        return False
    return isinstance(error, DisconnectionError | OSError | TimeoutError | DatabaseUnavailable)


class Outage:
    """Whether the database answered last time, how long to wait before the next try, and
    the first refusal (`refused`: the error and what the bot was doing), on which
    `on_refused` is called once."""

    def __init__(self, on_refused: Callable[[], object] = lambda: None) -> None:
        self._since: float | None = None
        self._tries = 0
        self._on_refused = on_refused
        self.refused: tuple[BaseException, str] | None = None

    def failed(self, error: BaseException, doing: str) -> float | None:
        """Note a failure while `doing` something: the seconds to wait before trying again,
        or None when the database refused it (logged; the bot stops)."""
        if not is_outage(error):
            log.error("the database refused the bot's statement while %s: %s (%s); stopping",
                      doing, first_line(error), type(error).__name__)
            if self.refused is None:
                self.refused = (error, doing)
                self._on_refused()
            return None
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
