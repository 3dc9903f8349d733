"""The models: `Model`, the declarative base of an app's models, and the built-in tables.

Records are model instances; `await record.update(**values)` and `await record.delete()`
go through the facade of the workspace that loaded them (found in its session's `info`),
so they commit, and are checked against the tenant, as any facade call is.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Boolean,
    DateTime,
    String,
    TypeDecorator,
    func,
    inspect,
)
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, object_session

from ..errors import PinreplError

if TYPE_CHECKING:
    from .facade import Database

#: The key of a session's `info` that holds the facade the session belongs to.
DATABASE_KEY = "pinrepl.database"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Model(AsyncAttrs, DeclarativeBase):
    """Base class of an app's models: a SQLAlchemy declarative base whose instances are the
    records the facade returns, with `await record.update(**values)` and `.delete()`."""

    async def update(self, **values: Any) -> Model:
        await _database_of(self).update_record(self, values)
        return self

    async def delete(self) -> None:
        await _database_of(self).delete_record(self)

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
        DateTime(timezone=True), default=utcnow, server_default=func.now()
    )


class UtcDateTime(TypeDecorator[datetime]):
    """An instant, stored as UTC and read back as an aware UTC datetime on every database
    (SQLite keeps no offset: every value written must be UTC for order and uniqueness)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    @property
    def python_type(self) -> type[datetime]:
        return datetime

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.utcoffset() is None:
            raise ValueError(f"{value!r} is not timezone-aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: The tables of the database layer itself (pinrepl's run tables are `runs.tables`).
BUILT_IN: tuple[type[Model], ...] = (Tenant,)


def _database_of(record: Model) -> Database:
    session = object_session(record)
    database = session.info.get(DATABASE_KEY) if session is not None else None
    if database is None:
        raise PinreplError(
            f"this {type(record).__name__} record is detached (its workspace has ended); "
            "load it again"
        )
    return database
