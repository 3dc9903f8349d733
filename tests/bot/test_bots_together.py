"""Several bots on one database behave as one: two on SQLite (several processes on one
machine) and three on PostgreSQL, side by side for a few seconds. No slot runs twice, none
is missed, and the tenant runs of a slot are spread over the bots."""

from __future__ import annotations

import time
from collections import Counter

from ..conftest import needs_postgres, postgres_database
from .conftest import (
    TICK,
    Bot,
    assert_every_second_once,
    bot_app,
    executions,
    fan_outs,
    left_waiting,
    runs,
    stop_all,
    tenant_runs,
)

JOBS = {
    # On a busy machine a bot may record a tick's end after the next slot is due: overlap
    # is not this test's matter (tests/bot/test_bot_run.py has it).
    "tick.py": TICK.replace("class Tick(BackgroundJob):",
                            "class Tick(BackgroundJob):\n        overlap = True"),
    "fan_out.py": """
        import asyncio
        from pinrepl import BackgroundJob
        from ._record import record

        class FanOut(BackgroundJob):
            multi_tenant = True
            overlap = True  # a run that ends near the next slot is not this test's matter

            def meta(self):
                self.schedule("* * * * * *")

            async def run(self):
                record("fan-out", self.tenant.id)
                await asyncio.sleep(0.05)
    """,
}
TENANTS = [f"t{i}" for i in range(6)]


def start(root, url, count):
    bots = [Bot(root, url) for _ in range(count)]
    for bot in bots:
        bot.wait_for("started")
    return bots


def check(root, url, bots, statuses):
    assert statuses == [0] * len(bots), [bot.log for bot in bots]
    rows = runs(root, url)
    waiting = {row["id"] for row in left_waiting(rows)}  # the last slot's, at the signals
    assert {row["status"] for row in rows if row["id"] not in waiting} == {"succeeded"}, [
        (r["job"], r["tenant_id"], r["scheduled_for"], r["status"], r["error"]) for r in rows
        if r["status"] not in ("succeeded", "queued")]
    ticks = [row for row in rows if row["job"] == "tick"]
    assert len(assert_every_second_once(row["scheduled_for"] for row in ticks)) >= 4
    fan_out = tenant_runs(row for row in rows if row["job"] == "fan-out")
    by_tenant: dict[int, list[str]] = {}
    for row in fan_out:
        by_tenant.setdefault(row["tenant_id"], []).append(row["scheduled_for"])
    assert len(by_tenant) == len(TENANTS)
    for slots in by_tenant.values():
        assert_every_second_once(slots)
    # One fan-out row per slot, and each slot's tenants were queued once, for every tenant.
    slots = [row["scheduled_for"] for row in fan_outs(r for r in rows if r["job"] == "fan-out")
             if row["status"] != "queued"]  # expanded
    assert sorted(slots) == sorted(set(slots)) == sorted({row["scheduled_for"] for row in fan_out})
    assert len(fan_out) == len(TENANTS) * len(slots)
    done = executions(root)
    assert len([e for e in done if e["job"] == "tick"]) == len(
        [row for row in ticks if row["id"] not in waiting])
    ran = [row for row in fan_out if row["id"] not in waiting]
    assert Counter(e["tenant"] for e in done if e["job"] == "fan-out") == Counter(
        row["tenant_id"] for row in ran)
    # Spread: more than one bot ran tenants (on a busy machine one may get none of them).
    assert len({row["bot"] for row in ran}) >= 2
    assert all("locked" not in bot.log for bot in bots)


def run_together(root, url, count, ticks=5):
    """`count` bots on one app until `ticks` slots of `tick` ran; then all are stopped."""
    bots = start(root, url, count)
    deadline = time.monotonic() + 30
    while sum(bot.log.count("run succeeded: tick slot") for bot in bots) < ticks:
        assert time.monotonic() < deadline, [bot.log for bot in bots]
        assert all(bot.process.poll() is None for bot in bots), [bot.log for bot in bots]
        time.sleep(0.1)
    return root, url, bots, stop_all(bots)


def test_two_bots_on_sqlite_run_each_slot_once(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'bots.db'}"
    check(*run_together(bot_app(tmp_path / "app", JOBS, url, TENANTS), url, 2))


@needs_postgres
def test_three_bots_on_postgresql_run_each_slot_once(tmp_path):
    with postgres_database() as url:
        check(*run_together(bot_app(tmp_path / "app", JOBS, url, TENANTS), url, 3))
