"""Request helpers shared by ``api`` and ``web``: settings, database session, image store, face
pipeline, current user, CSRF.  Routes read the app's long-lived objects only through these.

Authorisation failures raise ``NotAuthenticated`` / ``Forbidden``; the app
turns them into a 401/403 JSON answer under ``/api`` and a redirect or an
error page elsewhere.  Every refusal is written to the audit log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any

from annotated_types import Interval
from fastapi import Depends, Request
from sqlalchemy import Engine, inspect
from sqlmodel import Session

from triage import services, watchlist
from triage.config import Settings
from triage.db import reads_first
from triage.errors import RefusalEntry, Refused
from triage.gallery import enrolment_models
from triage.models import Role, User
from triage.security import (
    SESSION_COOKIE,
    ResolvedSession,
    csrf_matches,
    needs_second_factor,
    resolve_api_token,
    resolve_session_token,
)
from triage.storage import ImageStore
from triage.transaction import checkpoint, unit_of_work

if TYPE_CHECKING:
    from matcher import FacePipeline
    from triage.watchlist import FaceAnalysis

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


class NotAuthenticated(Refused):
    pass


class Forbidden(Refused):
    def __init__(self, message: str = "You may not do this.") -> None:
        super().__init__(message)
        self.message = message


class ActionRequired(Forbidden):
    """The account must do something first (a new password, a second factor): pages redirect there.

    Not a failure of what was done so far (a login checked, its failed attempts cleared): that is kept."""

    keeps_work = True

    def __init__(self, message: str, location: str) -> None:
        super().__init__(message)
        self.location = location


# Integers in paths, queries and bodies are bounded in the schema: ids are INTEGER columns
# (32-bit on PostgreSQL, 64-bit on SQLite), and a larger number must be a 422, never an
# overflow deep in the driver.
DB_INT_MAX = 2**31 - 1
Id = Annotated[int, Interval(ge=1, le=DB_INT_MAX)]  # a record's id
Position = Annotated[int, Interval(ge=0, le=DB_INT_MAX)]  # a position, an offset, an index
PageNumber = Annotated[int, Interval(ge=1, le=DB_INT_MAX)]

PASSWORD_CHANGE_PATH = "/account/password"
TOTP_ENROL_PATH = "/account/totp"


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_store(request: Request) -> ImageStore:
    return request.app.state.store


def get_services(request: Request) -> services.Services:
    return request.app.state.services


class PipelineHandle:
    """This process's face pipeline, built (its models loaded) on first ``get``: a request refused
    before its analysis never waits for the models."""

    def __init__(self, engine: Engine, settings: Settings, process_services: services.Services) -> None:
        self._engine, self._settings, self._services = engine, settings, process_services

    def get(self) -> FacePipeline:
        return services.pipeline(self._services)

    def analyze_for_enrolment(self, data: bytes) -> FaceAnalysis:
        """Find and embed the faces of a reference photo, with every model the gallery needs now
        (``triage.gallery.enrolment_models``); raises ``EnrolmentRefused`` for a bad file."""
        models = enrolment_models(self._engine, self._settings.face_model)
        return watchlist.analyze_for_enrolment(data, self._settings, self.get(), models)


def get_pipeline(request: Request) -> PipelineHandle:
    return PipelineHandle(get_engine(request), get_settings(request), get_services(request))


def get_session(request: Request) -> Iterator[Session]:
    """The request's session, whose transaction the request owns (``triage.transaction.unit_of_work``):
    committed when the handler returns, rolled back when it raises (keeping a refusal's audit entry).

    Scope "function": the transaction ends right after the handler, before the response is sent, and in a
    worker thread (this is a plain generator).  On SQLite a transaction that wrote holds the one write lock;
    held while the response goes out, another request's authentication would queue behind it (and a slow
    client would hold everyone up).  Anything read after this (an error page's user) is loaded already.
    """
    engine = get_engine(request)
    # A GET reads first: on SQLite its transaction takes the write lock only if it writes.
    bind = request.app.state.read_engine if request.method in SAFE_METHODS else engine
    with Session(bind, expire_on_commit=False) as session:
        try:
            with unit_of_work(session):
                yield session
        finally:
            _keep_readable(request, session)


def _keep_readable(request: Request, session: Session) -> None:
    # A rollback expired the request's user: load it again while the session is open, for the error page.
    resolved = getattr(request.state, "auth", None)
    for row in (resolved.user, resolved.web_session) if resolved is not None else ():
        if row is not None and row in session and inspect(row).expired_attributes:
            session.refresh(row)


# The dependencies below that only read app state are async: a plain ``def`` would cost a worker-thread hop.
async def _settings(request: Request) -> Settings:
    return get_settings(request)


async def _engine(request: Request) -> Engine:
    return get_engine(request)


async def _store(request: Request) -> ImageStore:
    return get_store(request)


async def _pipeline(request: Request) -> PipelineHandle:
    return get_pipeline(request)


SettingsDep = Annotated[Settings, Depends(_settings)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
EngineDep = Annotated[Engine, Depends(_engine)]
StoreDep = Annotated[ImageStore, Depends(_store)]
PipelineDep = Annotated[PipelineHandle, Depends(_pipeline)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def refusal(request: Request, action: str, user: User | None, detail: dict[str, Any] | None = None,
            object_type: str = "", object_id: object = "") -> RefusalEntry:
    """The audit entry of a refusal of this request: raise it with the error (``Refused.recorded_as``),
    and the request's transaction rolls its work back and keeps the entry."""
    return RefusalEntry(action, actor=user, object_type=object_type, object_id=object_id,
                        detail={"path": request.url.path, "method": request.method, **(detail or {})},
                        ip=client_ip(request))


def _resolve(request: Request, session: Session, settings: Settings) -> ResolvedSession | None:
    cached = getattr(request.state, "auth", None)
    if cached is not None:
        return cached
    resolved: ResolvedSession | None = None
    reads_first(session)  # authentication takes SQLite's write lock only if it writes (bookkeeping)
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        resolved = resolve_api_token(session, auth[7:].strip())
    else:
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            resolved = resolve_session_token(session, settings, cookie)
    # Authentication is a transaction of its own, on purpose: last_seen_at (or an expiry's revocation and
    # its audit entry) is kept whatever the route does next, a refusal included.
    checkpoint(session)
    request.state.auth = resolved
    return resolved


def get_optional_user(request: Request, session: SessionDep, settings: SettingsDep) -> User | None:
    resolved = _resolve(request, session, settings)
    return resolved.user if resolved else None


async def _csrf_token_from(request: Request) -> str | None:
    token = request.headers.get(CSRF_HEADER)
    if token:
        return token
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


async def check_csrf(request: Request, resolved: ResolvedSession | None) -> None:
    """Cookie-authenticated state changes must carry the session's CSRF token.

    Bearer-token requests carry no ambient credential, so they need none.
    """
    if request.method in SAFE_METHODS or resolved is None or resolved.web_session is None:
        return
    given = await _csrf_token_from(request)
    if not csrf_matches(resolved.web_session.csrf_token, given):
        raise Forbidden("The form has expired or did not come from this site (CSRF check failed). "
                        "Reload the page and try again.").recorded_as(
            refusal(request, "csrf", resolved.user, {"reason": "missing or wrong CSRF token"}))


def authenticate_request(request: Request, session: SessionDep, settings: SettingsDep) -> ResolvedSession:
    """Resolve the cookie or bearer token.

    A plain ``def`` on purpose: FastAPI runs it in the thread pool.  On SQLite a
    transaction may wait for the write lock, and waiting on the event loop would
    stall the very responses whose sessions hold that lock.
    """
    resolved = _resolve(request, session, settings)
    if resolved is None:
        # A credential that does not work (forged, revoked, expired) or an anonymous attempt to change
        # something is on record; a plain anonymous page view (before logging in) is not.
        presented = request.headers.get("authorization") or request.cookies.get(SESSION_COOKIE)
        error = NotAuthenticated()
        if presented or request.method not in SAFE_METHODS:
            error.recorded_as(refusal(request, "auth", None, {"reason": "unknown, revoked or expired credential"
                                                              if presented else "not logged in"}))
        raise error
    return resolved


async def require_account_user(request: Request,
                               resolved: Annotated[ResolvedSession, Depends(authenticate_request)]) -> User:
    """A logged-in user, CSRF-checked, even one who still owes a password change or a second factor."""
    await check_csrf(request, resolved)
    return resolved.user


def pending_action(user: User, settings: Settings) -> ActionRequired | None:
    """What the account must do before anything else, if anything."""
    if user.must_change_password:
        return ActionRequired("Choose a new password before going on.", PASSWORD_CHANGE_PATH)
    if needs_second_factor(user, settings):
        return ActionRequired("Your role needs a second factor: set one up before going on.", TOTP_ENROL_PATH)
    return None


async def require_user(request: Request, settings: SettingsDep,
                       user: Annotated[User, Depends(require_account_user)]) -> User:
    pending = pending_action(user, settings)
    if pending is not None:
        raise pending
    return user


# Every route but the account pages uses CurrentUser (or a role alias built on it).
CurrentUser = Annotated[User, Depends(require_user)]
AccountUser = Annotated[User, Depends(require_account_user)]


def require_roles(*roles: Role) -> Callable[..., Any]:
    async def dependency(request: Request, user: CurrentUser) -> User:
        if not user.has_role(*roles):
            raise Forbidden(f"This needs the role {' or '.join(r.value for r in roles)}.").recorded_as(
                refusal(request, "access", user, {"needs": [r.value for r in roles]}))
        return user

    return dependency


OfficerUser = Annotated[User, Depends(require_roles(Role.officer))]
RecognizerUser = Annotated[User, Depends(require_roles(Role.recognizer))]
ManagerUser = Annotated[User, Depends(require_roles(Role.manager))]
AdminUser = Annotated[User, Depends(require_roles(Role.admin))]
ManagerOrAdminUser = Annotated[User, Depends(require_roles(Role.manager, Role.admin))]


def csrf_token_for(request: Request) -> str:
    resolved = getattr(request.state, "auth", None)
    if resolved is not None and resolved.web_session is not None:
        return resolved.web_session.csrf_token
    return ""
