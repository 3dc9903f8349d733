"""Runs as records (SPEC 8) on the bots: deferred runs claimed as a bot has room, fan-outs
expanded into tenant rows, retries as rows of their own, priorities, keys, and what a job
sees of its run. A bot runs in this process here (`Bot(app).run(once=True)`), which is
what `pinrepl bot --once` does; signals, kills and bots together are in the subprocess
tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from pinrepl import App, BackgroundJobFailed, RunFailed
from pinrepl.bot.process import Bot
from pinrepl.db.models import utcnow
from pinrepl.runs.repository import NewRun, Result, RunRow

from ..conftest import _on_postgres, invoke, needs_postgres
from .conftest import bot_app, executions

JOBS = {
    "noop.py": """
        from pinrepl import BackgroundJob
        from ._record import record

        class Noop(BackgroundJob):
            async def run(self, *args, **kwargs):
                run = self.current_run
                record("noop", args=list(args), kwargs=kwargs, run_id=run.id,
                       origin=run.origin, attempt=run.attempt,
                       slot=run.scheduled_for.isoformat())
    """,
    "flaky.py": """
        from pinrepl import BackgroundJob
        from ._record import EXECUTIONS, record

        class Flaky(BackgroundJob):
            retries = __import__("pinrepl").Retry(attempts=3, delay=0, jitter=False)

            async def run(self, fail_times):
                done = EXECUTIONS.read_text().count('"flaky"') if EXECUTIONS.exists() else 0
                record("flaky", attempt=self.current_run.attempt)
                if done < fail_times:
                    raise ValueError(f"boom {done + 1}")
    """,
    "picky.py": """
        from pinrepl import BackgroundJob, TenantViolation
        from ._record import record

        class Picky(BackgroundJob):
            retries = 3

            async def run(self):
                record("picky")
                raise TenantViolation("not for this tenant")
    """,
    "per-tenant.py": """
        import asyncio
        from pinrepl import BackgroundJob, Retry
        from ._record import record

        class PerTenant(BackgroundJob):
            multi_tenant = True
            tenant_concurrency = 2
            retries = Retry(attempts=1, delay=0, jitter=False)

            async def run(self):
                run = self.current_run
                record("per-tenant", tenant=self.tenant.name, attempt=run.attempt,
                       parent=run.parent_id)
                await asyncio.sleep(0.05)
                if self.tenant.name == "globex":
                    raise ValueError("globex always fails")
    """,
    "slow.py": """
        import asyncio
        from pinrepl import BackgroundJob
        from ._record import record

        class Slow(BackgroundJob):
            async def run(self, name):
                record("slow", name=name, event="start")
                await asyncio.sleep(0.1)
                record("slow", name=name, event="end")
    """,
    "hourly.py": """
        from pinrepl import BackgroundJob, Retry

        class Hourly(BackgroundJob):
            retries = Retry(attempts=3, delay=600, jitter=False)

            def meta(self):
                self.schedule("0 * * * *")

            async def run(self):
                raise ValueError("down")
    """,
    "odd.py": """
        from pinrepl import BackgroundJob

        class Odd(BaseException):
            pass

        class OddEnd(BackgroundJob):
            async def run(self, how):
                raise KeyboardInterrupt("from the job") if how == "interrupt" else Odd("odd")
    """,
    "writes.py": """
        from pinrepl import BackgroundJob

        class Writes(BackgroundJob):
            async def run(self, commit):
                async with self.database.transaction():
                    await self.defer("noop", "from a job")
                    if not commit:
                        raise RuntimeError("rolled back")
    """,
}


@pytest.fixture
def root(tmp_path: Path, database_url: str) -> Path:
    return bot_app(tmp_path / "app", JOBS, database_url, tenants=["acme", "globex", "initech"])


@pytest.fixture
async def app(root: Path, database_url: str) -> AsyncIterator[App]:
    opened = App.open(root, environ={"PINREPL_DATABASE_URL": database_url})
    try:
        yield opened
    finally:
        await opened.aclose()


async def drain(app: App, concurrency: int = 10) -> int:
    """`bot --once` in this process: its exit status."""
    return await Bot(app, concurrency=concurrency, grace=5).run(once=True)


def recorded(app: App, job: str) -> list[dict[str, Any]]:
    return [line for line in executions(app.settings.root) if line["job"] == job]


async def rows(app: App, **where: Any) -> list[Any]:
    database = app.database()
    try:
        query = database.background_job_runs
        if where:
            query = query.where(**where)
        return await query.order_by("id").all()
    finally:
        await database.aclose()


async def test_a_deferred_run_is_a_queued_row_that_a_bot_runs_once(app: App):
    run = await app.defer("noop", 1, "two", three=3)
    (row,) = await rows(app)
    assert (row.status, row.origin, row.attempt, row.bot) == ("queued", "defer", 1, None)
    assert await drain(app) == 0
    await run.wait(timeout=5)
    (row,) = await rows(app)
    assert row.status == "succeeded" and row.bot is not None and row.started_at is not None
    (execution,) = recorded(app, "noop")
    assert execution["args"] == [1, "two"] and execution["kwargs"] == {"three": 3}
    assert (execution["run_id"], execution["origin"], execution["attempt"]) == (
        run.id, "defer", 1)
    assert execution["slot"] == row.scheduled_for.isoformat()


async def test_deferring_checks_as_running_does_and_queues_nothing_on_a_mistake(app: App):
    from pinrepl import BadJobArguments, UnknownBackgroundJob, UnknownTenant

    with pytest.raises(UnknownBackgroundJob):
        await app.defer("nope")
    with pytest.raises(BadJobArguments):
        await app.defer("slow")  # `name` missing
    with pytest.raises(UnknownTenant):
        await app.defer_job("per-tenant", tenants=["umbrella"])
    with pytest.raises(BadJobArguments, match="JSON"):
        await app.defer("noop", object())
    with pytest.raises(BadJobArguments, match="at= or delay="):
        await app.defer_job("noop", at=utcnow(), delay=5)
    assert await rows(app) == []


@pytest.mark.parametrize(("options", "said"), [
    ({"at": datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-5)))},
     "at=9999-12-31T23:59:00-05:00 is out of range"),
    ({"delay": 1e12}, "delay=1000000000000.0 is out of range"),
    ({"delay": timedelta(days=4_000_000)}, "delay=datetime.timedelta(days=4000000) is out of"),
    ({"delay": float("nan")}, "delay= must be seconds (0 or more) or a timedelta, not nan"),
    ({"delay": float("inf")}, "delay= must be seconds (0 or more) or a timedelta, not inf"),
    ({"priority": 2**70}, f"priority= must be a whole number from -{2**31} to {2**31 - 1}"),
    ({"priority": -(2**31) - 1}, "priority= must be a whole number from"),
    ({"timeout": float("inf")}, "timeout=inf: it must be a number of seconds above 0"),
    ({"timeout": float("nan")}, "timeout=nan: it must be a number of seconds above 0"),
    ({"timeout": 0}, "timeout=0: it must be a number of seconds above 0"),
])
async def test_options_the_run_or_the_database_would_refuse_are_refused_when_deferred(
        app: App, options: dict[str, Any], said: str):
    from pinrepl import BadJobArguments

    with pytest.raises(BadJobArguments) as refused:
        await app.defer_job("noop", **options)
    assert said in str(refused.value) and "\n" not in str(refused.value)
    assert await rows(app) == []


async def test_the_extremes_of_due_times_and_priorities_are_queued(app: App):
    last = datetime(9999, 12, 31, 18, 59, tzinfo=timezone(timedelta(hours=-5)))
    first = datetime(1, 1, 1, 5, tzinfo=timezone(timedelta(hours=5)))
    await app.defer_job("noop", at=last, priority=2**31 - 1)
    await app.defer_job("noop", at=first, priority=-(2**31))
    assert sorted((r.scheduled_for, r.priority) for r in await rows(app)) == [
        (first, -(2**31)), (last, 2**31 - 1)]


async def test_retries_are_rows_of_their_own_until_one_succeeds(app: App):
    run = await app.defer("flaky", 2)
    bot = Bot(app, grace=5)
    assert await bot.run(once=True) == 0  # two tries failed, but the run succeeded
    assert bot.outcomes == {"retried": 2, "succeeded": 1}
    await run.wait(timeout=5)  # the run it returned is the first try...
    tries = await rows(app, job="flaky")
    assert [(r.attempt, r.status) for r in tries] == [
        (1, "failed"), (2, "failed"), (3, "succeeded")]
    assert tries[0].error == "ValueError: boom 1" and "Traceback" in tries[0].traceback
    assert [line["attempt"] for line in recorded(app, "flaky")] == [1, 2, 3]


async def test_retries_stop_after_the_last_attempt_and_wait_raises_run_failed(app: App):
    run = await app.defer("flaky", 10)
    assert await drain(app) == 1
    tries = await rows(app, job="flaky")
    assert [(r.attempt, r.status) for r in tries] == [(n, "failed") for n in (1, 2, 3, 4)]
    with pytest.raises(RunFailed) as failed:
        await run.wait(timeout=5)
    assert failed.value.status == "failed" and "flaky" in str(failed.value)


async def test_the_callers_own_mistakes_never_retry(app: App):
    await app.defer("picky")
    await drain(app)
    assert [(r.attempt, r.status) for r in await rows(app, job="picky")] == [(1, "failed")]


async def test_a_fan_out_is_expanded_into_tenant_rows_and_only_failures_retry(app: App):
    run = await app.defer("per-tenant")
    assert await drain(app) == 1
    with pytest.raises(BackgroundJobFailed) as failed:
        await run.wait(timeout=5)
    (globex,) = failed.value.exceptions
    assert isinstance(globex, RunFailed) and "globex always fails" in str(globex)
    everything = await rows(app, job="per-tenant")
    parent = next(r for r in everything if r.tenant_id is None)
    assert parent.status == "failed" and parent.id == run.id
    children = [r for r in everything if r.tenant_id is not None]
    assert {r.parent_id for r in children} == {parent.id}
    by_tenant = sorted((r.tenant_id, r.attempt, r.status) for r in children)
    assert by_tenant == [(1, 1, "succeeded"), (2, 1, "failed"), (2, 2, "failed"),
                         (3, 1, "succeeded")]


async def test_chosen_tenants_are_expanded_when_deferred(app: App):
    run = await app.defer_job("per-tenant", tenants=["acme", "initech"])
    children = [r for r in await rows(app) if r.tenant_id is not None]
    assert sorted(r.tenant_id for r in children) == [1, 3]
    await drain(app)
    await run.wait(timeout=5)
    assert (await rows(app, id=run.id))[0].status == "succeeded"


async def test_a_bot_runs_no_more_than_it_has_room_for(app: App):
    for name in "abcdef":
        await app.defer("slow", name)
    await drain(app, concurrency=2)
    running, most = 0, 0
    for line in recorded(app, "slow"):
        running += 1 if line["event"] == "start" else -1
        most = max(most, running)
    assert most == 2


async def test_lower_priority_runs_first_then_the_oldest(app: App):
    await app.defer_job("slow", ["late"], priority=5)
    await app.defer_job("slow", ["first"], priority=-1)
    await app.defer_job("slow", ["second"])
    await app.defer_job("slow", ["third"])
    await drain(app, concurrency=1)
    starts = [line["name"] for line in recorded(app, "slow") if line["event"] == "start"]
    assert starts == ["first", "second", "third", "late"]


async def test_a_key_makes_one_run_while_it_is_queued_or_running(app: App):
    first = await app.defer_job("noop", ["a"], key="nightly")
    again = await app.defer_job("noop", ["b"], key="nightly")
    assert again.id == first.id and len(await rows(app)) == 1
    await drain(app)
    later = await app.defer_job("noop", ["c"], key="nightly")
    assert later.id != first.id


async def test_a_run_due_later_waits_for_its_time(app: App):
    await app.defer_job("noop", ["later"], delay=60)
    await app.defer_job("noop", ["now"])
    assert await drain(app) == 0
    assert [line["args"] for line in recorded(app, "noop")] == [["now"]]
    assert sorted(r.status for r in await rows(app)) == ["queued", "succeeded"]


async def test_a_job_defers_in_its_own_transaction(app: App):
    await app.run_background_job("writes", True)
    with pytest.raises(RuntimeError):
        await app.run_background_job("writes", False)
    queued = await rows(app, job="noop")
    assert len(queued) == 1 and queued[0].status == "queued"


async def test_a_scheduled_run_left_queued_past_misfire_grace_is_skipped_saying_why(app: App):
    slot = utcnow() - timedelta(minutes=5)
    await app.repository.enqueue_slots(
        [NewRun("noop", origin="schedule", scheduled_for=slot)], utcnow())
    await drain(app)
    (row,) = await rows(app)
    assert row.status == "skipped" and "misfire_grace" in row.error
    assert recorded(app, "noop") == []


async def test_a_late_result_does_not_overwrite_what_a_peer_recorded(app: App):
    await app.defer("noop")
    repository = app.repository
    (claimed,) = await repository.claim("sleepy", ["noop"], 1, utcnow())
    await repository.register("sleepy", "host", 1, utcnow() - timedelta(minutes=5))
    await repository.beat("sleepy", "host", 1, utcnow() - timedelta(minutes=5))
    never: Callable[..., tuple[None, None]] = lambda *_: (None, None)  # noqa: E731
    abandoned = await repository.abandon_dead("peer", timedelta(seconds=30), utcnow(), never)
    assert [r.id for r in abandoned] == [claimed.id]
    finished = await repository.finish(
        [Result(claimed.id, "succeeded", utcnow(), bot="sleepy")], utcnow())
    assert finished.late == [claimed.id]
    (row,) = await rows(app)
    assert row.status == "abandoned" and "late: its bot reported succeeded" in row.error


async def test_a_bot_is_judged_by_its_own_lease_not_its_peers(app: App):
    """A bot with `--lease 120` beats every 40 s: a peer whose lease is 30 s does not take
    it for dead 60 s after its beat; one with the default lease is, then."""
    repository = app.repository
    await app.defer("noop")
    await app.defer("slow", "a")
    (patient,) = await repository.claim("patient", ["noop"], 1, utcnow())
    (hasty,) = await repository.claim("hasty", ["slow"], 1, utcnow())
    minute_ago = utcnow() - timedelta(minutes=1)
    await repository.register("patient", "host", 1, minute_ago, timedelta(seconds=120))
    await repository.register("hasty", "host", 2, minute_ago)
    never: Callable[..., tuple[None, None]] = lambda *_: (None, None)  # noqa: E731
    abandoned = await repository.abandon_dead("peer", timedelta(seconds=30), utcnow(), never)
    assert [r.id for r in abandoned] == [hasty.id]
    assert {(bot.id, bot.up(utcnow())) for bot in await repository.bots()} == {
        ("patient", True)}  # the dead one is forgotten
    assert (await rows(app, id=patient.id))[0].status == "running"


async def test_a_jobs_own_base_exception_is_its_runs_outcome_not_the_bots_end(app: App):
    """A job that raises a BaseException of its own, or KeyboardInterrupt itself, ended
    so: the bot records it, runs the rest, and exits 1."""
    odd = await app.defer("odd", "odd")
    interrupt = await app.defer("odd", "interrupt")
    after = await app.defer("noop", "after")
    assert await drain(app, concurrency=1) == 1
    found = {row.id: (row.status, row.error) for row in await rows(app)}
    assert found[odd.id] == ("failed", "Odd: odd")
    assert found[interrupt.id] == ("cancelled", "KeyboardInterrupt: from the job")
    assert found[after.id] == ("succeeded", None)


async def test_a_scheduled_retry_the_bots_reach_after_the_next_slot_is_not_started(app: App):
    """Try 2 was due 10 minutes after its slot, but no bot was up until 2 hours later: the
    next slot is the retry (SPEC 8), so it ends skipped, saying so, and never runs."""
    slot = (utcnow() - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    await app.repository.enqueue_slots(
        [NewRun("hourly", origin="schedule", scheduled_for=slot)], utcnow())
    assert await Bot(app, grace=5, clock=lambda: slot + timedelta(seconds=5)).run(once=True) == 0
    later = Bot(app, grace=5, clock=lambda: slot + timedelta(hours=2))
    assert await later.run(once=True) == 0
    tries = [(r.attempt, r.status, r.error)
             for r in await rows(app, job="hourly", scheduled_for=slot)]
    shown = (slot + timedelta(hours=1)).astimezone(app.settings.timezone).isoformat()
    assert tries == [(1, "failed", "ValueError: down"),
                     (2, "skipped", f"skipped: try 2 did not start before the next slot, "
                                    f"{shown}, which is the retry")]
    # It ran its own latest slot too, which failed and got a retry: not a failure yet.
    assert later.outcomes == {"skipped": 1, "retried": 1}


async def test_an_abandoned_scheduled_run_past_its_next_slot_says_why_it_is_not_retried(
        app: App):
    slot = (utcnow() - timedelta(hours=3)).replace(minute=0, second=0, microsecond=0)
    await app.repository.enqueue_slots(
        [NewRun("hourly", origin="schedule", scheduled_for=slot)], utcnow())
    (taken,) = await app.repository.claim("gone", ["hourly"], 1, utcnow())
    await app.repository.register("gone", "host", 1, utcnow() - timedelta(minutes=5))
    await drain(app)  # its first beat finds "gone" dead
    (row,) = await rows(app, id=taken.id)
    shown = (slot + timedelta(hours=1)).astimezone(app.settings.timezone).isoformat()
    assert (row.status, row.error) == ("abandoned", (
        "abandoned: its bot stopped beating (not retried: the next try would be due at or "
        f"after the next slot, {shown}, which is the retry)"))
    assert await rows(app, retry_of=taken.id) == []


async def test_the_claim_takes_what_other_bots_left(app: App):
    for name in "abc":
        await app.defer("slow", name)
    first = await app.repository.claim("one", ["slow"], 2, utcnow())
    second = await app.repository.claim("two", ["slow"], 2, utcnow())
    assert len(first) == 2 and len(second) == 1
    assert not {r.id for r in first} & {r.id for r in second}


async def test_waiting_gives_up_after_its_timeout_and_the_run_goes_on(app: App):
    run = await app.defer("noop")
    with pytest.raises(TimeoutError) as waited:
        await run.wait(timeout=0.2)
    assert str(waited.value) == (f"run {run.id} ('noop') did not end within 0.2 s; it goes "
                                 "on: wait again, or cancel it")
    assert waited.value.__suppress_context__ and waited.value.__cause__ is None
    assert await run.status() == "queued"
    await asyncio.wait_for(drain(app), 30)
    await run.wait(timeout=5)


async def test_a_bot_that_dies_mid_fan_out_leaves_its_unclaimed_tenants_to_the_others(
        app: App):
    run = await app.defer("per-tenant")
    (fan_out,) = await app.repository.claim("first", ["per-tenant"], 1, utcnow())
    tenants = await app.runner.select_tenants(app.jobs.get("per-tenant"))
    await app.repository.expand(fan_out, "first", [t.id for t in tenants], utcnow())
    (taken,) = await app.repository.claim("first", ["per-tenant"], 1, utcnow())
    # "first" dies here: its one tenant run is abandoned, the other two wait for any bot.
    await app.repository.register("first", "host", 1, utcnow() - timedelta(minutes=5))
    await app.repository.abandon_dead("peer", timedelta(seconds=30), utcnow(),
                                      lambda *_: (None, None))
    assert await drain(app) == 1
    by_tenant = {r.tenant_id: r.status for r in await rows(app, parent_id=run.id)}
    assert by_tenant[taken.tenant_id] == "abandoned"
    assert sorted(by_tenant) == [1, 2, 3]
    assert [s for t, s in by_tenant.items() if t != taken.tenant_id] in (
        ["succeeded", "failed"], ["failed", "succeeded"])


@pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=needs_postgres)],
                         indirect=True)
def test_a_bot_that_may_not_claim_starts_nothing_and_says_so(root: Path, database_url: str):
    """Defect 5: a runs table the bot cannot write stops it before any run starts."""
    import uuid

    from sqlalchemy.engine import make_url

    role = f"reader_{uuid.uuid4().hex[:8]}"
    url = make_url(database_url)
    asyncio.run(_on_postgres(
        database_url, f"CREATE ROLE {role} LOGIN", f"GRANT USAGE ON SCHEMA public TO {role}",
        f"GRANT SELECT, INSERT ON ALL TABLES IN SCHEMA public TO {role}",
        f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}"))
    try:
        env = {"PINREPL_DATABASE_URL": url.set(username=role).render_as_string(False)}

        async def queue() -> None:
            async with App.open(root, environ={"PINREPL_DATABASE_URL": database_url}) as app:
                await app.defer("noop", "never")

        asyncio.run(queue())
        result = invoke("bot", "--once", "--app", root, env=env)
        assert result.exit_code == 2
        assert "permission denied" in result.stderr.splitlines()[-1]
        assert "run started" not in result.stderr
        assert executions(root) == []
    finally:
        asyncio.run(_on_postgres(database_url, f"DROP OWNED BY {role}", f"DROP ROLE {role}"))


async def test_the_bot_emits_each_runs_lifecycle_as_events(app: App):
    from pinrepl.bot.events import BotDown, BotUp, RunEnded, RunStarted

    await app.defer("flaky", 1)
    bot = Bot(app, grace=5)
    heard: list[Any] = []
    bot.events.subscribe(heard.append)
    await bot.run(once=True)
    kinds = [type(event).__name__ for event in heard]
    assert kinds[0] == "BotUp" and kinds[-1] == "BotDown"
    ended = [event for event in heard if isinstance(event, RunEnded)]
    assert [(e.status, e.run.attempt) for e in ended] == [("failed", 1), ("succeeded", 2)]
    assert ended[0].retry_at is not None and ended[0].seconds >= 0
    assert len([e for e in heard if isinstance(e, RunStarted)]) == 2
    assert isinstance(heard[0], BotUp) and isinstance(heard[-1], BotDown)


def test_an_idle_bot_starts_a_run_deferred_now_at_once(root: Path, database_url: str):
    """Woken by the deferring transaction on PostgreSQL (LISTEN/NOTIFY; its polling is
    every 5 s, so three starts in a row within a second are no luck of the poll), polling
    every 0.5 s on SQLite: within a second either way."""
    import time

    from .conftest import Bot as BotProcess

    bot = BotProcess(root, database_url)
    try:
        bot.wait_for("started: app")
        if not database_url.startswith("sqlite"):
            bot.wait_for("listening for deferred runs")

        async def defer_three() -> list[float]:
            async with App.open(root, environ={"PINREPL_DATABASE_URL": database_url}) as app:
                deferred_at = []
                for _ in range(3):
                    deferred_at.append(time.time())
                    await (await app.defer("noop", "now")).wait(timeout=10)
                return deferred_at

        deferred_at = asyncio.run(defer_three())
        started = [line["at"] for line in executions(root) if line["job"] == "noop"]
        assert [round(start - deferred, 1) < 1.0 for start, deferred in zip(
            started, deferred_at, strict=True)] == [True, True, True], (started, deferred_at)
    finally:
        bot.stop()


async def test_a_fan_out_whose_bot_died_before_queueing_its_tenants_is_queued_again(
        app: App):
    run = await app.defer("per-tenant")
    await app.repository.register("gone", "host", 1, utcnow() - timedelta(minutes=5))
    (claimed,) = await app.repository.claim("gone", ["per-tenant"], 1, utcnow())
    assert claimed.id == run.id  # claimed, and its bot died before it selected tenants
    assert await drain(app) == 1  # this bot finds it queued again, and runs it: globex fails
    statuses = sorted((r.tenant_id, r.attempt, r.status) for r in await rows(app, parent_id=run.id))
    assert [t for t, _a, _s in statuses] == [1, 2, 2, 3]
    assert (await rows(app, id=run.id))[0].status == "failed"


async def test_slots_that_waited_through_an_outage_run_the_latest_and_the_rest_are_missed(
        app: App, caplog: pytest.LogCaptureFixture):
    from pinrepl.bot.outage import Outage
    from pinrepl.bot.plan import Fire
    from pinrepl.bot.scheduler import Scheduler
    from pinrepl.schedules import Schedule

    spec = app.jobs.get("noop")
    schedule = Schedule("* * * * * *")
    base = utcnow().replace(microsecond=0)
    slots = [base - timedelta(seconds=n) for n in (3, 2, 1)]
    # Another bot, not cut off, wrote the first of them.
    await app.repository.enqueue_slots(
        [NewRun("noop", origin="schedule", scheduled_for=slots[0])], utcnow())

    async def probe() -> None:
        pass

    class CutOff:
        """The repository, away for its first write."""

        away = True

        async def enqueue_slots(self, runs: list[NewRun], now: datetime) -> list[RunRow]:
            if self.away:
                self.away = False
                raise ConnectionRefusedError("connection refused")
            return await app.repository.enqueue_slots(runs, now)

    outage = Outage(probe)
    scheduler = Scheduler(CutOff(), outage, utcnow)  # type: ignore[arg-type]
    scheduler.add(Fire(spec, schedule, slot) for slot in slots)
    assert await scheduler.write() is None  # they wait through the outage
    assert await scheduler.write() is None and outage.away  # not tried while it is away
    outage.answered()  # the probe got an answer
    new = await scheduler.write()
    await outage.aclose()
    assert new is not None
    assert sorted((r.scheduled_for, r.status) for r in new) == [
        (slots[1], "skipped"), (slots[2], "queued")]
    assert "missed" in next(r.error for r in new if r.status == "skipped")


async def test_slots_that_waited_for_a_busy_bot_run_the_latest_and_say_why_not_the_rest(
        app: App):
    from pinrepl.bot.outage import Outage
    from pinrepl.bot.plan import Fire
    from pinrepl.bot.scheduler import OVERTAKEN, Scheduler
    from pinrepl.schedules import Schedule

    base = utcnow().replace(microsecond=0)
    slots = [base - timedelta(seconds=n) for n in (2, 1)]

    async def probe() -> None:
        pass

    scheduler = Scheduler(app.repository, Outage(probe), utcnow)
    scheduler.add(Fire(app.jobs.get("noop"), Schedule("* * * * * *"), slot) for slot in slots)
    new = await scheduler.write()
    assert new is not None
    assert sorted((r.scheduled_for, r.status, r.error) for r in new) == [
        (slots[0], "skipped", OVERTAKEN), (slots[1], "queued", None)]
    assert "database" not in OVERTAKEN  # it was up


async def test_waiting_follows_its_own_runs_tries_not_a_twins(app: App):
    at = utcnow() + timedelta(seconds=-1)
    first = await app.defer_job("flaky", [10], at=at)  # fails every try
    twin = await app.defer_job("flaky", [10], at=at)  # the same job, arguments and time
    await drain(app)
    tries = await rows(app, job="flaky")
    assert sorted(r.retry_of for r in tries if r.retry_of) == [first.id] * 3 + [twin.id] * 3
    with pytest.raises(RunFailed) as failed:
        await twin.wait(timeout=5)
    assert failed.value.run_id in {r.id for r in tries if r.retry_of == twin.id}
