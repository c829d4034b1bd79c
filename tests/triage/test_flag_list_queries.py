"""The flags list loads its evidence set-based: the same number of queries for 2 flags as for 20."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event
from sqlmodel import Session, col, select

from tests.factories import image_store, make_candidate
from triage import flags, review
from triage.models import Flag, Role


@contextmanager
def _counted(session: Session) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    engine = session.get_bind()
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def _raise_flags(session: Session, settings, officer, recognizers, n: int) -> None:
    store = image_store(settings)
    for _ in range(n):
        make_candidate(session, store, settings, officer.id)
        session.commit()
        for user in recognizers:
            task = review.next_task(session, user, settings)
            assert task is not None
            review.submit_verdict(session, user, task.slot_id, "same", note="same scar")


def _queries_for_list(session: Session, manager) -> tuple[int, int]:
    session.expire_all()
    with _counted(session) as statements:
        evidence = flags.evidence_many(session, flags.visible_flags(session, manager))
    assert all(len(ev.verdicts) == 2 and ev.uploader is not None for ev in evidence)
    return len(evidence), len(statements)


def test_the_flags_list_takes_a_fixed_number_of_queries(session, settings, user_factory):
    officer = user_factory(Role.officer, username="officer")
    manager = user_factory(Role.manager, username="boss")
    recognizers = [user_factory(Role.recognizer, username=f"rec{i}") for i in range(2)]
    _raise_flags(session, settings, officer, recognizers, 2)
    few, few_queries = _queries_for_list(session, manager)
    _raise_flags(session, settings, officer, recognizers, 18)
    many, many_queries = _queries_for_list(session, manager)
    assert (few, many) == (2, 20)
    assert many_queries == few_queries
    # And the batch answers what one flag's evidence answers.
    one = session.exec(select(Flag).order_by(col(Flag.id))).first()
    assert one is not None
    single, batch = flags.evidence(session, one), flags.evidence_many(session, [one])[0]
    assert [v.reviewer for v in single.verdicts] == [v.reviewer for v in batch.verdicts] != []
