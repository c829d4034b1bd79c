"""Account operations: an admin's (create, disable, reset, roles, second factor) and a user's own.

Every operation writes its audit entry, refusals included.  A refusal is raised as
``AccountError`` carrying its entry: whoever ends the transaction rolls the work back
and keeps the entry (``triage.transaction``).
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from sqlmodel import Session, select

from triage import audit
from triage.clock import utcnow
from triage.config import Settings
from triage.errors import DomainError, RefusalEntry
from triage.models import Role, User, WebSession
from triage.secretbox import SecretUnreadable
from triage.security import (
    PasswordRejected,
    check_password_policy,
    create_user,
    hash_password,
    parse_roles,
    revoke_user_sessions,
    set_totp_secret,
    totp_secret_of,
    totp_step,
    verify_password,
)

# A one-time password is long and random; the user replaces it at the next login.
ONE_TIME_PASSWORD_BYTES = 15
_BASE32_SECRET = re.compile(r"[A-Z2-7]{32}")


class AccountError(DomainError, ValueError):
    """The operation was refused; the message says why, in the user's words."""

    def __init__(self, message: str, code: str = "conflict", *, audit: RefusalEntry | None = None) -> None:
        super().__init__(code, message, audit=audit)


def _refuse(session: Session, action: str, actor: User | None, target_id: object, reason: str,
            ip: str = "", **detail: Any) -> AccountError:
    """The error to raise; its audit entry is written when the transaction ends (``triage.transaction``)."""
    return AccountError(reason, audit=RefusalEntry(action, actor=actor, object_type="user", object_id=target_id,
                                                   detail={"reason": reason, **detail}, ip=ip))


def _require_admin(session: Session, actor: User, action: str, target_id: object, ip: str) -> None:
    if not actor.has_role(Role.admin):
        raise _refuse(session, action, actor, target_id, "Only an admin may manage accounts.", ip)


def _target(session: Session, actor: User, action: str, user_id: int, ip: str) -> User:
    _require_admin(session, actor, action, user_id, ip)
    user = session.get(User, user_id)
    if user is None:
        raise _refuse(session, action, actor, user_id, "No such account.", ip)
    return user


def one_time_password() -> str:
    return secrets.token_urlsafe(ONE_TIME_PASSWORD_BYTES)


def list_users(session: Session) -> list[User]:
    return list(session.exec(select(User).order_by(User.username)).all())


def accounts_on_hold(session: Session) -> list[User]:
    """Accounts that held reviewing and overseeing roles at once: an admin must choose one side."""
    return list(session.exec(select(User).where(User.roles_on_hold != "").order_by(User.username)).all())


def _other_active_admins(session: Session, user_id: int | None) -> int:
    return sum(1 for u in session.exec(select(User).where(User.is_active == True)).all()  # noqa: E712
               if u.id != user_id and u.has_role(Role.admin))


def admin_create_user(session: Session, actor: User, username: str, roles: list[str], full_name: str = "",
                      ip: str = "") -> tuple[User, str]:
    """Create an account with a one-time password, to be changed at the first login."""
    _require_admin(session, actor, "user.create", username[:64], ip)
    password = one_time_password()
    try:
        user = create_user(session, username, password, roles, full_name=full_name, actor=actor,
                           check_policy=False, must_change_password=True, ip=ip)
    except ValueError as exc:
        raise _refuse(session, "user.create", actor, username[:64], str(exc), ip) from None
    return user, password


def set_active(session: Session, actor: User, user_id: int, active: bool, ip: str = "") -> User:
    """Disable (every session and token ends at once) or enable an account."""
    action = "user.enable" if active else "user.disable"
    user = _target(session, actor, action, user_id, ip)
    if not active and user.has_role(Role.admin) and _other_active_admins(session, user.id) == 0:
        raise _refuse(session, action, actor, user_id, "The last active admin cannot be disabled.", ip)
    user.is_active = active
    if active:
        user.failed_logins = 0
        user.locked_until = None
    session.add(user)
    revoked = 0 if active else revoke_user_sessions(session, user_id, tokens=True)
    audit.record(session, action, actor=actor, object_type="user", object_id=user.id,
                 detail={"username": user.username, "revoked": revoked}, ip=ip)
    return user


def reset_password(session: Session, actor: User, user_id: int, ip: str = "") -> tuple[User, str]:
    """Give the account a one-time password; its sessions end and it must choose a new one at login."""
    user = _target(session, actor, "user.reset_password", user_id, ip)
    password = one_time_password()
    user.password_hash = hash_password(password)
    user.must_change_password = True
    user.failed_logins = 0
    user.locked_until = None
    user.password_changed_at = utcnow()
    session.add(user)
    revoke_user_sessions(session, user_id)
    audit.record(session, "user.reset_password", actor=actor, object_type="user", object_id=user.id,
                 detail={"username": user.username}, ip=ip)
    return user, password


def set_roles(session: Session, actor: User, user_id: int, roles: list[str], ip: str = "") -> User:
    user = _target(session, actor, "user.set_roles", user_id, ip)
    try:
        values = parse_roles(roles)
    except ValueError as exc:
        raise _refuse(session, "user.set_roles", actor, user_id, str(exc), ip) from None
    if (user.has_role(Role.admin) and Role.admin.value not in values
            and _other_active_admins(session, user.id) == 0):
        raise _refuse(session, "user.set_roles", actor, user_id, "The last active admin must keep the admin role.", ip)
    before, on_hold = user.roles, user.roles_on_hold
    user.roles = " ".join(values)
    # Setting the roles is the admin's choice of side for an account whose roles were on hold.
    user.roles_on_hold = ""
    session.add(user)
    audit.record(session, "user.set_roles", actor=actor, object_type="user", object_id=user.id,
                 detail={"username": user.username, "before": before.split(), "after": values,
                         **({"on_hold_before": on_hold.split()} if on_hold else {})}, ip=ip)
    return user


def remove_totp_for(session: Session, actor: User, user_id: int, ip: str = "") -> User:
    """An admin removes a lost second factor; the user enrols a new one at the next login."""
    user = _target(session, actor, "user.totp_remove", user_id, ip)
    user.totp_secret = None
    user.totp_last_step = None
    session.add(user)
    revoke_user_sessions(session, user_id)
    audit.record(session, "user.totp_remove", actor=actor, object_type="user", object_id=user.id,
                 detail={"username": user.username, "by_admin": True}, ip=ip)
    return user


# The user's own account
def change_password(session: Session, user: User, current: str, new: str, confirm: str | None = None,
                    current_session: WebSession | None = None, ip: str = "") -> User:
    """Replace one's own password (the current one proves it is really them); other sessions end."""
    action = "user.change_password"
    if not verify_password(user.password_hash, current):
        raise _refuse(session, action, user, user.id, "The current password is wrong.", ip)
    if confirm is not None and new != confirm:
        raise _refuse(session, action, user, user.id, "The two new passwords differ.", ip)
    if new == current:
        raise _refuse(session, action, user, user.id, "Choose a password different from the current one.", ip)
    try:
        check_password_policy(new, has_second_factor=bool(user.totp_secret), username=user.username)
    except PasswordRejected as exc:
        raise _refuse(session, action, user, user.id, str(exc), ip) from None
    user.password_hash = hash_password(new)
    user.must_change_password = False
    user.password_changed_at = utcnow()
    session.add(user)
    revoke_user_sessions(session, user.id, keep=current_session)  # type: ignore[arg-type]
    audit.record(session, action, actor=user, object_type="user", object_id=user.id, ip=ip)
    return user


def enrol_totp(session: Session, settings: Settings, user: User, secret: str, code: str, ip: str = "") -> User:
    """Store a second factor once the user proves their app produces its codes."""
    action = "user.totp_enrol"
    secret = secret.strip().upper()
    if not _BASE32_SECRET.fullmatch(secret):
        raise _refuse(session, action, user, user.id, "The secret is malformed; reload the page.", ip)
    if user.totp_secret:
        raise _refuse(session, action, user, user.id, "A second factor is already set up; remove it first.", ip)
    step = totp_step(secret, code)
    if step is None:
        raise _refuse(session, action, user, user.id, "That code is not right; check the time on your phone.", ip)
    set_totp_secret(user, settings, secret)
    user.totp_last_step = step
    session.add(user)
    audit.record(session, action, actor=user, object_type="user", object_id=user.id, ip=ip)
    return user


def remove_own_totp(session: Session, settings: Settings, user: User, password: str, code: str,
                    ip: str = "") -> User:
    action = "user.totp_remove"
    if not user.totp_secret:
        raise _refuse(session, action, user, user.id, "No second factor is set up.", ip)
    try:
        secret = totp_secret_of(user, settings)
    except SecretUnreadable:
        secret = None
    if (not verify_password(user.password_hash, password) or secret is None
            or totp_step(secret, code, after=user.totp_last_step) is None):
        raise _refuse(session, action, user, user.id, "Wrong password or code.", ip)
    user.totp_secret = None
    user.totp_last_step = None
    session.add(user)
    audit.record(session, action, actor=user, object_type="user", object_id=user.id, ip=ip)
    return user
