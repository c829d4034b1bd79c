"""Nothing a recognizer can open shows a matcher score or another person's verdict.

Every GET route of the app is discovered from ``app.routes`` and called as a
recognizer (pages with the cookie session, the API with a personal token),
with every record of a realistic database in its path: candidates with
distinctive scores, distances and ranks, verdicts and notes of other
recognizers on a live candidate, a disputed one and a flagged one, and the
audit entries all of that wrote.  No answer, whatever its status, may carry
any of it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from tests.conftest import TEST_PASSWORD, add_user, login
from tests.factories import image_store, make_candidate
from tests.test_authorization_matrix import iter_routes
from triage import notifications, review
from triage.models import (
    Candidate,
    Flag,
    Probe,
    ReferencePhoto,
    ReviewSlot,
    Role,
    SightingPhoto,
    User,
    WatchlistImport,
)
from triage.security import create_api_token

# Scores, distances, and the notes of other people's verdicts: none may reach a recognizer.
LIVE, DISPUTED, FLAGGED = 0.8765, 0.8531, 0.9247
OTHER_NOTES = ("bob-note-on-live", "bob-note-on-dispute", "cat-note-on-dispute", "bob-note-on-flag",
               "cat-note-on-flag")
TIME_OF_DAY = re.compile(r"\d{2}:\d{2}:\d{2}\.\d+")
KINDS = ("probe-eyes", "subject-eyes", "probe-face", "subject-face", "eyes", "face", "photo")


def _forbidden(candidates: list[Candidate], notes: tuple[str, ...] = OTHER_NOTES) -> list[str]:
    words = list(notes)
    for c in candidates:
        for value in (c.score, c.distance):
            words += [f"{value:.4f}", f"{value:.3f}", f"{value:.4f}"[1:]]
    return sorted(set(words))


def _world(engine: Engine, app: Any) -> tuple[dict[str, Sequence[object]], list[Candidate]]:
    settings = app.state.settings
    store = image_store(settings)
    # The officer who uploaded every sighting also reviews (never their own sightings' candidates).
    officer = add_user(engine, "oleg", Role.officer, Role.recognizer)
    boss = add_user(engine, "boss", Role.manager)
    rec = add_user(engine, "rina", Role.recognizer)
    bob = add_user(engine, "bob", Role.recognizer)
    cat = add_user(engine, "cat", Role.recognizer)
    with Session(engine, expire_on_commit=False) as s:
        disputed = make_candidate(s, store, settings, officer.pk, score=DISPUTED, priority=1)
        flagged = make_candidate(s, store, settings, officer.pk, score=FLAGGED, priority=2)
        live = make_candidate(s, store, settings, officer.pk, score=LIVE, priority=3)
        s.commit()

    def answer(user: User, candidate: Candidate, verdict: str, note: str) -> None:
        with Session(engine, expire_on_commit=False) as s:
            task = review.next_task(s, s.get_one(User, user.id), settings)
            assert task is not None and task.candidate.id == candidate.id
            review.submit_verdict(s, s.get_one(User, user.id), task.slot_id, verdict, note)
            s.commit()

    answer(bob, disputed, "same", "bob-note-on-dispute")
    answer(cat, disputed, "different", "cat-note-on-dispute")
    answer(bob, flagged, "same", "bob-note-on-flag")
    answer(cat, flagged, "same", "cat-note-on-flag")
    answer(bob, live, "different", "bob-note-on-live")
    with Session(engine, expire_on_commit=False) as s:
        task = review.next_task(s, s.get_one(User, rec.id), settings)
        assert task is not None and task.candidate.id == live.id
        own_slot = task.slot_id
        cands = [s.get_one(Candidate, c.id) for c in (live, disputed, flagged)]
        assert [c.status for c in cands] == ["open", "disputed", "flagged"]
        flag = s.exec(select(Flag)).one()
        slots = [sl.pk for sl in s.exec(select(ReviewSlot)).all()]
        photos = [p.pk for p in s.exec(select(ReferencePhoto)).all()]
        sighting_photos = s.exec(select(SightingPhoto)).all()
        probes = list(s.exec(select(Probe)).all())
        _, rec_token = create_api_token(s, s.get_one(User, rec.id), "rec's phone")
        _, boss_token = create_api_token(s, s.get_one(User, boss.id), "boss's phone")
        own_note = notifications.notify(s, rec.pk, "info", "hello", flag_id=None)
        other_note = notifications.notify(s, boss.pk, "flag.raised", "Arrest flag", flag_id=flag.id)
        imp = WatchlistImport(created_by=boss.pk, filename="mugshots.zip", archive_sha256="0" * 64,
                              status="done")
        s.add(imp)
        s.commit()
        params: dict[str, Sequence[object]] = {
            "slot_id": sorted({own_slot, *slots}),
            "candidate_id": [c.id for c in cands],
            "flag_id": [flag.id],
            "subject_id": sorted({c.subject_id for c in cands}),
            "photo_id": photos[:2],
            "sighting_id": sorted({p.sighting_id for p in sighting_photos}),
            "position": [0],
            "probe_id": [p.id for p in probes],
            "user_id": [rec.id, bob.id],
            "token_id": [rec_token.id, boss_token.id],
            "notification_id": [own_note.id, other_note.id],
            "import_id": [imp.id],
            "kind": list(KINDS),
        }
    return params, cands


def _urls(path: str, params: dict[str, Sequence[object]]) -> list[str]:
    names = re.findall(r"\{(\w+)(?::\w+)?\}", path)
    missing = [n for n in names if n not in params]
    assert not missing, f"no record for path parameter(s) {missing} of {path}: add them to _world"
    urls = []
    for combo in itertools.product(*(params[n] for n in names)):
        url = path
        for name, value in zip(names, combo, strict=True):
            url = re.sub(r"\{" + name + r"(?::\w+)?\}", str(value), url, count=1)
        urls.append(url)
    return urls


def _scan(web: TestClient, token: str, params: dict[str, Sequence[object]], words: list[str]) -> tuple[int, list[str]]:
    leaks: list[str] = []
    calls = 0
    for method, path in sorted(set(iter_routes(web.app))):
        if method != "GET" or path in ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"):
            continue
        for url in _urls(path, params):
            if path.startswith("/api/"):
                r = web.get(url, headers={"Authorization": f"Bearer {token}"}, follow_redirects=False)
            else:
                r = web.get(url, follow_redirects=False)
            calls += 1
            # Times of day carry fractions of a second whose digits may happen to read like a score.
            body = TIME_OF_DAY.sub("<time>", r.content.decode("utf-8", "replace").lower())
            leaks += [f"GET {url} ({r.status_code}): {w!r}" for w in words if w.lower() in body]
            if path.startswith("/api/") and path != "/api/me":
                # The API's own names for the matcher's numbers and other people's verdicts.
                leaks += [f"GET {url} ({r.status_code}): key {k!r}" for k in ('"score"', '"distance"', '"rank"',
                                                                                '"verdicts"') if k in body]
    return calls, leaks


def test_no_route_a_recognizer_can_open_shows_scores_or_other_verdicts(
        make_client: Callable[..., TestClient], engine: Engine) -> None:
    web = make_client(known_answer_share=0.0)
    params, cands = _world(engine, web.app)
    words = _forbidden(cands)
    login(web, "rina", TEST_PASSWORD)
    token = web.post("/api/tokens", json={"name": "scan", "username": "rina", "password": TEST_PASSWORD}).json()
    # The recognizer's own task is among what is opened, so the scan covers the review page itself.
    task = web.get("/api/review/next", headers={"Authorization": f"Bearer {token['token']}"}).json()["task"]
    assert task is not None and task["slot_id"] in params["slot_id"]
    calls, leaks = _scan(web, token["token"], params, words)
    assert calls > 100
    assert not leaks, "a recognizer can read what review must hide:\n" + "\n".join(leaks)


def test_the_scan_sees_what_a_manager_is_shown(make_client: Callable[..., TestClient], engine: Engine) -> None:
    """The same scan as a manager finds the scores and verdicts: it would catch a leak."""
    web = make_client(known_answer_share=0.0)
    params, cands = _world(engine, web.app)
    words = _forbidden(cands)
    login(web, "boss", TEST_PASSWORD)
    token = web.post("/api/tokens", json={"name": "scan", "username": "boss", "password": TEST_PASSWORD}).json()
    _, leaks = _scan(web, token["token"], params, words)
    found = {(line.split(" (")[0], line.rsplit(": ", 1)[1]) for line in leaks}
    assert {("GET /disputes", "'0.853'"), ("GET /api/review/disputes", "key '\"verdicts\"'"),
            ("GET /flags/1", "'0.925'"), ("GET /flags/1", "'cat-note-on-flag'")} <= found, "\n".join(leaks)
    assert any(u.startswith("GET /audit") and w == "'0.8765'" for u, w in found), "\n".join(leaks)


def test_an_officer_who_reviews_sees_no_scores_on_their_sightings_and_flags(
        make_client: Callable[..., TestClient], engine: Engine) -> None:
    """The uploading officer is shown the evidence of a flag on their sighting (the two confirming verdicts),
    never a score, nor the verdicts on a candidate still open or disputed."""
    web = make_client(known_answer_share=0.0)
    params, cands = _world(engine, web.app)
    words = _forbidden(cands, tuple(n for n in OTHER_NOTES if not n.endswith("-on-flag")))
    login(web, "oleg", TEST_PASSWORD)
    token = web.post("/api/tokens", json={"name": "scan", "username": "oleg", "password": TEST_PASSWORD}).json()
    assert web.get(f"/flags/{params['flag_id'][0]}").status_code == 200
    _, leaks = _scan(web, token["token"], params, words)
    leaks = [line for line in leaks if not (line.startswith("GET /api/flags/") and line.endswith("'\"verdicts\"'"))]
    assert not leaks, "an officer who reviews can read what review must hide:\n" + "\n".join(leaks)
