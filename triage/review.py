"""The review queue: candidates, review slots, leases, verdicts and consensus.

Every candidate needs two blind verdicts from two different recognizers.  A
recognizer asks for the next task and gets a lease on one review slot; a slot
whose lease ran out goes back to the queue.  The decision is taken in the
transaction that stores the last verdict of a round, exactly once, and each
round decides on its own (verdicts are never pooled across rounds):

* both *same person* → an arrest flag;
* both *different person* → cleared;
* anything else → disputed (never a flag).  A manager may escalate a disputed
  candidate to a new round of two recognizers who have never been shown it, at
  most ``MAX_ROUNDS`` rounds in all; after that it stays disputed.

A verdict counts only while its author is in good standing: when a recognizer
is suspended (``triage.qualification``) their verdicts on undecided candidates
are voided — kept, no longer counting — and those slots are served again.
Known-answer tasks are made from a settled real case when one exists, else from
reference photos, their probe side re-rendered (``triage.known_answer``).

Claims are safe under concurrency: on PostgreSQL the slot is taken with
``FOR UPDATE SKIP LOCKED`` (and the recognizer's own row is locked so one
person never races themself); on SQLite every transaction is ``BEGIN
IMMEDIATE`` (see ``triage.db``), which serialises claims.  The database
itself refuses the same account on two slots of one candidate.

Queue order (see docs/review.md): fresh sightings first (observed less than
``fresh_sighting_hours`` ago), then subject priority (1 first), then the
oldest candidate (``Candidate.priority_at``, its creation time, which an
escalation does not reset), then candidate id.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image
from sqlalchemy import Engine, case, exists, func, or_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from triage import audit, events, flags, known_answer, qualification
from triage.clock import utcnow
from triage.config import Settings, get_settings
from triage.db import session_scope
from triage.gallery import is_searchable, searchable_clause
from triage.models import (
    AuditOutcome,
    Candidate,
    CandidateStatus,
    Probe,
    Qualification,
    ReferencePhoto,
    ReviewSlot,
    Role,
    SeenCandidate,
    Sighting,
    StoredImage,
    Subject,
    SubjectStatus,
    User,
    Verdict,
)
from triage.storage import ImageStore, store_image
from triage.worker import sweep

NOTE_MAX = 2000
SUSPENDED_MESSAGE = ("Your account is suspended from review tasks: your answers on known-answer pairs fell below "
                     "the bar. A manager can reinstate it.")
IDEMPOTENCY_KEY_MAX = 64
SLOTS_PER_ROUND = 2
# A disputed candidate may be escalated until it has had this many rounds; then it stays disputed.
MAX_ROUNDS = 3
KNOWN_ANSWER_PAIR_ATTEMPTS = 12
# Settled real cases considered for a known-answer pair (the most recently decided).
KNOWN_ANSWER_CASES = 200
RENDITION_ATTEMPTS = 5
IMAGE_KINDS = ("probe-eyes", "subject-eyes", "probe-face", "subject-face")


class ReviewError(Exception):
    """A refused review action; ``code`` says why (for the HTTP status), ``message`` says it to a person."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Hit(Protocol):
    subject_id: int
    reference_photo_id: int
    distance: float
    score: float
    rank: int


@dataclass
class Task:
    """A leased review slot: what a recognizer works on. Carries nothing the page may not show."""

    slot: ReviewSlot
    candidate: Candidate
    resumed: bool = False

    @property
    def slot_id(self) -> int:
        return self.slot.id  # type: ignore[return-value]

    @property
    def lease_expires_at(self) -> dt.datetime:
        return self.slot.lease_expires_at  # type: ignore[return-value]


@dataclass
class VerdictResult:
    slot: ReviewSlot
    replayed: bool
    # Set only when this verdict completed its round (for logs and tests; never shown to the recognizer).
    decided: str | None = None


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


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands back naive datetimes; every stored time is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def _is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _refuse(session: Session, user: User | None, action: str, code: str, message: str, *,
            object_type: str = "review_slot", object_id: object = "", detail: dict[str, Any] | None = None,
            ip: str = "") -> ReviewError:
    """Write the refusal to the audit log and commit it (nothing else); return the error to raise."""
    _drop_pending(session)
    audit.record(session, action, actor=user, outcome=AuditOutcome.denied, object_type=object_type,
                 object_id=object_id, detail={"reason": code, **(detail or {})}, ip=ip)
    session.commit()
    return ReviewError(code, message)


def _drop_pending(session: Session) -> None:
    # Refusals come before any change; a rollback only if something is pending, because a rollback
    # expires every loaded object (the request's user among them) and they may be read after the request.
    if session.new or session.dirty or session.deleted:
        session.rollback()


def _id(row: Any) -> int:
    assert row.id is not None, "the row has not been flushed"
    return int(row.id)


def _new_slots(candidate: Candidate, round_no: int) -> list[ReviewSlot]:
    return [ReviewSlot(candidate_id=_id(candidate), round=round_no, slot_no=n) for n in range(1, SLOTS_PER_ROUND + 1)]


# Creating candidates
def create_candidates_for_probe(session: Session, probe: Probe, hits: Sequence[Hit],
                                settings: Settings) -> list[Candidate]:
    """Turn the matcher's hits for one probe into candidates with their two round-1 slots.

    Runs in the caller's transaction (the matching job's).  Only hits at or above
    the lead threshold, at most ``top_k``, on active subjects; a probe/subject pair
    that already has a candidate (a re-run job) is not added twice.
    """
    kept = sorted((h for h in hits if h.score >= settings.lead_threshold), key=lambda h: h.rank)[: settings.top_k]
    now = utcnow()
    created: list[Candidate] = []
    for hit in kept:
        subject = session.get(Subject, hit.subject_id)
        if subject is None or not is_searchable(subject):
            continue
        existing = session.exec(select(Candidate).where(Candidate.probe_id == probe.id,
                                                        Candidate.subject_id == hit.subject_id)).first()
        if existing is not None:
            continue
        candidate = Candidate(probe_id=probe.id, sighting_id=probe.sighting_id, subject_id=hit.subject_id,
                              reference_photo_id=hit.reference_photo_id, score=float(hit.score),
                              distance=float(hit.distance), rank=int(hit.rank), priority_at=now, created_at=now)
        session.add(candidate)
        session.flush()
        for slot in _new_slots(candidate, 1):
            session.add(slot)
        session.flush()
        audit.record(session, "candidate.create", object_type="candidate", object_id=candidate.id,
                     detail={"probe_id": probe.id, "sighting_id": probe.sighting_id, "subject_id": hit.subject_id,
                             "rank": hit.rank, "score": round(float(hit.score), 4)})
        created.append(candidate)
    return created


def _active_subject_ids(session: Session) -> set[int]:
    """Subjects a known-answer pair may use: active and not past their expiry date."""
    today = utcnow().date()
    return {i for i in session.exec(
        select(Subject.id).where(Subject.status == SubjectStatus.active.value,
                                 or_(col(Subject.expires_on).is_(None), col(Subject.expires_on) >= today))
    ).all() if i is not None}


def _settled_cases(session: Session, truth: str, active: set[int], user_id: int | None) -> list[Candidate]:
    """Real candidates decided by a unanimous round whose truth is ``truth``, on active subjects,
    that this recognizer has never been shown and did not upload."""
    status = CandidateStatus.flagged.value if truth == Verdict.same.value else CandidateStatus.cleared.value
    stmt = (select(Candidate).join(Sighting, col(Sighting.id) == col(Candidate.sighting_id))
            .where(Candidate.status == status, col(Candidate.probe_id).is_not(None),
                   col(Candidate.known_truth).is_(None)))
    if user_id is not None:
        seen = exists().where(col(SeenCandidate.candidate_id) == col(Candidate.id),
                              col(SeenCandidate.user_id) == user_id)
        stmt = stmt.where(~seen, col(Sighting.uploaded_by) != user_id)
    rows = session.exec(stmt.order_by(col(Candidate.decided_at).desc(), col(Candidate.id).desc())
                        .limit(KNOWN_ANSWER_CASES)).all()
    out = []
    for c in rows:
        if c.subject_id not in active:
            continue
        current = [s.verdict for s in _counting_slots(session, _id(c)) if s.round == c.current_round]
        if len(current) == SLOTS_PER_ROUND and outcome_for(sorted(v for v in current if v)).value == status:
            out.append(c)
    return out


def _render_probe_side(session: Session, store: ImageStore, eyes_sha: str, face_sha: str, rng: random.Random,
                       how: known_answer.Degradation) -> tuple[str, str, int]:
    """Store a fresh rendition of one probe side; its bytes exist nowhere else in the system."""
    for _ in range(RENDITION_ATTEMPTS):
        seed = rng.getrandbits(63)
        eyes, face, _params = known_answer.render_pair(store.get(eyes_sha), store.get(face_sha), seed, how)
        digests = [hashlib.sha256(b).hexdigest() for b in (eyes, face)]
        if any(session.get(StoredImage, d) is not None for d in digests):
            continue
        return (store_image(session, store, eyes, "image/png", *_size(eyes)),
                store_image(session, store, face, "image/png", *_size(face)), seed)
    raise RuntimeError("could not render a known-answer picture with new bytes")


def _size(png: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(png)) as img:
        return img.size


def create_known_answer_task(session: Session, settings: Settings, rng: random.Random | None = None,
                             avoid_seen_by: int | None = None) -> Candidate | None:
    """A pair whose truth is known, as a candidate with two round-1 slots; caller's transaction.

    The truth (*same* or *different*, even odds when both can be made) is drawn
    first.  A settled real case of that truth is preferred — a candidate flagged
    (truth *same*) or cleared (truth *different*) by a unanimous round, its real
    probe re-rendered; otherwise two reference photos (one subject for *same*, two
    for *different*), the probe side degraded like a CCTV still.  Only active
    subjects past no expiry date, and photos that passed the quality check.
    Returns None when nothing can make a pair.
    """
    rng = rng or random.Random()
    store = ImageStore(settings.images_dir)
    active = _active_subject_ids(session)
    photos = session.exec(
        select(ReferencePhoto).where(ReferencePhoto.quality_ok == True)  # noqa: E712
        .order_by(col(ReferencePhoto.id))
    ).all()
    by_subject: dict[int, list[ReferencePhoto]] = {}
    for p in photos:
        if p.subject_id in active:
            by_subject.setdefault(p.subject_id, []).append(p)
    multi = [s for s, ps in by_subject.items() if len(ps) >= 2]
    cases = {truth: _settled_cases(session, truth, active, avoid_seen_by)
             for truth in (Verdict.same.value, Verdict.different.value)}
    can = {Verdict.same.value: bool(multi or cases[Verdict.same.value]),
           Verdict.different.value: bool(len(by_subject) >= 2 or cases[Verdict.different.value])}
    if not any(can.values()):
        return None
    for _ in range(KNOWN_ANSWER_PAIR_ATTEMPTS):
        if all(can.values()):
            truth = Verdict.same.value if rng.random() < 0.5 else Verdict.different.value
        else:
            truth = next(t for t, ok in can.items() if ok)
        source: Candidate | None = None
        probe_photo: ReferencePhoto | None = None
        if cases[truth]:
            source = rng.choice(cases[truth])
            probe = session.get(Probe, source.probe_id)
            reference = session.get(ReferencePhoto, source.reference_photo_id)
            if probe is None or reference is None:
                continue
            eyes_sha, face_sha, how = probe.eye_crop_sha256, probe.face_chip_sha256, known_answer.FROM_PROBE
        else:
            if truth == Verdict.same.value:
                probe_photo, reference = rng.sample(by_subject[rng.choice(multi)], 2)
            else:
                s1, s2 = rng.sample(sorted(by_subject), 2)
                probe_photo, reference = rng.choice(by_subject[s1]), rng.choice(by_subject[s2])
            if avoid_seen_by is not None and session.exec(
                select(Candidate.id).join(SeenCandidate, col(SeenCandidate.candidate_id) == col(Candidate.id))
                .where(Candidate.known_probe_photo_id == probe_photo.id,
                       Candidate.reference_photo_id == reference.id, SeenCandidate.user_id == avoid_seen_by)
            ).first() is not None:
                continue
            eyes_sha, face_sha, how = (probe_photo.eye_crop_sha256, probe_photo.face_chip_sha256,
                                       known_answer.FROM_REFERENCE)
        eyes, face, seed = _render_probe_side(session, store, eyes_sha, face_sha, rng, how)
        now = utcnow()
        candidate = Candidate(probe_id=None, sighting_id=None, subject_id=reference.subject_id,
                              reference_photo_id=_id(reference),
                              known_probe_photo_id=probe_photo.id if probe_photo else None,
                              known_source_candidate_id=source.id if source else None,
                              known_probe_eyes_sha256=eyes, known_probe_face_sha256=face, known_truth=truth,
                              score=0.0, distance=0.0, rank=0, priority_at=now, created_at=now)
        session.add(candidate)
        session.flush()
        for slot in _new_slots(candidate, 1):
            session.add(slot)
        session.flush()
        audit.record(session, "candidate.create_known_answer", object_type="candidate", object_id=candidate.id,
                     detail={"probe_photo_id": probe_photo.id if probe_photo else None,
                             "source_candidate_id": source.id if source else None,
                             "reference_photo_id": reference.id, "truth": truth, "rendition_seed": seed})
        return candidate
    return None


# Claiming
def _available_slots(user: User, settings: Settings, now: dt.datetime, *, known_answer: bool) -> Any:
    """Slots this recognizer may take now, most urgent first."""
    other = aliased(ReviewSlot)
    on_it_already = exists().where(col(other.candidate_id) == col(Candidate.id), col(other.reviewer_id) == user.id)
    has_seen = exists().where(col(SeenCandidate.candidate_id) == col(Candidate.id),
                              col(SeenCandidate.user_id) == user.id)
    stmt = (
        select(ReviewSlot)
        .join(Candidate, Candidate.id == ReviewSlot.candidate_id)  # type: ignore[arg-type]
        .join(Subject, Subject.id == Candidate.subject_id)  # type: ignore[arg-type]
        .outerjoin(Sighting, Sighting.id == Candidate.sighting_id)  # type: ignore[arg-type]
        .where(
            ReviewSlot.verdict.is_(None),  # type: ignore[union-attr]
            ReviewSlot.withdrawn == False,  # noqa: E712
            col(ReviewSlot.voided_at).is_(None),
            ReviewSlot.round == Candidate.current_round,
            or_(col(ReviewSlot.reviewer_id).is_(None), col(ReviewSlot.lease_expires_at) < now),
            Candidate.status == CandidateStatus.open.value,
            searchable_clause(now.date()),  # type: ignore[arg-type]
            ~on_it_already,
            # An escalated round goes only to people who have never been shown the candidate.
            or_(col(ReviewSlot.round) == 1, ~has_seen),
            # Never a candidate from one's own sighting.
            or_(col(Candidate.sighting_id).is_(None), col(Sighting.uploaded_by) != user.id),
        )
    )
    if known_answer:
        # Never a pair made from a real case this recognizer was shown.
        seen_source = exists().where(col(SeenCandidate.candidate_id) == col(Candidate.known_source_candidate_id),
                                     col(SeenCandidate.user_id) == user.id)
        stmt = stmt.where(Candidate.known_truth.is_not(None), ~seen_source).order_by(  # type: ignore[union-attr]
            col(Candidate.priority_at), col(Candidate.id), col(ReviewSlot.slot_no))
    else:
        fresh_since = now - dt.timedelta(hours=settings.fresh_sighting_hours)
        fresh_first = case((col(Sighting.observed_at) >= fresh_since, 0), else_=1)
        stmt = stmt.where(Candidate.known_truth.is_(None)).order_by(  # type: ignore[union-attr]
            fresh_first, col(Subject.priority), col(Candidate.priority_at), col(Candidate.id), col(ReviewSlot.slot_no))
    return stmt


def _lock_first(session: Session, stmt: Any) -> ReviewSlot | None:
    stmt = stmt.limit(1)
    if _is_postgres(session):
        stmt = stmt.with_for_update(skip_locked=True, of=ReviewSlot)
    return session.exec(stmt).first()  # type: ignore[no-any-return]


def _current_lease(session: Session, user: User, now: dt.datetime) -> ReviewSlot | None:
    return session.exec(
        select(ReviewSlot).join(Candidate, Candidate.id == ReviewSlot.candidate_id)  # type: ignore[arg-type]
        .where(ReviewSlot.reviewer_id == user.id, ReviewSlot.verdict.is_(None),  # type: ignore[union-attr]
               ReviewSlot.withdrawn == False, ReviewSlot.lease_expires_at >= now,  # type: ignore[operator]  # noqa: E712
               ReviewSlot.round == Candidate.current_round, Candidate.status == CandidateStatus.open.value)
        .order_by(col(ReviewSlot.leased_at)).limit(1)
    ).first()


def current_task(session: Session, user: User) -> Task | None:
    """The live lease this user holds, if any (read only)."""
    held = _current_lease(session, user, utcnow())
    if held is None:
        return None
    return Task(held, session.get(Candidate, held.candidate_id), resumed=True)  # type: ignore[arg-type]


def next_task(session: Session, user: User, settings: Settings, *, rng: random.Random | None = None,
              ip: str = "") -> Task | None:
    """Lease the most urgent slot this recognizer may take (or return the lease they hold); commits.

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
    for _attempt in range(3):
        now = utcnow()
        # One person's claims are serialised, so they can never race themself onto both slots.
        # FOR NO KEY UPDATE: rows referring to the user (notifications, slots) can still be written meanwhile.
        session.exec(select(User).where(User.id == user.id).with_for_update(key_share=True)).one()
        held = _current_lease(session, user, now)
        if held is not None:
            candidate = session.get(Candidate, held.candidate_id)
            session.commit()
            return Task(held, candidate, resumed=True)  # type: ignore[arg-type]
        slot = _lock_first(session, _available_slots(user, settings, now, known_answer=False))
        if slot is None:
            session.commit()
            return None
        if share > 0 and rng.random() < share:
            known = _lock_first(session, _available_slots(user, settings, now, known_answer=True))
            if known is None and create_known_answer_task(session, settings, rng, avoid_seen_by=user.id) is not None:
                known = _lock_first(session, _available_slots(user, settings, now, known_answer=True))
            if known is not None:
                slot = known
        try:
            task = _lease(session, user, slot, settings, now, ip)
        except IntegrityError:
            session.rollback()
            continue
        session.commit()
        return task
    session.rollback()
    return None


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
        session.add(SeenCandidate(candidate_id=slot.candidate_id, user_id=_id(user), first_seen_at=now))
    session.flush()
    audit.record(session, "review.lease", actor=user, object_type="review_slot", object_id=slot.id,
                 detail={"candidate_id": slot.candidate_id, "round": slot.round,
                         "expires_at": slot.lease_expires_at.isoformat()}, ip=ip)
    candidate = session.get(Candidate, slot.candidate_id)
    return Task(slot, candidate)  # type: ignore[arg-type]


def expire_leases(session: Session) -> int:
    """Return every slot whose lease ran out (no verdict) to the queue; caller commits. Returns how many."""
    now = utcnow()
    stmt = select(ReviewSlot).where(
        ReviewSlot.verdict.is_(None), ReviewSlot.reviewer_id.is_not(None),  # type: ignore[union-attr]
        ReviewSlot.withdrawn == False, ReviewSlot.lease_expires_at < now)  # type: ignore[operator]  # noqa: E712
    if _is_postgres(session):
        stmt = stmt.with_for_update(skip_locked=True)
    slots = session.exec(stmt).all()
    for slot in slots:
        previous = slot.reviewer_id
        slot.reviewer_id = None
        slot.leased_at = None
        slot.lease_expires_at = None
        slot.revealed_full_faces = False
        session.add(slot)
        session.flush()
        audit.record(session, "review.lease_expired", object_type="review_slot", object_id=slot.id,
                     detail={"candidate_id": slot.candidate_id, "previous_reviewer_id": previous})
    return len(slots)


@sweep("review.expire_leases")
def sweep_expired_leases(engine: Engine, settings: Settings, services: dict[str, Any]) -> int:
    """Periodic sweep (claims also take over expired slots, so the queue never waits for it)."""
    with session_scope(engine) as session:
        return expire_leases(session)


# Working on a task
def _held_slot(session: Session, user: User, slot_id: int, action: str, ip: str = "") -> ReviewSlot:
    """The slot, if this user holds a live lease on it; otherwise a recorded refusal."""
    slot = session.get(ReviewSlot, slot_id)
    if slot is None:
        raise _refuse(session, user, action, "not_found", "No such review task.", object_id=slot_id, ip=ip)
    if slot.reviewer_id != user.id or slot.verdict is not None or slot.withdrawn:
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
    candidate = session.get(Candidate, slot.candidate_id)
    return Task(slot, candidate, resumed=True)  # type: ignore[arg-type]


def reveal_full_faces(session: Session, user: User, slot_id: int, ip: str = "") -> ReviewSlot:
    """Record that the holder revealed the full faces (kept with the verdict); commits."""
    slot = _held_slot(session, user, slot_id, "review.reveal", ip)
    if not slot.revealed_full_faces:
        slot.revealed_full_faces = True
        session.add(slot)
        audit.record(session, "review.reveal", actor=user, object_type="review_slot", object_id=slot.id,
                     detail={"candidate_id": slot.candidate_id}, ip=ip)
    session.commit()
    return slot


def slot_image_sha(session: Session, user: User, slot_id: int, kind: str, ip: str = "") -> str:
    """The stored image behind one of a held slot's pictures; faces only after the reveal."""
    if kind not in IMAGE_KINDS:
        raise ReviewError("not_found", "No such picture.")
    slot = _held_slot(session, user, slot_id, "review.image", ip)
    if kind.endswith("-face") and not slot.revealed_full_faces:
        raise _refuse(session, user, "review.image", "forbidden", "Reveal the full faces first.",
                      object_id=slot_id, ip=ip)
    candidate = session.get(Candidate, slot.candidate_id)
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


def lock_candidate(session: Session, candidate_id: int) -> Candidate | None:
    """The candidate row, locked for this transaction (the decision of a round is serialised on it)."""
    stmt = select(Candidate).where(Candidate.id == candidate_id).execution_options(populate_existing=True)
    if _is_postgres(session):
        # NO KEY UPDATE: inserting rows that refer to the candidate (seen, slots) does not wait on it.
        stmt = stmt.with_for_update(key_share=True)
    return session.exec(stmt).first()


def submit_verdict(session: Session, user: User, slot_id: int, verdict: str, note: str = "",
                   idempotency_key: str | None = None, ip: str = "",
                   settings: Settings | None = None) -> VerdictResult:
    """Store one verdict and, if it completes the round, decide the candidate; one transaction, commits.

    Idempotent: sending the same verdict again (with the same key, or none) returns
    the stored one; a different verdict for a slot already answered is refused.  A
    verdict on an expired lease is refused, not counted, and the slot returns to the queue.
    """
    action = "review.verdict"
    settings = settings or get_settings()
    if user.is_suspended:
        raise _refuse(session, user, action, "suspended", SUSPENDED_MESSAGE + " Your verdict was not counted.",
                      object_id=slot_id, ip=ip)
    try:
        verdict = Verdict(verdict).value
    except ValueError:
        raise _refuse(session, user, action, "invalid",
                      "The verdict must be one of: same, different, cannot_tell.", object_id=slot_id, ip=ip) from None
    note = (note or "").strip()
    if len(note) > NOTE_MAX:
        raise _refuse(session, user, action, "invalid", f"The note is too long (at most {NOTE_MAX} characters).",
                      object_id=slot_id, ip=ip)
    stored_key: str | None = None
    if idempotency_key:
        if len(idempotency_key) > IDEMPOTENCY_KEY_MAX or not idempotency_key.isprintable():
            raise _refuse(session, user, action, "invalid",
                          f"The Idempotency-Key must be at most {IDEMPOTENCY_KEY_MAX} printable characters.",
                          object_id=slot_id, ip=ip)
        # Keys are per account: one person's key can never collide with another's.
        stored_key = f"{user.id}:{idempotency_key}"
        earlier = session.exec(select(ReviewSlot).where(ReviewSlot.idempotency_key == stored_key)).first()
        if earlier is not None:
            if earlier.id != slot_id or earlier.verdict != verdict:
                raise _refuse(session, user, action, "conflict",
                              "This Idempotency-Key was already used for another verdict.", object_id=slot_id, ip=ip)
            session.commit()
            return VerdictResult(earlier, replayed=True)

    peek = session.get(ReviewSlot, slot_id)
    if peek is None:
        raise _refuse(session, user, action, "not_found", "No such review task.", object_id=slot_id, ip=ip)
    # Lock the candidate first: the two verdicts of a round are serialised, so the
    # second one always sees the first and the decision is taken exactly once.
    candidate = lock_candidate(session, peek.candidate_id)
    slot = session.exec(select(ReviewSlot).where(ReviewSlot.id == slot_id)
                        .execution_options(populate_existing=True)).one()
    assert candidate is not None
    now = utcnow()
    if slot.reviewer_id != user.id:
        # Seen the candidate, and holding or having answered none of its other slots: the lease on this
        # slot was theirs and ran out.  Holding the other slot means this one was never theirs.
        holds_other = session.exec(select(ReviewSlot.id).where(ReviewSlot.candidate_id == candidate.id,
                                                               ReviewSlot.reviewer_id == user.id)).first()
        had_it = holds_other is None and session.get(SeenCandidate, (candidate.id, user.id)) is not None
        if not had_it:  # someone else's slot: the same answer as a missing one
            raise _refuse(session, user, action, "not_found", "No such review task.", object_id=slot_id, ip=ip,
                          detail={"why": "not held by this recognizer"})
        raise _refuse(session, user, action, "lease_expired",
                      "This task is no longer leased to you: your time on it ran out and it went back to the queue. "
                      "Your verdict was not counted.", object_id=slot_id, ip=ip)
    if slot.verdict is not None:
        if slot.verdict == verdict:
            session.commit()
            return VerdictResult(slot, replayed=True)
        raise _refuse(session, user, action, "conflict",
                      "You already gave a different verdict on this task; it cannot be changed.",
                      object_id=slot_id, ip=ip)
    if (slot.withdrawn or slot.voided_at is not None or candidate.status != CandidateStatus.open.value
            or slot.round != candidate.current_round):
        raise _refuse(session, user, action, "withdrawn",
                      "This task was withdrawn (the subject was closed). Your verdict was not counted.",
                      object_id=slot_id, ip=ip)
    expires = _aware(slot.lease_expires_at)
    if expires is None or expires < now:
        # Refuse, and give the slot back to the queue in the same breath.
        _drop_pending(session)
        if slot.reviewer_id == user.id and slot.verdict is None:
            slot.reviewer_id = None
            slot.leased_at = None
            slot.lease_expires_at = None
            slot.revealed_full_faces = False
            session.add(slot)
        audit.record(session, action, actor=user, outcome=AuditOutcome.denied, object_type="review_slot",
                     object_id=slot_id, detail={"reason": "lease_expired", "expired_at": str(expires)}, ip=ip)
        session.commit()
        raise ReviewError("lease_expired",
                          f"Your time on this task ran out at {expires:%H:%M:%S} UTC and it went back to the queue. "
                          "Your verdict was not counted." if expires else "This task is not leased to you.")

    slot.verdict = verdict
    slot.note = note
    slot.verdict_at = now
    slot.idempotency_key = stored_key
    # The author's standing as it was when they answered (shown with a flag's evidence).
    slot.reviewer_record = qualification.record_for(session, user).snapshot()
    session.add(slot)
    try:
        session.flush()
    except IntegrityError:
        # The same key arrived twice at once: the other request stored it.
        session.rollback()
        earlier = session.exec(select(ReviewSlot).where(ReviewSlot.idempotency_key == stored_key)).first()
        if earlier is not None and earlier.id == slot_id and earlier.verdict == verdict:
            return VerdictResult(earlier, replayed=True)
        raise ReviewError("conflict", "This Idempotency-Key was already used for another verdict.") from None
    audit.record(session, action, actor=user, object_type="review_slot", object_id=slot.id,
                 detail={"candidate_id": candidate.id, "round": slot.round, "verdict": verdict,
                         "revealed_full_faces": slot.revealed_full_faces, "note": bool(note)}, ip=ip)
    decided = _decide_if_complete(session, candidate, now)
    if candidate.is_known_answer:
        # A known-answer verdict may end probation, or suspend the account (voiding its undecided verdicts).
        qualification.reassess(session, user, settings)
    session.commit()
    return VerdictResult(slot, replayed=False, decided=decided)


def _counting_slots(session: Session, candidate_id: int) -> list[ReviewSlot]:
    """A candidate's slots that count: not withdrawn, not voided."""
    return list(session.exec(select(ReviewSlot).where(ReviewSlot.candidate_id == candidate_id,
                                                      ReviewSlot.withdrawn == False,  # noqa: E712
                                                      col(ReviewSlot.voided_at).is_(None))
                             .order_by(col(ReviewSlot.round), col(ReviewSlot.slot_no))).all())


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


# Managers
def eligible_recognizers(session: Session, candidate: Candidate, settings: Settings | None = None) -> list[User]:
    """Recognizers who could take the new round: active, unsuspended, served live tasks at all (not on a
    probation that serves known-answer pairs only), never shown this candidate, not its sighting's uploader."""
    seen = select(SeenCandidate.user_id).where(SeenCandidate.candidate_id == candidate.id)
    users = session.exec(select(User).where(User.is_active == True, User.id.not_in(seen))  # type: ignore[union-attr]  # noqa: E712
                         .order_by(col(User.id))).all()
    uploader = None
    if candidate.sighting_id is not None:
        sighting = session.get(Sighting, candidate.sighting_id)
        uploader = sighting.uploaded_by if sighting else None
    # With settings that serve probation known-answer pairs only, a recognizer on probation takes no live round.
    live_only_when_qualified = settings is not None and settings.probation_known_answer_share >= 1.0
    return [u for u in users if u.has_role(Role.recognizer) and u.id != uploader and not u.is_suspended
            and not (live_only_when_qualified and u.qualification == Qualification.probation.value)]


def escalate(session: Session, manager: User, candidate_id: int, ip: str = "",
             settings: Settings | None = None) -> Candidate:
    """Send a disputed candidate to a new round of two recognizers who have not seen it; commits.

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
    session.commit()
    return candidate


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
    if _is_postgres(session):
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


@dataclass
class DisputedCandidate:
    candidate: Candidate
    subject: Subject
    verdicts: list[ReviewSlot]
    eligible: int

    @property
    def final(self) -> bool:
        """Disputed in its last possible round: it can no longer be escalated."""
        return self.candidate.current_round >= MAX_ROUNDS

    @property
    def last_round(self) -> list[ReviewSlot]:
        return [s for s in self.verdicts if s.round == self.candidate.current_round]


def disputed_candidates(session: Session, limit: int = 200,
                        settings: Settings | None = None) -> list[DisputedCandidate]:
    """Disputed real candidates on active subjects, oldest first, with their verdicts (managers only)."""
    rows = session.exec(
        select(Candidate, Subject).join(Subject, Subject.id == Candidate.subject_id)  # type: ignore[arg-type]
        .where(Candidate.status == CandidateStatus.disputed.value, Candidate.known_truth.is_(None),  # type: ignore[union-attr]
               searchable_clause())  # type: ignore[arg-type]
        .order_by(col(Candidate.priority_at), col(Candidate.id)).limit(limit)
    ).all()
    out = []
    for candidate, subject in rows:
        slots = [s for s in _counting_slots(session, _id(candidate)) if s.verdict is not None]
        eligible = len(eligible_recognizers(session, candidate, settings))
        out.append(DisputedCandidate(candidate, subject, list(slots), eligible))
    return out


def queue_size_for(session: Session, user: User, settings: Settings) -> int:
    """How many slots this recognizer could take now (real ones only)."""
    stmt = _available_slots(user, settings, utcnow(), known_answer=False)
    return int(session.exec(select(func.count()).select_from(stmt.order_by(None).subquery())).one())
