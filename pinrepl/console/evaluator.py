"""The evaluator every way of running REPL code shares: the interactive prompt, `--execute`,
piped stdin and transcripts.

Code runs statement by statement with top-level `await`; the value of each expression
statement is shown (and kept in `_`) unless it is None, as the Python REPL does.
"""

from __future__ import annotations

import ast
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import CodeType, TracebackType
from typing import Any

FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
_PACKAGE = str(Path(__file__).parent.parent)  # all of pinrepl


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
                show(value)


def user_traceback(exc: BaseException) -> BaseException:
    """`exc` with pinrepl's own frames (REPL, evaluator) cut from the front of its
    traceback, so that it starts at the user's code."""
    tb: TracebackType | None = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE):
        tb = tb.tb_next
    return exc.with_traceback(tb or exc.__traceback__)


def print_exception(exc: BaseException, file: Any = None) -> None:
    traceback.print_exception(user_traceback(exc), file=file or sys.stderr)
