"""The review queue: candidates, review slots, leases, verdicts and consensus.

Every candidate needs two blind verdicts from two different recognizers.  A
recognizer asks for the next task and gets a lease on one review slot; a slot
whose lease ran out goes back to the queue.  The decision is taken in the
transaction that stores the last verdict of a round, exactly once, and each
round decides on its own (verdicts are never pooled across rounds):

* both *same person* → an arrest flag;
* both *different person* → cleared;
* anything else → disputed (never a flag).  A manager may escalate a disputed
  candidate to a new round of two recognizers who have never been shown it, at
  most ``MAX_ROUNDS`` rounds in all; after that it stays disputed.

A verdict counts only while its author is in good standing: when a recognizer
is suspended (``triage.qualification``) their verdicts on undecided candidates
are voided — kept, no longer counting — and those slots are served again.
Known-answer tasks are made from a settled real case when one exists, else from
reference photos, their probe side re-rendered (``triage.known_answer``).

Claims are safe under concurrency: on PostgreSQL the slot is taken with
``FOR UPDATE SKIP LOCKED`` (and the recognizer's own row is locked so one
person never races themself); on SQLite every transaction is ``BEGIN
IMMEDIATE`` (see ``triage.db``), which serialises claims.  The database
itself refuses the same account on two slots of one candidate.

Queue order (see docs/review.md): fresh sightings first (observed less than
``fresh_sighting_hours`` ago), then subject priority (1 first), then the
oldest candidate (``Candidate.priority_at``, its creation time, which an
escalation does not reset), then candidate id.
"""

from triage.review._common import SLOTS_PER_ROUND, SUSPENDED_MESSAGE, ReviewError, Task, as_utc, lock_candidate
from triage.review.candidates import (
    KNOWN_ANSWER_CASES,
    KNOWN_ANSWER_PAIR_ATTEMPTS,
    RENDITION_ATTEMPTS,
    Hit,
    create_candidates_for_probe,
    create_known_answer_task,
)
from triage.review.disputes import (
    MAX_ROUNDS,
    DisputedCandidate,
    Escalation,
    disputed_candidate,
    disputed_candidates,
    eligible_recognizers,
    escalate,
    in_escalation,
)
from triage.review.pending import Pending, pending_for, settle_due, settle_sweep, undo_verdict
from triage.review.queue import (
    IMAGE_KINDS,
    candidate_image_sha,
    current_task,
    done_today,
    expire_leases,
    had_task,
    held_task,
    lease_limit,
    next_task,
    queue_size_for,
    release_task,
    renew_lease,
    reveal_full_faces,
    slot_image_sha,
    sweep_expired_leases,
)
from triage.review.verdicts import (
    IDEMPOTENCY_KEY_MAX,
    NOTE_MAX,
    VerdictInput,
    VerdictResult,
    outcome_for,
    submit_verdict,
)

__all__ = [
    "IDEMPOTENCY_KEY_MAX", "IMAGE_KINDS", "KNOWN_ANSWER_CASES", "KNOWN_ANSWER_PAIR_ATTEMPTS", "MAX_ROUNDS",
    "NOTE_MAX", "RENDITION_ATTEMPTS", "SLOTS_PER_ROUND", "SUSPENDED_MESSAGE",
    "DisputedCandidate", "Escalation", "Hit", "Pending", "ReviewError", "Task", "VerdictInput", "VerdictResult",
    "candidate_image_sha", "create_candidates_for_probe", "create_known_answer_task", "current_task",
    "disputed_candidate", "disputed_candidates", "eligible_recognizers", "escalate", "in_escalation",
    "expire_leases", "held_task", "lock_candidate",
    "next_task", "outcome_for", "queue_size_for", "reveal_full_faces", "slot_image_sha", "submit_verdict",
    "sweep_expired_leases", "done_today", "lease_limit", "pending_for", "release_task", "renew_lease",
    "settle_due", "settle_sweep", "undo_verdict", "had_task", "as_utc",
]
