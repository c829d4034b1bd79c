"""Log in and log out; one's own account: password, second factor, API tokens."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Form, Request
from fastapi.responses import RedirectResponse, Response

from triage import accounts, audit, dashboard
from triage.models import AuditOutcome, Role
from triage.security import (
    SESSION_COOKIE,
    LoginFailed,
    authenticate,
    create_api_token,
    csrf_matches,
    end_session,
    list_api_tokens,
    new_totp_secret,
    revoke_api_token,
    start_session,
    totp_uri,
)
from triage.transaction import record_refusal
from web.flash import taken, tell
from web.templating import render
from webcommon import routing
from webcommon.deps import (
    AccountUser,
    CurrentUser,
    Id,
    SessionDep,
    SettingsDep,
    client_ip,
    get_settings,
    pending_action,
)

router = routing.router(tags=["auth"])

# Before login there is no session; the login form uses a double-submit cookie.
LOGIN_CSRF_COOKIE = "miatari_login_csrf"


def _secure(request: Request) -> bool:
    """Secure cookies when configured, and whenever the request came over HTTPS (also through a proxy)."""
    return bool(get_settings(request).secure_cookies or request.url.scheme == "https")


def _safe_next(url: str) -> str:
    # Only a path on this site: never "//host" or "/\host", which browsers treat as another site.
    return url if url.startswith("/") and not url.startswith(("//", "/\\")) else "/"


@router.get("/login")
def read_login(request: Request, next: str = "/") -> Response:
    """The login form."""
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
    response = render(request, "login.html", {"login_csrf": token, "next_url": _safe_next(next)})
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request))
    return response


@router.post("/login")
def create_login(
    request: Request, session: SessionDep, settings: SettingsDep,
    username: Annotated[str, Form(max_length=64)], password: Annotated[str, Form(max_length=512)],
    csrf_token: Annotated[str, Form()] = "", totp: Annotated[str, Form(max_length=8)] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    """Check the credentials and start a session."""
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    ctx = {"login_csrf": cookie or secrets.token_urlsafe(32), "next_url": _safe_next(next), "username": username}
    if not cookie or not csrf_matches(cookie, csrf_token):
        return _login_csrf_refused(request, session, ctx, username)
    try:
        user = authenticate(session, settings, username, password, totp, ip=client_ip(request))
    except LoginFailed as exc:
        return render(request, "login.html", {**ctx, "error": str(exc), "until": exc.until}, status_code=401)
    token, _ = start_session(session, user, client_ip(request), request.headers.get("user-agent", ""),
                             replaces=request.cookies.get(SESSION_COOKIE))
    pending = pending_action(user, settings)
    return _logged_in(request, token, pending.location if pending else _safe_next(next))


def _login_csrf_refused(request: Request, session: SessionDep, ctx: dict[str, str], username: str) -> Response:
    audit.record(session, "login", outcome=AuditOutcome.denied, object_type="user", object_id=username[:64],
                 detail={"reason": "CSRF check failed"}, ip=client_ip(request))
    return render(request, "login.html", {**ctx, "error": "The login form expired; please try again."},
                  status_code=403)


def _logged_in(request: Request, token: str, location: str) -> Response:
    response = RedirectResponse(location, status_code=303)
    # No max_age: a session cookie, gone when the browser closes; the server enforces both timeouts.
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax", secure=_secure(request), path="/")
    response.delete_cookie(LOGIN_CSRF_COOKIE)
    return response


@router.post("/logout")
def create_logout(request: Request, session: SessionDep, user: AccountUser) -> Response:
    """End the session."""
    ws = request.state.auth.web_session
    if ws is not None:
        end_session(session, ws, user, client_ip(request))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/")
def read_home(request: Request, session: SessionDep, user: CurrentUser) -> Response:
    """The start page for the roles this person holds; for managers, what needs attention now."""
    return render(request, "home.html",
                  {"board": dashboard.dashboard(session) if user.has_role(Role.manager) else None})


# One's own account
def _account_page(request: Request, session: SessionDep, user: AccountUser, status_code: int = 200,
                  **ctx: object) -> Response:
    return render(request, "account.html", {
        "tokens": list_api_tokens(session, user.pk),
        "flashes": taken(request, session), **ctx,
    }, status_code=status_code)


@router.get("/account")
def read_account(request: Request, session: SessionDep, user: CurrentUser) -> Response:
    """Your account: password, second factor, API tokens."""
    return _account_page(request, session, user)


@router.get("/account/password")
def read_account_password(request: Request, user: AccountUser) -> Response:
    """The change-password form (the first stop after a reset)."""
    return render(request, "account_password.html", {"forced": user.must_change_password})


@router.post("/account/password")
def update_account_password(
    request: Request, session: SessionDep, settings: SettingsDep, user: AccountUser,
    current_password: Annotated[str, Form(max_length=512)], new_password: Annotated[str, Form(max_length=512)],
    confirm_password: Annotated[str, Form(max_length=512)],
) -> Response:
    """Change your own password."""
    try:
        accounts.change_password(session, user, current_password, new_password, confirm_password,
                                 request.state.auth.web_session, client_ip(request))
    except accounts.AccountError as exc:
        record_refusal(session, exc)
        return render(request, "account_password.html",
                      {"forced": user.must_change_password, "error": str(exc)}, status_code=422)
    pending = pending_action(user, settings)
    return RedirectResponse(pending.location if pending else "/account?changed=password", status_code=303)


@router.get("/account/totp")
def read_account_totp(request: Request, settings: SettingsDep, user: AccountUser) -> Response:
    """Set up a second factor: the secret and otpauth URI shown as text, to type into an app."""
    secret = new_totp_secret()
    return render(request, "account_totp.html", {
        "secret": secret, "uri": totp_uri(user.username, secret), "enrolled": bool(user.totp_secret),
        "required": pending_action(user, settings) is not None,
    })


@router.post("/account/totp")
def create_account_totp(
    request: Request, session: SessionDep, settings: SettingsDep, user: AccountUser,
    secret: Annotated[str, Form(max_length=64)], code: Annotated[str, Form(max_length=8)],
) -> Response:
    """Confirm the second factor with a code from the app, then keep it."""
    try:
        accounts.enrol_totp(session, settings, user, secret, code, client_ip(request))
    except accounts.AccountError as exc:
        record_refusal(session, exc)
        return render(request, "account_totp.html", {
            "secret": secret.strip().upper(), "uri": totp_uri(user.username, secret.strip().upper()),
            "enrolled": bool(user.totp_secret), "required": pending_action(user, settings) is not None,
            "error": str(exc),
        }, status_code=422)
    pending = pending_action(user, settings)
    return RedirectResponse(pending.location if pending else "/account?changed=totp", status_code=303)


@router.post("/account/totp/remove")
def delete_account_totp(
    request: Request, session: SessionDep, settings: SettingsDep, user: CurrentUser,
    password: Annotated[str, Form(max_length=512)], code: Annotated[str, Form(max_length=8)],
) -> Response:
    """Remove your second factor (your password and a current code prove it is you)."""
    try:
        accounts.remove_own_totp(session, settings, user, password, code, client_ip(request))
    except accounts.AccountError as exc:
        record_refusal(session, exc)
        return _account_page(request, session, user, status_code=422, error=str(exc))
    return RedirectResponse("/account?changed=totp_removed", status_code=303)


@router.post("/account/tokens")
def create_account_token(
    request: Request, session: SessionDep, user: CurrentUser, name: Annotated[str, Form(max_length=100)],
) -> Response:
    """Create a personal API token for a mobile client; it is shown once."""
    try:
        token, row = create_api_token(session, user, name, client_ip(request))
    except ValueError as exc:
        return _account_page(request, session, user, status_code=422, error=str(exc))
    tell(request, session, f"Token “{row.name}” created. Copy it now; it will not be shown again:",
         secret=token, secret_id="new-token")
    return RedirectResponse("/account", status_code=303)


@router.post("/account/tokens/{token_id}/revoke")
def delete_account_token(request: Request, session: SessionDep, user: CurrentUser, token_id: Id) -> Response:
    """Revoke one of your API tokens."""
    try:
        revoke_api_token(session, user, token_id, client_ip(request))
    except LookupError as exc:
        record_refusal(session, exc)
        return _account_page(request, session, user, status_code=404, error=str(exc))
    return RedirectResponse("/account?changed=token", status_code=303)
