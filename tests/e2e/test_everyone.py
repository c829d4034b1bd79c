"""Every role in a real Chromium: no page scrolls sideways on a 390 px phone, a skip link and a visible
focus ring, and login messages that say what happened and what to do."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyotp
import pytest
from sqlmodel import Session, select

from tests.conftest import TEST_PASSWORD, add_user
from tests.e2e.pages_world import DESKTOP, World, chromium, log_in, no_sideways_scroll, running_world
from triage.models import Role, User
from triage.security import set_totp_secret

pytestmark = pytest.mark.browser

PHONE_WIDTH = 390
# The main pages of each role; {names} are the world's records.
PAGES = {
    "olive": ["/", "/sightings", "/sightings/new", "/sightings/{flag_sighting}", "/flags", "/flags/{flag}",
              "/account", "/notifications"],
    "ann": ["/", "/review", "/account"],
    "boss": ["/", "/disputes", "/flags", "/flags/{flag}", "/stats", "/watchlist", "/watchlist/{subject_hopper}",
             "/watchlist/new", "/watchlist/import", "/sightings/{dispute_sighting}", "/sightings?everyone=true",
             "/recognizers", "/audit", "/disputes/{disputed}/escalate"],
    "root": ["/admin/users", "/admin/users/{officer}", "/admin/reindex", "/admin/users/{officer}/disable"],
}
CASES = [(who, path) for who, paths in PAGES.items() for path in paths]


@pytest.fixture(scope="module")
def world(db_templates: Any) -> Iterator[World]:
    # Lockouts here are per username and address only: the address as a whole is never throttled.
    with running_world(db_templates, login_max_failures=3, login_max_failures_per_address=1000) as w:
        yield w


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def phones(world: World, browser: Any) -> Iterator[dict[str, Any]]:
    """One logged-in phone per person, reused by the page cases."""
    pages: dict[str, Any] = {}
    yield pages
    for page in pages.values():
        page.context.close()


@pytest.mark.parametrize(("who", "path"), CASES, ids=[f"{w}:{p}" for w, p in CASES])
def test_no_page_scrolls_sideways_on_a_phone(world: World, browser: Any, phones: dict[str, Any], who: str,
                                             path: str) -> None:
    if who not in phones:
        phones[who] = log_in(browser, world, who, phone=True)
    page = phones[who]
    response = page.goto(path.format(**world.ids))
    assert response is not None and response.status == 200, (path, response and response.status)
    width = no_sideways_scroll(page)
    assert width <= PHONE_WIDTH, f"{path} is {width} px wide for {who}"
    assert page.locator("a.skip-link[href='#main']").count() == 1


def test_login_page_fits_a_phone(world: World, browser: Any) -> None:
    context = browser.new_context(base_url=world.url, viewport={"width": PHONE_WIDTH, "height": 844},
                                  is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto("/login")
    assert no_sideways_scroll(page) <= PHONE_WIDTH
    box = page.locator("button[type=submit]").bounding_box()
    assert box is not None and box["height"] >= 44
    context.close()


def test_skip_link_and_visible_focus(world: World, browser: Any) -> None:
    page = log_in(browser, world, "boss")
    page.goto("/disputes")
    skip = page.locator("a.skip-link")
    hidden = skip.bounding_box()
    assert hidden is not None and hidden["y"] + hidden["height"] <= 0  # out of sight until focused
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    shown = skip.bounding_box()
    assert shown is not None and shown["y"] >= 0
    ring = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert ring != "none"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main" and page.url.endswith("#main")
    # The next stop after the skip is inside the content, and it shows where the focus is too.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.closest('main') !== null")
    style = page.evaluate("(() => { const s = getComputedStyle(document.activeElement);"
                          " return [s.outlineStyle, s.outlineWidth]; })()")
    assert style[0] != "none" and style[1] != "0px", style
    page.context.close()


def _login_form(browser: Any, world: World, username: str, password: str, code: str = "",
                **options: Any) -> Any:
    context = browser.new_context(base_url=world.url, **{**DESKTOP, **options})
    page = context.new_page()
    page.goto("/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    if code:
        page.fill("input[name=totp]", code)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    return page


def test_missing_one_time_code_is_not_a_wrong_password(world: World, browser: Any) -> None:
    add_user(world.engine, "tina", Role.manager)
    secret = pyotp.random_base32()
    with Session(world.engine) as s:
        user = s.exec(select(User).where(User.username == "tina")).one()
        set_totp_secret(user, world.settings, secret)
        s.add(user)
        s.commit()
    page = _login_form(browser, world, "tina", TEST_PASSWORD)
    message = page.inner_text("#login-error")
    assert "one-time code" in message and "Wrong" not in message and "authenticator app" in message
    page.context.close()
    page = _login_form(browser, world, "tina", "not the password")
    assert page.inner_text("#login-error") == "Wrong username or password."
    page.context.close()
    page = _login_form(browser, world, "tina", TEST_PASSWORD, pyotp.TOTP(secret).now())
    assert "/login" not in page.url
    page.context.close()


def test_lockout_says_until_when_in_local_time(world: World, browser: Any) -> None:
    add_user(world.engine, "lars", Role.officer)
    for _ in range(3):
        page = _login_form(browser, world, "lars", "wrong password", timezone_id="Europe/Paris")
        last = page.inner_text("#login-error")
        page.context.close()
    assert "refused until" in last
    page = _login_form(browser, world, "lars", TEST_PASSWORD, timezone_id="Europe/Paris")
    message = page.inner_text("#login-error")
    assert "refused until" in message and "minute" in message and "Wrong" not in message
    when = page.locator("#login-error time")
    assert "UTC" in (when.get_attribute("title") or "") and "UTC" not in when.inner_text()
    assert "GMT+1" in when.inner_text() or "CET" in when.inner_text()
    assert "/login" in page.url
    page.context.close()
