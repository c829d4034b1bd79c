"""Alembic environment: the schema is ``SQLModel.metadata``; the URL comes from settings."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlmodel import SQLModel

import triage.models  # noqa: F401  (registers the tables)
from triage.config import get_settings
from triage.db import make_engine

config = context.config
target_metadata = SQLModel.metadata


def _url() -> str:
    return config.attributes.get("url") or get_settings().db_url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url())
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(connection: Any) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Batch operations rebuild a table (copy, drop, rename). With foreign keys enforced,
        # dropping a table that other rows point at fails, so enforcement is off while the
        # migration runs (set outside any transaction, as SQLite requires), every reference
        # is checked before the commit, and enforcement is back on afterwards.
        if connection.in_transaction():
            raise RuntimeError("run SQLite migrations on a connection outside a transaction")
        raw = connection.connection.driver_connection
        raw.execute("PRAGMA foreign_keys=OFF")
    try:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                          compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"the migration left {len(broken)} broken reference(s), e.g. {broken[0]}")
    finally:
        if sqlite:
            raw.execute("PRAGMA foreign_keys=ON")


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
