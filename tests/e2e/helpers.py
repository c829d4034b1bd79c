"""What the end-to-end stories share: the packaged faces, logged-in pages per role, screenshots, and the steps.

Only the faces that ship with the test dependencies are used (``skimage.data.astronaut()`` and matplotlib's
``grace_hopper.jpg``), so screenshots may be committed.  A sighting is a transformed copy of one (cropped,
rescaled, slightly rotated, recompressed) so the real matcher has to rank it.

Steps are small functions taking a Playwright page; each returns what the next step needs.  Pages of the
officer and the manager are checked by ``check_*`` hooks that more tests can extend (append to
``OFFICER_CHECKS`` / ``MANAGER_FLAG_CHECKS``: each is called with the page and the ids involved).
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from triage.models import Candidate, Flag, Sighting

DESKTOP = {"viewport": {"width": 1366, "height": 900}}
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True, "device_scale_factor": 2}
MATCH_TIMEOUT_S = 240
SCREENSHOTS_ENV = "MIATARI_SCREENSHOTS"

# Hooks: more assertions on the officer's sighting page and the manager's flag page.
OFFICER_CHECKS: list[Callable[[Any, int], None]] = []
MANAGER_FLAG_CHECKS: list[Callable[[Any, int], None]] = []


# The packaged faces
def astronaut() -> Image.Image:
    import skimage.data

    return Image.fromarray(skimage.data.astronaut())


def grace_hopper() -> Image.Image:
    import matplotlib

    return Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB")


def sighting_of(face: Image.Image, *, angle: float = 4.0, scale: float = 0.8, crop: float = 0.06) -> Image.Image:
    """A transformed copy, as a street camera might see it: cropped, rescaled, slightly rotated."""
    w, h = face.size
    dx, dy = int(w * crop), int(h * crop)
    out = face.crop((dx, dy, w - dx // 2, h - dy // 2)).rotate(angle, resample=Image.Resampling.BICUBIC,
                                                                fillcolor=(90, 90, 90))
    out = out.resize((int(out.width * scale), int(out.height * scale)), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=82)
    return Image.open(io.BytesIO(buf.getvalue()))


def save_jpeg(image: Image.Image, folder: Path, name: str) -> Path:
    path = folder / name
    image.convert("RGB").save(path, format="JPEG", quality=92)
    return path


def login(browser: Any, server: Any, username: str, **context_options: Any) -> Any:
    """A logged-in page of its own browser context, patient with a busy machine."""
    from tests.live import login_page

    page = login_page(browser, server, username, **context_options)
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    OPEN_CONTEXTS.append(page.context)
    return page


PAGE_TIMEOUT_MS = 60_000
# Closed after each test (tests/e2e/conftest.py).
OPEN_CONTEXTS: list[Any] = []


# Screenshots
def screenshot_dir() -> Path:
    """``MIATARI_SCREENSHOTS`` (e.g. docs/screenshots, by ``make screenshots``), else a temporary folder."""
    configured = os.environ.get(SCREENSHOTS_ENV)
    path = Path(configured) if configured else Path(tempfile.gettempdir()) / "miatari-screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


def screenshot(page: Any, name: str, *, full_page: bool = False) -> Path:
    path = screenshot_dir() / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


# Waiting on the database (the pages are asserted; the database says when the background work is done)
def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def candidates_of(engine: Engine, sighting_id: int) -> list[Candidate]:
    with Session(engine) as s:
        return list(s.exec(select(Candidate).where(Candidate.sighting_id == sighting_id)
                           .order_by(col(Candidate.id))).all())


def wait_matched(engine: Engine, sighting_id: int) -> list[Candidate]:
    def done() -> list[Candidate] | None:
        with Session(engine) as s:
            sighting = s.get(Sighting, sighting_id)
            status = sighting.status if sighting else ""
        assert status != "failed", f"matching sighting {sighting_id} failed"
        return candidates_of(engine, sighting_id) if status == "matched" else None

    return wait_for(done, MATCH_TIMEOUT_S, f"sighting {sighting_id} to be matched")


def flag_for(engine: Engine, candidate_id: int) -> Flag | None:
    with Session(engine) as s:
        return s.exec(select(Flag).where(Flag.candidate_id == candidate_id)).first()


def status_of(engine: Engine, candidate_id: int) -> str:
    with Session(engine) as s:
        c = s.get(Candidate, candidate_id)
        return c.status if c else ""


def wait_status(engine: Engine, candidate_id: int, status: str, timeout: float, what: str) -> None:
    wait_for(lambda: status_of(engine, candidate_id) == status, timeout, what)


# Steps: manager
def enrol_subject(page: Any, name: str, case_ref: str, photo: Path) -> int:
    """The manager creates a subject and enrols one reference photo through the watchlist pages."""
    page.goto("/watchlist/new")
    page.fill("input[name=name]", name)
    page.fill("input[name=case_ref]", case_ref)
    page.fill("input[name=priority]", "2")
    page.click("form[action='/watchlist/new'] button[type=submit]")
    page.wait_for_url("**/watchlist/*")
    subject_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    page.set_input_files("input[name=photo]", str(photo))
    # Enrolment runs the face model in the request (loaded on first use: slow on a busy machine).
    with page.expect_navigation(timeout=MATCH_TIMEOUT_S * 1000):
        page.click(f"form[action='/watchlist/{subject_id}/photos'] button[type=submit]", no_wait_after=True)
    page.wait_for_selector(".refphoto img")
    return subject_id


def escalate_disputes(page: Any, candidate_ids: list[int]) -> None:
    """The manager escalates each disputed candidate from the disputes page, confirming on the next page."""
    for cid in candidate_ids:
        page.goto("/disputes")
        page.click(f"a.escalate[href='/disputes/{cid}/escalate']")
        page.wait_for_selector("#confirm-escalate")
        page.click("#confirm-escalate")
        page.wait_for_load_state("load")


def check_manager_sees_flag(page: Any, flag_id: int) -> None:
    page.goto("/flags")
    assert page.locator(f"a[href='/flags/{flag_id}']").count() >= 1
    page.goto(f"/flags/{flag_id}")
    assert "investigative lead" in page.inner_text(".lead-warning").lower()
    assert page.locator("img.eyes").count() == 2
    for check in MANAGER_FLAG_CHECKS:
        check(page, flag_id)


# Steps: officer
def upload_sighting(page: Any, photo: Path, place: str) -> int:
    """The officer, on a phone, chooses a photo, says where, sends; returns the sighting id."""
    page.goto("/sightings/new")
    page.set_input_files("input[data-photo-input]:not([capture])", str(photo))
    page.fill("input[name=location_text]", place)
    if _touch(page):
        page.tap("#send")
    else:
        page.click("#send")
    page.wait_for_url(lambda url: re.search(r"/sightings/\d+(\?sent=1)?$", url) is not None)
    found = re.search(r"/sightings/(\d+)", page.url)
    assert found is not None, page.url
    sighting_id = int(found.group(1))
    for check in OFFICER_CHECKS:
        check(page, sighting_id)
    return sighting_id


def _touch(page: Any) -> bool:
    return bool(page.evaluate("'ontouchstart' in window"))


# Steps: recognizer (keyboard only)
def open_queue(page: Any) -> None:
    page.goto("/review")
    page.keyboard.press("n")


def crops_shown(page: Any, timeout: float = 30_000) -> int:
    """Wait until the task's two eye crops are decoded on screen; returns the slot id shown."""
    page.wait_for_function(
        "() => { const i = document.querySelectorAll('#task-area img.eyes');"
        " return i.length === 2 && Array.from(i).every(x => x.complete && x.naturalWidth > 0); }", timeout=timeout)
    return int(page.get_attribute("#task-area", "data-slot"))


def work_queue(page: Any, key: str | Callable[[int], str], limit: int = 20) -> list[int]:
    """Answer every task this recognizer is served, one key each, until the queue is empty; the slots answered."""
    open_queue(page)
    answered: list[int] = []
    for _ in range(limit):
        # A task, the task area's empty queue, or (nothing at all from the start) the queue page's message.
        page.wait_for_selector("#task-area #verdict-form, #task-area #queue-empty, main > .msg.info")
        if page.locator("#task-area #queue-empty, main > .msg.info").count():
            return answered
        slot = crops_shown(page)
        page.keyboard.press(key(slot) if callable(key) else key)
        page.wait_for_function(f"() => (document.querySelector('#task-area') || {{}}).dataset?.slot !== '{slot}'")
        answered.append(slot)
    raise AssertionError("the queue did not run dry")
