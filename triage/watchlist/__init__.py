"""The watchlist: subjects, their reference photos, closing, expiry and bulk enrolment.

Every function that changes something takes the session, performs the whole
change in the caller's transaction, appends the gallery change that keeps
every process's index in step (``triage.gallery``) and writes its audit entry.
Face analysis is slow, so it happens before the transaction
(``analyze_for_enrolment``), never inside it.
"""

from triage.watchlist.bulk_import import (
    CSV_FIELDS,
    IMPORT_JOB,
    MAX_TARGETS_TEXT,
    AnalysisTask,
    AnalyzeMany,
    ImportFailure,
    ImportPhoto,
    ImportSubject,
    ImportSummary,
    PlannedSubject,
    analyze_serially,
    analyze_task,
    import_key,
    name_targets,
    parse_targets,
    plan_csv,
    plan_folder,
    plan_zip,
    preview_import,
    run_import,
)
from triage.watchlist.enrolment import (
    EnrolmentRefused,
    FaceAnalysis,
    analyze_for_enrolment,
    choose_face,
    enrol_reference_photo,
    face_landmarks,
)
from triage.watchlist.subjects import (
    CLOSING_STATUSES,
    STATUS_FILTERS,
    SubjectBase,
    SubjectCreate,
    SubjectNotFound,
    SubjectUpdate,
    WatchlistError,
    close_subject,
    create_subject,
    display_status,
    expire_subjects,
    expiry_sweep,
    get_subject,
    is_expired,
    list_subjects,
    reference_photos,
    update_subject,
    withdraw_for_subject,
)

__all__ = [
    "CLOSING_STATUSES", "CSV_FIELDS", "IMPORT_JOB", "MAX_TARGETS_TEXT", "STATUS_FILTERS",
    "AnalysisTask", "AnalyzeMany", "EnrolmentRefused", "FaceAnalysis", "ImportFailure", "ImportPhoto",
    "ImportSubject", "ImportSummary", "PlannedSubject", "SubjectBase", "SubjectCreate", "SubjectNotFound",
    "SubjectUpdate", "WatchlistError",
    "analyze_for_enrolment", "analyze_serially", "analyze_task", "choose_face", "close_subject", "create_subject",
    "display_status", "enrol_reference_photo", "expire_subjects", "expiry_sweep", "face_landmarks", "get_subject",
    "import_key", "is_expired", "list_subjects", "name_targets", "parse_targets", "plan_csv", "plan_folder",
    "plan_zip", "preview_import", "reference_photos", "run_import", "update_subject", "withdraw_for_subject",
]
