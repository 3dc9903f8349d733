"""Tenant scoping inside SQLAlchemy: in a tenant's run, every ORM statement (facade,
`database.session`, relationship loads) sees and changes only that tenant's rows, and the
other tenants' rows are byte-for-byte unchanged afterwards.

Each operation has fixed cross-tenant cases (the other tenants' rows come first, last and
in between, so a window or a lookup that ignores the tenant is caught every run), and
hypothesis explores more on top. The job reports what it saw on stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from pinrepl import App, BackgroundJobFailed, TenantViolation

from ..conftest import needs_postgres, postgres_database, write_app

#: One worker runs this module: its tests share a module fixture (pytest-xdist).
pytestmark = pytest.mark.xdist_group("db_scope")

MODELS = """
from sqlalchemy import ForeignKey
from sqlalchemy.orm import Mapped, mapped_column, relationship
from pinrepl import Model

class ScopeCategory(Model):  # shared: no tenant_id
    __tablename__ = "scope_categories"
    id: Mapped[int] = mapped_column(primary_key=True)
    items: Mapped[list["TenantItem"]] = relationship(
        back_populates="category", order_by="TenantItem.id"
    )

class TenantItem(Model):
    __tablename__ = "tenant_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id"))
    category_id: Mapped[int] = mapped_column(ForeignKey("scope_categories.id"))
    value: Mapped[int]
    label: Mapped[str]
    category: Mapped[ScopeCategory] = relationship(back_populates="items")
"""

PROBE = """
import json
from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.orm import joinedload, selectinload
from pinrepl import BackgroundJob

WINDOW = 2


class Probe(BackgroundJob):
    async def run(self, op, threshold):
        items = self.database.tenant_items
        Item, Category = items.model, self.database.scope_categories.model
        session = self.database.session
        chosen = items.where(Item.value >= threshold)
        window = chosen.order_by("id").limit(WINDOW)
        rows, seen = [], {}
        if op == "all":
            rows = await chosen.all()
        elif op == "first":
            rows = [r for r in [await chosen.order_by("id").first()] if r is not None]
        elif op == "count":
            seen["count"] = await chosen.count()
        elif op == "window-count":
            seen["count"] = await window.count()
        elif op == "exists":
            seen["exists"] = await chosen.exists()
        elif op == "iterate":
            rows = [row async for row in chosen]
        elif op == "window-all":
            rows = await window.all()
        elif op == "update":
            seen["changed"] = await chosen.update(label="changed")
        elif op == "window-update":
            seen["changed"] = await window.update(label="changed")
        elif op == "delete":
            seen["changed"] = await chosen.delete()
        elif op == "window-delete":
            seen["changed"] = await window.delete()
        elif op == "insert":
            rows = [await items.insert(value=threshold, label="new", category_id=1)]
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
        elif op == "session-scalars":
            rows = list(await session.scalars(select(Item).where(Item.value >= threshold)))
        elif op == "session-get":  # every id there is, read through raw SQL (unscoped)
            keys = await session.scalars(text("select id from tenant_items"))
            found = [await session.get(Item, key) for key in keys]
            rows = [row for row in found if row is not None]
        elif op == "session-add":
            item = Item(value=threshold, label="new", category_id=1)
            session.add(item)
            await session.commit()
            rows = [item]
        elif op == "session-insert":
            added = await session.execute(
                insert(Item).returning(Item.id, Item.tenant_id),
                [{"value": threshold, "label": "new", "category_id": 1}],
            )
            await session.commit()
            seen["rows"] = [list(row) for row in added]
        elif op == "session-insert-values":
            added = await session.execute(insert(Item).values(
                value=threshold, label="new", category_id=1
            ).returning(Item.id, Item.tenant_id))
            await session.commit()
            seen["rows"] = [list(row) for row in added]
        elif op == "session-update-by-key":
            keys = list(await session.scalars(select(Item.id).where(Item.value >= threshold)))
            if keys:
                await session.execute(update(Item), [{"id": k, "label": "changed"} for k in keys])
                await session.commit()
            seen["changed"] = len(keys)
        elif op == "session-update":
            result = await session.execute(
                update(Item).where(Item.value >= threshold).values(label="changed")
            )
            await session.commit()
            seen["changed"] = result.rowcount
        elif op == "session-delete":
            result = await session.execute(delete(Item).where(Item.value >= threshold))
            await session.commit()
            seen["changed"] = result.rowcount
        elif op == "lazy-load":
            for category in await session.scalars(select(Category)):
                rows += await category.awaitable_attrs.items
        elif op == "selectin-load":
            loaded = await session.scalars(
                select(Category).options(selectinload(Category.items))
            )
            rows = [row for category in loaded for row in category.items]
        elif op == "joined-load":
            loaded = await session.scalars(
                select(Category).options(joinedload(Category.items))
            )
            rows = [row for category in loaded.unique() for row in category.items]
        seen.setdefault("rows", [(row.id, row.tenant_id) for row in rows])
        print(json.dumps(seen))
"""

WRITE = """
import json
from sqlalchemy import delete, insert, text, update
from pinrepl import BackgroundJob, Tenant


class Write(BackgroundJob):
    async def run(self, op, other):
        items = self.database.tenant_items
        Item = items.model
        session = self.database.session
        if op == "insert":
            await items.insert(value=1, label="x", category_id=1, tenant_id=other)
        elif op == "update":
            await items.update(tenant_id=other)
        elif op == "record-update":
            await (await items.first()).update(tenant_id=other)
        elif op == "tenants-insert":
            await self.database.tenants.insert(name="sneaky")
        elif op == "tenants-update":
            await self.database.tenants.update(active=False)
        elif op == "session-add":
            session.add(Item(value=1, label="x", category_id=1, tenant_id=other))
            await session.commit()
        elif op == "session-move":
            (await items.first()).tenant_id = other
            await session.commit()
        elif op == "session-tenant":
            session.add(Tenant(name="sneaky"))
            await session.commit()
        elif op == "session-bulk-move":
            await session.execute(update(Item).values(tenant_id=other))
            await session.commit()
        elif op == "session-update-by-key":  # another tenant's row, by primary key
            others = await session.execute(
                text("select id from tenant_items where tenant_id = :other"), {"other": other})
            await session.execute(update(Item), [{"id": key, "label": "stolen"}
                                                 for (key,) in others])
            await session.commit()
        elif op == "session-insert":
            await session.execute(insert(Item), [
                {"value": 1, "label": "x", "category_id": 1},
                {"value": 1, "label": "x", "category_id": 1, "tenant_id": other},
            ])
            await session.commit()
        elif op == "session-insert-values":
            await session.execute(insert(Item).values(
                value=1, label="x", category_id=1, tenant_id=other))
            await session.commit()
        elif op == "session-tenants-update":
            await session.execute(update(Tenant).values(active=False))
            await session.commit()
        elif op == "session-tenants-delete":
            await session.execute(delete(Tenant))
            await session.commit()
        elif op == "fan-out":
            await self.workspace.run_job("probe", ("all", 0), tenants=[other])
"""

WINDOW = 2
CATEGORIES = 3
OPS = ["all", "first", "count", "window-count", "exists", "iterate", "window-all", "update",
       "window-update", "delete", "window-delete", "insert", "record-update", "record-delete",
       "session-scalars", "session-get", "session-add", "session-insert",
       "session-insert-values", "session-update", "session-update-by-key", "session-delete",
       "lazy-load", "selectin-load", "joined-load"]
INSERTS = ("insert", "session-add", "session-insert", "session-insert-values")
RELATIONSHIP_LOADS = ("lazy-load", "selectin-load", "joined-load")


@pytest.fixture(scope="module")
def iso_root(tmp_path_factory):
    """The app folder: one models file, loaded once by this process."""
    return write_app(tmp_path_factory.mktemp("iso") / "app",
                     {"probe.py": PROBE, "write.py": WRITE}, models=MODELS)


@pytest.fixture(scope="module", params=["sqlite",
                                        pytest.param("postgres", marks=needs_postgres)])
def isolation_app(request, iso_root):
    """(app folder, database URL) with the tables and the shared categories."""
    root = iso_root
    with contextlib.ExitStack() as stack:
        url = f"sqlite+aiosqlite:///{root / 'iso.db'}" if request.param == "sqlite" \
            else stack.enter_context(postgres_database())

        async def create():
            async with App.open(root, environ={"PINREPL_DATABASE_URL": url}) as app:
                await app.init_database(echo=lambda _: None)
                async with app.engine.engine.begin() as conn:
                    await conn.execute(text("insert into scope_categories (id) values (:id)"),
                                       [{"id": n + 1} for n in range(CATEGORIES)])

        asyncio.run(create())
        yield root, url


async def _sql(root, url, *statements):
    """Run `statements` ((sql, params) pairs) in one transaction; the last one's rows."""
    async with App.open(root, environ={"PINREPL_DATABASE_URL": url}) as app, \
            app.engine.engine.begin() as conn:
        result = None
        for sql, params in statements:
            result = await conn.execute(text(sql), params)
        return [tuple(row) for row in result] if result is not None and result.returns_rows \
            else []


def sql(isolation_app, *statements):
    return asyncio.run(_sql(*isolation_app, *statements))


SNAPSHOT = ("select id, tenant_id, value, label from tenant_items order by id", {})


def load(isolation_app, tenants, rows):
    """Tenants 1..`tenants`, and `rows` of (tenant index, value, label) in id order; the
    rows as they are in the table."""
    items = [{"id": n + 1, "tenant": t + 1, "category": n % CATEGORIES + 1, "value": v,
              "label": label} for n, (t, v, label) in enumerate(rows)]
    return sql(
        isolation_app,
        ("delete from tenant_items", {}),
        ("delete from tenants", {}),
        ("insert into tenants (id, name, active) values (:id, :name, true)",
         [{"id": i + 1, "name": f"t{i + 1}"} for i in range(tenants)]),
        *([("insert into tenant_items (id, tenant_id, category_id, value, label) "
            "values (:id, :tenant, :category, :value, :label)", items)] if items else []),
        *([("select setval(pg_get_serial_sequence('tenant_items', 'id'), :next, false)",
            {"next": len(items) + 1})] if "postgresql" in isolation_app[1] else []),
        SNAPSHOT,
    )


def run_job(isolation_app, job, args, tenant):
    """Run `job` in `tenant`'s workspace; what it printed, as JSON (or the exception)."""
    root, url = isolation_app
    output = io.StringIO()

    async def run():
        async with App.open(root, environ={"PINREPL_DATABASE_URL": url}) as app:
            await app.run_job(job, args, tenants=[tenant])

    with contextlib.redirect_stdout(output):
        asyncio.run(run())
    return json.loads(output.getvalue())


def check_isolation(isolation_app, tenants, rows, actor, op, threshold):
    before = load(isolation_app, tenants, rows)
    me = actor + 1
    seen = run_job(isolation_app, "probe", (op, threshold), me)
    after = sql(isolation_app, SNAPSHOT)
    mine = [r for r in before if r[1] == me and r[2] >= threshold]
    in_window = mine[:WINDOW]

    assert all(tenant == me for _, tenant in seen["rows"]), seen
    assert [r for r in after if r[1] != me] == [r for r in before if r[1] != me]
    if op in ("all", "iterate", "session-scalars"):
        assert sorted(map(tuple, seen["rows"])) == [(r[0], me) for r in mine]
    if op == "window-all":
        assert [tuple(r) for r in seen["rows"]] == [(r[0], me) for r in in_window]
    if op == "first":
        assert [tuple(r) for r in seen["rows"]] == [(r[0], me) for r in mine[:1]]
    if op == "session-get" or op in RELATIONSHIP_LOADS:
        everything_mine = [(r[0], me) for r in before if r[1] == me]
        assert sorted(map(tuple, seen["rows"])) == everything_mine
    if op == "count":
        assert seen["count"] == len(mine)
    if op == "window-count":
        assert seen["count"] == len(in_window)
    if op == "exists":
        assert seen["exists"] == bool(mine)
    if op in ("update", "delete", "session-update", "session-update-by-key", "session-delete"):
        assert seen["changed"] == len(mine)
        assert [r for r in before if r not in after] == mine
    if op in ("window-update", "window-delete"):
        assert seen["changed"] == len(in_window)
        assert [r for r in before if r not in after] == in_window
    if op in INSERTS:
        ((key, _),) = seen["rows"]
        assert [r for r in after if r not in before] == [(key, me, threshold, "new")]


# Three tenants whose rows interleave; the middle one acts, so the others' rows come before,
# between and after its own, and both below and above the threshold.
INTERLEAVED = [(0, 5, "a"), (0, 9, "b"), (1, 1, "c"), (2, 7, "x"), (1, 8, "y"), (0, 6, "z"),
               (1, 6, "ab"), (2, 9, "b"), (1, 9, "c"), (2, 2, "x")]
INTERLEAVED_TWO = [(0, 5, "a"), (1, 9, "b"), (0, 1, "c"), (1, 7, "x")]
# The acting tenant's rows come last: a window (order, limit) taken over every tenant's rows
# would hold none of its rows.
LAST = [(0, 9, "a"), (0, 8, "b"), (2, 7, "c"), (1, 9, "x"), (1, 7, "y"), (1, 8, "z")]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(("rows", "actor", "threshold"), [
    pytest.param(INTERLEAVED, 1, 5, id="interleaved"),
    pytest.param(LAST, 1, 0, id="last"),
])
def test_each_operation_in_a_fixed_cross_tenant_case(isolation_app, op, rows, actor,
                                                     threshold):
    check_isolation(isolation_app, 3, rows, actor, op, threshold)


scenario = st.integers(min_value=2, max_value=4).flatmap(lambda n: st.tuples(
    st.just(n),
    st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, 9),
                       st.text("abcxyz", max_size=4)), max_size=12),
    st.integers(0, n - 1),
    st.sampled_from(OPS),
    st.integers(0, 9),
))


@pytest.mark.parametrize("isolation_app", ["sqlite"], indirect=True)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario)
def test_a_tenant_sees_and_changes_only_its_own_rows(isolation_app, case):
    check_isolation(isolation_app, *case)


# -- writes beyond the tenant are refused ------------------------------------------------------

WRITES = ["insert", "update", "record-update", "tenants-insert", "tenants-update",
          "session-add", "session-move", "session-tenant", "session-tenants-update",
          "session-tenants-delete", "session-insert", "session-insert-values",
          "session-bulk-move", "session-update-by-key", "fan-out"]


@pytest.mark.parametrize("op", WRITES)
def test_writes_to_another_tenant_are_refused(isolation_app, op):
    before = load(isolation_app, 2, INTERLEAVED_TWO)
    tenants = sql(isolation_app, ("select id, name, active from tenants order by id", {}))
    with pytest.raises(BackgroundJobFailed) as error:
        run_job(isolation_app, "write", (op, 2), 1)
    (violation,) = error.value.exceptions
    assert isinstance(violation, TenantViolation), repr(violation)
    assert sql(isolation_app, SNAPSHOT) == before
    assert sql(isolation_app, ("select id, name, active from tenants order by id", {})) == \
        tenants
