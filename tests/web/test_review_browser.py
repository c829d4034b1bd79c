"""A real Chromium: two recognizers press N, see the two eye crops, press S; the flag shows the warning,
the officer reports what happened, a manager closes the flag."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from tests.factories import image_store, make_candidate
from triage.models import Flag, Role

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
