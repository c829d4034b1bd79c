"""Login, logout, cookies, CSRF, timeouts and the steps an account owes, through the real pages."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import pyotp
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from tests.conftest import TEST_PASSWORD, add_user, login
from triage.clock import frozen
from triage.models import AuditEntry, Role, User, WebSession

T0 = dt.datetime(2026, 4, 2, 8, 0, tzinfo=dt.UTC)


def _login_form(client: TestClient) -> str:
    client.get("/login")
    return client.cookies.get("miatari_login_csrf") or ""


def _post_login(client: TestClient, username: str, password: str = TEST_PASSWORD, totp: str = "",
                next_url: str = "/") -> Any:  # Starlette's test client: a response with .template and .context
    token = _login_form(client)
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token,
                                       "totp": totp, "next": next_url}, follow_redirects=False)


def _audit(engine: Engine, action: str) -> list[AuditEntry]:
    with Session(engine) as s:
        return list(s.exec(select(AuditEntry).where(AuditEntry.action == action).order_by(col(AuditEntry.id))))


def test_login_page_renders(client: TestClient) -> None:
    r = client.get("/login?next=/review")
    assert r.status_code == 200 and r.template.name == "login.html"
    assert r.context["next_url"] == "/review"
    assert client.get("/login?next=//evil.example").context["next_url"] == "/"
    assert client.get("/login?next=/\\evil.example").context["next_url"] == "/"


def test_anonymous_is_sent_to_login(client: TestClient) -> None:
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/"
    r = client.get("/", headers={"HX-Request": "true"}, follow_redirects=False)
    assert r.status_code == 401 and r.headers["HX-Redirect"] == "/login"


def test_login_sets_a_hardened_session_cookie(client: TestClient, engine: Engine) -> None:
    add_user(engine, "olga", Role.officer)
    r = _post_login(client, "olga", next_url="/account")
    assert r.status_code == 303 and r.headers["location"] == "/account"
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("miatari_session="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    home = client.get("/")
    assert home.status_code == 200 and home.template.name == "home.html" and home.context["user"].username == "olga"
    assert _audit(engine, "login")[-1].outcome == "ok"


def test_secure_cookie_when_configured(make_client: Callable[..., TestClient], engine: Engine) -> None:
    client = make_client(secure_cookies=True)
    client.base_url = "https://testserver"  # Secure cookies only travel over HTTPS.
    add_user(engine, "sam", Role.officer)
    r = _post_login(client, "sam")
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("miatari_session="))
    assert "Secure" in cookie and "HttpOnly" in cookie


def test_wrong_password_and_login_csrf(client: TestClient, engine: Engine) -> None:
    add_user(engine, "olga", Role.officer)
    r = _post_login(client, "olga", "not the password at all")
    assert r.status_code == 401 and r.template.name == "login.html" and "Wrong username" in r.context["error"]
    # A login form posted from elsewhere has no matching double-submit token.
    client.cookies.clear()
    r = client.post("/login", data={"username": "olga", "password": TEST_PASSWORD, "csrf_token": "forged"},
                    follow_redirects=False)
    assert r.status_code == 403
    assert _audit(engine, "login")[-1].detail["reason"] == "CSRF check failed"


def test_lockout_through_the_form_with_a_frozen_clock(client: TestClient, engine: Engine) -> None:
    add_user(engine, "lena", Role.officer)
    with frozen(T0) as clock:
        for _ in range(5):
            assert _post_login(client, "lena", "bad password guess 1").status_code == 401
        r = _post_login(client, "lena")
        assert r.status_code == 401 and "Too many failed logins" in r.context["error"]
        clock.advance(minutes=10, seconds=1)
        assert _post_login(client, "lena").status_code == 303


def test_forged_state_change_without_csrf_token_is_refused(client: TestClient, engine: Engine) -> None:
    add_user(engine, "olga", Role.officer)
    token = login(client, "olga")
    del client.headers["X-CSRF-Token"]
    r = client.post("/logout", follow_redirects=False)
    assert r.status_code == 403 and r.template.name == "error.html" and "CSRF" in r.context["message"]
    r = client.post("/logout", data={"csrf_token": "wrong"}, follow_redirects=False)
    assert r.status_code == 403
    denied = _audit(engine, "csrf")
    assert len(denied) == 2 and denied[0].outcome == "denied" and denied[0].detail["path"] == "/logout"
    # Still logged in: nothing changed.
    assert client.get("/").status_code == 200
    # The form field works, and so does the htmx header.
    r = client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303
    assert client.get("/", follow_redirects=False).status_code == 303


def test_csrf_header_from_hx_headers(client: TestClient, engine: Engine) -> None:
    add_user(engine, "olga", Role.officer)
    token = login(client, "olga")
    home = client.get("/")
    assert f'hx-headers=\'{{"X-CSRF-Token": "{token}"}}\'' in home.text
    r = client.post("/logout", headers={"HX-Request": "true", "X-CSRF-Token": token}, follow_redirects=False)
    assert r.status_code == 303


def test_logout_revokes_the_session_server_side(client: TestClient, engine: Engine) -> None:
    add_user(engine, "olga", Role.officer)
    login(client, "olga")
    cookie = client.cookies.get("miatari_session")
    client.post("/logout", follow_redirects=False)
    client.cookies.set("miatari_session", cookie)
    assert client.get("/", follow_redirects=False).status_code == 303
    with Session(engine) as s:
        assert s.exec(select(WebSession)).one().revoked_at is not None
    assert _audit(engine, "logout")[0].actor == "olga"


def test_idle_and_absolute_timeouts_through_the_app(make_client: Callable[..., TestClient], engine: Engine) -> None:
    client = make_client(session_idle_minutes=30, session_absolute_hours=12)
    add_user(engine, "ivan", Role.officer)
    with frozen(T0) as clock:
        login(client, "ivan")
        clock.advance(minutes=29)
        assert client.get("/", follow_redirects=False).status_code == 200
        clock.advance(minutes=31)
        assert client.get("/", follow_redirects=False).status_code == 303
        login(client, "ivan")
        for _ in range(23):  # every 29 minutes for 11 h 7 min
            clock.advance(minutes=29)
            assert client.get("/", follow_redirects=False).status_code == 200
        clock.advance(minutes=53)
        r = client.get("/", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_get_never_changes_state(client: TestClient, engine: Engine) -> None:
    add_user(engine, "olga", Role.officer)
    login(client, "olga")
    for path in ("/logout", "/account/password", "/account/tokens", "/notifications/read"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code in (200, 405), path
    assert client.get("/", follow_redirects=False).status_code == 200


def _force_password_change(engine: Engine, user_id: int) -> None:
    with Session(engine) as s:
        u = s.get_one(User, user_id)
        u.must_change_password = True
        s.add(u)
        s.commit()


def test_must_change_password_comes_before_anything_else(client: TestClient, engine: Engine) -> None:
    user = add_user(engine, "newbie", Role.officer)
    _force_password_change(engine, user.pk)
    r = _post_login(client, "newbie", next_url="/sightings")
    assert r.status_code == 303 and r.headers["location"] == "/account/password"
    m = re.search(r'"X-CSRF-Token": "([^"]+)"', client.get("/account/password").text)
    assert m is not None
    client.headers["X-CSRF-Token"] = m.group(1)
    for path in ("/", "/account", "/notifications"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/account/password", path
    r = client.get("/", headers={"HX-Request": "true"}, follow_redirects=False)
    assert r.headers["HX-Redirect"] == "/account/password"
    # The unread count poll on the forced page does not loop.
    assert client.get("/notifications/count").status_code == 200
    page = client.get("/account/password")
    assert page.template.name == "account_password.html" and page.context["forced"] is True
    bad = client.post("/account/password", data={"current_password": TEST_PASSWORD, "new_password": "password123",
                                                   "confirm_password": "password123"})
    assert bad.status_code == 422 and "at least 15" in bad.context["error"]
    bad = client.post("/account/password", data={"current_password": "nope", "new_password": "a fresh long phrase",
                                                   "confirm_password": "a fresh long phrase"})
    assert bad.status_code == 422 and "current password is wrong" in bad.context["error"]
    ok = client.post("/account/password", data={"current_password": TEST_PASSWORD,
                                                  "new_password": "a fresh long phrase",
                                                  "confirm_password": "a fresh long phrase"},
                     follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"].startswith("/account")
    assert client.get("/", follow_redirects=False).status_code == 200
    outcomes = [e.outcome for e in _audit(engine, "user.change_password")]
    assert outcomes == ["denied", "denied", "ok"]


def test_privileged_account_must_enrol_totp_when_required(make_client: Callable[..., TestClient],
                                                          engine: Engine) -> None:
    client = make_client(require_totp_for_privileged=True)
    add_user(engine, "boss", Role.manager)
    add_user(engine, "cop", Role.officer)
    r = _post_login(client, "boss")
    assert r.headers["location"] == "/account/totp"
    page = client.get("/account/totp")
    assert page.template.name == "account_totp.html" and page.context["required"] is True
    secret = page.context["secret"]
    assert page.context["uri"].startswith("otpauth://totp/Miatari:boss?secret=" + secret)
    assert secret in page.text
    m = re.search(r'"X-CSRF-Token": "([^"]+)"', page.text)
    assert m is not None
    client.headers["X-CSRF-Token"] = m.group(1)
    assert client.get("/", follow_redirects=False).headers["location"] == "/account/totp"
    wrong = client.post("/account/totp", data={"secret": secret, "code": "12345"})
    assert wrong.status_code == 422 and wrong.context["error"]
    with frozen() as clock:
        code = pyotp.TOTP(secret).at(clock.now())
        ok = client.post("/account/totp", data={"secret": secret, "code": code}, follow_redirects=False)
        assert ok.status_code == 303
        assert client.get("/", follow_redirects=False).status_code == 200
        # Next time the code is needed to log in, and the one used to enrol cannot be replayed.
        client.post("/logout", follow_redirects=False)
        del client.headers["X-CSRF-Token"]
        assert _post_login(client, "boss").status_code == 401
        assert _post_login(client, "boss", totp=code).status_code == 401
        clock.advance(seconds=30)
        assert _post_login(client, "boss", totp=pyotp.TOTP(secret).at(clock.now())).status_code == 303
    # An officer is not asked.
    other = make_client(require_totp_for_privileged=True)
    assert _post_login(other, "cop").headers["location"] == "/"


def test_account_page_and_tokens(client: TestClient, engine: Engine) -> None:
    add_user(engine, "olga", Role.officer)
    login(client, "olga")
    page = client.get("/account")
    assert page.template.name == "account.html" and page.context["tokens"] == []
    r = client.post("/account/tokens", data={"name": "my phone"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/account"  # post/redirect/get
    shown = client.get("/account")
    (told,) = shown.context["flashes"]
    token = told.secret
    assert token.startswith("mia_") and f'<code class="one-time" id="new-token">{token}</code>' in shown.text
    # Shown once: a reload neither shows it again nor creates another token.
    again = client.get("/account")
    assert again.context["flashes"] == [] and token not in again.text and len(again.context["tokens"]) == 1
    api = client.get("/api/me", headers={"Authorization": f"Bearer {token}"})
    assert api.status_code == 200 and api.json()["username"] == "olga"
    token_id = client.get("/account").context["tokens"][0].id
    r = client.post(f"/account/tokens/{token_id}/revoke", follow_redirects=False)
    assert r.status_code == 303
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_https_requests_get_secure_cookies_even_without_the_setting(client: TestClient, engine: Engine) -> None:
    client.base_url = "https://testserver"
    add_user(engine, "sam", Role.officer)
    r = _post_login(client, "sam")
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("miatari_session="))
    assert "Secure" in cookie


def test_a_new_login_ends_the_session_the_browser_had(client: TestClient, engine: Engine) -> None:
    add_user(engine, "olga", Role.officer)
    add_user(engine, "ivan", Role.officer)
    login(client, "olga")
    old_cookie = client.cookies.get("miatari_session")
    del client.headers["X-CSRF-Token"]
    assert _post_login(client, "ivan").status_code == 303
    assert client.get("/").context["user"].username == "ivan"
    with Session(engine) as s:
        sessions = s.exec(select(WebSession).order_by(col(WebSession.id))).all()
        assert sessions[0].revoked_at is not None and sessions[1].revoked_at is None
    client.cookies.set("miatari_session", old_cookie)
    assert client.get("/", follow_redirects=False).status_code == 303


def test_dead_credentials_and_anonymous_changes_are_audited(client: TestClient, engine: Engine) -> None:
    client.get("/")  # an anonymous page view is not worth an entry
    assert _audit(engine, "auth") == []
    client.post("/logout", follow_redirects=False)
    client.cookies.set("miatari_session", "forged")
    client.get("/", follow_redirects=False)
    client.cookies.clear()
    client.get("/api/me", headers={"Authorization": "Bearer mia_forged"})
    reasons = [e.detail["reason"] for e in _audit(engine, "auth")]
    assert reasons == ["not logged in"] + ["unknown, revoked or expired credential"] * 2
    assert all(e.outcome == "denied" for e in _audit(engine, "auth"))


def test_production_forces_secure_cookies_and_sends_hsts(make_client, engine: Engine) -> None:
    add_user(engine, "pia", Role.officer)
    client = make_client(environment="production", secure_cookies=False)
    client.base_url = "https://testserver"  # a browser sends Secure cookies over HTTPS only
    assert client.app.state.settings.secure_cookies is True
    page = client.get("/login")
    assert page.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
    assert "secure" in page.headers["set-cookie"].lower()
    token = page.cookies.get("miatari_login_csrf")
    r = client.post("/login", data={"username": "pia", "password": TEST_PASSWORD, "csrf_token": token},
                    follow_redirects=False)
    session_cookie = [c for c in r.headers.get_list("set-cookie") if c.startswith("miatari_session=")]
    assert r.status_code == 303 and session_cookie and "secure" in session_cookie[0].lower()
    # Development over plain HTTP keeps neither.
    dev = make_client()
    assert "strict-transport-security" not in dev.get("/login").headers
