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
import sys
from collections.abc import Callable
from types import CodeType
from typing import Any

from ..tracebacks import format_exception

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


def print_exception(exc: BaseException, file: Any = None) -> None:
    print(format_exception(exc), end="", file=file or sys.stderr)
