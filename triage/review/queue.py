"""The queue: claiming the most urgent slot, leases and their expiry, and working on a held task.

Queue order (see docs/review.md): fresh sightings first, then subject priority (1 first), then the
oldest candidate, then candidate id.  Claims are safe under concurrency (see ``triage.review``).
"""

from __future__ import annotations

import datetime as dt
import functools
import random
from typing import Any

from sqlalchemy import BindParameter, Date, Engine, bindparam, case, exists, func, or_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from triage import audit, qualification
from triage.clock import utcnow
from triage.config import Settings
from triage.db import reads_first, session_scope
from triage.gallery import searchable_clause
from triage.models import (
    Candidate,
    CandidateStatus,
    Probe,
    ReferencePhoto,
    ReviewSlot,
    Role,
    SeenCandidate,
    Sighting,
    Subject,
    User,
)
from triage.review._common import (
    SUSPENDED_MESSAGE,
    ReviewError,
    Task,
    _aware,
    _id,
    _is_postgres,
    _refuse,
    vacate,
)
from triage.review.candidates import (
    KnownAnswerPlan,
    add_planned_known_answer,
    create_known_answer_task,
    plan_known_answer,
)
from triage.services import Services

IMAGE_KINDS = ("probe-eyes", "subject-eyes", "probe-face", "subject-face")


# Claiming
#
# The claim's statements are built once, with the recognizer, the time and the day as parameters: a
# claim holds SQLite's one write lock, and building a statement this size in SQLAlchemy costs more than
# running it.  ``_params`` gives the values.
@functools.cache
def _available_stmt(known_answer: bool) -> Any:
    """Slots the recognizer ``:user_id`` may take at ``:now``, most urgent first."""
    user_id: BindParameter[int] = bindparam("user_id")
    now: BindParameter[dt.datetime] = bindparam("now")
    other = aliased(ReviewSlot)
    # On another slot of it already (the slot itself may be theirs from a lease that lapsed: they may take it again).
    on_it_already = exists().where(col(other.candidate_id) == col(Candidate.id), col(other.reviewer_id) == user_id,
                                   col(other.id) != col(ReviewSlot.id))
    # Shown it in an earlier round (a lapsed lease on this very round does not lock its holder out).
    seen_before = exists().where(col(SeenCandidate.candidate_id) == col(Candidate.id),
                                 col(SeenCandidate.user_id) == user_id,
                                 col(SeenCandidate.round) < col(ReviewSlot.round))
    gave_back = exists().where(col(SeenCandidate.candidate_id) == col(Candidate.id),
                               col(SeenCandidate.user_id) == user_id, col(SeenCandidate.skipped_at).is_not(None))
    stmt = (
        select(ReviewSlot)
        .join(Candidate, col(Candidate.id) == ReviewSlot.candidate_id)
        .join(Subject, col(Subject.id) == Candidate.subject_id)
        .outerjoin(Sighting, col(Sighting.id) == Candidate.sighting_id)
        .where(
            col(ReviewSlot.verdict).is_(None),
            ReviewSlot.withdrawn == False,  # noqa: E712
            col(ReviewSlot.voided_at).is_(None),
            col(ReviewSlot.pending_verdict).is_(None),
            ReviewSlot.round == Candidate.current_round,
            or_(col(ReviewSlot.reviewer_id).is_(None), col(ReviewSlot.lease_expires_at) < now),
            Candidate.status == CandidateStatus.open.value,
            searchable_clause(bindparam("today", type_=Date)),
            ~on_it_already,
            # An escalated round goes only to people who have never been shown the candidate.
            ~seen_before,
            # A task they gave back goes to someone else.
            ~gave_back,
            # Never a candidate from one's own sighting.
            or_(col(Candidate.sighting_id).is_(None), col(Sighting.uploaded_by) != user_id),
        )
    )
    if known_answer:
        # Never a pair made from a real case this recognizer was shown.
        seen_source = exists().where(col(SeenCandidate.candidate_id) == col(Candidate.known_source_candidate_id),
                                     col(SeenCandidate.user_id) == user_id)
        return stmt.where(col(Candidate.known_truth).is_not(None), ~seen_source).order_by(
            col(Candidate.priority_at), col(Candidate.id), col(ReviewSlot.slot_no))
    fresh_first = case((col(Sighting.observed_at) >= bindparam("fresh_since"), 0), else_=1)
    return stmt.where(col(Candidate.known_truth).is_(None)).order_by(
        fresh_first, col(Subject.priority), col(Candidate.priority_at), col(Candidate.id), col(ReviewSlot.slot_no))


@functools.cache
def _first_stmt(known_answer: bool, postgres: bool) -> Any:
    """The most urgent of them, locked for this transaction (PostgreSQL: skipping rows others hold)."""
    stmt = _available_stmt(known_answer).limit(1)
    return stmt.with_for_update(skip_locked=True, of=ReviewSlot) if postgres else stmt


@functools.cache
def _any_stmt() -> Any:
    return select(_available_stmt(False).limit(1).exists())


@functools.cache
def _count_stmt() -> Any:
    """How many candidates (not slots) the recognizer could take now."""
    candidates = _available_stmt(False).order_by(None).with_only_columns(
        col(ReviewSlot.candidate_id)).distinct().subquery()
    return select(func.count()).select_from(candidates)


def _params(user: User, settings: Settings, now: dt.datetime) -> dict[str, Any]:
    return {"user_id": user.id, "now": now, "today": now.date(),
            "fresh_since": now - dt.timedelta(hours=settings.fresh_sighting_hours)}


def _first(session: Session, user: User, settings: Settings, now: dt.datetime, *,
           known_answer: bool) -> ReviewSlot | None:
    stmt = _first_stmt(known_answer, _is_postgres(session))
    return session.exec(stmt, params=_params(user, settings, now)).first()


@functools.cache
def _current_lease_stmt() -> Any:
    return (
        select(ReviewSlot).join(Candidate, col(Candidate.id) == ReviewSlot.candidate_id)
        .where(ReviewSlot.reviewer_id == bindparam("user_id"), col(ReviewSlot.verdict).is_(None),
               ReviewSlot.withdrawn == False, col(ReviewSlot.lease_expires_at) >= bindparam("now"),  # noqa: E712
               col(ReviewSlot.pending_verdict).is_(None),
               ReviewSlot.round == Candidate.current_round, Candidate.status == CandidateStatus.open.value)
        .order_by(col(ReviewSlot.leased_at)).limit(1)
    )


def _current_lease(session: Session, user: User, now: dt.datetime) -> ReviewSlot | None:
    return session.exec(_current_lease_stmt(), params={"user_id": user.id, "now": now}).first()


def _nothing_for(session: Session, user: User, settings: Settings) -> bool:
    """Whether this recognizer holds no lease and could take no real task: asked as a reader, so an empty
    queue (asked every few seconds by everyone waiting for work) costs no write lock.  A stale answer only
    says "nothing" a moment late; when there is something, the claim reads everything again under the lock."""
    reads_first(session)
    now = utcnow()
    if _current_lease(session, user, now) is not None:
        return False
    return not session.exec(_any_stmt(), params=_params(user, settings, now)).one()


def current_task(session: Session, user: User) -> Task | None:
    """The live lease this user holds, if any (read only)."""
    held = _current_lease(session, user, utcnow())
    if held is None:
        return None
    return Task(held, session.get_one(Candidate, held.candidate_id), resumed=True)


def next_task(session: Session, user: User, settings: Settings, *, rng: random.Random | None = None,
              ip: str = "") -> Task | None:
    """Lease the most urgent slot this recognizer may take (or return the lease they hold), in the caller's
    transaction.

    Returns None when there is nothing for them.  A known-answer task is served
    instead of a real one at the recognizer's share (``qualification.share_for``:
    higher on probation), and only when a real task was there too, so a
    known-answer task can never be told by an empty queue.  A suspended
    recognizer is refused.
    """
    if not user.has_role(Role.recognizer) or not user.is_active:
        raise _refuse(session, user, "review.next", "forbidden", "Only recognizers can take review tasks.",
                      object_type="user", object_id=user.id, ip=ip)
    if user.is_suspended:
        raise _refuse(session, user, "review.next", "suspended", SUSPENDED_MESSAGE,
                      object_type="user", object_id=user.id, ip=ip)
    share = qualification.share_for(user, settings)
    rng = rng or random.Random()
    if _nothing_for(session, user, settings):
        return None
    known_wanted = share > 0 and rng.random() < share
    plan = None
    now = utcnow()
    if known_wanted and _current_lease(session, user, now) is None and _first(
            session, user, settings, now, known_answer=True) is None:
        # Still as a reader: the pictures of a new known-answer pair are rendered (and written to the
        # store) before the claim takes the write lock, which it then holds for a few inserts only.
        plan = plan_known_answer(session, settings, rng, avoid_seen_by=user.id)
    for _attempt in range(3):
        now = utcnow()
        # One person's claims are serialised, so they can never race themself onto both slots.
        # FOR NO KEY UPDATE: rows referring to the user (notifications, slots) can still be written meanwhile.
        session.exec(select(User).where(User.id == user.id).with_for_update(key_share=True)).one()
        if plan is not None:
            _add_plan(session, plan)
            plan = None
        held = _current_lease(session, user, now)
        if held is not None:
            candidate = session.get_one(Candidate, held.candidate_id)
            return Task(held, candidate, resumed=True)
        slot = _first(session, user, settings, now, known_answer=False)
        if slot is None:
            return None
        if known_wanted:
            known = _first(session, user, settings, now, known_answer=True)
            if known is None and create_known_answer_task(session, settings, rng, avoid_seen_by=user.id) is not None:
                known = _first(session, user, settings, now, known_answer=True)
            if known is not None:
                slot = known
        try:
            # A savepoint: a lease that lost a race is undone alone, and the claim is tried again.
            with session.begin_nested():
                return _lease(session, user, slot, settings, now, ip)
        except IntegrityError:
            continue
    return None


def _add_plan(session: Session, plan: KnownAnswerPlan) -> None:
    """Add the pair planned for this claim whatever happens next (another known-answer task may have turned
    up meanwhile, or the queue emptied): it waits for a later claim, and no rendition is left unused in the
    store.  Its photos were read before the lock: one removed meanwhile leaves the pair out, nothing more."""
    try:
        with session.begin_nested():
            add_planned_known_answer(session, plan)
    except IntegrityError:
        pass


def _lease(session: Session, user: User, slot: ReviewSlot, settings: Settings, now: dt.datetime, ip: str) -> Task:
    previous = slot.reviewer_id
    if previous is not None:
        audit.record(session, "review.lease_expired", object_type="review_slot", object_id=slot.id,
                     detail={"candidate_id": slot.candidate_id, "previous_reviewer_id": previous})
    slot.reviewer_id = user.id
    slot.leased_at = now
    slot.lease_expires_at = now + dt.timedelta(seconds=settings.lease_seconds)
    slot.revealed_full_faces = False
    session.add(slot)
    if session.get(SeenCandidate, (slot.candidate_id, user.id)) is None:
        session.add(SeenCandidate(candidate_id=slot.candidate_id, user_id=_id(user), first_seen_at=now,
                                  round=slot.round))
    session.flush()
    audit.record(session, "review.lease", actor=user, object_type="review_slot", object_id=slot.id,
                 detail={"candidate_id": slot.candidate_id, "round": slot.round,
                         "expires_at": slot.lease_expires_at.isoformat()}, ip=ip)
    candidate = session.get_one(Candidate, slot.candidate_id)
    return Task(slot, candidate)


def expire_leases(session: Session) -> int:
    """Return every slot whose lease ran out (no verdict) to the queue; caller commits. Returns how many."""
    now = utcnow()
    stmt = select(ReviewSlot).where(
        col(ReviewSlot.verdict).is_(None), col(ReviewSlot.reviewer_id).is_not(None),
        ReviewSlot.withdrawn == False, col(ReviewSlot.lease_expires_at) < now,  # noqa: E712
        # A verdict in its undo window keeps its slot: it was given in time.
        col(ReviewSlot.pending_verdict).is_(None))
    if _is_postgres(session):
        stmt = stmt.with_for_update(skip_locked=True)
    slots = session.exec(stmt).all()
    for slot in slots:
        previous = slot.reviewer_id
        vacate(slot)
        session.add(slot)
        session.flush()
        audit.record(session, "review.lease_expired", object_type="review_slot", object_id=slot.id,
                     detail={"candidate_id": slot.candidate_id, "previous_reviewer_id": previous})
    return len(slots)


def sweep_expired_leases(engine: Engine, settings: Settings, services: Services) -> int:
    """Periodic sweep (claims also take over expired slots, so the queue never waits for it)."""
    with session_scope(engine) as session:
        return expire_leases(session)


# Working on a task
def _held_slot(session: Session, user: User, slot_id: int, action: str, ip: str = "") -> ReviewSlot:
    """The slot, if this user holds a live lease on it; otherwise a recorded refusal."""
    slot = session.get(ReviewSlot, slot_id)
    if slot is None:
        raise _refuse(session, user, action, "not_found", "No such review task.", object_id=slot_id, ip=ip)
    if slot.reviewer_id != user.id or slot.verdict is not None or slot.pending_verdict is not None or slot.withdrawn:
        # Answered exactly as a missing slot, so ids reveal nothing; the audit entry says why.
        raise _refuse(session, user, action, "not_found", "No such review task.", object_id=slot_id, ip=ip,
                      detail={"why": "not held by this recognizer"})
    expires = _aware(slot.lease_expires_at)
    if expires is None or expires < utcnow():
        raise _refuse(session, user, action, "lease_expired",
                      "Your time on this task ran out and it went back to the queue. Press Next for a task.",
                      object_id=slot_id, ip=ip)
    return slot


def held_task(session: Session, user: User, slot_id: int, ip: str = "") -> Task:
    """The task behind a slot this user holds (for showing it again)."""
    slot = _held_slot(session, user, slot_id, "review.open", ip)
    candidate = session.get_one(Candidate, slot.candidate_id)
    return Task(slot, candidate, resumed=True)


def reveal_full_faces(session: Session, user: User, slot_id: int, ip: str = "") -> ReviewSlot:
    """Record that the holder revealed the full faces (kept with the verdict)."""
    slot = _held_slot(session, user, slot_id, "review.reveal", ip)
    if not slot.revealed_full_faces:
        slot.revealed_full_faces = True
        session.add(slot)
        audit.record(session, "review.reveal", actor=user, object_type="review_slot", object_id=slot.id,
                     detail={"candidate_id": slot.candidate_id}, ip=ip)
    return slot


def slot_image_sha(session: Session, user: User, slot_id: int, kind: str, ip: str = "") -> str:
    """The stored image behind one of a held slot's pictures; faces only after the reveal."""
    if kind not in IMAGE_KINDS:
        raise ReviewError("not_found", "No such picture.")
    slot = _held_slot(session, user, slot_id, "review.image", ip)
    if kind.endswith("-face") and not slot.revealed_full_faces:
        raise _refuse(session, user, "review.image", "forbidden", "Reveal the full faces first.",
                      object_id=slot_id, ip=ip)
    candidate = session.get_one(Candidate, slot.candidate_id)
    assert candidate is not None
    return candidate_image_sha(session, candidate, kind)


def candidate_image_sha(session: Session, candidate: Candidate, kind: str) -> str:
    """Which stored image shows one side of a candidate (no access check: callers check)."""
    side: Probe | ReferencePhoto | None
    if kind.startswith("probe"):
        if candidate.is_known_answer:
            # Only the rendition made for this task: never bytes served anywhere else.
            sha = candidate.known_probe_eyes_sha256 if kind.endswith("-eyes") else candidate.known_probe_face_sha256
            if sha is None:
                raise ReviewError("not_found", "The picture is no longer stored.")
            return sha
        side = session.get(Probe, candidate.probe_id)
    else:
        side = session.get(ReferencePhoto, candidate.reference_photo_id)
    if side is None:
        raise ReviewError("not_found", "The picture is no longer stored.")
    return side.eye_crop_sha256 if kind.endswith("-eyes") else side.face_chip_sha256


def queue_size_for(session: Session, user: User, settings: Settings) -> int:
    """How many tasks this recognizer could take now (real ones only): candidates, not slots, since one
    person can fill only one slot of a candidate."""
    return int(session.exec(_count_stmt(), params=_params(user, settings, utcnow())).one())


# Renewing and giving back
def renew_lease(session: Session, user: User, slot_id: int, settings: Settings, ip: str = "") -> ReviewSlot:
    """The holder is at work: extend the lease to a full ``lease_seconds`` from now, but never past
    ``lease_max_seconds`` after it was taken (caller's transaction).  A lapsed lease is refused (``lease_expired``)."""
    slot = _held_slot(session, user, slot_id, "review.renew", ip)
    wanted = min(utcnow() + dt.timedelta(seconds=settings.lease_seconds), lease_limit(slot, settings))
    current = _aware(slot.lease_expires_at)
    step = min(RENEW_STEP_SECONDS, settings.lease_seconds / 4)
    if current is None or wanted > current + dt.timedelta(seconds=step):
        slot.lease_expires_at = wanted
        session.add(slot)
        audit.record(session, "review.renew", actor=user, object_type="review_slot", object_id=slot.id,
                     detail={"candidate_id": slot.candidate_id, "expires_at": wanted.isoformat()}, ip=ip)
    return slot


# A renewal that would add less than this (or a quarter of the lease) changes nothing and writes no audit
# entry: the page beats every few seconds, the lease moves about once a minute.
RENEW_STEP_SECONDS = 60


def lease_limit(slot: ReviewSlot, settings: Settings) -> dt.datetime:
    """The latest the lease on this slot can be renewed to."""
    leased_at = _aware(slot.leased_at) or utcnow()
    return leased_at + dt.timedelta(seconds=max(settings.lease_max_seconds, settings.lease_seconds))


def release_task(session: Session, user: User, slot_id: int, ip: str = "") -> ReviewSlot:
    """Give a held task back at once ("skip"): it returns to the queue and is not served to them again (caller's
    transaction)."""
    slot = _held_slot(session, user, slot_id, "review.release", ip)
    seen = session.get(SeenCandidate, (slot.candidate_id, user.id))
    if seen is not None:
        seen.skipped_at = utcnow()
        session.add(seen)
    _give_back(session, user, slot, "skipped", ip)
    return slot


def release_held(session: Session, user: User, now: dt.datetime, *, reason: str, keep: int | None = None) -> int:
    """Give back every live lease this user holds but ``keep`` (caller's transaction); returns how many."""
    held = session.exec(
        select(ReviewSlot).where(ReviewSlot.reviewer_id == user.id, ReviewSlot.verdict.is_(None),  # type: ignore[union-attr]
                                 col(ReviewSlot.pending_verdict).is_(None), ReviewSlot.withdrawn == False,  # noqa: E712
                                 col(ReviewSlot.lease_expires_at) >= now)).all()
    mine = [slot for slot in held if slot.id != keep]
    for slot in mine:
        _give_back(session, user, slot, reason, "")
    return len(mine)


def _give_back(session: Session, user: User, slot: ReviewSlot, reason: str, ip: str) -> None:
    vacate(slot)
    session.add(slot)
    session.flush()
    audit.record(session, "review.release", actor=user, object_type="review_slot", object_id=slot.id,
                 detail={"candidate_id": slot.candidate_id, "reason": reason}, ip=ip)


def done_today(session: Session, user: User, now: dt.datetime | None = None) -> int:
    """Verdicts this recognizer gave since midnight UTC, counted or still in their undo window (the session
    counter on the task page; says nothing of which were known-answer pairs or how they went)."""
    now = now or utcnow()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    stmt = select(func.count()).select_from(ReviewSlot).where(
        ReviewSlot.reviewer_id == user.id,
        or_(col(ReviewSlot.verdict_at) >= midnight, col(ReviewSlot.pending_at) >= midnight))
    return int(session.exec(stmt).one())


def had_task(session: Session, user: User, slot_id: int) -> bool:
    """Whether this slot was once this user's task (answered, in its undo window, or its lease lapsed)."""
    slot = session.get(ReviewSlot, slot_id)
    if slot is None:
        return False
    if slot.reviewer_id is not None:  # someone's task: only its holder had it (others: as if missing)
        return slot.reviewer_id == user.id
    # Given back or lapsed: it was theirs if they were shown its candidate.
    return session.get(SeenCandidate, (slot.candidate_id, user.id)) is not None
