"""Audit API (managers): list, filter, export CSV, verify."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel

from triage import audit
from triage.deps import ManagerUser, Position, SessionDep, client_ip
from triage.release import releases_session

router = APIRouter(prefix="/api/audit", tags=["audit"])


# Schemas
class AuditEntryPublic(BaseModel):
    id: int
    at: dt.datetime
    actor: str
    actor_id: int | None
    action: str
    object_type: str
    object_id: str
    outcome: str
    detail: dict[str, Any]
    ip: str
    hash: str


class AuditEntriesPublic(BaseModel):
    data: list[AuditEntryPublic]
    count: int


class AuditVerifyPublic(BaseModel):
    ok: bool
    checked: int
    bad_id: int | None
    reason: str


Text = Annotated[str, Query(max_length=64)]


def _filter(actor: str, action: str, object_type: str, object_id: str, outcome: str,
            since: dt.datetime | None, until: dt.datetime | None) -> audit.AuditFilter:
    return audit.AuditFilter(actor=actor, action=action, object_type=object_type, object_id=object_id,
                             outcome=outcome, since=since, until=until)


@router.get("")
@releases_session
def read_audit(session: SessionDep, manager: ManagerUser, actor: Text = "", action: Text = "",
               object_type: Text = "", object_id: Text = "", outcome: Text = "", since: dt.datetime | None = None,
               until: dt.datetime | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
               offset: Annotated[Position, Query()] = 0) -> AuditEntriesPublic:
    """Entries matching the filters, newest first; `count` is the total that match."""
    rows, total = audit.search(session, _filter(actor, action, object_type, object_id, outcome, since, until),
                               limit=limit, offset=offset)
    return AuditEntriesPublic(data=[AuditEntryPublic.model_validate(r, from_attributes=True) for r in rows],
                              count=total)


@router.get("/export.csv", response_class=Response, responses={200: {"content": {"text/csv": {}}}})
@releases_session
def read_audit_export(request: Request, session: SessionDep, manager: ManagerUser, actor: Text = "",
                      action: Text = "", object_type: Text = "", object_id: Text = "", outcome: Text = "",
                      since: dt.datetime | None = None, until: dt.datetime | None = None) -> Response:
    """The matching entries as CSV, oldest first (the export is itself recorded)."""
    f = _filter(actor, action, object_type, object_id, outcome, since, until)
    body = audit.export_for(session, manager, f, client_ip(request))
    return Response(body, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="miatari-audit.csv"'})


@router.get("/verify")
@releases_session
def read_audit_verify(session: SessionDep, manager: ManagerUser) -> AuditVerifyPublic:
    """Walk the hash chain and report the first bad entry, if any."""
    r = audit.verify(session)
    return AuditVerifyPublic(ok=r.ok, checked=r.checked, bad_id=r.bad_id, reason=r.reason)
