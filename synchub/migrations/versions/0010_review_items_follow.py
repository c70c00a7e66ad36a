"""conflict.other_golden_id indexed; possible duplicates whose two records were merged closed

Review items now follow merges and splits (issue 18): a merge looks up the open possible
duplicates naming a merged-away record on either side, so the second side is indexed too.
Stores upgraded from earlier versions may hold open possible duplicates whose two golden
records were merged into one since (about 9 % of them on a 100k store): those are closed here,
with the reason in their resolution, as the merge would now do.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_conflict_other_golden_id", "conflict", ["other_golden_id"])
    conn = op.get_bind()
    golden = sa.table("golden_record", sa.column("id"), sa.column("status"), sa.column("merged_into"))
    conflict = sa.table("conflict", sa.column("id"), sa.column("kind"), sa.column("status"), sa.column("golden_id"),
                        sa.column("other_golden_id"), sa.column("resolved_by"), sa.column("resolved_at"),
                        sa.column("resolution", sa.JSON))
    open_pairs = conn.execute(sa.select(conflict.c.id, conflict.c.golden_id, conflict.c.other_golden_id).where(
        conflict.c.kind == "possible_duplicate", conflict.c.status == "open")).all()
    if not open_pairs:
        return
    merged = dict(conn.execute(sa.select(golden.c.id, golden.c.merged_into).where(
        golden.c.status == "merged", golden.c.merged_into.is_not(None))).all())

    def root(g: str) -> str:
        for _ in range(50):
            if g not in merged:
                break
            g = merged[g]
        return g

    now = datetime.now(timezone.utc)
    for cid, a, b in open_pairs:
        if b is not None and root(a) == root(b):
            conn.execute(conflict.update().where(conflict.c.id == cid).values(
                status="closed", resolved_by="upgrade", resolved_at=now,
                resolution={"action": "closed", "reason": f"both records were merged into {root(a)}"}))


def downgrade() -> None:
    op.drop_index("ix_conflict_other_golden_id", table_name="conflict")
