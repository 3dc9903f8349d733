"""Each bot's lease (SPEC 7): `background_job_bots.expires_at`, when the bot is dead unless
it beats again (its last beat plus its own `--lease`). Peers and the dashboard judge a bot
by its lease, not their own: a bot with `--lease 120` beats every 40 s and is not taken for
dead by a peer with the default 30 s.

The bots up during the upgrade keep NULL until their next beat (a bot of 0.3.0 never
writes it): peers judge those by their own lease, as before.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.add_column("background_job_bots",
                  sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
