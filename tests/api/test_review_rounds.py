"""One rule per round, through the JSON API: each round decides on its own, at most three rounds."""

from __future__ import annotations

import pytest
from sqlmodel import Session, col, select

from tests.conftest import login
from tests.factories import image_store, make_candidate
from triage.models import AuditEntry, Candidate, Flag, ReviewSlot, Role

RECOGNIZERS = [f"rec{i}" for i in range(1, 8)]


@pytest.fixture
def cand(engine, settings, user_factory):
    officer = user_factory(Role.officer, username="officer")
    user_factory(Role.manager, username="boss")
    for name in RECOGNIZERS:
        user_factory(Role.recognizer, username=name)
    with Session(engine, expire_on_commit=False) as s:
        c = make_candidate(s, image_store(settings), settings, officer.id)
        s.commit()
    return c


@pytest.fixture
def clients(make_client):
    made: dict[str, object] = {}

    def get(name: str):
        if name not in made:
            c = make_client()
            login(c, name)
            made[name] = c
        return made[name]

    return get


def _answer(client, verdict: str) -> None:
    task = client.post("/api/review/next").json()["task"]
    assert task is not None
    assert client.post(task["verdict_url"], json={"verdict": verdict}).status_code == 201


def _round(clients, names, verdicts) -> None:
    for name, verdict in zip(names, verdicts, strict=True):
        _answer(clients(name), verdict)


def _status(engine, cid: int) -> str:
    with Session(engine) as s:
        return s.get_one(Candidate, cid).status


def test_verdicts_are_not_pooled_across_rounds(engine, cand, clients):
    """(same, cannot tell) twice: no round agreed, so no flag — pooled, two 'same' would have raised one."""
    boss = clients("boss")
    _round(clients, ["rec1", "rec2"], ["same", "cannot_tell"])
    assert boss.post(f"/api/review/candidates/{cand.id}/escalate").status_code == 200
    _round(clients, ["rec3", "rec4"], ["same", "cannot_tell"])
    assert _status(engine, cand.id) == "disputed"
    with Session(engine) as s:
        assert s.exec(select(Flag)).first() is None
    disputes = boss.get("/api/review/disputes").json()["data"]
    assert [d["round"] for d in disputes] == [2] and disputes[0]["verdicts"] == ["same", "cannot_tell"] * 2


def test_a_split_round_is_settled_by_the_next(engine, cand, clients):
    """(same, different) then (same, same): round 2 decides on its own and the flag rests on it."""
    boss = clients("boss")
    _round(clients, ["rec1", "rec2"], ["same", "different"])
    assert _status(engine, cand.id) == "disputed"
    assert boss.post(f"/api/review/candidates/{cand.id}/escalate").status_code == 200
    _round(clients, ["rec3", "rec4"], ["same", "same"])
    assert _status(engine, cand.id) == "flagged"
    fid = boss.get("/api/flags").json()["data"][0]["id"]
    verdicts = boss.get(f"/api/flags/{fid}").json()["verdicts"]
    assert [(v["round"], v["verdict"]) for v in verdicts] == [(1, "same"), (1, "different"), (2, "same"), (2, "same")]


def test_at_most_three_rounds_then_it_stays_disputed(engine, cand, clients):
    boss = clients("boss")
    for rnd, names in enumerate((["rec1", "rec2"], ["rec3", "rec4"], ["rec5", "rec6"]), start=1):
        _round(clients, names, ["different", "cannot_tell"])
        assert _status(engine, cand.id) == "disputed"
        r = boss.post(f"/api/review/candidates/{cand.id}/escalate")
        if rnd < 3:
            assert r.status_code == 200 and r.json()["round"] == rnd + 1
    assert r.status_code == 409 and "stays disputed" in r.json()["detail"]
    # Refused, audited, nothing changed: no fourth round, nothing for the seventh recognizer.
    with Session(engine) as s:
        row = s.get_one(Candidate, cand.id)
        assert row.status == "disputed" and row.current_round == 3
        assert len(s.exec(select(ReviewSlot).where(ReviewSlot.candidate_id == cand.id)).all()) == 6
        last = s.exec(select(AuditEntry).where(AuditEntry.action == "review.escalate")
                      .order_by(col(AuditEntry.id).desc())).first()
        assert last is not None
        assert last.outcome == "denied" and last.detail["round"] == 3
    assert clients("rec7").post("/api/review/next").json()["task"] is None
    # The disputes page says why it cannot be escalated, and offers no working button.
    page = boss.get("/disputes")
    assert "It has had 3 rounds, the most there can be: it stays disputed" in page.text
    assert f'href="/disputes/{cand.id}/escalate"' not in page.text and "disabled aria-disabled" in page.text


def _set_standing(engine, names, standing: str) -> None:
    from triage.models import User
    with Session(engine) as s:
        for user in s.exec(select(User).where(col(User.username).in_(names))).all():
            user.qualification = standing
            s.add(user)
        s.commit()


def test_escalation_counts_only_recognizers_who_can_take_live_work(engine, cand, clients, make_client):
    """Where probation serves known-answer pairs only, an escalated round never waits on accounts on probation."""
    _set_standing(engine, ["rec1", "rec2"], "qualified")
    _round(clients, ["rec1", "rec2"], ["same", "different"])
    boss = make_client(probation_known_answer_share=1.0)
    login(boss, "boss")
    assert boss.get("/api/review/disputes").json()["data"][0]["eligible_recognizers"] == 0
    r = boss.post(f"/api/review/candidates/{cand.id}/escalate")
    assert r.status_code == 409 and "there are 0" in r.json()["detail"]
    assert _status(engine, cand.id) == "disputed"
    _set_standing(engine, ["rec3", "rec4"], "qualified")
    r = boss.post(f"/api/review/candidates/{cand.id}/escalate")
    assert r.status_code == 200 and r.json()["round"] == 2 and r.json()["eligible_recognizers"] == 2
