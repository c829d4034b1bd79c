"""Structured logs: one JSON line per request and per job, and no secret or face data in any line."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator

import pytest
from sqlmodel import Session, select

from miatari.registry import worker_registry
from tests.conftest import TEST_PASSWORD, add_user, login
from tests.factories import image_store, make_candidate
from tests.triage.test_sightings import jpeg
from triage import review
from triage.logging_json import JsonFormatter, new_request_id
from triage.models import Role, SightingPhoto, User
from triage.security import SESSION_COOKIE, create_api_token
from triage.services import Services
from triage.worker import run_one


@pytest.fixture
def log_lines() -> Iterator[list[str]]:
    """Everything any logger writes meanwhile, formatted as it is in production."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    lines: list[str] = []
    yield lines
    root.removeHandler(handler)
    root.setLevel(old_level)


def _flush(lines: list[str]) -> list[dict]:  # type: ignore[type-arg]
    handler = next(h for h in logging.getLogger().handlers if isinstance(h.formatter, JsonFormatter))
    text = handler.stream.getvalue()  # type: ignore[attr-defined]
    lines[:] = text.splitlines()
    return [json.loads(line) for line in lines]


def test_login_and_upload_log_one_json_line_per_request_and_nothing_secret(make_client, engine,
                                                                            log_lines) -> None:
    client = make_client()
    add_user(engine, "officer1", Role.officer)
    csrf = login(client, "officer1")
    photo = jpeg((200, 150))
    r = client.post("/api/sightings", files=[("photos", ("a.jpg", photo, "image/jpeg"))],
                    data={"location_text": "Umeda"}, headers={"X-Request-ID": "scan-42.a"})
    assert r.status_code == 202 and r.headers["X-Request-ID"] == "scan-42.a"
    sighting_id = r.json()["id"]
    # An API token, used once; a forged request id is replaced by one of ours.
    with Session(engine) as s:
        user = s.exec(select(User).where(User.username == "officer1")).one()
        api_token, _ = create_api_token(s, user, "phone")
        s.commit()
        uid = user.id
        sha = s.exec(select(SightingPhoto.image_sha256)).first()
    bearer = client.get(f"/api/sightings/{sighting_id}", headers={"Authorization": f"Bearer {api_token}",
                                                                  "X-Request-ID": "bad id\nwith newline"})
    assert bearer.status_code == 200
    assert bearer.headers["X-Request-ID"] != "bad id\nwith newline" and len(bearer.headers["X-Request-ID"]) == 32

    # The server's lines (the test's own HTTP client logs its requests too, on "httpx").
    records = [x for x in _flush(log_lines) if not x["logger"].startswith(("httpx", "httpcore"))]
    requests = [x for x in records if x["logger"] == "miatari.access"]
    by_route = {(x["method"], x["route"]): x for x in requests}
    login_line = by_route[("POST", "/login")]
    assert login_line["status"] == 303 and login_line["user_id"] is None
    upload = by_route[("POST", "/api/sightings")]
    assert upload["status"] == 202 and upload["user_id"] == uid and upload["request_id"] == "scan-42.a"
    assert isinstance(upload["duration_ms"], float) and upload["duration_ms"] >= 0
    status = by_route[("GET", "/api/sightings/{sighting_id}")]
    assert status["request_id"] == bearer.headers["X-Request-ID"] and status["user_id"] == uid
    assert len(requests) == len({x["request_id"] for x in requests})  # one line per request

    text = "\n".join(json.dumps(x) for x in records)
    cookie = client.cookies.get(SESSION_COOKIE)
    assert cookie and cookie not in text
    for secret in (TEST_PASSWORD, csrf, api_token, sha, base64.b64encode(photo[:60]).decode(),
                   f"/api/sightings/{sighting_id}"):
        assert secret not in text, secret
    assert "Umeda" not in text  # what the officer wrote stays in the database


def test_each_job_run_is_one_json_line(engine, settings, user_factory, log_lines, tmp_path, db_url) -> None:
    from tests.conftest import make_settings

    officer = user_factory(Role.officer)
    user_factory(Role.manager)
    ann, bob = user_factory(Role.recognizer), user_factory(Role.recognizer)
    with Session(engine, expire_on_commit=False) as s:
        make_candidate(s, image_store(settings), settings, officer.id)
        s.commit()
        for user, verdict in ((ann, "same"), (bob, "different")):
            task = review.next_task(s, user, settings)
            review.submit_verdict(s, user, task.slot_id, verdict, settings=settings)
            s.commit()
    failing = make_settings(tmp_path, db_url, webhook_url="http://127.0.0.1:9/x", webhook_secret="s" * 32)
    job = run_one(Services(engine, failing, image_store(settings)), "w1", worker_registry())
    assert job is not None
    lines = [x for x in _flush(log_lines) if x["logger"] == "miatari.jobs"]
    assert len(lines) == 1
    line = lines[0]
    assert (line["job_id"], line["kind"], line["outcome"], line["attempt"]) == (job.id, "webhook_delivery", "retry", 1)
    assert line["duration_ms"] >= 0 and "s" * 32 not in json.dumps(lines)


def test_the_formatter_never_writes_a_secret_named_field() -> None:
    record = logging.makeLogRecord({"name": "x", "msg": "hello", "levelname": "INFO",
                                    "fields": {"password": "hunter2", "api_token": "abc", "route": "/login"},
                                    "session_cookie": "zzz"})
    line = json.loads(JsonFormatter().format(record))
    assert line["route"] == "/login" and line["password"] == line["api_token"] == line["session_cookie"] \
        == "[redacted]"
    assert "hunter2" not in json.dumps(line) and "zzz" not in json.dumps(line)
    assert new_request_id("ok-1") == "ok-1" and new_request_id("x" * 65) != "x" * 65
