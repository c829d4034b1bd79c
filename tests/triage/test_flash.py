"""One-time messages after a redirect: shown once, to their own browser session, sealed at rest."""

from __future__ import annotations

import datetime as dt

from sqlmodel import Session, select

from tests.conftest import add_user
from triage import flash
from triage.models import FlashMessage
from triage.security import start_session


def test_a_flash_is_taken_once_by_its_own_session_and_sealed(engine, settings) -> None:
    user = add_user(engine, "root")
    with Session(engine, expire_on_commit=False) as s:
        _, mine = start_session(s, user, "127.0.0.1", "test")
        _, other = start_session(s, user, "127.0.0.2", "test")
        s.commit()
        flash.push(s, settings, mine.id, "Account created.", secret="s3cret-one-time", secret_id="otp")  # type: ignore[arg-type]
        s.commit()
        stored = s.exec(select(FlashMessage)).one()
        assert "s3cret-one-time" not in stored.secret and stored.secret.startswith("otp|v1:")
        assert flash.take(s, settings, other.id) == []  # type: ignore[arg-type]
        (told,) = flash.take(s, settings, mine.id)  # type: ignore[arg-type]
        s.commit()
        assert (told.text, told.secret, told.secret_id) == ("Account created.", "s3cret-one-time", "otp")
        assert flash.take(s, settings, mine.id) == []  # type: ignore[arg-type]
        assert s.exec(select(FlashMessage)).all() == []


def test_an_old_flash_is_dropped_unread(engine, settings) -> None:
    user = add_user(engine, "root")
    with Session(engine, expire_on_commit=False) as s:
        _, ws = start_session(s, user, "127.0.0.1", "test")
        s.commit()
        flash.push(s, settings, ws.id, "Saved.")  # type: ignore[arg-type]
        row = s.exec(select(FlashMessage)).one()
        row.created_at = row.created_at - flash.FLASH_TTL - dt.timedelta(seconds=1)
        s.add(row)
        s.commit()
        assert flash.take(s, settings, ws.id) == []  # type: ignore[arg-type]
        s.commit()
        assert s.exec(select(FlashMessage)).all() == []
