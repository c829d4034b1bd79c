"""Accounts API (admin)."""

from __future__ import annotations

import datetime as dt

from fastapi import HTTPException, Request
from pydantic import BaseModel, Field

from triage import accounts
from triage.errors import RefusalEntry
from triage.models import User
from webcommon import routing
from webcommon.deps import AdminUser, Id, SessionDep, client_ip

router = routing.router(prefix="/api/users", tags=["users"])


# Schemas
class UserCreate(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    full_name: str = Field(default="", max_length=200)
    roles: list[str] = Field(min_length=1)


class UserUpdate(BaseModel):
    roles: list[str] | None = None
    is_active: bool | None = None


class UserPublic(BaseModel):
    id: int
    username: str
    full_name: str
    roles: list[str]
    roles_on_hold: list[str] = Field(description="Roles set aside (separation of duties) until an admin sets the roles")
    is_active: bool
    has_second_factor: bool
    must_change_password: bool
    locked_until: dt.datetime | None
    created_at: dt.datetime


class UserCreated(UserPublic):
    one_time_password: str = Field(description="Shown once; the user must change it at the first login")


class UsersPublic(BaseModel):
    data: list[UserPublic]
    count: int


def _public(u: User) -> UserPublic:
    return UserPublic(id=u.pk, username=u.username, full_name=u.full_name, roles=u.roles.split(),
                      roles_on_hold=u.roles_on_hold.split(),
                      is_active=u.is_active, has_second_factor=bool(u.totp_secret),
                      must_change_password=u.must_change_password, locked_until=u.locked_until,
                      created_at=u.created_at)


def _refused(session: SessionDep, exc: accounts.AccountError, user_id: int | None = None) -> HTTPException:
    if user_id is not None and session.get(User, user_id) is None:
        return HTTPException(404, str(exc))
    return HTTPException(409 if user_id is not None else 422, str(exc))


@router.get("")
def read_users(session: SessionDep, admin: AdminUser) -> UsersPublic:
    """Every account."""
    users = accounts.list_users(session)
    return UsersPublic(data=[_public(u) for u in users], count=len(users))


@router.post("", status_code=201)
def create_user(request: Request, body: UserCreate, session: SessionDep, admin: AdminUser) -> UserCreated:
    """Create an account with a one-time password."""
    try:
        user, password = accounts.admin_create_user(session, admin, body.username, body.roles, body.full_name,
                                                    client_ip(request))
    except accounts.AccountError as exc:
        raise _refused(session, exc) from None
    return UserCreated(one_time_password=password, **_public(user).model_dump())


@router.get("/{user_id}")
def read_user(session: SessionDep, admin: AdminUser, user_id: Id) -> UserPublic:
    """One account."""
    user = session.get(User, user_id)
    if user is None:
        raise HTTPException(404, "No such account.")
    return _public(user)


@router.patch("/{user_id}")
def update_user(request: Request, user_id: Id, body: UserUpdate, session: SessionDep, admin: AdminUser) -> UserPublic:
    """Change roles and/or enable or disable the account."""
    ip = client_ip(request)
    try:
        user = session.get(User, user_id)
        if body.roles is not None:
            user = accounts.set_roles(session, admin, user_id, body.roles, ip=ip)
        if body.is_active is not None:
            user = accounts.set_active(session, admin, user_id, body.is_active, ip=ip)
    except accounts.AccountError as exc:
        # One entry for the whole update, with what was asked.
        exc.audit = RefusalEntry("user.update", actor=admin, object_type="user", object_id=user_id,
                                 detail={"reason": str(exc), "request": body.model_dump(exclude_none=True)}, ip=ip)
        raise _refused(session, exc, user_id) from exc
    if user is None:
        raise HTTPException(404, "No such account.")
    return _public(user)


@router.post("/{user_id}/reset-password")
def update_user_password(request: Request, session: SessionDep, admin: AdminUser, user_id: Id) -> UserCreated:
    """Give the account a new one-time password (its sessions end)."""
    try:
        user, password = accounts.reset_password(session, admin, user_id, ip=client_ip(request))
    except accounts.AccountError as exc:
        raise _refused(session, exc, user_id) from None
    return UserCreated(one_time_password=password, **_public(user).model_dump())


@router.delete("/{user_id}/totp")
def delete_user_totp(request: Request, session: SessionDep, admin: AdminUser, user_id: Id) -> UserPublic:
    """Remove a lost second factor."""
    try:
        user = accounts.remove_totp_for(session, admin, user_id, ip=client_ip(request))
    except accounts.AccountError as exc:
        raise _refused(session, exc, user_id) from None
    return _public(user)
