"""The `Run` a job sees as `self.current_run`, and the codec of a run's arguments.

A run's arguments are stored as canonical JSON (`encode_args`: keys sorted, no spaces), so
equal arguments give equal text; the unique index of scheduled slots is over its SHA-256
(`args_hash`), since a btree index cannot hold long text. Deferred arguments must survive
the trip through JSON (`check_json`): the bot that runs them gets them back from the row.

Cheap to import: no SQLAlchemy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any


class Origin:
    """Where a run came from: the values of the `origin` column."""

    SCHEDULE = "schedule"
    DEFER = "defer"
    CLI = "cli"
    REPL = "repl"
    APP = "app"


@dataclass(frozen=True)
class Run:
    """A run's record, as its job sees it (`self.current_run`): `id`, `job`, `origin`,
    `attempt` (1 for a first try), `scheduled_for` (the slot of a scheduled run, or when a
    deferred run was due), `tenant_id` (None: no tenant), `timeout` (seconds, or None),
    `started_at` and `parent_id` (the fan-out of a tenant's run). The record a job's
    `on_failure(run)` gets has how it ended as well: `status`, `error` (exception type and
    message) and `traceback`; they are None while it runs."""

    id: int
    job: str
    origin: str
    attempt: int
    scheduled_for: datetime
    tenant_id: int | None
    timeout: float | None
    started_at: datetime | None = None
    parent_id: int | None = None
    status: str | None = None
    error: str | None = None
    traceback: str | None = None

    @property
    def deadline(self) -> datetime | None:
        """When the run is stopped for its timeout (None: never)."""
        if self.timeout is None or self.started_at is None:
            return None
        return self.started_at + timedelta(seconds=self.timeout)


def encode_args(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """The `args` column of `run(*args, **kwargs)`: canonical JSON. Values JSON cannot hold
    are written as their text (a schedule's, whose bot keeps the values themselves)."""
    return json.dumps({"args": list(args), "kwargs": dict(kwargs)}, sort_keys=True,
                      separators=(",", ":"), default=str)


def check_json(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str | None:
    """Why `run(*args, **kwargs)` cannot be deferred (a value JSON cannot hold, or one it
    would change), else None."""
    try:
        text = json.dumps({"args": list(args), "kwargs": dict(kwargs)})
    except (TypeError, ValueError) as exc:
        return f"the arguments of a deferred run must be JSON values: {exc}"
    if json.loads(text) != {"args": _lists(list(args)), "kwargs": _lists(dict(kwargs))}:
        return ("the arguments of a deferred run must be JSON values (str, int, float, bool, "
                "None, lists and dicts with str keys): they would come back changed")
    return None


def _lists(value: Any) -> Any:
    """`value` with tuples as lists (JSON has only lists)."""
    if isinstance(value, list | tuple):
        return [_lists(item) for item in value]
    if isinstance(value, dict):
        return {key: _lists(item) for key, item in value.items()}
    return value


def decode_args(text: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments an `args` column holds."""
    values = json.loads(text)
    return tuple(values.get("args", ())), dict(values.get("kwargs", {}))


def args_hash(text: str) -> str:
    """The `args_hash` column of an `args` column: SHA-256, hex."""
    return hashlib.sha256(text.encode()).hexdigest()


def arguments(args: str) -> Any:
    """What a run's `args` column holds: {"args": [...], "kwargs": {...}} (the text itself
    if it is not JSON)."""
    try:
        return json.loads(args)
    except ValueError:
        return args


def shown_args(args: str) -> str:
    """' ["a"] {"b": 1}' for a run's `args` column, '' when the run has none."""
    values = arguments(args)
    try:
        positional, keywords = values["args"], values["kwargs"]
    except (TypeError, KeyError):
        return f" {args}"
    return shown_arguments(positional, keywords)


def shown_arguments(args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
    """' ["a"] {"b": 1}' for a run's arguments, '' for none: JSON, as the runs table
    holds them, its text as written (`"für"`, not `"f\\u00fcr"`)."""
    shown = [_json(list(args))] if args else []
    shown += [_json(dict(kwargs))] if kwargs else []
    return "".join(f" {part}" for part in shown)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)
