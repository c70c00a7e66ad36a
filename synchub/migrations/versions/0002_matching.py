"""matching: blocking keys (and stop keys), admin match decisions, field overrides

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "match_key",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("key_type", sa.String(length=32), nullable=False),
        sa.Column("key_value", sa.String(length=300), nullable=False),
        sa.Column("golden_id", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_match_key_lookup", "match_key", ["kind", "key_type", "key_value"])
    op.create_index("ix_match_key_golden_id", "match_key", ["golden_id"])
    op.create_table(
        "match_key_stop",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("key_type", sa.String(length=32), nullable=False),
        sa.Column("key_value", sa.String(length=300), nullable=False),
        sa.PrimaryKeyConstraint("kind", "key_type", "key_value"),
    )
    op.create_table(
        "match_decision",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("golden_a", sa.String(length=32), nullable=False),
        sa.Column("golden_b", sa.String(length=32), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("golden_a", "golden_b", name="uq_match_decision"),
    )
    op.create_index("ix_match_decision_golden_a", "match_decision", ["golden_a"])
    op.create_index("ix_match_decision_golden_b", "match_decision", ["golden_b"])
    op.create_table(
        "field_override",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("golden_id", sa.String(length=32), nullable=False),
        sa.Column("field", sa.String(length=200), nullable=False),
        sa.Column("value", JSON, nullable=True),
        sa.Column("decided_by", sa.String(length=200), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("conflict_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("golden_id", "field", name="uq_field_override"),
    )


def downgrade() -> None:
    op.drop_table("field_override")
    op.drop_index("ix_match_decision_golden_b", table_name="match_decision")
    op.drop_index("ix_match_decision_golden_a", table_name="match_decision")
    op.drop_table("match_decision")
    op.drop_table("match_key_stop")
    op.drop_index("ix_match_key_golden_id", table_name="match_key")
    op.drop_index("ix_match_key_lookup", table_name="match_key")
    op.drop_table("match_key")
