"""Verdicts in their undo window: undoing one, and making them count once the window has passed.

The task page keeps a verdict as *pending* for ``verdict_undo_seconds``
(``submit_verdict(..., undo_seconds=...)``) so a slip of the finger can be
taken back.  It is stored at once, in the database: closing the page loses
nothing.  Meanwhile it does not count — it decides no round, raises no flag,
measures no one — and the slot stays its author's, so the two-person rule is
untouched.  When the window has passed it counts exactly as if it had been
given then (``count_verdict``, with the time it was given), whether the author
comes back (their next request settles it), or not (the worker's tick does).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from triage import audit
from triage.clock import utcnow
from triage.config import Settings
from triage.db import session_scope
from triage.models import AuditOutcome, CandidateStatus, ReviewSlot, User
from triage.review._common import ReviewError, _aware, _refuse, lock_candidate
from triage.review.queue import release_held
from triage.review.verdicts import count_verdict
from triage.services import Services


@dataclass
class Pending:
    """A verdict this person can still undo, and until when."""

    slot_id: int
    verdict: str
    until: dt.datetime

    def seconds_left(self, now: dt.datetime | None = None) -> float:
        return max(0.0, (self.until - (now or utcnow())).total_seconds())


def _until(slot: ReviewSlot, settings: Settings) -> dt.datetime:
    at = _aware(slot.pending_at)
    assert at is not None
    return at + dt.timedelta(seconds=settings.verdict_undo_seconds)


def pending_for(session: Session, user: User, settings: Settings) -> Pending | None:
    """The newest verdict of this user still in its undo window (read only)."""
    now = utcnow()
    since = now - dt.timedelta(seconds=settings.verdict_undo_seconds)
    slot = session.exec(select(ReviewSlot).where(ReviewSlot.reviewer_id == user.id,
                                                 col(ReviewSlot.pending_verdict).is_not(None),
                                                 col(ReviewSlot.pending_at) > since)
                        .order_by(col(ReviewSlot.pending_at).desc()).limit(1)).first()
    if slot is None:
        return None
    return Pending(int(slot.id), str(slot.pending_verdict), _until(slot, settings))  # type: ignore[arg-type]


def settle_due(session: Session, settings: Settings, user: User | None = None) -> int:
    """Make every pending verdict whose window has passed count (only this user's, if given), in the
    caller's transaction.  Returns how many counted."""
    due_before = utcnow() - dt.timedelta(seconds=settings.verdict_undo_seconds)
    stmt = select(ReviewSlot.id).where(col(ReviewSlot.pending_verdict).is_not(None),
                                       col(ReviewSlot.pending_at) <= due_before)
    if user is not None:
        stmt = stmt.where(ReviewSlot.reviewer_id == user.id)
    counted = 0
    for slot_id in session.exec(stmt.order_by(col(ReviewSlot.pending_at))).all():
        counted += _settle_one(session, settings, int(slot_id), due_before)  # type: ignore[arg-type]
    return counted


def _settle_one(session: Session, settings: Settings, slot_id: int, due_before: dt.datetime) -> int:
    slot = session.get(ReviewSlot, slot_id)
    assert slot is not None
    candidate = lock_candidate(session, slot.candidate_id)
    session.refresh(slot)
    pending_at = _aware(slot.pending_at)
    if slot.pending_verdict is None or pending_at is None or pending_at > due_before:
        return 0  # undone, or settled by another process meanwhile
    author = session.get(User, slot.reviewer_id)
    assert candidate is not None and author is not None
    if (author.is_suspended or slot.withdrawn or slot.voided_at is not None
            or candidate.status != CandidateStatus.open.value or slot.round != candidate.current_round):
        # Withdrawn, or its author suspended, before it counted: like a verdict given then, it is not counted.
        audit.record(session, "review.verdict", actor=author, outcome=AuditOutcome.denied,
                     object_type="review_slot", object_id=slot.id,
                     detail={"reason": "suspended" if author.is_suspended else "withdrawn",
                             "verdict": slot.pending_verdict})
        _clear(slot)
        if not slot.withdrawn:  # back to the queue for someone else
            slot.reviewer_id = None
        slot.leased_at = slot.lease_expires_at = None
        session.add(slot)
        return 0
    count_verdict(session, author, candidate, slot, slot.pending_verdict, slot.note, slot.idempotency_key,
                  pending_at, "", settings)
    return 1


def _clear(slot: ReviewSlot) -> None:
    slot.pending_verdict = None
    slot.pending_at = None
    slot.note = ""
    slot.idempotency_key = None


def undo_verdict(session: Session, user: User, slot_id: int, settings: Settings, ip: str = "") -> ReviewSlot:
    """Take back a verdict still in its undo window: the task is theirs again, with a fresh lease (caller's
    transaction).

    Any other task they hold (the one shown after the verdict) goes back to the queue at once.  Too late,
    and the undo is refused: the verdict counts."""
    slot = session.get(ReviewSlot, slot_id)
    if slot is None or slot.reviewer_id != user.id:
        raise _refuse(session, user, "review.undo", "not_found", "No such review task.", object_id=slot_id, ip=ip)
    lock_candidate(session, slot.candidate_id)
    session.refresh(slot)
    now = utcnow()
    if slot.pending_verdict is None or _until(slot, settings) <= now:
        raise _refuse(session, user, "review.undo", "conflict",
                      "Too late to undo: that verdict counts now.", object_id=slot_id, ip=ip)
    release_held(session, user, now, reason="undo", keep=slot_id)
    undone = slot.pending_verdict
    _clear(slot)
    slot.leased_at = now
    slot.lease_expires_at = now + dt.timedelta(seconds=settings.lease_seconds)
    session.add(slot)
    audit.record(session, "review.undo", actor=user, object_type="review_slot", object_id=slot.id,
                 detail={"candidate_id": slot.candidate_id, "verdict": undone}, ip=ip)
    return slot


def settle_sweep(engine: Engine, settings: Settings, services: Services) -> int:
    """The worker's tick: pending verdicts whose window passed while their author was away count now."""
    with session_scope(engine) as session:
        return settle_due(session, settings)


__all__ = ["Pending", "ReviewError", "pending_for", "settle_due", "settle_sweep", "undo_verdict"]
