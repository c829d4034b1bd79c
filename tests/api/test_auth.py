"""Personal API tokens for mobile clients, /api/me, and the admin and audit JSON APIs."""

from __future__ import annotations

from collections.abc import Callable

import pyotp
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlmodel import Session, select

from tests.conftest import TEST_PASSWORD, add_user, login
from triage.models import ApiToken, Role, User


def _token(client: TestClient, username: str, name: str = "phone", **extra: str) -> str:
    r = client.post("/api/tokens", json={"name": name, "username": username, "password": TEST_PASSWORD, **extra})
    assert r.status_code == 201, r.text
    return r.json()["token"]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_token_from_password_then_me_and_revoke(client: TestClient, engine: Engine) -> None:
    add_user(engine, "olga", Role.officer, Role.recognizer)
    r = client.post("/api/tokens", json={"name": "phone", "username": "olga", "password": TEST_PASSWORD})
    assert r.status_code == 201
    body = r.json()
    assert body["token"].startswith("mia_") and body["name"] == "phone" and body["revoked_at"] is None
    me = client.get("/api/me", headers=_bearer(body["token"]))
    assert me.json() == {"id": me.json()["id"], "username": "olga", "full_name": "",
                         "roles": ["officer", "recognizer"], "has_second_factor": False, "must_change_password": False}
    listed = client.get("/api/tokens", headers=_bearer(body["token"])).json()
    assert listed["count"] == 1 and "token" not in listed["data"][0]
    # Bearer requests need no CSRF token: there is no ambient credential to abuse.
    assert client.delete(f"/api/tokens/{body['id']}", headers=_bearer(body["token"])).status_code == 204
    assert client.get("/api/me", headers=_bearer(body["token"])).status_code == 401
    with Session(engine) as s:
        assert s.exec(select(ApiToken)).one().revoked_at is not None


def test_bad_credentials_and_bad_input(client: TestClient, engine: Engine) -> None:
    add_user(engine, "olga", Role.officer)
    r = client.post("/api/tokens", json={"name": "phone", "username": "olga", "password": "wrong one entirely"})
    assert r.status_code == 401 and "Wrong username" in r.json()["detail"]
    assert client.post("/api/tokens", json={"name": "", "username": "olga", "password": TEST_PASSWORD}
                       ).status_code == 422
    assert client.post("/api/tokens", json={"name": "phone"}).status_code == 401
    assert client.get("/api/me").status_code == 401
    assert client.get("/api/me", headers=_bearer("mia_forged")).status_code == 401


def test_token_needs_the_second_factor_when_enrolled(client: TestClient, engine: Engine) -> None:
    user = add_user(engine, "mona", Role.manager)
    secret = pyotp.random_base32()
    with Session(engine) as s:
        u = s.get_one(User, user.id)
        u.totp_secret = secret
        s.add(u)
        s.commit()
    assert client.post("/api/tokens", json={"name": "p", "username": "mona", "password": TEST_PASSWORD}
                       ).status_code == 401
    assert _token(client, "mona", totp=pyotp.TOTP(secret).now())


def test_no_token_while_a_password_change_is_owed(client: TestClient, engine: Engine) -> None:
    user = add_user(engine, "newbie", Role.officer)
    with Session(engine) as s:
        u = s.get_one(User, user.id)
        u.must_change_password = True
        s.add(u)
        s.commit()
    r = client.post("/api/tokens", json={"name": "p", "username": "newbie", "password": TEST_PASSWORD})
    assert r.status_code == 403 and "password" in r.json()["detail"]


def test_token_from_a_browser_session_needs_csrf(client: TestClient, engine: Engine) -> None:
    add_user(engine, "olga", Role.officer)
    token = login(client, "olga")
    del client.headers["X-CSRF-Token"]
    assert client.post("/api/tokens", json={"name": "phone"}).status_code == 403
    r = client.post("/api/tokens", json={"name": "phone"}, headers={"X-CSRF-Token": token})
    assert r.status_code == 201


def test_someone_elses_token_is_not_found_but_an_admin_may_revoke_it(client: TestClient, engine: Engine) -> None:
    add_user(engine, "olga", Role.officer)
    add_user(engine, "ivan", Role.officer)
    add_user(engine, "root", Role.admin)
    olga = _token(client, "olga")
    olga_id = client.get("/api/tokens", headers=_bearer(olga)).json()["data"][0]["id"]
    ivan = _token(client, "ivan")
    assert client.delete(f"/api/tokens/{olga_id}", headers=_bearer(ivan)).status_code == 404
    assert client.get("/api/me", headers=_bearer(olga)).status_code == 200
    root = _token(client, "root")
    assert client.delete(f"/api/tokens/{olga_id}", headers=_bearer(root)).status_code == 204
    assert client.get("/api/me", headers=_bearer(olga)).status_code == 401


def test_admin_users_api(client: TestClient, engine: Engine) -> None:
    add_user(engine, "root", Role.admin)
    add_user(engine, "olga", Role.officer)
    root = _bearer(_token(client, "root"))
    olga = _bearer(_token(client, "olga"))
    assert client.get("/api/users", headers=olga).status_code == 403
    listed = client.get("/api/users", headers=root).json()
    assert listed["count"] == 2
    r = client.post("/api/users", headers=root, json={"username": "rec", "roles": ["recognizer"]})
    assert r.status_code == 201 and r.json()["must_change_password"] and r.json()["one_time_password"]
    uid = r.json()["id"]
    assert client.post("/api/users", headers=root, json={"username": "rec", "roles": ["recognizer"]}
                       ).status_code == 422
    assert client.post("/api/users", headers=root, json={"username": "x", "roles": []}).status_code == 422
    r = client.patch(f"/api/users/{uid}", headers=root, json={"roles": ["recognizer", "officer"], "is_active": False})
    assert r.status_code == 200 and r.json()["roles"] == ["officer", "recognizer"] and not r.json()["is_active"]
    assert client.patch(f"/api/users/{uid}", headers=root, json={"roles": ["pilot"]}).status_code == 409
    assert client.patch("/api/users/999", headers=root, json={"is_active": True}).status_code == 404
    r = client.post(f"/api/users/{uid}/reset-password", headers=root)
    assert r.status_code == 200 and r.json()["one_time_password"]
    assert client.delete(f"/api/users/{uid}/totp", headers=root).status_code == 200
    assert client.get(f"/api/users/{uid}", headers=root).json()["username"] == "rec"


def test_audit_api_for_managers(client: TestClient, engine: Engine) -> None:
    add_user(engine, "boss", Role.manager)
    add_user(engine, "olga", Role.officer)
    boss = _bearer(_token(client, "boss"))
    olga = _bearer(_token(client, "olga"))
    assert client.get("/api/audit", headers=olga).status_code == 403
    r = client.get("/api/audit?action=api_token", headers=boss).json()
    assert r["count"] == 2 and {e["action"] for e in r["data"]} == {"api_token.create"}
    csv_text = client.get("/api/audit/export.csv?actor=olga", headers=boss).text
    assert csv_text.splitlines()[0].startswith("id,at,actor")
    assert client.get("/api/audit/verify", headers=boss).json()["ok"] is True
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_entry WHERE id = 1"))
    v = client.get("/api/audit/verify", headers=boss).json()
    assert v["ok"] is False and v["bad_id"] == 1


def test_privileged_token_stops_working_until_a_second_factor_is_set_up(
        make_client: Callable[..., TestClient], engine: Engine) -> None:
    lax = make_client()
    add_user(engine, "boss", Role.manager)
    token = _token(lax, "boss")
    strict = make_client(require_totp_for_privileged=True)
    r = strict.get("/api/audit", headers=_bearer(token))
    assert r.status_code == 403 and "second factor" in r.json()["detail"]
    assert strict.get("/api/me", headers=_bearer(token)).status_code == 200
    r = strict.post("/api/tokens", json={"name": "p", "username": "boss", "password": TEST_PASSWORD})
    assert r.status_code == 403
