"""A real Chromium: two recognizers press N, see the two eye crops, press S; the flag shows the warning,
the officer reports what happened, a manager closes the flag."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from tests.factories import image_store, make_candidate
from triage.models import Flag, ReviewSlot, Role

pytestmark = pytest.mark.browser


def test_two_recognizers_keyboard_only_then_flag_page(live_server, browser_login, engine, user_factory):
    officer = user_factory(Role.officer, username="officer")
    user_factory(Role.recognizer, username="ann")
    user_factory(Role.recognizer, username="bob")
    server = live_server(known_answer_share=0.0)
    with Session(engine, expire_on_commit=False) as s:
        make_candidate(s, image_store(server.settings), server.settings, officer.id)
        s.commit()

    for name in ("ann", "bob"):
        page = browser_login(server, name)
        page.goto("/review")
        page.keyboard.press("n")
        page.wait_for_url("**/review/slots/*")
        crops = page.locator("img.eyes")
        assert crops.count() == 2
        # Both crops loaded (the holder may fetch them) and shown at the same size.
        page.wait_for_function(
            "Array.from(document.querySelectorAll('img.eyes')).every(i => i.complete && i.naturalWidth > 0)")
        boxes = [crops.nth(i).bounding_box() for i in range(2)]
        assert boxes[0]["width"] == boxes[1]["width"] and boxes[0]["height"] == boxes[1]["height"]
        assert page.eval_on_selector("img.eyes", "i => getComputedStyle(i).imageRendering") == "auto"
        page.keyboard.press("s")
        # The next task (here: none left) is swapped in at once; the address follows, Back leaves the review.
        page.wait_for_selector("#queue-empty")
        page.wait_for_url("**/review")

    with Session(engine) as s:
        flag = s.exec(select(Flag)).one()
    page = browser_login(server, "officer")
    page.goto(f"/flags/{flag.id}")
    assert "investigative lead — confirm identity before any action" in page.inner_text(".lead-warning").lower()
    assert page.locator("img.eyes").count() == 2
    # The officer reports; a manager reads the report, then acknowledges and closes the flag.
    assert page.locator("#acknowledge").count() == 0 and page.locator("#close").count() == 0
    page.select_option("select[name=outcome]", "arrested")
    page.fill("#reports textarea[name=note]", "arrested at the station exit")
    page.click("#report")
    page.wait_for_selector("#reports td:has-text('arrested at the station exit')")
    user_factory(Role.manager, username="boss")
    page = browser_login(server, "boss")
    page.goto(f"/flags/{flag.id}")
    assert "arrested at the station exit" in page.inner_text("#reports")
    page.click("#acknowledge")
    page.wait_for_selector("#close")
    page.select_option("select[name=reason]", "arrested")
    page.click("#close")
    page.wait_for_selector("h1 .badge.closed")
    with Session(engine) as s:
        assert s.get(Flag, flag.id).status == "closed"


def test_one_key_per_task_undo_zoom_contrast_skip_and_back(live_server, browser_login, engine, user_factory):
    officer = user_factory(Role.officer, username="officer")
    user_factory(Role.recognizer, username="ann")
    server = live_server(known_answer_share=0.0, verdict_undo_seconds=3.0)
    with Session(engine, expire_on_commit=False) as s:
        for _ in range(3):
            make_candidate(s, image_store(server.settings), server.settings, officer.id)
        s.commit()
    page = browser_login(server, "ann", viewport={"width": 1366, "height": 900})
    page.goto("/review")
    page.keyboard.press("n")
    page.wait_for_url("**/review/slots/*")
    first = page.get_attribute("#task-area", "data-slot")
    # Same on the left, cannot tell in the middle, different on the right; not told by colour alone.
    xs = [page.locator(sel).bounding_box()["x"] for sel in ("#v-same", "#v-cannot", "#v-different")]
    assert xs == sorted(xs)
    colours = {page.eval_on_selector(sel, "b => getComputedStyle(b).backgroundColor")
               for sel in ("#v-same", "#v-cannot", "#v-different")}
    assert len(colours) == 3
    # Z zooms both crops together; B raises contrast on both.
    before = [page.locator("img.eyes").nth(i).bounding_box()["width"] for i in range(2)]
    page.keyboard.press("z")
    page.keyboard.press("b")
    after = [page.locator("img.eyes").nth(i).bounding_box()["width"] for i in range(2)]
    assert after[0] == after[1] and after[0] > before[0]
    assert all("contrast" in page.eval_on_selector_all("img.eyes", "i => i.map(x => getComputedStyle(x).filter)")[n]
               for n in range(2))
    # One key: the next task at once, the last verdict undoable; U brings it back.
    page.keyboard.press("d")
    page.wait_for_function(f"() => document.querySelector('#task-area').dataset.slot !== '{first}'")
    assert page.locator("#undo-bar").is_visible() and "Different person" in page.inner_text("#undo-bar")
    assert page.evaluate("document.querySelector('#task-area').classList.contains('zoomed')")  # the view stays
    page.keyboard.press("u")
    page.wait_for_function(f"() => document.querySelector('#task-area').dataset.slot === '{first}'")
    with Session(engine) as s:
        assert s.get(ReviewSlot, int(first)).pending_verdict is None
    # R gives it back and serves another; then a verdict, and it counts once the window passed.
    page.keyboard.press("r")
    page.wait_for_function(f"() => document.querySelector('#task-area').dataset.slot !== '{first}'")
    second = page.get_attribute("#task-area", "data-slot")
    page.keyboard.press("s")
    page.wait_for_selector("#undo-bar")
    page.wait_for_selector("#undo-bar:has-text('counts now')", timeout=10_000)
    # The page asked the server to count it (no worker runs here): settled within moments.
    for _ in range(40):
        with Session(engine) as s:
            if s.get(ReviewSlot, int(second)).verdict == "same":
                break
        page.wait_for_timeout(250)
    with Session(engine) as s:
        assert s.get(ReviewSlot, int(second)).verdict == "same"
        assert s.get(ReviewSlot, int(first)).reviewer_id is None
    # Back leaves the review pages for the queue, not an error.
    page.go_back()
    page.wait_for_url("**/review")
    assert page.locator(".msg.error").count() == 0
