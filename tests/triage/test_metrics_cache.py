"""The managers' metrics cache: one computation per period for a few seconds, then fresh again."""

from __future__ import annotations

from sqlmodel import Session

from triage import metrics, metrics_cache
from triage.clock import frozen, utcnow


def test_metrics_are_reused_within_the_period_then_recomputed(engine, monkeypatch) -> None:
    calls: list[object] = []
    real = metrics.compute

    def counting(session, window=None):
        calls.append(window)
        return real(session, window)

    monkeypatch.setattr(metrics, "compute", counting)
    week = metrics.parse_window("7", None, None)
    with frozen(utcnow()) as clock, Session(engine) as s:
        first = metrics_cache.compute(s, week, 5)
        assert metrics_cache.compute(s, metrics.parse_window("7", None, None), 5) is first  # the same period
        assert len(calls) == 1
        metrics_cache.compute(s, None, 5)  # another period: its own computation
        assert len(calls) == 2
        clock.advance(seconds=5)
        again = metrics_cache.compute(s, week, 5)
        assert again is not first and len(calls) == 3 and again.computed_at > first.computed_at
        metrics_cache.compute(s, week, 0)  # off: every view computes
        assert len(calls) == 4
