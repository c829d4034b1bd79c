"""Notifications beyond flags: who is told of what, and the notification is read once the item is handled."""

from __future__ import annotations

import pytest
from sqlmodel import Session, col, select

from miatari.registry import worker_registry
from tests.factories import image_store, make_candidate
from triage import events, flags, jobs, qualification, review, sightings
from triage.models import (
    IMPORT_JOB,
    MATCH_JOB,
    Candidate,
    Job,
    Notification,
    Role,
    User,
    WatchlistImport,
    WebhookDelivery,
)
from triage.services import Services
from triage.worker import give_up_hook


def _told(session: Session, kind: str) -> list[Notification]:
    return list(session.exec(select(Notification).where(Notification.kind == kind)
                             .order_by(col(Notification.user_id))).all())


@pytest.fixture
def people(engine, user_factory) -> dict[str, User]:
    return {"officer": user_factory(Role.officer, username="officer"),
            "boss": user_factory(Role.manager, username="boss"),
            "chief": user_factory(Role.manager, username="chief"),
            **{n: user_factory(Role.recognizer, username=n) for n in ("ann", "bob", "cy", "dee")}}


def _answer(session: Session, settings, user: User, verdict: str) -> None:
    task = review.next_task(session, user, settings)
    assert task is not None
    review.submit_verdict(session, user, task.slot_id, verdict, settings=settings)


def test_a_dispute_tells_every_manager_and_escalating_it_marks_it_read(engine, settings, people) -> None:
    store = image_store(settings)
    with Session(engine, expire_on_commit=False) as s:
        cand = make_candidate(s, store, settings, people["officer"].id)
        s.commit()
        _answer(s, settings, people["ann"], "same")
        assert _told(s, events.DISPUTE_WAITING) == []  # one verdict decides nothing
        _answer(s, settings, people["bob"], "cannot_tell")
        assert s.get_one(Candidate, cand.id).status == "disputed"
        told = _told(s, events.DISPUTE_WAITING)
        assert [(n.user_id, n.object_type, n.object_id, n.read_at) for n in told] == [
            (people["boss"].id, "candidate", cand.id, None), (people["chief"].id, "candidate", cand.id, None)]
        hook = s.exec(select(WebhookDelivery)).one()
        assert hook.event == events.DISPUTE_WAITING and hook.status == "pending"
        assert s.exec(select(Job).where(Job.kind == "webhook_delivery", Job.ref_id == hook.id)).one()
        # A refused escalation (an officer) handles nothing.
        with pytest.raises(review.ReviewError):
            review.escalate(s, people["officer"], cand.pk, settings=settings)
        assert all(n.read_at is None for n in _told(s, events.DISPUTE_WAITING))
        review.escalate(s, people["boss"], cand.pk, settings=settings)
        s.expire_all()
        assert all(n.read_at is not None for n in _told(s, events.DISPUTE_WAITING))


def test_a_cleared_or_flagged_candidate_is_no_dispute(engine, settings, people) -> None:
    store = image_store(settings)
    with Session(engine, expire_on_commit=False) as s:
        make_candidate(s, store, settings, people["officer"].id)
        s.commit()
        _answer(s, settings, people["ann"], "different")
        _answer(s, settings, people["bob"], "different")
        assert _told(s, events.DISPUTE_WAITING) == [] and s.exec(select(WebhookDelivery)).all() == []


def test_acknowledging_a_flag_reads_the_managers_alerts_not_the_officers(engine, settings, people) -> None:
    store = image_store(settings)
    with Session(engine, expire_on_commit=False) as s:
        make_candidate(s, store, settings, people["officer"].id)
        s.commit()
        _answer(s, settings, people["ann"], "same")
        _answer(s, settings, people["bob"], "same")
        told = _told(s, events.FLAG_RAISED)
        assert {n.user_id for n in told} == {people[n].id for n in ("officer", "boss", "chief")}
        assert {(n.object_type, n.object_id) for n in told} == {("flag", told[0].flag_id)}
        assert len(s.exec(select(WebhookDelivery).where(WebhookDelivery.event == events.FLAG_RAISED)).all()) == 1
        flag_id = told[0].flag_id
        assert flag_id is not None
        flags.acknowledge(s, people["chief"], flag_id)
        s.expire_all()
        read = {n.user_id: n.read_at is not None for n in _told(s, events.FLAG_RAISED)}
        assert read == {people["officer"].id: False, people["boss"].id: True, people["chief"].id: True}


def _give_up(session: Session, settings) -> jobs.GiveUp:
    """What the worker runs when a job fails for good (the kinds' ``on_failed`` from the worker's list)."""
    return give_up_hook(Services(session.get_bind().engine, settings, image_store(settings)), worker_registry())


def _fail_for_good(session: Session, settings, kind: str, ref_id: int) -> Job:
    jobs.enqueue(session, kind, ref_id, max_attempts=1)
    session.commit()
    job = jobs.claim(session, "w", 60, (kind,))
    assert job is not None
    jobs.fail(session, job.pk, "w", "RuntimeError: boom\ntraceback", on_give_up=_give_up(session, settings))
    session.commit()
    return job


def test_matching_failed_for_good_tells_managers_and_the_officer_and_a_retry_reads_it(engine, settings,
                                                                                     people) -> None:
    store = image_store(settings)
    with Session(engine, expire_on_commit=False) as s:
        cand = make_candidate(s, store, settings, people["officer"].id)
        assert cand.sighting_id is not None
        s.commit()
        job = jobs.enqueue(s, MATCH_JOB, cand.sighting_id, max_attempts=2)
        s.commit()
        # A failure with a retry left tells nobody.
        claimed = jobs.claim(s, "w", 60, (MATCH_JOB,))
        assert claimed is not None
        jobs.fail(s, claimed.pk, "w", "RuntimeError: first", on_give_up=_give_up(s, settings))
        s.commit()
        assert _told(s, events.JOB_FAILED) == []
        assert claimed.started_at is not None
        s.get_one(Job, job.id).run_after = claimed.started_at
        s.commit()
        claimed = jobs.claim(s, "w", 60, (MATCH_JOB,))
        assert claimed is not None
        jobs.fail(s, claimed.pk, "w", "RuntimeError: second", on_give_up=_give_up(s, settings))
        s.commit()
        told = _told(s, events.JOB_FAILED)
        assert {n.user_id for n in told} == {people[n].id for n in ("officer", "boss", "chief")}
        assert {(n.object_type, n.object_id) for n in told} == {("sighting", cand.sighting_id)}
        assert "2 attempt(s)" in told[0].message
        with pytest.raises(sightings.SightingRejected):
            sightings.retry_matching(s, people["officer"], cand.sighting_id)
        assert all(n.read_at is None for n in _told(s, events.JOB_FAILED))
        sightings.retry_matching(s, people["boss"], cand.sighting_id)
        s.expire_all()
        assert all(n.read_at is not None for n in _told(s, events.JOB_FAILED))


def test_an_import_that_fails_for_good_tells_who_started_it(engine, settings, people) -> None:
    with Session(engine, expire_on_commit=False) as s:
        row = WatchlistImport(created_by=people["chief"].id, filename="wanted.zip", archive_sha256="0" * 64,
                              archive_bytes=10, status="queued")
        s.add(row)
        s.commit()
        job = _fail_for_good(s, settings, IMPORT_JOB, row.pk)
        told = _told(s, events.IMPORT_FAILED)
        assert [(n.user_id, n.object_type, n.object_id) for n in told] == [
            (people["chief"].id, "watchlist_import", row.id)]
        assert "wanted.zip" in told[0].message and "RuntimeError: boom" in told[0].message
        assert told[0].read_at is None and s.get_one(Job, job.id).status == "failed"


def test_a_webhook_job_that_fails_tells_nobody(engine, settings, people) -> None:
    with Session(engine) as s:
        _fail_for_good(s, settings, "webhook_delivery", 12345)
        assert s.exec(select(Notification)).all() == [] and s.exec(select(WebhookDelivery)).all() == []


def test_reinstating_a_recognizer_reads_the_suspension_alerts(engine, settings, people) -> None:
    with Session(engine, expire_on_commit=False) as s:
        ann = s.get_one(User, people["ann"].id)
        qualification.suspend(s, ann, "three wrong known-answer verdicts")
        s.commit()
        told = _told(s, events.RECOGNIZER_SUSPENDED)
        assert [(n.user_id, n.object_type, n.object_id) for n in told] == [
            (people["boss"].id, "user", ann.id), (people["chief"].id, "user", ann.id)]
        hook = s.exec(select(WebhookDelivery)).one()
        assert hook.payload["path"] == "/recognizers" and "ann" not in str(hook.payload)
        qualification.reinstate(s, people["boss"], ann.pk)
        s.expire_all()
        assert all(n.read_at is not None for n in _told(s, events.RECOGNIZER_SUSPENDED))
