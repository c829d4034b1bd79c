"""The matching job on the real face model: packaged faces everywhere, FRMDB where present."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageEnhance
from sqlmodel import Session, select

from miatari.registry import worker_registry
from tests.conftest import make_settings, require_faces
from triage import services, watchlist
from triage.config import Settings
from triage.gallery import enrolment_models
from triage.models import Candidate, Job, Probe, ReviewSlot, Role, Sighting, Subject
from triage.sightings import PhotoUpload, SightingInput, create_sighting
from triage.storage import ImageStore
from triage.transaction import unit_of_work
from triage.worker import run_one

pytestmark = pytest.mark.model

# Dlib gives the astronaut and Grace Hopper a similarity of about 0.75 (both
# above the default lead threshold of 0.5: a lead the recognizers would clear),
# and the astronaut and her own altered photo about 0.99.  A stricter threshold
# in between makes "no candidate for a different person" a sharp test.
STRICT_LEAD = 0.9


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def astronaut_png() -> bytes:
    return png(astronaut())


def astronaut_altered_jpeg() -> bytes:
    """Another 'sighting' of the astronaut: mirrored, cropped, rescaled, darker, JPEG."""
    img = astronaut().transpose(Image.Transpose.FLIP_LEFT_RIGHT).crop((20, 10, 480, 470)).resize((400, 400))
    img = ImageEnhance.Brightness(img).enhance(0.8)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def grace_hopper_jpeg() -> bytes:
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        return fh.read()  # type: ignore[no-any-return]


def blank_png() -> bytes:
    return png(Image.new("RGB", (320, 240), (120, 130, 140)))


class Env:
    def __init__(self, engine: Any, settings: Settings, pipeline: Any) -> None:
        self.engine = engine
        self.settings = settings
        self.store = ImageStore(settings.images_dir)
        self.services = services.build(engine, settings, self.store)
        self.services.pipeline = pipeline

    def enrol(self, name: str, *photos: bytes) -> int:
        with Session(self.engine, expire_on_commit=False) as s:
            subject = watchlist.create_subject(s, watchlist.SubjectCreate(name=name, case_ref=f"W-{name}"), None)
            s.commit()
        for data in photos:
            analysis = watchlist.analyze_for_enrolment(data, self.settings, self.services.pipeline,
                                                       enrolment_models(self.engine, self.settings.face_model))
            with Session(self.engine, expire_on_commit=False) as s:
                watchlist.enrol_reference_photo(s, self.store, subject.id, analysis, None)  # type: ignore[arg-type]
                s.commit()
        return subject.id  # type: ignore[return-value]

    def sight(self, officer: Any, *photos: bytes, key: str | None = None) -> int:
        with Session(self.engine, expire_on_commit=False) as s, unit_of_work(s):
            result = create_sighting(s, self.store, self.settings, officer,
                                     SightingInput(photos=[PhotoUpload(p) for p in photos], idempotency_key=key))
        return result.sighting.id  # type: ignore[return-value]

    def run_jobs(self) -> int:
        n = 0
        while run_one(self.services, "test-worker", worker_registry()) is not None:
            n += 1
        return n

    def candidates(self, sighting_id: int) -> list[Candidate]:
        with Session(self.engine) as s:
            return list(s.exec(select(Candidate).where(Candidate.sighting_id == sighting_id)).all())

    def close(self) -> None:
        services.stop(self.services)


@pytest.fixture
def env(engine, tmp_path: Path, db_url: str, face_pipeline) -> Any:  # type: ignore[no-untyped-def]
    e = Env(engine, make_settings(tmp_path, db_url, lead_threshold=STRICT_LEAD), face_pipeline)
    yield e
    e.close()


def test_astronaut_sighting_proposes_her_and_grace_hopper_does_not(env: Env, user_factory) -> None:  # type: ignore[no-untyped-def]
    officer = user_factory(Role.officer)
    subject_id = env.enrol("astronaut", astronaut_png())
    sighting_id = env.sight(officer, astronaut_altered_jpeg())
    other_id = env.sight(officer, grace_hopper_jpeg())
    assert env.run_jobs() == 2
    (candidate,) = env.candidates(sighting_id)
    assert candidate.subject_id == subject_id and candidate.rank == 1 and candidate.score >= STRICT_LEAD
    assert env.candidates(other_id) == []
    with Session(env.engine) as s:
        sighting = s.get(Sighting, sighting_id)
        assert sighting is not None and sighting.status == "matched" and sighting.faces_found == 1
        probe = s.exec(select(Probe).where(Probe.sighting_id == sighting_id)).one()
        assert env.store.exists(probe.eye_crop_sha256) and env.store.exists(probe.face_chip_sha256)
        assert probe.searched is True
        assert len(s.exec(select(ReviewSlot).where(ReviewSlot.candidate_id == candidate.id)).all()) == 2
        assert s.get(Sighting, other_id).status == "matched"  # type: ignore[union-attr]
        assert all(j.status == "done" for j in s.exec(select(Job)).all())


def test_photo_without_a_face_says_so(env: Env, user_factory) -> None:  # type: ignore[no-untyped-def]
    officer = user_factory(Role.officer)
    env.enrol("astronaut", astronaut_png())
    sighting_id = env.sight(officer, blank_png())
    env.run_jobs()
    with Session(env.engine) as s:
        sighting = s.get(Sighting, sighting_id)
        assert sighting is not None and sighting.status == "no_face" and sighting.faces_found == 0
        assert s.exec(select(Probe)).all() == []


def astronaut_face_crop(side: int) -> bytes:
    """Her face, cut with a margin of half a face on each side, resized to ``side`` px:
    36 px gives about 8 px between the eyes, 90 px about 21 px."""
    img = astronaut()
    x, y, w, h = 178, 80, 91, 90  # the face the pipeline finds in the packaged photo
    return png(img.crop((x - w // 2, y - h // 2, x + w + w // 2, y + h + h // 2)).resize((side, side), Image.LANCZOS))


def test_a_face_too_small_to_search_is_kept_and_shown_not_searched(  # type: ignore[no-untyped-def]
        engine, tmp_path: Path, db_url: str, face_pipeline, user_factory, make_client) -> None:
    from matcher import PROBE_MIN_IOD_PX

    e = Env(engine, make_settings(tmp_path, db_url), face_pipeline)  # default gate and lead threshold
    try:
        officer = user_factory(Role.officer)
        subject_id = e.enrol("astronaut", astronaut_png())
        tiny = e.sight(officer, astronaut_face_crop(36))
        small = e.sight(officer, astronaut_face_crop(90))
        assert e.run_jobs() == 2
        with Session(e.engine) as s:
            (p_tiny,) = s.exec(select(Probe).where(Probe.sighting_id == tiny)).all()
            (p_small,) = s.exec(select(Probe).where(Probe.sighting_id == small)).all()
            assert p_tiny.iod_px < PROBE_MIN_IOD_PX and p_tiny.searched is False
            assert p_small.iod_px >= PROBE_MIN_IOD_PX and p_small.searched is True
            # the tiny face is stored with its crops, and counted as a face found
            assert e.store.exists(p_tiny.eye_crop_sha256) and e.store.exists(p_tiny.face_chip_sha256)
            sighting = s.get(Sighting, tiny)
            assert sighting is not None and sighting.status == "matched" and sighting.faces_found == 1
        assert e.candidates(tiny) == []
        assert [c.subject_id for c in e.candidates(small)] == [subject_id]
    finally:
        e.close()
    # What the officer sees, on the page and in the API.
    client = make_client()
    from tests.conftest import login

    login(client, officer.username)
    body = client.get(f"/api/sightings/{tiny}").json()
    assert body["faces_found"] == 1 and body["faces_too_small"] == 1 and body["candidates"] == 0
    assert body["probes"][0]["searched"] is False and body["probes"][0]["iod_px"] < PROBE_MIN_IOD_PX
    assert "too small to search" in body["outcome"]
    assert client.get(f"/api/sightings/{small}").json()["probes"][0]["searched"] is True
    page = client.get(f"/sightings/{tiny}").text
    assert "too small to search" in page and "px between the eyes" in page
    assert "too small" not in client.get(f"/sightings/{small}").text


def test_a_closed_subject_is_never_again_a_candidate(env: Env, user_factory) -> None:  # type: ignore[no-untyped-def]
    officer = user_factory(Role.officer)
    subject_id = env.enrol("astronaut", astronaut_png())
    first = env.sight(officer, astronaut_altered_jpeg())
    env.run_jobs()
    assert len(env.candidates(first)) == 1
    gallery = services.gallery(env.services)
    assert subject_id in gallery.subject_ids()
    with Session(env.engine) as s:
        watchlist.close_subject(s, subject_id, "arrested", None)
        s.commit()
    # The open task was withdrawn; the next search no longer finds her.
    assert env.candidates(first)[0].status == "withdrawn"
    second = env.sight(officer, astronaut_altered_jpeg(), key="again")
    env.run_jobs()
    assert env.candidates(second) == []
    assert subject_id not in gallery.subject_ids()


def test_enrolment_refuses_a_photo_without_a_face(env: Env) -> None:
    with Session(env.engine, expire_on_commit=False) as s:
        subject = watchlist.create_subject(s, watchlist.SubjectCreate(name="N", case_ref="C"), None)
        s.commit()
    analysis = watchlist.analyze_for_enrolment(blank_png(), env.settings, env.services.pipeline)
    with Session(env.engine) as s, pytest.raises(watchlist.EnrolmentRefused, match="No face"):
        watchlist.enrol_reference_photo(s, env.store, subject.id, analysis, None)  # type: ignore[arg-type]
    with pytest.raises(watchlist.EnrolmentRefused, match="not an image"):
        watchlist.analyze_for_enrolment(b"hello, not an image at all", env.settings, env.services.pipeline)
    with Session(env.engine) as s:
        assert watchlist.reference_photos(s, subject.id) == []  # type: ignore[arg-type]
    assert not any(p.is_file() for p in Path(env.settings.images_dir).rglob("*"))


def test_same_photo_twice_is_enrolled_once(env: Env) -> None:
    subject_id = env.enrol("astronaut", astronaut_png(), astronaut_png())
    with Session(env.engine) as s:
        assert len(watchlist.reference_photos(s, subject_id)) == 1
        subject = s.get(Subject, subject_id)
        assert subject is not None


@pytest.mark.faces
def test_frmdb_surveillance_crop_finds_its_subject(engine, tmp_path: Path, db_url: str, face_pipeline,  # type: ignore[no-untyped-def]
                                                    user_factory) -> None:
    faces = require_faces() / "frmdb"
    e = Env(engine, make_settings(tmp_path, db_url), face_pipeline)  # the default lead threshold
    try:
        officer = user_factory(Role.officer)
        ids = {}
        for folder in ("041", "043", "045", "047"):
            ids[folder] = e.enrol(folder, *[p.read_bytes() for p in sorted((faces / folder).glob("mugshot_*.png"))])
        # An HD-camera crop of subject 043 (off-angle, from a CCTV frame).
        probe = (faces / "043" / "surveillance_Img_03.png").read_bytes()
        sighting_id = e.sight(officer, probe)
        e.run_jobs()
        ranked = sorted(e.candidates(sighting_id), key=lambda c: c.rank)
        assert ids["043"] in {c.subject_id for c in ranked}
        assert ranked[0].subject_id == ids["043"]
    finally:
        e.close()
