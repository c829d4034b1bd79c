"""A small world for the page tests of each role: a live server, accounts, and records whose pictures are
cut from the packaged faces only (scikit-image's astronaut, matplotlib's Grace Hopper).

One world per test module (starting a server and seeding it once keeps the browser tests fast); the
records are made through the real domain functions (candidates, leases, verdicts), not written by hand.
"""

from __future__ import annotations

import atexit
import datetime as dt
import io
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from sqlalchemy import Engine
from sqlmodel import Session, select

from tests.conftest import TEST_PASSWORD, add_user, make_settings
from tests.factories import FakeHit, _embedding_of
from triage import review
from triage.clock import utcnow
from triage.config import Settings
from triage.db import make_engine
from triage.models import (
    Candidate,
    Flag,
    Probe,
    Qualification,
    ReferenceEmbedding,
    ReferencePhoto,
    Role,
    Sighting,
    SightingPhoto,
    Subject,
    User,
)
from triage.storage import ImageStore, store_image

CHROMIUM = Path(os.environ.get("MIATARI_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
DESKTOP = {"viewport": {"width": 1366, "height": 900}}
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True,
         "has_touch": True}
STARTUP_SECONDS = 20

# Where the packaged faces' eyes and faces are (pixel boxes in the original pictures).
FACES = {
    "astronaut": {"eyes": (172, 88, 276, 140), "face": (160, 50, 290, 180)},
    "hopper": {"eyes": (190, 160, 340, 235), "face": (160, 110, 380, 330)},
}


def packaged_face(name: str) -> Image.Image:
    """One of the two packaged pictures (never a real person's photo from the test data)."""
    if name == "astronaut":
        from skimage import data

        return Image.fromarray(data.astronaut()).convert("RGB")
    from matplotlib import cbook

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as img:
        return img.convert("RGB")


def encoded(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def photo_file(directory: Path, name: str, fmt: str = "JPEG") -> Path:
    """A packaged face saved as a file, for an upload through the page."""
    path = directory / f"{name}.{'jpg' if fmt == 'JPEG' else 'png'}"
    if not path.exists():
        path.write_bytes(encoded(packaged_face(name), fmt))
    return path


def _store(session: Session, store: ImageStore, img: Image.Image) -> str:
    return store_image(session, store, encoded(img), "image/png", *img.size)


def _crops(session: Session, store: ImageStore, name: str, shade: float = 1.0) -> tuple[str, str]:
    """The eye-region crop (2:1, 192×96) and the aligned face (112×112), stored; ``shade`` dims a probe."""
    img = packaged_face(name)
    if shade != 1.0:
        img = img.point(lambda v: int(v * shade))
    eyes = img.crop(FACES[name]["eyes"]).resize((192, 96))
    face = img.crop(FACES[name]["face"]).resize((112, 112))
    return _store(session, store, eyes), _store(session, store, face)


@dataclass
class World:
    url: str
    settings: Settings
    engine: Engine
    tmp: Path
    ids: dict[str, int] = field(default_factory=dict)

    def user(self, username: str) -> User:
        with Session(self.engine) as s:
            return s.exec(select(User).where(User.username == username)).one()


def subject_with_photo(session: Session, store: ImageStore, name: str, face: str, case_ref: str,
                       priority: int = 2) -> Subject:
    subject = Subject(name=name, case_ref=case_ref, priority=priority)
    session.add(subject)
    session.flush()
    eyes, chip = _crops(session, store, face)
    photo = ReferencePhoto(subject_id=subject.id, image_sha256=_store(session, store, packaged_face(face)),  # type: ignore[arg-type]
                           view="frontal", eye_crop_sha256=eyes, face_chip_sha256=chip, iod_px=60.0, blur=300.0)
    session.add(photo)
    session.flush()
    model_id, embedding = _embedding_of(session)
    session.add(ReferenceEmbedding(reference_photo_id=photo.id, model_id=model_id, dim=len(embedding) // 4,  # type: ignore[arg-type]
                                   embedding=embedding))
    session.flush()
    return subject


def sighting_of(session: Session, store: ImageStore, officer: User, face: str, place: str) -> tuple[Sighting, Probe]:
    """A matched sighting of one packaged picture, with the one face found in it."""
    now = utcnow()
    sighting = Sighting(uploaded_by=officer.id, location_text=place, status="matched", faces_found=1,  # type: ignore[arg-type]
                        observed_at=now - dt.timedelta(minutes=40), created_at=now - dt.timedelta(minutes=35),
                        matched_at=now - dt.timedelta(minutes=34))
    session.add(sighting)
    session.flush()
    photo = SightingPhoto(sighting_id=sighting.id, position=0, faces_found=1,  # type: ignore[arg-type]
                          image_sha256=store_image(session, store, encoded(packaged_face(face), "JPEG"),
                                                   "image/jpeg", *packaged_face(face).size))
    session.add(photo)
    session.flush()
    eyes, chip = _crops(session, store, face, shade=0.85)
    model_id, embedding = _embedding_of(session)
    probe = Probe(sighting_id=sighting.id, sighting_photo_id=photo.id, face_index=0, embedding=embedding,  # type: ignore[arg-type]
                  model_id=model_id, eye_crop_sha256=eyes, face_chip_sha256=chip, iod_px=48.0)
    session.add(probe)
    session.flush()
    return sighting, probe


def candidates_for(session: Session, settings: Settings, probe: Probe,
                   ranked: list[tuple[Subject, float]]) -> list[Candidate]:
    hits = []
    for rank, (subject, score) in enumerate(ranked, start=1):
        photo = session.exec(select(ReferencePhoto).where(ReferencePhoto.subject_id == subject.id)).first()
        assert photo is not None
        hits.append(FakeHit(subject.id, photo.id, 1.0 - score, score, rank))  # type: ignore[arg-type]
    return review.create_candidates_for_probe(session, probe, hits, settings)


def answer(engine: Engine, settings: Settings, username: str, verdict: str, note: str = "") -> int:
    """The recognizer takes their next task and answers it, through the queue itself."""
    with Session(engine, expire_on_commit=False) as s:
        user = s.exec(select(User).where(User.username == username)).one()
        task = review.next_task(s, user, settings)
        assert task is not None, f"no task for {username}"
        candidate_id = task.candidate.id
        review.submit_verdict(s, user, task.slot_id, verdict, note, settings=settings)
        s.commit()  # the caller owns the transaction (triage.transaction)
        return candidate_id  # type: ignore[return-value]


def set_qualification(engine: Engine, username: str, qualification: Qualification) -> None:
    with Session(engine) as s:
        user = s.exec(select(User).where(User.username == username)).one()
        user.qualification = qualification.value
        s.add(user)
        s.commit()


def seed(world: World) -> None:
    """Accounts of every role; a flag (both same), a dispute, a cleared candidate, one still under review."""
    engine, settings = world.engine, world.settings
    officer = add_user(engine, "olive", Role.officer)
    for name in ("ann", "bob", "cara"):
        add_user(engine, name, Role.recognizer)
    add_user(engine, "boss", Role.manager)
    add_user(engine, "root", Role.admin)
    add_user(engine, "rico", Role.officer, Role.recognizer)  # an officer who also reviews
    for name in ("ann", "bob"):
        set_qualification(engine, name, Qualification.qualified)
    store = ImageStore(Path(settings.images_dir))
    with Session(engine, expire_on_commit=False) as s:
        collins = subject_with_photo(s, store, "Eileen Collins", "astronaut", "W-2026-0412", priority=1)
        hopper = subject_with_photo(s, store, "Grace Hopper", "hopper", "W-2026-0588")
        # The flag: one face, two subjects proposed; the second (lower) rank is cleared.
        flag_sighting, probe = sighting_of(s, store, officer, "astronaut", "Namba station, north exit")
        flagged, cleared = candidates_for(s, settings, probe, [(collins, 0.91), (hopper, 0.63)])
        # The dispute: Grace Hopper's face on another sighting.
        dispute_sighting, probe2 = sighting_of(s, store, officer, "hopper", "Umeda, south gate")
        (disputed,) = candidates_for(s, settings, probe2, [(hopper, 0.78)])
        s.commit()
        world.ids.update(subject_collins=collins.pk, subject_hopper=hopper.pk, flag_sighting=flag_sighting.pk,
                         dispute_sighting=dispute_sighting.pk, flagged=flagged.pk, cleared=cleared.pk,
                         disputed=disputed.pk, officer=officer.pk)
    # The queue serves the most urgent first: Collins (priority 1) before Hopper.
    for who, verdicts in (("ann", ("same", "different", "same")), ("bob", ("same", "different", "different"))):
        for verdict in verdicts:
            answer(engine, settings, who, verdict, note="ears differ" if (who, verdict) == ("bob", "different")
                   else "")
    with Session(engine) as s:
        world.ids["flag"] = s.exec(select(Flag)).one().pk
        statuses = {c.id: c.status for c in s.exec(select(Candidate)).all()}
    assert statuses[world.ids["flagged"]] == "flagged" and statuses[world.ids["disputed"]] == "disputed", statuses


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_world(db_templates: Any, **overrides: Any) -> Iterator[World]:
    """A migrated database of its own, seeded, and the app serving it on a free port."""
    import uvicorn

    from miatari.app import create_app

    # Kept until the test process ends: the first app a process starts puts that process's Prometheus
    # files in its data folder (triage.prom.setup_process, once per process), and later tests write there.
    tmp_dir = tempfile.mkdtemp(prefix="miatari-pages-")
    atexit.register(shutil.rmtree, tmp_dir, ignore_errors=True)
    tmp = Path(tmp_dir)
    url = db_templates.new(tmp / "pages.db")
    settings = make_settings(tmp, url, **{"lead_threshold": 0.5, **overrides})
    engine = make_engine(url)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name=f"pages-{port}", daemon=True)
    thread.start()
    world = World(f"http://127.0.0.1:{port}", settings, engine, tmp)
    try:
        _wait_until_up(world.url)
        seed(world)
        yield world
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        engine.dispose()
        if hasattr(db_templates, "drop"):
            db_templates.drop(url)


def _wait_until_up(url: str) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the live server did not start")


@contextmanager
def chromium() -> Iterator[Any]:
    """The system's headless Chromium through Playwright (nothing downloaded), or a skip with the reason."""
    reason = ""
    if not CHROMIUM.exists():
        reason = f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = reason or "the playwright package is not installed"
    if reason:
        if os.environ.get("MIATARI_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + "; a browser is mandatory here (MIATARI_REQUIRE_BROWSER=1)")
        pytest.skip(reason)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def log_in(browser: Any, world: World, username: str, *, password: str = TEST_PASSWORD, phone: bool = False,
           **context_options: Any) -> Any:
    """A fresh browser context (desktop, or a phone with touch) logged in through the real form; its page."""
    context = browser.new_context(base_url=world.url, **(PHONE if phone else DESKTOP), **context_options)
    page = context.new_page()
    page.goto("/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda u: "/login" not in u)
    return page


def screenshot(page: Any, name: str) -> Path:
    """Save a full-page PNG to $MIATARI_SCREENSHOTS (e.g. docs/screenshots) or a temporary folder."""
    folder = Path(os.environ.get("MIATARI_SCREENSHOTS") or Path(tempfile.gettempdir()) / "miatari-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def no_sideways_scroll(page: Any) -> int:
    """The page's scrollable width (compare with the viewport's: nothing may be wider than the screen)."""
    return int(page.evaluate("document.scrollingElement.scrollWidth"))
