"""pinrepl 0.1.0's tables, as its `create_all` made them: `background_job_runs` (one row
per run of the bot, the unique `_claim` index over the arguments themselves) and
`background_job_bots`. Each is created only if missing; a database of pinrepl 0.1.0 has
both and no version table, and is stamped at this revision before it is upgraded.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

RUNS, BOTS = "background_job_runs", "background_job_bots"


def upgrade() -> None:
    present = set(sa.inspect(op.get_bind()).get_table_names())
    if RUNS not in present:
        _create_runs()
    if BOTS not in present:
        op.create_table(
            BOTS,
            sa.Column("id", sa.String(200), primary_key=True),
            sa.Column("host", sa.String(255), nullable=False),
            sa.Column("pid", sa.Integer(), nullable=False),
            sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("beat_at", sa.DateTime(timezone=True), nullable=False),
        )


def _create_runs() -> None:
    op.create_table(
        RUNS,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
        sa.Column("job", sa.String(300), nullable=False),
        sa.Column("tenant_id", sa.BigInteger(), nullable=True),
        sa.Column("args", sa.Text(), nullable=False),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("bot", sa.String(200), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_index("background_job_runs_job_slot", RUNS, ["job", "scheduled_for"])
    op.create_index("background_job_runs_status", RUNS, ["status"])
    op.create_index("background_job_runs_slot", RUNS, ["scheduled_for"])
    op.create_index("background_job_runs_started", RUNS, ["started_at"])
    op.create_index(
        "background_job_runs_claim", RUNS,
        ["job", "args", sa.text("coalesce(tenant_id, 0)"), "scheduled_for"], unique=True,
    )
