"""Metrics computed in SQL equal the previous all-in-Python implementation on a varied dataset, and every
period's figures stay the same after the retention sweep deletes old candidates."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from typing import Any

import pytest
from sqlalchemy import Engine, delete, func
from sqlmodel import Session, col, select

from bench.metrics import seed
from tests.factories import stored_ids
from tests.triage.metrics_oracle import compute_in_python
from triage import clock, metrics, retention
from triage.config import Settings
from triage.models import Candidate, CandidateStatus, Flag, MetricOutcome, MetricSlot, ReviewSlot, Sighting
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


def test_sql_metrics_equal_the_python_implementation(engine: Engine, seeded: dict[str, int]) -> None:
    assert seeded["verdicts"] > 900 and seeded["flags"] > 50
    with clock.frozen(NOW), Session(engine) as session:
        for params in WINDOWS:
            window = metrics.parse_window(**params)
            new, old = metrics.compute(session, window), compute_in_python(session, window)
            _close(_plain(new, new_figures=False), _plain(old, new_figures=False), str(params))
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


def _figures(session: Session) -> list[dict[str, Any]]:
    return [_plain(metrics.compute(session, metrics.parse_window(**params))) for params in WINDOWS]


def test_every_figure_survives_the_retention_sweep(engine: Engine, settings: Settings, seeded: dict[str, int]) -> None:
    settings.retention_days_unflagged = 30
    with Session(engine) as session:
        before_rows = session.exec(select(func.count()).select_from(Candidate)).one()
        waiting = stored_ids(session.exec(select(Candidate.id).where(
            Candidate.status == CandidateStatus.disputed.value, Candidate.current_round < 3)).all())
    later = NOW + dt.timedelta(days=20)  # the clock moved forward: more of the data is past retention
    with clock.frozen(later):
        with Session(engine) as session:
            before = _figures(session)
        result = retention.run(engine, settings, ImageStore(settings.images_dir))
        with Session(engine) as session:
            after = _figures(session)
            kept_slots = session.exec(select(func.count()).select_from(MetricSlot)).one()
            kept_outcomes = session.exec(select(func.count()).select_from(MetricOutcome)).one()
            left = session.exec(select(func.count()).select_from(Candidate)).one()
            still_waiting = stored_ids(session.exec(select(Candidate.id).where(col_in(Candidate.id, waiting))).all())
    assert len(result.sighting_ids) > 50 and result.candidates == before_rows - left
    assert kept_outcomes > 0 and kept_slots >= result.review_slots > kept_outcomes
    for params, b, a in zip(WINDOWS, before, after, strict=True):
        _close(a, b, str(params))
    # Disputes a manager may still escalate were not purged, however old.
    assert waiting and sorted(still_waiting) == sorted(waiting)


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
