"""One live server per module for the end-to-end stories (the matching worker inside it, the real model)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from tests.conftest import USE_POSTGRES, make_settings
from tests.live import LiveServer, start_live_server
from triage.db import make_engine

# A short undo window keeps the stories quick; the worker looks for work twice a second.
STORY_SETTINGS: dict[str, Any] = {"embedded_worker": True, "worker_poll_seconds": 0.5, "verdict_undo_seconds": 2.0}


@pytest.fixture(scope="module")
def story_db(db_templates: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = db_templates.new(tmp_path_factory.mktemp("story-db") / "story.db")
    yield url
    if USE_POSTGRES:
        db_templates.drop(url)


@pytest.fixture(scope="module")
def story_server(story_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The app for real, with its embedded matching worker, shared by the tests of one module."""
    running = start_live_server(make_settings(tmp_path_factory.mktemp("story"), story_db, **STORY_SETTINGS))
    yield running.live
    running.stop()


@pytest.fixture(scope="module")
def story_engine(story_db: str) -> Iterator[Engine]:
    engine = make_engine(story_db)
    yield engine
    engine.dispose()


@pytest.fixture(autouse=True)
def _close_contexts() -> Iterator[None]:
    from tests.e2e import helpers

    yield
    while helpers.OPEN_CONTEXTS:
        helpers.OPEN_CONTEXTS.pop().close()
