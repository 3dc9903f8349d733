"""How the commands log: to the current stderr, as text or (the bot's `--log-format json`)
one JSON object per line.

Only the entry points configure logging (`logging_to_stderr`, around a command); pinrepl
as a library only logs. `TimedFormatter` is the bot's text log, each line starting with
its time (ISO 8601, UTC); `JsonFormatter` its JSON log: `time`, `level`, `logger`,
`message`, the fields the bot's log lines carry (`event`, `job`, `tenant`, `run_id`,
`status`, `duration`, ...: whatever a line passed as `extra=`), and `traceback` for a line
with an exception. A job's failure (a record marked `JOB_FAILURE`) shows its traceback as
`run-background-job` does, without pinrepl's frames; an error of the bot's own keeps them,
for a bug report.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from .bot import JOB_FAILURE
from .console import LOG_FORMAT
from .tracebacks import format_exception

#: The formats of `bot --log-format`.
LOG_FORMATS = ("text", "json")

#: What every log record has: the rest of its attributes came as `extra=`.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime",
                                                              JOB_FAILURE}


class _StderrHandler(logging.StreamHandler):
    """Logs to whatever `sys.stderr` is at the time (the REPL's prompt patches it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def _time(record: logging.LogRecord) -> str:
    """When `record` was made: ISO 8601, UTC to the millisecond (UTC, so that the logs of
    bots on several machines read in one order)."""
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


def _traceback(record: logging.LogRecord, formatter: logging.Formatter) -> str | None:
    """The traceback of `record`'s exception (a job's without pinrepl's frames), if any."""
    if not record.exc_info:
        return None
    exc = record.exc_info[1]
    if exc is not None and getattr(record, JOB_FAILURE, False):
        return format_exception(exc).rstrip("\n")
    return formatter.formatException(record.exc_info)


class TimedFormatter(logging.Formatter):
    """`2026-12-02T00:45:00.123+00:00 INFO pinrepl.bot: message`: each line starts with its
    time, for a log that is kept in a file."""

    def __init__(self) -> None:
        super().__init__(f"%(asctime)s {LOG_FORMAT}")

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info and not record.exc_text:
            record.exc_text = _traceback(record, self)
        return super().format(record)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _time(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `time`, `level`, `logger`, `message`, the record's own
    fields (`extra=`), `traceback` if it has one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"time": _time(record), "level": record.levelname,
                                "logger": record.name, "message": record.getMessage()}
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        traceback = _traceback(record, self)
        if traceback is not None:
            line["traceback"] = traceback
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=_json_value)


def _json_value(value: Any) -> Any:
    """A field JSON has no type for: datetimes as ISO 8601, sets as lists, else its text."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return sorted(value, key=str) if not isinstance(value, tuple) else list(value)
    return str(value)


def formatter_for(log_format: str) -> logging.Formatter:
    """The bot's formatter for `--log-format` (`text` or `json`)."""
    return JsonFormatter() if log_format == "json" else TimedFormatter()


@contextlib.contextmanager
def logging_to_stderr(formatter: logging.Formatter | None = None) -> Iterator[None]:
    """While a command runs, log INFO and up to the current stderr as `LEVEL logger:
    message` (or as `formatter` says); the root logger is restored afterwards. Only
    commands do this: pinrepl as a library leaves logging to its user."""
    root = logging.getLogger()
    handler = _StderrHandler()
    handler.setFormatter(formatter or logging.Formatter(LOG_FORMAT))
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
