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
