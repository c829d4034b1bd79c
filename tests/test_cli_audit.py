"""`miatari audit verify|export`, `miatari retention run` and `miatari create-user`."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session, select

from tests.conftest import TEST_PASSWORD
from triage.config import get_settings
from triage.models import AuditEntry, User
from triage.security import verify_password


@pytest.fixture
def cli(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    monkeypatch.setenv("MIATARI_DATABASE_URL", db_url)
    monkeypatch.setenv("MIATARI_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    from miatari.cli import main

    yield main
    get_settings.cache_clear()


def test_create_user_then_verify_then_tamper(cli: object, engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    main = cli
    assert main(["create-user", "olga", "--role", "officer", "--role", "recognizer",  # type: ignore[operator]
                 "--password", TEST_PASSWORD]) == 0
    assert main(["create-user", "ivan", "--role", "officer", "--password", "short"]) == 1  # type: ignore[operator]
    assert "at least 15" in capsys.readouterr().err
    with Session(engine) as s:
        user = s.exec(select(User).where(User.username == "olga")).one()
        assert user.roles == "officer recognizer" and verify_password(user.password_hash, TEST_PASSWORD)
        assert s.exec(select(User).where(User.username == "ivan")).first() is None
    for i in range(3):
        assert main(["create-user", f"u{i}", "--role", "officer", "--password", TEST_PASSWORD]) == 0  # type: ignore[operator]
    capsys.readouterr()
    assert main(["audit", "verify"]) == 0  # type: ignore[operator]
    assert "intact: 4 entries" in capsys.readouterr().out
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_entry SET detail = '{\"username\": \"mallory\"}' WHERE id = 3"))
    assert main(["audit", "verify"]) == 1  # type: ignore[operator]
    err = capsys.readouterr().err
    assert "BROKEN at entry 3" in err and "does not match its hash" in err


def test_verify_names_a_deleted_row(cli: object, engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    main = cli
    for i in range(4):
        main(["create-user", f"u{i}", "--role", "officer", "--password", TEST_PASSWORD])  # type: ignore[operator]
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_entry WHERE id = 2"))
    capsys.readouterr()
    assert main(["audit", "verify"]) == 1  # type: ignore[operator]
    assert "entry 2 is missing" in capsys.readouterr().err


def test_export_writes_csv_and_is_recorded(cli: object, engine: Engine, tmp_path: Path) -> None:
    main = cli
    main(["create-user", "olga", "--role", "officer", "--password", TEST_PASSWORD])  # type: ignore[operator]
    out = tmp_path / "audit.csv"
    assert main(["audit", "export", "-o", str(out), "--action", "user"]) == 0  # type: ignore[operator]
    rows = list(csv.DictReader(out.open()))
    assert [r["action"] for r in rows] == ["user.create"]
    assert main(["audit", "export", "--since", "not-a-date"]) == 2  # type: ignore[operator]
    with Session(engine) as s:
        assert s.exec(select(AuditEntry).where(AuditEntry.action == "audit.export")).first() is not None


def test_retention_run(cli: object, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["retention", "run"]) == 0  # type: ignore[operator]
    assert "deleted 0 sightings" in capsys.readouterr().out
