"""Every statement on the bot's tables: claims, results, heartbeats, abandoned runs,
retention.

A claim is an `INSERT ... ON CONFLICT DO NOTHING` (SQLAlchemy's PostgreSQL and SQLite
dialects) against the unique index over (job, args, tenant, slot): the rows it returns are
this bot's, and a row another bot inserted first is simply not returned. Each method is one
short transaction that starts with its write, or only reads: on SQLite a transaction that
reads first may not be able to take the write lock later, whatever the busy timeout.

A run's `started_at` is first its claim's time; its result writes the time it really
started (runs claimed together ahead of their start must not share one), so retention and
abandonment go by the claim until the run has ended, which is at most a moment earlier.

Times come from this machine's clock, in UTC: bots on several machines need clocks kept in
step (NTP), as their schedules do anyway.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from ..db import Engine
from ..db.engine import first_line
from ..db.models import BackgroundJobBot, BackgroundJobRun, Model
from ..errors import DatabaseRefused, MissingTable, PinreplError

RUNS = Model.metadata.tables[BackgroundJobRun.__tablename__]
BOTS = Model.metadata.tables[BackgroundJobBot.__tablename__]


def args_key(args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    """The `args` column of a schedule's arguments: canonical JSON, so equal arguments give
    equal text (and one claim)."""
    return json.dumps({"args": list(args), "kwargs": kwargs}, sort_keys=True,
                      separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Claimed:
    """A row this bot inserted: its id, tenant (None: no tenant) and status (`running`, or
    `skipped` when the run of an earlier slot is still running)."""

    id: int
    tenant_id: int | None
    status: str


@dataclass(frozen=True)
class Result:
    """How a run ended, for `finish`, and when it started (None: it never did, and its
    claim's time stays)."""

    id: int
    status: str
    finished_at: datetime
    error: str | None = None
    started_at: datetime | None = None


@dataclass(frozen=True)
class Abandoned:
    """A run marked `abandoned`: its job, tenant, slot and the bot that stopped beating."""

    job: str
    tenant_id: int | None
    scheduled_for: datetime
    bot: str


class Store:
    """The bot `bot`'s statements on `engine`; a bot is dead once it has not beaten for
    `lease`."""

    def __init__(self, engine: Engine, bot: str, lease: float) -> None:
        self._engine = engine.engine
        self._app_engine = engine
        self.bot = bot
        self.lease = timedelta(seconds=lease)
        self._insert = sqlite.insert if engine.is_sqlite else postgresql.insert

    async def require_tables(self) -> None:
        """`MissingTable` (one line) unless the database has the bot's tables."""
        await self._app_engine.check()
        missing = [t.name for t in (RUNS, BOTS) if not await self._app_engine.has_table(t.name)]
        if missing:
            raise MissingTable(missing)

    async def explain(self, error: BaseException, doing: str) -> PinreplError:
        """The one line for a statement of the bot that the database refused while `doing`
        something: a missing table or a read-only database as the engine says them, else
        the database's own first line."""
        if isinstance(error, PinreplError):
            return error
        if isinstance(error, DBAPIError):
            explained = await self._app_engine.explain(error, (RUNS.name, BOTS.name))
            if explained is not None:
                return explained
        return DatabaseRefused(
            f"the database refused the bot's statement while {doing}: {first_line(error)} "
            "(pinrepl init-database names the columns that differ from pinrepl's tables)"
        )

    # -- the bot itself --------------------------------------------------------------------

    async def register(self, host: str, pid: int, now: datetime) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(insert(BOTS).values(
                id=self.bot, host=host, pid=pid, started_at=now, beat_at=now))

    async def beat(self, host: str, pid: int, now: datetime) -> bool:
        """Record a heartbeat. False when this bot had been given up for dead (its row
        removed by another bot): it is registered again."""
        async with self._engine.begin() as conn:
            beaten = await conn.execute(
                update(BOTS).where(BOTS.c.id == self.bot).values(beat_at=now))
            if beaten.rowcount:
                return True
            await conn.execute(insert(BOTS).values(
                id=self.bot, host=host, pid=pid, started_at=now, beat_at=now))
            return False

    async def unregister(self) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(BOTS).where(BOTS.c.id == self.bot))

    async def abandon_dead(self, now: datetime) -> list[Abandoned]:
        """Mark `abandoned` the running runs of bots that have not beaten for the lease
        (and of bots no longer registered, once as old), and forget those bots."""
        cutoff = now - self.lease
        dead = select(BOTS.c.id).where(BOTS.c.beat_at < cutoff, BOTS.c.id != self.bot)
        gone = RUNS.c.bot.not_in(select(BOTS.c.id)) & (RUNS.c.started_at < cutoff)
        async with self._engine.begin() as conn:
            marked = await conn.execute(
                update(RUNS)
                .where(RUNS.c.status == "running", RUNS.c.bot != self.bot,
                       or_(RUNS.c.bot.in_(dead), gone))
                .values(status="abandoned", finished_at=now,
                        error="abandoned: its bot stopped beating")
                .returning(RUNS.c.job, RUNS.c.tenant_id, RUNS.c.scheduled_for, RUNS.c.bot)
            )
            found = [Abandoned(*row) for row in marked]
            await conn.execute(delete(BOTS).where(BOTS.c.id.in_(dead)))
        return found

    # -- runs --------------------------------------------------------------------------------

    async def claim(
        self, job: str, args: str, slot: datetime, tenants: Sequence[int | None],
        now: datetime, busy_here: Iterable[int | None] | None,
    ) -> list[Claimed]:
        """Claim the runs of `job` with `args` at `slot` for `tenants` (None: a run without
        a tenant): the rows this bot inserted. Unless `busy_here` is None (the job's
        `overlap`), a run whose earlier slot is still running, here (`busy_here`: this bot
        knows its own runs better than its rows, whose results may wait for the database)
        or on another bot that is alive, is claimed as `skipped`."""
        busy: set[int | None] = set()
        if busy_here is not None:
            busy = set(busy_here) | await self._running_elsewhere(job, args, slot, now)
        rows = [
            {"job": job, "args": args, "tenant_id": tenant, "scheduled_for": slot,
             "status": "skipped" if tenant in busy else "running", "bot": self.bot,
             "started_at": now, "finished_at": now if tenant in busy else None}
            for tenant in dict.fromkeys(tenants)
        ]
        # Many rows as parameters (not `.values(rows)`): SQLAlchemy batches them into one
        # multi-row INSERT whose compiled form is cached, whatever the number of rows.
        statement = (
            self._insert(RUNS).on_conflict_do_nothing()
            .returning(RUNS.c.id, RUNS.c.tenant_id, RUNS.c.status)
        )
        async with self._engine.begin() as conn:
            return [Claimed(*row) for row in await conn.execute(statement, rows)]

    async def _running_elsewhere(self, job: str, args: str, slot: datetime, now: datetime
                                 ) -> set[int | None]:
        """The tenants (None: no tenant) whose run of an earlier slot is running on another
        bot that is alive."""
        alive = select(BOTS.c.id).where(BOTS.c.beat_at >= now - self.lease)
        statement = select(RUNS.c.tenant_id).distinct().where(
            RUNS.c.job == job, RUNS.c.args == args, RUNS.c.status == "running",
            RUNS.c.scheduled_for < slot, RUNS.c.bot.in_(alive), RUNS.c.bot != self.bot,
        )
        async with self._engine.connect() as conn:
            return set((await conn.scalars(statement)).all())

    async def record_failure(self, job: str, args: str, slot: datetime, now: datetime,
                             error: str) -> bool:
        """Record a slot that failed before any run (its tenants could not be selected), as
        a run without a tenant; False if another bot recorded it first."""
        statement = self._insert(RUNS).values(
            job=job, args=args, tenant_id=None, scheduled_for=slot, status="failed",
            bot=self.bot, started_at=now, finished_at=now, error=error,
        ).on_conflict_do_nothing()
        async with self._engine.begin() as conn:
            return bool((await conn.execute(statement)).rowcount)

    async def finish(self, results: Iterable[Result]) -> None:
        """Record how runs ended, and when they started, in one statement."""
        params = [
            {"run_id": r.id, "new_status": r.status, "began": r.started_at,
             "ended": r.finished_at, "why": r.error}
            for r in results
        ]
        if not params:
            return
        statement = update(RUNS).where(RUNS.c.id == bindparam("run_id")).values(
            status=bindparam("new_status"),
            started_at=func.coalesce(
                bindparam("began", type_=RUNS.c.started_at.type), RUNS.c.started_at),
            finished_at=bindparam("ended", type_=RUNS.c.finished_at.type),
            error=bindparam("why"),
        )
        async with self._engine.begin() as conn:
            await conn.execute(statement, params)

    # -- history -----------------------------------------------------------------------------

    async def last_slots(self) -> dict[str, datetime]:
        """The latest slot of each job that has runs."""
        statement = select(RUNS.c.job, func.max(RUNS.c.scheduled_for)).group_by(RUNS.c.job)
        async with self._engine.connect() as conn:
            return {job: slot for job, slot in (await conn.execute(statement)).all()}

    async def delete_older_than(self, cutoff: datetime) -> int:
        """Retention: delete the runs that started before `cutoff` (by when they ran, not
        by their slot: a late run of an old slot is kept as long as any); how many went."""
        async with self._engine.begin() as conn:
            deleted = await conn.execute(delete(RUNS).where(RUNS.c.started_at < cutoff))
        return int(deleted.rowcount)

