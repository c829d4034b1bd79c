"""The whole domain as SQLModel tables.

Rules of DESIGN.md that the database itself can hold are constraints here:
one verdict per slot, two slots per candidate round, never the same account
twice on one candidate, one flag per candidate, one probe per face.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON as SAJSON
from sqlalchemy import CheckConstraint, Column, Index, LargeBinary, UniqueConstraint, text, true
from sqlalchemy import Table as SATable
from sqlalchemy import inspect as sa_inspect
from sqlmodel import Field, SQLModel

from triage.clock import utcnow


def _in(column: str, enum: type[StrEnum]) -> str:
    values = ", ".join(f"'{v.value}'" for v in enum)
    return f"{column} IN ({values})"


class Table(SQLModel):
    """A table keyed by a surrogate integer the database assigns on insert.

    ``id`` is None until the row is flushed; code that holds a stored row reads
    ``pk``, an ``int`` that refuses to exist for an unsaved row.
    """

    id: int | None = Field(default=None, primary_key=True)

    @property
    def pk(self) -> int:
        if self.id is None:
            raise ValueError(f"{type(self).__name__} has no id before it is flushed")
        return self.id


def table_of(model: type[SQLModel]) -> SATable:
    """The table behind a table model (SQLModel sets ``__table__`` without declaring it to type checkers)."""
    table = sa_inspect(model).local_table
    if not isinstance(table, SATable):
        raise TypeError(f"{model.__name__} is not a table model")
    return table


# Roles and states
class Role(StrEnum):
    officer = "officer"
    recognizer = "recognizer"
    manager = "manager"
    admin = "admin"


class SubjectStatus(StrEnum):
    active = "active"
    arrested = "arrested"
    withdrawn = "withdrawn"


class SightingStatus(StrEnum):
    queued = "queued"
    matching = "matching"
    matched = "matched"  # faces found, candidates (if any) created
    no_face = "no_face"
    failed = "failed"


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"


class CandidateStatus(StrEnum):
    open = "open"
    flagged = "flagged"
    cleared = "cleared"
    disputed = "disputed"
    withdrawn = "withdrawn"


class Qualification(StrEnum):
    """A recognizer's standing on known-answer tasks (triage.qualification)."""

    probation = "probation"
    qualified = "qualified"
    suspended = "suspended"


class Verdict(StrEnum):
    same = "same"
    different = "different"
    cannot_tell = "cannot_tell"


class FlagStatus(StrEnum):
    raised = "raised"
    acknowledged = "acknowledged"
    closed = "closed"


class FlagCloseReason(StrEnum):
    arrested = "arrested"
    not_located = "not_located"
    withdrawn = "withdrawn"


class ImportStatus(StrEnum):
    pending = "pending"  # previewed, waiting for the manager's confirmation; nothing enrolled
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"


class AuditOutcome(StrEnum):
    ok = "ok"
    denied = "denied"
    error = "error"


# Users and access
# Separation of duties (DESIGN.md): whoever reviews never holds the rights that show scores, disputes or
# the audit log.  The database refuses an account holding both.
REVIEWING_ROLES = frozenset({Role.recognizer})
OVERSEEING_ROLES = frozenset({Role.manager, Role.admin})
SEPARATION_OF_DUTIES_SQL = ("NOT (roles LIKE '%recognizer%' AND (roles LIKE '%manager%' OR roles LIKE '%admin%'))")


class User(Table, table=True):
    __tablename__ = "user_account"
    __table_args__ = (CheckConstraint(SEPARATION_OF_DUTIES_SQL, name="ck_user_account_duties"),
                      CheckConstraint(_in("qualification", Qualification), name="ck_user_qualification"))
    username: str = Field(max_length=64, unique=True, index=True)
    full_name: str = Field(default="", max_length=200)
    # Space-separated Role values; a person may hold several.
    roles: str = Field(default="", max_length=200)
    # Roles set aside when the account held reviewing and overseeing roles at once (migration 0005):
    # they give no rights until an admin sets the account's roles, choosing one side.
    roles_on_hold: str = Field(default="", max_length=200, sa_column_kwargs={"server_default": ""})
    password_hash: str = Field(max_length=255)
    is_active: bool = True
    failed_logins: int = 0
    locked_until: dt.datetime | None = None
    totp_secret: str | None = Field(default=None, max_length=200)  # sealed: triage.secretbox
    # The 30-second step of the last accepted code: a code is good once only.
    totp_last_step: int | None = None
    must_change_password: bool = False
    created_at: dt.datetime = Field(default_factory=utcnow)
    password_changed_at: dt.datetime = Field(default_factory=utcnow)
    # Known-answer standing of a recognizer: probation → qualified; suspended takes no live task.
    qualification: str = Field(default=Qualification.probation.value, max_length=16,
                               sa_column_kwargs={"server_default": Qualification.probation.value})
    # The known-answer record counts answers from this moment on (a reinstatement starts it afresh).
    qualification_since: dt.datetime | None = None

    @property
    def is_suspended(self) -> bool:
        return self.qualification == Qualification.suspended.value

    @property
    def role_set(self) -> frozenset[Role]:
        return frozenset(Role(r) for r in self.roles.split() if r)

    def has_role(self, *roles: Role) -> bool:
        return bool(self.role_set & set(roles))


class LoginFailure(Table, table=True):
    """A failed login, by the username tried (existing or not) and the address: throttling, not locking."""

    __tablename__ = "login_failure"
    at: dt.datetime = Field(default_factory=utcnow, index=True)
    username: str = Field(max_length=64, index=True)
    ip: str = Field(default="", max_length=64, index=True)


class WebSession(Table, table=True):
    __tablename__ = "web_session"
    # sha256 of the cookie value; the cookie itself is never stored.
    token_hash: str = Field(max_length=64, unique=True, index=True)
    user_id: int = Field(foreign_key="user_account.id", index=True)
    csrf_token: str = Field(max_length=64)
    created_at: dt.datetime = Field(default_factory=utcnow)
    last_seen_at: dt.datetime = Field(default_factory=utcnow)
    revoked_at: dt.datetime | None = None
    ip: str = Field(default="", max_length=64)
    user_agent: str = Field(default="", max_length=300)


class ApiToken(Table, table=True):
    __tablename__ = "api_token"
    user_id: int = Field(foreign_key="user_account.id", index=True)
    name: str = Field(max_length=100)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    created_at: dt.datetime = Field(default_factory=utcnow)
    last_used_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None


# Stored images (content-addressed files in the data folder)
class StoredImage(SQLModel, table=True):
    __tablename__ = "stored_image"
    sha256: str = Field(primary_key=True, max_length=64)
    media_type: str = Field(max_length=40)
    size_bytes: int
    width: int | None = None
    height: int | None = None
    created_at: dt.datetime = Field(default_factory=utcnow)


# Watchlist
class Subject(Table, table=True):
    __tablename__ = "subject"
    __table_args__ = (
        CheckConstraint(_in("status", SubjectStatus), name="ck_subject_status"),
        CheckConstraint("priority BETWEEN 1 AND 5", name="ck_subject_priority"),
    )
    name: str = Field(max_length=200, index=True)
    aliases: str = Field(default="", max_length=500)
    case_ref: str = Field(max_length=100, index=True)
    # 1 = most urgent, 5 = least.
    priority: int = 3
    notes: str = Field(default="", max_length=4000)
    status: str = Field(default=SubjectStatus.active.value, max_length=16, index=True)
    expires_on: dt.date | None = Field(default=None, index=True)
    # Key of a bulk-import row, so that a re-run finds the same subject.
    import_key: str | None = Field(default=None, max_length=300, unique=True)
    created_at: dt.datetime = Field(default_factory=utcnow)
    created_by: int | None = Field(default=None, foreign_key="user_account.id")
    updated_at: dt.datetime = Field(default_factory=utcnow)
    closed_at: dt.datetime | None = None


class ReferencePhoto(Table, table=True):
    __tablename__ = "reference_photo"
    __table_args__ = (UniqueConstraint("subject_id", "image_sha256", name="uq_reference_photo_image"),)
    subject_id: int = Field(foreign_key="subject.id", index=True)
    image_sha256: str = Field(foreign_key="stored_image.sha256", max_length=64)
    view: str = Field(default="", max_length=40)
    face_index: int = 0
    bbox: list[int] = Field(default_factory=list, sa_column=Column(SAJSON, nullable=False))
    landmarks: dict[str, list[float]] = Field(default_factory=dict, sa_column=Column(SAJSON, nullable=False))
    detector: str = Field(default="", max_length=40)
    iod_px: float = 0.0
    blur: float = 0.0
    yaw_deg: float = 0.0
    quality_ok: bool = True
    quality_issues: str = Field(default="", max_length=200)
    eye_crop_sha256: str = Field(foreign_key="stored_image.sha256", max_length=64)
    face_chip_sha256: str = Field(foreign_key="stored_image.sha256", max_length=64)
    created_at: dt.datetime = Field(default_factory=utcnow)
    created_by: int | None = Field(default=None, foreign_key="user_account.id")


class ReferenceEmbedding(SQLModel, table=True):
    """A reference photo's face descriptor from one model (``name@<weights checksum>``).

    A photo holds one row per model it was embedded with; the gallery loads only
    the rows of the active model (``GalleryModel``), so vectors of different models
    are never compared.
    """

    __tablename__ = "reference_embedding"
    reference_photo_id: int = Field(foreign_key="reference_photo.id", primary_key=True)
    model_id: str = Field(max_length=80, primary_key=True, index=True)
    dim: int
    embedding: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: dt.datetime = Field(default_factory=utcnow)


class GalleryModel(SQLModel, table=True):
    """The single row naming the face model every process searches (and embeds probes) with."""

    __tablename__ = "gallery_model"
    __table_args__ = (CheckConstraint("id = 1", name="ck_gallery_model_single_row"),)
    id: int = Field(default=1, primary_key=True)
    model_id: str = Field(max_length=80)
    dim: int  # the length of its vectors (an empty gallery still needs it)
    previous_model_id: str | None = Field(default=None, max_length=80)
    switched_at: dt.datetime = Field(default_factory=utcnow)


class ReindexRun(Table, table=True):
    """Re-embedding the reference photos with another model, run by a ``reindex`` job."""

    __tablename__ = "reindex_run"
    __table_args__ = (CheckConstraint(_in("status", JobStatus), name="ck_reindex_run_status"),)
    target_model_id: str = Field(max_length=80, index=True)
    from_model_id: str = Field(max_length=80)
    status: str = Field(default=JobStatus.queued.value, max_length=16)
    created_by: int | None = Field(default=None, foreign_key="user_account.id")
    created_at: dt.datetime = Field(default_factory=utcnow)
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    # Reference photos of active subjects, and how many of them hold a target-model embedding;
    # updated in the transaction of each batch.
    photos_total: int = 0
    photos_done: int = 0
    failures: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(SAJSON, nullable=False))
    # Set in the transaction that made the target model the active one.
    switched_at: dt.datetime | None = None


class GalleryChange(Table, table=True):
    """Append-only change log that keeps every process's in-memory index in step."""

    __tablename__ = "gallery_change"
    __table_args__ = (
        CheckConstraint("action IN ('add', 'remove_subject', 'remove_photo', 'switch_model')",
                        name="ck_gallery_change_action"),
    )
    action: str = Field(max_length=16)
    subject_id: int = Field(index=True)
    reference_photo_id: int | None = None
    created_at: dt.datetime = Field(default_factory=utcnow)


# Sightings and matching
class Sighting(Table, table=True):
    __tablename__ = "sighting"
    __table_args__ = (
        UniqueConstraint("uploaded_by", "idempotency_key", name="uq_sighting_idempotency"),
        CheckConstraint(_in("status", SightingStatus), name="ck_sighting_status"),
        CheckConstraint("latitude IS NULL OR (latitude BETWEEN -90 AND 90)", name="ck_sighting_lat"),
        CheckConstraint("longitude IS NULL OR (longitude BETWEEN -180 AND 180)", name="ck_sighting_lon"),
    )
    uploaded_by: int = Field(foreign_key="user_account.id", index=True)
    idempotency_key: str | None = Field(default=None, max_length=100)
    # SHA-256 of the upload's photos and fields: a key reused with another payload is refused.
    idempotency_digest: str | None = Field(default=None, max_length=64)
    observed_at: dt.datetime
    location_text: str = Field(default="", max_length=300)
    latitude: float | None = None
    longitude: float | None = None
    note: str = Field(default="", max_length=2000)
    status: str = Field(default=SightingStatus.queued.value, max_length=16, index=True)
    faces_found: int = 0
    created_at: dt.datetime = Field(default_factory=utcnow, index=True)
    matched_at: dt.datetime | None = None


class SightingPhoto(Table, table=True):
    __tablename__ = "sighting_photo"
    __table_args__ = (UniqueConstraint("sighting_id", "position", name="uq_sighting_photo_position"),)
    sighting_id: int = Field(foreign_key="sighting.id", index=True)
    position: int = 0
    image_sha256: str = Field(foreign_key="stored_image.sha256", max_length=64)
    faces_found: int | None = None


class WatchlistImport(Table, table=True):
    """A ZIP of reference photos sent from the web page, enrolled in the background by a job."""

    __tablename__ = "watchlist_import"
    __table_args__ = (CheckConstraint(_in("status", ImportStatus), name="ck_watchlist_import_status"),)
    created_by: int = Field(foreign_key="user_account.id", index=True)
    created_at: dt.datetime = Field(default_factory=utcnow)
    filename: str = Field(default="", max_length=200)
    include: str = Field(default="", max_length=200)
    archive_sha256: str = Field(max_length=64)
    archive_bytes: int = 0
    status: str = Field(default=ImportStatus.pending.value, max_length=16)
    # Folder name -> id of the existing subject the manager named for it; every other folder is a new subject.
    targets: dict[str, int] = Field(default_factory=dict, sa_column=Column(SAJSON, nullable=False))
    subjects_total: int = 0
    photos_total: int = 0
    photos_done: int = 0
    summary: dict[str, Any] = Field(default_factory=dict, sa_column=Column(SAJSON, nullable=False))
    failures: list[dict[str, str]] = Field(default_factory=list, sa_column=Column(SAJSON, nullable=False))
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None


# Kinds of job in the persistent queue whose failures and retries other modules speak of.
MATCH_JOB = "match_sighting"
IMPORT_JOB = "watchlist_import"


class Job(Table, table=True):
    """A persistent unit of work; claimed with a lease so a dead worker's job is taken again."""

    __tablename__ = "job"
    __table_args__ = (
        UniqueConstraint("kind", "ref_id", name="uq_job_kind_ref"),
        CheckConstraint(_in("status", JobStatus), name="ck_job_status"),
        Index("ix_job_claim", "status", "run_after"),
    )
    kind: str = Field(max_length=40)
    ref_id: int
    status: str = Field(default=JobStatus.queued.value, max_length=16)
    attempts: int = 0
    max_attempts: int = 3
    run_after: dt.datetime = Field(default_factory=utcnow)
    lease_owner: str | None = Field(default=None, max_length=100)
    lease_expires_at: dt.datetime | None = None
    last_error: str = Field(default="", max_length=2000)
    created_at: dt.datetime = Field(default_factory=utcnow)
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None


class Probe(Table, table=True):
    """One face found in a sighting photo."""

    __tablename__ = "probe"
    __table_args__ = (UniqueConstraint("sighting_photo_id", "face_index", name="uq_probe_face"),)
    sighting_id: int = Field(foreign_key="sighting.id", index=True)
    sighting_photo_id: int = Field(foreign_key="sighting_photo.id", index=True)
    face_index: int
    bbox: list[int] = Field(default_factory=list, sa_column=Column(SAJSON, nullable=False))
    landmarks: dict[str, list[float]] = Field(default_factory=dict, sa_column=Column(SAJSON, nullable=False))
    detector: str = Field(default="", max_length=40)
    iod_px: float = 0.0
    blur: float = 0.0
    yaw_deg: float = 0.0
    quality_ok: bool = True
    quality_issues: str = Field(default="", max_length=200)
    # False: the face was too small to search (Settings.min_face_iod_px); stored and shown only.
    searched: bool = Field(default=True, sa_column_kwargs={"server_default": true()})
    embedding: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    # The face model the embedding came from (``name@<weights checksum>``): the gallery's at the time.
    model_id: str = Field(max_length=80)
    eye_crop_sha256: str = Field(foreign_key="stored_image.sha256", max_length=64)
    face_chip_sha256: str = Field(foreign_key="stored_image.sha256", max_length=64)
    created_at: dt.datetime = Field(default_factory=utcnow)


# Review
class Candidate(Table, table=True):
    """A (probe, subject) pair proposed by the matcher, or a known-answer pair."""

    __tablename__ = "candidate"
    __table_args__ = (
        UniqueConstraint("probe_id", "subject_id", name="uq_candidate_probe_subject"),
        CheckConstraint(_in("status", CandidateStatus), name="ck_candidate_status"),
        CheckConstraint(
            "(probe_id IS NOT NULL AND known_probe_photo_id IS NULL AND known_source_candidate_id IS NULL"
            " AND known_truth IS NULL)"
            " OR (probe_id IS NULL AND known_truth IS NOT NULL"
            " AND (known_probe_photo_id IS NOT NULL OR known_source_candidate_id IS NOT NULL))",
            name="ck_candidate_kind",
        ),
        CheckConstraint("known_truth IS NULL OR known_truth IN ('same', 'different')", name="ck_candidate_truth"),
        CheckConstraint("current_round >= 1", name="ck_candidate_round"),
        Index("ix_candidate_queue", "status", "priority_at"),
        # The managers' metrics: decisions of a period, and known-answer pairs, read from the index alone.
        Index("ix_candidate_decided", "decided_at", "status", "known_truth", "score", "current_round",
              "created_at", "sighting_id"),
        Index("ix_candidate_known", "known_truth", "id"),
        # Disputes a manager may still escalate can change: the summarised metrics read them live from here.
        Index("ix_candidate_disputes", "status", "decided_at", "current_round", "known_truth", "score",
              "created_at", "sighting_id"),
        # The queue's depth and age on the metrics page: open real candidates, read from the index alone.
        Index("ix_candidate_open_real", "status", "known_truth", "priority_at", "current_round", "id"),
    )
    probe_id: int | None = Field(default=None, foreign_key="probe.id", index=True)
    sighting_id: int | None = Field(default=None, foreign_key="sighting.id", index=True)
    subject_id: int = Field(foreign_key="subject.id", index=True)
    reference_photo_id: int = Field(foreign_key="reference_photo.id")
    # Known-answer pairs: the "sighting" side is made from another reference photo, or from the probe of a
    # settled real candidate (kept as a plain number: retention may delete that candidate later) ...
    known_probe_photo_id: int | None = Field(default=None, foreign_key="reference_photo.id")
    known_source_candidate_id: int | None = Field(default=None, index=True)
    # ... re-rendered for this task alone (degraded like a real probe), so its bytes exist nowhere else.
    known_probe_eyes_sha256: str | None = Field(default=None, foreign_key="stored_image.sha256", max_length=64)
    known_probe_face_sha256: str | None = Field(default=None, foreign_key="stored_image.sha256", max_length=64)
    known_truth: str | None = Field(default=None, max_length=16)
    score: float
    distance: float
    rank: int
    status: str = Field(default=CandidateStatus.open.value, max_length=16)
    current_round: int = 1
    # Sort key of the queue: earlier is served first (see triage.queue).
    priority_at: dt.datetime = Field(default_factory=utcnow)
    created_at: dt.datetime = Field(default_factory=utcnow)
    decided_at: dt.datetime | None = None

    @property
    def is_known_answer(self) -> bool:
        return self.known_truth is not None


class ReviewSlot(Table, table=True):
    """One of the two independent verdicts a candidate round needs."""

    __tablename__ = "review_slot"
    __table_args__ = (
        # Two counting slots per round: a voided slot (its author suspended) keeps its row beside its
        # replacement.
        Index("uq_review_slot_position", "candidate_id", "round", "slot_no", unique=True,
              sqlite_where=text("voided_at IS NULL"), postgresql_where=text("voided_at IS NULL")),
        # Never the same account twice on a candidate, in any round (NULLs are distinct).
        UniqueConstraint("candidate_id", "reviewer_id", name="uq_review_slot_reviewer"),
        UniqueConstraint("idempotency_key", name="uq_review_slot_idempotency"),
        CheckConstraint("slot_no IN (1, 2)", name="ck_review_slot_no"),
        CheckConstraint("verdict IS NULL OR verdict IN ('same', 'different', 'cannot_tell')",
                        name="ck_review_slot_verdict"),
        CheckConstraint("verdict IS NULL OR reviewer_id IS NOT NULL", name="ck_review_slot_verdict_reviewer"),
        CheckConstraint("pending_verdict IS NULL OR (pending_verdict IN ('same', 'different', 'cannot_tell') "
                        "AND verdict IS NULL AND reviewer_id IS NOT NULL AND pending_at IS NOT NULL)",
                        name="ck_review_slot_pending"),
        Index("ix_review_slot_pending", "pending_at"),
        Index("ix_review_slot_open", "verdict", "lease_expires_at"),
        # The managers' metrics: verdicts of a period, and rounds, read from the index alone.
        Index("ix_review_slot_verdicts", "verdict_at", "reviewer_id", "verdict", "candidate_id"),
        Index("ix_review_slot_rounds", "candidate_id", "round", "voided_at", "withdrawn", "reviewer_id", "verdict",
              "verdict_at"),
        # Verdicts voided in a period; partial, so that it is never mistaken for a way to the counting slots.
        Index("ix_review_slot_voided", "voided_at", "verdict", sqlite_where=text("voided_at IS NOT NULL"),
              postgresql_where=text("voided_at IS NOT NULL")),
        # Unanswered slots (the queue's depth on the metrics page); partial: only those that wait.
        Index("ix_review_slot_waiting", "candidate_id", "round", "withdrawn", sqlite_where=text("verdict IS NULL"),
              postgresql_where=text("verdict IS NULL")),
    )
    candidate_id: int = Field(foreign_key="candidate.id", index=True)
    round: int = 1
    slot_no: int
    reviewer_id: int | None = Field(default=None, foreign_key="user_account.id", index=True)
    leased_at: dt.datetime | None = None
    lease_expires_at: dt.datetime | None = None
    verdict: str | None = Field(default=None, max_length=16)
    note: str = Field(default="", max_length=2000)
    revealed_full_faces: bool = False
    verdict_at: dt.datetime | None = None
    idempotency_key: str | None = Field(default=None, max_length=100)
    withdrawn: bool = False
    # The author's known-answer record when the verdict was given (shown with a flag's evidence).
    reviewer_record: dict[str, Any] | None = Field(default=None, sa_column=Column(SAJSON, nullable=True))
    # Set when the author was suspended before the candidate was decided: the verdict no longer counts,
    # and a fresh slot in the same position is served to someone else.
    voided_at: dt.datetime | None = None
    void_reason: str = Field(default="", max_length=200)
    # A verdict given on the task page waits here while it can still be undone; it counts (moves to
    # ``verdict`` and may decide the round) once the undo window has passed (triage.review.pending).
    pending_verdict: str | None = Field(default=None, max_length=16)
    pending_at: dt.datetime | None = None


class SeenCandidate(SQLModel, table=True):
    """Who has ever been shown a candidate: escalation goes to people who have not."""

    __tablename__ = "seen_candidate"
    candidate_id: int = Field(foreign_key="candidate.id", primary_key=True)
    user_id: int = Field(foreign_key="user_account.id", primary_key=True)
    first_seen_at: dt.datetime = Field(default_factory=utcnow)
    # The round they were first shown it in: a later round of the same candidate is not served to them.
    round: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    # They gave the task back ("skip"): not served to them again.
    skipped_at: dt.datetime | None = None


class Flag(Table, table=True):
    __tablename__ = "flag"
    __table_args__ = (
        CheckConstraint(_in("status", FlagStatus), name="ck_flag_status"),
        CheckConstraint("close_reason IS NULL OR " + _in("close_reason", FlagCloseReason), name="ck_flag_close_reason"),
        Index("ix_flag_raised", "raised_at", "status"),  # the metrics: flags of a period by status
    )
    candidate_id: int = Field(foreign_key="candidate.id", unique=True)
    sighting_id: int = Field(foreign_key="sighting.id", index=True)
    subject_id: int = Field(foreign_key="subject.id", index=True)
    status: str = Field(default=FlagStatus.raised.value, max_length=16, index=True)
    raised_at: dt.datetime = Field(default_factory=utcnow)
    acknowledged_by: int | None = Field(default=None, foreign_key="user_account.id")
    acknowledged_at: dt.datetime | None = None
    closed_by: int | None = Field(default=None, foreign_key="user_account.id")
    closed_at: dt.datetime | None = None
    close_reason: str | None = Field(default=None, max_length=16)
    close_note: str = Field(default="", max_length=2000)


class FlagReport(Table, table=True):
    """What the sighting's officer reports on a flag: a proposed outcome and a note; a manager closes."""

    __tablename__ = "flag_report"
    __table_args__ = (CheckConstraint(_in("outcome", FlagCloseReason), name="ck_flag_report_outcome"),)
    flag_id: int = Field(foreign_key="flag.id", index=True)
    reported_by: int = Field(foreign_key="user_account.id")
    outcome: str = Field(max_length=16)
    note: str = Field(default="", max_length=2000)
    created_at: dt.datetime = Field(default_factory=utcnow)


class Notification(Table, table=True):
    __tablename__ = "notification"
    __table_args__ = (Index("ix_notification_object", "object_type", "object_id"),)
    user_id: int = Field(foreign_key="user_account.id", index=True)
    kind: str = Field(max_length=40)
    message: str = Field(max_length=500)
    flag_id: int | None = Field(default=None, foreign_key="flag.id")
    # What the notification is about ("candidate", "sighting", "user", "watchlist_import", "flag"), so it
    # is marked read for everyone once that item is handled. No foreign key: the item may be purged.
    object_type: str = Field(default="", max_length=40)
    object_id: int | None = None
    created_at: dt.datetime = Field(default_factory=utcnow)
    read_at: dt.datetime | None = None


class WebhookDeliveryStatus(StrEnum):
    pending = "pending"
    delivered = "delivered"
    skipped = "skipped"  # no webhook URL was configured when its job ran
    failed = "failed"


class WebhookDelivery(Table, table=True):
    """One notification event for the unit's webhook (triage.webhooks); delivered by a job."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (CheckConstraint(_in("status", WebhookDeliveryStatus), name="ck_webhook_delivery_status"),)
    event: str = Field(max_length=40)
    object_type: str = Field(default="", max_length=40)
    object_id: int | None = None
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(SAJSON, nullable=False))
    status: str = Field(default=WebhookDeliveryStatus.pending.value, max_length=16)
    attempts: int = 0
    last_status: int | None = None
    last_error: str = Field(default="", max_length=500)
    created_at: dt.datetime = Field(default_factory=utcnow)
    delivered_at: dt.datetime | None = None


# Audit
class AuditEntry(Table, table=True):
    """Append-only, hash-chained: each row's hash covers its content and the previous hash."""

    __tablename__ = "audit_entry"
    __table_args__ = (CheckConstraint(_in("outcome", AuditOutcome), name="ck_audit_outcome"),)
    at: dt.datetime = Field(default_factory=utcnow, index=True)
    actor_id: int | None = Field(default=None, index=True)
    actor: str = Field(default="", max_length=64)
    action: str = Field(max_length=64, index=True)
    object_type: str = Field(default="", max_length=40)
    object_id: str = Field(default="", max_length=64)
    outcome: str = Field(default=AuditOutcome.ok.value, max_length=16)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(SAJSON, nullable=False))
    ip: str = Field(default="", max_length=64)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64, unique=True)


class AuditHead(SQLModel, table=True):
    """Single row holding the chain's tip; locking it serialises appends on every database."""

    __tablename__ = "audit_head"
    id: int = Field(default=1, primary_key=True)
    last_id: int = 0
    last_hash: str = Field(default="0" * 64, max_length=64)


# Metrics kept past retention
class MetricSlot(Table, table=True):
    """A review slot of a candidate deleted by the retention sweep, as the metrics need it (no image, no
    note, no sighting): written in the sweep's transaction before the slot goes, so figures stay equal."""

    __tablename__ = "metric_slot"
    __table_args__ = (Index("ix_metric_slot_voided", "voided_at", "verdict", sqlite_where=text("voided_at IS NOT NULL"),
                            postgresql_where=text("voided_at IS NOT NULL")),)
    candidate_id: int = Field(index=True)  # the deleted candidate's number (not a key any more)
    round: int = 1
    reviewer_id: int | None = Field(default=None, index=True)
    verdict: str | None = Field(default=None, max_length=16)
    verdict_at: dt.datetime | None = Field(default=None, index=True)
    withdrawn: bool = False
    voided_at: dt.datetime | None = None
    known_truth: str | None = Field(default=None, max_length=16)
    archived_at: dt.datetime = Field(default_factory=utcnow)


class MetricOutcome(Table, table=True):
    """A real candidate deleted by the retention sweep, as the metrics need it: its outcome, score, times."""

    __tablename__ = "metric_outcome"
    candidate_id: int = Field(index=True)
    status: str = Field(max_length=16)
    score: float
    current_round: int = 1
    created_at: dt.datetime
    decided_at: dt.datetime | None = Field(default=None, index=True)
    sighting_created_at: dt.datetime | None = None
    archived_at: dt.datetime = Field(default_factory=utcnow)


# Per-day summaries of the managers' figures (triage.metrics_summary)
class MetricDay(SQLModel, table=True):
    """A finished UTC day whose figures are summarised in the ``metric_day_*`` tables; one row per day, written
    in the transaction that writes that day's rows, so a day is summarised entirely or not at all."""

    __tablename__ = "metric_day"
    day: dt.date = Field(primary_key=True)
    # The definitions the rows were computed under (score band width, rounds, duration buckets): a day
    # summarised under other ones is read live and summarised again.
    version: str = Field(max_length=40)
    voided: int = 0  # verdicts voided on that day
    summarised_at: dt.datetime = Field(default_factory=utcnow)


class MetricDayRound(SQLModel, table=True):
    """Rounds of real candidates completed on the day, by round and (reviewer * 4 + verdict code), low and high."""

    __tablename__ = "metric_day_round"
    __table_args__ = (Index("ix_metric_day_round", "day", "round", "lo", "hi", "n"),)
    id: int | None = Field(default=None, primary_key=True)
    day: dt.date
    round: int
    lo: int
    hi: int
    n: int


class MetricDayTally(SQLModel, table=True):
    """The same rounds by (round, verdict code low, verdict code high) alone: the weekly trends and round
    tallies read these few rows a day rather than every pair's."""

    __tablename__ = "metric_day_tally"
    __table_args__ = (Index("ix_metric_day_tally", "day", "round", "lo_code", "hi_code", "n"),)
    id: int | None = Field(default=None, primary_key=True)
    day: dt.date
    round: int
    lo_code: int
    hi_code: int
    n: int


class MetricDayOutcome(SQLModel, table=True):
    """Real candidates decided on the day for good (not a dispute a manager may still escalate), by status,
    raw score band and whether it was their last round; with the sum of their waits (created → decided)."""

    __tablename__ = "metric_day_outcome"
    __table_args__ = (Index("ix_metric_day_outcome", "day", "status", "band", "final", "n", "wait_seconds"),)
    id: int | None = Field(default=None, primary_key=True)
    day: dt.date
    status: str = Field(max_length=16)
    band: int
    final: bool
    n: int
    wait_seconds: float


class MetricDayDuration(SQLModel, table=True):
    """Sighting-to-outcome seconds of those candidates, by bucket (the bucket's values kept, sorted): a
    percentile over many days sums the buckets' counts, then reads only the values of the bucket it falls in."""

    __tablename__ = "metric_day_duration"
    __table_args__ = (Index("ix_metric_day_duration", "day", "bucket", "n"),)
    id: int | None = Field(default=None, primary_key=True)
    day: dt.date
    bucket: int
    n: int
    seconds: list[float] = Field(default_factory=list, sa_column=Column(SAJSON, nullable=False))


class MetricDayKnown(SQLModel, table=True):
    """Known-answer verdicts given on the day, by reviewer, known truth and verdict."""

    __tablename__ = "metric_day_known"
    __table_args__ = (Index("ix_metric_day_known", "day", "reviewer_id", "truth", "verdict", "n"),)
    id: int | None = Field(default=None, primary_key=True)
    day: dt.date
    reviewer_id: int
    truth: str = Field(max_length=16)
    verdict: str = Field(max_length=16)
    n: int


class MetricDayVerdicts(SQLModel, table=True):
    """Verdicts given on the day by each reviewer, and the distinct clock hours they were given in (an hour
    never spans two days, so hours add up across days)."""

    __tablename__ = "metric_day_verdicts"
    __table_args__ = (Index("ix_metric_day_verdicts", "day", "reviewer_id", "verdicts", "hours"),)
    id: int | None = Field(default=None, primary_key=True)
    day: dt.date
    reviewer_id: int
    verdicts: int
    hours: int


class FlashMessage(SQLModel, table=True):
    """A message for the next page a browser session shows, then deleted (post/redirect/get).

    A one-time password travels in ``secret``, sealed (``triage.secretbox``) and bound to its row, so the
    page after the redirect can show it once and a reload cannot."""

    __tablename__ = "flash_message"
    id: int | None = Field(default=None, primary_key=True)
    web_session_id: int = Field(foreign_key="web_session.id", index=True)
    kind: str = Field(default="ok", max_length=16)
    text: str = Field(default="", max_length=500)
    secret: str = Field(default="", max_length=500)
    created_at: dt.datetime = Field(default_factory=utcnow)
