"""Runs as records (SPEC 8): a run has a row before it starts (`queued`), tries
(`attempt`, `parent_id`), a priority, a key, a timeout, the time it may start
(`not_before`) and its traceback; `bot` and `started_at` are empty until a bot claims it.

The unique index over the arguments themselves (`_claim`) gives way to `_slot_once`, over
their SHA-256 (`args_hash`), so that arguments of any size fit a btree (PostgreSQL refused
rows of more than about 2.7 KB). Rows of 0.1.0 are kept: all came from schedules
(origin `schedule`), each was a first try, and was created, and could start, when it did.

Revision ID: 0002
Revises: 0001
"""

import hashlib
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

RUNS = "background_job_runs"
#: Rows hashed per statement on SQLite (which has no SHA-256 of its own).
BATCH = 1000

_when = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Dropped first: SQLite's batch mode below copies the table's indexes, and cannot read
    # an index over an expression back.
    op.drop_index("background_job_runs_claim", table_name=RUNS)
    for column in (
        sa.Column("args_hash", sa.String(64), nullable=True),
        sa.Column("origin", sa.String(20), nullable=False, server_default="schedule"),
        sa.Column("attempt", sa.Integer(), nullable=False, server_default="1"),
        sa.Column("parent_id", sa.BigInteger(), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("key", sa.String(300), nullable=True),
        sa.Column("created_at", _when, nullable=True),
        sa.Column("timeout", sa.Float(), nullable=True),
        sa.Column("not_before", _when, nullable=True),
        sa.Column("traceback", sa.Text(), nullable=True),
        sa.Column("retry_of", sa.BigInteger(), nullable=True),
    ):
        op.add_column(RUNS, column)
    _backfill()
    with op.batch_alter_table(RUNS) as batch:
        kinds: dict[str, sa.types.TypeEngine[Any]] = {
            "args_hash": sa.String(64), "created_at": _when, "not_before": _when,
            "origin": sa.String(20), "attempt": sa.Integer(), "priority": sa.Integer(),
        }
        for name in ("args_hash", "created_at", "not_before"):
            batch.alter_column(name, existing_type=kinds[name], nullable=False)
        # The defaults only filled the rows of 0.1.0: pinrepl writes every value itself.
        for name in ("origin", "attempt", "priority"):
            batch.alter_column(name, existing_type=kinds[name], existing_nullable=False,
                               server_default=None)
        batch.alter_column("bot", existing_type=sa.String(200), nullable=True)
        batch.alter_column("started_at", existing_type=_when, nullable=True)
    _create_indexes()


def _backfill() -> None:
    bind = op.get_bind()
    runs = sa.table(RUNS, sa.column("id"), sa.column("args"), sa.column("args_hash"),
                    sa.column("created_at"), sa.column("started_at"),
                    sa.column("not_before"), sa.column("scheduled_for"))
    if bind.dialect.name == "postgresql":
        op.execute(runs.update().values(
            args_hash=sa.func.encode(sa.func.sha256(sa.func.convert_to(runs.c.args, "UTF8")),
                                     "hex"),
            created_at=runs.c.started_at, not_before=runs.c.scheduled_for,
        ))
        return
    op.execute(runs.update().values(created_at=runs.c.started_at,
                                    not_before=runs.c.scheduled_for))
    last = None
    while True:
        page = sa.select(runs.c.id, runs.c.args).order_by(runs.c.id).limit(BATCH)
        if last is not None:
            page = page.where(runs.c.id > last)
        rows = bind.execute(page).all()
        if not rows:
            return
        bind.execute(
            runs.update().where(runs.c.id == sa.bindparam("run_id"))
            .values(args_hash=sa.bindparam("digest")),
            [{"run_id": id_, "digest": hashlib.sha256(args.encode()).hexdigest()}
             for id_, args in rows],
        )
        last = rows[-1][0]


def _where(clause: str) -> dict[str, Any]:
    return {"postgresql_where": sa.text(clause), "sqlite_where": sa.text(clause)}


def _create_indexes() -> None:
    op.create_index("background_job_runs_queue", RUNS, ["priority", "not_before", "id"],
                    **_where("status = 'queued'"))
    op.create_index("background_job_runs_key_live", RUNS, ["key"], unique=True,
                    **_where("key IS NOT NULL AND status IN ('queued', 'running')"))
    op.create_index("background_job_runs_retries", RUNS, ["retry_of"],
                    **_where("retry_of IS NOT NULL"))
    op.create_index("background_job_runs_parent", RUNS, ["parent_id"],
                    **_where("parent_id IS NOT NULL"))
    op.create_index(
        "background_job_runs_slot_once", RUNS,
        ["job", "args_hash", sa.text("coalesce(tenant_id, 0)"), "scheduled_for", "attempt"],
        unique=True, **_where("origin = 'schedule'"),
    )
