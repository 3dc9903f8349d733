"""The database facade over SQLAlchemy, on SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from pinrepl import App, PinreplError, Tenant, UnknownColumn, UnknownTable

from ..conftest import REPO


@pytest.fixture
async def db(example_app):
    workspace = example_app.workspace()
    yield workspace.database
    await workspace.aclose()


async def other_view(app, table):
    """What a separate workspace sees: proof that a write was committed."""
    async with app.workspace() as workspace:
        return await getattr(workspace.database, table).count()


async def test_queries(db):
    users = db.users
    assert await users.count() == 6
    assert await users.where(subscribed=True).count() == 4
    assert [u.name for u in await users.order_by("-name").limit(2).all()] == ["Frank", "Eve"]
    assert [u.name for u in await users.order_by("name").offset(4).all()] == ["Eve", "Frank"]
    assert (await users.where(name="Bob").first()).email == "bob@acme.example"
    assert await users.where(name="Nobody").first() is None
    assert await users.where(users.model.name.in_(["Carol", "Dave", "X"])).count() == 2
    assert await users.where(name="Bob").exists()
    assert not await users.where(name="Nobody").exists()
    assert await users.order_by("id").limit(2).count() == 2
    names = [user.name async for user in users.where(subscribed=False).order_by("id")]
    assert names == ["Carol", "Eve"]


async def test_insert_returns_a_committed_record(db, example_app):
    tenant = await db.tenants.insert(name="umbrella")
    assert tenant.id and tenant.active is True and tenant.created_at is not None
    user = await db.users.insert(name="Zed", email="zed@x.example", tenant_id=tenant.id)
    assert isinstance(user, REPO_MODELS()["users"]) and user.id
    assert await other_view(example_app, "users") == 7


def REPO_MODELS():
    return {m.__tablename__: m for m in App.open(REPO).models}


async def test_bulk_update_and_delete_are_committed(db, example_app):
    assert await db.users.where(subscribed=False).update(subscribed=True) == 2
    assert await db.users.where(subscribed=True).count() == 6
    assert await db.notifications.order_by("id").limit(5).update(sent=True) == 5
    assert await db.notifications.where(sent=True).delete() == 5
    assert await other_view(example_app, "notifications") == 7


async def test_records_update_delete_and_their_own_methods(db, example_app, capsys):
    user = await db.users.where(name="Alice").first()
    await user.update(subscribed=False)
    fresh = example_app.workspace()
    assert (await fresh.database.users.where(name="Alice").first()).subscribed is False
    await user.send_newsletter()
    assert capsys.readouterr().out == "newsletter sent to alice@acme.example\n"
    notification = await db.notifications.first()
    await notification.delete()
    assert await fresh.database.notifications.count() == 11
    await fresh.aclose()


async def test_transaction_is_atomic_and_rolls_back_on_error(db, example_app):
    with pytest.raises(RuntimeError):
        async with db.transaction():
            await db.users.insert(name="Zed", email="z@x.example")
            await db.users.where(name="Alice").update(name="Alicia")
            raise RuntimeError("abort")
    assert await db.users.where(name="Zed").count() == 0
    assert await db.users.where(name="Alice").count() == 1
    async with db.transaction():
        await db.users.insert(name="Zed", email="z@x.example")
        with pytest.raises(ValueError):
            async with db.transaction():  # a savepoint
                await db.users.insert(name="Yan", email="y@x.example")
                raise ValueError
    assert await other_view(example_app, "users") == 7
    assert await db.users.where(name="Yan").count() == 0


async def test_session_is_sqlalchemy(db):
    result = await db.session.scalars(select(Tenant.name).order_by(Tenant.id))
    assert list(result) == ["acme", "globex", "initech"]
    assert await db.session.scalar(text("SELECT 1")) == 1


async def test_unknown_table_lists_the_tables(db):
    with pytest.raises(UnknownTable) as error:
        db.userz  # noqa: B018
    assert {"notifications", "tenants", "users"} <= set(db.tables)
    assert str(error.value) == (
        f"unknown table 'userz' (did you mean: users?); tables: {', '.join(db.tables)}"
    )
    assert isinstance(error.value, AttributeError)
    assert not hasattr(db, "nope")
    assert "users" in dir(db)


async def test_unknown_column_names_the_table(db):
    with pytest.raises(UnknownColumn, match=r"users has no column 'nmae' .did you mean: name"):
        db.users.where(nmae="x")
    with pytest.raises(UnknownColumn, match="users has no column 'colour'"):
        await db.users.update(colour="red")


async def test_a_record_outlives_its_workspace_only_for_reading(example_app):
    async with example_app.workspace() as workspace:
        user = await workspace.database.users.first()
    assert user.name == "Alice"
    with pytest.raises(PinreplError, match="detached"):
        await user.update(name="x")


def test_reprs_are_readable(db):
    assert repr(db.users).startswith("<Table users (id, tenant_id, name, email, subscribed")
    assert repr(db).endswith(f" tables: {', '.join(sorted(db.tables))}>")
    assert "users" in db.tables


async def test_a_savepoint_as_first_statement_stays_inside_the_transaction(db):
    with pytest.raises(RuntimeError):
        async with db.transaction():
            async with db.transaction():  # SAVEPOINT before any write of the outer one
                await db.users.insert(name="Zed", email="z@x.example")
            raise RuntimeError("roll everything back")
    assert await db.users.where(name="Zed").count() == 0


async def test_sandbox_rolls_back_every_workspace_and_job(example_app):
    """The REPL's --sandbox and transcripts: one outer transaction, savepoints inside."""
    async with example_app.sandbox(), example_app.workspace() as workspace:
        database = workspace.database
        await database.users.insert(name="Temp", email="t@x.example")
        with pytest.raises(RuntimeError):
            async with database.transaction():
                await database.users.insert(name="Gone", email="g@x.example")
                raise RuntimeError
        await example_app.run_background_job("deliver-notifications")
        await example_app.run_background_job("send-newsletter")  # a fan-out
        assert await database.users.count() == 7
        assert await database.notifications.where(sent=False).count() == 0
    assert not example_app.sandboxed
    async with example_app.workspace() as fresh:
        assert await fresh.database.users.count() == 6
        assert await fresh.database.notifications.where(sent=False).count() == 12


async def test_a_record_updated_with_a_sql_expression_shows_the_new_value(db):
    users = db.users
    bob = await users.where(name="Bob").first()
    await bob.update(name=users.model.name + " Jr")  # computed by the database
    assert bob.name == "Bob Jr"
    async with db.transaction():
        await bob.update(name=users.model.name + ".")
        assert bob.name == "Bob Jr."
    assert bob.name == "Bob Jr."
    assert (await users.where(id=bob.id).first()).name == "Bob Jr."
