"""review_slot.pending_verdict / pending_at (a verdict given on the web page counts only once its undo window has
passed); seen_candidate.round (the round a recognizer was first shown a candidate in, so a lapsed lease on an
escalated round does not lock its holder out) and seen_candidate.skipped_at (a task given back is not served to
the same person again)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("review_slot", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pending_verdict", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))
        batch_op.add_column(sa.Column("pending_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.create_index("ix_review_slot_pending", ["pending_at"], unique=False)
        batch_op.create_check_constraint(
            "ck_review_slot_pending",
            "pending_verdict IS NULL OR (pending_verdict IN ('same', 'different', 'cannot_tell') "
            "AND verdict IS NULL AND reviewer_id IS NOT NULL AND pending_at IS NOT NULL)")
    # Rows from before this revision: first shown in round 1 is the cautious reading (an escalated round
    # is then never served to them, as before).
    with op.batch_alter_table("seen_candidate", schema=None) as batch_op:
        batch_op.add_column(sa.Column("round", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("skipped_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))


def downgrade() -> None:
    # Verdicts still inside their undo window are lost on a downgrade: count them first (`miatari migrate`
    # on the newer code settles them on its next sweep).
    with op.batch_alter_table("seen_candidate", schema=None) as batch_op:
        batch_op.drop_column("skipped_at")
        batch_op.drop_column("round")
    with op.batch_alter_table("review_slot", schema=None) as batch_op:
        batch_op.drop_constraint("ck_review_slot_pending", type_="check")
        batch_op.drop_index("ix_review_slot_pending")
        batch_op.drop_column("pending_at")
        batch_op.drop_column("pending_verdict")
