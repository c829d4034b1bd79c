"""Indexes for the managers' metrics read live on every view: the open real candidates (queue depth and
age, read from the index alone) and the unanswered slots (partial: only those wait); metric_day_tally,
the per-day rounds by verdict pair alone (days summarised before it are read live and summarised again)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "metric_day_tally",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("lo_code", sa.Integer(), nullable=False),
        sa.Column("hi_code", sa.Integer(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("metric_day_tally", schema=None) as batch_op:
        batch_op.create_index("ix_metric_day_tally", ["day", "round", "lo_code", "hi_code", "n"], unique=False)
    with op.batch_alter_table("candidate", schema=None) as batch_op:
        batch_op.create_index("ix_candidate_open_real", ["status", "known_truth", "priority_at", "current_round", "id"],
                              unique=False)
    waiting = sa.text("verdict IS NULL")
    with op.batch_alter_table("review_slot", schema=None) as batch_op:
        batch_op.create_index("ix_review_slot_waiting", ["candidate_id", "round", "withdrawn"], unique=False,
                              sqlite_where=waiting, postgresql_where=waiting)


def downgrade() -> None:
    with op.batch_alter_table("review_slot", schema=None) as batch_op:
        batch_op.drop_index("ix_review_slot_waiting")
    with op.batch_alter_table("candidate", schema=None) as batch_op:
        batch_op.drop_index("ix_candidate_open_real")
    with op.batch_alter_table("metric_day_tally", schema=None) as batch_op:
        batch_op.drop_index("ix_metric_day_tally")
    op.drop_table("metric_day_tally")
