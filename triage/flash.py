"""One-time messages for the page after a redirect (post/redirect/get), kept server-side per browser session.

A form post changes something, stores what to tell the person here, and redirects; the next page takes
the messages (deleting them), so a reload shows nothing twice and re-posts nothing.  A one-time password
is sealed at rest and bound to its row; a message not shown within ``FLASH_TTL`` is dropped unread.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete
from sqlmodel import Session, col, select

from triage.clock import utcnow
from triage.config import Settings
from triage.models import FlashMessage
from triage.secretbox import SecretUnreadable, seal, unseal

FLASH_TTL = dt.timedelta(minutes=10)


@dataclass
class Flash:
    kind: str
    text: str
    secret: str = ""
    secret_id: str = ""


def _context(row: FlashMessage) -> str:
    return f"flash:{row.id}:{row.web_session_id}"


def push(session: Session, settings: Settings, web_session_id: int, text: str, *, kind: str = "ok",
         secret: str = "", secret_id: str = "") -> None:
    """Keep a message for this browser session's next page (in the caller's transaction)."""
    row = FlashMessage(web_session_id=web_session_id, kind=kind, text=text[:500])
    session.add(row)
    session.flush()
    if secret:
        row.secret = (secret_id[:40] + "|" if secret_id else "|") + seal(settings.ensure_secret_key(), secret,
                                                                         context=_context(row))
        session.add(row)


def take(session: Session, settings: Settings, web_session_id: int) -> list[Flash]:
    """This session's messages, oldest first, deleted as they are read (with the caller's transaction)."""
    rows = session.exec(select(FlashMessage).where(FlashMessage.web_session_id == web_session_id)
                        .order_by(col(FlashMessage.id))).all()
    if not rows:
        return []
    session.execute(delete(FlashMessage).where(col(FlashMessage.id).in_([r.id for r in rows])))
    cutoff = utcnow() - FLASH_TTL
    out = []
    for row in rows:
        created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=dt.UTC)
        if created < cutoff:
            continue
        out.append(_open(row, settings))
    return out


def _open(row: FlashMessage, settings: Settings) -> Flash:
    if not row.secret:
        return Flash(row.kind, row.text)
    secret_id, _, sealed = row.secret.partition("|")
    try:
        return Flash(row.kind, row.text, unseal(settings.ensure_secret_key(), sealed, context=_context(row)),
                     secret_id)
    except SecretUnreadable:
        return Flash("error", row.text + " (it can no longer be read: the server's secret key changed; "
                     "reset it again)")
