"""An expired warrant flags nobody; an extended one is searched again everywhere, and expires again."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from sqlmodel import Session, select

from matcher import embedding_to_bytes
from tests.conftest import login
from tests.factories import image_store, make_candidate, make_subject
from triage import clock, review, watchlist
from triage.gallery import Gallery
from triage.models import AuditEntry, Candidate, ReferenceEmbedding, ReferencePhoto, ReviewSlot, Role, Subject, User
from triage.services import Services

START = dt.datetime(2026, 6, 1, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def world(engine, settings, user_factory):
    """A subject whose warrant lapses on 2026-06-03, with an open, a leased and a disputed candidate."""
    officer = user_factory(Role.officer, username="officer")
    user_factory(Role.manager, username="boss")
    recs = {n: user_factory(Role.recognizer, username=n) for n in ("ann", "bob", "cat", "dan", "eve")}
    store = image_store(settings)
    rng = np.random.default_rng(1)
    with clock.frozen(START), Session(engine, expire_on_commit=False) as s:
        subject = make_subject(s, store, photos=2)
        subject.expires_on = dt.date(2026, 6, 3)
        s.add(subject)
        for photo in s.exec(select(ReferencePhoto).where(ReferencePhoto.subject_id == subject.id)).all():
            photo.iod_px, photo.blur = 64.0, 150.0
            s.add(photo)
            stored = s.exec(select(ReferenceEmbedding).where(ReferenceEmbedding.reference_photo_id == photo.id)).one()
            v = rng.normal(size=stored.dim).astype(np.float32)
            stored.embedding = embedding_to_bytes(v / np.linalg.norm(v))
            s.add(stored)
        disputed = make_candidate(s, store, settings, officer.id, subject=subject, score=0.95)
        leased = make_candidate(s, store, settings, officer.id, subject=subject, score=0.9)
        opened = make_candidate(s, store, settings, officer.id, subject=subject, score=0.85)
        s.commit()
        for name, verdict in (("bob", "same"), ("cat", "different")):
            task = review.next_task(s, s.get(User, recs[name].id), settings)
            assert task.candidate.id == disputed.id
            review.submit_verdict(s, s.get(User, recs[name].id), task.slot_id, verdict)
        task = review.next_task(s, s.get(User, recs["ann"].id), settings)
        assert task.candidate.id == leased.id
        assert s.get(Candidate, disputed.id).status == "disputed"
        s.commit()
    return {"subject": subject, "disputed": disputed, "leased": leased, "open": opened, "ann_slot": task.slot_id}


def _gallery(engine) -> Gallery:
    g = Gallery(engine)
    g.rebuild()
    return g


def _services(engine, settings, gallery: Gallery) -> Services:
    return Services(engine, settings, image_store(settings), gallery=gallery)


def _as(make_client, name):
    c = make_client(known_answer_share=0.0)
    login(c, name)
    return c


def test_expiry_withdraws_everything_and_escalation_is_refused(make_client, world, engine, settings):
    sid = world["subject"].id
    with clock.frozen(START):
        running = _gallery(engine)
        assert sid in running.subject_ids()
        boss = _as(make_client, "boss")
        assert [d["candidate_id"] for d in boss.get("/api/review/disputes").json()["data"]] == [world["disputed"].id]
    with clock.frozen(START + dt.timedelta(days=2)):  # 2026-06-03: the warrant lapses
        assert watchlist.expiry_sweep(engine, settings, _services(engine, settings, running)) == [sid]
        assert sid not in running.subject_ids()
        with Session(engine) as s:
            assert s.get(Candidate, world["open"].id).status == "withdrawn"
            assert s.get(Candidate, world["leased"].id).status == "withdrawn"
            assert s.get(ReviewSlot, world["ann_slot"]).withdrawn
        boss = _as(make_client, "boss")  # two days on: a new session
        assert boss.get("/api/review/disputes").json()["data"] == []
        assert "No disputes" in boss.get("/disputes").text
        r = boss.post(f"/api/review/candidates/{world['disputed'].id}/escalate")
        assert r.status_code == 409 and "no longer searched" in r.json()["detail"]
        with Session(engine) as s:
            cand = s.get(Candidate, world["disputed"].id)
            assert cand.status == "disputed" and cand.current_round == 1
            assert len(s.exec(select(ReviewSlot).where(ReviewSlot.candidate_id == cand.id)).all()) == 2
            refusal = s.exec(select(AuditEntry).where(AuditEntry.action == "review.escalate")).one()
            assert refusal.outcome == "denied" and refusal.actor == "boss"
        for name in ("ann", "dan", "eve"):
            assert _as(make_client, name).post("/api/review/next").json() == {"task": None}, name
        r = _as(make_client, "ann").post(f"/api/review/slots/{world['ann_slot']}/verdict", json={"verdict": "same"})
        assert r.status_code == 409


def test_a_subject_past_its_date_is_not_served_even_before_the_sweep(make_client, world, engine):
    with clock.frozen(START + dt.timedelta(days=2)):
        assert _as(make_client, "dan").post("/api/review/next").json() == {"task": None}
        boss = _as(make_client, "boss")
        assert boss.get("/api/review/disputes").json()["data"] == []
        assert boss.post(f"/api/review/candidates/{world['disputed'].id}/escalate").status_code == 409


def test_extending_an_expired_warrant_puts_the_subject_back_and_it_expires_again(make_client, world, engine,
                                                                                 settings):
    sid = world["subject"].id
    with clock.frozen(START):
        running = _gallery(engine)
    with clock.frozen(START + dt.timedelta(days=2)):
        watchlist.expiry_sweep(engine, settings, _services(engine, settings, running))
        assert sid not in running.subject_ids()
        boss = _as(make_client, "boss")
        assert sid not in [x["id"] for x in boss.get("/api/subjects?status=searchable").json()["data"]]
        r = boss.patch(f"/api/subjects/{sid}", json={"expires_on": "2026-07-01"})
        assert r.status_code == 200, r.text
        # Another process's index learns it from the change log.
        assert running.sync() == 2 and sid in running.subject_ids() and len(running) == 2
        assert sid in [x["id"] for x in boss.get("/api/subjects?status=searchable").json()["data"]]
        with Session(engine) as s:
            assert s.get(Subject, sid).closed_at is None
            assert s.exec(select(AuditEntry).where(AuditEntry.action == "subject.reactivate")).one().actor == "boss"
        # The withdrawn candidates stay withdrawn; new sightings are matched against it again.
        with Session(engine) as s:
            assert s.get(Candidate, world["open"].id).status == "withdrawn"
    with clock.frozen(dt.datetime(2026, 7, 1, 0, 5, tzinfo=dt.UTC)):
        assert watchlist.expiry_sweep(engine, settings, _services(engine, settings, running)) == [sid]
        assert sid not in running.subject_ids()
        assert watchlist.expiry_sweep(engine, settings, _services(engine, settings, running)) == []
