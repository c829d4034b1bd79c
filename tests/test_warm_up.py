"""A web process warms up before it serves: its routes built, its templates compiled, the metrics read once.
On a database not migrated yet it still starts (``/readyz`` says what is wrong)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from miatari.app import create_app
from tests.conftest import make_settings
from web.templating import TEMPLATES_DIR, templates


def _started(settings_dir: Path, db_url: str, caplog: pytest.LogCaptureFixture) -> list[str]:
    app = create_app(make_settings(settings_dir, db_url, warm_up=True))
    with caplog.at_level(logging.INFO, logger="miatari"), TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
    return [r.getMessage() for r in caplog.records if r.name == "miatari"]


def test_warm_up_compiles_every_template_and_reads_the_metrics(tmp_path: Path, db_url: str,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    templates.env.cache.clear()  # type: ignore[union-attr]
    messages = _started(tmp_path, db_url, caplog)
    pages = sorted(p.name for p in TEMPLATES_DIR.glob("*.html"))
    warmed = [m for m in messages if m.startswith("web process warmed up")]
    assert len(warmed) == 1 and f"({len(pages)} templates compiled)" in warmed[0]
    cached = {key[1] for key in templates.env.cache}  # type: ignore[union-attr]
    assert set(pages) <= cached
    assert not [m for m in messages if "metrics not read" in m]


def test_warm_up_on_a_database_not_migrated_still_starts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    messages = _started(tmp_path, f"sqlite:///{tmp_path / 'empty.db'}", caplog)
    assert [m for m in messages if m == "metrics not read at start-up"]
    assert [m for m in messages if m.startswith("web process warmed up")]
