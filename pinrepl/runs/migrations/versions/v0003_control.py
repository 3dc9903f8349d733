"""Control (SPEC 9): pauses (`background_job_pauses`: a job's, or one tenant's runs of it,
with the reason and since when), the cancel of a running run asked for
(`cancel_requested_at`, its bot cancels it), and the indexes of the run listing, newest
first by id, one page after another, with its filters (job, status, tenant, origin,
since).

Rows are kept as they are: no run of 0.2.0 had a cancel asked. The pauses table is made
only if missing (runs and bots tables dropped by hand are made anew from `0001` on, and the
pauses left are kept).

Revision ID: 0003
Revises: 0002
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

RUNS, PAUSES = "background_job_runs", "background_job_pauses"

_when = sa.DateTime(timezone=True)


def _where(clause: str) -> dict[str, Any]:
    return {"postgresql_where": sa.text(clause), "sqlite_where": sa.text(clause)}


def upgrade() -> None:
    op.add_column(RUNS, sa.Column("cancel_requested_at", _when, nullable=True))
    # (status) becomes (status, id): the listing by status reads one page off its end.
    op.drop_index("background_job_runs_status", table_name=RUNS)
    op.create_index("background_job_runs_status", RUNS, ["status", "id"])
    op.create_index("background_job_runs_job_id", RUNS, ["job", "id"])
    op.create_index("background_job_runs_tenant_id", RUNS, ["tenant_id", "id"],
                    **_where("tenant_id IS NOT NULL"))
    op.create_index("background_job_runs_origin_id", RUNS, ["origin", "id"])
    op.create_index("background_job_runs_created", RUNS, ["created_at"])
    op.create_index("background_job_runs_cancel", RUNS, ["bot"],
                    **_where("cancel_requested_at IS NOT NULL AND status = 'running'"))
    if PAUSES in set(sa.inspect(op.get_bind()).get_table_names()):
        return
    op.create_table(
        PAUSES,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("job", sa.String(300), nullable=False),
        sa.Column("tenant_id", sa.BigInteger(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("since", _when, nullable=False),
    )
    op.create_index("background_job_pauses_once", PAUSES,
                    ["job", sa.text("coalesce(tenant_id, 0)")], unique=True)
