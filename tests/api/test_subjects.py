"""Subjects API: CRUD, close, per-role access (no face model needed)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from tests.conftest import add_user, login
from triage.models import AuditEntry, GalleryChange, Role, Subject


def _manager(client: TestClient, engine) -> None:
    add_user(engine, "boss", Role.manager)
    login(client, "boss")


def test_create_read_update_close(client: TestClient, engine) -> None:
    _manager(client, engine)
    r = client.post("/api/subjects", json={"name": "Hana Sato", "case_ref": "W-77", "priority": 2,
                                           "aliases": "Hana-chan"})
    assert r.status_code == 201, r.text
    body = r.json()
    sid = body["id"]
    assert body["status"] == "active" and body["photos"] == [] and body["searchable"] is True
    r = client.patch(f"/api/subjects/{sid}", json={"notes": "drives a red van"})
    assert r.status_code == 200 and r.json()["notes"] == "drives a red van" and r.json()["priority"] == 2
    r = client.get("/api/subjects", params={"q": "hana-chan"})
    assert r.json()["count"] == 1 and r.json()["data"][0]["id"] == sid
    r = client.post(f"/api/subjects/{sid}/close", json={"status": "arrested", "reason": "caught"})
    assert r.status_code == 200 and r.json()["status"] == "arrested" and r.json()["searchable"] is False
    r = client.post(f"/api/subjects/{sid}/close", json={"status": "withdrawn"})
    assert r.status_code == 409
    r = client.patch(f"/api/subjects/{sid}", json={"priority": 1})
    assert r.status_code == 409
    with Session(engine) as s:
        assert s.exec(select(GalleryChange.action).where(GalleryChange.subject_id == sid)).all() == ["remove_subject"]
        actions = [e.action for e in s.exec(select(AuditEntry).where(AuditEntry.object_type == "subject")).all()]
        assert actions.count("subject.create") == 1 and actions.count("subject.close") == 2


def test_bad_input_changes_nothing(client: TestClient, engine) -> None:
    _manager(client, engine)
    for bad in ({"name": "", "case_ref": "X"}, {"name": "A"}, {"name": "A", "case_ref": "X", "priority": 9},
                {"name": "A", "case_ref": "X", "expires_on": "1999-01-01"}):
        r = client.post("/api/subjects", json=bad)
        assert r.status_code == 422, bad
    assert client.get("/api/subjects/999").status_code == 404
    r = client.post("/api/subjects/1/close", json={"status": "active"})
    assert r.status_code in (404, 422)
    with Session(engine) as s:
        assert s.exec(select(Subject)).all() == []


def test_only_managers(client: TestClient, engine) -> None:
    add_user(engine, "lookout", Role.recognizer, Role.officer)
    login(client, "lookout")
    assert client.get("/api/subjects").status_code == 403
    assert client.post("/api/subjects", json={"name": "A", "case_ref": "X"}).status_code == 403
    with Session(engine) as s:
        assert s.exec(select(Subject)).all() == []
        assert s.exec(select(AuditEntry).where(AuditEntry.outcome == "denied")).first() is not None


def test_status_filter_and_paging(client: TestClient, engine) -> None:
    _manager(client, engine)
    for i in range(5):
        client.post("/api/subjects", json={"name": f"P{i}", "case_ref": f"C{i}"})
    r = client.get("/api/subjects", params={"limit": 2, "offset": 2})
    assert r.json()["count"] == 5 and [d["name"] for d in r.json()["data"]] == ["P2", "P1"]
    assert client.get("/api/subjects", params={"status": "bogus"}).status_code == 422
    assert client.get("/api/subjects", params={"status": "arrested"}).json()["count"] == 0
