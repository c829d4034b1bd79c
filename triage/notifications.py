"""In-app notifications: a flag raised on an officer's sighting, an account event, …"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from triage.clock import utcnow
from triage.db import rows_affected
from triage.models import Notification

MESSAGE_MAX = 500
LIST_LIMIT = 100


def notify(session: Session, user_id: int, kind: str, message: str, flag_id: int | None = None, *,
           object_type: str = "", object_id: int | None = None) -> Notification:
    """Add a notification inside the caller's transaction (it commits with the event it reports)."""
    if flag_id is not None and not object_type:
        object_type, object_id = "flag", flag_id
    row = Notification(user_id=user_id, kind=kind[:40], message=message[:MESSAGE_MAX], flag_id=flag_id,
                       object_type=object_type[:40], object_id=object_id)
    session.add(row)
    session.flush()
    return row


def clear(session: Session, object_type: str, object_id: int, *, kinds: Sequence[str] = (),
          user_ids: Iterable[int] | None = None) -> int:
    """The item was handled: its unread notifications (of these kinds, to these users) are marked read."""
    stmt = update(Notification).where(col(Notification.object_type) == object_type,
                                      col(Notification.object_id) == object_id,
                                      col(Notification.read_at).is_(None))
    if kinds:
        stmt = stmt.where(col(Notification.kind).in_(list(kinds)))
    if user_ids is not None:
        stmt = stmt.where(col(Notification.user_id).in_(list(user_ids)))
    result = session.execute(stmt.values(read_at=utcnow()))
    return rows_affected(result)


def unread_count(session: Session, user_id: int) -> int:
    stmt = select(func.count()).select_from(Notification).where(
        Notification.user_id == user_id, col(Notification.read_at).is_(None))
    return int(session.exec(stmt).one())


def list_for(session: Session, user_id: int, limit: int = LIST_LIMIT) -> list[Notification]:
    """A user's own notifications, newest first (nobody else's, ever)."""
    stmt = (select(Notification).where(Notification.user_id == user_id)
            .order_by(col(Notification.created_at).desc(), col(Notification.id).desc()).limit(limit))
    return list(session.exec(stmt).all())


def get_for(session: Session, user_id: int, notification_id: int) -> Notification | None:
    """The notification if it is this user's; someone else's is as good as missing."""
    row = session.get(Notification, notification_id)
    return row if row is not None and row.user_id == user_id else None


def mark_read(session: Session, user_id: int, notification_id: int | None = None) -> int:
    """Mark one (or, without an id, every) unread notification of this user read; return how many."""
    stmt = update(Notification).where(col(Notification.user_id) == user_id, col(Notification.read_at).is_(None))
    if notification_id is not None:
        stmt = stmt.where(col(Notification.id) == notification_id)
    result = session.execute(stmt.values(read_at=utcnow()))
    return rows_affected(result)
