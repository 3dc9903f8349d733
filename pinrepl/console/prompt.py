"""The interactive prompt: ptpython in asyncio mode over a `Console`.

`ConsoleRepl` is a named subclass of ptpython's `PythonRepl`: it evaluates through the
console's `Evaluator`, shows errors as Python does (`evaluator.format_exception`), makes
Ctrl-C interrupt blocking code as well as awaiting code, lets `exit(n)` end the session
with status n, and completes job names. The prompt shows the tenant and the sandbox;
history persists per app. Completions are computed in a daemon thread that nothing waits
for (`DetachedCompleter`): neither running a line nor leaving waits for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import os
import re
import signal
import sys
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, ThreadedCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.formatted_text import AnyFormattedText
from prompt_toolkit.patch_stdout import patch_stdout
from ptpython.completer import PythonCompleter
from ptpython.prompt_style import PromptStyle
from ptpython.repl import PythonRepl

from .evaluator import Evaluator, format_exception
from .interrupt import Interrupter
from .repl import Console


def history_path(root: Path, environ: dict[str, str] | None = None) -> Path:
    """The app's history file, outside the repository: $XDG_STATE_HOME/pinrepl/history/."""
    environ = dict(os.environ) if environ is None else environ
    state = Path(environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return state / "pinrepl" / "history" / f"{root.name}-{digest}"


class Prompt(PromptStyle):
    """`pinrepl > `, or `pinrepl [tenant sandbox read-only] > `."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def in_prompt(self) -> AnyFormattedText:
        return [("class:prompt", self.console.prompt)]

    def in2_prompt(self, width: int) -> AnyFormattedText:
        return [("class:prompt.dots", "...".ljust(width))]

    def out_prompt(self) -> AnyFormattedText:
        return []


class JobNameCompleter(Completer):
    """Job names inside `runBackgroundJob('`, `run_background_job('`, `defer('`,
    `defer_job('` and `jobs['`; everywhere else, the completions of `python` (ptpython's)."""

    AT_NAME = re.compile(
        r"""(?:\b(?:runBackgroundJob|run_background_job|defer|defer_job)\(\s*|\bjobs\[\s*)"""
        r"""['"](?P<typed>[a-z0-9/-]*)$"""
    )

    def __init__(self, names: Callable[[], list[str]], python: Completer) -> None:
        self.names = names
        self.python = python

    def get_completions(self, document: Document, complete_event: CompleteEvent
                        ) -> Iterable[Completion]:
        at_name = self.AT_NAME.search(document.text_before_cursor)
        if at_name is None:
            yield from self.python.get_completions(document, complete_event)
            return
        typed = at_name["typed"]
        for name in self.names():
            if name.startswith(typed):
                yield Completion(name, start_position=-len(typed))


@dataclass
class _Request:
    """One completion asked for: what to complete, and where its answer goes."""

    loop: asyncio.AbstractEventLoop
    found: asyncio.Future[list[Completion]]
    context: contextvars.Context  # prompt_toolkit finds its app in it
    document: Document
    event: CompleteEvent


class DetachedCompleter(ThreadedCompleter):
    """prompt_toolkit's `ThreadedCompleter`, but a cancelled completion is not waited for:
    its thread (a daemon) is left to finish alone. Each line typed ends a prompt, which
    cancels the completions typing started and waits for them, and so does leaving; jedi
    may take seconds on a busy machine (forever in a `__dir__` that blocks), and neither
    running the line nor leaving may wait for completions nobody will see.

    Completing while typing asks once per key: one worker thread computes them in turn,
    and only the latest request waits for it. A request that a newer one replaced before
    it started gets no completions (its caller sees the document changed and asks again),
    and a cancelled one is skipped. The worker ends when nothing is asked."""

    def __init__(self, completer: Completer) -> None:
        super().__init__(completer)
        self._lock = threading.Lock()
        self._latest: _Request | None = None
        self._working = False

    async def get_completions_async(self, document: Document, complete_event: CompleteEvent
                                    ) -> AsyncGenerator[Completion, None]:
        loop = asyncio.get_running_loop()
        request = _Request(loop, loop.create_future(), contextvars.copy_context(), document,
                           complete_event)
        with self._lock:
            replaced, self._latest = self._latest, request
            start, self._working = not self._working, True
        if replaced is not None:
            _settle(replaced.loop, replaced.found, [])
        if start:
            threading.Thread(target=self._work, name="pinrepl-completer", daemon=True).start()
        for completion in await request.found:
            yield completion

    def _work(self) -> None:
        """The worker: the latest request, until there is none."""
        while True:
            with self._lock:
                request, self._latest = self._latest, None
                if request is None:
                    self._working = False
                    return
            if not request.found.done():  # cancelled: the prompt it was typed in ended
                request.context.run(self._complete, request)

    def _complete(self, request: _Request) -> None:
        try:
            result = list(self.completer.get_completions(request.document, request.event))
        except BaseException as exc:  # handed to the awaiting task, as an executor does
            _settle(request.loop, request.found, exc)
        else:
            _settle(request.loop, request.found, result)


def _settle(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], outcome: Any) -> None:
    """From a completer thread: give `future` its result or exception, unless it was
    cancelled meanwhile or its loop is gone (nobody waits any more)."""

    def settle() -> None:
        if future.done():
            return
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

    with contextlib.suppress(RuntimeError):  # the loop is closed: the session has ended
        loop.call_soon_threadsafe(settle)


class ConsoleRepl(PythonRepl):
    """ptpython's REPL evaluating through pinrepl's `Evaluator`.

    Overrides ptpython's hooks `run_and_show_expression_async`, `eval_async`,
    `_handle_exception` and `_add_to_namespace`, and passes `_completer`;
    `tests/console/test_prompt_hooks.py` fails loudly if they change. Its buffer's
    completer becomes a `DetachedCompleter` (`tests/console/test_namespace.py` fails if a
    line or leaving waits for a completion again).
    """

    def __init__(self, console: Console, history: Path) -> None:
        python = PythonCompleter(
            lambda: console.namespace, lambda: console.namespace,
            lambda: self.enable_dictionary_completion,
        )
        super().__init__(
            get_globals=lambda: console.namespace, get_locals=lambda: console.namespace,
            history_filename=str(history),
            _completer=JobNameCompleter(console.known_job_names, python),
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
        #: The status `exit(n)` / `sys.exit(n)` asked for (None: 0).
        self.exit_status: object = None
        self._loading = False
        self._ctrl_c = Interrupter()
        self.app.after_render += self._start_loading
        # ptpython runs its completer (ours, wrapped) in a ThreadedCompleter: detach it.
        threaded = self.default_buffer.completer
        if isinstance(threaded, ThreadedCompleter):
            self.default_buffer.completer = DetachedCompleter(threaded.completer)

    def _start_loading(self, _app: Any) -> None:
        if not self._loading:  # start loading once the first prompt is on screen
            self._loading = True
            self.console.load_in_background(print)

    def _add_to_namespace(self) -> None:
        """ptpython adds `get_ptpython` and its own `exit` (which takes no status and,
        awaited, prints a traceback); the console's `exit` stays."""
        namespace = self.get_globals()
        kept = namespace.get("exit")
        super()._add_to_namespace()
        namespace["exit"] = kept

    # -- running a line, and Ctrl-C -----------------------------------------------------------

    async def run_and_show_expression_async(self, text: str) -> Any:
        previous = signal.getsignal(signal.SIGINT)
        try:
            return await super().run_and_show_expression_async(text)
        finally:
            signal.signal(signal.SIGINT, previous)

    async def eval_async(self, line: str) -> object:
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        assert task is not None  # ptpython runs each line in a task of its own
        # Tasks started from here are guarded, so that a KeyboardInterrupt in one ends
        # this line rather than the event loop.
        factory = loop.get_task_factory()
        loop.set_task_factory(self._guarded_task)
        shown: list[Any] = []
        try:
            with self._ctrl_c.watching(task):
                await self.evaluator.run(line, shown.append)
        except KeyboardInterrupt as interrupt:
            self._handle_exception(interrupt)
            return None
        except SystemExit as exit_:
            self.exit_status = exit_.code
            raise
        finally:
            loop.set_task_factory(factory)
        for value in shown[:-1]:
            self._show_result(value)
        return shown[-1] if shown else None

    def _guarded_task(self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any
                      ) -> asyncio.Task[Any]:
        if asyncio.iscoroutine(coro):
            coro = self._guarded(coro)
        return asyncio.Task(coro, loop=loop, **kwargs)

    async def _guarded(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """`coro`, whose KeyboardInterrupt cancels the line that runs it: raised out of a
        task, it would stop the event loop and end the session."""
        try:
            return await coro
        except KeyboardInterrupt:
            if self._ctrl_c.running is not None:
                self._ctrl_c.running.cancel()
            raise asyncio.CancelledError from None

    def close(self) -> None:
        self._ctrl_c.close()

    # -- errors ------------------------------------------------------------------------------

    def _handle_exception(self, e: BaseException) -> None:
        sys.last_type, sys.last_value, sys.last_traceback = type(e), e, e.__traceback__
        if isinstance(e, asyncio.CancelledError):
            # A message says what was stopped (`deferred`: the waiting, not the run).
            said = str(e) or "Cancelled: the job was stopped and its workspace torn down."
            text = f"{said}\n"
        else:
            text = format_exception(e)
        # Through the patched stderr, after what the code printed, as Python does.
        sys.stderr.write(text)
        sys.stderr.flush()


async def interact(console: Console, history: Path) -> int:
    """ptpython in asyncio mode over `console`, until Ctrl-D or exit(); the exit status
    (`exit(n)`, `sys.exit(n)`)."""
    history.parent.mkdir(parents=True, exist_ok=True)
    repl = ConsoleRepl(console, history)
    try:
        with patch_stdout():
            await repl.run_async()
    finally:
        repl.close()
    status = repl.exit_status
    if status is None or isinstance(status, int):
        return status or 0
    print(status, file=sys.stderr)  # sys.exit("message"), as Python does
    return 1
