"""PostgreSQL's planner statistics, kept fresh for the tables this app writes.

The queue's claim joins five tables and anti-joins three more. With statistics,
PostgreSQL plans it with hash joins in about 2 ms at a thousand open slots; without
them it guesses one row per table and chooses nested loops that cost 60 ms and more,
on every claim of every recognizer. Tables here start empty and grow fastest in
exactly the minutes after a deployment, when autovacuum has not analysed them yet (it
waits for 50 rows plus 10 % of the table, and looks once a minute), and on servers
where autovacuum is turned off they are never analysed at all.

So the worker looks every ``analyze_interval_seconds`` (a tick, see
``miatari.registry``) and runs ``ANALYZE`` on each of the app's tables whose rows
changed since its last analysis by more than autovacuum's own rule (50 rows plus
10 % of the table). Where autovacuum keeps up, nothing is left to do. Only one
worker does it at a time (an advisory lock it does not wait for), and it waits at
most a second for a table's lock (``lock_timeout``). SQLite plans this query well without
statistics: nothing is done there.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import OperationalError
from sqlmodel import SQLModel

from triage.config import Settings
from triage.db import is_sqlite
from triage.services import Services

log = logging.getLogger(__name__)

# pg_try_advisory_lock's key: "miatari planner statistics".
ADVISORY_KEY = 0x6D69_6174_5053
# Autovacuum's defaults (autovacuum_analyze_threshold, autovacuum_analyze_scale_factor).
BASE_THRESHOLD = 50
SCALE_FACTOR = 0.1

_STALE = text("""
    SELECT s.relname
    FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
    WHERE s.schemaname = current_schema() AND s.relname = ANY(:tables)
      AND s.n_mod_since_analyze > :base + :scale * GREATEST(c.reltuples, 0)
    ORDER BY s.n_mod_since_analyze DESC
""")


@dataclass
class _Clock:
    last: float = float("-inf")


_clock = _Clock()


def app_tables() -> list[str]:
    return sorted(SQLModel.metadata.tables)


def _stale(conn: Connection) -> list[str]:
    return list(conn.execute(_STALE, {"tables": app_tables(), "base": BASE_THRESHOLD,
                                      "scale": SCALE_FACTOR}).scalars())


def stale_tables(engine: Engine) -> list[str]:
    """The app's tables whose statistics autovacuum's rule says are out of date (PostgreSQL)."""
    with engine.connect() as conn:
        return _stale(conn)


def refresh(engine: Engine) -> list[str]:
    """ANALYZE each stale table now; the tables analysed ([] when another process is at it, or on SQLite).

    Each table is analysed in its own statement, so one that waits too long for its lock (a migration
    at work, a long VACUUM) is left for the next look and the others are still done."""
    if is_sqlite(engine):
        return []
    done: list[str] = []
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY}).scalar():
            return []
        try:
            conn.execute(text("SET lock_timeout = '1s'"))
            quote = conn.dialect.identifier_preparer.quote
            for table in _stale(conn):
                try:
                    conn.execute(text(f"ANALYZE {quote(table)}"))
                except OperationalError as exc:
                    log.warning("planner statistics: ANALYZE %s left for later: %s", table, exc.orig)
                    continue
                done.append(table)
        finally:
            conn.execute(text("RESET lock_timeout"))
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_KEY})
    if done:
        log.info("planner statistics refreshed: %s", ", ".join(done))
    return done


def statistics_tick(engine: Engine, settings: Settings, services: Services) -> int:
    """The worker's tick: refresh at most every ``analyze_interval_seconds`` (0: never)."""
    interval = settings.analyze_interval_seconds
    if interval <= 0 or is_sqlite(engine) or time.monotonic() - _clock.last < interval:
        return 0
    _clock.last = time.monotonic()
    return len(refresh(engine))
