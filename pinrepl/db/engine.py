"""The engine: URL rules, one SQLAlchemy `AsyncEngine` per app, its sessions and the sandbox.

Sessions are made here, already scoped to a tenant (`scope.TenantSession`). In a sandbox
(`async with engine.sandbox():`) every session is bound to one connection whose outer
transaction is rolled back when the block ends; sessions there take turns (`turn()`),
since savepoints of one connection cannot interleave.

A read-only engine (`Engine(..., read_only=True)`, `repl --read-only`) has the database
itself refuse every write: each connection opens read-only (PostgreSQL's
`default_transaction_read_only`, SQLite's `query_only`), so no code path can write, the
facade's, `database.session`'s, raw SQL's or pinrepl's own tables' alike; each refusal is
raised as `ReadOnlySession`, one line.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    DisconnectionError,
    InterfaceError,
    InvalidRequestError,
    NoSuchModuleError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from ..errors import (
    ConfigError,
    DatabaseReadOnly,
    DatabaseUnavailable,
    LockTimeout,
    MissingColumn,
    MissingTable,
    NoDatabase,
    PinreplError,
    ReadOnlySession,
    SandboxBusy,
)
from .models import Model
from .scope import TenantSession

#: How long a session waits for its turn on the sandbox's one connection, and a statement
#: for a lock another transaction holds (SQLite's busy timeout, PostgreSQL's lock_timeout).
SANDBOX_TURN_TIMEOUT = 5.0
LOCK_TIMEOUT = 5.0

#: The execution option of a connection whose SQLite transactions begin `IMMEDIATE`.
IMMEDIATE = "pinrepl_immediate"

_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 5, 6, 8
_PG_UNDEFINED_TABLE, _PG_UNDEFINED_COLUMN = "42P01", "42703"
_PG_LOCK_NOT_AVAILABLE, _PG_READ_ONLY = "55P03", "25006"


#: Whatever a database call can raise: the database went away, or it refused the statement
#: (`is_outage` tells which).
DATABASE_ERRORS = (DBAPIError, DisconnectionError, OSError, TimeoutError, DatabaseUnavailable)

#: PostgreSQL's SQLSTATE classes of a server that is away or not taking work now: connection
#: exception, transaction rollback (a deadlock, a serialization failure: try again),
#: insufficient resources, operator intervention (shutting down, starting up, a statement
#: cancelled), system error.
_PG_AWAY = ("08", "40", "53", "57", "58")
#: SQLite's primary result codes of a database that cannot be used now: busy, locked, I/O
#: error, disk full, cannot open, locking protocol.
_SQLITE_AWAY = frozenset({5, 6, 10, 13, 14, 15})


def is_outage(error: BaseException) -> bool:
    """Whether `error` says the database is away or not answering (try again later), rather
    than that it refused what it was asked (trying again would change nothing): the one
    classifier of database errors, with `Engine.explain` which says the refusals."""
    if isinstance(error, DBAPIError):
        if error.connection_invalidated:
            return True
        sqlstate = getattr(error.orig, "sqlstate", None)
        if isinstance(sqlstate, str):
            return sqlstate.startswith(_PG_AWAY)
        code = getattr(error.orig, "sqlite_errorcode", None)
        if isinstance(code, int):
            return (code & 0xFF) in _SQLITE_AWAY
        return isinstance(error, OperationalError | InterfaceError)
    if isinstance(error, PinreplError):  # a missing table, a read-only file: refusals
        return type(error) is DatabaseUnavailable
    return isinstance(error, DisconnectionError | OSError | TimeoutError)


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


def first_line(exc: BaseException) -> str:
    """The first line of a database error, without SQLAlchemy's wrapping."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Engine:
    """One app's engine and tables; makes the sessions of its workspaces."""

    def __init__(self, url: str, root: Path, models: Iterable[type[Model]], *,
                 read_only: bool = False) -> None:
        self.url = database_url(url, root)
        self.tables: dict[str, type[Model]] = {m.__tablename__: m for m in models}
        #: Whether the database refuses every write of this engine (see the module).
        self.read_only = read_only
        try:
            self.engine = create_async_engine(
                self.url, connect_args=_connect_args(self.url, read_only))
        except (NoSuchModuleError, InvalidRequestError, ArgumentError, ImportError) as exc:
            raise ConfigError(
                f"cannot use database URL {self.shown_url}: {str(exc).splitlines()[0]}"
            ) from None
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        if self.is_sqlite:
            _sqlite_transactions(self.engine.sync_engine, read_only)
        if read_only:
            _refusals_in_one_line(self.engine.sync_engine)
        self._sessions = async_sessionmaker(
            self.engine, expire_on_commit=False, sync_session_class=TenantSession
        )
        self._sandbox: AsyncConnection | None = None
        self._turn = asyncio.Lock()
        self._checked = False
        self._known_tables: set[str] = set()

    @property
    def shown_url(self) -> str:
        return self.url.render_as_string(hide_password=True)

    @property
    def sandboxed(self) -> bool:
        return self._sandbox is not None

    def new_session(self, tenant_id: int | None = None) -> AsyncSession:
        """A session, scoped to `tenant_id` if given (see `scope`)."""
        if self._sandbox is not None:
            session = AsyncSession(
                bind=self._sandbox, expire_on_commit=False,
                join_transaction_mode="create_savepoint", sync_session_class=TenantSession,
            )
        else:
            session = self._sessions()
        TenantSession.scope(session.sync_session, tenant_id, self.tables.values())
        return session

    def turn(self) -> Any:
        """An async context in which a session may use the sandbox's connection (a no-op
        outside a sandbox). Raises `SandboxBusy` after a bounded wait."""
        if self._sandbox is None:
            return nullcontext()
        return self._take_turn()

    @asynccontextmanager
    async def _take_turn(self) -> AsyncIterator[None]:
        try:
            await asyncio.wait_for(self._turn.acquire(), SANDBOX_TURN_TIMEOUT)
        except TimeoutError:
            raise SandboxBusy(
                "the sandbox's connection is held by an open transaction of another "
                f"workspace for more than {SANDBOX_TURN_TIMEOUT:g} s (a job run inside "
                "`async with database.transaction():` waits on it); run the job outside it"
            ) from None
        try:
            yield
        finally:
            self._turn.release()

    async def check(self, create: bool = False) -> None:
        """Raise `DatabaseUnavailable` unless the database can be reached (once):
        `NoDatabase` for a SQLite file that does not exist, checked before connecting
        (which would create it) unless `create`."""
        if self._checked:
            return
        database = self.url.database
        missing = (  # one stat, once per app: not worth a thread
            self.is_sqlite and database and database != ":memory:" and not create
            and not Path(database).exists()  # noqa: ASYNC240
        )
        if missing:
            raise NoDatabase(f"no database at {database}; create it with: pinrepl init-database")
        try:
            async with self.engine.connect():
                pass
        except Exception as exc:
            raise DatabaseUnavailable(
                f"cannot reach database {self.shown_url}: {first_line(exc)}"
            ) from None
        self._checked = True

    async def has_table(self, name: str) -> bool:
        if name in self._known_tables:
            return True
        async with self.engine.connect() as conn:
            found = await conn.run_sync(lambda sync: inspect(sync).has_table(name))
        if found:
            self._known_tables.add(name)
        return found

    async def missing_columns(self, tables: Iterable[str]) -> dict[str, list[str]]:
        """The columns of the models of `tables` that the database's tables lack, by table
        (a table the database lacks altogether is `has_table`'s to say)."""
        models = {name: self.tables[name] for name in tables if name in self.tables}

        def find(sync: Any) -> dict[str, list[str]]:
            inspector = inspect(sync)
            found: dict[str, list[str]] = {}
            for name, model in models.items():
                if not inspector.has_table(name):
                    continue
                present = {column["name"] for column in inspector.get_columns(name)}
                lacking = [c.name for c in model.__table__.columns if c.name not in present]
                if lacking:
                    found[name] = lacking
            return found

        async with self.engine.connect() as conn:
            return await conn.run_sync(find)

    async def explain(self, error: DBAPIError, tables: Iterable[str]) -> PinreplError | None:
        """The one-line error a user should see for a database `error` raised by a
        statement on `tables`, or None when it is not about the environment (a constraint
        the data broke, say: that is the caller's to handle).

        SQLite says a missing table or column with one generic code, so the database is
        looked at to tell which, rather than the message read; only for an error of the
        type such a mistake raises (an `OperationalError`, a `ProgrammingError` in PEP
        249's words), not for a broken constraint that code may catch in a loop."""
        tables = list(tables)
        code = getattr(error.orig, "sqlite_errorcode", None) or getattr(
            error.orig, "sqlstate", None
        )
        if code in (_SQLITE_BUSY, _SQLITE_LOCKED, _PG_LOCK_NOT_AVAILABLE):
            return LockTimeout(
                f"gave up after waiting {LOCK_TIMEOUT:g} s for a lock that another "
                f"transaction holds on {self.shown_url} (an open `database.transaction()`, "
                "a REPL session with --sandbox that has written, or another process)"
            )
        if code in (_SQLITE_READONLY, _PG_READ_ONLY):
            if self.read_only:
                return read_only_session(error)
            return DatabaseReadOnly(
                f"database {self.shown_url} is read-only: {first_line(error)}"
            )
        if is_outage(error):  # the connection lost in the middle, say
            return DatabaseUnavailable(
                f"cannot reach database {self.shown_url}: {first_line(error)}")
        unclear = (code is None or self.is_sqlite) and isinstance(
            error, (OperationalError, ProgrammingError)
        )
        if code == _PG_UNDEFINED_TABLE or unclear:
            try:
                missing = [name for name in tables if not await self.has_table(name)]
            except DBAPIError:
                return None
            if missing:
                return MissingTable(missing)
        if code == _PG_UNDEFINED_COLUMN or unclear:
            try:
                lacking = await self.missing_columns(tables)
            except DBAPIError:
                return None
            if lacking:
                table, columns = next(iter(lacking.items()))
                return MissingColumn(table, columns)
        return None

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction of its own, committed when the block ends: in a
        sandbox, a savepoint of the sandbox's connection, in its turn; else a new one, whose
        transaction on SQLite takes the write lock at once (`BEGIN IMMEDIATE`: a transaction
        that reads before it writes could not take it later, whatever the busy timeout)."""
        if self._sandbox is not None:
            async with self.turn(), self._sandbox.begin_nested():
                yield self._sandbox
            return
        engine = self.engine.execution_options(**{IMMEDIATE: True}) if self.is_sqlite \
            else self.engine
        async with engine.begin() as conn:
            yield conn

    @asynccontextmanager
    async def sandbox(self) -> AsyncIterator[None]:
        """Every session made inside the block works in one transaction, rolled back at
        its end. Sandboxes do not nest."""
        if self._sandbox is not None:
            raise RuntimeError("this engine is already in a sandbox")
        await self.check()
        connection = await self.engine.connect()
        await connection.begin()
        self._sandbox = connection
        try:
            yield
        finally:
            self._sandbox = None
            try:
                await connection.rollback()
            finally:
                await connection.close()

    async def aclose(self) -> None:
        await self.engine.dispose()


def _sqlite_transactions(sync_engine: Any, read_only: bool = False) -> None:
    """Foreign keys, a busy timeout, and transactions that savepoints can nest in; with
    `read_only`, `query_only` (SQLite then refuses every write, `BEGIN IMMEDIATE` too).

    This is the recipe SQLAlchemy documents for SQLite ("Serializable isolation /
    Savepoints / Transactional DDL"): the driver's own implicit BEGIN (emitted only before
    a write, which lets a SAVEPOINT start and end the whole transaction) is turned off and
    SQLAlchemy emits BEGIN itself when a transaction starts.
    """

    @event.listens_for(sync_engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(LOCK_TIMEOUT * 1000)}")
        # WAL: readers never wait for a writer, so several processes (bots, a REPL) share
        # one file; it is a setting of the file, kept once set. In-memory databases ignore
        # it, and a read-only file cannot take it: it is then read as it is.
        with contextlib.suppress(Exception):
            cursor.execute("PRAGMA journal_mode=WAL")
        if read_only:
            cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(IMMEDIATE)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _refusals_in_one_line(sync_engine: Any) -> None:
    """A read-only engine's refused writes raised as `ReadOnlySession`, wherever they were
    made (SQLAlchemy raises what a `handle_error` listener returns, from the driver's
    error; `read_only_session` says the refusal)."""

    @event.listens_for(sync_engine, "handle_error")
    def _refused(context: Any) -> BaseException | None:
        error = context.sqlalchemy_exception
        if isinstance(error, DBAPIError) and refuses_writes(error):
            return read_only_session(error)
        return None


def refuses_writes(error: DBAPIError) -> bool:
    """Whether `error` is the database refusing a write as read-only (SQLite's
    SQLITE_READONLY, PostgreSQL's read_only_sql_transaction)."""
    code = getattr(error.orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF == _SQLITE_READONLY
    return getattr(error.orig, "sqlstate", None) == _PG_READ_ONLY


def read_only_session(error: BaseException) -> ReadOnlySession:
    """The one line of a write a read-only session's database refused."""
    return ReadOnlySession(
        f"the session is read-only (--read-only): the database refused to write: "
        f"{first_line(error)}"
    )


def _connect_args(url: URL, read_only: bool = False) -> dict[str, Any]:
    """On PostgreSQL, a statement waiting for a lock gives up after `LOCK_TIMEOUT` instead
    of forever; with `read_only`, every transaction is read-only (the server refuses every
    write in it, SQLSTATE 25006).

    They are settings of the connection, sent when it opens: a `SET` would run inside the
    driver's implicit first transaction, and the pool's first rollback would undo it.
    """
    if url.get_backend_name() != "postgresql":
        return {}
    settings = {"lock_timeout": str(int(LOCK_TIMEOUT * 1000))}  # milliseconds
    if read_only:
        settings["default_transaction_read_only"] = "on"
    if url.get_driver_name() == "asyncpg":
        return {"server_settings": settings}
    # libpq's drivers (psycopg)
    return {"options": " ".join(f"-c {name}={value}" for name, value in settings.items())}
