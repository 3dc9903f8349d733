"""What the bot's history costs the jobs listing: `pinrepl list-background-jobs` over a
runs table of 1,000,000 rows against the same listing over 1,000 rows.

Both apps have 5 hourly multi-tenant jobs and 1,000 tenants. The reference history is one
slot: the latest, 200 tenants of each job (1,000 rows). The large one holds that same latest
slot and, before it, 200 hourly slots of 999 tenants of each job (999,000 rows): the
listing reads the same last slots in both, so what it costs more is what the older history
costs. Target: the listing with 1,000,000 rows at most 1.3x its time with 1,000.

1. The listing as a user runs it: a whole `pinrepl list-background-jobs` process, best of
   5 each, the two alternating.
2. The history read alone, in this process: `last_runs` of the 5 jobs, best of 20 each.

Both run on PostgreSQL: two scratch databases made on the server of
PINREPL_BENCH_DATABASE_URL, else PINREPL_TEST_DATABASE_URL, and dropped at the end. Rows are
inserted by one `INSERT ... SELECT FROM generate_series` each, then analysed.

Run: python bench/history.py
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime
from pathlib import Path

from scratch import scratch_postgres  # bench/ is the script's folder: on sys.path
from sqlalchemy import insert, text

from pinrepl import App
from pinrepl.db.models import Tenant
from pinrepl.runs.history import last_runs
from pinrepl.runs.record import args_hash, encode_args

JOBS, TENANTS, SLOTS, LATEST_TENANTS = 5, 1000, 200, 200
#: The runs' arguments (none), and their hash.
ARGS = {"args": encode_args((), {}), "hash": args_hash(encode_args((), {}))}
HOURLY = """
from pinrepl import BackgroundJob

class Report{n}(BackgroundJob):
    multi_tenant = True

    def meta(self):
        self.schedule("0 * * * *")

    async def run(self):
        pass
"""
#: The latest slot, 2026-01-01 00:00 UTC: `tenants` of each job, one in 50 failed.
LATEST = """
INSERT INTO background_job_runs
    (job, tenant_id, args, args_hash, scheduled_for, status, bot, started_at, finished_at,
     error, origin, attempt, priority, created_at, not_before)
SELECT 'report-' || j, t, :args, :hash, timestamptz '2026-01-01 00:00Z',
       CASE WHEN t % 50 = 0 THEN 'failed' ELSE 'succeeded' END, 'bench',
       timestamptz '2026-01-01 00:00Z', timestamptz '2026-01-01 00:00:02Z',
       CASE WHEN t % 50 = 0 THEN 'RuntimeError: down' END, 'schedule', 1, 0,
       timestamptz '2026-01-01 00:00Z', timestamptz '2026-01-01 00:00Z'
FROM generate_series(1, :jobs) AS j, generate_series(1, :tenants) AS t
"""
#: The hourly slots before it.
OLDER = """
INSERT INTO background_job_runs
    (job, tenant_id, args, args_hash, scheduled_for, status, bot, started_at, finished_at,
     error, origin, attempt, priority, created_at, not_before)
SELECT 'report-' || j, t, :args, :hash, slot, 'succeeded', 'bench', slot,
       slot + interval '2 seconds', NULL, 'schedule', 1, 0, slot, slot
FROM generate_series(1, :jobs) AS j, generate_series(1, :tenants) AS t,
     generate_series(timestamptz '2026-01-01 00:00Z' - :slots * interval '1 hour',
                     timestamptz '2026-01-01 00:00Z' - interval '1 hour',
                     interval '1 hour') AS slot
"""


def write_app(root: Path) -> Path:
    (root / "jobs").mkdir(parents=True)
    for n in range(1, JOBS + 1):
        (root / "jobs" / f"report_{n}.py").write_text(textwrap.dedent(HOURLY.format(n=n)))
    return root


async def fill(root: Path, url: str, older: bool) -> int:
    """The tables, the tenants and the history; the number of runs."""
    async with App.open(root, environ={"PINREPL_DATABASE_URL": url}) as app:
        await app.init_database(echo=lambda _line: None)
        async with app.engine.engine.begin() as conn:
            await conn.execute(insert(Tenant), [{"name": f"t{i}"} for i in range(TENANTS)])
            await conn.execute(text(LATEST), {"jobs": JOBS, "tenants": LATEST_TENANTS,
                                              **ARGS})
            if older:
                await conn.execute(text(OLDER), {"jobs": JOBS, "tenants": TENANTS - 1,
                                                 "slots": SLOTS, **ARGS})
        async with app.engine.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("ANALYZE background_job_runs"))
            return (await conn.execute(text("SELECT count(*) FROM background_job_runs"))
                    ).scalar_one()


def listing(root: Path, url: str) -> float:
    """One `pinrepl list-background-jobs` process, in seconds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PINREPL_")}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pinrepl", "list-background-jobs", "--json",
                           "--app", str(root)], env={**env, "PINREPL_DATABASE_URL": url},
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    assert done.returncode == 0, done.stderr
    counts = [job["last_run"]["counts"] for job in json.loads(done.stdout)["jobs"]]
    assert counts == [{"failed": 4, "succeeded": 196}] * JOBS, counts
    return elapsed


async def history_read(root: Path, url: str, rounds: int = 20) -> float:
    """The best time of `last_runs` of the app's jobs, in seconds."""
    async with App.open(root, environ={"PINREPL_DATABASE_URL": url}) as app:
        database = app.database()
        try:
            names = app.jobs.names
            await last_runs(database, names)  # connected, and the statement cached
            best = float("inf")
            for _ in range(rounds):
                start = time.perf_counter()
                found = await last_runs(database, names)
                best = min(best, time.perf_counter() - start)
            assert sorted(found) == names
        finally:
            await database.aclose()
    return best


def main() -> None:
    print(f"pinrepl history bench, {datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp, scratch_postgres() as small, \
            scratch_postgres() as large:
        root = write_app(Path(tmp) / "app")
        start = time.perf_counter()
        rows = {url: asyncio.run(fill(root, url, older=url == large)) for url in (small, large)}
        print(f"   filled {rows[small]:,} and {rows[large]:,} rows in "
              f"{time.perf_counter() - start:.1f} s")
        best = {small: float("inf"), large: float("inf")}
        for _ in range(5):  # alternate, so drift hits both alike
            for url in (small, large):
                best[url] = min(best[url], listing(root, url))
        print("1. pinrepl list-background-jobs, whole process, best of 5:")
        print(f"   {rows[small]:,} rows {best[small]:6.3f} s, {rows[large]:,} rows "
              f"{best[large]:6.3f} s -> {best[large] / best[small]:.2f}x (target <= 1.3x)")
        read = {url: asyncio.run(history_read(root, url)) for url in (small, large)}
        print("2. the last runs of the 5 jobs read alone, best of 20:")
        print(f"   {rows[small]:,} rows {read[small] * 1e3:6.2f} ms, {rows[large]:,} rows "
              f"{read[large] * 1e3:6.2f} ms -> {read[large] / read[small]:.2f}x")


if __name__ == "__main__":
    main()
