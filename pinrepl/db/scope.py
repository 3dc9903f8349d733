"""Tenant scoping, inside SQLAlchemy: a session made for a tenant sees and writes only that
tenant's rows.

A table with a `tenant_id` column is tenant-scoped. In a tenant's session every ORM read of
it (through the facade, `database.session`, or a relationship or lazy load), and every ORM
bulk UPDATE or DELETE, gets `tenant_id = <tenant>` through `with_loader_criteria`; the
`tenants` table shows only the tenant's own row. Before a flush, new rows are stamped with
the tenant and a write to another tenant's row (or to `tenants`) is refused. Raw SQL text is
not ORM and is not scoped: it is the documented escape hatch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria

from ..errors import TenantViolation
from .models import Model, Tenant

TENANT_KEY = "pinrepl.tenant_id"
SCOPED_KEY = "pinrepl.scoped_models"


def scoped_models(models: Iterable[type[Model]]) -> tuple[type[Model], ...]:
    """The models whose table has a `tenant_id` column."""
    return tuple(m for m in models if "tenant_id" in m.__table__.c)


class TenantSession(Session):
    """The sync session under every pinrepl `AsyncSession`; scoped once `scope()` names a
    tenant, otherwise a plain SQLAlchemy session."""

    @staticmethod
    def scope(session: Session, tenant_id: int | None, models: Iterable[type[Model]]) -> None:
        session.info[TENANT_KEY] = tenant_id
        if tenant_id is not None:
            session.info[SCOPED_KEY] = scoped_models(models)


def tenant_of(session: Session) -> int | None:
    return session.info.get(TENANT_KEY)


@event.listens_for(TenantSession, "do_orm_execute")
def _filter_to_tenant(state: ORMExecuteState) -> None:
    tenant_id = tenant_of(state.session)
    if tenant_id is None or state.is_column_load:
        return  # a column load refreshes a row this session already holds
    if not (state.is_select or state.is_update or state.is_delete):
        return
    criteria = [
        with_loader_criteria(model, lambda cls: cls.tenant_id == tenant_id, include_aliases=True)
        for model in state.session.info[SCOPED_KEY]
    ]
    criteria.append(with_loader_criteria(Tenant, lambda cls: cls.id == tenant_id))
    state.statement = state.statement.options(*criteria)


@event.listens_for(TenantSession, "before_flush")
def _stamp_and_check(session: Session, _context: Any, _instances: Any) -> None:
    tenant_id = tenant_of(session)
    if tenant_id is None:
        return
    scoped = session.info[SCOPED_KEY]
    for record in session.new:
        check_write(tenant_id, record, scoped, stamp=True)
    for record in (*session.dirty, *session.deleted):
        check_write(tenant_id, record, scoped)


def check_write(
    tenant_id: int, record: Any, scoped: tuple[type[Model], ...], stamp: bool = False
) -> None:
    """Refuse a write by tenant `tenant_id` that reaches beyond its own rows; stamp a new
    row that names no tenant."""
    model = type(record)
    if isinstance(record, Tenant):
        raise TenantViolation(f"the tenants table is read-only inside tenant {tenant_id}'s "
                              "workspace")
    if model not in scoped:
        return
    if stamp and record.tenant_id is None:
        record.tenant_id = tenant_id
    elif record.tenant_id != tenant_id:
        raise TenantViolation(
            f"tenant {tenant_id} may not write rows of tenant {record.tenant_id} in "
            f"{model.__tablename__}"
        )
