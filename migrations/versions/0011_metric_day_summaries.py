"""metric_day and metric_day_*: per-day summaries of the managers' figures for finished UTC days
(filled by the worker's sweep, read by triage.metrics beside live SQL for the edges); indexes for
the figures still read live (disputes a manager may escalate, flags of a period, verdicts voided).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STR16 = sqlmodel.sql.sqltypes.AutoString(length=16)


def _table(name: str, *columns: sa.Column, index: list[str]) -> None:
    op.create_table(name, sa.Column("id", sa.Integer(), nullable=False),
                    sa.Column("day", sa.Date(), nullable=False), *columns, sa.PrimaryKeyConstraint("id"))
    with op.batch_alter_table(name, schema=None) as batch_op:
        batch_op.create_index(f"ix_{name}", ["day", *index], unique=False)


def upgrade() -> None:
    op.create_table(
        "metric_day",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("version", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("voided", sa.Integer(), nullable=False),
        sa.Column("summarised_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("day"),
    )
    _table("metric_day_round", sa.Column("round", sa.Integer(), nullable=False),
           sa.Column("lo", sa.Integer(), nullable=False), sa.Column("hi", sa.Integer(), nullable=False),
           sa.Column("n", sa.Integer(), nullable=False), index=["round", "lo", "hi", "n"])
    _table("metric_day_outcome", sa.Column("status", STR16, nullable=False),
           sa.Column("band", sa.Integer(), nullable=False), sa.Column("final", sa.Boolean(), nullable=False),
           sa.Column("n", sa.Integer(), nullable=False), sa.Column("wait_seconds", sa.Float(), nullable=False),
           index=["status", "band", "final", "n", "wait_seconds"])
    _table("metric_day_duration", sa.Column("bucket", sa.Integer(), nullable=False),
           sa.Column("n", sa.Integer(), nullable=False), sa.Column("seconds", sa.JSON(), nullable=False),
           index=["bucket", "n"])
    _table("metric_day_known", sa.Column("reviewer_id", sa.Integer(), nullable=False),
           sa.Column("truth", STR16, nullable=False), sa.Column("verdict", STR16, nullable=False),
           sa.Column("n", sa.Integer(), nullable=False), index=["reviewer_id", "truth", "verdict", "n"])
    _table("metric_day_verdicts", sa.Column("reviewer_id", sa.Integer(), nullable=False),
           sa.Column("verdicts", sa.Integer(), nullable=False), sa.Column("hours", sa.Integer(), nullable=False),
           index=["reviewer_id", "verdicts", "hours"])
    with op.batch_alter_table("candidate", schema=None) as batch_op:
        batch_op.create_index("ix_candidate_disputes", ["status", "decided_at", "current_round", "known_truth",
                                                        "score", "created_at", "sighting_id"], unique=False)
    with op.batch_alter_table("flag", schema=None) as batch_op:
        batch_op.create_index("ix_flag_raised", ["raised_at", "status"], unique=False)
    # Partial: never mistaken for a way to the counting (unvoided) slots.
    voided = sa.text("voided_at IS NOT NULL")
    for table in ("review_slot", "metric_slot"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(f"ix_{table}_voided", ["voided_at", "verdict"], unique=False,
                                  sqlite_where=voided, postgresql_where=voided)


def downgrade() -> None:
    # Only summaries go: every figure is then computed live from the verdicts again.
    for table in ("metric_slot", "review_slot"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(f"ix_{table}_voided")
    with op.batch_alter_table("flag", schema=None) as batch_op:
        batch_op.drop_index("ix_flag_raised")
    with op.batch_alter_table("candidate", schema=None) as batch_op:
        batch_op.drop_index("ix_candidate_disputes")
    for name in ("metric_day_verdicts", "metric_day_known", "metric_day_duration", "metric_day_outcome",
                 "metric_day_round"):
        with op.batch_alter_table(name, schema=None) as batch_op:
            batch_op.drop_index(f"ix_{name}")
        op.drop_table(name)
    op.drop_table("metric_day")
