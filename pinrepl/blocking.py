"""Code that blocks the event loop: which run it belongs to, and the warning when it does.

Jobs must await, never block (`asyncio.to_thread` is the way for a blocking call): while a
job's code sleeps or computes, no other run, heartbeat or timeout of its process moves.
Each run's job code is awaited by `deadline.guard`, whose frame is registered here for the
run's lifetime (`running`). A thread that wants to know what the loop's thread is doing
walks that thread's frames (`sys._current_frames()`) outwards until it meets a registered
frame (`runs_on_stack`): the code inside it is that run's. The deadline watchdog uses it to
interrupt only the run whose timeout passed; `watch_stalls` to name the run, and the line
of its job file, that held the loop.

`in_task_code` is the test that both the deadline's and the REPL's Ctrl-C interrupts apply
before raising in the main thread: never inside asyncio's own machinery, whose state an
exception raised there would corrupt (it would stop the loop).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

_ASYNCIO = str(Path(asyncio.__file__).parent) + os.sep
_PINREPL = str(Path(__file__).parent) + os.sep


@dataclass(eq=False)
class ActiveRun:
    """A run whose job code is being awaited: who it is (`name`: "background job 'x' for
    tenant 2 (acme)"), the job's file (`path`), its record's id if it has one, the thread
    whose loop runs it, and its deadline on the `time.monotonic()` clock (None: none)."""

    name: str
    path: str
    run_id: int | None = None
    deadline: float | None = None
    thread: int = field(default_factory=threading.get_ident)
    #: Set once its deadline interrupted its blocking code (`deadline` reads it).
    interrupted: bool = False

    def overdue(self, now: float | None = None) -> bool:
        if self.deadline is None:
            return False
        return (time.monotonic() if now is None else now) >= self.deadline

    def __str__(self) -> str:
        return self.name if self.run_id is None else f"{self.name} (run {self.run_id})"


#: The frame awaiting each active run's job code. Written by the loop's thread, read by
#: the watchers' threads: single dict operations, atomic under the GIL.
_active: dict[FrameType, ActiveRun] = {}


class running:
    """`with running(frame, run):` the code that `frame` (a coroutine's) awaits in the
    block is `run`'s. A class, not `@contextmanager`: every run enters one."""

    __slots__ = ("_frame", "_run")

    def __init__(self, frame: FrameType, run: ActiveRun) -> None:
        self._frame, self._run = frame, run

    def __enter__(self) -> None:
        _active[self._frame] = self._run

    def __exit__(self, *exc_info: object) -> None:
        _active.pop(self._frame, None)


def runs_on_stack(frame: FrameType | None) -> list[tuple[ActiveRun, FrameType]]:
    """The active runs whose job code `frame` is in, innermost first (a job that runs
    another has two), each with its registered frame."""
    found = []
    while frame is not None:
        run = _active.get(frame)
        if run is not None:
            found.append((run, frame))
        frame = frame.f_back
    return found


def top_frame(thread: int) -> FrameType | None:
    """The frame `thread` runs now (from another thread), or None."""
    return sys._current_frames().get(thread)


def in_task_code(frame: FrameType | None) -> bool:
    """Whether the main thread, now at `frame`, runs a task's code, where an exception
    raised by a signal handler reaches that code's callers: not asyncio's machinery (nor
    outside any task)."""
    return asyncio.current_task() is not None and frame is not None \
        and not frame.f_code.co_filename.startswith(_ASYNCIO)


def in_job_code(frame: FrameType) -> bool:
    """Whether `frame` is code a job called, where the deadline may raise: not asyncio's
    machinery, not pinrepl's own (a workspace being torn down must finish)."""
    return not frame.f_code.co_filename.startswith((_ASYNCIO, _PINREPL))


def job_line(top: FrameType, run: ActiveRun, until: FrameType) -> str:
    """'jobs/slow.py:8': where `run`'s code is, for a person: the innermost frame of the
    job's own file between `top` and the run's registered frame `until`, else `top`."""
    frame: FrameType | None = top
    while frame is not None and frame is not until:
        if frame.f_code.co_filename == run.path:
            return _where(frame)
        frame = frame.f_back
    return _where(top)


def _where(frame: FrameType) -> str:
    path = frame.f_code.co_filename
    try:
        shown = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        shown = path
    return f"{path if shown.startswith('..') else shown}:{frame.f_lineno}"


# -- the stall warning -----------------------------------------------------------------------

@contextmanager
def watch_stalls(loop: asyncio.AbstractEventLoop, warn: Callable[[str], None],
                 threshold: float = 1.0) -> Iterator[None]:
    """While the block runs, call `warn(line)` once for each time `loop` has not run its
    callbacks for more than `threshold` seconds, while it is still blocked: the line names
    the run whose code blocks it (job, tenant, its record's id) and the line of the job's
    file it is on. Enter it in the loop's thread; `warn` is called from a thread of its
    own (a logger is fine)."""
    watch = _StallWatch(loop, warn, threshold)
    watch.start()
    try:
        yield
    finally:
        watch.stop()


class _StallWatch:
    """A beat the loop updates every `threshold / 4`, and a thread that checks it as often."""

    def __init__(self, loop: asyncio.AbstractEventLoop, warn: Callable[[str], None],
                 threshold: float) -> None:
        self._loop, self._warn, self._threshold = loop, warn, threshold
        self._thread_id = threading.get_ident()
        self._beat = time.monotonic()
        self._warned_beat: float | None = None
        self._stopped = threading.Event()
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._tick()
        threading.Thread(target=self._watch, name="pinrepl-stall-watch", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()
        if self._handle is not None:
            self._handle.cancel()

    def _tick(self) -> None:
        """In the loop."""
        self._beat = time.monotonic()
        self._handle = self._loop.call_later(self._threshold / 4, self._tick)

    def _watch(self) -> None:
        while not self._stopped.wait(self._threshold / 4):
            beat = self._beat
            blocked = time.monotonic() - beat
            if blocked > self._threshold and self._warned_beat != beat:
                self._warned_beat = beat
                line = self._describe(blocked)
                if not self._stopped.is_set():
                    self._warn(line)

    def _describe(self, blocked: float) -> str:
        top = top_frame(self._thread_id)
        shown = f"the event loop has been blocked for {blocked:.1f} s"
        advice = "(jobs must not block: await asyncio.to_thread(...) for a blocking call)"
        if top is None:
            return f"{shown} {advice}"
        runs = runs_on_stack(top)
        if not runs:
            return f"{shown} by code outside any run, at {_where(top)}"
        run, frame = runs[0]
        return f"{shown} by {run}, at {job_line(top, run, frame)} {advice}"
