"""Pictures and CSV exports: the same bytes for a page (cookie) and an API caller (bearer token).

Each handler answers at its ``/api`` address (in the OpenAPI document) and at the
address the pages link to; authentication already takes either credential, and a
GET needs no CSRF token.  Access is checked per record, so someone else's record
answers exactly like a missing one.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Annotated, Any

from fastapi import HTTPException, Query, Request, Response

from api.responses import COMMON_RESPONSES
from triage import audit, flags, review, sightings
from triage.models import ReferencePhoto
from webcommon import routing
from webcommon.deps import CurrentUser, Id, ManagerUser, Position, RecognizerUser, SessionDep, StoreDep, client_ip

router = routing.router()

PRIVATE = {"Cache-Control": "private, no-store"}
NO_STORE = {"Cache-Control": "no-store"}
REFERENCE_KINDS = {"image": "image_sha256", "eyes": "eye_crop_sha256", "face": "face_chip_sha256"}
AUDIT_CSV_NAME = "miatari-audit.csv"


def _both(api_path: str | None, web_path: str | None, *, tags: list[str | Enum],
          media: tuple[str, ...] = ("image/png",)) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Serve one handler at its API address (documented) and at its page address."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        if api_path is not None:
            router.add_api_route(api_path, fn, methods=["GET"], response_class=Response, tags=tags,
                                 responses={**COMMON_RESPONSES, 200: {"content": {m: {} for m in media}}})
        if web_path is not None:
            router.add_api_route(web_path, fn, methods=["GET"], include_in_schema=False)
        return fn

    return register


def _image(session: SessionDep, store: StoreDep, sha: str, headers: dict[str, str]) -> Response:
    data, media_type = sightings.displayable_image(session, store, sha)
    return Response(data, media_type=media_type, headers=headers)


@_both("/api/sightings/{sighting_id}/photos/{position}", "/sightings/{sighting_id}/photos/{position}",
       tags=["sightings"], media=("image/jpeg", "image/png"))
def read_sighting_photo(session: SessionDep, store: StoreDep, user: CurrentUser, sighting_id: Id,
                        position: Position) -> Response:
    """One photo of a sighting you may see."""
    try:
        return _image(session, store, sightings.image_sha_for(session, user, sighting_id, position), PRIVATE)
    except sightings.SightingNotFound as exc:
        raise HTTPException(404, str(exc)) from exc


@_both("/api/sightings/probes/{probe_id}/{kind}", "/sightings/probes/{probe_id}/{kind}", tags=["sightings"])
def read_probe_image(session: SessionDep, store: StoreDep, user: CurrentUser, probe_id: Id, kind: str) -> Response:
    """A face found in a sighting you may see: its eye-region crop (eyes) or aligned face (face)."""
    try:
        return _image(session, store, sightings.probe_image_sha(session, user, probe_id, kind), PRIVATE)
    except sightings.SightingNotFound as exc:
        raise HTTPException(404, str(exc)) from exc


@_both("/api/review/slots/{slot_id}/images/{kind}", "/review/slots/{slot_id}/{kind}.png", tags=["review"],
       media=("image/png", "image/jpeg"))
def read_slot_image(request: Request, session: SessionDep, store: StoreDep, user: RecognizerUser, slot_id: Id,
                    kind: str) -> Response:
    """One picture of your task: probe-eyes, subject-eyes, or (after the reveal) probe-face, subject-face."""
    return _image(session, store, review.slot_image_sha(session, user, slot_id, kind, client_ip(request)), NO_STORE)


@_both(None, "/flags/{flag_id}/images/{kind}", tags=["flags"])
def read_flag_image(request: Request, session: SessionDep, store: StoreDep, user: CurrentUser, flag_id: Id,
                    kind: str) -> Response:
    """A picture of a flag's evidence: eye crops, full faces, or a sighting photo (sighting-N)."""
    try:
        ev = flags.evidence(session, flags.get_visible(session, user, flag_id, client_ip(request)))
    except flags.FlagError as exc:
        raise HTTPException(404, exc.message) from None
    return _image(session, store, _evidence_sha(session, ev, kind), NO_STORE)


def _evidence_sha(session: SessionDep, ev: flags.Evidence, kind: str) -> str:
    if kind in review.IMAGE_KINDS:
        return review.candidate_image_sha(session, ev.candidate, kind)
    photo = next((p for p in ev.photos if f"sighting-{p.position}" == kind), None)
    if photo is None:
        raise HTTPException(404, "No such picture.")
    return photo.image_sha256


def _reference_image(session: SessionDep, store: StoreDep, photo_id: int, kind: str,
                     subject_id: int | None = None) -> Response:
    photo = session.get(ReferencePhoto, photo_id)
    if photo is None or kind not in REFERENCE_KINDS or subject_id not in (None, photo.subject_id):
        raise HTTPException(404, "No such image.")
    return _image(session, store, getattr(photo, REFERENCE_KINDS[kind]), PRIVATE)


@_both("/api/subjects/{subject_id}/photos/{photo_id}/{kind}", None, tags=["subjects"],
       media=("image/png", "image/jpeg"))
def read_reference_image(session: SessionDep, store: StoreDep, user: ManagerUser, subject_id: Id, photo_id: Id,
                         kind: str) -> Response:
    """A reference photo (image), its eye-region crop (eyes) or its aligned face (face)."""
    return _reference_image(session, store, photo_id, kind, subject_id)


@_both(None, "/watchlist/photos/{photo_id}/{kind}", tags=["subjects"])
def read_reference_image_page(session: SessionDep, store: StoreDep, user: ManagerUser, photo_id: Id,
                              kind: str) -> Response:
    """A reference photo (image), its eye-region crop (eyes) or aligned face (face), for the subject page."""
    return _reference_image(session, store, photo_id, kind)


@_both("/api/audit/export.csv", "/audit/export.csv", tags=["audit"], media=("text/csv",))
def read_audit_export(request: Request, session: SessionDep, manager: ManagerUser,
                      query: Annotated[audit.AuditQuery, Query()]) -> Response:
    """The matching entries as CSV, oldest first (the export is itself recorded)."""
    body = audit.export_for(session, manager, query.filter(), client_ip(request))
    return Response(body, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{AUDIT_CSV_NAME}"'})
