"""Watchlist domain: subjects, closing, expiry (no face model needed)."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import ValidationError
from sqlmodel import Session, select

from miatari.registry import worker_registry
from tests import factories
from triage import watchlist
from triage.clock import frozen, utcnow
from triage.models import (
    AuditEntry,
    Candidate,
    CandidateStatus,
    GalleryChange,
    ReviewSlot,
    Role,
    Subject,
    SubjectStatus,
)
from triage.services import Services
from triage.transaction import unit_of_work


def _create(session: Session, actor=None, **fields) -> Subject:  # type: ignore[no-untyped-def]
    data = watchlist.SubjectCreate(**{"name": "Taro Yamada", "case_ref": "W-1", **fields})
    subject = watchlist.create_subject(session, data, actor)
    session.commit()
    return subject


def test_create_subject_is_audited(session: Session, user_factory) -> None:  # type: ignore[no-untyped-def]
    manager = user_factory(Role.manager)
    subject = _create(session, manager, aliases="Yama", priority=1, notes="armed")
    assert subject.status == "active" and subject.priority == 1
    entry = session.exec(select(AuditEntry).where(AuditEntry.action == "subject.create")).one()
    assert entry.actor == manager.username and entry.object_id == str(subject.id)


@pytest.mark.parametrize("fields, loc", [
    ({"name": "", "case_ref": "X"}, "name"),
    ({"name": "A", "case_ref": ""}, "case_ref"),
    ({"name": "A", "case_ref": "X", "priority": 0}, "priority"),
    ({"name": "A", "case_ref": "X", "priority": 6}, "priority"),
    ({"name": "A", "case_ref": "X", "expires_on": "2000-01-01"}, "expires_on"),
    ({"name": "A" * 201, "case_ref": "X"}, "name"),
])
def test_bad_subject_fields_are_refused(fields: dict, loc: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValidationError) as exc:
        watchlist.SubjectCreate(**fields)
    assert exc.value.errors()[0]["loc"][0] == loc


def test_update_subject_records_before_and_after(session: Session) -> None:
    subject = _create(session)
    watchlist.update_subject(session, subject.id, watchlist.SubjectUpdate(priority=2, notes="seen in Namba"), None)
    session.commit()
    session.refresh(subject)
    assert subject.priority == 2 and subject.notes == "seen in Namba" and subject.name == "Taro Yamada"
    entry = session.exec(select(AuditEntry).where(AuditEntry.action == "subject.update")).one()
    assert entry.detail["before"]["priority"] == 3 and entry.detail["after"]["priority"] == 2


def test_list_subjects_searches_filters_and_pages(session: Session) -> None:
    for i in range(7):
        _create(session, name=f"Person {i}", case_ref=f"CASE-{i}", aliases="the fox" if i == 3 else "")
    closed = _create(session, name="Closed One", case_ref="C-9")
    watchlist.close_subject(session, closed.id, "arrested", None)
    session.commit()
    rows, total = watchlist.list_subjects(session, q="fox")
    assert total == 1 and rows[0][0].name == "Person 3"
    rows, total = watchlist.list_subjects(session, q="case-", limit=3, offset=3)
    assert total == 7 and len(rows) == 3
    rows, total = watchlist.list_subjects(session, status="arrested")
    assert [s.name for s, _ in rows] == ["Closed One"]
    _, total = watchlist.list_subjects(session, status="searchable")
    assert total == 7


def test_close_takes_subject_out_and_withdraws_open_tasks(session: Session, settings, user_factory) -> None:  # type: ignore[no-untyped-def]
    officer = user_factory(Role.officer)
    store = factories.image_store(settings)
    candidate = factories.make_candidate(session, store, settings, officer.id)
    other = factories.make_candidate(session, store, settings, officer.id)
    session.commit()
    watchlist.close_subject(session, candidate.subject_id, "withdrawn", None, reason="warrant lifted")
    session.commit()
    session.refresh(candidate)
    session.refresh(other)
    assert candidate.status == CandidateStatus.withdrawn.value
    assert other.status == CandidateStatus.open.value
    slots = session.exec(select(ReviewSlot).where(ReviewSlot.candidate_id == candidate.id)).all()
    assert len(slots) == 2 and all(s.withdrawn for s in slots)  # recorded, not deleted
    change = session.exec(select(GalleryChange).where(GalleryChange.subject_id == candidate.subject_id)).one()
    assert change.action == "remove_subject"
    subject = session.get(Subject, candidate.subject_id)
    assert subject is not None and subject.status == "withdrawn" and subject.closed_at is not None


def test_closing_twice_or_to_a_wrong_status_is_refused(session: Session) -> None:
    subject = _create(session)
    with pytest.raises(watchlist.WatchlistError):
        watchlist.close_subject(session, subject.id, "active", None)
    session.rollback()
    watchlist.close_subject(session, subject.id, SubjectStatus.arrested, None)
    session.commit()
    with pytest.raises(watchlist.WatchlistError, match="already closed"), unit_of_work(session):
        watchlist.close_subject(session, subject.id, "withdrawn", None)
    refusals = session.exec(select(AuditEntry).where(AuditEntry.action == "subject.close",
                                                     AuditEntry.outcome == "denied")).all()
    assert len(refusals) == 1
    with pytest.raises(watchlist.WatchlistError, match="closed"):
        watchlist.update_subject(session, subject.id, watchlist.SubjectUpdate(priority=1), None)


def test_expiry_sweep_runs_on_its_own(engine, session: Session, settings, user_factory) -> None:  # type: ignore[no-untyped-def]
    officer = user_factory(Role.officer)
    store = factories.image_store(settings)
    candidate = factories.make_candidate(session, store, settings, officer.id)
    keeper = factories.make_candidate(session, store, settings, officer.id)
    subject = session.get(Subject, candidate.subject_id)
    assert subject is not None
    subject.expires_on = utcnow().date() + dt.timedelta(days=3)
    session.add(subject)
    session.commit()
    sweep = worker_registry().sweeps["expiry"]
    svc = Services(engine, settings, store)
    assert sweep(engine, settings, svc) == []  # not yet due
    with frozen(utcnow() + dt.timedelta(days=3)):
        assert sweep(engine, settings, svc) == [subject.id]
        assert sweep(engine, settings, svc) == []  # idempotent
        session.expire_all()
        assert watchlist.display_status(session.get(Subject, subject.id)) == "expired"  # type: ignore[arg-type]
    assert session.get(Candidate, candidate.id).status == "withdrawn"  # type: ignore[union-attr]
    assert session.get(Candidate, keeper.id).status == "open"  # type: ignore[union-attr]
    actions = session.exec(select(GalleryChange.action).where(GalleryChange.subject_id == subject.id)).all()
    assert actions == ["remove_subject"]
    expired = session.exec(select(AuditEntry).where(AuditEntry.action == "subject.expire")).one()
    assert expired.object_id == str(subject.id)


def test_choose_face_rules() -> None:
    class F:
        def __init__(self, index: int, size: int) -> None:
            self.index, self.bbox = index, (0, 0, size, size)

    with pytest.raises(watchlist.EnrolmentRefused, match="No face"):
        watchlist.choose_face([])
    assert watchlist.choose_face([F(0, 50)]).index == 0
    assert watchlist.choose_face([F(0, 30), F(1, 100)]).index == 1  # clearly the subject's
    with pytest.raises(watchlist.EnrolmentRefused, match="2 faces") as exc:
        watchlist.choose_face([F(0, 90), F(1, 100)])
    assert len(exc.value.faces) == 2
    assert watchlist.choose_face([F(0, 90), F(1, 100)], face_index=0).index == 0
    with pytest.raises(watchlist.EnrolmentRefused, match="no face number 3"):
        watchlist.choose_face([F(0, 90), F(1, 100)], face_index=2)


def test_csv_plan_with_a_column_map(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "a").mkdir()
    for name in ("a/1.jpg", "a/2.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "ids.csv").write_text("file,identity\na/1.jpg,7213\na/2.jpg,7213\nb.jpg,42\n")
    plan = watchlist.plan_csv(tmp_path / "ids.csv", {"photo": "file", "name": "identity"})
    assert [(p.fields.name, p.fields.case_ref, len(p.photos)) for p in plan] == [("7213", "7213", 2), ("42", "42", 1)]
    with pytest.raises(watchlist.WatchlistError, match="needs columns"):
        watchlist.plan_csv(tmp_path / "ids.csv")
    (tmp_path / "bad.csv").write_text("name,case_ref,priority,photo\nA,X,9,b.jpg\n")
    with pytest.raises(watchlist.WatchlistError, match="line 2"):
        watchlist.plan_csv(tmp_path / "bad.csv")


def test_folder_plan_takes_only_included_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for name in ("001/mugshot_Img_33.png", "001/surveillance_Img_01.png", "002/mugshot_Img_22.png",
                 "002/notes.txt", "003/surveillance_Img_02.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    plan = watchlist.plan_folder(tmp_path, ["mugshot_*"])
    assert [(p.key, [ph.label.rsplit("/", 1)[1] for ph in p.photos]) for p in plan] == [
        ("dir:001", ["mugshot_Img_33.png"]), ("dir:002", ["mugshot_Img_22.png"])]


def test_csv_subject_id_names_an_existing_subject_and_targets_are_parsed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "ids.csv").write_text("name,photo,subject_id\nNew One,a.jpg,\n,a.jpg,#17\n,a.jpg,17\n")
    plan = watchlist.plan_csv(tmp_path / "ids.csv")
    assert [(p.key, p.target_id, len(p.photos)) for p in plan] == [("csv:New One|New One", None, 1), ("id:17", 17, 2)]
    (tmp_path / "bad.csv").write_text("name,photo,subject_id\nA,a.jpg,seventeen\n")
    with pytest.raises(watchlist.WatchlistError, match="line 2: subject_id must be"):
        watchlist.plan_csv(tmp_path / "bad.csv")
    assert watchlist.parse_targets("001 = 17\n\n 002=#3 ") == {"001": 17, "002": 3}
    for text, message in (("001", "FOLDER = SUBJECT_NUMBER"), ("001 = x", "FOLDER = SUBJECT_NUMBER"),
                          ("1=2\n1=3", "named twice")):
        with pytest.raises(watchlist.WatchlistError, match=message):
            watchlist.parse_targets(text)


def test_the_preview_refuses_a_named_subject_that_is_missing_or_closed(session: Session, settings) -> None:  # type: ignore[no-untyped-def]
    from tests.factories import image_store, make_subject

    store = image_store(settings)
    open_one = make_subject(session, store)
    closed = make_subject(session, store, status="arrested")
    item = watchlist.ImportSubject("dir:x", watchlist.SubjectCreate(name=open_one.name, case_ref="new"), label="x")
    (row,) = watchlist.preview_import(session, [item], "test:1")
    assert row.action == "new" and row.lookalikes == [open_one.id]
    item.target_id = open_one.id
    assert watchlist.preview_import(session, [item], "test:1")[0].action == "existing"
    for target, message in ((closed.id, "is closed"), (10_000, "No subject #10000")):
        item.target_id = target
        with pytest.raises(watchlist.WatchlistError, match=message):
            watchlist.preview_import(session, [item], "test:1")
