"""The admin's Face model page: who may see it, starting a re-embedding (CSRF, audit), the polled progress."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from miatari.registry import worker_registry
from tests import factories
from tests.conftest import add_user, app_of, login
from triage import services
from triage.gallery import active_model_id
from triage.models import AuditEntry, Job, ReindexRun, Role
from triage.worker import run_one

NEW_MODEL = "faceres"


def _runs(engine: Engine) -> list[ReindexRun]:
    with Session(engine) as s:
        return list(s.exec(select(ReindexRun)).all())


def _audit(engine: Engine, action: str) -> list[AuditEntry]:
    with Session(engine) as s:
        return list(s.exec(select(AuditEntry).where(AuditEntry.action == action)).all())


def test_only_admins_see_the_page(client: TestClient, engine: Engine,
                                  make_client: Callable[..., TestClient]) -> None:
    assert client.get("/admin/reindex", follow_redirects=False).headers["location"].startswith("/login")
    for username, role in (("manager1", Role.manager), ("recognizer1", Role.recognizer), ("officer1", Role.officer)):
        add_user(engine, username, role)
        other = make_client()
        login(other, username)
        for method, path in (("GET", "/admin/reindex"), ("GET", "/admin/reindex/status"),
                             ("POST", "/admin/reindex")):
            assert other.request(method, path).status_code == 403, (username, method, path)
    assert _runs(engine) == []
    refusals = [e for e in _audit(engine, "access") if e.detail.get("path", "").startswith("/admin/reindex")]
    assert len(refusals) == 9 and {e.outcome for e in refusals} == {"denied"}


def test_admin_starts_a_re_embedding_with_csrf_and_follows_it(make_client: Callable[..., TestClient],
                                                              engine: Engine) -> None:
    client = make_client(face_model="dlib")  # the gallery's model (the database starts on dlib)
    add_user(engine, "root", Role.admin)
    token = login(client, "root")
    page = client.get("/admin/reindex")
    st = page.context["st"]
    assert page.template.name == "admin_reindex.html" and st.active_model_id.startswith("dlib@")
    assert st.configured_model_id == st.active_model_id and not st.needs_reindex and not st.in_progress
    # Nothing to do while the configured model is the gallery's: refused, on record.
    r = client.post("/admin/reindex")
    assert r.status_code == 409 and "Nothing to re-embed" in r.context["error"] and _runs(engine) == []
    assert [e.outcome for e in _audit(engine, "gallery.reindex_start")] == ["denied"]

    app_of(client).state.settings.face_model = NEW_MODEL  # the configuration changed
    page = client.get("/admin/reindex")
    assert page.context["st"].needs_reindex and 'action="/admin/reindex"' in page.text
    # Without the session's CSRF token: refused, nothing started.
    del client.headers["X-CSRF-Token"]
    r = client.post("/admin/reindex", data={})
    assert r.status_code == 403 and _runs(engine) == []
    assert _audit(engine, "csrf")[-1].outcome == "denied"
    r = client.post("/admin/reindex", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/admin/reindex?started=1"
    (run,) = _runs(engine)
    assert run.target_model_id.startswith(NEW_MODEL + "@") and run.status == "queued"
    started = [e for e in _audit(engine, "gallery.reindex_start") if e.outcome == "ok"]
    assert len(started) == 1 and started[0].actor == "root" and started[0].detail["to"] == run.target_model_id
    # Asking again while it runs starts nothing new.
    client.headers["X-CSRF-Token"] = token
    assert client.post("/admin/reindex", headers={"HX-Request": "true"}).headers["HX-Redirect"] == \
        "/admin/reindex?started=1"
    assert len(_runs(engine)) == 1

    # While the run is under way the fragment keeps polling; it shows the progress bar.
    live = client.get("/admin/reindex/status", headers={"HX-Request": "true"})
    assert live.status_code == 200 and live.template.name == "_reindex_status.html"
    assert 'hx-get="/admin/reindex/status"' in live.text and 'id="reindex-progress"' in live.text
    # A worker runs it: no reference photo yet, so the gallery switches at once.
    svc = services.build(engine, app_of(client).state.settings, app_of(client).state.store)
    try:
        job = run_one(svc, "w", worker_registry())
    finally:
        services.stop(svc)
    assert job is not None
    with Session(engine) as s:
        assert s.get_one(Job, job.id).status == "done"
        assert active_model_id(s) == run.target_model_id
    over = client.get("/admin/reindex/status", headers={"HX-Request": "true"})
    assert over.status_code == 286 and 'hx-get="/admin/reindex/status"' not in over.text
    assert over.context["st"].active_model_id == run.target_model_id and not over.context["st"].needs_reindex


def test_a_configured_model_that_is_not_the_galleries_is_queued_at_start_up(
        make_client: Callable[..., TestClient], engine: Engine, settings) -> None:
    with Session(engine) as s:
        factories.make_subject(s, factories.image_store(settings))  # one reference photo, embedded by dlib
        s.commit()
    make_client(face_model=NEW_MODEL)
    (run,) = _runs(engine)
    assert run.from_model_id.startswith("dlib@") and run.target_model_id.startswith(NEW_MODEL + "@")
    assert run.created_by is None and run.status == "queued"
    make_client(face_model=NEW_MODEL)  # another process starting: the same run
    assert len(_runs(engine)) == 1
    with Session(engine) as s:
        assert active_model_id(s).startswith("dlib@")  # searched until the run is done


def test_an_empty_gallery_takes_the_configured_model_at_start_up(make_client: Callable[..., TestClient],
                                                                 engine: Engine) -> None:
    make_client(face_model=NEW_MODEL)
    assert _runs(engine) == []  # nothing to re-embed
    with Session(engine) as s:
        assert active_model_id(s).startswith(NEW_MODEL + "@")
    (switch,) = _audit(engine, "gallery.switch_model")
    assert switch.detail["from"].startswith("dlib@") and switch.detail["reason"] == "no reference photo to re-embed"


def test_readyz_says_when_this_build_cannot_embed_with_the_galleries_model(
        make_client: Callable[..., TestClient], engine: Engine, settings) -> None:
    with Session(engine) as s:
        from triage.gallery import gallery_model

        factories.make_subject(s, factories.image_store(settings))  # a gallery to re-embed: no instant switch
        row = gallery_model(s)
        row.model_id = "dlib@0000000000000000"  # weights this build does not have
        s.add(row)
        s.commit()
    r = make_client().get("/readyz")
    assert r.status_code == 503
    check = r.json()["checks"]["face_model"]
    assert "dlib@0000000000000000" in check and "cannot embed" in check and "miatari reindex" in check
