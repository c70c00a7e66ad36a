"""source_record.raw_hash: an unchanged raw row is known without preparing it

The hash of the raw row a record was prepared from, salted with everything that shapes
preparation (see ``synchub.prepare``). NULL for records that must be prepared on every read, and
for every record stored before this revision: their next read prepares them once, finds them
unchanged by their content hash and stores the raw hash, so no store rewrites its records
after the upgrade.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("source_record") as batch:
        batch.add_column(sa.Column("raw_hash", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("source_record") as batch:
        batch.drop_column("raw_hash")
