"""Persistent jobs: enqueue, claim with a lease, finish, fail and retry.

A worker claims a job by setting a lease on it; a job whose worker died is
claimed again once its lease runs out.  On PostgreSQL the claim uses
``FOR UPDATE SKIP LOCKED`` so any number of workers can run side by side; on
SQLite every transaction takes the write lock (see ``triage.db``), which
serialises claims just as well.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy import or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from triage import audit
from triage.clock import utcnow
from triage.db import rows_affected
from triage.models import AuditOutcome, Job, JobStatus

RETRY_BACKOFF_SECONDS = (5, 30, 120)
# A kind may set its own delay before the next attempt, from the attempts made (the webhook doubles it).


def enqueue(session: Session, kind: str, ref_id: int, *, max_attempts: int = 3) -> Job:
    """Add a job unless one for the same (kind, ref) exists; returns the job either way."""
    existing = session.exec(select(Job).where(Job.kind == kind, Job.ref_id == ref_id)).first()
    if existing is not None:
        return existing
    job = Job(kind=kind, ref_id=ref_id, max_attempts=max_attempts)
    try:
        with session.begin_nested():
            session.add(job)
    except IntegrityError:
        return session.exec(select(Job).where(Job.kind == kind, Job.ref_id == ref_id)).one()
    return job


GiveUp = Callable[[Session, Job], None]


def claim(session: Session, owner: str, lease_seconds: int, kinds: tuple[str, ...] | None = None,
          *, job_id: int | None = None, on_give_up: GiveUp | None = None) -> Job | None:
    """Take the oldest runnable job (queued, or running with an expired lease) and commit the claim.

    ``job_id`` claims that job only (a command running one job in the foreground).  A job whose
    attempts are spent is failed instead, and ``on_give_up`` runs in that transaction."""
    now = utcnow()
    stmt = (
        select(Job)
        .where(
            or_(
                (col(Job.status) == JobStatus.queued.value) & (col(Job.run_after) <= now),
                (col(Job.status) == JobStatus.running.value) & (col(Job.lease_expires_at) < now),
            )
        )
        .order_by(col(Job.run_after), col(Job.id))
        .limit(1)
    )
    if kinds:
        stmt = stmt.where(col(Job.kind).in_(kinds))
    if job_id is not None:
        stmt = stmt.where(Job.id == job_id)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    job = session.exec(stmt).first()
    if job is None:
        session.rollback()
        return None
    if job.status == JobStatus.running.value:
        audit.record(session, "job.lease_expired", object_type="job", object_id=job.id,
                     detail={"previous_owner": job.lease_owner, "attempts": job.attempts})
    if job.attempts >= job.max_attempts:
        job.status = JobStatus.failed.value
        job.finished_at = now
        job.last_error = (job.last_error + " | gave up: worker died or timed out too often")[-2000:]
        session.add(job)
        audit.record(session, "job.fail", outcome=AuditOutcome.error, object_type="job", object_id=job.id,
                     detail={"error": job.last_error[-200:]})
        if on_give_up is not None:
            on_give_up(session, job)
        session.commit()
        return None
    job.status = JobStatus.running.value
    job.attempts += 1
    job.lease_owner = owner
    job.started_at = now
    job.lease_expires_at = now + dt.timedelta(seconds=lease_seconds)
    session.add(job)
    session.commit()
    session.refresh(job)
    return job


def finish(session: Session, job_id: int, owner: str) -> bool:
    """Mark a job done if this owner still holds it; in the caller's transaction."""
    result = session.execute(
        update(Job)
        .where(col(Job.id) == job_id, col(Job.lease_owner) == owner, col(Job.status) == JobStatus.running.value)
        .values(status=JobStatus.done.value, finished_at=utcnow(), lease_expires_at=None)
    )
    return rows_affected(result) == 1


def renew(session: Session, job_id: int, owner: str, lease_seconds: int) -> bool:
    """Extend the lease of a long job this owner still holds; False if it was taken over."""
    result = session.execute(
        update(Job)
        .where(col(Job.id) == job_id, col(Job.lease_owner) == owner, col(Job.status) == JobStatus.running.value)
        .values(lease_expires_at=utcnow() + dt.timedelta(seconds=lease_seconds))
    )
    return rows_affected(result) == 1


def fail(session: Session, job_id: int, owner: str, error: str, *, retry: bool = True,
         backoff: Callable[[int], float] | None = None, on_give_up: GiveUp | None = None) -> Job | None:
    """Record why a job failed; schedule a retry while attempts remain (after ``backoff(attempts)`` seconds,
    or the default schedule)."""
    job = session.get(Job, job_id)
    if job is None or job.lease_owner != owner or job.status != JobStatus.running.value:
        return None
    job.last_error = error[-2000:]
    job.lease_expires_at = None
    if retry and job.attempts < job.max_attempts:
        job.status = JobStatus.queued.value
        delay = backoff(job.attempts) if backoff else RETRY_BACKOFF_SECONDS[
            min(job.attempts, len(RETRY_BACKOFF_SECONDS)) - 1]
        job.run_after = utcnow() + dt.timedelta(seconds=delay)
    else:
        job.status = JobStatus.failed.value
        job.finished_at = utcnow()
    session.add(job)
    audit.record(session, "job.fail", outcome=AuditOutcome.error, object_type="job", object_id=job.id,
                 detail={"error": error[-500:], "will_retry": job.status == JobStatus.queued.value})
    if job.status == JobStatus.failed.value and on_give_up is not None:
        on_give_up(session, job)
    return job


def retry(session: Session, job_id: int) -> Job:
    """Put a failed job back in the queue (a manager's action)."""
    job = session.get(Job, job_id)
    if job is None:
        raise LookupError("no such job")
    if job.status != JobStatus.failed.value:
        raise ValueError("only a failed job can be retried")
    job.status = JobStatus.queued.value
    job.attempts = 0
    job.run_after = utcnow()
    job.finished_at = None
    session.add(job)
    return job
