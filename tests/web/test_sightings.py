"""Sighting pages: the upload form, the officer's list, live status that stops polling when done."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from tests.conftest import add_user, login
from tests.triage.test_sightings import jpeg
from triage.models import Role, Sighting


def test_upload_form_then_status_page(client: TestClient, engine) -> None:
    add_user(engine, "walker", Role.officer)
    login(client, "walker")
    form = client.get("/sightings/new")
    assert form.template.name == "sighting_new.html" and form.context["idempotency_key"]
    assert 'capture="environment"' in form.text and "upload.js" in form.text
    r = client.post("/sightings", files=[("photos", ("a.jpg", jpeg(), "image/jpeg"))],
                    data={"idempotency_key": form.context["idempotency_key"], "tz_offset": "-540",
                          "location_text": "Shinsaibashi"}, follow_redirects=False)
    assert r.status_code == 303
    sid = int(r.headers["location"].split("?")[0].rsplit("/", 1)[1])
    page = client.get(f"/sightings/{sid}")
    assert page.template.name == "sighting.html" and page.context["progress"].status == "queued"
    assert 'hx-trigger="every 2s"' in page.text
    frag = client.get(f"/sightings/{sid}/status", headers={"HX-Request": "true"})
    assert frag.status_code == 200 and frag.template.name == "_sighting_status.html"
    with Session(engine) as s:
        sighting = s.get(Sighting, sid)
        assert sighting is not None
        sighting.status = "no_face"  # as the matching job leaves it for a photo with no face
        s.add(sighting)
        s.commit()
    frag = client.get(f"/sightings/{sid}/status", headers={"HX-Request": "true"})
    assert frag.status_code == 286 and "No face was found" in frag.text and "hx-trigger" not in frag.text
    mine = client.get("/sightings")
    assert mine.template.name == "sightings.html" and [s.id for s, _ in mine.context["items"]] == [sid]


def test_xhr_upload_gets_json_and_errors_are_shown(client: TestClient, engine) -> None:
    add_user(engine, "walker", Role.officer)
    login(client, "walker")
    headers = {"Accept": "application/json", "Idempotency-Key": "xhr-1"}
    r = client.post("/sightings", files=[("photos", ("a.jpg", jpeg(), "image/jpeg"))], headers=headers)
    assert r.status_code == 202 and r.json()["url"].startswith("/sightings/")
    again = client.post("/sightings", files=[("photos", ("a.jpg", jpeg(), "image/jpeg"))], headers=headers)
    assert again.json()["id"] == r.json()["id"] and again.json()["replayed"]
    bad = client.post("/sightings", files=[("photos", ("a.txt", b"hello" * 30, "text/plain"))],
                      data={"note": "keep me"})
    assert bad.status_code == 422 and bad.template.name == "sighting_new.html"
    assert "not an image" in bad.context["error"] and bad.context["values"]["note"] == "keep me"
    with Session(engine) as s:
        assert len(s.exec(select(Sighting)).all()) == 1


def test_another_officers_sighting_is_not_found(make_client, engine) -> None:
    a = make_client()
    add_user(engine, "walker", Role.officer)
    login(a, "walker")
    r = a.post("/sightings", files=[("photos", ("a.jpg", jpeg(), "image/jpeg"))], follow_redirects=False)
    sid = int(r.headers["location"].split("?")[0].rsplit("/", 1)[1])
    b = make_client()
    add_user(engine, "runner", Role.officer)
    login(b, "runner")
    assert b.get(f"/sightings/{sid}").status_code == 404
    assert b.get(f"/sightings/{sid}/photos/0").status_code == 404
