"""run: direction, API calls/retries/throttling per run, and an index for run history queries

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("run") as batch:
        batch.add_column(sa.Column("direction", sa.String(8), nullable=False, server_default=""))
        batch.add_column(sa.Column("api_calls", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("retries", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("throttled", sa.Integer, nullable=False, server_default="0"))
    op.create_index("ix_run_connection_started", "run", ["connection", "started_at"])
    # Runs recorded before kept their direction in the counts JSON.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("UPDATE run SET direction = COALESCE(counts->>'direction', '') WHERE direction = ''")
    else:
        op.execute("UPDATE run SET direction = COALESCE(json_extract(counts, '$.direction'), '') WHERE direction = ''")


def downgrade() -> None:
    op.drop_index("ix_run_connection_started", table_name="run")
    with op.batch_alter_table("run") as batch:
        batch.drop_column("throttled")
        batch.drop_column("retries")
        batch.drop_column("api_calls")
        batch.drop_column("direction")
