"""Tenant scoping, inside SQLAlchemy: a session made for a tenant sees and writes only that
tenant's rows.

A table with a `tenant_id` column is tenant-scoped. In a tenant's session every ORM read of
it (through the facade, `database.session`, or a relationship or lazy load), and every ORM
bulk UPDATE or DELETE, gets `tenant_id = <tenant>` through `with_loader_criteria`; the
`tenants` table shows only the tenant's own row. Before a flush, new rows are stamped with
the tenant and a write to another tenant's row (or to `tenants`) is refused. ORM INSERT and
UPDATE statements are checked the same way: their values may not name another tenant, an
INSERT is stamped, and an UPDATE by primary key (a list of parameter sets, which SQLAlchemy
runs without the criteria) may only name the tenant's own rows. Raw SQL text is not ORM and
is not scoped: it is the documented escape hatch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.engine import Result
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria
from sqlalchemy.sql.dml import ValuesBase

from ..errors import TenantViolation
from .models import Model, Tenant

TENANT_KEY = "pinrepl.tenant_id"
SCOPED_KEY = "pinrepl.scoped_models"
CRITERIA_KEY = "pinrepl.criteria"
#: The execution option of the facade's statements: they filter to the tenant themselves
#: (`tenant_filter`, a plain WHERE that compiles and caches like any other) and their
#: values are checked already, so the hook leaves them alone. Scoping by criteria costs
#: several times more per statement.
FACADE = {"pinrepl.facade": True}


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


def _criteria(session: Session, tenant_id: int) -> tuple[Any, ...]:
    """The session's loader criteria, made on first need: building them is most of what
    scoping costs, and a session used only through the facade never needs them."""
    criteria = session.info.get(CRITERIA_KEY)
    if criteria is None:
        criteria = session.info[CRITERIA_KEY] = (
            *(with_loader_criteria(model, lambda cls: cls.tenant_id == tenant_id,
                                   include_aliases=True)
              for model in session.info[SCOPED_KEY]),
            with_loader_criteria(Tenant, lambda cls: cls.id == tenant_id),
        )
    return criteria


def tenant_of(session: Session) -> int | None:
    return session.info.get(TENANT_KEY)


def tenant_filter(model: type[Model], tenant_id: int | None) -> tuple[Any, ...]:
    """The WHERE conditions that keep a query of `model` to `tenant_id`'s rows."""
    if tenant_id is None:
        return ()
    if issubclass(model, Tenant):
        return (Tenant.id == tenant_id,)
    if "tenant_id" in model.__table__.c:
        return (model.__table__.c.tenant_id == tenant_id,)
    return ()


#: A compiled INSERT or UPDATE names the parameters of its VALUES / SET clause after the
#: columns (`tenant_id`, or `tenant_id_m0`... for a multi-row VALUES); a WHERE clause's
#: parameters get a numbered suffix (`tenant_id_1`).
_TENANT_VALUE = re.compile(r"tenant_id(?:_m\d+)?")


@event.listens_for(TenantSession, "do_orm_execute")
def _filter_to_tenant(state: ORMExecuteState) -> Result[Any] | None:
    tenant_id = tenant_of(state.session)
    if tenant_id is None or state.is_column_load:
        return None  # a column load refreshes a row this session already holds
    if state.execution_options.get("pinrepl.facade"):
        return None
    if state.is_insert or state.is_update or state.is_delete:
        stamped = _check_statement(state, tenant_id)
        if stamped is not None:
            return stamped
    if not (state.is_select or state.is_update or state.is_delete):
        return None
    state.statement = state.statement.options(*_criteria(state.session, tenant_id))
    return None


def _check_statement(state: ORMExecuteState, tenant_id: int) -> Result[Any] | None:
    """Refuse an ORM INSERT, UPDATE or DELETE statement that reaches beyond the tenant;
    stamp an INSERT that names no tenant (returning its result when it had to be run
    anew)."""
    mapper = state.bind_mapper
    model = mapper.class_ if mapper is not None else None
    if model is not None and issubclass(model, Tenant):
        raise TenantViolation(f"the tenants table is read-only inside tenant {tenant_id}'s "
                              "workspace")
    if model is None or model not in state.session.info[SCOPED_KEY] or state.is_delete:
        return None  # a DELETE's criteria keep it to the tenant's rows
    statement: ValuesBase = state.statement  # type: ignore[assignment]
    rows = _parameter_sets(state.parameters)
    # Values come either as parameter sets (bulk INSERT, UPDATE by primary key) or in the
    # statement itself, whose compiled parameters then hold them.
    values = rows or [statement.compile().params]
    named = [v for row in values for k, v in row.items() if _TENANT_VALUE.fullmatch(k)]
    for value in named:
        if value != tenant_id:
            raise TenantViolation(
                f"tenant {tenant_id} may not write rows of tenant {value} in "
                f"{model.__tablename__}"
            )
    if state.is_update:
        _check_own_keys(state, model, rows, tenant_id)
        return None
    if len(named) == len(values):  # every row names its tenant
        return None
    if not rows:
        state.statement = statement.values(tenant_id=tenant_id)
        return None
    stamped = [{"tenant_id": tenant_id, **row} for row in rows]
    return state.invoke_statement(params=stamped if state.is_executemany else stamped[0])


def _parameter_sets(parameters: Any) -> list[Mapping[str, Any]]:
    if not parameters:
        return []
    return [parameters] if isinstance(parameters, Mapping) else list(parameters)


def _check_own_keys(state: ORMExecuteState, model: type[Model],
                    rows: list[Mapping[str, Any]], tenant_id: int) -> None:
    """An UPDATE by primary key (one parameter set per row) may name only rows the tenant
    can see (the SELECT below is itself scoped)."""
    mapper = model.__mapper__
    (column,) = mapper.primary_key
    name = mapper.get_property_by_column(column).key
    wanted = {row[name] for row in rows if name in row}
    if not wanted:
        return
    key = getattr(model, name)  # the ORM attribute: a select of it is scoped
    own = set(state.session.scalars(select(key).where(key.in_(wanted))))
    if wanted - own:
        raise TenantViolation(
            f"tenant {tenant_id} may not write rows of another tenant in "
            f"{model.__tablename__} (id {', '.join(map(str, sorted(wanted - own)))})"
        )


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
