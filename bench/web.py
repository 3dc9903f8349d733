"""What the run history costs the dashboard (SPEC 9): each page served over a runs table of
1,000,000 rows against the same page over 1,000 rows, measured side by side in one run.

The pages must not grow with the history (keyset pages over indexes). Target: every page
with 1,000,000 rows at most 1.5x its time with 1,000 (median against median). Each is
also given as the time to serve it, median and p99.

The app has 5 jobs `report-1` .. `report-5`, each hourly. Both histories are made by the
same rule, by a run's age k (0: the newest), ending at the same instant: run k belongs to
report-(k % 5 + 1) and its slot is k minutes before the end; one in 3 failed (so that every
filtered page is full in the small history too); runs 7 and 707 were abandoned (a rare
status, which a page must find without reading the history); every other run was
deferred, and the others belong to tenants 1 to 9 in turn. They are inserted oldest first,
so ids grow with time. The large history is the small one with 999,000 older runs before
it: the newest pages hold the same runs in both.

The pages, as `pinrepl.web.create_app(app)` serves them (in this process, through httpx's
ASGI transport: what is measured is the dashboard and its database, not a socket):
  jobs            /                                   the jobs, their last runs, pauses
  runs            /runs                               newest first
  runs by job     /runs?job=report-3
  runs by status  /runs?status=failed
  job + status    /runs?job=report-3&status=failed
  rare status     /runs?status=abandoned              the same 2 runs in both
  by tenant       /runs?tenant=4
  older page      /runs?before=ID                     the page 500 runs back (keyset)
  one run         /runs/ID                            a failed run
  bots            /bots

Each page is requested ROUNDS times per database after a warm-up, the two databases
alternating request by request so that drift hits both alike.

On PostgreSQL (two scratch databases made on the server of PINREPL_BENCH_DATABASE_URL,
else PINREPL_TEST_DATABASE_URL, dropped at the end) and on SQLite (pinrepl's default, two
files in a temporary folder). The rows are inserted by one `INSERT ... SELECT` each, then
analysed.

Run: python bench/web.py [postgresql|sqlite]   (default: both)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import httpx
from scratch import scratch_postgres  # bench/ is the script's folder: on sys.path
from sqlalchemy import insert, text

from pinrepl import App
from pinrepl.db.models import Tenant
from pinrepl.runs.record import args_hash, encode_args
from pinrepl.web import create_app

SMALL, LARGE = 1_000, 1_000_000
JOBS, TENANTS = 5, 9
ROUNDS, WARM_UP = 200, 20
END = "2026-11-01 00:00:00"

JOB = """
from pinrepl import BackgroundJob

class Report{n}(BackgroundJob):
    def meta(self):
        self.schedule("0 * * * *")

    async def run(self):
        pass
"""

_COLUMNS = """(job, tenant_id, args, args_hash, scheduled_for, status, bot, started_at,
    finished_at, error, origin, attempt, priority, created_at, not_before)"""

#: The run of age k (0: the newest); `{slot}` is its slot, `{ended}` a second after it.
_VALUES = """'report-' || (k % 5 + 1), CASE WHEN k % 2 = 1 THEN k / 2 % 9 + 1 END, :args,
    :hash, {slot},
    CASE WHEN k IN (7, 707) THEN 'abandoned' WHEN k % 3 = 1 THEN 'failed'
         ELSE 'succeeded' END,
    'bench:1:0', {slot}, {ended},
    CASE WHEN k IN (7, 707) THEN 'its bot stopped beating'
         WHEN k % 3 = 1 THEN 'RuntimeError: down' END,
    CASE WHEN k % 2 = 0 THEN 'defer' ELSE 'schedule' END, 1, 0, {slot}, {slot}"""

POSTGRESQL_HISTORY = f"""
INSERT INTO background_job_runs {_COLUMNS}
SELECT {_VALUES.format(slot="slot", ended="slot + interval '1 s'")}
FROM generate_series(:rows - 1, 0, -1) AS k,
     LATERAL (SELECT timestamptz '{END}Z' - k * interval '1 minute') AS s(slot)
"""

SQLITE_HISTORY = f"""
WITH RECURSIVE n(k) AS (SELECT :rows - 1 UNION ALL SELECT k - 1 FROM n WHERE k > 0),
     s(k, slot) AS (SELECT k, datetime('{END}', '-' || k || ' minutes') FROM n)
INSERT INTO background_job_runs {_COLUMNS}
SELECT {_VALUES.format(slot="slot", ended="datetime(slot, '+1 seconds')")}
FROM s
"""


def write_app(root: Path) -> Path:
    (root / "jobs").mkdir(parents=True)
    for n in range(1, JOBS + 1):
        (root / "jobs" / f"report_{n}.py").write_text(textwrap.dedent(JOB.format(n=n)))
    return root


def opened(root: Path, url: str) -> App:
    return App.open(root, environ={"PINREPL_DATABASE_URL": url})


async def fill(root: Path, url: str, rows: int) -> None:
    """pinrepl's tables, the tenants and `rows` runs of history, analysed."""
    history = POSTGRESQL_HISTORY if url.startswith("postgresql") else SQLITE_HISTORY
    args = encode_args((), {})
    async with opened(root, url) as app:
        await app.init_database(echo=lambda _line: None)
        async with app.engine.engine.begin() as conn:
            await conn.execute(insert(Tenant), [{"name": f"t{i}"} for i in range(TENANTS)])
            await conn.execute(text(history), {"args": args, "hash": args_hash(args),
                                               "rows": rows})
        async with app.engine.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("ANALYZE"))


@contextlib.asynccontextmanager
async def dashboard(root: Path, url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with opened(root, url) as app:
        transport = httpx.ASGITransport(app=create_app(app))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as web:
            yield web


async def pages(root: Path, url: str) -> dict[str, str]:
    """Each page's address on the database `url`."""
    async with opened(root, url) as app, app.engine.engine.connect() as conn:
        newest = (await conn.execute(text("SELECT max(id) FROM background_job_runs"))
                  ).scalar_one()
        failed = (await conn.execute(text(
            "SELECT max(id) FROM background_job_runs WHERE status = 'failed'"))).scalar_one()
    return {
        "jobs": "/",
        "runs": "/runs",
        "runs by job": "/runs?job=report-3",
        "runs by status": "/runs?status=failed",
        "job + status": "/runs?job=report-3&status=failed",
        "rare status": "/runs?status=abandoned",
        "by tenant": "/runs?tenant=4",
        "older page": f"/runs?before={newest - 500}",
        "one run": f"/runs/{failed}",
        "bots": "/bots",
    }


async def measure(root: Path, small: str, large: str) -> dict[str, dict[str, list[float]]]:
    """Seconds per request of each page, by database."""
    addresses = {url: await pages(root, url) for url in (small, large)}
    times: dict[str, dict[str, list[float]]] = {url: {} for url in (small, large)}
    async with dashboard(root, small) as on_small, dashboard(root, large) as on_large:
        clients = {small: on_small, large: on_large}
        for page in addresses[small]:
            for n in range(WARM_UP + ROUNDS):
                for url, web in clients.items():
                    start = time.perf_counter()
                    response = await web.get(addresses[url][page])
                    elapsed = time.perf_counter() - start
                    if response.status_code != 200:
                        sys.exit(f"{page} ({addresses[url][page]}): {response.status_code} "
                                 f"{response.text[:300]}")
                    if n >= WARM_UP:
                        times[url].setdefault(page, []).append(elapsed)
    return times


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def report(name: str, times: dict[str, dict[str, list[float]]], small: str, large: str
           ) -> bool:
    print(f"{name}: ms per request, median / p99, over {ROUNDS} requests each")
    print(f"   {'page':<16}{SMALL:>10,} rows{LARGE:>17,} rows    ratio of medians")
    met = True
    for page, few in times[small].items():
        many = times[large][page]
        ratio = statistics.median(many) / statistics.median(few)
        met &= ratio <= 1.5
        print(f"   {page:<16}{statistics.median(few) * 1e3:7.2f} / {p99(few) * 1e3:6.2f}"
              f"   {statistics.median(many) * 1e3:7.2f} / {p99(many) * 1e3:6.2f}"
              f"    {ratio:.2f}x{'' if ratio <= 1.5 else '  (over 1.5x)'}")
    return met


def bench(name: str, root: Path, small: str, large: str) -> bool:
    start = time.perf_counter()
    asyncio.run(fill(root, small, SMALL))
    asyncio.run(fill(root, large, LARGE))
    print(f"{name}: {SMALL:,} and {LARGE:,} rows of history made in "
          f"{time.perf_counter() - start:.0f} s")
    return report(name, asyncio.run(measure(root, small, large)), small, large)


def main() -> None:
    which = sys.argv[1:] or ["postgresql", "sqlite"]
    if unknown := set(which) - {"postgresql", "sqlite"}:
        sys.exit(f"unknown database {', '.join(sorted(unknown))}: say postgresql or sqlite")
    print(f"pinrepl dashboard bench, {datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} cores"
          " (target: each page <= 1.5x with 1,000,000 rows)")
    met = True
    with tempfile.TemporaryDirectory() as tmp:
        root = write_app(Path(tmp) / "app")
        if "postgresql" in which:
            with scratch_postgres() as small, scratch_postgres() as large:
                met &= bench("PostgreSQL", root, small, large)
        if "sqlite" in which:
            met &= bench("SQLite", root, f"sqlite+aiosqlite:///{tmp}/small.db",
                         f"sqlite+aiosqlite:///{tmp}/large.db")
    print("every page within 1.5x" if met else "SOME PAGE OVER 1.5x")


if __name__ == "__main__":
    main()
