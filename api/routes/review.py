"""Review API: take the next task, see its crops, reveal the full faces, give a verdict.

Nothing sent before a verdict says the matcher's score or rank, the other
recognizer's verdict, or whether the task is a known-answer pair.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from fastapi import Header, Request, Response
from pydantic import BaseModel, Field

from triage import qualification, review
from triage.models import Subject
from webcommon import routing
from webcommon.deps import Id, ManagerUser, RecognizerUser, SessionDep, SettingsDep, client_ip

router = routing.router(prefix="/api/review", tags=["review"])



# Schemas
class TaskImages(BaseModel):
    probe_eyes: str = Field(description="Eye-region crop of the sighting face")
    subject_eyes: str = Field(description="Eye-region crop of the wanted person, same scale")
    probe_face: str | None = Field(default=None, description="Full face, once revealed")
    subject_face: str | None = None


class TaskPublic(BaseModel):
    slot_id: Id
    lease_expires_at: dt.datetime
    revealed_full_faces: bool
    images: TaskImages
    reveal_url: str
    verdict_url: str


class NextTask(BaseModel):
    task: TaskPublic | None = Field(description="None when the queue holds nothing for you")


class VerdictPublic(BaseModel):
    slot_id: Id
    verdict: str
    verdict_at: dt.datetime
    revealed_full_faces: bool
    replayed: bool = Field(description="True when this repeats a verdict already stored")


def _public(task: review.Task) -> TaskPublic:
    base = f"/api/review/slots/{task.slot_id}"
    revealed = task.slot.revealed_full_faces
    return TaskPublic(
        slot_id=task.slot_id, lease_expires_at=task.lease_expires_at, revealed_full_faces=revealed,
        images=TaskImages(probe_eyes=f"{base}/images/probe-eyes", subject_eyes=f"{base}/images/subject-eyes",
                          probe_face=f"{base}/images/probe-face" if revealed else None,
                          subject_face=f"{base}/images/subject-face" if revealed else None),
        reveal_url=f"{base}/reveal", verdict_url=f"{base}/verdict")


@router.get("/next")
def read_next(request: Request, session: SessionDep, settings: SettingsDep, user: RecognizerUser) -> NextTask:
    """The task you hold now, if any (taking a new one is a POST)."""
    task = review.current_task(session, user)
    return NextTask(task=_public(task) if task else None)


@router.post("/next")
def create_next(request: Request, session: SessionDep, settings: SettingsDep, user: RecognizerUser) -> NextTask:
    """Lease the most urgent task you may take (or get back the one you hold)."""
    task = review.next_task(session, user, settings, ip=client_ip(request))
    return NextTask(task=_public(task) if task else None)


@router.post("/slots/{slot_id}/reveal")
def create_reveal(request: Request, slot_id: Id, session: SessionDep, user: RecognizerUser) -> TaskPublic:
    """Reveal the full faces of your task (recorded with the verdict)."""
    review.reveal_full_faces(session, user, slot_id, client_ip(request))
    return _public(review.held_task(session, user, slot_id, client_ip(request)))


@router.post("/slots/{slot_id}/verdict", status_code=201,
             responses={200: {"description": "The same verdict was already stored (a replay)"},
                        409: {"description": "The lease expired, the task was withdrawn, or a different verdict "
                                             "was already given"}})
def create_verdict(request: Request, slot_id: Id, body: review.VerdictInput, response: Response, session: SessionDep,
                   settings: SettingsDep, user: RecognizerUser,
                   idempotency_key: Annotated[str | None, Header(max_length=review.IDEMPOTENCY_KEY_MAX)] = None,
                   ) -> VerdictPublic:
    """Give your verdict on a task you hold; safe to retry with the same Idempotency-Key."""
    result = review.submit_verdict(session, user, slot_id, body.verdict, body.note, idempotency_key,
                                   client_ip(request), settings=settings)
    if result.replayed:
        response.status_code = 200
    slot = result.slot
    return VerdictPublic.model_validate({"slot_id": slot.pk, "verdict": slot.verdict, "verdict_at": slot.verdict_at,
                                         "revealed_full_faces": slot.revealed_full_faces, "replayed": result.replayed})


# Managers: disputes and escalation
class DisputePublic(BaseModel):
    candidate_id: Id
    subject_id: Id
    subject_name: str
    round: int
    verdicts: list[str]
    eligible_recognizers: int


class DisputesPublic(BaseModel):
    data: list[DisputePublic]
    count: int


@router.get("/disputes")
def read_disputes(session: SessionDep, settings: SettingsDep, manager: ManagerUser) -> DisputesPublic:
    """Disputed candidates (no flag), oldest first, with how many recognizers could still take an escalation."""
    rows = review.disputed_candidates(session, settings=settings)
    return DisputesPublic(data=[DisputePublic(candidate_id=d.candidate.pk, subject_id=d.subject.pk,
                                              subject_name=d.subject.name, round=d.candidate.current_round,
                                              verdicts=[s.verdict or "" for s in d.verdicts],
                                              eligible_recognizers=d.eligible) for d in rows], count=len(rows))


@router.post("/candidates/{candidate_id}/escalate")
def create_escalation(request: Request, candidate_id: Id, session: SessionDep, settings: SettingsDep,
                      manager: ManagerUser) -> DisputePublic:
    """Send a disputed candidate to two further recognizers who have not seen it."""
    candidate = review.escalate(session, manager, candidate_id, client_ip(request), settings)
    subject = session.get(Subject, candidate.subject_id)
    return DisputePublic(candidate_id=candidate.pk, subject_id=candidate.subject_id,
                         subject_name=subject.name if subject else "", round=candidate.current_round, verdicts=[],
                         eligible_recognizers=len(review.eligible_recognizers(session, candidate,
                                                                               settings)))


# Managers: recognizers' standing on known-answer tasks, and reinstatement
class KindRecordPublic(BaseModel):
    correct: int
    answered: int
    lower: float = Field(description="95% Wilson lower bound of the accuracy")
    upper: float = Field(description="95% Wilson upper bound of the accuracy")


class RecognizerStanding(BaseModel):
    user_id: int
    username: str
    qualification: Literal["probation", "qualified", "suspended"]
    known_same: KindRecordPublic
    known_different: KindRecordPublic


class RecognizerStandings(BaseModel):
    data: list[RecognizerStanding]
    count: int
    bar: float = Field(description="MIATARI_QUALIFICATION_MIN_ACCURACY")


def _kind(rec: qualification.KindRecord) -> KindRecordPublic:
    lo, hi = rec.bounds
    return KindRecordPublic(correct=rec.correct, answered=rec.answered, lower=round(lo, 4), upper=round(hi, 4))


def _standing(st: qualification.Standing) -> RecognizerStanding:
    return RecognizerStanding.model_validate({"user_id": st.user.pk, "username": st.user.username,
                                              "qualification": st.user.qualification,
                                              "known_same": _kind(st.record.same),
                                              "known_different": _kind(st.record.different)})


@router.get("/recognizers")
def read_recognizers(session: SessionDep, settings: SettingsDep, manager: ManagerUser) -> RecognizerStandings:
    """Every recognizer's qualification and known-answer record, suspended first."""
    rows = qualification.standings(session)
    return RecognizerStandings(data=[_standing(r) for r in rows], count=len(rows),
                               bar=settings.qualification_min_accuracy)


@router.post("/recognizers/{user_id}/reinstate")
def create_reinstatement(request: Request, user_id: Id, session: SessionDep,
                         manager: ManagerUser) -> RecognizerStanding:
    """Put a suspended recognizer back on probation, with a fresh known-answer record."""
    user = qualification.reinstate(session, manager, user_id, client_ip(request))
    return _standing(qualification.Standing(user, qualification.record_for(session, user)))
