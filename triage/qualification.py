"""Qualified recognizers: each one's known-answer record, probation, automatic suspension, reinstatement.

A recognizer's accuracy is tracked separately on *known-same* and on
*known-different* pairs (an answer of *cannot tell* counts as not correct),
each with a 95 % Wilson score interval:

* **suspended**, automatically, once the *upper* bound on either kind is below
  ``Settings.qualification_min_accuracy`` — the account is then, with 95 %
  confidence, worse than the bar on that kind.  Its open live tasks are
  released, its verdicts on undecided candidates stop counting (their slots are
  served again to someone else) and managers are notified;
* **qualified** (probation ends) once the *lower* bound on both kinds is at or
  above the bar — the account is, with 95 % confidence, at least that good.

A new account starts on probation, when it is served known-answer tasks at
``Settings.probation_known_answer_share``.  A manager reinstates a suspended
account: it goes back on probation with a fresh record (answers from then on).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import or_
from sqlmodel import Session, col, select

from triage import audit, events
from triage.clock import utcnow
from triage.config import Settings
from triage.db import lock_row
from triage.errors import DomainError, RefusalEntry
from triage.models import (
    Candidate,
    CandidateStatus,
    Qualification,
    ReviewSlot,
    Role,
    User,
    Verdict,
)

# 95 % two-sided.
WILSON_Z = 1.96


def wilson(correct: int, answered: int, z: float = WILSON_Z) -> tuple[float, float]:
    """The Wilson score interval of a proportion; (0, 1) when nothing was answered."""
    if answered <= 0:
        return 0.0, 1.0
    p = correct / answered
    denom = 1 + z * z / answered
    centre = (p + z * z / (2 * answered)) / denom
    half = z * math.sqrt(p * (1 - p) / answered + z * z / (4 * answered * answered)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class KindRecord:
    correct: int = 0
    answered: int = 0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.answered if self.answered else None

    @property
    def bounds(self) -> tuple[float, float]:
        return wilson(self.correct, self.answered)


@dataclass
class Record:
    """One recognizer's known-answer record since ``qualification_since``."""

    status: str
    same: KindRecord
    different: KindRecord

    def snapshot(self) -> dict[str, Any]:
        """What is stored with each verdict (and shown with a flag's evidence)."""
        return {"status": self.status, "same": asdict(self.same), "different": asdict(self.different),
                "same_bounds": [round(b, 3) for b in self.same.bounds],
                "different_bounds": [round(b, 3) for b in self.different.bounds]}

    def below_bar(self, bar: float) -> str | None:
        """The kind ('same' / 'different') whose upper bound is below the bar, if any."""
        for kind, rec in (("different", self.different), ("same", self.same)):
            if rec.answered and rec.bounds[1] < bar:
                return kind
        return None

    def above_bar(self, bar: float) -> bool:
        return self.same.bounds[0] >= bar and self.different.bounds[0] >= bar


def record_for(session: Session, user: User) -> Record:
    """Count the user's answered known-answer slots since their record started."""
    stmt = (select(ReviewSlot.verdict, Candidate.known_truth)
            .join(Candidate, col(Candidate.id) == col(ReviewSlot.candidate_id))
            .where(ReviewSlot.reviewer_id == user.id, col(ReviewSlot.verdict).is_not(None),
                   col(Candidate.known_truth).is_not(None)))
    if user.qualification_since is not None:
        stmt = stmt.where(col(ReviewSlot.verdict_at) >= user.qualification_since)
    same, different = KindRecord(), KindRecord()
    for verdict, truth in session.exec(stmt).all():
        rec = same if truth == Verdict.same.value else different
        rec.answered += 1
        rec.correct += int(verdict == truth)
    return Record(user.qualification, same, different)


def _managers(session: Session) -> list[User]:
    users = session.exec(select(User).where(col(User.is_active) == True).order_by(col(User.id))).all()  # noqa: E712
    return [u for u in users if u.has_role(Role.manager)]


def reassess(session: Session, user: User, settings: Settings) -> str | None:
    """After a known-answer verdict: suspend, or end probation, if the record says so (caller's transaction).

    Returns the new status when it changed.
    """
    if user.is_suspended:
        return None
    rec = record_for(session, user)
    bar = settings.qualification_min_accuracy
    kind = rec.below_bar(bar)
    if kind is not None:
        suspend(session, user, reason=f"known-{kind} accuracy below {bar:.0%} (95% upper bound "
                                      f"{rec.same.bounds[1] if kind == 'same' else rec.different.bounds[1]:.2f})",
                record=rec)
        return Qualification.suspended.value
    if user.qualification == Qualification.probation.value and rec.above_bar(bar):
        user.qualification = Qualification.qualified.value
        session.add(user)
        session.flush()
        audit.record(session, "recognizer.qualify", object_type="user", object_id=user.id,
                     detail={"record": rec.snapshot()})
        return Qualification.qualified.value
    return None


def suspend(session: Session, user: User, reason: str, record: Record | None = None) -> None:
    """Suspend from live tasks: release their leases, void their verdicts on undecided candidates, tell managers.

    Caller's transaction.  Every voided slot keeps its row (verdict and author) and gets
    a fresh slot in its place, so the round is served again to someone else; the
    author can never take that candidate again (one account, one slot per candidate).
    """
    now = utcnow()
    user.qualification = Qualification.suspended.value
    session.add(user)
    session.flush()
    released, voided = [], []
    mine = session.exec(select(ReviewSlot).where(ReviewSlot.reviewer_id == user.id,
                                                 col(ReviewSlot.voided_at).is_(None),
                                                 ReviewSlot.withdrawn == False)  # noqa: E712
                        .order_by(col(ReviewSlot.candidate_id))).all()
    for slot in mine:
        candidate = lock_row(session, Candidate, slot.candidate_id)
        session.refresh(slot)
        if candidate is None or candidate.status != CandidateStatus.open.value or candidate.is_known_answer:
            continue
        if slot.round != candidate.current_round:
            continue
        if slot.verdict is None:
            # A verdict still in its undo window never counted: it goes with the lease.
            slot.pending_verdict = slot.pending_at = None
            slot.reviewer_id = None
            slot.leased_at = None
            slot.lease_expires_at = None
            slot.revealed_full_faces = False
            session.add(slot)
            released.append(slot.id)
            continue
        slot.voided_at = now
        slot.void_reason = f"author suspended: {reason}"[:200]
        session.add(slot)
        session.flush()
        session.add(ReviewSlot(candidate_id=slot.candidate_id, round=slot.round, slot_no=slot.slot_no))
        session.flush()
        voided.append(slot.id)
    rec = record or record_for(session, user)
    audit.record(session, "recognizer.suspend", object_type="user", object_id=user.id,
                 detail={"reason": reason, "record": rec.snapshot(), "released_slots": released,
                         "voided_slots": voided})
    message = (f"Recognizer {user.username} was suspended from live tasks: {reason}. "
               f"{len(voided)} verdict(s) on undecided candidates no longer count. A manager may reinstate.")
    events.announce(session, events.RECOGNIZER_SUSPENDED, message, [m.id for m in _managers(session)],
                    object_type="user", object_id=user.id)


class QualificationError(DomainError):
    """A refused reinstatement (``code``: not_found, conflict)."""


def reinstate(session: Session, manager: User, user_id: int, ip: str = "") -> User:
    """A manager puts a suspended recognizer back on probation with a fresh record."""
    action = "recognizer.reinstate"

    def refuse(code: str, message: str) -> QualificationError:
        return QualificationError(code, message, audit=RefusalEntry(action, actor=manager, object_type="user",
                                                                    object_id=user_id, ip=ip))

    if not manager.has_role(Role.manager):
        raise refuse("forbidden", "Only managers can reinstate a recognizer.")
    stmt = select(User).where(User.id == user_id)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    user = session.exec(stmt.execution_options(populate_existing=True)).first()
    if user is None or not user.has_role(Role.recognizer):
        raise refuse("not_found", "No such recognizer.")
    if not user.is_suspended:
        raise refuse("conflict", f"This recognizer is not suspended (they are {user.qualification}).")
    user.qualification = Qualification.probation.value
    user.qualification_since = utcnow()
    session.add(user)
    audit.record(session, action, actor=manager, object_type="user", object_id=user.id,
                 detail={"to": Qualification.probation.value}, ip=ip)
    events.handled(session, "user", user.id, kinds=(events.RECOGNIZER_SUSPENDED,))
    return user


@dataclass
class Standing:
    user: User
    record: Record


def standings(session: Session) -> list[Standing]:
    """Every recognizer's standing and record, suspended first (managers only)."""
    users = session.exec(select(User).where(or_(col(User.roles).contains(Role.recognizer.value)))
                         .order_by(col(User.username))).all()
    rows = [Standing(u, record_for(session, u)) for u in users if u.has_role(Role.recognizer)]
    order = {Qualification.suspended.value: 0, Qualification.probation.value: 1, Qualification.qualified.value: 2}
    return sorted(rows, key=lambda s: order.get(s.user.qualification, 3))


def share_for(user: User, settings: Settings) -> float:
    """The known-answer share this recognizer is served at (higher on probation)."""
    if user.qualification == Qualification.probation.value:
        return max(settings.known_answer_share, settings.probation_known_answer_share)
    return settings.known_answer_share
