"""Review pages: the queue with its Next button, and one task with the eye crops side by side.

One key per task: a verdict (S same, D different, C cannot tell) swaps the
next task into the task area at once (htmx; without JavaScript the form post
redirects to it).  The verdict is stored straight away but stays undoable
(U) for ``verdict_undo_seconds`` before it counts (``triage.review.pending``).
R gives the task back, Z zooms both crops, B raises their contrast and
brightness, F reveals the full faces.  The page renews the lease while the
person is at work (``/heartbeat``) and says so when it lapses, before anything
is typed.  Nothing of the matcher's score or rank, the other verdict, or
whether the task is a known-answer pair is shown.
"""

from __future__ import annotations

import uuid

from fastapi import Form, Request
from fastapi.responses import JSONResponse, Response
from sqlmodel import Session

from triage import review
from triage.clock import utcnow
from triage.config import Settings
from triage.db import reads_first
from triage.models import User
from triage.transaction import checkpoint, record_refusal
from web.htmx import hx_redirect, is_htmx
from web.templating import render
from webcommon import routing
from webcommon.deps import Id, RecognizerUser, SessionDep, SettingsDep, client_ip
from webcommon.errors import status_for

router = routing.router(prefix="/review", tags=["review"])

RECORDED_MESSAGE = "Verdict recorded. Press N for the next task."
EMPTY_MESSAGE = "Nothing in the queue for you right now."
Messages = list[dict[str, str]]


def _queue_page(request: Request, session: SessionDep, settings: SettingsDep, user: RecognizerUser,
                messages: Messages | None = None, status_code: int = 200) -> Response:
    return render(request, "review.html", {
        "held": review.current_task(session, user),
        "waiting": review.queue_size_for(session, user, settings),
        "done_today": review.done_today(session, user),
        "pending": review.pending_for(session, user, settings),
        "undo_seconds": settings.verdict_undo_seconds,
        "messages": messages or [],
    }, status_code=status_code)


def _task_context(session: Session, settings: Settings, user: User, task: review.Task | None,
                  messages: Messages | None) -> dict[str, object]:
    # The lease (or the refusal's entry) is stored for good first; what the page shows around the task
    # (counts, the verdict in its undo window) is then read without holding SQLite's write lock.
    checkpoint(session)
    reads_first(session)
    now = utcnow()
    ctx: dict[str, object] = {
        "task": task, "slot_id": task.slot_id if task else None, "messages": [], "task_messages": messages or [],
        "pending": review.pending_for(session, user, settings), "done_today": review.done_today(session, user),
        "waiting": review.queue_size_for(session, user, settings), "undo_seconds": settings.verdict_undo_seconds,
        # A fresh key per page: a double click or a resent form is the same verdict, stored once.
        "idempotency_key": uuid.uuid4().hex,
    }
    if task is not None:
        ctx.update(lease_expires_at=task.lease_expires_at, revealed=task.slot.revealed_full_faces,
                   lease_left=_seconds(task.lease_expires_at, now),
                   lease_limit_left=_seconds(review.lease_limit(task.slot, settings), now))
    return ctx


def _seconds(at: object, now: object) -> int:
    return max(0, int((review.as_utc(at) - now).total_seconds()))  # type: ignore[arg-type, operator]


def _task_area(request: Request, session: Session, settings: Settings, user: User, task: review.Task | None,
               messages: Messages | None = None, status_code: int = 200) -> Response:
    """The task (or the empty queue) as a whole page, or as the fragment htmx swaps into the task area."""
    ctx = _task_context(session, settings, user, task, messages)
    if is_htmx(request):
        # The address follows the task shown, without a history entry: Back leaves the review pages.
        url = f"/review/slots/{task.slot_id}" if task else "/review"
        return render(request, "_review_task.html", ctx, headers={"HX-Replace-Url": url})
    return render(request, "review_task.html", ctx, status_code=status_code)


def _after(request: Request, session: Session, settings: Settings, user: User,
           messages: Messages | None = None) -> Response:
    """What follows a verdict, a skip or an undo: the task they hold now, else the next one, else the queue."""
    try:
        task = review.next_task(session, user, settings, ip=client_ip(request))
    except review.ReviewError as exc:
        return _refused(request, session, settings, user, exc)
    if is_htmx(request):
        return _task_area(request, session, settings, user, task, messages)
    return hx_redirect(f"/review/slots/{task.slot_id}" if task else "/review?recorded=1", request)


def _refused(request: Request, session: Session, settings: Settings, user: User,
             exc: review.ReviewError) -> Response:
    record_refusal(session, exc)
    review.settle_due(session, settings, user)
    messages = [{"kind": "error", "text": exc.message}]
    if is_htmx(request):  # htmx swaps only a 2xx: the refusal is said in the task area
        return _task_area(request, session, settings, user, review.current_task(session, user), messages)
    return _queue_page(request, session, settings, user, messages, status_for(exc.code))


@router.get("")
def read_queue(request: Request, session: SessionDep, settings: SettingsDep, user: RecognizerUser,
               recorded: int = 0) -> Response:
    """The recognizer's queue page with the Next button."""
    review.settle_due(session, settings, user)
    messages = [{"kind": "ok", "text": RECORDED_MESSAGE}] if recorded else []
    return _queue_page(request, session, settings, user, messages)


@router.post("/next")
def create_next(request: Request, session: SessionDep, settings: SettingsDep, user: RecognizerUser) -> Response:
    """Lease the next task and open it."""
    review.settle_due(session, settings, user)
    try:
        task = review.next_task(session, user, settings, ip=client_ip(request))
    except review.ReviewError as exc:
        return _refused(request, session, settings, user, exc)
    if is_htmx(request):
        return _task_area(request, session, settings, user, task, None if task else [
            {"kind": "info", "text": EMPTY_MESSAGE}])
    if task is None:
        return _queue_page(request, session, settings, user, [{"kind": "info", "text": EMPTY_MESSAGE}])
    return hx_redirect(f"/review/slots/{task.slot_id}", request)


@router.get("/slots/{slot_id}")
def read_task(request: Request, slot_id: Id, session: SessionDep, settings: SettingsDep,
              user: RecognizerUser) -> Response:
    """One task you hold: the two eye crops side by side."""
    try:
        task = review.held_task(session, user, slot_id, client_ip(request))
    except review.ReviewError as exc:
        record_refusal(session, exc)
        if review.had_task(session, user, slot_id):
            # Back (or a reload) onto a task already answered or given back: the queue, not an error.
            return Response(status_code=303, headers={"Location": "/review"})
        return _queue_page(request, session, settings, user, [{"kind": "error", "text": exc.message}],
                           status_for(exc.code))
    return _task_area(request, session, settings, user, task)


@router.post("/slots/{slot_id}/reveal")
def create_reveal(request: Request, slot_id: Id, session: SessionDep, settings: SettingsDep,
                  user: RecognizerUser) -> Response:
    """Reveal the full faces (recorded with your verdict)."""
    try:
        review.reveal_full_faces(session, user, slot_id, client_ip(request))
    except review.ReviewError as exc:
        return _refused(request, session, settings, user, exc)
    if is_htmx(request):
        return _task_area(request, session, settings, user, review.held_task(session, user, slot_id))
    return hx_redirect(f"/review/slots/{slot_id}", request)


@router.post("/slots/{slot_id}/verdict")
def create_verdict(request: Request, slot_id: Id, session: SessionDep, settings: SettingsDep,
                   user: RecognizerUser, verdict: str = Form(""), note: str = Form(""),
                   idempotency_key: str = Form("")) -> Response:
    """Give your verdict (undoable for a few seconds); the next task follows at once."""
    try:
        review.submit_verdict(session, user, slot_id, verdict, note, idempotency_key or None, client_ip(request),
                              settings=settings, undo_seconds=settings.verdict_undo_seconds)
    except review.ReviewError as exc:
        task = review.current_task(session, user)
        if exc.code == "invalid" and task is not None and task.slot_id == slot_id:
            # Bad input on a task still held: show it again with the error, nothing stored.
            record_refusal(session, exc)
            return _task_area(request, session, settings, user, task, [{"kind": "error", "text": exc.message}], 422)
        return _refused(request, session, settings, user, exc)
    # The verdict is stored for good before anything else is tried: a refused next task cannot undo it.
    checkpoint(session)
    review.settle_due(session, settings, user)
    return _after(request, session, settings, user)


@router.post("/slots/{slot_id}/undo")
def create_undo(request: Request, slot_id: Id, session: SessionDep, settings: SettingsDep,
                user: RecognizerUser) -> Response:
    """Take back your last verdict while it is still undoable: that task is yours again."""
    try:
        review.undo_verdict(session, user, slot_id, settings, client_ip(request))
    except review.ReviewError as exc:
        return _refused(request, session, settings, user, exc)
    checkpoint(session)  # undone for good, whatever the next step says
    return _after(request, session, settings, user, [{"kind": "info", "text": "Verdict undone: give it again."}])


@router.post("/slots/{slot_id}/release")
def create_release(request: Request, slot_id: Id, session: SessionDep, settings: SettingsDep,
                   user: RecognizerUser) -> Response:
    """Give the task back at once (it goes to someone else); the next task follows."""
    try:
        review.release_task(session, user, slot_id, client_ip(request))
    except review.ReviewError as exc:
        return _refused(request, session, settings, user, exc)
    checkpoint(session)  # given back for good, whatever the next step says
    return _after(request, session, settings, user, [{"kind": "info", "text": "Task given back."}])


@router.post("/slots/{slot_id}/heartbeat")
def create_heartbeat(request: Request, slot_id: Id, session: SessionDep, settings: SettingsDep,
                     user: RecognizerUser) -> Response:
    """The page saw you at work: renew the lease (within its maximum); says how long is left, or that it lapsed."""
    review.settle_due(session, settings, user)
    try:
        slot = review.renew_lease(session, user, slot_id, settings, client_ip(request))
    except review.ReviewError as exc:
        record_refusal(session, exc)
        return JSONResponse({"state": exc.code, "message": exc.message}, status_code=status_for(exc.code))
    now = utcnow()
    return JSONResponse({"state": "held", "lease_left": _seconds(slot.lease_expires_at, now),
                         "lease_limit_left": _seconds(review.lease_limit(slot, settings), now)})


@router.post("/settle")
def create_settle(request: Request, session: SessionDep, settings: SettingsDep, user: RecognizerUser) -> Response:
    """Your verdicts whose undo window has passed count now (the page calls this when the window ends)."""
    return JSONResponse({"counted": review.settle_due(session, settings, user)})
