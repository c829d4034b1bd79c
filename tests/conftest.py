"""Test factories: a fresh app on a fresh, migrated database per test.

The database is SQLite by default; ``MIATARI_TEST_DB=postgres`` runs the same
tests on PostgreSQL (``MIATARI_TEST_PG_URL``, default the local ``test``
database), each test in a database of its own copied from a migrated template.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlmodel import Session

from triage import migrate
from triage.config import Settings
from triage.db import make_engine
from triage.models import Role, User
from triage.security import create_user

ROOT = Path(__file__).resolve().parent.parent
TEST_PASSWORD = "correct horse battery staple 42"
PG_ADMIN_URL = os.environ.get("MIATARI_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
USE_POSTGRES = os.environ.get("MIATARI_TEST_DB", "sqlite") == "postgres"


def faces_dir() -> Path:
    return Path(os.environ.get("MIATARI_FACES_DIR", ROOT.parent / "shared" / "faces"))


def require_faces() -> Path:
    """The real face photos, or a skip (a failure where MIATARI_REQUIRE_FACES=1, as in CI)."""
    path = faces_dir()
    if not (path / "frmdb" / "manifest.csv").exists():
        reason = f"real face photos not found at {path} (set MIATARI_FACES_DIR)"
        if os.environ.get("MIATARI_REQUIRE_FACES") == "1":
            pytest.fail(reason + "; they are mandatory here (MIATARI_REQUIRE_FACES=1)")
        pytest.skip(reason)
    return path


# Databases
class _SqliteTemplates:
    def __init__(self, root: Path) -> None:
        self.template = root / "template.db"
        # Closing the last connection checkpoints the WAL into the file.
        migrate.upgrade(f"sqlite:///{self.template}")

    def new(self, path: Path) -> str:
        shutil.copyfile(self.template, path)
        return f"sqlite:///{path}"


class _PgTemplates:
    def __init__(self) -> None:
        self.admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        self.template = f"miatari_tmpl_{uuid.uuid4().hex[:8]}"
        with self.admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{self.template}"'))
        url = self._url(self.template)
        migrate.upgrade(url)
        self.created: list[str] = [self.template]

    def _url(self, name: str) -> str:
        base = PG_ADMIN_URL.rsplit("/", 1)[0]
        return f"{base}/{name}"

    def new(self, _path: Path) -> str:
        name = f"miatari_t_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
        self.created.append(name)
        return self._url(name)

    def drop(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with self.admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        for name in self.created:
            with self.admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def db_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if USE_POSTGRES:
        t = _PgTemplates()
        yield t
        t.close()
    else:
        yield _SqliteTemplates(tmp_path_factory.mktemp("dbtemplate"))


@pytest.fixture
def db_url(db_templates: Any, tmp_path: Path) -> Iterator[str]:
    url = db_templates.new(tmp_path / "test.db")
    yield url
    if USE_POSTGRES:
        db_templates.drop(url)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    e = make_engine(db_url)
    yield e
    e.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as s:
        yield s


def make_settings(tmp_path: Path, db_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "database_url": db_url,
        "secret_key": "t" * 40,
        "embedded_worker": False,
        # Each test's app starts at once; the warm-up has its own test (tests/test_warm_up.py).
        "warm_up": False,
        # Known-answer tasks are served at random; tests that are about them set a share themselves.
        "known_answer_share": 0.0,
        "probation_known_answer_share": 0.0,
        # Verdicts count at once; tests of the undo window set it themselves.
        "verdict_undo_seconds": 0.0,
        # Metrics as of each view; tests of the cache set it themselves.
        "metrics_cache_seconds": 0.0,
        "models_dir": Path(os.environ.get("MIATARI_TEST_MODELS_DIR", ROOT / "data" / "models")),
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(tmp_path, db_url)


@pytest.fixture
def make_client(tmp_path: Path, db_url: str) -> Iterator[Callable[..., TestClient]]:
    """Build a fresh app (and client) on this test's database, with setting overrides."""
    from miatari.app import create_app

    clients: list[TestClient] = []

    def factory(**overrides: Any) -> TestClient:
        app = create_app(make_settings(tmp_path, db_url, **overrides))
        client = TestClient(app, base_url="http://testserver")
        client.__enter__()
        clients.append(client)
        return client

    yield factory
    for c in clients:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def add_user(engine: Engine, username: str, *roles: Role | str, password: str = TEST_PASSWORD) -> User:
    with Session(engine, expire_on_commit=False) as s:
        user = create_user(s, username, password, list(roles) or [Role.officer])
        s.commit()
        return user


def app_of(client: TestClient) -> FastAPI:
    """The application a test client drives (its ``state`` holds the settings and the image store)."""
    assert isinstance(client.app, FastAPI)
    return client.app


def login(client: TestClient, username: str, password: str = TEST_PASSWORD) -> str:
    """Log in through the real form; return the session's CSRF token."""
    page = client.get("/login")
    token = page.cookies.get("miatari_login_csrf") or client.cookies.get("miatari_login_csrf")
    r = client.post("/login", data={"username": username, "password": password, "csrf_token": token},
                    follow_redirects=False)
    assert r.status_code == 303, r.text
    home = client.get("/")
    import re

    m = re.search(r'"X-CSRF-Token": "([^"]+)"', home.text)
    assert m, "no CSRF token on the page"
    client.headers["X-CSRF-Token"] = m.group(1)
    return m.group(1)


@pytest.fixture
def user_factory(engine: Engine) -> Callable[..., User]:
    counter = {"n": 0}

    def factory(*roles: Role | str, username: str | None = None) -> User:
        counter["n"] += 1
        return add_user(engine, username or f"user{counter['n']}", *roles)

    return factory


# The face model: loaded once per test session (10-20 s), shared by every test that needs it.
@pytest.fixture(scope="session")
def face_pipeline() -> Any:
    from matcher import ensure_models, get_pipeline

    home = Path(os.environ.get("MIATARI_TEST_MODELS_DIR", ROOT / "data" / "models")).resolve()
    ensure_models(home)
    return get_pipeline(models_home=home)


# The live server and the browser, for tests/web and tests/e2e alike (tests.live uses the factories above).
from tests.live import browser, browser_login, live_server  # noqa: E402, F401
