"""Engine and sessions: SQLite (WAL, foreign keys, busy timeout) or PostgreSQL, same code."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import CursorResult, Engine, Result, event
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, col, create_engine, select

from triage.models import Table
from triage.transaction import unit_of_work

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Execution option: this engine's transactions start as readers (see ``read_first``).
READ_FIRST = "miatari_read_first"
_DEFERRED = "miatari_deferred"
RowT = TypeVar("RowT", bound=Table)
_WRITE_STATEMENTS = ("INSERT", "UPDATE", "DELETE", "REPLACE", "SAVEPOINT", "CREATE", "DROP", "ALTER")


# The write locks this process holds, by connection, with the thread that took each.
_holders: dict[int, int] = {}


class WriterConnection(sqlite3.Connection):
    """A SQLite connection that queues for the write lock on a lock file before ``BEGIN IMMEDIATE``.

    SQLite's own busy handler polls: a waiter sleeps up to 100 ms between tries, so under contention the
    lock lies idle while writers sleep, and a writer that keeps losing to newcomers waits for seconds.
    Blocked in ``flock`` instead, a waiter (a thread of this process or of another: the web processes and
    the matching worker share the file) is woken the moment the holder commits or rolls back.  The kernel
    drops the lock of a killed process.  A program that does not queue here (``sqlite3``, a migration in
    another tool) still meets SQLite's busy timeout, as before.
    """

    lock_path = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600) if self.lock_path else -1
        self._holds = False

    def take_write_lock(self) -> None:
        # A thread that holds the lock through another connection must not queue behind itself: that
        # transaction meets SQLite's busy timeout (an error), as it would without this lock.
        if self._lock_fd < 0 or self._holds or threading.get_ident() in _holders.values():
            return
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        self._holds = True
        _holders[id(self)] = threading.get_ident()

    def let_go(self) -> None:
        if self._holds:
            self._holds = False
            _holders.pop(id(self), None)
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.let_go()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.let_go()

    def close(self) -> None:
        try:
            self.let_go()
            super().close()
        finally:
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1


def _connection_class(url: str) -> type[WriterConnection]:
    database = url.split("///", 1)[1].split("?", 1)[0] if "///" in url else ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return WriterConnection
    return type("WriterConnection", (WriterConnection,), {"lock_path": f"{os.path.abspath(database)}-writer"})


def _begin_immediate(raw: Any) -> None:
    if isinstance(raw, WriterConnection):
        raw.take_write_lock()
    try:
        raw.execute("BEGIN IMMEDIATE")
    except BaseException:
        if isinstance(raw, WriterConnection):
            raw.let_go()
        raise


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                        "factory": _connection_class(url)}
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
            if deferred:
                conn.exec_driver_sql("BEGIN")
            else:
                _begin_immediate(conn.connection.dbapi_connection)
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
                _begin_immediate(raw)
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


def reads_first(session: Session) -> None:
    """Let the session's next transaction begin as a reader (SQLite: ``BEGIN`` deferred), if none is open.

    For work that may find it has nothing to write: asking costs no write lock, and its first write or row
    lock takes the lock then (``_sqlite_upgrade``), from a fresh snapshot.  What was read before that may
    be stale, so it may only decide whether to go on.  PostgreSQL is unaffected."""
    if not session.in_transaction():
        session.connection(execution_options={READ_FIRST: True})


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A job's or a command's session and its one transaction (``triage.transaction.unit_of_work``):
    committed on success, rolled back on error, keeping a refusal's audit entry."""
    with Session(engine, expire_on_commit=False) as session, unit_of_work(session):
        yield session


def lock_row(session: Session, model: type[RowT], row_id: int) -> RowT | None:
    """The row, read afresh and locked for this transaction (SQLite: every transaction holds the write lock).

    On PostgreSQL ``FOR NO KEY UPDATE``: inserting rows that refer to it does not wait on the lock."""
    stmt = select(model).where(col(model.id) == row_id).execution_options(populate_existing=True)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(key_share=True)
    return session.exec(stmt).first()


def rows_affected(result: Result[Any]) -> int:
    """The row count of an UPDATE or DELETE run through a session (typed as any ``Result``)."""
    if not isinstance(result, CursorResult):
        raise TypeError(f"{type(result).__name__} carries no row count")
    return result.rowcount
