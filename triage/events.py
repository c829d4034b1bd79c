"""Events people are told about: in-app notifications to the right accounts, and the unit's webhook.

Each function is called by the domain at the moment the event happens, inside that
transaction.  ``announce`` writes one notification per recipient and one webhook
event; ``handled`` marks an item's notifications read for everyone once somebody
has dealt with it (a dispute escalated, a flag acknowledged, a job retried, a
recognizer reinstated).  Messages name no subject to the webhook: its payload is a
fixed summary per event (triage.webhooks).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlmodel import Session, col, select

from triage import notifications, webhooks
from triage.models import IMPORT_JOB, MATCH_JOB, Candidate, Job, Role, Sighting, User, WatchlistImport

DISPUTE_WAITING = "dispute.waiting"
JOB_FAILED = "matching.failed"
IMPORT_FINISHED = "import.finished"
IMPORT_FAILED = "import.failed"
RECOGNIZER_SUSPENDED = "recognizer.suspended"
FLAG_RAISED = "flag.raised"

# What the webhook says of each event: no names, photos, scores or verdicts.
SUMMARIES = {
    FLAG_RAISED: "An arrest flag was raised (investigative lead — confirm identity before any action).",
    DISPUTE_WAITING: "A disputed candidate is waiting for a manager.",
    JOB_FAILED: "Matching a sighting failed for good.",
    IMPORT_FINISHED: "A watchlist import finished.",
    IMPORT_FAILED: "A watchlist import failed.",
    RECOGNIZER_SUSPENDED: "A recognizer was suspended from live tasks.",
}
PATHS = {"flag": "/flags/{}", "candidate": "/disputes", "sighting": "/sightings/{}",
         "watchlist_import": "/watchlist/imports/{}", "user": "/recognizers"}


def managers(session: Session) -> list[int]:
    """Active managers' ids, in a stable order."""
    users = session.exec(select(User).where(col(User.is_active) == True).order_by(col(User.id))).all()  # noqa: E712
    return [u.id for u in users if u.has_role(Role.manager) and u.id is not None]


def announce(session: Session, event: str, message: str, user_ids: Iterable[int | None], *, object_type: str,
             object_id: int | None, flag_id: int | None = None) -> None:
    """Tell each recipient once (in-app) and the unit's webhook once, in the caller's transaction."""
    for user_id in dict.fromkeys(u for u in user_ids if u is not None):
        notifications.notify(session, user_id, event, message, flag_id=flag_id, object_type=object_type,
                             object_id=object_id)
    path = PATHS.get(object_type, "").format(object_id)
    webhooks.record(session, event, object_type=object_type, object_id=object_id,
                    summary=SUMMARIES.get(event, event), path=path)


def handled(session: Session, object_type: str, object_id: int | None, *, kinds: Sequence[str] = (),
            user_ids: Iterable[int] | None = None) -> int:
    """Somebody dealt with the item: its unread notifications are marked read."""
    if object_id is None:
        return 0
    return notifications.clear(session, object_type, object_id, kinds=kinds, user_ids=user_ids)


def dispute_waiting(session: Session, candidate: Candidate) -> None:
    """A real candidate was decided *disputed*: managers are told it waits for them."""
    announce(session, DISPUTE_WAITING,
             f"Candidate #{candidate.id} is disputed after round {candidate.current_round}: "
             "it waits for a manager (escalate it, or leave it disputed).",
             managers(session), object_type="candidate", object_id=candidate.id)


def job_failed_for_good(session: Session, job: Job) -> None:
    """A job gave up: matching tells managers and the uploading officer; an import tells who started it."""
    if job.kind == MATCH_JOB:
        sighting = session.get(Sighting, job.ref_id)
        officer = [sighting.uploaded_by] if sighting is not None else []
        announce(session, JOB_FAILED,
                 f"Matching sighting #{job.ref_id} failed after {job.attempts} attempt(s); a manager may retry it.",
                 [*managers(session), *officer], object_type="sighting", object_id=job.ref_id)
    elif job.kind == IMPORT_JOB:
        row = session.get(WatchlistImport, job.ref_id)
        if row is not None:
            announce(session, IMPORT_FAILED,
                     f"Watchlist import #{row.id} ({row.filename}) failed: "
                     f"{(job.last_error.splitlines() or [''])[0][:200]}",
                     [row.created_by], object_type="watchlist_import", object_id=row.id)


def job_retried(session: Session, job: Job) -> None:
    """A sighting's failed matching is back in the queue: its failure notifications are handled."""
    if job.kind == MATCH_JOB:
        handled(session, "sighting", job.ref_id, kinds=(JOB_FAILED,))


def import_finished(session: Session, row: WatchlistImport, enrolled: int, failed: int) -> None:
    """A ZIP import is done: the manager who started it is told how it went."""
    announce(session, IMPORT_FINISHED,
             f"Watchlist import #{row.id} ({row.filename}) finished: {enrolled} photo(s) enrolled, "
             f"{failed} refused.", [row.created_by], object_type="watchlist_import", object_id=row.id)
