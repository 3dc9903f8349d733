"""What the benches share: a scratch PostgreSQL database, made on the server of
PINREPL_BENCH_DATABASE_URL (else PINREPL_TEST_DATABASE_URL) and dropped afterwards; an app
folder of job files; `pinrepl` in a subprocess."""

from __future__ import annotations

import asyncio
import compileall
import contextlib
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url

# The benches start many `pinrepl` processes: compile pinrepl once, so that none of them
# compiles it again where PYTHONDONTWRITEBYTECODE is set (its time is no part of a figure).
compileall.compile_dir(Path(__file__).resolve().parent.parent / "pinrepl", quiet=1)


@contextlib.contextmanager
def scratch_postgres() -> Iterator[str]:
    server = os.environ.get("PINREPL_BENCH_DATABASE_URL") or os.environ.get(
        "PINREPL_TEST_DATABASE_URL")
    if not server:
        sys.exit("set PINREPL_BENCH_DATABASE_URL (or PINREPL_TEST_DATABASE_URL) to a "
                 "PostgreSQL server, e.g. postgresql://postgres@127.0.0.1:5432/test")
    import asyncpg

    name = f"pinrepl_bench_{uuid.uuid4().hex[:12]}"

    async def on_server(statement: str) -> None:
        connection = await asyncpg.connect(server)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(on_server(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(on_server(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def write_app(root: Path, jobs: dict[str, str]) -> Path:
    """An app folder whose jobs/ holds `jobs` (file name: source, dedented)."""
    (root / "jobs").mkdir(parents=True)
    for name, source in jobs.items():
        (root / "jobs" / name).write_text(textwrap.dedent(source))
    return root


def pinrepl(*args: str, url: str, **popen: object) -> subprocess.Popen[str]:
    """`python -m pinrepl ARGS` on the database `url` (no other PINREPL_* variable), its
    output thrown away unless `stdout`/`stderr` say otherwise."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PINREPL_")}
    streams = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, **popen}
    return subprocess.Popen([sys.executable, "-m", "pinrepl", *args],
                            env={**env, "PINREPL_DATABASE_URL": url}, text=True,
                            **streams)  # type: ignore[call-overload]
