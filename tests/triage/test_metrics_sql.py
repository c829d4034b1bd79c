"""Metrics computed in SQL equal the previous all-in-Python implementation on a varied dataset — read live,
and read from the per-day summaries with live SQL for the edges — and every period's figures stay the same
after the retention sweep deletes old candidates, after a dispute is re-opened, after late verdicts and
after a suspension voids verdicts, whether the days involved were summarised before or not."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Any

import pytest
from sqlalchemy import Engine, delete, func, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from bench.metrics import seed
from tests.factories import stored_ids
from tests.triage.metrics_oracle import compute_in_python
from triage import clock, metrics, metrics_queries, metrics_summary, qualification, retention, review
from triage.config import Settings
from triage.models import (
    Candidate,
    CandidateStatus,
    Flag,
    MetricDay,
    MetricDayRound,
    MetricOutcome,
    MetricSlot,
    ReviewSlot,
    Role,
    SeenCandidate,
    Sighting,
    User,
)
from triage.security import create_user
from triage.storage import ImageStore

NOW = dt.datetime(2026, 6, 30, 15, 20, tzinfo=dt.UTC)
WINDOWS: tuple[dict[str, Any], ...] = ({}, {"days": "7"}, {"days": "30"}, {"days": "90"},
                                       {"since": "2026-03-01", "until": "2026-04-15"},
                                       {"since": "2026-06-01"}, {"until": "2026-02-28"})


def _plain(m: metrics.Metrics, *, new_figures: bool = True) -> dict[str, Any]:
    data = dataclasses.asdict(m)
    data.pop("computed_at")
    if not new_figures:
        data.pop("confusion")
        data.pop("weeks")
    return data


def _close(a: Any, b: Any, path: str = "") -> None:
    """Equal, floats within 1e-6 (sums in another order) and seconds within a millisecond."""
    if isinstance(a, float) and isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-3), (path, a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), (path, a.keys() ^ b.keys())
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), (path, len(a), len(b), a, b)
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    else:
        assert a == b, (path, a, b)


@pytest.fixture
def seeded(engine: Engine) -> dict[str, int]:
    return seed(engine, candidates=600, days=150, now=NOW - dt.timedelta(hours=2), recognizers=12)


def _summarise(engine: Engine, at: dt.datetime = NOW) -> int:
    with clock.frozen(at):
        return metrics_summary.summarise(engine, limit=10_000)


def _check(engine: Engine, at: dt.datetime = NOW) -> None:
    """For every window: summaries with live edges = everything live = the oracle (on the figures it has)."""
    with clock.frozen(at), Session(engine) as session:
        for params in WINDOWS:
            window = metrics.parse_window(**params)
            new, live = metrics.compute(session, window), metrics.compute(session, window, summaries=False)
            _close(_plain(new), _plain(live), str(params))
            _close(_plain(new, new_figures=False), _plain(compute_in_python(session, window), new_figures=False),
                   str(params))


@pytest.mark.parametrize("summarised", [False, True])
def test_sql_metrics_equal_the_python_implementation(engine: Engine, seeded: dict[str, int], summarised: bool) -> None:
    assert seeded["verdicts"] > 900 and seeded["flags"] > 50
    if summarised:
        assert _summarise(engine) in (149, 150) and _summarise(engine) == 0  # each finished day since the first, once
    with clock.frozen(NOW), Session(engine) as session:
        for params in WINDOWS:
            window = metrics.parse_window(**params)
            new, old = metrics.compute(session, window), compute_in_python(session, window)
            _close(_plain(new, new_figures=False), _plain(old, new_figures=False), str(params))
            _close(_plain(new), _plain(metrics.compute(session, window, summaries=False)), str(params))
            assert new.items > 0 or params.get("days") == "7"
        everything = metrics.compute(session)
    # The dataset exercises every figure.
    assert everything.voided_verdicts > 0 and everything.disputed_for_good > 0 and len(everything.rounds) == 3
    assert len(everything.known_answer) == 12 and everything.queue_slots > 0 and len(everything.bands) >= 5
    assert sum(k.same_answered for k in everything.known_answer) > 10
    assert sum(k.different_answered for k in everything.known_answer) > 10


def test_confusion_and_weekly_trends_add_up(engine: Engine, seeded: dict[str, int]) -> None:
    with clock.frozen(NOW), Session(engine) as session:
        m = metrics.compute(session, metrics.parse_window(days="90"))
    by_pair = {(p.a, p.b): p for p in m.pairs}
    for c in m.confusion:
        pair = by_pair[(c.a, c.b)]
        assert sum(c.counts.values()) == pair.items
        assert sum(c.cell(v, v) for v in metrics.CATEGORIES) == round(pair.agreement * pair.items)
    assert sum(w.items for w in m.weeks) == m.items
    assert sum(w.first_rounds for w in m.weeks) == m.first_rounds
    assert sum(w.disputed_first_round for w in m.weeks) == m.disputed_first_round
    assert sum(w.decided for w in m.weeks) == m.decided
    assert all(w.week.weekday() == 0 for w in m.weeks) and len(m.weeks) in (13, 14, 15)
    assert [w.week for w in m.weeks] == sorted(w.week for w in m.weeks)


def _figures(session: Session, summaries: bool = True) -> list[dict[str, Any]]:
    return [_plain(metrics.compute(session, metrics.parse_window(**params), summaries=summaries))
            for params in WINDOWS]


@pytest.mark.parametrize("summarised", ["never", "before the sweep", "after the sweep"])
def test_every_figure_survives_the_retention_sweep(engine: Engine, settings: Settings, seeded: dict[str, int],
                                                   summarised: str) -> None:
    settings.retention_days_unflagged = 30
    with Session(engine) as session:
        before_rows = session.exec(select(func.count()).select_from(Candidate)).one()
        waiting = stored_ids(session.exec(select(Candidate.id).where(
            Candidate.status == CandidateStatus.disputed.value, Candidate.current_round < 3)).all())
    later = NOW + dt.timedelta(days=20)  # the clock moved forward: more of the data is past retention
    with clock.frozen(later):
        with Session(engine) as session:
            before = _figures(session, summaries=False)
        if summarised == "before the sweep":
            assert _summarise(engine, later) > 100
        result = retention.run(engine, settings, ImageStore(settings.images_dir))
        if summarised == "after the sweep":
            assert _summarise(engine, later) > 100
        with Session(engine) as session:
            after = _figures(session)
            after_live = _figures(session, summaries=False)
            kept_slots = session.exec(select(func.count()).select_from(MetricSlot)).one()
            kept_outcomes = session.exec(select(func.count()).select_from(MetricOutcome)).one()
            left = session.exec(select(func.count()).select_from(Candidate)).one()
            still_waiting = stored_ids(session.exec(select(Candidate.id).where(col_in(Candidate.id, waiting))).all())
    assert len(result.sighting_ids) > 50 and result.candidates == before_rows - left
    assert kept_outcomes > 0 and kept_slots >= result.review_slots > kept_outcomes
    for params, b, a, live in zip(WINDOWS, before, after, after_live, strict=True):
        _close(a, b, str(params))
        _close(live, b, str(params))
    # Disputes a manager may still escalate were not purged, however old.
    assert waiting and sorted(still_waiting) == sorted(waiting)


def _manager(engine: Engine) -> User:
    with Session(engine, expire_on_commit=False) as session:
        manager = create_user(session, "metrics.manager", "metrics-manager-pass-1", [Role.manager])
        session.commit()
        return manager


def _give(engine: Engine, settings: Settings, slot_id: int, verdict: str, exclude: set[int]) -> int:
    """A recognizer who never saw the candidate holds the slot and answers it (as the queue would serve it)."""
    with Session(engine, expire_on_commit=False) as session:
        slot = session.get(ReviewSlot, slot_id)
        assert slot is not None
        seen = set(session.exec(select(SeenCandidate.user_id).where(SeenCandidate.candidate_id == slot.candidate_id)))
        held = session.exec(select(ReviewSlot.reviewer_id).where(ReviewSlot.candidate_id == slot.candidate_id))
        seen |= {reviewer_id for reviewer_id in held if reviewer_id is not None}
        person = next(u for u in session.exec(select(User).order_by(col(User.id))).all()
                      if u.has_role(Role.recognizer) and not u.is_suspended and u.id not in seen | exclude)
        now = clock.utcnow()
        slot.reviewer_id, slot.leased_at, slot.lease_expires_at = person.pk, now, now + dt.timedelta(minutes=5)
        session.add(slot)
        session.add(SeenCandidate(candidate_id=slot.candidate_id, user_id=person.pk))
        session.commit()
        review.submit_verdict(session, person, slot_id, verdict, settings=settings)
        session.commit()
        return person.pk


def test_a_reopened_dispute_late_verdicts_and_a_suspension_keep_summaries_true(
        engine: Engine, settings: Settings, seeded: dict[str, int]) -> None:
    """Escalation re-opens a dispute decided on a summarised day; its new round's verdicts come weeks later;
    a suspension voids one of them. Every figure equals the oracle before and after each day is summarised."""
    manager = _manager(engine)
    assert _summarise(engine) > 100
    with Session(engine) as session:
        day_rows = session.exec(select(func.count()).select_from(MetricDayRound)).one()
        old = session.exec(select(Candidate).where(
            Candidate.status == CandidateStatus.disputed.value, Candidate.current_round == 1,
            col(Candidate.known_truth).is_(None),
            col(Candidate.decided_at) < NOW - dt.timedelta(days=40)).order_by(col(Candidate.id))).first()
        assert old is not None and old.decided_at is not None
        old_id, decided_on = old.pk, old.decided_at.date()
        assert session.get(MetricDay, decided_on) is not None  # its day is summarised
    with clock.frozen(NOW), Session(engine) as session:
        before = metrics.compute(session, metrics.parse_window(days="90"))
        review.escalate(session, session.get_one(User, manager.pk), old_id, settings=settings)
        session.commit()  # the caller ends the transaction
        after = metrics.compute(session, metrics.parse_window(days="90"))
    assert after.decided == before.decided - 1 and after.items == before.items  # its round 1 still counts
    _check(engine)
    with Session(engine) as session:
        new_slots = [s.pk for s in session.exec(select(ReviewSlot).where(
            ReviewSlot.candidate_id == old_id, ReviewSlot.round == 2).order_by(col(ReviewSlot.slot_no))).all()]
    # Three weeks later one recognizer answers; then is suspended (the verdict is voided that day).
    weeks_later = NOW + dt.timedelta(days=21)
    with clock.frozen(weeks_later):
        first = _give(engine, settings, new_slots[0], "same", set())
        with Session(engine) as session:
            qualification.suspend(session, session.get_one(User, first), "known-answer accuracy")
            session.commit()
    _check(engine, weeks_later)
    with Session(engine) as session:
        voided = session.exec(select(ReviewSlot).where(ReviewSlot.candidate_id == old_id,
                                                       col(ReviewSlot.voided_at).is_not(None))).all()
        assert [s.reviewer_id for s in voided] == [first]
        fresh = [s.pk for s in session.exec(select(ReviewSlot).where(
            ReviewSlot.candidate_id == old_id, ReviewSlot.round == 2, col(ReviewSlot.voided_at).is_(None))
            .order_by(col(ReviewSlot.slot_no))).all()]
    # The next day two others answer: the round completes, the old candidate is decided (flagged) then.
    next_day = weeks_later + dt.timedelta(days=1)
    with clock.frozen(next_day):
        a = _give(engine, settings, fresh[0], "same", {first})
        _give(engine, settings, fresh[1], "same", {first, a})
    with Session(engine) as session:
        decided = session.get(Candidate, old_id)
        assert decided is not None and decided.status == CandidateStatus.flagged.value
    later = next_day + dt.timedelta(days=2)
    _check(engine, later)  # those days live
    assert _summarise(engine, later) == 24  # the days since NOW, those included
    _check(engine, later)  # and summarised
    with Session(engine) as session:
        assert session.exec(select(func.count()).select_from(MetricDayRound)).one() > day_rows
        # The re-opened candidate's old decision is in no summary; its new one is, on its day.
        with clock.frozen(later):
            m = metrics.compute(session, metrics.parse_window(since=next_day.date().isoformat(),
                                                             until=next_day.date().isoformat()))
    assert m.decided == 1 and m.items == 1 and m.voided_verdicts == 0 and m.rounds[0].round == 2


def test_days_are_summarised_once_finished_and_the_edges_are_read_live(engine: Engine,
                                                                      seeded: dict[str, int]) -> None:
    just_after_midnight = dt.datetime(2026, 6, 30, 0, 5, tzinfo=dt.UTC)
    with Session(engine) as session:
        missing = metrics_summary.missing_days(session, just_after_midnight)
    # Yesterday ended five minutes ago: a transaction stamped before midnight may still commit; it waits.
    assert missing[0] == dt.date(2026, 6, 28)
    assert _summarise(engine) == len(missing) + 1 and _summarise(engine) == 0
    with Session(engine) as session:
        assert metrics_summary.missing_days(session, NOW) == []
        window = metrics.parse_window(days="90", now=NOW)
        parts = metrics_summary.plan(session, window.since, window.until, NOW)
        # One run of whole days; live: the partial first day (from 15:20) and today.
        assert parts.runs == [(dt.date(2026, 4, 2), dt.date(2026, 6, 30))]
        assert [(s.since, s.until) for s in parts.live] == [
            (window.since, dt.datetime(2026, 4, 2, tzinfo=dt.UTC)), (dt.datetime(2026, 6, 30, tzinfo=dt.UTC), None)]
        ranged = metrics.parse_window(since="2026-03-01", until="2026-04-15")
        parts = metrics_summary.plan(session, ranged.since, ranged.until, NOW)
        assert parts.runs == [(dt.date(2026, 3, 1), dt.date(2026, 4, 16))] and parts.live == []
        # A day dropped (or summarised under other definitions) is read live until summarised again.
        assert metrics_summary.forget(session, dt.date(2026, 4, 10)) == 81
        session.execute(update(MetricDay).where(col(MetricDay.day) == dt.date(2026, 3, 5)).values(version="old"))
        session.commit()
        parts = metrics_summary.plan(session, ranged.since, ranged.until, NOW)
        assert parts.runs == [(dt.date(2026, 3, 1), dt.date(2026, 3, 5)), (dt.date(2026, 3, 6), dt.date(2026, 4, 10))]
        assert [(s.since.date(), s.until.date()) for s in parts.live] == [  # type: ignore[union-attr]
            (dt.date(2026, 3, 5), dt.date(2026, 3, 6)), (dt.date(2026, 4, 10), dt.date(2026, 4, 16))]
    _check(engine)
    assert _summarise(engine) == 82
    _check(engine)


def test_bad_parts_are_refused(engine: Engine) -> None:
    with Session(engine) as session, pytest.raises(ValueError, match="unknown part"):
        metrics_queries.outcome_counts(session, metrics_queries.Span(), 0.1, 3, "everything")


def col_in(column: Any, values: list[Any]) -> Any:
    return column.in_(values)


def test_a_waiting_dispute_is_kept_and_a_settled_one_goes(engine: Engine, settings: Settings) -> None:
    """Disputed in round 1 (a manager may escalate it) → kept; disputed in the last round → purged."""
    settings.retention_days_unflagged = 30
    seed(engine, candidates=40, days=5, now=NOW - dt.timedelta(days=60), recognizers=10)
    with Session(engine) as session:
        session.execute(delete(Flag))
        cands = session.exec(select(Candidate).where(col(Candidate.known_truth).is_(None))).all()
        # Make every sighting's candidates the same kind: the first half waiting, the second settled.
        for c in cands:
            assert c.sighting_id is not None
            waiting = c.sighting_id % 2 == 0
            c.status = CandidateStatus.disputed.value
            c.current_round = 1 if waiting else 3
            c.decided_at = NOW - dt.timedelta(days=59)
            session.add(c)
        session.commit()
        waiting_ids = sorted(c.pk for c in cands if c.current_round == 1)
        settled_ids = sorted(c.pk for c in cands if c.current_round == 3)
    with clock.frozen(NOW):
        retention.run(engine, settings, ImageStore(settings.images_dir))
    with Session(engine) as session:
        left = set(session.exec(select(Candidate.id)).all())
        kept = set(session.exec(select(MetricOutcome.candidate_id)).all())
        assert set(waiting_ids) <= left and not (set(settled_ids) & left)
        assert set(settled_ids) <= kept and not (set(waiting_ids) & kept)
        # Their slots went with them, copied (no image, no note) for the metrics.
        assert not session.exec(select(ReviewSlot).where(col_in(ReviewSlot.candidate_id, settled_ids))).all()
        assert session.exec(select(func.count()).select_from(MetricSlot)).one() > 0
        assert session.exec(select(func.count()).select_from(Sighting)).one() > 0


def test_kept_rows_of_two_deleted_candidates_with_the_same_number_stay_apart(engine: Engine) -> None:
    """SQLite may give a deleted candidate's number to a new one; swept later, the two stay two rounds."""
    at = NOW - dt.timedelta(days=40)
    with Session(engine) as session:
        for k, (verdict, status) in enumerate((("same", "flagged"), ("different", "cleared"))):
            swept = NOW - dt.timedelta(days=10 - k)
            for reviewer in (901 + 2 * k, 902 + 2 * k):
                session.add(MetricSlot(candidate_id=7, reviewer_id=reviewer, verdict=verdict, verdict_at=at,
                                       archived_at=swept))
            session.add(MetricOutcome(candidate_id=7, status=status, score=0.95, created_at=at, decided_at=at,
                                      sighting_created_at=at - dt.timedelta(minutes=5), archived_at=swept))
        session.commit()
        with clock.frozen(NOW):
            m = metrics.compute(session)
    assert m.items == 2 and [(r.completed, r.flagged, r.cleared) for r in m.rounds] == [(2, 1, 1)]
    assert m.decided == 2 and m.bands[0].flagged == 1 and m.outcome_seconds_p50 == 300.0
    assert [t.verdicts for t in m.throughput] == [1, 1, 1, 1]


def test_the_workers_sweep_summarises_the_finished_days(engine: Engine, settings: Settings) -> None:
    from miatari.registry import worker_registry

    seed(engine, candidates=20, days=3, now=NOW - dt.timedelta(hours=2), recognizers=10)
    from tests.factories import image_store
    from triage import services

    sweep = worker_registry().sweeps["metrics.summarise"]
    process = services.build(engine, settings, image_store(settings))
    with clock.frozen(NOW):
        assert sweep(engine, settings, process) in (3, 4)  # the finished days since the first verdict
        assert sweep(engine, settings, process) == 0  # once
    with Session(engine) as session:
        days = session.exec(select(col(MetricDay.day))).all()
    assert max(days) == dt.date(2026, 6, 29) and NOW.date() not in days  # today is read live
    _check(engine)



def test_days_another_worker_summarised_meanwhile_are_left_and_the_rest_written(
        engine: Engine, seeded: dict[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """A run of days written together fails on the key of a day another worker committed meanwhile: the
    days still missing are then written one by one, that one left as the other worker wrote it."""
    run = [dt.date(2026, 5, 1) + dt.timedelta(days=i) for i in range(10)]
    together = metrics_summary.summarise_days

    def racing(session: Session, days: Any) -> None:
        days = list(days)
        if len(days) > 1:  # the other worker commits one of them first; this insert then hits its key
            with clock.frozen(NOW - dt.timedelta(minutes=5)), Session(engine) as other:
                together(other, [run[4]])
                other.commit()
            raise IntegrityError("INSERT INTO metric_day", {}, Exception("duplicate key value"))
        together(session, days)

    monkeypatch.setattr(metrics_summary, "summarise_days", racing)
    with clock.frozen(NOW):
        assert metrics_summary._write(engine, run, NOW) == 9
    with Session(engine) as session:
        days = session.exec(select(MetricDay).where(col(MetricDay.day).in_(run))).all()
        assert sorted(d.day for d in days) == run
        assert [d.day for d in days if d.summarised_at.replace(tzinfo=None) < NOW.replace(tzinfo=None)] == [run[4]]
    _check(engine)
