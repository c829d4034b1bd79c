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
