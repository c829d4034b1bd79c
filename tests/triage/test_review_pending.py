"""The task page's verdicts in their undo window, lease renewal, skips, escalated leases, and the waiting count."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlmodel import Session, col, select

from tests.conftest import make_settings
from tests.factories import image_store, make_candidate
from triage import clock, qualification, review
from triage.models import AuditEntry, Candidate, Flag, ReviewSlot, Role, User
from triage.review import ReviewError

UNDO = 5.0


@pytest.fixture
def undo_settings(tmp_path, db_url):
    return make_settings(tmp_path, db_url, verdict_undo_seconds=UNDO, lease_seconds=60, lease_max_seconds=150)


@pytest.fixture
def people(user_factory):
    officer = user_factory(Role.officer, username="officer")
    manager = user_factory(Role.manager, username="boss")
    recs = [user_factory(Role.recognizer, username=f"rec{i}") for i in range(1, 6)]
    return officer, manager, recs


def _cand(session, settings, officer, **kw) -> Candidate:
    c = make_candidate(session, image_store(settings), settings, officer.id, **kw)
    session.commit()
    return c


def _give(session, user, settings, verdict="same", task=None):
    task = task or review.next_task(session, user, settings)
    result = review.submit_verdict(session, user, task.slot_id, verdict, settings=settings,
                                   undo_seconds=settings.verdict_undo_seconds)
    return task, result


def _flags(session) -> list[Flag]:
    return list(session.exec(select(Flag)).all())


def test_a_pending_verdict_counts_only_after_its_window_and_then_flags_once(session, undo_settings, people):
    officer, _, (a, b, *_) = people
    cand = _cand(session, undo_settings, officer)
    with clock.frozen() as c:
        _, ra = _give(session, a, undo_settings)
        _, rb = _give(session, b, undo_settings)
        assert ra.pending and rb.pending and ra.decided is None
        # Both said "same", but nothing counts yet: no verdict stored, no decision, no flag.
        assert review.settle_due(session, undo_settings) == 0
        session.refresh(cand)
        assert cand.status == "open" and _flags(session) == []
        assert all(s.verdict is None for s in session.exec(select(ReviewSlot)).all())
        pending = review.pending_for(session, a, undo_settings)
        assert pending is not None and pending.verdict == "same"
        c.advance(seconds=UNDO + 0.1)
        assert review.pending_for(session, a, undo_settings) is None
        assert review.settle_due(session, undo_settings) == 2
        assert review.settle_due(session, undo_settings) == 0
        first_given = c.now()
    session.refresh(cand)
    assert cand.status == "flagged" and len(_flags(session)) == 1
    slots = session.exec(select(ReviewSlot).where(ReviewSlot.candidate_id == cand.id)).all()
    assert {s.verdict for s in slots} == {"same"} and all(s.pending_verdict is None for s in slots)
    # The verdict's time is when it was given, not when it came to count.
    given = [review.as_utc(s.verdict_at) for s in slots]
    assert all(t is not None and t < first_given for t in given)
    actions = [e.action for e in session.exec(select(AuditEntry).order_by(col(AuditEntry.id))).all()]
    assert actions.count("review.verdict_pending") == 2 and actions.count("review.verdict") == 2


def test_undo_takes_the_verdict_back_releases_the_next_task_and_never_flags(session, undo_settings, people):
    officer, _, (a, b, *_) = people
    first = _cand(session, undo_settings, officer)
    _cand(session, undo_settings, officer)
    with clock.frozen() as c:
        _, rb = _give(session, b, undo_settings)
        task, _ = _give(session, a, undo_settings)
        shown_next = review.next_task(session, a, undo_settings)
        assert shown_next is not None
        assert shown_next.candidate.id != first.id or shown_next.slot_id != task.slot_id
        c.advance(seconds=UNDO - 1)
        slot = review.undo_verdict(session, a, task.slot_id, undo_settings)
        assert slot.pending_verdict is None and slot.reviewer_id == a.id
        # The task is theirs again, freshly leased; the one shown after it went back to the queue.
        current = review.current_task(session, a)
        assert current is not None and current.slot_id == task.slot_id
        released = session.get_one(ReviewSlot, shown_next.slot_id)
        assert released.reviewer_id is None
        c.advance(seconds=30)
        review.settle_due(session, undo_settings)
    session.refresh(first)
    # b's verdict counted; a's never did, so the round is not complete and no flag was raised.
    assert first.status == "open" and _flags(session) == []
    assert session.get(ReviewSlot, rb.slot.id).verdict == "same"
    assert session.get(ReviewSlot, task.slot_id).verdict is None
    # Answering again works as usual.
    review.submit_verdict(session, a, task.slot_id, "different", settings=undo_settings)
    session.refresh(first)
    assert first.status == "disputed" and _flags(session) == []
    undo = session.exec(select(AuditEntry).where(AuditEntry.action == "review.undo")).one()
    assert undo.detail["verdict"] == "same"


def test_undo_too_late_is_refused_and_the_verdict_counts(session, undo_settings, people):
    officer, _, (a, *_) = people
    _cand(session, undo_settings, officer)
    with clock.frozen() as c:
        task, _ = _give(session, a, undo_settings, "different")
        c.advance(seconds=UNDO + 1)
        with pytest.raises(ReviewError) as err:
            review.undo_verdict(session, a, task.slot_id, undo_settings)
        assert session.get(ReviewSlot, task.slot_id).pending_verdict == "different"  # nothing undone
        review.settle_due(session, undo_settings, a)  # the page's request settles it as it answers
    assert err.value.code == "conflict" and "Too late" in err.value.message
    assert session.get(ReviewSlot, task.slot_id).verdict == "different"


def test_someone_elses_verdict_cannot_be_undone(session, undo_settings, people):
    officer, _, (a, b, *_) = people
    _cand(session, undo_settings, officer)
    task, _ = _give(session, a, undo_settings)
    with pytest.raises(ReviewError) as err:
        review.undo_verdict(session, b, task.slot_id, undo_settings)
    assert err.value.code == "not_found"
    assert session.get(ReviewSlot, task.slot_id).pending_verdict == "same"


def test_a_page_closed_in_the_window_loses_nothing_even_after_the_lease(session, engine, undo_settings, people):
    officer, _, (a, b, c3, *_) = people
    cand = _cand(session, undo_settings, officer)
    with clock.frozen() as c:
        task, _ = _give(session, a, undo_settings)
        # Long past the lease: the slot is not handed to anyone else, nor returned by the sweep.
        c.advance(seconds=undo_settings.lease_seconds + 10)
        assert review.expire_leases(session) == 0
        session.commit()
        other = review.next_task(session, b, undo_settings)
        assert other is not None and other.slot_id != task.slot_id
        assert review.next_task(session, c3, undo_settings) is None
        session.commit()
        # The worker's tick counts it (nobody came back to the page).
        assert review.settle_sweep(engine, undo_settings, None) == 1  # type: ignore[arg-type]
    with Session(engine) as s:
        slot = s.get_one(ReviewSlot, task.slot_id)
        assert slot.verdict == "same" and slot.reviewer_id == a.id and slot.pending_verdict is None
        assert s.get_one(Candidate, cand.pk).status == "open"


def test_suspended_before_it_counted_means_not_counted(session, undo_settings, people):
    officer, _, (a, *_) = people
    _cand(session, undo_settings, officer)
    with clock.frozen() as c:
        task, _ = _give(session, a, undo_settings)
        user = session.get(User, a.id)
        qualification.suspend(session, user, "test")
        session.commit()
        c.advance(seconds=UNDO + 1)
        assert review.settle_due(session, undo_settings) == 0
    slot = session.get(ReviewSlot, task.slot_id)
    assert slot.verdict is None and slot.pending_verdict is None and slot.reviewer_id is None


def test_a_repeated_post_in_the_window_is_the_same_verdict_and_another_is_refused(session, undo_settings, people):
    officer, _, (a, *_) = people
    _cand(session, undo_settings, officer)
    task = review.next_task(session, a, undo_settings)
    assert task is not None
    for _ in range(2):
        r = review.submit_verdict(session, a, task.slot_id, "same", idempotency_key="k1", settings=undo_settings,
                                  undo_seconds=UNDO)
    assert r.replayed and r.pending
    with pytest.raises(ReviewError) as err:
        review.submit_verdict(session, a, task.slot_id, "different", settings=undo_settings, undo_seconds=UNDO)
    assert err.value.code == "conflict"
    assert session.get_one(ReviewSlot, task.slot_id).pending_verdict == "same"


def test_renewal_extends_the_lease_up_to_its_maximum_and_refuses_a_lapsed_one(session, undo_settings, people):
    officer, _, (a, *_) = people
    _cand(session, undo_settings, officer)
    with clock.frozen() as c:
        start = c.now()
        task = review.next_task(session, a, undo_settings)
        assert task is not None
        for _ in range(5):
            c.advance(seconds=30)
            slot = review.renew_lease(session, a, task.slot_id, undo_settings)
        # 60 s leases renewed every 30 s, but never past 150 s after it was taken.
        assert review.as_utc(slot.lease_expires_at) == start + dt.timedelta(seconds=150)
        assert review.lease_limit(slot, undo_settings) == review.as_utc(slot.lease_expires_at)
        c.advance(seconds=1)
        with pytest.raises(ReviewError) as err:
            review.renew_lease(session, a, task.slot_id, undo_settings)
    assert err.value.code == "lease_expired"
    renewals = session.exec(select(AuditEntry).where(AuditEntry.action == "review.renew",
                                                     AuditEntry.outcome == "ok")).all()
    assert len(renewals) == 3  # at 30, 60 and 90 s; later renewals would pass the maximum


def test_a_lapsed_lease_on_an_escalated_round_does_not_lock_its_holder_out(session, undo_settings, people):
    officer, manager, (a, b, c3, d, e) = people
    cand = _cand(session, undo_settings, officer)
    _give(session, a, undo_settings, "same")
    _give(session, b, undo_settings, "cannot_tell")
    with clock.frozen() as c:
        c.advance(seconds=UNDO + 1)
        review.settle_due(session, undo_settings)
        session.refresh(cand)
        assert cand.status == "disputed"
        review.escalate(session, manager, cand.pk, settings=undo_settings)
        held = review.next_task(session, c3, undo_settings)
        assert held is not None and held.slot.round == 2
        c.advance(seconds=undo_settings.lease_seconds + 1)
        # c3's lease lapsed; they were legitimately holding it, so they can take it again.
        again = review.next_task(session, c3, undo_settings)
        assert again is not None and again.candidate.id == cand.id
        # Round 1's recognizers are never served round 2.
        assert review.next_task(session, a, undo_settings) is None
        assert review.next_task(session, b, undo_settings) is None


def test_a_task_given_back_goes_to_someone_else_at_once(session, undo_settings, people):
    officer, _, (a, b, *_) = people
    cand = _cand(session, undo_settings, officer)
    assert review.queue_size_for(session, a, undo_settings) == 1  # one task (two slots) for a
    task = review.next_task(session, a, undo_settings)
    assert task is not None
    review.release_task(session, a, task.slot_id)
    slot = session.get_one(ReviewSlot, task.slot_id)
    assert slot.reviewer_id is None and slot.lease_expires_at is None
    assert review.next_task(session, a, undo_settings) is None
    assert review.queue_size_for(session, a, undo_settings) == 0
    theirs = review.next_task(session, b, undo_settings)
    assert theirs is not None and theirs.candidate.id == cand.id
    entry = session.exec(select(AuditEntry).where(AuditEntry.action == "review.release")).one()
    assert entry.actor == "rec1" and entry.detail["reason"] == "skipped"
    with pytest.raises(ReviewError):
        review.release_task(session, a, task.slot_id)


def test_tasks_waiting_counts_what_this_person_can_take(session, undo_settings, people):
    officer, _, (a, b, *_) = people
    for _ in range(3):
        _cand(session, undo_settings, officer)
    assert review.queue_size_for(session, a, undo_settings) == 3
    review.next_task(session, b, undo_settings)
    # b holds one slot of the first; a can still take its other slot, so still three for a, two for b.
    assert review.queue_size_for(session, a, undo_settings) == 3
    assert review.queue_size_for(session, b, undo_settings) == 2
    assert review.done_today(session, a) == 0
    _give(session, a, undo_settings)
    assert review.done_today(session, a) == 1 and review.queue_size_for(session, a, undo_settings) == 2
