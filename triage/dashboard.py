"""The managers' home page: what needs attention now, each figure one set-based query."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlalchemy import func
from sqlmodel import Session, col, select

from triage.clock import utcnow
from triage.gallery import searchable_clause
from triage.metrics_queries import queue_figures
from triage.models import (
    Candidate,
    CandidateStatus,
    Flag,
    FlagStatus,
    ImportStatus,
    Qualification,
    Role,
    Subject,
    User,
    WatchlistImport,
)

RUNNING_IMPORTS = (ImportStatus.pending.value, ImportStatus.queued.value, ImportStatus.running.value)


@dataclass
class Dashboard:
    queue_slots: int
    queue_candidates: int
    queue_oldest_seconds: float | None
    open_disputes: int
    in_escalation: int
    flags_raised: int
    flags_acknowledged: int
    suspended: list[User] = field(default_factory=list)
    on_probation: list[User] = field(default_factory=list)
    imports: list[WatchlistImport] = field(default_factory=list)

    @property
    def open_flags(self) -> int:
        return self.flags_raised + self.flags_acknowledged


def dashboard(session: Session, now: dt.datetime | None = None) -> Dashboard:
    """Queue depth and age, open disputes and escalations, open flags, recognizers on hold, imports running."""
    now = now or utcnow()
    slots, candidates, oldest, _median = queue_figures(session, now)
    by_status = dict(session.exec(
        select(Candidate.status, func.count()).join(Subject, col(Subject.id) == col(Candidate.subject_id))
        .where(Candidate.known_truth.is_(None),  # type: ignore[union-attr]
               col(Candidate.status).in_([CandidateStatus.disputed.value]), searchable_clause())
        .group_by(col(Candidate.status))).all())
    escalated = session.exec(select(func.count()).select_from(Candidate).where(
        Candidate.status == CandidateStatus.open.value, Candidate.current_round > 1,
        Candidate.known_truth.is_(None))).one()  # type: ignore[union-attr]
    flags = dict(session.exec(select(Flag.status, func.count())
                              .where(col(Flag.status).in_([FlagStatus.raised.value, FlagStatus.acknowledged.value]))
                              .group_by(col(Flag.status))).all())
    held = session.exec(select(User).where(
        col(User.roles).contains(Role.recognizer.value), User.is_active == True,  # noqa: E712
        col(User.qualification).in_([Qualification.suspended.value, Qualification.probation.value]))
        .order_by(col(User.username))).all()
    held = [u for u in held if u.has_role(Role.recognizer)]
    imports = session.exec(select(WatchlistImport).where(col(WatchlistImport.status).in_(RUNNING_IMPORTS))
                           .order_by(col(WatchlistImport.created_at))).all()
    return Dashboard(
        queue_slots=slots, queue_candidates=candidates, queue_oldest_seconds=oldest,
        open_disputes=int(by_status.get(CandidateStatus.disputed.value, 0)), in_escalation=int(escalated),
        flags_raised=int(flags.get(FlagStatus.raised.value, 0)),
        flags_acknowledged=int(flags.get(FlagStatus.acknowledged.value, 0)),
        suspended=[u for u in held if u.qualification == Qualification.suspended.value],
        on_probation=[u for u in held if u.qualification == Qualification.probation.value],
        imports=list(imports))
