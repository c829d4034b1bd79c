"""Review, flags, disputes and metrics pages (server-rendered)."""

from __future__ import annotations

import re

import httpx
import pytest
from sqlmodel import Session, select

from tests.conftest import login
from tests.factories import image_store, make_candidate
from triage import clock
from triage.flags import LEAD_WARNING
from triage.models import AuditEntry, Candidate, Flag, ReviewSlot, Role


@pytest.fixture
def cand(engine, settings, user_factory):
    officer = user_factory(Role.officer, username="officer")
    user_factory(Role.manager, username="boss")
    for name in ("ann", "bob", "cat", "dan"):
        user_factory(Role.recognizer, username=name)
    store = image_store(settings)
    with Session(engine, expire_on_commit=False) as s:
        c = make_candidate(s, store, settings, officer.id, score=0.8765)
        s.commit()
    return c


def _as(make_client, username):
    c = make_client(known_answer_share=0.0)
    login(c, username)
    return c


def _take(client) -> int:
    r = client.post("/review/next", follow_redirects=False)
    assert r.status_code == 303, r.text
    return int(r.headers["location"].rsplit("/", 1)[1])


def _verdict(client, slot_id: int, verdict: str, **extra) -> httpx.Response:
    page = client.get(f"/review/slots/{slot_id}")
    key = page.context["idempotency_key"]
    return client.post(f"/review/slots/{slot_id}/verdict",
                       data={"verdict": verdict, "idempotency_key": key, **extra}, follow_redirects=False)


def test_queue_page_has_next_with_key(make_client, cand):
    ann = _as(make_client, "ann")
    r = ann.get("/review")
    assert r.status_code == 200 and r.template.name == "review.html"
    # One candidate with two open slots is one task for any one person (they can fill only one slot).
    assert r.context["held"] is None and r.context["waiting"] == 1
    assert 'data-key="n"' in r.text and 'action="/review/next"' in r.text


def test_task_page_shows_eye_crops_first_and_nothing_revealing(make_client, cand, engine):
    ann = _as(make_client, "ann")
    slot_id = _take(ann)
    r = ann.get(f"/review/slots/{slot_id}")
    assert r.template.name == "review_task.html"
    assert set(r.context) >= {"slot_id", "lease_expires_at", "revealed", "idempotency_key"}
    assert r.context["revealed"] is False
    html = r.content.decode()
    # Both eye crops, same CSS class (one size); no full faces before the reveal.
    crops = re.findall(r'<img class="crop eyes" src="([^"]+)"', html)
    assert crops == [f"/review/slots/{slot_id}/probe-eyes.png", f"/review/slots/{slot_id}/subject-eyes.png"]
    assert "face.png" not in html
    for key in "sdcf":
        assert f'data-key="{key}"' in html
    # Blind: not the score, rank, distance, the other verdict, the subject, or a known-answer hint.
    with Session(engine) as s:
        c = s.get_one(Candidate, cand.id)
    for word in ("0.8765", "0.876", "0.88", "score", "rank", "distance", "known", "truth", c.subject_id and
                 f"/watchlist/{c.subject_id}", "CASE-"):
        assert str(word) not in html, word
    img = ann.get(crops[0])
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"


def test_crops_only_for_the_lease_holder(make_client, cand):
    ann, bob = _as(make_client, "ann"), _as(make_client, "bob")
    slot_id = _take(ann)
    # Someone else's task is answered exactly as a missing one.
    for path in ("/probe-eyes.png", ""):
        theirs, missing = bob.get(f"/review/slots/{slot_id}{path}"), bob.get(f"/review/slots/{2**31 - 1}{path}")
        assert theirs.status_code == missing.status_code == 404 and theirs.text == missing.text
    theirs = bob.post(f"/review/slots/{slot_id}/reveal", follow_redirects=False)
    missing = bob.post(f"/review/slots/{2**31 - 1}/reveal", follow_redirects=False)
    assert theirs.status_code == missing.status_code == 404 and theirs.text == missing.text
    assert ann.get(f"/review/slots/{slot_id}/probe-face.png").status_code == 403
    assert ann.get(f"/review/slots/{slot_id}/original.png").status_code == 404
    # The reveal is a POST, recorded, then the faces are served.
    assert ann.get(f"/review/slots/{slot_id}/reveal").status_code == 405
    r = ann.post(f"/review/slots/{slot_id}/reveal", follow_redirects=False)
    assert r.status_code == 303
    page = ann.get(f"/review/slots/{slot_id}")
    assert page.context["revealed"] is True and "probe-face.png" in page.text
    assert ann.get(f"/review/slots/{slot_id}/subject-face.png").status_code == 200


def test_two_verdicts_flag_and_flag_page(make_client, cand, engine):
    ann, bob = _as(make_client, "ann"), _as(make_client, "bob")
    a, b = _take(ann), _take(bob)
    r = _verdict(ann, a, "same", note="same scar")
    assert r.status_code == 303 and r.headers["location"] == "/review?recorded=1"
    assert "Verdict recorded" in ann.get("/review?recorded=1").text
    _verdict(bob, b, "same")
    with Session(engine) as s:
        flag = s.exec(select(Flag)).one()
    officer = _as(make_client, "officer")
    listing = officer.get("/flags")
    assert listing.template.name == "flags.html" and len(listing.context["rows"]) == 1
    page = officer.get(f"/flags/{flag.id}")
    assert page.template.name == "flag.html"
    assert LEAD_WARNING in page.text.lower()
    ev = page.context["ev"]
    assert {v.reviewer for v in ev.verdicts} == {"ann", "bob"} and ev.sighting.location_text == "Main St station"
    assert "same scar" in page.text
    for kind in ("probe-eyes", "subject-eyes", "sighting-0"):
        assert officer.get(f"/flags/{flag.id}/images/{kind}").status_code == 200
    # A recognizer may not see flags or their pictures.
    assert ann.get(f"/flags/{flag.id}").status_code == 404
    assert ann.get(f"/flags/{flag.id}/images/probe-eyes").status_code == 404
    # Lifecycle, audited: the officer reports, a manager acknowledges and closes.
    assert 'id="close"' not in page.text and 'id="acknowledge"' not in page.text and 'id="report"' in page.text
    assert officer.post(f"/flags/{flag.id}/acknowledge").status_code == 403
    refused = officer.post(f"/flags/{flag.id}/close", data={"reason": "arrested"})
    assert refused.status_code == 403 and "Only a manager" in refused.text
    assert officer.post(f"/flags/{flag.id}/report", data={"outcome": "gone fishing"}).status_code == 422
    r = officer.post(f"/flags/{flag.id}/report", data={"outcome": "arrested", "note": "in custody"},
                     follow_redirects=False)
    assert r.status_code == 303
    with Session(engine) as s:
        assert s.get_one(Flag, flag.id).status == "raised"
    boss = _as(make_client, "boss")
    page = boss.get(f"/flags/{flag.id}")
    reports = [(x.reporter, x.outcome, x.note) for x in page.context["ev"].reports]
    assert reports == [("officer", "arrested", "in custody")]
    assert "in custody" in page.text and 'id="acknowledge"' in page.text and 'id="report"' not in page.text
    assert boss.post(f"/flags/{flag.id}/close", data={"reason": "arrested"}).status_code == 409
    boss.post(f"/flags/{flag.id}/acknowledge")
    bad = boss.post(f"/flags/{flag.id}/close", data={"reason": "gone fishing"})
    assert bad.status_code == 422 and "reason must be" in bad.text
    boss.post(f"/flags/{flag.id}/close", data={"reason": "arrested", "note": "in custody"})
    with Session(engine) as s:
        f = s.get_one(Flag, flag.id)
        assert f.status == "closed" and f.close_reason == "arrested"
        entries = s.exec(select(AuditEntry).where(AuditEntry.object_type == "flag")).all()
    actions = [(e.action, e.outcome, e.actor) for e in entries]
    assert [a for a, _, _ in actions].count("flag.raise") == 1
    assert {("flag.acknowledge", "denied", "officer"), ("flag.close", "denied", "officer"),
            ("flag.report", "ok", "officer"), ("flag.acknowledge", "ok", "boss"),
            ("flag.close", "ok", "boss")} <= set(actions)


def test_expired_lease_verdict_is_refused_on_the_page(make_client, cand, engine):
    ann = _as(make_client, "ann")
    with clock.frozen() as c:
        slot_id = _take(ann)
        key = ann.get(f"/review/slots/{slot_id}").context["idempotency_key"]
        c.advance(seconds=301)
        r = ann.post(f"/review/slots/{slot_id}/verdict", data={"verdict": "same", "idempotency_key": key})
    assert r.status_code == 409 and r.template.name == "review.html"
    assert "not counted" in r.text
    with Session(engine) as s:
        assert s.get_one(ReviewSlot, slot_id).verdict is None


def test_bad_verdict_form_shows_the_task_again(make_client, cand, engine):
    ann = _as(make_client, "ann")
    slot_id = _take(ann)
    r = ann.post(f"/review/slots/{slot_id}/verdict", data={"verdict": "perhaps"})
    assert r.status_code == 422 and r.template.name == "review_task.html"
    assert "must be one of" in r.text
    with Session(engine) as s:
        assert s.get_one(ReviewSlot, slot_id).verdict is None


def test_double_submit_is_one_verdict(make_client, cand, engine):
    ann = _as(make_client, "ann")
    slot_id = _take(ann)
    key = ann.get(f"/review/slots/{slot_id}").context["idempotency_key"]
    for _ in range(2):
        r = ann.post(f"/review/slots/{slot_id}/verdict", data={"verdict": "different", "idempotency_key": key},
                     follow_redirects=False)
        assert r.status_code == 303
    with Session(engine) as s:
        ok = s.exec(select(AuditEntry).where(AuditEntry.action == "review.verdict", AuditEntry.outcome == "ok")).all()
    assert len(ok) == 1


def test_disputes_page_and_escalation(make_client, cand, engine):
    ann, bob = _as(make_client, "ann"), _as(make_client, "bob")
    _verdict(ann, _take(ann), "same")
    _verdict(bob, _take(bob), "cannot_tell")
    boss = _as(make_client, "boss")
    page = boss.get("/disputes")
    assert page.template.name == "disputes.html" and [d.candidate.id for d in page.context["disputes"]] == [cand.id]
    # Escalate leads to a confirmation step (a page: it works without JavaScript), which posts.
    assert f'href="/disputes/{cand.id}/escalate"' in page.text
    confirm = boss.get(f"/disputes/{cand.id}/escalate")
    assert confirm.template.name == "dispute_escalate.html" and f'action="/disputes/{cand.id}/escalate"' in confirm.text
    assert ann.get("/disputes").status_code == 403 and ann.get(f"/disputes/{cand.id}/escalate").status_code == 403
    r = boss.post(f"/disputes/{cand.id}/escalate", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/disputes?escalated={cand.id}"
    after = boss.get(r.headers["location"])
    assert after.context["disputes"] == [] and [e.candidate.id for e in after.context["escalations"]] == [cand.id]
    assert f"Candidate #{cand.id} is in a new round" in after.text
    again = boss.post(f"/disputes/{cand.id}/escalate")
    assert again.status_code == 409 and "Only a disputed candidate" in again.text
    assert boss.get(f"/disputes/{cand.id}/escalate").status_code == 409
    # Round 2 goes to cat and dan, not to ann.
    r = ann.post("/review/next")
    assert r.context["held"] is None and "Nothing in the queue" in r.text
    _take(_as(make_client, "cat"))


def test_metrics_page_with_svg_charts_and_csv(make_client, cand):
    ann, bob = _as(make_client, "ann"), _as(make_client, "bob")
    _verdict(ann, _take(ann), "same")
    _verdict(bob, _take(bob), "same")
    boss = _as(make_client, "boss")
    r = boss.get("/stats")
    assert r.template.name == "metrics.html"
    m = r.context["m"]
    assert m.items == 1 and m.raw_agreement == 1.0 and m.flags_raised == 1
    assert r.text.count("<svg") == 7 and "<script" not in r.text.split('<main id="main"')[1]
    # A trend line for agreement and for the wait, with their value axes; kappa read in words.
    assert r.text.count('class="chart trend"') == 2 and r.text.count('class="axis"') == 14
    assert r.context["kappa_reading"].startswith("Kappa ") or "Not enough" in r.context["kappa_reading"]
    # No CDN, no chart library: every linked resource is the app's own.
    linked = re.findall(r'(?:src|href)="(https?://[^"/]+)', r.text)
    assert set(linked) <= {"http://testserver"}
    assert 'href="/stats/export.csv"' in r.text
    csv = boss.get("/stats/export.csv")
    assert csv.headers["content-type"].startswith("text/csv") and "flags_raised,all,1" in csv.text
    assert ann.get("/stats").status_code == 403


def test_metrics_over_a_period_on_the_page_in_the_csv_and_the_api(make_client, cand):
    ann, bob = _as(make_client, "ann"), _as(make_client, "bob")
    _verdict(ann, _take(ann), "same")
    _verdict(bob, _take(bob), "same")
    boss = _as(make_client, "boss")
    r = boss.get("/stats", params={"days": "7"})
    assert r.status_code == 200 and r.context["m"].window.label == "last 7 days"
    assert r.context["m"].flags_raised == 1 and 'id="window">last 7 days<' in r.text
    assert 'href="/stats/export.csv?days=7"' in r.text and '<option value="7" selected' in r.text
    # A period that ended before anything happened: nothing counted, the queue still shown.
    old = boss.get("/stats", params={"since": "2020-01-01", "until": "2020-01-31"})
    assert old.status_code == 200 and old.context["m"].items == 0 and old.context["m"].flags_raised == 0
    csv = boss.get("/stats/export.csv", params={"since": "2020-01-01", "until": "2020-01-31"})
    assert "window,2020-01-01 to 2020-01-31,2020-01-01T00:00:00+00:00,2020-02-01T00:00:00+00:00" in csv.text
    assert "flags_raised,all,0" in csv.text
    # Bad periods: a clear message, no figures.
    for params, message in (({"days": "abc"}, "whole number"), ({"since": "yesterday"}, "date like"),
                            ({"days": "7", "since": "2026-01-01"}, "not both"),
                            ({"since": "2026-02-01", "until": "2026-01-01"}, "before")):
        bad = boss.get("/stats", params=params)
        assert bad.status_code == 422 and message in bad.text and bad.context["m"] is None
        assert boss.get("/stats/export.csv", params=params).status_code == 422
        api = boss.get("/api/metrics", params=params)
        assert api.status_code == 422 and message in api.json()["detail"]
    body = boss.get("/api/metrics", params={"days": "30"}).json()
    assert body["window"]["label"] == "last 30 days" and body["window"]["days"] == 30 and body["flags_raised"] == 1
    assert ann.get("/stats", params={"days": "7"}).status_code == 403


def test_a_known_answer_task_page_and_its_bytes_give_nothing_away(make_client, engine, settings, user_factory):
    """Same page as a real task, and its sighting picture is bytes found nowhere else: not a reference
    photo's crop (served as the wanted-person side of real tasks), not another task's."""
    import hashlib

    from tests.factories import make_subject
    from triage.models import ReferencePhoto, StoredImage

    officer = user_factory(Role.officer, username="officer")
    user_factory(Role.recognizer, username="ann")
    store = image_store(settings)
    with Session(engine, expire_on_commit=False) as s:
        for _ in range(2):
            make_subject(s, store, photos=2)
        for _ in range(12):
            make_candidate(s, store, settings, officer.id)
        s.commit()
    ann = make_client(known_answer_share=0.5)
    login(ann, "ann")
    pages: dict[str, str] = {}
    for _ in range(12):
        slot_id = _take(ann)
        with Session(engine) as s:
            cand = s.get_one(Candidate, s.get_one(ReviewSlot, slot_id).candidate_id)
            reference_bytes = {store.get(x) for p in s.exec(select(ReferencePhoto)).all()
                               for x in (p.eye_crop_sha256, p.face_chip_sha256)}
            stored = {x.sha256 for x in s.exec(select(StoredImage)).all()}
        kind = "known" if cand.known_truth else "real"
        html = ann.get(f"/review/slots/{slot_id}").content.decode()
        pages.setdefault(kind, re.sub(r"\d+", "N", re.sub(r'value="[^"]{20,}"', "", html)))
        for word in ("known", "truth", "CASE-", "rendition", "seed"):
            assert word not in html, word
        ann.post(f"/review/slots/{slot_id}/reveal")
        probe = [ann.get(f"/review/slots/{slot_id}/probe-{k}.png").content for k in ("eyes", "face")]
        assert all(p[:4] == b"\x89PNG" for p in probe)
        if kind == "known":
            assert not any(p in reference_bytes for p in probe)
            assert {hashlib.sha256(p).hexdigest() for p in probe} == {cand.known_probe_eyes_sha256,
                                                                        cand.known_probe_face_sha256}
            assert all(hashlib.sha256(p).hexdigest() in stored for p in probe)
        _verdict(ann, slot_id, cand.known_truth or "cannot_tell")
        if len(pages) == 2:
            break
    assert set(pages) == {"known", "real"}
    assert pages["known"] == pages["real"]
