"""`runs` and `jobs['x'].pause()` at the REPL, through the console's namespace (the
prompt's, `--execute`'s and the transcripts'): what they return, beside what
`test_runs.transcript` shows. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from pinrepl.console.repl import session
from pinrepl.errors import BadRunFilter


async def insert_runs(database):
    """A failed run made three hours ago, and a queued one made now; their ids."""
    now = datetime.now(UTC)
    old = await database.background_job_runs.insert(
        job="send-email", args='{"args": ["a@b", "hi"], "kwargs": {}}', status="failed",
        scheduled_for=now - timedelta(hours=3), created_at=now - timedelta(hours=3),
        started_at=now - timedelta(hours=3), finished_at=now - timedelta(hours=3),
        origin="cli", error="OSError: smtp down")
    new = await database.background_job_runs.insert(
        job="send-email", args='{"args": ["c@d", "yo"], "kwargs": {}}', status="queued",
        scheduled_for=now, origin="defer")
    return old.id, new.id


async def test_runs_returns_the_records_shown_as_the_listing(example_app):
    async with session(example_app) as console:
        runs = console.namespace["runs"]
        old, new = await insert_runs(console.namespace["database"])
        found = await runs()
        assert [run.id for run in found] == [new, old]  # newest first
        assert found[1].arguments == (("a@b", "hi"), {})
        assert repr(found).splitlines()[0] == "background job runs (times in UTC):"
        assert "OSError: smtp down" in repr(found)
        assert [run.id for run in await runs(limit=1)] == [new]
        for since in ("1h", 3600, timedelta(hours=1), datetime.now(UTC) - timedelta(hours=1)):
            assert [run.id for run in await runs(since=since)] == [new], since
        naive = datetime.now(ZoneInfo("UTC")).replace(tzinfo=None) - timedelta(hours=4)
        assert len(await runs(since=naive)) == 2  # in the app's timezone
        assert [run.id for run in await runs(status="failed", origin="cli")] == [old]
        for bad in ({"since": "yesterday"}, {"since": -5}, {"limit": 0}, {"limit": 2**63},
                    {"status": "done"}, {"origin": "cron"}):
            with pytest.raises(BadRunFilter):
                await runs(**bad)


async def test_retry_and_cancel_return_what_they_did(example_app):
    async with session(example_app) as console:
        runs = console.namespace["runs"]
        _old, new = await insert_runs(console.namespace["database"])
        retried = await runs.retry(job="send-email")
        assert len(retried) == 1 and repr(retried) == f"queued 1 new try: run {retried[0]}"
        (again,) = await runs(job="send-email", status="queued", since="1m",
                              origin="defer", limit=1)
        assert again.id == retried[0] and again.args == (await runs(limit=3))[-1].args
        assert await runs.retry(id=[new]) == []  # queued: nothing to retry
        cancelled = await runs.cancel(id=[new, *retried])
        assert (cancelled.queued, cancelled.running, cancelled.total) == (2, 0, 2)
        assert repr(cancelled) == "cancelled 2 queued runs"
        assert {run.status for run in await runs(status="cancelled")} == {"cancelled"}
        for bad in ("12", 2**63, [1, 0]):
            with pytest.raises(BadRunFilter):
                await runs.cancel(id=bad)
            with pytest.raises(BadRunFilter):
                await runs.retry(id=bad)


async def test_pause_and_resume_are_the_apps(example_app, capsys):
    async with session(example_app) as console:
        job = console.namespace["jobs"]["send-email"]
        assert job.name == "send-email" and "pause" in dir(job)
        await job.pause(reason="deploy")
        assert [(p.job, p.tenant_id, p.reason) for p in await example_app.pauses()] == [
            ("send-email", None, "deploy")]
        await job.pause(reason="deploy", tenants="acme")
        assert await example_app.resume_job("send-email") == 2
        await job.resume()
        assert capsys.readouterr().out.splitlines() == [
            "paused 'send-email' (deploy): the bots skip its slots and leave its deferred "
            "runs queued until it is resumed",
            "paused 'send-email' for tenant acme (deploy): the bots skip its slots and leave "
            "its deferred runs queued until it is resumed",
            "'send-email' was not paused",
        ]
