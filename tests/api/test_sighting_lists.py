"""Sighting lists are set-based: the same answer as one sighting at a time, in a fixed number of queries."""

from __future__ import annotations

from sqlalchemy import event
from sqlmodel import Session, select

from tests.conftest import login
from tests.factories import image_store, make_candidate, make_sighting
from triage import sightings
from triage.models import Candidate, Role, Sighting, User


def _count_queries(engine, fn):
    seen: list[str] = []

    def before(conn, cursor, statement, *args):
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    try:
        result = fn()
    finally:
        event.remove(engine, "before_cursor_execute", before)
    return result, len(seen)


def test_list_pages_answer_as_one_by_one_in_a_fixed_number_of_queries(make_client, engine, settings,
                                                                      user_factory) -> None:
    officer = user_factory(Role.officer, username="olga")
    store = image_store(settings)
    with Session(engine, expire_on_commit=False) as s:
        for n in range(3):
            cand = make_candidate(s, store, settings, officer.id)
            if n == 1:
                cand.status = "disputed"
                s.add(cand)
        make_sighting(s, store, officer.id)
        s.commit()
    client = make_client()
    login(client, "olga")
    client.get("/api/sightings")  # warm: credential resolution, settings
    few, few_queries = _count_queries(client.app.state.engine, lambda: client.get("/api/sightings").json())
    with Session(engine, expire_on_commit=False) as s:
        for _ in range(9):
            make_candidate(s, store, settings, officer.id)
        s.commit()
    many, many_queries = _count_queries(client.app.state.engine, lambda: client.get("/api/sightings").json())
    assert few["count"] == 4 and many["count"] == 13
    assert many_queries == few_queries  # not several more per sighting
    page, page_queries = _count_queries(client.app.state.engine, lambda: client.get("/sightings"))
    assert page.status_code == 200
    # The set-based answer is the one-by-one answer.
    with Session(engine) as s:
        rows = list(s.exec(select(Sighting)).all())
        together = sightings.progress_of_many(s, rows)
        for row in rows:
            assert together[row.pk] == sightings.progress_of(s, row)
        assert any(p.disputed for p in together.values()) and any(p.under_review for p in together.values())
        user = s.exec(select(User).where(User.username == "olga")).one()
        assert len(s.exec(select(Candidate)).all()) == 12 and user is not None
