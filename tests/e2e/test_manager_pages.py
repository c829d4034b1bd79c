"""The manager's daily loop in a real Chromium (desktop 1366×900): home, disputes and escalation, flags,
sighting and subject pages, the watchlist, metrics; post/redirect/get and confirmations without script."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlmodel import Session, func, select

from tests.conftest import add_user
from tests.e2e.pages_world import World, chromium, log_in, running_world, screenshot
from triage.models import AuditEntry, Candidate, Role, Subject, User

pytestmark = pytest.mark.browser

LOADED = "() => Array.from(document.querySelectorAll('{}')).every(i => i.complete && i.naturalWidth > 0)"


@pytest.fixture(scope="module")
def world(db_templates: Any) -> Iterator[World]:
    with running_world(db_templates) as w:
        yield w


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@pytest.fixture
def boss(world: World, browser: Any) -> Iterator[Any]:
    page = log_in(browser, world, "boss")
    yield page
    page.context.close()


def _audit_count(world: World, action: str) -> int:
    with Session(world.engine) as s:
        return int(s.exec(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == action)).one())


def _qualify(world: World, username: str, qualification: str) -> None:
    with Session(world.engine) as s:
        user = s.exec(select(User).where(User.username == username)).one()
        user.qualification = qualification
        s.add(user)
        s.commit()


def test_manager_home_says_what_needs_attention(world: World, boss: Any) -> None:
    boss.goto("/")
    # The world: one flag raised, one dispute (or, once escalated, in escalation), cara on probation.
    with Session(world.engine) as s:
        disputed = s.exec(select(func.count()).select_from(Candidate).where(Candidate.status == "disputed")).one()
        escalated = s.exec(select(func.count()).select_from(Candidate).where(Candidate.current_round > 1,
                                                                              Candidate.status == "open")).one()
    assert disputed + escalated == 1
    assert boss.inner_text("#home-queue .n") == str(2 * escalated)
    assert "review slots waiting" in boss.inner_text("#home-queue")
    assert boss.inner_text("#home-disputes .n") == str(disputed)
    assert f"{escalated} in escalation" in boss.inner_text("#home-disputes")
    assert boss.inner_text("#home-flags .n") == "1" and "1 to acknowledge" in boss.inner_text("#home-flags")
    recognizers = boss.inner_text("#home-recognizers")
    assert recognizers.startswith("0\nrecognizers suspended") and "2 on probation: cara, rico" in recognizers
    assert boss.inner_text("#home-imports .n") == "0"
    screenshot(boss, "manager-home")
    # Another recognizer's work shows at once: figures come from the records, not from counters.
    _qualify(world, "cara", "suspended")
    boss.reload()
    assert boss.inner_text("#home-recognizers .n") == "1" and "cara" in boss.inner_text("#home-recognizers")
    _qualify(world, "cara", "probation")


def test_dispute_side_by_side_then_escalate_with_confirmation(world: World, boss: Any) -> None:
    did = world.ids["disputed"]
    boss.goto("/disputes")
    card = boss.locator(f"#dispute-{did}")
    boss.wait_for_function(LOADED.format(f"#dispute-{did} img.dispute-eyes"))
    crops = card.locator("img.dispute-eyes")
    a, b = crops.nth(0).bounding_box(), crops.nth(1).bounding_box()
    assert a["y"] == b["y"] and a["width"] == b["width"] and a["height"] == b["height"] and a["x"] < b["x"]
    # Who answered what, and the way to the sighting.
    rows = card.locator("table.who-said tbody tr").all_inner_texts()
    assert any("ann" in r and "same" in r for r in rows) and any("bob" in r and "different" in r for r in rows)
    assert card.locator(f"a[href='/sightings/{world.ids['dispute_sighting']}']").count() == 1
    # cara and rico have never been shown it: with rico suspended, one is too few, and the page says so.
    _qualify(world, "rico", "suspended")
    boss.reload()
    button = card.locator("button.escalate")
    assert button.is_disabled() and card.locator("a.escalate").count() == 0
    why = card.locator(".why").inner_text()
    assert "needs 2 recognizers who have never been shown this candidate; there is 1" in why
    assert button.get_attribute("aria-describedby") == card.locator(".why").get_attribute("id")
    assert boss.eval_on_selector(f"#dispute-{did} button.escalate", "e => getComputedStyle(e).cursor") == "not-allowed"
    screenshot(boss, "manager-dispute-cannot-escalate")
    add_user(world.engine, "dan", Role.recognizer)
    _qualify(world, "rico", "probation")
    boss.reload()
    assert card.locator("button.escalate").count() == 0 and card.locator(".why").count() == 0
    screenshot(boss, "manager-dispute")
    card.locator("a.escalate").click()
    boss.wait_for_url(f"**/disputes/{did}/escalate")
    assert "Escalate candidate" in boss.inner_text("h1")
    boss.click("#confirm-escalate")
    boss.wait_for_url(lambda u: u.endswith(f"/disputes?escalated={did}"))
    assert f"Candidate #{did} is in a new round" in boss.inner_text("main")
    assert boss.locator(f"#in-escalation #escalated-{did}").count() == 1
    assert boss.locator(f"#dispute-{did}").count() == 0
    # A reload re-posts nothing: one escalation on record, round 2.
    boss.reload()
    assert _audit_count(world, "review.escalate") == 1
    with Session(world.engine) as s:
        assert s.get(Candidate, did).current_round == 2  # type: ignore[union-attr]


def test_flag_page(world: World, boss: Any) -> None:
    boss.goto(f"/flags/{world.ids['flag']}")
    boss.wait_for_function(LOADED.format("img.eyes"))
    assert "confirm identity before any action" in boss.inner_text(".lead-warning").lower()
    screenshot(boss, "manager-flag")


def test_sighting_page_ranks_candidates_for_managers_only(world: World, browser: Any, boss: Any) -> None:
    sid = world.ids["flag_sighting"]
    boss.goto(f"/sightings/{sid}")
    rows = boss.locator("#ranked-candidates tbody tr").all_inner_texts()
    assert len(rows) == 2
    assert rows[0].startswith("1\t1\tEileen Collins") and "arrest flag" in rows[0]
    assert rows[1].startswith("1\t2\tGrace Hopper") and "cleared" in rows[1]
    # The officer who sent it sees the outcome, not who the matcher proposed.
    officer = log_in(browser, world, "olive")
    officer.goto(f"/sightings/{sid}")
    assert officer.locator("#ranked-candidates").count() == 0 and "Grace Hopper" not in officer.content()
    officer.context.close()
    # A recognizer never sees it (not even their own sighting's, as an officer who also reviews).
    rec = log_in(browser, world, "ann")
    assert rec.goto(f"/sightings/{sid}").status == 404
    rec.context.close()


def test_subject_history_and_watchlist_thumbnails(world: World, boss: Any) -> None:
    boss.goto("/watchlist")
    boss.wait_for_function(LOADED.format("img.thumb"))
    assert boss.locator("img.thumb").count() == 2
    boss.goto(f"/watchlist/{world.ids['subject_hopper']}")
    candidates = boss.locator("#history-candidates tbody tr").all_inner_texts()
    assert len(candidates) == 2 and any("cleared" in r for r in candidates)
    assert any("round 2" in r or "disputed" in r for r in candidates)
    sightings = boss.locator("#history-sightings tbody tr").all_inner_texts()
    assert len(sightings) == 2 and all("olive" in r for r in sightings)
    assert "No flag raised" in boss.inner_text("#history-flags")
    boss.goto(f"/watchlist/{world.ids['subject_collins']}")
    assert boss.locator(f"#history-flags a[href='/flags/{world.ids['flag']}']").count() == 1


def test_closing_a_subject_asks_first_even_without_script(world: World, browser: Any) -> None:
    with Session(world.engine) as s:
        subject = Subject(name="Test Closing", case_ref="W-CLOSE", priority=3)
        s.add(subject)
        s.commit()
        sid = subject.id
    page = log_in(browser, world, "boss", java_script_enabled=False)
    page.goto(f"/watchlist/{sid}")
    page.select_option("select[name=status]", "withdrawn")
    page.fill("input[name=reason]", "warrant withdrawn")
    page.click("#close-subject")
    page.wait_for_url(lambda u: f"/watchlist/{sid}/close?" in u)
    assert "Close Test Closing as withdrawn?" in page.inner_text("h1")
    with Session(world.engine) as s:
        assert s.get(Subject, sid).status == "active"  # type: ignore[union-attr]
    page.click("#confirm-close")
    page.wait_for_url(lambda u: u.endswith(f"/watchlist/{sid}?closed=1"))
    assert "Closed as withdrawn" in page.inner_text("#closed-notice")
    with Session(world.engine) as s:
        assert s.get(Subject, sid).status == "withdrawn"  # type: ignore[union-attr]
    page.context.close()


def test_one_time_password_shown_once_after_redirect_and_disable_asks(world: World, browser: Any) -> None:
    page = log_in(browser, world, "root", java_script_enabled=False)
    page.goto("/admin/users")
    page.fill("input[name=username]", "new.officer")
    page.check("input[name=roles][value=officer]")
    page.click("form[action='/admin/users'] button[type=submit]")
    page.wait_for_url("**/admin/users/*")
    password = page.inner_text("#one-time-password")
    assert len(password) >= 15
    # Reloading the page after the redirect neither shows the password again nor creates another account.
    page.reload()
    assert page.locator("#one-time-password").count() == 0 and password not in page.content()
    with Session(world.engine) as s:
        assert len(s.exec(select(User).where(User.username == "new.officer")).all()) == 1
    page.click("#disable")
    assert "Disable new.officer?" in page.inner_text("h1")
    page.click("#confirm-disable")
    page.wait_for_url("**/admin/users/*")
    assert "Account disabled" in page.inner_text("main")
    with Session(world.engine) as s:
        assert not s.exec(select(User).where(User.username == "new.officer")).one().is_active
    page.context.close()


def test_metrics_charts_full_width_with_axes_and_kappa_in_words(world: World, boss: Any) -> None:
    boss.goto("/stats")
    reading = boss.inner_text("#kappa-reading")
    assert reading.startswith("Kappa ") or reading.startswith("Not enough")
    charts = boss.locator("svg.chart")
    assert charts.count() == 7
    card = boss.locator("section.card").nth(0).bounding_box()
    for i in range(charts.count()):
        box = charts.nth(i).bounding_box()
        if box is None:
            continue
        assert box["width"] >= card["width"] - 48, (i, box, card)  # full width of its card
    assert boss.locator("svg.chart.trend polyline.line, svg.chart.trend circle.dot").count() >= 1
    assert boss.locator("svg.chart text.tick").count() >= 7 * 5  # every chart has a value axis with ticks
    screenshot(boss, "manager-metrics")
