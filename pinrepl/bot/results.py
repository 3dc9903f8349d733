"""Writing how runs ended: in batches, and through database outages.

A finished run's result waits here; one writer takes everything that is waiting and writes
it in one statement, so results that arrive while a write is under way go together in the
next one (group commit, without a timer). A failed write keeps its results and is tried
again after the outage's backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .outage import DATABASE_ERRORS, Outage
from .store import Result, Store

log = logging.getLogger("pinrepl.bot")


class Results:
    """The results not yet written; `serve()` writes them as they come."""

    def __init__(self, store: Store, outage: Outage) -> None:
        self._store = store
        self._outage = outage
        self._waiting: list[Result] = []
        self._arrived = asyncio.Event()

    def add(self, result: Result) -> None:
        self._waiting.append(result)
        self._arrived.set()

    async def serve(self) -> None:
        """Write results as they arrive, until cancelled."""
        while True:
            await self._arrived.wait()
            self._arrived.clear()
            await self._write_all()

    async def flush(self, within: float) -> None:
        """Write what is waiting, trying for at most `within` seconds (at shutdown)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._write_all()
        if self._waiting:
            log.error("could not record how %d runs ended: they stay 'running' until a bot "
                      "marks them abandoned", len(self._waiting))

    async def _write_all(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await self._store.finish(batch)
            except DATABASE_ERRORS as exc:
                self._waiting[:0] = batch
                await asyncio.sleep(self._outage.failed(exc, "recording results"))
                continue
            except BaseException:  # cancelled mid-write: writing them again is harmless
                self._waiting[:0] = batch
                raise
            self._outage.answered()
