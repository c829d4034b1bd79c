"""Planner statistics on PostgreSQL: stale tables are analysed by the worker's tick, once, by one process."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session

from miatari.registry import worker_registry
from tests.conftest import USE_POSTGRES, make_settings
from triage import planner_stats
from triage.db import make_engine
from triage.models import Job
from triage.services import build
from triage.storage import ImageStore
from triage.worker import Worker

pg_only = pytest.mark.skipif(not USE_POSTGRES, reason="planner statistics are kept on PostgreSQL only")


def _add_jobs(db_url: str, n: int, kind: str = "test.kind") -> None:
    """Rows written by another backend, which then exits: its counts reach pg_stat_user_tables at once."""
    writer = make_engine(db_url)
    with Session(writer) as s:
        s.add_all(Job(kind=kind, ref_id=i) for i in range(n))
        s.commit()
    writer.dispose()


def _analysed(engine: Engine, table: str) -> tuple[bool, float]:
    with engine.connect() as c:
        row = c.execute(text("SELECT s.last_analyze IS NOT NULL, c.reltuples FROM pg_stat_user_tables s "
                             "JOIN pg_class c ON c.oid = s.relid WHERE s.relname = :t"), {"t": table}).one()
    return bool(row[0]), float(row[1])


@pg_only
def test_a_table_that_grew_is_analysed_once_and_then_left_alone(engine: Engine, db_url: str) -> None:
    assert "job" not in planner_stats.stale_tables(engine)
    _add_jobs(db_url, planner_stats.BASE_THRESHOLD + 30)
    assert "job" in planner_stats.stale_tables(engine)
    assert _analysed(engine, "job") == (False, -1.0)  # never analysed: the planner guesses

    assert "job" in planner_stats.refresh(engine)
    assert _analysed(engine, "job") == (True, planner_stats.BASE_THRESHOLD + 30)
    assert "job" not in planner_stats.stale_tables(engine)
    assert "job" not in planner_stats.refresh(engine)


@pg_only
def test_few_changes_to_a_large_table_do_not_count_as_stale(engine: Engine, db_url: str) -> None:
    _add_jobs(db_url, 1000)
    planner_stats.refresh(engine)
    # 50 rows plus 10 % of 1000 must change before the statistics are out of date.
    _add_jobs(db_url, 120, kind="test.more")
    assert "job" not in planner_stats.stale_tables(engine)
    _add_jobs(db_url, 40, kind="test.again")
    assert "job" in planner_stats.stale_tables(engine)


@pg_only
def test_only_one_process_analyses_at_a_time(engine: Engine, db_url: str) -> None:
    _add_jobs(db_url, 100)
    other = make_engine(db_url)
    with other.connect() as holder:
        assert holder.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": planner_stats.ADVISORY_KEY}).scalar()
        assert planner_stats.refresh(engine) == []
        assert "job" in planner_stats.stale_tables(engine)
        holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": planner_stats.ADVISORY_KEY})
    other.dispose()
    assert "job" in planner_stats.refresh(engine)
    # The lock was given back: a later look can take it again.
    with engine.connect() as c:
        assert c.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": planner_stats.ADVISORY_KEY}).scalar()
        c.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": planner_stats.ADVISORY_KEY})


@pg_only
def test_a_table_whose_lock_is_busy_is_left_for_later_and_the_others_are_done(
        engine: Engine, db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    _add_jobs(db_url, 100)
    writer = make_engine(db_url)
    with writer.begin() as c:
        c.execute(text("INSERT INTO stored_image (sha256, media_type, size_bytes, width, height, created_at) "
                       "SELECT md5(i::text) || md5(i::text), 'image/png', 1, 1, 1, now() "
                       "FROM generate_series(1, 100) i"))
    writer.dispose()
    blocker = make_engine(db_url)
    with blocker.connect() as b, caplog.at_level(logging.WARNING, logger="triage.planner_stats"):
        tx = b.begin()
        b.execute(text("LOCK TABLE job IN SHARE UPDATE EXCLUSIVE MODE"))  # what a VACUUM or ANALYZE holds
        done = planner_stats.refresh(engine)
        tx.rollback()
    blocker.dispose()
    assert "stored_image" in done and "job" not in done
    assert "ANALYZE job left for later" in caplog.text
    assert "job" in planner_stats.stale_tables(engine)
    assert planner_stats.refresh(engine) == ["job"]


@pg_only
def test_the_worker_tick_analyses_and_then_waits_its_interval(tmp_path: Path, engine: Engine, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url, analyze_interval_seconds=3600)
    worker = Worker(build(engine, settings, ImageStore(tmp_path / "img")), worker_registry())
    planner_stats._clock.last = float("-inf")
    _add_jobs(db_url, 100)
    worker.run_ticks()
    assert _analysed(engine, "job")[0]
    _add_jobs(db_url, 200, kind="test.more")
    worker.run_ticks()  # within the interval: not looked at again yet
    assert "job" in planner_stats.stale_tables(engine)
    planner_stats._clock.last = float("-inf")
    worker.run_ticks()
    assert "job" not in planner_stats.stale_tables(engine)


def test_nothing_is_done_when_turned_off_or_on_sqlite(tmp_path: Path, engine: Engine, db_url: str) -> None:
    planner_stats._clock.last = float("-inf")
    off = make_settings(tmp_path, db_url, analyze_interval_seconds=0)
    assert planner_stats.statistics_tick(engine, off, None) == 0  # type: ignore[arg-type]
    if not USE_POSTGRES:
        _add_jobs(db_url, 100)
        assert planner_stats.refresh(engine) == []
        with engine.connect() as c:  # no ANALYZE ran: SQLite keeps no statistics table
            assert c.execute(text("SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'")).first() is None
