"""golden_record: one index for the bulk scans (kind, status, id) instead of (kind)

Export, dedupe and the match-key rebuild read every active record of a kind in id order, one
page at a time. With only single-column indexes SQLite picked the status index and sorted each
page in a temporary B-tree (100 ms per 5,000 rows instead of 13 ms). The composite index serves
those scans and every query by kind alone, so the number of indexes a write updates stays
the same.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_golden_record_scan", "golden_record", ["kind", "status", "id"])
    op.drop_index("ix_golden_record_kind", table_name="golden_record")


def downgrade() -> None:
    op.create_index("ix_golden_record_kind", "golden_record", ["kind"])
    op.drop_index("ix_golden_record_scan", table_name="golden_record")
