"""Durations as people write them: `90`, `30s`, `5m`, `1.5h`, `2d` (a number of seconds,
or a number with one unit), at most a year. `defer --in`, `--since` and the REPL's
`runs(since=...)` read them."""

from __future__ import annotations

import re

PATTERN = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
#: The longest duration: a year.
MAX = 366 * 86400


def seconds(value: str | float) -> float:
    """The seconds `value` says (a number is seconds already); `ValueError` with a
    one-line message for anything else, or longer than a year."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        amount: float | None = float(value) if 0 <= value <= MAX else None
    else:
        found = PATTERN.fullmatch(str(value).strip())
        amount = float(found[1]) * UNITS[found[2]] if found else None
    if amount is None or amount > MAX:
        raise ValueError(f"{value!r} is not a duration: seconds, or a number with s, m, h "
                         "or d (e.g. 90, 30s, 5m, 2h, 1d), at most a year")
    return amount
