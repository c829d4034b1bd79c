"""Metrics API (managers): agreement, throughput, queue, flags and matcher precision, as JSON or CSV."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import HTTPException, Query, Request
from fastapi.responses import Response

from triage import metrics, metrics_cache
from webcommon import routing
from webcommon.deps import ManagerUser, SessionDep, get_settings

router = routing.router(prefix="/api/metrics", tags=["metrics"])


def _plain(m: metrics.Metrics) -> dict[str, Any]:
    data = dataclasses.asdict(m)
    data["dispute_rate"] = m.dispute_rate
    data["known_answer"] = [{**dataclasses.asdict(k), "accuracy": k.accuracy, "same_bounds": k.same_bounds,
                             "different_bounds": k.different_bounds} for k in m.known_answer]
    data["rounds"] = [{**dataclasses.asdict(t), "dispute_rate": t.dispute_rate} for t in m.rounds]
    data["throughput"] = [{**dataclasses.asdict(t), "per_hour": t.per_hour} for t in m.throughput]
    data["bands"] = [{**dataclasses.asdict(b), "label": b.label, "precision": b.precision} for b in m.bands]
    data["hourly"] = [{"hour": h.isoformat(), "verdicts": n} for h, n in m.hourly]
    data["flags_daily"] = [{"day": d.isoformat(), "flags": n} for d, n in m.flags_daily]
    data["weeks"] = [{**dataclasses.asdict(t), "dispute_rate": t.dispute_rate} for t in m.weeks]
    data["window"] = {"label": m.window.label, "since": m.window.since, "until": m.window.until,
                      "days": m.window.days}
    return data


WindowParam = Annotated[str | None, Query(max_length=20, description="see GET /api/metrics")]


def _window(days: str | None, since: str | None, until: str | None) -> metrics.Window:
    try:
        return metrics.parse_window(days, since, until)
    except metrics.BadWindow as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None


@router.get("", responses={422: {"description": "the period cannot be read"}})
def read_metrics(request: Request, session: SessionDep, manager: ManagerUser, days: WindowParam = None,
                 since: WindowParam = None, until: WindowParam = None) -> dict[str, Any]:
    """Every manager metric, computed now from the stored verdicts: over all time, the last
    ``days`` days, or from ``since`` to ``until`` (dates, both included, UTC)."""
    return _plain(metrics_cache.compute(session, _window(days, since, until), _cache_seconds(request)))


@router.get("/export.csv", response_class=Response, responses={200: {"content": {"text/csv": {}}}, 422: {}})
def read_metrics_csv(request: Request, session: SessionDep, manager: ManagerUser, days: WindowParam = None,
                     since: WindowParam = None, until: WindowParam = None) -> Response:
    """The same metrics as one CSV table (metric, key, value, n), over the same window."""
    body = metrics.export_csv(metrics.compute(session, _window(days, since, until)))  # an export: as of now
    return Response(body, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="miatari-metrics.csv"'})


def _cache_seconds(request: Request) -> float:
    return float(get_settings(request).metrics_cache_seconds)
