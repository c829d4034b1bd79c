"""A live server (uvicorn in a thread, on 127.0.0.1 and a free port) and a real Chromium through Playwright.

The fixtures are registered for the whole suite by ``tests/conftest.py``.
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


@dataclass
class Running:
    """A started server and how to stop it."""

    live: LiveServer
    server: Any
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_live_server(settings: Settings) -> Running:
    """Start the app for real on a free port and wait until it answers."""
    import uvicorn

    from miatari.app import create_app

    app = create_app(settings)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name=f"live-server-{port}", daemon=True)
    thread.start()
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
    return Running(LiveServer(url, settings, app), server, thread)


@pytest.fixture
def live_server(tmp_path: Path, db_url: str) -> Iterator[Callable[..., LiveServer]]:
    """Start the app for real (call with setting overrides); stopped at the end of the test."""
    started: list[Running] = []

    def start(**overrides: Any) -> LiveServer:
        started.append(start_live_server(make_settings(tmp_path, db_url, **overrides)))
        return started[-1].live

    yield start
    for running in started:
        running.stop()


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


def login_page(browser: Any, server: LiveServer, username: str, password: str = TEST_PASSWORD,
               **context_options: Any) -> Any:
    """A new browser context (e.g. ``viewport=...``, ``has_touch=True``) logged in through the real form; its page."""
    context = browser.new_context(base_url=server.url, **context_options)
    page = context.new_page()
    page.goto("/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda u: "/login" not in u)
    return page


@pytest.fixture
def browser_login(browser: Any) -> Iterator[Callable[..., Any]]:
    """A fresh browser context logged in as a user through the real form; returns its page."""
    pages: list[Any] = []

    def login(server: LiveServer, username: str, password: str = TEST_PASSWORD, **context_options: Any) -> Any:
        pages.append(login_page(browser, server, username, password, **context_options))
        return pages[-1]

    yield login
    for p in pages:
        p.context.close()
