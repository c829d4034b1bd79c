"""Flags pages: the arrest flags you may see, each with its evidence and its lifecycle actions."""

from __future__ import annotations

from fastapi import Form, HTTPException, Request
from fastapi.responses import Response

from triage import flags
from triage.transaction import record_refusal
from web.htmx import hx_redirect
from web.templating import render
from webcommon import routing
from webcommon.deps import CurrentUser, Id, SessionDep, client_ip
from webcommon.errors import status_for

router = routing.router(prefix="/flags", tags=["flags"])

CLOSE_REASONS = [("arrested", "Arrested"), ("not_located", "Not located"), ("withdrawn", "Withdrawn")]


def _flag_page(request: Request, session: SessionDep, flag_id: Id, user: CurrentUser,
               messages: list[dict[str, str]] | None = None, status_code: int = 200) -> Response:
    try:
        flag = flags.get_visible(session, user, flag_id, client_ip(request))
    except flags.FlagError as exc:
        raise HTTPException(404, exc.message) from None
    ev = flags.evidence(session, flag)
    return render(request, "flag.html", {"ev": ev,
                                         "warning": flags.LEAD_WARNING, "close_reasons": CLOSE_REASONS,
                                         "may_report": flags.may_report(user, ev.sighting),
                                         "messages": messages or []}, status_code=status_code)


@router.get("")
def read_flags(request: Request, session: SessionDep, user: CurrentUser, status: str = "") -> Response:
    """The flags you may see, newest first."""
    rows = flags.visible_flags(session, user, status or None)
    return render(request, "flags.html", {
        "rows": flags.evidence_many(session, rows), "warning": flags.LEAD_WARNING, "status": status})


@router.get("/{flag_id}")
def read_flag(request: Request, flag_id: Id, session: SessionDep, user: CurrentUser) -> Response:
    """One flag with its evidence."""
    return _flag_page(request, session, flag_id, user)


@router.post("/{flag_id}/acknowledge")
def update_flag_acknowledge(request: Request, flag_id: Id, session: SessionDep, user: CurrentUser) -> Response:
    """Acknowledge a raised flag."""
    try:
        flags.acknowledge(session, user, flag_id, client_ip(request))
    except flags.FlagError as exc:
        record_refusal(session, exc)
        if exc.code == "not_found":
            raise HTTPException(404, exc.message) from None
        return _flag_page(request, session, flag_id, user, [{"kind": "error", "text": exc.message}],
                          status_for(exc.code))
    return hx_redirect(f"/flags/{flag_id}", request)


@router.post("/{flag_id}/close")
def update_flag_close(request: Request, flag_id: Id, session: SessionDep, user: CurrentUser,
                      reason: str = Form(""), note: str = Form("")) -> Response:
    """Close an acknowledged flag with its reason."""
    try:
        flags.close(session, user, flag_id, reason, note, client_ip(request))
    except flags.FlagError as exc:
        record_refusal(session, exc)
        if exc.code == "not_found":
            raise HTTPException(404, exc.message) from None
        return _flag_page(request, session, flag_id, user, [{"kind": "error", "text": exc.message}],
                          status_for(exc.code))
    return hx_redirect(f"/flags/{flag_id}", request)


@router.post("/{flag_id}/report")
def create_flag_report(request: Request, flag_id: Id, session: SessionDep, user: CurrentUser,
                       outcome: str = Form(""), note: str = Form("")) -> Response:
    """The sighting's officer reports what happened and proposes an outcome; the managers are told."""
    try:
        flags.report(session, user, flag_id, outcome, note, client_ip(request))
    except flags.FlagError as exc:
        record_refusal(session, exc)
        if exc.code == "not_found":
            raise HTTPException(404, exc.message) from None
        return _flag_page(request, session, flag_id, user, [{"kind": "error", "text": exc.message}],
                          status_for(exc.code))
    return hx_redirect(f"/flags/{flag_id}#reports", request)


