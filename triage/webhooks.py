"""The unit's webhook: every notification event as a signed JSON POST, delivered by a job.

The event is written (a ``webhook_delivery`` row and its job) in the transaction of
the event itself, so nothing is announced that did not happen and nothing that
happened is lost.  The job signs the body with HMAC-SHA256 under
``MIATARI_WEBHOOK_SECRET`` over ``"<timestamp>.<body>"`` and POSTs it to
``MIATARI_WEBHOOK_URL``; any answer but 2xx (or no answer) is retried with
exponential back-off.  Payloads carry the event, the kind and number of the item,
a fixed summary and the page to open: never a name, a photo, a score or a verdict
(docs/operations.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

from sqlmodel import Session

from triage import audit, jobs
from triage.clock import utcnow
from triage.models import AuditOutcome, Job, WebhookDelivery, WebhookDeliveryStatus
from triage.worker import JobContext, PermanentJobError

if TYPE_CHECKING:
    from triage.services import Services

log = logging.getLogger("miatari.webhooks")

WEBHOOK_JOB = "webhook_delivery"
# 10 s, 20 s, 40 s … 640 s between the 8 attempts: about 21 minutes of retries in all.
MAX_ATTEMPTS = 8
BACKOFF_BASE_SECONDS = 10.0
BACKOFF_MAX_SECONDS = 3600.0
TIMEOUT_SECONDS = 10.0
SIGNATURE_HEADER = "X-Miatari-Signature"
TIMESTAMP_HEADER = "X-Miatari-Timestamp"
EVENT_HEADER = "X-Miatari-Event"
DELIVERY_HEADER = "X-Miatari-Delivery"
USER_AGENT = "Miatari-Webhook/1"


class WebhookFailed(RuntimeError):
    """The receiver did not take the event (retried while attempts remain)."""


def backoff_seconds(attempts: int) -> float:
    """Delay before the next attempt after ``attempts`` failed ones: doubling, capped."""
    return min(BACKOFF_BASE_SECONDS * 2 ** max(attempts - 1, 0), BACKOFF_MAX_SECONDS)




def record(session: Session, event: str, *, object_type: str, object_id: int | None, summary: str,
           path: str = "") -> WebhookDelivery:
    """Write the event for the webhook inside the caller's transaction, with the job that delivers it."""
    delivery = WebhookDelivery(event=event[:40], object_type=object_type[:40], object_id=object_id)
    session.add(delivery)
    session.flush()
    delivery.payload = {
        "id": delivery.id,
        "event": delivery.event,
        "occurred_at": delivery.created_at.isoformat(),
        "object": {"type": object_type, "id": object_id},
        "summary": summary,
        "path": path,
    }
    session.add(delivery)
    jobs.enqueue(session, WEBHOOK_JOB, delivery.pk, max_attempts=MAX_ATTEMPTS)
    return delivery


def body_of(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256 over ``timestamp + "." + body`` under the shared secret."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, timestamp: str, body: bytes, header: str, *, max_age_seconds: float = 300.0,
           now: float | None = None) -> bool:
    """What a receiver checks: the signature matches and the timestamp is recent (no replay)."""
    try:
        age = abs((now if now is not None else time.time()) - int(timestamp))
    except ValueError:
        return False
    return age <= max_age_seconds and hmac.compare_digest(signature(secret, timestamp, body), header)


def _post(url: str, secret: str, delivery: WebhookDelivery) -> int:
    body = body_of(delivery.payload)
    timestamp = str(int(time.time()))
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        EVENT_HEADER: delivery.event,
        DELIVERY_HEADER: str(delivery.id),
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    })
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310 - operator's URL
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError) as exc:
        raise WebhookFailed(f"no answer: {getattr(exc, 'reason', exc)}") from exc


def delivery_failed(session: Session, services: Services, job: Job) -> None:
    """The worker gave up on a delivery's job (attempts spent, or a permanent error): the delivery is failed."""
    row = session.get(WebhookDelivery, job.ref_id)
    if row is None or row.status != WebhookDeliveryStatus.pending.value:
        return
    row.status = WebhookDeliveryStatus.failed.value
    session.add(row)


def deliver(ctx: JobContext) -> str:
    """POST one event; a refusal or no answer raises, so the worker retries it later."""
    with Session(ctx.engine, expire_on_commit=False) as session:
        delivery = session.get(WebhookDelivery, ctx.job.ref_id)
        if delivery is None:
            raise PermanentJobError(f"webhook delivery {ctx.job.ref_id} does not exist")
        if delivery.status != WebhookDeliveryStatus.pending.value:
            ctx.finish_in(session)
            session.commit()
            return delivery.status
        url, secret = ctx.settings.webhook_url, ctx.settings.webhook_secret
        if not url:
            delivery.status = WebhookDeliveryStatus.skipped.value
            session.add(delivery)
            ctx.finish_in(session)
            session.commit()
            return delivery.status
    status: int | None = None
    error = ""
    try:
        status = _post(url, secret, delivery)
    except WebhookFailed as exc:
        error = str(exc)
    ok = status is not None and 200 <= status < 300
    with Session(ctx.engine, expire_on_commit=False) as session:
        row = session.get(WebhookDelivery, delivery.id)
        assert row is not None
        row.attempts += 1
        row.last_status = status
        row.last_error = "" if ok else (error or f"HTTP {status}")[:500]
        if ok:
            row.status, row.delivered_at = WebhookDeliveryStatus.delivered.value, utcnow()
            ctx.finish_in(session)
        session.add(row)
        audit.record(session, "webhook.deliver", outcome=AuditOutcome.ok if ok else AuditOutcome.error,
                     object_type="webhook_delivery", object_id=row.id,
                     detail={"event": row.event, "http_status": status, "attempt": ctx.job.attempts})
        session.commit()
    if not ok:
        raise WebhookFailed(row.last_error)
    return WebhookDeliveryStatus.delivered.value
