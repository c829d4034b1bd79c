"""Second-factor seeds sealed at rest: what a database copy reveals, and what a key change does."""

from __future__ import annotations

import datetime as dt

import pyotp
import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session, col, select

from tests.conftest import TEST_PASSWORD, add_user
from triage import accounts
from triage.clock import frozen
from triage.config import Settings
from triage.migrate import downgrade, upgrade
from triage.models import AuditEntry, Role, User
from triage.secretbox import PREFIX, SecretUnreadable, is_sealed, seal, unseal
from triage.security import LoginFailed, authenticate

T0 = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)
KEY = "k" * 40


def test_seal_opens_only_with_its_key_and_context() -> None:
    sealed = seal(KEY, "JBSWY3DPEHPK3PXP", context="user:1:totp")
    assert sealed.startswith(PREFIX) and "JBSWY3DPEHPK3PXP" not in sealed and is_sealed(sealed)
    assert seal(KEY, "JBSWY3DPEHPK3PXP", context="user:1:totp") != sealed  # a fresh nonce each time
    assert unseal(KEY, sealed, context="user:1:totp") == "JBSWY3DPEHPK3PXP"
    with pytest.raises(SecretUnreadable):
        unseal("another key, also forty characters long", sealed, context="user:1:totp")
    with pytest.raises(SecretUnreadable):
        unseal(KEY, sealed, context="user:2:totp")  # copied into another account's row
    flipped = sealed[:-3] + ("A" if sealed[-3] != "A" else "B") + sealed[-2:]
    with pytest.raises(SecretUnreadable):
        unseal(KEY, flipped, context="user:1:totp")
    for damaged in (PREFIX, PREFIX + "!!!", PREFIX + "AAAA"):
        with pytest.raises(SecretUnreadable):
            unseal(KEY, damaged, context="user:1:totp")
    # a seed stored before sealing existed reads as it is
    assert unseal(KEY, "JBSWY3DPEHPK3PXP", context="user:1:totp") == "JBSWY3DPEHPK3PXP"
    with pytest.raises(ValueError):
        seal("", "x", context="c")


def _raw_secret(engine: Engine, user_id: int) -> str | None:
    with engine.connect() as conn:
        return conn.execute(text("SELECT totp_secret FROM user_account WHERE id = :i"), {"i": user_id}).scalar()


def _enrol(engine: Engine, settings: Settings, user_id: int, secret: str) -> None:
    with frozen(T0), Session(engine) as s:
        user = s.get_one(User, user_id)
        accounts.enrol_totp(s, settings, user, secret, pyotp.TOTP(secret).at(T0))
        s.commit()


def test_an_enrolled_seed_is_sealed_in_the_database_and_still_logs_in(engine: Engine, settings: Settings) -> None:
    user = add_user(engine, "mona", Role.manager)
    secret = pyotp.random_base32()
    _enrol(engine, settings, user.pk, secret)
    raw = _raw_secret(engine, user.pk)
    assert raw is not None and raw.startswith(PREFIX) and secret not in raw
    later = T0 + dt.timedelta(minutes=5)
    with frozen(later), Session(engine) as s:
        assert authenticate(s, settings, "mona", TEST_PASSWORD, pyotp.TOTP(secret).at(later)).id == user.id
        s.commit()
    # Removing it takes the password and a current code, read through the seal.
    later2 = later + dt.timedelta(minutes=1)
    with frozen(later2), Session(engine) as s:
        u = s.get_one(User, user.id)
        with pytest.raises(accounts.AccountError):
            accounts.remove_own_totp(s, settings, u, TEST_PASSWORD, "000000" if pyotp.TOTP(secret).at(later2)
                                     != "000000" else "111111")
        accounts.remove_own_totp(s, settings, u, TEST_PASSWORD, pyotp.TOTP(secret).at(later2))
        s.commit()
    assert _raw_secret(engine, user.pk) is None


def test_a_seed_stored_in_clear_is_sealed_at_the_next_login(engine: Engine, settings: Settings) -> None:
    user = add_user(engine, "olaf", Role.manager)
    secret = pyotp.random_base32()
    with engine.begin() as conn:
        conn.execute(text("UPDATE user_account SET totp_secret = :s WHERE id = :i"), {"s": secret, "i": user.id})
    with frozen(T0), Session(engine) as s:
        with pytest.raises(LoginFailed):
            authenticate(s, settings, "olaf", TEST_PASSWORD, "")
        s.commit()
    assert _raw_secret(engine, user.pk) == secret  # a failed login changes nothing
    with frozen(T0), Session(engine) as s:
        authenticate(s, settings, "olaf", TEST_PASSWORD, pyotp.TOTP(secret).at(T0))
        s.commit()
    raw = _raw_secret(engine, user.pk)
    assert raw is not None and raw.startswith(PREFIX) and secret not in raw
    later = T0 + dt.timedelta(seconds=60)
    with frozen(later), Session(engine) as s:
        assert authenticate(s, settings, "olaf", TEST_PASSWORD, pyotp.TOTP(secret).at(later)).id == user.id


def test_a_changed_secret_key_refuses_the_second_factor_and_says_why_in_the_audit(
        engine: Engine, settings: Settings) -> None:
    user = add_user(engine, "nils", Role.manager)
    admin = add_user(engine, "root1", Role.admin)
    secret = pyotp.random_base32()
    _enrol(engine, settings, user.pk, secret)
    rotated = settings.model_copy(update={"secret_key": "r" * 40})
    later = T0 + dt.timedelta(minutes=5)
    with frozen(later), Session(engine) as s:
        with pytest.raises(LoginFailed, match="Wrong username or password"):
            authenticate(s, rotated, "nils", TEST_PASSWORD, pyotp.TOTP(secret).at(later))
        s.commit()
        entry = s.exec(select(AuditEntry).where(AuditEntry.action == "login")
                       .order_by(col(AuditEntry.id).desc())).first()
        assert entry is not None and entry.outcome == "denied" and "unreadable" in entry.detail["reason"]
    # The way out: an admin resets the second factor; the password alone then works.
    with Session(engine) as s:
        accounts.remove_totp_for(s, s.get_one(User, admin.id), user.pk)
        s.commit()
    with frozen(later), Session(engine) as s:
        assert authenticate(s, rotated, "nils", TEST_PASSWORD).id == user.id


def test_a_sealed_seed_copied_to_another_account_does_not_open(engine: Engine, settings: Settings) -> None:
    victim = add_user(engine, "vera", Role.manager)
    other = add_user(engine, "otto", Role.manager)
    secret = pyotp.random_base32()
    _enrol(engine, settings, victim.pk, secret)
    sealed = _raw_secret(engine, victim.pk)
    with engine.begin() as conn:
        conn.execute(text("UPDATE user_account SET totp_secret = :s WHERE id = :i"), {"s": sealed, "i": other.id})
    with frozen(T0 + dt.timedelta(minutes=1)), Session(engine) as s, pytest.raises(LoginFailed):
        authenticate(s, settings, "otto", TEST_PASSWORD, pyotp.TOTP(secret).at(T0 + dt.timedelta(minutes=1)))


def test_downgrade_refuses_to_cut_sealed_seeds(engine: Engine, settings: Settings, db_url: str) -> None:
    user = add_user(engine, "dina", Role.manager)
    _enrol(engine, settings, user.pk, pyotp.random_base32())
    engine.dispose()
    with pytest.raises(RuntimeError, match="reset their second factor"):
        downgrade(db_url, "0002")
    assert is_sealed(_raw_secret(engine, user.pk))
    with engine.begin() as conn:
        conn.execute(text("UPDATE user_account SET totp_secret = NULL"))
    engine.dispose()
    downgrade(db_url, "0002")
    upgrade(db_url)
