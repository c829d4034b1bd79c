"""Sightings pages: the upload form (phone and desktop) and the officer's own sightings with live status."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import Depends, File, Form, HTTPException, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse

from triage import sightings
from triage.models import Role, Sighting, User
from triage.transaction import record_refusal
from web.htmx import STOP_POLLING, hx_redirect
from web.templating import render
from webcommon import routing
from webcommon.deps import (
    CurrentUser,
    Forbidden,
    Id,
    ManagerUser,
    OfficerUser,
    PageNumber,
    SessionDep,
    SettingsDep,
    StoreDep,
    client_ip,
    refusal,
)
from webcommon.errors import status_for
from webcommon.uploads import photo_uploads

router = routing.router(tags=["sightings"])

PAGE_SIZE = 25
POLL_SECONDS = 2


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _require_viewer(request: Request, user: User) -> None:
    if not user.has_role(Role.officer, Role.manager):
        raise Forbidden("This needs the role officer or manager.").recorded_as(
            refusal(request, "access", user, {"needs": ["officer", "manager"]}))


def _get(session: Any, user: User, sighting_id: Id) -> Sighting:
    try:
        return sightings.get_for(session, user, sighting_id)
    except sightings.SightingNotFound as exc:
        raise HTTPException(404, str(exc)) from exc


def _new_form(request: Request, settings: Any, *, error: str = "", field: str = "",
              values: dict[str, Any] | None = None,
              status_code: int = 200) -> Response:
    ctx = {"error": error, "error_field": field, "values": values or {},
           "idempotency_key": (values or {}).get("idempotency_key") or secrets.token_urlsafe(16),
           "max_photos": settings.max_photos_per_sighting, "max_mb": settings.max_upload_bytes // 1_000_000}
    return render(request, "sighting_new.html", ctx, status_code=status_code)


def _refused(request: Request, settings: Any, exc: sightings.SightingRejected,
             form: sightings.SightingForm) -> Response:
    status = status_for(exc.code, 422)
    if _wants_json(request):
        return JSONResponse({"detail": exc.message, "field": exc.field, "code": exc.code}, status_code=status)
    return _new_form(request, settings, error=exc.message, field=exc.field, values=form.values(), status_code=status)


@router.get("/sightings")
def read_sightings(request: Request, session: SessionDep, user: CurrentUser,
                   page: Annotated[PageNumber, Query()] = 1, everyone: bool = False) -> Response:
    """Your sightings, newest first, with how far each got (managers may see everyone's)."""
    _require_viewer(request, user)
    rows, count = sightings.list_for(session, user, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE,
                                     everyone=everyone)
    progress = sightings.progress_of_many(session, rows)  # set-based: not several queries per row
    items = [(s, progress[s.pk]) for s in rows]
    ctx = {"items": items, "count": count, "page": page, "pages": max(1, -(-count // PAGE_SIZE)),
           "everyone": everyone and user.has_role(Role.manager)}
    return render(request, "sightings.html", ctx)


@router.get("/sightings/new")
def read_new_sighting(request: Request, settings: SettingsDep, user: OfficerUser) -> Response:
    """The upload form: camera or files, location, time, note."""
    return _new_form(request, settings)


def _sighting_form(
    request: Request, observed_at: Annotated[str, Form()] = "", tz_offset: Annotated[str, Form()] = "",
    location_text: Annotated[str, Form()] = "", latitude: Annotated[str, Form()] = "",
    longitude: Annotated[str, Form()] = "", note: Annotated[str, Form()] = "",
    idempotency_key: Annotated[str, Form()] = "",
) -> sightings.SightingForm:
    return sightings.SightingForm(observed_at=observed_at, location_text=location_text, latitude=latitude,
                                  longitude=longitude, note=note, tz_offset=tz_offset,
                                  idempotency_key=request.headers.get("Idempotency-Key") or idempotency_key)


@router.post("/sightings")
def create_sighting(request: Request, session: SessionDep, store: StoreDep, settings: SettingsDep, user: OfficerUser,
                    form: Annotated[sightings.SightingForm, Depends(_sighting_form)],
                    photos: Annotated[list[UploadFile] | None, File()] = None) -> Response:
    """Store the sighting and answer at once; matching runs in the background."""
    try:
        result = sightings.create_sighting(session, store, settings, user,
                                           form.to_input(photo_uploads(photos, settings)), ip=client_ip(request))
    except sightings.SightingRejected as exc:
        record_refusal(session, exc)
        return _refused(request, settings, exc, form)
    url = f"/sightings/{result.sighting.id}"
    if _wants_json(request):
        return JSONResponse({"id": result.sighting.id, "url": url, "replayed": not result.created}, status_code=202)
    return hx_redirect(url + "?sent=1", request)


def _status_context(session: Any, user: User, sighting: Sighting) -> dict[str, Any]:
    photos = sightings.photos_of(session, sighting.pk)
    progress = sightings.progress_of(session, sighting)
    ranked, waiting = sightings.ranked_candidates(session, user, sighting.id)  # type: ignore[arg-type]
    return {"sighting": sighting, "progress": progress, "poll_seconds": POLL_SECONDS, "photos": photos,
            "photo_state": sightings.photo_progress, "waiting": waiting,
            "ranked": ranked if user.has_role(Role.manager) else None,
            "probes": sightings.probes_of(session, sighting.pk),
            "positions": {p.id: p.position for p in photos},
            "can_retry": user.has_role(Role.manager) and progress.status == "failed"}


@router.get("/sightings/{sighting_id}")
def read_sighting(request: Request, session: SessionDep, user: CurrentUser, sighting_id: Id,
                  sent: bool = False) -> Response:
    """One sighting: its photos, the faces found, and live status until matching is done."""
    sighting = _get(session, user, sighting_id)
    return render(request, "sighting.html", {**_status_context(session, user, sighting), "sent": sent})


@router.get("/sightings/{sighting_id}/status")
def read_sighting_status(request: Request, session: SessionDep, user: CurrentUser, sighting_id: Id) -> Response:
    """The live status fragment; answers 286 (htmx stops polling) once matching is done."""
    ctx = _status_context(session, user, _get(session, user, sighting_id))
    return render(request, "_sighting_status.html", ctx,
                  status_code=STOP_POLLING if ctx["progress"].done else 200)


@router.post("/sightings/{sighting_id}/retry")
def create_retry(request: Request, session: SessionDep, user: ManagerUser, sighting_id: Id) -> Response:
    """Managers: run a failed matching job again."""
    try:
        sightings.retry_matching(session, user, sighting_id, ip=client_ip(request))
    except sightings.SightingRejected as exc:
        raise HTTPException(409, exc.message) from exc
    return hx_redirect(f"/sightings/{sighting_id}", request)
