"""A scratch PostgreSQL database for a bench: made on the server of
PINREPL_BENCH_DATABASE_URL (else PINREPL_TEST_DATABASE_URL), dropped afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import Iterator

from sqlalchemy.engine import make_url


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
