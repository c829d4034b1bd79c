"""Review pages: the queue with its Next button, and one task with the eye crops side by side.

The task page shows nothing of the matcher's score or rank, the other
verdict, or whether the task is a known-answer pair.  Keys: N next, S same,
D different, C cannot tell, F reveal the full faces.
"""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from triage import review
from triage.transaction import record_refusal
from web.htmx import hx_redirect
from web.templating import render
from webcommon.deps import Id, RecognizerUser, SessionDep, SettingsDep, client_ip
from webcommon.errors import status_for

router = APIRouter(prefix="/review", tags=["review"])

RECORDED_MESSAGE = "Verdict recorded. Press N for the next task."


def _queue_page(request: Request, session: SessionDep, settings: SettingsDep, user: RecognizerUser,
                messages: list[dict[str, str]] | None = None, status_code: int = 200) -> Response:
    return render(request, "review.html", {
        "held": review.current_task(session, user),
        "waiting": review.queue_size_for(session, user, settings),
        "messages": messages or [],
    }, status_code=status_code)


@router.get("")
def read_queue(request: Request, session: SessionDep, settings: SettingsDep, user: RecognizerUser,
               recorded: int = 0) -> Response:
    """The recognizer's queue page with the Next button."""
    messages = [{"kind": "ok", "text": RECORDED_MESSAGE}] if recorded else []
    return _queue_page(request, session, settings, user, messages)


@router.post("/next")
def create_next(request: Request, session: SessionDep, settings: SettingsDep, user: RecognizerUser) -> Response:
    """Lease the next task and open it."""
    try:
        task = review.next_task(session, user, settings, ip=client_ip(request))
    except review.ReviewError as exc:
        record_refusal(session, exc)
        return _queue_page(request, session, settings, user, [{"kind": "error", "text": exc.message}],
                           status_for(exc.code))
    if task is None:
        return _queue_page(request, session, settings, user,
                           [{"kind": "info", "text": "Nothing in the queue for you right now."}])
    return hx_redirect(f"/review/slots/{task.slot_id}", request)


def _task_page(request: Request, task: review.Task, messages: list[dict[str, str]] | None = None,
               status_code: int = 200) -> Response:
    return render(request, "review_task.html", {
        "slot_id": task.slot_id,
        "lease_expires_at": task.lease_expires_at,
        "revealed": task.slot.revealed_full_faces,
        # A fresh key per page: a double click or a resent form is the same verdict, stored once.
        "idempotency_key": uuid.uuid4().hex,
        "messages": messages or [],
    }, status_code=status_code)


@router.get("/slots/{slot_id}")
def read_task(request: Request, slot_id: Id, session: SessionDep, settings: SettingsDep,
              user: RecognizerUser) -> Response:
    """One task you hold: the two eye crops side by side."""
    try:
        task = review.held_task(session, user, slot_id, client_ip(request))
    except review.ReviewError as exc:
        record_refusal(session, exc)
        return _queue_page(request, session, settings, user, [{"kind": "error", "text": exc.message}],
                           status_for(exc.code))
    return _task_page(request, task)


@router.post("/slots/{slot_id}/reveal")
def create_reveal(request: Request, slot_id: Id, session: SessionDep, settings: SettingsDep,
                  user: RecognizerUser) -> Response:
    """Reveal the full faces (recorded with your verdict)."""
    try:
        review.reveal_full_faces(session, user, slot_id, client_ip(request))
    except review.ReviewError as exc:
        record_refusal(session, exc)
        return _queue_page(request, session, settings, user, [{"kind": "error", "text": exc.message}],
                           status_for(exc.code))
    return hx_redirect(f"/review/slots/{slot_id}", request)


@router.post("/slots/{slot_id}/verdict")
def create_verdict(request: Request, slot_id: Id, session: SessionDep, settings: SettingsDep,
                   user: RecognizerUser, verdict: str = Form(""), note: str = Form(""),
                   idempotency_key: str = Form("")) -> Response:
    """Give your verdict; then back to the queue."""
    try:
        review.submit_verdict(session, user, slot_id, verdict, note, idempotency_key or None, client_ip(request),
                              settings=settings)
    except review.ReviewError as exc:
        record_refusal(session, exc)
        if exc.code == "invalid":
            # Bad input on a task still held: show it again with the error, nothing stored.
            task = review.current_task(session, user)
            if task is not None and task.slot_id == slot_id:
                return _task_page(request, task, [{"kind": "error", "text": exc.message}], 422)
        return _queue_page(request, session, settings, user, [{"kind": "error", "text": exc.message}],
                           status_for(exc.code))
    return hx_redirect("/review?recorded=1", request)


