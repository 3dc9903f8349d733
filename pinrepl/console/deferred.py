"""The REPL's deferred runs: the handle `defer` and `defer_job` return at the prompt.

It is the `DeferredRun` the app returns, but its `wait()` shows a fan-out's progress on
the terminal (one line, rewritten: `run 12: 3 of 10 tenants done, 1 failed`) and Ctrl-C
stops the waiting only: the run goes on on the bots, and the REPL says so in one line
(the `CancelledError`'s message, which the prompt shows instead of its own). Without a
terminal (`--execute`, piped stdin, transcripts) nothing is drawn.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..runs.deferred import DeferredRun


class ConsoleRun:
    """A `DeferredRun` at the prompt: `id`, `job`, `await status()`, `await cancel()`, and
    `await wait(timeout=None)` with progress, stopped (not the run) by Ctrl-C."""

    def __init__(self, run: DeferredRun) -> None:
        self._run = run

    def __getattr__(self, name: str) -> Any:
        return getattr(self._run, name)

    def __dir__(self) -> list[str]:
        return dir(self._run)

    def __repr__(self) -> str:
        return repr(self._run)

    async def wait(self, timeout: float | None = None) -> None:
        """Until the run has ended: None if it succeeded, else `RunFailed` (a fan-out:
        `BackgroundJobFailed`); `TimeoutError` after `timeout` seconds. Ctrl-C stops the
        waiting, not the run."""
        line = ProgressLine(self._run.id)
        try:
            await self._run.wait(timeout, line.show)
        except asyncio.CancelledError:
            line.end()
            raise asyncio.CancelledError(
                f"stopped waiting; run {self._run.id} goes on (await run.wait() to wait "
                "again)") from None
        finally:
            line.end()


class ProgressLine:
    """`progress(done, failed, total)` drawn as one line of a terminal's stderr, rewritten
    in place; `end()` leaves it on screen. Off a terminal it draws nothing."""

    def __init__(self, run_id: int) -> None:
        self._run_id = run_id
        self._shown = ""
        self._on = sys.stderr.isatty()

    def show(self, done: int, failed: int, total: int) -> None:
        if not self._on or not total:  # not expanded into its tenants yet
            return
        text = (f"run {self._run_id}: {done} of {total} tenant{'' if total == 1 else 's'} "
                f"done, {failed} failed")
        if text == self._shown:
            return
        # `\r` and spaces rather than escape codes: the prompt's stderr shows escapes as `?`.
        sys.stderr.write("\r" + text.ljust(len(self._shown)))
        sys.stderr.flush()
        self._shown = text

    def end(self) -> None:
        if self._shown:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self._shown = ""
