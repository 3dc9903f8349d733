"""What deferred runs cost (SPEC 8), each figure against its reference in the same run.

1. Drain: 2,000 deferred runs of 5 ms of async I/O, drained by two `pinrepl bot --once
   --concurrency 10` started together, against procrastinate draining 2,000 jobs of the
   same task with two `procrastinate worker --one-shot --concurrency 10`: from the workers'
   start until both have exited, the queue empty. Target: <= 0.35x.
2. Start: from just before `await app.defer(...)` to the job's own first line, on an idle
   bot, ~200 runs one after another, on PostgreSQL and on SQLite: median and p99. Targets:
   p99 <= 50 ms (PostgreSQL), <= 1 s (SQLite).
3. Defer: `await app.defer('noop')` against a hand-written `INSERT ... RETURNING` of the
   same row through SQLAlchemy on the same engine. Target: <= 1.5x.
4. Claim: `Repository.claim(bot, ['noop'], 10, now)` and finishing what it claimed, with
   1,000,000 rows of history against an empty table. Target: <= 1.2x.
5. Timeout: `app.run_job(..., timeout=1)` of a job that awaits (target: ends within 1.2 s)
   and of one that blocks in `time.sleep(10)` (target: within 2 s).

PostgreSQL: a scratch database made on the server of PINREPL_BENCH_DATABASE_URL, else
PINREPL_TEST_DATABASE_URL, dropped at the end. procrastinate runs from a virtualenv of its
own, never pinrepl's: PINREPL_BENCH_PROCRASTINATE (the venv's folder), else
/tmp/procrastinate-venv, made with `pip install procrastinate psycopg[binary]` when missing.

Run: python bench/defer.py [FIGURE ...] (the figures' numbers; default: all five)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from scratch import pinrepl, scratch_postgres, write_app  # bench/ is on sys.path
from sqlalchemy import delete, insert, text

from pinrepl import App
from pinrepl.db.models import utcnow
from pinrepl.runs.record import args_hash, encode_args
from pinrepl.runs.repository import NewRun, Result
from pinrepl.runs.tables import BOTS, RUNS

RUNS_TO_DRAIN = 2000
STARTS = 200
HISTORY = 1_000_000

JOBS = {
    "io.py": """
        import asyncio
        from pinrepl import BackgroundJob

        class Io(BackgroundJob):
            async def run(self):
                await asyncio.sleep(0.005)
    """,
    "noop.py": """
        from pinrepl import BackgroundJob

        class Noop(BackgroundJob):
            async def run(self):
                pass
    """,
    "mark.py": """
        import time
        from pinrepl import BackgroundJob

        class Mark(BackgroundJob):
            async def run(self, n):
                print("mark", n, time.time(), flush=True)
    """,
    "awaits.py": """
        import asyncio
        from pinrepl import BackgroundJob

        class Awaits(BackgroundJob):
            async def run(self):
                await asyncio.sleep(10)
    """,
    "blocks.py": """
        import time
        from pinrepl import BackgroundJob

        class Blocks(BackgroundJob):
            async def run(self):
                time.sleep(10)
    """,
}

PROCRASTINATE_APP = """
import asyncio, os
from procrastinate import App, PsycopgConnector

app = App(connector=PsycopgConnector(conninfo=os.environ["BENCH_DSN"]))

@app.task(name="io")
async def io():
    await asyncio.sleep(0.005)

async def defer(count):
    async with app.open_async():
        await io.batch_defer_async(*[{} for _ in range(count)])

async def left():
    async with app.open_async():
        rows = await app.connector.execute_query_all_async(
            "SELECT status, count(*) AS n FROM procrastinate_jobs GROUP BY status")
        return {row["status"]: row["n"] for row in rows}
"""


def opened(root: Path, url: str) -> App:
    return App.open(root, environ={"PINREPL_DATABASE_URL": url})


async def init(root: Path, url: str) -> None:
    async with opened(root, url) as app:
        await app.init_database(echo=lambda _line: None)


async def forget_runs(root: Path, url: str) -> None:
    async with opened(root, url) as app, app.engine.engine.begin() as conn:
        await conn.execute(delete(RUNS))
        await conn.execute(delete(BOTS))


# -- 1. drain ----------------------------------------------------------------------------

def procrastinate_venv() -> Path | None:
    venv = Path(os.environ.get("PINREPL_BENCH_PROCRASTINATE", "/tmp/procrastinate-venv"))
    if (venv / "bin" / "procrastinate").exists():
        return venv
    print(f"   (making {venv} for procrastinate: pip install procrastinate psycopg[binary])")
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)]).returncode == 0 and \
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "procrastinate",
                        "psycopg[binary]"]).returncode == 0
    return venv if made else None


def procrastinate_drain(base: Path, url: str) -> float | None:
    venv = procrastinate_venv()
    if venv is None:
        print("   procrastinate could not be installed: set PINREPL_BENCH_PROCRASTINATE to a "
              "virtualenv with procrastinate and psycopg[binary]")
        return None
    folder = base / "procrastinate"
    folder.mkdir()
    (folder / "pbench.py").write_text(PROCRASTINATE_APP)
    env = {**os.environ, "PYTHONPATH": str(folder), "BENCH_DSN": url.replace(
        "postgresql+asyncpg://", "postgresql://")}
    python, command = str(venv / "bin" / "python"), str(venv / "bin" / "procrastinate")

    def call(code: str) -> str:
        return subprocess.run([python, "-c", f"import asyncio, pbench; {code}"], env=env,
                              check=True, capture_output=True, text=True).stdout

    subprocess.run([command, "--app=pbench.app", "schema", "--apply"], env=env, check=True,
                   capture_output=True)
    call(f"asyncio.run(pbench.defer({RUNS_TO_DRAIN}))")
    start = time.perf_counter()
    workers = [subprocess.Popen([command, "--app=pbench.app", "worker", "--one-shot",
                                 "--concurrency", "10"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for _ in range(2)]
    assert [w.wait() for w in workers] == [0, 0]
    elapsed = time.perf_counter() - start
    left = call("print(asyncio.run(pbench.left()))").strip()
    assert left == f"{{'succeeded': {RUNS_TO_DRAIN}}}", left
    return elapsed


async def queue(root: Path, url: str, job: str, count: int) -> None:
    async with opened(root, url) as app:
        await app.repository.enqueue_slots([NewRun(job)] * count, utcnow())


async def statuses(root: Path, url: str) -> dict[str, int]:
    async with opened(root, url) as app, app.engine.engine.connect() as conn:
        rows = await conn.execute(text(
            "SELECT status, count(*) FROM background_job_runs GROUP BY status"))
        return {status: n for status, n in rows.all()}


def pinrepl_drain(root: Path, url: str) -> float:
    asyncio.run(forget_runs(root, url))
    asyncio.run(queue(root, url, "io", RUNS_TO_DRAIN))
    start = time.perf_counter()
    bots = [pinrepl("bot", "--once", "--concurrency", "10", "--app", str(root), url=url)
            for _ in range(2)]
    assert [bot.wait() for bot in bots] == [0, 0]
    elapsed = time.perf_counter() - start
    found = asyncio.run(statuses(root, url))
    assert found == {"succeeded": RUNS_TO_DRAIN}, found
    return elapsed


def drain(base: Path, root: Path, url: str) -> None:
    print(f"1. {RUNS_TO_DRAIN:,} deferred runs of 5 ms of async I/O, two workers of "
          "concurrency 10 started together, until both exited:")
    ours = pinrepl_drain(root, url)
    theirs = procrastinate_drain(base, url)
    if theirs is None:
        print(f"   pinrepl {ours:6.3f} s (no procrastinate to compare with)")
        return
    print(f"   procrastinate {theirs:6.3f} s, pinrepl {ours:6.3f} s -> {ours / theirs:.2f}x "
          "(target <= 0.35x)")


# -- 2. start after defer ----------------------------------------------------------------

async def starts(root: Path, url: str, out: Path, numbers: range) -> list[float]:
    """Seconds from just before each `defer` to the job's first line, the bot idle."""
    before: dict[int, float] = {}
    async with opened(root, url) as app:
        for n in numbers:
            await asyncio.sleep(0.02 + (n % 7) * 0.011)  # not in step with any poll
            before[n] = time.time()
            run = await app.defer("mark", n)
            await run.wait(timeout=30)
    started = marks(out)
    return sorted(started[n] - before[n] for n in before)


def marks(out: Path) -> dict[int, float]:
    """When each run of `mark` started, from what it printed."""
    return {int(n): float(t) for _mark, n, t in
            (line.split() for line in out.read_text().splitlines()
             if line.startswith("mark "))}


def start_latency(root: Path, url: str, label: str, target_ms: float) -> None:
    asyncio.run(forget_runs(root, url))
    out = root.parent / f"starts-{label}.out"
    log = root.parent / f"starts-{label}.log"
    with out.open("w") as printed, log.open("w") as logged:
        bot = pinrepl("bot", "--app", str(root), url=url, stdout=printed, stderr=logged)
    try:
        while " started: app " not in log.read_text():
            assert bot.poll() is None, log.read_text()
            time.sleep(0.05)
        asyncio.run(starts(root, url, out, range(-5, 0)))  # warm-up: connections, imports
        delays = [d * 1000 for d in asyncio.run(starts(root, url, out, range(STARTS)))]
    finally:
        bot.terminate()
        bot.wait()
    p99 = delays[max(0, round(len(delays) * 0.99) - 1)]
    print(f"   {label}: median {statistics.median(delays):.1f} ms, p99 {p99:.1f} ms, "
          f"max {max(delays):.1f} ms (target p99 <= {target_ms:g} ms)")


# -- 3. defer against a hand-written INSERT ----------------------------------------------

async def defer_cost(root: Path, url: str, count: int = 1000) -> None:
    async with opened(root, url) as app:
        engine = app.engine.engine
        args = encode_args((), {})

        async def by_hand() -> None:
            now = utcnow()
            async with engine.begin() as conn:
                await conn.execute(insert(RUNS).values(
                    job="noop", tenant_id=None, args=args, args_hash=args_hash(args),
                    scheduled_for=now, status="queued", origin="defer", attempt=1,
                    priority=0, created_at=now, not_before=now).returning(RUNS.c.id))

        async def deferred() -> None:
            await app.defer("noop")

        times = await alternate({"insert": by_hand, "defer": deferred}, count)
    hand, ours = times["insert"], times["defer"]
    print(f"3. {count:,} times, one at a time:")
    print(f"   INSERT ... RETURNING {hand * 1e6 / count:6.0f} us, app.defer "
          f"{ours * 1e6 / count:6.0f} us -> {ours / hand:.2f}x (target <= 1.5x)")


async def alternate(calls: dict[str, Callable[[], Awaitable[None]]], count: int,
                    rounds: int = 5) -> dict[str, float]:
    """Each call `count` times, in `rounds` alternating batches (after a warm-up); the
    best batch of each, scaled to `count`."""
    for call in calls.values():
        for _ in range(20):
            await call()
    best = dict.fromkeys(calls, float("inf"))
    batch = max(1, count // rounds)
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            for _ in range(batch):
                await call()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: seconds * count / batch for name, seconds in best.items()}


# -- 4. claiming with a long history -----------------------------------------------------

HISTORY_SQL = """
INSERT INTO background_job_runs (job, tenant_id, args, args_hash, scheduled_for, status,
    bot, started_at, finished_at, error, origin, attempt, parent_id, priority, key,
    created_at, timeout, not_before, traceback)
SELECT CASE WHEN g % 2 = 0 THEN 'noop' ELSE 'io' END, NULLIF(g % 50, 0), :args, :hash,
    slot, CASE WHEN g % 20 = 0 THEN 'failed' ELSE 'succeeded' END,
    'bench:1:0', slot, slot + interval '5 ms', CASE WHEN g % 20 = 0 THEN 'ValueError: x' END,
    CASE WHEN g % 3 = 0 THEN 'defer' ELSE 'schedule' END, 1, NULL, 0, NULL,
    slot, NULL, slot, NULL
FROM generate_series(1, :rows) AS g,
     LATERAL (SELECT now() - interval '30 days' + g * interval '2 s' AS slot) AS s
"""


async def claim_cycles(root: Path, url: str, queued: int = 1000) -> float:
    """Seconds per claim of 10 plus finishing them, over `queued` queued runs."""
    async with opened(root, url) as app:
        repository = app.repository
        await repository.enqueue_slots([NewRun("noop")] * queued, utcnow())
        cycles, start = 0, time.perf_counter()
        while claimed := await repository.claim("bench:2:0", ["noop"], 10, utcnow()):
            now = utcnow()
            await repository.finish([Result(run.id, "succeeded", now, started_at=now)
                                     for run in claimed], now)
            cycles += 1
        elapsed = time.perf_counter() - start
    assert cycles == queued // 10, cycles
    return elapsed / cycles


async def load_history(root: Path, url: str) -> float:
    args = encode_args((), {})
    start = time.perf_counter()
    async with opened(root, url) as app:
        async with app.engine.engine.begin() as conn:
            await conn.execute(text(HISTORY_SQL), {
                "args": args, "hash": args_hash(args), "rows": HISTORY})
        async with app.engine.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("ANALYZE background_job_runs"))
    return time.perf_counter() - start


def claims(root: Path, url: str) -> None:
    asyncio.run(forget_runs(root, url))
    asyncio.run(claim_cycles(root, url, 200))  # warm-up
    asyncio.run(forget_runs(root, url))
    empty = min(asyncio.run(claim_cycles(root, url)) for _ in range(3))
    asyncio.run(forget_runs(root, url))
    loaded = asyncio.run(load_history(root, url))
    long = min(asyncio.run(claim_cycles(root, url)) for _ in range(3))
    print(f"4. claim 10 and finish them, best of 3 x 100 (history loaded in {loaded:.0f} s):")
    print(f"   empty table {empty * 1000:6.2f} ms, {HISTORY:,} rows of history "
          f"{long * 1000:6.2f} ms -> {long / empty:.2f}x (target <= 1.2x)")


# -- 5. timeouts -------------------------------------------------------------------------

async def timed_out(root: Path, url: str, job: str) -> tuple[float, str]:
    async with opened(root, url) as app:
        start = time.perf_counter()
        try:
            await app.run_job(job, timeout=1)
        except TimeoutError as exc:
            return time.perf_counter() - start, type(exc).__name__
        except Exception as exc:
            return time.perf_counter() - start, f"{type(exc).__name__}: {exc}"
        return time.perf_counter() - start, "no timeout"


def timeouts(root: Path, url: str) -> None:
    print("5. app.run_job(..., timeout=1), wall time:")
    for job, target in (("awaits", 1.2), ("blocks", 2.0)):
        seconds, how = asyncio.run(timed_out(root, url, job))
        print(f"   {job:6}: {seconds:5.2f} s, {how} -> {seconds:.2f}x the timeout "
              f"(target <= {target:g} s)")


def starts_after_defer(base: Path, root: Path, url: str) -> None:
    print(f"2. from before `await app.defer(...)` to the job's first line, an idle bot, "
          f"{STARTS} runs:")
    start_latency(root, url, "PostgreSQL", 50)
    sqlite = f"sqlite+aiosqlite:///{base / 'starts.db'}"
    asyncio.run(init(root, sqlite))
    start_latency(root, sqlite, "SQLite", 1000)


def defers(_base: Path, root: Path, url: str) -> None:
    asyncio.run(forget_runs(root, url))
    asyncio.run(defer_cost(root, url))


#: Each figure, by its number: run with the scratch folder, the app folder and the URL.
FIGURES: dict[str, Callable[[Path, Path, str], None]] = {
    "1": drain,
    "2": starts_after_defer,
    "3": defers,
    "4": lambda _base, root, url: claims(root, url),
    "5": lambda _base, root, url: timeouts(root, url),
}


def main() -> None:
    from datetime import datetime

    chosen = sys.argv[1:] or list(FIGURES)
    if unknown := [figure for figure in chosen if figure not in FIGURES]:
        sys.exit(f"usage: python bench/defer.py [FIGURE ...]: no figure {', '.join(unknown)} "
                 f"(the figures are {', '.join(FIGURES)})")
    print(f"pinrepl deferred-runs bench, {datetime.now():%Y-%m-%d %H:%M}, "
          f"{os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp, scratch_postgres() as url:
        base = Path(tmp)
        root = write_app(base / "app", JOBS)
        asyncio.run(init(root, url))
        for figure in chosen:
            FIGURES[figure](base, root, url)


if __name__ == "__main__":
    main()
