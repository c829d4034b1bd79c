"""Personal API tokens for mobile clients, and who am I."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field

from triage.models import User
from triage.security import (
    LoginFailed,
    authenticate,
    create_api_token,
    csrf_matches,
    list_api_tokens,
    revoke_api_token,
)
from webcommon import routing
from webcommon.deps import (
    CSRF_HEADER,
    CurrentUser,
    Forbidden,
    Id,
    SessionDep,
    SettingsDep,
    authenticate_request,
    client_ip,
    get_optional_user,
    pending_action,
    refusal,
    require_account_user,
)

router = routing.router(prefix="/api", tags=["auth"])


# Schemas
class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100, description="What the token is for, e.g. the phone")
    username: str | None = Field(default=None, max_length=64)
    password: str | None = Field(default=None, max_length=512)
    totp: str | None = Field(default=None, max_length=8)


class TokenPublic(BaseModel):
    id: int
    name: str
    created_at: dt.datetime
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None


class TokenCreated(TokenPublic):
    token: str = Field(description="Shown only once; send it as `Authorization: Bearer <token>`")


class TokensPublic(BaseModel):
    data: list[TokenPublic]
    count: int


class MePublic(BaseModel):
    id: int
    username: str
    full_name: str
    roles: list[str]
    has_second_factor: bool
    must_change_password: bool


def _public(row: object) -> TokenPublic:
    return TokenPublic.model_validate(row, from_attributes=True)


@router.post("/tokens", status_code=201)
def create_token(request: Request, body: TokenCreate, session: SessionDep, settings: SettingsDep) -> TokenCreated:
    """Create a personal token from username + password (+ code), or for the logged-in user."""
    user = _token_owner(request, body, session, settings)
    pending = pending_action(user, settings)
    if pending is not None:
        raise HTTPException(403, pending.message) from pending  # the checked login is kept
    try:
        token, row = create_api_token(session, user, body.name, client_ip(request))
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return TokenCreated(token=token, **_public(row).model_dump())


def _token_owner(request: Request, body: TokenCreate, session: SessionDep, settings: SettingsDep) -> User:
    """Who the new token is for: the credentials given, or else the browser session's user."""
    if body.username is not None or body.password is not None:
        try:
            return authenticate(session, settings, body.username or "", body.password or "", body.totp or "",
                                ip=client_ip(request))
        except LoginFailed as exc:
            raise HTTPException(401, str(exc)) from exc  # the failed attempt stays on record
    # From a browser session: CSRF-checked like any other state change.
    if get_optional_user(request, session, settings) is None:
        raise HTTPException(401, "Give a username and password, or log in first.")
    resolved = authenticate_request(request, session, settings)
    # A JSON body: the CSRF token can only come in the header.
    if resolved.web_session is not None and not csrf_matches(resolved.web_session.csrf_token,
                                                             request.headers.get(CSRF_HEADER)):
        raise Forbidden("CSRF check failed: send the X-CSRF-Token header.").recorded_as(
            refusal(request, "csrf", resolved.user, {"reason": "missing or wrong CSRF token"}))
    return resolved.user


@router.get("/tokens")
def read_tokens(session: SessionDep, user: CurrentUser) -> TokensPublic:
    """Your own tokens (never the token values)."""
    rows = list_api_tokens(session, user.pk)
    return TokensPublic(data=[_public(r) for r in rows], count=len(rows))


@router.delete("/tokens/{token_id}", status_code=204)
def delete_token(request: Request, session: SessionDep, user: CurrentUser, token_id: Id) -> Response:
    """Revoke a token: your own, or anyone's if you are an admin."""
    try:
        revoke_api_token(session, user, token_id, client_ip(request))
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from exc
    return Response(status_code=204)


@router.get("/me")
def read_me(user: Annotated[User, Depends(require_account_user)]) -> MePublic:
    """Who this token or session belongs to, and what they may do."""
    return MePublic(id=user.pk, username=user.username, full_name=user.full_name,
                    roles=sorted(user.roles.split()), has_second_factor=bool(user.totp_secret),
                    must_change_password=user.must_change_password)
