"""Subjects API: the watchlist the matcher searches (managers only)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import File, Form, HTTPException, Query, Request, Response, UploadFile
from pydantic import BaseModel

from api.responses import FieldProblem
from triage import watchlist
from triage.models import ReferencePhoto, Subject, SubjectStatus
from triage.transaction import checkpoint, record_refusal
from webcommon import routing
from webcommon.deps import Id, ManagerUser, PipelineDep, Position, SessionDep, SettingsDep, StoreDep, client_ip
from webcommon.uploads import read_capped

router = routing.router(prefix="/api/subjects", tags=["subjects"])


# Response schemas
class ReferencePhotoPublic(BaseModel):
    id: int
    subject_id: Id
    view: str
    face_index: int
    bbox: list[int]
    quality_ok: bool
    quality_issues: str
    iod_px: float
    blur: float
    yaw_deg: float
    detector: str
    created_at: dt.datetime
    image_url: str
    eye_crop_url: str
    face_chip_url: str


class SubjectPublic(BaseModel):
    id: int
    name: str
    aliases: str
    case_ref: str
    priority: int
    notes: str
    status: str
    expired: bool
    searchable: bool
    expires_on: dt.date | None
    created_at: dt.datetime
    updated_at: dt.datetime
    closed_at: dt.datetime | None
    photo_count: int


class SubjectDetail(SubjectPublic):
    photos: list[ReferencePhotoPublic]


class SubjectsPublic(BaseModel):
    data: list[SubjectPublic]
    count: int


class SubjectClose(BaseModel):
    status: SubjectStatus
    reason: str = ""


class FaceChoice(BaseModel):
    index: int
    bbox: list[int]


class EnrolmentRefusal(BaseModel):
    """422: the photo was refused (``faces`` lists those found), or the form's fields did not validate."""

    detail: str | list[FieldProblem]
    faces: list[FaceChoice] = []


def _subject_public(subject: Subject, photo_count: int) -> dict[str, Any]:
    from triage.gallery import is_searchable

    return {**subject.model_dump(include=set(SubjectPublic.model_fields)), "photo_count": photo_count,
            "expired": watchlist.is_expired(subject), "searchable": is_searchable(subject)}


def _photo_public(photo: ReferencePhoto) -> ReferencePhotoPublic:
    base = f"/api/subjects/{photo.subject_id}/photos/{photo.id}"
    return ReferencePhotoPublic(**photo.model_dump(include=set(ReferencePhotoPublic.model_fields)),
                                image_url=f"{base}/image", eye_crop_url=f"{base}/eyes", face_chip_url=f"{base}/face")


def _detail(session: Any, subject: Subject) -> SubjectDetail:
    photos = watchlist.reference_photos(session, subject.pk)
    return SubjectDetail(**_subject_public(subject, len(photos)), photos=[_photo_public(p) for p in photos])


def _get(session: Any, subject_id: Id) -> Subject:
    try:
        return watchlist.get_subject(session, subject_id)
    except watchlist.SubjectNotFound as exc:
        raise HTTPException(404, str(exc)) from exc


@router.get("", response_model=SubjectsPublic)
def read_subjects(session: SessionDep, user: ManagerUser,
                  q: Annotated[str, Query(max_length=200)] = "",
                  status: Annotated[str, Query(pattern="^(|" + "|".join(watchlist.STATUS_FILTERS) + ")$")] = "",
                  offset: Annotated[Position, Query()] = 0,
                  limit: Annotated[int, Query(ge=1, le=500)] = 50) -> Any:
    """List subjects: search by name, alias or case reference; filter by status; page."""
    rows, count = watchlist.list_subjects(session, q=q, status=status, offset=offset, limit=limit)
    return {"data": [_subject_public(s, n) for s, n in rows], "count": count}


@router.post("", response_model=SubjectDetail, status_code=201)
def create_subject(request: Request, session: SessionDep, user: ManagerUser, body: watchlist.SubjectCreate) -> Any:
    """Put a wanted person on the watchlist (add reference photos next)."""
    subject = watchlist.create_subject(session, body, user, ip=client_ip(request))
    return _detail(session, subject)


@router.get("/{subject_id}", response_model=SubjectDetail)
def read_subject(session: SessionDep, user: ManagerUser, subject_id: Id) -> Any:
    """One subject with its reference photos and their quality."""
    return _detail(session, _get(session, subject_id))


@router.patch("/{subject_id}", response_model=SubjectDetail)
def update_subject(request: Request, session: SessionDep, user: ManagerUser, subject_id: Id,
                   body: watchlist.SubjectUpdate) -> Any:
    """Edit a subject's fields (only those given)."""
    _get(session, subject_id)
    try:
        subject = watchlist.update_subject(session, subject_id, body, user, ip=client_ip(request))
    except watchlist.WatchlistError as exc:
        raise HTTPException(409, str(exc)) from exc
    return _detail(session, subject)


@router.post("/{subject_id}/close", response_model=SubjectDetail)
def close_subject(request: Request, session: SessionDep, user: ManagerUser, subject_id: Id,
                  body: SubjectClose) -> Any:
    """Close a subject (arrested or withdrawn): it leaves the gallery and its open tasks are withdrawn."""
    _get(session, subject_id)
    try:
        subject = watchlist.close_subject(session, subject_id, body.status, user, body.reason, ip=client_ip(request))
    except watchlist.WatchlistError as exc:
        raise HTTPException(409, str(exc)) from exc
    return _detail(session, subject)


@router.post("/{subject_id}/photos", response_model=ReferencePhotoPublic, status_code=201,
             responses={422: {"model": EnrolmentRefusal, "description": "no face, several faces, or not an image"}})
def create_reference_photo(request: Request, session: SessionDep, store: StoreDep, pipeline: PipelineDep,
                           settings: SettingsDep, user: ManagerUser, subject_id: Id,
                           photo: Annotated[UploadFile, File()], view: Annotated[str, Form(max_length=40)] = "",
                           face_index: Annotated[int | None, Form(ge=0, le=1000)] = None) -> Any:
    """Enrol a reference photo: the face is found, quality-checked and embedded; 200 if already enrolled."""
    _get(session, subject_id)
    checkpoint(session)  # the analysis is slow: hold no transaction (on SQLite, no write lock) meanwhile
    try:
        analysis = pipeline.analyze_for_enrolment(read_capped(photo, settings))
        ref, created = watchlist.enrol_reference_photo(session, store, subject_id, analysis, user,
                                                       face_index=face_index, view=view, ip=client_ip(request))
    except watchlist.EnrolmentRefused as exc:
        record_refusal(session, exc)
        faces = [FaceChoice(index=f.index, bbox=[int(v) for v in f.bbox]) for f in exc.faces]
        return Response(EnrolmentRefusal(detail=str(exc), faces=faces).model_dump_json(), status_code=422,
                        media_type="application/json")
    body = _photo_public(ref)
    return Response(body.model_dump_json(), status_code=201 if created else 200, media_type="application/json")


