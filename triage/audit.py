"""Append-only, hash-chained audit log.

Each entry's hash covers its own content and the previous entry's hash, so
editing or deleting any row breaks the chain from that row on.  Appends lock
the single ``audit_head`` row, which serialises them on every database.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import update
from sqlmodel import select
from sqlmodel import Session

from triage.clock import utcnow
from triage.models import AuditEntry, AuditHead, AuditOutcome, User

GENESIS_HASH = "0" * 64


def _canonical(entry: AuditEntry) -> bytes:
    body = {
        "id": entry.id,
        "at": entry.at.isoformat(timespec="microseconds"),
        "actor_id": entry.actor_id,
        "actor": entry.actor,
        "action": entry.action,
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "outcome": entry.outcome,
        "detail": entry.detail,
        "ip": entry.ip,
        "prev_hash": entry.prev_hash,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def entry_hash(entry: AuditEntry) -> str:
    return hashlib.sha256(_canonical(entry)).hexdigest()


def _lock_head(session: Session) -> AuditHead:
    head = session.exec(select(AuditHead).where(AuditHead.id == 1).with_for_update()).first()
    if head is None:
        head = AuditHead(id=1, last_id=0, last_hash=GENESIS_HASH)
        session.add(head)
        session.flush()
    return head


def record(
    session: Session,
    action: str,
    *,
    actor: User | None = None,
    object_type: str = "",
    object_id: object = "",
    outcome: AuditOutcome | str = AuditOutcome.ok,
    detail: dict[str, Any] | None = None,
    ip: str = "",
) -> AuditEntry:
    """Append one entry inside the caller's transaction (it commits with the change)."""
    head = _lock_head(session)
    entry = AuditEntry(
        id=head.last_id + 1,
        at=utcnow(),
        actor_id=actor.id if actor else None,
        actor=actor.username if actor else "system",
        action=action,
        object_type=object_type,
        object_id=str(object_id) if object_id is not None else "",
        outcome=str(outcome),
        detail=json.loads(json.dumps(detail or {}, default=str)),
        ip=ip,
        prev_hash=head.last_hash,
        hash="",
    )
    entry.hash = entry_hash(entry)
    session.add(entry)
    session.execute(
        update(AuditHead).where(AuditHead.id == 1).values(last_id=entry.id, last_hash=entry.hash)
    )
    session.flush()
    session.expire(head)
    return entry


def record_refusal(session_factory: Any, action: str, **kwargs: Any) -> None:
    """Record a refusal in its own transaction, so it stays even when the request rolls back."""
    with session_factory() as session:
        record(session, action, outcome=AuditOutcome.denied, **kwargs)
        session.commit()


@dataclass
class VerifyResult:
    ok: bool
    checked: int
    bad_id: int | None = None
    reason: str = ""


def verify(session: Session, batch: int = 5000) -> VerifyResult:
    """Walk the chain from the start; report the first row that does not fit."""
    prev_hash = GENESIS_HASH
    expected_id = 1
    checked = 0
    last_id = 0
    while True:
        rows = session.exec(
            select(AuditEntry).where(AuditEntry.id > last_id).order_by(AuditEntry.id).limit(batch)
        ).all()
        if not rows:
            break
        for entry in rows:
            if entry.id != expected_id:
                return VerifyResult(False, checked, expected_id, f"entry {expected_id} is missing")
            if entry.prev_hash != prev_hash:
                return VerifyResult(False, checked, entry.id, "previous-hash link broken")
            if entry_hash(entry) != entry.hash:
                return VerifyResult(False, checked, entry.id, "content does not match its hash")
            prev_hash = entry.hash
            expected_id += 1
            checked += 1
            last_id = entry.id
    head = session.get(AuditHead, 1)
    if head is not None and (head.last_id != last_id or head.last_hash != prev_hash):
        return VerifyResult(False, checked, last_id + 1, "entries after this point were deleted")
    return VerifyResult(True, checked)


EXPORT_FIELDS = ["id", "at", "actor", "action", "object_type", "object_id", "outcome", "ip", "detail", "hash"]


def export_csv(entries: Iterable[AuditEntry]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(EXPORT_FIELDS)
    for e in entries:
        writer.writerow([e.id, e.at.isoformat(), e.actor, e.action, e.object_type, e.object_id,
                         e.outcome, e.ip, json.dumps(e.detail, sort_keys=True), e.hash])
    return out.getvalue()
