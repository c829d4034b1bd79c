"""Verdicts and consensus: storing a recognizer's verdict and deciding the candidate when its round is complete.

A round decides on its own (verdicts are never pooled across rounds); two *same person* verdicts on a real
candidate raise an arrest flag, in the transaction that stores the second verdict.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from triage import audit, events, flags, qualification
from triage.clock import utcnow
from triage.config import Settings, get_settings
from triage.models import Candidate, CandidateStatus, ReviewSlot, SeenCandidate, User, Verdict
from triage.review._common import (
    SLOTS_PER_ROUND,
    SUSPENDED_MESSAGE,
    ReviewError,
    _aware,
    _counting_slots,
    _id,
    _refuse,
    lock_candidate,
    vacate,
)

NOTE_MAX = 2000


class VerdictInput(BaseModel):
    """A recognizer's verdict as the API's body or the task page's form gives it."""

    verdict: Literal["same", "different", "cannot_tell"]
    note: str = Field(default="", max_length=NOTE_MAX)
IDEMPOTENCY_KEY_MAX = 64


@dataclass
class VerdictResult:
    slot: ReviewSlot
    replayed: bool
    # Set only when this verdict completed its round (for logs and tests; never shown to the recognizer).
    decided: str | None = None
    # Held in its undo window: it does not count yet.
    pending: bool = False


# Consensus
def outcome_for(verdicts: Iterable[str]) -> CandidateStatus:
    """The rule of DESIGN.md over the two verdicts of one round (never pooled across rounds)."""
    vs = list(verdicts)
    if len(vs) != SLOTS_PER_ROUND:
        raise ValueError(f"a round has exactly {SLOTS_PER_ROUND} verdicts, not {len(vs)}")
    if vs == [Verdict.same.value] * SLOTS_PER_ROUND:
        return CandidateStatus.flagged
    if vs == [Verdict.different.value] * SLOTS_PER_ROUND:
        return CandidateStatus.cleared
    return CandidateStatus.disputed


def submit_verdict(session: Session, user: User, slot_id: int, verdict: str, note: str = "",
                   idempotency_key: str | None = None, ip: str = "",
                   settings: Settings | None = None, undo_seconds: float = 0.0) -> VerdictResult:
    """Store one verdict and, if it completes the round, decide the candidate, in the caller's transaction.

    Idempotent: sending the same verdict again (with the same key, or none) returns
    the stored one; a different verdict for a slot already answered is refused.  A
    verdict on an expired lease is refused, not counted, and the slot returns to the queue
    (when the refusal is recorded).  Refusals carry their audit entry (``triage.transaction``).
    With ``undo_seconds`` the verdict is held as pending instead: it can be undone for that long and
    counts afterwards (``triage.review.pending``); the slot stays the author's meanwhile.
    """
    refuse = functools.partial(_refuse, session, user, "review.verdict", object_id=slot_id, ip=ip)
    verdict, note = _checked_input(refuse, user, verdict, note)
    stored_key = _stored_key(refuse, user, idempotency_key)
    if stored_key is not None:
        earlier = session.exec(select(ReviewSlot).where(ReviewSlot.idempotency_key == stored_key)).first()
        if earlier is not None:
            if earlier.id != slot_id or (earlier.verdict or earlier.pending_verdict) != verdict:
                raise refuse("conflict", "This Idempotency-Key was already used for another verdict.")
            return VerdictResult(earlier, replayed=True, pending=earlier.pending_verdict is not None)
    candidate, slot = _locked_slot(session, refuse, slot_id)
    now = utcnow()
    _check_holder(session, refuse, user, candidate, slot)
    given = slot.verdict or slot.pending_verdict
    if given is not None:
        if given == verdict:
            return VerdictResult(slot, replayed=True, pending=slot.pending_verdict is not None)
        raise refuse("conflict", "You already gave a different verdict on this task; it cannot be changed.")
    _check_open(refuse, candidate, slot, now)
    if undo_seconds > 0:
        return _hold(session, user, slot, verdict, note, stored_key, now, ip)
    return count_verdict(session, user, candidate, slot, verdict, note, stored_key, now, ip,
                         settings or get_settings())


# Checking a verdict
def _checked_input(refuse: Callable[..., ReviewError], user: User, verdict: str, note: str) -> tuple[str, str]:
    if user.is_suspended:
        raise refuse("suspended", SUSPENDED_MESSAGE + " Your verdict was not counted.")
    try:
        verdict = Verdict(verdict).value
    except ValueError:
        raise refuse("invalid", "The verdict must be one of: same, different, cannot_tell.") from None
    note = (note or "").strip()
    if len(note) > NOTE_MAX:
        raise refuse("invalid", f"The note is too long (at most {NOTE_MAX} characters).")
    return verdict, note


def _stored_key(refuse: Callable[..., ReviewError], user: User, idempotency_key: str | None) -> str | None:
    if not idempotency_key:
        return None
    if len(idempotency_key) > IDEMPOTENCY_KEY_MAX or not idempotency_key.isprintable():
        raise refuse("invalid", f"The Idempotency-Key must be at most {IDEMPOTENCY_KEY_MAX} printable characters.")
    # Keys are per account: one person's key can never collide with another's.
    return f"{user.id}:{idempotency_key}"


def _locked_slot(session: Session, refuse: Callable[..., ReviewError],
                 slot_id: int) -> tuple[Candidate, ReviewSlot]:
    peek = session.get(ReviewSlot, slot_id)
    if peek is None:
        raise refuse("not_found", "No such review task.")
    # Lock the candidate first: the two verdicts of a round are serialised, so the
    # second one always sees the first and the decision is taken exactly once.
    candidate = lock_candidate(session, peek.candidate_id)
    slot = session.exec(select(ReviewSlot).where(ReviewSlot.id == slot_id)
                        .execution_options(populate_existing=True)).one()
    assert candidate is not None
    return candidate, slot


def _check_holder(session: Session, refuse: Callable[..., ReviewError], user: User, candidate: Candidate,
                  slot: ReviewSlot) -> None:
    if slot.reviewer_id == user.id:
        return
    # Seen the candidate, and holding or having answered none of its other slots: the lease on this
    # slot was theirs and ran out.  Holding the other slot means this one was never theirs.
    holds_other = session.exec(select(ReviewSlot.id).where(ReviewSlot.candidate_id == candidate.id,
                                                           ReviewSlot.reviewer_id == user.id)).first()
    had_it = holds_other is None and session.get(SeenCandidate, (candidate.id, user.id)) is not None
    if not had_it:  # someone else's slot: the same answer as a missing one
        raise refuse("not_found", "No such review task.", detail={"why": "not held by this recognizer"})
    raise refuse("lease_expired", "This task is no longer leased to you: your time on it ran out and it went "
                 "back to the queue. Your verdict was not counted.")


def _check_open(refuse: Callable[..., ReviewError], candidate: Candidate, slot: ReviewSlot,
                now: dt.datetime) -> None:
    if (slot.withdrawn or slot.voided_at is not None or candidate.status != CandidateStatus.open.value
            or slot.round != candidate.current_round):
        raise refuse("withdrawn", "This task was withdrawn (the subject was closed). Your verdict was not counted.")
    expires = _aware(slot.lease_expires_at)
    if expires is None or expires < now:
        error = refuse("lease_expired",
                       f"Your time on this task ran out at {expires:%H:%M:%S} UTC and it went back to the queue. "
                       "Your verdict was not counted." if expires else "This task is not leased to you.",
                       detail={"expired_at": str(expires)})
        # Refuse, and give the slot back to the queue in the same breath.
        assert error.audit is not None
        error.audit.also = functools.partial(_give_back, slot_id=_id(slot), reviewer_id=slot.reviewer_id)
        raise error


def _give_back(session: Session, *, slot_id: int, reviewer_id: int | None) -> None:
    slot = session.get(ReviewSlot, slot_id)
    if slot is not None and slot.reviewer_id == reviewer_id and slot.verdict is None:
        vacate(slot)
        session.add(slot)


# Storing a verdict
def _hold(session: Session, user: User, slot: ReviewSlot, verdict: str, note: str, stored_key: str | None,
          now: dt.datetime, ip: str) -> VerdictResult:
    """Keep the verdict as pending (undoable); it counts once its window has passed."""
    slot.pending_verdict = verdict
    slot.pending_at = now
    slot.note = note
    slot.idempotency_key = stored_key
    session.add(slot)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise ReviewError("conflict", "This Idempotency-Key was already used for another verdict.") from None
    audit.record(session, "review.verdict_pending", actor=user, object_type="review_slot", object_id=slot.id,
                 detail={"candidate_id": slot.candidate_id, "round": slot.round, "verdict": verdict,
                         "revealed_full_faces": slot.revealed_full_faces, "note": bool(note)}, ip=ip)
    return VerdictResult(slot, replayed=False, pending=True)


def count_verdict(session: Session, user: User, candidate: Candidate, slot: ReviewSlot, verdict: str, note: str,
                  stored_key: str | None, now: dt.datetime, ip: str, settings: Settings) -> VerdictResult:
    """Make a verdict count (``now``: when it was given): store it and decide the round if it is complete.

    The candidate is locked by the caller; caller's transaction."""
    slot.verdict = verdict
    slot.note = note
    slot.verdict_at = now
    slot.idempotency_key = stored_key
    slot.pending_verdict = None
    slot.pending_at = None
    # The author's standing as it was when they answered (shown with a flag's evidence).
    slot.reviewer_record = qualification.record_for(session, user).snapshot()
    session.add(slot)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        # The same key arrived twice at once: the other request stored it.
        earlier = session.exec(select(ReviewSlot).where(ReviewSlot.idempotency_key == stored_key)
                               .execution_options(populate_existing=True)).first()
        if earlier is not None and earlier.id == slot.id and earlier.verdict == verdict:
            return VerdictResult(earlier, replayed=True)
        raise ReviewError("conflict", "This Idempotency-Key was already used for another verdict.") from None
    audit.record(session, "review.verdict", actor=user, object_type="review_slot", object_id=slot.id,
                 detail={"candidate_id": candidate.id, "round": slot.round, "verdict": verdict,
                         "revealed_full_faces": slot.revealed_full_faces, "note": bool(note)}, ip=ip)
    decided = _decide_if_complete(session, candidate, now)
    if candidate.is_known_answer:
        # A known-answer verdict may end probation, or suspend the account (voiding its undecided verdicts).
        qualification.reassess(session, user, settings)
    return VerdictResult(slot, replayed=False, decided=decided)


def _decide_if_complete(session: Session, candidate: Candidate, now: dt.datetime) -> str | None:
    slots = _counting_slots(session, _id(candidate))
    current = [s for s in slots if s.round == candidate.current_round]
    if len(current) < SLOTS_PER_ROUND or any(s.verdict is None for s in current):
        return None
    # This round alone decides: earlier rounds' verdicts are never pooled in.
    outcome = outcome_for(sorted(s.verdict for s in current if s.verdict is not None))
    if candidate.is_known_answer:
        # A known-answer pair measures the recognizers; it never flags.
        final = CandidateStatus.cleared
    else:
        final = outcome
    candidate.status = final.value
    candidate.decided_at = now
    session.add(candidate)
    session.flush()
    audit.record(session, "candidate.decide", object_type="candidate", object_id=candidate.id,
                 detail={"outcome": final.value, "round": candidate.current_round,
                         "known_answer": candidate.is_known_answer,
                         "verdicts": [[s.round, s.slot_no, s.reviewer_id, s.verdict] for s in current]})
    if final is CandidateStatus.flagged:
        flags.raise_flag(session, candidate)
    elif final is CandidateStatus.disputed:
        events.dispute_waiting(session, candidate)
    return final.value
