"""Managers' metrics, computed from stored verdicts and timestamps only (no counters that can drift).

Definitions (also in docs/review.md):

* an *item* is one completed round of a real candidate: its two counting verdicts by two recognizers (each round
  decides on its own, so rounds are never pooled; a verdict voided by its author's suspension is left out);
* Cohen's kappa per recognizer pair over the items they both rated (three categories);
* Fleiss' kappa over all items (two ratings each); raw agreement = share of items whose two verdicts are equal;
* dispute rate = share of real candidates with a completed first round whose first round was neither
  same/same nor different/different (an escalation later does not change it); the same, round by round, over
  every completed round; candidates still disputed after the last round (MAX_ROUNDS) are counted apart;
* known-answer accuracy per recognizer = correct / answered known-answer slots (*cannot tell* counts as not
  correct and is also reported on its own), and apart on known-same and known-different pairs with 95 % Wilson
  bounds, beside the recognizer's standing (probation / qualified / suspended);
* verdicts per hour per recognizer = verdicts / distinct clock hours in which they gave one; plus verdicts per
  hour for the last 24 hours;
* time from sighting to outcome = candidate decision time − sighting upload time (p50/p95, nearest rank);
* queue depth = unanswered, unwithdrawn slots of open real candidates; queue age = now − candidate creation;
* matcher precision by score band = flagged / decided (flagged, cleared, disputed) among real candidates.

A *window* (:class:`Window`: the last N days, or a range of dates, UTC) restricts each figure to
what happened in it: rounds completed (their second verdict), candidates decided, verdicts given,
flags raised. The queue is always now; the two charts of recent activity keep their fixed spans.
Finished days are read from per-day summaries and the rest live (``triage.metrics_summary``); the
figures are the same either way (``compute(..., summaries=False)`` reads everything live).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from sqlmodel import Session, select

from triage import metrics_queries as q
from triage import metrics_summary as summary
from triage.clock import utcnow
from triage.models import CandidateStatus, User, Verdict
from triage.qualification import wilson

# As triage.review.MAX_ROUNDS (not imported: metrics reads the tables only).
MAX_ROUNDS = q.MAX_ROUNDS
VERDICT_OF = q.VERDICT_OF  # verdict code (reviewer * 4 + code: & 3) → verdict

CATEGORIES = (Verdict.same.value, Verdict.different.value, Verdict.cannot_tell.value)
BAND_WIDTH = q.BAND_WIDTH
HOURS_CHART = 24
FLAG_DAYS_CHART = 14


@dataclass
class PairAgreement:
    a: str
    b: str
    items: int
    agreement: float
    kappa: float | None


@dataclass
class KnownAnswerScore:
    recognizer: str
    answered: int
    correct: int
    cannot_tell: int
    standing: str = ""
    same_answered: int = 0
    same_correct: int = 0
    different_answered: int = 0
    different_correct: int = 0

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.answered if self.answered else None

    @property
    def same_bounds(self) -> tuple[float, float]:
        return wilson(self.same_correct, self.same_answered)

    @property
    def different_bounds(self) -> tuple[float, float]:
        return wilson(self.different_correct, self.different_answered)


@dataclass
class RoundTally:
    """Completed rounds with this number, by what each decided on its own."""

    round: int
    completed: int = 0
    flagged: int = 0
    cleared: int = 0
    disputed: int = 0

    @property
    def dispute_rate(self) -> float | None:
        return self.disputed / self.completed if self.completed else None


@dataclass
class Throughput:
    recognizer: str
    verdicts: int
    active_hours: int

    @property
    def per_hour(self) -> float:
        return self.verdicts / self.active_hours if self.active_hours else 0.0


@dataclass
class ScoreBand:
    low: float
    high: float
    decided: int
    flagged: int
    cleared: int
    disputed: int

    @property
    def precision(self) -> float | None:
        return self.flagged / self.decided if self.decided else None

    @property
    def label(self) -> str:
        return f"{self.low:.1f}–{self.high:.1f}"


@dataclass
class Confusion:
    """What recognizer a said (rows) against what b said (columns) on the rounds they completed together;
    ``counts`` keyed "a_verdict|b_verdict"."""

    a: str
    b: str
    counts: dict[str, int]

    def cell(self, x: str, y: str) -> int:
        return self.counts.get(f"{x}|{y}", 0)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class WeekTrend:
    """One week (starting Monday, UTC) of the period."""

    week: dt.date
    items: int = 0
    agreement: float | None = None
    kappa: float | None = None
    first_rounds: int = 0
    disputed_first_round: int = 0
    decided: int = 0
    mean_wait_seconds: float | None = None

    @property
    def dispute_rate(self) -> float | None:
        return self.disputed_first_round / self.first_rounds if self.first_rounds else None


MAX_WINDOW_DAYS = 3660
WINDOW_CHOICES = (7, 30, 90)


@dataclass(frozen=True)
class Window:
    """A period, UTC: ``since`` inclusive, ``until`` exclusive; None = unbounded."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None
    label: str = "all time"
    days: int | None = None

    @property
    def bounded(self) -> bool:
        return self.since is not None or self.until is not None

    def contains(self, at: dt.datetime | None) -> bool:
        if not self.bounded:
            return True
        if at is None:
            return False
        at = _aware(at)
        return (self.since is None or at >= self.since) and (self.until is None or at < self.until)

    def query(self) -> str:
        """The query string that selects this window again ('' for all time)."""
        if self.days is not None:
            return f"days={self.days}"
        parts = []
        if self.since is not None:
            parts.append(f"since={self.since.date().isoformat()}")
        if self.until is not None:
            parts.append(f"until={(self.until - dt.timedelta(days=1)).date().isoformat()}")
        return "&".join(parts)


class BadWindow(ValueError):
    """The period asked for cannot be read; the message says why."""


def _day(value: str, name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        raise BadWindow(f"The {name} date must be a date like 2026-03-01.") from None


def parse_window(days: str | None = None, since: str | None = None, until: str | None = None,
                 now: dt.datetime | None = None) -> Window:
    """The window asked for by ``days`` (the last N days) or ``since``/``until`` (dates, both
    included); nothing = all time. :class:`BadWindow` with a plain message otherwise."""
    days, since, until = (v.strip() if v else "" for v in (days, since, until))
    if days and (since or until):
        raise BadWindow("Choose either the last N days or a range of dates, not both.")
    now = _aware(now or utcnow())
    if days:
        if not days.isdigit() or not 1 <= int(days) <= MAX_WINDOW_DAYS:
            raise BadWindow(f"The number of days must be a whole number from 1 to {MAX_WINDOW_DAYS}.")
        n = int(days)
        return Window(now - dt.timedelta(days=n), None, f"last {n} day{'s' if n > 1 else ''}", n)
    if not (since or until):
        return Window()
    start = _day(since, "start (since)") if since else None
    end = _day(until, "end (until)") if until else None
    if start and end and end < start:
        raise BadWindow("The end date (until) is before the start date (since).")
    lo = dt.datetime.combine(start, dt.time(), dt.UTC) if start else None
    hi = dt.datetime.combine(end, dt.time(), dt.UTC) + dt.timedelta(days=1) if end else None
    label = f"{start.isoformat() if start else 'the start'} to {end.isoformat() if end else 'now'}"
    return Window(lo, hi, label)


@dataclass
class Metrics:
    computed_at: dt.datetime
    window: Window = field(default_factory=Window)
    items: int = 0
    raw_agreement: float | None = None
    fleiss_kappa: float | None = None
    pairs: list[PairAgreement] = field(default_factory=list)
    decided: int = 0
    first_rounds: int = 0
    disputed_first_round: int = 0
    rounds: list[RoundTally] = field(default_factory=list)
    disputed_for_good: int = 0
    voided_verdicts: int = 0
    known_answer: list[KnownAnswerScore] = field(default_factory=list)
    throughput: list[Throughput] = field(default_factory=list)
    hourly: list[tuple[dt.datetime, int]] = field(default_factory=list)
    outcome_seconds_p50: float | None = None
    outcome_seconds_p95: float | None = None
    outcomes_timed: int = 0
    queue_slots: int = 0
    queue_candidates: int = 0
    queue_oldest_seconds: float | None = None
    queue_median_seconds: float | None = None
    flags_raised: int = 0
    flags_by_status: dict[str, int] = field(default_factory=dict)
    flags_daily: list[tuple[dt.date, int]] = field(default_factory=list)
    bands: list[ScoreBand] = field(default_factory=list)
    confusion: list[Confusion] = field(default_factory=list)
    weeks: list[WeekTrend] = field(default_factory=list)

    @property
    def dispute_rate(self) -> float | None:
        return self.disputed_first_round / self.first_rounds if self.first_rounds else None


# Statistics
def cohen_kappa(pairs: list[tuple[str, str]]) -> float | None:
    """Cohen's kappa for two raters over the same items; None when chance agreement is total."""
    n = len(pairs)
    if n == 0:
        return None
    po = sum(1 for x, y in pairs if x == y) / n
    ca = Counter(x for x, _ in pairs)
    cb = Counter(y for _, y in pairs)
    pe = sum((ca[k] / n) * (cb[k] / n) for k in CATEGORIES)
    if math.isclose(pe, 1.0):
        return None
    return (po - pe) / (1 - pe)


def fleiss_kappa(items: list[list[str]]) -> float | None:
    """Fleiss' kappa for items each rated by the same number of raters (here two)."""
    if not items:
        return None
    n = len(items[0])
    if n < 2 or any(len(i) != n for i in items):
        raise ValueError("every item needs the same number (≥2) of ratings")
    big_n = len(items)
    totals: Counter[str] = Counter()
    p_bar = 0.0
    for ratings in items:
        counts = Counter(ratings)
        totals.update(counts)
        p_bar += (sum(c * c for c in counts.values()) - n) / (n * (n - 1))
    p_bar /= big_n
    pe = sum((totals[k] / (big_n * n)) ** 2 for k in CATEGORIES)
    if math.isclose(pe, 1.0):
        return None
    return (p_bar - pe) / (1 - pe)


def cohen_from_counts(counts: Counter[tuple[str, str]]) -> float | None:
    """Cohen's kappa from counts of (rater a, rater b) category pairs; as :func:`cohen_kappa`."""
    n = sum(counts.values())
    if n == 0:
        return None
    po = sum(c for (x, y), c in counts.items() if x == y) / n
    ca: Counter[str] = Counter()
    cb: Counter[str] = Counter()
    for (x, y), c in counts.items():
        ca[x] += c
        cb[y] += c
    pe = sum((ca[k] / n) * (cb[k] / n) for k in CATEGORIES)
    if math.isclose(pe, 1.0):
        return None
    return (po - pe) / (1 - pe)


def fleiss_from_counts(counts: Counter[tuple[str, str]]) -> float | None:
    """Fleiss' kappa for items rated twice, from counts of (rating, rating); as :func:`fleiss_kappa`."""
    n = sum(counts.values())
    if n == 0:
        return None
    p_bar = sum(c for (x, y), c in counts.items() if x == y) / n
    totals: Counter[str] = Counter()
    for (x, y), c in counts.items():
        totals[x] += c
        totals[y] += c
    pe = sum((totals[k] / (2 * n)) ** 2 for k in CATEGORIES)
    if math.isclose(pe, 1.0):
        return None
    return (p_bar - pe) / (1 - pe)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _aware(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


# Computing (the SQL is in triage.metrics_queries, the per-day summaries in triage.metrics_summary)
def compute(session: Session, window: Window | None = None, *, summaries: bool = True) -> Metrics:
    """Every figure for the window: finished days from their summaries, the rest by live aggregate queries
    (``summaries=False``: everything live, as before the summaries existed)."""
    now = utcnow()
    window = window or Window()
    m = Metrics(computed_at=now, window=window)
    users = {uid: (name, standing) for uid, name, standing in
             session.execute(select(User.id, User.username, User.qualification)).all()}
    names = {uid: name for uid, (name, _) in users.items()}
    parts = (summary.plan(session, window.since, window.until, now) if summaries
             else summary.Plan(live=[q.Span(window.since, window.until)]))
    f = summary.figures(session, parts)
    _agreement(m, f.pairs, f.by_week, names)
    _outcomes(m, f.by_band)
    _known_answer(m, f.known, users)
    _throughput(m, f.throughput, names)
    chart_start = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=HOURS_CHART - 1)
    recent = q.hourly_counts(session, chart_start)
    m.hourly = [(chart_start + dt.timedelta(hours=i), recent[chart_start + dt.timedelta(hours=i)])
                for i in range(HOURS_CHART)]
    m.outcomes_timed = f.durations.n
    m.outcome_seconds_p50, m.outcome_seconds_p95 = f.durations.percentiles(50, 95)
    m.voided_verdicts = f.voided
    m.queue_slots, m.queue_candidates, m.queue_oldest_seconds, m.queue_median_seconds = q.queue_figures(session, now)
    today = now.date()
    m.flags_by_status, per_day = q.flag_counts(session, window, today - dt.timedelta(days=FLAG_DAYS_CHART - 1))
    m.flags_raised = sum(m.flags_by_status.values())
    m.flags_daily = [(today - dt.timedelta(days=i), per_day[today - dt.timedelta(days=i)])
                     for i in range(FLAG_DAYS_CHART - 1, -1, -1)]
    m.weeks = _weeks(f.by_week, f.waits)
    return m


def _is_disputed(x: str, y: str) -> bool:
    return not (x == y and x in (Verdict.same.value, Verdict.different.value))


def _agreement(m: Metrics, pair_counts: Counter[tuple[int, int]],
               by_week: Counter[tuple[dt.date, int, str, str]], names: dict[int, str]) -> None:
    """Kappa (pairwise and Fleiss), raw agreement, round tallies, confusion matrices, dispute rate."""
    tallies: dict[int, RoundTally] = {}
    everything: Counter[tuple[str, str]] = Counter()
    for (_, rnd, va, vb), n in by_week.items():
        everything[(va, vb)] += n
        tally = tallies.setdefault(rnd, RoundTally(rnd))
        tally.completed += n
        if va == vb == Verdict.same.value:
            tally.flagged += n
        elif va == vb == Verdict.different.value:
            tally.cleared += n
        else:
            tally.disputed += n
    m.rounds = [tallies[r] for r in sorted(tallies)]
    m.first_rounds = tallies[1].completed if 1 in tallies else 0
    m.disputed_first_round = tallies[1].disputed if 1 in tallies else 0
    m.items = sum(everything.values())
    if m.items:
        m.raw_agreement = sum(n for (x, y), n in everything.items() if x == y) / m.items
        m.fleiss_kappa = fleiss_from_counts(everything)
    pairs: dict[tuple[int, int], Counter[tuple[str, str]]] = defaultdict(Counter)
    verdict = VERDICT_OF
    for (lo, hi), n in pair_counts.items():
        if n:
            pairs[(lo >> 2, hi >> 2)][(verdict[lo & 3], verdict[hi & 3])] += n
    ordered = sorted(pairs.items(), key=lambda kv: (names.get(kv[0][0], ""), names.get(kv[0][1], "")))
    for (a, b), counts in ordered:
        total = sum(counts.values())
        name_a, name_b = names.get(a, str(a)), names.get(b, str(b))
        m.pairs.append(PairAgreement(name_a, name_b, total, sum(n for (x, y), n in counts.items() if x == y) / total,
                                     cohen_from_counts(counts)))
        m.confusion.append(Confusion(name_a, name_b, {f"{x}|{y}": counts[(x, y)]
                                                      for x in CATEGORIES for y in CATEGORIES}))


def _outcomes(m: Metrics, counts: Counter[tuple[str, int, bool]]) -> None:
    """Decided real candidates, those disputed for good, matcher precision by score band."""
    n_bands = round(1 / BAND_WIDTH)
    bands: dict[int, ScoreBand] = {}
    for (status, raw, last), n in counts.items():
        m.decided += n
        m.disputed_for_good += n if status == CandidateStatus.disputed.value and last else 0
        i = min(n_bands - 1, max(0, raw))
        band = bands.setdefault(i, ScoreBand(i * BAND_WIDTH, (i + 1) * BAND_WIDTH, 0, 0, 0, 0))
        band.decided += n
        setattr(band, status, getattr(band, status) + n)
    m.bands = [bands[i] for i in sorted(bands)]


def _known_answer(m: Metrics, counts: Counter[tuple[int, str, str]], users: dict[int, tuple[str, str]]) -> None:
    ka: dict[int, KnownAnswerScore] = {}
    for (uid, truth, verdict), n in counts.items():
        name, standing = users.get(uid, ("?", ""))
        score = ka.setdefault(uid, KnownAnswerScore(name, 0, 0, 0, standing))
        right = n if verdict == truth else 0
        score.answered += n
        score.correct += right
        score.cannot_tell += n if verdict == Verdict.cannot_tell.value else 0
        if truth == Verdict.same.value:
            score.same_answered += n
            score.same_correct += right
        else:
            score.different_answered += n
            score.different_correct += right
    m.known_answer = sorted(ka.values(), key=lambda k: k.recognizer)


def _throughput(m: Metrics, counts: dict[int, tuple[int, int]], names: dict[int, str]) -> None:
    m.throughput = sorted((Throughput(names.get(uid, "?"), n, hours) for uid, (n, hours) in counts.items()),
                          key=lambda t: t.recognizer)


def _weeks(by_week: Counter[tuple[dt.date, int, str, str]],
           waits: dict[dt.date, tuple[int, float]]) -> list[WeekTrend]:
    """Per week (Monday, UTC): agreement and Fleiss' kappa over completed rounds, first-round dispute
    rate, and the mean wait of the candidates decided in it (created → decided)."""
    ratings: dict[dt.date, Counter[tuple[str, str]]] = defaultdict(Counter)
    weeks: dict[dt.date, WeekTrend] = {}
    for (week, rnd, x, y), n in by_week.items():
        ratings[week][(x, y)] += n
        trend = weeks.setdefault(week, WeekTrend(week))
        if rnd == 1:
            trend.first_rounds += n
            trend.disputed_first_round += n if _is_disputed(x, y) else 0
    for week, (n, total) in waits.items():
        trend = weeks.setdefault(week, WeekTrend(week))
        trend.decided = n
        trend.mean_wait_seconds = total / n if n else None
    for week, counts in ratings.items():
        trend = weeks[week]
        trend.items = sum(counts.values())
        trend.agreement = sum(n for (x, y), n in counts.items() if x == y) / trend.items
        trend.kappa = fleiss_from_counts(counts)
    return [weeks[w] for w in sorted(weeks)]


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def export_csv(m: Metrics) -> str:
    """One long table: metric, key, value, n."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["metric", "key", "value", "n"])
    w.writerow(["computed_at", "", m.computed_at.isoformat(), ""])
    w.writerow(["window", m.window.label, m.window.since.isoformat() if m.window.since else "",
                m.window.until.isoformat() if m.window.until else ""])
    w.writerow(["raw_agreement", "all", _fmt(m.raw_agreement), m.items])
    w.writerow(["fleiss_kappa", "all", _fmt(m.fleiss_kappa), m.items])
    for p in m.pairs:
        w.writerow(["cohen_kappa", f"{p.a}|{p.b}", _fmt(p.kappa), p.items])
        w.writerow(["pair_agreement", f"{p.a}|{p.b}", _fmt(p.agreement), p.items])
    w.writerow(["dispute_rate", "all", _fmt(m.dispute_rate), m.first_rounds])
    for r in m.rounds:
        w.writerow(["round_dispute_rate", r.round, _fmt(r.dispute_rate), r.completed])
        w.writerow(["round_flagged", r.round, r.flagged, r.completed])
        w.writerow(["round_cleared", r.round, r.cleared, r.completed])
    w.writerow(["disputed_after_last_round", "all", m.disputed_for_good, ""])
    w.writerow(["voided_verdicts", "all", m.voided_verdicts, ""])
    w.writerow(["decided_candidates", "all", m.decided, ""])
    for k in m.known_answer:
        w.writerow(["known_answer_accuracy", k.recognizer, _fmt(k.accuracy), k.answered])
        w.writerow(["known_answer_cannot_tell", k.recognizer, k.cannot_tell, k.answered])
        w.writerow(["known_same_accuracy", k.recognizer,
                    _fmt(k.same_correct / k.same_answered if k.same_answered else None), k.same_answered])
        w.writerow(["known_different_accuracy", k.recognizer,
                    _fmt(k.different_correct / k.different_answered if k.different_answered else None),
                    k.different_answered])
        w.writerow(["recognizer_standing", k.recognizer, k.standing, ""])
    for t in m.throughput:
        w.writerow(["verdicts_per_active_hour", t.recognizer, f"{t.per_hour:.2f}", t.verdicts])
    for hour, count in m.hourly:
        w.writerow(["verdicts_in_hour", hour.isoformat(), count, ""])
    w.writerow(["sighting_to_outcome_seconds_p50", "all", _fmt(m.outcome_seconds_p50), m.outcomes_timed])
    w.writerow(["sighting_to_outcome_seconds_p95", "all", _fmt(m.outcome_seconds_p95), m.outcomes_timed])
    w.writerow(["queue_depth_slots", "all", m.queue_slots, ""])
    w.writerow(["queue_depth_candidates", "all", m.queue_candidates, ""])
    w.writerow(["queue_oldest_seconds", "all", _fmt(m.queue_oldest_seconds), m.queue_candidates])
    w.writerow(["queue_median_age_seconds", "all", _fmt(m.queue_median_seconds), m.queue_candidates])
    w.writerow(["flags_raised", "all", m.flags_raised, ""])
    for status, n in sorted(m.flags_by_status.items()):
        w.writerow(["flags_by_status", status, n, ""])
    for day, n in m.flags_daily:
        w.writerow(["flags_raised_on", day.isoformat(), n, ""])
    for b in m.bands:
        w.writerow(["matcher_precision", b.label, _fmt(b.precision), b.decided])
    for c in m.confusion:
        total = c.total
        w.writerows(["confusion", f"{c.a}={x}|{c.b}={y}", c.counts.get(f"{x}|{y}", 0), total]
                    for x in CATEGORIES for y in CATEGORIES)
    for wk in m.weeks:
        week = wk.week.isoformat()
        w.writerow(["week_agreement", week, _fmt(wk.agreement), wk.items])
        w.writerow(["week_fleiss_kappa", week, _fmt(wk.kappa), wk.items])
        w.writerow(["week_dispute_rate", week, _fmt(wk.dispute_rate), wk.first_rounds])
        w.writerow(["week_mean_wait_seconds", week, _fmt(wk.mean_wait_seconds), wk.decided])
    return out.getvalue()
