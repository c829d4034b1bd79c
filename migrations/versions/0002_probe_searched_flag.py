"""probe.searched: faces too small to search are stored and shown, not searched

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every probe stored before this revision was searched.
    with op.batch_alter_table("probe", schema=None) as batch_op:
        batch_op.add_column(sa.Column("searched", sa.Boolean(), server_default=sa.true(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("probe", schema=None) as batch_op:
        batch_op.drop_column("searched")
