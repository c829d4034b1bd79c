"""End a request's database transaction before its response goes out.

On SQLite every transaction holds the write lock (``BEGIN IMMEDIATE``, see
``triage.db``), and a request's session is closed only after the response has
been sent.  A page's reads would otherwise keep the lock across the response,
while another request's authentication (run on the event loop) waits for it:
the two then wait on each other until the busy timeout.  Handlers wrapped
with ``releases_session`` commit (or, if something failed half-way, roll back)
in their own thread, before returning.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from sqlmodel import Session

F = TypeVar("F", bound=Callable[..., Any])


def end_transaction(session: Session, failed: bool = False) -> None:
    if failed and (session.new or session.dirty or session.deleted):
        session.rollback()
    elif session.in_transaction():
        session.commit()


def releases_session(fn: F) -> F:
    """Wrap a sync route handler whose ``session`` argument is the request's session."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        session = kwargs.get("session")
        try:
            result = fn(*args, **kwargs)
        except BaseException:
            if isinstance(session, Session):
                end_transaction(session, failed=True)
            raise
        if isinstance(session, Session):
            end_transaction(session)
        return result

    return wrapper  # type: ignore[return-value]
