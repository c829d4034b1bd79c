"""metric_slot, metric_outcome: what the metrics need of candidates the retention sweep deletes
(no image, no note, no sighting), so that every period's figures stay what they were; indexes for
the metrics' aggregate queries (verdicts by time, candidates by decision time).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "metric_slot",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("candidate_id", sa.Integer(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("reviewer_id", sa.Integer(), nullable=True),
        sa.Column("verdict", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("verdict_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("withdrawn", sa.Boolean(), nullable=False),
        sa.Column("voided_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("known_truth", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
        sa.Column("archived_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("metric_slot", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_metric_slot_candidate_id"), ["candidate_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_metric_slot_reviewer_id"), ["reviewer_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_metric_slot_verdict_at"), ["verdict_at"], unique=False)
    op.create_table(
        "metric_outcome",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("candidate_id", sa.Integer(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("current_round", sa.Integer(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("decided_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("sighting_created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("archived_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("metric_outcome", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_metric_outcome_candidate_id"), ["candidate_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_metric_outcome_decided_at"), ["decided_at"], unique=False)
    # The metrics read a period's verdicts and decisions, and the rounds, from these indexes alone.
    with op.batch_alter_table("review_slot", schema=None) as batch_op:
        batch_op.create_index("ix_review_slot_verdicts", ["verdict_at", "reviewer_id", "verdict", "candidate_id"],
                              unique=False)
        batch_op.create_index("ix_review_slot_rounds", ["candidate_id", "round", "voided_at", "withdrawn",
                                                        "reviewer_id", "verdict", "verdict_at"], unique=False)
    with op.batch_alter_table("candidate", schema=None) as batch_op:
        batch_op.create_index("ix_candidate_decided", ["decided_at", "status", "known_truth", "score",
                                                       "current_round", "created_at", "sighting_id"], unique=False)
        batch_op.create_index("ix_candidate_known", ["known_truth", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("candidate", schema=None) as batch_op:
        batch_op.drop_index("ix_candidate_known")
        batch_op.drop_index("ix_candidate_decided")
    with op.batch_alter_table("review_slot", schema=None) as batch_op:
        batch_op.drop_index("ix_review_slot_rounds")
        batch_op.drop_index("ix_review_slot_verdicts")
    # What the sweep kept of deleted candidates goes: figures for purged days are no longer available.
    with op.batch_alter_table("metric_outcome", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_metric_outcome_decided_at"))
        batch_op.drop_index(batch_op.f("ix_metric_outcome_candidate_id"))
    op.drop_table("metric_outcome")
    with op.batch_alter_table("metric_slot", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_metric_slot_verdict_at"))
        batch_op.drop_index(batch_op.f("ix_metric_slot_reviewer_id"))
        batch_op.drop_index(batch_op.f("ix_metric_slot_candidate_id"))
    op.drop_table("metric_slot")
