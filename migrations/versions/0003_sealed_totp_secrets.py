"""user_account.totp_secret holds a sealed seed (triage.secretbox): room for it

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

Seeds stored in clear before this revision stay readable and are sealed at their
owner's next login.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("user_account", schema=None) as batch_op:
        batch_op.alter_column(
            "totp_secret", existing_type=sa.String(length=64), type_=sa.String(length=200), existing_nullable=True
        )


def downgrade() -> None:
    # A sealed seed does not fit the old column and cannot be opened here (no key):
    # refuse rather than cut it, and say what to do.
    sealed = op.get_bind().execute(sa.text("SELECT count(*) FROM user_account WHERE length(totp_secret) > 64")).scalar()
    if sealed:
        raise RuntimeError(
            f"{sealed} account(s) have a sealed second factor that the old schema cannot hold; "
            "reset their second factor (admin page) before downgrading"
        )
    with op.batch_alter_table("user_account", schema=None) as batch_op:
        batch_op.alter_column(
            "totp_secret", existing_type=sa.String(length=200), type_=sa.String(length=64), existing_nullable=True
        )
