"""watchlist_import: ZIP imports from the web page, enrolled by a background job

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('watchlist_import',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('filename', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('include', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('archive_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('archive_bytes', sa.Integer(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('subjects_total', sa.Integer(), nullable=False),
    sa.Column('photos_total', sa.Integer(), nullable=False),
    sa.Column('photos_done', sa.Integer(), nullable=False),
    sa.Column('summary', sa.JSON(), nullable=False),
    sa.Column('failures', sa.JSON(), nullable=False),
    sa.Column('started_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('finished_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.CheckConstraint("status IN ('queued', 'running', 'done', 'failed')", name='ck_watchlist_import_status'),
    sa.ForeignKeyConstraint(['created_by'], ['user_account.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('watchlist_import', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_watchlist_import_created_by'), ['created_by'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('watchlist_import', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_watchlist_import_created_by'))

    op.drop_table('watchlist_import')
