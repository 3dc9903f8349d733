"""`pinrepl repl` in a real pseudo-terminal (pexpect, TERM=dumb, a temporary HOME), read as
the screen text without escape sequences."""

from __future__ import annotations

import re
import sys
import time
from contextlib import suppress

import pexpect

from ..conftest import clean_env

ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[=>]|\r|[^\x08]?\x08")  # a backspace erases


def env_for(home, **extra):
    env = clean_env(TERM="dumb", HOME=str(home), **extra)
    env.pop("XDG_STATE_HOME", None)
    return env


class Repl:
    """`pinrepl repl ARGS` in a pseudo-terminal; `expect` reads the screen text without
    escapes, from where the last `expect` stopped."""

    def __init__(self, root, home, *args, **env):
        self.child = pexpect.spawn(
            sys.executable, ["-m", "pinrepl", "repl", *args], cwd=str(root),
            env=env_for(home, **env), encoding="utf-8", timeout=20, dimensions=(40, 200),
        )
        self.raw = ""
        self.position = 0

    def expect(self, text, timeout=15):
        """Wait for `text`; the screen up to the end of it, since the previous expect."""
        deadline = time.monotonic() + timeout
        while True:
            plain = ANSI.sub("", self.raw)
            found = plain.find(text, self.position)
            if found >= 0:
                seen, self.position = plain[self.position:found + len(text)], found + len(text)
                return seen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not seen; screen so far:\n{plain[-2000:]}")
            with suppress(pexpect.TIMEOUT):
                self.raw += self.child.read_nonblocking(4096, timeout=0.1)

    def run(self, line, *expected):
        """Type `line` and Enter; the screen up to the last of `expected`."""
        self.child.sendline(line)
        return "".join(self.expect(text) for text in expected)

    def press_until(self, keys, text, timeout=15):
        """Send `keys` until `text` shows (what they do may not be ready yet: history is
        read in the background); the screen up to it."""
        deadline = time.monotonic() + timeout
        while True:
            self.child.send(keys)
            try:
                return self.expect(text, timeout=0.5)
            except AssertionError:
                if time.monotonic() > deadline:
                    raise

    def settle(self, seconds=0.3):
        """Let the prompt come back and read everything on screen."""
        time.sleep(seconds)
        with suppress(pexpect.TIMEOUT, pexpect.EOF):
            while True:
                self.raw += self.child.read_nonblocking(4096, timeout=0.1)

    def screen(self):
        """The screen since the last `expect`."""
        return ANSI.sub("", self.raw)[self.position:]

    def ended(self, timeout=10):
        """The exit status, once the process has ended by itself."""
        self.child.expect(pexpect.EOF, timeout=timeout)
        self.raw += self.child.before or ""
        self.child.close()
        return self.child.exitstatus

    def quit(self):
        time.sleep(0.3)
        self.child.sendcontrol("d")
        return self.ended()
