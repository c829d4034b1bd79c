"""sighting.idempotency_digest: an Idempotency-Key reused with another payload is refused

Revision ID: 0008
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0008"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Sightings stored before this revision keep a NULL digest: their keys replay as before
    # (whether the time seen was given or defaulted to "now" cannot be told afterwards).
    with op.batch_alter_table("sighting", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idempotency_digest", sqlmodel.sql.sqltypes.AutoString(length=64),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sighting", schema=None) as batch_op:
        batch_op.drop_column("idempotency_digest")
