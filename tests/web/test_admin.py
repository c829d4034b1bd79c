"""Admin account pages, and the managers' audit pages."""

from __future__ import annotations

import csv
import io

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlmodel import Session, col, select

from tests.conftest import TEST_PASSWORD, add_user, login
from triage.models import AuditEntry, Role, User


def _user(engine: Engine, username: str) -> User:
    with Session(engine) as s:
        return s.exec(select(User).where(User.username == username)).one()


def test_admin_creates_an_account_with_a_one_time_password(client: TestClient, engine: Engine,
                                                           make_client: object) -> None:
    add_user(engine, "root", Role.admin)
    login(client, "root")
    page = client.get("/admin/users")
    assert page.template.name == "admin_users.html" and [u.username for u in page.context["users"]] == ["root"]
    r = client.post("/admin/users", data={"username": "new.officer", "full_name": "New Officer",
                                          "roles": ["officer", "recognizer"]}, follow_redirects=False)
    assert r.status_code == 303  # post/redirect/get: a reload of the next page posts nothing again
    r = client.get(r.headers["location"])
    assert r.template.name == "admin_user.html" and r.context["target"].username == "new.officer"
    otp = r.context["flashes"][0].secret
    assert len(otp) >= 15 and f'id="one-time-password">{otp}</code>' in r.text
    # Shown once, and kept sealed until then (never in clear in the database).
    reload = client.get(r.url.path)
    assert reload.context["flashes"] == [] and otp not in reload.text
    user = _user(engine, "new.officer")
    assert user.must_change_password and user.role_set == {Role.officer, Role.recognizer}
    # Bad input: a clear error, nothing created, the refusal on record.
    for data in ({"username": "new.officer", "roles": ["officer"]}, {"username": "x y", "roles": ["officer"]},
                 {"username": "nobody"}, {"username": "z", "roles": ["sheriff"]}):
        bad = client.post("/admin/users", data=data)
        assert bad.status_code == 422 and bad.context["error"], data
    with Session(engine) as s:
        assert len(s.exec(select(User)).all()) == 2
        denied = s.exec(select(AuditEntry).where(AuditEntry.action == "user.create",
                                                 AuditEntry.outcome == "denied")).all()
        assert len(denied) == 4


def test_reset_disable_enable_and_roles(client: TestClient, engine: Engine) -> None:
    from fastapi.testclient import TestClient as TC

    add_user(engine, "root", Role.admin)
    target = add_user(engine, "olga", Role.officer)
    officer_client = TC(client.app, base_url="http://testserver")
    login(officer_client, "olga")
    login(client, "root")
    r = client.get(f"/admin/users/{target.id}")
    assert r.template.name == "admin_user.html" and r.context["target"].username == "olga"
    r = client.post(f"/admin/users/{target.id}/reset-password")
    otp = r.context["flashes"][0].secret
    # The old sessions end; the old password no longer works; the new one leads to the change page.
    assert officer_client.get("/", follow_redirects=False).status_code == 303
    officer_client.headers.pop("X-CSRF-Token")
    page = officer_client.get("/login")
    tok = page.cookies.get("miatari_login_csrf") or officer_client.cookies.get("miatari_login_csrf")
    r = officer_client.post("/login", data={"username": "olga", "password": TEST_PASSWORD, "csrf_token": tok},
                            follow_redirects=False)
    assert r.status_code == 401
    r = officer_client.post("/login", data={"username": "olga", "password": otp, "csrf_token": tok},
                            follow_redirects=False)
    assert r.headers["location"] == "/account/password"

    r = client.post(f"/admin/users/{target.id}/roles", data={"roles": ["officer", "manager"]},
                    follow_redirects=False)
    assert r.status_code == 303 and _user(engine, "olga").role_set == {Role.officer, Role.manager}
    r = client.post(f"/admin/users/{target.id}/roles", data={})
    assert r.status_code == 409 and "at least one role" in r.context["error"]
    # Disabling asks first: a post without the confirmation changes nothing.
    assert client.get(f"/admin/users/{target.id}/disable").template.name == "admin_user_disable.html"
    r = client.post(f"/admin/users/{target.id}/disable", follow_redirects=False)
    assert r.status_code == 422 and "confirm" in r.context["error"] and _user(engine, "olga").is_active
    r = client.post(f"/admin/users/{target.id}/disable", data={"confirm": "yes"}, follow_redirects=False)
    assert r.status_code == 303 and not _user(engine, "olga").is_active
    assert "Account disabled" in client.get(r.headers["location"]).context["flashes"][0].text
    assert officer_client.get("/account/password", follow_redirects=False).status_code == 303
    client.post(f"/admin/users/{target.id}/enable", follow_redirects=False)
    assert _user(engine, "olga").is_active
    assert client.post("/admin/users/9999/disable", data={"confirm": "yes"}).status_code == 404


def test_last_admin_cannot_lock_everyone_out(client: TestClient, engine: Engine) -> None:
    root = add_user(engine, "root", Role.admin)
    login(client, "root")
    r = client.post(f"/admin/users/{root.id}/disable", data={"confirm": "yes"})
    assert r.status_code == 409 and "last active admin" in r.context["error"]
    r = client.post(f"/admin/users/{root.id}/roles", data={"roles": ["manager"]})
    assert r.status_code == 409
    assert _user(engine, "root").is_active and _user(engine, "root").has_role(Role.admin)


def test_admin_removes_a_lost_second_factor(client: TestClient, engine: Engine) -> None:
    add_user(engine, "root", Role.admin)
    target = add_user(engine, "mona", Role.manager)
    with Session(engine) as s:
        u = s.get_one(User, target.id)
        u.totp_secret = "A" * 32
        s.add(u)
        s.commit()
    login(client, "root")
    r = client.post(f"/admin/users/{target.id}/totp/remove", follow_redirects=False)
    assert r.status_code == 303 and _user(engine, "mona").totp_secret is None


def test_non_admins_are_refused_and_it_is_recorded(client: TestClient, engine: Engine) -> None:
    add_user(engine, "boss", Role.manager, Role.officer)
    login(client, "boss")
    assert client.get("/admin/users").status_code == 403
    r = client.post("/admin/users", data={"username": "sneaky", "roles": ["admin"]})
    assert r.status_code == 403
    with Session(engine) as s:
        assert s.exec(select(User).where(User.username == "sneaky")).first() is None
        entry = s.exec(select(AuditEntry).where(AuditEntry.action == "access").order_by(col(AuditEntry.id))).all()[-1]
        assert entry.outcome == "denied" and entry.actor == "boss" and entry.detail["path"] == "/admin/users"


def test_manager_browses_filters_exports_and_verifies_the_audit_log(client: TestClient, engine: Engine) -> None:
    add_user(engine, "boss", Role.manager)
    add_user(engine, "olga", Role.officer)
    login(client, "boss")
    page = client.get("/audit")
    assert page.template.name == "audit.html" and page.context["total"] >= 2
    actions = {e.action for e in page.context["entries"]}
    assert {"user.create", "login"} <= actions
    page = client.get("/audit?action=user&actor=system")
    assert {e.action for e in page.context["entries"]} == {"user.create"} and page.context["total"] == 2
    frag = client.get("/audit?outcome=denied", headers={"HX-Request": "true"})
    assert frag.template.name == "_audit_rows.html" and frag.context["total"] == 0
    export = client.get("/audit/export.csv?action=user")
    assert export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert [r["action"] for r in rows] == ["user.create", "user.create"]
    ok = client.get("/audit/verify")
    assert ok.template.name == "audit_verify.html" and ok.context["result"].ok
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_entry SET actor = 'nobody' WHERE id = 2"))
    bad = client.get("/audit/verify")
    assert not bad.context["result"].ok and bad.context["result"].bad_id == 2 and "entry 2" in bad.text
    assert client.get("/audit?since=not-a-date").status_code == 422


def test_officer_cannot_see_the_audit_log(client: TestClient, engine: Engine) -> None:
    add_user(engine, "olga", Role.officer, Role.admin)
    login(client, "olga")
    assert client.get("/audit").status_code == 403
    assert client.get("/audit/export.csv").status_code == 403


def test_notifications_are_personal(client: TestClient, engine: Engine) -> None:
    from triage import notifications

    olga = add_user(engine, "olga", Role.officer)
    ivan = add_user(engine, "ivan", Role.officer)
    with Session(engine) as s:
        mine = notifications.notify(s, olga.pk, "flag", "A flag was raised on your sighting 3")
        theirs = notifications.notify(s, ivan.pk, "flag", "Ivan's news")
        s.commit()
        mine_id, theirs_id = mine.id, theirs.id
    login(client, "olga")
    count = client.get("/notifications/count")
    assert count.template.name == "_notif_count.html" and count.context["unread"] == 1
    page = client.get("/notifications")
    assert page.template.name == "notifications.html"
    assert [n.id for n in page.context["notifications"]] == [mine_id] and "Ivan" not in page.text
    assert client.post(f"/notifications/{theirs_id}/read", follow_redirects=False).status_code == 404
    with Session(engine) as s:
        assert notifications.unread_count(s, ivan.pk) == 1
    client.post(f"/notifications/{mine_id}/read", follow_redirects=False)
    assert client.get("/notifications/count").context["unread"] == 0


def test_admin_revokes_a_lost_phones_token(client: TestClient, engine: Engine) -> None:
    from triage.security import create_api_token, resolve_api_token

    add_user(engine, "root", Role.admin)
    olga = add_user(engine, "olga", Role.officer)
    ivan = add_user(engine, "ivan", Role.officer)
    with Session(engine) as s:
        token, row = create_api_token(s, s.get_one(User, olga.id), "lost phone")
        s.commit()
        row_id = row.id
    login(client, "root")
    page = client.get(f"/admin/users/{olga.id}")
    assert [t.name for t in page.context["tokens"]] == ["lost phone"]
    assert client.post(f"/admin/users/{ivan.id}/tokens/{row_id}/revoke").status_code == 404
    r = client.post(f"/admin/users/{olga.id}/tokens/{row_id}/revoke", follow_redirects=False)
    assert r.status_code == 303
    with Session(engine) as s:
        assert resolve_api_token(s, token) is None
