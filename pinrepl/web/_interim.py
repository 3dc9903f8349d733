"""INTERIM (removed when branch `control` is merged): the App methods of SPEC 9 that the
dashboard calls, as far as they can be had from what exists, so that the pages can be
built and tested before they land."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from ..db.models import utcnow
from ..errors import PinreplError
from ..runs.repository import RunRow
from ..runs.tables import BOTS, RUNS


@dataclass(frozen=True)
class RunFilter:
    ids: tuple[int, ...] = ()
    job: str | None = None
    status: str | None = None
    tenant_id: int | None = None
    origin: str | None = None
    since: datetime | None = None


@dataclass(frozen=True)
class Cancelled:
    queued: int
    running: int


@dataclass(frozen=True)
class BotRow:
    id: str
    host: str
    pid: int
    started_at: datetime
    beat_at: datetime
    running: list[RunRow]


class Interim:
    def __init__(self, app: Any) -> None:
        self.app = app

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)

    async def list_runs(self, filter: RunFilter, *, limit: int = 50,
                        before: int | None = None) -> list[RunRow]:
        where: list[Any] = []
        if filter.ids:
            where.append(RUNS.c.id.in_(filter.ids))
        for name in ("job", "status", "tenant_id", "origin"):
            if getattr(filter, name) is not None:
                where.append(RUNS.c[name] == getattr(filter, name))
        if filter.since is not None:
            where.append(RUNS.c.created_at >= filter.since)
        if before is not None:
            where.append(RUNS.c.id < before)
        statement = select(RUNS).where(*where).order_by(RUNS.c.id.desc()).limit(limit)
        async with self.app.engine.engine.connect() as conn:
            return [RunRow.of(row) for row in await conn.execute(statement)]

    async def get_run(self, run_id: int) -> RunRow | None:
        return await self.app.repository.get(run_id)

    async def bots(self) -> list[BotRow]:
        async with self.app.engine.engine.connect() as conn:
            rows = (await conn.execute(select(BOTS).order_by(BOTS.c.id))).all()
        found = []
        for row in rows:
            running = await self.list_runs(RunFilter(status="running"), limit=1000)
            found.append(BotRow(row.id, row.host, row.pid, row.started_at, row.beat_at,
                                [r for r in running if r.bot == row.id]))
        return found

    async def pauses(self) -> list[Any]:
        return []

    async def pause_job(self, name: str, *, tenants: Iterable[Any] | None = None,
                        reason: str | None = None) -> None:
        self.app.jobs.get(name)
        raise PinreplError("pausing comes with branch control")

    async def resume_job(self, name: str, *, tenants: Iterable[Any] | None = None) -> int:
        self.app.jobs.get(name)
        raise PinreplError("resuming comes with branch control")

    async def retry_runs(self, filter: RunFilter) -> list[int]:
        new = []
        for run_id in filter.ids:
            run = await self.get_run(run_id)
            if run is not None and run.status in ("failed", "timed_out", "abandoned",
                                                  "cancelled"):
                args, kwargs = run.arguments
                deferred = await self.app.defer_job(
                    run.job, args, kwargs,
                    tenants=None if run.tenant_id is None else [run.tenant_id])
                new.append(deferred.id)
        return new

    async def cancel_runs(self, filter: RunFilter) -> Cancelled:
        done = 0
        for run_id in filter.ids:
            done += await self.app.repository.cancel_queued(run_id, utcnow())
        return Cancelled(done, 0)
