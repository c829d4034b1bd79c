"""Metrics API (managers): agreement, throughput, queue, flags and matcher precision, as JSON or CSV."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from triage import metrics
from triage.deps import ManagerUser, SessionDep
from triage.release import releases_session

router = APIRouter(prefix="/api/metrics", tags=["metrics"])


def _plain(m: metrics.Metrics) -> dict[str, Any]:
    data = dataclasses.asdict(m)
    data["dispute_rate"] = m.dispute_rate
    data["known_answer"] = [{**dataclasses.asdict(k), "accuracy": k.accuracy} for k in m.known_answer]
    data["throughput"] = [{**dataclasses.asdict(t), "per_hour": t.per_hour} for t in m.throughput]
    data["bands"] = [{**dataclasses.asdict(b), "label": b.label, "precision": b.precision} for b in m.bands]
    data["hourly"] = [{"hour": h.isoformat(), "verdicts": n} for h, n in m.hourly]
    data["flags_daily"] = [{"day": d.isoformat(), "flags": n} for d, n in m.flags_daily]
    return data


@router.get("")
@releases_session
def read_metrics(session: SessionDep, manager: ManagerUser) -> dict[str, Any]:
    """Every manager metric, computed now from the stored verdicts."""
    return _plain(metrics.compute(session))


@router.get("/export.csv", response_class=Response, responses={200: {"content": {"text/csv": {}}}})
@releases_session
def read_metrics_csv(session: SessionDep, manager: ManagerUser) -> Response:
    """The same metrics as one CSV table (metric, key, value, n)."""
    body = metrics.export_csv(metrics.compute(session))
    return Response(body, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="miatari-metrics.csv"'})
