"""What the review modules share: the error, the task, the slots of a round, refusals and row locks."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, select

from triage.db import lock_row
from triage.errors import DomainError, RefusalEntry
from triage.models import Candidate, ReviewSlot, User

SUSPENDED_MESSAGE = ("Your account is suspended from review tasks: your answers on known-answer pairs fell below "
                     "the bar. A manager can reinstate it.")
SLOTS_PER_ROUND = 2


class ReviewError(DomainError):
    """A refused review action; ``code`` says why (for the HTTP status), ``message`` says it to a person."""


@dataclass
class Task:
    """A leased review slot: what a recognizer works on. Carries nothing the page may not show."""

    slot: ReviewSlot
    candidate: Candidate
    resumed: bool = False

    @property
    def slot_id(self) -> int:
        return self.slot.pk

    @property
    def lease_expires_at(self) -> dt.datetime:
        expires = self.slot.lease_expires_at
        if expires is None:
            raise ValueError("a task's slot is leased")
        return expires


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands back naive datetimes; every stored time is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


as_utc = _aware


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _refuse(session: Session, user: User | None, action: str, code: str, message: str, *,
            object_type: str = "review_slot", object_id: object = "", detail: dict[str, Any] | None = None,
            ip: str = "") -> ReviewError:
    """The error to raise: its audit entry is written when the transaction ends, after the work is rolled
    back (``triage.transaction``)."""
    return ReviewError(code, message, audit=RefusalEntry(action, actor=user, object_type=object_type,
                                                         object_id=object_id, detail=detail or {}, ip=ip))


def vacate(slot: ReviewSlot) -> None:
    """The slot goes back to the queue: no holder, no lease, and its full faces hidden again."""
    slot.reviewer_id = None
    slot.leased_at = None
    slot.lease_expires_at = None
    slot.revealed_full_faces = False


def _id(row: Any) -> int:
    assert row.id is not None, "the row has not been flushed"
    return int(row.id)


def _new_slots(candidate: Candidate, round_no: int) -> list[ReviewSlot]:
    return [ReviewSlot(candidate_id=_id(candidate), round=round_no, slot_no=n) for n in range(1, SLOTS_PER_ROUND + 1)]


def lock_candidate(session: Session, candidate_id: int) -> Candidate | None:
    """The candidate row, locked for this transaction (the decision of a round is serialised on it)."""
    # NO KEY UPDATE on PostgreSQL: inserting rows that refer to the candidate (seen, slots) does not wait on it.
    return lock_row(session, Candidate, candidate_id)


def _counting_slots(session: Session, candidate_id: int) -> list[ReviewSlot]:
    """A candidate's slots that count: not withdrawn, not voided."""
    return list(session.exec(select(ReviewSlot).where(ReviewSlot.candidate_id == candidate_id,
                                                      ReviewSlot.withdrawn == False,  # noqa: E712
                                                      col(ReviewSlot.voided_at).is_(None))
                             .order_by(col(ReviewSlot.round), col(ReviewSlot.slot_no))).all())
