"""Log in and log out."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from triage import audit
from triage.deps import CurrentUser, SessionDep, SettingsDep, client_ip
from triage.security import SESSION_COOKIE, LoginFailed, authenticate, csrf_matches, start_session
from web.templating import render

router = APIRouter(tags=["auth"])

# Before login there is no session; the login form uses a double-submit cookie.
LOGIN_CSRF_COOKIE = "miatari_login_csrf"


def _safe_next(url: str) -> str:
    return url if url.startswith("/") and not url.startswith("//") else "/"


@router.get("/login")
def read_login(request: Request, next: str = "/") -> Response:
    """The login form."""
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
    response = render(request, "login.html", {"login_csrf": token, "next_url": _safe_next(next)})
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                        secure=request.app.state.settings.secure_cookies)
    return response  # type: ignore[no-any-return]


@router.post("/login")
def login(
    request: Request, session: SessionDep, settings: SettingsDep,
    username: Annotated[str, Form(max_length=64)], password: Annotated[str, Form(max_length=512)],
    csrf_token: Annotated[str, Form()] = "", totp: Annotated[str, Form(max_length=8)] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    """Check the credentials and start a session."""
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    ctx = {"login_csrf": cookie or secrets.token_urlsafe(32), "next_url": _safe_next(next), "username": username}
    if not cookie or not csrf_matches(cookie, csrf_token):
        audit.record(session, "login", outcome="denied", object_type="user", object_id=username[:64],
                     detail={"reason": "CSRF check failed"}, ip=client_ip(request))
        session.commit()
        return render(request, "login.html", {**ctx, "error": "The login form expired; please try again."},  # type: ignore[no-any-return]
                      status_code=403)
    try:
        user = authenticate(session, settings, username, password, totp, ip=client_ip(request))
    except LoginFailed as exc:
        session.commit()
        return render(request, "login.html", {**ctx, "error": str(exc)}, status_code=401)  # type: ignore[no-any-return]
    token, _ = start_session(session, user, client_ip(request), request.headers.get("user-agent", ""))
    session.commit()
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax", secure=settings.secure_cookies,
                        max_age=settings.session_absolute_hours * 3600)
    response.delete_cookie(LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout")
def logout(request: Request, session: SessionDep, user: CurrentUser) -> Response:
    """End the session."""
    from triage.clock import utcnow

    ws = request.state.auth.web_session
    if ws is not None:
        ws.revoked_at = utcnow()
        session.add(ws)
    audit.record(session, "logout", actor=user, object_type="user", object_id=user.id, ip=client_ip(request))
    session.commit()
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/")
def read_home(request: Request, user: CurrentUser) -> Response:
    """The start page for the roles this person holds."""
    return render(request, "home.html")  # type: ignore[no-any-return]
