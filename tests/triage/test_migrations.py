"""The migrations and the models describe the same schema, on this test's database."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

import triage.models  # noqa: F401  (registers every table)
from triage.migrate import head_revision


def test_database_is_at_the_head_revision(engine) -> None:
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == head_revision()


def test_models_and_migrations_agree(engine) -> None:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": False})
        diff = compare_metadata(ctx, SQLModel.metadata)
    assert diff == [], f"a model change has no migration: {diff}"


def test_probes_stored_before_the_size_gate_count_as_searched(engine) -> None:
    column = {c["name"]: c for c in inspect(engine).get_columns("probe")}["searched"]
    assert column["nullable"] is False and column["default"] is not None


def test_a_database_with_data_migrates_down_and_up_keeping_every_row(
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


def test_0006_reevaluates_every_candidate_under_one_rule_per_round(
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
        status_of = dict(conn.execute(text("SELECT id, status FROM candidate")).all())
        flags = {r.candidate_id: r for r in conn.execute(text(
            "SELECT id, candidate_id, status, close_reason, close_note FROM flag"))}
        notes = conn.execute(text("SELECT user_id, kind, flag_id FROM notification")).all()
        redecided = conn.execute(text("SELECT object_id FROM audit_entry WHERE action='candidate.redecide'")
                                 ).scalars().all()
    assert status_of[ids[0]] == "disputed" and status_of[ids[1]] == "flagged"
    assert status_of[ids[2]] == "cleared" and status_of[ids[3]] == "disputed" and status_of[ids[4]] == "flagged"
    assert status_of[ka_id] == "withdrawn"  # the old known-answer pair could be told from real tasks
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
        assert dict(conn.execute(text("SELECT id, status FROM candidate")).all()) == status_of


DLIB_MODEL_ID = "dlib@55533b28a95800a5"


def test_0007_moves_reference_embeddings_under_dlibs_model_id_and_back(engine, db_url) -> None:
    """Up: reference_photo.embedding becomes a reference_embedding row of dlib's model; probes are dlib's.
    Down: the bytes go back where they were; a photo with no dlib embedding stops the downgrade."""
    import pytest

    from matcher import model_id_for
    from triage.config import Settings
    from triage.migrate import downgrade, upgrade

    models_home = Settings(_env_file=None).deepface_home
    if (models_home / ".deepface" / "weights").is_dir():
        assert model_id_for("dlib", models_home) == DLIB_MODEL_ID, "the migration's constant is dlib's model id"
    engine.dispose()
    downgrade(db_url, "0004")
    vectors = {1: bytes(range(256)) * 2, 2: bytes(reversed(range(256))) * 2}
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO user_account (id, username, full_name, roles, password_hash, is_active, "
                          "failed_logins, must_change_password, created_at, password_changed_at) VALUES "
                          "(1, 'off', '', 'officer', 'x', true, 0, false, :t, :t)"), {"t": "2026-01-01 00:00:00"})
        for sha in ("a" * 64, "b" * 64, "c" * 64):
            conn.execute(text("INSERT INTO stored_image (sha256, media_type, size_bytes, created_at) "
                              "VALUES (:s, 'image/png', 1, :t)"), {"s": sha, "t": "2026-01-01 00:00:00"})
        conn.execute(text("INSERT INTO subject (id, name, aliases, case_ref, priority, notes, status, created_at, "
                          "updated_at) VALUES (1, 'S', '', 'C', 3, '', 'active', :t, :t)"),
                     {"t": "2026-01-01 00:00:00"})
        for pid, emb in vectors.items():
            conn.execute(text(
                "INSERT INTO reference_photo (id, subject_id, image_sha256, view, face_index, bbox, landmarks, "
                "detector, iod_px, blur, yaw_deg, quality_ok, quality_issues, embedding, eye_crop_sha256, "
                "face_chip_sha256, created_at) VALUES (:id, 1, :img, '', 0, '[]', '{}', '', 60, 150, 0, true, '', "
                ":emb, :eye, :chip, :t)"),
                {"id": pid, "img": "a" * 64 if pid == 1 else "b" * 64, "emb": emb, "eye": "c" * 64, "chip": "c" * 64,
                 "t": "2026-01-01 00:00:00"})
        conn.execute(text("INSERT INTO sighting (id, uploaded_by, observed_at, location_text, note, status, "
                          "faces_found, created_at) VALUES (1, 1, :t, '', '', 'matched', 1, :t)"),
                     {"t": "2026-01-01 00:00:00"})
        conn.execute(text("INSERT INTO sighting_photo (id, sighting_id, position, image_sha256) "
                          "VALUES (1, 1, 0, :s)"), {"s": "a" * 64})
        conn.execute(text("INSERT INTO probe (id, sighting_id, sighting_photo_id, face_index, bbox, landmarks, "
                          "detector, iod_px, blur, yaw_deg, quality_ok, quality_issues, embedding, eye_crop_sha256, "
                          "face_chip_sha256, created_at) VALUES (1, 1, 1, 0, '[]', '{}', '', 30, 100, 0, true, '', "
                          ":emb, :c, :c, :t)"), {"emb": vectors[1], "c": "c" * 64, "t": "2026-01-01 00:00:00"})
    engine.dispose()
    upgrade(db_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT reference_photo_id, model_id, dim, embedding FROM reference_embedding "
                                 "ORDER BY reference_photo_id")).all()
        assert [(r[0], r[1], r[2], bytes(r[3])) for r in rows] == [(pid, DLIB_MODEL_ID, 128, emb)
                                                                 for pid, emb in vectors.items()]
        assert "embedding" not in {c["name"] for c in inspect(conn).get_columns("reference_photo")}
        assert conn.execute(text("SELECT model_id FROM probe")).scalar_one() == DLIB_MODEL_ID
        assert conn.execute(text("SELECT model_id, dim FROM gallery_model")).one() == (DLIB_MODEL_ID, 128)
    engine.dispose()
    downgrade(db_url, "0004")
    with engine.connect() as conn:
        back = conn.execute(text("SELECT id, embedding FROM reference_photo ORDER BY id")).all()
        assert [(r[0], bytes(r[1])) for r in back] == list(vectors.items())
        assert "model_id" not in {c["name"] for c in inspect(conn).get_columns("probe")}
        assert "reference_embedding" not in inspect(conn).get_table_names()
    engine.dispose()
    upgrade(db_url)
    # A photo embedded only by another model cannot go back to a schema that holds dlib's vector only.
    with engine.begin() as conn:
        conn.execute(text("UPDATE reference_embedding SET model_id = 'faceres@1dc7ca1c3bceb377' "
                          "WHERE reference_photo_id = 2"))
    engine.dispose()
    with pytest.raises(RuntimeError, match="1 reference photos have no dlib embedding"):
        downgrade(db_url, "0004")
    engine.dispose()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM reference_embedding")).scalar_one() == 2  # nothing lost
        # PostgreSQL rolls the whole refused downgrade back; SQLite's DDL is not transactional, so the
        # revisions after 0007 went down and 0007 itself refused.  Either way the embeddings are kept.
        expected = head_revision() if conn.dialect.name == "postgresql" else "0007"
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == expected
