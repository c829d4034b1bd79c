"""Every route × every role × someone else's record: the answer each must get.

The routes are discovered from ``app.routes`` (API and pages alike); a route
missing from ``MATRIX`` fails the test with its name, so every new route has
to be classified here.  Each row gives one expected answer per principal, in
the order of ``PRINCIPALS``:

    anon   nobody logged in
    off    officer A, who owns the records (sighting, token, notification)
    rec    recognizer A, who holds the lease on the review slot
    mgr    a manager
    adm    an admin
    off2   officer B: another officer, someone else's record
    rec2   recognizer B: another recognizer, someone else's task

with the letters

    a  allowed: 2xx or 3xx (not a redirect to the login page)
    i  past the role check, then refused on the (deliberately empty) input or the record's state:
       409 or 422, nothing changed
    l  must log in: 401 under /api, a 303 to /login (401 for htmx) for pages
    n  refused: 403, or 404 for a record that is not theirs (the same answer as a missing one)
    -  not checked (an answer that depends on the machine, e.g. readiness)

State-changing requests are sent with an empty body, so that they are refused
as input by those allowed (``i``) and never change the records the other
rows rely on; the few that need no input act on records kept for that.
Pages use cookie sessions with the CSRF header; the API uses personal tokens.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import Engine
from sqlmodel import Session, select

from tests.conftest import TEST_PASSWORD, add_user, login
from triage import notifications
from triage.gallery import active_model_id
from triage.models import (
    Candidate,
    CandidateStatus,
    Flag,
    Job,
    Probe,
    ReferenceEmbedding,
    ReferencePhoto,
    ReviewSlot,
    Role,
    Sighting,
    SightingPhoto,
    Subject,
    User,
    WatchlistImport,
)
from triage.security import create_api_token
from triage.storage import store_image

PRINCIPALS = ("anon", "off", "rec", "mgr", "adm", "off2", "rec2")

# (METHOD, path) → expected answer per principal (see the module docstring).
MATRIX: dict[tuple[str, str], str] = {
    # Public
    ("GET", "/openapi.json"): "aaaaaaa",
    ("GET", "/docs"): "aaaaaaa",
    ("GET", "/docs/oauth2-redirect"): "aaaaaaa",
    ("GET", "/redoc"): "aaaaaaa",
    ("GET", "/healthz"): "aaaaaaa",
    ("GET", "/readyz"): "-------",
    ("GET", "/login"): "aaaaaaa",
    ("POST", "/login"): "iiiiiii",
    # One's own account and tokens
    ("POST", "/logout"): "laaaaaa",
    ("GET", "/"): "laaaaaa",
    ("GET", "/account"): "laaaaaa",
    ("GET", "/account/password"): "laaaaaa",
    ("POST", "/account/password"): "liiiiii",
    ("GET", "/account/totp"): "laaaaaa",
    ("POST", "/account/totp"): "liiiiii",
    ("POST", "/account/totp/remove"): "liiiiii",
    ("POST", "/account/tokens"): "liiiiii",
    ("POST", "/account/tokens/{token_id}/revoke"): "lannann",
    ("POST", "/api/tokens"): "iiiiiii",
    ("GET", "/api/tokens"): "laaaaaa",
    ("DELETE", "/api/tokens/{token_id}"): "lannann",
    ("GET", "/api/me"): "laaaaaa",
    # Notifications: one's own only
    ("GET", "/notifications"): "laaaaaa",
    ("GET", "/notifications/count"): "laaaaaa",
    ("POST", "/notifications/read"): "laaaaaa",
    ("POST", "/notifications/{notification_id}/read"): "lannnnn",
    # Accounts: admins only
    ("GET", "/admin/users"): "lnnnann",
    ("POST", "/admin/users"): "lnnninn",
    ("GET", "/admin/users/{user_id}"): "lnnnann",
    # Disabling needs its confirmation step (an empty post is refused as input, nothing changed).
    ("GET", "/admin/users/{user_id}/disable"): "lnnnann",
    ("POST", "/admin/users/{user_id}/disable"): "lnnninn",
    ("POST", "/admin/users/{user_id}/enable"): "lnnnann",
    ("POST", "/admin/users/{user_id}/reset-password"): "lnnnann",
    ("POST", "/admin/users/{user_id}/roles"): "lnnninn",
    ("POST", "/admin/users/{user_id}/totp/remove"): "lnnnann",
    ("POST", "/admin/users/{user_id}/tokens/{token_id}/revoke"): "lnnnann",
    # The face model: nothing to re-embed here (the gallery already uses the configured model): 409
    ("GET", "/admin/reindex"): "lnnnann",
    ("GET", "/admin/reindex/status"): "lnnnann",
    ("POST", "/admin/reindex"): "lnnninn",
    ("GET", "/api/users"): "lnnnann",
    ("POST", "/api/users"): "lnnninn",
    ("GET", "/api/users/{user_id}"): "lnnnann",
    ("PATCH", "/api/users/{user_id}"): "lnnninn",
    ("POST", "/api/users/{user_id}/reset-password"): "lnnnann",
    ("DELETE", "/api/users/{user_id}/totp"): "lnnnann",
    # Audit: managers only
    ("GET", "/audit"): "lnnannn",
    ("GET", "/audit/export.csv"): "lnnannn",
    ("GET", "/audit/verify"): "lnnannn",
    ("GET", "/api/audit"): "lnnannn",
    ("GET", "/api/audit/export.csv"): "lnnannn",
    ("GET", "/api/audit/verify"): "lnnannn",
    # Watchlist: managers only
    ("GET", "/watchlist"): "lnnannn",
    ("GET", "/watchlist/new"): "lnnannn",
    ("POST", "/watchlist/new"): "lnninnn",
    ("GET", "/watchlist/import"): "lnnannn",
    ("POST", "/watchlist/import"): "lnninnn",
    ("GET", "/watchlist/imports/{import_id}"): "lnnannn",
    ("GET", "/watchlist/imports/{import_id}/status"): "lnnannn",
    # The world's import is done: confirming or cancelling it is refused as its state (409).
    ("POST", "/watchlist/imports/{import_id}/confirm"): "lnninnn",
    ("POST", "/watchlist/imports/{import_id}/cancel"): "lnninnn",
    ("GET", "/watchlist/{subject_id}"): "lnnannn",
    ("GET", "/watchlist/{subject_id}/edit"): "lnnannn",
    ("POST", "/watchlist/{subject_id}/edit"): "lnninnn",
    ("GET", "/watchlist/{subject_id}/close"): "lnninnn",
    ("POST", "/watchlist/{subject_id}/close"): "lnninnn",
    ("POST", "/watchlist/{subject_id}/photos"): "lnninnn",
    ("GET", "/watchlist/photos/{photo_id}/{kind}"): "lnnannn",
    ("GET", "/api/subjects"): "lnnannn",
    ("POST", "/api/subjects"): "lnninnn",
    ("GET", "/api/subjects/{subject_id}"): "lnnannn",
    ("PATCH", "/api/subjects/{subject_id}"): "lnninnn",
    ("POST", "/api/subjects/{subject_id}/close"): "lnninnn",
    ("POST", "/api/subjects/{subject_id}/photos"): "lnninnn",
    ("GET", "/api/subjects/{subject_id}/photos/{photo_id}/{kind}"): "lnnannn",
    # Sightings: officers upload and see their own; managers see all
    ("GET", "/sightings"): "lananan",
    ("GET", "/sightings/new"): "lannnan",
    ("POST", "/sightings"): "linnnin",
    ("GET", "/sightings/{sighting_id}"): "lanannn",
    ("GET", "/sightings/{sighting_id}/status"): "lanannn",
    ("GET", "/sightings/{sighting_id}/photos/{position}"): "lanannn",
    ("GET", "/sightings/probes/{probe_id}/{kind}"): "lanannn",
    # Only a manager may retry a failed match; others are refused (403) and audited.
    ("POST", "/sightings/{sighting_id}/retry"): "lnnannn",
    ("POST", "/api/sightings"): "linnnin",
    ("GET", "/api/sightings"): "laaaaaa",
    ("GET", "/api/sightings/{sighting_id}"): "lanannn",
    ("GET", "/api/sightings/{sighting_id}/photos/{position}"): "lanannn",
    ("GET", "/api/sightings/probes/{probe_id}/{kind}"): "lanannn",
    ("POST", "/api/sightings/{sighting_id}/retry"): "lnnannn",
    # Review: a recognizer sees only the task they hold
    ("GET", "/review"): "lnannna",
    ("POST", "/review/next"): "lnannna",
    ("GET", "/review/slots/{slot_id}"): "lnannnn",
    ("GET", "/review/slots/{slot_id}/{kind}.png"): "lnannnn",
    ("POST", "/review/slots/{slot_id}/reveal"): "lnannnn",
    # Recognizer B holds the other slot of the same candidate (taken through /review/next above): a
    # verdict on A's slot is refused as not theirs, not counted, and audited.
    ("POST", "/review/slots/{slot_id}/verdict"): "lnannnn",
    # The one-key workbench: lease renewal, giving a task back and undoing a verdict are the holder's
    # alone; settling counts the caller's own verdicts whose undo window has passed.
    ("POST", "/review/slots/{slot_id}/heartbeat"): "lnannnn",
    # (Giving the task back runs after the verdict: the holder no longer holds it, so it is not found for
    # anyone; giving a held task back: tests/web/test_review_flow.py.)
    ("POST", "/review/slots/{slot_id}/release"): "lnnnnnn",
    ("POST", "/review/slots/{slot_id}/undo"): "lninnnn",
    ("POST", "/review/settle"): "lnannna",
    ("GET", "/api/review/next"): "lnannna",
    ("POST", "/api/review/next"): "lnannna",
    ("GET", "/api/review/slots/{slot_id}/images/{kind}"): "lnannnn",
    ("POST", "/api/review/slots/{slot_id}/reveal"): "lnannnn",
    ("POST", "/api/review/slots/{slot_id}/verdict"): "lnannnn",
    # Disputes and metrics: managers only (the candidate is not disputed, so escalating it is refused as input)
    ("GET", "/disputes"): "lnnannn",
    ("GET", "/disputes/{candidate_id}/escalate"): "lnninnn",
    ("POST", "/disputes/{candidate_id}/escalate"): "lnninnn",
    ("GET", "/api/review/disputes"): "lnnannn",
    ("POST", "/api/review/candidates/{candidate_id}/escalate"): "lnninnn",
    ("GET", "/recognizers"): "lnnannn",
    ("GET", "/api/review/recognizers"): "lnnannn",
    # The target account is an officer, not a recognizer: "no such recognizer" for the manager too (the
    # reinstatement itself: tests/api/test_qualification.py).
    ("POST", "/recognizers/{user_id}/reinstate"): "lnnnnnn",
    ("POST", "/api/review/recognizers/{user_id}/reinstate"): "lnnnnnn",
    ("GET", "/stats"): "lnnannn",
    ("GET", "/stats/export.csv"): "lnnannn",
    # Prometheus scrape: no token nor allow-list configured here, so it does not exist for anyone.
    ("GET", "/metrics"): "nnnnnnn",
    ("GET", "/api/metrics"): "lnnannn",
    ("GET", "/api/metrics/export.csv"): "lnnannn",
    # Flags: managers, and the officer whose sighting it is (others get an empty list).  The officer
    # reports what happened; only a manager acknowledges and closes (the officer is refused: 403, audited).
    ("GET", "/flags"): "laaaaaa",
    ("GET", "/flags/{flag_id}"): "lanannn",
    ("GET", "/flags/{flag_id}/images/{kind}"): "lanannn",
    ("POST", "/flags/{flag_id}/acknowledge"): "lnnannn",
    ("POST", "/flags/{flag_id}/close"): "lnnannn",
    ("POST", "/flags/{flag_id}/report"): "lannnnn",
    ("GET", "/api/flags"): "laaaaaa",
    ("GET", "/api/flags/{flag_id}"): "lanannn",
    ("POST", "/api/flags/{flag_id}/acknowledge"): "lnnannn",
    ("POST", "/api/flags/{flag_id}/close"): "lnnannn",
    ("POST", "/api/flags/{flag_id}/reports"): "lannnnn",
}

# Routes whose path parameters name a different record of the world than the default.
PARAM_OVERRIDES: dict[tuple[str, str], dict[str, str]] = {
    # The token of the account the admin routes act on.
    ("POST", "/admin/users/{user_id}/tokens/{token_id}/revoke"): {"token_id": "target_token_id"},
}

# A valid body for the routes whose per-record check must be reached past input validation.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/review/slots/{slot_id}/verdict"): {"data": {"verdict": "cannot_tell"}},
    ("POST", "/api/review/slots/{slot_id}/verdict"): {"json": {"verdict": "cannot_tell"}},
    ("POST", "/flags/{flag_id}/close"): {"data": {"reason": "not_located"}},
    ("POST", "/api/flags/{flag_id}/close"): {"json": {"reason": "not_located"}},
    ("POST", "/flags/{flag_id}/report"): {"data": {"outcome": "not_located"}},
    ("POST", "/api/flags/{flag_id}/reports"): {"json": {"outcome": "not_located"}},
}

# Giving the verdict ends the task (so it goes after every other look at it), then giving it back is tried;
# logging out ends the session.
RUN_LATE = {("POST", "/review/slots/{slot_id}/verdict"): 1, ("POST", "/api/review/slots/{slot_id}/verdict"): 1,
            ("POST", "/review/slots/{slot_id}/release"): 2, ("POST", "/logout"): 3}


def _fail_matching_job(engine: Engine, world: World) -> None:
    with Session(engine) as s:
        job = s.exec(select(Job).where(Job.kind == "match_sighting", Job.ref_id == world.params["sighting_id"])).one()
        job.status = "failed"
        s.add(job)
        s.commit()


def _flag_status(status: str) -> Callable[[Engine, World], None]:
    def prepare(engine: Engine, world: World) -> None:
        with Session(engine) as s:
            flag = s.get_one(Flag, world.params["flag_id"])
            flag.status = status
            s.add(flag)
            s.commit()
    return prepare


# Put a record back in the state a route needs before each principal's request.
PREPARE: dict[tuple[str, str], Callable[[Engine, World], None]] = {
    ("POST", "/sightings/{sighting_id}/retry"): _fail_matching_job,
    ("POST", "/api/sightings/{sighting_id}/retry"): _fail_matching_job,
    ("POST", "/flags/{flag_id}/acknowledge"): _flag_status("raised"),
    ("POST", "/api/flags/{flag_id}/acknowledge"): _flag_status("raised"),
    ("POST", "/flags/{flag_id}/close"): _flag_status("acknowledged"),
    ("POST", "/api/flags/{flag_id}/close"): _flag_status("acknowledged"),
}


@dataclass
class World:
    users: dict[str, User] = field(default_factory=dict)
    params: dict[str, object] = field(default_factory=dict)


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 24), colour).save(buf, format="PNG")
    return buf.getvalue()


def build_world(engine: Engine, app: Any) -> World:
    """The records the matrix aims at, built through the domain functions where they exist."""
    w = World()
    w.users = {
        "off": add_user(engine, "officer.a", Role.officer),
        "rec": add_user(engine, "recognizer.a", Role.recognizer),
        "mgr": add_user(engine, "manager", Role.manager),
        "adm": add_user(engine, "admin", Role.admin),
        "off2": add_user(engine, "officer.b", Role.officer),
        "rec2": add_user(engine, "recognizer.b", Role.recognizer),
    }
    # An account for the admin routes to act on (disable, reset…), so that no principal is touched.
    target = add_user(engine, "target.account", Role.officer)
    store = app.state.store
    with Session(engine, expire_on_commit=False) as s:
        officer = s.get_one(User, w.users["off"].id)
        subject = Subject(name="Wanted Person", case_ref="W-1")
        s.add(subject)
        s.flush()
        ref = ReferencePhoto(subject_id=subject.pk, image_sha256=store_image(s, store, _png((200, 0, 0)), "image/png"),
                             eye_crop_sha256=store_image(s, store, _png((0, 200, 0)), "image/png"),
                             face_chip_sha256=store_image(s, store, _png((0, 0, 200)), "image/png"))
        s.add(ref)
        s.flush()
        s.add(ReferenceEmbedding(reference_photo_id=ref.pk, model_id=active_model_id(s), dim=2,
                                 embedding=b"\0" * 8))
        sighting = Sighting(uploaded_by=officer.pk, observed_at=dt.datetime.now(dt.UTC), status="matched")
        s.add(sighting)
        s.flush()
        photo = SightingPhoto(sighting_id=sighting.pk, position=0,
                              image_sha256=store_image(s, store, _png((10, 10, 10)), "image/png"))
        s.add(photo)
        s.flush()
        probe = Probe(sighting_id=sighting.pk, sighting_photo_id=photo.pk, face_index=0, embedding=b"\0" * 8,
                      model_id=active_model_id(s),
                      eye_crop_sha256=store_image(s, store, _png((20, 20, 20)), "image/png"),
                      face_chip_sha256=store_image(s, store, _png((30, 30, 30)), "image/png"))
        s.add(probe)
        s.flush()
        # The matching job failed, so a manager may retry it.
        s.add(Job(kind="match_sighting", ref_id=sighting.pk, status="failed", attempts=3))
        candidate = Candidate(probe_id=probe.id, sighting_id=sighting.id, subject_id=subject.pk,
                              reference_photo_id=ref.pk, score=0.9, distance=0.2, rank=1)
        s.add(candidate)
        s.flush()
        for slot_no in (1, 2):
            s.add(ReviewSlot(candidate_id=candidate.pk, slot_no=slot_no))
        flagged = Candidate(probe_id=probe.id, sighting_id=sighting.id, subject_id=subject.pk,
                            reference_photo_id=ref.pk, score=0.8, distance=0.3, rank=2,
                            status=CandidateStatus.flagged.value)
        subject2 = Subject(name="Other Wanted", case_ref="W-2")
        s.add(subject2)
        s.flush()
        flagged.subject_id = subject2.pk
        s.add(flagged)
        s.flush()
        flag = Flag(candidate_id=flagged.pk, sighting_id=sighting.pk, subject_id=subject2.pk)
        s.add(flag)
        _, token = create_api_token(s, officer, "officer A's phone (a record)")
        _, target_token = create_api_token(s, s.get_one(User, target.id), "the target account's phone")
        note = notifications.notify(s, officer.pk, "flag", "A flag was raised on your sighting", flag_id=None)
        manager = s.get_one(User, w.users["mgr"].id)
        imp = WatchlistImport(created_by=manager.pk, filename="mugshots.zip", archive_sha256="0" * 64,
                              status="done", photos_total=3, photos_done=3)
        s.add(imp)
        s.commit()
        w.params = {
            "sighting_id": sighting.id, "position": 0, "probe_id": probe.id, "subject_id": subject.id,
            "photo_id": ref.id, "user_id": target.id, "token_id": token.id, "notification_id": note.id,
            "candidate_id": candidate.id, "flag_id": flag.id, "target_token_id": target_token.id,
            "import_id": imp.id,
        }
    _lease_slot(engine, app, w)
    return w


def _lease_slot(engine: Engine, app: Any, w: World) -> None:
    """Recognizer A takes the review task through the queue, as they would."""
    try:
        from triage import review
    except ImportError:  # pragma: no cover - the review queue not built yet
        return
    with Session(engine, expire_on_commit=False) as s:
        task = review.next_task(s, s.get_one(User, w.users["rec"].id), app.state.settings)
        assert task is not None and task.candidate.id == w.params["candidate_id"]
        w.params["slot_id"] = task.slot_id
        s.commit()


def iter_routes(app: Any) -> Iterator[tuple[str, str]]:
    """(METHOD, path) for every route, through included routers; HEAD rides along with GET."""
    def flat(routes: list[Any]) -> Iterator[Any]:
        for r in routes:
            if hasattr(r, "effective_route_contexts"):
                yield from r.effective_route_contexts()
            elif hasattr(r, "methods") and getattr(r, "methods", None):
                yield r
    for r in flat(app.routes):
        for method in sorted(set(r.methods) - {"HEAD"}):
            yield method, r.path


def _classify(method: str, path: str, status: int, location: str) -> str:
    if path.startswith("/api/") and status == 401:
        return "l"
    # The login redirect carries ?next=; logging out ends on the plain login page, a success.
    if status == 303 and location.startswith("/login?next="):
        return "l"
    if status == 401:
        return "l"
    if status in (403, 404):
        return "n"
    if status in (409, 422):
        return "i"
    if status < 400:
        return "a"
    return f"?{status}"


def _fill(path: str, params: dict[str, object]) -> str:
    def value(m: re.Match[str]) -> str:
        name = m.group(1)
        if name == "kind":
            # Review and flag pictures are named for their side; sighting and watchlist ones for their crop.
            return "probe-eyes" if path.startswith(("/review", "/api/review", "/flags", "/api/flags")) else "eyes"
        if name not in params:
            raise AssertionError(f"the matrix world has no record for path parameter {{{name}}} in {path}: "
                                 "add one to build_world")
        return str(params[name])
    return re.sub(r"\{(\w+)(?::\w+)?\}", value, path)


@pytest.fixture
def matrix_clients(make_client: Callable[..., TestClient],
                   engine: Engine) -> Iterator[tuple[TestClient, dict[str, Any], World]]:
    anon = make_client(known_answer_share=0.0)
    world = build_world(engine, anon.app)
    clients: dict[str, Any] = {"anon": (anon, None)}
    for role, user in world.users.items():
        web = TestClient(anon.app, base_url="http://testserver")
        web.__enter__()
        login(web, user.username, TEST_PASSWORD)
        r = anon.post("/api/tokens", json={"name": f"matrix {role}", "username": user.username,
                                           "password": TEST_PASSWORD})
        assert r.status_code == 201, r.text
        clients[role] = (web, r.json()["token"])
    yield anon, clients, world
    for role, (web, _) in clients.items():
        if role != "anon":
            web.__exit__(None, None, None)


def test_every_route_is_classified(make_client: Callable[..., TestClient]) -> None:
    app = make_client().app
    routes = set(iter_routes(app))
    missing = sorted(routes - set(MATRIX))
    assert not missing, ("routes missing from the authorisation matrix (classify each in tests/"
                         "test_authorization_matrix.py): " + ", ".join(f"{m} {p}" for m, p in missing))
    stale = sorted(set(MATRIX) - routes)
    assert not stale, "matrix rows for routes that no longer exist: " + ", ".join(f"{m} {p}" for m, p in stale)
    for key, row in MATRIX.items():
        assert len(row) == len(PRINCIPALS) and set(row) <= set("ailn-"), key


def test_route_role_matrix(matrix_clients: tuple[TestClient, dict[str, Any], World], engine: Engine) -> None:
    anon, clients, world = matrix_clients
    routes = [rt for rt in iter_routes(anon.app) if rt in MATRIX]
    routes.sort(key=lambda rt: RUN_LATE.get(rt, 0))
    failures: list[str] = []
    for method, path in routes:
        params = dict(world.params)
        for name, source in PARAM_OVERRIDES.get((method, path), {}).items():
            params[name] = world.params[source]
        url = _fill(path, params)
        for role, expected in zip(PRINCIPALS, MATRIX[(method, path)], strict=True):
            if expected == "-":
                continue
            web, token = clients[role]
            if (method, path) in PREPARE:
                PREPARE[(method, path)](engine, world)
            body = BODIES.get((method, path), {})
            if path.startswith("/api/"):
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                r = anon.request(method, url, headers=headers, follow_redirects=False, **body)
            else:
                r = web.request(method, url, follow_redirects=False, **body)
            got = _classify(method, path, r.status_code, r.headers.get("location", ""))
            if got != expected:
                failures.append(f"{method} {path} as {role}: expected {expected!r}, got {got!r} ({r.status_code})")
    assert not failures, "\n".join(failures)
    # Only recognizer A's verdict went on A's slot; recognizer B's slot is a different one.
    with Session(engine) as s:
        slot = s.get_one(ReviewSlot, world.params["slot_id"])
        assert slot.reviewer_id == world.users["rec"].id and slot.verdict == "cannot_tell"
        others = s.exec(select(ReviewSlot).where(ReviewSlot.candidate_id == world.params["candidate_id"],
                                                 ReviewSlot.id != slot.id)).all()
        assert all(o.verdict is None for o in others)


def test_refusals_are_audited(matrix_clients: tuple[TestClient, dict[str, Any], World], engine: Engine) -> None:
    from triage.models import AuditEntry

    anon, clients, world = matrix_clients
    web, _ = clients["off2"]
    assert web.get("/admin/users").status_code == 403
    assert web.get(f"/sightings/{world.params['sighting_id']}").status_code == 404
    with Session(engine) as s:
        denied = s.exec(select(AuditEntry).where(AuditEntry.outcome == "denied",
                                                 AuditEntry.actor == "officer.b")).all()
    assert any(e.detail.get("path") == "/admin/users" for e in denied)
