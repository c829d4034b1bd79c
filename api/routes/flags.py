"""Flags API: the arrest flags you may see, their evidence, officers' reports, and a manager's acknowledge and close."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from fastapi import Request
from pydantic import BaseModel, Field

from triage import flags
from triage.models import Flag
from webcommon import routing
from webcommon.deps import CurrentUser, Id, SessionDep, client_ip

router = routing.router(prefix="/api/flags", tags=["flags"])



# Schemas
class VerdictEvidencePublic(BaseModel):
    reviewer: str
    verdict: str
    at: dt.datetime | None
    round: int
    note: str
    revealed_full_faces: bool
    reviewer_record: dict[str, object] | None = Field(
        default=None, description="The recognizer's known-answer record when they gave this verdict")
    voided: str = Field(default="", description="Why this verdict no longer counts, if it does not")


class FlagPublic(BaseModel):
    id: int
    status: str
    warning: str = Field(description="A flag is a lead, never an identification")
    raised_at: dt.datetime
    subject_id: Id
    subject_name: str
    case_ref: str
    sighting_id: Id
    observed_at: dt.datetime
    location: str
    acknowledged_at: dt.datetime | None
    closed_at: dt.datetime | None
    close_reason: str | None


class FlagReportPublic(BaseModel):
    reporter: str
    outcome: str
    note: str
    at: dt.datetime


class FlagDetail(FlagPublic):
    verdicts: list[VerdictEvidencePublic]
    reports: list[FlagReportPublic] = Field(description="What the sighting's officer reported; a manager closes")
    images: dict[str, str]


class FlagsPublic(BaseModel):
    data: list[FlagPublic]
    count: int


class FlagReportCreate(BaseModel):
    outcome: Literal["arrested", "not_located", "withdrawn"] = Field(description="The outcome the officer proposes")
    note: str = Field(default="", max_length=flags.REPORT_NOTE_MAX)


class FlagClose(BaseModel):
    reason: Literal["arrested", "not_located", "withdrawn"]
    note: str = Field(default="", max_length=flags.CLOSE_NOTE_MAX)


def _public(ev: flags.Evidence) -> FlagPublic:
    flag = ev.flag
    return FlagPublic(id=flag.pk, status=flag.status, warning=flags.LEAD_WARNING,
                      raised_at=flag.raised_at, subject_id=ev.subject.pk, subject_name=ev.subject.name,
                      case_ref=ev.subject.case_ref, sighting_id=ev.sighting.pk,
                      observed_at=ev.sighting.observed_at, location=ev.sighting.location_text,
                      acknowledged_at=flag.acknowledged_at, closed_at=flag.closed_at, close_reason=flag.close_reason)


def _detail(session: SessionDep, flag: Flag) -> FlagDetail:
    ev = flags.evidence(session, flag)
    base = f"/flags/{flag.id}/images"
    images = {k: f"{base}/{k}" for k in ("probe-eyes", "subject-eyes", "probe-face", "subject-face")}
    images.update({f"sighting-{p.position}": f"{base}/sighting-{p.position}" for p in ev.photos})
    return FlagDetail(**_public(ev).model_dump(), images=images,
                      verdicts=[VerdictEvidencePublic(reviewer=v.reviewer, verdict=v.verdict, at=v.at,
                                                      round=v.round, note=v.note,
                                                      revealed_full_faces=v.revealed_full_faces,
                                                      reviewer_record=v.record, voided=v.voided)
                                for v in ev.verdicts],
                      reports=[FlagReportPublic(reporter=r.reporter, outcome=r.outcome, note=r.note, at=r.at)
                               for r in ev.reports])


@router.get("")
def read_flags(session: SessionDep, user: CurrentUser, status: str | None = None) -> FlagsPublic:
    """The flags you may see (managers: all; officers: those on their sightings), newest first."""
    rows = flags.visible_flags(session, user, status)
    return FlagsPublic(data=[_public(ev) for ev in flags.evidence_many(session, rows)], count=len(rows))


@router.get("/{flag_id}")
def read_flag(request: Request, flag_id: Id, session: SessionDep, user: CurrentUser) -> FlagDetail:
    """One flag with its evidence."""
    flag = flags.get_visible(session, user, flag_id, client_ip(request))
    return _detail(session, flag)


@router.post("/{flag_id}/reports", status_code=201)
def create_flag_report(request: Request, flag_id: Id, body: FlagReportCreate, session: SessionDep,
                       user: CurrentUser) -> FlagDetail:
    """Report what happened (the sighting's officer), proposing an outcome; the managers are told."""
    flags.report(session, user, flag_id, body.outcome, body.note, client_ip(request))
    flag = flags.get_visible(session, user, flag_id, client_ip(request))
    return _detail(session, flag)


@router.post("/{flag_id}/acknowledge")
def update_flag_acknowledge(request: Request, flag_id: Id, session: SessionDep, user: CurrentUser) -> FlagDetail:
    """Acknowledge a raised flag (managers): the flag is taken on."""
    flag = flags.acknowledge(session, user, flag_id, client_ip(request))
    return _detail(session, flag)


@router.post("/{flag_id}/close")
def update_flag_close(request: Request, flag_id: Id, body: FlagClose, session: SessionDep,
                      user: CurrentUser) -> FlagDetail:
    """Close an acknowledged flag (managers): arrested, not located, or withdrawn."""
    flag = flags.close(session, user, flag_id, body.reason, body.note, client_ip(request))
    return _detail(session, flag)
