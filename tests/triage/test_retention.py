"""Retention: old unflagged sightings go with everything hanging from them; flags and live work stay."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from miatari.registry import worker_registry
from tests.conftest import add_user
from triage import audit, retention
from triage.clock import frozen
from triage.config import Settings
from triage.models import (
    AuditEntry,
    Candidate,
    CandidateStatus,
    Flag,
    Job,
    MetricOutcome,
    MetricSlot,
    Probe,
    ReferencePhoto,
    ReviewSlot,
    Role,
    SeenCandidate,
    Sighting,
    SightingPhoto,
    StoredImage,
    Subject,
)
from triage.services import Services
from triage.storage import ImageStore, store_image

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


class World:
    def __init__(self, engine: Engine, store: ImageStore) -> None:
        self.engine = engine
        self.store = store
        self.officer = add_user(engine, "officer", Role.officer)
        self.rec_a = add_user(engine, "rec.a", Role.recognizer)
        self.rec_b = add_user(engine, "rec.b", Role.recognizer)
        with Session(engine) as s:
            subject = Subject(name="Wanted Person", case_ref="W-1")
            s.add(subject)
            s.flush()
            self.shared_sha = store_image(s, store, b"shared-bytes", "image/png")
            ref = ReferencePhoto(subject_id=subject.pk, image_sha256=store_image(s, store, b"mugshot", "image/png"),
                                 eye_crop_sha256=self.shared_sha,
                                 face_chip_sha256=store_image(s, store, b"ref-chip", "image/png"))
            s.add(ref)
            s.commit()
            self.subject_id, self.ref_id = subject.pk, ref.pk

    def sighting(self, tag: str, *, status: CandidateStatus | None = CandidateStatus.cleared,
                 flag: bool = False, share_image: bool = False, rounds: int = 1) -> tuple[int, list[str]]:
        with Session(self.engine) as s:
            sighting = Sighting(uploaded_by=self.officer.pk, observed_at=T0, status="matched")
            s.add(sighting)
            s.flush()
            shas = [store_image(s, self.store, f"{tag}-photo".encode(), "image/jpeg"),
                    self.shared_sha if share_image else store_image(s, self.store, f"{tag}-eyes".encode(), "image/png"),
                    store_image(s, self.store, f"{tag}-chip".encode(), "image/png")]
            photo = SightingPhoto(sighting_id=sighting.pk, image_sha256=shas[0])
            s.add(photo)
            s.flush()
            probe = Probe(sighting_id=sighting.pk, sighting_photo_id=photo.pk, face_index=0, embedding=b"\0" * 8,
                          model_id="dlib@55533b28a95800a5",
                          eye_crop_sha256=shas[1], face_chip_sha256=shas[2])
            s.add(probe)
            s.flush()
            s.add(Job(kind="match_sighting", ref_id=sighting.pk, status="done"))
            if status is not None:
                cand = Candidate(probe_id=probe.id, sighting_id=sighting.id, subject_id=self.subject_id,
                                 reference_photo_id=self.ref_id, score=0.9, distance=0.1, rank=1,
                                 status=status.value, current_round=rounds)
                s.add(cand)
                s.flush()
                for slot_no, rec in ((1, self.rec_a), (2, self.rec_b)):
                    s.add(ReviewSlot(candidate_id=cand.pk, slot_no=slot_no, reviewer_id=rec.id,
                                     verdict="same" if flag else "different", verdict_at=T0))
                    s.add(SeenCandidate(candidate_id=cand.pk, user_id=rec.pk))
                if flag:
                    s.add(Flag(candidate_id=cand.pk, sighting_id=sighting.pk, subject_id=self.subject_id))
            s.commit()
            return sighting.pk, shas


def _count(engine: Engine, model: type) -> int:
    with Session(engine) as s:
        return int(s.exec(select(func.count()).select_from(model)).one())


def test_sweep_deletes_old_unflagged_sightings_with_their_images(engine: Engine, settings: Settings,
                                                                 tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    with frozen(T0) as clock:
        w = World(engine, store)
        old_cleared, old_shas = w.sighting("old-cleared", share_image=True)
        old_disputed, _ = w.sighting("old-disputed", status=CandidateStatus.disputed)  # a manager may escalate
        old_settled, _ = w.sighting("old-settled", status=CandidateStatus.disputed, rounds=3)  # stays disputed
        old_noface, _ = w.sighting("old-noface", status=None)
        old_flagged, flagged_shas = w.sighting("old-flagged", status=CandidateStatus.flagged, flag=True)
        old_open, _ = w.sighting("old-open", status=CandidateStatus.open)
        clock.advance(days=settings.retention_days_unflagged - 1)
        fresh, fresh_shas = w.sighting("fresh")
        clock.advance(days=2)
        result = retention.run(engine, settings, store, batch=2)

    assert sorted(result.sighting_ids) == sorted([old_cleared, old_settled, old_noface])
    with Session(engine) as s:
        remaining = set(s.exec(select(Sighting.id)).all())
        assert remaining == {old_flagged, old_open, old_disputed, fresh}
        assert set(s.exec(select(Probe.sighting_id)).all()) == remaining
        assert set(s.exec(select(SightingPhoto.sighting_id)).all()) == remaining
        assert set(s.exec(select(Candidate.sighting_id)).all()) == {old_flagged, old_open, old_disputed, fresh}
        assert set(s.exec(select(Job.ref_id)).all()) == remaining
        assert len(s.exec(select(ReviewSlot)).all()) == 8 and len(s.exec(select(SeenCandidate)).all()) == 8
        # What the metrics need of the two deleted candidates was kept: their slots and outcomes, no image.
        kept = s.exec(select(MetricOutcome)).all()
        assert sorted(k.status for k in kept) == ["cleared", "disputed"]
        assert [k.current_round for k in kept if k.status == "disputed"] == [3]
        assert all(k.sighting_created_at is not None and k.decided_at is None for k in kept)
        slots = s.exec(select(MetricSlot)).all()
        assert len(slots) == 4 and {x.verdict for x in slots} == {"different"}
        assert {x.reviewer_id for x in slots} == {w.rec_a.id, w.rec_b.id}
        assert len(s.exec(select(Flag)).all()) == 1
        # The eye crop shared with a reference photo stays; the rest of the old sighting's images are gone.
        assert s.get(StoredImage, old_shas[1]) is not None and store.exists(old_shas[1])
        for sha in (old_shas[0], old_shas[2]):
            assert s.get(StoredImage, sha) is None and not store.exists(sha)
        for sha in flagged_shas + fresh_shas:
            assert s.get(StoredImage, sha) is not None and store.exists(sha)
        sweeps = s.exec(select(AuditEntry).where(AuditEntry.action == "retention.sweep")
                        .order_by(col(AuditEntry.id))).all()
        assert len(sweeps) == 2  # batches of two
        assert sorted(sum((e.detail["sightings"] for e in sweeps), [])) == sorted(result.sighting_ids)
        assert sum(e.detail["images"] for e in sweeps) == len(result.images) == 8
        assert audit.verify(s).ok


def test_sweep_with_nothing_to_do_changes_nothing(engine: Engine, settings: Settings, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    with frozen(T0):
        w = World(engine, store)
        w.sighting("new")
        before = _count(engine, AuditEntry)
        result = retention.run(engine, settings, store)
    assert not result.anything and _count(engine, Sighting) == 1 and _count(engine, AuditEntry) == before


def test_audit_is_kept_a_year_at_least_then_pruned(engine: Engine, settings: Settings, tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    assert settings.retention_days_audit >= 365
    with frozen(T0) as clock:
        add_user(engine, "early", Role.officer)  # one audit entry
        clock.advance(days=364)
        retention.run(engine, settings, store)
        assert _count(engine, AuditEntry) == 1
        clock.advance(days=settings.retention_days_audit)
        result = retention.run(engine, settings, store)
    assert result.audit_pruned == 1
    with Session(engine) as s:
        entries = s.exec(select(AuditEntry)).all()
        assert [e.action for e in entries] == [audit.PRUNE_ACTION]
        assert audit.verify(s).ok


def test_retention_is_a_registered_sweep(engine: Engine, settings: Settings, tmp_path: Path) -> None:
    sweep = worker_registry().sweeps["retention"]
    assert sweep is retention.retention_sweep
    result = sweep(engine, settings, Services(engine, settings, ImageStore(tmp_path / "images")))
    assert isinstance(result, retention.RetentionResult)


def test_every_table_pointing_at_a_sighting_is_handled() -> None:
    """A new table that refers to a sighting (or what hangs from it) must be taught to retention."""
    from sqlmodel import SQLModel

    handled = {("sighting_photo", "sighting_id"), ("probe", "sighting_id"), ("probe", "sighting_photo_id"),
               ("candidate", "probe_id"), ("candidate", "sighting_id"), ("review_slot", "candidate_id"),
               ("seen_candidate", "candidate_id"),
               # A flag keeps its sighting: such sightings are never deleted.
               ("flag", "candidate_id"), ("flag", "sighting_id")}
    doomed = {"sighting", "sighting_photo", "probe", "candidate", "review_slot"}
    found = {(t.name, fk.parent.name) for t in SQLModel.metadata.tables.values() for fk in t.foreign_keys
             if fk.column.table.name in doomed}
    assert found <= handled, f"not handled by triage.retention: {sorted(found - handled)}"


def test_known_answer_renditions_made_from_a_swept_sighting_go_with_it(engine: Engine, settings: Settings,
                                                                        tmp_path: Path) -> None:
    """A known-answer pair made from a settled case keeps its verdicts, but not the pictures of a sighting
    that retention deleted; an open one is withdrawn."""
    store = ImageStore(tmp_path / "images")
    with frozen(T0) as clock:
        w = World(engine, store)
        old_cleared, _ = w.sighting("old-cleared")
        with Session(engine) as s:
            source = s.exec(select(Candidate).where(Candidate.sighting_id == old_cleared)).one()
            renditions = [store_image(s, store, f"rendition-{i}".encode(), "image/png") for i in range(2)]
            pair = Candidate(probe_id=None, sighting_id=None, subject_id=w.subject_id, reference_photo_id=w.ref_id,
                             known_source_candidate_id=source.id, known_truth="different",
                             known_probe_eyes_sha256=renditions[0], known_probe_face_sha256=renditions[1],
                             score=0.0, distance=0.0, rank=0)
            s.add(pair)
            s.flush()
            s.add(ReviewSlot(candidate_id=pair.pk, slot_no=1, reviewer_id=w.rec_a.id, verdict="different",
                             verdict_at=T0))
            s.add(ReviewSlot(candidate_id=pair.pk, slot_no=2))
            s.commit()
            pair_id = pair.id
        clock.advance(days=settings.retention_days_unflagged + 1)
        retention.run(engine, settings, store)
    with Session(engine) as s:
        pair = s.get_one(Candidate, pair_id)
        assert pair.status == "withdrawn" and pair.known_probe_eyes_sha256 is None
        slots = s.exec(select(ReviewSlot).where(ReviewSlot.candidate_id == pair_id)).all()
        assert sorted((x.verdict or "", x.withdrawn) for x in slots) == [("", True), ("different", False)]
        for sha in renditions:
            assert s.get(StoredImage, sha) is None and not store.exists(sha)
