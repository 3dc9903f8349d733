"""One bot on SQLite for a few seconds, with per-second jobs side by side: every slot once
and never early, overlap, failures of a job and of a tenant, SIGTERM while jobs run, and
the history as `list-background-jobs` and `list-background-job-runs` show it."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from datetime import datetime

import pytest

from ..conftest import invoke, one_line
from .conftest import (
    Bot,
    assert_every_second_once,
    at,
    bot_app,
    executions,
    fan_outs,
    left_waiting,
    runs,
    tenant_runs,
)

#: One worker runs this module: its tests share a module fixture (pytest-xdist).
pytestmark = pytest.mark.xdist_group("bot_run")

JOBS = {
    "tick.py": """
        from pinrepl import BackgroundJob
        from ._record import record

        class Tick(BackgroundJob):
            def meta(self):
                self.schedule("* * * * * *")
                self.schedule("*/1 * * * * *")  # the same instants: one run each

            async def run(self):
                record("tick")
    """,
    "slow.py": """
        import asyncio
        from pinrepl import BackgroundJob
        from ._record import record

        class Slow(BackgroundJob):
            def meta(self):
                self.schedule("* * * * * *")

            async def run(self):
                record("slow")
                await asyncio.sleep(2.2)
                record("slow", end=True)
    """,
    "slow_overlap.py": """
        import asyncio
        from pinrepl import BackgroundJob
        from ._record import record

        class SlowOverlap(BackgroundJob):
            overlap = True

            def meta(self):
                self.schedule("* * * * * *")

            async def run(self):
                record("slow-overlap")
                await asyncio.sleep(2.2)
    """,
    "fails.py": """
        from pinrepl import BackgroundJob
        from ._record import record

        class Fails(BackgroundJob):
            def meta(self):
                self.schedule("* * * * * *", "a", size=2)

            async def run(self, word, size):
                record("fails", word=word, size=size)
                raise ValueError(f"bad {word}")
    """,
    "per_tenant.py": """
        from pinrepl import BackgroundJob
        from ._record import record

        class PerTenant(BackgroundJob):
            multi_tenant = True
            tenant_concurrency = 2

            def meta(self):
                self.schedule("* * * * * *")

            def tenants_filter(self, tenants):
                return tenants.where(active=True)

            async def run(self):
                record("per-tenant", self.tenant.name)
                if self.tenant.name == "globex":
                    raise RuntimeError("globex is down")
    """,
}


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """The app, its URL, the bot's exit status and log, and the history: the bot ran for
    about four seconds and was stopped with SIGTERM while `slow` ran."""
    root = tmp_path_factory.mktemp("bot") / "app"
    url = f"sqlite+aiosqlite:///{root.parent / 'bot.db'}"
    bot_app(root, JOBS, url, tenants=["acme", "globex", "initech"])
    bot = Bot(root, url)
    bot.wait_for("started")
    bot.wait_for("run succeeded: tick slot", count=5)
    bot.wait_for("run started: slow")
    # While slow runs, but between two slots of per-tenant: a fan-out's tenants still queued
    # at the signal would wait for the next bot, and its slot would not have ended.
    bot.wait_for("fan-out run", count=bot.log.count("fan-out run") + 1)
    status = bot.stop()
    return root, url, status, bot.log, runs(root, url)


def of(rows, job):
    return [row for row in rows if row["job"] == job]


def test_every_slot_runs_once_never_early_and_the_history_says_so(ran):
    root, _url, _status, log, rows = ran
    ticks = of(rows, "tick")
    slots = assert_every_second_once(row["scheduled_for"] for row in ticks)
    bot_id = log.split("bot ", 1)[1].split(" started", 1)[0]
    for row in ticks:
        assert (row["status"], row["tenant_id"], row["args"], row["error"], row["bot"]) == (
            "succeeded", None, {"args": [], "kwargs": {}}, None, bot_id)
        assert at(row["scheduled_for"]) <= at(row["started_at"]) <= at(row["finished_at"])
    done = sorted(e["at"] for e in executions(root) if e["job"] == "tick")
    assert len(done) == len(slots)
    for slot, executed in zip(slots, done, strict=True):
        assert executed >= slot.timestamp()
    # The listing is newest first by id; a slot's first try is inserted when it comes due,
    # so those follow their slots (a fan-out's tenants come later: when it is expanded).
    ids = [row["id"] for row in rows]
    assert ids == sorted(ids, reverse=True)
    first_tries = [at(row["scheduled_for"]) for row in rows
                   if row["parent_id"] is None and row["attempt"] == 1]
    assert first_tries == sorted(first_tries, reverse=True)


def test_a_slot_is_skipped_while_the_earlier_run_is_running_unless_overlap(ran):
    root, _url, _status, _log, rows = ran
    slow = Counter(row["status"] for row in of(rows, "slow"))
    assert slow["skipped"] >= 2 and slow["succeeded"] >= 2, slow
    assert set(slow) == {"skipped", "succeeded"}
    starts = sorted(e["at"] for e in executions(root) if e["job"] == "slow" and "end" not in e)
    assert all(b - a >= 2.2 for a, b in itertools.pairwise(starts))

    overlapping = of(rows, "slow-overlap")
    assert {row["status"] for row in overlapping} == {"succeeded"}
    assert_every_second_once(row["scheduled_for"] for row in overlapping)
    starts = sorted(e["at"] for e in executions(root) if e["job"] == "slow-overlap")
    assert any(b - a < 1.5 for a, b in itertools.pairwise(starts))


def test_a_failing_job_and_a_failing_tenant_are_recorded_and_logged_and_the_bot_goes_on(ran):
    root, _url, _status, log, rows = ran
    fails = of(rows, "fails")
    assert len(fails) >= 4
    assert all((r["status"], r["error"], r["args"]) == (
        "failed", "ValueError: bad a", {"args": ["a"], "kwargs": {"size": 2}}) for r in fails)
    assert 'run failed: fails ["a"] {"size": 2} slot' in log
    assert "ValueError: bad a\nin background job 'fails'" in log
    assert "Traceback (most recent call last)" in log

    waiting = {row["id"] for row in left_waiting(rows)}  # none, unless stopped mid-fan-out
    per_tenant = [r for r in tenant_runs(of(rows, "per-tenant")) if r["id"] not in waiting]
    tenants = {row["tenant_id"] for row in per_tenant}
    assert tenants == {1, 2, 3}
    for row in per_tenant:
        expected = ("failed", "RuntimeError: globex is down") if row["tenant_id"] == 2 else (
            "succeeded", None)
        assert (row["status"], row["error"]) == expected
    assert_every_second_once(r["scheduled_for"] for r in per_tenant if r["tenant_id"] == 3)
    assert "run failed: per-tenant tenant 2 (globex) slot" in log
    # Each slot's fan-out row ends when its tenants have: failed, saying how many did not
    # succeed.
    slots = of(rows, "per-tenant")
    for fan_out in [r for r in fan_outs(slots) if r["id"] not in waiting]:
        assert (fan_out["status"], fan_out["error"]) == ("failed", "1 of 3 tenants did not succeed")
        assert sorted(r["tenant_id"] for r in per_tenant if r["parent_id"] == fan_out["id"]) == [
            1, 2, 3]
    assert len(fan_outs(slots)) >= len({r["parent_id"] for r in per_tenant}) >= 4
    after_failure = min(at(r["scheduled_for"]) for r in fails)
    assert sum(at(r["scheduled_for"]) > after_failure for r in of(rows, "tick")) >= 3
    done = Counter(e["tenant"] for e in executions(root) if e["job"] == "per-tenant")
    assert done == Counter({name: len([r for r in per_tenant if r["tenant_id"] == number])
                            for number, name in ((1, "acme"), (2, "globex"), (3, "initech"))})


def test_sigterm_lets_the_running_jobs_finish_and_exits_0(ran):
    root, _url, status, log, rows = ran
    assert status == 0, log
    assert "SIGTERM: claiming no more runs" in log
    assert not [row for row in rows if row["status"] == "cancelled"]
    left_waiting(rows)  # nothing running but what waits for the next bot
    slow = [e for e in executions(root) if e["job"] == "slow"]
    assert len([e for e in slow if e.get("end")]) == len([e for e in slow if not e.get("end")])
    stopped_at = log.index("SIGTERM")
    assert "run succeeded: slow slot" in log[stopped_at:]
    assert "stopped:" in log[stopped_at:]


def test_list_background_jobs_shows_the_last_run(ran):
    root, url, *_ = ran
    env = {"PINREPL_DATABASE_URL": url}
    listed = invoke("list-background-jobs", "--json", "--app", root, env=env)
    jobs = {job["name"]: job for job in json.loads(listed.stdout)["jobs"]}
    assert jobs["tick"]["last_run"]["status"] == "succeeded"
    assert jobs["fails"]["last_run"]["status"] == "failed"
    last = jobs["per-tenant"]["last_run"]
    assert (last["status"], last["runs"], last["counts"]) == (
        "failed", 3, {"failed": 1, "succeeded": 2})
    assert datetime.fromisoformat(last["scheduled_for"]).tzinfo is not None

    table = invoke("list-background-jobs", "--app", root, env={**env, "COLUMNS": "200"}).stdout
    assert "last run" in table and "failed (1 of 3)" in table


def test_list_background_job_runs_filters_newest_first(ran):
    root, url, *_ = ran
    env = {"PINREPL_DATABASE_URL": url}
    # Of each slot, globex's run and the fan-out row (tenant null) failed.
    failed = runs(root, url, "--name", "per-tenant", "--status", "failed", "--limit", "4")
    assert len(failed) == 4
    assert {(r["job"], r["status"], r["tenant_id"]) for r in failed} == {
        ("per-tenant", "failed", 2), ("per-tenant", "failed", None)}
    slots = [at(r["scheduled_for"]) for r in failed]
    assert slots == sorted(slots, reverse=True) and slots[0] > slots[-1]
    assert set(failed[0]) == {"id", "job", "tenant_id", "args", "scheduled_for", "status",
                              "bot", "started_at", "finished_at", "error", "origin",
                              "attempt", "parent_id", "priority", "key", "created_at",
                              "timeout", "not_before", "traceback", "retry_of",
                              "cancel_requested_at"}
    assert {(r["origin"], r["attempt"]) for r in failed} == {("schedule", 1)}
    assert all("RuntimeError: globex is down" in r["traceback"]
               for r in failed if r["tenant_id"] == 2)
    table = invoke("list-background-job-runs", "--name", "fails", "--limit", "1", "--app",
                   root, env={**env, "COLUMNS": "200"})
    assert table.exit_code == 0
    assert 'fails ["a"] {"size": 2}' in table.stdout and "failed" in table.stdout
    assert runs(root, url, "--name", "tick", "--status", "cancelled") == []


def test_list_background_job_runs_of_an_unknown_job_is_one_line_with_suggestions(ran):
    root, url, *_ = ran
    result = invoke("list-background-job-runs", "--name", "tik", "--app", root,
                    env={"PINREPL_DATABASE_URL": url})
    assert one_line(result) == "unknown background job 'tik' (did you mean: tick?)"
