"""Passwords, session and API tokens, lockout, TOTP."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import Session, select

from triage import audit
from triage.clock import utcnow
from triage.config import Settings
from triage.models import ApiToken, AuditOutcome, Role, User, WebSession

MIN_PASSWORD_WITH_2FA = 8
MIN_PASSWORD_WITHOUT_2FA = 15
MAX_PASSWORD = 128
SESSION_COOKIE = "miatari_session"
TOKEN_PREFIX = "mia_"

_hasher = PasswordHasher()


class PasswordRejected(ValueError):
    pass


class LoginFailed(Exception):
    def __init__(self, message: str, *, locked: bool = False) -> None:
        super().__init__(message)
        self.locked = locked


@lru_cache
def _common_passwords() -> frozenset[str]:
    text = resources.files("triage").joinpath("data/common_passwords.txt").read_text()
    return frozenset(line.strip().lower() for line in text.splitlines() if line.strip())


def check_password_policy(password: str, *, has_second_factor: bool, username: str = "") -> None:
    minimum = MIN_PASSWORD_WITH_2FA if has_second_factor else MIN_PASSWORD_WITHOUT_2FA
    if len(password) < minimum:
        why = "with a second factor" if has_second_factor else "without a second factor"
        raise PasswordRejected(f"Password must be at least {minimum} characters {why}.")
    if len(password) > MAX_PASSWORD:
        raise PasswordRejected(f"Password must be at most {MAX_PASSWORD} characters.")
    if password.lower() in _common_passwords():
        raise PasswordRejected("This password is too common; choose another.")
    if username and username.lower() in password.lower():
        raise PasswordRejected("Password must not contain the username.")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# A real hash to verify against when the user does not exist, so that timing
# does not reveal which usernames exist.
_DUMMY_HASH = _hasher.hash("not-a-real-password-000")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def authenticate(session: Session, settings: Settings, username: str, password: str,
                 totp_code: str = "", ip: str = "") -> User:
    """Check credentials, counting failures and locking the account after too many."""
    now = utcnow()
    user = session.exec(select(User).where(User.username == username)).first()
    if user is None:
        verify_password(_DUMMY_HASH, password)
        audit.record(session, "login", outcome=AuditOutcome.denied, object_type="user",
                     object_id=username[:64], detail={"reason": "unknown user"}, ip=ip)
        raise LoginFailed("Wrong username or password.")
    if user.locked_until and user.locked_until > now:
        audit.record(session, "login", actor=user, outcome=AuditOutcome.denied, object_type="user",
                     object_id=user.id, detail={"reason": "locked"}, ip=ip)
        raise LoginFailed("Account locked after repeated failed logins; try again later.", locked=True)
    ok = verify_password(user.password_hash, password)
    if ok and user.totp_secret:
        ok = bool(totp_code) and pyotp.TOTP(user.totp_secret).verify(totp_code, valid_window=1,
                                                                      for_time=now)
    if not ok or not user.is_active:
        reason = "disabled" if ok else "bad credentials"
        if not ok:
            user.failed_logins += 1
            if user.failed_logins >= settings.login_max_failures:
                user.locked_until = now + dt.timedelta(minutes=settings.login_lockout_minutes)
                user.failed_logins = 0
                reason = "bad credentials; account locked"
        session.add(user)
        audit.record(session, "login", actor=user, outcome=AuditOutcome.denied, object_type="user",
                     object_id=user.id, detail={"reason": reason}, ip=ip)
        raise LoginFailed("Wrong username or password." if not ok else "This account is disabled.",
                          locked=bool(user.locked_until and user.locked_until > now))
    user.failed_logins = 0
    user.locked_until = None
    session.add(user)
    return user


def needs_second_factor(user: User, settings: Settings) -> bool:
    return (settings.require_totp_for_privileged and not user.totp_secret
            and user.has_role(Role.manager, Role.admin))


def start_session(session: Session, user: User, ip: str = "", user_agent: str = "") -> tuple[str, WebSession]:
    token = secrets.token_urlsafe(32)
    web_session = WebSession(token_hash=token_digest(token), user_id=user.id,  # type: ignore[arg-type]
                             csrf_token=secrets.token_urlsafe(32), ip=ip[:64], user_agent=user_agent[:300])
    session.add(web_session)
    audit.record(session, "login", actor=user, object_type="user", object_id=user.id, ip=ip)
    return token, web_session


@dataclass
class ResolvedSession:
    user: User
    web_session: WebSession | None
    api_token: ApiToken | None


def resolve_session_token(session: Session, settings: Settings, token: str) -> ResolvedSession | None:
    """Find a live web session, applying the idle and absolute timeouts."""
    now = utcnow()
    ws = session.exec(select(WebSession).where(WebSession.token_hash == token_digest(token))).first()
    if ws is None or ws.revoked_at is not None:
        return None
    idle = dt.timedelta(minutes=settings.session_idle_minutes)
    absolute = dt.timedelta(hours=settings.session_absolute_hours)
    if now - ws.last_seen_at > idle or now - ws.created_at > absolute:
        ws.revoked_at = now
        session.add(ws)
        return None
    user = session.get(User, ws.user_id)
    if user is None or not user.is_active:
        return None
    ws.last_seen_at = now
    session.add(ws)
    return ResolvedSession(user, ws, None)


def create_api_token(session: Session, user: User, name: str) -> tuple[str, ApiToken]:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, name=name[:100], token_hash=token_digest(token))  # type: ignore[arg-type]
    session.add(row)
    session.flush()
    audit.record(session, "api_token.create", actor=user, object_type="api_token", object_id=row.id,
                 detail={"name": name})
    return token, row


def resolve_api_token(session: Session, token: str) -> ResolvedSession | None:
    row = session.exec(select(ApiToken).where(ApiToken.token_hash == token_digest(token))).first()
    if row is None or row.revoked_at is not None:
        return None
    user = session.get(User, row.user_id)
    if user is None or not user.is_active:
        return None
    row.last_used_at = utcnow()
    session.add(row)
    return ResolvedSession(user, None, row)


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected, given or "")


def create_user(session: Session, username: str, password: str, roles: list[Role] | list[str],
                full_name: str = "", actor: User | None = None, check_policy: bool = True) -> User:
    username = username.strip()
    if not username or len(username) > 64 or not username.replace("_", "").replace(".", "").replace("-", "").isalnum():
        raise ValueError("Username must be 1-64 letters, digits, '.', '_' or '-'.")
    if session.exec(select(User).where(User.username == username)).first() is not None:
        raise ValueError(f"User {username!r} already exists.")
    role_values = sorted({Role(r).value for r in roles})
    if not role_values:
        raise ValueError("A user needs at least one role.")
    if check_policy:
        check_password_policy(password, has_second_factor=False, username=username)
    user = User(username=username, full_name=full_name, roles=" ".join(role_values),
                password_hash=hash_password(password))
    session.add(user)
    session.flush()
    audit.record(session, "user.create", actor=actor, object_type="user", object_id=user.id,
                 detail={"username": username, "roles": role_values})
    return user
