"""`miatari audit verify|export`, `miatari retention run` and `miatari create-user`."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session, col, select

from tests.conftest import TEST_PASSWORD
from triage.config import get_settings
from triage.models import AuditEntry, User
from triage.security import verify_password

Cli = Callable[[list[str]], int]  # miatari.cli.main


@pytest.fixture
def cli(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    monkeypatch.setenv("MIATARI_DATABASE_URL", db_url)
    monkeypatch.setenv("MIATARI_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    from miatari.cli import main

    yield main
    get_settings.cache_clear()


def test_create_user_then_verify_then_tamper(cli: Cli, engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    main = cli
    assert main(["create-user", "olga", "--role", "officer", "--role", "recognizer",
                 "--password", TEST_PASSWORD]) == 0
    assert main(["create-user", "ivan", "--role", "officer", "--password", "short"]) == 1
    assert "at least 15" in capsys.readouterr().err
    with Session(engine) as s:
        user = s.exec(select(User).where(User.username == "olga")).one()
        assert user.roles == "officer recognizer" and verify_password(user.password_hash, TEST_PASSWORD)
        assert s.exec(select(User).where(User.username == "ivan")).first() is None
    for i in range(3):
        assert main(["create-user", f"u{i}", "--role", "officer", "--password", TEST_PASSWORD]) == 0
    capsys.readouterr()
    assert main(["audit", "verify"]) == 0
    # olga, the refusal of ivan's weak password, u0, u1, u2.
    assert "intact: 5 entries" in capsys.readouterr().out
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_entry SET detail = '{\"username\": \"mallory\"}' WHERE id = 3"))
    assert main(["audit", "verify"]) == 1
    err = capsys.readouterr().err
    assert "BROKEN at entry 3" in err and "does not match its hash" in err


def test_verify_names_a_deleted_row(cli: Cli, engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    main = cli
    for i in range(4):
        main(["create-user", f"u{i}", "--role", "officer", "--password", TEST_PASSWORD])
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_entry WHERE id = 2"))
    capsys.readouterr()
    assert main(["audit", "verify"]) == 1
    assert "entry 2 is missing" in capsys.readouterr().err


def test_export_writes_csv_and_is_recorded(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    main = cli
    main(["create-user", "olga", "--role", "officer", "--password", TEST_PASSWORD])
    out = tmp_path / "audit.csv"
    assert main(["audit", "export", "-o", str(out), "--action", "user"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["action"] for r in rows] == ["user.create"]
    assert main(["audit", "export", "--since", "not-a-date"]) == 2
    with Session(engine) as s:
        assert s.exec(select(AuditEntry).where(AuditEntry.action == "audit.export")).first() is not None


def test_retention_run(cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["retention", "run"]) == 0
    assert "deleted 0 sightings" in capsys.readouterr().out


def _rewrite_chain_from(engine: Engine, entry_id: int, detail: str) -> None:
    """What someone with write access could do: change an entry and recompute every hash after it."""
    from triage.audit import entry_hash

    with Session(engine) as s:
        rows = s.exec(select(AuditEntry).where(col(AuditEntry.id) >= entry_id).order_by(col(AuditEntry.id))).all()
        prev = s.get(AuditEntry, entry_id - 1)
        prev_hash = prev.hash if prev else "0" * 64
        for row in rows:
            if row.id == entry_id:
                row.detail = {"username": detail}
            row.prev_hash = prev_hash
            row.hash = entry_hash(row)
            prev_hash = row.hash
            s.add(row)
        s.flush()
        s.execute(text("UPDATE audit_head SET last_hash = :h"), {"h": prev_hash})
        s.commit()


def test_anchors_kept_outside_show_a_rewritten_chain(cli: Cli, engine: Engine, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    main = cli
    anchors = tmp_path / "anchors.txt"
    for i in range(3):
        assert main(["create-user", f"u{i}", "--role", "officer", "--password", TEST_PASSWORD]) == 0
    assert main(["audit", "anchor", "-o", str(anchors)]) == 0
    main(["create-user", "u3", "--role", "officer", "--password", TEST_PASSWORD])
    assert main(["audit", "anchor", "-o", str(anchors)]) == 0
    lines = anchors.read_text().splitlines()
    assert len(lines) == 2 and all(line.startswith("miatari-audit-anchor/1 ") for line in lines)
    assert [int(line.split()[1]) for line in lines] == [4, 6]  # the anchoring is itself an entry
    capsys.readouterr()
    assert main(["audit", "verify", "--anchors", str(anchors)]) == 0
    assert "anchors: 2 match" in capsys.readouterr().out
    # A consistent rewrite of entry 2 and everything after it: the chain alone cannot tell...
    _rewrite_chain_from(engine, 2, "mallory")
    assert main(["audit", "verify"]) == 0
    capsys.readouterr()
    # ...the anchors can.
    assert main(["audit", "verify", "--anchors", str(anchors)]) == 1
    err = capsys.readouterr().err
    assert "REWRITTEN" in err and "entry 4 differs" in err and "entry 6 differs" in err
    # An unreadable anchor file is an error of its own (exit 2), not a verdict on the log.
    bad = tmp_path / "bad.txt"
    bad.write_text("# anchors\nmiatari-audit-anchor/1 x deadbeef now\n")
    assert main(["audit", "verify", "--anchors", str(bad)]) == 2
    assert "line 2 is not an anchor" in capsys.readouterr().err
    assert main(["audit", "verify", "--anchors", str(tmp_path / "absent.txt")]) == 2
    with Session(engine) as s:
        assert len(s.exec(select(AuditEntry).where(AuditEntry.action == "audit.anchor")).all()) == 2
