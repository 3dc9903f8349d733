"""The database: `Model`, the built-in `Tenant`, the engine and the per-workspace facade.

`Engine` wraps one SQLAlchemy `AsyncEngine` per app (and, in a sandbox, the one connection
whose outer transaction is rolled back at the end). `Database` is the facade a workspace
gets: `database.<table>` returns a `Table`, a `Query` you refine and then await. Each
facade call commits when it returns, unless it runs inside `database.transaction()`.
Inside a tenant's workspace every query of a table with a `tenant_id` column is filtered to
that tenant and every insert stamped with it.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from sqlalchemy import (
    Boolean,
    DateTime,
    String,
    event,
    exists,
    func,
    inspect,
    select,
)
from sqlalchemy import delete as sql_delete
from sqlalchemy import update as sql_update
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, InvalidRequestError, NoSuchModuleError
from sqlalchemy.ext.asyncio import (
    AsyncAttrs,
    AsyncConnection,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, object_session

from .errors import (
    ConfigError,
    DatabaseUnavailable,
    PinreplError,
    TenantViolation,
    UnknownColumn,
    UnknownTable,
    suggest,
)

T = TypeVar("T")


def _now() -> datetime:
    return datetime.now(UTC)


class Model(AsyncAttrs, DeclarativeBase):
    """Base class of an app's models: a SQLAlchemy declarative base whose instances are the
    records the facade returns, with `await record.update(**values)` and `.delete()`."""

    async def update(self, **values: Any) -> Model:
        await _database_of(self)._update_record(self, values)
        return self

    async def delete(self) -> None:
        await _database_of(self)._delete_record(self)

    def __repr__(self) -> str:
        state = inspect(self)
        shown = " ".join(
            f"{attr.key}={state.dict[attr.key]!r}"
            for attr in state.mapper.column_attrs
            if attr.key in state.dict
        )
        return f"<{type(self).__name__} {shown}>"


class Tenant(Model):
    """The built-in `tenants` table."""

    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=_now, server_default=func.now()
    )


def _database_of(record: Model) -> Database:
    session = object_session(record)
    database = session.info.get("pinrepl.database") if session is not None else None
    if database is None:
        raise PinreplError(
            f"this {type(record).__name__} record is detached (its workspace has ended); "
            "load it again"
        )
    return database


# -- models -----------------------------------------------------------------------------

_models_modules: dict[Path, ModuleType] = {}


def load_models_module(path: Path | None) -> ModuleType | None:
    """Import the app's models file once per process."""
    if path is None:
        return None
    path = path.resolve()
    if path in _models_modules:
        return _models_modules[path]
    name = f"pinrepl_models_{len(_models_modules)}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except InvalidRequestError as exc:
        del sys.modules[name]
        first = str(exc).splitlines()[0].split(".  ")[0]
        raise ConfigError(
            f"{path}: {first} (pinrepl.Model holds one set of tables per process; "
            "another models file loaded here defines it)"
        ) from None
    except Exception as exc:
        del sys.modules[name]
        raise ConfigError(f"{path} failed to import: {type(exc).__name__}: {exc}") from None
    _models_modules[path] = module
    return module


def load_models(path: Path | None) -> list[type[Model]]:
    """`Tenant`, then every mapped `Model` subclass the models file defines or imports."""
    module = load_models_module(path)
    found: list[type[Model]] = [Tenant]
    for obj in vars(module).values() if module else ():
        if (
            isinstance(obj, type) and issubclass(obj, Model) and obj not in found
            and "__table__" in vars(obj)
        ):
            found.append(obj)
    return found


# -- engine -----------------------------------------------------------------------------


def database_url(url: str, root: Path) -> URL:
    """Parse `url`, choose an async driver for bare `sqlite://` / `postgresql://`, and
    put a relative SQLite path in the app folder."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"cannot parse database URL {url!r}") from None
    backend = parsed.get_backend_name()
    if parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    if backend == "sqlite" and parsed.database and parsed.database != ":memory:":
        file = Path(parsed.database)
        if not file.is_absolute():
            parsed = parsed.set(database=str(root / file))
    return parsed


class Engine:
    """One app's engine and tables; makes the `Database` facade of each workspace."""

    def __init__(self, url: str, root: Path, models: list[type[Model]]) -> None:
        self.url = database_url(url, root)
        self.tables: dict[str, type[Model]] = {m.__tablename__: m for m in models}
        try:
            self.engine = create_async_engine(self.url)
        except (NoSuchModuleError, InvalidRequestError, ArgumentError, ImportError) as exc:
            raise ConfigError(
                f"cannot use database URL {self.shown_url}: {str(exc).splitlines()[0]}"
            ) from None
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            _sqlite_transactions(self.engine.sync_engine)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._sandbox: AsyncConnection | None = None
        self._checked = False
        self._known_tables: set[str] = set()

    @property
    def shown_url(self) -> str:
        return self.url.render_as_string(hide_password=True)

    @property
    def sandboxed(self) -> bool:
        return self._sandbox is not None

    def database(self, tenant_id: int | None = None) -> Database:
        return Database(self, tenant_id)

    def new_session(self) -> AsyncSession:
        if self._sandbox is not None:
            return AsyncSession(
                bind=self._sandbox, expire_on_commit=False,
                join_transaction_mode="create_savepoint",
            )
        return self._sessions()

    async def check(self, create: bool = False) -> None:
        """Raise `DatabaseUnavailable` unless the database can be reached (once)."""
        if self._checked:
            return
        database = self.url.database
        missing = (  # one stat, once per app: not worth a thread
            self.is_sqlite and database and database != ":memory:" and not create
            and not Path(database).exists()  # noqa: ASYNC240
        )
        if missing:
            raise DatabaseUnavailable(
                f"no database at {database}; create it with: pinrepl init-database"
            )
        try:
            async with self.engine.connect():
                pass
        except Exception as exc:
            raise DatabaseUnavailable(
                f"cannot reach database {self.shown_url}: {_first_line(exc)}"
            ) from None
        self._checked = True

    async def create_all(self) -> None:
        await self.check(create=True)
        tables = [m.__table__ for m in self.tables.values()]
        async with self.engine.begin() as conn:
            await conn.run_sync(Model.metadata.create_all, tables=tables)

    async def has_table(self, name: str) -> bool:
        if name in self._known_tables:
            return True
        async with self.engine.connect() as conn:
            found = await conn.run_sync(lambda sync: inspect(sync).has_table(name))
        if found:
            self._known_tables.add(name)
        return found

    async def start_sandbox(self) -> None:
        if self._sandbox is None:
            await self.check()
            self._sandbox = await self.engine.connect()
            await self._sandbox.begin()

    async def aclose(self) -> None:
        sandbox, self._sandbox = self._sandbox, None
        if sandbox is not None:
            await sandbox.rollback()
            await sandbox.close()
        await self.engine.dispose()


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _sqlite_transactions(sync_engine: Any) -> None:
    """Turn on foreign keys and a busy timeout, and make SAVEPOINT safe.

    pysqlite begins a transaction only before a write, so a SAVEPOINT issued first would
    start (and its RELEASE end) the whole transaction. Emitting BEGIN just before such a
    savepoint fixes that, and leaves plain reads free of an extra BEGIN/COMMIT round trip.
    """

    @event.listens_for(sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()

    @event.listens_for(sync_engine, "savepoint")
    def _savepoint(conn: Any, _name: str) -> None:
        dbapi = conn.connection.dbapi_connection
        raw = getattr(dbapi, "_connection", dbapi)  # the aiosqlite connection
        if not raw.in_transaction:
            conn.exec_driver_sql("BEGIN")


# -- the facade -------------------------------------------------------------------------


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
        """The SQLAlchemy session (opened on first use); commit your own work on it."""
        if self._session is None:
            self._session = self._engine.new_session()
            self._session.info["pinrepl.database"] = self
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
        self._depth = 1
        try:
            yield self
        except BaseException:
            self._depth = 0
            await session.rollback()
            raise
        self._depth = 0
        await session.commit()

    async def _run(self, operation: Callable[[AsyncSession], Awaitable[T]]) -> T:
        if self._depth:
            return await operation(self.session)
        if not self._engine._checked:
            await self._engine.check()
        session = self.session
        try:
            result = await operation(session)
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
        return result

    # -- records --

    def _scoped(self, model: type[Model]) -> bool:
        return self.tenant_id is not None and "tenant_id" in model.__table__.c

    def _check_writable(self, model: type[Model]) -> None:
        if model is Tenant and self.tenant_id is not None:
            raise TenantViolation(
                f"the tenants table is read-only inside tenant {self.tenant_id}'s workspace"
            )

    def _check_tenant_values(self, model: type[Model], values: dict[str, Any]) -> None:
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

    def _check_record(self, record: Model) -> None:
        model = type(record)
        self._check_writable(model)
        if self._scoped(model) and record.tenant_id != self.tenant_id:  # type: ignore[attr-defined]
            raise TenantViolation(
                f"tenant {self.tenant_id} may not change a {model.__tablename__} row of "
                f"tenant {record.tenant_id}"  # type: ignore[attr-defined]
            )

    async def _insert(self, model: type[Model], values: dict[str, Any]) -> Model:
        self._check_tenant_values(model, values)
        if self._scoped(model):
            values = {**values, "tenant_id": self.tenant_id}
        record = model(**values)

        async def insert(session: AsyncSession) -> Model:
            session.add(record)
            await session.flush()
            return record

        return await self._run(insert)

    async def _update_record(self, record: Model, values: dict[str, Any]) -> None:
        self._check_record(record)
        self._check_tenant_values(type(record), values)

        async def update(session: AsyncSession) -> None:
            for key, value in values.items():
                setattr(record, key, value)
            await session.flush()

        await self._run(update)

    async def _delete_record(self, record: Model) -> None:
        self._check_record(record)

        async def delete(session: AsyncSession) -> None:
            await session.delete(record)
            await session.flush()

        await self._run(delete)

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
        tenant_id = self._database.tenant_id
        if tenant_id is None:
            return self._conditions
        if self.model is Tenant:
            return (*self._conditions, Tenant.id == tenant_id)
        if "tenant_id" in self.model.__table__.c:
            return (*self._conditions, self.model.tenant_id == tenant_id)  # type: ignore[attr-defined]
        return self._conditions

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
            return list((await session.scalars(self._select())).all())

        return await self._database._run(all_)

    async def first(self) -> Any | None:
        async def first(session: AsyncSession) -> Any | None:
            return (await session.scalars(self._select().limit(1))).first()

        return await self._database._run(first)

    async def count(self) -> int:
        if self._windowed():
            statement = select(func.count()).select_from(self._select().subquery())
        else:
            statement = select(func.count()).select_from(self.model).where(*self._where())

        async def count(session: AsyncSession) -> int:
            return int(await session.scalar(statement) or 0)

        return await self._database._run(count)

    async def exists(self) -> bool:
        statement = select(exists(self._select()))

        async def exists_(session: AsyncSession) -> bool:
            return bool(await session.scalar(statement))

        return await self._database._run(exists_)

    async def update(self, **values: Any) -> int:
        """Set `values` on every selected row; returns how many rows changed."""
        self._database._check_tenant_values(self.model, values)
        where = (self._keys(),) if self._windowed() or self._order else self._where()
        statement = sql_update(self.model).where(*where).values(**values)

        async def update(session: AsyncSession) -> int:
            result = await session.execute(
                statement, execution_options={"synchronize_session": "fetch"}
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

        return await self._database._run(update)

    async def delete(self) -> int:
        """Delete every selected row; returns how many rows went."""
        self._database._check_writable(self.model)
        where = (self._keys(),) if self._windowed() or self._order else self._where()
        statement = sql_delete(self.model).where(*where)

        async def delete(session: AsyncSession) -> int:
            result = await session.execute(
                statement, execution_options={"synchronize_session": "fetch"}
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

        return await self._database._run(delete)

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
        return await self._database._insert(self.model, values)

    def __repr__(self) -> str:
        columns = ", ".join(self.model.__table__.c.keys())
        return f"<Table {self.name} ({columns})>"


# -- init-database ------------------------------------------------------------------------

DEMO_TENANTS = (("acme", True), ("globex", True), ("initech", False))


async def init_database(app: Any, demo: bool, echo: Callable[[str], Any]) -> None:
    engine: Engine = app.engine
    await engine.create_all()
    echo(f"tables ready in {engine.shown_url}: {', '.join(sorted(engine.tables))}")
    if not demo:
        return
    database = engine.database()
    try:
        if await database.tenants.exists():
            echo("demo data already present (the tenants table has rows); nothing added")
            return
        async with database.transaction():
            for name, active in DEMO_TENANTS:
                await database.tenants.insert(name=name, active=active)
            seed = getattr(app.models_module(), "seed_demo", None)
            if seed is not None:
                await seed(database)
        counts = [f"{name}: {await getattr(database, name).count()}" for name in database.tables]
        echo(f"demo data added ({', '.join(counts)})")
    finally:
        await database.aclose()
