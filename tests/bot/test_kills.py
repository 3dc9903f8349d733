"""Bots that die: two steady bots on PostgreSQL beside a third killed with SIGKILL as soon
as it starts a run, and started again (at least three times). No slot runs twice, none is
missed, and the runs of the killed bots end `abandoned` (marked by a live bot once the
lease is over), never stuck `running`."""

from __future__ import annotations

import time
from collections import Counter

from ..conftest import needs_postgres, postgres_database
from .conftest import (
    Bot,
    assert_every_second_once,
    bot_app,
    executions,
    fan_outs,
    left_waiting,
    runs,
    stop_all,
    tenant_runs,
    wait_for_any,
)

JOBS = {
    "work.py": """
        import asyncio
        from pinrepl import BackgroundJob
        from ._record import record

        class Work(BackgroundJob):
            multi_tenant = True
            tenant_concurrency = 2
            overlap = True

            def meta(self):
                self.schedule("* * * * * *")

            async def run(self):
                record("work", self.tenant.id)
                await asyncio.sleep(0.6)
    """,
}
LEASE = "1"


@needs_postgres
def test_killed_bots_runs_end_abandoned_and_no_slot_runs_twice_or_is_missed(tmp_path):
    with postgres_database() as url:
        root = bot_app(tmp_path / "app", JOBS, url, ["a", "b", "c", "d"])
        steady = [Bot(root, url, "--lease", LEASE) for _ in range(2)]
        victims: list[Bot] = []
        try:
            # Three bots killed as they run, and more until one died with a run under way
            # (a row of its own still `running`, which a dead bot can never end): what is
            # observed, not hoped for.
            while len(victims) < 3 or (
                    not _killed_mid_run(root, url, victims) and len(victims) < 8):
                victim = Bot(root, url, "--lease", LEASE)
                victims.append(victim)
                victim.wait_for("run started: work")
                victim.kill()
            assert _killed_mid_run(root, url, victims), "no bot was killed during a run"
            wait_for_any(steady, "abandoned (no heartbeat", timeout=10)
            _wait_until_none_running(root, url, victims)
            assert stop_all(steady) == [0, 0], [bot.log for bot in steady]
        finally:
            for bot in [*steady, *victims]:
                if bot.process.poll() is None:
                    bot.kill()
        rows = runs(root, url)

    waiting = {row["id"] for row in left_waiting(rows)}  # the last slot's, at the signals
    tenants_runs = [row for row in tenant_runs(rows) if row["id"] not in waiting]
    statuses = Counter(row["status"] for row in tenants_runs)
    assert set(statuses) <= {"succeeded", "abandoned"}, statuses
    assert statuses["abandoned"] >= 1
    victim_ids = {_bot_id(bot) for bot in victims}
    assert {row["bot"] for row in rows if row["status"] == "abandoned"} <= victim_ids
    # A slot's fan-out row ends failed when a tenant's run was abandoned, and says how many.
    for fan_out in fan_outs(rows):
        if fan_out["id"] in waiting:
            continue
        lost = sum(row["status"] == "abandoned" for row in tenants_runs
                   if row["parent_id"] == fan_out["id"])
        assert (fan_out["status"], fan_out["error"]) == (
            ("failed", f"{lost} of 4 tenants did not succeed") if lost else ("succeeded", None))
    for tenant in (1, 2, 3, 4):
        assert_every_second_once(r["scheduled_for"] for r in rows if r["tenant_id"] == tenant)
    done = Counter(e["tenant"] for e in executions(root))
    for tenant in (1, 2, 3, 4):
        ended = Counter(r["status"] for r in tenants_runs if r["tenant_id"] == tenant)
        # An abandoned run may have died before its job started; none ran twice.
        assert ended["succeeded"] <= done[tenant] <= ended["succeeded"] + ended["abandoned"]
    logs = "".join(bot.log for bot in steady)
    assert "abandoned (no heartbeat for 1 s)" in logs


def _bot_id(bot: Bot) -> str:
    return bot.log.split("bot ", 1)[1].split(" started", 1)[0]


def _killed_mid_run(root, url, victims: list[Bot]) -> bool:
    """Whether a killed bot left a run it had started (`running`, later `abandoned`)."""
    dead = {_bot_id(bot) for bot in victims}
    return any(row["bot"] in dead and row["status"] in ("running", "abandoned")
               for row in runs(root, url))


def _wait_until_none_running(root, url, victims: list[Bot], timeout: float = 20) -> None:
    """Until a live bot has marked every run the killed ones left `running` abandoned."""
    dead = {_bot_id(bot) for bot in victims}
    deadline = time.monotonic() + timeout
    while any(row["bot"] in dead and row["status"] == "running" for row in runs(root, url)):
        assert time.monotonic() < deadline, "runs of killed bots still running"
        time.sleep(0.2)
