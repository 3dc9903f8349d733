"""The facade a workspace gets as `database`: `database.<table>` is a `Table`, a `Query` you
refine and then await. Each call commits when it returns, unless it runs inside
`database.transaction()`. Tenant scoping is not done here but in the session itself
(`scope`); the facade only checks values early, to say clearly what was refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import delete as sql_delete
from sqlalchemy import exists, func, inspect, select
from sqlalchemy import update as sql_update
from sqlalchemy.exc import DBAPIError, InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import attributes

from ..errors import ReadOnlySession, TenantViolation, UnknownColumn, UnknownTable, suggest
from .models import DATABASE_KEY, Model, Tenant
from .scope import FACADE, tenant_filter

if TYPE_CHECKING:
    from .engine import Engine

T = TypeVar("T")


class Database:
    """A workspace's database: `database.<table>`, `transaction()`, `session`."""

    def __init__(self, engine: Engine, tenant_id: int | None = None) -> None:
        self._engine = engine
        self.tenant_id = tenant_id
        self._session: AsyncSession | None = None
        self._depth = 0
        self._tables: dict[str, Table] = {}

    @property
    def session(self) -> AsyncSession:
        """The SQLAlchemy session (opened on first use, scoped to the workspace's tenant);
        commit your own work on it."""
        if self._session is None:
            self._session = self._engine.new_session(self.tenant_id)
            self._session.info[DATABASE_KEY] = self
        return self._session

    @property
    def tables(self) -> list[str]:
        return sorted(self._engine.tables)

    def __getattr__(self, name: str) -> Table:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._tables[name]
        except KeyError:
            pass
        model = self._engine.tables.get(name)
        if model is None:
            raise UnknownTable(
                f"unknown table {name!r}{suggest(name, self.tables)}; "
                f"tables: {', '.join(self.tables)}"
            )
        table = self._tables[name] = Table(self, model)
        return table

    def __dir__(self) -> list[str]:
        return [*super().__dir__(), *self.tables]

    def __repr__(self) -> str:
        scope = f" tenant={self.tenant_id}" if self.tenant_id is not None else ""
        return f"<Database {self._engine.shown_url}{scope} tables: {', '.join(self.tables)}>"

    async def has_table(self, name: str) -> bool:
        """Does the database (not only the models) have table `name`?"""
        await self._engine.check()
        return await self._engine.has_table(name)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Database]:
        """Make the facade calls inside atomic: committed at the end, rolled back on an
        exception. Nested blocks are savepoints."""
        await self._engine.check()
        session = self.session
        if self._depth:
            self._depth += 1
            try:
                async with session.begin_nested():
                    yield self
            finally:
                self._depth -= 1
            return
        async with self._engine.turn():
            self._depth = 1
            try:
                yield self
            except BaseException:
                self._depth = 0
                await _rollback_keeping_records(session)
                raise
            self._depth = 0
            await session.commit()

    async def _run(self, operation: Callable[[AsyncSession], Awaitable[T]], table: str) -> T:
        """Run one facade call on `table`: committed when it returns; on a failure rolled
        back with the records loaded earlier still readable, and a database error about
        the environment (missing table, lock timeout, read-only) raised as one line."""
        try:
            if self._depth:
                return await operation(self.session)
            await self._engine.check()
            session = self.session
            async with self._engine.turn():
                try:
                    result = await operation(session)
                    await session.commit()
                except BaseException:
                    await _rollback_keeping_records(session)
                    raise
            return result
        except DBAPIError as exc:
            explained = await self._engine.explain(exc, [table])
            if explained is None:
                raise
            raise explained from None
        except ReadOnlySession as exc:  # raised here, as one line: the driver's refusal
            raise exc.with_traceback(None) from None  # is in its message, not its frames

    # -- records --

    def _scoped(self, model: type[Model]) -> bool:
        return self.tenant_id is not None and "tenant_id" in model.__table__.c

    def _check_writable(self, model: type[Model]) -> None:
        if model is Tenant and self.tenant_id is not None:
            raise TenantViolation(
                f"the tenants table is read-only inside tenant {self.tenant_id}'s workspace"
            )

    def _check_values(self, model: type[Model], values: dict[str, Any]) -> None:
        """Say early and clearly what the session's own checks would refuse."""
        self._check_writable(model)
        columns = model.__table__.c
        for key in values:
            if key not in columns:
                raise UnknownColumn(
                    f"{model.__tablename__} has no column {key!r}{suggest(key, columns.keys())}"
                )
        if self._scoped(model) and values.get("tenant_id", self.tenant_id) != self.tenant_id:
            raise TenantViolation(
                f"tenant {self.tenant_id} may not write rows of tenant {values['tenant_id']} "
                f"in {model.__tablename__}"
            )

    async def insert(self, model: type[Model], values: dict[str, Any]) -> Model:
        self._check_values(model, values)
        record = model(**values)

        async def insert(session: AsyncSession) -> Model:
            async with session.begin_nested():  # see _rollback_keeping_records
                session.add(record)
            return record

        return await self._run(insert, model.__tablename__)

    async def update_record(self, record: Model, values: dict[str, Any]) -> None:
        self._check_values(type(record), values)

        async def update(session: AsyncSession) -> None:
            async with session.begin_nested():  # see _rollback_keeping_records
                for key, value in values.items():
                    setattr(record, key, value)
            # A value that is a SQL expression (`balance=Customer.balance - 1`) is computed
            # by the database, so the flush expired it (and any server-side onupdate): read
            # them now, as a later attribute read cannot (it would be I/O outside an await).
            expired = inspect(record).expired_attributes
            if expired:
                await session.refresh(record, list(expired))

        await self._run(update, type(record).__tablename__)

    async def delete_record(self, record: Model) -> None:
        self._check_writable(type(record))

        async def delete(session: AsyncSession) -> None:
            async with session.begin_nested():  # see _rollback_keeping_records
                await session.delete(record)

        await self._run(delete, type(record).__tablename__)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


class Query:
    """A query of one table; refine with `where`, `order_by`, `limit`, `offset`, then
    await `all()`, `first()`, `count()`, `exists()`, `update(**values)` or `delete()`."""

    __slots__ = ("_conditions", "_database", "_limit", "_offset", "_order", "model")

    def __init__(
        self, database: Database, model: type[Model], conditions: tuple[Any, ...] = (),
        order: tuple[Any, ...] = (), limit: int | None = None, offset: int | None = None,
    ) -> None:
        self._database = database
        self.model = model
        self._conditions = conditions
        self._order = order
        self._limit = limit
        self._offset = offset

    def _with(self, **changes: Any) -> Query:
        fields = {
            "conditions": self._conditions, "order": self._order,
            "limit": self._limit, "offset": self._offset, **changes,
        }
        return Query(self._database, self.model, **fields)

    def _column(self, name: str) -> Any:
        columns = self.model.__table__.c
        if name not in columns:
            raise UnknownColumn(
                f"{self.model.__tablename__} has no column {name!r}"
                f"{suggest(name, columns.keys())}; columns: {', '.join(columns.keys())}"
            )
        return getattr(self.model, name)

    def where(self, *expressions: Any, **equals: Any) -> Query:
        conditions = [*expressions, *(self._column(k) == v for k, v in equals.items())]
        return self._with(conditions=(*self._conditions, *conditions))

    def order_by(self, *columns: Any) -> Query:
        """Columns or names; a name starting with '-' sorts descending."""
        order = [
            (self._column(c[1:]).desc() if c.startswith("-") else self._column(c))
            if isinstance(c, str) else c
            for c in columns
        ]
        return self._with(order=(*self._order, *order))

    def limit(self, count: int) -> Query:
        return self._with(limit=count)

    def offset(self, count: int) -> Query:
        return self._with(offset=count)

    def _where(self) -> tuple[Any, ...]:
        return (*self._conditions, *tenant_filter(self.model, self._database.tenant_id))

    def _windowed(self) -> bool:
        return self._limit is not None or self._offset is not None

    def _select(self) -> Any:
        statement = select(self.model).where(*self._where()).order_by(*self._order)
        if self._limit is not None:
            statement = statement.limit(self._limit)
        if self._offset is not None:
            statement = statement.offset(self._offset)
        return statement

    def _keys(self) -> Any:
        """The primary keys this query selects, for updates and deletes with a window."""
        (key,) = self.model.__mapper__.primary_key
        return key.in_(self._select().with_only_columns(key).scalar_subquery())

    async def all(self) -> list[Any]:
        async def all_(session: AsyncSession) -> list[Any]:
            return list((await session.scalars(self._select(), execution_options=FACADE)).all())

        return await self._database._run(all_, self.model.__tablename__)

    async def first(self) -> Any | None:
        async def first(session: AsyncSession) -> Any | None:
            return (await session.scalars(self._select().limit(1), execution_options=FACADE)
                    ).first()

        return await self._database._run(first, self.model.__tablename__)

    async def count(self) -> int:
        if self._windowed():
            statement = select(func.count()).select_from(self._select().subquery())
        else:
            statement = select(func.count()).select_from(self.model).where(*self._where())

        async def count(session: AsyncSession) -> int:
            return int(await session.scalar(statement, execution_options=FACADE) or 0)

        return await self._database._run(count, self.model.__tablename__)

    async def exists(self) -> bool:
        statement = select(exists(self._select()))

        async def exists_(session: AsyncSession) -> bool:
            return bool(await session.scalar(statement, execution_options=FACADE))

        return await self._database._run(exists_, self.model.__tablename__)

    async def update(self, **values: Any) -> int:
        """Set `values` on every selected row; returns how many rows changed."""
        self._database._check_values(self.model, values)
        where = (self._keys(),) if self._windowed() or self._order else self._where()
        statement = sql_update(self.model).where(*where).values(**values)

        async def update(session: AsyncSession) -> int:
            result = await session.execute(
                statement, execution_options={"synchronize_session": "fetch", **FACADE}
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

        return await self._database._run(update, self.model.__tablename__)

    async def delete(self) -> int:
        """Delete every selected row; returns how many rows went."""
        self._database._check_writable(self.model)
        where = (self._keys(),) if self._windowed() or self._order else self._where()
        statement = sql_delete(self.model).where(*where)

        async def delete(session: AsyncSession) -> int:
            result = await session.execute(
                statement, execution_options={"synchronize_session": "fetch", **FACADE}
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

        return await self._database._run(delete, self.model.__tablename__)

    async def __aiter__(self) -> AsyncIterator[Any]:
        for record in await self.all():
            yield record

    def __repr__(self) -> str:
        return f"<Query {' '.join(str(self._select()).split())}>"


class Table(Query):
    """`database.<name>`: a query of the whole table, plus `insert()`."""

    __slots__ = ()

    @property
    def name(self) -> str:
        return self.model.__tablename__

    async def insert(self, **values: Any) -> Any:
        """Insert a row and return its record (stamped with the tenant, if scoped)."""
        return await self._database.insert(self.model, values)

    def __repr__(self) -> str:
        columns = ", ".join(self.model.__table__.c.keys())
        return f"<Table {self.name} ({columns})>"


async def _rollback_keeping_records(session: AsyncSession) -> None:
    """Roll back, leaving the records loaded before readable as the database holds them.

    A rollback expires every record of the session, and reading an expired attribute is
    I/O that async code cannot do implicitly. So the records are set aside first, with
    the values the database still holds, and come back clean after the rollback. A write
    that failed while flushing has already rolled back its savepoint (writes run in one),
    which expired only the records it touched: those are read again. Rows the failed call
    added are dropped from the session.
    """
    sync = session.sync_session
    kept = [(record, _committed_values(record)) for record in sync.identity_map.values()]
    sync.expunge_all()
    await session.rollback()
    for record, values in kept:
        for key, value in values.items():
            attributes.set_committed_value(record, key, value)
        sync.add(record)
    for record, _values in kept:
        if inspect(record).expired_attributes:
            try:
                await session.refresh(record)
            except InvalidRequestError:  # the row is gone
                sync.expunge(record)
    await session.commit()


def _committed_values(record: Any) -> dict[str, Any]:
    """The record's loaded values as the database holds them. `committed_state` (the loaded
    value of each attribute changed since) is undocumented SQLAlchemy: pyproject bounds
    its version and tests/db/test_sqlalchemy_hooks.py fails loudly if it changes."""
    state = inspect(record)
    keys = set(state.mapper.column_attrs.keys()) - state.expired_attributes
    values = {key: state.dict[key] for key in keys if key in state.dict}
    for key, original in state.committed_state.items():
        if key in keys and original not in (attributes.NO_VALUE, attributes.NEVER_SET):
            values[key] = original
    return values
