"""Managers' metrics from stored verdicts."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from sqlmodel import col, select

from tests.factories import image_store, make_candidate, make_subject
from triage import clock, metrics, review
from triage.models import Candidate, ReviewSlot, Role


def test_cohen_kappa_known_value():
    pairs = [("same", "same"), ("same", "different"), ("different", "different"), ("different", "different")]
    assert metrics.cohen_kappa(pairs) == pytest.approx(0.5)
    assert metrics.cohen_kappa([("same", "same")] * 3) is None  # chance agreement total: undefined
    assert metrics.cohen_kappa([]) is None


def test_fleiss_kappa_known_value():
    items = [["same", "same"], ["same", "different"], ["different", "different"], ["different", "different"]]
    assert metrics.fleiss_kappa(items) == pytest.approx((0.75 - 34 / 64) / (1 - 34 / 64))
    with pytest.raises(ValueError):
        metrics.fleiss_kappa([["same"], ["same", "same"]])


def test_percentile_nearest_rank():
    assert metrics.percentile([5, 1, 3, 2, 4], 50) == 3
    assert metrics.percentile(list(range(1, 101)), 95) == 95
    assert metrics.percentile([], 50) is None


def _answer(session, settings, user, verdict):
    t = review.next_task(session, user, settings)
    assert t is not None
    review.submit_verdict(session, user, t.slot_id, verdict)
    return t


def test_metrics_from_a_worked_queue(session, settings, user_factory):
    officer = user_factory(Role.officer, username="off")
    manager = user_factory(Role.manager, username="mgr")
    a, b, c, d = (user_factory(Role.recognizer, username=n) for n in ("ann", "bob", "cat", "dan"))
    settings.known_answer_share = 0.0
    settings.lead_threshold = 0.5  # the score bands below include candidates from 0.5 up
    store = image_store(settings)
    start = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)
    with clock.frozen(start) as clk:
        make_candidate(session, store, settings, officer.id, score=0.92)
        make_candidate(session, store, settings, officer.id, score=0.55)
        c3 = make_candidate(session, store, settings, officer.id, score=0.58)
        c4 = make_candidate(session, store, settings, officer.id, score=0.71)  # stays open
        session.commit()
        clk.advance(minutes=10)
        _answer(session, settings, a, "same")
        _answer(session, settings, b, "same")      # c1 flagged after 10 min
        clk.advance(minutes=10)
        _answer(session, settings, a, "different")
        _answer(session, settings, b, "different")  # c3? order: by age then id → c2 cleared after 20 min
        clk.advance(minutes=10)
        _answer(session, settings, a, "same")
        _answer(session, settings, b, "cannot_tell")  # c3 disputed after 30 min
        review.escalate(session, manager, c3.pk)
        # A known-answer pair answered by c and d.
        make_subject(session, store, photos=2)
        ka = review.create_known_answer_task(session, settings, avoid_seen_by=None)
        assert ka is not None and ka.known_truth is not None
        session.commit()
        for user, verdict in ((c, ka.known_truth), (d, "cannot_tell")):
            slot = next(s for s in session.exec(select(ReviewSlot).where(
                ReviewSlot.candidate_id == ka.id, col(ReviewSlot.reviewer_id).is_(None))).all())
            slot.reviewer_id = user.id
            slot.lease_expires_at = clock.utcnow() + dt.timedelta(minutes=5)
            session.add(slot)
            session.commit()
            review.submit_verdict(session, user, slot.id, verdict)
        m = metrics.compute(session)

    assert m.items == 3
    assert m.raw_agreement == pytest.approx(2 / 3)
    assert [(p.a, p.b, p.items) for p in m.pairs] == [("ann", "bob", 3)]
    assert m.decided == 2 and m.first_rounds == 3 and m.disputed_first_round == 1
    assert m.dispute_rate == pytest.approx(1 / 3)
    assert {k.recognizer: (k.answered, k.correct, k.cannot_tell) for k in m.known_answer} == {
        "cat": (1, 1, 0), "dan": (1, 0, 1)}
    assert {t.recognizer: (t.verdicts, t.active_hours) for t in m.throughput}["ann"] == (3, 1)
    assert m.outcome_seconds_p50 == 10 * 60 and m.outcome_seconds_p95 == 20 * 60
    # c3 (escalated) and c4 are open: four open slots.
    assert m.queue_candidates == 2 and m.queue_slots == 4
    assert m.queue_oldest_seconds == 30 * 60
    assert m.flags_raised == 1 and m.flags_by_status == {"raised": 1}
    bands = {b.label: (b.decided, b.flagged, b.precision) for b in m.bands}
    assert bands["0.9–1.0"] == (1, 1, 1.0)
    assert bands["0.5–0.6"] == (1, 0, 0.0)  # c2 cleared; c3 is open again after escalation
    assert session.get(Candidate, c4.id).status == "open"

    rows = list(csv.reader(io.StringIO(metrics.export_csv(m))))
    assert rows[0] == ["metric", "key", "value", "n"]
    keyed = {(r[0], r[1]): r for r in rows[1:]}
    assert keyed[("dispute_rate", "all")][2] == "0.3333"
    assert keyed[("known_answer_accuracy", "cat")][2] == "1.0000"
    assert keyed[("matcher_precision", "0.9–1.0")][2] == "1.0000"


def test_metrics_on_an_empty_database(session):
    m = metrics.compute(session)
    assert m.items == 0 and m.fleiss_kappa is None and m.dispute_rate is None and m.queue_slots == 0
    assert "queue_depth_slots" in metrics.export_csv(m)


def test_a_window_counts_only_what_happened_in_it(session, settings, user_factory):
    officer = user_factory(Role.officer, username="off")
    a, b = (user_factory(Role.recognizer, username=n) for n in ("ann", "bob"))
    settings.known_answer_share = 0.0
    settings.lead_threshold = 0.5
    store = image_store(settings)
    t_old = dt.datetime(2026, 1, 10, 9, 0, tzinfo=dt.UTC)
    t_new = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)
    with clock.frozen(t_old):
        make_candidate(session, store, settings, officer.id, score=0.91)
        session.commit()
        _answer(session, settings, a, "same")
        _answer(session, settings, b, "same")  # flagged in January
    with clock.frozen(t_new):
        make_candidate(session, store, settings, officer.id, score=0.62)
        session.commit()
        _answer(session, settings, a, "different")
        _answer(session, settings, b, "different")  # cleared in March
    with clock.frozen(t_new + dt.timedelta(hours=1)):
        everything = metrics.compute(session)
        recent = metrics.compute(session, metrics.parse_window(days="30"))
        january = metrics.compute(session, metrics.parse_window(since="2026-01-01", until="2026-01-31"))
    assert (everything.items, everything.decided, everything.flags_raised) == (2, 2, 1)
    assert (recent.items, recent.decided, recent.flags_raised) == (1, 1, 0)
    assert [b.label for b in recent.bands] == ["0.6–0.7"] and recent.bands[0].cleared == 1
    assert {t.recognizer: t.verdicts for t in recent.throughput} == {"ann": 1, "bob": 1}
    assert (january.items, january.decided, january.flags_raised) == (1, 1, 1)
    assert [b.label for b in january.bands] == ["0.9–1.0"]
    assert recent.queue_candidates == everything.queue_candidates == 0  # the queue is always now
    assert metrics.parse_window(days="30").query() == "days=30"
    assert metrics.parse_window(since="2026-01-01", until="2026-01-31").query() == "since=2026-01-01&until=2026-01-31"
    assert metrics.parse_window().bounded is False and metrics.parse_window("", "", "").label == "all time"
    for args in (("0",), ("-3",), ("1.5",), (str(metrics.MAX_WINDOW_DAYS + 1),), ("7", "2026-01-01"),
                 (None, "2026-13-01"), (None, "2026-02-01", "2026-01-31")):
        with pytest.raises(metrics.BadWindow):
            metrics.parse_window(*args)


def test_rounds_are_counted_on_their_own_and_voided_verdicts_left_out(session, settings, user_factory):
    from triage import qualification

    officer = user_factory(Role.officer, username="off")
    manager = user_factory(Role.manager, username="mgr")
    a, b, c, d, e = (user_factory(Role.recognizer, username=n) for n in ("ann", "bob", "cat", "dan", "eve"))
    store = image_store(settings)
    cand = make_candidate(session, store, settings, officer.id)
    other = make_candidate(session, store, settings, officer.id)
    session.commit()
    _answer(session, settings, a, "same")
    _answer(session, settings, b, "different")      # round 1 of cand: disputed
    review.escalate(session, manager, cand.pk)
    _answer(session, settings, c, "same")
    _answer(session, settings, d, "same")           # round 2 of cand, on its own: flagged
    t = review.next_task(session, e, settings)      # e answers 'other' and is then suspended
    assert t is not None
    assert t.candidate.id == other.id
    review.submit_verdict(session, e, t.slot_id, "same")
    qualification.suspend(session, e, reason="test")
    session.commit()
    m = metrics.compute(session)
    assert [(r.round, r.completed, r.flagged, r.cleared, r.disputed) for r in m.rounds] == [
        (1, 1, 0, 0, 1), (2, 1, 1, 0, 0)]
    assert m.items == 2 and m.dispute_rate == 1.0 and m.voided_verdicts == 1
    # The voided verdict is no round of 'other': its slot is open again, in the queue.
    assert m.queue_slots == 2 and m.queue_candidates == 1
    rows = list(csv.reader(io.StringIO(metrics.export_csv(m))))
    assert ["round_dispute_rate", "2", "0.0000", "1"] in rows and ["voided_verdicts", "all", "1", ""] in rows
