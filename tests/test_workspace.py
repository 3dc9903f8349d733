"""Workspaces: lazily opened services, teardown, and a caller left untouched by a run."""

from __future__ import annotations

import pytest

from pinrepl import Database


async def test_database_is_opened_lazily_and_closed_by_teardown(example_app):
    workspace = example_app.workspace()
    assert isinstance(workspace.database, Database)
    assert await workspace.database.users.count() == 6
    await workspace.aclose()
    assert example_app.engine.engine.pool.checkedout() == 0


async def test_runs_return_their_connections_even_when_they_fail(example_app):
    for _ in range(3):
        await example_app.run_background_job("deliver-notifications")
        with pytest.raises(RuntimeError):
            await example_app.run_background_job("risky-operation")
    assert example_app.engine.engine.pool.checkedout() == 0


async def test_caller_transaction_is_untouched_by_a_failing_run(example_app):
    caller = example_app.workspace()
    database = caller.database
    with pytest.raises(RuntimeError):
        async with database.transaction():
            await database.users.insert(name="Zed", email="zed@x.example")
            with pytest.raises(RuntimeError, match="risky"):
                await caller.run_background_job("risky-operation")
            # the caller's open transaction still sees its own row
            assert await database.users.where(name="Zed").count() == 1
            raise RuntimeError("caller gives up")
    assert await database.users.where(name="Zed").count() == 0
    await caller.aclose()


async def test_caller_transaction_survives_a_successful_run(example_app):
    caller = example_app.workspace()
    database = caller.database
    async with database.transaction():
        await database.users.insert(name="Zed", email="zed@x.example")
        await caller.run_background_job("send-email", "a@b.example", "hi")
    assert await database.users.where(name="Zed").count() == 1
    await caller.aclose()
