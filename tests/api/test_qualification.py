"""Qualified recognizers, through the JSON API: known-answer tasks catch an always-'same' account."""

from __future__ import annotations

import hashlib
import io
import re

import numpy as np
import pytest
from PIL import Image
from sqlmodel import Session, col, select

from tests.conftest import login
from tests.factories import image_store, make_candidate, make_subject
from triage import audit
from triage.models import (
    AuditEntry,
    Candidate,
    Flag,
    Notification,
    ReferencePhoto,
    ReviewSlot,
    Role,
    StoredImage,
    User,
)

# Probation serves known-answer pairs only (share 1), so the always-'same' account meets them first.
STRICT = {"known_answer_share": 0.0, "probation_known_answer_share": 1.0}


@pytest.fixture
def queue(engine, settings, user_factory):
    officer = user_factory(Role.officer, username="officer")
    user_factory(Role.manager, username="boss")
    for name in ("ann", "bob", "cat", "yes"):
        user_factory(Role.recognizer, username=name)
    store = image_store(settings)
    with Session(engine, expire_on_commit=False) as s:
        for _ in range(3):
            make_subject(s, store, photos=2)
        cands = [make_candidate(s, store, settings, officer.id) for _ in range(6)]
        s.commit()
    return cands


def _client(make_client, name, **overrides):
    c = make_client(**{**STRICT, **overrides})
    login(c, name)
    return c


def _slot(engine, slot_id):
    with Session(engine) as s:
        slot = s.get_one(ReviewSlot, slot_id)
        return slot, s.get(Candidate, slot.candidate_id)


def _qualify(engine, user: str) -> None:
    with Session(engine) as s:
        u = s.exec(select(User).where(User.username == user)).one()
        u.qualification = "qualified"
        s.add(u)
        s.commit()


def test_an_always_same_recognizer_is_suspended_and_its_undecided_verdicts_stop_counting(make_client, engine, queue):
    # 'yes' is qualified already and gave a live verdict on a candidate nobody else has answered yet.
    _qualify(engine, "yes")
    yes = _client(make_client, "yes", probation_known_answer_share=0.0)
    live = yes.post("/api/review/next").json()["task"]
    assert yes.post(live["verdict_url"], json={"verdict": "same"}).status_code == 201
    live_slot, live_cand = _slot(engine, live["slot_id"])
    assert live_cand.known_truth is None and live_cand.status == "open"

    # Back on probation (share 1), it is served known-answer pairs and keeps answering 'same'.  Each pair is
    # known-different with odds 1/2; the third wrong one suspends (0/3: upper bound 0.56 < 0.6), so 20 tasks
    # fail to do it with probability P(Bin(20, 1/2) <= 2) = 2e-4.
    with Session(engine) as s:
        u = s.exec(select(User).where(User.username == "yes")).one()
        u.qualification = "probation"
        s.add(u)
        s.commit()
    yes = _client(make_client, "yes")
    answered = 0
    for _ in range(40):
        r = yes.post("/api/review/next")
        if r.status_code == 403:
            break
        task = r.json()["task"]
        assert yes.post(task["verdict_url"], json={"verdict": "same"}).status_code == 201
        answered += 1
    assert r.status_code == 403 and "suspended" in r.json()["detail"]
    assert answered <= 20
    with Session(engine) as s:
        u = s.exec(select(User).where(User.username == "yes")).one()
        assert u.qualification == "suspended"
        # The live verdict is kept for the record, no longer counting; its place is served again.
        voided = s.get_one(ReviewSlot, live_slot.id)
        assert voided.verdict == "same" and voided.reviewer_id == u.id and voided.voided_at is not None
        fresh = s.exec(select(ReviewSlot).where(ReviewSlot.candidate_id == live_cand.id,
                                                ReviewSlot.round == 1, ReviewSlot.slot_no == voided.slot_no,
                                                col(ReviewSlot.voided_at).is_(None))).one()
        assert fresh.reviewer_id is None and fresh.verdict is None
        boss = s.exec(select(User).where(User.username == "boss")).one()
        assert s.exec(select(Notification).where(Notification.user_id == boss.id,
                                                 Notification.kind == "recognizer.suspended")).first()
        assert s.exec(select(AuditEntry).where(AuditEntry.action == "recognizer.suspend")).one()
        refusal = s.exec(select(AuditEntry).where(AuditEntry.action == "review.next")
                         .order_by(col(AuditEntry.id).desc())).first()
        assert refusal is not None
        assert refusal.outcome == "denied" and refusal.detail["reason"] == "suspended"
    # The voided slot goes to two other people, who decide the candidate between them; no flag on one 'same'.
    for name in ("ann", "bob"):
        _qualify(engine, name)
    for name, verdict in (("ann", "same"), ("bob", "same")):
        c = _client(make_client, name, probation_known_answer_share=0.0)
        for _ in range(10):
            t = c.post("/api/review/next").json()["task"]
            slot, cand = _slot(engine, t["slot_id"])
            assert c.post(t["verdict_url"], json={"verdict": verdict}).status_code == 201
            if cand.id == live_cand.id:
                break
    with Session(engine) as s:
        row = s.get_one(Candidate, live_cand.id)
        slots = s.exec(select(ReviewSlot).where(ReviewSlot.candidate_id == row.id)).all()
        assert len(slots) == 3 and len({x.reviewer_id for x in slots}) == 3
        if row.status == "flagged":
            counting = [x for x in slots if x.voided_at is None]
            assert {x.reviewer_id for x in counting} == {
                s.exec(select(User.id).where(User.username == n)).one() for n in ("ann", "bob")}
        assert audit.verify(s).ok


def test_a_manager_reinstates_over_the_api_and_the_page(make_client, engine, queue):
    with Session(engine) as s:
        u = s.exec(select(User).where(User.username == "yes")).one()
        u.qualification = "suspended"
        s.add(u)
        s.commit()
        uid = u.id
    yes = _client(make_client, "yes")
    assert yes.post("/api/review/next").status_code == 403
    assert yes.post(f"/api/review/recognizers/{uid}/reinstate").status_code == 403  # not a manager
    boss = _client(make_client, "boss")
    listing = boss.get("/api/review/recognizers").json()
    assert listing["data"][0]["username"] == "yes" and listing["data"][0]["qualification"] == "suspended"
    page = boss.get("/recognizers")
    assert f'action="/recognizers/{uid}/reinstate"' in page.text and 'name="csrf_token"' in page.text
    # The page's form without its CSRF token is refused and changes nothing.
    token = boss.headers.pop("X-CSRF-Token")
    assert boss.post(f"/recognizers/{uid}/reinstate", data={}).status_code == 403
    boss.headers["X-CSRF-Token"] = token
    with Session(engine) as s:
        assert s.get_one(User, uid).qualification == "suspended"
    r = boss.post(f"/api/review/recognizers/{uid}/reinstate")
    assert r.status_code == 200 and r.json()["qualification"] == "probation"
    assert r.json()["known_same"]["answered"] == 0  # a fresh record
    assert boss.post(f"/api/review/recognizers/{uid}/reinstate").status_code == 409  # not suspended any more
    assert yes.post("/api/review/next").status_code == 200
    with Session(engine) as s:
        entries = s.exec(select(AuditEntry).where(AuditEntry.action == "recognizer.reinstate")
                         .order_by(col(AuditEntry.id))).all()
        assert [e.outcome for e in entries] == ["ok", "denied"]
        # The recognizer's own attempt was refused on its role, and that refusal is in the log too.
        access = s.exec(select(AuditEntry).where(AuditEntry.action == "access", AuditEntry.actor == "yes")).all()
        assert access and all(e.outcome == "denied" for e in access)


def _sharpness(png: bytes) -> float:
    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    lap = grey[1:-1, 2:] + grey[1:-1, :-2] + grey[2:, 1:-1] + grey[:-2, 1:-1] - 4 * grey[1:-1, 1:-1]
    return float(lap.var())


def test_known_answer_pictures_are_fresh_degraded_renditions(make_client, engine, settings, queue):
    """The probe side of a known-answer task: bytes served nowhere else, softer than its source, new each time."""
    store = image_store(settings)
    ann = _client(make_client, "ann")
    seen: list[bytes] = []
    for _ in range(6):
        task = ann.post("/api/review/next").json()["task"]
        slot, cand = _slot(engine, task["slot_id"])
        assert cand.known_truth is not None
        ann.post(task["reveal_url"])
        eyes = ann.get(task["images"]["probe_eyes"]).content
        face = ann.get(f"/api/review/slots/{task['slot_id']}/images/probe-face").content
        with Session(engine) as s:
            own = {cand.known_probe_eyes_sha256, cand.known_probe_face_sha256}
            assert {hashlib.sha256(eyes).hexdigest(), hashlib.sha256(face).hexdigest()} == own
            # No other row of the system points at those bytes: no reference photo, probe or other task.
            refs = s.exec(select(ReferencePhoto)).all()
            elsewhere = {x for p in refs for x in (p.eye_crop_sha256, p.face_chip_sha256, p.image_sha256)}
            others = s.exec(select(Candidate).where(Candidate.id != cand.id)).all()
            elsewhere |= {x for c in others for x in (c.known_probe_eyes_sha256, c.known_probe_face_sha256) if x}
            assert not own & elsewhere
            source = s.get_one(ReferencePhoto, cand.known_probe_photo_id)
            # The same size as every crop, and softer than the studio photo it came from.
            src_eyes = store.get(source.eye_crop_sha256)
            assert Image.open(io.BytesIO(eyes)).size == Image.open(io.BytesIO(src_eyes)).size
            assert _sharpness(eyes) < _sharpness(src_eyes)
            assert s.get_one(StoredImage, cand.known_probe_eyes_sha256).media_type == "image/png"
        assert eyes not in seen
        seen.append(eyes)
        assert ann.post(task["verdict_url"], json={"verdict": cand.known_truth}).status_code == 201


def test_known_answer_pairs_never_use_an_expired_or_closed_subject(make_client, engine, settings, user_factory):
    import datetime as dt

    officer = user_factory(Role.officer, username="officer")
    user_factory(Role.recognizer, username="ann")
    store = image_store(settings)
    with Session(engine, expire_on_commit=False) as s:
        expired = make_subject(s, store, photos=2)
        expired.expires_on = dt.date(2020, 1, 1)
        closed = make_subject(s, store, photos=2, status="withdrawn")
        live = make_subject(s, store, photos=2)
        make_candidate(s, store, settings, officer.id, subject=live)
        s.add(expired)
        s.commit()
        bad = {expired.id, closed.id}
        live_id = live.id
        bad_photos = {p.id for p in s.exec(select(ReferencePhoto).where(col(ReferencePhoto.subject_id).in_(bad))).all()}
    ann = _client(make_client, "ann")
    pairs = 0
    for _ in range(3):
        task = ann.post("/api/review/next").json()["task"]
        _, cand = _slot(engine, task["slot_id"])
        if cand.known_truth is not None:
            pairs += 1
            assert cand.known_truth == "same"  # only the live subject can make a pair: two of its photos
            assert cand.subject_id == live_id and cand.known_probe_photo_id not in bad_photos
        assert ann.post(task["verdict_url"], json={"verdict": "same"}).status_code == 201
    # Its two photos make two pairs (each way round); then the real task, as nothing else may make one.
    assert pairs == 2


def test_flag_evidence_shows_each_verdicts_known_answer_record(make_client, engine, settings, queue):
    for name in ("ann", "bob"):
        _qualify(engine, name)
    done = set()
    for name in ("ann", "bob"):
        c = _client(make_client, name, probation_known_answer_share=0.0)
        t = c.post("/api/review/next").json()["task"]
        assert c.post(t["verdict_url"], json={"verdict": "same"}).status_code == 201
        done.add(_slot(engine, t["slot_id"])[1].id)
    assert len(done) == 1
    with Session(engine) as s:
        (flag,) = s.exec(select(Flag)).all()
    boss = _client(make_client, "boss")
    verdicts = boss.get(f"/api/flags/{flag.id}").json()["verdicts"]
    assert [v["reviewer_record"]["status"] for v in verdicts] == ["qualified", "qualified"]
    assert all(set(v["reviewer_record"]) >= {"same", "different", "same_bounds", "different_bounds"}
               for v in verdicts)
    page = boss.get(f"/flags/{flag.id}")
    assert re.search(r"qualified; known same 0/0, known different 0/0", page.text)
