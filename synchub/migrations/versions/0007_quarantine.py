"""Field-level quarantine: a value the hub cannot use no longer rejects its record

``source_record.quarantine`` keeps each record's unusable (or unverified) values with the reason,
so data care can fix them at the source; ``quarantined_value`` is the per-run log that
``runs show`` lists, pruned with its run like ``rejected_record``.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    json_type = sa.JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")
    with op.batch_alter_table("source_record") as batch:
        batch.add_column(sa.Column("quarantine", json_type, nullable=True))
    op.create_table(
        "quarantined_value",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.Column("connection", sa.String(100), nullable=False),
        sa.Column("stream", sa.String(100), nullable=False),
        sa.Column("ref", sa.String(500), nullable=False),
        sa.Column("source_id", sa.String(500), nullable=True),
        sa.Column("field", sa.String(200), nullable=False),
        sa.Column("source", sa.String(200), nullable=True),
        sa.Column("rule", sa.String(100), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("raw", sa.Text, nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_quarantined_value_run_id", "quarantined_value", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_quarantined_value_run_id", table_name="quarantined_value")
    op.drop_table("quarantined_value")
    with op.batch_alter_table("source_record") as batch:
        batch.drop_column("quarantine")
