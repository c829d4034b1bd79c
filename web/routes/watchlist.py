"""Watchlist pages (managers): list, create, edit, close subjects; enrol reference photos; ZIP import."""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import File, Form, HTTPException, Query, Request, Response, UploadFile
from pydantic import ValidationError

from triage import watchlist
from triage.gallery import is_searchable, reference_photo_searchable
from triage.models import ImportStatus, Subject, User, WatchlistImport
from triage.transaction import checkpoint, discard, record_refusal
from triage.watchlist import bulk_import
from triage.watchlist.history import first_photos, subject_history
from web.flash import taken, tell
from web.htmx import STOP_POLLING, hx_redirect, is_htmx
from web.templating import render
from webcommon import routing
from webcommon.deps import Id, ManagerUser, PageNumber, PipelineDep, SessionDep, SettingsDep, StoreDep, client_ip
from webcommon.uploads import read_capped

router = routing.router(tags=["watchlist"])

PAGE_SIZE = 25
MAX_ZIP_BYTES = 500_000_000
FORM_FIELDS = ("name", "aliases", "case_ref", "priority", "notes", "expires_on")


def _errors(exc: ValidationError) -> dict[str, str]:
    out: dict[str, str] = {}
    for e in exc.errors():
        loc = str(e["loc"][0]) if e.get("loc") else "form"
        out.setdefault(loc, str(e.get("msg", "")).removeprefix("Value error, "))
    return out


def _get(session: Any, subject_id: Id) -> Subject:
    try:
        return watchlist.get_subject(session, subject_id)
    except watchlist.SubjectNotFound as exc:
        raise HTTPException(404, str(exc)) from exc


def _subject_page(request: Request, session: Any, subject: Subject, status_code: int = 200,
                  **extra: Any) -> Response:
    photos = watchlist.reference_photos(session, subject.pk)
    searched = {p.id: reference_photo_searchable(p.iod_px, p.blur, p.yaw_deg, p.quality_issues) for p in photos}
    ctx = {"subject": subject, "photos": photos, "searched": searched,
           "display_status": watchlist.display_status(subject),
           "searchable": is_searchable(subject), "close_statuses": [s.value for s in watchlist.CLOSING_STATUSES],
           "history": subject_history(session, subject.id),  # type: ignore[arg-type]
           "flashes": taken(request, session)}
    ctx.update(extra)
    return render(request, "subject.html", ctx, status_code=status_code)


@router.get("/watchlist")
def read_watchlist(request: Request, session: SessionDep, user: ManagerUser,
                   q: Annotated[str, Query(max_length=200)] = "", status: str = "",
                   page: Annotated[PageNumber, Query()] = 1) -> Response:
    """The subjects: search, filter by status, page."""
    status = status if status in watchlist.STATUS_FILTERS else ""
    rows, count = watchlist.list_subjects(session, q=q, status=status, offset=(page - 1) * PAGE_SIZE,
                                          limit=PAGE_SIZE)
    ctx = {"rows": [(s, n, watchlist.display_status(s)) for s, n in rows], "count": count, "q": q,
           "thumbs": first_photos(session, [s.id for s, _ in rows]),  # type: ignore[misc]
           "status": status, "page": page, "pages": max(1, -(-count // PAGE_SIZE)),
           "status_filters": watchlist.STATUS_FILTERS}
    name = "_watchlist_rows.html" if is_htmx(request) and request.headers.get("HX-Target") == "subject-rows" \
        else "watchlist.html"
    return render(request, name, ctx)


@router.get("/watchlist/new")
def read_new_subject(request: Request, user: ManagerUser) -> Response:
    """The form for a new subject."""
    return _subject_form(request, None, {"priority": 3})


def _subject_form(request: Request, subject: Subject | None, values: dict[str, Any],
                  errors: dict[str, str] | None = None, status_code: int = 200) -> Response:
    return render(request, "subject_form.html", {"subject": subject, "values": values, "errors": errors or {}},
                  status_code=status_code)


def _form_values(name: str, aliases: str, case_ref: str, priority: str, notes: str, expires_on: str) -> dict[str, Any]:
    return {"name": name, "aliases": aliases, "case_ref": case_ref, "priority": priority, "notes": notes,
            "expires_on": expires_on or None}


@router.post("/watchlist/new")
def create_subject(request: Request, session: SessionDep, user: ManagerUser,
                   name: Annotated[str, Form()] = "", aliases: Annotated[str, Form()] = "",
                   case_ref: Annotated[str, Form()] = "", priority: Annotated[str, Form()] = "3",
                   notes: Annotated[str, Form()] = "", expires_on: Annotated[str, Form()] = "") -> Response:
    """Create a subject, then go to its page to add reference photos."""
    values = _form_values(name, aliases, case_ref, priority, notes, expires_on)
    try:
        data = watchlist.SubjectCreate(**values)
    except ValidationError as exc:
        return _subject_form(request, None, values, _errors(exc), 422)
    subject = watchlist.create_subject(session, data, user, ip=client_ip(request))
    return hx_redirect(f"/watchlist/{subject.id}", request)


def _import_form(request: Request, session: Any, error: str = "", status_code: int = 200,
                 form: dict[str, str] | None = None) -> Response:
    return render(request, "watchlist_import.html", {
        "error": error, "form": form or {}, "imports": [(i, bulk_import.progress_of(session, i))
                                                        for i in bulk_import.recent_imports(session)]},
        status_code=status_code)


@router.get("/watchlist/import")
def read_import(request: Request, session: SessionDep, user: ManagerUser) -> Response:
    """The ZIP import form, and the recent imports."""
    return _import_form(request, session)


@router.post("/watchlist/import")
def create_import(request: Request, session: SessionDep, settings: SettingsDep, user: ManagerUser,
                  archive: Annotated[UploadFile | None, File()] = None,
                  include: Annotated[str, Form(max_length=200)] = "",
                  targets: Annotated[str, Form(max_length=watchlist.MAX_TARGETS_TEXT)] = "") -> Response:
    """Check the ZIP and the subjects named for it, keep it; the import's page shows the preview to confirm."""
    data = archive.file.read(MAX_ZIP_BYTES + 1) if archive is not None else b""
    error = _zip_problem(data)
    if not error:
        try:
            row = bulk_import.stage_zip_import(session, settings, user, data,
                                                    (archive.filename if archive else "") or "upload.zip",
                                                    include, targets, ip=client_ip(request))
        except watchlist.WatchlistError as exc:
            error = str(exc)
    if error:
        discard(session)
        return _import_form(request, session, error, status_code=422, form={"include": include, "targets": targets})
    return hx_redirect(f"/watchlist/imports/{row.id}", request)


def _zip_problem(data: bytes) -> str:
    if not data:
        return "Choose a ZIP file."
    if len(data) > MAX_ZIP_BYTES:
        return f"The ZIP is larger than {MAX_ZIP_BYTES // 1_000_000} MB; use `miatari watchlist import` instead."
    return ""


def _get_import(session: Any, import_id: Id) -> WatchlistImport:
    row = session.get(WatchlistImport, import_id)
    if row is None:
        raise HTTPException(404, "No such import.")
    return row


def _import_context(session: Any, row: WatchlistImport, settings: Any = None) -> dict[str, Any]:
    ctx: dict[str, Any] = {"imp": row, "progress": bulk_import.progress_of(session, row),
                           "by": session.get(User, row.created_by), "poll_seconds": 2, "preview": None,
                           "preview_error": ""}
    if settings is not None and row.status == ImportStatus.pending.value:
        try:
            ctx["preview"] = bulk_import.preview(session, settings, row)
        except watchlist.WatchlistError as exc:
            ctx["preview_error"] = str(exc)
    return ctx


@router.get("/watchlist/imports/{import_id}")
def read_import_status_page(request: Request, session: SessionDep, settings: SettingsDep, user: ManagerUser,
                            import_id: Id) -> Response:
    """One ZIP import: its preview to confirm, its progress while the job runs, then what was enrolled and why not."""
    row = _get_import(session, import_id)
    bulk_import.mark_seen(session, row, user)
    return render(request, "watchlist_import_status.html", _import_context(session, row, settings))


def _import_action(request: Request, session: Any, settings: Any, user: User, import_id: int, op: Any) -> Response:
    try:
        op(session, settings, user, import_id, ip=client_ip(request))
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from None
    except watchlist.WatchlistError as exc:
        record_refusal(session, exc)
        ctx = _import_context(session, _get_import(session, import_id), settings)
        return render(request, "watchlist_import_status.html", {**ctx, "error": str(exc)},
                      status_code=409)
    return hx_redirect(f"/watchlist/imports/{import_id}" if op is bulk_import.confirm_import
                       else "/watchlist/import", request)


@router.post("/watchlist/imports/{import_id}/confirm")
def update_import_confirm(request: Request, session: SessionDep, settings: SettingsDep, user: ManagerUser,
                          import_id: Id) -> Response:
    """Confirm a previewed import: its job is queued and enrols the photos as the preview said."""
    return _import_action(request, session, settings, user, import_id, bulk_import.confirm_import)


@router.post("/watchlist/imports/{import_id}/cancel")
def delete_import(request: Request, session: SessionDep, settings: SettingsDep, user: ManagerUser,
                  import_id: Id) -> Response:
    """Drop a previewed import that was not confirmed; nothing of it was enrolled."""
    return _import_action(request, session, settings, user, import_id, bulk_import.cancel_import)


@router.get("/watchlist/imports/{import_id}/status")
def read_import_status(request: Request, session: SessionDep, user: ManagerUser, import_id: Id) -> Response:
    """The live fragment; answers 286 (htmx stops polling) once the import is over (then seen: see the page)."""
    ctx = _import_context(session, _get_import(session, import_id))
    if ctx["progress"].done:
        bulk_import.mark_seen(session, ctx["imp"], user)
    return render(request, "_watchlist_import_status.html", ctx,
                  status_code=STOP_POLLING if ctx["progress"].done else 200)


@router.get("/watchlist/{subject_id}")
def read_subject(request: Request, session: SessionDep, user: ManagerUser, subject_id: Id) -> Response:
    """A subject, its reference photos with their quality, and the actions on it."""
    return _subject_page(request, session, _get(session, subject_id))


@router.get("/watchlist/{subject_id}/edit")
def read_edit_subject(request: Request, session: SessionDep, user: ManagerUser, subject_id: Id) -> Response:
    """The form to edit a subject."""
    subject = _get(session, subject_id)
    values = {k: getattr(subject, k) for k in FORM_FIELDS}
    return _subject_form(request, subject, values)


@router.post("/watchlist/{subject_id}/edit")
def update_subject(request: Request, session: SessionDep, user: ManagerUser, subject_id: Id,
                   name: Annotated[str, Form()] = "", aliases: Annotated[str, Form()] = "",
                   case_ref: Annotated[str, Form()] = "", priority: Annotated[str, Form()] = "3",
                   notes: Annotated[str, Form()] = "", expires_on: Annotated[str, Form()] = "") -> Response:
    """Save a subject's fields."""
    subject = _get(session, subject_id)
    values = _form_values(name, aliases, case_ref, priority, notes, expires_on)
    try:
        data = watchlist.SubjectUpdate(**values)
        if not data.name or not data.case_ref:
            raise watchlist.WatchlistError("Name and case reference are required.")
        watchlist.update_subject(session, subject_id, data, user, ip=client_ip(request))
    except ValidationError as exc:
        return _subject_form(request, subject, values, _errors(exc), 422)
    except watchlist.WatchlistError as exc:
        record_refusal(session, exc)
        return _subject_form(request, subject, values, {"form": str(exc)}, 409)
    return hx_redirect(f"/watchlist/{subject_id}", request)


@router.get("/watchlist/{subject_id}/close")
def read_close_subject(request: Request, session: SessionDep, user: ManagerUser, subject_id: Id,
                       status: Annotated[str, Query(max_length=20)] = "",
                       reason: Annotated[str, Query(max_length=500)] = "") -> Response:
    """The confirmation step before a subject is closed (it works without JavaScript)."""
    subject = _get(session, subject_id)
    if status not in [s.value for s in watchlist.CLOSING_STATUSES]:
        return _subject_page(request, session, subject, 422, error="Choose why the subject is closed.")
    return render(request, "subject_close.html", {"subject": subject, "status": status, "reason": reason})


@router.post("/watchlist/{subject_id}/close")
def close_subject(request: Request, session: SessionDep, user: ManagerUser, subject_id: Id,
                  status: Annotated[str, Form()] = "", reason: Annotated[str, Form(max_length=500)] = "",
                  confirm: Annotated[str, Form()] = "") -> Response:
    """Close a subject (after the confirmation step): out of the gallery at once; its open tasks are withdrawn."""
    subject = _get(session, subject_id)
    if confirm != "yes":
        return _subject_page(request, session, subject, 422,
                             error="Nothing was closed: confirm on the confirmation page first.")
    try:
        watchlist.close_subject(session, subject_id, status, user, reason, ip=client_ip(request))
    except watchlist.WatchlistError as exc:
        record_refusal(session, exc)
        return _subject_page(request, session, subject, 409, error=str(exc))
    return hx_redirect(f"/watchlist/{subject_id}?closed=1", request)


def _face_choices(faces: list[Any]) -> list[dict[str, Any]]:
    return [{"index": f.index, "number": n + 1,
             "chip": "data:image/png;base64," + base64.b64encode(f.face_chip_png).decode()}
            for n, f in enumerate(faces)]


def _enrol(session: SessionDep, store: StoreDep, pipeline: PipelineDep, user: User, subject_id: int, data: bytes,
           view: str, face_index: str, ip: str) -> bool:
    chosen = int(face_index) if face_index.strip().isdigit() else None
    analysis = pipeline.analyze_for_enrolment(data)
    _, created = watchlist.enrol_reference_photo(session, store, subject_id, analysis, user,
                                                 face_index=chosen, view=view, ip=ip)
    return created


@router.post("/watchlist/{subject_id}/photos")
def create_reference_photo(request: Request, session: SessionDep, store: StoreDep, pipeline: PipelineDep,
                           settings: SettingsDep, user: ManagerUser, subject_id: Id,
                           photo: Annotated[UploadFile | None, File()] = None,
                           view: Annotated[str, Form(max_length=40)] = "",
                           face_index: Annotated[str, Form()] = "") -> Response:
    """Enrol a reference photo; a photo with no face, or several, is refused with the reason."""
    subject = _get(session, subject_id)
    checkpoint(session)  # the analysis is slow: hold no transaction (on SQLite, no write lock) meanwhile
    data = read_capped(photo, settings)
    if not data:
        return _subject_page(request, session, subject, 422, error="Choose a photo to upload.")
    try:
        created = _enrol(session, store, pipeline, user, subject_id, data, view, face_index, client_ip(request))
    except watchlist.EnrolmentRefused as exc:
        record_refusal(session, exc)
        return _subject_page(request, session, subject, 422, error=str(exc),
                             face_choices=_face_choices(exc.faces), last_view=view)
    tell(request, session, "Reference photo enrolled: the matcher searches it from now on." if created
         else "This photo was already enrolled for this subject: nothing changed.")
    return hx_redirect(f"/watchlist/{subject_id}#subject-photos", request)


