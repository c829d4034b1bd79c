"""The matching job: every face of a sighting becomes a probe; its top-k subjects become candidates.

The slow part (face analysis, gallery search) runs outside any transaction;
the probes, their candidates and review slots, the sighting's status and the
job's completion then commit together in one transaction.  A worker that
dies before that commit leaves nothing behind, and a run whose lease was
taken over rolls back (``LeaseLost``), so a job completes exactly once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, col, select

from triage import audit, events, review, services
from triage.clock import utcnow
from triage.gallery import model_name, searchable_clause
from triage.models import Job, Probe, Sighting, SightingPhoto, SightingStatus, Subject
from triage.sightings import DONE_STATUSES, photos_of
from triage.storage import store_image
from triage.watchlist import face_landmarks
from triage.worker import JobContext, PermanentJobError

log = logging.getLogger("miatari.matching")


@dataclass
class MatchResult:
    sighting_id: int
    status: str
    faces: int = 0
    candidates: int = 0
    unsearched: int = 0  # faces too small to search (Settings.min_face_iod_px)
    probe_ids: list[int] = field(default_factory=list)


@dataclass
class _AnalysedPhoto:
    photo: SightingPhoto
    faces: list[Any]
    hits: list[list[Any] | None]  # None: the face was too small to search
    error: str = ""
    model_id: str = ""  # the gallery model the faces were embedded with and searched against


def _start(ctx: JobContext) -> tuple[Sighting, list[SightingPhoto]] | MatchResult:
    with Session(ctx.engine, expire_on_commit=False) as session:
        sighting = session.get(Sighting, ctx.job.ref_id)
        if sighting is None:
            raise PermanentJobError(f"sighting {ctx.job.ref_id} does not exist")
        if sighting.status in DONE_STATUSES:
            # Already matched (a job row re-queued by hand): nothing to add.
            ctx.finish_in(session)
            session.commit()
            return MatchResult(sighting.pk, sighting.status, sighting.faces_found)
        photos = photos_of(session, sighting.pk)
        sighting.status = SightingStatus.matching.value
        session.add(sighting)
        session.commit()
        return sighting, photos


class ModelUnavailable(RuntimeError):
    """This process cannot embed with the gallery's face model (see /readyz)."""


def _search_photo(pipeline: Any, gallery: Any, decoded: Any, settings: Any) -> tuple[list[Any], list[Any], str]:
    """Faces embedded with the gallery's model, and their hits; again with the new model if the
    gallery switched models in between."""
    from matcher import ModelMismatch, is_searchable_probe

    for _ in range(3):
        model_id = gallery.model_id
        faces = list(pipeline.analyze_image(decoded, models=[model_name(model_id)]))
        hits: list[list[Any] | None] = []
        try:
            for face in faces:
                vector = face.embeddings.get(model_id)
                if vector is None:
                    raise ModelUnavailable(f"the gallery searches with {model_id}; this process embeds "
                                           f"{', '.join(face.embeddings)} (re-embed: `miatari reindex`)")
                face.embedding, face.model_id = vector, model_id
                if not is_searchable_probe(face.quality, settings.min_face_iod_px):
                    hits.append(None)  # too small: its ranking would be chance (docs/matcher.md)
                    continue
                hits.append(gallery.search(vector, settings.top_k, min_score=settings.lead_threshold,
                                           model_id=model_id))
        except ModelMismatch:
            continue  # switched since the embedding: embed with the new model
        return faces, hits, model_id
    raise ModelMismatch("the gallery's face model kept changing during the search")


def _analyse(ctx: JobContext, photos: list[SightingPhoto]) -> list[_AnalysedPhoto]:
    from matcher import ImageError, decode_image

    pipeline = services.pipeline(ctx.services)
    gallery = services.gallery(ctx.services)
    settings = ctx.settings
    out: list[_AnalysedPhoto] = []
    for photo in photos:
        data = ctx.store.get(photo.image_sha256)
        try:
            decoded = decode_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels)
            faces, hits, model_id = _search_photo(pipeline, gallery, decoded, settings)
        except ImageError as exc:
            # Validated at upload, so only a damaged store gets here: say so on the photo, keep going.
            out.append(_AnalysedPhoto(photo, [], [], str(exc)))
            continue
        out.append(_AnalysedPhoto(photo, faces, hits, model_id=model_id))
    return out


def match_sighting(ctx: JobContext) -> MatchResult:
    """Find the faces of a sighting's photos and propose candidates for review."""
    from matcher import embedding_to_bytes

    started = _start(ctx)
    if isinstance(started, MatchResult):
        return started
    sighting, photos = started
    analysed = _analyse(ctx, photos)

    with Session(ctx.engine, expire_on_commit=False) as session:
        row = session.exec(select(Sighting).where(Sighting.id == sighting.id).with_for_update()).one()
        if row.status in DONE_STATUSES:
            raise PermanentJobError(f"sighting {row.id} was matched by another run")
        hit_subjects = {h.subject_id for a in analysed for hs in a.hits for h in hs or []}
        # A subject closed or expired since the search is never proposed (the index may lag by a sync).
        searchable = set(session.exec(select(Subject.id).where(col(Subject.id).in_(hit_subjects),
                                                               searchable_clause())).all()) if hit_subjects else set()
        result = MatchResult(sighting.pk, SightingStatus.no_face.value)
        for item in analysed:
            photo = session.get(SightingPhoto, item.photo.id)
            assert photo is not None
            photo.faces_found = len(item.faces)
            session.add(photo)
            for face, hits in zip(item.faces, item.hits, strict=True):
                q = face.quality
                probe = Probe(
                    sighting_id=sighting.pk, sighting_photo_id=photo.pk, face_index=int(face.index),
                    bbox=[int(v) for v in face.bbox], landmarks=face_landmarks(face), detector=str(face.detector)[:40],
                    iod_px=float(q.iod_px), blur=float(q.blur), yaw_deg=float(q.yaw_deg), quality_ok=bool(q.ok),
                    quality_issues=", ".join(q.issues)[:200], searched=hits is not None,
                    embedding=embedding_to_bytes(face.embedding), model_id=item.model_id,
                    eye_crop_sha256=store_image(session, ctx.store, face.eye_crop_png, "image/png"),
                    face_chip_sha256=store_image(session, ctx.store, face.face_chip_png, "image/png"),
                )
                session.add(probe)
                session.flush()
                result.probe_ids.append(probe.pk)
                if hits is None:
                    result.unsearched += 1
                    continue
                kept = [h for h in hits if h.subject_id in searchable]
                result.candidates += len(review.create_candidates_for_probe(session, probe, kept, ctx.settings))
            result.faces += len(item.faces)
        result.status = SightingStatus.matched.value if result.faces else SightingStatus.no_face.value
        row.status = result.status
        row.faces_found = result.faces
        row.matched_at = utcnow()
        session.add(row)
        audit.record(session, "sighting.match", object_type="sighting", object_id=sighting.id,
                     detail={"job_id": ctx.job.id, "faces": result.faces, "candidates": result.candidates,
                             "faces_too_small": result.unsearched,
                             "photo_errors": [a.error for a in analysed if a.error]})
        ctx.finish_in(session)
        session.commit()
    log.info("sighting %s: %d faces, %d candidates", sighting.id, result.faces, result.candidates)
    return result



def matching_failed(session: Session, _services: services.Services, job: Job) -> None:
    """The worker gave up on a sighting's matching: managers and the uploading officer are told."""
    events.job_failed_for_good(session, job)
