"""Audit pages: managers browse, filter, verify and export the log."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from triage import audit
from triage.deps import ManagerUser, SessionDep, client_ip
from triage.release import releases_session
from web.templating import render

router = APIRouter(prefix="/audit", tags=["audit"])
PAGE_SIZE = 100


def _filter(actor: str, action: str, object_type: str, object_id: str, outcome: str,
            since: dt.date | None, until: dt.date | None) -> audit.AuditFilter:
    def day(d: dt.date | None, plus: int = 0) -> dt.datetime | None:
        return dt.datetime.combine(d, dt.time(), tzinfo=dt.UTC) + dt.timedelta(days=plus) if d else None

    return audit.AuditFilter(actor=actor.strip(), action=action.strip(), object_type=object_type.strip(),
                             object_id=object_id.strip(), outcome=outcome.strip(), since=day(since),
                             until=day(until, 1))


Text = Annotated[str, Query(max_length=64)]


@router.get("")
@releases_session
def read_audit(request: Request, session: SessionDep, manager: ManagerUser, actor: Text = "", action: Text = "",
               object_type: Text = "", object_id: Text = "", outcome: Text = "", since: dt.date | None = None,
               until: dt.date | None = None, page: Annotated[int, Query(ge=1, le=100_000)] = 1) -> Response:
    """The audit log, newest first, with filters."""
    f = _filter(actor, action, object_type, object_id, outcome, since, until)
    entries, total = audit.search(session, f, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    query = request.url.query
    name = "_audit_rows.html" if request.headers.get("HX-Request") == "true" else "audit.html"
    return render(request, name, {  # type: ignore[no-any-return]
        "entries": entries, "total": total, "page": page, "pages": max(1, -(-total // PAGE_SIZE)),
        "filters": {"actor": actor, "action": action, "object_type": object_type, "object_id": object_id,
                    "outcome": outcome, "since": since or "", "until": until or ""},
        "query": query,
    })


@router.get("/export.csv")
@releases_session
def read_audit_export(request: Request, session: SessionDep, manager: ManagerUser, actor: Text = "",
                      action: Text = "", object_type: Text = "", object_id: Text = "", outcome: Text = "",
                      since: dt.date | None = None, until: dt.date | None = None) -> Response:
    """The matching entries as CSV (the export itself is recorded)."""
    f = _filter(actor, action, object_type, object_id, outcome, since, until)
    body = audit.export_for(session, manager, f, client_ip(request))
    return Response(body, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="miatari-audit.csv"'})


@router.get("/verify")
@releases_session
def read_audit_verify(request: Request, session: SessionDep, manager: ManagerUser) -> Response:
    """Check the hash chain now and show the result."""
    result = audit.verify(session)
    return render(request, "audit_verify.html", {"result": result})  # type: ignore[no-any-return]
