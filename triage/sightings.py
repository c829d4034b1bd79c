"""Sightings: a field officer's upload, stored at once and matched by a persistent job.

``create_sighting`` validates everything first (every photo decoded within
the size and pixel limits, the location in range, the fields present) and
only then stores anything: bad input leaves no row and no file behind.  A
retried upload with the same ``Idempotency-Key`` returns the sighting the
first one created; the same key with other photos or fields is refused
(the payload's digest is kept beside the key).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from triage import audit, events, jobs
from triage.clock import utcnow
from triage.config import Settings
from triage.errors import DomainError, RefusalEntry, Refused
from triage.models import (
    MATCH_JOB,
    Candidate,
    CandidateStatus,
    Flag,
    Job,
    JobStatus,
    Probe,
    Role,
    Sighting,
    SightingPhoto,
    SightingStatus,
    Subject,
    User,
)
from triage.storage import ImageStore, store_image
from triage.transaction import checkpoint

IDEMPOTENCY_KEY_MAX = 100
LOCATION_TEXT_MAX = 300
NOTE_MAX = 2000
# A phone's clock may run a little ahead of the server's.
FUTURE_TOLERANCE = dt.timedelta(minutes=10)
OLDEST_SIGHTING = dt.timedelta(days=366)
MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "HEIF": "image/heif"}
BROWSER_TYPES = frozenset({"image/jpeg", "image/png", "image/webp"})
DONE_STATUSES = frozenset({SightingStatus.matched.value, SightingStatus.no_face.value, SightingStatus.failed.value})


class SightingRejected(DomainError, ValueError):
    """Bad input; ``field`` names the form field, the message is for the user."""

    def __init__(self, field: str, message: str, code: str = "invalid", *, audit: RefusalEntry | None = None) -> None:
        super().__init__(code, message, audit=audit)
        self.field = field


class SightingNotFound(Refused, LookupError):
    pass


@dataclass
class PhotoUpload:
    data: bytes
    filename: str = ""
    size: int | None = None  # the whole file's size when known (``data`` may have been cut at the limit)


@dataclass
class SightingInput:
    photos: list[PhotoUpload]
    observed_at: dt.datetime | None = None
    location_text: str = ""
    latitude: float | None = None
    longitude: float | None = None
    note: str = ""
    idempotency_key: str | None = None


@dataclass
class SightingForm:
    """A sighting's fields as an upload form or an API caller sends them (text), read by ``to_input``."""

    observed_at: str = ""
    location_text: str = ""
    latitude: str = ""
    longitude: str = ""
    note: str = ""
    idempotency_key: str = ""
    tz_offset: str = ""  # the browser's minutes from UTC, for a time seen given without a zone

    def to_input(self, photos: list[PhotoUpload]) -> SightingInput:
        """The checked input; raises ``SightingRejected`` naming the field that cannot be read."""
        offset = int(self.tz_offset) if self.tz_offset.strip().lstrip("-").isdigit() else None
        return SightingInput(photos=photos, observed_at=parse_observed_at(self.observed_at, offset),
                             location_text=self.location_text,
                             latitude=parse_coordinate(self.latitude, "latitude", 90.0),
                             longitude=parse_coordinate(self.longitude, "longitude", 180.0), note=self.note,
                             idempotency_key=self.idempotency_key.strip() or None)

    def values(self) -> dict[str, str]:
        """The fields a refused form shows again."""
        return {"observed_at": self.observed_at, "location_text": self.location_text, "latitude": self.latitude,
                "longitude": self.longitude, "note": self.note, "idempotency_key": self.idempotency_key}


@dataclass
class _Checked:
    photo: PhotoUpload
    media_type: str
    width: int
    height: int


@dataclass
class CreateResult:
    sighting: Sighting
    created: bool
    photos: list[SightingPhoto] = field(default_factory=list)


def parse_coordinate(value: str | float | None, name: str, limit: float) -> float | None:
    """A latitude/longitude from a form value; empty means none."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise SightingRejected(name, f"The {name} must be a number.") from exc
    if not math.isfinite(number) or not -limit <= number <= limit:
        raise SightingRejected(name, f"The {name} must be between -{limit:g} and {limit:g}.", "out_of_range")
    return number


def parse_observed_at(value: str | dt.datetime | None, tz_offset_minutes: int | None = None) -> dt.datetime | None:
    """When the person was seen, from an ISO 8601 value; a value without a zone is UTC
    unless the browser said how far its clock is from UTC."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise SightingRejected("observed_at", "The time seen is not a valid date and time.") from exc
    else:
        parsed = value
    if parsed.tzinfo is None:
        offset = dt.timedelta(minutes=-(tz_offset_minutes or 0))
        parsed = parsed.replace(tzinfo=dt.timezone(offset)) if tz_offset_minutes else parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def validate(data: SightingInput, settings: Settings) -> list[_Checked]:
    """Check everything; raises ``SightingRejected`` on the first problem. Stores nothing."""
    from matcher import ImageError, decode_image

    if not data.photos:
        raise SightingRejected("photos", "Add at least one photo.", "missing_field")
    if len(data.photos) > settings.max_photos_per_sighting:
        raise SightingRejected("photos", f"At most {settings.max_photos_per_sighting} photos per sighting.")
    if (data.latitude is None) != (data.longitude is None):
        raise SightingRejected("latitude" if data.latitude is None else "longitude",
                               "Give both latitude and longitude, or neither.", "missing_field")
    for value, name, limit in ((data.latitude, "latitude", 90.0), (data.longitude, "longitude", 180.0)):
        parse_coordinate(value, name, limit)
    if len(data.location_text) > LOCATION_TEXT_MAX:
        raise SightingRejected("location_text", f"The location is longer than {LOCATION_TEXT_MAX} characters.")
    if len(data.note) > NOTE_MAX:
        raise SightingRejected("note", f"The note is longer than {NOTE_MAX} characters.")
    if data.idempotency_key is not None and not 1 <= len(data.idempotency_key) <= IDEMPOTENCY_KEY_MAX:
        raise SightingRejected("idempotency_key", f"The Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} characters.")
    now = utcnow()
    if data.observed_at is not None:
        if data.observed_at > now + FUTURE_TOLERANCE:
            raise SightingRejected("observed_at", "The time seen is in the future.")
        if data.observed_at < now - OLDEST_SIGHTING:
            raise SightingRejected("observed_at", "The time seen is more than a year ago.")
    checked: list[_Checked] = []
    for n, photo in enumerate(data.photos, start=1):
        label = f"Photo {n}" + (f" ({photo.filename})" if photo.filename else "")
        if photo.size is not None and photo.size > settings.max_upload_bytes:
            raise SightingRejected("photos", f"{label}: The file is {photo.size / 1e6:.1f} MB; the limit is "
                                   f"{settings.max_upload_bytes / 1e6:.0f} MB.", "image_too_large")
        try:
            decoded = decode_image(photo.data, max_bytes=settings.max_upload_bytes,
                                   max_pixels=settings.max_image_pixels)
        except ImageError as exc:
            raise SightingRejected("photos", f"{label}: {exc}", getattr(exc, "code", "image_error")) from exc
        checked.append(_Checked(photo, MEDIA_TYPES.get(decoded.format, "application/octet-stream"),
                                decoded.width, decoded.height))
    return checked


def payload_digest(data: SightingInput) -> str:
    """What an idempotent retry must repeat: the photos (by content) and every field given."""
    payload = {
        "photos": [hashlib.sha256(p.data).hexdigest() for p in data.photos],
        "observed_at": data.observed_at.isoformat() if data.observed_at else "",
        "location_text": data.location_text.strip(), "latitude": data.latitude, "longitude": data.longitude,
        "note": data.note.strip(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _replay(session: Session, user: User, found: Sighting, digest: str, ip: str) -> CreateResult:
    """A retry: the same sighting if the payload is the same; refused if the key came with another one."""
    if found.idempotency_digest is not None and found.idempotency_digest != digest:
        raise SightingRejected("idempotency_key", "This Idempotency-Key was already used for a different "
                               "sighting (other photos or details); send a new sighting with a new key.",
                               "idempotency_conflict", audit=RefusalEntry(
                                   "sighting.create", actor=user, object_type="sighting", object_id=found.id, ip=ip,
                                   detail={"field": "idempotency_key", "code": "idempotency_conflict",
                                           "reason": "key reused with a different payload"}))
    return CreateResult(found, created=False)


def _existing(session: Session, user: User, key: str | None) -> Sighting | None:
    if key is None:
        return None
    return session.exec(select(Sighting).where(Sighting.uploaded_by == user.id,
                                               Sighting.idempotency_key == key)).first()


def create_sighting(session: Session, store: ImageStore, settings: Settings, user: User, data: SightingInput,
                    ip: str = "") -> CreateResult:
    """Validate, then store the photos and the sighting and enqueue its matching job.

    Two transactions on purpose: the lookup of the key ends before the photos are decoded, so that slow
    work holds no transaction (on SQLite, no write lock); the sighting is stored in the caller's next one.

    With an idempotency key already used by this officer, returns that sighting
    (``created`` False) and stores nothing new.
    """
    # The key is looked up before the photos are decoded: a retry is answered cheaply.
    digest = payload_digest(data) if data.idempotency_key else None
    if data.idempotency_key:
        found = _existing(session, user, data.idempotency_key)
        if found is not None:
            return _replay(session, user, found, digest or "", ip)
    # Decoding is slow: hold no transaction (on SQLite, no write lock) meanwhile.
    checkpoint(session)
    try:
        checked = validate(data, settings)
    except SightingRejected as exc:
        exc.audit = RefusalEntry("sighting.create", actor=user, object_type="sighting", ip=ip,
                                 detail={"field": exc.field, "reason": exc.message, "code": exc.code})
        raise
    sighting = Sighting(uploaded_by=user.pk,
                        idempotency_key=data.idempotency_key or None, idempotency_digest=digest,
                        observed_at=data.observed_at or utcnow(),
                        location_text=data.location_text.strip(), latitude=data.latitude, longitude=data.longitude,
                        note=data.note.strip())
    try:
        with session.begin_nested():
            photos = _store(session, store, settings, user, data, sighting, checked, ip)
    except IntegrityError:
        # The same key raced in from a concurrent retry: that one won.
        found = _existing(session, user, data.idempotency_key)
        if found is None:
            raise
        return _replay(session, user, found, digest or "", ip)
    return CreateResult(sighting, created=True, photos=photos)


def _store(session: Session, store: ImageStore, settings: Settings, user: User, data: SightingInput,
           sighting: Sighting, checked: list[_Checked], ip: str) -> list[SightingPhoto]:
    """The sighting, its photos, its matching job and its audit entry."""
    session.add(sighting)
    session.flush()
    photos: list[SightingPhoto] = []
    for position, item in enumerate(checked):
        digest = store_image(session, store, item.photo.data, item.media_type, item.width, item.height)
        photo = SightingPhoto(sighting_id=sighting.pk, position=position, image_sha256=digest)
        session.add(photo)
        photos.append(photo)
    session.flush()
    job = jobs.enqueue(session, MATCH_JOB, sighting.pk, max_attempts=settings.job_max_attempts)
    audit.record(session, "sighting.create", actor=user, object_type="sighting", object_id=sighting.id,
                 detail={"photos": [p.image_sha256 for p in photos], "job_id": job.id,
                         "observed_at": sighting.observed_at, "has_coordinates": sighting.latitude is not None,
                         "idempotency_key": bool(data.idempotency_key)}, ip=ip)
    return photos


# Reading
def can_see(user: User, sighting: Sighting) -> bool:
    """Officers see their own sightings; managers see all."""
    return sighting.uploaded_by == user.id or user.has_role(Role.manager)


def get_for(session: Session, user: User, sighting_id: int, ip: str = "") -> Sighting:
    sighting = session.get(Sighting, sighting_id)
    if sighting is None or not can_see(user, sighting):
        # The same answer for "not yours" as for "does not exist"; someone else's sighting is on record.
        error = SightingNotFound(f"No sighting {sighting_id}.")
        if sighting is not None:
            error.recorded_as(RefusalEntry("sighting.view", actor=user, object_type="sighting",
                                           object_id=sighting_id, detail={"reason": "not the uploader"}, ip=ip))
        raise error
    return sighting


def list_for(session: Session, user: User, *, offset: int = 0, limit: int = 50,
             everyone: bool = False) -> tuple[list[Sighting], int]:
    stmt = select(Sighting)
    if not (everyone and user.has_role(Role.manager)):
        stmt = stmt.where(Sighting.uploaded_by == user.id)
    total = session.exec(select(func.count()).select_from(stmt.subquery())).one()
    rows = session.exec(stmt.order_by(col(Sighting.created_at).desc(), col(Sighting.id).desc())
                        .offset(max(offset, 0)).limit(limit)).all()
    return list(rows), int(total)


def photos_of(session: Session, sighting_id: int) -> list[SightingPhoto]:
    return list(session.exec(select(SightingPhoto).where(SightingPhoto.sighting_id == sighting_id)
                             .order_by(col(SightingPhoto.position))).all())


def probes_of(session: Session, sighting_id: int) -> list[Probe]:
    return list(session.exec(select(Probe).where(Probe.sighting_id == sighting_id)
                             .order_by(col(Probe.sighting_photo_id), col(Probe.face_index))).all())


@dataclass
class SightingProgress:
    """What the officer's page shows: never who the candidates are, only how far things got."""

    status: str
    done: bool
    faces_found: int
    candidates: int
    under_review: int
    cleared: int
    disputed: int
    flagged: int
    withdrawn: int
    job_error: str = ""
    faces_too_small: int = 0  # faces found but too small to search (Probe.searched false)

    @property
    def headline(self) -> str:
        """The status in words (the pages never show the stored code)."""
        return STATUS_WORDS.get(self.status, self.status.replace("_", " "))

    @property
    def outcome(self) -> str:
        if self.status == SightingStatus.no_face.value:
            return "No face was found in the photos."
        if self.status == SightingStatus.failed.value:
            return "Matching failed; it can be retried by a manager."
        if not self.done:
            return "Matching…"
        if self.flagged:
            return "Arrest flag raised: investigative lead, confirm identity before any action."
        if self.under_review:
            return f"{self.under_review} candidate(s) under review."
        if self.candidates == 0:
            if self.faces_too_small and self.faces_too_small >= self.faces_found:
                return ("The face found is too small to search: nothing was sent for review. "
                        "A closer or sharper photo of the face may help." if self.faces_found == 1 else
                        "The faces found are too small to search: nothing was sent for review. "
                        "A closer or sharper photo of the faces may help.")
            if self.faces_too_small:
                return f"No match on the watchlist ({self.faces_too_small} face(s) too small to search)."
            return "No match on the watchlist."
        if self.disputed:
            return "Reviewers disagreed: no flag; a manager has been shown the dispute."
        return "Cleared: reviewers found no match."


STATUS_WORDS = {
    SightingStatus.queued.value: "Waiting to be matched",
    SightingStatus.matching.value: "Looking for faces",
    SightingStatus.matched.value: "Matched against the watchlist",
    SightingStatus.no_face.value: "No face found",
    SightingStatus.failed.value: "Matching failed",
}


def photo_progress(status: str, photo: SightingPhoto) -> str:
    """One photo's progress in words, while matching runs and after."""
    if photo.faces_found is None:
        if status == SightingStatus.failed.value:
            return "not searched: matching failed"
        return "looking for faces…" if status == SightingStatus.matching.value else "waiting its turn"
    if photo.faces_found == 0:
        return "no face found"
    return f"{photo.faces_found} face{'s' if photo.faces_found > 1 else ''} found"


def progress_of(session: Session, sighting: Sighting) -> SightingProgress:
    counts = dict(session.exec(
        select(Candidate.status, func.count()).where(Candidate.sighting_id == sighting.id)
        .group_by(Candidate.status)
    ).all())
    flags = session.exec(select(func.count()).select_from(Flag).where(Flag.sighting_id == sighting.id)).one()
    too_small = session.exec(select(func.count()).select_from(Probe)
                             .where(Probe.sighting_id == sighting.id, Probe.searched == False)).one()  # noqa: E712
    status = sighting.status
    job_error = ""
    if status not in DONE_STATUSES:
        job = session.exec(select(Job).where(Job.kind == MATCH_JOB, Job.ref_id == sighting.id)).first()
        if job is not None and job.status == JobStatus.failed.value:
            # The job gave up (its record keeps why); the officer's page says so.
            status = SightingStatus.failed.value
            job_error = job.last_error.splitlines()[0] if job.last_error else ""
    return SightingProgress(
        status=status, done=status in DONE_STATUSES, faces_found=sighting.faces_found,
        candidates=sum(counts.values()), under_review=counts.get(CandidateStatus.open.value, 0),
        cleared=counts.get(CandidateStatus.cleared.value, 0), disputed=counts.get(CandidateStatus.disputed.value, 0),
        flagged=max(counts.get(CandidateStatus.flagged.value, 0), int(flags)),
        withdrawn=counts.get(CandidateStatus.withdrawn.value, 0), job_error=job_error, faces_too_small=int(too_small))


def progress_of_many(session: Session, items: Sequence[Sighting]) -> dict[int, SightingProgress]:
    """``progress_of`` for a page of sightings, in four queries whatever the page's length."""
    ids_ = [x.id for x in items if x.id is not None]
    if not ids_:
        return {}
    counts: dict[int, dict[str, int]] = {i: {} for i in ids_}
    for sid, status, n in session.exec(select(Candidate.sighting_id, Candidate.status, func.count())
                                       .where(col(Candidate.sighting_id).in_(ids_))
                                       .group_by(col(Candidate.sighting_id), col(Candidate.status))).all():
        if sid is not None:  # always: the page's sighting ids
            counts[sid][status] = int(n)
    flags = dict(session.exec(select(Flag.sighting_id, func.count()).where(col(Flag.sighting_id).in_(ids_))
                              .group_by(col(Flag.sighting_id))).all())
    too_small = dict(session.exec(select(Probe.sighting_id, func.count())
                                  .where(col(Probe.sighting_id).in_(ids_), Probe.searched == False)  # noqa: E712
                                  .group_by(col(Probe.sighting_id))).all())
    pending = [x.id for x in items if x.status not in DONE_STATUSES]
    failed_jobs = {j.ref_id: j for j in session.exec(select(Job).where(
        Job.kind == MATCH_JOB, col(Job.ref_id).in_(pending), Job.status == JobStatus.failed.value)).all()} \
        if pending else {}
    out: dict[int, SightingProgress] = {}
    for x in items:
        assert x.id is not None
        c = counts[x.id]
        status, job_error = x.status, ""
        job = failed_jobs.get(x.id)
        if job is not None:
            status = SightingStatus.failed.value
            job_error = job.last_error.splitlines()[0] if job.last_error else ""
        out[x.id] = SightingProgress(
            status=status, done=status in DONE_STATUSES, faces_found=x.faces_found, candidates=sum(c.values()),
            under_review=c.get(CandidateStatus.open.value, 0), cleared=c.get(CandidateStatus.cleared.value, 0),
            disputed=c.get(CandidateStatus.disputed.value, 0),
            flagged=max(c.get(CandidateStatus.flagged.value, 0), int(flags.get(x.id, 0))),
            withdrawn=c.get(CandidateStatus.withdrawn.value, 0), job_error=job_error,
            faces_too_small=int(too_small.get(x.id, 0)))
    return out


def photos_of_many(session: Session, sighting_ids: Sequence[int]) -> dict[int, list[SightingPhoto]]:
    out: dict[int, list[SightingPhoto]] = {i: [] for i in sighting_ids}
    if sighting_ids:
        for p in session.exec(select(SightingPhoto).where(col(SightingPhoto.sighting_id).in_(sighting_ids))
                              .order_by(col(SightingPhoto.sighting_id), col(SightingPhoto.position))).all():
            out[p.sighting_id].append(p)
    return out


def probes_of_many(session: Session, sighting_ids: Sequence[int]) -> dict[int, list[Probe]]:
    out: dict[int, list[Probe]] = {i: [] for i in sighting_ids}
    if sighting_ids:
        stmt = (select(Probe).where(col(Probe.sighting_id).in_(sighting_ids))
                .order_by(col(Probe.sighting_id), col(Probe.sighting_photo_id), col(Probe.face_index)))
        for p in session.exec(stmt).all():
            out[p.sighting_id].append(p)
    return out


def retry_matching(session: Session, user: User, sighting_id: int, ip: str = "") -> Sighting:
    """A manager puts a sighting's failed matching job back in the queue."""
    sighting = session.get(Sighting, sighting_id)
    job = session.exec(select(Job).where(Job.kind == MATCH_JOB, Job.ref_id == sighting_id)).first()
    if sighting is None or job is None or job.status != JobStatus.failed.value or not user.has_role(Role.manager):
        raise SightingRejected("sighting", "Only a sighting whose matching failed can be retried, by a manager.",
                               audit=RefusalEntry("sighting.retry", actor=user, object_type="sighting",
                                                  object_id=sighting_id, detail={"reason": "no failed matching job"},
                                                  ip=ip))
    jobs.retry(session, job.pk)
    events.job_retried(session, job)
    sighting.status = SightingStatus.queued.value
    session.add(sighting)
    audit.record(session, "sighting.retry", actor=user, object_type="sighting", object_id=sighting_id,
                 detail={"job_id": job.id}, ip=ip)
    return sighting


def image_sha_for(session: Session, user: User, sighting_id: int, position: int) -> str:
    """The stored photo of a sighting the user may see."""
    get_for(session, user, sighting_id)
    photo = session.exec(select(SightingPhoto).where(SightingPhoto.sighting_id == sighting_id,
                                                     SightingPhoto.position == position)).first()
    if photo is None:
        raise SightingNotFound("No such photo.")
    return photo.image_sha256


def probe_image_sha(session: Session, user: User, probe_id: int, kind: str) -> str:
    """A probe's eye crop (``eyes``) or face chip (``face``), for a sighting the user may see."""
    probe = session.get(Probe, probe_id)
    if probe is None:
        raise SightingNotFound("No such face.")
    get_for(session, user, probe.sighting_id)
    if kind == "eyes":
        return probe.eye_crop_sha256
    if kind == "face":
        return probe.face_chip_sha256
    raise SightingNotFound("No such image.")


def displayable_image(session: Session, store: ImageStore, sha256: str) -> tuple[bytes, str]:
    """A stored image's bytes and media type for a browser (HEIF is converted to JPEG).

    Callers have already checked that the user may see the record the digest came from.
    """
    from triage.models import StoredImage

    info = session.get(StoredImage, sha256)
    if info is None:
        raise SightingNotFound("No such image.")
    data = store.get(sha256)
    if info.media_type in BROWSER_TYPES:
        return data, info.media_type
    import io

    from PIL import Image

    from matcher import decode_image

    decoded = decode_image(data, max_bytes=max(len(data), 1), max_pixels=10**9)
    out = io.BytesIO()
    Image.fromarray(decoded.rgb).save(out, "JPEG", quality=90)
    return out.getvalue(), "image/jpeg"


def ids(items: Sequence[Sighting]) -> list[int]:
    return [s.id for s in items if s.id is not None]


DECISION_WORDS = {
    CandidateStatus.flagged.value: "arrest flag: both said same person",
    CandidateStatus.cleared.value: "cleared: both said different people",
    CandidateStatus.disputed.value: "disputed: the recognizers did not agree (no flag)",
    CandidateStatus.withdrawn.value: "withdrawn: the subject left the watchlist",
}


@dataclass
class RankedCandidate:
    """One decided candidate of a sighting, as managers see it (never shown to a recognizer)."""

    candidate: Candidate
    subject: Subject
    face_number: int  # 1-based, in the order of the sighting's faces

    @property
    def decision(self) -> str:
        return DECISION_WORDS.get(self.candidate.status, self.candidate.status)


def ranked_candidates(session: Session, user: User, sighting_id: int) -> tuple[list[RankedCandidate], int]:
    """The sighting's decided candidates by face then rank, and how many are still under review.

    Managers only: a recognizer (even one who uploaded the sighting as an officer) never sees which
    subjects the matcher proposed, or their rank; anyone else gets nothing."""
    if not user.has_role(Role.manager) or user.has_role(Role.recognizer):
        return [], 0
    rows = session.exec(select(Candidate, Subject, Probe)
                        .join(Subject, col(Subject.id) == col(Candidate.subject_id))
                        .join(Probe, col(Probe.id) == col(Candidate.probe_id))
                        .where(Candidate.sighting_id == sighting_id)
                        .order_by(col(Probe.sighting_photo_id), col(Probe.face_index), col(Candidate.rank))).all()
    faces: dict[int, int] = {}
    decided, waiting = [], 0
    for candidate, subject, probe in rows:
        number = faces.setdefault(probe.id, len(faces) + 1)  # type: ignore[arg-type]
        if candidate.status == CandidateStatus.open.value:
            waiting += 1
        else:
            decided.append(RankedCandidate(candidate, subject, number))
    return decided, waiting
