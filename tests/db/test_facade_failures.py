"""A failed facade call is rolled back and leaves the records loaded before it readable."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError


async def test_records_stay_readable_after_a_failed_insert(example_app):
    async with example_app.workspace() as workspace:
        database = workspace.database
        user = await database.users.order_by("id").first()
        tenant = await database.tenants.where(name="acme").first()
        with pytest.raises(IntegrityError):
            await database.tenants.insert(name="acme")  # the name is taken
        assert (user.email, tenant.name) == ("alice@acme.example", "acme")
        await user.update(name="Alicia")  # and still usable
        assert (await database.users.where(id=user.id).first()).name == "Alicia"


async def test_a_record_whose_update_failed_shows_what_the_database_holds(example_app):
    async with example_app.workspace() as workspace:
        database = workspace.database
        user = await database.users.order_by("id").first()
        with pytest.raises(IntegrityError):
            await user.update(name="Al", email=None)  # email is NOT NULL
        assert (user.name, user.email) == ("Alice", "alice@acme.example")
        assert await database.users.where(name="Al").count() == 0


async def test_a_record_whose_delete_failed_is_still_there(example_app):
    async with example_app.workspace() as workspace:
        database = workspace.database
        acme = await database.tenants.where(name="acme").first()
        with pytest.raises(IntegrityError):
            await acme.delete()  # its users point to it
        assert acme.name == "acme"
        await acme.update(active=False)
        assert not (await database.tenants.where(name="acme").first()).active
