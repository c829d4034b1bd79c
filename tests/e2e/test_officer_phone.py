"""The officer's daily loop on a phone (390×844, touch) in a real Chromium: one-handed upload, the sighting
page in words with per-photo progress, local times, "report another"."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlmodel import Session, select

from tests.e2e.pages_world import (
    World,
    chromium,
    log_in,
    no_sideways_scroll,
    photo_file,
    running_world,
    screenshot,
)
from triage.models import Sighting, SightingPhoto

pytestmark = pytest.mark.browser

PHONE_WIDTH = 390
MIN_TARGET_PX = 44
LOADED = "Array.from(document.querySelectorAll('{}')).every(i => i.complete && i.naturalWidth > 0)"


@pytest.fixture(scope="module")
def world(db_templates: Any) -> Iterator[World]:
    with running_world(db_templates) as w:
        yield w


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def _box(page: Any, selector: str) -> dict[str, float]:
    box = page.locator(selector).bounding_box()
    assert box is not None, f"{selector} is not rendered"
    return box


def test_phone_upload_one_handed_then_report_another(world: World, browser: Any) -> None:
    page = log_in(browser, world, "olive", phone=True, timezone_id="Asia/Tokyo")
    page.goto("/sightings/new")
    assert no_sideways_scroll(page) <= PHONE_WIDTH
    # The native file inputs are really hidden; the large buttons in front of them are what one taps.
    for label in ("#take-photo", "#choose-photos"):
        box = _box(page, label)
        assert box["height"] >= MIN_TARGET_PX and box["width"] >= MIN_TARGET_PX * 2, (label, box)
        native = _box(page, f"{label} input[type=file]")
        assert native["width"] <= 1 and native["height"] <= 1
    assert page.locator("#take-photo input").get_attribute("capture") == "environment"
    # Send is large and stays at the bottom of the screen while the form scrolls.
    send = _box(page, "#send")
    assert send["height"] >= MIN_TARGET_PX and send["width"] >= PHONE_WIDTH - 40
    assert abs(send["y"] + send["height"] - 844) < 24
    assert page.eval_on_selector(".send-bar", "e => getComputedStyle(e).position") == "fixed"
    assert page.eval_on_selector("#send", "e => getComputedStyle(e).minHeight") != "auto"

    files = [photo_file(world.tmp, "astronaut"), photo_file(world.tmp, "hopper"),
             photo_file(world.tmp, "astronaut", "PNG")]
    page.set_input_files("#choose-photos input", [str(f) for f in files])
    thumbs = page.locator("#photo-list li img")
    thumbs.first.wait_for()
    assert thumbs.count() == 3
    page.wait_for_function(LOADED.format("#photo-list img"))
    # Thumbnails wrap in rows inside the screen, never push it sideways.
    boxes = [thumbs.nth(i).bounding_box() for i in range(3)]
    assert all(b["x"] >= 0 and b["x"] + b["width"] <= PHONE_WIDTH for b in boxes)
    assert no_sideways_scroll(page) <= PHONE_WIDTH
    assert page.inner_text("#send") == "Send sighting (3 photos)"
    # Removing one by touch works too.
    page.locator("#photo-list li button").nth(2).tap()
    assert thumbs.count() == 2
    page.fill("input[name=location_text]", "Dotonbori bridge")
    screenshot(page, "officer-phone-upload")

    page.locator("#send").tap()
    page.wait_for_url("**/sightings/*?sent=1")
    assert page.locator("#sent").is_visible()
    with Session(world.engine) as s:
        sighting = s.exec(select(Sighting).where(Sighting.location_text == "Dotonbori bridge")).one()
        assert len(s.exec(select(SightingPhoto).where(SightingPhoto.sighting_id == sighting.id)).all()) == 2
    text = page.inner_text("main")
    # The outcome in words: never the stored code.
    assert "Waiting to be matched" in text and "queued" not in text
    states = page.locator(".photo-state").all_inner_texts()
    assert states == ["waiting its turn", "waiting its turn"]
    # Times are stored in UTC and shown in the phone's time zone (Tokyo), with UTC kept as the tooltip.
    seen = page.locator("dl.facts time").first
    assert "UTC" in (seen.get_attribute("title") or "") and "UTC" not in seen.inner_text()
    assert "GMT+9" in seen.inner_text() or "JST" in seen.inner_text()
    assert no_sideways_scroll(page) <= PHONE_WIDTH
    another = page.locator("#report-another")
    assert _box(page, "#report-another")["height"] >= MIN_TARGET_PX
    another.tap()
    page.wait_for_url("**/sightings/new")
    assert page.locator("#photo-list li").count() == 0
    page.context.close()


def test_sighting_page_follows_each_photo_while_matching_runs(world: World, browser: Any) -> None:
    page = log_in(browser, world, "olive", phone=True)
    page.goto("/sightings/new")
    page.set_input_files("#choose-photos input", [str(photo_file(world.tmp, "hopper")),
                                                  str(photo_file(world.tmp, "astronaut"))])
    page.fill("input[name=location_text]", "Shinsekai")
    page.locator("#send").tap()
    page.wait_for_url("**/sightings/*?sent=1")
    sid = int(page.url.split("?")[0].rsplit("/", 1)[1])
    assert page.locator("#sighting-status[hx-get]").count() == 1  # it polls while matching runs
    with Session(world.engine) as s:
        sighting = s.get(Sighting, sid)
        sighting.status = "matching"  # type: ignore[union-attr]
        s.add(sighting)
        s.commit()
    page.wait_for_selector("#status-words:text-is('Looking for faces')", timeout=10_000)
    assert page.locator(".photo-state").all_inner_texts() == ["looking for faces…"] * 2
    # The job ends as it does for photos where no face is found; the page says so, then stops polling.
    with Session(world.engine) as s:
        sighting = s.get(Sighting, sid)
        sighting.status = "no_face"  # type: ignore[union-attr]
        for photo in s.exec(select(SightingPhoto).where(SightingPhoto.sighting_id == sid)).all():
            photo.faces_found = 0
            s.add(photo)
        s.add(sighting)
        s.commit()
    page.wait_for_selector("#status-words:text-is('No face found')", timeout=10_000)
    text = page.inner_text("main")
    assert "no_face" not in text and "No face was found in these photos" in text
    assert page.locator(".photo-state").all_inner_texts() == ["no face found"] * 2
    assert page.locator("#sighting-status[hx-get]").count() == 0
    assert no_sideways_scroll(page) <= PHONE_WIDTH
    page.context.close()


def test_no_photo_is_refused_on_the_page_and_nothing_is_sent(world: World, browser: Any) -> None:
    page = log_in(browser, world, "olive", phone=True)
    with Session(world.engine) as s:
        before = len(s.exec(select(Sighting)).all())
    page.goto("/sightings/new")
    page.locator("#send").tap()
    assert page.inner_text("#upload-error") == "Add at least one photo."
    assert page.url.endswith("/sightings/new")
    with Session(world.engine) as s:
        assert len(s.exec(select(Sighting)).all()) == before
    page.context.close()
