"""Audit API (managers): list, filter, export CSV, verify."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel

from triage import audit
from webcommon import routing
from webcommon.deps import ManagerUser, Position, SessionDep

router = routing.router(prefix="/api/audit", tags=["audit"])


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


@router.get("")
def read_audit(session: SessionDep, manager: ManagerUser, query: Annotated[audit.AuditQuery, Query()],
               limit: Annotated[int, Query(ge=1, le=1000)] = 100,
               offset: Annotated[Position, Query()] = 0) -> AuditEntriesPublic:
    """Entries matching the filters, newest first; `count` is the total that match (the CSV export is
    GET /api/audit/export.csv with the same filters)."""
    rows, total = audit.search(session, query.filter(), limit=limit, offset=offset)
    return AuditEntriesPublic(data=[AuditEntryPublic.model_validate(r, from_attributes=True) for r in rows],
                              count=total)


@router.get("/verify")
def read_audit_verify(session: SessionDep, manager: ManagerUser) -> AuditVerifyPublic:
    """Walk the hash chain and report the first bad entry, if any."""
    r = audit.verify(session)
    return AuditVerifyPublic(ok=r.ok, checked=r.checked, bad_id=r.bad_id, reason=r.reason)
