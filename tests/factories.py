"""Builders for watchlist, sighting and review rows without running the face model.

The crops are small generated PNGs stored through the real image store; the
embeddings are arbitrary bytes, recorded under the active gallery model.  Candidates are made by the real
``triage.review.create_candidates_for_probe``.
"""

from __future__ import annotations

import datetime as dt
import io
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw
from sqlmodel import Session, select

from triage import review
from triage.clock import utcnow
from triage.config import Settings
from triage.gallery import gallery_model
from triage.models import (
    Candidate,
    Probe,
    ReferenceEmbedding,
    ReferencePhoto,
    Sighting,
    SightingPhoto,
    Subject,
    SubjectStatus,
)
from triage.storage import ImageStore, store_image

_counter = itertools.count(1)
EMBEDDING = bytes(range(256)) * 2  # 128 float32


def _embedding_of(session: Session) -> tuple[str, bytes]:
    """The active gallery model and arbitrary bytes of its vector length."""
    row = gallery_model(session)
    return row.model_id, (EMBEDDING * (row.dim // 128 + 1))[: row.dim * 4]


def png(seed: int, size: tuple[int, int] = (96, 48)) -> bytes:
    """A small distinct PNG (a coloured background with a pair of dark 'eyes')."""
    img = Image.new("RGB", size, ((seed * 53) % 256, (seed * 97) % 256, (seed * 31) % 256))
    d = ImageDraw.Draw(img)
    w, h = size
    d.ellipse((w * 0.2, h * 0.35, w * 0.4, h * 0.65), fill=(20, 20, 20))
    d.ellipse((w * 0.6, h * 0.35, w * 0.8, h * 0.65), fill=(20, 20, 20))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def store_png(session: Session, store: ImageStore, seed: int | None = None, size: tuple[int, int] = (96, 48)) -> str:
    seed = next(_counter) if seed is None else seed
    return store_image(session, store, png(seed, size), "image/png", *size)


def image_store(settings: Settings) -> ImageStore:
    return ImageStore(Path(settings.images_dir))


def make_subject(session: Session, store: ImageStore, *, name: str | None = None, priority: int = 3,
                 photos: int = 1, status: str = SubjectStatus.active.value) -> Subject:
    n = next(_counter)
    subject = Subject(name=name or f"Subject {n}", case_ref=f"CASE-{n}", priority=priority, status=status)
    session.add(subject)
    session.flush()
    for i in range(photos):
        add_reference_photo(session, store, subject, view=f"view{i}")
    return subject


def add_reference_photo(session: Session, store: ImageStore, subject: Subject, view: str = "",
                        embedding: bytes | None = None) -> ReferencePhoto:
    photo = ReferencePhoto(subject_id=subject.pk, image_sha256=store_png(session, store, size=(160, 200)),
                           view=view, eye_crop_sha256=store_png(session, store),
                           face_chip_sha256=store_png(session, store, size=(112, 112)))
    session.add(photo)
    session.flush()
    model_id, default = _embedding_of(session)
    embedding = default if embedding is None else embedding
    session.add(ReferenceEmbedding(reference_photo_id=photo.pk, model_id=model_id,
                                   dim=len(embedding) // 4, embedding=embedding))
    session.flush()
    return photo


def make_sighting(session: Session, store: ImageStore, uploaded_by: int, *,
                  observed_at: dt.datetime | None = None, location: str = "Main St station") -> Sighting:
    now = utcnow()
    sighting = Sighting(uploaded_by=uploaded_by, observed_at=observed_at or now, location_text=location,
                        status="matched", faces_found=1, created_at=now, matched_at=now)
    session.add(sighting)
    session.flush()
    session.add(SightingPhoto(sighting_id=sighting.pk, position=0,
                              image_sha256=store_png(session, store, size=(320, 240)), faces_found=1))
    session.flush()
    return sighting


def make_probe(session: Session, store: ImageStore, sighting: Sighting, face_index: int = 0) -> Probe:
    photo = session.exec(select(SightingPhoto).where(SightingPhoto.sighting_id == sighting.pk)).first()
    assert photo is not None, "make_sighting stores a photo"
    model_id, embedding = _embedding_of(session)
    probe = Probe(sighting_id=sighting.pk, sighting_photo_id=photo.pk, face_index=face_index,
                  embedding=embedding, model_id=model_id, eye_crop_sha256=store_png(session, store),
                  face_chip_sha256=store_png(session, store, size=(112, 112)))
    session.add(probe)
    session.flush()
    return probe



def stored_ids(values: Iterable[int | None]) -> list[int]:
    """Ids read back from the database: a primary key is never NULL."""
    out: list[int] = []
    for v in values:
        assert v is not None, "a stored row has an id"
        out.append(v)
    return out


@dataclass
class FakeHit:
    """The shape of a matcher hit (subject, best reference photo, distance, score, rank)."""

    subject_id: int
    reference_photo_id: int
    distance: float
    score: float
    rank: int


def make_candidate(session: Session, store: ImageStore, settings: Settings, uploaded_by: int, *,
                   subject: Subject | None = None, score: float = 0.8, observed_at: dt.datetime | None = None,
                   priority: int = 3) -> Candidate:
    """A sighting with one probe, matched to one subject: one candidate with two open slots."""
    subject = subject or make_subject(session, store, priority=priority)
    photo = session.exec(select(ReferencePhoto).where(ReferencePhoto.subject_id == subject.pk)).first()
    assert photo is not None, "make_subject stores a reference photo"
    sighting = make_sighting(session, store, uploaded_by, observed_at=observed_at)
    probe = make_probe(session, store, sighting)
    hits = [FakeHit(subject.pk, photo.pk, 1.0 - score, score, 1)]
    (candidate,) = review.create_candidates_for_probe(session, probe, hits, settings)
    return candidate
