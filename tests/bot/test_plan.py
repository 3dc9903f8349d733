"""The bot's planning rules with a fake clock (no bot, no database, no waiting): missed
slots on a late wake-up and at start, a queued slot that waited past `misfire_grace`, and
where a scheduled run's retries stop."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pinrepl import JobRegistry, JobSpec
from pinrepl.bot.plan import Plan, catch_up, missed, next_slot, overtaken
from pinrepl.bot.worker import next_try
from pinrepl.runs.record import encode_args
from pinrepl.runs.repository import RunRow

from ..conftest import write_app

T0 = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def spec(tmp_path: Path) -> JobSpec:
    root = write_app(tmp_path / "app", {"tick.py": """
        from pinrepl import BackgroundJob, Retry

        class Tick(BackgroundJob):
            misfire_grace = 30
            retries = Retry(attempts=5, delay=20, factor=2, jitter=False)

            def meta(self):
                self.schedule("* * * * *")
                self.schedule("*/10 * * * * *", "fast")

            async def run(self, *args):
                pass
    """})
    return JobRegistry.discover(root / "jobs").get("tick")


def row(spec: JobSpec, slot: datetime, *args: object, **changes: object) -> RunRow:
    text = encode_args(args, {})
    base = RunRow(1, spec.name, None, text, "", slot, "running", "bot", slot, None, None,
                  "schedule", 1, None, 0, None, slot, None, slot, None, None)
    return replace(base, **changes)  # type: ignore[arg-type]


def test_on_time_each_slot_fires_once(spec):
    plan = Plan([spec], T0)
    fires, missed_now = plan.pop_due(T0 + timedelta(seconds=10))
    assert [(f.slot, f.schedule.args) for f in fires] == [(T0 + timedelta(seconds=10),
                                                           ("fast",))]
    assert missed_now == []


def test_a_late_wake_up_runs_the_latest_slot_within_grace_and_counts_the_others(spec):
    plan = Plan([spec], T0)
    fires, missed_now = plan.pop_due(T0 + timedelta(minutes=5, seconds=5))
    fast = [f for f in fires if f.schedule.args == ("fast",)]
    assert [f.slot for f in fast] == [T0 + timedelta(minutes=5)]
    (count,) = [m.count for m in missed_now if m.schedule.args == ("fast",)]
    assert count == 29  # 30 slots passed, the latest of them runs


def test_a_starting_bot_catches_up_from_the_last_slot_it_finds(spec):
    now = T0 + timedelta(minutes=3, seconds=20)
    fires, missed_now = catch_up([spec], now, {"tick": T0})
    minutely = [f for f in fires if not f.schedule.args]
    assert [f.slot for f in minutely] == [T0 + timedelta(minutes=3)]
    assert {m.count for m in missed_now if not m.schedule.args} == {2}


def test_a_slot_queued_past_misfire_grace_is_missed_but_not_a_tenant_run_or_a_retry(spec):
    slot = T0
    assert not missed(spec, row(spec, slot), slot + timedelta(seconds=30))
    assert missed(spec, row(spec, slot), slot + timedelta(seconds=31))
    assert not missed(spec, row(spec, slot, parent_id=7), slot + timedelta(minutes=5))
    assert not missed(spec, row(spec, slot, attempt=2), slot + timedelta(minutes=5))
    assert not missed(spec, row(spec, slot, origin="defer"), slot + timedelta(minutes=5))


def test_a_scheduled_runs_retries_stop_at_its_schedules_next_slot(spec):
    minutely = row(spec, T0)
    assert next_slot(spec, minutely) == T0 + timedelta(minutes=1)
    fast = row(spec, T0, "fast")
    assert next_slot(spec, fast) == T0 + timedelta(seconds=10)
    assert next_slot(spec, row(spec, T0, origin="defer")) is None
    failed_at = T0 + timedelta(seconds=1)
    boom = ValueError("x")
    due = next_try(spec, minutely, "failed", boom, failed_at)
    assert due == (failed_at + timedelta(seconds=20), None)  # before the next slot: queued
    third = replace(minutely, attempt=3)  # try 4 would be due 80 s later: past the slot
    assert next_try(spec, third, "failed", boom, failed_at) == (None, T0 + timedelta(minutes=1))
    assert next_try(spec, replace(minutely, attempt=6), "failed", boom, failed_at) == (
        None, None)  # no try left
    assert next_try(spec, minutely, "abandoned", None, failed_at)[0] is not None


def test_a_scheduled_retry_claimed_at_or_after_the_next_slot_is_overtaken_by_it(spec):
    """The next slot is the retry: a try queued in time but claimed after it (the bots
    were down) is not started; a tenant's retry neither; a deferred run's retry has no
    slot to wait for."""
    second = row(spec, T0, attempt=2)
    assert overtaken(spec, second, T0 + timedelta(seconds=59)) is None
    assert overtaken(spec, second, T0 + timedelta(minutes=1)) == T0 + timedelta(minutes=1)
    assert overtaken(spec, replace(second, parent_id=7, tenant_id=2),
                     T0 + timedelta(minutes=8)) == T0 + timedelta(minutes=1)
    assert overtaken(spec, row(spec, T0), T0 + timedelta(minutes=8)) is None  # a first try
    assert overtaken(spec, replace(second, origin="defer"), T0 + timedelta(days=1)) is None
