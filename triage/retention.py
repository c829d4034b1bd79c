"""Retention: unflagged sightings (and everything hanging from them) go after a set period.

A sighting older than ``retention_days_unflagged`` is deleted with its
photos, probes, candidates, review slots and jobs, unless anything about it
is still live or decisive:

* a flag was raised on it (any status: the evidence of an arrest lead is kept);
* one of its candidates is still open (under review);
* one of its candidates is disputed and a manager may still escalate it (fewer than ``MAX_ROUNDS``
  rounds): a dispute is never purged before a manager has handled it;
* its matching has not finished.

Before a candidate goes, what the managers' metrics need of it is copied, in the same transaction,
to ``metric_slot`` (its review slots: reviewer, verdict, times; no image, no note) and
``metric_outcome`` (its status, score, round and times): every period's figures stay what they were
(see ``triage.metrics_queries``).

Images that nothing references any more are deleted too, row and file.
Audit entries older than ``retention_days_audit`` (a year at least) are
pruned behind a chained entry that vouches for the cut.  Every sweep that
deletes anything writes one audit entry saying what went.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, delete, exists, insert, literal, or_
from sqlalchemy import select as core_select
from sqlmodel import Session, SQLModel, col, select
from sqlmodel.sql.sqltypes import UTCDateTime

from triage import audit
from triage.clock import utcnow
from triage.config import Settings
from triage.db import rows_affected
from triage.models import (
    Candidate,
    CandidateStatus,
    Flag,
    Job,
    MetricOutcome,
    MetricSlot,
    Probe,
    ReviewSlot,
    SeenCandidate,
    Sighting,
    SightingPhoto,
    SightingStatus,
    StoredImage,
    table_of,
)
from triage.services import Services
from triage.storage import ImageStore

log = logging.getLogger("miatari.retention")

# Sightings handled per transaction: keeps each one short, the rest wait for the next sweep.
BATCH = 200
UNFINISHED = (SightingStatus.queued.value, SightingStatus.matching.value)
# As triage.review.MAX_ROUNDS (not imported: retention reads the tables only).
MAX_ROUNDS = 3


@dataclass
class RetentionResult:
    sighting_ids: list[int] = field(default_factory=list)
    photos: int = 0
    probes: int = 0
    candidates: int = 0
    review_slots: int = 0
    jobs: int = 0
    images: list[str] = field(default_factory=list)
    audit_pruned: int = 0

    @property
    def anything(self) -> bool:
        return bool(self.sighting_ids or self.images or self.audit_pruned)


def _expired_sightings(session: Session, cutoff: dt.datetime, limit: int) -> list[int]:
    flagged = exists().where(col(Flag.sighting_id) == col(Sighting.id))
    open_candidate = exists().where(col(Candidate.sighting_id) == col(Sighting.id),
                                    col(Candidate.status) == CandidateStatus.open.value)
    waiting_dispute = exists().where(col(Candidate.sighting_id) == col(Sighting.id),
                                     col(Candidate.status) == CandidateStatus.disputed.value,
                                     col(Candidate.current_round) < MAX_ROUNDS)
    stmt = (select(Sighting.id)
            .where(col(Sighting.created_at) < cutoff, col(Sighting.status).not_in(UNFINISHED), ~flagged,
                   ~open_candidate, ~waiting_dispute)
            .order_by(col(Sighting.id)).limit(limit))
    return [i for i in session.exec(stmt).all() if i is not None]


def _image_references() -> list[Any]:
    """Every column in the schema that points at a stored image (found from the foreign keys)."""
    columns = []
    for table in SQLModel.metadata.tables.values():
        for fk in table.foreign_keys:
            if fk.column.table.name == StoredImage.__tablename__ and table.name != StoredImage.__tablename__:
                columns.append(fk.parent)
    return columns


def _unreferenced(session: Session, shas: set[str]) -> list[str]:
    if not shas:
        return []
    referenced: set[str] = set()
    for column in _image_references():
        referenced.update(session.execute(select(column).where(column.in_(shas))).scalars())
    return sorted(shas - referenced)


def _delete_sightings(session: Session, sighting_ids: list[int], result: RetentionResult) -> set[str]:
    """Delete the sightings and what hangs from them; return the images they used."""
    from triage.sightings import MATCH_JOB

    photos = session.exec(select(SightingPhoto).where(col(SightingPhoto.sighting_id).in_(sighting_ids))).all()
    probes = session.exec(select(Probe).where(col(Probe.sighting_id).in_(sighting_ids))).all()
    probe_ids = [p.id for p in probes]
    cand_stmt = select(Candidate).where(or_(col(Candidate.sighting_id).in_(sighting_ids),
                                            col(Candidate.probe_id).in_(probe_ids)))
    if session.get_bind().dialect.name == "postgresql":
        cand_stmt = cand_stmt.with_for_update()
    candidates = session.exec(cand_stmt).all()
    # Re-checked under the lock: a candidate reopened (escalated) or flagged meanwhile keeps its sighting.
    live = _live_sightings(candidates, probes)
    if live:
        raise _Retry(live)
    cand_ids = [c.id for c in candidates]
    shas = {p.image_sha256 for p in photos}
    for p in probes:
        shas.update((p.eye_crop_sha256, p.face_chip_sha256))
    if cand_ids:
        _keep_for_metrics(session, cand_ids)
        shas |= _forget_renditions(session, cand_ids)
        result.review_slots += rows_affected(session.execute(
            delete(ReviewSlot).where(col(ReviewSlot.candidate_id).in_(cand_ids))))
        session.execute(delete(SeenCandidate).where(col(SeenCandidate.candidate_id).in_(cand_ids)))
        session.execute(delete(Candidate).where(col(Candidate.id).in_(cand_ids)))
    if probe_ids:
        session.execute(delete(Probe).where(col(Probe.id).in_(probe_ids)))
    session.execute(delete(SightingPhoto).where(col(SightingPhoto.sighting_id).in_(sighting_ids)))
    result.jobs += rows_affected(session.execute(
        delete(Job).where(col(Job.kind) == MATCH_JOB, col(Job.ref_id).in_(sighting_ids))))
    session.execute(delete(Sighting).where(col(Sighting.id).in_(sighting_ids)))
    result.sighting_ids += sighting_ids
    result.photos += len(photos)
    result.probes += len(probes)
    result.candidates += len(cand_ids)
    return shas


def _waiting(candidate: Candidate) -> bool:
    """A dispute a manager may still escalate: kept until handled."""
    return candidate.status == CandidateStatus.disputed.value and candidate.current_round < MAX_ROUNDS


def _keep_for_metrics(session: Session, cand_ids: list[Any]) -> None:
    """Copy what the metrics read of these candidates (slots; outcomes of real ones) before they go."""
    stamp = literal(utcnow(), UTCDateTime())
    slots = table_of(ReviewSlot).c
    cands = table_of(Candidate).c
    sightings = table_of(Sighting).c
    slot_columns = ("candidate_id", "round", "reviewer_id", "verdict", "verdict_at", "withdrawn", "voided_at")
    session.execute(insert(table_of(MetricSlot)).from_select(
        [*slot_columns, "known_truth", "archived_at"],
        core_select(*(slots[c] for c in slot_columns), cands.known_truth, stamp)
        .select_from(table_of(ReviewSlot).join(table_of(Candidate), cands.id == slots.candidate_id))
        .where(slots.candidate_id.in_(cand_ids))))
    outcome_columns = ("status", "score", "current_round", "created_at", "decided_at")
    session.execute(insert(table_of(MetricOutcome)).from_select(
        ["candidate_id", *outcome_columns, "sighting_created_at", "archived_at"],
        core_select(cands.id, *(cands[c] for c in outcome_columns), sightings.created_at,
               stamp)
        .select_from(table_of(Candidate).outerjoin(table_of(Sighting), sightings.id == cands.sighting_id))
        .where(cands.id.in_(cand_ids), cands.known_truth.is_(None))))


def _forget_renditions(session: Session, cand_ids: list[Any]) -> set[str]:
    """Known-answer pairs made from these candidates' probes lose their renditions (the sighting goes, so do
    pictures made from it); the pairs and their verdicts stay, an open one withdrawn. Returns the images."""
    pairs = session.exec(select(Candidate).where(col(Candidate.known_source_candidate_id).in_(cand_ids))).all()
    shas: set[str] = set()
    for pair in pairs:
        shas.update(x for x in (pair.known_probe_eyes_sha256, pair.known_probe_face_sha256) if x)
        pair.known_probe_eyes_sha256 = None
        pair.known_probe_face_sha256 = None
        if pair.status == CandidateStatus.open.value:
            pair.status = CandidateStatus.withdrawn.value
            pair.decided_at = utcnow()
            for slot in session.exec(select(ReviewSlot).where(ReviewSlot.candidate_id == pair.id,
                                                              col(ReviewSlot.verdict).is_(None))).all():
                slot.withdrawn = True
                session.add(slot)
        session.add(pair)
    session.flush()
    return shas



def _live_sightings(candidates: Sequence[Candidate], probes: Sequence[Probe]) -> set[int]:
    """The sightings of candidates still open, flagged or waiting: those keep their pictures."""
    sighting_of_probe = {p.id: p.sighting_id for p in probes}
    live: set[int] = set()
    for c in candidates:
        if c.status in (CandidateStatus.open.value, CandidateStatus.flagged.value) or _waiting(c):
            sighting_id = c.sighting_id or sighting_of_probe.get(c.probe_id)
            if sighting_id is not None:  # a candidate read here was found by its sighting or its probe
                live.add(sighting_id)
    return live


class _Retry(Exception):
    def __init__(self, keep: set[int]) -> None:
        self.keep = keep


def run(engine: Engine, settings: Settings, store: ImageStore, *, batch: int = BATCH) -> RetentionResult:
    """Delete what has outlived its retention period; one transaction per batch, each audited."""
    now = utcnow()
    cutoff = now - dt.timedelta(days=settings.retention_days_unflagged)
    audit_cutoff = now - dt.timedelta(days=max(settings.retention_days_audit, 365))
    total = RetentionResult()
    skip: set[int] = set()
    while True:
        result = RetentionResult()
        with Session(engine, expire_on_commit=False) as session:
            ids = [i for i in _expired_sightings(session, cutoff, batch + len(skip)) if i not in skip][:batch]
            if not ids:
                session.rollback()
                break
            try:
                shas = _delete_sightings(session, ids, result)
            except _Retry as retry:
                session.rollback()
                skip |= retry.keep
                continue
            gone = _unreferenced(session, shas)
            if gone:
                session.execute(delete(StoredImage).where(col(StoredImage.sha256).in_(gone)))
            result.images = gone
            audit.record(session, "retention.sweep", object_type="sighting",
                         detail={"cutoff": cutoff.isoformat(), "sightings": result.sighting_ids,
                                 "photos": result.photos, "probes": result.probes,
                                 "candidates": result.candidates, "review_slots": result.review_slots,
                                 "jobs": result.jobs, "images": len(gone)})
            session.commit()
        # Files go only once the rows are gone for good; a crash here leaves a harmless orphan file.
        for sha in result.images:
            store.delete(sha)
        _add(total, result)
        if len(ids) < batch:
            break
    with Session(engine) as session:
        pruned = audit.prune(session, audit_cutoff)
        session.commit()
    total.audit_pruned = pruned
    if total.anything:
        log.info("retention: %d sightings, %d images, %d audit entries deleted",
                 len(total.sighting_ids), len(total.images), pruned)
    return total


def _add(total: RetentionResult, part: RetentionResult) -> None:
    total.sighting_ids += part.sighting_ids
    total.images += part.images
    for name in ("photos", "probes", "candidates", "review_slots", "jobs"):
        setattr(total, name, getattr(total, name) + getattr(part, name))


def retention_sweep(engine: Engine, settings: Settings, services: Services) -> RetentionResult:
    return run(engine, settings, services.store)
