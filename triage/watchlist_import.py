"""ZIP imports sent from the web page: previewed, confirmed, then enrolled in the background.

The page checks the ZIP (it opens, it holds photos in the folder layout) and the
existing subjects the manager named for some folders, keeps the ZIP in
``<data>/imports/<sha256>.zip`` and records a *pending* import.  Its page shows the
preview — each planned subject "new", or "adds to existing subject #N (named
explicitly)" — and nothing is enrolled until the manager confirms; confirming
queues a ``watchlist_import`` job.  Every folder not named explicitly becomes a new
subject keyed by this import, so a later import with a folder of the same name
never adds photos to it.  The job runs :func:`triage.watchlist.run_import`
(idempotent: the same import run again after a crash finds its own subjects, and a
photo enrolled before is recognised by its content), renews its lease while it
works, records the result on the import's row, and deletes the archive once no
pending, queued or running import needs it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from triage import audit, events, jobs, services, watchlist
from triage.clock import utcnow
from triage.config import Settings
from triage.gallery import enrolment_models
from triage.models import AuditOutcome, ImportStatus, Job, JobStatus, User, WatchlistImport
from triage.worker import JobContext, LeaseLost, PermanentJobError, job_function

IMPORT_JOB = "watchlist_import"
MAX_FAILURES_KEPT = 2000
PROGRESS_EVERY_SECONDS = 2.0
ACTIVE = (ImportStatus.queued.value, ImportStatus.running.value)
KEEPS_ARCHIVE = (ImportStatus.pending.value, *ACTIVE)


def import_ref(row: WatchlistImport) -> str:
    """What keys the subjects this import creates (see ``triage.watchlist.run_import``)."""
    return f"zip-import:{row.id}"


def imports_dir(settings: Settings) -> Path:
    return Path(settings.data_dir) / "imports"


def archive_path(settings: Settings, sha256: str) -> Path:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError("not a sha256 digest")
    return imports_dir(settings) / f"{sha256}.zip"


def _keep_archive(settings: Settings, data: bytes, sha256: str) -> None:
    path = archive_path(settings, sha256)
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _patterns(include: str) -> list[str]:
    return [p.strip() for p in include.split(",") if p.strip()]


def stage_zip_import(session: Session, settings: Settings, user: User, data: bytes, filename: str,
                     include: str = "", targets: str = "", ip: str = "") -> WatchlistImport:
    """Check the ZIP and the named subjects, keep the ZIP, and record a pending import (caller's transaction).

    ``targets`` is the manager's ``FOLDER = SUBJECT_ID`` lines.  :class:`triage.watchlist.WatchlistError`
    says what is wrong with a ZIP that cannot be imported; nothing is kept then.  Nothing is enrolled
    until :func:`confirm_import`."""
    plan = watchlist.plan_zip(data, _patterns(include))
    photos = sum(len(item.photos) for item in plan)
    if photos == 0:
        raise watchlist.WatchlistError("The ZIP holds no photos to import"
                                       + (" matching those patterns." if include.strip() else "."))
    named = watchlist.parse_targets(targets)
    watchlist.preview_import(session, watchlist.name_targets(plan, named), "zip-import:new")
    sha = hashlib.sha256(data).hexdigest()
    _keep_archive(settings, data, sha)
    row = WatchlistImport(created_by=user.id, filename=filename[:200], include=include[:200],  # type: ignore[arg-type]
                          archive_sha256=sha, archive_bytes=len(data), subjects_total=len(plan),
                          photos_total=photos, targets=named, status=ImportStatus.pending.value)
    session.add(row)
    session.flush()
    audit.record(session, "watchlist.import_staged", actor=user, object_type="watchlist_import", object_id=row.id,
                 detail={"filename": row.filename, "bytes": len(data), "sha256": sha, "subjects": len(plan),
                         "photos": photos, "include": row.include, "targets": named}, ip=ip)
    return row


def plan_of(settings: Settings, row: WatchlistImport) -> list[watchlist.ImportSubject]:
    """The import's plan, read again from its archive, with the subjects the manager named."""
    try:
        data = archive_path(settings, row.archive_sha256).read_bytes()
    except OSError as exc:
        raise watchlist.WatchlistError(f"The archive of import {row.id} is gone ({exc.strerror}).") from exc
    return watchlist.name_targets(watchlist.plan_zip(data, _patterns(row.include)), dict(row.targets))


def preview(session: Session, settings: Settings, row: WatchlistImport) -> list[watchlist.PlannedSubject]:
    return watchlist.preview_import(session, plan_of(settings, row), import_ref(row))


def _refuse(session: Session, user: User, action: str, row_id: int, reason: str, ip: str) -> None:
    audit.record(session, action, actor=user, outcome=AuditOutcome.denied, object_type="watchlist_import",
                 object_id=row_id, detail={"reason": reason}, ip=ip)
    session.commit()


def _pending(session: Session, user: User, action: str, import_id: int, ip: str) -> WatchlistImport:
    stmt = select(WatchlistImport).where(WatchlistImport.id == import_id)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = session.exec(stmt).first()
    if row is None:
        raise LookupError("No such import.")
    if row.status != ImportStatus.pending.value:
        _refuse(session, user, action, import_id, f"import is {row.status}", ip)
        raise watchlist.WatchlistError(f"This import is already {row.status}: only a previewed import "
                                       "waiting for confirmation can be confirmed or cancelled.")
    return row


def confirm_import(session: Session, settings: Settings, user: User, import_id: int, ip: str = "") -> WatchlistImport:
    """The manager confirmed the preview: queue the import's job; commits (a refusal too)."""
    action = "watchlist.import_queued"
    row = _pending(session, user, action, import_id, ip)
    try:
        planned = preview(session, settings, row)  # the named subjects are checked again: one may have closed
    except watchlist.WatchlistError as exc:
        _refuse(session, user, action, import_id, str(exc), ip)
        raise
    row.status = ImportStatus.queued.value
    session.add(row)
    jobs.enqueue(session, IMPORT_JOB, row.id)  # type: ignore[arg-type]
    audit.record(session, action, actor=user, object_type="watchlist_import", object_id=row.id,
                 detail={"filename": row.filename, "subjects": row.subjects_total, "photos": row.photos_total,
                         "new_subjects": sum(p.action == "new" for p in planned),
                         "added_to": sorted(p.subject_id for p in planned if p.action == "existing")}, ip=ip)
    session.commit()
    return row


def cancel_import(session: Session, settings: Settings, user: User, import_id: int, ip: str = "") -> None:
    """Drop a previewed import that was not confirmed (nothing of it was enrolled); commits."""
    action = "watchlist.import_cancel"
    row = _pending(session, user, action, import_id, ip)
    sha = row.archive_sha256
    session.delete(row)
    audit.record(session, action, actor=user, object_type="watchlist_import", object_id=import_id,
                 detail={"filename": row.filename, "sha256": sha}, ip=ip)
    session.commit()
    _release_archive(settings, session, sha, import_id)


@dataclass
class ImportProgress:
    status: str  # queued | running | done | failed
    done: bool
    photos_total: int
    photos_done: int
    error: str = ""

    @property
    def percent(self) -> int:
        return round(100 * self.photos_done / self.photos_total) if self.photos_total else 0


def progress_of(session: Session, row: WatchlistImport) -> ImportProgress:
    status, error = row.status, ""
    if status in ACTIVE:
        job = session.exec(select(Job).where(Job.kind == IMPORT_JOB, Job.ref_id == row.id)).first()
        if job is not None and job.status == JobStatus.failed.value:
            status = JobStatus.failed.value
            error = job.last_error.splitlines()[0] if job.last_error else ""
    return ImportProgress(status, status in (JobStatus.done.value, JobStatus.failed.value), row.photos_total,
                          row.photos_done, error)


def recent_imports(session: Session, limit: int = 20) -> list[WatchlistImport]:
    return list(session.exec(select(WatchlistImport).order_by(col(WatchlistImport.id).desc()).limit(limit)).all())


def _set(ctx: JobContext, import_id: int, **values: Any) -> None:
    with Session(ctx.engine) as session:
        row = session.get(WatchlistImport, import_id)
        if row is not None:
            for k, v in values.items():
                setattr(row, k, v)
            session.add(row)
            session.commit()


def _release_archive(settings: Settings, session: Session, sha256: str, import_id: int) -> None:
    others = session.exec(select(WatchlistImport.id).where(WatchlistImport.archive_sha256 == sha256,
                                                           col(WatchlistImport.status).in_(KEEPS_ARCHIVE),
                                                           WatchlistImport.id != import_id)).first()
    if others is None:
        archive_path(settings, sha256).unlink(missing_ok=True)


@job_function(IMPORT_JOB)
def run_zip_import(ctx: JobContext) -> watchlist.ImportSummary:
    """Enrol a queued ZIP import; progress and the result go on its row."""
    import_id = ctx.job.ref_id
    with Session(ctx.engine, expire_on_commit=False) as session:
        row = session.get(WatchlistImport, import_id)
        if row is None:
            raise PermanentJobError(f"watchlist import {import_id} does not exist")
        actor = session.get(User, row.created_by)
        row.status, row.started_at, row.photos_done = JobStatus.running.value, utcnow(), 0
        session.add(row)
        session.commit()
    try:
        plan = plan_of(ctx.settings, row)
    except watchlist.WatchlistError as exc:  # checked at upload: only a damaged or lost file gets here
        raise PermanentJobError(str(exc)) from exc

    done = 0
    last = time.monotonic()

    def progress(n: int) -> None:
        nonlocal done, last
        done += n
        if time.monotonic() - last >= PROGRESS_EVERY_SECONDS:
            last = time.monotonic()
            ctx.renew_lease()  # a long import keeps its job; LeaseLost stops it if it was taken over
            _set(ctx, import_id, photos_done=done)

    pipeline = services.pipeline(ctx.services)
    analyze = watchlist.analyze_serially(ctx.settings, pipeline, enrolment_models(ctx.engine, ctx.settings.face_model))
    try:
        summary = watchlist.run_import(ctx.engine, ctx.store, ctx.settings, plan, analyze, actor, progress,
                                       f"zip:{row.filename}", import_ref=import_ref(row))
    except LeaseLost:
        raise
    except Exception:
        if ctx.job.attempts >= ctx.job.max_attempts:  # no retry left: the archive is of no more use
            with Session(ctx.engine) as session:
                _release_archive(ctx.settings, session, row.archive_sha256, import_id)
        raise
    with Session(ctx.engine) as session:
        final = session.get(WatchlistImport, import_id)
        assert final is not None
        final.status, final.finished_at, final.photos_done = JobStatus.done.value, utcnow(), done
        final.summary = summary.as_dict()
        final.failures = [{"photo": f.label, "reason": f.reason} for f in summary.failures[:MAX_FAILURES_KEPT]]
        session.add(final)
        events.import_finished(session, final, summary.photos_enrolled, len(summary.failures))
        ctx.finish_in(session)
        session.commit()
        _release_archive(ctx.settings, session, row.archive_sha256, import_id)
    return summary
