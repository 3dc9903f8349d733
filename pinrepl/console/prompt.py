"""The interactive prompt: ptpython in asyncio mode over a `Console`.

`ConsoleRepl` is a named subclass of ptpython's `PythonRepl` that evaluates through the
console's `Evaluator`; the prompt shows the tenant and the sandbox; history persists per app.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

from prompt_toolkit.formatted_text import AnyFormattedText
from prompt_toolkit.patch_stdout import patch_stdout
from ptpython.prompt_style import PromptStyle
from ptpython.repl import PythonRepl

from .evaluator import Evaluator, user_traceback
from .repl import Console


def history_path(root: Path, environ: dict[str, str] | None = None) -> Path:
    """The app's history file, outside the repository: $XDG_STATE_HOME/pinrepl/history/."""
    environ = dict(os.environ) if environ is None else environ
    state = Path(environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return state / "pinrepl" / "history" / f"{root.name}-{digest}"


class Prompt(PromptStyle):
    """`pinrepl > `, or `pinrepl [tenant sandbox] > `."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def in_prompt(self) -> AnyFormattedText:
        return [("class:prompt", self.console.prompt)]

    def in2_prompt(self, width: int) -> AnyFormattedText:
        return [("class:prompt.dots", "...".ljust(width))]

    def out_prompt(self) -> AnyFormattedText:
        return []


class ConsoleRepl(PythonRepl):
    """ptpython's REPL evaluating through pinrepl's `Evaluator`.

    Overrides ptpython's hooks `eval_async` (run a line) and `_handle_exception` (show
    an error); `tests/console/test_repl.py` fails loudly if their signatures change.
    """

    def __init__(self, console: Console, history: Path) -> None:
        super().__init__(
            get_globals=lambda: console.namespace, get_locals=lambda: console.namespace,
            history_filename=str(history),
        )
        self.console = console
        self.evaluator = Evaluator(console.namespace)
        self.all_prompt_styles["pinrepl"] = Prompt(console)
        self.prompt_style = "pinrepl"
        self.confirm_exit = False
        self.enable_input_validation = False  # a syntax error prints its traceback
        self.show_signature = False
        self.show_docstring = False
        self.enable_output_formatting = False
        self.insert_blank_line_after_output = False
        self.title = "pinrepl"
        self._loading = False
        self.app.after_render += self._start_loading

    def _start_loading(self, _app: Any) -> None:
        if not self._loading:  # start loading once the first prompt is on screen
            self._loading = True
            self.console.load_in_background(print)

    async def eval_async(self, line: str) -> object:
        shown: list[Any] = []
        await self.evaluator.run(line, shown.append)
        for value in shown[:-1]:
            self._show_result(value)
        return shown[-1] if shown else None

    def _handle_exception(self, e: BaseException) -> None:
        if isinstance(e, asyncio.CancelledError | KeyboardInterrupt):
            self.app.output.write("Cancelled: the job was stopped and its workspace "
                                  "torn down.\n")
            self.app.output.flush()
            return
        try:
            raise user_traceback(e)
        except BaseException as raised:  # ptpython reads sys.exc_info()
            super()._handle_exception(raised)


async def interact(console: Console, history: Path) -> None:
    """ptpython in asyncio mode over `console`, until Ctrl-D or exit()."""
    history.parent.mkdir(parents=True, exist_ok=True)
    repl = ConsoleRepl(console, history)
    with patch_stdout():
        await repl.run_async()
