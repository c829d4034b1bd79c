"""The whole story in a real Chromium against the real server, the real matcher and the packaged faces.

A manager enrols two wanted people; an officer on a phone sends a sighting of each; two recognizers,
each in a browser of their own and by keyboard only, work the queue: both say *same person* on the first
(a flag, which the manager sees) and split on the second (disputed).  The manager escalates it, two fresh
recognizers settle it.  Separately, a lease lapses while its recognizer looks at the task, and the page says
so before anything is typed.
"""

from __future__ import annotations

import pytest
from sqlmodel import Session

from tests.conftest import add_user
from tests.e2e import helpers as h
from tests.factories import image_store, make_candidate
from triage.models import ReviewSlot, Role

pytestmark = [pytest.mark.browser, pytest.mark.model]


def test_enrol_sight_review_flag_dispute_escalate_settle(browser, story_server, story_engine, tmp_path):
    server, engine = story_server, story_engine
    add_user(engine, "chief", Role.manager)
    add_user(engine, "olive", Role.officer)
    for name in ("rita", "ravi", "rosa", "remy"):
        add_user(engine, name, Role.recognizer)
    manager = h.login(browser, server, "chief", **h.DESKTOP)
    officer = h.login(browser, server, "olive", **h.PHONE)
    rita = h.login(browser, server, "rita", **h.DESKTOP)
    ravi = h.login(browser, server, "ravi", **h.DESKTOP)

    # The first wanted person, and a sighting of her: the only subject, so the only candidate.
    h.enrol_subject(manager, "Eileen Astra", "W-2026-001", h.save_jpeg(h.astronaut(), tmp_path, "astronaut.jpg"))
    first = h.upload_sighting(officer, h.save_jpeg(h.sighting_of(h.astronaut()), tmp_path, "sighting-1.jpg"),
                              "Central station, north exit")
    (cand,) = h.wait_matched(engine, first)

    # Both recognizers say "same person", one key each; the first sees the task, the undo bar after it.
    h.open_queue(rita)
    h.crops_shown(rita)
    h.screenshot(rita, "review-task")
    rita.keyboard.press("s")
    rita.wait_for_selector("#undo-bar")
    h.screenshot(rita, "review-undo")
    assert h.flag_for(engine, cand.pk) is None
    assert h.work_queue(ravi, "s")
    flag = h.wait_for(lambda: h.flag_for(engine, cand.pk), 30, "the flag")
    h.check_manager_sees_flag(manager, flag.id)
    h.screenshot(manager, "flag")

    # The second: the recognizers split, so it ends disputed, with no flag.
    h.enrol_subject(manager, "Grace Ledger", "W-2026-002", h.save_jpeg(h.grace_hopper(), tmp_path, "grace.jpg"))
    second = h.upload_sighting(officer, h.save_jpeg(h.sighting_of(h.grace_hopper(), angle=-3), tmp_path,
                                                    "sighting-2.jpg"), "Harbour road")
    split = [c.pk for c in h.wait_matched(engine, second)]
    assert split
    assert h.work_queue(rita, "s") and h.work_queue(ravi, "d")
    for cid in split:
        h.wait_status(engine, cid, "disputed", 30, "the dispute")
        assert h.flag_for(engine, cid) is None

    # The manager escalates; two recognizers who never saw it settle it, again by keyboard.
    h.escalate_disputes(manager, split)
    h.screenshot(manager, "disputes")
    assert h.work_queue(rita, "d") == [] and h.work_queue(ravi, "d") == []  # never shown an escalation again
    for name in ("rosa", "remy"):
        assert h.work_queue(h.login(browser, server, name, **h.DESKTOP), "d")
    for cid in split:
        h.wait_status(engine, cid, "cleared", 30, "the escalated round to settle")
        assert h.flag_for(engine, cid) is None


def test_a_lapsing_lease_is_said_before_a_verdict_is_typed(browser, live_server, engine, user_factory):
    officer = user_factory(Role.officer, username="officer")
    user_factory(Role.recognizer, username="lena")
    server = live_server(lease_seconds=10, lease_max_seconds=20)
    with Session(engine, expire_on_commit=False) as s:
        make_candidate(s, image_store(server.settings), server.settings, officer.id)
        s.commit()
    page = h.login(browser, server, "lena", **h.DESKTOP)
    h.open_queue(page)
    slot = h.crops_shown(page)
    # Under a minute from the start: warned at once.
    page.wait_for_selector("#lease.warn")
    # At work: the page renews the lease (past its first 10 s), up to its maximum of 20 s.
    page.mouse.move(200, 200)
    page.wait_for_timeout(4000)
    page.mouse.move(300, 260)
    page.wait_for_timeout(7000)
    assert page.locator("#lease-lapsed").is_hidden()
    page.wait_for_selector("#lease-lapsed", state="visible", timeout=15_000)
    assert "ran out" in page.inner_text("#lease-lapsed")
    assert page.locator("#v-same").is_disabled()
    h.screenshot(page, "review-lease-lapsed")
    page.keyboard.press("s")  # nothing is sent: the verdict could not count
    page.wait_for_timeout(500)
    with Session(engine) as s:
        assert s.get_one(ReviewSlot, slot).pending_verdict is None and s.get_one(ReviewSlot, slot).verdict is None
    # N takes a task again: the same one, still free and still theirs to take.
    page.keyboard.press("n")
    page.wait_for_function(f"() => document.querySelector('#task-area').dataset.slot === '{slot}' && "
                           "!document.querySelector('#lease-lapsed:not([hidden])')")
