"""In-app notifications: the list, and the unread count in the top bar."""

from __future__ import annotations

from fastapi import HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from triage import notifications
from web.htmx import is_htmx
from web.templating import render
from webcommon import routing
from webcommon.deps import AccountUser, CurrentUser, Id, SessionDep

router = routing.router(prefix="/notifications", tags=["notifications"])


@router.get("")
def read_notifications(request: Request, session: SessionDep, user: CurrentUser) -> Response:
    """Your notifications, newest first."""
    return render(request, "notifications.html",
                  {"notifications": notifications.list_for(session, user.pk)})


@router.get("/count")
def read_notification_count(request: Request, session: SessionDep, user: AccountUser) -> Response:
    """The top-bar link text with the unread count (an htmx fragment)."""
    # AccountUser, not CurrentUser: on the forced password page this poll must not redirect in a loop.
    return render(request, "_notif_count.html",
                  {"unread": notifications.unread_count(session, user.pk)})


@router.post("/read")
def update_notifications_read(request: Request, session: SessionDep, user: CurrentUser) -> Response:
    """Mark all your notifications read."""
    notifications.mark_read(session, user.pk)
    if is_htmx(request):
        return render(request, "_notif_count.html", {"unread": 0})
    return RedirectResponse("/notifications", status_code=303)


@router.post("/{notification_id}/read")
def update_notification_read(request: Request, session: SessionDep, user: CurrentUser,
                             notification_id: Id) -> Response:
    """Mark one of your notifications read (someone else's is simply not found)."""
    if notifications.get_for(session, user.pk, notification_id) is None:
        raise HTTPException(404, "No such notification.")
    notifications.mark_read(session, user.pk, notification_id)
    return RedirectResponse("/notifications", status_code=303)
