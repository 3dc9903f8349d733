"""The database going away (a restart, the network) and coming back, for every part of the
bot at once.

Every part that talks to the database (the heartbeat, the scheduler, claims, results)
reports its failures here (`failed`), and an outage (`db.engine.is_outage`) is logged as
one warning. While it lasts, one probe asks the database for `SELECT 1`, 0.1 s after the
failure and then at most every `MAX_DELAY` seconds; the moment it answers, every part
waiting in `back()` resumes together (a part never waits out a backoff of its own after
the database has come back). A statement the database refuses (a missing table or
column, a read-only database) would be refused on every try: it is logged as an error and
`on_refused` stops the bot (the command exits 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from ..db.engine import first_line, is_outage

FIRST_DELAY = 0.1
MAX_DELAY = 1.0

log = logging.getLogger("pinrepl.bot")


class Outage:
    """Whether the database is away, a probe while it is, and the first refusal
    (`refused`: the error and what the bot was doing), on which `on_refused` is called
    once. `probe()` is one cheap round trip; `on_change(away)` hears of each change."""

    def __init__(self, probe: Callable[[], Awaitable[object]],
                 on_refused: Callable[[], object] = lambda: None,
                 on_change: Callable[[bool], object] = lambda away: None) -> None:
        self._probe = probe
        self._on_refused = on_refused
        self._on_change = on_change
        self._since: float | None = None
        self._back = asyncio.Event()
        self._back.set()
        self._probing: asyncio.Task[None] | None = None
        self.refused: tuple[BaseException, str] | None = None

    @property
    def away(self) -> bool:
        return self._since is not None

    def failed(self, error: BaseException, doing: str) -> bool:
        """Note a failure while `doing` something: True for an outage (wait in `back()`,
        then try again), False when the database refused it (logged; the bot stops)."""
        if not is_outage(error):
            log.error("the database refused the bot's statement while %s: %s (%s); stopping",
                      doing, first_line(error), type(error).__name__,
                      extra={"event": "database_refused"})
            if self.refused is None:
                self.refused = (error, doing)
                self._on_refused()
            return False
        if self._since is None:
            self._since = time.monotonic()
            self._back.clear()
            log.warning("database unavailable while %s: %s; retrying (at most every %g s)",
                        doing, first_line(error), MAX_DELAY, extra={"event": "database_away"})
            self._on_change(True)
            self._probing = asyncio.create_task(self._probe_until_back())
        return True

    async def back(self) -> None:
        """Return once the database answers again (at once when it is not away)."""
        await self._back.wait()

    def answered(self) -> None:
        """The database answered a statement: if it was away, it is back."""
        if self._since is None:
            return
        away = time.monotonic() - self._since
        log.info("database is back after %.1f s", away,
                 extra={"event": "database_back", "duration": round(away, 3)})
        self._since = None
        self._back.set()
        self._on_change(False)

    async def _probe_until_back(self) -> None:
        delay = FIRST_DELAY
        while self._since is not None:
            await asyncio.sleep(delay)
            delay = min(MAX_DELAY, delay * 2)
            with contextlib.suppress(Exception):
                async with asyncio.timeout(max(MAX_DELAY, 2.0)):
                    await self._probe()
                self.answered()

    async def aclose(self) -> None:
        if self._probing is not None:
            self._probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probing
