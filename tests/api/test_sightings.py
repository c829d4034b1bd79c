"""Sightings API: 202 at once, Idempotency-Key, clear refusals, per-record access."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from tests.conftest import add_user, login
from tests.triage.test_sightings import gif, jpeg, png_bomb
from triage.models import Job, Role, Sighting, SightingPhoto, StoredImage


def _officer(client: TestClient, engine, name: str = "officer1") -> None:
    add_user(engine, name, Role.officer)
    login(client, name)


def test_upload_is_answered_at_once_and_a_retry_makes_one_sighting(client: TestClient, engine) -> None:
    _officer(client, engine)
    files = [("photos", ("a.jpg", jpeg(), "image/jpeg")), ("photos", ("b.jpg", jpeg((80, 60)), "image/jpeg"))]
    form = {"location_text": "Umeda", "latitude": "34.7", "longitude": "135.49", "note": "blue cap"}
    r1 = client.post("/api/sightings", files=files, data=form, headers={"Idempotency-Key": "abc-123"})
    assert r1.status_code == 202, r1.text
    body = r1.json()
    assert body["url"] == f"/sightings/{body['id']}" and body["status"] == "queued" and not body["replayed"]
    r2 = client.post("/api/sightings", files=files, data=form, headers={"Idempotency-Key": "abc-123"})
    assert r2.status_code == 202 and r2.json()["id"] == body["id"] and r2.json()["replayed"]
    with Session(engine) as s:
        assert len(s.exec(select(Sighting)).all()) == 1
        assert len(s.exec(select(SightingPhoto)).all()) == 2
        assert len(s.exec(select(Job)).all()) == 1
    status = client.get(f"/api/sightings/{body['id']}").json()
    assert status["status"] == "queued" and status["done"] is False and status["photo_count"] == 2
    assert client.get(status["photo_urls"][0]).headers["content-type"] == "image/jpeg"
    assert client.get("/api/sightings").json()["count"] == 1


def test_a_key_reused_with_another_payload_is_refused(client: TestClient, engine) -> None:
    from triage.models import AuditEntry

    _officer(client, engine)
    first = client.post("/api/sightings", files=[("photos", ("a.jpg", jpeg(), "image/jpeg"))],
                        data={"note": "blue cap"}, headers={"Idempotency-Key": "key-1"})
    assert first.status_code == 202
    # Other photo, same key: refused with the reason, nothing stored, on record.
    other_photo = client.post("/api/sightings", files=[("photos", ("b.jpg", jpeg((80, 60)), "image/jpeg"))],
                              data={"note": "blue cap"}, headers={"Idempotency-Key": "key-1"})
    assert other_photo.status_code == 409, other_photo.text
    assert other_photo.json()["code"] == "idempotency_conflict"
    assert "already used for a different sighting" in other_photo.json()["detail"]
    # Same photo, another note: refused too.
    other_note = client.post("/api/sightings", files=[("photos", ("a.jpg", jpeg(), "image/jpeg"))],
                             data={"note": "red cap"}, headers={"Idempotency-Key": "key-1"})
    assert other_note.status_code == 409
    # The true retry still replays.
    again = client.post("/api/sightings", files=[("photos", ("a.jpg", jpeg(), "image/jpeg"))],
                        data={"note": "blue cap"}, headers={"Idempotency-Key": "key-1"})
    assert again.status_code == 202 and again.json()["replayed"] and again.json()["id"] == first.json()["id"]
    with Session(engine) as s:
        assert len(s.exec(select(Sighting)).all()) == 1
        assert len(s.exec(select(SightingPhoto)).all()) == 1
        refusals = s.exec(select(AuditEntry).where(AuditEntry.action == "sighting.create",
                                                   AuditEntry.outcome == "denied")).all()
        assert [r.detail["code"] for r in refusals] == ["idempotency_conflict", "idempotency_conflict"]


def test_refusals_are_clear_and_store_nothing(make_client, engine) -> None:
    client = make_client(max_upload_bytes=50_000, max_image_pixels=2_000_000)
    _officer(client, engine)
    cases = [
        ([("photos", ("x.jpg", b"not an image at all" * 5, "image/jpeg"))], {}, 422, "not_an_image"),
        ([("photos", ("x.gif", gif(), "image/gif"))], {}, 415, "unsupported_format"),
        ([("photos", ("x.png", png_bomb(), "image/png"))], {}, 413, "image_too_large"),
        ([("photos", ("x.jpg", b"\xff\xd8\xff" + b"0" * 60_000, "image/jpeg"))], {}, 413, "image_too_large"),
        ([], {"note": "no photo"}, 422, "missing_field"),
        ([("photos", ("x.jpg", jpeg(), "image/jpeg"))], {"latitude": "95", "longitude": "1"}, 422, "out_of_range"),
        ([("photos", ("x.jpg", jpeg(), "image/jpeg"))], {"latitude": "north", "longitude": "1"}, 422, "invalid"),
        ([("photos", ("x.jpg", jpeg(), "image/jpeg"))], {"observed_at": "yesterday"}, 422, "invalid"),
    ]
    for files, data, status, code in cases:
        r = client.post("/api/sightings", files=files or None, data=data)
        assert r.status_code == status, (code, r.text)
        assert r.json()["code"] == code and r.json()["detail"]
    with Session(engine) as s:
        for table in (Sighting, SightingPhoto, StoredImage, Job):
            assert s.exec(select(table)).all() == []


def test_others_cannot_see_a_sighting(make_client, engine) -> None:
    owner = make_client()
    _officer(owner, engine, "owner1")
    sid = owner.post("/api/sightings", files=[("photos", ("a.jpg", jpeg(), "image/jpeg"))]).json()["id"]
    stranger = make_client()
    _officer(stranger, engine, "stranger1")
    assert stranger.get(f"/api/sightings/{sid}").status_code == 404
    assert stranger.get(f"/api/sightings/{sid}/photos/0").status_code == 404
    looker = make_client()
    add_user(engine, "looker1", Role.recognizer)
    login(looker, "looker1")
    assert looker.get(f"/api/sightings/{sid}/photos/0").status_code == 404
    assert looker.post("/api/sightings", files=[("photos", ("a.jpg", jpeg(), "image/jpeg"))]).status_code == 403
    boss = make_client()
    add_user(engine, "boss1", Role.manager)
    login(boss, "boss1")
    assert boss.get(f"/api/sightings/{sid}/photos/0").status_code == 200
