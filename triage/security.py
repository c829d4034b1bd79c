"""Passwords, session and API tokens, lockout, TOTP."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import math
import re
import secrets
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from triage import audit
from triage.clock import utcnow
from triage.config import Settings
from triage.errors import RefusalEntry, Refused
from triage.models import (
    OVERSEEING_ROLES,
    REVIEWING_ROLES,
    ApiToken,
    AuditOutcome,
    LoginFailure,
    Role,
    User,
    WebSession,
)
from triage.secretbox import SecretUnreadable, is_sealed, seal, unseal

MIN_PASSWORD_WITH_2FA = 8
MIN_PASSWORD_WITHOUT_2FA = 15
MAX_PASSWORD = 128
SESSION_COOKIE = "miatari_session"
# How precisely "last seen" (sessions) and "last used" (API tokens) are kept: every request
# would otherwise write, and on SQLite wait for the single write lock, just to say so.
LAST_SEEN_RESOLUTION = dt.timedelta(minutes=1)
TOKEN_PREFIX = "mia_"
TOTP_ISSUER = "Miatari"
TOTP_DIGITS = 6

_hasher = PasswordHasher()
# ASCII only: str.isalnum() would let look-alike letters from other scripts through.
USERNAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


class PasswordRejected(ValueError):
    pass


class LoginFailed(Refused):
    """A refused login: the failure's count and audit entry are its record, kept by the transaction."""

    keeps_work = True

    def __init__(self, message: str, *, locked: bool = False, until: dt.datetime | None = None) -> None:
        super().__init__(message)
        self.locked = locked
        self.until = until  # when logins from here are taken again, for a throttled login


class TokenNotFound(Refused, LookupError):
    pass


@lru_cache
def _common_passwords() -> frozenset[str]:
    text = resources.files("triage").joinpath("data/common_passwords.txt").read_text()
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def check_password_policy(password: str, *, has_second_factor: bool, username: str = "") -> None:
    """Length and a common-password list, no composition rules (NIST SP 800-63B)."""
    password = _normalise(password)
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


def _normalise(password: str) -> str:
    # The same characters typed on two keyboards (composed or not) are the same password (NIST 800-63B).
    return unicodedata.normalize("NFKC", password)


def hash_password(password: str) -> str:
    return _hasher.hash(_normalise(password))


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, _normalise(password))
    except (VerificationError, InvalidHashError):
        return False


# A real hash to verify against when the user does not exist, so that timing
# does not reveal which usernames exist.
_DUMMY_HASH = _hasher.hash("not-a-real-password-000")


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


THROTTLED = ("Too many failed logins for this username from this address: logins from here are refused "
             "until {until:%H:%M} UTC (in {minutes} minute{s}). Wait until then, or ask an admin if you "
             "forgot your password.")
TOTP_MISSING = ("This account also needs the one-time code from your authenticator app: enter the 6 digits "
                "it shows now, with your password again.")


def _lockout_ends(session: Session, now: dt.datetime, window: dt.timedelta, username: str, ip: str,
                  settings: Settings) -> dt.datetime:
    """When enough of the failures counted against this login have aged out of the window."""
    ends = now
    for where, limit in (((LoginFailure.username == username, LoginFailure.ip == ip), settings.login_max_failures),
                         ((LoginFailure.ip == ip,), settings.login_max_failures_per_address)):
        times = session.exec(select(LoginFailure.at).where(*where, LoginFailure.at >= now - window)
                             .order_by(col(LoginFailure.at))).all()
        if len(times) >= limit:
            at = times[len(times) - limit]
            at = at if at.tzinfo else at.replace(tzinfo=dt.UTC)
            ends = max(ends, at + window)
    return ends


def throttled(session: Session, settings: Settings, now: dt.datetime, username: str, ip: str) -> LoginFailed:
    window = dt.timedelta(minutes=settings.login_lockout_minutes)
    until = _lockout_ends(session, now, window, username, ip, settings)
    minutes = max(1, math.ceil((until - now).total_seconds() / 60))
    return LoginFailed(THROTTLED.format(until=until, minutes=minutes, s="" if minutes == 1 else "s"),
                       locked=True, until=until)


def _failures(session: Session, now: dt.datetime, window: dt.timedelta, username: str, ip: str) -> tuple[int, int]:
    """Failed logins within the window: for this username from this address, and from this address at all."""
    since = now - window
    session.execute(delete(LoginFailure).where(col(LoginFailure.at) < since))
    pair = session.exec(select(func.count()).select_from(LoginFailure).where(
        LoginFailure.username == username, LoginFailure.ip == ip, LoginFailure.at >= since)).one()
    address = session.exec(select(func.count()).select_from(LoginFailure).where(
        LoginFailure.ip == ip, LoginFailure.at >= since)).one()
    return int(pair), int(address)


def _second_factor(user: User, settings: Settings, totp_code: str, now: dt.datetime) -> tuple[bool, bool]:
    """Whether the one-time code is good (its step is then used up), and whether the seed was unreadable."""
    try:
        secret = totp_secret_of(user, settings)
    except SecretUnreadable:
        return False, True
    step = totp_step(secret, totp_code, now, after=user.totp_last_step) if secret else None
    if step is None:
        return False, False
    user.totp_last_step = step
    if not is_sealed(user.totp_secret):
        set_totp_secret(user, settings, secret)  # a seed stored before sealing: seal it now
    return True, False


def authenticate(session: Session, settings: Settings, username: str, password: str,
                 totp_code: str = "", ip: str = "") -> User:
    """Check credentials, throttling repeated failures.

    Failures are counted per (username tried, address) and per address, whether the
    username exists or not: past ``login_max_failures`` for the pair, or
    ``login_max_failures_per_address`` for the address, logins from there are refused
    for ``login_lockout_minutes`` — with the same words and the same Argon2 cost for a
    username that does not exist. The account itself is never locked, so nobody can
    lock someone else out from their own address.
    """
    now = utcnow()
    key = username.strip().lower()[:64]
    window = dt.timedelta(minutes=settings.login_lockout_minutes)
    pair, address = _failures(session, now, window, key, ip[:64])
    user = session.exec(select(User).where(User.username == username)).first()
    if pair >= settings.login_max_failures or address >= settings.login_max_failures_per_address:
        verify_password(_DUMMY_HASH, password)
        audit.record(session, "login", actor=user, outcome=AuditOutcome.denied, object_type="user",
                     object_id=user.id if user else username[:64],
                     detail={"reason": "throttled", "per": "address" if pair < settings.login_max_failures
                             else "username and address"}, ip=ip)
        raise throttled(session, settings, now, key, ip[:64])

    def failed(reason: str, message: str = "Wrong username or password.") -> LoginFailed:
        session.add(LoginFailure(at=now, username=key, ip=ip[:64]))
        locked = pair + 1 >= settings.login_max_failures or address + 1 >= settings.login_max_failures_per_address
        until = None
        if locked:
            reason += "; throttled for this address"
            session.flush()
            then = throttled(session, settings, now, key, ip[:64])
            message, until = f"{message} {then}", then.until
        audit.record(session, "login", actor=user, outcome=AuditOutcome.denied, object_type="user",
                     object_id=user.id if user else username[:64], detail={"reason": reason}, ip=ip)
        return LoginFailed(message, locked=locked, until=until)

    if user is None:
        verify_password(_DUMMY_HASH, password)
        raise failed("unknown user")
    ok = verify_password(user.password_hash, password)
    unreadable = False
    if ok and user.totp_secret and not totp_code.strip():
        # Still counted (no free guesses), but said as it is: the password is not the problem.
        raise failed("one-time code missing", TOTP_MISSING)
    if ok and user.totp_secret:
        ok, unreadable = _second_factor(user, settings, totp_code, now)
    if not ok:
        raise failed("second-factor secret unreadable (secret key changed?); an admin can reset it"
                     if unreadable else "bad credentials")
    if not user.is_active:
        audit.record(session, "login", actor=user, outcome=AuditOutcome.denied, object_type="user",
                     object_id=user.id, detail={"reason": "disabled"}, ip=ip)
        raise LoginFailed("This account is disabled.")
    session.execute(delete(LoginFailure).where(col(LoginFailure.username) == key,
                                               col(LoginFailure.ip) == ip[:64]))
    user.failed_logins = 0
    user.locked_until = None
    session.add(user)
    return user


def _totp_context(user: User) -> str:
    return f"user:{user.id}:totp"


def totp_secret_of(user: User, settings: Settings) -> str | None:
    """The user's TOTP seed in clear (:class:`SecretUnreadable` if it does not open), or None."""
    if not user.totp_secret:
        return None
    return unseal(settings.ensure_secret_key(), user.totp_secret, context=_totp_context(user))


def set_totp_secret(user: User, settings: Settings, secret: str | None) -> None:
    """Keep the seed sealed (triage.secretbox), bound to this user; None removes it."""
    if secret is None:
        user.totp_secret = None
        return
    if user.id is None:
        raise ValueError("the user must be stored before a second factor is set up")
    user.totp_secret = seal(settings.ensure_secret_key(), secret, context=_totp_context(user))


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(username: str, secret: str) -> str:
    """The otpauth:// URI an authenticator app takes (typed in or pasted: no QR code needed)."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=TOTP_ISSUER)


def totp_step(secret: str, code: str, at: dt.datetime | None = None, after: int | None = None) -> int | None:
    """The time step a 6-digit code belongs to (one step of clock drift allowed either way), or None.

    Steps at or before ``after`` (the last code accepted) are refused, so a code cannot be replayed.
    """
    code = (code or "").strip().replace(" ", "")
    if not (code.isdigit() and len(code) == TOTP_DIGITS):
        return None
    totp = pyotp.TOTP(secret)
    now_step = totp.timecode(at or utcnow())
    for step in (now_step - 1, now_step, now_step + 1):
        if after is not None and step <= after:
            continue
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def verify_totp(secret: str, code: str, at: dt.datetime | None = None) -> bool:
    return totp_step(secret, code, at) is not None


def needs_second_factor(user: User, settings: Settings) -> bool:
    return (settings.require_totp_for_privileged and not user.totp_secret
            and user.has_role(Role.manager, Role.admin))


def start_session(session: Session, user: User, ip: str = "", user_agent: str = "",
                  replaces: str | None = None) -> tuple[str, WebSession]:
    """A new web session; ``replaces`` (the cookie the browser still had) is ended: a new login never
    continues an old session."""
    if replaces:
        old = session.exec(select(WebSession).where(WebSession.token_hash == token_digest(replaces))).first()
        if old is not None and old.revoked_at is None:
            old.revoked_at = utcnow()
            session.add(old)
    token = secrets.token_urlsafe(32)
    web_session = WebSession(token_hash=token_digest(token), user_id=user.pk,
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
        reason = "absolute timeout" if now - ws.created_at > absolute else "idle timeout"
        audit.record(session, "session.expire", object_type="web_session", object_id=ws.id,
                     detail={"user_id": ws.user_id, "reason": reason})
        return None
    user = session.get(User, ws.user_id)
    if user is None or not user.is_active:
        return None
    # Written at most once a minute (finer for very short idle timeouts), not on every request.
    if now - ws.last_seen_at >= min(LAST_SEEN_RESOLUTION, idle / 10):
        ws.last_seen_at = now
        session.add(ws)
    return ResolvedSession(user, ws, None)


def end_session(session: Session, web_session: WebSession, user: User, ip: str = "") -> None:
    """Log out: the session can never be used again."""
    web_session.revoked_at = utcnow()
    session.add(web_session)
    audit.record(session, "logout", actor=user, object_type="web_session", object_id=web_session.id, ip=ip)


def revoke_user_sessions(session: Session, user_id: int, *, keep: WebSession | None = None,
                         tokens: bool = False) -> int:
    """Revoke every live web session of a user (and their API tokens if asked); return how many."""
    now = utcnow()
    count = 0
    for ws in session.exec(select(WebSession).where(WebSession.user_id == user_id,
                                                    col(WebSession.revoked_at).is_(None))).all():
        if keep is not None and ws.id == keep.id:
            continue
        ws.revoked_at = now
        session.add(ws)
        count += 1
    if tokens:
        for tok in session.exec(select(ApiToken).where(ApiToken.user_id == user_id,
                                                       col(ApiToken.revoked_at).is_(None))).all():
            tok.revoked_at = now
            session.add(tok)
            count += 1
    return count


def create_api_token(session: Session, user: User, name: str, ip: str = "") -> tuple[str, ApiToken]:
    """A personal token for a mobile client; only its digest is kept, the token is shown once."""
    name = name.strip()
    if not name or len(name) > 100:
        raise ValueError("A token needs a name of 1-100 characters (e.g. the phone it is for).")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.pk, name=name[:100], token_hash=token_digest(token))
    session.add(row)
    session.flush()
    audit.record(session, "api_token.create", actor=user, object_type="api_token", object_id=row.id,
                 detail={"name": name}, ip=ip)
    return token, row


def revoke_api_token(session: Session, actor: User, token_id: int, ip: str = "") -> ApiToken:
    """Revoke a token: its owner may, and an admin may revoke anyone's."""
    row = session.get(ApiToken, token_id)
    if row is None or (row.user_id != actor.id and not actor.has_role(Role.admin)):
        # Someone else's token is reported as missing, so ids reveal nothing.
        raise TokenNotFound("No such token.").recorded_as(RefusalEntry(
            "api_token.revoke", actor=actor, object_type="api_token", object_id=token_id,
            detail={"reason": "not found or not yours"}, ip=ip))
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
    audit.record(session, "api_token.revoke", actor=actor, object_type="api_token", object_id=row.id,
                 detail={"owner_id": row.user_id}, ip=ip)
    return row


def list_api_tokens(session: Session, user_id: int) -> list[ApiToken]:
    return list(session.exec(select(ApiToken).where(ApiToken.user_id == user_id).order_by(col(ApiToken.id))).all())


def resolve_api_token(session: Session, token: str) -> ResolvedSession | None:
    row = session.exec(select(ApiToken).where(ApiToken.token_hash == token_digest(token))).first()
    if row is None or row.revoked_at is not None:
        return None
    user = session.get(User, row.user_id)
    if user is None or not user.is_active:
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at >= LAST_SEEN_RESOLUTION:
        row.last_used_at = now
        session.add(row)
    return ResolvedSession(user, None, row)


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected, given or "")


def create_user(session: Session, username: str, password: str, roles: list[Role] | list[str],
                full_name: str = "", actor: User | None = None, check_policy: bool = True,
                must_change_password: bool = False, ip: str = "") -> User:
    """Create an account; a new account has no second factor yet, so the long minimum applies."""
    username = username.strip()
    full_name = full_name.strip()
    if len(full_name) > 200:
        raise ValueError("Full name must be at most 200 characters.")
    if not USERNAME_RE.fullmatch(username):
        raise ValueError("Username must be 1-64 letters, digits, '.', '_' or '-'.")
    if session.exec(select(User).where(func.lower(User.username) == username.lower())).first() is not None:
        raise ValueError(f"User {username!r} already exists.")
    role_values = parse_roles(roles)
    if not role_values:
        raise ValueError("A user needs at least one role.")
    if check_policy:
        check_password_policy(password, has_second_factor=False, username=username)
    user = User(username=username, full_name=full_name, roles=" ".join(role_values),
                password_hash=hash_password(password), must_change_password=must_change_password)
    session.add(user)
    session.flush()
    audit.record(session, "user.create", actor=actor, object_type="user", object_id=user.id,
                 detail={"username": username, "roles": role_values}, ip=ip)
    return user


def parse_roles(roles: list[Role] | list[str]) -> list[str]:
    """Sorted, distinct role values; an unknown role or an empty list is an error."""
    values: set[str] = set()
    for r in roles:
        try:
            values.add(Role(r).value)
        except ValueError:
            raise ValueError(f"Unknown role {r!r}; roles are: {', '.join(x.value for x in Role)}.") from None
    if not values:
        raise ValueError("A user needs at least one role.")
    check_separation_of_duties(values)
    return sorted(values)


SEPARATION_OF_DUTIES_MESSAGE = (
    "Separation of duties: an account that reviews (recognizer) cannot also be manager or admin, who see "
    "scores, disputes and the audit log. Choose one side for this account.")


def check_separation_of_duties(roles: Iterable[Role | str]) -> None:
    """Refuse a role set that holds a reviewing role and an overseeing one (``ValueError``)."""
    held = {Role(r) for r in roles}
    if held & REVIEWING_ROLES and held & OVERSEEING_ROLES:
        raise ValueError(SEPARATION_OF_DUTIES_MESSAGE)
