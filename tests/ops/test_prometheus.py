"""/metrics: the scrape guard, and every series against the database after a session through the real app."""

from __future__ import annotations

import datetime as dt
import os
import random

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import Session, col, select

from tests.conftest import login
from tests.factories import image_store, make_candidate
from tests.triage.test_sightings import jpeg
from triage import review, services
from triage.clock import utcnow
from triage.gallery import record_change
from triage.models import (
    AuditEntry,
    Candidate,
    Flag,
    GalleryChange,
    Job,
    ReferencePhoto,
    ReviewSlot,
    Role,
    Sighting,
)
from triage.prom import process_label

TOKEN = "scrape-" + "x" * 30


def scrape(client: TestClient, token: str = TOKEN) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_without_token_or_allow_list_metrics_does_not_exist(make_client) -> None:
    client = make_client()
    r = client.get("/metrics", headers={"Authorization": "Bearer anything"})
    assert r.status_code == 404
    assert "miatari_" not in r.text


def test_a_wrong_or_missing_token_is_refused_and_on_record(make_client, engine) -> None:
    client = make_client(metrics_token=TOKEN)
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", headers={"Authorization": "Bearer " + TOKEN[:-1] + "y"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer" and "miatari_" not in wrong.text
    with Session(engine) as s:
        refused = s.exec(select(AuditEntry).where(AuditEntry.action == "metrics.scrape")).all()
    assert [e.outcome for e in refused] == ["denied", "denied"]
    assert scrape(client)[("miatari_queue_depth", ())] == 0


def test_the_allow_list_admits_its_networks_only(make_client) -> None:
    app = make_client(metrics_allow="10.0.0.0/8, 192.168.1.7").app
    inside = TestClient(app, client=("10.20.30.40", 5000))
    outside = TestClient(app, client=("11.0.0.1", 5000))
    host = TestClient(app, client=("192.168.1.7", 5000))
    assert inside.get("/metrics").status_code == 200 and "miatari_queue_depth" in inside.get("/metrics").text
    assert host.get("/metrics").status_code == 200
    assert outside.get("/metrics").status_code == 403


def test_a_bad_allow_list_is_refused_at_start(make_client) -> None:
    with pytest.raises(ValueError, match="not an address or network"):
        make_client(metrics_allow="10.0.0.0/8,intranet")


def _slot_candidate(engine, slot_id: int) -> int:
    with Session(engine) as s:
        return s.get_one(ReviewSlot, slot_id).candidate_id


def test_series_equal_the_database_after_a_session(make_client, engine, settings, user_factory) -> None:
    officer = user_factory(Role.officer, username="officer")
    user_factory(Role.manager, username="boss")
    user_factory(Role.recognizer, username="ann")
    user_factory(Role.recognizer, username="bob")
    store = image_store(settings)
    old = utcnow() - dt.timedelta(minutes=20)
    with Session(engine, expire_on_commit=False) as s:
        flagged = make_candidate(s, store, settings, officer.id, observed_at=old)
        disputed = make_candidate(s, store, settings, officer.id, observed_at=old)
        make_candidate(s, store, settings, officer.id)  # left waiting in the queue
        s.commit()
    # Every process keeps its gallery index: a long sync period so the lag below stays measurable.
    overrides = {"metrics_token": TOKEN, "gallery_sync_seconds": 3600.0}
    clients = {name: make_client(**overrides) for name in ("officer", "ann", "bob", "boss")}
    for name, c in clients.items():
        login(c, name)
    upload = clients["officer"].post("/api/sightings", files=[("photos", ("a.jpg", jpeg(), "image/jpeg"))],
                                     data={"location_text": "Umeda"})
    assert upload.status_code == 202

    plan = {flagged.id: {"ann": "same", "bob": "same"}, disputed.id: {"ann": "same", "bob": "different"}}
    for _ in range(2):
        for name in ("ann", "bob"):
            task = clients[name].post("/api/review/next").json()["task"]
            verdict = plan[_slot_candidate(engine, task["slot_id"])][name]
            assert clients[name].post(task["verdict_url"], json={"verdict": verdict}).status_code == 201
    with Session(engine) as s:
        assert s.get_one(Candidate, flagged.id).status == "flagged"
        assert s.get_one(Candidate, disputed.id).status == "disputed"
        flag = s.exec(select(Flag)).one()
    assert clients["boss"].post(f"/api/flags/{flag.id}/acknowledge").status_code == 200
    assert clients["boss"].post(f"/api/flags/{flag.id}/close", json={"reason": "not_located"}).status_code == 200

    # Known-answer pairs answered (rows as the review would leave them): ann right on both, bob wrong once.
    with Session(engine) as s:
        ids = s.exec(select(ReviewSlot.reviewer_id).where(ReviewSlot.candidate_id == flagged.id)
                     .order_by(col(ReviewSlot.slot_no))).all()
        rng = random.Random(7)
        pairs = [review.create_known_answer_task(s, settings, rng) for _ in range(4)]
        assert all(pairs)
        for cand in pairs:
            assert cand is not None and cand.known_truth is not None
            slots = s.exec(select(ReviewSlot).where(ReviewSlot.candidate_id == cand.id)
                           .order_by(col(ReviewSlot.slot_no))).all()
            other = "different" if cand.known_truth == "same" else "same"
            for slot, reviewer, verdict in ((slots[0], ids[0], cand.known_truth),
                                            (slots[1], ids[1], other if cand is pairs[0] else cand.known_truth)):
                slot.reviewer_id, slot.verdict, slot.verdict_at = reviewer, verdict, utcnow()
                s.add(slot)
            cand.status = "cleared"
            s.add(cand)
        s.commit()

    # This process's gallery, then a change it has not applied yet (made a minute ago).
    gallery = services.gallery(clients["boss"].app.state.services)
    with Session(engine) as s:
        photos = len(s.exec(select(ReferencePhoto)).all())
        photo = s.exec(select(ReferencePhoto)).first()
        assert photo is not None
        record_change(s, "remove_photo", photo.subject_id, photo.id)
        s.commit()
        change = s.exec(select(GalleryChange).order_by(col(GalleryChange.id).desc())).first()
        assert change is not None
        change.created_at = utcnow() - dt.timedelta(seconds=60)
        s.add(change)
        s.commit()

    m = scrape(clients["boss"])
    with Session(engine) as s:
        slots = s.exec(select(ReviewSlot)).all()
        cands = {c.id: c for c in s.exec(select(Candidate)).all()}
        real_open = [c for c in cands.values() if c.status == "open" and c.known_truth is None]
        depth = [x for x in slots if x.verdict is None and not x.withdrawn and x.voided_at is None
                 and x.candidate_id in {c.id for c in real_open} and x.round == cands[x.candidate_id].current_round]
        audit_actions = [e.action for e in s.exec(select(AuditEntry)).all()]
        jobs = s.exec(select(Job).where(Job.kind == "match_sighting")).all()
        sightings = s.exec(select(Sighting)).all()
        flags = s.exec(select(Flag)).all()

    assert m[("miatari_queue_depth", ())] == len(depth) == 2
    assert m[("miatari_queue_candidates", ())] == len(real_open) == 1
    oldest = (utcnow() - min(c.priority_at for c in real_open)).total_seconds()
    assert abs(m[("miatari_queue_oldest_waiting_seconds", ())] - oldest) < 5
    assert m[("miatari_review_leases_granted_total", ())] == audit_actions.count("review.lease") == 4
    assert m[("miatari_review_leases_expired_total", ())] == audit_actions.count("review.lease_expired") == 0
    for verdict in ("same", "different", "cannot_tell"):
        for task, known in (("real", False), ("known_answer", True)):
            expected = sum(1 for x in slots if x.verdict == verdict
                           and (cands[x.candidate_id].known_truth is not None) == known)
            assert m[("miatari_verdicts_total", (("task", task), ("verdict", verdict)))] == expected
    assert m[("miatari_verdicts_total", (("task", "real"), ("verdict", "same")))] == 3
    assert m[("miatari_flags_raised_total", ())] == len(flags) == 1
    assert m[("miatari_flags_closed_total", ())] == 1
    assert m[("miatari_flags", (("status", "closed"),))] == 1 and m[("miatari_flags", (("status", "raised"),))] == 0
    assert m[("miatari_disputes_open", ())] == 1
    for reviewer in ids:
        for truth in ("same", "different"):
            mine = [x for x in slots if x.reviewer_id == reviewer and cands[x.candidate_id].known_truth == truth]
            key = (("recognizer_id", str(reviewer)), ("truth", truth))
            if not mine:
                assert ("miatari_known_answer_accuracy", key) not in m
                continue
            right = sum(1 for x in mine if x.verdict == truth)
            assert m[("miatari_known_answer_answered", key)] == len(mine)
            assert m[("miatari_known_answer_accuracy", key)] == pytest.approx(right / len(mine))
    assert m[("miatari_matching_jobs", (("state", "queued"),))] == len(jobs) == 1
    assert m[("miatari_matching_jobs", (("state", "failed"),))] == 0
    matched = [x for x in sightings if x.matched_at is not None]
    assert m[("miatari_upload_to_matched_seconds_count", ())] == len(matched) == 3
    assert m[("miatari_upload_to_matched_seconds_bucket", (("le", "+Inf"),))] == 3
    decided = [c for c in cands.values() if c.known_truth is None and c.status in ("flagged", "cleared", "disputed")]
    assert m[("miatari_matched_to_outcome_seconds_count", ())] == len(decided) == 2
    by_id = {x.id: x for x in sightings}
    total = 0.0
    for c in decided:
        matched_at = by_id[c.sighting_id].matched_at
        assert c.decided_at is not None and matched_at is not None
        total += (c.decided_at - matched_at).total_seconds()
    assert m[("miatari_matched_to_outcome_seconds_sum", ())] == pytest.approx(total, abs=0.01)
    # Cumulative buckets: both outcomes came within the hour of their sighting's matching.
    assert m[("miatari_matched_to_outcome_seconds_bucket", (("le", "3600.0"),))] == 2

    me = (("process", process_label()),)
    # (The factories' embeddings are of another model than the gallery's, so this index holds none of them.)
    assert m[("miatari_gallery_reference_photos", (("pid", str(os.getpid())), *me))] == len(gallery) <= photos
    lag = m[("miatari_gallery_sync_lag_seconds", me)]
    assert 55 < lag < 120
    gallery.sync()
    assert scrape(clients["boss"])[("miatari_gallery_sync_lag_seconds", me)] == 0

    # HTTP latency by route template, never by raw path.
    verdict_route = [v for (name, labels), v in m.items() if name == "miatari_http_request_duration_seconds_count"
                     and dict(labels).get("route") == "/api/review/slots/{slot_id}/verdict"
                     and dict(labels).get("status") == "201"]
    assert verdict_route and verdict_route[0] >= 4
    routes = {dict(labels).get("route") for (name, labels) in m if name.startswith("miatari_http_request")}
    assert not any(r and any(ch.isdigit() for ch in r) for r in routes), routes
