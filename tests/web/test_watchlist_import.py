"""The web page's ZIP import: checked at once, previewed, confirmed, enrolled by a background job.

Every folder is a new subject of its import unless the manager names an existing subject for it:
a later import with a folder of the same name never adds photos to an earlier subject.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from sqlmodel import Session, col, select

from miatari.registry import worker_registry
from tests.conftest import add_user, login
from triage import events, jobs, notifications
from triage.clock import frozen
from triage.models import AuditEntry, Job, Notification, ReferencePhoto, Role, Subject, WatchlistImport, WebhookDelivery
from triage.watchlist import bulk_import
from triage.watchlist.bulk_import import IMPORT_JOB, archive_path
from triage.worker import Registry, run_claimed, run_one


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def _faces_zip() -> bytes:
    from matplotlib import cbook
    from skimage import data

    hopper = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).read_bytes()
    return _zip({
        "wanted/astronaut/front.png": _png(Image.fromarray(data.astronaut())),
        "wanted/hopper/front.jpg": hopper,
        "wanted/hopper/blank.png": _png(Image.new("RGB", (320, 240), (120, 130, 140))),
        "wanted/hopper/notes.txt": b"not a photo",
    })


def _manager(make_client, engine):
    client = make_client()
    add_user(engine, "boss", Role.manager)
    login(client, "boss")
    return client


def _send(client, data: bytes, targets: str = "", name: str = "mugshots.zip"):
    return client.post("/watchlist/import", files={"archive": (name, data, "application/zip")},
                       data={"include": "", "targets": targets}, follow_redirects=False)


def _run_job(client, engine, import_id: int, face_pipeline) -> None:
    with Session(engine) as s:
        job = s.exec(select(Job).where(Job.kind == IMPORT_JOB, Job.ref_id == import_id)).one()
    services = client.app.state.services
    services.pipeline = face_pipeline
    # This import's job, not an earlier import's webhook event queued meanwhile.
    settings = client.app.state.settings
    with Session(engine, expire_on_commit=False) as s:
        claimed = jobs.claim(s, "test-worker", settings.job_lease_seconds, job_id=job.id)
    assert claimed is not None and claimed.id == job.id
    run_claimed(services, "test-worker", claimed, worker_registry())


@pytest.mark.model
def test_a_zip_is_previewed_then_enrolled_by_the_job_once_confirmed(make_client, engine, face_pipeline) -> None:
    client = _manager(make_client, engine)
    r = _send(client, _faces_zip())
    assert r.status_code == 303, r.text
    url = r.headers["location"]
    import_id = int(url.rsplit("/", 1)[1])
    with Session(engine) as s:
        row = s.get(WatchlistImport, import_id)
        assert row is not None and row.status == "pending" and row.photos_total == 3 and row.subjects_total == 2
        assert s.exec(select(Subject)).all() == []  # nothing enrolled in the request
        assert s.exec(select(Job)).all() == []  # nor queued before the preview is confirmed
    settings = client.app.state.settings
    assert archive_path(settings, row.archive_sha256).is_file()
    preview = client.get(url)
    assert preview.template.name == "watchlist_import_status.html"
    assert [(p.label, p.photos, p.action) for p in preview.context["preview"]] == [("astronaut", 1, "new"),
                                                                                 ("hopper", 2, "new")]
    assert 'id="confirm-import"' in preview.text
    r = client.post(url + "/confirm", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == url
    assert client.post(url + "/confirm").status_code == 409  # once only
    with Session(engine) as s:
        assert s.get_one(WatchlistImport, import_id).status == "queued"
        job = s.exec(select(Job).where(Job.kind == IMPORT_JOB, Job.ref_id == import_id)).one()
    page = client.get(url)
    assert page.status_code == 200 and "Waiting for a worker" in page.text
    assert client.get(url + "/status").status_code == 200  # still polling

    services = client.app.state.services
    services.pipeline = face_pipeline
    ran = run_one(services, "test-worker", worker_registry())
    assert ran is not None and ran.id == job.id

    status = client.get(url + "/status")
    assert status.status_code == 286  # htmx stops polling
    assert "2 subjects (2 new)" in status.text and "2 photos enrolled" in status.text
    assert "blank.png" in status.text and "no face found" in status.text
    with Session(engine) as s:
        row = s.get(WatchlistImport, import_id)
        assert row is not None and row.status == "done" and row.photos_done == 3
        assert row.summary["photos_enrolled"] == 2 and row.failures == [
            {"photo": "wanted/hopper/blank.png", "reason": "no face found"}]
        assert sorted(x.name for x in s.exec(select(Subject)).all()) == ["astronaut", "hopper"]
        assert len(s.exec(select(ReferencePhoto)).all()) == 2
        assert s.get_one(Job, job.id).status == "done"
        actions = [e.action for e in s.exec(select(AuditEntry)).all()]
        assert {"watchlist.import_staged", "watchlist.import_queued", "watchlist.import"} <= set(actions)
        # The manager who started it is told, in-app and on the webhook (no names there).
        told = s.exec(select(Notification).where(Notification.kind == "import.finished")).all()
        assert [(n.user_id, n.object_type, n.object_id) for n in told] == [(row.created_by, "watchlist_import",
                                                                            import_id)]
        # ... and, having watched it end on the import's page, that notification is handled.
        assert "2 photo(s) enrolled, 1 refused" in told[0].message and told[0].read_at is not None
        hook = s.exec(select(WebhookDelivery).where(WebhookDelivery.event == "import.finished")).one()
        assert hook.payload["path"] == f"/watchlist/imports/{import_id}" and "hopper" not in str(hook.payload)
    assert not archive_path(settings, row.archive_sha256).exists()  # the archive goes once imported
    listing = client.get("/watchlist/import")
    assert f'href="/watchlist/imports/{import_id}"' in listing.text and "mugshots.zip" in listing.text


def test_bad_zips_are_refused_at_once_and_nothing_is_kept(make_client, engine, settings) -> None:
    client = _manager(make_client, engine)
    cases = [
        (b"PK but not really a zip", "", "not a ZIP"),
        (_zip({"notes/readme.txt": b"hello"}), "", "no photos"),
        (_zip({"a/front.png": _png(Image.new("RGB", (64, 64)))}), "mugshot_*", "matching those patterns"),
    ]
    for data, include, message in cases:
        r = client.post("/watchlist/import", files={"archive": ("x.zip", data, "application/zip")},
                        data={"include": include}, follow_redirects=False)
        assert r.status_code == 422 and message in r.text, (message, r.text[:300])
    r = client.post("/watchlist/import", data={"include": ""}, follow_redirects=False)
    assert r.status_code == 422 and "Choose a ZIP file" in r.text
    with Session(engine) as s:
        assert s.exec(select(WatchlistImport)).all() == [] and s.exec(select(Job)).all() == []
    imports = Path(client.app.state.settings.data_dir) / "imports"
    assert not imports.exists() or not any(imports.iterdir())


def test_named_subjects_must_exist_and_be_open_and_folders_must_be_in_the_zip(make_client, engine,
                                                                              settings) -> None:
    from tests.factories import image_store, make_subject

    client = _manager(make_client, engine)
    with Session(engine, expire_on_commit=False) as s:
        closed = make_subject(s, image_store(settings), status="withdrawn")
        s.commit()
    data = _zip({"a/front.png": _png(Image.new("RGB", (64, 64)))})
    for targets, message in (("a = 999", "No subject #999"), (f"a = {closed.id}", "is closed"),
                             ("b = 1", "no folder named"), ("a : 1", "FOLDER = SUBJECT_NUMBER"),
                             ("a = 1\na = 2", "named twice")):
        r = _send(client, data, targets)
        assert r.status_code == 422 and message in r.text, (targets, r.text[:300])
    with Session(engine) as s:
        assert s.exec(select(WatchlistImport)).all() == []
    imports = Path(client.app.state.settings.data_dir) / "imports"
    assert not imports.exists() or not any(imports.iterdir())


def test_a_previewed_import_can_be_cancelled_and_nothing_is_left(make_client, engine) -> None:
    client = _manager(make_client, engine)
    url = _send(client, _zip({"a/front.png": _png(Image.new("RGB", (64, 64)))})).headers["location"]
    with Session(engine) as s:
        row = s.exec(select(WatchlistImport)).one()
    assert archive_path(client.app.state.settings, row.archive_sha256).is_file()
    r = client.post(url + "/cancel", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/watchlist/import"
    with Session(engine) as s:
        assert s.exec(select(WatchlistImport)).all() == [] and s.exec(select(Job)).all() == []
        assert s.exec(select(AuditEntry).where(AuditEntry.action == "watchlist.import_cancel")).one().actor == "boss"
    assert not archive_path(client.app.state.settings, row.archive_sha256).exists()
    assert client.post(url + "/cancel").status_code == 404


@pytest.mark.model
def test_a_later_import_never_adds_photos_to_an_earlier_subject_of_the_same_folder_name(
        make_client, engine, face_pipeline) -> None:
    from matplotlib import cbook

    client = _manager(make_client, engine)
    from skimage import data

    first = _send(client, _zip({"001/front.png": _png(Image.fromarray(data.astronaut()))}))
    url = first.headers["location"]
    client.post(url + "/confirm")
    _run_job(client, engine, int(url.rsplit("/", 1)[1]), face_pipeline)
    with Session(engine) as s:
        (wanted,) = s.exec(select(Subject)).all()
    # Another unit's ZIP: its folder "001" is another person.
    hopper = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).read_bytes()
    second = _send(client, _zip({"001/front.jpg": hopper}), name="other-unit.zip")
    url2 = second.headers["location"]
    (planned,) = client.get(url2).context["preview"]
    assert planned.action == "new" and planned.lookalikes == [wanted.id]
    assert f"#{wanted.id}" in planned.describe() and "not added to" in planned.describe()
    client.post(url2 + "/confirm")
    _run_job(client, engine, int(url2.rsplit("/", 1)[1]), face_pipeline)
    with Session(engine) as s:
        subjects = s.exec(select(Subject).order_by(col(Subject.id))).all()
        assert [x.name for x in subjects] == ["001", "001"] and subjects[0].id == wanted.id
        counts = [len(s.exec(select(ReferencePhoto).where(ReferencePhoto.subject_id == x.id)).all()) for x in subjects]
        assert counts == [1, 1]  # the earlier subject keeps only its own photo

    # Named explicitly, a folder adds to an existing subject, as the preview says.
    third = _send(client, _zip({"more/side.jpg": hopper}), targets=f"more = {subjects[1].id}")
    url3 = third.headers["location"]
    page = client.get(url3)
    (planned,) = page.context["preview"]
    assert (planned.action, planned.subject_id) == ("existing", subjects[1].id)
    assert "adds to existing subject" in page.text and "(named explicitly)" in page.text
    client.post(url3 + "/confirm")
    _run_job(client, engine, int(url3.rsplit("/", 1)[1]), face_pipeline)
    with Session(engine) as s:
        assert len(s.exec(select(Subject)).all()) == 2
        row = s.get_one(WatchlistImport, int(url3.rsplit("/", 1)[1]))
        assert row.summary["subjects_created"] == 0 and row.summary["photos_already_enrolled"] == 1


@pytest.mark.model
def test_resuming_the_same_import_adds_nothing_twice(make_client, engine, face_pipeline) -> None:
    from triage import watchlist
    from triage.watchlist import bulk_import

    client = _manager(make_client, engine)
    url = _send(client, _faces_zip()).headers["location"]
    import_id = int(url.rsplit("/", 1)[1])
    settings = client.app.state.settings
    with Session(engine) as s:
        row = s.get_one(WatchlistImport, import_id)
    # An earlier, interrupted run of this same import enrolled its first subject.
    plan = bulk_import.plan_of(settings, row)
    watchlist.run_import(engine, client.app.state.store, settings, plan[:1],
                         watchlist.analyze_serially(settings, face_pipeline),
                         import_ref=bulk_import.import_ref(row))
    assert [p.action for p in client.get(url).context["preview"]] == ["resumed", "new"]
    client.post(url + "/confirm")
    _run_job(client, engine, import_id, face_pipeline)
    with Session(engine) as s:
        row = s.get_one(WatchlistImport, import_id)
        assert row.summary["subjects_created"] == 1 and row.summary["photos_already_enrolled"] == 1
        assert sorted(x.name for x in s.exec(select(Subject)).all()) == ["astronaut", "hopper"]
        assert len(s.exec(select(ReferencePhoto)).all()) == 2


def test_a_long_job_renews_its_lease_and_a_taken_over_one_cannot(engine) -> None:
    from triage.clock import frozen

    with Session(engine) as s:
        job = jobs.enqueue(s, "long", 1)
        s.commit()
        job_id = job.id
        assert job_id is not None
    with frozen() as clock:
        with Session(engine) as s:
            assert jobs.claim(s, "w1", lease_seconds=60) is not None
        clock.advance(seconds=50)
        with Session(engine) as s:
            assert jobs.renew(s, job_id, "w1", 60) is True
            s.commit()
        clock.advance(seconds=50)  # 100 s after the claim, 50 s after the renewal: still held
        with Session(engine) as s:
            assert jobs.claim(s, "w2", lease_seconds=60) is None
        clock.advance(seconds=11)
        with Session(engine) as s:
            assert jobs.claim(s, "w2", lease_seconds=60) is not None
        with Session(engine) as s:
            assert jobs.renew(s, job_id, "w1", 60) is False


def _confirmed_import(client, engine) -> WatchlistImport:
    url = _send(client, _zip({"a/front.png": _png(Image.new("RGB", (64, 64)))})).headers["location"]
    assert client.post(url + "/confirm", follow_redirects=False).status_code == 303
    with Session(engine) as s:
        return s.exec(select(WatchlistImport)).one()


def _import_job(engine, row: WatchlistImport) -> Job:
    with Session(engine) as s:
        return s.exec(select(Job).where(Job.kind == IMPORT_JOB, Job.ref_id == row.id)).one()


def _imports_only() -> Registry:
    """The worker's list, running import jobs only (the webhook events they queue are another test's)."""
    registry = worker_registry()
    registry.jobs = {IMPORT_JOB: registry.jobs[IMPORT_JOB]}
    return registry


def test_an_import_job_that_keeps_failing_ends_failed_after_its_attempts_and_the_import_with_it(
        make_client, engine) -> None:
    client = _manager(make_client, engine)
    settings = client.app.state.settings
    settings.job_max_attempts = 2  # the job is queued with the configured number of attempts
    row = _confirmed_import(client, engine)
    assert _import_job(engine, row).max_attempts == 2

    def failing(ctx) -> None:
        raise OSError("the image store is full")

    registry = _imports_only()
    registry.jobs[IMPORT_JOB] = failing  # the import's own failure handling stays
    services = client.app.state.services
    with frozen() as clock:
        assert run_one(services, "w", registry) is not None
        job = _import_job(engine, row)
        assert job.status == "queued" and job.attempts == 1  # a transient failure: tried again later
        assert run_one(services, "w", registry) is None  # not before its back-off
        with Session(engine) as s:
            assert s.get_one(WatchlistImport, row.id).status == "queued"
        assert archive_path(settings, row.archive_sha256).is_file()
        clock.advance(minutes=5)
        assert run_one(services, "w", registry) is not None
        clock.advance(minutes=5)
        assert run_one(services, "w", registry) is None  # given up: nothing runs a third time
    job = _import_job(engine, row)
    assert job.status == "failed" and job.attempts == 2 and "the image store is full" in job.last_error
    with Session(engine) as s:
        told = s.exec(select(Notification).where(Notification.object_type == "watchlist_import")).all()
        assert [(n.kind, n.object_id) for n in told] == [("import.failed", row.id)]
        final = s.get(WatchlistImport, row.id)
        assert final is not None and final.status == "failed" and final.finished_at is not None
        progress = bulk_import.progress_of(s, final)
    assert progress.done and progress.status == "failed" and "the image store is full" in progress.error
    assert not archive_path(settings, row.archive_sha256).exists()  # of no more use
    status = client.get(f"/watchlist/imports/{row.id}/status")
    assert status.status_code == 286 and "the image store is full" in status.text


def test_a_permanent_error_ends_an_import_job_at_once(make_client, engine) -> None:
    client = _manager(make_client, engine)
    row = _confirmed_import(client, engine)
    assert _import_job(engine, row).max_attempts == 3
    archive_path(client.app.state.settings, row.archive_sha256).unlink()  # lost: no retry can help
    assert run_one(client.app.state.services, "w", _imports_only()) is not None
    job = _import_job(engine, row)
    assert job.status == "failed" and job.attempts == 1 and "is gone" in job.last_error
    with Session(engine) as s:
        final = s.get(WatchlistImport, row.id)
        assert final is not None and final.status == "failed"
        assert bulk_import.progress_of(s, final).status == "failed"
    assert run_one(client.app.state.services, "w", _imports_only()) is None


def _told(engine, import_id: int) -> list[tuple[str, int, bool]]:
    with Session(engine) as s:
        rows = s.exec(select(Notification).where(Notification.object_type == "watchlist_import",
                                                 Notification.object_id == import_id)).all()
        return sorted((n.kind, n.user_id, n.read_at is not None) for n in rows)


def test_the_end_of_an_import_is_handled_once_its_manager_opens_its_page(make_client, engine) -> None:
    client = _manager(make_client, engine)
    row = _confirmed_import(client, engine)
    boss = row.created_by
    assert _told(engine, row.id) == []  # type: ignore[arg-type]
    # Still running: opening the page handles nothing (there is nothing to handle yet).
    assert client.get(f"/watchlist/imports/{row.id}").status_code == 200
    archive_path(client.app.state.settings, row.archive_sha256).unlink()  # lost: the job fails for good
    assert run_one(client.app.state.services, "w", _imports_only()) is not None
    assert _told(engine, row.id) == [("import.failed", boss, False)]  # type: ignore[arg-type]
    # Another manager looking at it does not tell the one who started it.
    deputy = make_client()
    add_user(engine, "deputy", Role.manager)
    login(deputy, "deputy")
    assert deputy.get(f"/watchlist/imports/{row.id}").status_code == 200
    assert _told(engine, row.id) == [("import.failed", boss, False)]  # type: ignore[arg-type]
    # A missing import is refused and handles nothing.
    assert client.get("/watchlist/imports/999999").status_code == 404
    assert _told(engine, row.id) == [("import.failed", boss, False)]  # type: ignore[arg-type]
    page = client.get(f"/watchlist/imports/{row.id}")
    assert page.status_code == 200 and page.template.name == "watchlist_import_status.html"
    assert _told(engine, row.id) == [("import.failed", boss, True)]  # type: ignore[arg-type]
    with Session(engine) as s:
        assert notifications.unread_count(s, boss) == 0
        # A finished import's notification, seen on the live fragment once it is over, is handled the same way.
        final = s.get(WatchlistImport, row.id)
        events.import_finished(s, final, 0, 1)  # type: ignore[arg-type]
        s.commit()
    assert ("import.finished", boss, False) in _told(engine, row.id)  # type: ignore[arg-type]
    assert client.get(f"/watchlist/imports/{row.id}/status").status_code == 286
    assert _told(engine, row.id) == [("import.failed", boss, True), ("import.finished", boss, True)]  # type: ignore[arg-type]
