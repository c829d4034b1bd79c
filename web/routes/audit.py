"""Audit pages: managers browse, filter, verify and export the log."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import Response

from triage import audit
from web.htmx import is_htmx
from web.templating import render
from webcommon import routing
from webcommon.deps import ManagerUser, SessionDep

router = routing.router(prefix="/audit", tags=["audit"])
PAGE_SIZE = 100


@router.get("")
def read_audit(request: Request, session: SessionDep, manager: ManagerUser,
               query: Annotated[audit.AuditQuery, Query()],
               page: Annotated[int, Query(ge=1, le=100_000)] = 1) -> Response:
    """The audit log, newest first, with filters."""
    entries, total = audit.search(session, query.filter(), limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    name = "_audit_rows.html" if is_htmx(request) else "audit.html"
    return render(request, name, {"entries": entries, "total": total, "page": page,
                                  "pages": max(1, -(-total // PAGE_SIZE)), "filters": query.form_values(),
                                  "query": request.url.query})


@router.get("/verify")
def read_audit_verify(request: Request, session: SessionDep, manager: ManagerUser) -> Response:
    """Check the hash chain now and show the result."""
    result = audit.verify(session)
    return render(request, "audit_verify.html", {"result": result})
