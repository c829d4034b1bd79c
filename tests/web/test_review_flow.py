"""The task page's one-key flow without a browser: htmx fragments, plain-form redirects, undo, skip, heartbeat."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from tests.conftest import login
from tests.factories import image_store, make_candidate
from triage import clock
from triage.models import AuditEntry, Flag, ReviewSlot, Role

HX = {"HX-Request": "true"}
UNDO = 5.0


@pytest.fixture
def two(engine, settings, user_factory):
    officer = user_factory(Role.officer, username="officer")
    for name in ("ann", "bob"):
        user_factory(Role.recognizer, username=name)
    store = image_store(settings)
    with Session(engine, expire_on_commit=False) as s:
        cands = [make_candidate(s, store, settings, officer.id) for _ in range(2)]
        s.commit()
    return cands


def _as(make_client, username, **overrides):
    c = make_client(known_answer_share=0.0, verdict_undo_seconds=UNDO, **overrides)
    login(c, username)
    return c


def _take(client) -> int:
    r = client.post("/review/next", follow_redirects=False)
    assert r.status_code == 303, r.text
    return int(r.headers["location"].rsplit("/", 1)[1])


def _key(client, slot_id) -> str:
    return client.get(f"/review/slots/{slot_id}").context["idempotency_key"]


def test_a_verdict_swaps_in_the_next_task_and_counts_after_the_window(make_client, two, engine):
    ann, bob = _as(make_client, "ann"), _as(make_client, "bob")
    with clock.frozen() as c:
        first_b = _take(bob)
        bob.post(f"/review/slots/{first_b}/verdict", data={"verdict": "same", "idempotency_key": _key(bob, first_b)})
        first = _take(ann)
        r = ann.post(f"/review/slots/{first}/verdict", data={"verdict": "same", "idempotency_key": _key(ann, first)},
                     headers=HX)
        assert r.status_code == 200 and r.template.name == "_review_task.html"
        nxt = r.context["task"]
        assert nxt is not None and nxt.slot_id != first
        assert r.headers["HX-Replace-Url"] == f"/review/slots/{nxt.slot_id}"
        assert r.context["pending"].slot_id == first and r.context["done_today"] == 1
        assert f'hx-post="/review/slots/{first}/undo"' in r.text and 'data-key="u"' in r.text
        assert "<html" not in r.text  # a fragment, not a page
        with Session(engine) as s:
            assert s.exec(select(Flag)).all() == []  # both said same, but ann's can still be undone
        c.advance(seconds=UNDO + 0.5)
        # Each author's next request settles their own (the worker's tick settles those of people who left).
        assert ann.get("/review").status_code == 200
        with Session(engine) as s:
            assert s.exec(select(Flag)).all() == []
        assert bob.get("/review").status_code == 200
    with Session(engine) as s:
        assert len(s.exec(select(Flag)).all()) == 1


def test_without_javascript_the_verdict_redirects_to_the_next_task_and_back_lands_on_the_queue(make_client, two):
    ann = _as(make_client, "ann")
    first = _take(ann)
    r = ann.post(f"/review/slots/{first}/verdict", data={"verdict": "different", "idempotency_key": _key(ann, first)},
                 follow_redirects=False)
    assert r.status_code == 303
    nxt = int(r.headers["location"].rsplit("/", 1)[1])
    assert nxt != first
    page = ann.get(f"/review/slots/{nxt}")
    assert page.context["pending"].slot_id == first and f'action="/review/slots/{first}/undo"' in page.text
    # Back onto the answered task: the queue page, not an error.
    back = ann.get(f"/review/slots/{first}", follow_redirects=False)
    assert back.status_code == 303 and back.headers["location"] == "/review"
    # Someone else's task still answers exactly like a missing one.
    bob = _as(make_client, "bob")
    assert bob.get(f"/review/slots/{nxt}").status_code == 404


def test_undo_brings_the_task_back_and_gives_the_next_one_back(make_client, two, engine):
    ann = _as(make_client, "ann")
    first = _take(ann)
    r = ann.post(f"/review/slots/{first}/verdict", data={"verdict": "same", "idempotency_key": _key(ann, first)},
                 headers=HX)
    shown = r.context["task"].slot_id
    r = ann.post(f"/review/slots/{first}/undo", headers=HX)
    assert r.status_code == 200 and r.context["task"].slot_id == first and r.context["pending"] is None
    assert "Verdict undone" in r.text
    with Session(engine) as s:
        assert s.get_one(ReviewSlot, first).pending_verdict is None
        assert s.get_one(ReviewSlot, shown).reviewer_id is None
    # Undo without the CSRF token is refused and changes nothing.
    r = ann.post(f"/review/slots/{first}/verdict", data={"verdict": "same", "idempotency_key": _key(ann, first)},
                 headers=HX)
    token = ann.headers.pop("X-CSRF-Token")
    refused = ann.post(f"/review/slots/{first}/undo", headers=HX)
    ann.headers["X-CSRF-Token"] = token
    assert refused.status_code == 403
    with Session(engine) as s:
        assert s.get_one(ReviewSlot, first).pending_verdict == "same"


def test_skip_gives_the_task_back_and_serves_another(make_client, two, engine):
    ann = _as(make_client, "ann")
    first = _take(ann)
    r = ann.post(f"/review/slots/{first}/release", headers=HX)
    assert r.status_code == 200 and r.context["task"].slot_id != first and "Task given back" in r.text
    with Session(engine) as s:
        assert s.get_one(ReviewSlot, first).reviewer_id is None
        assert s.exec(select(AuditEntry).where(AuditEntry.action == "review.release")).one().actor == "ann"


def test_heartbeat_renews_and_says_when_the_lease_lapsed(make_client, two, engine):
    ann = _as(make_client, "ann", lease_seconds=60, lease_max_seconds=100)
    with clock.frozen() as c:
        slot = _take(ann)
        page = ann.get(f"/review/slots/{slot}")
        assert f'data-lease-left="{page.context["lease_left"]}"' in page.text and page.context["lease_left"] == 60
        c.advance(seconds=40)
        beat = ann.post(f"/review/slots/{slot}/heartbeat")
        assert beat.status_code == 200 and beat.json() == {"state": "held", "lease_left": 60, "lease_limit_left": 60}
        c.advance(seconds=61)
        lapsed = ann.post(f"/review/slots/{slot}/heartbeat")
    assert lapsed.status_code == 409 and lapsed.json()["state"] == "lease_expired"
    assert "ran out" in lapsed.json()["message"]
    bob = _as(make_client, "bob")
    assert bob.post(f"/review/slots/{slot}/heartbeat").status_code == 404


def test_a_verdict_on_a_lapsed_lease_is_said_in_the_task_area(make_client, two, engine):
    ann = _as(make_client, "ann")
    with clock.frozen() as c:
        slot = _take(ann)
        key = _key(ann, slot)
        c.advance(seconds=301)
        r = ann.post(f"/review/slots/{slot}/verdict", data={"verdict": "same", "idempotency_key": key}, headers=HX)
    assert r.status_code == 200 and r.template.name == "_review_task.html" and "not counted" in r.text
    with Session(engine) as s:
        assert s.get_one(ReviewSlot, slot).verdict is None and s.get_one(ReviewSlot, slot).pending_verdict is None
