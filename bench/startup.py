"""Time to the first prompt: `pinrepl repl` on an app with 60 job files, against bare
`ptpython --asyncio` from the same environment, alternating, in a pseudo-terminal.

Target: at most 1.2x. Also printed: when pinrepl's jobs and models have finished loading
in the background (the prompt does not wait for them).

Both run with compiled bytecode, as installed packages do: a bytecode cache of the run's
own (PYTHONPYCACHEPREFIX), filled by a first round that is not counted. Without it an
editable checkout under PYTHONDONTWRITEBYTECODE compiles pinrepl's modules from source at
every start (about 50 ms) while ptpython's come compiled from its wheel.

Run: python bench/startup.py [ROUNDS]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pexpect

JOB = """\
from pinrepl import BackgroundJob


class Job{n}(BackgroundJob):
    batch_size = {n}

    def meta(self):
        self.schedule("{n} * * * *")

    async def run(self, *args):
        print("job {n}", args)
"""

MODELS = """\
from sqlalchemy.orm import Mapped, mapped_column
from pinrepl import Model


class Item(Model):
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
"""


def until(command: list[str], cwd: Path, env: dict[str, str], *marks: str) -> list[float]:
    """Seconds from spawn until each of `marks` has appeared, in order."""
    start = time.perf_counter()
    child = pexpect.spawn(command[0], command[1:], cwd=str(cwd), env=env, encoding="utf-8",
                          timeout=30, dimensions=(40, 200))
    times = []
    for mark in marks:
        child.expect(mark)
        times.append(time.perf_counter() - start)
    child.terminate(force=True)
    return times


def main(rounds: int) -> None:
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "app"
        (root / "jobs").mkdir(parents=True)
        for n in range(60):
            (root / "jobs" / f"job_{n:02d}.py").write_text(JOB.format(n=n))
        (root / "models.py").write_text(MODELS)
        env = dict(os.environ, TERM="dumb", HOME=tmp, PYTHONPYCACHEPREFIX=str(Path(tmp) / "pyc"))
        env.pop("PINREPL_DATABASE_URL", None)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        ours, bare, loaded = [], [], []
        for round_ in range(rounds + 1):
            prompt, jobs = until([str(bin_dir / "pinrepl"), "repl"], root, env,
                                 "pinrepl >", "60 jobs loaded")
            (reference,) = until([str(bin_dir / "ptpython"), "--asyncio"], root, env, ">>>")
            if round_ == 0:
                continue  # the round that compiles the bytecode
            ours.append(prompt)
            loaded.append(jobs)
            bare.append(reference)
        mine, theirs = statistics.median(ours), statistics.median(bare)
        print(f"time to first prompt, median of {rounds} alternating runs:")
        print(f"  ptpython --asyncio          {theirs * 1000:6.0f} ms")
        print(f"  pinrepl repl (60 job files) {mine * 1000:6.0f} ms  -> {mine / theirs:.2f}x "
              "(target <= 1.2x)")
        print(f"  ... its 60 jobs and models loaded in the background by "
              f"{statistics.median(loaded) * 1000:.0f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
