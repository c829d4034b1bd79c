"""The disputes list loads set-based: the same number of queries for 2 disputes as for 20, and the same answer
as working each candidate out on its own."""

from __future__ import annotations

from sqlmodel import Session

from tests.factories import image_store, make_candidate
from tests.triage.test_flag_list_queries import _counted
from triage import review
from triage.models import Role, SeenCandidate, User


def _dispute(session: Session, settings, officer, recognizers, n: int) -> None:
    store = image_store(settings)
    for _ in range(n):
        make_candidate(session, store, settings, officer.id)
        session.commit()
        for user, verdict in zip(recognizers, ("same", "different"), strict=True):
            task = review.next_task(session, user, settings)
            assert task is not None
            review.submit_verdict(session, user, task.slot_id, verdict)
        session.commit()


def _queries_for_list(session: Session, settings) -> tuple[list[review.DisputedCandidate], int]:
    session.expire_all()
    with _counted(session) as statements:
        disputes = review.disputed_candidates(session, settings=settings)
    assert all([s.verdict for s in d.verdicts] == ["same", "different"] for d in disputes)
    return disputes, len(statements)


def test_the_disputes_list_takes_a_fixed_number_of_queries(session, settings, user_factory):
    officer = user_factory(Role.officer, username="officer")
    recognizers = [user_factory(Role.recognizer, username=f"rec{i}") for i in range(2)]
    unseen = [user_factory(Role.recognizer, username=f"fresh{i}") for i in range(3)]
    _dispute(session, settings, officer, recognizers, 2)
    few, few_queries = _queries_for_list(session, settings)
    _dispute(session, settings, officer, recognizers, 18)
    # One fresh recognizer has been shown one candidate: that candidate has one eligible recognizer fewer.
    shown = few[0].candidate
    session.add(SeenCandidate(candidate_id=shown.pk, user_id=unseen[0].id))
    session.commit()
    many, many_queries = _queries_for_list(session, settings)
    assert (len(few), len(many)) == (2, 20)
    assert many_queries == few_queries <= 7  # candidates, slots, subjects, who said what, eligibility
    # The batch answers what each candidate's own count answers.
    by_id = {d.candidate.id: d.eligible for d in many}
    assert by_id[shown.id] == 2 and sorted(set(by_id.values())) == [2, 3]
    for d in many:
        one = review.eligible_recognizers(session, session.get(type(d.candidate), d.candidate.id), settings)
        assert d.eligible == len(one)
        assert all(isinstance(u, User) for u in one)


def test_no_disputes_takes_one_query(session, settings) -> None:
    with _counted(session) as statements:
        assert review.disputed_candidates(session, settings=settings) == []
    assert [q for q in statements if q.startswith("SELECT")] == statements[-1:]
