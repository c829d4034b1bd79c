"""The web page's ZIP import: checked at once, enrolled by a background job, followed on its own page."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from sqlmodel import Session, select

from tests.conftest import add_user, login
from triage import jobs
from triage.models import AuditEntry, Job, ReferencePhoto, Role, Subject, WatchlistImport
from triage.watchlist_import import IMPORT_JOB, archive_path
from triage.worker import run_one


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

    with cbook.get_sample_data("grace_hopper.jpg") as fh:
        hopper = fh.read()
    return _zip({
        "wanted/astronaut/front.png": _png(Image.fromarray(data.astronaut())),
        "wanted/hopper/front.jpg": hopper,
        "wanted/hopper/blank.png": _png(Image.new("RGB", (320, 240), (120, 130, 140))),
        "wanted/hopper/notes.txt": b"not a photo",
    })


def _manager(make_client, engine):  # type: ignore[no-untyped-def]
    client = make_client()
    add_user(engine, "boss", Role.manager)
    login(client, "boss")
    return client


@pytest.mark.model
def test_a_zip_is_queued_at_once_then_enrolled_by_the_job(make_client, engine, face_pipeline) -> None:  # type: ignore[no-untyped-def]
    client = _manager(make_client, engine)
    r = client.post("/watchlist/import", files={"archive": ("mugshots.zip", _faces_zip(), "application/zip")},
                    data={"include": ""}, follow_redirects=False)
    assert r.status_code == 303, r.text
    url = r.headers["location"]
    import_id = int(url.rsplit("/", 1)[1])
    with Session(engine) as s:
        row = s.get(WatchlistImport, import_id)
        assert row is not None and row.status == "queued" and row.photos_total == 3 and row.subjects_total == 2
        assert s.exec(select(Subject)).all() == []  # nothing enrolled in the request
        job = s.exec(select(Job).where(Job.kind == IMPORT_JOB, Job.ref_id == import_id)).one()
    settings = client.app.state.settings
    assert archive_path(settings, row.archive_sha256).is_file()
    page = client.get(url)
    assert page.status_code == 200 and "Waiting for a worker" in page.text
    assert client.get(url + "/status").status_code == 200  # still polling

    services = client.app.state.services
    services["pipeline"] = face_pipeline
    assert run_one(engine, settings, client.app.state.store, "test-worker", services).id == job.id  # type: ignore[union-attr]

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
        assert s.get(Job, job.id).status == "done"  # type: ignore[union-attr]
        actions = [e.action for e in s.exec(select(AuditEntry)).all()]
        assert "watchlist.import_queued" in actions and "watchlist.import" in actions
    assert not archive_path(settings, row.archive_sha256).exists()  # the archive goes once imported
    listing = client.get("/watchlist/import")
    assert f'href="/watchlist/imports/{import_id}"' in listing.text and "mugshots.zip" in listing.text


def test_bad_zips_are_refused_at_once_and_nothing_is_kept(make_client, engine, settings) -> None:  # type: ignore[no-untyped-def]
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


def test_a_long_job_renews_its_lease_and_a_taken_over_one_cannot(engine) -> None:  # type: ignore[no-untyped-def]
    from triage.clock import frozen

    with Session(engine) as s:
        job = jobs.enqueue(s, "long", 1)
        s.commit()
        job_id = job.id
    with frozen() as clock:
        with Session(engine) as s:
            assert jobs.claim(s, "w1", lease_seconds=60) is not None
        clock.advance(seconds=50)
        with Session(engine) as s:
            assert jobs.renew(s, job_id, "w1", 60) is True  # type: ignore[arg-type]
            s.commit()
        clock.advance(seconds=50)  # 100 s after the claim, 50 s after the renewal: still held
        with Session(engine) as s:
            assert jobs.claim(s, "w2", lease_seconds=60) is None
        clock.advance(seconds=11)
        with Session(engine) as s:
            assert jobs.claim(s, "w2", lease_seconds=60) is not None
        with Session(engine) as s:
            assert jobs.renew(s, job_id, "w1", 60) is False  # type: ignore[arg-type]
