"""notification.object_type/object_id (what a notification is about, so it is cleared once handled);
webhook_delivery (notification events for the unit's webhook, delivered by a job)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.add_column(sa.Column("object_type", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False,
                                      server_default=""))
        batch_op.add_column(sa.Column("object_id", sa.Integer(), nullable=True))
        batch_op.create_index("ix_notification_object", ["object_type", "object_id"], unique=False)
    # Flag notifications written before this revision are about their flag.
    op.execute("UPDATE notification SET object_type = 'flag', object_id = flag_id WHERE flag_id IS NOT NULL")
    op.create_table(
        "webhook_delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("object_type", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("object_id", sa.Integer(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("delivered_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.CheckConstraint("status IN ('pending', 'delivered', 'skipped', 'failed')",
                           name="ck_webhook_delivery_status"),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    # Undelivered webhook events are dropped; notifications keep their flag link only.
    op.drop_table("webhook_delivery")
    with op.batch_alter_table("notification", schema=None) as batch_op:
        batch_op.drop_index("ix_notification_object")
        batch_op.drop_column("object_id")
        batch_op.drop_column("object_type")
