"""Control (SPEC 9) through the app's Python API, in this process, on SQLite and PostgreSQL:
pauses and what the statements make of them (slots skipped, queued runs held by the claim),
retrying and cancelling runs, the run listing's filters and pages, the bots."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from pinrepl import App, BadJobArguments, UnknownBackgroundJob, UnknownTenant
from pinrepl.db.models import utcnow
from pinrepl.errors import BadRunFilter, NoTenantsGiven
from pinrepl.runs.control import Cancelled, Pause, RunFilter
from pinrepl.runs.repository import NewRun, Result

from ..bot.conftest import bot_app

JOBS = {
    "noop.py": """
        from pinrepl import BackgroundJob

        class Noop(BackgroundJob):
            async def run(self, *args):
                pass
    """,
    "per-tenant.py": """
        from pinrepl import BackgroundJob

        class PerTenant(BackgroundJob):
            multi_tenant = True

            async def run(self):
                pass
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


async def rows(app: App, **where: Any) -> list[Any]:
    database = app.database()
    try:
        query = database.background_job_runs
        if where:
            query = query.where(**where)
        return await query.order_by("id").all()
    finally:
        await database.aclose()


def slot(job: str, seconds_ago: float = 0) -> NewRun:
    return NewRun(job, origin="schedule", scheduled_for=utcnow() - timedelta(seconds=seconds_ago))


# -- pauses ---------------------------------------------------------------------------------


async def test_a_pause_is_in_force_until_resumed_and_pausing_again_changes_its_reason(app):
    await app.pause_job("noop", reason="deploy")
    (pause,) = await app.pauses()
    assert (pause.job, pause.tenant_id, pause.reason) == ("noop", None, "deploy")
    await app.pause_job("noop", reason="still deploying")
    (again,) = await app.pauses()
    assert again == Pause("noop", None, "still deploying", pause.since)
    await app.pause_job("noop", tenants=["globex", 1])
    assert [(p.tenant_id, p.reason) for p in await app.pauses()] == [
        (None, "still deploying"), (1, None), (2, None)]
    assert await app.resume_job("noop", tenants=["acme"]) == 1
    assert await app.resume_job("noop") == 2
    assert await app.resume_job("noop") == 0
    assert await app.pauses() == []


async def test_pausing_an_unknown_job_or_tenant_changes_nothing(app):
    with pytest.raises(UnknownBackgroundJob, match=r"'nop' .*did you mean: noop"):
        await app.pause_job("nop")
    with pytest.raises(UnknownTenant):
        await app.pause_job("noop", tenants=["acme", "umbrella"])
    with pytest.raises(UnknownBackgroundJob):
        await app.resume_job("nop")
    assert await app.pauses() == []


async def test_an_empty_list_of_tenants_is_refused_not_the_whole_job(app):
    await app.pause_job("noop", tenants=["acme"])
    with pytest.raises(NoTenantsGiven) as paused:
        await app.pause_job("noop", tenants=[])
    with pytest.raises(NoTenantsGiven) as resumed:
        await app.resume_job("noop", tenants=iter(()))
    assert str(paused.value) == ("the tenants given name no tenant: leave them out to pause "
                                 "the whole job")
    assert str(resumed.value).endswith("leave them out to resume the whole job")
    assert [(p.job, p.tenant_id) for p in await app.pauses()] == [("noop", 1)]


async def test_a_paused_jobs_slots_are_skipped_saying_why(app):
    queued_before = await app.repository.enqueue_slots([slot("noop", 2)], utcnow())
    await app.pause_job("noop", reason="deploy")
    (before,) = await rows(app, id=queued_before[0].id)
    assert (before.status, before.error) == ("skipped", "paused: deploy")
    (new,) = await app.repository.enqueue_slots([slot("noop")], utcnow())
    assert (new.status, new.error) == ("skipped", "paused: deploy")
    await app.pause_job("noop")
    (unsaid,) = await app.repository.enqueue_slots([slot("noop", 1)], utcnow())
    assert (unsaid.status, unsaid.error) == ("skipped", "paused: deploy")  # no new reason
    await app.resume_job("noop")
    (after,) = await app.repository.enqueue_slots([slot("noop", 3)], utcnow())
    assert after.status == "queued"


async def test_a_paused_jobs_deferred_runs_wait_in_the_queue_until_it_is_resumed(app):
    run = await app.defer("noop")
    await app.pause_job("noop", reason="deploy")
    assert await app.repository.claim("bot", ["noop"], 10, utcnow()) == []
    assert await run.status() == "queued"
    assert await app.resume_job("noop") == 1
    (claimed,) = await app.repository.claim("bot", ["noop"], 10, utcnow())
    assert claimed.id == run.id


async def test_a_tenants_pause_holds_that_tenants_runs_only(app):
    run = await app.defer_job("per-tenant", tenants=["acme", "globex", "initech"])
    await app.pause_job("per-tenant", tenants=["globex"], reason="migrating")
    claimed = await app.repository.claim("bot", ["per-tenant"], 10, utcnow())
    assert sorted(r.tenant_id for r in claimed) == [1, 3]
    (held,) = await rows(app, parent_id=run.id, tenant_id=2)
    assert held.status == "queued"


async def test_a_scheduled_fan_out_skips_its_paused_tenants(app):
    await app.pause_job("per-tenant", tenants=["globex"], reason="migrating")
    (fan_out,) = await app.repository.enqueue_slots([slot("per-tenant")], utcnow())
    assert fan_out.status == "queued"
    (claimed,) = await app.repository.claim("bot", ["per-tenant"], 1, utcnow())
    assert await app.repository.expand(claimed, "bot", [1, 2, 3], utcnow()) == 2
    children = {r.tenant_id: (r.status, r.error) for r in await rows(app, parent_id=fan_out.id)}
    assert children == {1: ("queued", None), 2: ("skipped", "paused: migrating"),
                        3: ("queued", None)}


async def test_in_process_runs_of_a_paused_job_run_with_a_note(app, caplog):
    await app.pause_job("noop", reason="deploy")
    await app.run_job("noop", record="cli")
    (row,) = await rows(app)
    assert row.status == "succeeded"
    notes = [r.getMessage() for r in caplog.records if "paused" in r.getMessage()]
    assert notes == ["background job 'noop' is paused (deploy): it runs anyway, as asked "
                     "(pinrepl resume-job --name noop lifts the pause)"]


# -- retrying -------------------------------------------------------------------------------


async def test_retry_queues_a_new_try_of_each_run_that_did_not_succeed_once(app):
    failed = await app.defer("noop", "a")
    ok = await app.defer("noop", "b")
    await app.repository.claim("bot", ["noop"], 10, utcnow())
    await app.repository.finish([
        Result(failed.id, "failed", utcnow(), "ValueError: boom", bot="bot"),
        Result(ok.id, "succeeded", utcnow(), bot="bot")], utcnow())
    (new,) = await app.retry_runs(RunFilter(job="noop"))
    (row,) = await rows(app, id=new)
    assert (row.status, row.origin, row.attempt, row.retry_of, row.args) == (
        "queued", "defer", 2, failed.id, '{"args":["a"],"kwargs":{}}')
    assert await app.retry_runs(RunFilter(job="noop")) == []  # its last try is queued
    assert await app.retry_runs(RunFilter(ids=(ok.id,))) == []  # it succeeded
    assert await failed.status() == "queued"  # the handle follows the new try


async def test_retrying_a_fan_out_retries_its_tenants_that_did_not_succeed(app):
    run = await app.defer_job("per-tenant", tenants=["acme", "globex"])
    tenants = await app.repository.claim("bot", ["per-tenant"], 10, utcnow())
    await app.repository.finish([
        Result(t.id, "failed" if t.tenant_id == 2 else "succeeded", utcnow(), bot="bot",
               parent_id=run.id) for t in tenants], utcnow())
    assert (await rows(app, id=run.id))[0].status == "failed"
    (new,) = await app.retry_runs(RunFilter(ids=(run.id,)))
    (row,) = await rows(app, id=new)
    assert (row.tenant_id, row.parent_id, row.attempt) == (2, run.id, 2)
    assert (await rows(app, id=run.id))[0].status == "running"  # until the try ends
    (again,) = await app.repository.claim("bot", ["per-tenant"], 10, utcnow())
    await app.repository.finish([Result(again.id, "succeeded", utcnow(), bot="bot",
                                        parent_id=run.id)], utcnow())
    assert (await rows(app, id=run.id))[0].status == "succeeded"


async def test_retry_by_status_and_tenant(app):
    runs = [await app.defer_job("noop", [n], tenants=None) for n in range(3)]
    await app.repository.claim("bot", ["noop"], 10, utcnow())
    await app.repository.finish([
        Result(runs[0].id, "failed", utcnow(), bot="bot"),
        Result(runs[1].id, "timed_out", utcnow(), bot="bot"),
        Result(runs[2].id, "cancelled", utcnow(), bot="bot")], utcnow())
    assert len(await app.retry_runs(RunFilter(job="noop", status="timed_out"))) == 1
    assert await app.retry_runs(RunFilter(job="noop", status="succeeded")) == []
    assert await app.retry_runs(RunFilter(job="noop", tenant_id=1)) == []
    assert len(await app.retry_runs(RunFilter(job="noop", since=utcnow() - timedelta(
        minutes=5)))) == 2


async def test_ids_of_a_tenant_reach_that_tenants_runs_only(app):
    fan_out = await app.defer_job("per-tenant", tenants=["acme", "globex"])
    acme, globex = await app.repository.tenant_runs(fan_out.id)
    assert await app.cancel_runs(RunFilter(ids=(acme.id, globex.id), tenant_id=acme.tenant_id)
                                 ) == Cancelled(queued=1, running=0)
    assert [(r.id, r.status) for r in await app.repository.tenant_runs(fan_out.id)] == [
        (acme.id, "cancelled"), (globex.id, "queued")]
    assert await app.retry_runs(RunFilter(ids=(acme.id,), tenant_id=globex.tenant_id)) == []
    (new,) = await app.retry_runs(RunFilter(ids=(acme.id,), tenant_id=acme.tenant_id))
    assert [r.id for r in await app.list_runs(RunFilter(ids=(new, globex.id),
                                                        tenant_id=globex.tenant_id))] == [
        globex.id]


# -- cancelling -----------------------------------------------------------------------------


async def test_cancel_ends_queued_runs_at_once_and_marks_running_ones_for_their_bot(app):
    running = await app.defer("noop", "running")
    await app.repository.claim("bot", ["noop"], 1, utcnow())
    queued = await app.defer("noop", "queued")
    assert await app.cancel_runs(RunFilter(job="noop")) == Cancelled(queued=1, running=1)
    assert await queued.status() == "cancelled"
    (row,) = await rows(app, id=running.id)
    assert row.status == "running" and row.cancel_requested_at is not None
    assert await app.repository.cancels_asked("bot") == {running.id}
    assert await app.repository.cancels_asked("another") == set()
    assert await app.cancel_runs(RunFilter(job="noop")) == Cancelled(0, 0)  # asked already
    assert await running.cancel() is False


async def test_cancel_by_status_leaves_the_others(app):
    running = await app.defer("noop", "running")
    await app.repository.claim("bot", ["noop"], 1, utcnow())
    queued = await app.defer("noop", "queued")
    assert await app.cancel_runs(RunFilter(job="noop", status="queued")) == Cancelled(1, 0)
    assert await running.status() == "running"
    assert await app.cancel_runs(RunFilter(job="noop", status="running")) == Cancelled(0, 1)
    assert await queued.status() == "cancelled"


async def test_cancelling_a_fan_out_cancels_its_tenants_and_it_ends_cancelled(app):
    run = await app.defer_job("per-tenant", tenants=["acme", "globex", "initech"])
    (taken,) = await app.repository.claim("bot", ["per-tenant"], 1, utcnow())
    assert await run.cancel() is True
    statuses = {r.tenant_id: r.status for r in await rows(app, parent_id=run.id)}
    assert sorted(statuses.values()) == ["cancelled", "cancelled", "running"]
    await app.repository.finish([Result(taken.id, "cancelled", utcnow(), bot="bot",
                                        parent_id=run.id)], utcnow())
    assert (await rows(app, id=run.id))[0].status == "cancelled"


async def test_a_fan_out_asked_to_cancel_while_it_is_expanded_queues_nothing(app):
    run = await app.defer("per-tenant")
    (claimed,) = await app.repository.claim("bot", ["per-tenant"], 1, utcnow())
    assert await app.cancel_runs(RunFilter(ids=(run.id,))) == Cancelled(0, 1)
    assert await app.repository.expand(claimed, "bot", [1, 2], utcnow()) == 0
    assert {r.status for r in await rows(app, parent_id=run.id)} == {"cancelled"}
    assert (await rows(app, id=run.id))[0].status == "cancelled"


async def test_in_process_runs_are_their_callers_to_cancel(app):
    recorder = app._recorder()
    run = await recorder.started("noop", (), {}, origin="cli")
    assert run is not None
    assert await app.cancel_runs(RunFilter(ids=(run.id,))) == Cancelled(0, 0)


# -- the listing ----------------------------------------------------------------------------


async def test_the_listing_is_newest_first_in_pages(app):
    ids = [(await app.defer("noop", n)).id for n in range(5)]
    first = await app.list_runs(RunFilter(), limit=2)
    assert [r.id for r in first] == ids[:-3:-1]
    second = await app.list_runs(RunFilter(), limit=2, before=first[-1].id)
    assert [r.id for r in second] == [ids[2], ids[1]]
    last = await app.list_runs(RunFilter(), limit=2, before=second[-1].id)
    assert [r.id for r in last] == [ids[0]]


async def test_the_listing_filters(app):
    await app.defer("noop")
    await app.run_job("noop", record="cli")
    fan_out = await app.defer_job("per-tenant", tenants=["globex"])
    assert [r.origin for r in await app.list_runs(RunFilter(origin="cli"))] == ["cli"]
    assert [r.parent_id for r in await app.list_runs(RunFilter(tenant_id=2))] == [fan_out.id]
    assert [r.status for r in await app.list_runs(RunFilter(job="noop", status="queued"))] \
        == ["queued"]
    assert len(await app.list_runs(RunFilter(since=utcnow() - timedelta(minutes=1)))) == 4
    assert await app.list_runs(RunFilter(since=utcnow() + timedelta(minutes=1))) == []
    assert (await app.get_run(fan_out.id)).job == "per-tenant"
    assert await app.get_run(10_000) is None
    with pytest.raises(UnknownBackgroundJob):
        await app.list_runs(RunFilter(job="nope"))


@pytest.mark.parametrize("bad", [
    {"status": "done"}, {"origin": "cron"}, {"ids": (1,), "job": "noop"},
    {"since": utcnow().replace(tzinfo=None)}, {"ids": ("1",)}, {"ids": (2**63,)}, {"ids": (0,)},
])
def test_a_bad_filter_is_one_line(bad):
    with pytest.raises(BadRunFilter) as refused:
        RunFilter(**bad)
    assert "\n" not in str(refused.value)


async def test_retry_and_cancel_of_an_unknown_job_change_nothing(app):
    await app.defer("noop")
    with pytest.raises(UnknownBackgroundJob):
        await app.cancel_runs(RunFilter(job="nope"))
    with pytest.raises(UnknownBackgroundJob):
        await app.retry_runs(RunFilter(job="nope"))
    assert [r.status for r in await rows(app)] == ["queued"]


async def test_the_bots_and_their_running_runs(app):
    await app.defer("noop")
    now = utcnow()
    await app.repository.register("one", "host-1", 11, now)
    await app.repository.register("two", "host-2", 22, now + timedelta(seconds=1))
    (claimed,) = await app.repository.claim("one", ["noop"], 1, now)
    one, two = await app.bots()
    assert (one.id, one.host, one.pid, [r.id for r in one.running]) == (
        "one", "host-1", 11, [claimed.id])
    assert (two.id, two.running) == ("two", [])


async def test_deferring_checks_still_come_first(app):
    with pytest.raises(BadJobArguments):
        await app.defer("per-tenant", 1)
