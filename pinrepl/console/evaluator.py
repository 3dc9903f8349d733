"""The evaluator every way of running REPL code shares: the interactive prompt, `--execute`,
piped stdin and transcripts, and how they all show an exception.

Code runs statement by statement with top-level `await`; the value of each expression
statement is shown (and kept in `_`) unless it is None, as the Python REPL does. A value
whose type has an async `__pinrepl_repr__` (a repr that must read the database first, as
the REPL's `jobs` does) is shown as the text it returns, awaited on the REPL's loop.

An exception shows as Python shows it (`traceback.TracebackException`: chained causes,
`from None`, exception groups with every sub-exception and its notes, a syntax error as
line, caret and message), without the frames of pinrepl and ptpython: what is left is the
user's code and the job's.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from types import CodeType
from typing import Any

FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT


class Evaluator:
    def __init__(self, namespace: dict[str, Any], filename: str = "<stdin>") -> None:
        self.namespace = namespace
        self.filename = filename

    def compile(self, source: str) -> list[tuple[CodeType, bool]]:
        """One code object per top-level statement, and whether it is an expression.
        Raises SyntaxError for code that does not parse."""
        tree: ast.Module = compile(source, self.filename, "exec",
                                   flags=FLAGS | ast.PyCF_ONLY_AST, dont_inherit=True)
        units = []
        for statement in tree.body:
            unit: ast.Expression | ast.Module
            if isinstance(statement, ast.Expr):
                unit, mode = ast.Expression(statement.value), "eval"
            else:
                unit, mode = ast.Module([statement], type_ignores=[]), "exec"
            code = compile(unit, self.filename, mode, flags=FLAGS, dont_inherit=True)
            units.append((code, mode == "eval"))
        return units

    async def run(self, source: str, show: Callable[[Any], None]) -> None:
        """Run `source`; `show(value)` each expression value that is not None."""
        for code, is_expression in self.compile(source):
            value = eval(code, self.namespace)
            if code.co_flags & 0x80:  # CO_COROUTINE: the statement awaits
                value = await value
            if is_expression and value is not None:
                self.namespace["_"] = value
                show(await shown(value))


async def shown(value: Any) -> Any:
    """What to show for `value`: itself, or the text of its async `__pinrepl_repr__`
    (looked up on its type, as Python looks up `__repr__`)."""
    arepr = getattr(type(value), "__pinrepl_repr__", None)
    if arepr is None:
        return value
    return Text(await arepr(value))


class Text:
    """Shown as its text, unquoted: what an async repr returned."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


# -- showing an exception ----------------------------------------------------------------


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


@functools.cache
def _hidden() -> tuple[str, ...]:
    """The folders whose frames are machinery, not the user's: all of pinrepl, and
    ptpython (found without importing it: `--execute` never loads it)."""
    folders = [Path(__file__).parent.parent]
    spec = importlib.util.find_spec("ptpython")
    if spec is not None and spec.submodule_search_locations:
        folders += [Path(p) for p in spec.submodule_search_locations]
    return tuple(str(folder) + os.sep for folder in folders)


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


def print_exception(exc: BaseException, file: Any = None) -> None:
    print(format_exception(exc), end="", file=file or sys.stderr)
