"""Operations: ``/metrics`` for Prometheus, request timing and one JSON log line per request.

``/metrics`` answers only a scraper that shows ``MIATARI_METRICS_TOKEN`` as a bearer
token or comes from an address in ``MIATARI_METRICS_ALLOW``; with neither set it
answers 404 as if it did not exist (docs/operations.md).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlmodel import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from triage import audit, prom
from triage.config import Settings
from triage.logging_json import REQUEST_ID_HEADER, new_request_id, request_id_var
from triage.models import AuditOutcome
from triage.transaction import unit_of_work
from webcommon.deps import client_ip

access_log = logging.getLogger("miatari.access")

router = APIRouter(tags=["operations"], include_in_schema=False)


def allowed_networks(settings: Settings) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(p.strip(), strict=False) for p in settings.metrics_allow.split(",") if p.strip()]


def scrape_allowed(settings: Settings, authorization: str, ip: str) -> bool | None:
    """True: may scrape; False: refused; None: no guard configured (``/metrics`` does not exist)."""
    networks = allowed_networks(settings)
    if not settings.metrics_token and not networks:
        return None
    if settings.metrics_token and authorization.lower().startswith("bearer "):
        if hmac.compare_digest(authorization[7:].strip().encode(), settings.metrics_token.encode()):
            return True
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in network for network in networks)


class _Families:
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return self.families


def exposition(engine: Any) -> bytes:
    """Every series: this host's processes' own (multiprocess files) and the database's, in text format."""
    families: list[Metric] = []
    applied: dict[str, float] = {}
    directory = prom.multiproc_dir()
    if directory is not None:
        families += list(MultiProcessCollector(None, path=str(directory)).collect())
        for family in families:
            if family.name == "miatari_gallery_applied_change":
                for sample in family.samples:
                    process = sample.labels.get("process", "")
                    applied[process] = max(applied.get(process, 0.0), sample.value)
    with Session(engine) as session:
        families += prom.collect_from(session)
        families.append(prom.gallery_lag(session, applied))
    return generate_latest(_Families(families))  # type: ignore[arg-type]


def _refuse(engine: Any, ip: str) -> None:
    with Session(engine) as session, unit_of_work(session):
        audit.record(session, "metrics.scrape", outcome=AuditOutcome.denied, object_type="metrics",
                     detail={"reason": "no valid scrape token and not an allowed address"}, ip=ip)


@router.get("/metrics")
def read_prometheus_metrics(request: Request) -> Response:
    """Prometheus text format, for a scraper with the token or from an allowed network."""
    settings: Settings = request.app.state.settings
    ip = client_ip(request)
    verdict = scrape_allowed(settings, request.headers.get("authorization", ""), ip)
    if verdict is None:
        return Response("Not found\n", status_code=404, media_type="text/plain")
    if not verdict:
        _refuse(request.app.state.engine, ip)
        headers = {"WWW-Authenticate": "Bearer"} if settings.metrics_token else {}
        return Response("Not allowed\n", status_code=401 if settings.metrics_token else 403,
                        media_type="text/plain", headers=headers)
    return Response(exposition(request.app.state.engine), media_type=CONTENT_TYPE_LATEST)


def route_of(scope: Scope) -> str:
    """The route template (``/sightings/{sighting_id}``), never the raw path with its ids or query."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    return "unmatched"


def user_id_of(scope: Scope) -> int | None:
    auth = (scope.get("state") or {}).get("auth")
    user = getattr(auth, "user", None)
    return getattr(user, "id", None)


class RequestObserver:
    """Request id in and out, latency by route, and one ``miatari.access`` JSON line per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for key, value in scope.get("headers", []):
            if key == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = new_request_id(incoming)
        token = request_id_var.set(request_id)
        status = 500
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.lower().encode(), request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            route = route_of(scope)
            prom.observe_request(scope.get("method", ""), route, status, seconds)
            access_log.info("request", extra={"fields": {
                "method": scope.get("method", ""), "route": route, "status": status,
                "duration_ms": round(seconds * 1000, 1), "user_id": user_id_of(scope)}})
            request_id_var.reset(token)


def install(app: FastAPI, settings: Settings) -> None:
    """Process metrics in ``<data_dir>/prometheus``, and the request observer (outermost middleware)."""
    prom.setup_process(settings.data_dir)
    app.add_middleware(RequestObserver)

