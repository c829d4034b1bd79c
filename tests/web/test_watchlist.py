"""Watchlist pages (no face model needed)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from tests.conftest import add_user, app_of, login
from triage.models import Role, Subject


def _manager(client: TestClient, engine) -> None:
    add_user(engine, "boss", Role.manager)
    login(client, "boss")


def test_create_edit_close_through_the_pages(client: TestClient, engine) -> None:
    _manager(client, engine)
    r = client.get("/watchlist/new")
    assert r.template.name == "subject_form.html"
    r = client.post("/watchlist/new", data={"name": "Ken Ito", "case_ref": "W-5", "priority": "1",
                                            "aliases": "", "notes": "", "expires_on": ""}, follow_redirects=False)
    assert r.status_code == 303
    sid = int(r.headers["location"].rsplit("/", 1)[1])
    page = client.get(f"/watchlist/{sid}")
    assert page.template.name == "subject.html"
    assert page.context["subject"].name == "Ken Ito" and page.context["photos"] == []
    assert "No reference photo yet" in page.text
    r = client.post(f"/watchlist/{sid}/edit", data={"name": "Ken Ito", "case_ref": "W-5", "priority": "2",
                                                    "notes": "tattoo", "aliases": "", "expires_on": ""},
                    follow_redirects=False)
    assert r.status_code == 303
    r = client.post(f"/watchlist/{sid}/close", data={"status": "arrested", "reason": "", "confirm": "yes"},
                    follow_redirects=False)
    assert r.status_code == 303
    page = client.get(f"/watchlist/{sid}")
    assert page.context["display_status"] == "arrested" and "Close this subject" not in page.text
    with Session(engine) as s:
        subject = s.get(Subject, sid)
        assert subject is not None and subject.priority == 2 and subject.notes == "tattoo"


def test_form_errors_are_shown_and_nothing_stored(client: TestClient, engine) -> None:
    _manager(client, engine)
    r = client.post("/watchlist/new", data={"name": "", "case_ref": "W", "priority": "7"})
    assert r.status_code == 422 and r.template.name == "subject_form.html"
    assert set(r.context["errors"]) == {"name", "priority"}
    with Session(engine) as s:
        assert s.exec(select(Subject)).all() == []


def test_list_search_fragment_and_paging(client: TestClient, engine) -> None:
    _manager(client, engine)
    for i in range(30):
        client.post("/api/subjects", json={"name": f"Person {i:02d}", "case_ref": f"K-{i}"})
    page = client.get("/watchlist")
    assert page.template.name == "watchlist.html" and page.context["count"] == 30 and page.context["pages"] == 2
    frag = client.get("/watchlist", params={"q": "person 07"},
                      headers={"HX-Request": "true", "HX-Target": "subject-rows"})
    assert frag.template.name == "_watchlist_rows.html" and frag.context["count"] == 1
    assert "<html" not in frag.text and "Person 07" in frag.text


def test_officer_cannot_see_the_watchlist(client: TestClient, engine) -> None:
    add_user(engine, "cop", Role.officer)
    login(client, "cop")
    assert client.get("/watchlist").status_code == 403
    assert client.post("/watchlist/new", data={"name": "X", "case_ref": "Y"}).status_code == 403


def test_subject_page_marks_reference_photos_left_out_of_the_search(client: TestClient, engine, settings) -> None:
    from tests import factories
    from triage.storage import ImageStore

    _manager(client, engine)
    store = ImageStore(app_of(client).state.settings.images_dir)
    with Session(engine, expire_on_commit=False) as s:
        subject = factories.make_subject(s, store, photos=0)
        good = factories.add_reference_photo(s, store, subject, view="frontal")
        poor = factories.add_reference_photo(s, store, subject, view="far")
        good.iod_px, good.blur = 70.0, 200.0
        poor.iod_px, poor.blur, poor.quality_issues, poor.quality_ok = 22.0, 200.0, "small", False
        s.add(good)
        s.add(poor)
        s.commit()
    page = client.get(f"/watchlist/{subject.id}")
    assert page.context["searched"] == {good.id: True, poor.id: False}
    assert page.text.count("not searched") == 1
