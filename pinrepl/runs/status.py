"""The statuses of a run, what each means, which are final, and which one speaks for a slot
of several runs (a fan-out).

Cheap to import (the CLI's options use it before any database is opened).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class Status(StrEnum):
    """A run's status: the values of the `status` column."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    SKIPPED = "skipped"
    ABANDONED = "abandoned"
    CANCELLED = "cancelled"


#: Every status, with what it means.
MEANINGS: dict[Status, str] = {
    Status.QUEUED: "waiting for a bot with room (due now, or later: see `not_before`)",
    Status.RUNNING: "running now (claimed by a bot, or in the process that called it)",
    Status.SUCCEEDED: "ran to its end",
    Status.FAILED: "raised an exception (see `error`), or its tenants could not be selected",
    Status.TIMED_OUT: "ran past its `timeout` and was stopped",
    Status.SKIPPED: "not run: an earlier slot was still running (`overlap = False`), or "
                    "no bot had room within `misfire_grace`",
    Status.ABANDONED: "its bot stopped beating (killed, machine lost) before it finished",
    Status.CANCELLED: "stopped before it ended (its bot was stopped, or it was cancelled)",
}
STATUSES: tuple[str, ...] = tuple(str(status) for status in Status)

#: The statuses of a run that has not ended yet.
LIVE = frozenset({Status.QUEUED, Status.RUNNING})
#: The statuses of a run that has ended.
FINAL = frozenset(Status) - LIVE
#: The statuses of a run that ended without succeeding.
UNSUCCESSFUL = FINAL - {Status.SUCCEEDED, Status.SKIPPED}
#: The statuses of a run that never started: it has no duration.
NOT_RUN = frozenset({Status.SKIPPED, Status.QUEUED})

#: The status that speaks for a slot of several runs (a fan-out): the first present.
_PRECEDENCE = (Status.RUNNING, Status.QUEUED, Status.FAILED, Status.TIMED_OUT,
               Status.ABANDONED, Status.CANCELLED, Status.SUCCEEDED, Status.SKIPPED)


def slot_status(statuses: Iterable[str]) -> str:
    """The status of a slot whose runs have `statuses`."""
    present = set(statuses)
    return str(next((status for status in _PRECEDENCE if status in present),
                    Status.SUCCEEDED))
