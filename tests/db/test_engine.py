"""The engine's promises to other transactions: a sandbox is a scope that is rolled back, and
a statement waiting for another transaction's lock gives up with one clear line."""

from __future__ import annotations

import pytest

from pinrepl import App, LockTimeout, SandboxBusy

from ..conftest import write_app

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
