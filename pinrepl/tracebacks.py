"""Tracebacks as a user should read them: Python's own format, without the frames of
pinrepl's machinery, ptpython's and the database layer's (SQLAlchemy and its drivers: a
unique key refused at the prompt is its error and the line typed, not 140 lines of
aiosqlite), so what is left is the job's code. The REPL, the CLI, transcripts, the bot's
log and a run's `traceback` column all show them so.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import traceback
from collections.abc import Iterator
from pathlib import Path


class _Elided(traceback.StackSummary):
    """A stack shown as one `...` line, as doctest writes an expected traceback."""

    def __bool__(self) -> bool:
        return True  # keeps the "Traceback (most recent call last):" header

    def format(self) -> list[str]:
        return ["  ...\n"]


def format_exception(exc: BaseException, *, elide_frames: bool = False) -> str:
    """`exc` as Python shows it, without pinrepl's and ptpython's frames. With
    `elide_frames` (transcripts), each traceback's frames are one `...` line and chained
    exceptions are left out, as in doctest, while exception groups keep every
    sub-exception. An exception with no frames left (a syntax error in the code typed)
    has no traceback header either way, as in Python."""
    shown = traceback.TracebackException.from_exception(exc, compact=True)
    for each in _all(shown):
        each.stack = traceback.StackSummary.from_list(
            [frame for frame in each.stack if not frame.filename.startswith(_hidden())]
        )
        if elide_frames:
            if each.stack:
                each.stack = _Elided()
            each.__cause__ = each.__context__ = None
    return "".join(shown.format())


#: The packages whose frames are machinery too, where they are installed.
MACHINERY = ("ptpython", "sqlalchemy", "aiosqlite", "asyncpg", "psycopg", "greenlet")


@functools.cache
def _hidden() -> tuple[str, ...]:
    """The folders whose frames are machinery, not the user's: all of pinrepl, and the
    packages of `MACHINERY` (found without importing them: `--execute` never loads
    ptpython)."""
    folders = [Path(__file__).parent]
    for package in MACHINERY:
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            folders += [Path(p) for p in spec.submodule_search_locations]
    # SQLAlchemy's generated wrappers have names of their own, not files.
    return (*(str(folder) + os.sep for folder in folders), "<sqlalchemy generated ")


def _all(shown: traceback.TracebackException) -> Iterator[traceback.TracebackException]:
    """`shown` and every exception it holds: causes, contexts and group members."""
    seen: set[int] = set()
    todo = [shown]
    while todo:
        each = todo.pop()
        if id(each) in seen:
            continue
        seen.add(id(each))
        yield each
        todo.extend(e for e in (each.__cause__, each.__context__) if e is not None)
        todo.extend(each.exceptions or ())
