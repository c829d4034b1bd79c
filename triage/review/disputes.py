"""Disputed candidates: the managers' list, and escalation to a new round of recognizers who never saw it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import func
from sqlmodel import Session, col, select

from triage import audit, events
from triage.config import Settings
from triage.gallery import is_searchable, searchable_clause
from triage.models import (
    Candidate,
    CandidateStatus,
    Qualification,
    ReviewSlot,
    Role,
    SeenCandidate,
    Sighting,
    Subject,
    SubjectStatus,
    User,
)
from triage.review._common import (
    SLOTS_PER_ROUND,
    ReviewError,
    _counting_slots,
    _id,
    _new_slots,
    _refuse,
    lock_candidate,
)

# A disputed candidate may be escalated until it has had this many rounds; then it stays disputed.
MAX_ROUNDS = 3


# Managers
def _may_take_live_rounds(settings: Settings | None) -> Callable[[User], bool]:
    # With settings that serve probation known-answer pairs only, a recognizer on probation takes no live round.
    live_only_when_qualified = settings is not None and settings.probation_known_answer_share >= 1.0
    return lambda u: (u.has_role(Role.recognizer) and not u.is_suspended
                      and not (live_only_when_qualified and u.qualification == Qualification.probation.value))


def eligible_recognizers(session: Session, candidate: Candidate, settings: Settings | None = None) -> list[User]:
    """Recognizers who could take the new round: active, unsuspended, served live tasks at all (not on a
    probation that serves known-answer pairs only), never shown this candidate, not its sighting's uploader."""
    seen = select(SeenCandidate.user_id).where(SeenCandidate.candidate_id == candidate.id)
    users = session.exec(select(User).where(User.is_active == True, col(User.id).not_in(seen))  # noqa: E712
                         .order_by(col(User.id))).all()
    uploader = None
    if candidate.sighting_id is not None:
        sighting = session.get(Sighting, candidate.sighting_id)
        uploader = sighting.uploaded_by if sighting else None
    may_take = _may_take_live_rounds(settings)
    return [u for u in users if may_take(u) and u.id != uploader]


def escalate(session: Session, manager: User, candidate_id: int, ip: str = "",
             settings: Settings | None = None) -> Candidate:
    """Send a disputed candidate to a new round of two recognizers who have not seen it.

    At most ``MAX_ROUNDS`` rounds in all: a candidate disputed in its last round stays disputed.
    """
    action = "review.escalate"
    if not manager.has_role(Role.manager):
        raise _refuse(session, manager, action, "forbidden", "Only managers can escalate a disputed candidate.",
                      object_type="candidate", object_id=candidate_id, ip=ip)
    # An expired warrant or a closed subject is never escalated.  Whoever escalates was shown the
    # candidate's verdicts and score: they count as having seen it, so its new round never goes to them.
    on_watchlist = session.exec(select(Subject).join(Candidate, col(Candidate.subject_id) == col(Subject.id))
                                .where(Candidate.id == candidate_id)).first()
    if on_watchlist is not None and not is_searchable(on_watchlist):
        raise _refuse(session, manager, action, "conflict",
                      "The subject is no longer searched (its warrant expired or it was closed): "
                      "its candidates cannot be escalated.", object_type="candidate", object_id=candidate_id, ip=ip)
    if on_watchlist is not None and session.get(SeenCandidate, (candidate_id, manager.id)) is None:
        session.add(SeenCandidate(candidate_id=candidate_id, user_id=_id(manager)))
    candidate = lock_candidate(session, candidate_id)
    if candidate is None or candidate.is_known_answer:
        raise _refuse(session, manager, action, "not_found", "No such disputed candidate.",
                      object_type="candidate", object_id=candidate_id, ip=ip)
    if candidate.status != CandidateStatus.disputed.value:
        raise _refuse(session, manager, action, "conflict",
                      f"Only a disputed candidate can be escalated; this one is {candidate.status}.",
                      object_type="candidate", object_id=candidate_id, ip=ip)
    if candidate.current_round >= MAX_ROUNDS:
        raise _refuse(session, manager, action, "conflict",
                      f"This candidate has had {candidate.current_round} rounds, the most there can be; "
                      "it stays disputed.", object_type="candidate", object_id=candidate_id,
                      detail={"round": candidate.current_round}, ip=ip)
    subject = session.get(Subject, candidate.subject_id)
    if subject is None or subject.status != SubjectStatus.active.value:
        raise _refuse(session, manager, action, "conflict", "The subject is no longer active on the watchlist.",
                      object_type="candidate", object_id=candidate_id, ip=ip)
    available = eligible_recognizers(session, candidate, settings)
    if len(available) < SLOTS_PER_ROUND:
        raise _refuse(session, manager, action, "conflict",
                      f"Escalation needs {SLOTS_PER_ROUND} recognizers who have not seen this candidate; "
                      f"there are {len(available)}.", object_type="candidate", object_id=candidate_id, ip=ip)
    candidate.current_round += 1
    candidate.status = CandidateStatus.open.value
    candidate.decided_at = None
    session.add(candidate)
    session.flush()
    for slot in _new_slots(candidate, candidate.current_round):
        session.add(slot)
    session.flush()
    audit.record(session, action, actor=manager, object_type="candidate", object_id=candidate.id,
                 detail={"round": candidate.current_round, "eligible": len(available)}, ip=ip)
    events.handled(session, "candidate", candidate.id, kinds=(events.DISPUTE_WAITING,))
    return candidate


@dataclass
class DisputedCandidate:
    candidate: Candidate
    subject: Subject
    verdicts: list[ReviewSlot]
    eligible: int
    reviewers: dict[int, str] = field(default_factory=dict)  # reviewer id -> username, for "who said what"

    @property
    def final(self) -> bool:
        """Disputed in its last possible round: it can no longer be escalated."""
        return self.candidate.current_round >= MAX_ROUNDS

    @property
    def why_not(self) -> str:
        """Why Escalate is refused now, in words for the page ("" when it may be escalated)."""
        if self.final:
            return (f"It has had {self.candidate.current_round} rounds, the most there can be: "
                    "it stays disputed, with no flag.")
        if self.eligible < SLOTS_PER_ROUND:
            return (f"Escalation needs {SLOTS_PER_ROUND} recognizers who have never been shown this candidate; "
                    f"there {'is' if self.eligible == 1 else 'are'} {self.eligible}. "
                    "Add a recognizer account, or reinstate a suspended one, then come back.")
        return ""

    def reviewer(self, slot: ReviewSlot) -> str:
        return self.reviewers.get(slot.reviewer_id or 0, "?")

    @property
    def last_round(self) -> list[ReviewSlot]:
        return [s for s in self.verdicts if s.round == self.candidate.current_round]


def disputed_candidates(session: Session, limit: int = 200,
                        settings: Settings | None = None) -> list[DisputedCandidate]:
    """Disputed real candidates on active subjects, oldest first, with their verdicts (managers only).

    Set-based: the same handful of queries for any number of candidates."""
    rows = session.exec(
        select(Candidate, Subject).join(Subject, col(Subject.id) == Candidate.subject_id)
        .where(Candidate.status == CandidateStatus.disputed.value, col(Candidate.known_truth).is_(None),
               searchable_clause())
        .order_by(col(Candidate.priority_at), col(Candidate.id)).limit(limit)
    ).all()
    if not rows:
        return []
    ids = [_id(candidate) for candidate, _subject in rows]
    verdicts: dict[int, list[ReviewSlot]] = defaultdict(list)
    for slot in session.exec(select(ReviewSlot).where(
            col(ReviewSlot.candidate_id).in_(ids), ReviewSlot.withdrawn == False,  # noqa: E712
            col(ReviewSlot.voided_at).is_(None), col(ReviewSlot.verdict).is_not(None))
            .order_by(col(ReviewSlot.candidate_id), col(ReviewSlot.round), col(ReviewSlot.slot_no))).all():
        verdicts[slot.candidate_id].append(slot)
    seen: dict[int, set[int]] = defaultdict(set)
    for candidate_id, user_id in session.exec(select(SeenCandidate.candidate_id, SeenCandidate.user_id)
                                              .where(col(SeenCandidate.candidate_id).in_(ids))).all():
        seen[candidate_id].add(user_id)
    sighting_ids = [c.sighting_id for c, _s in rows if c.sighting_id is not None]
    uploaders = dict(session.exec(select(Sighting.id, Sighting.uploaded_by)
                                  .where(col(Sighting.id).in_(sighting_ids))).all()) if sighting_ids else {}
    may_take = _may_take_live_rounds(settings)
    pool = [u for u in session.exec(select(User).where(User.is_active == True)  # noqa: E712
                                    .order_by(col(User.id))).all() if may_take(u)]
    out = []
    for candidate, subject in rows:
        uploader = uploaders.get(candidate.sighting_id) if candidate.sighting_id is not None else None
        eligible = sum(1 for u in pool if u.id not in seen[_id(candidate)] and u.id != uploader)
        out.append(DisputedCandidate(candidate, subject, verdicts[_id(candidate)], eligible))
    _name_reviewers(session, out)
    return out


def _name_reviewers(session: Session, items: list[DisputedCandidate]) -> None:
    ids = {s.reviewer_id for d in items for s in d.verdicts if s.reviewer_id is not None}
    names = dict(session.exec(select(User.id, User.username).where(col(User.id).in_(ids))).all()) if ids else {}
    for d in items:
        d.reviewers = names  # type: ignore[assignment]


def disputed_candidate(session: Session, candidate_id: int, settings: Settings | None = None) -> DisputedCandidate:
    """One disputed real candidate with its verdicts (the escalation's confirmation step); ReviewError if none."""
    row = session.exec(select(Candidate, Subject).join(Subject, col(Subject.id) == col(Candidate.subject_id))
                       .where(Candidate.id == candidate_id, Candidate.known_truth.is_(None))).first()  # type: ignore[union-attr]
    if row is None:
        raise ReviewError("not_found", "No such disputed candidate.")
    if row[0].status != CandidateStatus.disputed.value:
        raise ReviewError("conflict", f"Candidate #{candidate_id} is not disputed (it is {row[0].status}): "
                                      "it may have been escalated already. Nothing to confirm.")
    candidate, subject = row
    slots = [s for s in _counting_slots(session, _id(candidate)) if s.verdict is not None]
    out = DisputedCandidate(candidate, subject, slots, len(eligible_recognizers(session, candidate, settings)))
    _name_reviewers(session, [out])
    return out


@dataclass
class Escalation:
    """A candidate in a new round after a dispute: how far its round got."""

    candidate: Candidate
    subject: Subject
    answered: int


def in_escalation(session: Session, limit: int = 200) -> list[Escalation]:
    """Real candidates under review again after a manager escalated them, oldest first (one query)."""
    answered = (select(func.count()).select_from(ReviewSlot)
                .where(ReviewSlot.candidate_id == Candidate.id, ReviewSlot.round == Candidate.current_round,
                       col(ReviewSlot.verdict).is_not(None), ReviewSlot.withdrawn == False,  # noqa: E712
                       col(ReviewSlot.voided_at).is_(None)).correlate(Candidate).scalar_subquery())
    rows = session.exec(select(Candidate, Subject, answered).join(Subject, col(Subject.id) == col(Candidate.subject_id))
                        .where(Candidate.status == CandidateStatus.open.value, Candidate.current_round > 1,
                               Candidate.known_truth.is_(None))  # type: ignore[union-attr]
                        .order_by(col(Candidate.priority_at), col(Candidate.id)).limit(limit)).all()
    return [Escalation(c, s, int(n)) for c, s, n in rows]
