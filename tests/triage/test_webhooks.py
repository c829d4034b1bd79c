"""The webhook: a real HTTP server on loopback receives signed events; a refusal is retried with back-off."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlmodel import Session, select

from miatari.registry import worker_registry
from tests.conftest import make_settings
from tests.factories import image_store, make_candidate
from triage import clock, events, webhooks
from triage.models import Job, Role, WebhookDelivery
from triage.services import Services
from triage.worker import run_one

SECRET = "hook-secret-" + "k" * 24


@dataclass
class Receiver:
    answers: list[int]
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(answers=[])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server API
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            status = state.answers.pop(0) if state.answers else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/miatari"
    yield state
    server.shutdown()
    server.server_close()


def _dispute(engine, settings, user_factory) -> int:
    """A real event: a candidate decided disputed (its webhook event is written with it)."""
    from triage import review

    officer = user_factory(Role.officer)
    user_factory(Role.manager)
    ann, bob = user_factory(Role.recognizer), user_factory(Role.recognizer)
    store = image_store(settings)
    with Session(engine, expire_on_commit=False) as s:
        make_candidate(s, store, settings, officer.id)
        s.commit()
        for user, verdict in ((ann, "same"), (bob, "different")):
            task = review.next_task(s, user, settings)
            review.submit_verdict(s, user, task.slot_id, verdict, settings=settings)
            s.commit()
        return s.exec(select(WebhookDelivery)).one().id


def _run(engine, settings):  # type: ignore[no-untyped-def]
    return run_one(Services(engine, settings, image_store(settings)), "test-worker", worker_registry())


def test_a_refused_delivery_is_retried_with_back_off_then_delivered_signed(engine, tmp_path, db_url,
                                                                          receiver, user_factory) -> None:
    settings = make_settings(tmp_path, db_url, webhook_url=receiver.url, webhook_secret=SECRET)
    delivery_id = _dispute(engine, settings, user_factory)
    receiver.answers = [500]
    with clock.frozen() as frozen:
        assert _run(engine, settings) is not None
        with Session(engine) as s:
            row = s.get(WebhookDelivery, delivery_id)
            job = s.exec(select(Job).where(Job.kind == webhooks.WEBHOOK_JOB, Job.ref_id == delivery_id)).one()
            assert (row.status, row.attempts, row.last_status) == ("pending", 1, 500)
            assert job.status == "queued" and job.attempts == 1
            assert (job.run_after - frozen.now()).total_seconds() == webhooks.backoff_seconds(1) == 10
        assert _run(engine, settings) is None  # not before its back-off
        frozen.advance(seconds=11)
        assert _run(engine, settings) is not None
    assert len(receiver.received) == 2
    with Session(engine) as s:
        row = s.get(WebhookDelivery, delivery_id)
        assert (row.status, row.attempts, row.last_status) == ("delivered", 2, 200)
        assert s.exec(select(Job).where(Job.ref_id == delivery_id, Job.kind == webhooks.WEBHOOK_JOB)).one().status \
            == "done"
    headers, body = receiver.received[-1]
    assert headers["content-type"] == "application/json"
    assert headers["x-miatari-event"] == events.DISPUTE_WAITING and headers["x-miatari-delivery"] == str(delivery_id)
    assert webhooks.verify(SECRET, headers["x-miatari-timestamp"], body, headers["x-miatari-signature"])
    # The receiver's own check, written out: HMAC-SHA256 over "<timestamp>.<body>".
    import hashlib
    import hmac

    expected = hmac.new(SECRET.encode(), headers["x-miatari-timestamp"].encode() + b"." + body,
                        hashlib.sha256).hexdigest()
    assert headers["x-miatari-signature"] == f"sha256={expected}"
    assert not webhooks.verify("another-secret-of-some-length", headers["x-miatari-timestamp"], body,
                               headers["x-miatari-signature"])
    assert not webhooks.verify(SECRET, headers["x-miatari-timestamp"], body + b" ", headers["x-miatari-signature"])
    payload = json.loads(body)
    assert set(payload) == {"id", "event", "occurred_at", "object", "summary", "path"}
    assert payload["event"] == "dispute.waiting" and payload["object"]["type"] == "candidate"
    assert payload["path"] == "/disputes"
    # Nothing of the faces or the people: no image hash, score, verdict or name.
    text = body.decode()
    assert "sha256" not in text and "score" not in text and "same" not in text and "different" not in text


def test_a_receiver_that_never_takes_it_is_given_up_after_the_last_attempt(engine, tmp_path, db_url, receiver,
                                                                        user_factory) -> None:
    settings = make_settings(tmp_path, db_url, webhook_url=receiver.url, webhook_secret=SECRET)
    delivery_id = _dispute(engine, settings, user_factory)
    receiver.answers = [503] * webhooks.MAX_ATTEMPTS
    delays = []
    with clock.frozen() as frozen:
        for _ in range(webhooks.MAX_ATTEMPTS):
            assert _run(engine, settings) is not None
            with Session(engine) as s:
                job = s.exec(select(Job).where(Job.kind == webhooks.WEBHOOK_JOB)).one()
                delays.append((job.run_after - frozen.now()).total_seconds() if job.status == "queued" else None)
            frozen.advance(seconds=webhooks.BACKOFF_MAX_SECONDS + 1)
        assert _run(engine, settings) is None
    assert delays == [10, 20, 40, 80, 160, 320, 640, None]
    assert len(receiver.received) == webhooks.MAX_ATTEMPTS
    with Session(engine) as s:
        row = s.get(WebhookDelivery, delivery_id)
        assert (row.status, row.attempts, row.last_status) == ("failed", webhooks.MAX_ATTEMPTS, 503)
        assert s.exec(select(Job).where(Job.kind == webhooks.WEBHOOK_JOB)).one().status == "failed"


def test_no_answer_at_all_is_retried_too(engine, tmp_path, db_url, user_factory) -> None:
    settings = make_settings(tmp_path, db_url, webhook_url="http://127.0.0.1:9/nothing-listens",
                             webhook_secret=SECRET)
    delivery_id = _dispute(engine, settings, user_factory)
    assert _run(engine, settings) is not None
    with Session(engine) as s:
        row = s.get(WebhookDelivery, delivery_id)
        assert row.status == "pending" and row.last_status is None and "no answer" in row.last_error
        assert s.exec(select(Job).where(Job.kind == webhooks.WEBHOOK_JOB)).one().status == "queued"


def test_without_a_url_the_event_is_kept_as_skipped_and_nothing_is_sent(engine, settings, receiver,
                                                                       user_factory) -> None:
    delivery_id = _dispute(engine, settings, user_factory)
    assert _run(engine, settings) is not None
    assert receiver.received == []
    with Session(engine) as s:
        assert s.get(WebhookDelivery, delivery_id).status == "skipped"


def test_a_url_needs_a_secret(tmp_path, db_url) -> None:
    with pytest.raises(ValueError, match="WEBHOOK_SECRET"):
        make_settings(tmp_path, db_url, webhook_url="https://hooks.example/miatari", webhook_secret="short")
    with pytest.raises(ValueError, match="http"):
        make_settings(tmp_path, db_url, webhook_url="ftp://hooks.example/", webhook_secret=SECRET)
