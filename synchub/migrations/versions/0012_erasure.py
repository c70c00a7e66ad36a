"""erasure, erasure_receipt, suppression: a person's erasure, its fan-out, and its memory

Issue 20: ``synchub customers erase`` removes a person from the hub, asks every connection that
holds them to erase them too (one receipt per connection and stream: requested, confirmed,
failed and retried, manual), and keeps salted hashes of their identifiers so that no source
re-creates them.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    json = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
    op.create_table(
        "suppression",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("key_type", sa.String(16), nullable=False),
        sa.Column("erasure_id", sa.Integer, nullable=True),
        sa.Column("created_at", ts, nullable=False),
    )
    op.create_table(
        "erasure",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("ref", sa.String(64), nullable=False),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("requested_at", ts, nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
    )
    op.create_index("ix_erasure_ref", "erasure", ["ref"])
    op.create_table(
        "erasure_receipt",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("erasure_id", sa.Integer, nullable=False),
        sa.Column("connection", sa.String(100), nullable=False),
        sa.Column("stream", sa.String(100), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=True),
        sa.Column("retryable", sa.Boolean, nullable=False),
        sa.Column("targets", json, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("updated_at", ts, nullable=False),
    )
    op.create_index("ix_erasure_receipt_erasure_id", "erasure_receipt", ["erasure_id"])
    op.create_index("ix_erasure_receipt_open", "erasure_receipt", ["connection", "status"])


def downgrade() -> None:
    for table in ("erasure_receipt", "erasure", "suppression"):
        op.drop_table(table)
