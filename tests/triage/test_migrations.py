"""The migrations and the models describe the same schema, on this test's database."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

import triage.models  # noqa: F401  (registers every table)
from triage.migrate import head_revision


def test_database_is_at_the_head_revision(engine) -> None:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head_revision()


def test_models_and_migrations_agree(engine) -> None:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": False})
        diff = compare_metadata(ctx, SQLModel.metadata)
    assert diff == [], f"a model change has no migration: {diff}"


def test_probes_stored_before_the_size_gate_count_as_searched(engine) -> None:  # type: ignore[no-untyped-def]
    column = {c["name"]: c for c in inspect(engine).get_columns("probe")}["searched"]
    assert column["nullable"] is False and column["default"] is not None


def test_a_database_with_data_migrates_down_and_up_keeping_every_row(  # type: ignore[no-untyped-def]
        engine, settings, db_url, user_factory) -> None:
    """Table rebuilds (SQLite batch mode) must not trip over the rows that point at them."""
    from sqlmodel import Session

    from tests.factories import image_store, make_candidate
    from triage.migrate import downgrade, upgrade
    from triage.models import Role

    officer = user_factory(Role.officer)
    with Session(engine) as s:
        make_candidate(s, image_store(settings), settings, officer.id, score=0.8)
        s.commit()
    tables = sorted(t for t in SQLModel.metadata.tables if t != "alembic_version")

    def counts() -> dict[str, int]:
        with engine.connect() as conn:
            return {t: conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar_one() for t in tables}

    before = counts()
    assert before["probe"] == 1 and before["candidate"] == 1 and before["user_account"] >= 1
    engine.dispose()
    downgrade(db_url, "0001")
    upgrade(db_url)
    assert counts() == before
    with engine.connect() as conn:
        assert conn.execute(text("SELECT searched FROM probe")).scalar_one() in (True, 1)
        if engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1


def test_0006_reevaluates_every_candidate_under_one_rule_per_round(  # type: ignore[no-untyped-def]
        engine, settings, db_url, user_factory) -> None:
    """Outcomes pooled across rounds are re-decided by the last round alone; no flag is deleted."""
    import datetime as dt

    from sqlmodel import Session

    from tests.factories import image_store, make_candidate, make_subject
    from triage import audit, review
    from triage.migrate import downgrade, upgrade
    from triage.models import Role

    officer = user_factory(Role.officer)
    manager = user_factory(Role.manager)
    a, b, c, d = (user_factory(Role.recognizer) for _ in range(4))
    store = image_store(settings)
    with Session(engine) as s:
        ids = [make_candidate(s, store, settings, officer.id).id for _ in range(5)]
        make_subject(s, store, photos=2)
        ka = review.create_known_answer_task(s, settings)
        assert ka is not None
        ka_id = ka.id
        s.commit()
    engine.dispose()
    downgrade(db_url, "0004")

    now = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.UTC)
    # (candidate, status under the pooled rule, current round, verdicts per round, had a flag)
    history = [
        (ids[0], "flagged", 2, [("same", "cannot_tell"), ("same", "cannot_tell")], True),  # no round agreed
        (ids[1], "disputed", 2, [("same", "different"), ("same", "same")], False),         # round 2 agreed
        (ids[2], "cleared", 1, [("different", "different")], False),                      # unchanged
        (ids[3], "cleared", 2, [("different", "cannot_tell"), ("different", "cannot_tell")], False),
        (ids[4], "flagged", 1, [("same", "same")], True),                                 # unchanged
    ]
    people = [a.id, b.id, c.id, d.id]
    with engine.begin() as conn:
        for cid, status, rounds, verdicts, flagged in history:
            for rnd, pair in enumerate(verdicts, start=1):
                for slot_no, verdict in enumerate(pair, start=1):
                    reviewer = people[2 * (rnd - 1) + slot_no - 1]
                    if rnd == 1:
                        conn.execute(text("UPDATE review_slot SET reviewer_id=:r, verdict=:v, verdict_at=:t "
                                          "WHERE candidate_id=:c AND round=1 AND slot_no=:n"),
                                     {"r": reviewer, "v": verdict, "t": now, "c": cid, "n": slot_no})
                    else:
                        conn.execute(text("INSERT INTO review_slot (candidate_id, round, slot_no, reviewer_id, "
                                          "verdict, verdict_at, note, revealed_full_faces, withdrawn) "
                                          "VALUES (:c, :rnd, :n, :r, :v, :t, '', false, false)"),
                                     {"c": cid, "rnd": rnd, "n": slot_no, "r": reviewer, "v": verdict, "t": now})
            conn.execute(text("UPDATE candidate SET status=:s, current_round=:r, decided_at=:t WHERE id=:c"),
                         {"s": status, "r": rounds, "t": now, "c": cid})
            if flagged:
                conn.execute(text("INSERT INTO flag (candidate_id, sighting_id, subject_id, status, raised_at, "
                                  "close_note) SELECT id, sighting_id, subject_id, 'raised', :t, '' "
                                  "FROM candidate WHERE id=:c"), {"t": now, "c": cid})
    engine.dispose()
    upgrade(db_url)

    with engine.connect() as conn:
        status = dict(conn.execute(text("SELECT id, status FROM candidate")).all())
        flags = {r.candidate_id: r for r in conn.execute(text(
            "SELECT id, candidate_id, status, close_reason, close_note FROM flag"))}
        notes = conn.execute(text("SELECT user_id, kind, flag_id FROM notification")).all()
        redecided = conn.execute(text("SELECT object_id FROM audit_entry WHERE action='candidate.redecide'")
                                 ).scalars().all()
    assert status[ids[0]] == "disputed" and status[ids[1]] == "flagged"
    assert status[ids[2]] == "cleared" and status[ids[3]] == "disputed" and status[ids[4]] == "flagged"
    assert status[ka_id] == "withdrawn"  # the old known-answer pair could be told from real tasks
    assert sorted(redecided) == sorted(str(i) for i in (ids[0], ids[1], ids[3]))
    # The pooled flag is kept, closed as withdrawn with the reason; the round-2 agreement now has its flag.
    kept = flags[ids[0]]
    assert kept.status == "closed" and kept.close_reason == "withdrawn" and "no single review round" in kept.close_note
    assert flags[ids[1]].status == "raised" and flags[ids[4]].status == "raised"
    assert (manager.id, "flag.withdrawn", kept.id) in notes
    raised = flags[ids[1]].id
    assert (officer.id, "flag.raised", raised) in notes and (manager.id, "flag.raised", raised) in notes
    with Session(engine) as s:
        assert audit.verify(s).ok
    # And back down and up again, keeping the re-decided rows.
    engine.dispose()
    downgrade(db_url, "0004")
    upgrade(db_url)
    with engine.connect() as conn:
        assert dict(conn.execute(text("SELECT id, status FROM candidate")).all()) == status
