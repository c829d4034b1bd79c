"""A live server (uvicorn in a thread, on 127.0.0.1 and a free port) and a real Chromium through Playwright.

Browser tests skip with a reason when Chromium or Playwright is missing, and
fail instead where ``MIATARI_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_PASSWORD, make_settings
from triage.config import Settings

CHROMIUM = Path(os.environ.get("MIATARI_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
STARTUP_SECONDS = 20


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    settings: Settings
    app: Any


@pytest.fixture
def live_server(tmp_path: Path, db_url: str) -> Iterator[Callable[..., LiveServer]]:
    """Start the app for real (call with setting overrides); stopped at the end of the test."""
    import uvicorn

    from miatari.app import create_app

    started: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**overrides: Any) -> LiveServer:
        settings = make_settings(tmp_path, db_url, **overrides)
        app = create_app(settings)
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                               lifespan="on"))
        thread = threading.Thread(target=server.run, name=f"live-server-{port}", daemon=True)
        thread.start()
        started.append((server, thread))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code < 500:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("the live server did not start")
        return LiveServer(url, settings, app)

    yield start
    for server, thread in started:
        server.should_exit = True
        thread.join(timeout=10)


def _browser_unavailable(reason: str) -> None:
    if os.environ.get("MIATARI_REQUIRE_BROWSER") == "1":
        pytest.fail(reason + "; a browser is mandatory here (MIATARI_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """A headless Chromium (the system one: nothing is downloaded)."""
    if not CHROMIUM.exists():
        _browser_unavailable(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _browser_unavailable("the playwright package is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def browser_login(browser: Any) -> Iterator[Callable[[LiveServer, str], Any]]:
    """A fresh browser context logged in as a user through the real form; returns its page."""
    contexts: list[Any] = []

    def login(server: LiveServer, username: str, password: str = TEST_PASSWORD) -> Any:
        context = browser.new_context(base_url=server.url)
        contexts.append(context)
        page = context.new_page()
        page.goto("/login")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_url(lambda u: "/login" not in u)
        return page

    yield login
    for c in contexts:
        c.close()
