"""A request owns its session's transaction: committed when the handler returns, before the response goes out;
rolled back when it raises, keeping a refusal's audit entry and nothing else; a read takes no write lock."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.responses import StreamingResponse
from sqlalchemy import create_engine, text
from sqlmodel import Session, select

from triage import audit
from triage.errors import DomainError, RefusalEntry
from triage.models import AuditEntry
from webcommon.deps import SessionDep


def _actions(engine: Any) -> list[tuple[str, str]]:
    with Session(engine) as s:
        return [(e.action, e.outcome) for e in s.exec(select(AuditEntry).order_by(AuditEntry.id)).all()]


def _take_write_lock_briefly(engine: Any) -> None:
    """Take SQLite's write lock from another connection, waiting at most half a second (else it raises)."""
    other = create_engine(engine.url, connect_args={"timeout": 0.5, "isolation_level": None})
    try:
        with other.connect() as conn:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            conn.exec_driver_sql("ROLLBACK")
    finally:
        other.dispose()


def test_the_transaction_ends_before_a_slow_response_is_sent(client) -> None:  # type: ignore[no-untyped-def]
    app, engine = client.app, client.app.state.engine
    sending, release = threading.Event(), threading.Event()

    def slow_body() -> Iterator[bytes]:
        sending.set()
        assert release.wait(20), "the test never let the response finish"
        yield b"done"

    def slow(session: SessionDep) -> StreamingResponse:
        audit.record(session, "probe.slow")
        return StreamingResponse(slow_body(), media_type="text/plain")

    app.add_api_route("/probe/slow", slow, methods=["POST"])
    answer: dict[str, Any] = {}
    caller = threading.Thread(target=lambda: answer.setdefault("r", client.post("/probe/slow")))
    caller.start()
    try:
        assert sending.wait(20), "the response never started"
        # The response is going out now: its transaction is over, its work committed and visible...
        assert ("probe.slow", "ok") in _actions(engine)
        if engine.dialect.name == "sqlite":
            # ... and another writer is not kept waiting by it (it would be, for as long as the response
            # takes, if the session ended after the response).
            _take_write_lock_briefly(engine)
    finally:
        release.set()
        caller.join(20)
    assert answer["r"].status_code == 200 and answer["r"].text == "done"


def test_a_refusal_keeps_its_audit_entry_and_nothing_else(client) -> None:  # type: ignore[no-untyped-def]
    app, engine = client.app, client.app.state.engine

    def refused(session: SessionDep) -> None:
        audit.record(session, "probe.half_done")
        raise DomainError("conflict", "Not now.", audit=RefusalEntry("probe.refused", object_id=7,
                                                                       detail={"why": "test"}))

    def failed(session: SessionDep) -> None:
        audit.record(session, "probe.half_done")
        raise RuntimeError("a bug half-way")

    app.add_api_route("/api/probe/refused", refused, methods=["POST"])
    app.add_api_route("/api/probe/failed", failed, methods=["POST"])
    before = _actions(engine)
    r = client.post("/api/probe/refused")
    assert r.status_code == 409 and r.json() == {"detail": "Not now."}
    assert _actions(engine)[len(before):] == [("probe.refused", "denied")]
    with Session(engine) as s:
        entry = s.exec(select(AuditEntry).where(AuditEntry.action == "probe.refused")).one()
        assert entry.detail == {"reason": "conflict", "why": "test"} and entry.object_id == "7"
    with pytest.raises(RuntimeError):
        client.post("/api/probe/failed")
    assert _actions(engine)[len(before):] == [("probe.refused", "denied")]
    assert audit.verify(Session(engine)).ok


def test_a_read_takes_no_write_lock(client) -> None:  # type: ignore[no-untyped-def]
    app, engine = client.app, client.app.state.engine
    if engine.dialect.name != "sqlite":
        pytest.skip("the write lock is SQLite's")

    def page(session: SessionDep) -> dict[str, int]:
        n = len(session.exec(select(AuditEntry)).all())
        # Mid-request, with the request's transaction open: another writer gets the lock at once.
        _take_write_lock_briefly(engine)
        return {"entries": n, "one": int(session.exec(text("SELECT 1")).one()[0])}  # type: ignore[call-overload]

    app.add_api_route("/api/probe/read", page, methods=["GET"])
    r = client.get("/api/probe/read")
    assert r.status_code == 200 and r.json()["one"] == 1
