"""Tenancy: which tenants a run covers.

`select_tenants` applies a job's `tenants_filter` to the `tenants` table; `resolve_tenants`
turns ids or names a caller chose into tenant rows. Both read through an unscoped database
of their own, so the caller's workspace is never touched. Scoping the data itself is the
database facade's job (`Database.tenant_id`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .errors import JobDefinitionError, NoTenantsTable, UnknownTenant, suggest

if TYPE_CHECKING:
    from .app import App
    from .database import Tenant
    from .jobs import JobSpec


async def select_tenants(app: App, spec: JobSpec) -> list[Tenant]:
    """The tenants `spec.cls.tenants_filter` selects, in id order."""
    from .database import Query, Tenant

    database = app.database()
    try:
        await _require_tenants_table(app, spec.name)
        try:
            query = spec.cls(app.workspace()).tenants_filter(database.tenants)
        except Exception as exc:
            exc.add_note(f"in tenants_filter of background job {spec.name!r}")
            raise
        if not isinstance(query, Query) or query.model is not Tenant:
            raise JobDefinitionError(
                f"background job {spec.name!r}: tenants_filter must return a query of "
                f"tenants (like tenants.where(active=True)), not {type(query).__name__}"
            )
        return await query.order_by(Tenant.id).all()
    finally:
        await database.aclose()


async def resolve_tenants(app: App, refs: Iterable[Any]) -> list[Tenant]:
    """Tenant rows for `refs`: rows, ids (int or digits) or names, in the order given."""
    from .database import Tenant

    database = app.database()
    try:
        await _require_tenants_table(app, None)
        found: list[Tenant] = []
        names: list[str] | None = None
        for ref in refs:
            if isinstance(ref, Tenant):
                found.append(ref)
                continue
            text = str(ref)
            query = (
                database.tenants.where(id=int(text)) if text.isdigit()
                else database.tenants.where(name=text)
            )
            tenant = await query.first()
            if tenant is None:
                if names is None:
                    names = [t.name for t in await database.tenants.all()]
                raise UnknownTenant(f"unknown tenant {text!r}{suggest(text, names)}")
            found.append(tenant)
        return found
    finally:
        await database.aclose()


async def _require_tenants_table(app: App, job: str | None) -> None:
    await app.engine.check()
    if not await app.engine.has_table("tenants"):
        what = f"background job {job!r} is multi-tenant but" if job else "there are no tenants:"
        raise NoTenantsTable(
            f"{what} the database has no tenants table; create it with: pinrepl init-database"
        )
