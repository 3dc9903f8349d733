"""Writing how runs ended: in batches, and through database outages.

A finished run's result waits here; one writer takes everything that is waiting and writes
it in one transaction (`Repository.finish`: the statuses, the retries, the fan-outs that
end with them), so results that arrive while a write is under way go together in the next
one (group commit). Writes are also at least `LINGER` seconds apart: a result that comes
alone is written at once (other bots see it finished), while the results of many short
runs (a fan-out of quick tenants) go in few statements; results someone waits for
(`settled`: a `--once` bot before it looks for more, and exits) are written at once. A
write that failed because the database was away keeps its results and is tried again the
moment the database answers; one that the database refused drops them (the bot stops;
another bot marks them abandoned). Each write that went through says which runs it ended
(`RunsRecorded`): a late result (its run marked abandoned by a peer meanwhile) is not among
them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from ..db.engine import DATABASE_ERRORS
from ..runs.repository import Repository, Result
from ..runs.status import Status
from . import counted
from .events import Events, RunsRecorded
from .outage import Outage

LINGER = 0.02

log = logging.getLogger("pinrepl.bot")


class Results:
    """The results not yet written; `serve()` writes them as they come."""

    def __init__(self, repository: Repository, outage: Outage, clock: Callable[[], datetime],
                 bot: str | None = None, events: Events | None = None) -> None:
        self._repository = repository
        self._events = events
        self._outage = outage
        self._clock = clock
        self._bot = bot
        self._waiting: list[Result] = []
        self._arrived = asyncio.Event()
        self._last_write = 0.0
        self._stopping = False
        self._writing: list[Result] = []
        self._settled = asyncio.Event()
        self._settled.set()
        #: Set while `settled()` is waited for: no lingering.
        self._hurry = asyncio.Event()

    def pending(self) -> set[int]:
        """The runs whose results are not written yet (waiting, or being written)."""
        return {result.id for result in (*self._waiting, *self._writing)}

    def add(self, result: Result) -> None:
        """A result of bot `bot`'s (only its results are on time: see `Repository.finish`)."""
        self._waiting.append(replace(result, bot=self._bot))
        self._settled.clear()
        self._arrived.set()

    async def settled(self) -> None:
        """Until every result added so far has been written (or dropped): what is waiting
        is written now, without `LINGER` (someone waits for it)."""
        self._hurry.set()
        try:
            await self._settled.wait()
        finally:
            self._hurry.clear()

    async def _linger(self) -> None:
        """Until `LINGER` seconds after the last write, unless `settled()` is waited for."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, self._last_write + LINGER - time.monotonic())):
                await self._hurry.wait()

    async def serve(self) -> None:
        """Write results as they arrive, until `stop()`."""
        while True:
            await self._arrived.wait()
            if self._stopping:
                return
            await self._linger()
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
        """Write what is waiting, in one transaction; after an outage, wait until the
        database is back."""
        batch, self._waiting = self._waiting, []
        if not batch:
            return
        self._writing = batch
        try:
            await self._finish(batch)
        finally:
            self._writing = []
            if not self._waiting:
                self._settled.set()

    async def _finish(self, batch: list[Result]) -> None:
        try:
            finished = await self._repository.finish(batch, self._clock())
        except DATABASE_ERRORS as exc:
            if not self._outage.failed(exc, "recording results"):
                _lost(len(batch))  # refused: trying again would change nothing
                self._waiting.clear()
                return
            self._waiting[:0] = batch
            self._arrived.set()  # try again
            await self._outage.back()
            return
        except BaseException:  # cancelled mid-write: writing them again is harmless
            self._waiting[:0] = batch
            raise
        self._outage.answered()
        if self._events is not None:
            late = set(finished.late)
            self._events.emit(RunsRecorded(
                frozenset(r.id for r in batch if r.id not in late), frozenset(late)))
        for run_id in finished.late:
            log.warning("run %d ended after a peer had marked it abandoned (this bot had "
                        "not beaten for the lease): its late result is noted in its error, "
                        "the status stays abandoned", run_id,
                        extra={"event": "late_result", "run_id": run_id,
                               "status": str(Status.ABANDONED)})
        for parent, status in finished.fan_outs:
            log.info("fan-out run %d %s", parent, status,
                     extra={"event": "fan_out_ended", "run_id": parent, "status": status})


def _lost(count: int) -> None:
    log.error("could not record how %s ended: left 'running' for a live bot to mark "
              "abandoned", counted(count, "run"))
