"""Separation of duties: an account that reviews never holds manager or admin rights.

Refused on every path that sets roles (the CLI, the admin pages, the JSON API,
the database itself); accounts that held both before migration 0005 have the
conflicting roles put on hold until an admin chooses a side; and a manager who
escalated a candidate is never served its new round, whatever their roles later.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from tests.conftest import TEST_PASSWORD, add_user, login
from tests.factories import image_store, make_candidate
from triage.config import Settings, get_settings
from triage.migrate import downgrade, upgrade
from triage.models import AuditEntry, Candidate, Role, User
from triage.security import SEPARATION_OF_DUTIES_MESSAGE, hash_password

MIXED = [["recognizer", "manager"], ["recognizer", "admin"], ["officer", "recognizer", "admin", "manager"]]


def _user(engine: Engine, username: str) -> User | None:
    with Session(engine) as s:
        return s.exec(select(User).where(User.username == username)).first()


def _denied(engine: Engine, action: str) -> list[AuditEntry]:
    with Session(engine) as s:
        return list(s.exec(select(AuditEntry).where(AuditEntry.action == action, AuditEntry.outcome == "denied")
                           .order_by(col(AuditEntry.id))).all())


Cli = Callable[[list[str]], int]  # miatari.cli.main


@pytest.fixture
def cli(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    monkeypatch.setenv("MIATARI_DATABASE_URL", db_url)
    monkeypatch.setenv("MIATARI_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    from miatari.cli import main

    yield main
    get_settings.cache_clear()


def test_cli_refuses_a_recognizer_who_manages(cli: Cli, engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    main = cli
    for i, roles in enumerate(MIXED):
        argv = ["create-user", f"mixed{i}", "--password", TEST_PASSWORD]
        for r in roles:
            argv += ["--role", r]
        assert main(argv) == 1
        assert "Separation of duties" in capsys.readouterr().err
        assert _user(engine, f"mixed{i}") is None
    assert [e.object_id for e in _denied(engine, "user.create")] == ["mixed0", "mixed1", "mixed2"]
    assert main(["create-user", "ann", "--role", "recognizer", "--role", "officer",
                 "--password", TEST_PASSWORD]) == 0


def test_admin_pages_refuse_mixed_roles_at_creation_and_edit(client: TestClient, engine: Engine) -> None:
    add_user(engine, "root", Role.admin)
    ann = add_user(engine, "ann", Role.recognizer)
    login(client, "root")
    for roles in MIXED:
        r = client.post("/admin/users", data={"username": "mixed", "roles": roles})
        assert r.status_code == 422 and SEPARATION_OF_DUTIES_MESSAGE in r.text
        assert _user(engine, "mixed") is None
    r = client.post(f"/admin/users/{ann.id}/roles", data={"roles": ["recognizer", "manager"]})
    assert r.status_code == 409 and "Separation of duties" in r.text
    stored = _user(engine, "ann")
    assert stored is not None and stored.roles == "recognizer"
    assert len(_denied(engine, "user.create")) == 3 and len(_denied(engine, "user.set_roles")) == 1


def test_api_refuses_mixed_roles_at_creation_and_edit(client: TestClient, engine: Engine) -> None:
    add_user(engine, "root", Role.admin)
    boss = add_user(engine, "boss", Role.manager)
    token = client.post("/api/tokens", json={"name": "t", "username": "root", "password": TEST_PASSWORD}).json()
    headers = {"Authorization": f"Bearer {token['token']}"}
    for roles in MIXED:
        r = client.post("/api/users", json={"username": "mixed", "roles": roles}, headers=headers)
        assert r.status_code == 422 and "Separation of duties" in r.json()["detail"]
    r = client.patch(f"/api/users/{boss.id}", json={"roles": ["manager", "recognizer"]}, headers=headers)
    assert r.status_code == 409 and "Separation of duties" in r.json()["detail"]
    stored = _user(engine, "boss")
    assert _user(engine, "mixed") is None and stored is not None and stored.roles == "manager"
    assert _denied(engine, "user.create") and _denied(engine, "user.update")


def test_the_database_refuses_a_mixed_account(engine: Engine) -> None:
    with Session(engine) as s:
        s.add(User(username="sneaky", roles="manager recognizer", password_hash=hash_password(TEST_PASSWORD)))
        with pytest.raises(IntegrityError):
            s.commit()


def _insert_user(conn: Connection, username: str, roles: str, active: bool = True) -> None:
    conn.execute(text(
        "INSERT INTO user_account (username, full_name, roles, password_hash, is_active, failed_logins, "
        "must_change_password, created_at, password_changed_at) VALUES (:u, '', :r, :h, :a, 0, false, "
        "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"), {"u": username, "r": roles, "h": hash_password(TEST_PASSWORD),
                                                  "a": active})


def _roles(engine: Engine) -> dict[str, tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT username, roles, roles_on_hold FROM user_account")).all()
    return {r.username: (r.roles, r.roles_on_hold) for r in rows}


def test_migration_puts_mixed_accounts_roles_on_hold(db_url: str, engine: Engine,
                                                     make_client: Callable[..., TestClient]) -> None:
    """On a populated database: mixed accounts lose both sides until an admin chooses; down restores them."""
    engine.dispose()
    downgrade(db_url, "0004")
    with engine.begin() as conn:
        _insert_user(conn, "root", "admin manager")
        _insert_user(conn, "mia", "manager recognizer")
        _insert_user(conn, "olga", "admin officer recognizer")
        _insert_user(conn, "ann", "recognizer")
    engine.dispose()
    upgrade(db_url)
    assert _roles(engine) == {"root": ("admin manager", ""), "mia": ("", "manager recognizer"),
                              "olga": ("officer", "admin recognizer"), "ann": ("recognizer", "")}

    client = make_client()
    login(client, "mia")
    # Neither side: no live task, no disputes, no audit log, no metrics.
    assert client.post("/api/review/next").status_code == 403
    for path in ("/disputes", "/audit", "/stats", "/api/review/disputes", "/api/audit", "/watchlist"):
        assert client.get(path).status_code == 403, path
    admin = make_client()
    login(admin, "root")
    page = admin.get("/admin/users")
    assert [u.username for u in page.context["on_hold"]] == ["mia", "olga"] and 'id="roles-on-hold"' in page.text
    mia = _user(engine, "mia")
    assert mia is not None
    assert 'id="roles-on-hold"' in admin.get(f"/admin/users/{mia.id}").text
    # Choosing a side clears the hold, on record.
    r = admin.post(f"/admin/users/{mia.id}/roles", data={"roles": ["recognizer"]}, follow_redirects=False)
    assert r.status_code == 303 and _roles(engine)["mia"] == ("recognizer", "")
    with Session(engine) as s:
        entry = s.exec(select(AuditEntry).where(AuditEntry.action == "user.set_roles")).one()
        assert entry.detail["on_hold_before"] == ["manager", "recognizer"] and entry.detail["after"] == ["recognizer"]
    assert client.post("/api/review/next").status_code == 200
    assert [u.username for u in admin.get("/admin/users").context["on_hold"]] == ["olga"]

    # Down gives the held roles back; with no other active admin, a mixed admin keeps admin and manager.
    engine.dispose()
    downgrade(db_url, "0004")
    with engine.begin() as conn:
        conn.execute(text("UPDATE user_account SET is_active = false WHERE username = 'root'"))
        assert conn.execute(text("SELECT roles FROM user_account WHERE username = 'olga'")).scalar_one() == \
            "admin officer recognizer"
    engine.dispose()
    upgrade(db_url)
    assert _roles(engine)["olga"] == ("admin officer", "recognizer")


def test_the_escalating_manager_is_never_served_the_new_round(make_client: Callable[..., TestClient], engine: Engine,
                                                               settings: Settings) -> None:
    officer = add_user(engine, "officer", Role.officer)
    add_user(engine, "root", Role.admin)
    add_user(engine, "boss", Role.manager)
    for name in ("ann", "bob", "cat", "dan"):
        add_user(engine, name, Role.recognizer)
    with Session(engine, expire_on_commit=False) as s:
        cand = make_candidate(s, image_store(settings), settings, officer.pk)
        s.commit()

    def as_user(name: str) -> TestClient:
        c = make_client(known_answer_share=0.0)
        login(c, name)
        return c

    for name, verdict in (("ann", "same"), ("bob", "different")):
        c = as_user(name)
        task = c.post("/api/review/next").json()["task"]
        assert c.post(task["verdict_url"], json={"verdict": verdict}).status_code == 201
    boss = as_user("boss")
    assert boss.post(f"/api/review/candidates/{cand.id}/escalate").status_code == 200
    # Later the manager is made a recognizer: the round they created is still not theirs.
    admin = as_user("root")
    stored = _user(engine, "boss")
    assert stored is not None
    boss_id = stored.pk
    assert admin.post(f"/admin/users/{boss_id}/roles", data={"roles": ["recognizer"]},
                      follow_redirects=False).status_code == 303
    assert boss.post("/api/review/next").json() == {"task": None}
    served = [as_user(n).post("/api/review/next").json()["task"] for n in ("cat", "dan")]
    assert all(t is not None for t in served)
    with Session(engine) as s:
        assert s.get_one(Candidate, cand.id).current_round == 2
