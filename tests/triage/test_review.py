"""The review queue: leases, verdicts, consensus, escalation, withdrawal, known-answer tasks."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from sqlmodel import col, select

from tests.factories import FakeHit, image_store, make_candidate, make_probe, make_sighting, make_subject
from triage import clock, review, watchlist
from triage.models import (
    AuditEntry,
    Candidate,
    Flag,
    Notification,
    Probe,
    Qualification,
    ReferencePhoto,
    ReviewSlot,
    Role,
    SeenCandidate,
    StoredImage,
    Subject,
    User,
)
from triage.review import ReviewError, outcome_for
from triage.transaction import unit_of_work


@pytest.fixture
def people(user_factory):
    officer = user_factory(Role.officer, username="officer")
    manager = user_factory(Role.manager, username="boss")
    recs = [user_factory(Role.recognizer, username=f"rec{i}") for i in range(1, 6)]
    return officer, manager, recs


@pytest.fixture
def store(settings):
    return image_store(settings)


def _cand(session, store, settings, officer, **kw) -> Candidate:
    c = make_candidate(session, store, settings, officer.id, **kw)
    session.commit()
    return c


@pytest.mark.parametrize("verdicts,expected", [
    (["same", "same"], "flagged"),
    (["different", "different"], "cleared"),
    (["same", "cannot_tell"], "disputed"),
    (["same", "different"], "disputed"),
    (["cannot_tell", "cannot_tell"], "disputed"),
    (["different", "cannot_tell"], "disputed"),
])
def test_outcome_rule(verdicts, expected):
    assert outcome_for(verdicts).value == expected


@pytest.mark.parametrize("verdicts", [["same"], ["same", "same", "same"], ["same", "cannot_tell", "same", "same"]])
def test_outcome_rule_takes_one_round_of_two(verdicts):
    """Verdicts are never pooled: the rule refuses anything but the two verdicts of one round."""
    with pytest.raises(ValueError):
        outcome_for(verdicts)


def test_create_candidates_keeps_threshold_and_k(session, store, settings, people):
    officer, _, _ = people
    settings.top_k = 2
    settings.lead_threshold = 0.65  # between the second and the third hit's score
    subjects = [make_subject(session, store) for _ in range(4)]
    sighting = make_sighting(session, store, officer.id)
    probe = make_probe(session, store, sighting)
    photos = [session.exec(select(ReferencePhoto).where(ReferencePhoto.subject_id == s.id)).first()
              for s in subjects]
    hits = [FakeHit(s.pk, p.id, 0.2, sc, r) for r, (s, p, sc) in enumerate(zip(subjects, photos,
                                                                                [0.9, 0.7, 0.6, 0.3], strict=True), 1)]
    made = review.create_candidates_for_probe(session, probe, hits, settings)
    assert [c.subject_id for c in made] == [subjects[0].id, subjects[1].id]
    # A re-run adds nothing.
    assert review.create_candidates_for_probe(session, probe, hits, settings) == []
    session.commit()
    slots = session.exec(select(ReviewSlot)).all()
    assert sorted((s.candidate_id, s.round, s.slot_no) for s in slots) == sorted(
        (c.id, 1, n) for c in made for n in (1, 2))


def test_two_same_verdicts_raise_one_flag_and_notify(session, store, settings, people):
    officer, manager, (a, b, *_) = people
    cand = _cand(session, store, settings, officer)
    ta = review.next_task(session, a, settings)
    tb = review.next_task(session, b, settings)
    assert ta and tb and ta.candidate.id == tb.candidate.id == cand.id and ta.slot_id != tb.slot_id
    r1 = review.submit_verdict(session, a, ta.slot_id, "same")
    assert r1.decided is None
    r2 = review.submit_verdict(session, b, tb.slot_id, "same", note="scar matches")
    assert r2.decided == "flagged"
    session.expire_all()
    assert session.get(Candidate, cand.id).status == "flagged"
    flag = session.exec(select(Flag)).one()
    assert flag.candidate_id == cand.id
    notified = {n.user_id for n in session.exec(select(Notification)).all()}
    assert notified == {officer.id, manager.id}


def test_same_person_never_gets_both_slots(session, store, settings, people):
    officer, _, (a, *_) = people
    _cand(session, store, settings, officer)
    t = review.next_task(session, a, settings)
    assert t is not None
    review.submit_verdict(session, a, t.slot_id, "same")
    assert review.next_task(session, a, settings) is None


def test_next_returns_the_lease_already_held(session, store, settings, people):
    officer, _, (a, *_) = people
    _cand(session, store, settings, officer)
    _cand(session, store, settings, officer)
    t1 = review.next_task(session, a, settings)
    assert t1 is not None
    t2 = review.next_task(session, a, settings)
    assert t2 is not None
    assert t1.slot_id == t2.slot_id and t2.resumed


def test_no_task_from_own_sighting(session, store, settings, people, user_factory):
    _, _, (a, *_) = people
    both = user_factory(Role.officer, Role.recognizer, username="both")
    _cand(session, store, settings, both)
    assert review.next_task(session, both, settings) is None
    assert review.next_task(session, a, settings) is not None


def test_expired_lease_refuses_verdict_and_returns_slot(session, store, settings, people):
    officer, _, (a, b, *_) = people
    _cand(session, store, settings, officer)
    with clock.frozen() as c:
        t = review.next_task(session, a, settings)
        assert t is not None
        c.advance(seconds=settings.lease_seconds + 1)
        session.commit()
        # The transaction's end (a request's, a job's) records the refusal and gives the slot back.
        with pytest.raises(ReviewError) as err, unit_of_work(session):
            review.submit_verdict(session, a, t.slot_id, "same")
        assert err.value.code == "lease_expired" and "not counted" in err.value.message
        session.expire_all()
        slot = session.get(ReviewSlot, t.slot_id)
        assert slot.verdict is None and slot.reviewer_id is None
        # Refusal is in the audit log.
        denied = session.exec(select(AuditEntry).where(AuditEntry.action == "review.verdict",
                                                       AuditEntry.outcome == "denied")).all()
        assert len(denied) == 1
        again = review.next_task(session, b, settings)
        assert again is not None and again.slot_id in {t.slot_id, t.slot_id + 1}


def test_expired_lease_taken_by_another_then_late_verdict_refused(session, store, settings, people):
    officer, _, (a, b, c_, *_) = people
    _cand(session, store, settings, officer)
    with clock.frozen() as c:
        ta = review.next_task(session, a, settings)
        assert ta is not None
        review.next_task(session, b, settings)
        c.advance(seconds=settings.lease_seconds + 1)
        assert review.expire_leases(session) == 2
        session.commit()
        tc = review.next_task(session, c_, settings)
        assert tc is not None
        assert tc.slot_id == ta.slot_id
        with pytest.raises(ReviewError) as err:
            review.submit_verdict(session, a, ta.slot_id, "same")
        assert err.value.code == "lease_expired"
        session.expire_all()
        assert session.get(ReviewSlot, ta.slot_id).reviewer_id == c_.id


def test_idempotent_verdict(session, store, settings, people):
    officer, _, (a, *_) = people
    _cand(session, store, settings, officer)
    t = review.next_task(session, a, settings)
    assert t is not None
    r1 = review.submit_verdict(session, a, t.slot_id, "different", idempotency_key="k-1")
    r2 = review.submit_verdict(session, a, t.slot_id, "different", idempotency_key="k-1")
    assert not r1.replayed and r2.replayed
    with pytest.raises(ReviewError) as err:
        review.submit_verdict(session, a, t.slot_id, "same", idempotency_key="k-1")
    assert err.value.code == "conflict"
    with pytest.raises(ReviewError) as err:
        review.submit_verdict(session, a, t.slot_id, "same")
    assert err.value.code == "conflict"
    session.expire_all()
    assert session.get(ReviewSlot, t.slot_id).verdict == "different"
    assert len(session.exec(select(AuditEntry).where(AuditEntry.action == "review.verdict",
                                                     AuditEntry.outcome == "ok")).all()) == 1


@pytest.mark.parametrize("bad", ["yes", "", "SAME!"])
def test_bad_verdict_changes_nothing(session, store, settings, people, bad):
    officer, _, (a, *_) = people
    _cand(session, store, settings, officer)
    t = review.next_task(session, a, settings)
    assert t is not None
    with pytest.raises(ReviewError) as err:
        review.submit_verdict(session, a, t.slot_id, bad)
    assert err.value.code == "invalid"
    with pytest.raises(ReviewError):
        review.submit_verdict(session, a, t.slot_id, "same", note="x" * 2001)
    session.expire_all()
    assert session.get(ReviewSlot, t.slot_id).verdict is None


def test_someone_elses_slot_is_refused(session, store, settings, people):
    officer, _, (a, b, *_) = people
    _cand(session, store, settings, officer)
    t = review.next_task(session, a, settings)
    assert t is not None
    session.commit()
    with pytest.raises(ReviewError) as err, unit_of_work(session):
        review.submit_verdict(session, b, t.slot_id, "same")
    # Exactly the answer for a slot that does not exist, so ids reveal nothing...
    with pytest.raises(ReviewError) as missing, unit_of_work(session):
        review.submit_verdict(session, b, 2**31 - 1, "same")
    assert (err.value.code, err.value.message) == (missing.value.code, missing.value.message) == \
        ("not_found", "No such review task.")
    for call in (lambda: review.slot_image_sha(session, b, t.slot_id, "probe-eyes"),
                 lambda: review.reveal_full_faces(session, b, t.slot_id),
                 lambda: review.held_task(session, b, t.slot_id)):
        with pytest.raises(ReviewError) as other, unit_of_work(session):
            call()
        assert (other.value.code, other.value.message) == ("not_found", "No such review task.")
    assert review.slot_image_sha(session, a, t.slot_id, "probe-eyes")
    # ...and still on record, with the reason.
    from triage.models import AuditEntry

    refused = session.exec(select(AuditEntry).where(AuditEntry.actor_id == b.id, AuditEntry.outcome == "denied",
                                                    AuditEntry.object_id == str(t.slot_id))).all()
    assert len(refused) == 4 and all(e.detail["why"] == "not held by this recognizer" for e in refused)


def test_full_faces_only_after_reveal(session, store, settings, people):
    officer, _, (a, *_) = people
    _cand(session, store, settings, officer)
    t = review.next_task(session, a, settings)
    assert t is not None
    with pytest.raises(ReviewError):
        review.slot_image_sha(session, a, t.slot_id, "subject-face")
    review.reveal_full_faces(session, a, t.slot_id)
    assert review.slot_image_sha(session, a, t.slot_id, "subject-face")
    review.submit_verdict(session, a, t.slot_id, "same")
    session.expire_all()
    assert session.get(ReviewSlot, t.slot_id).revealed_full_faces is True


def _answer(session, settings, user, verdict):
    t = review.next_task(session, user, settings)
    assert t is not None, f"no task for {user.username}"
    return review.submit_verdict(session, user, t.slot_id, verdict)


def test_dispute_escalation_to_unseen_recognizers(session, store, settings, people):
    officer, manager, (a, b, c, d, e) = people
    cand = _cand(session, store, settings, officer)
    _answer(session, settings, a, "same")
    assert _answer(session, settings, b, "cannot_tell").decided == "disputed"
    with pytest.raises(ReviewError):
        review.escalate(session, a, cand.pk)  # not a manager
    review.escalate(session, manager, cand.pk)
    # a and b have seen it: nothing for them.
    assert review.next_task(session, a, settings) is None
    assert review.next_task(session, b, settings) is None
    _answer(session, settings, c, "same")
    assert _answer(session, settings, d, "same").decided == "flagged"
    session.expire_all()
    c_row = session.get(Candidate, cand.id)
    assert c_row.status == "flagged" and c_row.current_round == 2
    # Only disputed candidates can be escalated.
    with pytest.raises(ReviewError) as err:
        review.escalate(session, manager, cand.pk)
    assert err.value.code == "conflict"


def test_each_round_decides_on_its_own(session, store, settings, people):
    """A split round 1 does not block round 2: round 2's two 'same' flag, and the flag rests on them."""
    officer, manager, (a, b, c, d, e) = people
    cand = _cand(session, store, settings, officer)
    _answer(session, settings, a, "same")
    assert _answer(session, settings, b, "different").decided == "disputed"
    review.escalate(session, manager, cand.pk)
    _answer(session, settings, c, "same")
    assert _answer(session, settings, d, "same").decided == "flagged"
    session.expire_all()
    (flag,) = session.exec(select(Flag)).all()
    decide = session.exec(select(AuditEntry).where(AuditEntry.action == "candidate.decide")
                          .order_by(col(AuditEntry.id).desc())).first()
    assert sorted(v[2] for v in decide.detail["verdicts"]) == sorted([c.id, d.id])


def test_verdicts_are_never_pooled_across_rounds(session, store, settings, people):
    """(same, cannot tell) then (same, cannot tell): no round agreed, so no flag (pooled, it would have been one)."""
    officer, manager, (a, b, c, d, e) = people
    cand = _cand(session, store, settings, officer)
    _answer(session, settings, a, "same")
    _answer(session, settings, b, "cannot_tell")
    review.escalate(session, manager, cand.pk)
    _answer(session, settings, c, "same")
    assert _answer(session, settings, d, "cannot_tell").decided == "disputed"
    assert session.exec(select(Flag)).first() is None
    # Round 2 of (different, cannot tell) after a round 1 of (different, different) would be cleared if pooled.
    cand2 = _cand(session, store, settings, officer)
    _answer(session, settings, e, "different")
    _answer(session, settings, a, "cannot_tell")
    review.escalate(session, manager, cand2.pk)
    _answer(session, settings, b, "different")
    assert _answer(session, settings, c, "different").decided == "cleared"


def test_at_most_three_rounds(session, store, settings, user_factory):
    officer = user_factory(Role.officer)
    manager = user_factory(Role.manager)
    recs = [user_factory(Role.recognizer) for _ in range(8)]
    cand = _cand(session, store, settings, officer)
    for rnd in range(review.MAX_ROUNDS):
        _answer(session, settings, recs[2 * rnd], "same")
        assert _answer(session, settings, recs[2 * rnd + 1], "different").decided == "disputed"
        if rnd < review.MAX_ROUNDS - 1:
            review.escalate(session, manager, cand.pk)
    session.commit()
    with pytest.raises(ReviewError) as err, unit_of_work(session):
        review.escalate(session, manager, cand.pk)
    assert err.value.code == "conflict" and "stays disputed" in err.value.message
    session.expire_all()
    row = session.get(Candidate, cand.id)
    assert row.status == "disputed" and row.current_round == review.MAX_ROUNDS
    assert len(session.exec(select(ReviewSlot).where(ReviewSlot.candidate_id == cand.id)).all()) == 6
    refusal = session.exec(select(AuditEntry).where(AuditEntry.action == "review.escalate")
                           .order_by(col(AuditEntry.id).desc())).first()
    assert refusal.outcome == "denied"
    assert review.next_task(session, recs[6], settings) is None


def test_escalation_needs_two_unseen_recognizers(session, store, settings, user_factory):
    officer = user_factory(Role.officer)
    manager = user_factory(Role.manager)
    a, b, c = (user_factory(Role.recognizer) for _ in range(3))
    cand = _cand(session, store, settings, officer)
    _answer(session, settings, a, "same")
    _answer(session, settings, b, "different")
    with pytest.raises(ReviewError) as err:
        review.escalate(session, manager, cand.pk)
    assert "there are 1" in err.value.message
    session.expire_all()
    assert session.get(Candidate, cand.id).status == "disputed"


def test_withdraw_for_subject_keeps_rows(session, store, settings, people):
    officer, manager, (a, b, *_) = people
    cand = _cand(session, store, settings, officer)
    t = review.next_task(session, a, settings)
    assert t is not None
    n = watchlist.withdraw_for_subject(session, cand.subject_id, manager)
    subject = session.get(Subject, cand.subject_id)
    subject.status = "withdrawn"
    session.add(subject)
    session.commit()
    assert n == 1
    session.expire_all()
    assert session.get(Candidate, cand.id).status == "withdrawn"
    slots = session.exec(select(ReviewSlot).where(ReviewSlot.candidate_id == cand.id)).all()
    assert len(slots) == 2 and all(s.withdrawn for s in slots)
    with pytest.raises(ReviewError) as err:
        review.submit_verdict(session, a, t.slot_id, "same")
    assert err.value.code in {"forbidden", "withdrawn"}
    assert review.next_task(session, b, settings) is None


def test_priority_order(session, store, settings, people):
    officer, _, (a, *_) = people
    now = clock.utcnow()
    with clock.frozen(now - dt.timedelta(hours=1)):
        old_urgent = _cand(session, store, settings, officer, priority=1,
                           observed_at=now - dt.timedelta(hours=settings.fresh_sighting_hours + 5))
    with clock.frozen(now - dt.timedelta(minutes=30)):
        fresh_low = _cand(session, store, settings, officer, priority=5, observed_at=now - dt.timedelta(hours=1))
    with clock.frozen(now - dt.timedelta(minutes=20)):
        fresh_urgent = _cand(session, store, settings, officer, priority=1, observed_at=now - dt.timedelta(hours=2))
    with clock.frozen(now - dt.timedelta(minutes=40)):
        fresh_urgent_older = _cand(session, store, settings, officer, priority=1,
                                   observed_at=now - dt.timedelta(hours=2))
    order = []
    with clock.frozen(now):
        for _ in range(4):
            t = review.next_task(session, a, settings)
            assert t is not None
            order.append(t.candidate.id)
            review.submit_verdict(session, a, t.slot_id, "cannot_tell")
    assert order == [fresh_urgent_older.id, fresh_urgent.id, fresh_low.id, old_urgent.id]


def test_known_answer_tasks_served_at_share_and_never_flag(session, store, settings, people):
    officer, _, (a, b, *_) = people
    settings.known_answer_share = 0.5
    s1 = make_subject(session, store, photos=2)
    make_subject(session, store, photos=2)
    for _ in range(30):
        make_candidate(session, store, settings, officer.id, subject=s1)
    session.commit()
    rng = random.Random(7)
    known = 0
    for _ in range(30):
        for user in (a, b):
            t = review.next_task(session, user, settings, rng=rng)
            assert t is not None
            if t.candidate.is_known_answer:
                known += 1
            # Careful recognizers: the truth on known-answer pairs (always 'same' would get them suspended).
            review.submit_verdict(session, user, t.slot_id, t.candidate.known_truth or "same")
    assert 15 <= known <= 45  # about half of 60
    session.expire_all()
    ka = session.exec(select(Candidate).where(col(Candidate.known_truth).is_not(None))).all()
    assert ka and all(c.status in {"open", "cleared"} for c in ka)
    assert all(c.known_truth in {"same", "different"} for c in ka)
    flags = session.exec(select(Flag)).all()
    assert all(session.get(Candidate, f.candidate_id).known_truth is None for f in flags)
    # The truth follows the photos, or the settled case the pair was made from.
    for c in ka:
        q = session.get(ReferencePhoto, c.reference_photo_id)
        if c.known_probe_photo_id is not None:
            p = session.get(ReferencePhoto, c.known_probe_photo_id)
            assert (p.subject_id == q.subject_id) == (c.known_truth == "same")
        else:
            source = session.get(Candidate, c.known_source_candidate_id)
            assert source.reference_photo_id == c.reference_photo_id
            assert source.status == ("flagged" if c.known_truth == "same" else "cleared")


def test_known_answer_not_served_when_queue_empty(session, store, settings, people):
    _, _, (a, *_) = people
    settings.known_answer_share = 0.5
    make_subject(session, store, photos=2)
    session.commit()
    assert review.next_task(session, a, settings, rng=random.Random(1)) is None


def test_non_recognizer_refused(session, store, settings, people):
    officer, manager, _ = people
    with pytest.raises(ReviewError):
        review.next_task(session, manager, settings)


def test_seen_is_recorded(session, store, settings, people):
    officer, _, (a, *_) = people
    cand = _cand(session, store, settings, officer)
    review.next_task(session, a, settings)
    assert session.get(SeenCandidate, (cand.id, a.id)) is not None
    assert isinstance(session.get(User, a.id), User)


def test_closing_a_flag_as_arrested_closes_the_subject(session, store, settings, people):
    from triage import flags

    officer, manager, (a, b, c, *_) = people
    cand = _cand(session, store, settings, officer)
    other = _cand(session, store, settings, officer, subject=session.get(Subject, cand.subject_id))
    for user in (a, b):
        t = review.next_task(session, user, settings)
        assert t is not None
        assert t.candidate.id == cand.id
        review.submit_verdict(session, user, t.slot_id, "same")
    flag = session.exec(select(Flag)).one()
    flags.acknowledge(session, manager, flag.id)
    flags.close(session, manager, flag.id, "arrested", note="arrested at Namba")
    session.expire_all()
    assert session.get(Subject, cand.subject_id).status == "arrested"
    # The same subject's other candidate is withdrawn, not lost, and no longer served.
    assert session.get(Candidate, other.id).status == "withdrawn"
    assert review.next_task(session, c, settings) is None
    actions = [e.action for e in session.exec(select(AuditEntry).order_by(col(AuditEntry.id))).all()]
    assert actions.index("flag.close") < actions.index("subject.close")


def test_closing_a_flag_as_not_located_leaves_the_subject_wanted(session, store, settings, people):
    from triage import flags

    officer, manager, (a, b, *_) = people
    cand = _cand(session, store, settings, officer)
    for user in (a, b):
        t = review.next_task(session, user, settings)
        assert t is not None
        review.submit_verdict(session, user, t.slot_id, "same")
    flag = session.exec(select(Flag)).one()
    flags.acknowledge(session, manager, flag.id)
    flags.close(session, manager, flag.id, "not_located")
    session.expire_all()
    assert session.get(Subject, cand.subject_id).status == "active"


def test_known_answer_pairs_prefer_settled_real_cases_never_seen_by_the_recognizer(session, store, settings,
                                                                                   people):
    officer, _, (a, b, c, *_) = people
    flagged = _cand(session, store, settings, officer)
    _answer(session, settings, a, "same")
    _answer(session, settings, b, "same")
    cleared = _cand(session, store, settings, officer)
    _answer(session, settings, a, "different")
    _answer(session, settings, b, "different")
    make_subject(session, store, photos=2)
    session.commit()
    made: list[Candidate] = []
    for i in range(8):
        pair = review.create_known_answer_task(session, settings, random.Random(i), avoid_seen_by=c.id)
        assert pair is not None
        made.append(pair)
    session.commit()
    sources = {m.known_source_candidate_id: m.known_truth for m in made}
    # c has seen neither case: every pair is made from one of them, with the truth its round settled.
    assert sources == {flagged.id: "same", cleared.id: "different"}
    for m in made:
        probe = session.get_one(Probe, session.get_one(Candidate, m.known_source_candidate_id).probe_id)
        assert m.known_probe_eyes_sha256 not in {probe.eye_crop_sha256, probe.face_chip_sha256}
        assert m.reference_photo_id == session.get_one(Candidate, m.known_source_candidate_id).reference_photo_id
    # a has seen both: its pairs come from reference photos.
    for i in range(4):
        pair = review.create_known_answer_task(session, settings, random.Random(i), avoid_seen_by=a.id)
        assert pair is not None
        assert pair.known_source_candidate_id is None and pair.known_probe_photo_id is not None


def _on_probation_with_a_real_task(session, store, settings, people):
    """A recognizer on probation (served known-answer tasks only), a real task waiting, and a subject with two
    photos to make pairs from."""
    officer, _, (a, *_) = people
    _cand(session, store, settings, officer)
    make_subject(session, store, photos=2)
    user = session.get_one(User, a.id)
    user.qualification = Qualification.probation.value
    session.commit()
    return user, settings.model_copy(update={"probation_known_answer_share": 1.0})


def test_a_known_answer_pair_is_rendered_before_the_claim_takes_the_write_lock(session, store, settings, people,
                                                                               engine, monkeypatch):
    # Rendering a pair takes tens of milliseconds: under SQLite's one write lock every other writer would
    # wait for it.  While it renders, another connection can still begin a write.
    import sqlite3

    from triage import known_answer

    if engine.dialect.name != "sqlite":
        pytest.skip("about SQLite's one write lock")
    user, settings = _on_probation_with_a_real_task(session, store, settings, people)
    attempts: list[str] = []
    render = known_answer.render_pair

    def rendering(*args, **kwargs):
        other = sqlite3.connect(engine.url.database, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            attempts.append("written")
        except sqlite3.OperationalError as exc:
            attempts.append(str(exc))
        finally:
            other.close()
        return render(*args, **kwargs)

    monkeypatch.setattr(known_answer, "render_pair", rendering)
    task = review.next_task(session, user, settings, rng=random.Random(1))
    session.commit()
    assert attempts == ["written"]
    assert task is not None and task.candidate.known_truth is not None
    # The pictures rendered are registered with the pair, and served as its probe side.
    assert session.get(StoredImage, task.candidate.known_probe_eyes_sha256) is not None
    assert store.get(task.candidate.known_probe_eyes_sha256)


def test_a_planned_known_answer_pair_whose_photo_went_meanwhile_is_left_out(session, store, settings, people,
                                                                            monkeypatch):
    # A pair is planned before the claim's lock; a photo removed in between leaves it out, and the claim
    # goes on (a known-answer pair made under the lock instead, or the real task).
    import dataclasses
    import types

    from triage.review import queue

    user, settings = _on_probation_with_a_real_task(session, store, settings, people)
    planned = queue.plan_known_answer
    missing = 10**9

    def photo_gone(*args, **kwargs):
        plan = planned(*args, **kwargs)
        assert plan is not None
        # Only what the pair needs of its reference photo: a photo no longer in the database.
        gone = types.SimpleNamespace(id=missing, subject_id=plan.pair.reference.subject_id)
        return dataclasses.replace(plan, pair=dataclasses.replace(plan.pair, reference=gone))  # type: ignore[arg-type]

    monkeypatch.setattr(queue, "plan_known_answer", photo_gone)
    task = review.next_task(session, user, settings, rng=random.Random(1))
    session.commit()
    assert task is not None and task.candidate.known_truth is not None
    assert task.candidate.reference_photo_id != missing
    assert session.exec(select(Candidate).where(Candidate.reference_photo_id == missing)).first() is None
