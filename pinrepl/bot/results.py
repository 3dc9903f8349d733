"""Writing how runs ended: in batches, and through database outages.

A finished run's result waits here; one writer takes everything that is waiting and writes
it in one statement, so results that arrive while a write is under way go together in the
next one (group commit). Writes are also at least `LINGER` seconds apart: a result that
comes alone is written at once (other bots see it finished), while the results of many
short runs (a fan-out of quick tenants) go in few statements. A write that failed because
the database was away keeps its results and is tried again after the outage's backoff; one
that the database refused drops them (the bot stops; another bot marks them abandoned).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from . import counted
from .outage import DATABASE_ERRORS, Outage
from .store import Result, Store

LINGER = 0.02

log = logging.getLogger("pinrepl.bot")


class Results:
    """The results not yet written; `serve()` writes them as they come."""

    def __init__(self, store: Store, outage: Outage) -> None:
        self._store = store
        self._outage = outage
        self._waiting: list[Result] = []
        self._arrived = asyncio.Event()
        self._last_write = 0.0
        self._stopping = False

    def add(self, result: Result) -> None:
        self._waiting.append(result)
        self._arrived.set()

    async def serve(self) -> None:
        """Write results as they arrive, until `stop()`."""
        while True:
            await self._arrived.wait()
            if self._stopping:
                return
            await asyncio.sleep(self._last_write + LINGER - time.monotonic())
            self._arrived.clear()
            self._last_write = time.monotonic()
            await self._write()

    def stop(self) -> None:
        """Make `serve()` return once the write under way, if any, has ended (what is still
        waiting is `flush`'s). Cancelling a write instead can leave its connection inside
        its transaction: on SQLite it keeps the write lock, and the final flush waits on it
        until that connection is collected."""
        self._stopping = True
        self._arrived.set()

    async def flush(self, within: float) -> None:
        """Write what is waiting, trying for at most `within` seconds (at shutdown)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while self._waiting:
                    await self._write()
        if self._waiting:
            _lost(len(self._waiting))

    async def _write(self) -> None:
        """Write what is waiting, in one statement; after a failure, wait the backoff."""
        batch, self._waiting = self._waiting, []
        try:
            await self._store.finish(batch)
        except DATABASE_ERRORS as exc:
            delay = self._outage.failed(exc, "recording results")
            if delay is None:  # refused: trying again would change nothing
                _lost(len(batch))
                return
            self._waiting[:0] = batch
            self._arrived.set()  # try again
            await asyncio.sleep(delay)
            return
        except BaseException:  # cancelled mid-write: writing them again is harmless
            self._waiting[:0] = batch
            raise
        self._outage.answered()


def _lost(count: int) -> None:
    log.error("could not record how %s ended: left 'running' for a live bot to mark "
              "abandoned", counted(count, "run"))
