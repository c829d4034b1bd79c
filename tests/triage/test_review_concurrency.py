"""50 threads claiming and deciding at once: every slot given once, every verdict stored once.

Runs on whichever database the test run uses (SQLite by default,
``MIATARI_TEST_DB=postgres`` for PostgreSQL with ``FOR UPDATE SKIP LOCKED``).
"""

from __future__ import annotations

import threading
from collections import Counter

from sqlalchemy import func
from sqlmodel import Session, select

from tests.factories import image_store, make_candidate
from triage import review
from triage.models import AuditEntry, Candidate, Flag, ReviewSlot, Role
from triage.review import ReviewError
from triage.transaction import unit_of_work

THREADS = 50
CANDIDATES = 25
RECOGNIZERS = 10  # five threads per person: the same account races itself too


def test_fifty_threads_claim_and_decide(engine, settings, user_factory):
    officer = user_factory(Role.officer)
    user_factory(Role.manager)
    recs = [user_factory(Role.recognizer) for _ in range(RECOGNIZERS)]
    store = image_store(settings)
    settings.known_answer_share = 0.2  # known-answer tasks are claimed in the same race
    with Session(engine, expire_on_commit=False) as s:
        for _ in range(CANDIDATES):
            make_candidate(s, store, settings, officer.id)
        s.commit()

    barrier = threading.Barrier(THREADS)
    stored: list[int] = []
    replays: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        user = recs[n % RECOGNIZERS]
        try:
            barrier.wait(timeout=60)
            with Session(engine, expire_on_commit=False) as s:
                while True:
                    # One transaction per step, as one request each.
                    with unit_of_work(s):
                        task = review.next_task(s, user, settings)
                    if task is None:
                        return
                    # Careful recognizers: a known-answer pair gets its truth (always "same" would rightly get
                    # the account suspended), every real candidate "same".
                    verdict = task.candidate.known_truth or "same"
                    try:
                        with unit_of_work(s):
                            r = review.submit_verdict(s, user, task.slot_id, verdict,
                                                      idempotency_key=f"t{task.slot_id}")
                    except ReviewError as e:
                        # Another thread of the same person answered first with its own request.
                        assert e.code == "conflict", e.message
                        continue
                    with lock:
                        (replays if r.replayed else stored).append(task.slot_id)
        except BaseException as e:  # noqa: BLE001 - reported below
            with lock:
                errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors[:3]
    assert all(not t.is_alive() for t in threads)

    with Session(engine) as s:
        real = {c.id for c in s.exec(select(Candidate).where(Candidate.known_truth.is_(None))).all()}
        assert len(real) == CANDIDATES
        all_slots = s.exec(select(ReviewSlot)).all()
        slots = [x for x in all_slots if x.candidate_id in real]
        # Every real slot answered; every stored verdict stored by exactly one call.
        assert len(slots) == 2 * CANDIDATES
        assert all(x.verdict == "same" and x.reviewer_id is not None for x in slots)
        answered = [x.id for x in all_slots if x.verdict is not None]
        assert sorted(stored) == sorted(answered)
        assert Counter(stored).most_common(1)[0][1] == 1
        # Unanswered slots can only be known-answer ones (served only beside real work).
        assert all(x.candidate_id not in real for x in all_slots if x.verdict is None)
        # Never one person on both slots of a candidate.
        per_candidate = Counter((x.candidate_id, x.reviewer_id) for x in all_slots if x.reviewer_id)
        assert max(per_candidate.values()) == 1
        # Every lease was given to one person at a time: one accepted verdict per slot in the log.
        ok = s.exec(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.action == "review.verdict", AuditEntry.outcome == "ok")).one()
        assert ok == len(answered)
        # Each candidate decided once; one flag per real candidate, none on a known answer.
        decided = Counter(e.object_id for e in s.exec(select(AuditEntry).where(
            AuditEntry.action == "candidate.decide")).all())
        assert set(decided.values()) == {1}
        assert {int(k) for k in decided} >= real
        flags = s.exec(select(Flag)).all()
        assert sorted(f.candidate_id for f in flags) == sorted(real)
        assert all(s.get(Candidate, c).status == "flagged" for c in real)
