"""The database layer: SQLAlchemy 2 (async) behind a small facade.

`models` (the declarative base and built-in tables), `engine` (URLs, the engine, sessions,
the sandbox), `scope` (tenant scoping inside SQLAlchemy), `facade` (`Database`, `Table`,
`Query`), `schema` (`init-database`). Importing this package loads SQLAlchemy.
"""

from .engine import Engine
from .facade import Database, Query, Table
from .models import Model, Tenant

__all__ = ["Database", "Engine", "Model", "Query", "Table", "Tenant"]
