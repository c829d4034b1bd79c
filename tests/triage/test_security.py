"""Passwords, lockout, session timeouts, TOTP and API tokens, with a frozen clock."""

from __future__ import annotations

import datetime as dt

import pyotp
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from tests.conftest import TEST_PASSWORD, add_user
from triage.clock import frozen
from triage.config import Settings
from triage.models import AuditEntry, Role, User, WebSession
from triage.security import (
    LoginFailed,
    PasswordRejected,
    authenticate,
    check_password_policy,
    create_api_token,
    create_user,
    hash_password,
    resolve_api_token,
    resolve_session_token,
    revoke_api_token,
    start_session,
    verify_password,
)
from triage.transaction import unit_of_work

T0 = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)


def test_password_policy_lengths_without_and_with_second_factor() -> None:
    with pytest.raises(PasswordRejected, match="at least 15"):
        check_password_policy("a" * 7 + "zq9Xv3k", has_second_factor=False)  # 14
    check_password_policy("quiet harbour lamp", has_second_factor=False)
    with pytest.raises(PasswordRejected, match="at least 8"):
        check_password_policy("zq9Xv3k", has_second_factor=True)
    check_password_policy("zq9Xv3kp", has_second_factor=True)
    # At least 64 characters are accepted, and no composition rule applies.
    check_password_policy("x" * 40 + "y" * 40, has_second_factor=False)
    with pytest.raises(PasswordRejected, match="at most"):
        check_password_policy("z" * 500, has_second_factor=False)


def test_common_passwords_are_refused_whatever_the_case() -> None:
    for common in ("password123", "IloveYou123", "qwertyuiop", "123456789987654321"):
        with pytest.raises(PasswordRejected, match="too common"):
            check_password_policy(common, has_second_factor=True)


def test_common_password_list_is_substantial() -> None:
    from triage.security import _common_passwords

    assert len(_common_passwords()) >= 10_000
    assert not any(p.startswith("#") for p in _common_passwords())


def test_password_must_not_contain_the_username() -> None:
    with pytest.raises(PasswordRejected, match="username"):
        check_password_policy("officer.jones is my name", has_second_factor=False, username="officer.jones")


def test_hash_is_argon2id_and_verifies() -> None:
    h = hash_password("quiet harbour lamp")
    assert h.startswith("$argon2id$")
    assert verify_password(h, "quiet harbour lamp")
    assert not verify_password(h, "quiet harbour lamps")
    assert not verify_password("not a hash", "x")


def test_passwords_are_compared_after_unicode_normalisation() -> None:
    composed, decomposed = "caf\u00e9 au lait du matin", "cafe\u0301 au lait du matin"
    assert composed != decomposed
    assert verify_password(hash_password(composed), decomposed)
    assert not verify_password(hash_password(composed), "cafe au lait du matin")


def test_create_user_validates(session: Session) -> None:
    with pytest.raises(ValueError, match="Username"):
        create_user(session, "bad name!", TEST_PASSWORD, [Role.officer])
    with pytest.raises(ValueError, match="Unknown role"):
        create_user(session, "ok", TEST_PASSWORD, ["sheriff"])
    with pytest.raises(ValueError, match="at least one role"):
        create_user(session, "ok", TEST_PASSWORD, [])
    with pytest.raises(PasswordRejected):
        create_user(session, "ok", "short", [Role.officer])
    create_user(session, "Alice", TEST_PASSWORD, [Role.officer, Role.recognizer, "officer"])
    with pytest.raises(ValueError, match="already exists"):
        create_user(session, "alice", TEST_PASSWORD, [Role.officer])
    user = session.exec(select(User).where(User.username == "Alice")).one()
    assert user.role_set == {Role.officer, Role.recognizer}


def test_five_failures_throttle_that_username_from_that_address_for_ten_minutes(engine: Engine,
                                                                                settings: Settings) -> None:
    add_user(engine, "olga", Role.officer)
    with frozen(T0) as clock, Session(engine) as s:
        for _ in range(4):
            with pytest.raises(LoginFailed) as exc:
                authenticate(s, settings, "olga", "wrong password here", ip="10.0.0.1")
            assert not exc.value.locked
        with pytest.raises(LoginFailed) as exc:
            authenticate(s, settings, "olga", "wrong password here", ip="10.0.0.1")
        assert exc.value.locked
        s.commit()
        # Even the right password is refused from that address meanwhile...
        clock.advance(minutes=9, seconds=59)
        with pytest.raises(LoginFailed, match="Too many failed logins"):
            authenticate(s, settings, "olga", TEST_PASSWORD, ip="10.0.0.1")
        # ...but the account is not locked: its owner logs in from elsewhere.
        assert authenticate(s, settings, "olga", TEST_PASSWORD, ip="10.0.0.2").username == "olga"
        clock.advance(seconds=2)
        assert authenticate(s, settings, "olga", TEST_PASSWORD, ip="10.0.0.1").username == "olga"
        s.commit()
        reasons = [e.detail.get("reason") for e in s.exec(select(AuditEntry).where(AuditEntry.action == "login"))]
        assert reasons.count("bad credentials") == 4
        assert "bad credentials; throttled for this address" in reasons and "throttled" in reasons
        assert s.exec(select(User).where(User.username == "olga")).one().locked_until is None


def test_throttling_does_not_tell_whether_a_username_exists(engine: Engine, settings: Settings) -> None:
    add_user(engine, "olga", Role.officer)

    def answers(username: str) -> list[tuple[str, bool]]:
        out = []
        with Session(engine) as s:
            for _ in range(7):
                with pytest.raises(LoginFailed) as exc:
                    authenticate(s, settings, username, "wrong password here", ip="10.0.0.9")
                s.commit()
                out.append((str(exc.value), exc.value.locked))
        return out

    with frozen(T0):
        assert answers("olga") == answers("nobody-of-that-name")


def test_one_address_trying_many_usernames_is_throttled(engine: Engine, settings: Settings) -> None:
    add_user(engine, "olga", Role.officer)
    with frozen(T0), Session(engine) as s:
        for n in range(settings.login_max_failures_per_address):
            with pytest.raises(LoginFailed):
                authenticate(s, settings, f"guess{n}", "wrong password here", ip="10.0.0.7")
        s.commit()
        with pytest.raises(LoginFailed, match="Too many failed logins"):
            authenticate(s, settings, "olga", TEST_PASSWORD, ip="10.0.0.7")
        assert authenticate(s, settings, "olga", TEST_PASSWORD, ip="10.0.0.8").username == "olga"


def test_disabled_account_cannot_log_in(engine: Engine, settings: Settings) -> None:
    user = add_user(engine, "dora", Role.officer)
    with Session(engine) as s:
        u = s.get_one(User, user.id)
        u.is_active = False
        s.add(u)
        s.commit()
        with pytest.raises(LoginFailed, match="disabled"):
            authenticate(s, settings, "dora", TEST_PASSWORD)


def test_unknown_user_is_refused_and_audited(engine: Engine, settings: Settings) -> None:
    with Session(engine) as s:
        with pytest.raises(LoginFailed, match="Wrong username or password"):
            authenticate(s, settings, "nobody", "whatever it is", ip="10.0.0.9")
        s.commit()
        entry = s.exec(select(AuditEntry).where(AuditEntry.action == "login")).one()
        assert entry.outcome == "denied" and entry.object_id == "nobody" and entry.ip == "10.0.0.9"


def test_totp_is_required_once_enrolled(engine: Engine, settings: Settings) -> None:
    user = add_user(engine, "mona", Role.manager)
    secret = pyotp.random_base32()
    with Session(engine) as s:
        u = s.get_one(User, user.id)
        u.totp_secret = secret
        s.add(u)
        s.commit()
    with frozen(T0), Session(engine) as s:
        with pytest.raises(LoginFailed):
            authenticate(s, settings, "mona", TEST_PASSWORD)
        with pytest.raises(LoginFailed):
            authenticate(s, settings, "mona", TEST_PASSWORD, "000000" if pyotp.TOTP(secret).at(T0) != "000000"
                         else "111111")
        code = pyotp.TOTP(secret).at(T0)
        assert authenticate(s, settings, "mona", TEST_PASSWORD, code).id == user.id
        s.commit()
        # A code is good once: replaying it, even within its window, is refused.
        with pytest.raises(LoginFailed):
            authenticate(s, settings, "mona", TEST_PASSWORD, code)
        s.commit()
    with frozen(T0 + dt.timedelta(seconds=30)), Session(engine) as s:
        assert authenticate(s, settings, "mona", TEST_PASSWORD, pyotp.TOTP(secret).at(T0 + dt.timedelta(seconds=30)))


def test_session_idle_timeout(engine: Engine, settings: Settings) -> None:
    user = add_user(engine, "ivan", Role.officer)
    with frozen(T0) as clock, Session(engine) as s:
        token, _ = start_session(s, s.get_one(User, user.id))
        s.commit()
        clock.advance(minutes=29)
        assert resolve_session_token(s, settings, token) is not None
        s.commit()
        clock.advance(minutes=29)  # active 29 minutes ago: still fine
        assert resolve_session_token(s, settings, token) is not None
        s.commit()
        clock.advance(minutes=30, seconds=1)
        assert resolve_session_token(s, settings, token) is None
        s.commit()
        ws = s.exec(select(WebSession)).one()
        assert ws.revoked_at is not None
        expiry = s.exec(select(AuditEntry).where(AuditEntry.action == "session.expire")).one()
        assert expiry.detail["reason"] == "idle timeout"
        # Revoked for good: coming back within the window does not revive it.
        assert resolve_session_token(s, settings, token) is None


def test_session_absolute_timeout_despite_activity(engine: Engine, settings: Settings) -> None:
    user = add_user(engine, "abby", Role.officer)
    with frozen(T0) as clock, Session(engine) as s:
        token, _ = start_session(s, s.get_one(User, user.id))
        s.commit()
        for _ in range(35):  # 35 × 20 min = 11 h 40 min
            clock.advance(minutes=20)
            assert resolve_session_token(s, settings, token) is not None
            s.commit()
        clock.advance(minutes=20, seconds=1)
        assert resolve_session_token(s, settings, token) is None
        s.commit()
        expiry = s.exec(select(AuditEntry).where(AuditEntry.action == "session.expire")).one()
        assert expiry.detail["reason"] == "absolute timeout"


def test_session_of_disabled_user_is_dead(engine: Engine, settings: Settings) -> None:
    user = add_user(engine, "gone", Role.officer)
    with Session(engine) as s:
        token, _ = start_session(s, s.get_one(User, user.id))
        u = s.get_one(User, user.id)
        u.is_active = False
        s.add(u)
        s.commit()
        assert resolve_session_token(s, settings, token) is None
        assert resolve_session_token(s, settings, "not-a-token") is None


def test_api_tokens_resolve_and_revoke(engine: Engine) -> None:
    owner = add_user(engine, "phone.owner", Role.officer)
    other = add_user(engine, "someone.else", Role.officer)
    admin = add_user(engine, "root", Role.admin)
    with Session(engine) as s:
        with pytest.raises(ValueError, match="name"):
            create_api_token(s, s.get_one(User, owner.id), "   ")
        token, row = create_api_token(s, s.get_one(User, owner.id), "work phone")
        token2, row2 = create_api_token(s, s.get_one(User, owner.id), "tablet")
        s.commit()
        assert token.startswith("mia_") and row.token_hash != token
        resolved = resolve_api_token(s, token)
        assert resolved is not None and resolved.user.id == owner.id and resolved.web_session is None
        # Someone else's token: not found, nothing revoked, and the refusal on record (as a request's
        # transaction keeps it).
        with pytest.raises(LookupError), unit_of_work(s):
            revoke_api_token(s, s.get_one(User, other.id), row.pk)
        assert resolve_api_token(s, token) is not None
        revoke_api_token(s, s.get_one(User, owner.id), row.pk)
        revoke_api_token(s, s.get_one(User, admin.id), row2.pk)
        s.commit()
        assert resolve_api_token(s, token) is None
        assert resolve_api_token(s, token2) is None
        outcomes = [e.outcome for e in s.exec(select(AuditEntry).where(AuditEntry.action == "api_token.revoke")
                                               .order_by(col(AuditEntry.id)))]
        assert outcomes == ["denied", "ok", "ok"]
