"""sighting.idempotency_digest (an Idempotency-Key reused with another payload is refused);
login_failure (login throttling per username and address instead of locking accounts)

Revision ID: 0008
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "login_failure",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("username", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("ip", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("login_failure", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_login_failure_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_login_failure_ip"), ["ip"], unique=False)
        batch_op.create_index(batch_op.f("ix_login_failure_username"), ["username"], unique=False)
    # Accounts locked by the earlier rule are let go: a lock now belongs to a username and an address.
    op.execute("UPDATE user_account SET locked_until = NULL, failed_logins = 0")
    # Sightings stored before this revision keep a NULL digest: their keys replay as before
    # (whether the time seen was given or defaulted to "now" cannot be told afterwards).
    with op.batch_alter_table("sighting", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idempotency_digest", sqlmodel.sql.sqltypes.AutoString(length=64),
                                      nullable=True))


def downgrade() -> None:
    # The throttling records are dropped: the earlier rule starts counting afresh.
    with op.batch_alter_table("login_failure", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_login_failure_username"))
        batch_op.drop_index(batch_op.f("ix_login_failure_ip"))
        batch_op.drop_index(batch_op.f("ix_login_failure_at"))
    op.drop_table("login_failure")
    with op.batch_alter_table("sighting", schema=None) as batch_op:
        batch_op.drop_column("idempotency_digest")
