"""Manager pages: metrics with server-rendered SVG charts and a CSV export; the disputes and escalation."""

from __future__ import annotations

from typing import Annotated

from fastapi import HTTPException, Query, Request
from fastapi.responses import Response
from markupsafe import Markup

from triage import metrics, metrics_cache, qualification, review
from triage.transaction import record_refusal
from web.charts import Bar, bar_chart, line_chart
from web.htmx import hx_redirect
from web.templating import render
from webcommon import routing
from webcommon.deps import Id, ManagerUser, SessionDep, SettingsDep, client_ip, get_settings

router = routing.router(tags=["metrics"])


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.0f}%"


def _pct_tick(v: float) -> str:
    return f"{v * 100:.0f}%"


def _minutes_tick(v: float) -> str:
    return f"{v:.0f} min" if v >= 10 or v == 0 else f"{v:.1f} min"


def _hours_tick(v: float) -> str:
    return f"{v:.0f} h" if v >= 10 or v == 0 else f"{v:.1f} h"


def _wait_chart(weeks: list[metrics.WeekTrend]) -> Markup:
    """Mean wait per week, in minutes while every week's is under two hours, else in hours."""
    longest = max((t.mean_wait_seconds or 0.0 for t in weeks), default=0.0)
    unit, tick = (60.0, _minutes_tick) if longest < 7200 else (3600.0, _hours_tick)
    return line_chart([Bar(t.week.strftime("%d %b"), t.mean_wait_seconds / unit, _duration(t.mean_wait_seconds))
                       if t.mean_wait_seconds is not None else None for t in weeks],
                      "Mean wait from candidate to decision, per week", tick_text=tick, y_title="wait")


def charts(m: metrics.Metrics) -> dict[str, Markup]:
    weeks = m.weeks[-26:]
    return {
        "hourly": bar_chart([Bar(h.strftime("%H"), n, str(n)) for h, n in m.hourly],
                            "Verdicts per hour, last 24 hours (UTC)", y_title="verdicts"),
        "flags": bar_chart([Bar(d.strftime("%d %b"), n, str(n)) for d, n in m.flags_daily],
                           "Flags raised per day, last 14 days", y_title="flags"),
        "precision": bar_chart([Bar(b.label, b.precision or 0.0, _pct(b.precision)) for b in m.bands],
                               "Matcher precision by score band", max_value=1.0, tick_text=_pct_tick,
                               y_title="confirmed"),
        "weekly_agreement": line_chart([Bar(t.week.strftime("%d %b"), t.agreement, _pct(t.agreement))
                                        if t.agreement is not None else None for t in weeks],
                                       "Agreement per week", max_value=1.0, tick_text=_pct_tick, y_title="agreement"),
        "weekly_wait": _wait_chart(weeks),
        "weekly_disputes": bar_chart([Bar(t.week.strftime("%d %b"), t.dispute_rate or 0.0, _pct(t.dispute_rate))
                                      for t in weeks], "First-round dispute rate per week", max_value=1.0,
                                     tick_text=_pct_tick, y_title="disputed"),
        "known_answer": bar_chart([Bar(k.recognizer, k.accuracy or 0.0, _pct(k.accuracy)) for k in m.known_answer],
                                  "Known-answer accuracy per recognizer", max_value=1.0, tick_text=_pct_tick,
                                  y_title="correct"),
    }


KAPPA_WORDS = ((0.81, "almost perfect"), (0.61, "substantial"), (0.41, "moderate"), (0.21, "fair"),
               (0.0, "slight"))


def kappa_reading(kappa: float | None, items: int) -> str:
    """Fleiss' kappa in plain words (the Landis and Koch bands)."""
    if kappa is None:
        return "Not enough completed rounds yet to say how well the recognizers agree."
    if kappa < 0:
        return (f"Kappa {kappa:.2f}: the recognizers agree less often than chance would have them agree, "
                f"over {items} rounds: look at the disputes and the known-answer records.")
    words = next(w for bound, w in KAPPA_WORDS if kappa >= bound)
    return (f"Kappa {kappa:.2f}: {words} agreement beyond chance over {items} rounds "
            f"(1 = always agree, 0 = no better than chance).")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    minutes = seconds / 60
    if minutes < 90:
        return f"{minutes:.0f} min"
    return f"{minutes / 60:.1f} h"


WindowParam = Annotated[str | None, Query(max_length=20)]
CONFUSION_SHOWN = 12  # pairs shown on the page (the most rounds together); all of them in the CSV and the API
VERDICT_LABELS = {"same": "Same person", "different": "Different people", "cannot_tell": "Cannot tell"}


# /metrics is the Prometheus endpoint (miatari.observability): the managers' page is /stats.
@router.get("/stats")
def read_metrics(request: Request, session: SessionDep, manager: ManagerUser, days: WindowParam = None,
                 since: WindowParam = None, until: WindowParam = None) -> Response:
    """Agreement, throughput, queue, flags and matcher precision, computed from stored verdicts,
    over all time or a window (``days``, or ``since``/``until`` dates)."""
    form = {"days": days or "", "since": since or "", "until": until or ""}
    try:
        window = metrics.parse_window(days, since, until)
    except metrics.BadWindow as exc:
        return render(request, "metrics.html", {"m": None, "error": str(exc), "form": form,
                                                "choices": metrics.WINDOW_CHOICES}, status_code=422)
    m = metrics_cache.compute(session, window, _cache_seconds(request))
    return render(request, "metrics.html", {"m": m, "charts": charts(m), "pct": _pct,
                                            "duration": _duration, "form": form,
                                            "choices": metrics.WINDOW_CHOICES, "categories": metrics.CATEGORIES,
                                            "labels": VERDICT_LABELS, "confusion_shown": CONFUSION_SHOWN,
                                            "kappa_reading": kappa_reading(m.fleiss_kappa, m.items)})


@router.get("/stats/export.csv")
def read_metrics_csv(session: SessionDep, manager: ManagerUser, days: WindowParam = None,
                     since: WindowParam = None, until: WindowParam = None) -> Response:
    """The metrics as CSV, over the same window as the page."""
    try:
        window = metrics.parse_window(days, since, until)
    except metrics.BadWindow as exc:
        return Response(str(exc), status_code=422, media_type="text/plain; charset=utf-8")
    return Response(metrics.export_csv(metrics.compute(session, window)), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="miatari-metrics.csv"'})


def _disputes_page(request: Request, session: SessionDep, messages: list[dict[str, str]] | None = None,
                   status_code: int = 200, escalated: int = 0) -> Response:
    disputes = review.disputed_candidates(session, settings=get_settings(request))
    notes = list(messages or [])
    if escalated:
        notes.append({"kind": "ok", "text": f"Candidate #{escalated} is in a new round: two recognizers who have "
                                            "never been shown it will review it. It is listed under In escalation."})
    return render(request, "disputes.html", {"disputes": disputes, "escalations": review.in_escalation(session),
                                             "messages": notes}, status_code=status_code)


@router.get("/disputes")
def read_disputes(request: Request, session: SessionDep, manager: ManagerUser, escalated: int = 0) -> Response:
    """Disputed candidates (never a flag) with the escalate action, and the candidates in escalation."""
    return _disputes_page(request, session, escalated=escalated)


@router.get("/disputes/{candidate_id}/escalate")
def read_escalation(request: Request, candidate_id: Id, session: SessionDep, manager: ManagerUser) -> Response:
    """The confirmation step before a disputed candidate goes to a new round."""
    try:
        d = review.disputed_candidate(session, candidate_id, get_settings(request))
    except review.ReviewError as exc:
        if exc.code == "not_found":
            raise HTTPException(404, exc.message) from None
        return _disputes_page(request, session, [{"kind": "error", "text": exc.message}], 409)
    return render(request, "dispute_escalate.html", {"d": d})


@router.post("/disputes/{candidate_id}/escalate")
def create_escalation(request: Request, candidate_id: Id, session: SessionDep, manager: ManagerUser) -> Response:
    """Send a disputed candidate to two further recognizers who have not seen it."""
    try:
        review.escalate(session, manager, candidate_id, client_ip(request), get_settings(request))
    except review.ReviewError as exc:
        record_refusal(session, exc)
        status = {"not_found": 404, "forbidden": 403}.get(exc.code, 409)
        return _disputes_page(request, session, [{"kind": "error", "text": exc.message}], status)
    return hx_redirect(f"/disputes?escalated={candidate_id}", request)


def _recognizers_page(request: Request, session: SessionDep, settings: SettingsDep,
                      messages: list[dict[str, str]] | None = None, status_code: int = 200) -> Response:
    return render(request, "recognizers.html", {
        "standings": qualification.standings(session), "bar": settings.qualification_min_accuracy,
        "messages": messages or []}, status_code=status_code)


@router.get("/recognizers")
def read_recognizers(request: Request, session: SessionDep, settings: SettingsDep, manager: ManagerUser) -> Response:
    """Recognizers' qualification and known-answer records, with the reinstate action."""
    return _recognizers_page(request, session, settings)


@router.post("/recognizers/{user_id}/reinstate")
def create_reinstatement(request: Request, user_id: Id, session: SessionDep, settings: SettingsDep,
                         manager: ManagerUser) -> Response:
    """Put a suspended recognizer back on probation."""
    try:
        qualification.reinstate(session, manager, user_id, client_ip(request))
    except qualification.QualificationError as exc:
        record_refusal(session, exc)
        status = {"not_found": 404, "forbidden": 403}.get(exc.code, 409)
        return _recognizers_page(request, session, settings, [{"kind": "error", "text": exc.message}], status)
    return hx_redirect(f"/recognizers?reinstated={user_id}", request)


def _cache_seconds(request: Request) -> float:
    return float(get_settings(request).metrics_cache_seconds)
