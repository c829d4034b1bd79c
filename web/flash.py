"""Post/redirect/get for the pages: what a form post did is told on the page it redirects to, once."""

from __future__ import annotations

from fastapi import Request
from sqlmodel import Session

from triage import flash
from webcommon.deps import get_settings


def _web_session_id(request: Request) -> int | None:
    auth = getattr(request.state, "auth", None)
    ws = getattr(auth, "web_session", None) if auth is not None else None
    return getattr(ws, "id", None)


def tell(request: Request, session: Session, text: str, *, kind: str = "ok", secret: str = "",
         secret_id: str = "") -> None:
    """Keep a message (and a one-time secret) for this browser's next page, in the request's transaction."""
    ws_id = _web_session_id(request)
    if ws_id is not None:
        flash.push(session, get_settings(request), ws_id, text, kind=kind, secret=secret, secret_id=secret_id)


def taken(request: Request, session: Session) -> list[flash.Flash]:
    """The messages for this page, deleted as they are shown (with the request's transaction: a reload
    shows nothing)."""
    ws_id = _web_session_id(request)
    if ws_id is None:
        return []
    return flash.take(session, get_settings(request), ws_id)
