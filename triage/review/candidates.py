"""Creating candidates: from the matcher's hits for a probe, and known-answer pairs.

Known-answer tasks are made from a settled real case when one exists, else from reference photos,
their probe side re-rendered (``triage.known_answer``).
"""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from PIL import Image
from sqlalchemy import exists, or_
from sqlmodel import Session, col, select

from triage import audit, known_answer
from triage.clock import utcnow
from triage.config import Settings
from triage.gallery import is_searchable
from triage.models import (
    Candidate,
    CandidateStatus,
    Probe,
    ReferencePhoto,
    SeenCandidate,
    Sighting,
    StoredImage,
    Subject,
    SubjectStatus,
    Verdict,
)
from triage.review._common import SLOTS_PER_ROUND, _counting_slots, _id, _new_slots
from triage.review.verdicts import outcome_for
from triage.storage import ImageStore, register_image

KNOWN_ANSWER_PAIR_ATTEMPTS = 12
# Settled real cases considered for a known-answer pair (the most recently decided).
KNOWN_ANSWER_CASES = 200
RENDITION_ATTEMPTS = 5


class Hit(Protocol):
    subject_id: int
    reference_photo_id: int
    distance: float
    score: float
    rank: int


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


@dataclass(frozen=True)
class _Rendition:
    """A fresh rendition of one probe side, written to the store but not registered yet."""

    eyes: bytes
    face: bytes
    digests: tuple[str, str]  # what the store files them under
    seed: int


def _render_probe_side(session: Session, store: ImageStore, eyes_sha: str, face_sha: str, rng: random.Random,
                       how: known_answer.Degradation) -> _Rendition:
    """A fresh rendition of one probe side; its bytes exist nowhere else in the system."""
    for _ in range(RENDITION_ATTEMPTS):
        seed = rng.getrandbits(63)
        eyes, face, _params = known_answer.render_pair(store.get(eyes_sha), store.get(face_sha), seed, how)
        digests = (hashlib.sha256(eyes).hexdigest(), hashlib.sha256(face).hexdigest())
        if any(session.get(StoredImage, d) is not None for d in digests):
            continue
        for data in (eyes, face):
            store.put(data)
        return _Rendition(eyes, face, digests, seed)
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
    plan = plan_known_answer(session, settings, rng, avoid_seen_by)
    return add_planned_known_answer(session, plan) if plan is not None else None


@dataclass(frozen=True)
class KnownAnswerPlan:
    """A known-answer pair chosen and its probe side rendered (the pictures are in the store already):
    what ``add_planned_known_answer`` turns into a candidate."""

    pair: _Pair
    truth: str
    rendition: _Rendition


def plan_known_answer(session: Session, settings: Settings, rng: random.Random | None = None,
                      avoid_seen_by: int | None = None) -> KnownAnswerPlan | None:
    """The slow half of ``create_known_answer_task``: choose the pair and render its probe side.  It only
    reads the database (and writes the new pictures to the content-addressed store), so a claim does it
    before it takes SQLite's write lock.  None when nothing can make a pair."""
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
        if cases[truth]:
            pair = _pair_from_case(session, rng.choice(cases[truth]))
        else:
            pair = _pair_from_photos(session, truth, by_subject, multi, rng, avoid_seen_by)
        if pair is not None:
            rendition = _render_probe_side(session, store, pair.eyes_sha, pair.face_sha, rng, pair.how)
            return KnownAnswerPlan(pair, truth, rendition)
    return None


@dataclass
class _Pair:
    """What a known-answer pair is made from: the probe side's pictures, and where they came from."""

    reference: ReferencePhoto
    eyes_sha: str
    face_sha: str
    how: known_answer.Degradation
    source: Candidate | None = None  # a settled real case
    probe_photo: ReferencePhoto | None = None  # or another reference photo


def _pair_from_case(session: Session, source: Candidate) -> _Pair | None:
    probe = session.get(Probe, source.probe_id)
    reference = session.get(ReferencePhoto, source.reference_photo_id)
    if probe is None or reference is None:
        return None
    return _Pair(reference, probe.eye_crop_sha256, probe.face_chip_sha256, known_answer.FROM_PROBE, source=source)


def _pair_from_photos(session: Session, truth: str, by_subject: dict[int, list[ReferencePhoto]], multi: list[int],
                      rng: random.Random, avoid_seen_by: int | None) -> _Pair | None:
    """Two reference photos: of one subject for *same*, of two for *different*; None if the recognizer saw it."""
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
        return None
    return _Pair(reference, probe_photo.eye_crop_sha256, probe_photo.face_chip_sha256, known_answer.FROM_REFERENCE,
                 probe_photo=probe_photo)


def add_planned_known_answer(session: Session, plan: KnownAnswerPlan) -> Candidate:
    """The quick half: register the rendered pictures and add the candidate with its two round-1 slots
    (caller's transaction)."""
    pair, rendition = plan.pair, plan.rendition
    eyes, face = (register_image(session, digest, len(data), "image/png", *_size(data))
                  for data, digest in zip((rendition.eyes, rendition.face), rendition.digests, strict=True))
    source, probe_photo, reference = pair.source, pair.probe_photo, pair.reference
    now = utcnow()
    candidate = Candidate(probe_id=None, sighting_id=None, subject_id=reference.subject_id,
                          reference_photo_id=_id(reference),
                          known_probe_photo_id=probe_photo.id if probe_photo else None,
                          known_source_candidate_id=source.id if source else None,
                          known_probe_eyes_sha256=eyes, known_probe_face_sha256=face, known_truth=plan.truth,
                          score=0.0, distance=0.0, rank=0, priority_at=now, created_at=now)
    session.add(candidate)
    session.flush()
    for slot in _new_slots(candidate, 1):
        session.add(slot)
    session.flush()
    audit.record(session, "candidate.create_known_answer", object_type="candidate", object_id=candidate.id,
                 detail={"probe_photo_id": probe_photo.id if probe_photo else None,
                         "source_candidate_id": source.id if source else None,
                         "reference_photo_id": reference.id, "truth": plan.truth,
                         "rendition_seed": rendition.seed})
    return candidate
