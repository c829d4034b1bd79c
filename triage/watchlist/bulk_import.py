"""Bulk enrolment: planning an import (folder, CSV or ZIP), its preview, running it, and ZIP imports from the page.

An import is resumable and idempotent: the subjects it creates are keyed by the import, and a photo
enrolled before is recognised by its content.

ZIP imports sent from the web page are previewed, confirmed, then enrolled in the
background.  The page checks the ZIP (it opens, it holds photos in the folder layout)
and the existing subjects the manager named for some folders, keeps the ZIP in
``<data>/imports/<sha256>.zip`` and records a *pending* import.  Its page shows the
preview — each planned subject "new", or "adds to existing subject #N (named
explicitly)" — and nothing is enrolled until the manager confirms; confirming
queues a ``watchlist_import`` job.  Every folder not named explicitly becomes a new
subject keyed by this import, so a later import with a folder of the same name
never adds photos to it.  The job runs :func:`run_import`
(idempotent: the same import run again after a crash finds its own subjects, and a
photo enrolled before is recognised by its content), renews its lease while it
works, records the result on the import's row, and deletes the archive once no
pending, queued or running import needs it.
"""

from __future__ import annotations

import csv
import datetime as dt
import fnmatch
import hashlib
import io
import os
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import Engine, or_
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from triage import audit, events, jobs, services
from triage.clock import utcnow
from triage.config import Settings
from triage.errors import RefusalEntry
from triage.gallery import enrolment_models
from triage.models import (
    IMPORT_JOB,
    AuditOutcome,
    ImportStatus,
    Job,
    JobStatus,
    ReferencePhoto,
    Subject,
    SubjectStatus,
    User,
    WatchlistImport,
)
from triage.services import Services
from triage.storage import ImageStore
from triage.transaction import checkpoint, unit_of_work
from triage.watchlist.enrolment import EnrolmentRefused, FaceAnalysis, analyze_for_enrolment, enrol_reference_photo
from triage.watchlist.subjects import SubjectCreate, WatchlistError, create_subject
from triage.worker import JobContext, PermanentJobError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".gif"})
MAX_ZIP_MEMBERS = 20_000
MAX_FAILURES_KEPT = 2000
PROGRESS_EVERY_SECONDS = 2.0
ACTIVE = (ImportStatus.queued.value, ImportStatus.running.value)
KEEPS_ARCHIVE = (ImportStatus.pending.value, *ACTIVE)


# Bulk enrolment
@dataclass
class ImportPhoto:
    label: str
    read: Callable[[], bytes]


@dataclass
class ImportSubject:
    """One subject of a planned import.

    ``key`` names it within the import (``dir:FOLDER``, ``csv:CASE|NAME``, ``id:N``); the subject it
    creates is keyed by the import's reference *and* this key, so a later import never adds to it.
    ``target_id`` is an existing subject the user named explicitly for it (CSV ``subject_id``
    column, or a folder-to-subject mapping): the only way an import adds to an existing subject.
    """

    key: str
    fields: SubjectCreate
    photos: list[ImportPhoto] = field(default_factory=list)
    target_id: int | None = None
    label: str = ""


@dataclass
class ImportFailure:
    label: str
    reason: str


@dataclass
class ImportSummary:
    subjects_seen: int = 0
    subjects_created: int = 0
    photos_seen: int = 0
    photos_enrolled: int = 0
    photos_already: int = 0
    photos_analyzed: int = 0
    seconds: float = 0.0
    failures: list[ImportFailure] = field(default_factory=list)

    @property
    def photos_per_second(self) -> float:
        return self.photos_analyzed / self.seconds if self.seconds > 0 else 0.0

    def failure_reasons(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for f in self.failures:
            counts[f.reason] = counts.get(f.reason, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1]))

    def as_dict(self) -> dict[str, Any]:
        return {"subjects_seen": self.subjects_seen, "subjects_created": self.subjects_created,
                "photos_seen": self.photos_seen, "photos_enrolled": self.photos_enrolled,
                "photos_already_enrolled": self.photos_already, "photos_analyzed": self.photos_analyzed,
                "photos_failed": len(self.failures), "seconds": round(self.seconds, 2),
                "photos_per_second": round(self.photos_per_second, 2), "failure_reasons": self.failure_reasons()}


def _matches(name: str, include: Sequence[str]) -> bool:
    return not include or any(fnmatch.fnmatch(name, pattern) for pattern in include)


def _is_image_name(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES and not PurePosixPath(name).name.startswith(".")


def _folder_subject(name: str, key_prefix: str) -> SubjectCreate:
    return SubjectCreate(name=name, case_ref=name[:100])


def plan_folder(root: Path, include: Sequence[str] = ()) -> list[ImportSubject]:
    """One subject per sub-folder (its name is the subject's name and case reference)."""
    root = Path(root)
    if not root.is_dir():
        raise WatchlistError(f"{root} is not a folder.")
    plan: list[ImportSubject] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        photos = [ImportPhoto(str(p), p.read_bytes) for p in sorted(folder.iterdir())
                  if p.is_file() and _is_image_name(p.name) and _matches(p.name, include)]
        if photos:
            plan.append(ImportSubject(f"dir:{folder.name}", _folder_subject(folder.name, "dir"), photos,
                                      label=folder.name))
    return plan


CSV_FIELDS = ("name", "case_ref", "aliases", "priority", "notes", "expires_on", "subject_id")


def plan_csv(csv_path: Path, mapping: dict[str, str] | None = None, include: Sequence[str] = ()) -> list[ImportSubject]:
    """Rows of subject fields plus photo paths; rows with the same name and case reference are one subject.

    Columns: ``name`` and ``photo`` are required; ``case_ref`` (defaults to the
    name), ``aliases``, ``priority``, ``notes``, ``expires_on`` are optional;
    ``subject_id`` names an existing subject the row's photos are added to
    (the only way a CSV adds to a subject enrolled before; its other fields are ignored);
    further photos in ``photo2``, ``photo3``… or several paths in one cell
    separated by ``;``.  ``mapping`` renames columns (``{"name": "identity",
    "photo": "file"}`` reads CelebA's ``identities.csv``).  Photo paths are
    relative to the CSV's folder.
    """
    csv_path = Path(csv_path)
    mapping = mapping or {}
    base = csv_path.parent
    by_key: dict[str, ImportSubject] = {}
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        source = {f: mapping.get(f, f) for f in (*CSV_FIELDS, "photo")}
        if source["name"] not in columns or source["photo"] not in columns:
            raise WatchlistError(f"{csv_path.name}: needs columns {source['name']!r} and {source['photo']!r} "
                                 f"(found {', '.join(columns)}); map others with --map name=COLUMN photo=COLUMN.")
        photo_cols = [source["photo"]] + sorted(c for c in columns if c.startswith("photo") and c != source["photo"])
        for line_no, row in enumerate(reader, start=2):
            def value(name: str, row: dict[str, str] = row) -> str:
                return (row.get(source[name]) or "").strip()

            target_id: int | None = None
            if value("subject_id"):
                try:
                    target_id = int(value("subject_id").lstrip("#"))
                except ValueError:
                    raise WatchlistError(f"{csv_path.name} line {line_no}: subject_id must be a subject's number, "
                                         f"not {value('subject_id')!r}.") from None
            try:
                # With a subject_id the row's fields are not used: the subject exists.
                name = value("name") or (f"#{target_id}" if target_id is not None else "")
                fields = SubjectCreate(
                    name=name, case_ref=value("case_ref") or name[:100], aliases=value("aliases"),
                    priority=int(value("priority") or 3), notes=value("notes"),
                    expires_on=dt.date.fromisoformat(value("expires_on")) if value("expires_on") else None)
            except (ValueError, TypeError) as exc:
                raise WatchlistError(f"{csv_path.name} line {line_no}: {_first_error(exc)}") from exc
            key = f"id:{target_id}" if target_id is not None else f"csv:{fields.case_ref}|{fields.name}"
            item = by_key.setdefault(key, ImportSubject(key, fields, target_id=target_id,
                                                        label=f"#{target_id}" if target_id else fields.name))
            for c in photo_cols:
                for rel in (row.get(c) or "").split(";"):
                    rel = rel.strip()
                    if rel and _matches(PurePosixPath(rel).name, include):
                        path = (base / rel) if not Path(rel).is_absolute() else Path(rel)
                        item.photos.append(ImportPhoto(str(path), path.read_bytes))
    return list(by_key.values())


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        e = errors()[0]
        return f"{'.'.join(str(p) for p in e.get('loc', []))}: {e.get('msg', '')}"
    return str(exc)


def plan_zip(data: bytes, include: Sequence[str] = ()) -> list[ImportSubject]:
    """A ZIP of the folder layout (one folder per subject, possibly under one top folder), or of a CSV layout."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise WatchlistError("This is not a ZIP file.") from exc
    members = [m for m in archive.infolist() if not m.is_dir() and "__MACOSX" not in m.filename]
    if len(members) > MAX_ZIP_MEMBERS:
        raise WatchlistError(f"The ZIP holds more than {MAX_ZIP_MEMBERS} files.")
    groups: dict[str, list[zipfile.ZipInfo]] = {}
    for m in members:
        parts = PurePosixPath(m.filename).parts
        if len(parts) < 2 or ".." in parts or not _is_image_name(parts[-1]) or not _matches(parts[-1], include):
            continue
        groups.setdefault(parts[-2], []).append(m)

    def reader(info: zipfile.ZipInfo) -> Callable[[], bytes]:
        return lambda: archive.read(info)

    return [ImportSubject(f"dir:{name}", _folder_subject(name, "dir"),
                          [ImportPhoto(m.filename, reader(m)) for m in sorted(items, key=lambda i: i.filename)],
                          label=name)
            for name, items in sorted(groups.items())]


# Naming existing subjects, and the preview shown before anything is enrolled
MAX_TARGETS_TEXT = 20_000


def parse_targets(text: str) -> dict[str, int]:
    """``FOLDER = SUBJECT_ID`` lines (``#`` before the number is allowed; blank lines are skipped)."""
    targets: dict[str, int] = {}
    if len(text) > MAX_TARGETS_TEXT:
        raise WatchlistError(f"The list of existing subjects is too long (at most {MAX_TARGETS_TEXT} characters).")
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        folder, sep, number = line.partition("=")
        folder, number = folder.strip(), number.strip().lstrip("#")
        if not sep or not folder or not number.isdigit():
            raise WatchlistError(f"Existing subjects, line {line_no}: write FOLDER = SUBJECT_NUMBER, "
                                 f"e.g. '001 = 17' (got {line.strip()[:80]!r}).")
        if folder in targets:
            raise WatchlistError(f"Existing subjects, line {line_no}: folder {folder!r} is named twice.")
        targets[folder] = int(number)
    return targets


def name_targets(plan: Sequence[ImportSubject], targets: dict[str, int]) -> list[ImportSubject]:
    """Point the folders the user named at existing subjects; every other folder stays a new subject."""
    by_label = {item.label: item for item in plan}
    unknown = sorted(set(targets) - set(by_label))
    if unknown:
        raise WatchlistError(f"The import has no folder named {', '.join(repr(u) for u in unknown[:5])}.")
    for label, subject_id in targets.items():
        by_label[label].target_id = subject_id
    return list(plan)


def import_key(import_ref: str, item: ImportSubject) -> str:
    return f"{import_ref}/{item.key}"[:300]


@dataclass
class PlannedSubject:
    """One line of an import's preview."""

    label: str
    photos: int
    action: str  # new | existing (named explicitly) | resumed (created by this same import before)
    subject_id: int | None = None
    subject_name: str = ""
    # Existing subjects with the same name or case reference: never added to unless named explicitly.
    lookalikes: list[int] = field(default_factory=list)

    def describe(self) -> str:
        if self.action == "existing":
            return f"adds to existing subject #{self.subject_id} {self.subject_name} (named explicitly)"
        if self.action == "resumed":
            return f"continues subject #{self.subject_id} {self.subject_name}, created by this import"
        note = (f" (subject{'s' if len(self.lookalikes) > 1 else ''} "
                f"{', '.join(f'#{i}' for i in self.lookalikes)} with the same name or case reference "
                "exist: not added to)") if self.lookalikes else ""
        return "new" + note


PREVIEW_CHUNK = 500


def preview_import(session: Session, plan: Sequence[ImportSubject], import_ref: str) -> list[PlannedSubject]:
    """What the import will do, subject by subject; refuses (``WatchlistError``) a named subject that
    does not exist or is closed, before anything is enrolled."""
    targets = sorted({i.target_id for i in plan if i.target_id is not None})
    found = {s.id: s for s in session.exec(select(Subject).where(col(Subject.id).in_(targets))).all()}
    missing = [t for t in targets if t not in found]
    if missing:
        raise WatchlistError(f"No subject {', '.join(f'#{t}' for t in missing[:10])}: "
                             "an import adds only to subjects that exist.")
    closed = [t for t in targets if found[t].status != SubjectStatus.active.value]
    if closed:
        raise WatchlistError(f"Subject {', '.join(f'#{t} ({found[t].status})' for t in closed[:10])} "
                             "is closed: photos can no longer be added to it.")
    new = [i for i in plan if i.target_id is None]
    keys = [import_key(import_ref, i) for i in new]
    resumed: dict[str, Subject] = {}
    names: dict[str, list[int]] = {}
    for start in range(0, len(new), PREVIEW_CHUNK):
        chunk_keys = keys[start:start + PREVIEW_CHUNK]
        for subject in session.exec(select(Subject).where(col(Subject.import_key).in_(chunk_keys))).all():
            resumed[subject.import_key] = subject  # type: ignore[index]
        values = {i.fields.name for i in new[start:start + PREVIEW_CHUNK]} | \
            {i.fields.case_ref for i in new[start:start + PREVIEW_CHUNK]}
        for subject in session.exec(select(Subject).where(or_(col(Subject.name).in_(values),
                                                              col(Subject.case_ref).in_(values)))).all():
            for value in {subject.name, subject.case_ref}:
                names.setdefault(value, []).append(subject.id)  # type: ignore[arg-type]
    rows: list[PlannedSubject] = []
    for item in plan:
        if item.target_id is not None:
            target = found[item.target_id]
            rows.append(PlannedSubject(item.label, len(item.photos), "existing", target.id, target.name))
            continue
        mine = resumed.get(import_key(import_ref, item))
        if mine is not None:
            rows.append(PlannedSubject(item.label, len(item.photos), "resumed", mine.id, mine.name))
            continue
        alike = sorted(set(names.get(item.fields.name, []) + names.get(item.fields.case_ref, [])))
        rows.append(PlannedSubject(item.label, len(item.photos), "new", lookalikes=alike))
    return rows


@dataclass
class AnalysisTask:
    subject_id: int
    label: str
    data: bytes


# Result of analysing one task: a FaceAnalysis, or the reason it could not be analysed.
AnalyzeMany = Callable[[Iterable[AnalysisTask]], Iterator[tuple[AnalysisTask, "FaceAnalysis | str"]]]


def analyze_serially(settings: Settings, pipeline: Any, models: Sequence[str] = ()) -> AnalyzeMany:
    """Analyse in this process, one photo after another (the web page's ZIP import)."""

    def run(tasks: Iterable[AnalysisTask]) -> Iterator[tuple[AnalysisTask, FaceAnalysis | str]]:
        for task in tasks:
            yield task, analyze_task(task.data, settings, pipeline, models)

    return run


def analyze_task(data: bytes, settings: Settings, pipeline: Any, models: Sequence[str] = ()) -> FaceAnalysis | str:
    try:
        return analyze_for_enrolment(data, settings, pipeline, models)
    except EnrolmentRefused as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - one bad photo must not stop an import
        return f"could not be analysed ({type(exc).__name__})"


def _subject_for(engine: Engine, item: ImportSubject, actor: User | None, import_ref: str) -> tuple[int, bool]:
    if item.target_id is not None:
        return item.target_id, False  # named explicitly (checked by the preview, its status again below)
    key = import_key(import_ref, item)
    with Session(engine, expire_on_commit=False) as session:
        found = session.exec(select(Subject).where(Subject.import_key == key)).first()
        if found is not None:
            return found.id, False  # type: ignore[return-value]
        try:
            subject = create_subject(session, item.fields, actor, import_key=key)
            session.commit()
            return subject.id, True  # type: ignore[return-value]
        except IntegrityError:
            session.rollback()
            found = session.exec(select(Subject).where(Subject.import_key == key)).one()
            return found.id, False  # type: ignore[return-value]


def _analysis_tasks(engine: Engine, plan: Sequence[ImportSubject], actor: User | None, import_ref: str,
                    summary: ImportSummary, tick: Callable[[int], None]) -> Iterator[AnalysisTask]:
    """The photos still to analyse, subject by subject (each subject found or created as it comes);
    photos that cannot be read, are enrolled already, or are for a closed subject are counted here."""
    for item in plan:
        subject_id, created = _subject_for(engine, item, actor, import_ref)
        summary.subjects_created += int(created)
        with Session(engine) as session:
            status = session.exec(select(Subject.status).where(Subject.id == subject_id)).first() or "missing"
            known = set(session.exec(select(ReferencePhoto.image_sha256)
                                     .where(ReferencePhoto.subject_id == subject_id)).all())
        for photo in item.photos:
            summary.photos_seen += 1
            try:
                data = photo.read()
            except OSError as exc:
                summary.failures.append(ImportFailure(photo.label, f"cannot be read ({exc.strerror})"))
                tick(1)
                continue
            if hashlib.sha256(data).hexdigest() in known:
                summary.photos_already += 1
                tick(1)
                continue
            if status != SubjectStatus.active.value:
                summary.failures.append(ImportFailure(photo.label, f"subject is closed ({status})"))
                tick(1)
                continue
            yield AnalysisTask(subject_id, photo.label, data)


def run_import(engine: Engine, store: ImageStore, settings: Settings, plan: Sequence[ImportSubject],
               analyze_many: AnalyzeMany, actor: User | None = None,
               progress: Callable[[int], None] | None = None, source: str = "", *,
               import_ref: str) -> ImportSummary:
    """Enrol a planned import; resumable and idempotent (a photo already enrolled is skipped by its hash).

    ``import_ref`` names this import: the subjects it creates are keyed by it, so running the
    same import again (after an interruption) finds them, and another import never does.  It adds
    to an existing subject only where the plan names one (``ImportSubject.target_id``).
    ``progress(n)`` is called as photos are dealt with (skipped, enrolled or failed).
    """
    summary = ImportSummary(subjects_seen=len(plan))
    started = time.monotonic()
    tick = progress or (lambda n: None)

    tasks = _analysis_tasks(engine, plan, actor, import_ref, summary, tick)
    for task, result in analyze_many(tasks):
        summary.photos_analyzed += 1
        if isinstance(result, str):
            summary.failures.append(ImportFailure(task.label, result))
        else:
            try:
                # One transaction per photo (a refusal keeps its audit entry).
                with Session(engine, expire_on_commit=False) as session, unit_of_work(session):
                    _, created = enrol_reference_photo(session, store, task.subject_id, result, actor,
                                                       view=PurePosixPath(task.label).stem[:40])
                if created:
                    summary.photos_enrolled += 1
                else:
                    summary.photos_already += 1
            except EnrolmentRefused as exc:
                summary.failures.append(ImportFailure(task.label, _short_reason(str(exc))))
        tick(1)
    summary.seconds = time.monotonic() - started
    with Session(engine) as session:
        audit.record(session, "watchlist.import", actor=actor, object_type="watchlist", object_id=source[:64],
                     outcome=AuditOutcome.ok if not summary.failures else AuditOutcome.error,
                     detail={**summary.as_dict(), "import": import_ref,
                             "added_to": sorted({i.target_id for i in plan if i.target_id is not None})})
        session.commit()
    return summary


def _short_reason(message: str) -> str:
    if message.startswith("No face was found"):
        return "no face found"
    if "faces and the subject's cannot be told apart" in message:
        return "several faces, subject's cannot be told apart"
    return message


def import_ref(row: WatchlistImport) -> str:
    """What keys the subjects this import creates (see ``run_import``)."""
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

    ``targets`` is the manager's ``FOLDER = SUBJECT_ID`` lines.  :class:`triage.WatchlistError`
    says what is wrong with a ZIP that cannot be imported; nothing is kept then.  Nothing is enrolled
    until :func:`confirm_import`."""
    plan = plan_zip(data, _patterns(include))
    photos = sum(len(item.photos) for item in plan)
    if photos == 0:
        raise WatchlistError("The ZIP holds no photos to import"
                                       + (" matching those patterns." if include.strip() else "."))
    named = parse_targets(targets)
    preview_import(session, name_targets(plan, named), "zip-import:new")
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


def plan_of(settings: Settings, row: WatchlistImport) -> list[ImportSubject]:
    """The import's plan, read again from its archive, with the subjects the manager named."""
    try:
        data = archive_path(settings, row.archive_sha256).read_bytes()
    except OSError as exc:
        raise WatchlistError(f"The archive of import {row.id} is gone ({exc.strerror}).") from exc
    return name_targets(plan_zip(data, _patterns(row.include)), dict(row.targets))


def preview(session: Session, settings: Settings, row: WatchlistImport) -> list[PlannedSubject]:
    return preview_import(session, plan_of(settings, row), import_ref(row))


def _refusal(user: User, action: str, row_id: int, reason: str, ip: str) -> RefusalEntry:
    """A refusal's audit entry: written when the transaction ends, after its work is rolled back."""
    return RefusalEntry(action, actor=user, object_type="watchlist_import", object_id=row_id,
                        detail={"reason": reason}, ip=ip)


def _pending(session: Session, user: User, action: str, import_id: int, ip: str) -> WatchlistImport:
    stmt = select(WatchlistImport).where(WatchlistImport.id == import_id)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = session.exec(stmt).first()
    if row is None:
        raise LookupError("No such import.")
    if row.status != ImportStatus.pending.value:
        raise WatchlistError(f"This import is already {row.status}: only a previewed import "
                             "waiting for confirmation can be confirmed or cancelled.",
                             audit=_refusal(user, action, import_id, f"import is {row.status}", ip))
    return row


def confirm_import(session: Session, settings: Settings, user: User, import_id: int, ip: str = "") -> WatchlistImport:
    """The manager confirmed the preview: queue the import's job."""
    action = "watchlist.import_queued"
    row = _pending(session, user, action, import_id, ip)
    try:
        planned = preview(session, settings, row)  # the named subjects are checked again: one may have closed
    except WatchlistError as exc:
        exc.audit = _refusal(user, action, import_id, str(exc), ip)
        raise
    row.status = ImportStatus.queued.value
    session.add(row)
    jobs.enqueue(session, IMPORT_JOB, row.id, max_attempts=settings.job_max_attempts)  # type: ignore[arg-type]
    audit.record(session, action, actor=user, object_type="watchlist_import", object_id=row.id,
                 detail={"filename": row.filename, "subjects": row.subjects_total, "photos": row.photos_total,
                         "new_subjects": sum(p.action == "new" for p in planned),
                         "added_to": sorted(p.subject_id for p in planned if p.action == "existing")}, ip=ip)
    return row


def cancel_import(session: Session, settings: Settings, user: User, import_id: int, ip: str = "") -> None:
    """Drop a previewed import that was not confirmed (nothing of it was enrolled).

    Two transactions on purpose: the row's removal is committed before its archive is released, so an
    archive is never removed while a row still names it."""
    action = "watchlist.import_cancel"
    row = _pending(session, user, action, import_id, ip)
    sha = row.archive_sha256
    session.delete(row)
    audit.record(session, action, actor=user, object_type="watchlist_import", object_id=import_id,
                 detail={"filename": row.filename, "sha256": sha}, ip=ip)
    checkpoint(session)
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
    if status in (*ACTIVE, ImportStatus.failed.value):
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


def run_zip_import(ctx: JobContext) -> ImportSummary:
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
    except WatchlistError as exc:  # checked at upload: only a damaged or lost file gets here
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
    analyze = analyze_serially(ctx.settings, pipeline, enrolment_models(ctx.engine, ctx.settings.face_model))
    summary = run_import(ctx.engine, ctx.store, ctx.settings, plan, analyze, actor, progress,
                         f"zip:{row.filename}", import_ref=import_ref(row))
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


def import_failed(session: Session, services: Services, job: Job) -> None:
    """The worker gave up on an import's job: the import is marked failed and its archive, of no more use, goes."""
    row = session.get(WatchlistImport, job.ref_id)
    if row is None:
        return
    row.status, row.finished_at = ImportStatus.failed.value, utcnow()
    session.add(row)
    session.flush()
    events.job_failed_for_good(session, job)
    _release_archive(services.settings, session, row.archive_sha256, job.ref_id)
