"""Review, flags and metrics through the JSON API."""

from __future__ import annotations

import re

import pytest
from sqlmodel import Session, col, select

from tests.conftest import login
from tests.factories import image_store, make_candidate, make_subject
from triage import clock
from triage.models import AuditEntry, Candidate, Flag, Notification, ReviewSlot, Role, User


@pytest.fixture
def setup(engine, settings, user_factory):
    officer = user_factory(Role.officer, username="officer")
    user_factory(Role.manager, username="boss")
    user_factory(Role.recognizer, username="ann")
    user_factory(Role.recognizer, username="bob")
    store = image_store(settings)
    with Session(engine, expire_on_commit=False) as s:
        cand = make_candidate(s, store, settings, officer.id, score=0.8765)
        s.commit()
    return cand


def _client(make_client, username):
    c = make_client(known_answer_share=0.0)
    login(c, username)
    return c


def test_next_verdict_and_flag_over_the_api(make_client, setup, engine):
    ann, bob = _client(make_client, "ann"), _client(make_client, "bob")
    assert ann.get("/api/review/next").json() == {"task": None}
    r = ann.post("/api/review/next")
    assert r.status_code == 200
    task = r.json()["task"]
    assert ann.get("/api/review/next").json()["task"]["slot_id"] == task["slot_id"]
    img = ann.get(task["images"]["probe_eyes"])
    assert img.status_code == 200 and img.headers["content-type"] == "image/png" and img.content[:4] == b"\x89PNG"
    # Another recognizer cannot fetch it: answered exactly as a missing task; faces only after the reveal.
    theirs = bob.get(task["images"]["probe_eyes"])
    missing = bob.get(f"/api/review/slots/{2**31 - 1}/images/probe-eyes")
    assert theirs.status_code == missing.status_code == 404 and theirs.json() == missing.json()
    assert ann.get(f"/api/review/slots/{task['slot_id']}/images/probe-face").status_code == 403
    revealed = ann.post(task["reveal_url"]).json()
    assert revealed["revealed_full_faces"] and ann.get(revealed["images"]["subject_face"]).status_code == 200

    headers = {"Idempotency-Key": "abc-1"}
    v1 = ann.post(task["verdict_url"], json={"verdict": "same", "note": "eyebrow scar"}, headers=headers)
    assert v1.status_code == 201 and v1.json()["replayed"] is False
    v2 = ann.post(task["verdict_url"], json={"verdict": "same", "note": "eyebrow scar"}, headers=headers)
    assert v2.status_code == 200 and v2.json()["replayed"] is True
    v3 = ann.post(task["verdict_url"], json={"verdict": "different"}, headers=headers)
    assert v3.status_code == 409

    t2 = bob.post("/api/review/next").json()["task"]
    assert t2["slot_id"] != task["slot_id"]
    assert bob.post(t2["verdict_url"], json={"verdict": "same"}).status_code == 201
    with Session(engine) as s:
        assert s.get_one(Candidate, setup.id).status == "flagged"
        assert len(s.exec(select(ReviewSlot).where(col(ReviewSlot.verdict).is_not(None))).all()) == 2

    officer = _client(make_client, "officer")
    flags = officer.get("/api/flags").json()
    assert flags["count"] == 1
    assert flags["data"][0]["warning"] == "investigative lead — confirm identity before any action"
    fid = flags["data"][0]["id"]
    detail = officer.get(f"/api/flags/{fid}").json()
    assert {v["reviewer"] for v in detail["verdicts"]} == {"ann", "bob"}
    # Officers report; only a manager acknowledges and closes (the refusals change nothing and are on record).
    assert officer.post(f"/api/flags/{fid}/acknowledge").status_code == 403
    assert officer.post(f"/api/flags/{fid}/close", json={"reason": "arrested"}).status_code == 403
    assert officer.get(f"/api/flags/{fid}").json()["status"] == "raised"
    assert officer.post(f"/api/flags/{fid}/reports", json={"outcome": "bogus"}).status_code == 422
    report = officer.post(f"/api/flags/{fid}/reports", json={"outcome": "arrested", "note": "in custody at Namba"})
    assert report.status_code == 201 and report.json()["status"] == "raised"
    boss = _client(make_client, "boss")
    seen = boss.get(f"/api/flags/{fid}").json()
    assert [(r["reporter"], r["outcome"], r["note"]) for r in seen["reports"]] == [
        ("officer", "arrested", "in custody at Namba")]
    assert boss.post(f"/api/flags/{fid}/reports", json={"outcome": "arrested"}).status_code == 403
    assert boss.post(f"/api/flags/{fid}/close", json={"reason": "arrested"}).status_code == 409
    assert boss.post(f"/api/flags/{fid}/acknowledge").json()["status"] == "acknowledged"
    assert boss.post(f"/api/flags/{fid}/close", json={"reason": "nope"}).status_code == 422
    closed = boss.post(f"/api/flags/{fid}/close", json={"reason": "not_located"}).json()
    assert closed["status"] == "closed" and closed["close_reason"] == "not_located"
    with Session(engine) as s:
        flag = s.get_one(Flag, fid)
        assert flag.closed_by is not None and s.get_one(User, flag.closed_by).username == "boss"
        denied = s.exec(select(AuditEntry).where(AuditEntry.object_type == "flag", AuditEntry.outcome == "denied",
                                                 AuditEntry.actor == "officer")).all()
        assert {e.action for e in denied} >= {"flag.acknowledge", "flag.close"}
        told = s.exec(select(Notification).where(Notification.kind == "flag.report")).all()
        assert [s.get_one(User, n.user_id).username for n in told] == ["boss"] and all(n.flag_id == fid for n in told)
    # A recognizer sees no flags; a flag they may not see is not found.
    assert ann.get("/api/flags").json()["count"] == 0
    assert ann.get(f"/api/flags/{fid}").status_code == 404


def test_nothing_revealing_before_the_verdict(make_client, setup, engine):
    ann = _client(make_client, "ann")
    raw = ann.post("/api/review/next").content
    task = ann.get("/api/review/next").json()["task"]
    reveal = ann.post(task["reveal_url"]).content
    with Session(engine) as s:
        cand = s.get_one(Candidate, setup.id)
    for body in (raw, reveal):
        text = body.decode()
        for word in ("score", "rank", "distance", "known", "truth", "subject_id", "candidate", "verdict\":"):
            assert word not in text, word
        assert "0.8765" not in text and "0.123" not in text and str(cand.score)[:5] not in text


def test_expired_lease_verdict_refused_over_api(make_client, setup):
    ann = _client(make_client, "ann")
    with clock.frozen() as c:
        task = ann.post("/api/review/next").json()["task"]
        c.advance(seconds=301)
        r = ann.post(task["verdict_url"], json={"verdict": "same"})
    assert r.status_code == 409 and "not counted" in r.json()["detail"]


def test_bad_verdict_input_rejected(make_client, setup, engine):
    ann = _client(make_client, "ann")
    task = ann.post("/api/review/next").json()["task"]
    assert ann.post(task["verdict_url"], json={"verdict": "maybe"}).status_code == 422
    assert ann.post(task["verdict_url"], json={}).status_code == 422
    assert ann.post(task["verdict_url"], json={"verdict": "same"},
                    headers={"Idempotency-Key": "x" * 65}).status_code == 422
    with Session(engine) as s:
        assert s.get_one(ReviewSlot, task["slot_id"]).verdict is None


def test_roles_enforced(make_client, setup):
    officer = _client(make_client, "officer")
    assert officer.post("/api/review/next").status_code == 403
    assert officer.get("/api/metrics").status_code == 403
    assert officer.get("/api/review/disputes").status_code == 403
    anon = make_client()
    assert anon.post("/api/review/next").status_code == 401


def test_disputes_escalation_and_metrics_api(make_client, setup, engine, settings, user_factory):
    user_factory(Role.recognizer, username="cat")
    user_factory(Role.recognizer, username="dan")
    ann, bob = _client(make_client, "ann"), _client(make_client, "bob")
    for c, v in ((ann, "same"), (bob, "different")):
        t = c.post("/api/review/next").json()["task"]
        assert c.post(t["verdict_url"], json={"verdict": v}).status_code == 201
    boss = _client(make_client, "boss")
    disputes = boss.get("/api/review/disputes").json()
    assert disputes["count"] == 1 and disputes["data"][0]["eligible_recognizers"] == 2
    r = boss.post(f"/api/review/candidates/{setup.id}/escalate")
    assert r.status_code == 200 and r.json()["round"] == 2
    assert boss.post(f"/api/review/candidates/{setup.id}/escalate").status_code == 409
    assert ann.post("/api/review/next").json()["task"] is None
    m = boss.get("/api/metrics").json()
    assert m["items"] == 1 and m["raw_agreement"] == 0 and m["dispute_rate"] == 1.0 and m["queue_slots"] == 2
    csv = boss.get("/api/metrics/export.csv")
    assert csv.headers["content-type"].startswith("text/csv") and csv.text.startswith("metric,key,value,n")
    with Session(engine) as s:
        assert s.exec(select(Flag)).first() is None


def test_known_answer_task_looks_like_any_other(make_client, engine, settings, user_factory):
    """Same JSON shape, same URLs, same keys: only the database knows which task is a known answer."""
    officer = user_factory(Role.officer, username="officer")
    user_factory(Role.recognizer, username="ann")
    store = image_store(settings)
    with Session(engine, expire_on_commit=False) as s:
        make_subject(s, store, photos=2)
        make_subject(s, store, photos=2)
        for _ in range(20):
            make_candidate(s, store, settings, officer.id)
        s.commit()
    ann = make_client(known_answer_share=0.5)
    login(ann, "ann")
    shapes: dict[str, str] = {}
    for _ in range(20):
        r = ann.post("/api/review/next")
        task = r.json()["task"]
        with Session(engine) as s:
            cand = s.get_one(Candidate, s.get_one(ReviewSlot, task["slot_id"]).candidate_id)
        kind = "known" if cand.known_truth else "real"
        shape = re.sub(r'"lease_expires_at":"[^"]+"', "", r.content.decode())
        shapes.setdefault(kind, re.sub(r"\d+", "N", shape))
        # The truth on a known-answer pair: wrong answers there would get the account suspended mid-test.
        verdict = cand.known_truth or "cannot_tell"
        assert ann.post(task["verdict_url"], json={"verdict": verdict}).status_code == 201
        if len(shapes) == 2:
            break
    assert set(shapes) == {"known", "real"}
    assert shapes["known"] == shapes["real"]
