"""The hash-chained audit log: appends, tamper detection, pruning, search and export."""

from __future__ import annotations

import csv
import datetime as dt
import io
import threading

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session, col, select

from tests.conftest import USE_POSTGRES
from triage import audit
from triage.clock import frozen
from triage.models import AuditEntry, AuditHead, AuditOutcome, Role
from triage.security import create_user

T0 = dt.datetime(2025, 1, 10, 12, 0, tzinfo=dt.UTC)


def _fill(engine: Engine, n: int = 5) -> None:
    with Session(engine) as s:
        for i in range(n):
            audit.record(s, "test.action", object_type="thing", object_id=i, detail={"i": i, "note": "é ✓"},
                         ip="10.1.2.3")
        s.commit()


def test_chain_links_each_entry_to_the_previous(engine: Engine) -> None:
    _fill(engine, 4)
    with Session(engine) as s:
        rows = s.exec(select(AuditEntry).order_by(col(AuditEntry.id))).all()
        assert [r.id for r in rows] == [1, 2, 3, 4]
        assert rows[0].prev_hash == audit.GENESIS_HASH
        assert all(b.prev_hash == a.hash for a, b in zip(rows, rows[1:], strict=False))
        head = s.get_one(AuditHead, 1)
        assert head.last_id == 4 and head.last_hash == rows[-1].hash
        result = audit.verify(s)
        assert result.ok and result.checked == 4


def test_a_rolled_back_transaction_leaves_no_gap(engine: Engine) -> None:
    _fill(engine, 2)
    with Session(engine) as s:
        audit.record(s, "never.committed")
        s.rollback()
    _fill(engine, 1)
    with Session(engine) as s:
        assert audit.verify(s).ok
        assert [r.id for r in s.exec(select(AuditEntry).order_by(col(AuditEntry.id)))] == [1, 2, 3]


def test_editing_a_row_is_detected_and_named(engine: Engine) -> None:
    _fill(engine, 6)
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_entry SET outcome = 'denied' WHERE id = 4"))
    with Session(engine) as s:
        result = audit.verify(s)
    assert not result.ok and result.bad_id == 4 and "hash" in result.reason and result.checked == 3


def test_recomputing_the_edited_rows_hash_breaks_the_next_link(engine: Engine) -> None:
    _fill(engine, 5)
    with Session(engine) as s:
        row = s.get_one(AuditEntry, 2)
        row.actor = "somebody-else"
        row.hash = audit.entry_hash(row)
        s.add(row)
        s.commit()
        result = audit.verify(s)
    assert not result.ok and result.bad_id == 3 and "link" in result.reason


def test_deleting_a_middle_row_is_detected(engine: Engine) -> None:
    _fill(engine, 5)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_entry WHERE id = 3"))
    with Session(engine) as s:
        result = audit.verify(s)
    assert not result.ok and result.bad_id == 3 and "missing" in result.reason


def test_deleting_the_last_rows_is_detected(engine: Engine) -> None:
    _fill(engine, 5)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_entry WHERE id >= 4"))
    with Session(engine) as s:
        result = audit.verify(s)
    assert not result.ok and result.bad_id == 4


def test_deleting_the_first_rows_without_a_prune_is_detected(engine: Engine) -> None:
    _fill(engine, 5)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_entry WHERE id <= 2"))
    with Session(engine) as s:
        result = audit.verify(s)
    assert not result.ok and result.bad_id == 2 and "before 3" in result.reason


def test_prune_keeps_the_chain_verifiable(engine: Engine) -> None:
    with frozen(T0) as clock:
        _fill(engine, 3)
        clock.advance(days=400)
        _fill(engine, 2)
        with Session(engine) as s:
            assert audit.prune(s, T0 + dt.timedelta(days=10)) == 3
            s.commit()
            ids = [r.id for r in s.exec(select(AuditEntry).order_by(col(AuditEntry.id)))]
            assert ids == [4, 5, 6]
            prune_entry = s.get_one(AuditEntry, 6)
            assert prune_entry.action == audit.PRUNE_ACTION and prune_entry.detail["pruned_through_id"] == 3
            result = audit.verify(s)
            assert result.ok and result.checked == 3
            assert audit.prune(s, T0 + dt.timedelta(days=10)) == 0
        clock.advance(days=400)
        _fill(engine, 1)
        with Session(engine) as s:
            # A second prune removes the first prune entry too, and vouches for the new cut.
            assert audit.prune(s, T0 + dt.timedelta(days=500)) == 3
            s.commit()
            assert audit.verify(s).ok
    # Forging the vouching entry's claim breaks its own hash.
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_entry WHERE id = 7"))
    with Session(engine) as s:
        result = audit.verify(s)
        assert not result.ok and result.bad_id == 7


def test_record_names_the_actor_and_survives_a_json_round_trip(engine: Engine) -> None:
    with Session(engine) as s:
        user = create_user(s, "carla", "correct horse battery staple 42", [Role.manager])
        entry = audit.record(s, "thing.do", actor=user, object_type="thing", object_id=None,
                             outcome=AuditOutcome.denied, detail={"when": T0, "n": 1.5})
        s.commit()
        assert entry.actor == "carla" and entry.actor_id == user.id and entry.object_id == ""
        assert entry.detail == {"when": str(T0), "n": 1.5}
    with Session(engine) as s:
        assert audit.verify(s).ok


def test_search_filters_and_counts(engine: Engine) -> None:
    _fill(engine, 3)
    with Session(engine) as s:
        audit.record(s, "user.create", object_type="user", object_id=7)
        audit.record(s, "user.disable", object_type="user", object_id=7, outcome=AuditOutcome.denied)
        audit.record(s, "username.weird")
        audit.record(s, "userX.create")
        s.commit()
        assert audit.search(s, audit.AuditFilter(action="user_"))[1] == 0
        rows, total = audit.search(s, audit.AuditFilter(action="user"))
        assert total == 2 and [r.action for r in rows] == ["user.disable", "user.create"]
        rows, total = audit.search(s, audit.AuditFilter(outcome="denied"))
        assert total == 1
        rows, total = audit.search(s, audit.AuditFilter(object_type="thing"), limit=2, offset=2)
        assert total == 3 and len(rows) == 1 and rows[0].id == 1
        assert [e.id for e in audit.iter_entries(s, audit.AuditFilter(), batch=2)] == [1, 2, 3, 4, 5, 6, 7]


def test_long_values_are_cut_to_the_columns_before_hashing(engine: Engine) -> None:
    with Session(engine) as s:
        entry = audit.record(s, "a" * 100, object_type="t" * 100, object_id="x" * 300, ip="1" * 100)
        s.commit()
        assert len(entry.object_id) == 64 and len(entry.action) == 64
    with Session(engine) as s:
        assert audit.verify(s).ok


def test_export_csv_quotes_spreadsheet_formulas(engine: Engine) -> None:
    with Session(engine) as s:
        audit.record(s, "login", object_type="user", object_id="=HYPERLINK(\"x\")", detail={"a": 1})
        s.commit()
        body = audit.export_csv(audit.iter_entries(s, audit.AuditFilter()))
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0] == audit.EXPORT_FIELDS
    assert rows[1][5] == "'=HYPERLINK(\"x\")"
    assert rows[1][8] == '{"a": 1}'


# Entries join the chain as their transaction commits.
def _actions(engine: Engine) -> list[str]:
    with Session(engine) as s:
        return [r.action for r in s.exec(select(AuditEntry).order_by(col(AuditEntry.id)))]


def test_an_entry_of_a_rolled_back_savepoint_is_never_stored(engine: Engine) -> None:
    with Session(engine) as s:
        audit.record(s, "kept.before")
        with pytest.raises(RuntimeError):
            with s.begin_nested():
                audit.record(s, "undone.outer")
                with s.begin_nested():
                    audit.record(s, "undone.inner")  # committed into the savepoint that is then undone
                raise RuntimeError("the step fails")
        with s.begin_nested():
            audit.record(s, "kept.savepoint")
        audit.record(s, "kept.after")
        s.commit()
    assert _actions(engine) == ["kept.before", "kept.savepoint", "kept.after"]
    with Session(engine) as s:
        assert audit.verify(s).ok


def test_commit_with_a_savepoint_still_open_stores_its_entries(engine: Engine) -> None:
    with Session(engine) as s:
        audit.record(s, "outer")
        s.begin_nested()
        audit.record(s, "inside.open.savepoint")
        s.commit()
    assert _actions(engine) == ["outer", "inside.open.savepoint"]


def test_a_session_closed_without_commit_stores_nothing_later(engine: Engine) -> None:
    with Session(engine) as s:
        audit.record(s, "abandoned")
        s.close()  # neither commit nor rollback: the transaction ends unfinished
        audit.record(s, "next.transaction")
        s.commit()
    assert _actions(engine) == ["next.transaction"]


def test_an_entry_has_no_place_before_its_commit_and_chain_now_gives_it_one(engine: Engine) -> None:
    _fill(engine, 2)
    with Session(engine) as s:
        entry = audit.record(s, "thing.do")
        assert entry.id is None and entry.hash == ""
        audit.chain_now(s)
        assert entry.id == 3 and entry.prev_hash == s.get_one(AuditEntry, 2).hash
        assert entry.hash == audit.entry_hash(entry)
        audit.chain_now(s)  # nothing more to chain: no change
        s.commit()
    with Session(engine) as s:
        head = s.get_one(AuditHead, 1)
        assert head.last_id == 3 and audit.verify(s).checked == 3


def test_an_anchor_is_the_entry_that_records_it(engine: Engine) -> None:
    _fill(engine, 2)
    with Session(engine) as s:
        anchor = audit.take_anchor(s)
        s.commit()
        assert anchor.entry_id == 3 and anchor.hash == s.get_one(AuditEntry, 3).hash
        assert audit.check_anchors(s, [anchor]).ok


def test_concurrent_writers_each_keep_their_entries_together_in_one_chain(engine: Engine) -> None:
    writers, per = 8, 3
    barrier = threading.Barrier(writers)
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            barrier.wait(timeout=30)
            with Session(engine) as s:
                for i in range(per):
                    audit.record(s, f"w{n}.{i}")
                s.commit()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    actions = _actions(engine)
    assert len(actions) == writers * per
    runs = [actions[i:i + per] for i in range(0, len(actions), per)]
    assert sorted(r[0].split(".")[0] for r in runs) == sorted(f"w{n}" for n in range(writers))
    assert all(r == [f"{r[0].split('.')[0]}.{i}" for i in range(per)] for r in runs)
    with Session(engine) as s:
        result = audit.verify(s)
        assert result.ok and result.checked == writers * per


@pytest.mark.skipif(not USE_POSTGRES, reason="SQLite has one writer at a time; the head lock is PostgreSQL's")
def test_a_writer_holds_the_chain_only_while_it_commits(engine: Engine) -> None:
    _fill(engine, 1)
    with Session(engine) as slow, Session(engine) as other:
        audit.record(slow, "slow.request")
        slow.exec(select(AuditHead)).all()  # the transaction is under way (reading, not the log)
        # Meanwhile another writer appends and commits: the slow request does not hold the head.
        other.connection().execute(text("SET LOCAL lock_timeout = '2s'"))
        audit.record(other, "quick.request")
        other.commit()
        slow.commit()
    assert _actions(engine) == ["test.action", "quick.request", "slow.request"]
    with Session(engine) as s:
        assert audit.verify(s).ok


def test_a_transaction_reading_the_log_sees_what_it_recorded(engine: Engine) -> None:
    _fill(engine, 1)
    with Session(engine) as s:
        audit.record(s, "seen.at.once", object_type="thing", object_id=9)
        rows, total = audit.search(s, audit.AuditFilter(action="seen"))
        assert total == 1 and rows[0].id == 2 and rows[0].hash == audit.entry_hash(rows[0])
        audit.record(s, "after.the.read")
        s.commit()
    assert _actions(engine) == ["test.action", "seen.at.once", "after.the.read"]
    with Session(engine) as s:
        assert audit.verify(s).ok


def test_entries_are_not_chained_from_inside_a_savepoint(engine: Engine) -> None:
    with Session(engine) as s:
        audit.record(s, "outer.entry")
        with pytest.raises(RuntimeError), s.begin_nested():
            audit.chain_now(s)
        with s.begin_nested():
            assert audit.search(s, audit.AuditFilter())[1] == 0  # shown from the commit on
        s.commit()
    assert _actions(engine) == ["outer.entry"]


def test_a_root_committed_by_hand_with_a_savepoint_open_says_what_it_left_out(
        engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    with Session(engine) as s:
        root = s.begin()
        audit.record(s, "left.out")
        s.begin_nested()
        root.commit()  # not Session.commit(): the savepoint is still the innermost when the root prepares
    assert "left.out" in caplog.text and "savepoint open" in caplog.text
