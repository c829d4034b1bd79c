"""Sightings API: a field officer's upload, answered at once; matching runs as a job."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import Depends, File, Form, Header, HTTPException, Query, Request, Response, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from api.responses import FieldProblem
from triage import sightings
from triage.models import Sighting
from triage.transaction import record_refusal
from webcommon import routing
from webcommon.deps import (
    CurrentUser,
    Id,
    ManagerUser,
    OfficerUser,
    Position,
    SessionDep,
    SettingsDep,
    StoreDep,
    client_ip,
)
from webcommon.errors import status_for
from webcommon.uploads import photo_uploads

router = routing.router(prefix="/api/sightings", tags=["sightings"])

class SightingAccepted(BaseModel):
    id: int
    url: str
    status_url: str
    status: str
    replayed: bool


class SightingRejection(BaseModel):
    detail: str
    field: str
    code: str


class SightingRejectionOrProblems(BaseModel):
    """422: a refused upload (``field`` and ``code``), or fields that did not validate (a list)."""

    detail: str | list[FieldProblem]
    field: str | None = None
    code: str | None = None


class ProbePublic(BaseModel):
    id: int
    photo_position: int
    face_index: int
    quality_ok: bool
    quality_issues: str
    iod_px: float
    searched: bool  # false: too small to search (under MIATARI_MIN_FACE_IOD_PX between the eyes)
    eye_crop_url: str
    face_chip_url: str


class SightingPublic(BaseModel):
    id: int
    url: str
    status: str
    done: bool
    outcome: str
    observed_at: dt.datetime
    created_at: dt.datetime
    matched_at: dt.datetime | None
    location_text: str
    latitude: float | None
    longitude: float | None
    note: str
    photo_count: int
    faces_found: int
    faces_too_small: int
    candidates: int
    under_review: int
    cleared: int
    disputed: int
    flagged: int
    photo_urls: list[str]
    probes: list[ProbePublic]


class SightingsPublic(BaseModel):
    data: list[SightingPublic]
    count: int


def _public(session: Any, sighting: Sighting, progress: sightings.SightingProgress | None = None,
            photos: list[Any] | None = None, probe_rows: list[Any] | None = None) -> SightingPublic:
    progress = progress or sightings.progress_of(session, sighting)
    photos = photos if photos is not None else sightings.photos_of(session, sighting.pk)
    if probe_rows is None:
        probe_rows = sightings.probes_of(session, sighting.pk)
    positions = {p.id: p.position for p in photos}
    probes = [ProbePublic(id=p.pk, photo_position=positions.get(p.sighting_photo_id, 0),
                          face_index=p.face_index, quality_ok=p.quality_ok, quality_issues=p.quality_issues,
                          iod_px=round(p.iod_px, 1), searched=p.searched,
                          eye_crop_url=f"/api/sightings/probes/{p.id}/eyes",
                          face_chip_url=f"/api/sightings/probes/{p.id}/face")
              for p in probe_rows]
    return SightingPublic(
        id=sighting.pk, url=f"/sightings/{sighting.id}", status=progress.status, done=progress.done,
        outcome=progress.outcome, observed_at=sighting.observed_at, created_at=sighting.created_at,
        matched_at=sighting.matched_at, location_text=sighting.location_text, latitude=sighting.latitude,
        longitude=sighting.longitude, note=sighting.note, photo_count=len(photos), faces_found=progress.faces_found,
        faces_too_small=progress.faces_too_small, candidates=progress.candidates,
        under_review=progress.under_review, cleared=progress.cleared,
        disputed=progress.disputed, flagged=progress.flagged,
        photo_urls=[f"/api/sightings/{sighting.id}/photos/{p.position}" for p in photos], probes=probes)


def _sighting_form(
    observed_at: Annotated[str, Form(description="ISO 8601; defaults to now; no zone means UTC")] = "",
    location_text: Annotated[str, Form()] = "",
    latitude: Annotated[str, Form()] = "",
    longitude: Annotated[str, Form()] = "",
    note: Annotated[str, Form()] = "",
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> sightings.SightingForm:
    return sightings.SightingForm(observed_at=observed_at, location_text=location_text, latitude=latitude,
                                  longitude=longitude, note=note, idempotency_key=idempotency_key or "")


@router.post("", status_code=202, response_model=SightingAccepted,
             responses={409: {"model": SightingRejection}, 413: {"model": SightingRejection},
                        415: {"model": SightingRejection},
                        422: {"model": SightingRejectionOrProblems}})
def create_sighting(
    request: Request, session: SessionDep, store: StoreDep, settings: SettingsDep, user: OfficerUser,
    form: Annotated[sightings.SightingForm, Depends(_sighting_form)],
    photos: Annotated[list[UploadFile] | None, File(description="one or more photos (JPEG, PNG, WebP, HEIC)")] = None,
) -> Response:
    """Upload a sighting; 202 with its URL at once. A retry with the same Idempotency-Key returns the same sighting."""
    try:
        result = sightings.create_sighting(session, store, settings, user,
                                           form.to_input(photo_uploads(photos, settings)), ip=client_ip(request))
    except sightings.SightingRejected as exc:
        record_refusal(session, exc)
        body = SightingRejection(detail=exc.message, field=exc.field, code=exc.code)
        return JSONResponse(body.model_dump(), status_code=status_for(exc.code, 422))
    s = result.sighting
    body_ok = SightingAccepted(id=s.pk, url=f"/sightings/{s.id}", status_url=f"/api/sightings/{s.id}",
                               status=s.status, replayed=not result.created)
    return JSONResponse(body_ok.model_dump(), status_code=202, headers={"Location": f"/api/sightings/{s.id}"})


@router.get("", response_model=SightingsPublic)
def read_sightings(session: SessionDep, user: CurrentUser, offset: Annotated[Position, Query()] = 0,
                   limit: Annotated[int, Query(ge=1, le=200)] = 50, everyone: bool = False) -> Any:
    """Your own sightings, newest first (managers: everyone's with everyone=true)."""
    rows, count = sightings.list_for(session, user, offset=offset, limit=limit, everyone=everyone)
    # Set-based: a handful of queries for the page, not several per sighting.
    ids = sightings.ids(rows)
    progress = sightings.progress_of_many(session, rows)
    photos, probes = sightings.photos_of_many(session, ids), sightings.probes_of_many(session, ids)
    return {"data": [_public(session, s, progress[s.pk], photos[s.pk], probes[s.pk]) for s in rows],
            "count": count}


@router.get("/{sighting_id}", response_model=SightingPublic)
def read_sighting(session: SessionDep, user: CurrentUser, sighting_id: Id) -> Any:
    """A sighting's status: faces found, candidates under review, outcome."""
    try:
        return _public(session, sightings.get_for(session, user, sighting_id))
    except sightings.SightingNotFound as exc:
        raise HTTPException(404, str(exc)) from exc


@router.post("/{sighting_id}/retry", response_model=SightingPublic)
def create_retry(request: Request, session: SessionDep, user: ManagerUser, sighting_id: Id) -> Any:
    """Managers: put a sighting whose matching failed back in the queue."""
    try:
        sighting = sightings.retry_matching(session, user, sighting_id, ip=client_ip(request))
    except sightings.SightingRejected as exc:
        raise HTTPException(409, exc.message) from exc
    return _public(session, sighting)
