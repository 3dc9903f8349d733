"""The engine's promises to other transactions: a sandbox is a scope that is rolled back, and
a statement waiting for another transaction's lock gives up with one clear line."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from pinrepl import App, LockTimeout, SandboxBusy

from ..conftest import _on_postgres, needs_postgres, write_app

WRITER = {"add_tenant.py": """
    from pinrepl import BackgroundJob

    class AddTenant(BackgroundJob):
        async def run(self, name):
            await self.database.tenants.insert(name=name)
"""}


async def test_a_sandbox_is_a_scope_rolled_back_at_its_end(example_app):
    async with example_app.sandbox(), example_app.workspace() as workspace:
        await workspace.database.tenants.insert(name="sandboxed")
        assert await workspace.database.tenants.where(name="sandboxed").exists()
    async with example_app.sandbox(), example_app.workspace() as again:
        assert not await again.database.tenants.where(name="sandboxed").exists()
    assert not example_app.sandboxed


async def test_a_job_run_inside_the_sandboxs_open_transaction_fails_clearly(example_app):
    async with (
        example_app.sandbox(),
        example_app.workspace() as workspace,
        workspace.database.transaction(),
    ):
        await workspace.database.tenants.insert(name="held")
        with pytest.raises(SandboxBusy, match=r"held by an open transaction"):
            await workspace.run_background_job("maintenance")  # a job that writes


async def test_a_job_waiting_on_the_callers_transaction_gives_up_clearly(tmp_path, database_url):
    root = write_app(tmp_path / "app", WRITER)
    app = App.open(root, environ={"PINREPL_DATABASE_URL": database_url})
    await app.init_database(echo=lambda _line: None)
    async with app.workspace() as caller:
        await caller.database.tenants.where(name="locked").delete()
        async with caller.database.transaction():
            await caller.database.tenants.insert(name="locked")  # holds a write lock
            with pytest.raises(LockTimeout, match=r"gave up after waiting 5 s for a lock"):
                await caller.run_background_job("add-tenant", "locked")
    await app.aclose()


RENAMER = {"deactivate.py": """
    from pinrepl import BackgroundJob

    class Deactivate(BackgroundJob):
        async def run(self, name):
            await self.database.tenants.where(name=name).update(active=False)
"""}


@pytest.fixture
async def postgres_app(tmp_path, postgres_url):
    """An app of RENAMER on this run's PostgreSQL database, emptied, with its tables."""
    await _on_postgres(postgres_url, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public")
    app = App.open(write_app(tmp_path / "app", RENAMER),
                   environ={"PINREPL_DATABASE_URL": postgres_url})
    await app.init_database(echo=lambda _line: None)
    try:
        yield app
    finally:
        await app.aclose()


@needs_postgres
async def test_the_lock_timeout_outlives_a_rollback_on_postgresql(postgres_app):
    async with postgres_app.engine.engine.connect() as connection:
        assert await connection.scalar(text("show lock_timeout")) == "5s"
        await connection.rollback()
        assert await connection.scalar(text("show lock_timeout")) == "5s"


@needs_postgres
async def test_a_reused_connection_gives_up_on_another_connections_lock(postgres_app,
                                                                        postgres_url):
    async with postgres_app.workspace() as workspace:  # the pool's connection, rolled back
        await workspace.database.tenants.insert(name="held")
    holder = await asyncpg.connect(make_url(postgres_url).set(drivername="postgresql")
                                   .render_as_string(hide_password=False))
    try:
        async with holder.transaction():
            await holder.execute("select * from tenants where name = 'held' for update")
            started = time.monotonic()
            with pytest.raises(LockTimeout, match=r"gave up after waiting 5 s for a lock"):
                # bounded, so that a lock timeout that does not hold fails instead of hanging
                await asyncio.wait_for(postgres_app.run_background_job("deactivate", "held"),
                                       30)
            assert 4 <= time.monotonic() - started < 30
    finally:
        await holder.close()
