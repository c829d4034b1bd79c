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
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from sqlmodel import Session, col, select

from triage.clock import utcnow
from triage.models import Candidate, CandidateStatus, Flag, ReviewSlot, Sighting, User, Verdict
from triage.qualification import wilson

# As triage.review.MAX_ROUNDS (not imported: metrics reads the tables only).
MAX_ROUNDS = 3

CATEGORIES = (Verdict.same.value, Verdict.different.value, Verdict.cannot_tell.value)
BAND_WIDTH = 0.1
HOURS_CHART = 24
FLAG_DAYS_CHART = 14
DECIDED = (CandidateStatus.flagged.value, CandidateStatus.cleared.value, CandidateStatus.disputed.value)


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


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def _aware(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


# Computing
def compute(session: Session, window: Window | None = None) -> Metrics:
    now = utcnow()
    window = window or Window()
    m = Metrics(computed_at=now, window=window)
    users = session.exec(select(User)).all()
    names = {u.id: u.username for u in users}
    standings = {u.id: u.qualification for u in users}
    candidates = {c.id: c for c in session.exec(select(Candidate)).all()}
    slots = session.exec(select(ReviewSlot).order_by(col(ReviewSlot.candidate_id), col(ReviewSlot.round),
                                                     col(ReviewSlot.slot_no))).all()

    rounds: dict[tuple[int, int], list[ReviewSlot]] = defaultdict(list)
    for s in slots:
        if s.voided_at is not None:
            m.voided_verdicts += int(s.verdict is not None and window.contains(s.voided_at))
        elif not s.withdrawn:
            rounds[(s.candidate_id, s.round)].append(s)

    # Agreement over completed rounds of real candidates.
    items: list[list[str]] = []
    by_pair: dict[tuple[int, int], list[tuple[str, str]]] = defaultdict(list)
    first_round: dict[int, list[str]] = {}
    tallies: dict[int, RoundTally] = {}
    for (cid, rnd), rs in rounds.items():
        cand = candidates[cid]
        if cand.is_known_answer or len(rs) != 2 or any(s.verdict is None for s in rs):
            continue
        completed = max((_aware(s.verdict_at) for s in rs if s.verdict_at is not None), default=None)
        if not window.contains(completed):
            continue
        x, y = sorted(rs, key=lambda s: s.reviewer_id or 0)
        items.append([x.verdict, y.verdict])  # type: ignore[list-item]
        by_pair[(x.reviewer_id, y.reviewer_id)].append((x.verdict, y.verdict))  # type: ignore[index, arg-type]
        if rnd == 1:
            first_round[cid] = [x.verdict, y.verdict]  # type: ignore[list-item]
        tally = tallies.setdefault(rnd, RoundTally(rnd))
        tally.completed += 1
        if x.verdict == y.verdict == Verdict.same.value:
            tally.flagged += 1
        elif x.verdict == y.verdict == Verdict.different.value:
            tally.cleared += 1
        else:
            tally.disputed += 1
    m.rounds = [tallies[r] for r in sorted(tallies)]
    m.items = len(items)
    if items:
        m.raw_agreement = sum(1 for a, b in items if a == b) / len(items)
        m.fleiss_kappa = fleiss_kappa(items)
    for (a, b), ps in sorted(by_pair.items(), key=lambda kv: (names.get(kv[0][0], ""), names.get(kv[0][1], ""))):
        m.pairs.append(PairAgreement(names.get(a, str(a)), names.get(b, str(b)), len(ps),
                                     sum(1 for x, y in ps if x == y) / len(ps), cohen_kappa(ps)))

    # Disputes and outcomes of real candidates.
    real_decided = [c for c in candidates.values()
                    if not c.is_known_answer and c.status in DECIDED and window.contains(c.decided_at)]
    m.decided = len(real_decided)
    m.disputed_for_good = sum(1 for c in real_decided
                              if c.status == CandidateStatus.disputed.value and c.current_round >= MAX_ROUNDS)
    m.first_rounds = len(first_round)
    for fr in first_round.values():
        if not (fr[0] == fr[1] and fr[0] in (Verdict.same.value, Verdict.different.value)):
            m.disputed_first_round += 1

    # Known-answer accuracy.
    ka: dict[int, KnownAnswerScore] = {}
    for s in slots:
        cand = candidates[s.candidate_id]
        if not cand.is_known_answer or s.verdict is None or s.reviewer_id is None or not window.contains(s.verdict_at):
            continue
        score = ka.setdefault(s.reviewer_id, KnownAnswerScore(names.get(s.reviewer_id, "?"), 0, 0, 0,
                                                              standings.get(s.reviewer_id, "")))
        right = int(s.verdict == cand.known_truth)
        score.answered += 1
        score.correct += right
        score.cannot_tell += int(s.verdict == Verdict.cannot_tell.value)
        if cand.known_truth == Verdict.same.value:
            score.same_answered += 1
            score.same_correct += right
        else:
            score.different_answered += 1
            score.different_correct += right
    m.known_answer = sorted(ka.values(), key=lambda k: k.recognizer)

    # Throughput.
    hours: dict[int, set[dt.datetime]] = defaultdict(set)
    counts: Counter[int] = Counter()
    recent: Counter[dt.datetime] = Counter()
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    chart_start = this_hour - dt.timedelta(hours=HOURS_CHART - 1)
    for s in slots:
        if s.verdict is None or s.verdict_at is None or s.reviewer_id is None:
            continue
        at = _aware(s.verdict_at).replace(minute=0, second=0, microsecond=0)
        if window.contains(s.verdict_at):
            hours[s.reviewer_id].add(at)
            counts[s.reviewer_id] += 1
        if at >= chart_start:
            recent[at] += 1
    m.throughput = sorted((Throughput(names.get(uid, "?"), counts[uid], len(hours[uid])) for uid in counts),
                          key=lambda t: t.recognizer)
    m.hourly = [(chart_start + dt.timedelta(hours=i), recent[chart_start + dt.timedelta(hours=i)])
                for i in range(HOURS_CHART)]

    # Time from sighting to outcome.
    sightings = {s.id: s for s in session.exec(select(Sighting)).all()}
    durations = []
    for c in real_decided:
        sighting = sightings.get(c.sighting_id)  # type: ignore[arg-type]
        if sighting is not None and c.decided_at is not None:
            durations.append((_aware(c.decided_at) - _aware(sighting.created_at)).total_seconds())
    m.outcomes_timed = len(durations)
    m.outcome_seconds_p50 = percentile(durations, 50)
    m.outcome_seconds_p95 = percentile(durations, 95)

    # Queue depth and age.
    open_real = {cid: c for cid, c in candidates.items()
                 if c.status == CandidateStatus.open.value and not c.is_known_answer}
    m.queue_slots = sum(1 for s in slots if s.candidate_id in open_real and s.verdict is None and not s.withdrawn
                        and s.round == open_real[s.candidate_id].current_round)
    m.queue_candidates = len(open_real)
    ages = [(now - _aware(c.priority_at)).total_seconds() for c in open_real.values()]
    m.queue_oldest_seconds = max(ages) if ages else None
    m.queue_median_seconds = percentile(ages, 50)

    # Flags.
    flags = session.exec(select(Flag)).all()
    in_window = [f for f in flags if window.contains(f.raised_at)]
    m.flags_raised = len(in_window)
    m.flags_by_status = dict(Counter(f.status for f in in_window))
    today = now.date()
    per_day = Counter(_aware(f.raised_at).date() for f in flags)
    m.flags_daily = [(today - dt.timedelta(days=i), per_day[today - dt.timedelta(days=i)])
                     for i in range(FLAG_DAYS_CHART - 1, -1, -1)]

    # Matcher precision by score band.
    bands: dict[int, ScoreBand] = {}
    n_bands = round(1 / BAND_WIDTH)
    for c in real_decided:
        i = min(n_bands - 1, max(0, int(c.score / BAND_WIDTH)))
        band = bands.setdefault(i, ScoreBand(i * BAND_WIDTH, (i + 1) * BAND_WIDTH, 0, 0, 0, 0))
        band.decided += 1
        band.flagged += int(c.status == CandidateStatus.flagged.value)
        band.cleared += int(c.status == CandidateStatus.cleared.value)
        band.disputed += int(c.status == CandidateStatus.disputed.value)
    m.bands = [bands[i] for i in sorted(bands)]
    return m


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
    return out.getvalue()
