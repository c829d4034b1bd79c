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

from triage import audit, review, services
from triage.clock import utcnow
from triage.gallery import searchable_clause
from triage.models import Probe, Sighting, SightingPhoto, SightingStatus, Subject
from triage.sightings import DONE_STATUSES, MATCH_JOB, photos_of
from triage.storage import store_image
from triage.watchlist import face_landmarks
from triage.worker import JobContext, PermanentJobError, job_function

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


def _start(ctx: JobContext) -> tuple[Sighting, list[SightingPhoto]] | MatchResult:
    with Session(ctx.engine, expire_on_commit=False) as session:
        sighting = session.get(Sighting, ctx.job.ref_id)
        if sighting is None:
            raise PermanentJobError(f"sighting {ctx.job.ref_id} does not exist")
        if sighting.status in DONE_STATUSES:
            # Already matched (a job row re-queued by hand): nothing to add.
            ctx.finish_in(session)
            session.commit()
            return MatchResult(sighting.id, sighting.status, sighting.faces_found)  # type: ignore[arg-type]
        photos = photos_of(session, sighting.id)  # type: ignore[arg-type]
        sighting.status = SightingStatus.matching.value
        session.add(sighting)
        session.commit()
        return sighting, photos


def _analyse(ctx: JobContext, photos: list[SightingPhoto]) -> list[_AnalysedPhoto]:
    from matcher import ImageError, decode_image, is_searchable_probe

    pipeline = services.pipeline(ctx.services)
    gallery = services.gallery(ctx.services)
    settings = ctx.settings
    out: list[_AnalysedPhoto] = []
    for photo in photos:
        data = ctx.store.get(photo.image_sha256)
        try:
            decoded = decode_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels)
            faces = list(pipeline.analyze_image(decoded))
        except ImageError as exc:
            # Validated at upload, so only a damaged store gets here: say so on the photo, keep going.
            out.append(_AnalysedPhoto(photo, [], [], str(exc)))
            continue
        hits: list[list[Any] | None] = []
        for face in faces:
            if not is_searchable_probe(face.quality, settings.min_face_iod_px):
                hits.append(None)  # too small: its ranking would be chance (docs/matcher.md)
                continue
            hits.append(gallery.search(face.embedding, settings.top_k, min_score=settings.lead_threshold))
        out.append(_AnalysedPhoto(photo, faces, hits))
    return out


@job_function(MATCH_JOB)
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
        result = MatchResult(sighting.id, SightingStatus.no_face.value)  # type: ignore[arg-type]
        for item in analysed:
            photo = session.get(SightingPhoto, item.photo.id)
            assert photo is not None
            photo.faces_found = len(item.faces)
            session.add(photo)
            for face, hits in zip(item.faces, item.hits, strict=True):
                q = face.quality
                probe = Probe(
                    sighting_id=sighting.id, sighting_photo_id=photo.id, face_index=int(face.index),  # type: ignore[arg-type]
                    bbox=[int(v) for v in face.bbox], landmarks=face_landmarks(face), detector=str(face.detector)[:40],
                    iod_px=float(q.iod_px), blur=float(q.blur), yaw_deg=float(q.yaw_deg), quality_ok=bool(q.ok),
                    quality_issues=", ".join(q.issues)[:200], searched=hits is not None,
                    embedding=embedding_to_bytes(face.embedding),
                    eye_crop_sha256=store_image(session, ctx.store, face.eye_crop_png, "image/png"),
                    face_chip_sha256=store_image(session, ctx.store, face.face_chip_png, "image/png"),
                )
                session.add(probe)
                session.flush()
                result.probe_ids.append(probe.id)  # type: ignore[arg-type]
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

