"""The bot's log formats (SPEC 9): text lines that start with an ISO 8601 time, and JSON, one
object per line with time, level, message and the fields of the line (event, job, tenant,
run id, status, duration) where they apply. The formatters and the bot's log-line
subscriber in this process; `tests/bot/test_metrics.py` runs `bot --log-format json`."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from pinrepl.bot import JOB_FAILURE
from pinrepl.bot.events import LogLines, RunEnded, RunsAbandoned, RunStarted
from pinrepl.bot.outage import Outage
from pinrepl.logs import JsonFormatter, TimedFormatter, formatter_for
from pinrepl.runs.repository import RunRow

from .conftest import invoke, one_line, write_app

SLOT = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)


def row(run_id: int = 7, job: str = "reports/daily", tenant_id: int | None = 2,
        **changes) -> RunRow:
    values = dict(
        id=run_id, job=job, tenant_id=tenant_id, args="{}", args_hash="x",
        scheduled_for=SLOT, status="running", bot="peer", started_at=SLOT,
        finished_at=None, error=None, origin="schedule", attempt=1, parent_id=None,
        priority=0, key=None, created_at=SLOT, timeout=None, not_before=SLOT,
        traceback=None)
    values.update(changes)
    return RunRow(**values)


class Lines(logging.Handler):
    """The records logged, and each as `formatter` writes it."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))


@pytest.fixture
def logged():
    """What pinrepl.bot logs while the test runs, as the JSON formatter writes it."""
    handler = Lines(JsonFormatter())
    logger = logging.getLogger("pinrepl.bot")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def failure() -> ValueError:
    try:
        raise ValueError("boom")
    except ValueError as exc:
        exc.add_note("in background job 'reports/daily'")
        return exc


def test_each_run_line_is_one_json_object_with_the_runs_fields(logged):
    lines = LogLines(lambda moment: moment.isoformat())
    lines(RunStarted(row(), "reports/daily tenant 2 (acme) slot 08:00"))
    lines(RunEnded(row(), "reports/daily tenant 2 (acme) slot 08:00", "failed", 1.25,
                   "ValueError: boom", failure(), retry_at=SLOT + timedelta(seconds=15)))
    assert all("\n" not in line for line in logged.lines)
    started, ended = (json.loads(line) for line in logged.lines)
    assert started == {
        "time": started["time"], "level": "INFO", "logger": "pinrepl.bot",
        "message": "run started: reports/daily tenant 2 (acme) slot 08:00",
        "event": "run_started", "job": "reports/daily", "tenant": 2, "run_id": 7,
        "attempt": 1, "origin": "schedule"}
    assert datetime.fromisoformat(started["time"]).utcoffset() == timedelta(0)
    assert (ended["event"], ended["level"], ended["status"], ended["duration"]) == (
        "run_ended", "ERROR", "failed", 1.25)
    assert (ended["job"], ended["tenant"], ended["run_id"]) == ("reports/daily", 2, 7)
    assert ended["error"] == "ValueError: boom" and JOB_FAILURE not in ended
    assert ended["retry_at"] == "2026-12-02T08:00:15+00:00"
    assert ended["message"].startswith("run failed: reports/daily tenant 2 (acme) slot 08:00 "
                                       "in 1.250 s: ValueError: boom; try 2 due ")
    # A job's failure: its traceback without pinrepl's frames, as run-background-job shows it.
    assert ended["traceback"].startswith("Traceback (most recent call last):\n")
    assert ended["traceback"].endswith("ValueError: boom\nin background job 'reports/daily'")
    assert "pinrepl/" not in ended["traceback"].replace("tests/test_logs.py", "")


def test_a_run_that_never_started_has_no_duration(logged):
    LogLines(str)(RunEnded(row(tenant_id=None), "reports/daily slot 08:00", "skipped", None,
                           "skipped: not started within misfire_grace (60 s)", warn=True))
    (line,) = map(json.loads, logged.lines)
    assert (line["level"], line["status"], line["tenant"]) == ("WARNING", "skipped", None)
    assert "duration" not in line
    assert line["message"] == ("run skipped: reports/daily slot 08:00: skipped: not started "
                               "within misfire_grace (60 s)")


def test_runs_marked_abandoned_are_one_line_per_dead_bot(logged):
    LogLines(str)(RunsAbandoned((row(1, bot="a"), row(2, job="other", bot="a")),
                                frozenset(), 30.0))
    (line,) = map(json.loads, logged.lines)
    assert line["message"] == ("marked 2 running runs of bot a abandoned (no heartbeat for "
                               "30 s): other, reports/daily")
    assert (line["event"], line["bot"], line["run_ids"], line["status"]) == (
        "runs_abandoned", "a", [1, 2], "abandoned")


async def test_the_database_away_and_back_are_events_with_the_seconds_away(logged):
    async def probe() -> None:
        pass

    outage = Outage(probe)
    assert outage.failed(ConnectionRefusedError("connection refused"), "beating")
    outage.answered()
    away, back = map(json.loads, logged.lines)
    assert (away["event"], away["level"]) == ("database_away", "WARNING")
    assert away["message"].startswith("database unavailable while beating: ")
    assert (back["event"], back["level"]) == ("database_back", "INFO")
    assert back["message"].startswith("database is back after ") and back["duration"] >= 0
    await outage.aclose()


def test_a_line_without_fields_has_time_level_and_message_only():
    record = logging.makeLogRecord({"name": "pinrepl.bot", "levelno": logging.WARNING,
                                    "levelname": "WARNING", "msg": "woke up %.1f s late",
                                    "args": (3.0,), "created": SLOT.timestamp()})
    assert json.loads(JsonFormatter().format(record)) == {
        "time": "2026-12-02T08:00:00.000+00:00", "level": "WARNING", "logger": "pinrepl.bot",
        "message": "woke up 3.0 s late"}


def test_an_error_of_pinrepls_own_keeps_its_frames_in_both_formats():
    try:
        raise KeyError("bug")
    except KeyError as exc:
        record = logging.makeLogRecord({"name": "pinrepl.bot", "msg": "unexpected",
                                        "exc_info": (type(exc), exc, exc.__traceback__),
                                        "levelname": "ERROR", "levelno": logging.ERROR})
    assert "tests/test_logs.py" in json.loads(JsonFormatter().format(record))["traceback"]
    assert "tests/test_logs.py" in TimedFormatter().format(record)


def test_text_lines_start_with_an_iso_8601_time():
    record = logging.makeLogRecord({"name": "pinrepl.bot", "msg": "started",
                                    "levelname": "INFO", "created": SLOT.timestamp()})
    assert formatter_for("text").format(record) == (
        "2026-12-02T08:00:00.000+00:00 INFO pinrepl.bot: started")
    assert isinstance(formatter_for("json"), JsonFormatter)


def test_a_bad_log_format_is_a_usage_error(tmp_path):
    app = write_app(tmp_path / "app", {})
    error = one_line(invoke("bot", "--app", app, "--log-format", "xml"))
    assert error.startswith("Invalid value for '--log-format': 'xml' is not one of 'text', "
                            "'json'.") and error.endswith("(see: pinrepl bot --help)")
