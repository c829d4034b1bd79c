"""Subjects: their input schemas, listing, editing, closing, and expiry when their warrant lapses.

Closing or expiring a subject takes it out of every process's gallery (``triage.gallery``) and withdraws
its open review tasks, in the caller's transaction.
"""

from __future__ import annotations

import datetime as dt
import logging

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Engine, func, or_
from sqlmodel import Session, col, select

from triage import audit
from triage.clock import utcnow
from triage.config import Settings
from triage.errors import DomainError, RefusalEntry
from triage.gallery import ADD, REMOVE_SUBJECT, is_searchable, record_change, searchable_clause, today
from triage.models import (
    Candidate,
    CandidateStatus,
    ReferencePhoto,
    ReviewSlot,
    Subject,
    SubjectStatus,
    User,
)
from triage.services import Services

log = logging.getLogger("miatari.watchlist")

CLOSING_STATUSES = (SubjectStatus.arrested, SubjectStatus.withdrawn)


class WatchlistError(DomainError, ValueError):
    """A refused watchlist change; the message is meant for the user."""

    def __init__(self, message: str, code: str = "conflict", *, audit: RefusalEntry | None = None) -> None:
        super().__init__(code, message, audit=audit)


class SubjectNotFound(LookupError):
    pass


# Subject input schemas (shared by the API and the pages)
class SubjectBase(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200)
    aliases: str = Field(default="", max_length=500)
    case_ref: str = Field(min_length=1, max_length=100)
    priority: int = Field(default=3, ge=1, le=5, description="1 = most urgent, 5 = least")
    notes: str = Field(default="", max_length=4000)
    expires_on: dt.date | None = Field(default=None, description="The subject leaves the gallery on this date (UTC)")


class SubjectCreate(SubjectBase):
    @field_validator("expires_on")
    @classmethod
    def _future(cls, value: dt.date | None) -> dt.date | None:
        if value is not None and value <= today():
            raise ValueError("the expiry date must be in the future")
        return value


class SubjectUpdate(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)

    name: str | None = Field(default=None, min_length=1, max_length=200)
    aliases: str | None = Field(default=None, max_length=500)
    case_ref: str | None = Field(default=None, min_length=1, max_length=100)
    priority: int | None = Field(default=None, ge=1, le=5)
    notes: str | None = Field(default=None, max_length=4000)
    expires_on: dt.date | None = None

    @field_validator("expires_on")
    @classmethod
    def _future(cls, value: dt.date | None) -> dt.date | None:
        if value is not None and value <= today():
            raise ValueError("the expiry date must be in the future (close the subject to take it out now)")
        return value


# Reading
def get_subject(session: Session, subject_id: int) -> Subject:
    subject = session.get(Subject, subject_id)
    if subject is None:
        raise SubjectNotFound(f"No subject {subject_id}.")
    return subject


def is_expired(subject: Subject, on: dt.date | None = None) -> bool:
    return subject.expires_on is not None and subject.expires_on <= (on or today())


def display_status(subject: Subject) -> str:
    if subject.status == SubjectStatus.active.value and is_expired(subject):
        return "expired"
    return subject.status


STATUS_FILTERS = ("active", "arrested", "withdrawn", "expired", "searchable")


def list_subjects(session: Session, *, q: str = "", status: str = "", offset: int = 0,
                  limit: int = 50) -> tuple[list[tuple[Subject, int]], int]:
    """A page of subjects (newest first) with their reference photo counts, and the total count."""
    stmt = select(Subject)
    q = q.strip()
    if q:
        like = f"%{q.lower()}%"
        stmt = stmt.where(or_(func.lower(Subject.name).like(like), func.lower(Subject.aliases).like(like),
                              func.lower(Subject.case_ref).like(like)))
    if status == "searchable":
        stmt = stmt.where(searchable_clause())
    elif status == "expired":
        stmt = stmt.where(Subject.status == SubjectStatus.active.value, col(Subject.expires_on) <= today())
    elif status:
        stmt = stmt.where(Subject.status == status)
    total = session.exec(select(func.count()).select_from(stmt.subquery())).one()
    subjects = session.exec(stmt.order_by(col(Subject.id).desc()).offset(max(offset, 0)).limit(limit)).all()
    ids = [s.id for s in subjects]
    counts: dict[int, int] = {}
    if ids:
        counts = dict(session.exec(  # type: ignore[arg-type]
            select(ReferencePhoto.subject_id, func.count()).where(col(ReferencePhoto.subject_id).in_(ids))
            .group_by(col(ReferencePhoto.subject_id))
        ).all())
    return [(s, counts.get(s.id, 0)) for s in subjects], int(total)  # type: ignore[arg-type]


def reference_photos(session: Session, subject_id: int) -> list[ReferencePhoto]:
    return list(session.exec(select(ReferencePhoto).where(ReferencePhoto.subject_id == subject_id)
                             .order_by(col(ReferencePhoto.id))).all())


# Changing subjects
def create_subject(session: Session, data: SubjectCreate, actor: User | None, *, import_key: str | None = None,
                   ip: str = "") -> Subject:
    subject = Subject(**data.model_dump(), import_key=import_key, created_by=actor.id if actor else None)
    session.add(subject)
    session.flush()
    audit.record(session, "subject.create", actor=actor, object_type="subject", object_id=subject.id,
                 detail={"name": subject.name, "case_ref": subject.case_ref, "priority": subject.priority,
                         "expires_on": subject.expires_on, "import_key": import_key}, ip=ip)
    return subject


def update_subject(session: Session, subject_id: int, data: SubjectUpdate, actor: User | None,
                   ip: str = "") -> Subject:
    subject = get_subject(session, subject_id)
    changes = data.model_dump(exclude_unset=True)
    if subject.status != SubjectStatus.active.value:
        raise WatchlistError(f"This subject is closed ({subject.status}); it can no longer be edited.",
                             audit=RefusalEntry("subject.update", actor=actor, object_type="subject",
                                                object_id=subject_id, detail={"reason": "closed"}, ip=ip))
    for key in ("name", "case_ref"):
        if key in changes and changes[key] is None:
            raise WatchlistError(f"{key.replace('_', ' ')} cannot be empty.")
    before = {k: getattr(subject, k) for k in changes}
    for key, value in changes.items():
        setattr(subject, key, value if value is not None or key == "expires_on" else getattr(subject, key))
    subject.updated_at = utcnow()
    session.add(subject)
    audit.record(session, "subject.update", actor=actor, object_type="subject", object_id=subject_id,
                 detail={"before": before, "after": {k: getattr(subject, k) for k in changes}}, ip=ip)
    if "expires_on" in changes and subject.closed_at is not None and is_searchable(subject):
        _put_back(session, subject, actor, ip)
    return subject


def _put_back(session: Session, subject: Subject, actor: User | None, ip: str = "") -> None:
    """A lapsed warrant was extended: the subject is searched again in every process, and expires again.

    Candidates withdrawn when it expired stay withdrawn; new sightings are matched against it again.
    """
    subject.closed_at = None
    session.add(subject)
    photos = reference_photos(session, subject.id)  # type: ignore[arg-type]
    for photo in photos:
        record_change(session, ADD, subject.id, photo.id)  # type: ignore[arg-type]
    audit.record(session, "subject.reactivate", actor=actor, object_type="subject", object_id=subject.id,
                 detail={"expires_on": subject.expires_on, "reference_photos": len(photos)}, ip=ip)


def _take_out(session: Session, subject: Subject, actor: User | None) -> int:
    """Remove from every gallery and withdraw the open review tasks; returns how many were withdrawn."""
    record_change(session, REMOVE_SUBJECT, subject.id)  # type: ignore[arg-type]
    withdrawn = withdraw_for_subject(session, subject.id, actor)  # type: ignore[arg-type]
    return int(withdrawn or 0) if isinstance(withdrawn, int) else len(withdrawn or [])


def close_subject(session: Session, subject_id: int, status: SubjectStatus | str, actor: User | None,
                  reason: str = "", ip: str = "") -> Subject:
    """Close a subject (arrested or withdrawn): out of the gallery at once, open tasks withdrawn."""
    subject = get_subject(session, subject_id)
    try:
        new_status = SubjectStatus(status)
    except ValueError:
        new_status = None  # type: ignore[assignment]
    if new_status not in CLOSING_STATUSES:
        raise WatchlistError("A subject is closed as arrested or withdrawn.")
    if subject.status != SubjectStatus.active.value:
        raise WatchlistError(f"This subject is already closed ({subject.status}).", audit=RefusalEntry(
            "subject.close", actor=actor, object_type="subject", object_id=subject_id,
            detail={"reason": "already closed", "status": subject.status}, ip=ip))
    subject.status = new_status.value
    subject.closed_at = utcnow()
    subject.updated_at = subject.closed_at
    session.add(subject)
    audit.record(session, "subject.close", actor=actor, object_type="subject", object_id=subject_id,
                 detail={"status": subject.status, "reason": reason[:500]}, ip=ip)
    withdrawn = _take_out(session, subject, actor)
    log.info("subject %s closed as %s; %d open tasks withdrawn", subject_id, subject.status, withdrawn)
    return subject


def expire_subjects(session: Session, on: dt.date | None = None) -> list[int]:
    """Take every active subject whose expiry date has come out of the gallery (idempotent)."""
    on = on or today()
    due = session.exec(select(Subject).where(Subject.status == SubjectStatus.active.value,
                                             col(Subject.expires_on) <= on, col(Subject.closed_at).is_(None))
                       .with_for_update()).all()
    for subject in due:
        # The status stays active (the warrant merely lapsed); closed_at marks that it was taken out.
        subject.closed_at = utcnow()
        session.add(subject)
        audit.record(session, "subject.expire", object_type="subject", object_id=subject.id,
                     detail={"expires_on": subject.expires_on})
        _take_out(session, subject, None)
    return [s.id for s in due]  # type: ignore[misc]


def expiry_sweep(engine: Engine, settings: Settings, services: Services) -> list[int]:
    """Scheduled: expire subjects whose date has come, even if nobody looks at them."""
    del settings
    with Session(engine, expire_on_commit=False) as session:
        expired = expire_subjects(session)
        session.commit()
    if expired:
        log.info("expired subjects %s", expired)
        if services.gallery is not None:
            services.gallery.sync()
    return expired


def withdraw_for_subject(session: Session, subject_id: int, actor: User | None) -> int:
    """A subject left the watchlist: its open candidates and their unanswered slots are withdrawn, not deleted.

    Runs in the caller's transaction.  Known-answer pairs using the subject's
    photos are withdrawn too.  Returns how many candidates were withdrawn.
    """
    photo_ids = select(ReferencePhoto.id).where(ReferencePhoto.subject_id == subject_id)
    stmt = select(Candidate).where(
        Candidate.status == CandidateStatus.open.value,
        or_(col(Candidate.subject_id) == subject_id, col(Candidate.known_probe_photo_id).in_(photo_ids)),
    ).order_by(col(Candidate.id))
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    candidates = session.exec(stmt).all()
    now = utcnow()
    slots_withdrawn = 0
    for candidate in candidates:
        candidate.status = CandidateStatus.withdrawn.value
        candidate.decided_at = now
        session.add(candidate)
        for slot in session.exec(select(ReviewSlot).where(ReviewSlot.candidate_id == candidate.id,
                                                          ReviewSlot.verdict.is_(None))).all():  # type: ignore[union-attr]
            slot.withdrawn = True
            session.add(slot)
            slots_withdrawn += 1
    session.flush()
    audit.record(session, "review.withdraw_for_subject", actor=actor, object_type="subject", object_id=subject_id,
                 detail={"candidates": [c.id for c in candidates], "slots": slots_withdrawn})
    return len(candidates)
