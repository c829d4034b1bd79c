"""Random interleavings of next / verdict / lease expiry / escalation, checked after every step.

Each Hypothesis example runs on a fresh database copied from the migrated
template (SQLite or PostgreSQL, as the whole test run).
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from sqlalchemy import func
from sqlmodel import Session, col, select

from tests.conftest import USE_POSTGRES, add_user, make_settings
from tests.factories import image_store, make_candidate, make_subject, stored_ids
from triage import clock, qualification, review
from triage.db import make_engine
from triage.models import AuditEntry, Candidate, Flag, ReviewSlot, Role, User
from triage.review import ReviewError, outcome_for

N_RECOGNIZERS = 6
VERDICTS = ["same", "different", "cannot_tell"]


class ReviewMachine(RuleBasedStateMachine):
    templates: Any = None
    tmp: Path = Path(".")

    def __init__(self) -> None:
        super().__init__()
        self.url = self.templates.new(self.tmp / f"{uuid.uuid4().hex}.db")
        self.engine = make_engine(self.url)
        self.settings = make_settings(self.tmp, self.url, known_answer_share=0.2)
        self.store = image_store(self.settings)
        self.clock_cm = clock.frozen(dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC))
        self.clock = self.clock_cm.__enter__()
        self.rng = random.Random(1234)
        self.session = Session(self.engine, expire_on_commit=False)
        self.officer = add_user(self.engine, "officer", Role.officer)
        self.manager = add_user(self.engine, "manager", Role.manager)
        self.recs = [add_user(self.engine, f"rec{i}", Role.recognizer) for i in range(N_RECOGNIZERS)]
        # Model: accepted verdicts (slot → (reviewer, verdict)) and the lease each recognizer was given.
        self.accepted: dict[int, tuple[int, str]] = {}
        self.held: dict[int, tuple[int, dt.datetime]] = {}
        # The model of qualification: who is suspended, and the known-answer answers that count for each.
        self.suspended: set[int] = set()
        self.record_from: dict[int, dt.datetime] = {}

    def teardown(self) -> None:
        self.session.close()
        self.engine.dispose()
        self.clock_cm.__exit__(None, None, None)
        if USE_POSTGRES:
            self.templates.drop(self.url)

    @initialize(n=st.integers(min_value=1, max_value=3))
    def seed(self, n: int) -> None:
        s = self.session
        for i in range(n):
            make_candidate(s, self.store, self.settings, self.officer.pk, priority=1 + i)
        # Two photos each, so known-answer pairs of both kinds can be made.
        make_subject(s, self.store, photos=2)
        s.commit()

    # Rules
    @rule()
    def add_candidate(self) -> None:
        make_candidate(self.session, self.store, self.settings, self.officer.pk)
        self.session.commit()

    def _user(self, i: int) -> User:
        user = self.session.get_one(User, self.recs[i].id)
        self.session.refresh(user)
        return user

    @rule(i=st.integers(0, N_RECOGNIZERS - 1))
    def next(self, i: int) -> None:
        user = self._user(i)
        now = clock.utcnow()
        before = self.held.get(user.pk)
        if user.id in self.suspended:
            with pytest.raises(ReviewError) as err:
                review.next_task(self.session, user, self.settings, rng=self.rng)
            assert err.value.code == "suspended"
            return
        task = review.next_task(self.session, user, self.settings, rng=self.rng)
        if before is not None and before[0] not in self.accepted and now <= before[1]:
            assert task is not None and task.slot_id == before[0], "a live lease must be handed back"
        if task is not None:
            assert task.slot.reviewer_id == user.id
            self.held[user.pk] = (task.slot_id, task.lease_expires_at)

    @rule(i=st.integers(0, N_RECOGNIZERS - 1), verdict=st.sampled_from(VERDICTS), keyed=st.booleans())
    def give_verdict(self, i: int, verdict: str, keyed: bool) -> None:
        user = self._user(i)
        if user.id not in self.held:
            return
        slot_id, expires = self.held[user.id]
        if user.id in self.suspended:
            with pytest.raises(ReviewError) as err:
                review.submit_verdict(self.session, user, slot_id, verdict, settings=self.settings)
            assert err.value.code == "suspended"
            return
        key = f"k{slot_id}-{verdict}" if keyed else None
        live = clock.utcnow() <= expires
        if slot_id in self.accepted and self.accepted[slot_id][0] != user.id:
            # The lease ran out and someone else answered: a late verdict is refused, not counted.
            with pytest.raises(ReviewError) as err:
                review.submit_verdict(self.session, user, slot_id, verdict, idempotency_key=key,
                                      settings=self.settings)
            assert err.value.code == "lease_expired" and not live
            del self.held[user.id]
            return
        if slot_id in self.accepted:
            # A resend: the same verdict is a replay, another one is refused; nothing changes either way.
            try:
                r = review.submit_verdict(self.session, user, slot_id, verdict, idempotency_key=key,
                                      settings=self.settings)
                assert r.replayed and self.accepted[slot_id][1] == verdict
            except ReviewError as e:
                assert e.code == "conflict"
            return
        try:
            result = review.submit_verdict(self.session, user, slot_id, verdict, idempotency_key=key,
                                      settings=self.settings)
        except ReviewError as e:
            assert not live, f"a verdict on a live lease was refused: {e.message}"
            assert e.code in {"lease_expired", "forbidden"}
            del self.held[user.id]
            return
        assert live, "a verdict on an expired lease was accepted"
        assert not result.replayed
        self.accepted[slot_id] = (user.id, verdict)
        self._expect_standing(user.id)

    def _expect_standing(self, user_id: int) -> None:
        """The model's verdict on the account: suspended once an upper Wilson bound is below the bar."""
        s = self.session
        tally = {"same": [0, 0], "different": [0, 0]}
        for sid, (uid, verdict) in self.accepted.items():
            if uid != user_id:
                continue
            slot = s.get_one(ReviewSlot, sid)
            cand = s.get_one(Candidate, slot.candidate_id)
            since = self.record_from.get(uid)
            assert slot.verdict_at is not None
            if cand.known_truth is None or (since is not None and slot.verdict_at < since):
                continue
            tally[cand.known_truth][0] += int(verdict == cand.known_truth)
            tally[cand.known_truth][1] += 1
        bar = self.settings.qualification_min_accuracy
        if any(n and qualification.wilson(k, n)[1] < bar for k, n in tally.values()):
            self.suspended.add(user_id)
        user = s.get_one(User, user_id)
        s.refresh(user)
        assert (user.qualification == "suspended") == (user_id in self.suspended)

    @rule(i=st.integers(0, N_RECOGNIZERS - 1), j=st.integers(0, 50), verdict=st.sampled_from(VERDICTS))
    def meddle(self, i: int, j: int, verdict: str) -> None:
        """A verdict on some slot the recognizer was never given is refused and changes nothing."""
        user = self.recs[i]
        slot_ids = sorted(stored_ids(self.session.exec(select(ReviewSlot.id)).all()))
        slot_id = slot_ids[j % len(slot_ids)]
        assert slot_id is not None
        if self.held.get(user.pk, (None,))[0] == slot_id or self.accepted.get(slot_id, (None,))[0] == user.id:
            return
        with pytest.raises(ReviewError):
            review.submit_verdict(self.session, user, slot_id, verdict)

    @rule(seconds=st.integers(1, 2 * 300))
    def time_passes(self, seconds: int) -> None:
        self.clock.advance(seconds=seconds)

    @rule()
    def sweep(self) -> None:
        review.expire_leases(self.session)
        self.session.commit()

    @rule(i=st.integers(0, N_RECOGNIZERS - 1))
    def reinstate(self, i: int) -> None:
        user = self._user(i)
        if user.id in self.suspended:
            qualification.reinstate(self.session, self.manager, user.id)
            self.suspended.discard(user.id)
            self.record_from[user.id] = clock.utcnow()
            self.held.pop(user.id, None)
        else:
            with pytest.raises(qualification.QualificationError):
                qualification.reinstate(self.session, self.manager, user.pk)

    @rule(j=st.integers(0, 20))
    def escalate(self, j: int) -> None:
        s = self.session
        ids = sorted(stored_ids(s.exec(select(Candidate.id).where(col(Candidate.known_truth).is_(None))).all()))
        cid = ids[j % len(ids)]
        assert cid is not None
        cand = s.get_one(Candidate, cid)
        s.refresh(cand)
        eligible = len(review.eligible_recognizers(s, cand))
        should = cand.status == "disputed" and eligible >= 2 and cand.current_round < review.MAX_ROUNDS
        try:
            review.escalate(s, self.manager, cid)
            assert should, "escalation of a candidate that may not be escalated"
        except ReviewError:
            assert not should

    # Invariants
    @invariant()
    def rules_hold(self) -> None:
        s = self.session
        s.expire_all()
        slots = s.exec(select(ReviewSlot)).all()
        # No account holds two slots of one candidate.
        pairs = Counter((x.candidate_id, x.reviewer_id) for x in slots if x.reviewer_id is not None)
        assert max(pairs.values(), default=1) == 1
        # No verdict lost or counted twice.
        stored = {x.id: (x.reviewer_id, x.verdict) for x in slots if x.verdict is not None}
        assert stored == self.accepted
        ok_verdicts = s.exec(select(func.count()).select_from(AuditEntry).where(
            AuditEntry.action == "review.verdict", AuditEntry.outcome == "ok")).one()
        assert ok_verdicts == len(self.accepted)
        by_cand: dict[int, list[ReviewSlot]] = {}
        for x in slots:
            by_cand.setdefault(x.candidate_id, []).append(x)
        flags = {f.candidate_id: f for f in s.exec(select(Flag)).all()}
        users = {u.id: u for u in s.exec(select(User)).all()}
        for cand in s.exec(select(Candidate)).all():
            cs = by_cand[cand.pk]
            counting = [x for x in cs if x.voided_at is None]
            current = [x for x in counting if x.round == cand.current_round]
            # Two counting slots per round, always; a voided one keeps its verdict and its author.
            assert len(current) == 2 and cand.current_round <= review.MAX_ROUNDS
            for x in cs:
                if x.voided_at is not None:
                    author = users[x.reviewer_id]
                    assert x.verdict is not None and (author.qualification == "suspended"
                                                      or (author.qualification_since is not None
                                                          and author.qualification_since >= x.voided_at))
            if cand.status == "open":
                assert any(x.verdict is None for x in current)
            else:
                assert all(x.verdict is not None for x in current)
                # Each round decides on its own: the current round's two verdicts, nothing pooled.
                verdicts = sorted(v for x in current if (v := x.verdict) is not None)
                expected = "cleared" if cand.is_known_answer else outcome_for(verdicts).value
                assert cand.status == expected
            # No flag without two 'same person' verdicts in one round by two distinct accounts; never on a known answer.
            if cand.id in flags:
                assert not cand.is_known_answer and cand.status == "flagged"
                assert [x.verdict for x in current] == ["same", "same"]
                assert len({x.reviewer_id for x in current}) == 2
            else:
                assert cand.status != "flagged"


def test_review_state_machine(db_templates: Any, tmp_path: Path) -> None:
    ReviewMachine.templates = db_templates
    ReviewMachine.tmp = tmp_path
    run_state_machine_as_test(
        ReviewMachine,
        settings=hsettings(max_examples=20 if not USE_POSTGRES else 10, stateful_step_count=35, deadline=None,
                           suppress_health_check=list(HealthCheck)),
    )
