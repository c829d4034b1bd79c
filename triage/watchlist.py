"""The watchlist: subjects, their reference photos, closing, expiry and bulk enrolment.

Every function that changes something takes the session, performs the whole
change in the caller's transaction, appends the gallery change that keeps
every process's index in step (``triage.gallery``) and writes its audit entry.
Face analysis is slow, so it happens before the transaction
(``analyze_for_enrolment``), never inside it.
"""

from __future__ import annotations

import csv
import datetime as dt
import fnmatch
import hashlib
import io
import logging
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Engine, func, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from triage import audit
from triage.clock import utcnow
from triage.config import Settings
from triage.gallery import (
    ADD,
    REMOVE_SUBJECT,
    active_model_id,
    is_searchable,
    lock_changes,
    record_change,
    searchable_clause,
    today,
)
from triage.models import AuditOutcome, ReferenceEmbedding, ReferencePhoto, Subject, SubjectStatus, User
from triage.storage import ImageStore, store_image
from triage.worker import sweep

log = logging.getLogger("miatari.watchlist")

# A face this many times larger (by area) than every other face in a photo is taken
# to be the subject's; otherwise the manager must pick one.
DOMINANT_FACE_AREA_RATIO = 2.0
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".gif"})
MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "bmp": "image/bmp",
               "tiff": "image/tiff", "heif": "image/heif", "heic": "image/heic", "gif": "image/gif"}
MAX_ZIP_MEMBERS = 20_000
CLOSING_STATUSES = (SubjectStatus.arrested, SubjectStatus.withdrawn)


class WatchlistError(ValueError):
    """A refused watchlist change; the message is meant for the user."""


class SubjectNotFound(LookupError):
    pass


class EnrolmentRefused(WatchlistError):
    """A reference photo that cannot be enrolled (no face, several faces, not an image)."""

    def __init__(self, message: str, faces: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.faces = list(faces)


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
            .group_by(ReferencePhoto.subject_id)
        ).all())
    return [(s, counts.get(s.id, 0)) for s in subjects], int(total)  # type: ignore[arg-type]


def reference_photos(session: Session, subject_id: int) -> list[ReferencePhoto]:
    return list(session.exec(select(ReferencePhoto).where(ReferencePhoto.subject_id == subject_id)
                             .order_by(ReferencePhoto.id)).all())


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
        audit.record(session, "subject.update", actor=actor, object_type="subject", object_id=subject_id,
                     outcome=AuditOutcome.denied, detail={"reason": "closed"}, ip=ip)
        session.commit()
        raise WatchlistError(f"This subject is closed ({subject.status}); it can no longer be edited.")
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
    from triage import review

    record_change(session, REMOVE_SUBJECT, subject.id)  # type: ignore[arg-type]
    withdrawn = review.withdraw_for_subject(session, subject.id, actor)
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
        audit.record(session, "subject.close", actor=actor, object_type="subject", object_id=subject_id,
                     outcome=AuditOutcome.denied, detail={"reason": "already closed", "status": subject.status}, ip=ip)
        session.commit()
        raise WatchlistError(f"This subject is already closed ({subject.status}).")
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


@sweep("expiry")
def expiry_sweep(engine: Engine, settings: Settings, services: dict[str, Any]) -> list[int]:
    """Scheduled: expire subjects whose date has come, even if nobody looks at them."""
    del settings
    with Session(engine, expire_on_commit=False) as session:
        expired = expire_subjects(session)
        session.commit()
    if expired:
        log.info("expired subjects %s", expired)
        found = services.get("gallery")
        if found is not None:
            found.sync()
    return expired


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

    Returns the reference photo and whether it is new.  A refusal is audited
    (and committed) before ``EnrolmentRefused`` is raised.
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
        audit.record(session, "subject.photo.enrol", actor=actor, object_type="subject", object_id=subject_id,
                     outcome=AuditOutcome.denied, detail={"reason": str(exc), "sha256": analysis.sha256,
                                                          "faces": len(analysis.faces)}, ip=ip)
        session.commit()
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


# Bulk enrolment
@dataclass
class ImportPhoto:
    label: str
    read: Callable[[], bytes]


@dataclass
class ImportSubject:
    """One subject of a planned import.

    ``key`` names it within the import (``dir:FOLDER``, ``csv:CASE|NAME``, ``id:N``); the subject it
    creates is keyed by the import's reference *and* this key, so a later import never adds to it.
    ``target_id`` is an existing subject the user named explicitly for it (CSV ``subject_id``
    column, or a folder-to-subject mapping): the only way an import adds to an existing subject.
    """

    key: str
    fields: SubjectCreate
    photos: list[ImportPhoto] = field(default_factory=list)
    target_id: int | None = None
    label: str = ""


@dataclass
class ImportFailure:
    label: str
    reason: str


@dataclass
class ImportSummary:
    subjects_seen: int = 0
    subjects_created: int = 0
    photos_seen: int = 0
    photos_enrolled: int = 0
    photos_already: int = 0
    photos_analyzed: int = 0
    seconds: float = 0.0
    failures: list[ImportFailure] = field(default_factory=list)

    @property
    def photos_per_second(self) -> float:
        return self.photos_analyzed / self.seconds if self.seconds > 0 else 0.0

    def failure_reasons(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for f in self.failures:
            counts[f.reason] = counts.get(f.reason, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))

    def as_dict(self) -> dict[str, Any]:
        return {"subjects_seen": self.subjects_seen, "subjects_created": self.subjects_created,
                "photos_seen": self.photos_seen, "photos_enrolled": self.photos_enrolled,
                "photos_already_enrolled": self.photos_already, "photos_analyzed": self.photos_analyzed,
                "photos_failed": len(self.failures), "seconds": round(self.seconds, 2),
                "photos_per_second": round(self.photos_per_second, 2), "failure_reasons": self.failure_reasons()}


def _matches(name: str, include: Sequence[str]) -> bool:
    return not include or any(fnmatch.fnmatch(name, pattern) for pattern in include)


def _is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES and not PurePosixPath(name).name.startswith(".")


def _folder_subject(name: str, key_prefix: str) -> SubjectCreate:
    return SubjectCreate(name=name, case_ref=name[:100])


def plan_folder(root: Path, include: Sequence[str] = ()) -> list[ImportSubject]:
    """One subject per sub-folder (its name is the subject's name and case reference)."""
    root = Path(root)
    if not root.is_dir():
        raise WatchlistError(f"{root} is not a folder.")
    plan: list[ImportSubject] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        photos = [ImportPhoto(str(p), p.read_bytes) for p in sorted(folder.iterdir())
                  if p.is_file() and _is_image_name(p.name) and _matches(p.name, include)]
        if photos:
            plan.append(ImportSubject(f"dir:{folder.name}", _folder_subject(folder.name, "dir"), photos,
                                      label=folder.name))
    return plan


CSV_FIELDS = ("name", "case_ref", "aliases", "priority", "notes", "expires_on", "subject_id")


def plan_csv(csv_path: Path, mapping: dict[str, str] | None = None, include: Sequence[str] = ()) -> list[ImportSubject]:
    """Rows of subject fields plus photo paths; rows with the same name and case reference are one subject.

    Columns: ``name`` and ``photo`` are required; ``case_ref`` (defaults to the
    name), ``aliases``, ``priority``, ``notes``, ``expires_on`` are optional;
    ``subject_id`` names an existing subject the row's photos are added to
    (the only way a CSV adds to a subject enrolled before; its other fields are ignored);
    further photos in ``photo2``, ``photo3``… or several paths in one cell
    separated by ``;``.  ``mapping`` renames columns (``{"name": "identity",
    "photo": "file"}`` reads CelebA's ``identities.csv``).  Photo paths are
    relative to the CSV's folder.
    """
    csv_path = Path(csv_path)
    mapping = mapping or {}
    base = csv_path.parent
    by_key: dict[str, ImportSubject] = {}
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        source = {f: mapping.get(f, f) for f in (*CSV_FIELDS, "photo")}
        if source["name"] not in columns or source["photo"] not in columns:
            raise WatchlistError(f"{csv_path.name}: needs columns {source['name']!r} and {source['photo']!r} "
                                 f"(found {', '.join(columns)}); map others with --map name=COLUMN photo=COLUMN.")
        photo_cols = [source["photo"]] + sorted(c for c in columns if c.startswith("photo") and c != source["photo"])
        for line_no, row in enumerate(reader, start=2):
            def value(name: str, row: dict[str, str] = row) -> str:
                return (row.get(source[name]) or "").strip()

            target_id: int | None = None
            if value("subject_id"):
                try:
                    target_id = int(value("subject_id").lstrip("#"))
                except ValueError:
                    raise WatchlistError(f"{csv_path.name} line {line_no}: subject_id must be a subject's number, "
                                         f"not {value('subject_id')!r}.") from None
            try:
                # With a subject_id the row's fields are not used: the subject exists.
                name = value("name") or (f"#{target_id}" if target_id is not None else "")
                fields = SubjectCreate(
                    name=name, case_ref=value("case_ref") or name[:100], aliases=value("aliases"),
                    priority=int(value("priority") or 3), notes=value("notes"),
                    expires_on=dt.date.fromisoformat(value("expires_on")) if value("expires_on") else None)
            except (ValueError, TypeError) as exc:
                raise WatchlistError(f"{csv_path.name} line {line_no}: {_first_error(exc)}") from exc
            key = f"id:{target_id}" if target_id is not None else f"csv:{fields.case_ref}|{fields.name}"
            item = by_key.setdefault(key, ImportSubject(key, fields, target_id=target_id,
                                                        label=f"#{target_id}" if target_id else fields.name))
            for c in photo_cols:
                for rel in (row.get(c) or "").split(";"):
                    rel = rel.strip()
                    if rel and _matches(PurePosixPath(rel).name, include):
                        path = (base / rel) if not Path(rel).is_absolute() else Path(rel)
                        item.photos.append(ImportPhoto(str(path), path.read_bytes))
    return list(by_key.values())


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        e = errors()[0]
        return f"{'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg', '')}"
    return str(exc)


def plan_zip(data: bytes, include: Sequence[str] = ()) -> list[ImportSubject]:
    """A ZIP of the folder layout (one folder per subject, possibly under one top folder), or of a CSV layout."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise WatchlistError("This is not a ZIP file.") from exc
    members = [m for m in archive.infolist() if not m.is_dir() and "__MACOSX" not in m.filename]
    if len(members) > MAX_ZIP_MEMBERS:
        raise WatchlistError(f"The ZIP holds more than {MAX_ZIP_MEMBERS} files.")
    groups: dict[str, list[zipfile.ZipInfo]] = {}
    for m in members:
        parts = PurePosixPath(m.filename).parts
        if len(parts) < 2 or ".." in parts or not _is_image_name(parts[-1]) or not _matches(parts[-1], include):
            continue
        groups.setdefault(parts[-2], []).append(m)

    def reader(info: zipfile.ZipInfo) -> Callable[[], bytes]:
        return lambda: archive.read(info)

    return [ImportSubject(f"dir:{name}", _folder_subject(name, "dir"),
                          [ImportPhoto(m.filename, reader(m)) for m in sorted(items, key=lambda i: i.filename)],
                          label=name)
            for name, items in sorted(groups.items())]


# Naming existing subjects, and the preview shown before anything is enrolled
MAX_TARGETS_TEXT = 20_000


def parse_targets(text: str) -> dict[str, int]:
    """``FOLDER = SUBJECT_ID`` lines (``#`` before the number is allowed; blank lines are skipped)."""
    targets: dict[str, int] = {}
    if len(text) > MAX_TARGETS_TEXT:
        raise WatchlistError(f"The list of existing subjects is too long (at most {MAX_TARGETS_TEXT} characters).")
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        folder, sep, number = line.partition("=")
        folder, number = folder.strip(), number.strip().lstrip("#")
        if not sep or not folder or not number.isdigit():
            raise WatchlistError(f"Existing subjects, line {line_no}: write FOLDER = SUBJECT_NUMBER, "
                                 f"e.g. '001 = 17' (got {line.strip()[:80]!r}).")
        if folder in targets:
            raise WatchlistError(f"Existing subjects, line {line_no}: folder {folder!r} is named twice.")
        targets[folder] = int(number)
    return targets


def name_targets(plan: Sequence[ImportSubject], targets: dict[str, int]) -> list[ImportSubject]:
    """Point the folders the user named at existing subjects; every other folder stays a new subject."""
    by_label = {item.label: item for item in plan}
    unknown = sorted(set(targets) - set(by_label))
    if unknown:
        raise WatchlistError(f"The import has no folder named {', '.join(repr(u) for u in unknown[:5])}.")
    for label, subject_id in targets.items():
        by_label[label].target_id = subject_id
    return list(plan)


def import_key(import_ref: str, item: ImportSubject) -> str:
    return f"{import_ref}/{item.key}"[:300]


@dataclass
class PlannedSubject:
    """One line of an import's preview."""

    label: str
    photos: int
    action: str  # new | existing (named explicitly) | resumed (created by this same import before)
    subject_id: int | None = None
    subject_name: str = ""
    # Existing subjects with the same name or case reference: never added to unless named explicitly.
    lookalikes: list[int] = field(default_factory=list)

    def describe(self) -> str:
        if self.action == "existing":
            return f"adds to existing subject #{self.subject_id} {self.subject_name} (named explicitly)"
        if self.action == "resumed":
            return f"continues subject #{self.subject_id} {self.subject_name}, created by this import"
        note = (f" (subject{'s' if len(self.lookalikes) > 1 else ''} "
                f"{', '.join(f'#{i}' for i in self.lookalikes)} with the same name or case reference "
                "exist: not added to)") if self.lookalikes else ""
        return "new" + note


PREVIEW_CHUNK = 500


def preview_import(session: Session, plan: Sequence[ImportSubject], import_ref: str) -> list[PlannedSubject]:
    """What the import will do, subject by subject; refuses (``WatchlistError``) a named subject that
    does not exist or is closed, before anything is enrolled."""
    targets = sorted({i.target_id for i in plan if i.target_id is not None})
    found = {s.id: s for s in session.exec(select(Subject).where(col(Subject.id).in_(targets))).all()}
    missing = [t for t in targets if t not in found]
    if missing:
        raise WatchlistError(f"No subject {', '.join(f'#{t}' for t in missing[:10])}: "
                             "an import adds only to subjects that exist.")
    closed = [t for t in targets if found[t].status != SubjectStatus.active.value]
    if closed:
        raise WatchlistError(f"Subject {', '.join(f'#{t} ({found[t].status})' for t in closed[:10])} "
                             "is closed: photos can no longer be added to it.")
    new = [i for i in plan if i.target_id is None]
    keys = [import_key(import_ref, i) for i in new]
    resumed: dict[str, Subject] = {}
    names: dict[str, list[int]] = {}
    for start in range(0, len(new), PREVIEW_CHUNK):
        chunk_keys = keys[start:start + PREVIEW_CHUNK]
        for subject in session.exec(select(Subject).where(col(Subject.import_key).in_(chunk_keys))).all():
            resumed[subject.import_key] = subject  # type: ignore[index]
        values = {i.fields.name for i in new[start:start + PREVIEW_CHUNK]} | \
            {i.fields.case_ref for i in new[start:start + PREVIEW_CHUNK]}
        for subject in session.exec(select(Subject).where(or_(col(Subject.name).in_(values),
                                                              col(Subject.case_ref).in_(values)))).all():
            for value in {subject.name, subject.case_ref}:
                names.setdefault(value, []).append(subject.id)  # type: ignore[arg-type]
    rows: list[PlannedSubject] = []
    for item in plan:
        if item.target_id is not None:
            target = found[item.target_id]
            rows.append(PlannedSubject(item.label, len(item.photos), "existing", target.id, target.name))
            continue
        mine = resumed.get(import_key(import_ref, item))
        if mine is not None:
            rows.append(PlannedSubject(item.label, len(item.photos), "resumed", mine.id, mine.name))
            continue
        alike = sorted(set(names.get(item.fields.name, []) + names.get(item.fields.case_ref, [])))
        rows.append(PlannedSubject(item.label, len(item.photos), "new", lookalikes=alike))
    return rows


@dataclass
class AnalysisTask:
    subject_id: int
    label: str
    data: bytes


# Result of analysing one task: a FaceAnalysis, or the reason it could not be analysed.
AnalyzeMany = Callable[[Iterable[AnalysisTask]], Iterator[tuple[AnalysisTask, "FaceAnalysis | str"]]]


def analyze_serially(settings: Settings, pipeline: Any, models: Sequence[str] = ()) -> AnalyzeMany:
    """Analyse in this process, one photo after another (the web page's ZIP import)."""

    def run(tasks: Iterable[AnalysisTask]) -> Iterator[tuple[AnalysisTask, FaceAnalysis | str]]:
        for task in tasks:
            yield task, analyze_task(task.data, settings, pipeline, models)

    return run


def analyze_task(data: bytes, settings: Settings, pipeline: Any, models: Sequence[str] = ()) -> FaceAnalysis | str:
    try:
        return analyze_for_enrolment(data, settings, pipeline, models)
    except EnrolmentRefused as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - one bad photo must not stop an import
        return f"could not be analysed ({type(exc).__name__})"


def _subject_for(engine: Engine, item: ImportSubject, actor: User | None, import_ref: str) -> tuple[int, bool]:
    if item.target_id is not None:
        return item.target_id, False  # named explicitly (checked by the preview, its status again below)
    key = import_key(import_ref, item)
    with Session(engine, expire_on_commit=False) as session:
        found = session.exec(select(Subject).where(Subject.import_key == key)).first()
        if found is not None:
            return found.id, False  # type: ignore[return-value]
        try:
            subject = create_subject(session, item.fields, actor, import_key=key)
            session.commit()
            return subject.id, True  # type: ignore[return-value]
        except IntegrityError:
            session.rollback()
            found = session.exec(select(Subject).where(Subject.import_key == key)).one()
            return found.id, False  # type: ignore[return-value]


def run_import(engine: Engine, store: ImageStore, settings: Settings, plan: Sequence[ImportSubject],
               analyze_many: AnalyzeMany, actor: User | None = None,
               progress: Callable[[int], None] | None = None, source: str = "", *,
               import_ref: str) -> ImportSummary:
    """Enrol a planned import; resumable and idempotent (a photo already enrolled is skipped by its hash).

    ``import_ref`` names this import: the subjects it creates are keyed by it, so running the
    same import again (after an interruption) finds them, and another import never does.  It adds
    to an existing subject only where the plan names one (``ImportSubject.target_id``).
    ``progress(n)`` is called as photos are dealt with (skipped, enrolled or failed).
    """
    summary = ImportSummary(subjects_seen=len(plan))
    started = time.monotonic()
    tick = progress or (lambda n: None)

    def tasks() -> Iterator[AnalysisTask]:
        for item in plan:
            subject_id, created = _subject_for(engine, item, actor, import_ref)
            summary.subjects_created += int(created)
            with Session(engine) as session:
                status = session.exec(select(Subject.status).where(Subject.id == subject_id)).first() or "missing"
                known = set(session.exec(select(ReferencePhoto.image_sha256)
                                         .where(ReferencePhoto.subject_id == subject_id)).all())
            for photo in item.photos:
                summary.photos_seen += 1
                try:
                    data = photo.read()
                except OSError as exc:
                    summary.failures.append(ImportFailure(photo.label, f"cannot be read ({exc.strerror})"))
                    tick(1)
                    continue
                if hashlib.sha256(data).hexdigest() in known:
                    summary.photos_already += 1
                    tick(1)
                    continue
                if status != SubjectStatus.active.value:
                    summary.failures.append(ImportFailure(photo.label, f"subject is closed ({status})"))
                    tick(1)
                    continue
                yield AnalysisTask(subject_id, photo.label, data)

    for task, result in analyze_many(tasks()):
        summary.photos_analyzed += 1
        if isinstance(result, str):
            summary.failures.append(ImportFailure(task.label, result))
        else:
            try:
                with Session(engine, expire_on_commit=False) as session:
                    _, created = enrol_reference_photo(session, store, task.subject_id, result, actor,
                                                       view=PurePosixPath(task.label).stem[:40])
                    session.commit()
                if created:
                    summary.photos_enrolled += 1
                else:
                    summary.photos_already += 1
            except EnrolmentRefused as exc:
                summary.failures.append(ImportFailure(task.label, _short_reason(str(exc))))
        tick(1)
    summary.seconds = time.monotonic() - started
    with Session(engine) as session:
        audit.record(session, "watchlist.import", actor=actor, object_type="watchlist", object_id=source[:64],
                     outcome=AuditOutcome.ok if not summary.failures else AuditOutcome.error,
                     detail={**summary.as_dict(), "import": import_ref,
                             "added_to": sorted({i.target_id for i in plan if i.target_id is not None})})
        session.commit()
    return summary


def _short_reason(message: str) -> str:
    if message.startswith("No face was found"):
        return "no face found"
    if "faces and the subject's cannot be told apart" in message:
        return "several faces, subject's cannot be told apart"
    return message
