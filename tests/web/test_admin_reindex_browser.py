"""The Face model page in a real browser: the progress polls by itself and stops once the gallery has switched."""

from __future__ import annotations

import pytest
from sqlmodel import Session

from miatari.registry import worker_registry
from tests import factories
from tests.conftest import add_user
from triage import services
from triage.gallery import active_model_id
from triage.models import Role
from triage.worker import run_one

pytestmark = pytest.mark.browser


def test_the_page_follows_a_run_to_the_switch(live_server, browser_login, engine, settings) -> None:
    add_user(engine, "root", Role.admin)
    with Session(engine) as s:
        # One reference photo embedded by dlib (a generated image: no face to find again, and too
        # small to be searched, so it does not hold the switch back).
        factories.make_subject(s, factories.image_store(settings))
        s.commit()
    server = live_server(face_model="faceres")  # not the gallery's model: a run is queued at start-up
    page = browser_login(server, "root")
    page.goto("/admin/reindex")
    assert page.locator("#reindex-progress").count() == 1
    assert "Re-embedding" in page.locator("#reindex-status").inner_text()
    # A worker takes the job; with no reference photo the gallery switches at once.
    svc = services.build(engine, server.settings, server.app.state.store)
    try:
        assert run_one(svc, "w", worker_registry()) is not None
    finally:
        services.stop(svc)
    with Session(engine) as s:
        switched_to = active_model_id(s)
    assert switched_to.startswith("faceres@")
    # The polled fragment (every 2 s) shows the switch without a reload, and polling stops.
    page.wait_for_selector("#reindex-progress", state="detached", timeout=15_000)
    status = page.locator("#reindex-status")
    assert switched_to in status.inner_text() and "Every process searches with the configured model" in \
        status.inner_text()
    assert status.get_attribute("hx-get") is None
