"""flash_message: one-time messages for the page after a redirect (a one-time password shown once)

Revision ID: 0013
Revises: 0012 (0010 before 0012 was merged in; re-chain after whatever comes last)
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "flash_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("web_session_id", sa.Integer(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("text", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column("secret", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["web_session_id"], ["web_session.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("flash_message", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_flash_message_web_session_id"), ["web_session_id"], unique=False)


def downgrade() -> None:
    # Unshown messages are dropped: the one-time passwords in them were never seen (reset again).
    with op.batch_alter_table("flash_message", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_flash_message_web_session_id"))
    op.drop_table("flash_message")
