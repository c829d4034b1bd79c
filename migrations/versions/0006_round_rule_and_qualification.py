"""one rule per round; qualified recognizers; known-answer tasks with fresh renditions

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-01

Schema:

* ``user_account.qualification`` (probation / qualified / suspended) and
  ``qualification_since``: every existing account starts on probation, its whole
  known-answer history counting (its first known-answer verdict settles it);
* ``review_slot.reviewer_record`` (the author's known-answer record at the time),
  ``voided_at`` / ``void_reason`` (a verdict that no longer counts, its row kept);
  the slot position is unique among the slots that are not voided;
* ``candidate.known_source_candidate_id``, ``known_probe_eyes_sha256``,
  ``known_probe_face_sha256``: a known-answer pair's re-rendered probe side.

Data, re-evaluated under the rule "each round decides on its own" (verdicts used
to be pooled across rounds):

* a decided real candidate takes the outcome of its last round alone;
* a flag that no longer rests on one round's agreement is never deleted: its
  candidate becomes *disputed* and the flag, if not yet closed, is closed as
  *withdrawn* with a note saying why; managers are notified and the audit log
  says so.  A flag already closed keeps its closure (the note is audited);
* a disputed candidate whose last round was *same* + *same* now has its flag
  (raised here, notified, audited like any other);
* open known-answer pairs made the old way (a reference photo served as the
  "sighting" side, byte-identical to real tasks' wanted-person side) are
  withdrawn, their unanswered slots too.

Downgrade: the columns go.  A voided verdict cannot sit beside its replacement
under the old unique slot position, so voided slots are deleted after their
content is written to the audit log; known-answer pairs made from a settled real
case take their reference photo as the old "probe photo" column and are
withdrawn if open.  Outcomes and flags are left as the upgrade set them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACTOR = "migration 0006"
OLD_KIND = ("(probe_id IS NOT NULL AND known_probe_photo_id IS NULL AND known_truth IS NULL)"
            " OR (probe_id IS NULL AND known_probe_photo_id IS NOT NULL AND known_truth IS NOT NULL)")
NEW_KIND = ("(probe_id IS NOT NULL AND known_probe_photo_id IS NULL AND known_source_candidate_id IS NULL"
            " AND known_truth IS NULL)"
            " OR (probe_id IS NULL AND known_truth IS NOT NULL"
            " AND (known_probe_photo_id IS NOT NULL OR known_source_candidate_id IS NOT NULL))")
LEAD_WARNING = "investigative lead — confirm identity before any action"

UTC = sqlmodel.sql.sqltypes.UTCDateTime
audit_entry = sa.table(
    "audit_entry", sa.column("id", sa.Integer), sa.column("at", UTC()), sa.column("actor_id", sa.Integer),
    sa.column("actor", sa.String), sa.column("action", sa.String), sa.column("object_type", sa.String),
    sa.column("object_id", sa.String), sa.column("outcome", sa.String), sa.column("detail", sa.JSON),
    sa.column("ip", sa.String), sa.column("prev_hash", sa.String), sa.column("hash", sa.String))
audit_head = sa.table("audit_head", sa.column("id", sa.Integer), sa.column("last_id", sa.Integer),
                      sa.column("last_hash", sa.String))
candidate = sa.table(
    "candidate", sa.column("id", sa.Integer), sa.column("sighting_id", sa.Integer),
    sa.column("subject_id", sa.Integer), sa.column("status", sa.String), sa.column("current_round", sa.Integer),
    sa.column("known_truth", sa.String), sa.column("known_probe_photo_id", sa.Integer),
    sa.column("known_source_candidate_id", sa.Integer), sa.column("reference_photo_id", sa.Integer),
    sa.column("decided_at", UTC()))
review_slot = sa.table(
    "review_slot", sa.column("id", sa.Integer), sa.column("candidate_id", sa.Integer),
    sa.column("round", sa.Integer), sa.column("slot_no", sa.Integer), sa.column("reviewer_id", sa.Integer),
    sa.column("verdict", sa.String), sa.column("verdict_at", UTC()), sa.column("withdrawn", sa.Boolean),
    sa.column("voided_at", UTC()), sa.column("void_reason", sa.String))
flag = sa.table(
    "flag", sa.column("id", sa.Integer), sa.column("candidate_id", sa.Integer), sa.column("sighting_id", sa.Integer),
    sa.column("subject_id", sa.Integer), sa.column("status", sa.String), sa.column("raised_at", UTC()),
    sa.column("closed_at", UTC()), sa.column("close_reason", sa.String), sa.column("close_note", sa.String))
notification = sa.table(
    "notification", sa.column("id", sa.Integer), sa.column("user_id", sa.Integer), sa.column("kind", sa.String),
    sa.column("message", sa.String), sa.column("flag_id", sa.Integer), sa.column("created_at", UTC()))
user_account = sa.table("user_account", sa.column("id", sa.Integer), sa.column("roles", sa.String),
                        sa.column("is_active", sa.Boolean))
sighting = sa.table("sighting", sa.column("id", sa.Integer), sa.column("uploaded_by", sa.Integer))
subject = sa.table("subject", sa.column("id", sa.Integer), sa.column("name", sa.String))


# Audit entries, chained exactly as triage.audit appends them (copied: a migration must not follow later models).
def _hash(row: dict[str, Any]) -> str:
    body = {k: row[k] for k in ("id", "actor_id", "actor", "action", "object_type", "object_id", "outcome",
                                "detail", "ip", "prev_hash")}
    body["at"] = row["at"].isoformat(timespec="microseconds")
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def _audit(conn: sa.Connection, action: str, object_type: str, object_id: object, detail: dict[str, Any]) -> None:
    head = conn.execute(sa.select(audit_head.c.last_id, audit_head.c.last_hash).where(audit_head.c.id == 1)
                        ).first()
    if head is None:
        conn.execute(audit_head.insert().values(id=1, last_id=0, last_hash="0" * 64))
        last_id, last_hash = 0, "0" * 64
    else:
        last_id, last_hash = head
    row = {"id": last_id + 1, "at": dt.datetime.now(dt.UTC), "actor_id": None, "actor": ACTOR,
           "action": action, "object_type": object_type, "object_id": str(object_id), "outcome": "ok",
           "detail": json.loads(json.dumps(detail, default=str)), "ip": "", "prev_hash": last_hash}
    row["hash"] = _hash(row)
    conn.execute(audit_entry.insert().values(**row))
    conn.execute(audit_head.update().where(audit_head.c.id == 1).values(last_id=row["id"], last_hash=row["hash"]))


def _managers(conn: sa.Connection) -> list[int]:
    rows = conn.execute(sa.select(user_account.c.id, user_account.c.roles, user_account.c.is_active)
                        .order_by(user_account.c.id)).all()
    return [r.id for r in rows if r.is_active and "manager" in (r.roles or "").split()]


def _notify(conn: sa.Connection, user_ids: list[int], kind: str, message: str, flag_id: int | None) -> None:
    now = dt.datetime.now(dt.UTC)
    for uid in dict.fromkeys(user_ids):
        conn.execute(notification.insert().values(user_id=uid, kind=kind, message=message[:500], flag_id=flag_id,
                                                  created_at=now))


def _round_outcome(verdicts: list[str]) -> str:
    if verdicts == ["same", "same"]:
        return "flagged"
    if verdicts == ["different", "different"]:
        return "cleared"
    return "disputed"


def _reevaluate(conn: sa.Connection) -> None:
    now = dt.datetime.now(dt.UTC)
    # Old-style known-answer pairs that are still open can be told from real tasks: withdrawn.
    old_ka = conn.execute(sa.select(candidate.c.id).where(candidate.c.known_truth.is_not(None),
                                                          candidate.c.status == "open")
                          .order_by(candidate.c.id)).scalars().all()
    if old_ka:
        conn.execute(candidate.update().where(candidate.c.id.in_(old_ka)).values(status="withdrawn", decided_at=now))
        conn.execute(review_slot.update().where(review_slot.c.candidate_id.in_(old_ka),
                                                review_slot.c.verdict.is_(None)).values(withdrawn=True))
        _audit(conn, "review.withdraw_known_answer", "candidate", "",
               {"candidates": list(old_ka),
                "reason": "its sighting side was a reference photo served elsewhere; replaced by fresh renditions"})

    rows = conn.execute(sa.select(candidate.c.id, candidate.c.status, candidate.c.current_round,
                                  candidate.c.sighting_id, candidate.c.subject_id)
                        .where(candidate.c.known_truth.is_(None),
                               candidate.c.status.in_(("flagged", "cleared", "disputed")))
                        .order_by(candidate.c.id)).all()
    for c in rows:
        slots = conn.execute(sa.select(review_slot.c.reviewer_id, review_slot.c.verdict)
                             .where(review_slot.c.candidate_id == c.id, review_slot.c.round == c.current_round,
                                    review_slot.c.withdrawn == sa.false())
                             .order_by(review_slot.c.slot_no)).all()
        verdicts = sorted(s.verdict for s in slots if s.verdict is not None)
        if len(verdicts) != 2:
            continue
        new = _round_outcome(verdicts)
        if new == c.status:
            continue
        conn.execute(candidate.update().where(candidate.c.id == c.id).values(status=new))
        _audit(conn, "candidate.redecide", "candidate", c.id,
               {"from": c.status, "to": new, "round": c.current_round, "round_verdicts": verdicts,
                "rule": "each round decides on its own"})
        name = conn.execute(sa.select(subject.c.name).where(subject.c.id == c.subject_id)).scalar() or ""
        existing = conn.execute(sa.select(flag.c.id, flag.c.status).where(flag.c.candidate_id == c.id)).first()
        if c.status == "flagged" and existing is not None:
            note = (f"Withdrawn by the rule change of migration 0006: no single review round agreed "
                    f"(round {c.current_round}: {', '.join(verdicts)}); the candidate is disputed.")
            if existing.status != "closed":
                conn.execute(flag.update().where(flag.c.id == existing.id).values(
                    status="closed", closed_at=now, close_reason="withdrawn", close_note=note))
            _audit(conn, "flag.withdraw_rule", "flag", existing.id,
                   {"candidate_id": c.id, "was": existing.status,
                    "closed_now": existing.status != "closed", "note": note})
            _notify(conn, _managers(conn), "flag.withdrawn",
                    f"Arrest flag #{existing.id} ({name}) was withdrawn: no single review round agreed. "
                    "The candidate is disputed.", existing.id)
        elif new == "flagged" and existing is None and c.sighting_id is not None:
            fid = conn.execute(flag.insert().values(candidate_id=c.id, sighting_id=c.sighting_id,
                                                    subject_id=c.subject_id, status="raised", raised_at=now,
                                                    close_note="").returning(flag.c.id)).scalar_one()
            confirmed = sorted(s.reviewer_id for s in slots if s.verdict == "same")
            _audit(conn, "flag.raise", "flag", fid, {"candidate_id": c.id, "subject_id": c.subject_id,
                                                     "sighting_id": c.sighting_id, "confirmed_by": confirmed,
                                                     "by": ACTOR})
            uploader = conn.execute(sa.select(sighting.c.uploaded_by).where(sighting.c.id == c.sighting_id)
                                    ).scalar()
            _notify(conn, ([uploader] if uploader else []) + _managers(conn), "flag.raised",
                    f"Arrest flag #{fid}: {name} — {LEAD_WARNING}.", fid)


def upgrade() -> None:
    with op.batch_alter_table("user_account", schema=None) as batch_op:
        batch_op.add_column(sa.Column("qualification", sqlmodel.sql.sqltypes.AutoString(length=16),
                                      server_default="probation", nullable=False))
        batch_op.add_column(sa.Column("qualification_since", UTC(), nullable=True))
        batch_op.create_check_constraint("ck_user_qualification",
                                         "qualification IN ('probation', 'qualified', 'suspended')")

    with op.batch_alter_table("candidate", schema=None) as batch_op:
        batch_op.add_column(sa.Column("known_source_candidate_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("known_probe_eyes_sha256", sqlmodel.sql.sqltypes.AutoString(length=64),
                                      nullable=True))
        batch_op.add_column(sa.Column("known_probe_face_sha256", sqlmodel.sql.sqltypes.AutoString(length=64),
                                      nullable=True))
        batch_op.create_index(batch_op.f("ix_candidate_known_source_candidate_id"), ["known_source_candidate_id"],
                              unique=False)
        batch_op.create_foreign_key("fk_candidate_known_probe_eyes", "stored_image",
                                    ["known_probe_eyes_sha256"], ["sha256"])
        batch_op.create_foreign_key("fk_candidate_known_probe_face", "stored_image",
                                    ["known_probe_face_sha256"], ["sha256"])
        batch_op.drop_constraint("ck_candidate_kind", type_="check")
        batch_op.create_check_constraint("ck_candidate_kind", NEW_KIND)

    with op.batch_alter_table("review_slot", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reviewer_record", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("voided_at", UTC(), nullable=True))
        batch_op.add_column(sa.Column("void_reason", sqlmodel.sql.sqltypes.AutoString(length=200),
                                      server_default="", nullable=False))
        batch_op.drop_constraint("uq_review_slot_position", type_="unique")
    op.create_index("uq_review_slot_position", "review_slot", ["candidate_id", "round", "slot_no"], unique=True,
                    sqlite_where=sa.text("voided_at IS NULL"), postgresql_where=sa.text("voided_at IS NULL"))

    _reevaluate(op.get_bind())


def downgrade() -> None:
    conn = op.get_bind()
    voided = conn.execute(sa.select(review_slot).where(review_slot.c.voided_at.is_not(None))
                          .order_by(review_slot.c.id)).mappings().all()
    if voided:
        _audit(conn, "review.voided_slots_removed", "review_slot", "",
               {"reason": "downgrade below 0006: a voided verdict cannot be kept beside its replacement",
                "slots": [dict(v) for v in voided]})
        conn.execute(review_slot.delete().where(review_slot.c.voided_at.is_not(None)))
    from_cases = conn.execute(sa.select(candidate.c.id, candidate.c.status, candidate.c.reference_photo_id)
                              .where(candidate.c.known_probe_photo_id.is_(None),
                                     candidate.c.known_source_candidate_id.is_not(None))).all()
    for c in from_cases:
        conn.execute(candidate.update().where(candidate.c.id == c.id).values(
            known_probe_photo_id=c.reference_photo_id,
            status="withdrawn" if c.status == "open" else c.status))
        conn.execute(review_slot.update().where(review_slot.c.candidate_id == c.id,
                                                review_slot.c.verdict.is_(None)).values(withdrawn=True))

    op.drop_index("uq_review_slot_position", table_name="review_slot",
                  sqlite_where=sa.text("voided_at IS NULL"), postgresql_where=sa.text("voided_at IS NULL"))
    with op.batch_alter_table("review_slot", schema=None) as batch_op:
        batch_op.create_unique_constraint("uq_review_slot_position", ["candidate_id", "round", "slot_no"])
        batch_op.drop_column("void_reason")
        batch_op.drop_column("voided_at")
        batch_op.drop_column("reviewer_record")

    with op.batch_alter_table("candidate", schema=None) as batch_op:
        batch_op.drop_constraint("ck_candidate_kind", type_="check")
        batch_op.create_check_constraint("ck_candidate_kind", OLD_KIND)
        batch_op.drop_constraint("fk_candidate_known_probe_face", type_="foreignkey")
        batch_op.drop_constraint("fk_candidate_known_probe_eyes", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_candidate_known_source_candidate_id"))
        batch_op.drop_column("known_probe_face_sha256")
        batch_op.drop_column("known_probe_eyes_sha256")
        batch_op.drop_column("known_source_candidate_id")

    with op.batch_alter_table("user_account", schema=None) as batch_op:
        batch_op.drop_constraint("ck_user_qualification", type_="check")
        batch_op.drop_column("qualification_since")
        batch_op.drop_column("qualification")
