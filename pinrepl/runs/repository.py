"""Every statement on pinrepl's tables, in one object, as procrastinate's job manager holds
its own: deferring, the scheduler's slots, claiming, expanding a fan-out, finishing (with
the retries), abandoning the runs of dead bots, retention, the bots' heartbeats, the
reads the bot and `DeferredRun` need, and control (SPEC 9: pauses, retrying and cancelling
runs, the run listing by `RunFilter`, the bots that are up). The jobs overview reads its
last runs through the facade (`history`).

Pauses are honoured by the statements themselves, so every bot sees one as soon as it is
committed: a paused job's slots are inserted `skipped` (`enqueue_slots`; a scheduled
fan-out's paused tenants at `expand`), and the claim leaves the queued runs of a paused
job or tenant where they are. A cancel asked of a running run is a mark
(`cancel_requested_at`) its bot looks for (`cancels_asked`).

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
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    String,
    Text,
    and_,
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
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from ..db import Engine
from ..db.models import utcnow
from .control import LEASE, BotRow, Cancelled, Pause, RunFilter, paused_error
from .record import Origin, Run, args_hash, decode_args, encode_args
from .status import LIVE, UNSUCCESSFUL, Status
from .tables import BOTS, PAUSES, RUNS

#: The PostgreSQL channel a deferring transaction notifies; the bots listen on it.
CHANNEL = "pinrepl_runs"
#: The channel of control (pause, resume, cancel: SPEC 9); the bots listen on it too.
CONTROL = "pinrepl_control"

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
    cancel_requested_at: datetime | None = None

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


#: Decides a try after a run that ended with `status` (`abandoned`): when it is due (None:
#: none), and what its error adds when that is worth saying (why it is not retried).
RetryPlan = Callable[[RunRow, str, datetime], tuple[datetime | None, str | None]]


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
            paused = await _paused_jobs(conn, {slot.job for slot in slots})
            values = [_skipped_if_paused(slot.values(now), paused) for slot in slots]
            rows = await conn.execute(statement, values)
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
            held = (await conn.execute(update(RUNS).where(*mine).values(**values).returning(
                RUNS.c.cancel_requested_at))).first()
            if held is None:
                return None
            await self._insert_children(conn, fan_out, tenants, now)
            if held.cancel_requested_at is not None:  # cancel-runs came while it expanded
                await conn.execute(update(RUNS).where(
                    RUNS.c.parent_id == fan_out.id, _IS_QUEUED).values(
                    status=str(Status.CANCELLED), finished_at=now,
                    error="cancelled: asked to (cancel-runs)"))
                await self._end_fan_outs(conn, [fan_out.id], now)
                return 0
            busy = [t for t in dict.fromkeys(skipped) if t in set(tenants)]
            if busy:
                await conn.execute(
                    update(RUNS).where(RUNS.c.parent_id == fan_out.id,
                                       RUNS.c.tenant_id.in_(busy))
                    .values(status=str(Status.SKIPPED), finished_at=now,
                            error="skipped: the run of an earlier slot is still running"))
            paused = await self._skip_paused_tenants(conn, fan_out, tenants, busy, now)
            if busy or paused:
                await self._end_fan_outs(conn, [fan_out.id], now)  # all of them, maybe
        return len(tenants) - len(busy) - paused if tenants else 0

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
        results = await self._finish_plainly(results)
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

    async def _finish_plainly(self, results: Sequence[Result]) -> Sequence[Result]:
        """On PostgreSQL, record the results that queue nothing and end no fan-out in one
        statement of its own (a bot's group commit of plain results: one round trip, where
        the transaction below takes four); the others are left for it, with those whose
        run was no longer running on their bot (late)."""
        plain = [r for r in results
                 if r.retry_at is None and r.parent_id is None and r.bot is not None]
        if self._autocommit is None or self.engine.sandboxed or not plain:
            return results
        async with self._autocommit.connect() as conn:
            done = set((await conn.scalars(_FINISH_PLAIN, {
                "ids": [r.id for r in plain], "bots": [r.bot for r in plain],
                "statuses": [str(r.status) for r in plain],
                "began": [r.started_at for r in plain],
                "ended": [r.finished_at for r in plain],
                "errors": [r.error for r in plain],
                "traces": [r.traceback for r in plain],
            })).all())
        return [r for r in results if r.id not in done]

    async def _end_fan_outs(self, conn: AsyncConnection, parents: Iterable[int],
                            now: datetime) -> list[tuple[int, str]]:
        """End the fan-outs among `parents` whose tenant runs have all ended: `succeeded`
        when the last try of every tenant did, else `failed`."""
        ended: list[tuple[int, str]] = []
        if not parents:
            return ended
        # Locked (PostgreSQL): of two bots ending its last tenants at once, the last sees
        # all. An in-process fan-out is its caller's to end: not counted here, per tenant.
        held = select(RUNS.c.id, RUNS.c.cancel_requested_at).where(
            RUNS.c.id.in_(sorted(parents)), RUNS.c.status == Status.RUNNING,
            RUNS.c.origin.in_(_BOTS_RUN)).order_by(RUNS.c.id)
        if self._postgres:
            held = held.with_for_update()
        for parent, cancel_asked in (await conn.execute(held)).all():
            live = await conn.execute(select(exists().where(
                RUNS.c.parent_id == parent, RUNS.c.status.in_(_LIVE))))
            if live.scalar():
                continue
            counts = await self._last_tries(conn, parent)
            failed = sum(n for status, n in counts.items() if status not in _OK)
            total = sum(counts.values())
            status = Status.FAILED if failed else Status.SUCCEEDED
            if failed and cancel_asked is not None:  # cancel-runs stopped it (SPEC 9)
                status = Status.CANCELLED
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

    async def register(self, bot: str, host: str, pid: int, now: datetime,
                       lease: timedelta = LEASE) -> None:
        """Register `bot`, dead unless it beats again within `lease` (its own)."""
        async with self.engine.begin() as conn:
            await conn.execute(insert(BOTS).values(_bot_row(bot, host, pid, now, lease)))

    async def beat(self, bot: str, host: str, pid: int, now: datetime,
                   lease: timedelta = LEASE) -> bool:
        """Record a heartbeat: `bot` is alive for `lease` more. False when it had been
        given up for dead (its row removed by another bot): it is registered again."""
        async with self.engine.begin() as conn:
            beaten = await conn.execute(
                update(BOTS).where(BOTS.c.id == bot).values(beat_at=now,
                                                            expires_at=now + lease))
            if beaten.rowcount:
                return True
            await conn.execute(insert(BOTS).values(_bot_row(bot, host, pid, now, lease)))
            return False

    async def unregister(self, bot: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(BOTS).where(BOTS.c.id == bot))

    async def abandon_dead(self, bot: str, lease: timedelta, now: datetime,
                           retry: RetryPlan,
                           requeue: Callable[[RunRow], bool] = lambda run: False
                           ) -> list[RunRow]:
        """Mark `abandoned` the running runs of bots whose lease has expired (their own;
        `lease` for a bot that did not say, and for the runs of bots no longer registered),
        queue the retries `retry` plans for them, end the fan-outs that ends, and forget
        those bots. A run `requeue` picks (a fan-out whose bot died before it queued its
        tenants: no job code ran for it) is queued again instead. The runs abandoned."""
        cutoff = now - lease
        dead = select(BOTS.c.id).where(
            or_(BOTS.c.expires_at < now, BOTS.c.expires_at.is_(None) & (BOTS.c.beat_at < cutoff)),
            BOTS.c.id != bot)
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
            decided = {run.id: retry(run, Status.ABANDONED, now) for run in found}
            retries = [{"run_id": run_id, "due": due, "now": now}
                       for run_id, (due, _note) in decided.items() if due is not None]
            if retries:
                await conn.execute(_RETRY, retries)
            notes = {run_id: note for run_id, (_due, note) in decided.items() if note}
            if notes:
                await conn.execute(
                    update(RUNS).where(RUNS.c.id == bindparam("noted"))
                    .values(error=RUNS.c.error + bindparam("note")),
                    [{"noted": run_id, "note": note} for run_id, note in notes.items()])
                found = [replace(run, error=f"{run.error}{notes[run.id]}") if run.id in notes
                         else run for run in found]
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

    async def tenant_runs(self, parent: int, *, unsuccessful: bool = False,
                          limit: int | None = None) -> list[RunRow]:
        """The last try of each tenant of fan-out `parent`, in tenant order; `unsuccessful`:
        only those that did not succeed; at most `limit`."""
        statement = select(RUNS).where(RUNS.c.parent_id == parent, _is_last_try()).order_by(
            RUNS.c.tenant_id).limit(limit)
        if unsuccessful:
            statement = statement.where(RUNS.c.status.in_([str(s) for s in UNSUCCESSFUL]))
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

    # -- control (SPEC 9) ------------------------------------------------------------------

    async def pause(self, job: str, tenant_ids: Sequence[int] | None, reason: str | None,
                    now: datetime) -> None:
        """Pause `job` (with `tenant_ids`: those tenants' runs of it only); a pause in force
        keeps its `since` and takes the new reason, if one is given. Its queued scheduled
        runs are recorded `skipped` at once (a slot does not wait for a resume); the bots
        are told."""
        targets: list[int | None] = list(dict.fromkeys(tenant_ids)) if tenant_ids else [None]
        async with self.engine.begin() as conn:
            for tenant in targets:
                this = (PAUSES.c.job == job, _same_tenant(PAUSES.c.tenant_id, tenant))
                held = (await conn.execute(select(PAUSES.c.id).where(*this))).first()
                if held is None:
                    await conn.execute(self._insert(PAUSES).values(
                        job=job, tenant_id=tenant, reason=reason, since=now
                    ).on_conflict_do_nothing())
                elif reason is not None:  # without a new reason, the old one stays
                    await conn.execute(update(PAUSES).where(PAUSES.c.id == held.id).values(
                        reason=reason))
            reasons = {t: r for t, r in await conn.execute(
                select(PAUSES.c.tenant_id, PAUSES.c.reason).where(PAUSES.c.job == job))}
            error = paused_error(reasons.get(targets[0]))
            skip = [_IS_QUEUED, RUNS.c.job == job, RUNS.c.origin == Origin.SCHEDULE]
            if tenant_ids:
                skip.append(RUNS.c.tenant_id.in_([t for t in targets if t is not None]))
            skipped = await conn.execute(
                update(RUNS).where(*skip)
                .values(status=str(Status.SKIPPED), finished_at=now, error=error)
                .returning(RUNS.c.parent_id))
            await self._end_fan_outs(conn, {p for (p,) in skipped if p is not None}, now)
            await self._tell(conn, CONTROL, f"pause {job}")

    async def resume(self, job: str, tenant_ids: Sequence[int] | None) -> int:
        """Lift the pauses of `job` (with `tenant_ids`: only those tenants'; without: every
        pause of the job, its tenants' too); how many. The bots are woken: the runs that
        waited are claimed now."""
        where = [PAUSES.c.job == job]
        if tenant_ids is not None:
            where.append(PAUSES.c.tenant_id.in_(list(tenant_ids)))
        async with self.engine.begin() as conn:
            lifted = (await conn.execute(delete(PAUSES).where(*where))).rowcount
            if lifted:
                await self._tell(conn, CHANNEL, job)
                await self._tell(conn, CONTROL, f"resume {job}")
        return int(lifted)

    async def has_job(self, job: str) -> bool:
        """Whether `job` has runs in the history, or a pause."""
        statement = select(exists().where(RUNS.c.job == job) | exists().where(
            PAUSES.c.job == job))
        async with self._reading() as conn:
            return bool((await conn.execute(statement)).scalar())

    async def pauses(self, job: str | None = None) -> list[Pause]:
        """The pauses in force (of `job` only, if given), by job then tenant."""
        statement = select(PAUSES.c.job, PAUSES.c.tenant_id, PAUSES.c.reason,
                           PAUSES.c.since).order_by(PAUSES.c.job, PAUSES.c.tenant_id.nulls_first())
        if job is not None:
            statement = statement.where(PAUSES.c.job == job)
        async with self._reading() as conn:
            return [Pause(*row) for row in await conn.execute(statement)]

    async def retry(self, which: RunFilter, now: datetime) -> list[int]:
        """Queue a new try (origin `defer`, due now, same job, arguments, tenant and slot) of
        each run of `which` that did not succeed and was not tried again since; a fan-out
        stands for its tenants that did not succeed (itself, when it has none: its
        `tenants_filter` failed), and is running again until they have ended. The new runs'
        ids."""
        unsuccessful = [str(s) for s in UNSUCCESSFUL]
        if which.status is not None and which.status not in unsuccessful:
            return []
        where = [*_matching(which, RUNS), RUNS.c.status.in_(unsuccessful), _not_retried()]
        async with self.engine.begin() as conn:
            found = [RunRow.of(row) for row in await conn.execute(
                select(RUNS).where(*where).order_by(RUNS.c.id))]
            fan_outs = [r.id for r in found if r.is_fan_out]
            tenants: dict[int, list[RunRow]] = {}
            if fan_outs:
                for row in await conn.execute(select(RUNS).where(
                        RUNS.c.parent_id.in_(fan_outs), RUNS.c.status.in_(unsuccessful),
                        _is_last_try()).order_by(RUNS.c.id)):
                    tenant_run = RunRow.of(row)
                    tenants.setdefault(tenant_run.parent_id or 0, []).append(tenant_run)
            chosen: dict[int, RunRow] = {}
            for run in found:
                for each in tenants.get(run.id, [run]):
                    chosen.setdefault(each.id, each)
            if not chosen:
                return []
            parents = await self._reopen_fan_outs(
                conn, {r.parent_id for r in chosen.values() if r.parent_id is not None})
            new = [_next_try(run, now, run.parent_id if run.parent_id in parents else None)
                   for run in chosen.values()]
            ids = [row.id for row in await conn.execute(
                insert(RUNS).returning(RUNS.c.id, sort_by_parameter_order=True), new)]
            await self._tell(conn, CHANNEL, "retry")
        return ids

    async def _reopen_fan_outs(self, conn: AsyncConnection, parents: set[int]) -> set[int]:
        """Make the bots' fan-outs among `parents` `running` again (held by no bot), so that
        they end when their retried tenants have (`_end_fan_outs`); the ids of those. An
        in-process fan-out is its caller's: its tenants' new tries stand alone."""
        if not parents:
            return set()
        reopened = await conn.execute(
            update(RUNS).where(RUNS.c.id.in_(sorted(parents)), RUNS.c.origin.in_(_BOTS_RUN))
            .values(status=str(Status.RUNNING), finished_at=None, error=None, bot=None,
                    cancel_requested_at=None)
            .returning(RUNS.c.id))
        return {run_id for (run_id,) in reopened}

    async def cancel(self, which: RunFilter, now: datetime) -> Cancelled:
        """Cancel the queued runs of `which` at once (`cancelled`) and mark its running ones
        (`cancel_requested_at`) for their bots, which cancel them; a fan-out's tenant runs
        go with it. Without a status, `which` means its runs still queued or running; runs
        made in a calling process (`cli`, `repl`, `app`) are their caller's and are left."""
        matched = [*_matching(which, RUNS)]
        target = RUNS.alias("target")
        of_target = [*_matching(which, target)]
        if which.status is None:
            matched.append(RUNS.c.status.in_(_LIVE))
            of_target.append(target.c.status.in_(_LIVE))
        ours = or_(and_(*matched), RUNS.c.parent_id.in_(select(target.c.id).where(*of_target)))
        async with self.engine.begin() as conn:
            queued = (await conn.execute(
                update(RUNS).where(_IS_QUEUED, ours)
                .values(status=str(Status.CANCELLED), finished_at=now,
                        error="cancelled: asked to (cancel-runs)")
                .returning(RUNS.c.parent_id))).all()
            running = (await conn.execute(
                update(RUNS).where(RUNS.c.status == Status.RUNNING,
                                   RUNS.c.cancel_requested_at.is_(None),
                                   RUNS.c.origin.in_(_BOTS_RUN), ours)
                .values(cancel_requested_at=now)
                .returning(RUNS.c.id, RUNS.c.parent_id, RUNS.c.bot))).all()
            parents = {p for (p,) in queued if p is not None}
            parents |= {r.parent_id for r in running if r.parent_id is not None}
            parents |= {r.id for r in running if r.bot is None}  # a fan-out's own row
            await self._end_fan_outs(conn, parents, now)
            if running:
                await self._tell(conn, CONTROL, "cancel")
        return Cancelled(len(queued), sum(1 for r in running if r.bot is not None))

    async def cancels_asked(self, bot: str) -> set[int]:
        """The running runs of `bot` whose cancel was asked (a read of a partial index of
        the asked ones only)."""
        statement = select(RUNS.c.id).where(
            RUNS.c.bot == bot, RUNS.c.cancel_requested_at.is_not(None),
            RUNS.c.status == literal_column(f"'{Status.RUNNING}'"))
        async with self._reading() as conn:
            return set((await conn.scalars(statement)).all())

    async def list_runs(self, which: RunFilter, *, limit: int = 50, before: int | None = None
                        ) -> list[RunRow]:
        """The runs of `which`, newest first (by id): at most `limit`, those older than run
        `before` (the last of the page before) if given."""
        statement = select(RUNS).where(*_matching(which, RUNS))
        if before is not None:
            statement = statement.where(RUNS.c.id < before)
        statement = statement.order_by(RUNS.c.id.desc()).limit(limit)
        async with self._reading() as conn:
            return [RunRow.of(row) for row in await conn.execute(statement)]

    async def bots(self) -> list[BotRow]:
        """The bots registered (up, or not yet found dead), oldest first, with their
        running runs."""
        async with self._reading() as conn:
            bots = (await conn.execute(select(BOTS).order_by(BOTS.c.started_at))).all()
            running: dict[str, list[RunRow]] = {}
            if bots:
                for row in await conn.execute(select(RUNS).where(
                        RUNS.c.status == Status.RUNNING,
                        RUNS.c.bot.in_([bot.id for bot in bots])).order_by(RUNS.c.id)):
                    run = RunRow.of(row)
                    running.setdefault(run.bot or "", []).append(run)
        return [BotRow(b.id, b.host, b.pid, b.started_at, b.beat_at, b.expires_at,
                       running.get(b.id, [])) for b in bots]

    async def _skip_paused_tenants(self, conn: AsyncConnection, fan_out: RunRow,
                                   tenants: Sequence[int], busy: Sequence[int],
                                   now: datetime) -> int:
        """A scheduled fan-out's tenant runs of paused tenants are `skipped` (a deferred
        one's wait: the claim leaves them); how many."""
        if fan_out.origin != Origin.SCHEDULE or not tenants:
            return 0
        pauses = {tenant: reason for tenant, reason in await conn.execute(
            select(PAUSES.c.tenant_id, PAUSES.c.reason).where(PAUSES.c.job == fan_out.job))}
        count = 0
        for tenant in dict.fromkeys(tenants):
            if tenant in busy or (tenant not in pauses and None not in pauses):
                continue
            reason = pauses[tenant] if tenant in pauses else pauses[None]
            await conn.execute(update(RUNS).where(
                RUNS.c.parent_id == fan_out.id, RUNS.c.tenant_id == tenant, _IS_QUEUED
            ).values(status=str(Status.SKIPPED), finished_at=now, error=paused_error(reason)))
            count += 1
        return count

    async def _tell(self, conn: AsyncConnection, channel: str, payload: str) -> None:
        """Notify the bots on `channel` when the transaction commits (PostgreSQL; SQLite's
        bots poll)."""
        if self._postgres:
            await conn.execute(select(func.pg_notify(channel, payload[:7000])))

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
    where.append(_NOT_PAUSED)  # control (SPEC 9): a paused job's or tenant's runs wait
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

#: Plain results, one row each in parallel arrays (PostgreSQL), recorded where their run is
#: still running on their bot; returns those ids.
_INSTANT = DateTime(timezone=True)
_PLAIN = func.unnest(
    bindparam("ids", type_=ARRAY(BigInteger)), bindparam("bots", type_=ARRAY(String)),
    bindparam("statuses", type_=ARRAY(String)),
    bindparam("began", type_=ARRAY(_INSTANT)), bindparam("ended", type_=ARRAY(_INSTANT)),
    bindparam("errors", type_=ARRAY(Text)), bindparam("traces", type_=ARRAY(Text)),
).table_valued("id", "bot", "status", "began", "ended", "error", "traceback").render_derived(
    "plain", with_types=False)
_FINISH_PLAIN = update(RUNS).where(
    RUNS.c.id == _PLAIN.c.id, RUNS.c.status == literal_column(f"'{Status.RUNNING}'"),
    RUNS.c.bot == _PLAIN.c.bot,
).values(
    status=_PLAIN.c.status, started_at=func.coalesce(_PLAIN.c.began, RUNS.c.started_at),
    finished_at=_PLAIN.c.ended, error=_PLAIN.c.error, traceback=_PLAIN.c.traceback,
).returning(RUNS.c.id)

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


# -- control (SPEC 9) -------------------------------------------------------------------------

#: The claim's condition for pauses: no pause of the run's job, nor of its tenant's runs.
_NOT_PAUSED = ~exists().where(
    PAUSES.c.job == RUNS.c.job,
    or_(PAUSES.c.tenant_id.is_(None), PAUSES.c.tenant_id == RUNS.c.tenant_id))


def _same_tenant(column: Any, tenant: int | None) -> Any:
    return column.is_(None) if tenant is None else column == tenant


async def _paused_jobs(conn: AsyncConnection, jobs: Iterable[str]) -> dict[str, str]:
    """The jobs among `jobs` paused whole, with the error their slots are skipped with."""
    statement = select(PAUSES.c.job, PAUSES.c.reason).where(
        PAUSES.c.tenant_id.is_(None), PAUSES.c.job.in_(sorted(jobs)))
    return {job: paused_error(reason) for job, reason in await conn.execute(statement)}


def _skipped_if_paused(values: dict[str, Any], paused: dict[str, str]) -> dict[str, Any]:
    """A slot's row values, `skipped` when its job is paused."""
    error = paused.get(values["job"])
    if error is None or values["status"] != Status.QUEUED:
        return values
    return {**values, "status": str(Status.SKIPPED), "finished_at": values["created_at"],
            "error": error}


def _bot_row(bot: str, host: str, pid: int, now: datetime, lease: timedelta
             ) -> dict[str, Any]:
    """The row of a bot registered at `now`, alive for `lease`."""
    return {"id": bot, "host": host, "pid": pid, "started_at": now, "beat_at": now,
            "expires_at": now + lease}


def _matching(which: RunFilter, table: Any) -> list[Any]:
    """The conditions on `table` (the runs table or an alias of it) of `which`."""
    where: list[Any] = []
    if which.tenant_id is not None:
        where.append(table.c.tenant_id == which.tenant_id)
    if which.ids:
        return [table.c.id.in_(list(which.ids)), *where]
    if which.job is not None:
        where.append(table.c.job == which.job)
    if which.status is not None:
        where.append(table.c.status == which.status)
    if which.origin is not None:
        where.append(table.c.origin == which.origin)
    if which.since is not None:
        where.append(table.c.created_at >= which.since)
    return where


def _not_retried() -> Any:
    """A run with no later try (of its own, or asked for by `retry-runs`)."""
    later = RUNS.alias("later")
    return ~exists().where(later.c.retry_of == func.coalesce(RUNS.c.retry_of, RUNS.c.id),
                           later.c.attempt > RUNS.c.attempt)


def _next_try(run: RunRow, now: datetime, parent_id: int | None) -> dict[str, Any]:
    """The row of a try of `run` that `retry-runs` asked for: due now, origin `defer`,
    no key (the key's run may be live again)."""
    return {
        "job": run.job, "tenant_id": run.tenant_id, "args": run.args,
        "args_hash": run.args_hash, "scheduled_for": run.scheduled_for,
        "status": str(Status.QUEUED), "bot": None, "started_at": None, "finished_at": None,
        "error": None, "origin": Origin.DEFER, "attempt": run.attempt + 1,
        "parent_id": parent_id, "priority": run.priority, "key": None, "created_at": now,
        "timeout": run.timeout, "not_before": now, "traceback": None,
        "retry_of": run.retry_of or run.id, "cancel_requested_at": None,
    }
