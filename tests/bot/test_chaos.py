"""Chaos: three bots on one PostgreSQL database, a bot killed (`kill -9`) every few seconds
and replaced, and the database taken away twice (through `relay.Relay`), while a
per-second fan-out over ten tenants runs and deferred runs arrive. Afterwards the runs
table and what the jobs wrote down must show what SPEC 7 and 8 promise: every tenant of
every slot queued has its row, no try of a run executed twice (unless its row says its bot
was taken for dead: `abandoned`), nothing left queued or running, every deferred run ended.

The randomness (when to kill which bot, when and how long to cut) is seeded; the seed is
printed, and PINREPL_CHAOS_SEED replays one.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from pinrepl import App, RunFailed
from pinrepl.db.models import Tenant, utcnow
from pinrepl.runs.tables import RUNS

from ..conftest import needs_postgres, postgres_database
from .conftest import Bot, bot_app, executions
from .relay import Relay, relay_to

pytestmark = needs_postgres

TENANTS = [f"t{i}" for i in range(10)]
#: Seconds of kills and cuts; then the bots finish what was due, and stop.
CHAOS = 34.0
BOT_OPTIONS = ("--lease", "3", "--grace", "2")
#: What a bot logs once it is up: on PostgreSQL it listens for deferred runs (or says why
#: it cannot).
READY = " for deferred runs"
FINAL = {"succeeded", "failed", "skipped", "abandoned", "cancelled", "timed_out"}

JOBS = {
    # Fails on the first try of some (tenant, slot)s and on every try of a few others.
    "_planned.py": """
        class PlannedFailure(Exception):
            pass

        def fail(key, second, attempt):
            if (key + second) % 13 == 0 or ((key + second) % 5 == 0 and attempt == 1):
                raise PlannedFailure(f"planned failure of {key} at :{second:02} try {attempt}")
    """,
    "fan.py": """
        import asyncio
        from pinrepl import BackgroundJob, Retry
        from ._planned import fail
        from ._record import record

        class Fan(BackgroundJob):
            multi_tenant = True
            tenant_concurrency = 2
            retries = Retry(attempts=2, delay=0.05, jitter=False)

            def meta(self):
                self.schedule("* * * * * *")

            async def run(self):
                run = self.current_run
                record("fan", self.tenant.id, run=run.id, attempt=run.attempt,
                       slot=run.scheduled_for.isoformat())
                await asyncio.sleep(0.15)
                fail(self.tenant.id, run.scheduled_for.second, run.attempt)
    """,
    "later.py": """
        import asyncio
        from pinrepl import BackgroundJob, Retry
        from ._record import record
        from ._planned import PlannedFailure

        class Later(BackgroundJob):
            retries = Retry(attempts=2, delay=0.1, jitter=False)

            async def run(self, n):
                run = self.current_run
                record("later", None, n=n, run=run.id, attempt=run.attempt,
                       slot=run.scheduled_for.isoformat())
                await asyncio.sleep(0.3)
                if n % 3 == 0 and run.attempt == 1:
                    raise PlannedFailure(f"planned failure of later {n}")
    """,
}


@dataclass
class Chaos:
    """The bots, the relay, the deferred runs, and what was done to them."""

    app_dir: Path
    url: str
    relay: Relay
    rng: random.Random
    bots: list[Bot] = field(default_factory=list)
    killed: list[Bot] = field(default_factory=list)
    #: Bots started while the database was away: they exit 2, and are started again.
    unstarted: list[Bot] = field(default_factory=list)
    deferred: dict[int, Any] = field(default_factory=dict)  # n -> DeferredRun
    cuts: list[float] = field(default_factory=list)

    def start_bot(self) -> Bot:
        bot = Bot(self.app_dir, self.relay.url(self.url), *BOT_OPTIONS)
        self.bots.append(bot)
        return bot

    def revive(self) -> None:
        """Start again, as a supervisor would, the bots that could not reach the database
        when they started (exit 2, one line); any other exit fails the test."""
        for bot in list(self.bots):
            code = bot.process.poll()
            if code is None:
                continue
            assert code == 2 and "cannot reach database" in bot.log, f"exit {code}:\n{bot.log}"
            self.bots.remove(bot)
            self.unstarted.append(bot)
            self.start_bot()

    async def ready(self) -> bool:
        """Whether every bot is up: listening for deferred runs, which it does once its
        signal handlers are in place (a SIGTERM before them kills it)."""
        self.revive()
        return all(READY in bot.log for bot in self.bots)

    def kill_one(self) -> None:
        bot = self.rng.choice(self.bots)
        bot.kill()
        self.bots.remove(bot)
        self.killed.append(bot)
        self.start_bot()

    def timeline(self) -> list[tuple[float, str]]:
        """(seconds from the start, what): kills every 2 to 5 s, two cuts of 3 to 4 s, a
        deferred run every second."""
        events: list[tuple[float, str]] = []
        moment = self.rng.uniform(2, 5)
        while moment < CHAOS:
            events.append((moment, "kill"))
            moment += self.rng.uniform(2, 5)
        for start in (self.rng.uniform(5, 9), self.rng.uniform(19, 23)):
            events += [(start, "cut"), (start + self.rng.uniform(3, 4), "restore")]
        events += [(0.5 + n, f"defer {n}") for n in range(int(CHAOS))]
        return sorted(events)

    async def play(self, app: App) -> None:
        begin = time.monotonic()
        for moment, what in self.timeline():
            await asyncio.sleep(max(0.0, begin + moment - time.monotonic()))
            self.revive()
            if what == "kill":
                self.kill_one()
            elif what == "cut":
                self.relay.cut()
                self.cuts.append(time.monotonic() - begin)
            elif what == "restore":
                self.relay.restore()
            else:
                n = int(what.split()[1])
                self.deferred[n] = await app.defer("later", n)
        assert not self.relay.is_cut


async def until(check: Callable[[], Awaitable[bool]], seconds: float,
                what: Callable[[], str]) -> None:
    """Until `check()` holds, looking every 0.1 s; else fail, saying `what()`."""
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what()}"
        await asyncio.sleep(0.1)


async def all_runs(app: App) -> list[Any]:
    async with app.engine.engine.connect() as conn:
        return list((await conn.execute(select(RUNS).order_by(RUNS.c.id))).all())


def test_bots_keep_each_run_once_through_kills_and_outages(tmp_path: Path) -> None:
    seed = int(os.environ.get("PINREPL_CHAOS_SEED") or random.randrange(2**32))
    print(f"chaos seed {seed} (PINREPL_CHAOS_SEED={seed} replays it)")
    with postgres_database() as url, relay_to(url) as relay:
        app_dir = bot_app(tmp_path / "app", JOBS, url, TENANTS)
        asyncio.run(_run(Chaos(app_dir, url, relay, random.Random(seed))))


async def _run(chaos: Chaos) -> None:
    async with App.open(chaos.app_dir, environ={"PINREPL_DATABASE_URL": chaos.url}) as app:
        try:
            begin = time.monotonic()
            for _ in range(3):
                chaos.start_bot()
            await until(chaos.ready, 30, lambda: "the bots start")
            print(f"bots up in {time.monotonic() - begin:.1f} s")
            await chaos.play(app)
            quiet, begin = utcnow(), time.monotonic()
            print(f"killed {len(chaos.killed)} bots, {len(chaos.unstarted)} started again "
                  "(the database was away), cut the database at "
                  + ", ".join(f"{s:.1f} s" for s in chaos.cuts))

            seen: list[Any] = []

            async def due_done() -> bool:
                seen[:] = await all_runs(app)
                return not _pending(seen, quiet)

            # The survivors mark the dead bots' runs abandoned (after --lease) and run what
            # was due; new slots keep coming meanwhile.
            await until(due_done, 40, lambda: "runs due before the chaos ended that have "
                        "not ended:\n" + "\n".join(
                            _described(row, seen) for row in _pending(seen, quiet)))
            print(f"what was due ended {time.monotonic() - begin:.1f} s after the chaos")
            outcomes = [await _outcome(run) for run in chaos.deferred.values()]
            await until(chaos.ready, 30, lambda: "the last bots start")
        finally:
            begin = time.monotonic()
            codes = _stop(chaos.bots)
            print(f"bots stopped in {time.monotonic() - begin:.1f} s")
        assert codes == [0] * len(codes), "\n".join(
            f"exit {code}:\n{bot.log}" for bot, code in zip(chaos.bots, codes, strict=True)
            if code)
        rows = await all_runs(app)
        async with app.engine.engine.connect() as conn:
            tenants = set((await conn.scalars(select(Tenant.id))).all())
    assert len(tenants) == len(TENANTS)
    print("runs:", dict(Counter(row.status for row in rows)))
    check_after_stop(rows, quiet)
    check_fan_outs(rows, tenants)
    check_executions(rows, executions(chaos.app_dir))
    check_deferred(rows, chaos.deferred, outcomes)


async def _outcome(run: Any) -> str | None:
    """None if the deferred run succeeded, else the status `wait()` reports."""
    try:
        await run.wait(timeout=10)
    except RunFailed as failed:
        return str(failed.status)
    return None


def _pending(rows: list[Any], quiet: datetime) -> list[Any]:
    return [row for row in rows if row.status not in FINAL and row.scheduled_for <= quiet]


def _described(row: Any, rows: list[Any]) -> str:
    """A run, for a failure's message; a fan-out with its tenant runs."""
    lines = [f"run {row.id} {row.job} tenant {row.tenant_id} slot {_hms(row.scheduled_for)} "
             f"try {row.attempt} {row.status} bot {row.bot} parent {row.parent_id} "
             f"started {_hms(row.started_at)}"]
    lines += [f"  run {c.id} tenant {c.tenant_id} try {c.attempt} {c.status} bot {c.bot} "
              f"{_hms(c.started_at)}-{_hms(c.finished_at)} {c.error or ''}"
              for c in rows if c.parent_id == row.id]
    return "\n".join(lines)


def _hms(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment:%H:%M:%S.%f}"


def _stop(bots: list[Bot]) -> list[int]:
    for bot in bots:
        if bot.process.poll() is None:
            bot.process.terminate()
    return [bot.process.wait(30) for bot in bots]


def check_after_stop(rows: list[Any], quiet: datetime) -> None:
    """Nothing is running once the bots are stopped (but the fan-outs whose tenants are
    queued); what is queued was due after the chaos."""
    waiting = {row.parent_id for row in rows if row.status == "queued"}
    running = [row for row in rows if row.status == "running"
               and not (row.bot is None and row.id in waiting)]  # a fan-out whose
    # tenants wait in the queue for the next bot is still running, held by none
    assert running == [], "\n".join(_described(row, rows) for row in running)
    early = [(row.id, row.job, row.scheduled_for) for row in rows
             if row.status == "queued" and row.scheduled_for <= quiet]
    assert early == []
    assert {row.status for row in rows} <= FINAL | {"queued", "running"}


def check_fan_outs(rows: list[Any], tenants: set[int]) -> None:
    """Each slot of the fan-out was queued once; a slot that was expanded has one first
    try per tenant; one that never was had ended without running (skipped, or its bot
    died holding it)."""
    fan_outs = [row for row in rows if row.job == "fan" and row.parent_id is None]
    assert fan_outs, "no slot of the fan-out was queued"
    assert len({(r.scheduled_for, r.attempt) for r in fan_outs}) == len(fan_outs)
    children: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        if row.parent_id is not None:
            children[row.parent_id].append(row)
    for fan_out in fan_outs:
        mine = children.get(fan_out.id, [])
        tries = Counter((row.tenant_id, row.attempt) for row in mine)
        assert max(tries.values(), default=1) == 1, (fan_out.scheduled_for, tries)
        if mine:
            firsts = {row.tenant_id for row in mine if row.attempt == 1}
            assert firsts == tenants, (fan_out.scheduled_for, sorted(tenants - firsts))
            assert all(row.scheduled_for == fan_out.scheduled_for for row in mine)
        else:
            assert fan_out.status in ("skipped", "abandoned", "queued", "cancelled"), \
                (fan_out.id, fan_out.status, fan_out.error)


def check_executions(rows: list[Any], lines: list[dict[str, Any]]) -> None:
    """Each execution is of its row's (job, tenant, slot, try); no (job, tenant, slot, try)
    executed twice unless its row is abandoned; each try that succeeded, or failed by the
    job's own planned failure, executed exactly once."""
    by_id = {row.id: row for row in rows}
    executed: Counter[int] = Counter()
    for line in lines:
        row = by_id[line["run"]]
        assert (row.job, row.tenant_id, row.scheduled_for.isoformat(), row.attempt) == (
            line["job"], line["tenant"], line["slot"], line["attempt"]), (line, row)
        executed[row.id] += 1
    keys = Counter((row.job, row.tenant_id, row.args, row.scheduled_for, row.attempt)
                   for row in rows)
    assert max(keys.values()) == 1  # so a run's id stands for its (job, tenant, slot, try)
    twice = [(run, count, by_id[run].status) for run, count in executed.items()
             if count > 1 and by_id[run].status != "abandoned"]
    assert twice == []
    ran = [row for row in rows if row.job == "later" or row.tenant_id is not None]
    ran = [row for row in ran if row.status == "succeeded"
           or (row.status == "failed" and "PlannedFailure" in (row.error or ""))]
    assert [(row.id, row.status, executed[row.id]) for row in ran
            if executed[row.id] != 1] == []


def check_deferred(rows: list[Any], deferred: dict[int, Any],
                   outcomes: list[str | None]) -> None:
    """Each deferred run's tries are 1, 2, ... one row each, all ended; each try but the
    last failed (the planned failure of a first try) or was abandoned; the last
    succeeded, unless its bot died on the last try allowed. `wait()` says the same."""
    tries: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        if row.job == "later":
            tries[_n_of(row)].append(row)
    assert sorted(tries) == sorted(deferred)
    for (n, run), outcome in zip(deferred.items(), outcomes, strict=True):
        mine = sorted(tries[n], key=lambda row: row.attempt)
        assert mine[0].id == run.id
        assert [row.attempt for row in mine] == list(range(1, len(mine) + 1)), n
        assert all(row.status in ("failed", "abandoned") for row in mine[:-1]), \
            [(row.attempt, row.status) for row in mine]
        last = mine[-1]
        if n % 3 == 0 and len(mine) == 1:
            raise AssertionError(f"later {n}: its planned failure was not retried")
        assert last.status == "succeeded" or (len(mine) == 3 and last.status == "abandoned"), \
            [(row.attempt, row.status, row.error) for row in mine]
        assert outcome == (None if last.status == "succeeded" else last.status), (n, outcome)


def _n_of(row: Any) -> int:
    from pinrepl.runs.record import decode_args

    args, _kwargs = decode_args(row.args)
    return int(args[0])
