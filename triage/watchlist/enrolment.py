"""Reference photos: analysing a photo for enrolment (outside any transaction) and enrolling it.

Enrolling appends the gallery change that keeps every process's index in step (``triage.gallery``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlmodel import Session, select

from triage import audit
from triage.clock import utcnow
from triage.config import Settings
from triage.errors import RefusalEntry
from triage.gallery import ADD, active_model_id, lock_changes, record_change
from triage.models import ReferenceEmbedding, ReferencePhoto, SubjectStatus, User
from triage.storage import ImageStore, store_image
from triage.watchlist.subjects import WatchlistError, get_subject

# A face this many times larger (by area) than every other face in a photo is taken
# to be the subject's; otherwise the manager must pick one.
DOMINANT_FACE_AREA_RATIO = 2.0
MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "bmp": "image/bmp",
               "tiff": "image/tiff", "heif": "image/heif", "heic": "image/heic", "gif": "image/gif"}


class EnrolmentRefused(WatchlistError):
    """A reference photo that cannot be enrolled (no face, several faces, not an image)."""

    def __init__(self, message: str, faces: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.faces = list(faces)


# Reference photos
@dataclass
class FaceAnalysis:
    """What enrolment needs from the matcher, computed outside any transaction."""

    data: bytes
    sha256: str
    media_type: str
    width: int
    height: int
    faces: list[Any]


def analyze_for_enrolment(data: bytes, settings: Settings, pipeline: Any,
                          models: Sequence[str] = ()) -> FaceAnalysis:
    """Decode (size and pixel limits) and find the faces; raises ``EnrolmentRefused`` for a bad file.

    Each face is embedded with the pipeline's model and with ``models``
    (:func:`triage.gallery.enrolment_models`: the gallery's and the configured one)."""
    from matcher import ImageError, decode_image

    try:
        decoded = decode_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels)
        faces = list(pipeline.analyze_image(decoded, models=list(models)))
    except ImageError as exc:
        raise EnrolmentRefused(str(exc)) from exc
    return FaceAnalysis(data=data, sha256=hashlib.sha256(data).hexdigest(),
                        media_type=MEDIA_TYPES.get(str(decoded.format).lower(), "application/octet-stream"),
                        width=decoded.width, height=decoded.height, faces=faces)


def _area(face: Any) -> float:
    _, _, w, h = face.bbox
    return float(w) * float(h)


def choose_face(faces: Sequence[Any], face_index: int | None = None) -> Any:
    """The subject's face: the one picked, the only one, or one clearly larger than the others."""
    if not faces:
        raise EnrolmentRefused("No face was found in this photo. Use a clear, well-lit photo of the face.")
    if face_index is not None:
        for face in faces:
            if face.index == face_index:
                return face
        raise EnrolmentRefused(f"There is no face number {face_index + 1} in this photo "
                               f"(it shows {len(faces)}).", faces)
    if len(faces) == 1:
        return faces[0]
    by_size = sorted(faces, key=_area, reverse=True)
    if _area(by_size[0]) >= DOMINANT_FACE_AREA_RATIO * _area(by_size[1]):
        return by_size[0]
    raise EnrolmentRefused(f"This photo shows {len(faces)} faces and the subject's cannot be told apart: "
                           "pick the face, or use a photo of the subject alone.", faces)


def enrol_reference_photo(session: Session, store: ImageStore, subject_id: int, analysis: FaceAnalysis,
                          actor: User | None, *, face_index: int | None = None, view: str = "",
                          ip: str = "") -> tuple[ReferencePhoto, bool]:
    """Enrol one analysed photo for a subject; the same photo twice is enrolled once.

    Returns the reference photo and whether it is new.  ``EnrolmentRefused`` carries its audit entry,
    written when the caller's transaction ends (``triage.transaction``).
    """
    from matcher import embedding_to_bytes

    subject = get_subject(session, subject_id)
    existing = session.exec(select(ReferencePhoto).where(ReferencePhoto.subject_id == subject_id,
                                                         ReferencePhoto.image_sha256 == analysis.sha256)).first()
    if existing is not None:
        return existing, False
    try:
        if subject.status != SubjectStatus.active.value:
            raise EnrolmentRefused(f"This subject is closed ({subject.status}); photos can no longer be added.")
        face = choose_face(analysis.faces, face_index)
        # From here to the commit the gallery cannot switch models: the photo gets an embedding of
        # the model searched now (and of the configured one, if another: the next gallery's).
        lock_changes(session)
        active = active_model_id(session)
        vectors = dict(getattr(face, "embeddings", None) or {})
        if active not in vectors:
            raise EnrolmentRefused(f"This photo was embedded with {', '.join(vectors) or 'no face model'}, and the "
                                   f"gallery searches with {active}: if the gallery has just switched models, send "
                                   "the photo again; otherwise this installation cannot embed with the gallery's "
                                   "model (Admin > Face model).")
    except EnrolmentRefused as exc:
        exc.audit = RefusalEntry("subject.photo.enrol", actor=actor, object_type="subject", object_id=subject_id,
                                 detail={"reason": str(exc), "sha256": analysis.sha256,
                                         "faces": len(analysis.faces)}, ip=ip)
        raise
    image_sha = store_image(session, store, analysis.data, analysis.media_type, analysis.width, analysis.height)
    eye_sha = store_image(session, store, face.eye_crop_png, "image/png")
    chip_sha = store_image(session, store, face.face_chip_png, "image/png")
    q = face.quality
    photo = ReferencePhoto(
        subject_id=subject_id, image_sha256=image_sha, view=view[:40], face_index=int(face.index),
        bbox=[int(v) for v in face.bbox], landmarks=face_landmarks(face), detector=str(face.detector)[:40],
        iod_px=float(q.iod_px), blur=float(q.blur), yaw_deg=float(q.yaw_deg), quality_ok=bool(q.ok),
        quality_issues=", ".join(q.issues)[:200],
        eye_crop_sha256=eye_sha, face_chip_sha256=chip_sha, created_by=actor.id if actor else None,
    )
    session.add(photo)
    session.flush()
    for model_id, vector in vectors.items():
        session.add(ReferenceEmbedding(reference_photo_id=photo.id, model_id=model_id,  # type: ignore[arg-type]
                                       dim=int(len(vector)), embedding=embedding_to_bytes(vector)))
    subject.updated_at = utcnow()
    session.add(subject)
    audit.record(session, "subject.photo.enrol", actor=actor, object_type="reference_photo", object_id=photo.id,
                 detail={"subject_id": subject_id, "sha256": image_sha, "faces": len(analysis.faces),
                         "face_index": photo.face_index, "quality_ok": photo.quality_ok,
                         "quality_issues": photo.quality_issues, "models": sorted(vectors)}, ip=ip)
    record_change(session, ADD, subject_id, photo.id)
    return photo, True


def face_landmarks(face: Any) -> dict[str, list[float]]:
    """A matcher face's landmarks as JSON-ready lists (reference photos and probes alike)."""
    marks: dict[str, list[float]] = {}
    for name, value in (getattr(face, "landmarks", None) or {}).items():
        try:
            marks[str(name)] = [float(v) for v in value]
        except TypeError:
            continue
    marks.setdefault("left_eye", [float(v) for v in face.left_eye])
    marks.setdefault("right_eye", [float(v) for v in face.right_eye])
    return marks
