"""Every statement on pinrepl's tables, in one object, as procrastinate's job manager holds
its own: deferring, the scheduler's slots, claiming, expanding a fan-out, finishing (with
the retries), abandoning the runs of dead bots, retention, the bots' heartbeats, and the
reads the bot and `DeferredRun` need. The listings read through the facade (`history`).

Each write is one short transaction (`Engine.begin`: on SQLite `BEGIN IMMEDIATE`, in a
sandbox a savepoint of its connection). Claims on PostgreSQL lock the rows they take with
`FOR UPDATE SKIP LOCKED`, so bots claiming at once never wait for one another; SQLite's
one writer at a time does the same. A run's row changes hands only through a statement
that checks its status, so a result that arrives after a peer marked its run `abandoned`
is recorded as late, never over what the peer wrote.

Times come from the caller (the bot's clock, in UTC): bots on several machines need clocks
kept in step (NTP), as their schedules do anyway.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Integer,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ..db import Engine
from ..db.models import utcnow
from .record import Origin, Run, args_hash, decode_args, encode_args
from .status import LIVE, Status
from .tables import BOTS, RUNS

#: The PostgreSQL channel a deferring transaction notifies; the bots listen on it.
CHANNEL = "pinrepl_runs"

_LIVE = [str(status) for status in LIVE]
_OK = [str(Status.SUCCEEDED), str(Status.SKIPPED)]
#: The origins of the runs the bots execute (the others run in the calling process).
_BOTS_RUN = [Origin.SCHEDULE, Origin.DEFER]


@dataclass(frozen=True)
class RunRow:
    """A row of `background_job_runs`, whole."""

    id: int
    job: str
    tenant_id: int | None
    args: str
    args_hash: str
    scheduled_for: datetime
    status: str
    bot: str | None
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    origin: str
    attempt: int
    parent_id: int | None
    priority: int
    key: str | None
    created_at: datetime
    timeout: float | None
    not_before: datetime
    traceback: str | None
    retry_of: int | None = None

    @classmethod
    def of(cls, row: Row[Any]) -> RunRow:
        mapping = row._mapping
        return cls(**{name: mapping[name] for name in _FIELDS})

    @property
    def arguments(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return decode_args(self.args)

    @property
    def is_fan_out(self) -> bool:
        """A row without a tenant that stands for its tenants' runs (its job is
        multi-tenant; the caller knows that): not a tenant's run itself."""
        return self.tenant_id is None and self.parent_id is None

    def as_run(self, started_at: datetime | None = None) -> Run:
        """Its record for `current_run` (started at `started_at`, else its own)."""
        return Run(self.id, self.job, self.origin, self.attempt, self.scheduled_for,
                   self.tenant_id, self.timeout, started_at or self.started_at,
                   self.parent_id)


_FIELDS = tuple(f.name for f in fields(RunRow))


@dataclass(frozen=True)
class NewRun:
    """A run to insert: `queued` (due at `not_before`, default `scheduled_for`, default
    now), or `running` in the calling process (`bot` None)."""

    job: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    origin: str = Origin.DEFER
    tenant_id: int | None = None
    scheduled_for: datetime | None = None
    not_before: datetime | None = None
    priority: int = 0
    key: str | None = None
    timeout: float | None = None
    parent_id: int | None = None
    status: str = Status.QUEUED
    #: Why a run inserted as ended (`skipped`) did not run.
    error: str | None = None

    def values(self, now: datetime) -> dict[str, Any]:
        text = encode_args(self.args, self.kwargs)
        slot = self.scheduled_for or now
        running = self.status == Status.RUNNING
        return {
            "job": self.job, "tenant_id": self.tenant_id, "args": text,
            "args_hash": args_hash(text), "scheduled_for": slot, "status": str(self.status),
            "bot": None, "started_at": now if running else None,
            "finished_at": None if self.status in LIVE else now,
            "error": self.error, "origin": self.origin, "attempt": 1, "parent_id": self.parent_id,
            "priority": self.priority, "key": self.key, "created_at": now,
            "timeout": self.timeout, "not_before": self.not_before or slot, "traceback": None,
            "retry_of": None,
        }


@dataclass(frozen=True)
class Result:
    """How a run ended, for `finish`: its status, when it really started (None: it never
    did), its error and traceback, and when its next try is due (None: no retry; `no_retry`
    says why not, appended to the error)."""

    id: int
    status: str
    finished_at: datetime
    error: str | None = None
    traceback: str | None = None
    started_at: datetime | None = None
    retry_at: datetime | None = None
    parent_id: int | None = None
    #: The bot that ran it (None: the calling process): only its result is on time.
    bot: str | None = None


@dataclass(frozen=True)
class Finished:
    """What `finish` did: the runs recorded late (a peer had marked them `abandoned`
    first: the late result is added to their error) and the fan-outs that ended with it
    (id, status)."""

    late: list[int]
    fan_outs: list[tuple[int, str]]


#: Decides a try after a run that ended with `status` (`abandoned`): when it is due, or
#: None for none.
RetryPlan = Callable[[RunRow, str, datetime], datetime | None]


class Repository:
    """The statements on pinrepl's tables of `engine`'s database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = sqlite.insert if engine.is_sqlite else postgresql.insert
        self._postgres = not engine.is_sqlite
        self._returning = list(RUNS.c)
        self._autocommit = engine.engine.execution_options(
            isolation_level="AUTOCOMMIT") if self._postgres else None
        quiet = self._insert(RUNS).on_conflict_do_nothing()
        self._defer_quietly = quiet.returning(RUNS.c.id)
        # On PostgreSQL the insert notifies the bots, delivered once its transaction
        # commits (a rolled-back defer wakes nobody); no statement of its own.
        self._defer_notifying = quiet.returning(
            RUNS.c.id, func.pg_notify(CHANNEL, RUNS.c.job).label("notified")
        ) if self._postgres else self._defer_quietly

    def _one_statement(self) -> Any:
        """A connection for one statement that writes: on PostgreSQL in autocommit (the
        statement is its own transaction, without the round trips of BEGIN and COMMIT),
        else as `Engine.begin` (SQLite's write lock taken at once, a sandbox's savepoint)."""
        if self._autocommit is not None and not self.engine.sandboxed:
            return self._autocommit.connect()
        return self.engine.begin()

    # -- deferring --------------------------------------------------------------------------

    async def defer(self, new: NewRun, tenants: Sequence[int] | None = None, *,
                    now: datetime | None = None, session: AsyncSession | None = None,
                    notify: bool = True) -> tuple[RunRow, bool]:
        """Queue `new` (with `tenants`: a fan-out over those, expanded now) and wake the
        bots; in `session` when given (it commits, or not, with the caller's transaction),
        else in a transaction of its own. Returns the run and whether it is new: with a
        `key` already queued or running, that run, not a new one."""
        now = now or utcnow()
        if session is not None:
            return await self._defer(session, new, tenants, now, notify)
        async with self.engine.begin() as conn:
            return await self._defer(conn, new, tenants, now, notify)

    async def _defer(self, conn: AsyncConnection | AsyncSession, new: NewRun,
                     tenants: Sequence[int] | None, now: datetime, notify: bool
                     ) -> tuple[RunRow, bool]:
        values = new.values(now)
        if tenants is not None:  # chosen tenants: expanded at once
            values.update(status=str(Status.RUNNING), started_at=now)
            if not tenants:
                values.update(status=str(Status.SUCCEEDED), finished_at=now,
                              error="no tenants chosen")
        statement = self._defer_notifying if notify else self._defer_quietly
        for _ in range(3):  # a keyed run that ends between the two statements: try again
            inserted = (await conn.execute(statement, values)).first()
            if inserted is not None:
                # The row is what was inserted: only its id comes back (fewer columns to
                # send and decode, one statement however many times it is deferred).
                row = _inserted(inserted.id, values)
                if tenants is not None:
                    await self._insert_children(conn, row, tenants, now)
                return row, True
            found = (await conn.execute(select(RUNS).where(
                RUNS.c.key == new.key, RUNS.c.status.in_(_LIVE)))).first()
            if found is not None:
                return RunRow.of(found), False
        raise RuntimeError(f"could not defer {new.job!r} with key {new.key!r}")

    # -- the scheduler ---------------------------------------------------------------------

    async def enqueue_slots(self, slots: Sequence[NewRun], now: datetime) -> list[RunRow]:
        """Insert these slots, each once whichever bot gets there first: the rows that were
        new (a slot another bot wrote first is not among them)."""
        if not slots:
            return []
        statement = self._insert(RUNS).on_conflict_do_nothing().returning(*self._returning)
        async with self.engine.begin() as conn:
            rows = await conn.execute(statement, [slot.values(now) for slot in slots])
            return [RunRow.of(row) for row in rows]

    async def last_slots(self) -> dict[str, datetime]:
        """The latest slot of each job that has scheduled runs."""
        statement = select(RUNS.c.job, func.max(RUNS.c.scheduled_for)).where(
            RUNS.c.origin == Origin.SCHEDULE).group_by(RUNS.c.job)
        async with self.engine.engine.connect() as conn:
            return {job: slot for job, slot in (await conn.execute(statement)).all()}

    # -- claiming ----------------------------------------------------------------------------

    async def claim(self, bot: str, jobs: Sequence[str], room: int, now: datetime, *,
                    parent: int | None = None, not_parents: Iterable[int] = ()
                    ) -> list[RunRow]:
        """Take up to `room` queued runs of `jobs` due at `now`, lowest priority first, then
        oldest due: they are `running` on `bot`. With `parent`, only that fan-out's tenant
        runs; `not_parents`: none of those fan-outs'."""
        if room <= 0 or not jobs:
            return []
        excluded = list(not_parents)
        params: dict[str, Any] = {"claimer": bot, "room": room, "claimed_at": now,
                                  "due_by": now, "jobs": list(jobs)}
        if parent is not None:
            params["parent"] = parent
        if excluded:
            params["excluded"] = excluded
        async with self._one_statement() as conn:
            rows = [RunRow.of(row) for row in await conn.execute(
                _claim_statement(parent is not None, bool(excluded)), params)]
        return sorted(rows, key=lambda r: (r.priority, r.not_before, r.id))

    async def release(self, bot: str, ids: Sequence[int]) -> None:
        """Put back runs `bot` claimed but has no room for (a fan-out's tenant runs past its
        `tenant_concurrency`): queued again, for any bot."""
        if not ids:
            return
        async with self.engine.begin() as conn:
            await conn.execute(
                update(RUNS)
                .where(RUNS.c.id.in_(list(ids)), RUNS.c.bot == bot,
                       RUNS.c.status == Status.RUNNING)
                .values(status=str(Status.QUEUED), bot=None, started_at=None))

    async def fan_outs_under_way(self, jobs: Sequence[str], now: datetime) -> bool:
        """Whether a fan-out of `jobs` due by `now` has not ended yet (being expanded, or
        with tenant runs queued or running)."""
        if not jobs:
            return False
        statement = select(exists().where(
            RUNS.c.job.in_(list(jobs)), RUNS.c.parent_id.is_(None),
            RUNS.c.tenant_id.is_(None), RUNS.c.status.in_(_LIVE),
            RUNS.c.not_before <= now,
            exists().where(RUNS.alias("tenant").c.parent_id == RUNS.c.id)
            | RUNS.c.bot.is_not(None),
        ))
        async with self.engine.engine.connect() as conn:
            return bool((await conn.execute(statement)).scalar())

    async def release_lost(self, bot: str, keep: Iterable[int]) -> int:
        """Put back `bot`'s running runs but `keep` (the ones it runs): queued again, for any
        bot; how many."""
        kept = list(keep)
        where = [RUNS.c.bot == bot, RUNS.c.status == Status.RUNNING]
        if kept:
            where.append(RUNS.c.id.not_in(kept))
        async with self.engine.begin() as conn:
            done = await conn.execute(update(RUNS).where(*where).values(
                status=str(Status.QUEUED), bot=None, started_at=None))
        return int(done.rowcount)

    async def next_due(self, jobs: Sequence[str]) -> datetime | None:
        """When the earliest queued run of `jobs` is due (None: none is queued)."""
        if not jobs:
            return None
        statement = select(func.min(RUNS.c.not_before)).where(
            _IS_QUEUED, RUNS.c.job.in_(list(jobs)))
        async with self.engine.engine.connect() as conn:
            due: datetime | None = (await conn.execute(statement)).scalar()
        return _utc(due)

    async def busy_elsewhere(self, run: RunRow, bot: str, alive_since: datetime
                             ) -> set[int | None]:
        """The tenants (None: no tenant) whose run of an earlier slot of `run`'s (job,
        arguments) is running on another bot that beat since `alive_since` (the overlap
        rule; a bot knows its own runs better than their rows, whose results may wait)."""
        alive = select(BOTS.c.id).where(BOTS.c.beat_at >= alive_since, BOTS.c.id != bot)
        statement = select(RUNS.c.tenant_id).distinct().where(
            RUNS.c.job == run.job, RUNS.c.args_hash == run.args_hash,
            RUNS.c.status == Status.RUNNING, RUNS.c.scheduled_for < run.scheduled_for,
            RUNS.c.bot.in_(alive),
        )
        async with self.engine.engine.connect() as conn:
            return set((await conn.scalars(statement)).all())

    # -- fan-outs ----------------------------------------------------------------------------

    async def expand(self, fan_out: RunRow, bot: str, tenants: Sequence[int], now: datetime,
                     skipped: Iterable[int] = ()) -> int | None:
        """Turn a fan-out `bot` claimed into one queued run per tenant (those of `skipped`
        recorded `skipped`: an earlier slot of theirs still runs), in one transaction: it
        stays `running`, held by no bot, until its tenants have ended (`finish`). Without
        tenants it has succeeded. How many tenant runs were queued; None when the fan-out
        is no longer `bot`'s (taken for dead, and queued again for another bot)."""
        mine = (RUNS.c.id == fan_out.id, RUNS.c.status == Status.RUNNING, RUNS.c.bot == bot)
        async with self.engine.begin() as conn:
            values: dict[str, Any] = {"bot": None} if tenants else {
                "status": str(Status.SUCCEEDED), "finished_at": now,
                "error": "no tenants selected"}
            if not (await conn.execute(update(RUNS).where(*mine).values(**values))).rowcount:
                return None
            await self._insert_children(conn, fan_out, tenants, now)
            busy = [t for t in dict.fromkeys(skipped) if t in set(tenants)]
            if busy:
                await conn.execute(
                    update(RUNS).where(RUNS.c.parent_id == fan_out.id,
                                       RUNS.c.tenant_id.in_(busy))
                    .values(status=str(Status.SKIPPED), finished_at=now,
                            error="skipped: the run of an earlier slot is still running"))
                await self._end_fan_outs(conn, [fan_out.id], now)  # all of them, maybe
        return len(tenants) - len(busy) if tenants else 0

    async def _insert_children(self, conn: AsyncConnection | AsyncSession, fan_out: RunRow,
                               tenants: Sequence[int], now: datetime) -> None:
        children = [{
            "job": fan_out.job, "tenant_id": tenant, "args": fan_out.args,
            "args_hash": fan_out.args_hash, "scheduled_for": fan_out.scheduled_for,
            "status": str(Status.QUEUED), "bot": None, "started_at": None,
            "finished_at": None, "error": None, "origin": fan_out.origin, "attempt": 1,
            "parent_id": fan_out.id, "priority": fan_out.priority, "key": None,
            "created_at": now, "timeout": fan_out.timeout,
            "not_before": max(now, fan_out.not_before), "traceback": None,
            "retry_of": None,
        } for tenant in dict.fromkeys(tenants)]
        if children:
            await conn.execute(insert(RUNS), children)

    # -- results -----------------------------------------------------------------------------

    async def finish(self, results: Sequence[Result], now: datetime) -> Finished:
        """Record how runs ended, queue their retries and end the fan-outs whose tenants
        have all ended, in one transaction (a retry is never lost, and never queued twice).
        A run no longer `running` on the result's bot (a peer marked it abandoned, or
        another bot has it since) keeps what the others wrote; the late result is added to
        its error."""
        if not results:
            return Finished([], [])
        ids = [r.id for r in results]
        async with self.engine.begin() as conn:
            current = _HELD_LOCKED if self._postgres else _HELD
            held = {run_id: (status, bot) for run_id, status, bot in await conn.execute(
                current, {"ids": ids})}
            on_time = [r for r in results if held.get(r.id) == (Status.RUNNING, r.bot)]
            late = [r for r in results if r.id in held and r not in on_time]
            if on_time:
                await conn.execute(_FINISH, [_finish_params(r) for r in on_time])
            if late:
                await conn.execute(_LATE, [{
                    "run_id": r.id,
                    "note": f" (late: its bot reported {r.status} at {r.finished_at:%H:%M:%S})",
                } for r in late])
            retries = [{"run_id": r.id, "due": r.retry_at, "now": now}
                       for r in on_time if r.retry_at is not None]
            if retries:
                await conn.execute(_RETRY, retries)
            parents = {r.parent_id for r in results if r.parent_id is not None}
            ended = await self._end_fan_outs(conn, parents, now)
        return Finished([r.id for r in late], ended)

    async def _end_fan_outs(self, conn: AsyncConnection, parents: Iterable[int],
                            now: datetime) -> list[tuple[int, str]]:
        """End the fan-outs among `parents` whose tenant runs have all ended: `succeeded`
        when the last try of every tenant did, else `failed`."""
        ended: list[tuple[int, str]] = []
        if not parents:
            return ended
        # Locked (PostgreSQL): of two bots ending its last tenants at once, the last sees
        # all. An in-process fan-out is its caller's to end: not counted here, per tenant.
        held = select(RUNS.c.id).where(
            RUNS.c.id.in_(sorted(parents)), RUNS.c.status == Status.RUNNING,
            RUNS.c.origin.in_(_BOTS_RUN)).order_by(RUNS.c.id)
        if self._postgres:
            held = held.with_for_update()
        for parent in (await conn.scalars(held)).all():
            live = await conn.execute(select(exists().where(
                RUNS.c.parent_id == parent, RUNS.c.status.in_(_LIVE))))
            if live.scalar():
                continue
            counts = await self._last_tries(conn, parent)
            failed = sum(n for status, n in counts.items() if status not in _OK)
            total = sum(counts.values())
            status = Status.FAILED if failed else Status.SUCCEEDED
            done = await conn.execute(
                update(RUNS).where(RUNS.c.id == parent, RUNS.c.status == Status.RUNNING)
                .values(status=str(status), finished_at=now,
                        error=f"{failed} of {total} tenants did not succeed" if failed
                        else None))
            if done.rowcount:
                ended.append((parent, str(status)))
        return ended

    async def _last_tries(self, conn: AsyncConnection | AsyncSession, parent: int
                          ) -> dict[str, int]:
        statement = select(RUNS.c.status, func.count()).where(
            RUNS.c.parent_id == parent, _is_last_try()).group_by(RUNS.c.status)
        return {status: count for status, count in (await conn.execute(statement)).all()}

    # -- the bots ----------------------------------------------------------------------------

    async def register(self, bot: str, host: str, pid: int, now: datetime) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(insert(BOTS).values(
                id=bot, host=host, pid=pid, started_at=now, beat_at=now))

    async def beat(self, bot: str, host: str, pid: int, now: datetime) -> bool:
        """Record a heartbeat. False when this bot had been given up for dead (its row
        removed by another bot): it is registered again."""
        async with self.engine.begin() as conn:
            beaten = await conn.execute(
                update(BOTS).where(BOTS.c.id == bot).values(beat_at=now))
            if beaten.rowcount:
                return True
            await conn.execute(insert(BOTS).values(
                id=bot, host=host, pid=pid, started_at=now, beat_at=now))
            return False

    async def unregister(self, bot: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(BOTS).where(BOTS.c.id == bot))

    async def abandon_dead(self, bot: str, lease: timedelta, now: datetime,
                           retry: RetryPlan,
                           requeue: Callable[[RunRow], bool] = lambda run: False
                           ) -> list[RunRow]:
        """Mark `abandoned` the running runs of bots that have not beaten for `lease`
        (and of bots no longer registered, once as old), queue the retries `retry` plans
        for them, end the fan-outs that ends, and forget those bots. A run `requeue` picks
        (a fan-out whose bot died before it queued its tenants: no job code ran for it)
        is queued again instead. The runs abandoned."""
        cutoff = now - lease
        dead = select(BOTS.c.id).where(BOTS.c.beat_at < cutoff, BOTS.c.id != bot)
        gone = RUNS.c.bot.not_in(select(BOTS.c.id)) & (RUNS.c.started_at < cutoff)
        async with self.engine.begin() as conn:
            marked = await conn.execute(
                update(RUNS)
                .where(RUNS.c.status == Status.RUNNING, RUNS.c.bot.is_not(None),
                       RUNS.c.bot != bot, or_(RUNS.c.bot.in_(dead), gone))
                .values(status=str(Status.ABANDONED), finished_at=now,
                        error="abandoned: its bot stopped beating")
                .returning(*self._returning))
            found = [RunRow.of(row) for row in marked]
            again = [run.id for run in found if requeue(run)]
            if again:
                await conn.execute(update(RUNS).where(RUNS.c.id.in_(again)).values(
                    status=str(Status.QUEUED), bot=None, started_at=None, finished_at=None,
                    error=None))
                found = [run for run in found if run.id not in again]
            retries = [{"run_id": run.id, "due": due, "now": now} for run in found
                       if (due := retry(run, Status.ABANDONED, now)) is not None]
            if retries:
                await conn.execute(_RETRY, retries)
            await self._end_fan_outs(conn, {r.parent_id for r in found if r.parent_id}, now)
            await conn.execute(delete(BOTS).where(BOTS.c.id.in_(dead)))
        return found

    async def prune(self, cutoff: datetime) -> int:
        """Retention: delete the ended runs that started (or were made) before `cutoff`;
        how many went."""
        began = func.coalesce(RUNS.c.started_at, RUNS.c.created_at)
        async with self.engine.begin() as conn:
            deleted = await conn.execute(delete(RUNS).where(
                began < cutoff, RUNS.c.status.not_in(_LIVE)))
        return int(deleted.rowcount)

    # -- reading -----------------------------------------------------------------------------

    def _reading(self) -> Any:
        """A connection for reads: in a sandbox, its turn on the sandbox's; else one of the
        pool's, without the write lock (SQLite) that `Engine.begin` takes."""
        return self.engine.begin() if self.engine.sandboxed else self.engine.engine.connect()

    async def get(self, run_id: int) -> RunRow | None:
        async with self._reading() as conn:
            row = (await conn.execute(select(RUNS).where(RUNS.c.id == run_id))).first()
        return RunRow.of(row) if row is not None else None

    async def last_try(self, run: RunRow) -> RunRow:
        """The latest try of `run` (itself, when it was not retried)."""
        first = run.retry_of or run.id
        statement = select(RUNS).where(
            or_(RUNS.c.id == first, RUNS.c.retry_of == first),
        ).order_by(RUNS.c.attempt.desc()).limit(1)
        async with self._reading() as conn:
            row = (await conn.execute(statement)).first()
        return RunRow.of(row) if row is not None else run

    async def tenant_runs(self, parent: int) -> list[RunRow]:
        """The last try of each tenant of fan-out `parent`, in tenant order."""
        statement = select(RUNS).where(RUNS.c.parent_id == parent, _is_last_try()).order_by(
            RUNS.c.tenant_id)
        async with self._reading() as conn:
            return [RunRow.of(row) for row in await conn.execute(statement)]

    async def count_tenant_runs(self, parent: int) -> dict[str, int]:
        """The last tries of fan-out `parent`'s tenants, counted by status."""
        async with self._reading() as conn:
            return await self._last_tries(conn, parent)

    async def count_queued(self) -> dict[str, int]:
        """The queued runs (due or not), counted by job: the bots' metrics."""
        statement = select(RUNS.c.job, func.count()).where(_IS_QUEUED).group_by(RUNS.c.job)
        async with self._reading() as conn:
            return {job: count for job, count in (await conn.execute(statement)).all()}

    async def cancel_queued(self, run_id: int, now: datetime) -> bool:
        """Cancel a run still queued (a fan-out: with its queued tenant runs)."""
        async with self.engine.begin() as conn:
            done = await conn.execute(
                update(RUNS).where(
                    or_(RUNS.c.id == run_id, RUNS.c.parent_id == run_id),
                    RUNS.c.status == Status.QUEUED)
                .values(status=str(Status.CANCELLED), finished_at=now, error="cancelled"))
            await self._end_fan_outs(conn, [run_id], now)  # its tenants may all have ended
            return bool(done.rowcount)


def _inserted(run_id: int, values: dict[str, Any]) -> RunRow:
    """The row just inserted with `values`, as the database gives it back (instants in
    UTC, the timeout a float)."""
    row: dict[str, Any] = {
        name: value.astimezone(UTC) if isinstance(value, datetime) else value
        for name, value in values.items()}
    if row["timeout"] is not None:
        row["timeout"] = float(row["timeout"])
    return RunRow(id=run_id, **row)


def _utc(moment: Any) -> datetime | None:
    """An aggregate's instant as an aware UTC datetime (SQLite's `min()` gives text, or a
    naive datetime: the column's type is lost)."""
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


#: `status = 'queued'` written out, not bound: the queued-only index (`status = 'queued'`)
#: serves only a statement that says so, and PostgreSQL plans a prepared statement run
#: often for any value of its parameters (a generic plan), where a bound status would
#: scan the whole table.
_IS_QUEUED = RUNS.c.status == literal_column(f"'{Status.QUEUED}'")


@functools.cache
def _claim_statement(of_parent: bool, excluding: bool) -> Any:
    """The claim's statement (built once: a bot claims often), its values bound by name:
    `claimer` (the bot), `room`, `claimed_at`, `due_by`, `jobs`, `parent` (`of_parent`),
    `excluded` (`excluding`)."""
    where = [_IS_QUEUED,
             RUNS.c.not_before <= bindparam("due_by", type_=RUNS.c.not_before.type),
             RUNS.c.job.in_(bindparam("jobs", expanding=True))]
    if of_parent:
        where.append(RUNS.c.parent_id == bindparam("parent"))
    if excluding:
        where.append(or_(RUNS.c.parent_id.is_(None),
                         RUNS.c.parent_id.not_in(bindparam("excluded", expanding=True))))
    candidates = (
        select(RUNS.c.id).where(*where)
        .order_by(RUNS.c.priority, RUNS.c.not_before, RUNS.c.id)
        .limit(bindparam("room", type_=Integer))
        .with_for_update(skip_locked=True)
    )
    return (
        update(RUNS).where(RUNS.c.id.in_(candidates.scalar_subquery()))
        .values(status=str(Status.RUNNING), bot=bindparam("claimer"),
                started_at=bindparam("claimed_at", type_=RUNS.c.started_at.type))
        .returning(*RUNS.c)
    )


def _is_last_try() -> Any:
    """A tenant run with no later try of the same tenant in its fan-out."""
    later = RUNS.alias("later")
    return ~exists().where(later.c.parent_id == RUNS.c.parent_id,
                           later.c.tenant_id == RUNS.c.tenant_id,
                           later.c.attempt > RUNS.c.attempt)


def _finish_params(result: Result) -> dict[str, Any]:
    return {"run_id": result.id, "new_status": str(result.status), "began": result.started_at,
            "ended": result.finished_at, "why": result.error, "trace": result.traceback}


_FINISH = update(RUNS).where(RUNS.c.id == bindparam("run_id")).values(
    status=bindparam("new_status"),
    started_at=func.coalesce(bindparam("began", type_=RUNS.c.started_at.type),
                             RUNS.c.started_at),
    finished_at=bindparam("ended", type_=RUNS.c.finished_at.type),
    error=bindparam("why"),
    traceback=bindparam("trace"),
)

#: Who holds runs `ids` now (locked, on PostgreSQL, until the results are written).
_HELD = select(RUNS.c.id, RUNS.c.status, RUNS.c.bot).where(
    RUNS.c.id.in_(bindparam("ids", expanding=True)))
_HELD_LOCKED = _HELD.with_for_update()

_LATE = update(RUNS).where(RUNS.c.id == bindparam("run_id")).values(
    error=func.coalesce(RUNS.c.error, "") + bindparam("note"))

#: The next try of a run: a copy of its row, queued, due at `due`.
_RETRY = insert(RUNS).from_select(
    ["job", "tenant_id", "args", "args_hash", "scheduled_for", "status", "origin", "attempt",
     "parent_id", "priority", "key", "created_at", "timeout", "not_before", "retry_of"],
    select(
        RUNS.c.job, RUNS.c.tenant_id, RUNS.c.args, RUNS.c.args_hash, RUNS.c.scheduled_for,
        literal(str(Status.QUEUED)), RUNS.c.origin, RUNS.c.attempt + 1, RUNS.c.parent_id,
        RUNS.c.priority, RUNS.c.key, bindparam("now", type_=RUNS.c.created_at.type),
        RUNS.c.timeout, bindparam("due", type_=RUNS.c.not_before.type),
        func.coalesce(RUNS.c.retry_of, RUNS.c.id),
    ).where(RUNS.c.id == bindparam("run_id")),
)

