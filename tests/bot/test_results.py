"""The results writer stops between writes, never in the middle of one: a write cut off by
cancellation can leave its connection inside its transaction, and on SQLite the bot's final
flush then waits on that connection's write lock (a `bot --once` seen taking 25 s)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from pinrepl.bot.outage import Outage
from pinrepl.bot.results import Results
from pinrepl.runs.repository import Finished, Result


class SlowStore:
    """A store whose writes take until `release` is set."""

    def __init__(self) -> None:
        self.writing = asyncio.Event()
        self.release = asyncio.Event()
        self.written: list[list[int]] = []
        self.cut_off = False

    async def finish(self, batch: list[Result], now: datetime) -> Finished:
        self.writing.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cut_off = True
            raise
        self.written.append([result.id for result in batch])
        return Finished([], [])


async def probe() -> None:
    pass


def clock() -> datetime:
    return datetime.now(UTC)


def result(run_id: int) -> Result:
    return Result(run_id, "succeeded", datetime.now(UTC))


async def test_stop_lets_the_write_under_way_end_and_leaves_the_rest_to_flush():
    store = SlowStore()
    results = Results(store, Outage(probe), clock)  # type: ignore[arg-type]
    serving = asyncio.create_task(results.serve())
    results.add(result(1))
    await store.writing.wait()
    results.add(result(2))  # arrives while the first write is under way
    results.stop()
    store.release.set()
    async with asyncio.timeout(5):
        await serving
    assert not store.cut_off and store.written == [[1]]
    await results.flush(5)
    assert store.written == [[1], [2]]


async def test_stop_while_idle_returns_at_once():
    results = Results(SlowStore(), Outage(probe), clock)  # type: ignore[arg-type]
    serving = asyncio.create_task(results.serve())
    await asyncio.sleep(0)
    results.stop()
    async with asyncio.timeout(5):
        await serving
