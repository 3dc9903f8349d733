"""Property test: inside a tenant's run, every facade call sees and changes only that
tenant's rows, and the other tenants' rows are byte-for-byte unchanged afterwards."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pinrepl import App

from ..conftest import write_app

MODELS = """
from sqlalchemy import ForeignKey
from sqlalchemy.orm import Mapped, mapped_column
from pinrepl import Model

class TenantItem(Model):
    __tablename__ = "tenant_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    value: Mapped[int]
    label: Mapped[str]
"""

PROBE = """
from pinrepl import BackgroundJob

SEEN = {}

class Probe(BackgroundJob):
    async def run(self, op, threshold):
        items = self.database.tenant_items
        chosen = items.where(items.model.value >= threshold)
        rows = []
        if op == "all":
            rows = await chosen.all()
        elif op == "first":
            rows = [r for r in [await chosen.order_by("id").first()] if r is not None]
        elif op == "count":
            SEEN["count"] = await chosen.count()
        elif op == "exists":
            SEEN["exists"] = await chosen.exists()
        elif op == "iterate":
            rows = [row async for row in chosen]
        elif op == "update":
            SEEN["changed"] = await chosen.update(label="changed")
        elif op == "delete":
            SEEN["changed"] = await chosen.delete()
        elif op == "insert":
            rows = [await items.insert(value=threshold, label="new")]
        elif op == "record-update":
            row = await chosen.first()
            if row is not None:
                await row.update(label="changed")
                rows = [row]
        elif op == "record-delete":
            row = await chosen.first()
            if row is not None:
                await row.delete()
                rows = [row]
        SEEN["rows"] = [(row.id, row.tenant_id) for row in rows]
"""

OPS = ["all", "first", "count", "exists", "iterate", "update", "delete", "insert",
       "record-update", "record-delete"]


@pytest.fixture(scope="module")
def isolation_app(tmp_path_factory):
    root = write_app(tmp_path_factory.mktemp("iso") / "app", {"probe.py": PROBE}, models=MODELS)
    database = root / "iso.db"

    async def create():
        async with App.open(root, environ={"PINREPL_DATABASE_URL": f"sqlite:///{database}"}
                            ) as app:
            await app.init_database(echo=lambda _: None)

    asyncio.run(create())
    return root, database


def snapshot(database):
    with closing(sqlite3.connect(database)) as db:
        return db.execute(
            "select id, tenant_id, value, label from tenant_items order by id"
        ).fetchall()


scenario = st.integers(min_value=2, max_value=4).flatmap(lambda n: st.tuples(
    st.just(n),
    st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 9),
                       st.text("abcxyz", max_size=4)), max_size=12),
    st.integers(0, n - 1),
    st.sampled_from(OPS),
    st.integers(0, 9),
))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario)
def test_a_tenant_sees_and_changes_only_its_own_rows(isolation_app, case):
    root, database = isolation_app
    tenants, rows, actor, op, threshold = case
    with closing(sqlite3.connect(database)) as db, db:
        db.execute("delete from tenant_items")
        db.execute("delete from tenants")
        db.executemany("insert into tenants (id, name, active) values (?, ?, 1)",
                       [(i + 1, f"t{i + 1}") for i in range(tenants)])
        db.executemany("insert into tenant_items (tenant_id, value, label) values (?, ?, ?)",
                       [(t + 1, v, label) for t, v, label in rows])
    me = actor + 1
    before = snapshot(database)

    async def run():
        async with App.open(root, environ={"PINREPL_DATABASE_URL": f"sqlite:///{database}"}
                            ) as app:
            await app.run_job("probe", (op, threshold), tenants=[me])
            return app.jobs.get("probe").cls.run.__globals__["SEEN"]

    seen = asyncio.run(run())
    after = snapshot(database)
    mine = [r for r in before if r[1] == me and r[2] >= threshold]

    assert all(tenant == me for _, tenant in seen["rows"])
    assert [r for r in after if r[1] != me] == [r for r in before if r[1] != me]
    if op in ("all", "iterate"):
        assert sorted(seen["rows"]) == [(r[0], me) for r in mine]
    if op == "count":
        assert seen["count"] == len(mine)
    if op == "exists":
        assert seen["exists"] == bool(mine)
    if op in ("update", "delete"):
        assert seen["changed"] == len(mine)
    if op == "insert":
        assert [r for r in after if r not in before] == [(seen["rows"][0][0], me, threshold,
                                                          "new")]
