"""The one transaction rule: whoever opened a session ends its transaction, in one place.

A request's session is ended by the request (``webcommon.deps.get_session``), a job's or a command's by
the job or the command; both use ``unit_of_work``.  Domain functions never commit: they add, flush and
raise.  When the work fails, ``unit_of_work`` rolls it back and, if the exception is a refusal that
carries its audit entry (``triage.errors.Refused``), writes that entry and commits it alone.

A flow that genuinely needs two transactions (a lease granted, then slow work with no lock held) says
so where it happens, with ``checkpoint``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import SessionTransaction
from sqlmodel import Session

from triage import audit
from triage.errors import Refused
from triage.models import AuditOutcome

_WROTE = "miatari_wrote"


@event.listens_for(OrmSession, "after_flush")
def _note_write(session: OrmSession, _context: Any) -> None:
    session.info[_WROTE] = True


@event.listens_for(OrmSession, "after_transaction_end")
def _forget_writes(session: OrmSession, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_WROTE, None)


def has_work(session: Session) -> bool:
    """Whether the open transaction has changed anything (pending, or flushed already)."""
    return bool(session.new or session.dirty or session.deleted or session.info.get(_WROTE)
                or audit.has_pending(session))


def discard(session: Session) -> None:
    """Roll back what the transaction changed.  Only if it changed something: a rollback expires every
    loaded object (the request's user among them), and they may be read after the transaction."""
    if has_work(session):
        session.rollback()


def refusal_of(error: BaseException) -> Refused | None:
    """The refusal behind an exception: itself, or the one it was raised from (an HTTP answer to it)."""
    for candidate in (error, error.__cause__, error.__context__):
        if isinstance(candidate, Refused):
            return candidate
    return None


def record_refusal(session: Session, error: BaseException) -> bool:
    """Roll back the work, then write the refusal's audit entry (and the change it keeps), if it has one.

    The caller ends the transaction (``unit_of_work`` does).  A page that answers a refusal with its form
    again calls this, and the request commits the entry.  Returns whether an entry was written."""
    refused = refusal_of(error)
    if refused is not None and refused.keeps_work:
        return True
    discard(session)
    entry = refused.audit if refused is not None else None
    if entry is None:
        return False
    if entry.also is not None:
        entry.also(session)
    code = getattr(refused, "code", None)
    detail = {"reason": code, **entry.detail} if code else dict(entry.detail)
    audit.record(session, entry.action, actor=entry.actor, outcome=AuditOutcome.denied,
                 object_type=entry.object_type, object_id=entry.object_id, detail=detail, ip=entry.ip)
    return True


@contextmanager
def unit_of_work(session: Session) -> Iterator[Session]:
    """Commit the block's work when it succeeds; when it raises, roll it back, keep the refusal's audit
    entry (if any) and re-raise."""
    try:
        yield session
    except BaseException as exc:
        finish(session, exc)
        raise
    finish(session)


def finish(session: Session, error: BaseException | None = None) -> None:
    """End a unit of work by hand, as ``unit_of_work`` does (an async owner runs this in a worker thread):
    commit; after ``error``, roll the work back and commit only the refusal's entry, if it has one."""
    if error is not None:
        record_refusal(session, error)
    if session.in_transaction():
        session.commit()  # after an error: the refusal's entry, or nothing (the work was rolled back)


def checkpoint(session: Session) -> None:
    """Commit what is done so far and start afresh: for the few flows that are two transactions on
    purpose (each caller says why)."""
    session.commit()
