"""Per-day summaries of the managers' figures, so a period's figures cost a few index reads however much
work it holds.

What is summarised: for each finished UTC day, the same aggregate queries as the live figures
(``triage.metrics_queries``), grouped by day as well, and their grouped results are stored —
rounds completed by (round, reviewer and verdict, reviewer and verdict) and by (round, verdict,
verdict) alone (the weekly trends and round tallies read those few rows), decisions by (status, score
band, last round) with their waits, sighting-to-outcome seconds by bucket (the values kept, so
percentiles stay exact), known-answer verdicts by (reviewer, truth, verdict), verdicts and active
hours per reviewer, verdicts voided. Counts add up across days; an active hour never spans two days;
a percentile sums the buckets' counts, then sorts only the values of the bucket it falls in.

Only what can no longer change is summarised. A day's verdicts, their rounds and voiding keep their
times for good (a late verdict on an old candidate is a verdict of today; a suspension voids verdicts
*today*, on rounds not yet complete); the retention sweep moves rows into ``metric_slot`` /
``metric_outcome`` with the same times, and every figure reads both. The one fact that changes after
its day is a dispute a manager may still escalate: escalation re-opens it and drops its decision.
Those decisions are never summarised; they are read live (an index on status and decision time), as
are today, the partial first day of a "last N days" window, any day not (yet) summarised, the queue
and the flags (their status moves on).

When: the worker's sweep (``metrics_sweep``) summarises the days missing since the first verdict on
record, newest first, a bounded number per sweep (a year of history in the first one). Consecutive
missing days are summarised together, set-based: each figure is one query over the run of days
grouped by day, the rows written in bulk, up to ``DAYS_PER_TRANSACTION`` days in one transaction with
their ``metric_day`` rows (a day is summarised entirely or not at all; a second worker summarising
the same days fails on those rows' key, and the days still missing are then written one by one). A
day is summarised once it ended ``SETTLE`` ago, so a transaction stamped before midnight and committed
after it is never missed. A day summarised under other definitions (``VERSION``: band width, rounds,
buckets, tallies) is read live and summarised again.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, and_, delete, false, func, insert, or_, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from triage import metrics_queries as q
from triage.clock import utcnow
from triage.models import (
    MetricDay,
    MetricDayDuration,
    MetricDayKnown,
    MetricDayOutcome,
    MetricDayRound,
    MetricDayTally,
    MetricDayVerdicts,
    table_of,
)

log = logging.getLogger("miatari.metrics")

BAND_WIDTH = q.BAND_WIDTH
MAX_ROUNDS = q.MAX_ROUNDS
BUCKETS_PER_DOUBLING = 16
VERSION = f"band{BAND_WIDTH}-rounds{MAX_ROUNDS}-buckets{BUCKETS_PER_DOUBLING}-tallies"
SETTLE = dt.timedelta(minutes=10)
DAYS_PER_SWEEP = 400  # a year of history in the first sweep
DAYS_PER_TRANSACTION = 31
DAY_TABLES = (MetricDayRound, MetricDayTally, MetricDayOutcome, MetricDayDuration, MetricDayKnown,
              MetricDayVerdicts)
DAYS = MetricDay.__table__.c  # type: ignore[attr-defined]
ROUNDS = MetricDayRound.__table__.c  # type: ignore[attr-defined]
TALLIES = MetricDayTally.__table__.c  # type: ignore[attr-defined]
OUTCOMES = MetricDayOutcome.__table__.c  # type: ignore[attr-defined]
DURATIONS = MetricDayDuration.__table__.c  # type: ignore[attr-defined]
KNOWN = MetricDayKnown.__table__.c  # type: ignore[attr-defined]
VERDICTS = MetricDayVerdicts.__table__.c  # type: ignore[attr-defined]


def bucket(seconds: float) -> int:
    """A duration's bucket: 0 below a second, then BUCKETS_PER_DOUBLING per doubling."""
    return 0 if seconds < 1 else 1 + int(math.log2(seconds) * BUCKETS_PER_DOUBLING)


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), dt.UTC)


def day_span(day: dt.date) -> q.Span:
    return q.Span(_midnight(day), _midnight(day + dt.timedelta(days=1)))


# Writing
def summarise_day(session: Session, day: dt.date) -> None:
    """Write the day's rows and its ``metric_day`` row in the caller's transaction (not committed)."""
    summarise_days(session, [day])


def summarise_days(session: Session, days: Iterable[dt.date]) -> None:
    """Write the rows of these days and their ``metric_day`` rows in the caller's transaction (not committed).

    Set-based: each figure is one aggregate query over the span from the first to the last of the days,
    grouped by day as well (a day's rows are what that query gives over the day alone); rows of days in the
    span but not asked for are left out. Rows are written in bulk."""
    wanted = sorted(set(days))
    if not wanted:
        return
    keep = set(wanted)
    span = q.Span(_midnight(wanted[0]), _midnight(wanted[-1] + dt.timedelta(days=1)))
    for table in (*DAY_TABLES, MetricDay):
        session.execute(delete(table).where(table_of(table).c.day.in_(wanted)))
    voided = q.voided_days(session, span)
    now = utcnow()
    rows: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    rows[MetricDay] = [{"day": d, "version": VERSION, "voided": voided.get(d, 0), "summarised_at": now}
                       for d in wanted]
    rounds = {key: n for key, n in q.round_days(session, span).items() if key[0] in keep}
    rows[MetricDayRound] = [{"day": d, "round": rnd, "lo": lo, "hi": hi, "n": n}
                            for (d, rnd, lo, hi), n in rounds.items()]
    tallies: Counter[tuple[dt.date, int, int, int]] = Counter()
    for (d, rnd, lo, hi), n in rounds.items():
        tallies[(d, rnd, lo % 4, hi % 4)] += n
    rows[MetricDayTally] = [{"day": d, "round": rnd, "lo_code": a, "hi_code": b, "n": n}
                            for (d, rnd, a, b), n in tallies.items()]
    outcomes = q.outcome_days(session, span, BAND_WIDTH, MAX_ROUNDS, q.SETTLED)
    rows[MetricDayOutcome] = [{"day": d, "status": status, "band": band, "final": final, "n": n,
                               "wait_seconds": wait}
                              for (d, status, band, final), (n, wait) in outcomes.items() if d in keep]
    by_bucket: dict[tuple[dt.date, int], list[float]] = defaultdict(list)
    for d, seconds in q.outcome_seconds_days(session, span, q.SETTLED, MAX_ROUNDS):
        if d in keep:
            by_bucket[(d, bucket(seconds))].append(seconds)
    rows[MetricDayDuration] = [{"day": d, "bucket": b, "n": len(values), "seconds": sorted(values)}
                               for (d, b), values in by_bucket.items()]
    rows[MetricDayKnown] = [{"day": d, "reviewer_id": uid, "truth": truth, "verdict": verdict, "n": n}
                            for (d, uid, truth, verdict), n in q.known_answer_days(session, span).items()
                            if d in keep]
    rows[MetricDayVerdicts] = [{"day": d, "reviewer_id": uid, "verdicts": n, "hours": hours}
                               for (d, uid), (n, hours) in q.throughput_days(session, span).items() if d in keep]
    # The day rows first: a second worker writing the same days fails on their key before anything else.
    for table in (MetricDay, *DAY_TABLES):
        if rows[table]:
            session.execute(insert(table_of(table)), rows[table])
    session.flush()


def missing_days(session: Session, now: dt.datetime | None = None) -> list[dt.date]:
    """Finished days since the first verdict on record without a current summary, newest first."""
    now = now or utcnow()
    first = q.earliest(session)
    if first is None:
        return []
    last = (now - SETTLE).date() - dt.timedelta(days=1)
    done = set(session.execute(select(DAYS.day).where(DAYS.version == VERSION)).scalars())
    days = [last - dt.timedelta(days=i) for i in range((last - first.date()).days + 1)]
    return [d for d in days if d not in done]


def _runs(days: list[dt.date], most: int) -> list[list[dt.date]]:
    """Consecutive days together, at most ``most`` a run."""
    runs: list[list[dt.date]] = []
    for day in sorted(days):
        if runs and runs[-1][-1] == day - dt.timedelta(days=1) and len(runs[-1]) < most:
            runs[-1].append(day)
        else:
            runs.append([day])
    return runs


def summarise(engine: Engine, now: dt.datetime | None = None, limit: int = DAYS_PER_SWEEP) -> int:
    """Summarise up to ``limit`` missing days, newest first: consecutive days together (up to
    ``DAYS_PER_TRANSACTION`` in one set-based pass and one transaction); returns how many."""
    with Session(engine) as session:
        days = missing_days(session, now)[:limit]
    written = 0
    for run in sorted(_runs(days, DAYS_PER_TRANSACTION), key=lambda r: r[-1], reverse=True):
        written += _write(engine, run, now)
    if written:
        log.info("metrics: summarised %d day(s)", written)
    return written


def _write(engine: Engine, run: list[dt.date], now: dt.datetime | None) -> int:
    with Session(engine) as session:
        try:
            summarise_days(session, run)
            session.commit()
            return len(run)
        except IntegrityError:  # another worker summarised some of them meanwhile: the rest, one by one
            session.rollback()
    written = 0
    for day in run:
        with Session(engine) as session:
            if day not in missing_days(session, now):
                continue
            try:
                summarise_day(session, day)
                session.commit()
                written += 1
            except IntegrityError:
                session.rollback()
    return written


def metrics_sweep(engine: Engine, settings: Any, services: Any) -> int:
    return summarise(engine)


def forget(session: Session, since: dt.date | None = None) -> int:
    """Drop the summaries (from ``since`` on): those days are read live until summarised again."""
    days = select(DAYS.day)
    if since is not None:
        days = days.where(DAYS.day >= since)
    gone = list(session.execute(days).scalars())
    for table in (*DAY_TABLES, MetricDay):
        session.execute(delete(table).where(table_of(table).c.day.in_(gone)))
    return len(gone)


# Reading
@dataclass
class Plan:
    """A window cut into runs of summarised days [start, end) and live spans (everything else)."""

    runs: list[tuple[dt.date, dt.date]] = field(default_factory=list)
    live: list[q.Span] = field(default_factory=list)


def plan(session: Session, since: dt.datetime | None, until: dt.datetime | None, now: dt.datetime) -> Plan:
    """Which whole days of the window are summarised (read from the summaries) and what is read live."""
    first = None if since is None else since.date() + dt.timedelta(days=0 if since == _midnight(since.date()) else 1)
    end = now.date() if until is None else min(now.date(), until.date())  # today is never summarised
    stmt = select(DAYS.day).where(DAYS.version == VERSION, DAYS.day < end)
    if first is not None:
        stmt = stmt.where(DAYS.day >= first)
    runs: list[tuple[dt.date, dt.date]] = []
    for day in session.execute(stmt.order_by(DAYS.day)).scalars():
        day = q.as_day(day)
        if runs and runs[-1][1] == day:
            runs[-1] = (runs[-1][0], day + dt.timedelta(days=1))
        else:
            runs.append((day, day + dt.timedelta(days=1)))
    live, cursor = [], since
    for start, stop in runs:
        if cursor is None or cursor < _midnight(start):
            live.append(q.Span(cursor, _midnight(start)))
        cursor = _midnight(stop)
    if until is None or cursor is None or cursor < until:
        live.append(q.Span(cursor, until))
    return Plan(runs, live)


def _in_runs(column: Any, runs: list[tuple[dt.date, dt.date]]) -> Any:
    return or_(*(and_(column >= a, column < b) for a, b in runs)) if runs else false()


@dataclass
class Durations:
    """Sighting-to-outcome seconds: bucket counts from the summaries (values loaded on demand) and live values."""

    counts: Counter[int] = field(default_factory=Counter)
    values: list[float] = field(default_factory=list)
    load: Callable[[Iterable[int]], Iterable[tuple[int, list[float]]]] = field(default=lambda buckets: ())

    @property
    def n(self) -> int:
        return sum(self.counts.values()) + len(self.values)

    def percentiles(self, *qs: float) -> list[float | None]:
        """Nearest-rank percentiles (as triage.metrics.percentile) over the summarised and live values."""
        total = self.n
        if not total:
            return [None for _ in qs]
        live = Counter(bucket(v) for v in self.values)
        counts = self.counts + live
        ranks = [max(1, math.ceil(x / 100 * total)) for x in qs]
        where: list[tuple[int, int]] = []
        for rank in ranks:
            below = 0
            for b in sorted(counts):
                if below + counts[b] >= rank:
                    where.append((b, rank - below))
                    break
                below += counts[b]
        wanted = {b for b, _ in where}
        stored: dict[int, list[float]] = defaultdict(list)
        for b, values in self.load(wanted):
            stored[b].extend(values)
        for v in self.values:
            if bucket(v) in wanted:
                stored[bucket(v)].append(v)
        return [sorted(stored[b])[i - 1] for b, i in where]


@dataclass
class Figures:
    """Every summable figure of a window, from the summaries and live SQL together (see triage.metrics)."""

    pairs: Counter[tuple[int, int]] = field(default_factory=Counter)  # (reviewer * 4 + verdict code), a < b
    by_week: Counter[tuple[dt.date, int, str, str]] = field(default_factory=Counter)
    by_band: Counter[tuple[str, int, bool]] = field(default_factory=Counter)
    waits: dict[dt.date, tuple[int, float]] = field(default_factory=dict)
    known: Counter[tuple[int, str, str]] = field(default_factory=Counter)
    throughput: dict[int, tuple[int, int]] = field(default_factory=dict)
    voided: int = 0
    durations: Durations = field(default_factory=Durations)

    def add_waits(self, waits: dict[dt.date, tuple[int, float]]) -> None:
        for week, (n, total) in waits.items():
            old = self.waits.get(week, (0, 0.0))
            self.waits[week] = (old[0] + n, old[1] + total)

    def add_throughput(self, counts: dict[int, tuple[int, int]]) -> None:
        for uid, (n, hours) in counts.items():
            old = self.throughput.get(uid, (0, 0))
            self.throughput[uid] = (old[0] + n, old[1] + hours)


def figures(session: Session, parts: Plan) -> Figures:
    """The window's figures: summarised runs, the live decisions that may still change in them, live spans."""
    f = Figures()
    for span in parts.live:
        _add_live(session, f, span, q.ALL)
    if parts.runs:
        for start, stop in parts.runs:  # decisions a manager may still re-open are never summarised
            span = q.Span(_midnight(start), _midnight(stop))
            outcomes = q.outcome_counts(session, span, BAND_WIDTH, MAX_ROUNDS, q.WAITING)
            f.by_band.update(outcomes.by_band)
            f.add_waits(outcomes.waits)
            f.durations.values += q.outcome_seconds(session, span, q.WAITING, MAX_ROUNDS)
        _add_summaries(session, f, parts.runs)
    return f


def _add_live(session: Session, f: Figures, span: q.Span, part: str) -> None:
    rounds = q.round_counts(session, span)
    f.pairs.update(rounds.pairs)
    f.by_week.update(rounds.by_week)
    outcomes = q.outcome_counts(session, span, BAND_WIDTH, MAX_ROUNDS, part)
    f.by_band.update(outcomes.by_band)
    f.add_waits(outcomes.waits)
    f.durations.values += q.outcome_seconds(session, span, part, MAX_ROUNDS)
    f.known.update(q.known_answer_counts(session, span))
    f.add_throughput(q.throughput_counts(session, span))
    f.voided += q.voided_count(session, span)


def _week(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.weekday())


def _add_summaries(session: Session, f: Figures, runs: list[tuple[dt.date, dt.date]]) -> None:
    r, o, d = ROUNDS, OUTCOMES, DURATIONS
    k, v = KNOWN, VERDICTS
    in_runs = _in_runs(r.day, runs)
    f.pairs.update({(lo, hi): int(n) for lo, hi, n in session.execute(
        select(r.lo, r.hi, func.sum(r.n)).where(in_runs).group_by(r.lo, r.hi))})
    # By day in SQL (a date function on every row costs more there), by week here.
    weeks: dict[Any, dt.date] = {}
    t = TALLIES
    for day, rnd, a, b, n in session.execute(select(t.day, t.round, t.lo_code, t.hi_code, func.sum(t.n))
                                             .where(_in_runs(t.day, runs))
                                             .group_by(t.day, t.round, t.lo_code, t.hi_code)):
        week = weeks.get(day) or weeks.setdefault(day, _week(q.as_day(day)))
        f.by_week[(week, rnd, q.VERDICT_OF[a], q.VERDICT_OF[b])] += int(n)
    for status, band, final, n in session.execute(select(o.status, o.band, o.final, func.sum(o.n))
                                                  .where(_in_runs(o.day, runs)).group_by(o.status, o.band, o.final)):
        f.by_band[(status, band, bool(final))] += n
    f.add_waits(_summed_waits(session, runs))
    for b, n in session.execute(select(d.bucket, func.sum(d.n)).where(_in_runs(d.day, runs)).group_by(d.bucket)):
        f.durations.counts[b] += n
    f.durations.load = lambda buckets: ((b, values) for b, values in session.execute(
        select(d.bucket, d.seconds).where(_in_runs(d.day, runs), d.bucket.in_(list(buckets)))))
    for uid, truth, verdict, n in session.execute(select(k.reviewer_id, k.truth, k.verdict, func.sum(k.n))
                                                  .where(_in_runs(k.day, runs))
                                                  .group_by(k.reviewer_id, k.truth, k.verdict)):
        f.known[(uid, truth, verdict)] += n
    f.add_throughput({uid: (int(n), int(h)) for uid, n, h in session.execute(
        select(v.reviewer_id, func.sum(v.verdicts), func.sum(v.hours)).where(_in_runs(v.day, runs))
        .group_by(v.reviewer_id))})
    f.voided += int(session.execute(select(func.coalesce(func.sum(DAYS.voided), 0))
                                    .where(_in_runs(DAYS.day, runs))).scalar_one())


def _summed_waits(session: Session, runs: list[tuple[dt.date, dt.date]]) -> dict[dt.date, tuple[int, float]]:
    o = OUTCOMES
    out: dict[dt.date, tuple[int, float]] = {}
    for day, n, total in session.execute(select(o.day, func.sum(o.n), func.sum(o.wait_seconds))
                                         .where(_in_runs(o.day, runs)).group_by(o.day)):
        week = _week(q.as_day(day))
        old = out.get(week, (0, 0.0))
        out[week] = (old[0] + int(n), old[1] + float(total))
    return out
