"""A short-lived cache of the managers' metrics, keyed by database and period.

The figures are still computed from stored verdicts (``triage.metrics.compute``, a dozen
aggregate queries in the database) and shown with the time they were computed; within
``MIATARI_METRICS_CACHE_SECONDS`` (5 s by default) managers looking at the same period share
one computation (finished days come from per-day summaries, so a computation is a few index
reads, but a burst of views need not repeat them; see ``bench/metrics.py``). CSV exports are
always computed as of the request. 0 turns it off.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

from sqlmodel import Session

from triage import metrics
from triage.clock import utcnow

MAX_ENTRIES = 64
_lock = threading.Lock()
_cache: dict[tuple[Any, ...], tuple[dt.datetime, metrics.Metrics]] = {}


def _key(session: Session, window: metrics.Window | None) -> tuple[Any, ...]:
    w = window or metrics.Window()
    # "The last N days" moves with the clock: it is the same period for the cache's few seconds.
    period = ("days", w.days) if w.days else ("range", w.since, w.until)
    return (str(session.get_bind().engine.url), *period)


def compute(session: Session, window: metrics.Window | None, max_age_seconds: float) -> metrics.Metrics:
    """The metrics for this period, computed at most ``max_age_seconds`` ago."""
    if max_age_seconds <= 0:
        return metrics.compute(session, window)
    key = _key(session, window)
    now = utcnow()
    with _lock:
        hit = _cache.get(key)
    if hit is not None and dt.timedelta(0) <= now - hit[0] < dt.timedelta(seconds=max_age_seconds):
        return hit[1]
    fresh = metrics.compute(session, window)
    with _lock:
        if len(_cache) >= MAX_ENTRIES:
            _cache.pop(min(_cache, key=lambda k: _cache[k][0]))
        _cache[key] = (now, fresh)
    return fresh
