"""derive_queue: golden records a bulk timeline load derives once, at its end

A first load of orders touches most customers in many of its units; deriving each one again
after every unit cost most of the load. A bulk load now queues the touched golden records in
the same transaction as the unit's orders and derives each once when the stream is read;
whatever a crash leaves in the queue is derived at the start of the connection's next pull.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "derive_queue",
        sa.Column("connection", sa.String(100), primary_key=True),
        sa.Column("golden_id", sa.String(32), primary_key=True),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("derive_queue")
