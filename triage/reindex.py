"""Re-embedding the reference photos when the face model changes, without downtime.

The gallery searches with one model, the *active* one (``gallery_model``).  When
the configured model (``Settings.face_model``) is another, a *reindex run* embeds
every reference photo of an active subject with it, while the gallery keeps
serving the old model's embeddings:

* the run is a ``reindex`` job of the ordinary worker (claim, lease, retry); it
  works in batches of :data:`BATCH_SIZE` photos, each batch's embeddings and the
  run's progress committed together, so a process killed half-way loses at most
  the batch in flight and the next attempt (or ``miatari reindex``) goes on from
  there; a photo that already has an embedding of the target model is never
  embedded again;
* enrolment meanwhile stores both models' embeddings (``triage.watchlist``);
* once every searchable reference photo has one, the run makes the target the
  active model in one transaction, with a ``switch_model`` gallery change: every
  process then rebuilds its index on the new model and embeds its probes with it
  (``triage.gallery``);
* the old model's rows stay, so nothing is lost and switching back is another
  run that has little to do; ``miatari reindex --purge-old`` deletes them.

A photo whose face cannot be found again is listed on the run and left out; if it
is searchable the run ends without switching, saying which photos stand in the way.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, exists, func
from sqlmodel import Session, col, select

from triage import audit, jobs, services
from triage.clock import utcnow
from triage.config import Settings
from triage.db import rows_affected
from triage.errors import RefusalEntry, Refused
from triage.gallery import (
    ADD,
    SWITCH_MODEL,
    gallery_model,
    is_searchable,
    lock_changes,
    model_name,
    record_change,
    reference_photo_searchable,
)
from triage.models import (
    AuditOutcome,
    Job,
    JobStatus,
    ReferenceEmbedding,
    ReferencePhoto,
    ReindexRun,
    Subject,
    SubjectStatus,
    User,
)
from triage.storage import ImageStore
from triage.worker import JobContext, PermanentJobError

log = logging.getLogger("miatari.reindex")

REINDEX_JOB = "reindex"
BATCH_SIZE = 16
MIN_FACE_OVERLAP = 0.3  # the enrolled face is the one found again overlapping its box at least this much
MAX_FAILURES_KEPT = 500
ACTIVE = (JobStatus.queued.value, JobStatus.running.value)


class ReindexRefused(Refused, ValueError):
    """A re-embedding that cannot be started; the message is meant for the user."""


# Which models
def configured_model_id(settings: Settings) -> str:
    """The id of the configured model from the weights installed here (:class:`matcher.ModelFilesMissing` if absent)."""
    from matcher import model_id_for

    return str(model_id_for(settings.face_model, settings.deepface_home))


def unavailable_reason(settings: Settings, model_id: str) -> str:
    """Why this build cannot embed with ``model_id`` ("" when it can)."""
    from matcher import ModelFilesMissing, available_models, model_id_for

    name = model_name(model_id)
    if name not in available_models():
        return f"this build has no face model {name!r} (it has {', '.join(available_models())})"
    try:
        here = model_id_for(name, settings.deepface_home)
    except ModelFilesMissing as exc:
        return str(exc)
    if here != model_id:
        return f"the {name!r} weights installed here are {here}, not {model_id}"
    return ""


# Progress
def _covered() -> Any:
    """Reference photos a run re-embeds: those of active subjects (expired ones included: an extended
    warrant brings them back)."""
    return (select(ReferencePhoto).join(Subject, col(Subject.id) == ReferencePhoto.subject_id)
            .where(Subject.status == SubjectStatus.active.value))


def _has(model_id: str) -> Any:
    return exists().where(col(ReferenceEmbedding.reference_photo_id) == ReferencePhoto.id,
                          col(ReferenceEmbedding.model_id) == model_id)


def counts(session: Session, model_id: str) -> tuple[int, int]:
    """(reference photos to cover, how many of them hold an embedding of ``model_id``)."""
    base = _covered().subquery()
    total = session.exec(select(func.count()).select_from(base)).one()
    done = session.exec(select(func.count()).select_from(_covered().where(_has(model_id)).subquery())).one()
    return int(total), int(done)


def _pending(session: Session, model_id: str, skip: set[int], limit: int) -> list[ReferencePhoto]:
    stmt = _covered().where(~_has(model_id))
    if skip:
        stmt = stmt.where(col(ReferencePhoto.id).not_in(skip))
    return list(session.exec(stmt.order_by(col(ReferencePhoto.id)).limit(limit)).all())


def _searchable_missing(session: Session, model_id: str) -> list[int]:
    """Searchable reference photos (in the gallery now) without an embedding of ``model_id``."""
    rows = session.exec(
        select(ReferencePhoto, Subject).join(Subject, col(Subject.id) == ReferencePhoto.subject_id)
        .where(Subject.status == SubjectStatus.active.value, ~_has(model_id))
    ).all()
    return [p.pk for p, s in rows if is_searchable(s)
            and reference_photo_searchable(p.iod_px, p.blur, p.yaw_deg, p.quality_issues)]


@dataclass
class ReindexStatus:
    """What the admin page and ``miatari reindex --status`` show."""

    active_model_id: str
    switched_at: dt.datetime
    previous_model_id: str | None
    configured_model_id: str  # "" when the configured model's weights are not installed here
    configured_error: str
    active_unavailable: str  # why this build cannot embed with the active model ("" if it can)
    run: ReindexRun | None  # the latest run
    job: Job | None
    photos_total: int
    photos_done: int

    @property
    def in_progress(self) -> bool:
        return self.run is not None and self.run.status in ACTIVE and not self.job_failed

    @property
    def job_failed(self) -> bool:
        return self.job is not None and self.job.status == JobStatus.failed.value

    @property
    def needs_reindex(self) -> bool:
        return bool(self.configured_model_id) and self.configured_model_id != self.active_model_id

    @property
    def percent(self) -> int:
        return round(100 * self.photos_done / self.photos_total) if self.photos_total else 100

    @property
    def error(self) -> str:
        if self.job_failed and self.job is not None and self.job.last_error:
            return self.job.last_error.splitlines()[0]
        return ""


def latest_run(session: Session) -> ReindexRun | None:
    return session.exec(select(ReindexRun).order_by(col(ReindexRun.id).desc()).limit(1)).first()


def recent_runs(session: Session, limit: int = 10) -> list[ReindexRun]:
    return list(session.exec(select(ReindexRun).order_by(col(ReindexRun.id).desc()).limit(limit)).all())


def job_of(session: Session, run_id: int) -> Job | None:
    return session.exec(select(Job).where(Job.kind == REINDEX_JOB, Job.ref_id == run_id)).first()


def status(session: Session, settings: Settings) -> ReindexStatus:
    from matcher import ModelFilesMissing

    active = gallery_model(session)
    try:
        configured, configured_error = configured_model_id(settings), ""
    except ModelFilesMissing as exc:
        configured, configured_error = "", str(exc)
    run = latest_run(session)
    target = run.target_model_id if run is not None and run.status in ACTIVE else (configured or active.model_id)
    total, done = counts(session, target)
    return ReindexStatus(active.model_id, active.switched_at, active.previous_model_id, configured, configured_error,
                         unavailable_reason(settings, active.model_id), run,
                         job_of(session, run.pk) if run is not None else None, total, done)


# Starting
def start_run(session: Session, settings: Settings, actor: User | None, *, ip: str = "") -> ReindexRun | None:
    """Queue a run to the configured model (in the caller's transaction); the run already under way
    to it if there is one; ``None`` when there is nothing to do (every photo has an embedding of
    the configured model and it is the active one).

    :class:`ReindexRefused`, carrying its audit entry, when the configured model cannot be used here.
    """
    from matcher import ModelFilesMissing

    lock_changes(session)  # processes starting together queue one run, not one each
    try:
        target = configured_model_id(settings)
    except ModelFilesMissing as exc:
        raise ReindexRefused(f"The configured face model {settings.face_model!r} cannot be used: {exc}").recorded_as(
            RefusalEntry("gallery.reindex_start", actor=actor, object_type="reindex_run",
                         detail={"model": settings.face_model, "reason": str(exc)}, ip=ip)) from exc
    running = session.exec(select(ReindexRun).where(col(ReindexRun.status).in_(ACTIVE))
                           .order_by(col(ReindexRun.id))).all()
    for run in running:
        job = job_of(session, run.pk)
        if run.target_model_id == target and (job is None or job.status != JobStatus.failed.value):
            return run
    active = gallery_model(session)
    total, done = counts(session, target)
    if target == active.model_id and done == total:
        return None
    for run in running:  # another target (the setting changed again), or its job gave up
        run.status, run.finished_at = JobStatus.failed.value, utcnow()
        run.failures = [*run.failures, {"photo_id": None, "reason": "superseded by a new run"}][-MAX_FAILURES_KEPT:]
        session.add(run)
    run = ReindexRun(target_model_id=target, from_model_id=active.model_id, created_by=actor.id if actor else None,
                     photos_total=total, photos_done=done)
    session.add(run)
    session.flush()
    jobs.enqueue(session, REINDEX_JOB, run.pk, max_attempts=settings.job_max_attempts)
    audit.record(session, "gallery.reindex_start", actor=actor, object_type="reindex_run", object_id=run.id,
                 detail={"from": active.model_id, "to": target, "photos": total, "already": done,
                         "superseded": [r.id for r in running]}, ip=ip)
    return run


def ensure_started(engine: Engine, settings: Settings) -> ReindexRun | None:
    """At start-up: queue a run when the configured model is not the active one (idempotent), and say
    loudly when this build cannot embed with the active model."""
    with Session(engine, expire_on_commit=False) as session:
        active = gallery_model(session).model_id
        problem = unavailable_reason(settings, active)
        if problem:
            log.error("the gallery searches with face model %s, which this process cannot embed with: %s. "
                      "Sightings cannot be matched until the reference photos are re-embedded with the "
                      "configured model (MIATARI_FACE_MODEL=%s; `miatari reindex`).", active, problem,
                      settings.face_model)
        try:
            target = configured_model_id(settings)
        except Exception as exc:  # noqa: BLE001 - said at start-up; the process still serves
            log.error("the configured face model %r cannot be used: %s", settings.face_model, exc)
            return None
        if target == active:
            return None
        if counts(session, target)[0] == 0:
            # Nothing to re-embed (a new installation): the configured model is the gallery's at once.
            switch_model(session, settings, target, reason="no reference photo to re-embed")
            session.commit()
            log.info("the gallery searches with %s from now on (it held no reference photo)", target)
            return None
        run = start_run(session, settings, None)
        session.commit()
    if run is not None:
        log.warning("the gallery searches with %s, the configured face model is %s: reference photos are being "
                    "re-embedded (reindex run %s; `miatari reindex --status`)", active, target, run.id)
    return run


# The job
@dataclass
class BatchResult:
    photo: ReferencePhoto
    vector: Any = None
    reason: str = ""


def _overlap(a: Sequence[float], b: Sequence[float]) -> float:
    ax, ay, aw, ah = (float(v) for v in a)
    bx, by, bw, bh = (float(v) for v in b)
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def _embed_photo(photo: ReferencePhoto, store: ImageStore, settings: Settings, pipeline: Any,
                 target: str) -> BatchResult:
    """The enrolled face found again in the photo, embedded with ``target`` (detection runs again)."""
    from matcher import ImageError, decode_image

    try:
        data = store.get(photo.image_sha256)
        decoded = decode_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels)
        faces = list(pipeline.analyze_image(decoded, models=[model_name(target)]))
    except (OSError, ImageError) as exc:
        return BatchResult(photo, reason=f"the photo cannot be read ({type(exc).__name__}: {exc})")
    if photo.bbox and len(photo.bbox) == 4:
        scored = sorted(((_overlap(photo.bbox, f.bbox), f) for f in faces), key=lambda t: -t[0])
        face = scored[0][1] if scored and scored[0][0] >= MIN_FACE_OVERLAP else None
    else:
        face = faces[0] if len(faces) == 1 else None
    if face is None:
        return BatchResult(photo, reason="the enrolled face was not found again in the photo")
    vector = face.embeddings.get(target)
    if vector is None:
        raise PermanentJobError(f"the pipeline gave no {target} embedding (it has {', '.join(face.embeddings)})")
    return BatchResult(photo, vector=vector)


@dataclass
class ReindexOutcome:
    run_id: int
    state: str  # "switched", "complete" (the target was already active), "blocked", "superseded", "stopped"
    photos_total: int
    photos_done: int
    embedded: int
    failed: int


Renew = Callable[[], None]
Finish = Callable[[Session], None]


def run_batches(engine: Engine, store: ImageStore, settings: Settings, pipeline: Any, run_id: int, *,
                batch_size: int = BATCH_SIZE, max_batches: int | None = None, renew: Renew | None = None,
                finish: Finish | None = None, on_batch: Callable[[int, int], None] | None = None) -> ReindexOutcome:
    """Work a run through to its end (or ``max_batches`` batches): embed, commit per batch, then switch.

    ``renew`` is called before each photo (a job's lease), ``finish(session)`` inside the final
    transaction (the job's completion), ``on_batch(done, total)`` after each commit.
    """
    renew = renew or (lambda: None)
    started = _start_run(engine, settings, run_id, finish)
    if isinstance(started, ReindexOutcome):
        return started
    target, skip = started
    embedded = batches = 0
    while True:
        with Session(engine, expire_on_commit=False) as session:
            run = session.get(ReindexRun, run_id)
            assert run is not None
            if run.status not in ACTIVE:  # superseded meanwhile
                if finish is not None:
                    finish(session)
                session.commit()
                return ReindexOutcome(run_id, "superseded", run.photos_total, run.photos_done, embedded, len(skip))
            batch = _pending(session, target, skip, batch_size)
            session.expunge_all()  # kept as read; the transaction ends here: nothing held while the model works
        if not batch:
            outcome = _finish_run(engine, settings, run_id, target, skip, finish, embedded)
            if outcome is not None:
                return outcome
            continue  # photos enrolled without the target model since the last batch
        results = []
        for photo in batch:
            renew()
            results.append(_embed_photo(photo, store, settings, pipeline, target))
        added, done, total = _store_batch(engine, run_id, target, results, skip)
        embedded += added
        if on_batch is not None:
            on_batch(done, total)
        batches += 1
        if max_batches is not None and batches >= max_batches:
            return ReindexOutcome(run_id, "stopped", total, done, embedded, len(skip))


def _start_run(engine: Engine, settings: Settings, run_id: int,
               finish: Finish | None) -> ReindexOutcome | tuple[str, set[int]]:
    """Mark the run running; its target model and the photos already failed (or the outcome: superseded)."""
    with Session(engine, expire_on_commit=False) as session:
        run = session.get(ReindexRun, run_id)
        if run is None:
            raise PermanentJobError(f"reindex run {run_id} does not exist")
        target = run.target_model_id
        if run.status not in ACTIVE:
            if finish is not None:
                finish(session)
            session.commit()
            return ReindexOutcome(run_id, "superseded", run.photos_total, run.photos_done, 0, 0)
        problem = unavailable_reason(settings, target)
        if problem:
            raise PermanentJobError(f"cannot embed with {target}: {problem}")
        run.status = JobStatus.running.value
        run.started_at = run.started_at or utcnow()
        session.add(run)
        session.commit()
        return target, {int(f["photo_id"]) for f in run.failures if f.get("photo_id") is not None}


def _store_batch(engine: Engine, run_id: int, target: str, results: list[BatchResult],
                 skip: set[int]) -> tuple[int, int, int]:
    """Commit one batch's embeddings (failures join ``skip``); how many were added, and the run's done/total."""
    from matcher import embedding_to_bytes

    embedded = 0
    with Session(engine, expire_on_commit=False) as session:
        run = session.get(ReindexRun, run_id)
        assert run is not None
        active = gallery_model(session).model_id
        failures = list(run.failures)
        for r in results:
            pid = int(r.photo.pk)
            if r.vector is None:
                skip.add(pid)
                failures.append({"photo_id": pid, "subject_id": r.photo.subject_id, "reason": r.reason})
                continue
            if session.get(ReferenceEmbedding, (pid, target)) is not None:
                continue  # enrolment got there first
            session.add(ReferenceEmbedding(reference_photo_id=pid, model_id=target, dim=int(len(r.vector)),
                                           embedding=embedding_to_bytes(r.vector)))
            embedded += 1
            if target == active:  # filling a gap in the active model: the photo enters the gallery
                session.flush()
                record_change(session, ADD, r.photo.subject_id, pid)
        session.flush()
        run.failures = failures[-MAX_FAILURES_KEPT:]
        run.photos_total, run.photos_done = counts(session, target)
        session.add(run)
        session.commit()
        return embedded, run.photos_done, run.photos_total


def _target_dim(session: Session, settings: Settings, target: str) -> int:
    dim = session.exec(select(ReferenceEmbedding.dim).where(ReferenceEmbedding.model_id == target).limit(1)).first()
    if dim:
        return int(dim)
    from matcher.embedders import build_embedder

    return int(build_embedder(model_name(target), settings.deepface_home).dim)


def switch_model(session: Session, settings: Settings, target: str, *, run_id: int | None = None,
                 reason: str = "") -> None:
    """Make ``target`` the active gallery model, in the caller's transaction: every process rebuilds
    its index on it when it applies the ``switch_model`` change."""
    lock_changes(session)
    active = gallery_model(session)
    previous = active.model_id
    active.previous_model_id, active.model_id = previous, target
    active.dim, active.switched_at = _target_dim(session, settings, target), utcnow()
    session.add(active)
    record_change(session, SWITCH_MODEL, 0)
    audit.record(session, "gallery.switch_model", object_type="reindex_run" if run_id else "gallery_model",
                 object_id=run_id or 1, detail={"from": previous, "to": target, "dim": active.dim,
                                                **({"reason": reason} if reason else {})})


def _finish_run(engine: Engine, settings: Settings, run_id: int, target: str, skip: set[int],
                finish: Finish | None, embedded: int) -> ReindexOutcome | None:
    """The last transaction: switch the active model if every searchable photo has a target embedding.

    ``None`` if photos without one turned up meanwhile (the caller embeds them first)."""
    with Session(engine, expire_on_commit=False) as session:
        lock_changes(session)  # no enrolment commits between this check and the switch
        if _pending(session, target, skip, 1):
            session.rollback()
            return None
        run = session.get(ReindexRun, run_id)
        assert run is not None
        active = gallery_model(session)
        now = utcnow()
        missing = _searchable_missing(session, target)
        if target == active.model_id:
            state = "complete"
        elif missing:
            state = "blocked"
            audit.record(session, "gallery.switch_model", outcome=AuditOutcome.error, object_type="reindex_run",
                         object_id=run_id, detail={"from": active.model_id, "to": target,
                                                   "reason": "searchable photos could not be re-embedded",
                                                   "photos": missing[:100]})
        else:
            state = "switched"
            switch_model(session, settings, target, run_id=run_id)
            run.switched_at = now
        run.status, run.finished_at = JobStatus.done.value, now
        run.photos_total, run.photos_done = counts(session, target)
        session.add(run)
        audit.record(session, "gallery.reindex", object_type="reindex_run", object_id=run_id,
                     outcome=AuditOutcome.ok if state != "blocked" else AuditOutcome.error,
                     detail={"to": target, "state": state, "embedded_this_attempt": embedded,
                             "photos": run.photos_total, "with_embedding": run.photos_done,
                             "failed": len(skip)})
        if finish is not None:
            finish(session)
        session.commit()
    log.info("reindex run %s to %s: %s (%d of %d photos, %d failed)", run_id, target, state, run.photos_done,
             run.photos_total, len(skip))
    return ReindexOutcome(run_id, state, run.photos_total, run.photos_done, embedded, len(skip))


def run_reindex(ctx: JobContext) -> ReindexOutcome:
    """Re-embed the reference photos for a run, then switch the gallery to its model."""
    return run_batches(ctx.engine, ctx.store, ctx.settings, services.pipeline(ctx.services), ctx.job.ref_id,
                       batch_size=ctx.services.reindex_batch_size or BATCH_SIZE,
                       renew=ctx.renew_lease, finish=ctx.finish_in)


# Old embeddings
def purge_old(session: Session, settings: Settings, actor: User | None = None) -> int:
    """Delete the embeddings of every model but the active one (in the caller's transaction).

    Refused (:class:`ReindexRefused`) while a run is under way or the configured model is another:
    those rows are the next gallery's."""
    active = gallery_model(session).model_id
    if session.exec(select(ReindexRun.id).where(col(ReindexRun.status).in_(ACTIVE))).first() is not None:
        raise ReindexRefused("A re-embedding is under way; purge once it has switched the gallery.")
    try:
        configured = configured_model_id(settings)
    except Exception:  # noqa: BLE001 - weights missing: nothing of it is kept either way
        configured = active
    if configured != active:
        raise ReindexRefused(f"The configured model {configured} is not the gallery's ({active}) yet: "
                             "its embeddings would be lost. Run `miatari reindex` first.")
    by_model = dict(session.exec(select(ReferenceEmbedding.model_id, func.count())
                                 .where(ReferenceEmbedding.model_id != active)
                                 .group_by(ReferenceEmbedding.model_id)).all())
    removed = rows_affected(session.execute(
        delete(ReferenceEmbedding).where(col(ReferenceEmbedding.model_id) != active)))
    audit.record(session, "gallery.purge_old_embeddings", actor=actor, object_type="gallery_model",
                 object_id=active, detail={"kept": active, "deleted": by_model})
    return int(removed or 0)
