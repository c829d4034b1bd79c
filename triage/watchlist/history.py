"""A subject's history for the managers' subject page: candidates, flags and the sightings behind them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import func
from sqlmodel import Session, col, select

from triage.models import Candidate, Flag, ReferencePhoto, Sighting, User

HISTORY_LIMIT = 100  # the most recent rows of each kind on the page


@dataclass
class SubjectHistory:
    candidates: list[tuple[Candidate, Sighting]] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)
    sightings: list[tuple[Sighting, str]] = field(default_factory=list)  # with the uploader's username
    candidate_count: int = 0


def subject_history(session: Session, subject_id: int, limit: int = HISTORY_LIMIT) -> SubjectHistory:
    """Newest first: the subject's real candidates (with their sightings), its flags, and those sightings."""
    real = (Candidate.subject_id == subject_id, col(Candidate.known_truth).is_(None))
    candidates = session.exec(select(Candidate, Sighting).join(Sighting, col(Sighting.id) == col(Candidate.sighting_id))
                              .where(*real).order_by(col(Candidate.created_at).desc(), col(Candidate.id).desc())
                              .limit(limit)).all()
    total = session.exec(select(func.count()).select_from(Candidate).where(*real)).one()
    flags = session.exec(select(Flag).where(Flag.subject_id == subject_id)
                         .order_by(col(Flag.raised_at).desc()).limit(limit)).all()
    seen = (select(Candidate.sighting_id).where(*real).distinct())
    sightings = session.exec(select(Sighting, User.username).join(User, col(User.id) == col(Sighting.uploaded_by))
                             .where(col(Sighting.id).in_(seen))
                             .order_by(col(Sighting.observed_at).desc()).limit(limit)).all()
    return SubjectHistory([(c, s) for c, s in candidates], list(flags), [(s, u) for s, u in sightings], int(total))


def first_photos(session: Session, subject_ids: Sequence[int]) -> dict[int, int]:
    """Each subject's first reference photo (its thumbnail on the watchlist), in one query."""
    if not subject_ids:
        return {}
    rows = session.exec(select(ReferencePhoto.subject_id, func.min(ReferencePhoto.id))
                        .where(col(ReferencePhoto.subject_id).in_(subject_ids))
                        .group_by(col(ReferencePhoto.subject_id))).all()
    return {int(s): int(p) for s, p in rows if p is not None}
