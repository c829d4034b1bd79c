"""Arrest flags: raised only by consensus (``triage.review``), then acknowledged and closed.

A flag is an investigative lead, never an identification: every place that
shows one carries ``LEAD_WARNING``.  Lifecycle: raised → acknowledged →
closed (arrested / not located / withdrawn); each step is audited.  Who sees a
flag: managers, and the officer who uploaded the sighting.

Officers report, managers decide: the sighting's officer files reports (what
happened, with a proposed outcome), which are stored, audited and sent to the
managers; only a manager acknowledges a flag (takes it on) and closes it, and
closing as *arrested* closes the subject.  An officer's "I have seen it" is the
read marker of their flag notification, which changes nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, col, select

from triage import audit, events, notifications, watchlist
from triage.clock import utcnow
from triage.errors import DomainError, RefusalEntry
from triage.models import (
    Candidate,
    Flag,
    FlagCloseReason,
    FlagReport,
    FlagStatus,
    ReviewSlot,
    Role,
    Sighting,
    SightingPhoto,
    Subject,
    SubjectStatus,
    User,
)

LEAD_WARNING = "investigative lead — confirm identity before any action"
CLOSE_NOTE_MAX = 2000
REPORT_NOTE_MAX = 2000
OUTCOME_CHOICES = "arrested, not_located, withdrawn"


class FlagError(DomainError):
    """A refused flag action (``code``: forbidden, not_found, conflict, invalid)."""


def _managers(session: Session) -> list[User]:
    users = session.exec(select(User).where(col(User.is_active) == True).order_by(col(User.id))).all()  # noqa: E712
    return [u for u in users if u.has_role(Role.manager)]


def raise_flag(session: Session, candidate: Candidate) -> Flag:
    """Raise the flag for a candidate that two people confirmed; in the verdict's transaction.

    Refuses (an assertion, as it is a programming error) anything but a real
    candidate whose current round has two counting *same person* verdicts by
    distinct accounts (verdicts of earlier rounds, withdrawn or voided ones never count).
    """
    slots = session.exec(select(ReviewSlot).where(ReviewSlot.candidate_id == candidate.id,
                                                  ReviewSlot.round == candidate.current_round,
                                                  col(ReviewSlot.voided_at).is_(None),
                                                  ReviewSlot.withdrawn == False)).all()  # noqa: E712
    same_by = {s.reviewer_id for s in slots if s.verdict == "same"}
    if candidate.is_known_answer or candidate.sighting_id is None or len(same_by) < 2:
        raise AssertionError("a flag needs two distinct recognizers agreeing on a real sighting")
    assert candidate.id is not None
    flag = Flag(candidate_id=candidate.id, sighting_id=candidate.sighting_id, subject_id=candidate.subject_id,
                raised_at=utcnow())
    session.add(flag)
    session.flush()
    audit.record(session, "flag.raise", object_type="flag", object_id=flag.id,
                 detail={"candidate_id": candidate.id, "subject_id": candidate.subject_id,
                         "sighting_id": candidate.sighting_id, "confirmed_by": sorted(same_by)})
    subject = session.get(Subject, candidate.subject_id)
    sighting = session.get(Sighting, candidate.sighting_id)
    name = subject.name if subject else f"subject {candidate.subject_id}"
    message = f"Arrest flag #{flag.id}: {name} — {LEAD_WARNING}."
    recipients: list[int | None] = []
    if sighting is not None:
        recipients.append(sighting.uploaded_by)
    recipients += [m.id for m in _managers(session)]
    events.announce(session, events.FLAG_RAISED, message, recipients, object_type="flag", object_id=flag.id,
                    flag_id=flag.id)
    return flag


def may_see(user: User, flag: Flag, sighting: Sighting | None) -> bool:
    if user.has_role(Role.manager):
        return True
    return sighting is not None and sighting.uploaded_by == user.id and user.has_role(Role.officer)


def may_report(user: User, sighting: Sighting | None) -> bool:
    """Only the officer whose sighting raised the flag reports on it."""
    return sighting is not None and sighting.uploaded_by == user.id and user.has_role(Role.officer)


def visible_flags(session: Session, user: User, status: str | None = None, limit: int = 200) -> list[Flag]:
    """Flags this user may see, newest first: all for a manager, their own sightings' for an officer."""
    stmt = select(Flag).order_by(col(Flag.raised_at).desc(), col(Flag.id).desc()).limit(limit)
    if status:
        stmt = stmt.where(Flag.status == status)
    if not user.has_role(Role.manager):
        if not user.has_role(Role.officer):
            return []
        stmt = stmt.join(Sighting, Sighting.id == Flag.sighting_id).where(  # type: ignore[arg-type]
            Sighting.uploaded_by == user.id)
    return list(session.exec(stmt).all())


def get_visible(session: Session, user: User, flag_id: int, ip: str = "") -> Flag:
    """One flag, if this user may see it; a refusal is audited."""
    flag = session.get(Flag, flag_id)
    sighting = session.get(Sighting, flag.sighting_id) if flag else None
    if flag is None or not may_see(user, flag, sighting):
        raise FlagError("not_found", "No such flag.",
                        audit=_refusal(user, "flag.view", flag_id, "not allowed", ip) if flag is not None else None)
    return flag


@dataclass
class VerdictEvidence:
    reviewer: str
    verdict: str
    at: object
    round: int
    note: str
    revealed_full_faces: bool
    # The author's known-answer record when they answered (triage.qualification.Record.snapshot).
    record: dict[str, object] | None = None
    # Why the verdict no longer counts (its author was suspended before the decision), if so.
    voided: str = ""


@dataclass
class ReportEvidence:
    reporter: str
    outcome: str
    note: str
    at: object


@dataclass
class Evidence:
    flag: Flag
    candidate: Candidate
    subject: Subject
    sighting: Sighting
    photos: list[SightingPhoto]
    uploader: User | None
    verdicts: list[VerdictEvidence]
    acknowledged_by: User | None
    closed_by: User | None
    reports: list[ReportEvidence]
    warning: str = LEAD_WARNING


def evidence(session: Session, flag: Flag) -> Evidence:
    return evidence_many(session, [flag])[0]


def evidence_many(session: Session, flag_rows: list[Flag]) -> list[Evidence]:
    """The evidence of several flags, in their order, in a fixed number of queries whatever their number."""
    if not flag_rows:
        return []
    candidates = _by_id(session, Candidate, {f.candidate_id for f in flag_rows})
    subjects = _by_id(session, Subject, {f.subject_id for f in flag_rows})
    sightings = _by_id(session, Sighting, {f.sighting_id for f in flag_rows})
    photos: dict[int, list[SightingPhoto]] = {}
    for photo in session.exec(select(SightingPhoto).where(col(SightingPhoto.sighting_id).in_(sightings))
                              .order_by(col(SightingPhoto.position))).all():
        photos.setdefault(photo.sighting_id, []).append(photo)
    slots: dict[int, list[ReviewSlot]] = {}
    for slot in session.exec(select(ReviewSlot).where(col(ReviewSlot.candidate_id).in_(candidates),
                                                      col(ReviewSlot.verdict).is_not(None))
                             .order_by(col(ReviewSlot.round), col(ReviewSlot.verdict_at))).all():
        slots.setdefault(slot.candidate_id, []).append(slot)
    people = {s.reviewer_id for rows in slots.values() for s in rows} | {s.uploaded_by for s in sightings.values()}
    people |= {f.acknowledged_by for f in flag_rows} | {f.closed_by for f in flag_rows}
    users = _by_id(session, User, {u for u in people if u})
    reports = _reports_of_many(session, [f.id for f in flag_rows if f.id is not None])
    out = []
    for flag in flag_rows:
        sighting = sightings[flag.sighting_id]
        verdicts = [_verdict_evidence(s, users) for s in slots.get(flag.candidate_id, [])]
        out.append(Evidence(flag, candidates[flag.candidate_id], subjects[flag.subject_id], sighting,
                            photos.get(sighting.id or 0, []), users.get(sighting.uploaded_by), verdicts,
                            users.get(flag.acknowledged_by or 0), users.get(flag.closed_by or 0),
                            reports.get(flag.id or 0, [])))
    return out


def _by_id(session: Session, table: Any, ids: set[int]) -> dict[int, Any]:
    return {row.id: row for row in session.exec(select(table).where(col(table.id).in_(ids))).all()} if ids else {}


def _verdict_evidence(s: ReviewSlot, users: dict[int, User]) -> VerdictEvidence:
    reviewer = users.get(s.reviewer_id or 0)
    return VerdictEvidence(reviewer.username if reviewer else "?", s.verdict or "", s.verdict_at, s.round, s.note,
                           s.revealed_full_faces, s.reviewer_record,
                           s.void_reason or ("voided" if s.voided_at else ""))


def _reports_of_many(session: Session, flag_ids: list[int]) -> dict[int, list[ReportEvidence]]:
    out: dict[int, list[ReportEvidence]] = {}
    rows = session.exec(select(FlagReport, User).join(User, col(User.id) == col(FlagReport.reported_by))
                        .where(col(FlagReport.flag_id).in_(flag_ids)).order_by(col(FlagReport.id))).all()
    for report, user in rows:
        out.setdefault(report.flag_id, []).append(ReportEvidence(user.username, report.outcome, report.note,
                                                                 report.created_at))
    return out


def reports_of(session: Session, flag: Flag) -> list[ReportEvidence]:
    """The officers' reports on a flag, oldest first."""
    rows = session.exec(select(FlagReport, User).join(User, col(User.id) == col(FlagReport.reported_by))
                        .where(FlagReport.flag_id == flag.id).order_by(col(FlagReport.id))).all()
    return [ReportEvidence(user.username, report.outcome, report.note, report.created_at) for report, user in rows]


def _refusal(user: User, action: str, flag_id: int, reason: str, ip: str) -> RefusalEntry:
    """A refusal's audit entry: written when the transaction ends, after its work is rolled back."""
    return RefusalEntry(action, actor=user, object_type="flag", object_id=flag_id, detail={"reason": reason}, ip=ip)


def _lock(session: Session, flag_id: int) -> Flag | None:
    stmt = select(Flag).where(Flag.id == flag_id).execution_options(populate_existing=True)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(key_share=True)
    return session.exec(stmt).first()


def _managed(session: Session, user: User, action: str, flag_id: int, ip: str) -> Flag:
    """The flag, locked, for a manager's decision; anyone else is refused (and it is on record)."""
    flag = _lock(session, flag_id)
    sighting = session.get(Sighting, flag.sighting_id) if flag else None
    if flag is None or not may_see(user, flag, sighting):
        raise FlagError("not_found", "No such flag.",
                        audit=_refusal(user, action, flag_id, "not allowed", ip) if flag is not None else None)
    if not user.has_role(Role.manager):
        raise FlagError("forbidden", "Only a manager acknowledges or closes a flag. Report what happened "
                                     "instead: the managers are told.",
                        audit=_refusal(user, action, flag_id, "only a manager decides on a flag", ip))
    return flag


def acknowledge(session: Session, user: User, flag_id: int, ip: str = "") -> Flag:
    """raised → acknowledged, by a manager (who takes the flag on)."""
    flag = _managed(session, user, "flag.acknowledge", flag_id, ip)
    if flag.status != FlagStatus.raised.value:
        raise FlagError("conflict", f"This flag is already {flag.status}.",
                        audit=_refusal(user, "flag.acknowledge", flag_id, f"flag is {flag.status}", ip))
    flag.status = FlagStatus.acknowledged.value
    flag.acknowledged_by = user.id
    flag.acknowledged_at = utcnow()
    session.add(flag)
    audit.record(session, "flag.acknowledge", actor=user, object_type="flag", object_id=flag.id, ip=ip)
    # A manager took the flag on: the other managers' alerts are handled (the officer's stays theirs to read).
    events.handled(session, "flag", flag.id, kinds=(events.FLAG_RAISED,), user_ids=events.managers(session))
    return flag


def close(session: Session, user: User, flag_id: int, reason: str, note: str = "", ip: str = "") -> Flag:
    """acknowledged → closed with a reason (arrested / not_located / withdrawn), by a manager."""
    flag = _managed(session, user, "flag.close", flag_id, ip)
    try:
        reason = FlagCloseReason(reason).value
    except ValueError:
        raise FlagError("invalid", "The reason must be one of: arrested, not_located, withdrawn.",
                        audit=_refusal(user, "flag.close", flag_id, "bad reason", ip)) from None
    note = (note or "").strip()
    if len(note) > CLOSE_NOTE_MAX:
        raise FlagError("invalid", f"The note is too long (at most {CLOSE_NOTE_MAX} characters).",
                        audit=_refusal(user, "flag.close", flag_id, "note too long", ip))
    if flag.status != FlagStatus.acknowledged.value:
        raise FlagError("conflict", "Only an acknowledged flag can be closed." if flag.status == "raised"
                        else "This flag is already closed.",
                        audit=_refusal(user, "flag.close", flag_id, f"flag is {flag.status}", ip))
    flag.status = FlagStatus.closed.value
    flag.closed_by = user.id
    flag.closed_at = utcnow()
    flag.close_reason = reason
    flag.close_note = note
    session.add(flag)
    audit.record(session, "flag.close", actor=user, object_type="flag", object_id=flag.id,
                 detail={"reason": reason}, ip=ip)
    if reason == FlagCloseReason.arrested.value:
        _close_subject_as_arrested(session, user, flag, ip)
    return flag


def _close_subject_as_arrested(session: Session, user: User, flag: Flag, ip: str) -> None:
    """An arrest ends the search: the subject leaves the gallery and its open tasks are withdrawn,
    in the flag's transaction."""
    subject = session.get(Subject, flag.subject_id)
    if subject is not None and subject.status == SubjectStatus.active.value:
        watchlist.close_subject(session, subject.id, SubjectStatus.arrested, user,  # type: ignore[arg-type]
                                reason=f"flag {flag.id} closed as arrested", ip=ip)


def report(session: Session, user: User, flag_id: int, outcome: str, note: str = "", ip: str = "") -> FlagReport:
    """The sighting's officer reports what happened, proposing an outcome; managers are told.

    A report changes nothing on the flag: a manager reads it and closes the flag.
    """
    action = "flag.report"
    flag = _lock(session, flag_id)
    sighting = session.get(Sighting, flag.sighting_id) if flag else None
    if flag is None or not may_see(user, flag, sighting):
        raise FlagError("not_found", "No such flag.",
                        audit=_refusal(user, action, flag_id, "not allowed", ip) if flag is not None else None)
    if not may_report(user, sighting):
        raise FlagError("forbidden", "Only the officer whose sighting raised the flag reports on it; "
                                     "a manager closes it.",
                        audit=_refusal(user, action, flag_id, "only the sighting's officer reports", ip))
    try:
        outcome = FlagCloseReason(outcome).value
    except ValueError:
        raise FlagError("invalid", f"The outcome must be one of: {OUTCOME_CHOICES}.",
                        audit=_refusal(user, action, flag_id, "bad outcome", ip)) from None
    note = (note or "").strip()
    if len(note) > REPORT_NOTE_MAX:
        raise FlagError("invalid", f"The note is too long (at most {REPORT_NOTE_MAX} characters).",
                        audit=_refusal(user, action, flag_id, "note too long", ip))
    if flag.status == FlagStatus.closed.value:
        raise FlagError("conflict", "This flag is already closed.",
                        audit=_refusal(user, action, flag_id, "flag is closed", ip))
    entry = FlagReport(flag_id=flag_id, reported_by=user.id, outcome=outcome, note=note)  # type: ignore[arg-type]
    session.add(entry)
    session.flush()
    audit.record(session, action, actor=user, object_type="flag", object_id=flag_id,
                 detail={"report_id": entry.id, "outcome": outcome, "note": bool(note)}, ip=ip)
    message = f"Flag #{flag_id}: {user.username} reports {outcome.replace('_', ' ')} — a manager closes the flag."
    for manager in _managers(session):
        notifications.notify(session, manager.id, "flag.report", message, flag_id=flag_id)  # type: ignore[arg-type]
    return entry
