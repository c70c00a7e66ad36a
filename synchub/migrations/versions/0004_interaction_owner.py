"""interaction: the source record whose timeline an entry is on (orders belong to customers)

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("interaction") as batch:
        batch.add_column(sa.Column("owner_stream", sa.String(100), nullable=True))
        batch.add_column(sa.Column("owner_id", sa.String(500), nullable=True))
    # Entries written before this revision came from the record they belong to.
    op.execute("UPDATE interaction SET owner_stream = stream, owner_id = record_id")
    op.create_index("ix_interaction_owner", "interaction", ["connection", "owner_stream", "owner_id"])


def downgrade() -> None:
    op.drop_index("ix_interaction_owner", table_name="interaction")
    with op.batch_alter_table("interaction") as batch:
        batch.drop_column("owner_id")
        batch.drop_column("owner_stream")
