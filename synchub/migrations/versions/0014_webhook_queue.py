"""webhook_event: the durable queue of webhook deliveries (issue 21)

``synchub serve`` receives HubSpot, Shopify and Mailchimp webhooks and answers them only once
their events are committed here; a consumer job runs the named connection's pull and marks the
events done after it succeeded. Unique per (vendor, connection, event id), so a delivery sent
again is recognised as a replay and queued once.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    json = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
    op.create_table(
        "webhook_event",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("connection", sa.String(100), nullable=False),
        sa.Column("vendor", sa.String(16), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("object_ids", json, nullable=True),
        sa.Column("received_at", ts, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("processed_at", ts, nullable=True),
        sa.UniqueConstraint("vendor", "connection", "event_id", name="uq_webhook_event"),
    )
    op.create_index("ix_webhook_event_pending", "webhook_event", ["status", "connection"])


def downgrade() -> None:
    op.drop_index("ix_webhook_event_pending", table_name="webhook_event")
    op.drop_table("webhook_event")
