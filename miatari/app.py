"""Composition root: builds the FastAPI app from the ``api`` and ``web`` routers."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

import api
import web
from miatari import observability
from miatari.limits import RequestLimits, RequestTooLarge, audit_too_large
from miatari.registry import worker_registry
from triage import reindex, services
from triage.config import Settings, get_settings
from triage.db import make_engine, read_first
from triage.errors import DomainError
from triage.recovery import process_age_seconds
from triage.storage import ImageStore
from triage.worker import Worker
from webcommon import media
from webcommon.deps import ActionRequired, Forbidden, NotAuthenticated
from webcommon.errors import status_for

log = logging.getLogger("miatari")

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
                               "script-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "Permissions-Policy": "geolocation=(self), camera=(self)",
}
# Production is served over HTTPS only: browsers are told never to try plain HTTP.
HSTS = ("Strict-Transport-Security", "max-age=31536000; includeSubDomains")


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def create_app(settings: Settings | None = None, *, start_background: bool | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.ensure_secret_key()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db_url)
    store = ImageStore(settings.images_dir)
    background = settings.embedded_worker if start_background is None else start_background

    app = FastAPI(
        title="Miatari",
        summary="Two-person face-match triage: the matcher proposes, two blind recognizers dispose.",
        version="0.1.0",
        lifespan=_lifespan(engine, settings, store, background),
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.read_engine = read_first(engine)
    app.state.store = store
    app.state.services = services.build(engine, settings, store)

    app.include_router(observability.router)  # first: its /metrics is the scrape endpoint
    app.include_router(api.router)
    app.include_router(media.router)  # pictures and CSV exports: the same handlers for api and web
    app.include_router(web.router)
    app.mount("/static", StaticFiles(directory=str(Path(web.__file__).parent / "static")), name="static")
    _add_middleware(app, settings, engine)
    _add_error_handlers(app, engine)
    observability.install(app, settings)  # last: the outermost middleware times and logs everything
    return app


def _lifespan(engine: Engine, settings: Settings, store: ImageStore,
              background: bool) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start-up and shut-down: leftovers removed, re-embedding queued if due, the embedded worker."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        removed = store.remove_leftovers()  # temporary files of a killed process's unfinished writes
        log.info("web process ready %.2f s after its process started (%d leftover temporary file(s) removed)",
                 process_age_seconds(), removed)
        worker: Worker | None = None
        try:
            # Queue re-embedding if the configured face model is not the gallery's (docs/watchlist.md).
            reindex.ensure_started(engine, settings)
        except Exception:  # noqa: BLE001 - e.g. not migrated yet: /readyz says so; the app still starts
            log.exception("could not check the gallery's face model")
        if settings.warm_up:
            _warm_up(app, engine)
        if background:
            worker = Worker(app.state.services, worker_registry())
            worker.start()
            log.info("embedded worker started")
        try:
            yield
        finally:
            if worker is not None:
                worker.stop()
            services.stop(app.state.services)
            engine.dispose()

    return lifespan


def _warm_up(app: FastAPI, engine: Engine) -> None:
    """Before serving, do what the first requests of a (re)started process would otherwise each pay for,
    a hundred milliseconds or more: FastAPI's routes (built when first looked through), the page
    templates, and the metrics' statements (read once)."""
    from sqlmodel import Session
    from starlette.routing import NoMatchFound

    from triage import metrics
    from web.templating import compile_all

    started = time.perf_counter()
    try:
        app.url_path_for("miatari.warm-up")  # no such route: every router is looked through, so built
    except NoMatchFound:
        pass
    count = compile_all()
    try:
        with Session(read_first(engine)) as session:
            metrics.compute(session, metrics.Window())  # what /stats shows first
            session.rollback()
    except Exception:  # noqa: BLE001 - e.g. not migrated yet: /readyz says so; the app still starts
        log.warning("metrics not read at start-up", exc_info=True)
    log.info("web process warmed up in %.2f s (%d templates compiled)", time.perf_counter() - started, count)


def _add_middleware(app: FastAPI, settings: Settings, engine: Engine) -> None:
    """Request size limits, and the security headers on every response."""
    from web.routes.watchlist import MAX_ZIP_BYTES

    app.add_middleware(RequestLimits, settings=settings, engine=engine,
                       route_limits={"/watchlist/import": MAX_ZIP_BYTES + 1_000_000})

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        if settings.environment == "production":
            response.headers.setdefault(*HSTS)
        if not request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response


def _add_error_handlers(app: FastAPI, engine: Engine) -> None:
    """Errors answer JSON under /api/, an error page (or an htmx redirect) elsewhere."""

    @app.exception_handler(NotAuthenticated)
    async def not_authenticated(request: Request, exc: NotAuthenticated) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": "Not authenticated"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        if request.headers.get("HX-Request") == "true":
            return Response(status_code=401, headers={"HX-Redirect": "/login"})
        from urllib.parse import quote

        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": exc.message}, status_code=403)
        if isinstance(exc, ActionRequired):
            if request.headers.get("HX-Request") == "true":
                return Response(status_code=200, headers={"HX-Redirect": exc.location})
            return RedirectResponse(exc.location, status_code=303)
        return web.error_page(request, 403, "Not allowed", exc.message)

    @app.exception_handler(DomainError)
    async def refused(request: Request, exc: DomainError) -> Response:
        # A refusal no route answered itself (pages catch those they answer with their form again).
        status = status_for(exc.code)
        if _wants_json(request):
            return JSONResponse({"detail": exc.message}, status_code=status)
        return web.error_page(request, status, "Not possible", exc.message)

    @app.exception_handler(RequestTooLarge)
    async def too_large(request: Request, exc: RequestTooLarge) -> Response:
        await run_in_threadpool(audit_too_large, engine, request.scope, exc)
        if _wants_json(request):
            return JSONResponse(exc.body(), status_code=413, headers={"Connection": "close"})
        return web.error_page(request, 413, "Too large", str(exc.detail))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        titles = {404: "Not found", 405: "Method not allowed", 409: "Conflict", 413: "Too large"}
        return web.error_page(request, exc.status_code, titles.get(exc.status_code, "Error"), str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        errors = [{"loc": list(e.get("loc", [])), "msg": e.get("msg", ""), "type": e.get("type", "value_error")}
                  for e in exc.errors()]
        if _wants_json(request):
            return JSONResponse({"detail": errors}, status_code=422)
        text = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in errors)
        return web.error_page(request, 422, "Please check the form", text)
