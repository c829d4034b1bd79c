"""Separation of duties, officers' flag reports, previewed watchlist imports

* ``user_account.roles_on_hold``: an account that held a reviewing role (recognizer) and an
  overseeing one (manager, admin) at once keeps only its other roles; the conflicting ones are
  put on hold, giving no rights, until an admin sets the account's roles (choosing one side).
  If that left no active admin, the mixed admins keep admin and manager and only recognizer is
  put on hold, so that somebody can still choose.  A check constraint then refuses a mixed account.
* ``flag_report``: what an officer reports on a flag (an outcome proposal and a note).
* ``watchlist_import``: a ZIP import waits in ``pending`` for its preview to be confirmed;
  ``targets`` holds the existing subjects named explicitly for some folders.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REVIEWING = {"recognizer"}
OVERSEEING = {"manager", "admin"}
DUTIES_SQL = "NOT (roles LIKE '%recognizer%' AND (roles LIKE '%manager%' OR roles LIKE '%admin%'))"
IMPORT_STATUS_NEW = "status IN ('pending', 'queued', 'running', 'done', 'failed')"
IMPORT_STATUS_OLD = "status IN ('queued', 'running', 'done', 'failed')"


def split_mixed_accounts(bind: sa.engine.Connection) -> None:
    rows = bind.execute(sa.text("SELECT id, roles, is_active FROM user_account ORDER BY id")).all()
    accounts = {r.id: (set(r.roles.split()), bool(r.is_active)) for r in rows}
    mixed = [i for i, (roles, _) in accounts.items() if roles & REVIEWING and roles & OVERSEEING]
    plain_admins = [i for i, (roles, active) in accounts.items() if active and "admin" in roles and i not in mixed]
    keep_admin = not plain_admins
    for user_id in mixed:
        roles, active = accounts[user_id]
        if keep_admin and active and "admin" in roles:
            held = roles & REVIEWING
        else:
            held = roles & (REVIEWING | OVERSEEING)
        bind.execute(sa.text("UPDATE user_account SET roles = :roles, roles_on_hold = :held WHERE id = :id"),
                     {"roles": " ".join(sorted(roles - held)), "held": " ".join(sorted(held)), "id": user_id})


def upgrade() -> None:
    with op.batch_alter_table('user_account', schema=None) as batch_op:
        batch_op.add_column(sa.Column('roles_on_hold', sqlmodel.sql.sqltypes.AutoString(length=200),
                                      server_default='', nullable=False))
    split_mixed_accounts(op.get_bind())
    with op.batch_alter_table('user_account', schema=None) as batch_op:
        batch_op.create_check_constraint('ck_user_account_duties', DUTIES_SQL)

    op.create_table('flag_report',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('flag_id', sa.Integer(), nullable=False),
    sa.Column('reported_by', sa.Integer(), nullable=False),
    sa.Column('outcome', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('note', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.CheckConstraint("outcome IN ('arrested', 'not_located', 'withdrawn')", name='ck_flag_report_outcome'),
    sa.ForeignKeyConstraint(['flag_id'], ['flag.id'], ),
    sa.ForeignKeyConstraint(['reported_by'], ['user_account.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('flag_report', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_flag_report_flag_id'), ['flag_id'], unique=False)

    with op.batch_alter_table('watchlist_import', schema=None) as batch_op:
        batch_op.add_column(sa.Column('targets', sa.JSON(), nullable=True))
    op.execute("UPDATE watchlist_import SET targets = '{}'")
    with op.batch_alter_table('watchlist_import', schema=None) as batch_op:
        batch_op.alter_column('targets', existing_type=sa.JSON(), nullable=False)
        batch_op.drop_constraint('ck_watchlist_import_status', type_='check')
        batch_op.create_check_constraint('ck_watchlist_import_status', IMPORT_STATUS_NEW)


def downgrade() -> None:
    # A pending import was never confirmed: nothing of it was enrolled, and the old schema has no
    # state for it.  Its archive is left in the imports folder.
    op.execute("DELETE FROM watchlist_import WHERE status = 'pending'")
    with op.batch_alter_table('watchlist_import', schema=None) as batch_op:
        batch_op.drop_constraint('ck_watchlist_import_status', type_='check')
        batch_op.create_check_constraint('ck_watchlist_import_status', IMPORT_STATUS_OLD)
        batch_op.drop_column('targets')

    with op.batch_alter_table('flag_report', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_flag_report_flag_id'))
    op.drop_table('flag_report')

    with op.batch_alter_table('user_account', schema=None) as batch_op:
        batch_op.drop_constraint('ck_user_account_duties', type_='check')
    bind = op.get_bind()
    for row in bind.execute(sa.text("SELECT id, roles, roles_on_hold FROM user_account WHERE roles_on_hold != ''")).all():
        roles = sorted(set(row.roles.split()) | set(row.roles_on_hold.split()))
        bind.execute(sa.text("UPDATE user_account SET roles = :roles WHERE id = :id"),
                     {"roles": " ".join(roles), "id": row.id})
    with op.batch_alter_table('user_account', schema=None) as batch_op:
        batch_op.drop_column('roles_on_hold')
