"""Ctrl-C for the line the interactive REPL runs: it cancels what the line awaits, and
interrupts code that blocks the event loop (`time.sleep`, a busy loop, blocking I/O).

Cancelling is what ptpython does, and all it can do while the loop waits. Code that blocks
the loop never lets the cancellation in, and Python runs a signal handler only in the main
thread, once that thread gets to run Python code: while it sleeps in a system call, a
SIGINT the kernel handed to another of the process's threads (prompt_toolkit's, the
database driver's) waits. So the signal reaches a thread of ours through
`signal.set_wakeup_fd`; it asks the loop to cancel the line and, if the loop has not done
so `BLOCKED` seconds later (or Ctrl-C comes again first), sends SIGINT to the main thread
itself, whose handler raises KeyboardInterrupt in the code that runs there, unless that
is asyncio's own machinery (`blocking.in_task_code`, the test a run's deadline applies too).
A run's deadline interrupts blocking code the same way, with a signal of its own
(`deadline`), which this handler never sees.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from ..blocking import in_task_code


class Interrupter:
    """Made in the main thread; `watching(task)` while a line runs in `task`."""

    #: How long the loop may leave a Ctrl-C unanswered before the code blocking it gets a
    #: KeyboardInterrupt.
    BLOCKED = 0.25

    def __init__(self) -> None:
        self._main = threading.get_ident()
        self._reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        self._lock = threading.Lock()  # between our two threads, never the main one
        self.running: asyncio.Task[Any] | None = None
        self._pending: object | None = None  # a Ctrl-C the loop has not answered yet
        self._forcing = False  # the next SIGINT in the main thread is ours: raise
        self._ours = 0  # SIGINTs we sent, whose wake-up bytes are not a user's Ctrl-C
        threading.Thread(target=self._listen, name="pinrepl-ctrl-c", daemon=True).start()

    @contextmanager
    def watching(self, task: asyncio.Task[Any]) -> Iterator[None]:
        """Ctrl-C stops `task` (the line) while the block runs. The SIGINT handler stays
        installed afterwards, ignoring a late signal; the caller restores the previous
        one when it is done showing the result."""
        task.get_loop().remove_signal_handler(signal.SIGINT)  # ptpython's: cancels only
        signal.signal(signal.SIGINT, self._in_main_thread)
        wakeup = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        with self._lock:
            self.running, self._pending, self._forcing, self._ours = task, None, False, 0
        try:
            yield
        finally:
            with self._lock:
                self.running, self._pending = None, None
            signal.set_wakeup_fd(wakeup)

    def close(self) -> None:
        self._writer.close()
        self._reader.close()

    # -- our thread: a Ctrl-C arrived -------------------------------------------------------

    def _listen(self) -> None:
        while True:
            try:
                data = self._reader.recv(64)
            except OSError:
                return
            if not data:
                return
            for _ in range(data.count(int(signal.SIGINT))):
                self._ctrl_c()

    def _ctrl_c(self) -> None:
        with self._lock:
            if self._ours:
                self._ours -= 1
                return
            running = self.running
            if running is None or running.done():
                return
            if self._pending is not None:  # pressed again, unanswered: stop waiting
                self._force()
                return
            self._pending = pending = object()
        running.get_loop().call_soon_threadsafe(self._cancel, running, pending)
        self._check_later(pending)

    def _cancel(self, running: asyncio.Task[Any], pending: object) -> None:
        """In the loop: it answered the Ctrl-C."""
        if self._pending is pending:
            self._pending = None
            running.cancel()

    def _check_later(self, pending: object) -> None:
        def check() -> None:
            with self._lock:
                if self._pending is pending:
                    self._force()

        timer = threading.Timer(self.BLOCKED, check)
        timer.daemon = True
        timer.start()

    def _force(self) -> None:
        """(Holding the lock.) Interrupt whatever the main thread runs."""
        self._forcing = True
        self._ours += 1
        signal.pthread_kill(self._main, signal.SIGINT)

    # -- the main thread ------------------------------------------------------------------------

    def _in_main_thread(self, _signum: int, frame: FrameType | None) -> None:
        """The SIGINT handler. Only a SIGINT we forced raises, and only in a task's code:
        raised in the loop's own machinery, it would stop the loop and end the session."""
        if not self._forcing:
            return  # a user's Ctrl-C: our thread has it
        self._forcing = False
        pending = self._pending
        if pending is None or self.running is None:
            return  # the loop answered after all
        if not in_task_code(frame):
            self._check_later(pending)  # not in the line's code just now: try again
            return
        self._pending = None
        raise KeyboardInterrupt
