"""Admin pages: accounts (create, disable/enable, reset password, roles, second factor); the face model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from triage import accounts, reindex
from triage.models import ApiToken, Role, User
from triage.security import list_api_tokens, revoke_api_token
from triage.transaction import record_refusal
from web.flash import taken, tell
from web.htmx import STOP_POLLING, hx_redirect
from web.templating import render
from webcommon import routing
from webcommon.deps import AdminUser, Id, SessionDep, SettingsDep, client_ip

router = routing.router(prefix="/admin", tags=["admin"])


def _users_page(request: Request, session: SessionDep, status_code: int = 200, **ctx: object) -> Response:
    return render(request, "admin_users.html", {
        "users": accounts.list_users(session), "roles": [r.value for r in Role],
        "on_hold": accounts.accounts_on_hold(session), **ctx,
    }, status_code=status_code)


def _get_user(session: SessionDep, user_id: Id) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise HTTPException(404, "No such account.")
    return user


def _user_page(request: Request, session: SessionDep, target: User, status_code: int = 200,
               **ctx: object) -> Response:
    return render(request, "admin_user.html", {
        "target": target, "roles": [r.value for r in Role],
        "tokens": list_api_tokens(session, target.pk),
        "flashes": taken(request, session), **ctx,
    }, status_code=status_code)


def _password_told(request: Request, session: SessionDep, user: User, password: str, what: str) -> Response:
    """Redirect to the account's page, which shows the one-time password once (a reload does not)."""
    tell(request, session, f"{what} One-time password for {user.username} (shown once; give it to them "
                           "in person; they choose their own at the first login):",
         secret=password, secret_id="one-time-password")
    return RedirectResponse(f"/admin/users/{user.id}", status_code=303)


@router.get("/users")
def read_users(request: Request, session: SessionDep, admin: AdminUser) -> Response:
    """Every account, with a form to create one."""
    return _users_page(request, session)


@router.post("/users")
def create_user(
    request: Request, session: SessionDep, admin: AdminUser,
    username: Annotated[str, Form(max_length=64)], roles: Annotated[list[str] | None, Form()] = None,
    full_name: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Create an account with a one-time password."""
    try:
        user, password = accounts.admin_create_user(session, admin, username, roles or [], full_name,
                                                    client_ip(request))
    except accounts.AccountError as exc:
        record_refusal(session, exc)
        return _users_page(request, session, status_code=422, error=str(exc), form={"username": username,
                                                                                     "full_name": full_name})
    return _password_told(request, session, user, password, "Account created.")


@router.get("/users/{user_id}")
def read_user(request: Request, session: SessionDep, admin: AdminUser, user_id: Id) -> Response:
    """One account."""
    return _user_page(request, session, _get_user(session, user_id))


DONE = {"disable": "Account disabled: its sessions and API tokens stopped working at once.",
        "enable": "Account enabled: the person can log in again.",
        "roles": "Roles saved.", "totp": "Second factor removed: the person sets up a new one at the next login."}


def _act(request: Request, session: SessionDep, user_id: Id, done: str, op: Callable[..., object],
         *args: object) -> Response:
    try:
        result = op(session, request.state.auth.user, user_id, *args, ip=client_ip(request))
    except accounts.AccountError as exc:
        record_refusal(session, exc)
        target = session.get(User, user_id)
        if target is None:
            raise HTTPException(404, str(exc)) from None
        return _user_page(request, session, target, status_code=409, error=str(exc))
    if isinstance(result, tuple):
        user, password = result
        return _password_told(request, session, user, password, "Password reset: the old one no longer works.")
    tell(request, session, DONE[done])
    return RedirectResponse(f"/admin/users/{user_id}", status_code=303)


@router.get("/users/{user_id}/disable")
def read_user_disable(request: Request, session: SessionDep, admin: AdminUser, user_id: Id) -> Response:
    """The confirmation step before an account is disabled (it works without JavaScript)."""
    return render(request, "admin_user_disable.html", {"target": _get_user(session, user_id)})


@router.post("/users/{user_id}/disable")
def update_user_disable(request: Request, session: SessionDep, admin: AdminUser, user_id: Id,
                        confirm: Annotated[str, Form()] = "") -> Response:
    """Disable an account (after the confirmation step): its sessions and tokens stop working at once."""
    if confirm != "yes":
        return _user_page(request, session, _get_user(session, user_id), status_code=422,
                          error="Nothing was changed: confirm on the confirmation page first.")
    return _act(request, session, user_id, "disable", accounts.set_active, False)


@router.post("/users/{user_id}/enable")
def update_user_enable(request: Request, session: SessionDep, admin: AdminUser, user_id: Id) -> Response:
    """Enable an account again (and lift a lockout)."""
    return _act(request, session, user_id, "enable", accounts.set_active, True)


@router.post("/users/{user_id}/reset-password")
def update_user_password(request: Request, session: SessionDep, admin: AdminUser, user_id: Id) -> Response:
    """Give the account a one-time password, to be changed at the next login."""
    return _act(request, session, user_id, "", accounts.reset_password)


@router.post("/users/{user_id}/roles")
def update_user_roles(request: Request, session: SessionDep, admin: AdminUser, user_id: Id,
                      roles: Annotated[list[str] | None, Form()] = None) -> Response:
    """Set the account's roles."""
    return _act(request, session, user_id, "roles", accounts.set_roles, roles or [])


@router.post("/users/{user_id}/totp/remove")
def delete_user_totp(request: Request, session: SessionDep, admin: AdminUser, user_id: Id) -> Response:
    """Remove a lost second factor."""
    return _act(request, session, user_id, "totp", accounts.remove_totp_for)


@router.post("/users/{user_id}/tokens/{token_id}/revoke")
def delete_user_token(request: Request, session: SessionDep, admin: AdminUser, user_id: Id,
                      token_id: Id) -> Response:
    """Revoke one of the account's API tokens (a lost phone)."""
    target = _get_user(session, user_id)
    token = session.get(ApiToken, token_id)
    if token is None or token.user_id != user_id:
        raise HTTPException(404, "No such token for this account.")
    revoke_api_token(session, admin, token_id, client_ip(request))
    tell(request, session, f"Token “{token.name}” revoked: it no longer works.")
    return RedirectResponse(f"/admin/users/{target.id}", status_code=303)


REINDEX_POLL_SECONDS = 2


def _reindex_context(session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    return {"st": reindex.status(session, settings), "runs": reindex.recent_runs(session),
            "poll_seconds": REINDEX_POLL_SECONDS}


@router.get("/reindex")
def read_reindex(request: Request, session: SessionDep, settings: SettingsDep, admin: AdminUser,
                 started: int = 0) -> Response:
    """The gallery's face model, the configured one, and the re-embedding's progress."""
    return render(request, "admin_reindex.html", {
        **_reindex_context(session, settings),
        "notice": "Re-embedding started: it runs in the background." if started else ""})


@router.get("/reindex/status")
def read_reindex_status(request: Request, session: SessionDep, settings: SettingsDep, admin: AdminUser) -> Response:
    """The live fragment; answers 286 (htmx stops polling) once no run is under way."""
    ctx = _reindex_context(session, settings)
    return render(request, "_reindex_status.html", ctx,
                  status_code=200 if ctx["st"].in_progress else STOP_POLLING)


@router.post("/reindex")
def create_reindex(request: Request, session: SessionDep, settings: SettingsDep, admin: AdminUser) -> Response:
    """Start re-embedding the reference photos with the configured model (a background job)."""
    try:
        run = reindex.start_run(session, settings, admin, ip=client_ip(request))
    except reindex.ReindexRefused as exc:
        record_refusal(session, exc)
        return render(request, "admin_reindex.html", {
            **_reindex_context(session, settings), "error": str(exc)}, status_code=409)
    if run is None:
        _audit_nothing_to_do(session, admin, request)
        return render(request, "admin_reindex.html", {
            **_reindex_context(session, settings),
            "error": "Nothing to re-embed: the gallery already searches with the configured model."},
            status_code=409)
    return hx_redirect("/admin/reindex?started=1", request)


def _audit_nothing_to_do(session: SessionDep, admin: User, request: Request) -> None:
    from triage import audit
    from triage.models import AuditOutcome

    audit.record(session, "gallery.reindex_start", actor=admin, outcome=AuditOutcome.denied,
                 object_type="reindex_run", detail={"reason": "nothing to re-embed"}, ip=client_ip(request))
