"""In-app notifications: the list, and the unread count in the top bar."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from triage import notifications
from web.htmx import is_htmx
from web.templating import render
from webcommon.deps import AccountUser, CurrentUser, Id, SessionDep

router = APIRouter(prefix="/notifications", tags=["notifications"])


@router.get("")
def read_notifications(request: Request, session: SessionDep, user: CurrentUser) -> Response:
    """Your notifications, newest first."""
    return render(request, "notifications.html",
                  {"notifications": notifications.list_for(session, user.id)})  # type: ignore[arg-type]


@router.get("/count")
def read_notification_count(request: Request, session: SessionDep, user: AccountUser) -> Response:
    """The top-bar link text with the unread count (an htmx fragment)."""
    # AccountUser, not CurrentUser: on the forced password page this poll must not redirect in a loop.
    return render(request, "_notif_count.html",
                  {"unread": notifications.unread_count(session, user.id)})  # type: ignore[arg-type]


@router.post("/read")
def update_notifications_read(request: Request, session: SessionDep, user: CurrentUser) -> Response:
    """Mark all your notifications read."""
    notifications.mark_read(session, user.id)  # type: ignore[arg-type]
    if is_htmx(request):
        return render(request, "_notif_count.html", {"unread": 0})
    return RedirectResponse("/notifications", status_code=303)


@router.post("/{notification_id}/read")
def update_notification_read(request: Request, session: SessionDep, user: CurrentUser,
                             notification_id: Id) -> Response:
    """Mark one of your notifications read (someone else's is simply not found)."""
    if notifications.get_for(session, user.id, notification_id) is None:  # type: ignore[arg-type]
        raise HTTPException(404, "No such notification.")
    notifications.mark_read(session, user.id, notification_id)  # type: ignore[arg-type]
    return RedirectResponse("/notifications", status_code=303)
