"""GET requests read without SQLite's write lock; a read-first transaction that writes takes the lock
first, so the single-writer reasoning (and the audit chain) holds. Credentials' "last seen" is throttled."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session, col, select

from tests.conftest import USE_POSTGRES, add_user
from triage import audit
from triage.clock import frozen, utcnow
from triage.db import read_first
from triage.models import ApiToken, AuditEntry, Role
from triage.security import create_api_token

sqlite_only = pytest.mark.skipif(USE_POSTGRES, reason="SQLite's locking")


@sqlite_only
def test_a_read_first_transaction_reads_while_another_holds_the_write_lock(engine: Engine) -> None:
    writer = engine.raw_connection()
    writer.execute("BEGIN IMMEDIATE")
    try:
        done: list[int] = []

        def read() -> None:
            with Session(read_first(engine)) as s:
                done.append(len(s.exec(select(AuditEntry)).all()))

        t = threading.Thread(target=read)
        t.start()
        t.join(20)  # well under the 30 s busy timeout a waiting read would sit out
        assert done == [0], "the read waited for the writer"
    finally:
        writer.rollback()
        writer.close()


@sqlite_only
def test_a_read_first_transaction_that_writes_keeps_the_audit_chain(engine: Engine) -> None:
    with Session(read_first(engine)) as reader:
        assert reader.exec(select(AuditEntry)).all() == []  # its snapshot begins here
        with Session(engine) as other:  # meanwhile another request appends
            audit.record(other, "other.append")
            other.commit()
        audit.record(reader, "reader.append")  # locks the head: the transaction takes the write lock first
        reader.commit()
    with Session(engine) as s:
        result = audit.verify(s)
        assert result.ok, result
        assert [e.action for e in s.exec(select(AuditEntry).order_by(col(AuditEntry.id)))] == ["other.append",
                                                                                           "reader.append"]


def test_get_requests_answer_while_a_write_is_in_progress(make_client, engine: Engine, db_url: str) -> None:
    if USE_POSTGRES:
        pytest.skip("SQLite's locking")
    user = add_user(engine, "olga", Role.officer)
    with Session(engine) as s:
        token, _ = create_api_token(s, user, "phone")
        s.commit()
    client = make_client()
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/sightings", headers=headers).status_code == 200  # last used: now
    writer = engine.raw_connection()
    writer.execute("BEGIN IMMEDIATE")
    try:
        answers: list[int] = []
        t = threading.Thread(target=lambda: answers.append(client.get("/api/sightings", headers=headers).status_code))
        t.start()
        t.join(20)  # well under the 30 s busy timeout
        assert answers == [200], "a GET waited for SQLite's write lock"
    finally:
        writer.rollback()
        writer.close()


def test_token_last_used_is_written_at_most_once_a_minute(client, engine: Engine) -> None:
    user = add_user(engine, "olga", Role.officer)
    with Session(engine) as s:
        token, row = create_api_token(s, user, "phone")
        s.commit()
        token_id = row.id
    headers = {"Authorization": f"Bearer {token}"}
    t0 = utcnow().replace(microsecond=0)

    def last_used() -> dt.datetime | None:
        with Session(engine) as s:
            return s.get_one(ApiToken, token_id).last_used_at

    with frozen(t0) as clock:
        client.get("/api/me", headers=headers)
        first = last_used()
        assert first is not None
        clock.advance(seconds=50)
        client.get("/api/me", headers=headers)
        assert last_used() == first
        clock.advance(seconds=11)
        client.get("/api/me", headers=headers)
        assert last_used() == first + dt.timedelta(seconds=61)
    with engine.connect() as c:
        assert c.execute(text("SELECT 1")).scalar() == 1
