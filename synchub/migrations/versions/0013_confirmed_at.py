"""source_record.confirmed_at: when a source last showed the record (the quality report's staleness)

Issue 20's data-quality review counts customers no source confirmed for N days. ``observed_at``
is the source's own change time and an unchanged re-read does not move it, so a customer whom
a daily export delivers unchanged for a year looked stale. ``confirmed_at`` moves whenever a read
delivers the record (changed or not, at most once a day) or a full listing names it. Existing
records start at ``changed_at``, the last time the hub knew a source held them.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("source_record") as batch:
        batch.add_column(sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True))
    source = sa.table("source_record", sa.column("confirmed_at"), sa.column("changed_at"))
    op.get_bind().execute(source.update().values(confirmed_at=source.c.changed_at))


def downgrade() -> None:
    with op.batch_alter_table("source_record") as batch:
        batch.drop_column("confirmed_at")
