"""Helpers of the bot's tests: apps whose jobs write down every execution, bots in
subprocesses (signals and kills need real processes), and the history as the CLI lists it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pinrepl import App

from ..conftest import clean_env, invoke, write_app

#: A helper module of the jobs: `record(...)` appends one JSON line per execution.
RECORD = """
import json, os, time
from pathlib import Path

EXECUTIONS = Path(__file__).resolve().parent.parent / "executions.log"

def record(job, tenant=None, **extra):
    line = {"job": job, "tenant": tenant, "pid": os.getpid(), "at": time.time(), **extra}
    with EXECUTIONS.open("a") as out:
        out.write(json.dumps(line) + "\\n")
"""

#: A job that runs every second and records each execution.
TICK = """
    from pinrepl import BackgroundJob
    from ._record import record

    class Tick(BackgroundJob):
        def meta(self):
            self.schedule("* * * * * *")

        async def run(self):
            record("tick")
"""

_numbers = itertools.count()


def bot_app(root: Path, jobs: dict[str, str], url: str, tenants: Iterable[str] = ()) -> Path:
    """An app of `jobs` (which may `from ._record import record`) on the database `url`,
    its tables made and `tenants` added."""
    write_app(root, {"_record.py": RECORD, **jobs})
    result = invoke("init-database", "--app", root, env={"PINREPL_DATABASE_URL": url})
    assert result.exit_code == 0, result.output
    names = list(tenants)
    if names:
        asyncio.run(_add_tenants(root, url, names))
    return root


async def _add_tenants(root: Path, url: str, names: list[str]) -> None:
    async with App.open(root, environ={"PINREPL_DATABASE_URL": url}) as app:
        database = app.database()
        try:
            for name in names:
                await database.tenants.insert(name=name)
        finally:
            await database.aclose()


class Bot:
    """`pinrepl bot` in a subprocess; what it logs goes to a file of the app folder."""

    def __init__(self, app: Path, url: str, *options: str) -> None:
        self.path = app / f"bot-{next(_numbers)}.log"
        with self.path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pinrepl", "bot", "--app", str(app), *options],
                env=clean_env(PINREPL_DATABASE_URL=url), stdout=log, stderr=subprocess.STDOUT,
            )

    @property
    def log(self) -> str:
        return self.path.read_text()

    def wait_for(self, text: str, timeout: float = 30, count: int = 1) -> None:
        """Until the log shows `text` (`count` times); the process must stay up meanwhile."""
        deadline = time.monotonic() + timeout
        while self.log.count(text) < count:
            assert self.process.poll() is None, f"the bot exited:\n{self.log}"
            assert time.monotonic() < deadline, f"no {text!r} in:\n{self.log}"
            time.sleep(0.05)

    def send(self, number: signal.Signals) -> None:
        self.process.send_signal(number)

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, and the exit status."""
        if self.process.poll() is None:
            self.send(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def wait_for_any(bots: Iterable[Bot], text: str, timeout: float = 30) -> None:
    """Until one of `bots` logs `text`."""
    bots = list(bots)
    deadline = time.monotonic() + timeout
    while not any(text in bot.log for bot in bots):
        assert time.monotonic() < deadline, f"no {text!r} in:\n" + "\n".join(
            bot.log for bot in bots)
        time.sleep(0.05)


def stop_all(bots: Iterable[Bot]) -> list[int]:
    bots = list(bots)
    for bot in bots:
        if bot.process.poll() is None:
            bot.send(signal.SIGTERM)
    return [bot.process.wait(30) for bot in bots]


def runs(app: Path, url: str, *options: str) -> list[dict[str, Any]]:
    """The runs, newest first, as `list-background-job-runs --json` gives them."""
    result = invoke("list-background-job-runs", "--json", "--limit", "1000000", "--app", app,
                    *options, env={"PINREPL_DATABASE_URL": url})
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def tenant_runs(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tenants' runs of fan-outs, without the fan-out rows themselves."""
    return [row for row in rows if row["parent_id"] is not None]


def fan_outs(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fan-out rows (one per slot of a multi-tenant job) among `rows` of such a job."""
    return [row for row in rows if row["parent_id"] is None and row["tenant_id"] is None]


def left_waiting(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs that bots, all stopped, left for the next bot: `queued` runs and the fan-outs
    they belong to (`running` until their tenants have ended). Nothing else is left live."""
    rows = list(rows)
    queued = [row for row in rows if row["status"] == "queued"]
    parents = {row["parent_id"] for row in queued if row["parent_id"] is not None}
    running = [row for row in rows if row["status"] == "running"]
    assert {row["id"] for row in running} <= parents, running
    return queued + running


def executions(app: Path) -> list[dict[str, Any]]:
    """What the jobs wrote down, one dict per execution."""
    path = app / "executions.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def assert_every_second_once(slots: Iterable[str]) -> list[datetime]:
    """The slots, sorted: each second from the first to the last exactly once."""
    found = sorted(at(slot) for slot in slots)
    assert len(found) >= 2, found
    expected = [found[0] + timedelta(seconds=i)
                for i in range(int((found[-1] - found[0]).total_seconds()) + 1)]
    assert found == expected
    return found
