"""Append-only, hash-chained audit log.

Each entry's hash covers its own content and the previous entry's hash, so
editing or deleting any row breaks the chain from that row on.  Appends lock
the single ``audit_head`` row, which serialises them on every database.

An entry is recorded in the caller's transaction and joins the chain as that
transaction commits: the head row is locked only for the commit itself, not
while the rest of the request runs, so writers do not queue behind each other's
work.  An entry recorded in a savepoint that is rolled back, or in a transaction
that never commits, is never stored.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import delete, event, func, inspect, or_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import ORMExecuteState, SessionTransaction
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.sql.elements import ClauseElement
from sqlalchemy.sql.util import find_tables
from sqlmodel import Session, col, select

from triage.clock import utcnow
from triage.models import AuditEntry, AuditHead, AuditOutcome, User

log = logging.getLogger("miatari.audit")

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
    locked = select(AuditHead).where(AuditHead.id == 1).with_for_update().execution_options(populate_existing=True)
    head = session.exec(locked).first()
    if head is None:
        # The very first append: two processes may race to create the head; one wins.
        try:
            with session.begin_nested():
                session.add(AuditHead(id=1, last_id=0, last_hash=GENESIS_HASH))
        except IntegrityError:
            pass
        head = session.exec(locked).one()
    return head


# Entries recorded but not yet chained, each with the transaction (or savepoint) it was recorded in.
_PENDING = "miatari.audit.pending"


_ENTRY_MAPPER = inspect(AuditEntry)


def has_pending(session: OrmSession) -> bool:
    """Whether the open transaction has recorded entries not yet written."""
    return bool(session.info.get(_PENDING))


def _pending(session: OrmSession) -> list[tuple[AuditEntry, SessionTransaction]]:
    pending: list[tuple[AuditEntry, SessionTransaction]] = session.info.setdefault(_PENDING, [])
    return pending


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
    """Record one entry in the caller's transaction: it is stored, and takes its place in the chain
    (``id``, ``prev_hash``, ``hash``), as that transaction commits - or at :func:`chain_now`."""
    entry = AuditEntry(
        at=utcnow(),
        actor_id=actor.id if actor else None,
        actor=actor.username if actor else "system",
        # Cut to the column sizes here, before hashing, so every database stores what was hashed.
        action=action[:64],
        object_type=object_type[:40],
        object_id=(str(object_id) if object_id is not None else "")[:64],
        outcome=str(outcome),
        detail=json.loads(json.dumps(detail or {}, default=str)),
        ip=ip[:64],
        prev_hash="",
        hash="",
    )
    if session.get_transaction() is None:
        session.connection()  # begin the transaction the entry belongs to
    txn = session.get_nested_transaction() or session.get_transaction()
    assert txn is not None
    _pending(session).append((entry, txn))
    return entry


def chain_now(session: Session) -> None:
    """Give the entries recorded so far their place in the chain now (the head stays locked until the
    commit); for callers that need an entry's id or hash before committing.

    Not inside a savepoint: undone, it would take entries of the enclosing transaction with it."""
    if not session.info.get(_PENDING):
        return
    if session.get_nested_transaction() is not None:
        raise RuntimeError("audit entries are chained outside savepoints")
    pending = session.info.pop(_PENDING)
    head = _lock_head(session)
    last_id, last_hash = head.last_id, head.last_hash
    for entry, _txn in pending:
        last_id += 1
        entry.id, entry.prev_hash = last_id, last_hash
        entry.hash = last_hash = entry_hash(entry)
        session.add(entry)
    session.execute(update(AuditHead).where(col(AuditHead.id) == 1).values(last_id=last_id, last_hash=last_hash))
    session.flush()
    session.expire(head)


@event.listens_for(OrmSession, "before_commit")
def _chain_as_the_transaction_commits(session: OrmSession) -> None:
    # Fired for a savepoint's commit too: its entries wait for the outermost transaction's.
    if session.info.get(_PENDING) and session.get_nested_transaction() is None:
        chain_now(cast(Session, session))  # record() takes a SQLModel session


@event.listens_for(OrmSession, "do_orm_execute")
def _chain_before_reading_the_log(state: ORMExecuteState) -> None:
    # A transaction that reads the log sees the entries it recorded (the head is then held to the commit).
    # Inside a savepoint it cannot (chain_now): there the entries show from the commit on.
    session = state.session
    if (session.info.get(_PENDING) and state.is_select and session.get_nested_transaction() is None
            and _reads_the_log(state)):
        chain_now(cast(Session, session))


def _reads_the_log(state: ORMExecuteState) -> bool:
    if _ENTRY_MAPPER in state.all_mappers:
        return True
    statement = state.statement
    # e.g. a count over a subquery of entries
    return isinstance(statement, ClauseElement) and _ENTRY_MAPPER.local_table in find_tables(statement)


@event.listens_for(OrmSession, "after_soft_rollback")
def _forget_rolled_back(session: OrmSession, previous: SessionTransaction) -> None:
    """Drop the entries recorded in a rolled-back transaction or savepoint (or in one inside it)."""
    pending = session.info.get(_PENDING)
    if not pending:
        return

    def inside(txn: SessionTransaction | None) -> bool:
        while txn is not None:
            if txn is previous:
                return True
            txn = txn.parent
        return False

    pending[:] = [(entry, txn) for entry, txn in pending if not inside(txn)]


@event.listens_for(OrmSession, "after_commit")
def _none_left_behind(session: OrmSession) -> None:
    # Only a root transaction committed by hand with a savepoint still open gets here with entries left
    # (its before_commit came while the savepoint was the innermost); say so loudly rather than silently.
    pending = session.info.get(_PENDING)
    if pending and session.get_nested_transaction() is None:
        log.error("audit entries not written: their transaction was committed with a savepoint open: %s",
                  ", ".join(entry.action for entry, _txn in pending))


@event.listens_for(OrmSession, "after_transaction_end")
def _forget_at_the_end(session: OrmSession, transaction: SessionTransaction) -> None:
    # A transaction closed without commit or rollback (Session.close()) takes its entries with it.
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


PRUNE_ACTION = "audit.prune"


@dataclass
class VerifyResult:
    ok: bool
    checked: int
    bad_id: int | None = None
    reason: str = ""


def _pruned_through(session: Session, first_id: int, first_prev_hash: str) -> bool:
    """Whether a (chained) prune entry vouches for every entry before ``first_id`` having been removed."""
    for entry in session.exec(select(AuditEntry).where(AuditEntry.action == PRUNE_ACTION)).all():
        d = entry.detail or {}
        if d.get("pruned_through_id") == first_id - 1 and d.get("pruned_through_hash") == first_prev_hash:
            return True
    return False


def verify(session: Session, batch: int = 5000) -> VerifyResult:
    """Walk the chain from its first entry; report the first row that does not fit.

    Entries removed by the retention sweep are vouched for by the prune entry
    that removed them (itself part of the chain); any other gap is tampering.
    """
    first = session.exec(select(AuditEntry).order_by(col(AuditEntry.id)).limit(1)).first()
    prev_hash = GENESIS_HASH
    expected_id = 1
    if first is not None and first.id != 1:
        if not _pruned_through(session, first.pk, first.prev_hash):
            return VerifyResult(False, 0, first.pk - 1,
                                f"entries before {first.id} were deleted")
        prev_hash = first.prev_hash
        expected_id = first.pk
    checked = 0
    last_id = expected_id - 1
    while True:
        rows = session.exec(
            select(AuditEntry).where(col(AuditEntry.id) > last_id).order_by(col(AuditEntry.id)).limit(batch)
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
        return VerifyResult(False, checked, last_id + 1, "entries from this one on were deleted")
    if head is None and checked:
        return VerifyResult(False, checked, None, "the chain's head record was deleted")
    return VerifyResult(True, checked)


# Anchors: the chain's head written down outside the database. The chain alone shows any
# edit, insertion or deletion *unless* someone with write access recomputes every hash after
# the change; an anchor kept elsewhere (a printout, another machine, a write-once store) pins
# the entries up to it, so such a rewrite shows as soon as the anchors are checked.
ANCHOR_TAG = "miatari-audit-anchor/1"
ANCHOR_ACTION = "audit.anchor"


@dataclass(frozen=True)
class Anchor:
    entry_id: int
    hash: str
    taken_at: str

    def line(self) -> str:
        return f"{ANCHOR_TAG} {self.entry_id} {self.hash} {self.taken_at}"


class BadAnchor(ValueError):
    """An anchor line cannot be read."""


def take_anchor(session: Session, actor: User | None = None) -> Anchor:
    """Record the anchoring itself in the chain and return that entry as the anchor."""
    entry = record(session, ANCHOR_ACTION, actor=actor, object_type="audit")
    chain_now(session)
    return Anchor(entry.pk, entry.hash, entry.at.isoformat(timespec="seconds"))


def parse_anchors(text: str) -> list[Anchor]:
    """Anchor lines (other lines - blank, comments - are skipped); :class:`BadAnchor` names a bad one."""
    anchors = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line.startswith(ANCHOR_TAG):
            continue
        parts = line.split()
        if (len(parts) != 4 or not parts[1].isdigit() or len(parts[2]) != 64
                or any(c not in "0123456789abcdef" for c in parts[2])):
            raise BadAnchor(f"line {n} is not an anchor: {line[:120]}")
        anchors.append(Anchor(int(parts[1]), parts[2], parts[3]))
    return anchors


@dataclass
class AnchorCheck:
    checked: int = 0
    pruned: int = 0  # anchored entries since removed by the retention sweep (not checkable)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_anchors(session: Session, anchors: Iterable[Anchor]) -> AnchorCheck:
    """Compare anchored entries with the log: each must still be there with the same hash."""
    result = AnchorCheck()
    first_id = session.exec(select(func.min(AuditEntry.id))).one()
    for a in anchors:
        entry = session.get(AuditEntry, a.entry_id)
        if entry is None:
            if first_id is not None and a.entry_id < first_id:
                result.pruned += 1  # removed by retention; verify() checks the prune entry vouches for it
            else:
                result.problems.append(f"entry {a.entry_id} (anchored {a.taken_at}) is missing")
            continue
        result.checked += 1
        if entry.hash != a.hash:
            result.problems.append(f"entry {a.entry_id} differs from its anchor of {a.taken_at}: "
                                   "the log was rewritten from that entry or before")
    return result


def prune(session: Session, before: dt.datetime, actor: User | None = None) -> int:
    """Delete entries older than ``before`` (retention), leaving a chained entry that vouches for it."""
    last_old = session.exec(select(func.max(AuditEntry.id)).where(AuditEntry.at < before)).one()
    if not last_old:
        return 0
    boundary = session.get(AuditEntry, last_old)
    assert boundary is not None
    count = int(session.exec(select(func.count()).select_from(AuditEntry)
                             .where(col(AuditEntry.id) <= last_old)).one())
    # Record first, so the entry is chained before the rows it vouches for disappear.
    record(session, PRUNE_ACTION, actor=actor, object_type="audit_entry", object_id=last_old,
           detail={"pruned_through_id": last_old, "pruned_through_hash": boundary.hash,
                   "count": count, "before": before.isoformat()})
    chain_now(session)
    session.execute(delete(AuditEntry).where(col(AuditEntry.id) <= last_old))
    return count


@dataclass
class AuditFilter:
    actor: str = ""
    action: str = ""
    object_type: str = ""
    object_id: str = ""
    outcome: str = ""
    since: dt.datetime | None = None
    until: dt.datetime | None = None


AUDIT_TEXT_MAX = 64


class AuditQuery(BaseModel):
    """The audit log's filters as a page's form or an API caller gives them.

    ``since``/``until`` are instants, or dates (a date covers its whole day, UTC:
    ``until=2026-01-31`` includes the 31st)."""

    actor: str = Field(default="", max_length=AUDIT_TEXT_MAX)
    action: str = Field(default="", max_length=AUDIT_TEXT_MAX)
    object_type: str = Field(default="", max_length=AUDIT_TEXT_MAX)
    object_id: str = Field(default="", max_length=AUDIT_TEXT_MAX)
    outcome: str = Field(default="", max_length=AUDIT_TEXT_MAX)
    since: dt.datetime | dt.date | None = None
    until: dt.datetime | dt.date | None = None

    @field_validator("since", "until", mode="before")
    @classmethod
    def _day_or_instant(cls, value: Any) -> Any:
        # A plain date (a page's date field) stays a date; anything longer is read as an instant.
        if isinstance(value, str) and not value.strip():
            return None  # an empty form field
        if isinstance(value, str) and len(value.strip()) == len("YYYY-MM-DD"):
            return dt.date.fromisoformat(value.strip())
        return value

    def filter(self) -> AuditFilter:
        def instant(value: dt.datetime | dt.date | None, days_after: int = 0) -> dt.datetime | None:
            if value is None or isinstance(value, dt.datetime):
                return value
            return dt.datetime.combine(value, dt.time(), tzinfo=dt.UTC) + dt.timedelta(days=days_after)

        return AuditFilter(actor=self.actor.strip(), action=self.action.strip(),
                           object_type=self.object_type.strip(), object_id=self.object_id.strip(),
                           outcome=self.outcome.strip(), since=instant(self.since), until=instant(self.until, 1))

    def form_values(self) -> dict[str, Any]:
        """The filters as a form shows them again ("" for none)."""
        return {k: "" if v is None else v for k, v in self.model_dump().items()}


def _filtered(f: AuditFilter) -> Any:
    stmt = select(AuditEntry)
    if f.actor:
        stmt = stmt.where(AuditEntry.actor == f.actor)
    if f.action:
        # "user" finds user.create, user.disable, …
        prefix = col(AuditEntry.action).startswith(f.action + ".", autoescape=True)
        stmt = stmt.where(or_(col(AuditEntry.action) == f.action, prefix))
    if f.object_type:
        stmt = stmt.where(AuditEntry.object_type == f.object_type)
    if f.object_id:
        stmt = stmt.where(AuditEntry.object_id == f.object_id)
    if f.outcome:
        stmt = stmt.where(AuditEntry.outcome == f.outcome)
    if f.since is not None:
        stmt = stmt.where(AuditEntry.at >= f.since)
    if f.until is not None:
        stmt = stmt.where(AuditEntry.at < f.until)
    return stmt


def search(session: Session, f: AuditFilter, limit: int = 100, offset: int = 0) -> tuple[list[AuditEntry], int]:
    """One page of entries matching the filter, newest first, and how many match in all."""
    stmt = _filtered(f)
    total = int(session.exec(select(func.count()).select_from(stmt.subquery())).one())
    rows = session.exec(stmt.order_by(col(AuditEntry.id).desc()).limit(limit).offset(offset)).all()
    return list(rows), total


def iter_entries(session: Session, f: AuditFilter, batch: int = 2000) -> Iterable[AuditEntry]:
    """Every matching entry, oldest first, fetched in batches (for exports)."""
    last_id = 0
    while True:
        stmt = _filtered(f).where(col(AuditEntry.id) > last_id).order_by(col(AuditEntry.id)).limit(batch)
        rows: list[AuditEntry] = list(session.exec(stmt).all())
        if not rows:
            return
        yield from rows
        last_id = rows[-1].id or last_id


EXPORT_FIELDS = ["id", "at", "actor", "action", "object_type", "object_id", "outcome", "ip", "detail",
                 "prev_hash", "hash"]
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: str) -> str:
    # A spreadsheet would run a cell starting with "=" as a formula; quote it.
    return "'" + value if value.startswith(_FORMULA_START) else value


def export_csv(entries: Iterable[AuditEntry]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(EXPORT_FIELDS)
    for e in entries:
        writer.writerow([e.id, e.at.isoformat(), _cell(e.actor), _cell(e.action), _cell(e.object_type),
                         _cell(e.object_id), e.outcome, _cell(e.ip), _cell(json.dumps(e.detail, sort_keys=True)),
                         e.prev_hash, e.hash])
    return out.getvalue()


def export_for(session: Session, manager: User, f: AuditFilter, ip: str = "") -> str:
    """The entries matching ``f`` as CSV; the export itself is recorded (in the caller's transaction)."""
    body = export_csv(iter_entries(session, f))
    record(session, "audit.export", actor=manager, detail={"filters": f.__dict__}, ip=ip)
    return body
