"""One clock for the domain, so tests can freeze and move time.

Timestamps are aware UTC everywhere; SQLModel's ``UTCDateTime`` stores them
as UTC on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

_frozen: dt.datetime | None = None


def utcnow() -> dt.datetime:
    if _frozen is not None:
        return _frozen
    return dt.datetime.now(dt.UTC)


@contextmanager
def frozen(at: dt.datetime | None = None) -> Iterator[FrozenClock]:
    global _frozen
    previous = _frozen
    _frozen = at or utcnow()
    try:
        yield FrozenClock()
    finally:
        _frozen = previous


class FrozenClock:
    def now(self) -> dt.datetime:
        assert _frozen is not None
        return _frozen

    def advance(self, **delta: float) -> dt.datetime:
        global _frozen
        assert _frozen is not None
        _frozen = _frozen + dt.timedelta(**delta)
        return _frozen
