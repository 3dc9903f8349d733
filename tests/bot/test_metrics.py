"""The bot's Prometheus metrics (SPEC 9): `Metrics`, a subscriber of the bot's events, in
this process (synthetic events on a fake clock, then a real bot's runs of every outcome);
one real `pinrepl bot --metrics-port 0 --log-format json` scraped over HTTP; bad options.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pinrepl import App
from pinrepl.bot.events import (
    Beat,
    DatabaseAway,
    RunEnded,
    RunsAbandoned,
    RunStarted,
)
from pinrepl.bot.metrics import QUEUED_EVERY, Metrics
from pinrepl.bot.process import Bot as InProcessBot
from pinrepl.db.models import utcnow
from pinrepl.runs.repository import NewRun, RunRow

from ..conftest import invoke, one_line, write_app
from .conftest import Bot, bot_app

T0 = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)


def row(run_id: int, job: str, **changes: object) -> RunRow:
    """A run's row as the events carry it."""
    values: dict[str, object] = dict(
        id=run_id, job=job, tenant_id=None, args="{}", args_hash="x", scheduled_for=T0,
        status="running", bot="peer", started_at=T0, finished_at=None, error=None,
        origin="schedule", attempt=1, parent_id=None, priority=0, key=None, created_at=T0,
        timeout=None, not_before=T0, traceback=None)
    values.update(changes)
    return RunRow(**values)  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_runs_ended_durations_lateness_and_running_come_from_the_events():
    metrics = Metrics(clock=Clock())
    first = row(1, job="tick", scheduled_for=T0, not_before=T0)
    retry = row(2, job="tick", attempt=2, scheduled_for=T0,
                not_before=T0 + timedelta(seconds=10))
    metrics(RunStarted(first, "tick", T0 + timedelta(seconds=0.5)))
    assert value(metrics, "pinrepl_runs_running", job="tick") == 1
    metrics(RunEnded(first, "tick", "failed", 2.0, "ValueError: x",
                     retry_at=T0 + timedelta(seconds=10)))
    metrics(RunStarted(retry, "tick", T0 + timedelta(seconds=13)))
    metrics(RunEnded(retry, "tick", "succeeded", 0.25))
    metrics(RunEnded(row(3, job="tick"), "tick", "skipped", None, "skipped: ..."))
    metrics(RunsAbandoned((row(4, job="other"),), frozenset(), 30.0))
    assert value(metrics, "pinrepl_runs_running", job="tick") == 0
    ended = {status: value(metrics, "pinrepl_runs_ended_total", job="tick", status=status)
             for status in ("failed", "succeeded", "skipped")}
    assert ended == {"failed": 1, "succeeded": 1, "skipped": 1}
    assert value(metrics, "pinrepl_runs_ended_total", job="other", status="abandoned") == 1
    # Durations of the runs that ran; a skipped run has none.
    assert value(metrics, "pinrepl_run_duration_seconds_count", job="tick") == 2
    assert value(metrics, "pinrepl_run_duration_seconds_sum", job="tick") == 2.25
    # Lateness: from the slot for a first try, from its own not_before for a retry.
    assert value(metrics, "pinrepl_run_lateness_seconds_sum", job="tick") == 0.5 + 3
    assert value(metrics, "pinrepl_run_lateness_seconds_bucket", job="tick", le="0.5") == 1


def test_outages_their_seconds_and_the_heartbeat_age_are_read_when_scraped():
    clock = Clock()
    metrics = Metrics(clock=clock)
    assert value(metrics, "pinrepl_heartbeat_age_seconds") is None  # no beat yet
    metrics(Beat(T0))
    clock.advance(4)
    assert value(metrics, "pinrepl_heartbeat_age_seconds") == 4
    metrics(DatabaseAway(True))
    clock.advance(3)
    assert value(metrics, "pinrepl_database_outages_total") == 1
    assert value(metrics, "pinrepl_database_outage_seconds_total") == 3  # under way
    clock.advance(2)
    metrics(DatabaseAway(False))
    clock.advance(10)
    metrics(DatabaseAway(True))
    metrics(DatabaseAway(False))
    assert value(metrics, "pinrepl_database_outages_total") == 2
    assert value(metrics, "pinrepl_database_outage_seconds_total") == 5
    assert value(metrics, "pinrepl_heartbeat_age_seconds") == 19


async def test_the_queued_runs_are_read_on_the_bots_loop_at_most_every_few_seconds():
    reads: list[dict[str, int]] = [{"a": 2, "b": 1}, {"a": 1}]

    async def count() -> dict[str, int]:
        return reads.pop(0)

    metrics = Metrics(count)
    metrics(RunEnded(row(1, job="c"), "c", "succeeded", 0.1))  # a job seen shows 0

    def scrape() -> dict[str, float]:
        families = text_string_to_metric_families(
            generate_latest(metrics.registry).decode())
        return {sample.labels["job"]: sample.value for family in families
                if family.name == "pinrepl_runs_queued" for sample in family.samples}

    assert await asyncio.to_thread(scrape) == {"a": 2, "b": 1, "c": 0}
    assert await asyncio.to_thread(scrape) == {"a": 2, "b": 1, "c": 0}  # not read again
    metrics._queued._read_at -= QUEUED_EVERY  # as if the seconds had passed
    assert await asyncio.to_thread(scrape) == {"a": 1, "b": 0, "c": 0}
    metrics._queued._read_at -= QUEUED_EVERY
    assert await asyncio.to_thread(scrape) == {"a": 1, "b": 0, "c": 0}  # the read failed
    assert reads == []


JOBS = {
    "works.py": """
        from pinrepl import BackgroundJob

        class Works(BackgroundJob):
            def meta(self):
                self.schedule("0 0 1 1 *")

            async def run(self):
                pass
    """,
    "fails.py": """
        from pinrepl import BackgroundJob

        class Fails(BackgroundJob):
            async def run(self):
                raise ValueError("always")
    """,
    "flaky.py": """
        from pinrepl import BackgroundJob, Retry

        class Flaky(BackgroundJob):
            retries = Retry(attempts=1, delay=0, jitter=False)

            async def run(self):
                if self.current_run.attempt == 1:
                    raise ValueError("once")
    """,
    "slow.py": """
        import asyncio
        from pinrepl import BackgroundJob

        class Slow(BackgroundJob):
            timeout = 0.2

            async def run(self):
                await asyncio.sleep(30)
    """,
}


@pytest.fixture
def root(tmp_path: Path, database_url: str) -> Path:
    return bot_app(tmp_path / "app", JOBS, database_url)


@pytest.fixture
async def app(root: Path, database_url: str) -> AsyncIterator[App]:
    opened = App.open(root, environ={"PINREPL_DATABASE_URL": database_url})
    try:
        yield opened
    finally:
        await opened.aclose()


async def test_a_bots_runs_of_every_outcome_are_counted(app: App):
    for job in ("works", "works", "fails", "flaky", "slow"):
        await app.defer(job)
    await app.defer_job("works", delay=3600)  # queued, not due
    await app.repository.enqueue_slots(  # a slot left queued past misfire_grace
        [NewRun("works", origin="schedule", scheduled_for=utcnow() - timedelta(hours=1))],
        utcnow())
    bot = InProcessBot(app, grace=5)
    metrics = Metrics(app.repository.count_queued)
    bot.events.subscribe(metrics)
    assert await bot.run(once=True) == 1

    def ended(job: str, status: str) -> float | None:
        return value(metrics, "pinrepl_runs_ended_total", job=job, status=status)

    assert ended("works", "succeeded") == 2 and ended("works", "skipped") == 1
    assert ended("fails", "failed") == 1
    assert ended("flaky", "failed") == 1 and ended("flaky", "succeeded") == 1  # retried
    assert ended("slow", "timed_out") == 1
    assert value(metrics, "pinrepl_run_duration_seconds_count", job="works") == 2
    assert value(metrics, "pinrepl_run_lateness_seconds_count", job="flaky") == 2
    assert value(metrics, "pinrepl_run_duration_seconds_sum", job="slow") >= 0.2
    for job in JOBS:
        assert value(metrics, "pinrepl_runs_running", job=job.removesuffix(".py")) in (0, None)
    assert value(metrics, "pinrepl_heartbeat_age_seconds") is not None
    queued = await asyncio.to_thread(metrics.queued)
    assert queued is not None and queued["works"] == 1 and queued["fails"] == 0


TICK_AND_FAIL = {
    "tick.py": """
        from pinrepl import BackgroundJob

        class Tick(BackgroundJob):
            def meta(self):
                self.schedule("* * * * * *")

            async def run(self):
                pass
    """,
    "fails.py": """
        from pinrepl import BackgroundJob

        class Fails(BackgroundJob):
            async def run(self):
                raise ValueError("boom")
    """,
    "held.py": """
        from pinrepl import BackgroundJob

        class Held(BackgroundJob):
            def meta(self):
                self.schedule("* * * * * *")

            async def run(self):
                pass
    """,
}


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_a_real_bot_serves_its_metrics_over_http_and_logs_json(tmp_path: Path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}"
    root = bot_app(tmp_path / "app", TICK_AND_FAIL, url)
    env = {"PINREPL_DATABASE_URL": url}
    for options in (["--name", "fails"], ["--name", "fails", "--in", "1h"]):
        assert invoke("defer", "--app", root, *options, env=env).exit_code == 0
    paused = invoke("pause-job", "--app", root, "--name", "held", "--reason", "hold", env=env)
    assert paused.exit_code == 0, paused.output
    bot = Bot(root, url, "--metrics-port", "0", "--log-format", "json")
    try:
        bot.wait_for('"message": "metrics at http://127.0.0.1:')
        port = int(re.search(r'"port": (\d+)', bot.log)[1])  # type: ignore[index]
        bot.wait_for('"status": "failed"')
        bot.wait_for('"message": "run succeeded: tick', count=2)
        bot.wait_for('"message": "run skipped: held slot ')
        found = scrape(port)
    finally:
        assert bot.stop() == 0
    assert found["pinrepl_runs_ended_total", (("job", "fails"), ("status", "failed"))] == 1
    assert found["pinrepl_runs_ended_total", (("job", "tick"), ("status", "succeeded"))] >= 2
    assert found["pinrepl_runs_queued", (("job", "fails"),)] == 1  # the one due in an hour
    # A paused job's slots are recorded skipped, and counted so.
    assert found["pinrepl_runs_ended_total", (("job", "held"), ("status", "skipped"))] >= 1
    assert found["pinrepl_runs_running", (("job", "tick"),)] in (0, 1)
    assert found["pinrepl_run_duration_seconds_count", (("job", "tick"),)] >= 2
    assert found["pinrepl_database_outages_total", ()] == 0
    assert 0 <= found["pinrepl_heartbeat_age_seconds", ()] < 30
    lines = [json.loads(line) for line in bot.log.splitlines()]  # every line is JSON
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    (failed,) = [line for line in lines if line.get("status") == "failed"]
    assert (failed["event"], failed["job"], failed["level"]) == ("run_ended", "fails", "ERROR")
    assert failed["traceback"].endswith("ValueError: boom\nin background job 'fails'")
    assert isinstance(failed["run_id"], int) and failed["duration"] >= 0
    (started,) = [line for line in lines if line.get("event") == "bot_started"]
    assert sorted(line["job"] for line in lines if line.get("event") == "schedule") == [
        "held", "tick"]
    assert started["message"].startswith(f"bot {started['bot']} started: app ")
    assert (lines[-1]["event"], lines[-1]["bot"]) == ("bot_stopped", started["bot"])
    assert lines[-1]["message"].startswith(f"bot {started['bot']} stopped: ")
    assert lines[-1]["runs"]["failed"] == 1 and lines[-1]["runs"]["succeeded"] >= 2


def test_a_port_in_use_is_one_line(tmp_path: Path):
    app = write_app(tmp_path / "app", {})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = invoke("bot", "--app", app, "--metrics-port", str(port))
    assert (result.exit_code, result.stdout) == (2, ""), result.output
    (line,) = result.stderr.splitlines()
    assert line.endswith(f" ERROR pinrepl.bot: cannot serve metrics on 127.0.0.1:{port}: "
                         "Address already in use (choose another --metrics-port or "
                         "--metrics-host)")
    assert not (app / "pinrepl.db").exists()


@pytest.mark.parametrize("port", ["70000", "-1", "http"])
def test_a_bad_metrics_port_is_a_usage_error(tmp_path: Path, port: str):
    app = write_app(tmp_path / "app", {})
    error = one_line(invoke("bot", "--app", app, "--metrics-port", port))
    assert "'--metrics-port'" in error and error.endswith("(see: pinrepl bot --help)")
