"""Request bounds, enforced while the body streams in (an ASGI middleware).

* A body larger than its route's limit is refused with 413 — at once by its
  ``Content-Length``, and by counting the bytes as they arrive otherwise
  (chunked uploads) — before it is parsed or spooled to disk.
* A multipart upload (photos, a ZIP) without a working credential is refused
  with 401 before its body is read at all.

Both refusals are written to the audit log.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import quote

from sqlalchemy import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from triage import audit
from triage.config import Settings
from triage.db import read_first
from triage.models import AuditOutcome
from triage.security import SESSION_COOKIE, resolve_api_token, resolve_session_token

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# A login form, a verdict, a JSON body: nothing but a file upload needs more.
MAX_FORM_BYTES = 1_000_000
# Room for the multipart framing and the text fields beside the photos.
MULTIPART_OVERHEAD_BYTES = 1_000_000
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


class RequestTooLarge(HTTPException):
    """A request body over its limit; ``size`` is the whole body's (or what had arrived when it was cut)."""

    def __init__(self, limit: int, size: int, *, complete: bool) -> None:
        said = f"The request is {_mb(size)}" if complete else f"The request is over {_mb(size)}"
        super().__init__(413, f"{said}; the limit is {_mb(limit)}.")
        self.limit = limit
        self.size = size
        self.complete = complete

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail, "field": "", "code": "request_too_large",
                "limit_bytes": self.limit, "size_bytes": self.size}


def multipart_limit(settings: Settings) -> int:
    """The largest multipart body: ``MIATARI_MAX_REQUEST_BYTES``, or by default a full sighting's photos."""
    if settings.max_request_bytes:
        return settings.max_request_bytes
    return settings.max_photos_per_sighting * settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES


class RequestLimits:
    """Bounds every request body; see the module's docstring."""

    def __init__(self, app: ASGIApp, *, settings: Settings, engine: Engine,
                 route_limits: dict[str, int] | None = None) -> None:
        self.app = app
        self.settings = settings
        self.engine = engine
        # Paths whose uploads may exceed the default multipart limit (the watchlist's ZIP import).
        self.route_limits = route_limits or {}

    def limit_for(self, path: str, multipart: bool) -> int:
        if not multipart:
            return MAX_FORM_BYTES
        return self.route_limits.get(path, multipart_limit(self.settings))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        path: str = scope["path"]
        multipart = headers.get("content-type", "").startswith("multipart/form-data")
        limit = self.limit_for(path, multipart)
        if multipart and not await run_in_threadpool(self._credential_works, headers):
            await run_in_threadpool(self._audit_anonymous, scope, headers)
            await self._send_unauthenticated(scope, headers, send)
            return
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            refusal = RequestTooLarge(limit, int(declared), complete=True)
            await run_in_threadpool(self.audit_too_large, scope, refusal)
            await self._send_too_large(scope, send, refusal)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Raised inside the app's body parsing; the app's handler answers 413 (and audits).
                    raise RequestTooLarge(limit, received, complete=False)
            return message

        await self.app(scope, counted, send)

    # -- credentials, without reading the body ----------------------------------
    def _credential_works(self, headers: Headers) -> bool:
        auth = headers.get("authorization", "")
        cookie = _cookie(headers, SESSION_COOKIE)
        if not auth.lower().startswith("bearer ") and not cookie:
            return False
        with Session(read_first(self.engine), expire_on_commit=False) as session:
            if auth.lower().startswith("bearer "):
                resolved = resolve_api_token(session, auth[7:].strip())
            else:
                resolved = resolve_session_token(session, self.settings, cookie or "")
            session.commit()
        return resolved is not None

    # -- audit -------------------------------------------------------------------
    def audit_too_large(self, scope: Scope, refusal: RequestTooLarge) -> None:
        audit_too_large(self.engine, scope, refusal)

    def _audit_anonymous(self, scope: Scope, headers: Headers) -> None:
        presented = headers.get("authorization") or _cookie(headers, SESSION_COOKIE)
        _record(self.engine, scope, "auth", {"reason": "unknown, revoked or expired credential" if presented
                                             else "not logged in", "before_body": True})

    # -- answers -----------------------------------------------------------------
    async def _send_too_large(self, scope: Scope, send: Send, refusal: RequestTooLarge) -> None:
        if scope["path"].startswith("/api/"):
            await _send(send, 413, json.dumps(refusal.body()).encode(), "application/json")
        else:
            page = (f"<!doctype html><title>Too large</title><h1>Too large</h1><p>{refusal.detail}</p>"
                    f'<p><a href="{quote(scope["path"])}">Back</a></p>')
            await _send(send, 413, page.encode(), "text/html; charset=utf-8")

    async def _send_unauthenticated(self, scope: Scope, headers: Headers, send: Send) -> None:
        if scope["path"].startswith("/api/"):
            await _send(send, 401, b'{"detail":"Not authenticated"}', "application/json",
                        [(b"www-authenticate", b"Bearer")])
        elif headers.get("hx-request") == "true":
            await _send(send, 401, b"", "text/plain", [(b"hx-redirect", b"/login")])
        else:
            location = f"/login?next={quote(scope['path'])}".encode()
            await _send(send, 303, b"", "text/plain", [(b"location", location)])


def _record(engine: Engine, scope: Scope, action: str, detail: dict[str, Any]) -> None:
    client = scope.get("client")
    with Session(engine) as session:
        audit.record(session, action, outcome=AuditOutcome.denied,
                     detail={"path": scope["path"], "method": scope["method"], **detail},
                     ip=client[0] if client else "")
        session.commit()


def audit_too_large(engine: Engine, scope: Scope, refusal: RequestTooLarge) -> None:
    """Put a 413 on record (its own transaction)."""
    _record(engine, scope, "request.too_large", {"limit_bytes": refusal.limit, "size_bytes": refusal.size,
                                                 "complete": refusal.complete})


def _cookie(headers: Headers, name: str) -> str | None:
    from http.cookies import SimpleCookie

    raw = headers.get("cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except Exception:  # noqa: BLE001 - a malformed cookie header is simply no cookie
        return None
    morsel = jar.get(name)
    return morsel.value if morsel else None


async def _send(send: Send, status: int, body: bytes, content_type: str,
                extra: list[tuple[bytes, bytes]] | None = None) -> None:
    # Connection: close — the unread body must not be taken for the next request.
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close"), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
