"""Timeouts (SPEC 8): a run's deadline, and stopping the run when it passes.

`guard(job, run, timeout)` is how `Runner.run_once`, the one place job code runs, awaits a
run's code; a run with a timeout is stopped at its deadline as Ctrl-C stops a line in the
REPL, and ends with `JobTimeout`:
- code that awaits is cancelled (`asyncio.timeout`);
- code that blocks the event loop (`time.sleep`, a busy loop, blocking I/O) never lets the
  cancellation in. A watchdog thread (one per process, started by the first run that has
  a timeout: none when no run has one) looks at the main thread `GRACE` seconds after the
  deadline and, if that run's code is what it runs (`blocking.runs_on_stack`), sends the
  main thread `SIGNAL`, whose handler raises `Interrupted` there. It looks again every
  `AGAIN` seconds while the run is overdue: another run that blocks the loop meanwhile is
  left alone (its deadline is its own), and a job that caught the exception and blocks on
  is interrupted again.

The code of a run is what it awaits, nested runs included; tasks a job starts itself are
not (they are cancelled with it, but their blocking code is not interrupted for its
deadline). Only the main thread runs signal handlers: a run whose loop runs in another
thread, or where there is no `signal.pthread_kill` (Windows), or in a process that already
uses `SIGNAL` for something else, is stopped only when it awaits. Code that never returns
to Python (a C call that never ends) cannot be interrupted at all.

`SIGNAL` is a signal of pinrepl's own, not SIGINT: neither the REPL's Ctrl-C nor the bot's
SIGINT/SIGTERM handling sees it (the asyncio loop and the REPL skip the wake-up bytes of
signals they did not register).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
from collections.abc import Coroutine
from types import FrameType
from typing import Any

from .blocking import ActiveRun, in_job_code, running, runs_on_stack, top_frame
from .errors import JobTimeout

#: pinrepl's own signal: a real-time one where there are (Linux), else SIGUSR2.
SIGNAL: int = signal.SIGRTMIN + 1 if hasattr(signal, "SIGRTMIN") \
    else getattr(signal, "SIGUSR2", 0)
#: Seconds after the deadline before blocking code is interrupted (the loop's own
#: cancellation comes first when the code awaits).
GRACE = 0.1
#: Seconds between two looks at an overdue run that was not interrupted yet.
AGAIN = 0.1


class Interrupted(BaseException):
    """Raised in a run's blocking code when its deadline has passed; `guard` turns it
    into `JobTimeout`. A `BaseException`, as `KeyboardInterrupt` is: a job's `except
    Exception` does not swallow it."""


async def guard(job: Coroutine[Any, Any, Any], run: ActiveRun,
                timeout: float | None) -> None:
    """Await `job`, the code of `run`, stopping it `timeout` seconds from now (None: no
    limit) with `JobTimeout` ("timed out after 1 s"), chained from what stopped it.
    Cancellation from outside and KeyboardInterrupt pass through as they are."""
    frame = sys._getframe()  # the frame the job's code runs under: blocking.py
    if timeout is None:
        with running(frame, run):
            await job
        return
    run.deadline = time.monotonic() + timeout
    watchdog = _watchdog_for(run)
    with running(frame, run):
        if watchdog is not None:
            watchdog.add(run)
        try:
            async with asyncio.timeout(timeout) as scope:
                await job
        except (asyncio.CancelledError, KeyboardInterrupt):
            raise  # stopped from outside (a bot shutting down, Ctrl-C): not a timeout
        except BaseException as exc:
            if scope.expired() or run.interrupted:
                raise _timed_out(timeout) from exc
            raise
        finally:
            if watchdog is not None:
                watchdog.remove(run)
    if scope.expired() or run.interrupted:  # it caught the cancellation and returned
        raise _timed_out(timeout)


def _timed_out(timeout: float) -> JobTimeout:
    return JobTimeout(f"timed out after {timeout:g} s", timeout=timeout)


# -- blocking code: the watchdog and the main thread's handler ------------------------------

def _handler(_signum: int, frame: FrameType | None) -> None:
    """The main thread's `SIGNAL` handler: raise in the code that runs now if it is an
    overdue run's job code (the watchdog looked; this checks again, in the main thread)."""
    if frame is None or not in_job_code(frame):
        return
    now = time.monotonic()
    for run, _ in runs_on_stack(frame):
        if run.overdue(now):
            run.interrupted = True
            raise Interrupted(f"{run} was stopped here: its timeout passed while this "
                              "code blocked the event loop")


class _Watchdog:
    """The thread that interrupts overdue runs whose code blocks the main thread."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._next_look: dict[ActiveRun, float] = {}
        threading.Thread(target=self._watch, name="pinrepl-deadline", daemon=True).start()

    def add(self, run: ActiveRun) -> None:
        assert run.deadline is not None
        with self._changed:
            self._next_look[run] = run.deadline + GRACE
            self._changed.notify()

    def remove(self, run: ActiveRun) -> None:
        with self._changed:
            self._next_look.pop(run, None)

    def _watch(self) -> None:
        with self._changed:
            while True:
                now = time.monotonic()
                for run, at in list(self._next_look.items()):
                    if at <= now:
                        self._next_look[run] = now + AGAIN
                        _interrupt_if_blocking(run)
                soonest = min(self._next_look.values(), default=None)
                self._changed.wait(None if soonest is None else max(0.0, soonest - now))


def _interrupt_if_blocking(run: ActiveRun) -> None:
    """Signal the main thread if what it runs now is `run`'s job code."""
    top = top_frame(run.thread)
    if top is not None and in_job_code(top) \
            and any(found is run for found, _ in runs_on_stack(top)):
        signal.pthread_kill(run.thread, SIGNAL)


_watchdog: _Watchdog | None = None
_installed = False


def _watchdog_for(run: ActiveRun) -> _Watchdog | None:
    """The watchdog, started and `SIGNAL`'s handler installed on first use; None when
    `run`'s blocking code cannot be interrupted (see the module's docstring)."""
    global _watchdog, _installed
    if run.thread != threading.main_thread().ident or not SIGNAL \
            or not hasattr(signal, "pthread_kill"):
        return None
    if not _installed:
        if signal.getsignal(SIGNAL) not in (signal.SIG_DFL, None):
            return None  # the process uses it for something else
        signal.signal(SIGNAL, _handler)
        _installed = True
    elif signal.getsignal(SIGNAL) is not _handler:
        return None  # replaced since
    if _watchdog is None:
        _watchdog = _Watchdog()
    return _watchdog
