"""The search gallery: each process's in-memory index, kept in step with the database.

The index holds the embeddings of the reference photos of active, unexpired
subjects, of one face model only: the *active gallery model* (the single
``gallery_model`` row).  It is rebuilt from the database when a process starts,
then kept in step through the append-only ``gallery_change`` table: every
enrolment, closing and expiry appends a row in its own transaction, and every
process applies the rows it has not seen yet every ``gallery_sync_seconds`` and
before each search.  A subject closed in one process therefore leaves every
other process's index within seconds, and at once for the next search.

When re-embedding (``triage.reindex``) makes another model the active one, it
appends a ``switch_model`` change in the same transaction; a process applying it
rebuilds its index from that model's embeddings, and its probes are embedded
with that model from then on (``Gallery.model_id``).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import ColumnElement, Engine, func, or_
from sqlalchemy import select as core_select
from sqlmodel import Session, col, select

from triage import prom
from triage.clock import utcnow
from triage.models import (
    AuditHead,
    GalleryChange,
    GalleryModel,
    ReferenceEmbedding,
    ReferencePhoto,
    Subject,
    SubjectStatus,
)

if TYPE_CHECKING:
    from matcher import Hit

log = logging.getLogger("miatari.gallery")

ADD = "add"
REMOVE_SUBJECT = "remove_subject"
REMOVE_PHOTO = "remove_photo"
SWITCH_MODEL = "switch_model"


class GalleryModelMissing(RuntimeError):
    """The database has no active gallery model (it was not migrated)."""


def gallery_model(session: Session) -> GalleryModel:
    """The active gallery model's row: what every process searches and embeds probes with."""
    row = session.get(GalleryModel, 1)
    if row is None:
        raise GalleryModelMissing("the database names no active face model: run `miatari migrate`")
    return row


def active_model_id(session: Session) -> str:
    return gallery_model(session).model_id


def model_name(model_id: str) -> str:
    """``"dlib@55533b28a95800a5"`` -> ``"dlib"``: the name the matcher builds the model by."""
    return model_id.split("@", 1)[0]


def enrolment_models(engine: Engine, configured: str) -> list[str]:
    """The models a reference photo is embedded with: the gallery's and the configured one
    (``Settings.face_model``), when they differ (a re-embedding is pending or under way).

    Read in a short transaction of its own, before the (slow) analysis."""
    with Session(engine) as session:
        active = model_name(active_model_id(session))
    return [active] if configured == active else [active, configured]


def today() -> dt.date:
    return utcnow().date()


def searchable_clause(on: dt.date | ColumnElement[dt.date] | None = None) -> ColumnElement[bool]:
    """SQL condition for a subject that belongs in the gallery: active and not expired (on ``on``, a day
    or a bound parameter).

    A subject expires at the start of its expiry date (UTC).
    """
    on = today() if on is None else on
    return (col(Subject.status) == SubjectStatus.active.value) & or_(col(Subject.expires_on).is_(None),
                                                                    col(Subject.expires_on) > on)


def is_searchable(subject: Subject, on: dt.date | None = None) -> bool:
    on = on or today()
    return subject.status == SubjectStatus.active.value and (subject.expires_on is None or subject.expires_on > on)


_GALLERY_COLUMNS = tuple(col(c) for c in (
    ReferencePhoto.id, ReferencePhoto.subject_id, ReferenceEmbedding.embedding, ReferencePhoto.iod_px,
    ReferencePhoto.blur, ReferencePhoto.yaw_deg, ReferencePhoto.quality_issues))


def _gallery_rows(model_id: str) -> Any:
    """Searchable reference photos joined with their embedding of ``model_id`` (photos without one are left out)."""
    return (
        core_select(*_GALLERY_COLUMNS)
        .join(ReferenceEmbedding, (col(ReferenceEmbedding.reference_photo_id) == ReferencePhoto.id)
              & (col(ReferenceEmbedding.model_id) == model_id))
        .join(Subject, col(Subject.id) == ReferencePhoto.subject_id)
        .where(searchable_clause())
    )


def reference_photo_searchable(iod_px: float, blur: float, yaw_deg: float, quality_issues: str) -> bool:
    """The matcher's quality gate for reference photos (docs/matcher.md): a photo too small or too
    blurred to be a reliable gallery entry stays on the subject's record but is not searched."""
    from matcher import Quality, is_searchable_reference

    issues = [i for i in quality_issues.replace(",", " ").split() if i]
    quality = Quality(iod_px=iod_px, blur=blur, yaw_deg=yaw_deg, pitch_deg=None, det_score=1.0,
                      ok=not issues, issues=issues)
    return bool(is_searchable_reference(quality))


def lock_changes(session: Session) -> None:
    """Take the lock that orders gallery changes (the audit head row), in the caller's transaction.

    Held from here to the commit, the active gallery model cannot change under the caller."""
    session.exec(select(AuditHead).where(AuditHead.id == 1).with_for_update()).first()


def record_change(session: Session, action: str, subject_id: int, reference_photo_id: int | None = None) -> None:
    """Append a change in the caller's transaction.

    The audit head row is locked first, so change ids are handed out in commit
    order on every database: a process that has applied change N can never
    later see a change with an id below N appear (no gaps to skip).
    """
    lock_changes(session)
    session.add(GalleryChange(action=action, subject_id=subject_id, reference_photo_id=reference_photo_id))
    session.flush()


def _new_index(model_id: str | None = None, dim: int = 128) -> Any:
    # Imported here: the matcher's numeric stack is only loaded by processes that search.
    from matcher import GalleryIndex

    return GalleryIndex(dim, model_id=model_id)


class Gallery:
    """One process's index (of the active model's embeddings) plus the id of the last change applied to it."""

    def __init__(self, engine: Engine, sync_seconds: float = 2.0) -> None:
        self.engine = engine
        self.sync_seconds = sync_seconds
        self.index: Any = _new_index()
        self._lock = threading.RLock()
        self._loaded = False
        self._last_sync = 0.0
        # Reference photo id -> subject id of what is in the index, so that
        # applying a change twice (rebuild racing a change) is harmless.
        self._photos: dict[int, int] = {}

    @property
    def applied_change_id(self) -> int:
        return int(getattr(self.index, "applied_change_id", 0) or 0)

    def _set_applied(self, change_id: int) -> None:
        self.index.applied_change_id = change_id

    def __len__(self) -> int:
        return len(self._photos)

    @property
    def model_id(self) -> str:
        """The face model this index holds, the one probes must be embedded with (loaded on first use)."""
        with self._lock:
            if not self._loaded:
                self.rebuild()
            return str(self.index.model_id)

    def subject_ids(self) -> set[int]:
        with self._lock:
            return set(self._photos.values())

    def _add_rows(self, rows: Iterable[tuple[int, int, bytes]], model_id: str) -> None:
        """Add (photo id, subject id, embedding of ``model_id``) rows that pass the reference-photo quality gate.

        :class:`matcher.ModelMismatch` if ``model_id`` is not the index's model."""
        batch = [(sid, pid, emb) for pid, sid, emb in rows if pid not in self._photos]
        if not batch:
            return
        from matcher import embedding_from_bytes

        embeddings = [embedding_from_bytes(emb) for _, _, emb in batch]
        self.index.add_many([sid for sid, _, _ in batch], [pid for _, pid, _ in batch], np.stack(embeddings),
                            model_id=model_id)
        for sid, pid, _ in batch:
            self._photos[pid] = sid

    def rebuild(self) -> None:
        """Load every searchable reference photo's embedding of the active model; start applying
        changes after the newest one."""
        with self._lock, Session(self.engine) as session:
            # Read the change tip first: anything committed after it is applied by sync(),
            # a model switch included.
            tip = session.exec(select(func.max(GalleryChange.id))).one() or 0
            active = gallery_model(session)
            rows = session.exec(_gallery_rows(active.model_id).order_by(ReferencePhoto.id)).all()
            self.index = _new_index(active.model_id, active.dim)
            self._photos = {}
            self._add_rows(((r[0], r[1], r[2]) for r in rows if reference_photo_searchable(*r[3:])),
                           active.model_id)
            self._set_applied(int(tip))
            self._loaded = True
            self._last_sync = time.monotonic()
            prom.gallery_synced(len(self._photos), self.applied_change_id)
        log.info("gallery rebuilt on %s: %d reference photos of %d subjects", active.model_id, len(self._photos),
                 len(self.subject_ids()))

    def sync(self, *, force: bool = True) -> int:
        """Apply the changes not seen yet; returns how many were applied."""
        with self._lock:
            if not self._loaded:
                self.rebuild()
                return 0
            if not force and time.monotonic() - self._last_sync < self.sync_seconds:
                return 0
            applied = 0
            switched = False
            with Session(self.engine) as session:
                changes = session.exec(
                    select(GalleryChange).where(col(GalleryChange.id) > self.applied_change_id)
                    .order_by(col(GalleryChange.id))
                ).all()
                for change in changes:
                    applied += 1
                    if change.action == SWITCH_MODEL:
                        switched = True  # the rebuild below covers everything up to the new tip
                        break
                    self._apply(session, change)
                    self._set_applied(int(change.pk))
            if switched:
                self.rebuild()  # in a transaction of its own (on SQLite, once this one has ended)
            self._last_sync = time.monotonic()
            prom.gallery_synced(len(self._photos), self.applied_change_id)
            return applied

    def _apply(self, session: Session, change: GalleryChange) -> None:
        if change.action == ADD and change.reference_photo_id is not None:
            model_id = self.index.model_id
            row = session.exec(_gallery_rows(model_id).where(ReferencePhoto.id == change.reference_photo_id)).first()
            if row is not None and reference_photo_searchable(*row[3:]):
                self._add_rows([(row[0], row[1], row[2])], model_id)
        elif change.action == REMOVE_SUBJECT:
            self.index.remove_subject(change.subject_id)
            self._photos = {p: s for p, s in self._photos.items() if s != change.subject_id}
        elif change.action == REMOVE_PHOTO and change.reference_photo_id is not None:
            self.index.remove_reference_photo(change.reference_photo_id)
            self._photos.pop(change.reference_photo_id, None)

    def search(self, embedding: np.ndarray, k: int, min_score: float | None = None, *, model_id: str) -> list[Hit]:
        """Top-k subjects for a face embedded with ``model_id``, after applying every change committed so far.

        :class:`matcher.ModelMismatch` if ``model_id`` is not the gallery's model (it may just have
        switched: embed the face again with :attr:`model_id`)."""
        with self._lock:
            self.sync()
            return list(self.index.search(embedding, k, min_score=min_score, model_id=model_id))


class GallerySyncThread:
    """Applies gallery changes in the background every ``sync_seconds``."""

    def __init__(self, gallery: Gallery) -> None:
        self.gallery = gallery
        self.stop_event = threading.Event()
        self._thread = threading.Thread(target=self._run, name="miatari-gallery-sync", daemon=True)

    def _run(self) -> None:
        while not self.stop_event.wait(self.gallery.sync_seconds):
            try:
                self.gallery.sync()
            except Exception:  # noqa: BLE001 - e.g. the database is briefly unreachable
                log.exception("gallery sync failed")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self._thread.is_alive():
            self._thread.join(5)
