"""Sightings pages: the upload form (phone and desktop) and the officer's own sightings with live status."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse

from triage import sightings
from triage.deps import (
    CurrentUser,
    Forbidden,
    Id,
    ManagerUser,
    OfficerUser,
    PageNumber,
    Position,
    SessionDep,
    SettingsDep,
    audit_refusal,
    client_ip,
)
from triage.models import Role, Sighting, User
from web.htmx import STOP_POLLING, hx_redirect
from web.templating import render

router = APIRouter(tags=["sightings"])

PAGE_SIZE = 25
POLL_SECONDS = 2


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _require_viewer(request: Request, user: User) -> None:
    if not user.has_role(Role.officer, Role.manager):
        audit_refusal(request, "access", user, {"needs": ["officer", "manager"]})
        raise Forbidden("This needs the role officer or manager.")


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
    return render(request, "sighting_new.html", ctx, status_code=status_code)  # type: ignore[no-any-return]


@router.get("/sightings")
def read_sightings(request: Request, session: SessionDep, user: CurrentUser,
                   page: Annotated[PageNumber, Query()] = 1, everyone: bool = False) -> Response:
    """Your sightings, newest first, with how far each got (managers may see everyone's)."""
    _require_viewer(request, user)
    rows, count = sightings.list_for(session, user, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE,
                                     everyone=everyone)
    progress = sightings.progress_of_many(session, rows)  # set-based: not several queries per row
    items = [(s, progress[s.id]) for s in rows]  # type: ignore[index]
    ctx = {"items": items, "count": count, "page": page, "pages": max(1, -(-count // PAGE_SIZE)),
           "everyone": everyone and user.has_role(Role.manager)}
    return render(request, "sightings.html", ctx)  # type: ignore[no-any-return]


@router.get("/sightings/new")
def read_new_sighting(request: Request, settings: SettingsDep, user: OfficerUser) -> Response:
    """The upload form: camera or files, location, time, note."""
    return _new_form(request, settings)


@router.post("/sightings")
def create_sighting(
    request: Request, session: SessionDep, settings: SettingsDep, user: OfficerUser,
    photos: Annotated[list[UploadFile] | None, File()] = None,
    observed_at: Annotated[str, Form()] = "", tz_offset: Annotated[str, Form()] = "",
    location_text: Annotated[str, Form()] = "", latitude: Annotated[str, Form()] = "",
    longitude: Annotated[str, Form()] = "", note: Annotated[str, Form()] = "",
    idempotency_key: Annotated[str, Form()] = "",
) -> Response:
    """Store the sighting and answer at once; matching runs in the background."""
    values = {"observed_at": observed_at, "location_text": location_text, "latitude": latitude,
              "longitude": longitude, "note": note, "idempotency_key": idempotency_key}
    try:
        offset = int(tz_offset) if tz_offset.strip().lstrip("-").isdigit() else None
        data = sightings.SightingInput(
            photos=[sightings.PhotoUpload(f.file.read(settings.max_upload_bytes + 1), f.filename or "", f.size)
                    for f in (photos or []) if f.filename or f.size],
            observed_at=sightings.parse_observed_at(observed_at, offset),
            location_text=location_text, latitude=sightings.parse_coordinate(latitude, "latitude", 90.0),
            longitude=sightings.parse_coordinate(longitude, "longitude", 180.0), note=note,
            idempotency_key=request.headers.get("Idempotency-Key") or idempotency_key.strip() or None)
        result = sightings.create_sighting(session, request.app.state.store, settings, user, data,
                                           ip=client_ip(request))
    except sightings.SightingRejected as exc:
        status = {"image_too_large": 413, "unsupported_format": 415, "idempotency_conflict": 409}.get(exc.code, 422)
        if _wants_json(request):
            return JSONResponse({"detail": exc.message, "field": exc.field, "code": exc.code}, status_code=status)
        return _new_form(request, settings, error=exc.message, field=exc.field, values=values, status_code=status)
    url = f"/sightings/{result.sighting.id}"
    if _wants_json(request):
        return JSONResponse({"id": result.sighting.id, "url": url, "replayed": not result.created}, status_code=202)
    return hx_redirect(url, request)


def _status_context(session: Any, user: User, sighting: Sighting) -> dict[str, Any]:
    photos = sightings.photos_of(session, sighting.id)  # type: ignore[arg-type]
    progress = sightings.progress_of(session, sighting)
    return {"sighting": sighting, "progress": progress, "poll_seconds": POLL_SECONDS, "photos": photos,
            "probes": sightings.probes_of(session, sighting.id),  # type: ignore[arg-type]
            "positions": {p.id: p.position for p in photos},
            "can_retry": user.has_role(Role.manager) and progress.status == "failed"}


@router.get("/sightings/{sighting_id}")
def read_sighting(request: Request, session: SessionDep, user: CurrentUser, sighting_id: Id) -> Response:
    """One sighting: its photos, the faces found, and live status until matching is done."""
    sighting = _get(session, user, sighting_id)
    return render(request, "sighting.html", _status_context(session, user, sighting))  # type: ignore[no-any-return]


@router.get("/sightings/{sighting_id}/status")
def read_sighting_status(request: Request, session: SessionDep, user: CurrentUser, sighting_id: Id) -> Response:
    """The live status fragment; answers 286 (htmx stops polling) once matching is done."""
    ctx = _status_context(session, user, _get(session, user, sighting_id))
    return render(request, "_sighting_status.html", ctx,  # type: ignore[no-any-return]
                  status_code=STOP_POLLING if ctx["progress"].done else 200)


@router.get("/sightings/{sighting_id}/photos/{position}")
def read_sighting_photo(request: Request, session: SessionDep, user: CurrentUser, sighting_id: Id,
                        position: Position) -> Response:
    """A photo of a sighting you may see."""
    try:
        sha = sightings.image_sha_for(session, user, sighting_id, position)
        data, media_type = sightings.displayable_image(session, request.app.state.store, sha)
    except sightings.SightingNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    return Response(data, media_type=media_type, headers={"Cache-Control": "private, no-store"})


@router.get("/sightings/probes/{probe_id}/{kind}")
def read_probe_image(request: Request, session: SessionDep, user: CurrentUser, probe_id: Id, kind: str) -> Response:
    """A face found in a sighting you may see: eye-region crop (eyes) or aligned face (face)."""
    try:
        sha = sightings.probe_image_sha(session, user, probe_id, kind)
        data, media_type = sightings.displayable_image(session, request.app.state.store, sha)
    except sightings.SightingNotFound as exc:
        raise HTTPException(404, str(exc)) from exc
    return Response(data, media_type=media_type, headers={"Cache-Control": "private, no-store"})


@router.post("/sightings/{sighting_id}/retry")
def create_retry(request: Request, session: SessionDep, user: ManagerUser, sighting_id: Id) -> Response:
    """Managers: run a failed matching job again."""
    try:
        sightings.retry_matching(session, user, sighting_id, ip=client_ip(request))
    except sightings.SightingRejected as exc:
        raise HTTPException(409, exc.message) from exc
    return hx_redirect(f"/sightings/{sighting_id}", request)
