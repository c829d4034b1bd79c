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
from sqlalchemy import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from triage import audit, services, watchlist
from triage.config import Settings
from triage.gallery import enrolment_models
from triage.models import AuditOutcome, Role, User
from triage.security import (
    SESSION_COOKIE,
    ResolvedSession,
    csrf_matches,
    needs_second_factor,
    resolve_api_token,
    resolve_session_token,
)
from triage.storage import ImageStore

if TYPE_CHECKING:
    from matcher import FacePipeline
    from triage.watchlist import FaceAnalysis

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


class NotAuthenticated(Exception):
    pass


class Forbidden(Exception):
    def __init__(self, message: str = "You may not do this.") -> None:
        super().__init__(message)
        self.message = message


class ActionRequired(Forbidden):
    """The account must do something first (a new password, a second factor): pages redirect there."""

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


def get_services(request: Request) -> dict[str, Any]:
    return request.app.state.services


class PipelineHandle:
    """This process's face pipeline, built (its models loaded) on first ``get``: a request refused
    before its analysis never waits for the models."""

    def __init__(self, engine: Engine, settings: Settings, process_services: dict[str, Any]) -> None:
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
    engine = get_engine(request)
    # A GET reads first: on SQLite its transaction takes the write lock only if it writes.
    bind = request.app.state.read_engine if request.method in SAFE_METHODS else engine
    with Session(bind, expire_on_commit=False) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
EngineDep = Annotated[Engine, Depends(get_engine)]
StoreDep = Annotated[ImageStore, Depends(get_store)]
PipelineDep = Annotated[PipelineHandle, Depends(get_pipeline)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def audit_refusal(request: Request, action: str, user: User | None, detail: dict[str, Any] | None = None,
                  object_type: str = "", object_id: object = "") -> None:
    """Write a refusal in its own transaction: the request's own work is rolled back.

    Call it before the request's session has written anything: on SQLite that
    session's open transaction holds the write lock this one needs.
    """
    with Session(get_engine(request)) as session:
        audit.record(session, action, actor=user, outcome=AuditOutcome.denied, object_type=object_type,
                     object_id=object_id, detail={"path": request.url.path, "method": request.method,
                                                  **(detail or {})}, ip=client_ip(request))
        session.commit()


def _resolve(request: Request, session: Session, settings: Settings) -> ResolvedSession | None:
    cached = getattr(request.state, "auth", None)
    if cached is not None:
        return cached
    resolved: ResolvedSession | None = None
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        resolved = resolve_api_token(session, auth[7:].strip())
    else:
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            resolved = resolve_session_token(session, settings, cookie)
    # Keep last_seen_at (or an expiry's revocation and its audit entry) whatever the route does next.
    session.commit()
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
        await run_in_threadpool(audit_refusal, request, "csrf", resolved.user,
                                {"reason": "missing or wrong CSRF token"})
        raise Forbidden("The form has expired or did not come from this site (CSRF check failed). "
                        "Reload the page and try again.")


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
        if presented or request.method not in SAFE_METHODS:
            audit_refusal(request, "auth", None, {"reason": "unknown, revoked or expired credential"
                                                  if presented else "not logged in"})
        raise NotAuthenticated()
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
    # Plain def: the refusal's audit write must not wait for the SQLite lock on the event loop.
    def dependency(request: Request, user: CurrentUser) -> User:
        if not user.has_role(*roles):
            audit_refusal(request, "access", user, {"needs": [r.value for r in roles]})
            raise Forbidden(f"This needs the role {' or '.join(r.value for r in roles)}.")
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
