"""Manager pages: metrics with server-rendered SVG charts and a CSV export; the disputes and escalation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from markupsafe import Markup, escape

from triage import metrics, metrics_cache, qualification, review
from triage.transaction import record_refusal
from web.htmx import hx_redirect
from web.templating import render
from webcommon.deps import Id, ManagerUser, SessionDep, SettingsDep, client_ip, get_settings

router = APIRouter(tags=["metrics"])

CHART_WIDTH = 640
CHART_HEIGHT = 180
CHART_PAD = 24


@dataclass
class Bar:
    label: str
    value: float
    text: str


def bar_chart(bars: list[Bar], title: str, max_value: float | None = None) -> Markup:
    """A plain SVG bar chart (no script, no external file): one <rect> per bar with its label."""
    n = max(len(bars), 1)
    top = max_value if max_value is not None else max((b.value for b in bars), default=0.0)
    top = top or 1.0
    inner_h = CHART_HEIGHT - 2 * CHART_PAD
    slot = (CHART_WIDTH - 2 * CHART_PAD) / n
    parts = [f'<svg class="chart" role="img" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" '
             f'width="{CHART_WIDTH}" height="{CHART_HEIGHT}" xmlns="http://www.w3.org/2000/svg">',
             f"<title>{escape(title)}</title>",
             f'<line x1="{CHART_PAD}" y1="{CHART_HEIGHT - CHART_PAD}" x2="{CHART_WIDTH - CHART_PAD}" '
             f'y2="{CHART_HEIGHT - CHART_PAD}" stroke="#c5ccd3"/>']
    for i, b in enumerate(bars):
        h = inner_h * max(0.0, b.value) / top
        x = CHART_PAD + i * slot + slot * 0.15
        y = CHART_HEIGHT - CHART_PAD - h
        parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}" fill="#0b5cad">'
                     f"<title>{escape(b.label)}: {escape(b.text)}</title></rect>")
        if n <= 16 or i % max(1, n // 12) == 0:
            parts.append(f'<text x="{x + slot * 0.35:.1f}" y="{CHART_HEIGHT - 8}" text-anchor="middle">'
                         f"{escape(b.label)}</text>")
        if b.text and n <= 16:
            parts.append(f'<text x="{x + slot * 0.35:.1f}" y="{y - 3:.1f}" text-anchor="middle">'
                         f"{escape(b.text)}</text>")
    parts.append("</svg>")
    return Markup("".join(parts))


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v * 100:.0f}%"


def charts(m: metrics.Metrics) -> dict[str, Markup]:
    return {
        "hourly": bar_chart([Bar(h.strftime("%H"), n, str(n)) for h, n in m.hourly],
                            "Verdicts per hour, last 24 hours"),
        "flags": bar_chart([Bar(d.strftime("%d"), n, str(n)) for d, n in m.flags_daily],
                           "Flags raised per day, last 14 days"),
        "precision": bar_chart([Bar(b.label, b.precision or 0.0, _pct(b.precision)) for b in m.bands],
                               "Matcher precision by score band", max_value=1.0),
        "weekly_agreement": bar_chart([Bar(t.week.strftime("%d %b"), t.agreement or 0.0, _pct(t.agreement))
                                       for t in m.weeks[-26:]], "Agreement per week", max_value=1.0),
        "weekly_disputes": bar_chart([Bar(t.week.strftime("%d %b"), t.dispute_rate or 0.0, _pct(t.dispute_rate))
                                      for t in m.weeks[-26:]], "First-round dispute rate per week", max_value=1.0),
        "known_answer": bar_chart([Bar(k.recognizer, k.accuracy or 0.0, _pct(k.accuracy)) for k in m.known_answer],
                                  "Known-answer accuracy per recognizer", max_value=1.0),
    }


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
                                            "labels": VERDICT_LABELS, "confusion_shown": CONFUSION_SHOWN})


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
                   status_code: int = 200) -> Response:
    disputes = review.disputed_candidates(session, settings=get_settings(request))
    return render(request, "disputes.html", {"disputes": disputes,
                                             "messages": messages or []}, status_code=status_code)


@router.get("/disputes")
def read_disputes(request: Request, session: SessionDep, manager: ManagerUser) -> Response:
    """Disputed candidates (never a flag) with the escalate action."""
    return _disputes_page(request, session)


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
