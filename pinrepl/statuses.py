"""The statuses of a run of the bot, what each means, and which one speaks for a slot.

Cheap to import (the CLI's options use it before any database is opened).
"""

from __future__ import annotations

from collections.abc import Iterable

#: Every status a row of `background_job_runs` can have, with what it means.
MEANINGS = {
    "running": "claimed by a bot that is running it now",
    "succeeded": "ran to its end",
    "failed": "raised an exception (see `error`), or its tenants could not be selected",
    "skipped": "not run: the run of an earlier slot was still running (`overlap = False`)",
    "abandoned": "its bot stopped beating (killed, machine lost) before it finished",
    "cancelled": "its bot was stopped and the run did not finish within `--grace`",
}
STATUSES = tuple(MEANINGS)

#: The status that speaks for a slot of several runs (a fan-out): the first present.
_PRECEDENCE = ("running", "failed", "abandoned", "cancelled", "succeeded", "skipped")


#: The statuses of a run that never started: it has no duration.
NOT_RUN = frozenset({"skipped"})


def slot_status(statuses: Iterable[str]) -> str:
    """The status of a slot whose runs have `statuses`."""
    present = set(statuses)
    return next((status for status in _PRECEDENCE if status in present), "succeeded")
