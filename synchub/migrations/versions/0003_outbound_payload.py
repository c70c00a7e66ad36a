"""outbound: remember the payload last written per record, so writes send only changed fields

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    # Nullable: rows written before this revision have no payload; their next write sends all
    # fields once, as a first write would.
    with op.batch_alter_table("outbound_state") as batch:
        batch.add_column(sa.Column("payload", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbound_state") as batch:
        batch.drop_column("payload")
