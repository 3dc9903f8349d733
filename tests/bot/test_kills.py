"""Bots that die: three bots on PostgreSQL, one of them killed with SIGKILL and started
again every two seconds. No slot runs twice, none is missed, and the runs of the killed
bots end `abandoned` (marked by a live bot once the lease is over), never stuck `running`."""

from __future__ import annotations

import time
from collections import Counter

from ..conftest import needs_postgres, postgres_database
from .conftest import (
    Bot,
    assert_every_second_once,
    bot_app,
    executions,
    runs,
    stop_all,
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
        victims = []
        for _ in range(4):
            born = time.monotonic()
            victim = Bot(root, url, "--lease", LEASE)
            victims.append(victim)
            victim.wait_for("run started: work")
            time.sleep(max(0.0, born + 2 - time.monotonic()))
            victim.kill()
        wait_for_any(steady, "abandoned (no heartbeat", timeout=10)
        time.sleep(2.5)  # the last victim's runs outlive the lease, then are abandoned
        assert stop_all(steady) == [0, 0], [bot.log for bot in steady]
        rows = runs(root, url)

    statuses = Counter(row["status"] for row in rows)
    assert set(statuses) <= {"succeeded", "abandoned"}, statuses
    assert statuses["abandoned"] >= 1
    victim_ids = {_bot_id(bot) for bot in victims}
    assert {row["bot"] for row in rows if row["status"] == "abandoned"} <= victim_ids
    for tenant in (1, 2, 3, 4):
        assert_every_second_once(r["scheduled_for"] for r in rows if r["tenant_id"] == tenant)
    done = Counter(e["tenant"] for e in executions(root))
    for tenant in (1, 2, 3, 4):
        ended = Counter(r["status"] for r in rows if r["tenant_id"] == tenant)
        # An abandoned run may have died before its job started; none ran twice.
        assert ended["succeeded"] <= done[tenant] <= ended["succeeded"] + ended["abandoned"]
    logs = "".join(bot.log for bot in steady)
    assert "abandoned (no heartbeat for 1 s)" in logs


def _bot_id(bot: Bot) -> str:
    return bot.log.split("bot ", 1)[1].split(" started", 1)[0]
