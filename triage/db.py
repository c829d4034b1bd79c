"""Engine and sessions: SQLite (WAL, foreign keys, busy timeout) or PostgreSQL, same code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Engine, event
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel, create_engine, select

from triage.transaction import unit_of_work

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Execution option: this engine's transactions start as readers (see ``read_first``).
READ_FIRST = "miatari_read_first"
_DEFERRED = "miatari_deferred"
RowT = TypeVar("RowT", bound=SQLModel)
_WRITE_STATEMENTS = ("INSERT", "UPDATE", "DELETE", "REPLACE", "SAVEPOINT", "CREATE", "DROP", "ALTER")


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        if url in ("sqlite://", "sqlite:///:memory:"):
            kwargs.setdefault("poolclass", StaticPool)
        engine = create_engine(url, connect_args=connect_args, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy, not pysqlite, decide when transactions begin, so
            # BEGIN IMMEDIATE below takes the write lock up front.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # Every transaction takes the write lock at once: a read-then-write
            # transaction can then never fail half-way with "database is locked".
            # Read-first transactions (GET requests) start deferred: WAL readers wait for nobody.
            deferred = bool(conn.get_execution_options().get(READ_FIRST))
            conn.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")
            conn.info[_DEFERRED] = deferred

        @event.listens_for(engine, "before_cursor_execute")
        def _sqlite_upgrade(conn: Any, _cursor: Any, statement: str, _params: Any, context: Any,
                            _many: bool) -> None:
            # A read-first transaction about to write (or to lock a row, as the audit head is locked
            # before every append) becomes an ordinary one first: it has written nothing, so ending
            # it and taking the write lock loses nothing, and everything from here on is read and
            # written under the lock exactly as in a transaction that began IMMEDIATE.
            if not conn.info.get(_DEFERRED):
                return
            compiled = getattr(context, "compiled", None)
            locks = getattr(getattr(compiled, "statement", None), "_for_update_arg", None) is not None
            if locks or statement.lstrip()[:9].upper().startswith(_WRITE_STATEMENTS):
                raw = conn.connection.dbapi_connection
                raw.execute("COMMIT")
                raw.execute("BEGIN IMMEDIATE")
                conn.info[_DEFERRED] = False

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, **kwargs)


def read_first(engine: Engine) -> Engine:
    """The same engine, whose transactions begin as readers on SQLite (``BEGIN`` deferred).

    For requests that mostly read (GET): they no longer queue behind every writer for
    SQLite's single write lock. The first write, or row lock, of such a transaction
    takes the lock then (see ``_sqlite_upgrade``); PostgreSQL is unaffected.
    """
    return engine.execution_options(**{READ_FIRST: True}) if is_sqlite(engine) else engine


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A job's or a command's session and its one transaction (``triage.transaction.unit_of_work``):
    committed on success, rolled back on error, keeping a refusal's audit entry."""
    with Session(engine, expire_on_commit=False) as session, unit_of_work(session):
        yield session


def lock_row(session: Session, model: type[RowT], row_id: int) -> RowT | None:
    """The row, read afresh and locked for this transaction (SQLite: every transaction holds the write lock).

    On PostgreSQL ``FOR NO KEY UPDATE``: inserting rows that refer to it does not wait on the lock."""
    stmt = select(model).where(model.id == row_id).execution_options(populate_existing=True)  # type: ignore[attr-defined]
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(key_share=True)
    return session.exec(stmt).first()
