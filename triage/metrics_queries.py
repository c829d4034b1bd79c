"""The SQL behind ``triage.metrics``: aggregates computed by the database, on SQLite and PostgreSQL alike.

Every figure is read from two *sources* with the same columns: the live tables (``review_slot``,
``candidate``) and what the retention sweep kept of deleted candidates (``metric_slot``,
``metric_outcome``, see ``triage.retention``). Counts from the two are added; the few figures that are
not sums (distinct active hours, percentiles) are computed over both at once.

Nothing here loads rows one by one: each function is one or two aggregate queries returning a few
grouped rows (or, for the two percentiles, one column of numbers).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Date,
    Float,
    Integer,
    Select,
    and_,
    case,
    cast,
    false,
    func,
    literal,
    select,
    type_coerce,
    union_all,
)
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session
from sqlmodel.sql.sqltypes import UTCDateTime

from triage.models import (
    Candidate,
    CandidateStatus,
    Flag,
    MetricOutcome,
    MetricSlot,
    ReviewSlot,
    Sighting,
    Verdict,
    table_of,
)

# As triage.review.MAX_ROUNDS (not imported: metrics reads the tables only).
MAX_ROUNDS = 3
BAND_WIDTH = 0.1
DECIDED = (CandidateStatus.flagged.value, CandidateStatus.cleared.value, CandidateStatus.disputed.value)
# A verdict as a number 1..3, so that one MIN/MAX of ``reviewer * 4 + code`` yields a reviewer and their verdict.
CODES = {Verdict.same.value: 1, Verdict.different.value: 2, Verdict.cannot_tell.value: 3}
VERDICT_OF = {v: k for k, v in CODES.items()}

SLOTS = table_of(ReviewSlot).c
KEPT_SLOTS = table_of(MetricSlot).c
CANDIDATES = table_of(Candidate).c
KEPT = table_of(MetricOutcome).c
SIGHTINGS = table_of(Sighting).c
FLAGS = table_of(Flag).c


# Dialect helpers
def _pg(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _hour(session: Session, column: Any) -> Any:
    if _pg(session):
        return func.date_trunc("hour", func.timezone("UTC", column))
    return func.strftime("%Y-%m-%d %H:00:00", column)


def _day(session: Session, column: Any) -> Any:
    if _pg(session):
        return cast(func.timezone("UTC", column), Date)
    return func.date(column)


def _week(session: Session, column: Any) -> Any:
    """The Monday (UTC) of the week of ``column``."""
    if _pg(session):
        return cast(func.date_trunc("week", func.timezone("UTC", column)), Date)
    return func.date(column, "weekday 0", "-6 days")


def _seconds(session: Session, later: Any, earlier: Any) -> Any:
    if _pg(session):
        return cast(func.extract("epoch", later - earlier), Float)
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


def _band(session: Session, score: Any, width: float) -> Any:
    ratio = score / type_coerce(literal(width), Float)
    return func.floor(ratio) if _pg(session) else cast(ratio, Integer)


def as_hour(value: Any) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.UTC)


def as_day(value: Any) -> dt.date:
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class Span:
    """A stretch of time, UTC: ``since`` inclusive, ``until`` exclusive; None = unbounded (a window's shape)."""

    since: dt.datetime | None = None
    until: dt.datetime | None = None

    @property
    def bounded(self) -> bool:
        return self.since is not None or self.until is not None


def earliest(session: Session) -> dt.datetime | None:
    """The first verdict or decision on record, live or kept (each a MIN read from an index)."""
    columns: tuple[Any, ...] = (SLOTS.verdict_at, KEPT_SLOTS.verdict_at, CANDIDATES.decided_at, KEPT.decided_at)
    found = [session.execute(select(func.min(column))).scalar_one() for column in columns]
    return min((_aware(v) for v in found if v is not None), default=None)


BEGINNING = dt.datetime(1, 1, 2, tzinfo=dt.UTC)
END = dt.datetime(9999, 12, 30, tzinfo=dt.UTC)


def within(window: Any, column: Any) -> list[ColumnElement[bool]]:
    """Conditions keeping ``column`` inside the window (none for all time). A window open on one side gets
    the far end of time on the other: SQLite, without statistics, reads a one-sided range as too wide to use
    the column's index and scans another one instead."""
    column = type_coerce(column, UTCDateTime())
    if window.since is None and window.until is None:
        return []
    return [column >= (window.since or BEGINNING), column < (window.until or END)]


def _real(c: Any) -> ColumnElement[bool]:
    """A real candidate (no known truth), said so that no index on the truth is used to find them: there are
    nearly all candidates, and SQLite without statistics would otherwise read them all from that index."""
    return func.coalesce(c.known_truth, "") == ""


def _known_ids() -> Select[Any]:
    return select(CANDIDATES.id).where(CANDIDATES.known_truth.is_not(None))


def _together(session: Session, stmts: list[Any]) -> Any:
    """The rows of several selects of the same columns (live and kept sources) in one round trip."""
    return session.execute(stmts[0] if len(stmts) == 1 else union_all(*stmts))


# Rounds
def _rounds(session: Session, window: Any, kept: bool) -> Any:
    """One row per completed round of a real candidate: round, (reviewer*4+code) low and high, completion.

    A period's rounds are read from the candidates with a verdict in it (the verdicts' index), each joined to
    its slots through the index on the candidate: whatever the planner thinks of the counting slots, the
    query reads only the period's candidates, never every slot."""
    s = KEPT_SLOTS if kept else SLOTS
    table = s.candidate_id.table
    code = case(*((s.verdict == v, n) for v, n in CODES.items()), else_=None)
    key = s.reviewer_id * 4 + code
    done = func.max(s.verdict_at)
    stmt = select(s.round.label("rnd"), func.min(key).label("lo"), func.max(key).label("hi"), done.label("done"))
    if window.bounded:  # a round completed in the window has a verdict in it: read only those candidates
        w = table.alias("in_window")
        ids = select(w.c.candidate_id).where(*within(window, w.c.verdict_at)).distinct().subquery("ids")
        stmt = stmt.select_from(ids).join(table, s.candidate_id == ids.c.candidate_id)
    else:
        stmt = stmt.select_from(table)
    if kept:
        stmt = stmt.where(s.known_truth.is_(None))
    else:  # a real candidate (a slot always has its candidate)
        stmt = stmt.join(table_of(Candidate), CANDIDATES.id == s.candidate_id).where(_real(CANDIDATES))
    stmt = (stmt.where(s.voided_at.is_(None), s.withdrawn == false())
            .group_by(s.candidate_id, *([s.archived_at] if kept else []), s.round)  # (a reused number: apart)
            .having(func.count() == 2, func.count(s.verdict) == 2, *within(window, done)))
    return stmt.subquery()


@dataclass
class RoundCounts:
    """Completed rounds, counted by pair (lo, hi: reviewer * 4 + verdict code, a < b) and by (week, round,
    verdict a, verdict b): the round tallies and the overall agreement are sums over the weeks."""

    pairs: Counter[tuple[int, int]]
    by_week: Counter[tuple[dt.date, int, str, str]]


def _round_groups(session: Session, window: Any, key: Any) -> Iterable[Any]:
    """(key(completion), round, lo, hi, how many) over both sources; ``key`` is _week or _day."""
    stmts = []
    for kept in (False, True):
        r = _rounds(session, window, kept)
        at = key(session, r.c.done)
        stmts.append(select(at, r.c.rnd, r.c.lo, r.c.hi, func.count()).group_by(at, r.c.rnd, r.c.lo, r.c.hi))
    return _together(session, stmts)


def round_counts(session: Session, window: Any) -> RoundCounts:
    """One pass over the rounds, grouped by (week, round, a, b with their verdicts); summed both ways here."""
    pairs: Counter[tuple[int, int]] = Counter()
    by_week: Counter[tuple[dt.date, int, str, str]] = Counter()
    for day, rnd, lo, hi, n in _round_groups(session, window, _week):
        pairs[(lo, hi)] += n
        by_week[(as_day(day), rnd, VERDICT_OF[lo % 4], VERDICT_OF[hi % 4])] += n
    return RoundCounts(pairs, by_week)


def round_days(session: Session, window: Any) -> Counter[tuple[dt.date, int, int, int]]:
    """Completed rounds by (day of completion, round, lo, hi): what the per-day summaries keep."""
    out: Counter[tuple[dt.date, int, int, int]] = Counter()
    for day, rnd, lo, hi, n in _round_groups(session, window, _day):
        out[(as_day(day), rnd, lo, hi)] += n
    return out


# Outcomes
# Which decided candidates a query reads (the per-day summaries keep only what can no longer change):
ALL = "all"          # every decided candidate, live and kept
SETTLED = "settled"  # kept ones, and live ones except disputes a manager may still escalate (re-opened then)
WAITING = "waiting"  # those live disputes alone
PARTS = (ALL, SETTLED, WAITING)


def _part(c: Any, part: str, last_round: int) -> list[ColumnElement[bool]]:
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}")
    if c is KEPT or part == ALL:
        return []
    waiting = and_(c.status == CandidateStatus.disputed.value, c.current_round < last_round)
    return [waiting if part == WAITING else ~waiting]


def _outcome_sources(part: str) -> tuple[Any, ...]:
    return (CANDIDATES,) if part == WAITING else (CANDIDATES, KEPT)


@dataclass
class OutcomeCounts:
    """Decided real candidates by (status, raw score band index, disputed in the last round), and per
    week of decision (Monday, UTC) how many and the sum of their waits (created → decided), s."""

    by_band: Counter[tuple[str, int, bool]]
    waits: dict[dt.date, tuple[int, float]]
    band_waits: defaultdict[tuple[str, int, bool], float]


def _outcome_groups(session: Session, window: Any, width: float, last_round: int, part: str,
                    key: Any) -> Iterable[tuple[Any, str, int, bool, int, float]]:
    """(key(decision), status, band, last round, how many, sum of waits) of decided real candidates."""
    stmts = []
    for c in _outcome_sources(part):
        band, at = _band(session, c.score, width), key(session, c.decided_at)
        final = c.current_round >= last_round
        stmt = (select(at, c.status, band, final, func.count(),
                       func.sum(_seconds(session, c.decided_at, c.created_at)))
                .where(c.decided_at.is_not(None), *within(window, c.decided_at), *_part(c, part, last_round))
                .group_by(at, c.status, band, final))
        stmts.append(stmt.where(_real(c)) if c is CANDIDATES else stmt)
    for day, status, i, last, n, total in _together(session, stmts):
        if status in DECIDED:
            yield day, status, int(i), bool(last), n, float(total or 0.0)


def outcome_counts(session: Session, window: Any, width: float, last_round: int, part: str = ALL) -> OutcomeCounts:
    """One pass over a period's decisions (read from one index: the status is grouped on, not filtered)."""
    out = OutcomeCounts(Counter(), {}, defaultdict(float))
    for day, status, i, last, n, total in _outcome_groups(session, window, width, last_round, part, _week):
        out.by_band[(status, i, last)] += n
        out.band_waits[(status, i, last)] += total
        old = out.waits.get(as_day(day), (0, 0.0))
        out.waits[as_day(day)] = (old[0] + n, old[1] + total)
    return out


def outcome_days(session: Session, window: Any, width: float, last_round: int,
                 part: str = ALL) -> dict[tuple[dt.date, str, int, bool], tuple[int, float]]:
    """Decisions by (day, status, band, last round): how many and the sum of their waits."""
    out: dict[tuple[dt.date, str, int, bool], tuple[int, float]] = {}
    for day, status, i, last, n, total in _outcome_groups(session, window, width, last_round, part, _day):
        old = out.get((as_day(day), status, i, last), (0, 0.0))
        out[(as_day(day), status, i, last)] = (old[0] + n, old[1] + total)
    return out


def _outcome_seconds(session: Session, window: Any, part: str, last_round: int,
                     by_day: bool) -> Iterable[Any]:
    """(status, seconds from sighting upload to outcome[, day of decision]) of each decided real candidate."""
    def day(column: Any) -> list[Any]:
        return [_day(session, column)] if by_day else []

    live = (select(CANDIDATES.status, _seconds(session, CANDIDATES.decided_at, SIGHTINGS.created_at).label("s"),
                   *day(CANDIDATES.decided_at))
            .select_from(table_of(Candidate).join(
                table_of(Sighting), SIGHTINGS.id == CANDIDATES.sighting_id))
            .where(_real(CANDIDATES), CANDIDATES.decided_at.is_not(None),
                   *within(window, CANDIDATES.decided_at), *_part(CANDIDATES, part, last_round)))
    kept = (select(KEPT.status, _seconds(session, KEPT.decided_at, KEPT.sighting_created_at).label("s"),
                   *day(KEPT.decided_at))
            .where(KEPT.sighting_created_at.is_not(None),
                   KEPT.decided_at.is_not(None), *within(window, KEPT.decided_at)))
    stmt = live if part == WAITING else union_all(live, kept)
    return (row for row in session.execute(stmt) if row[0] in DECIDED)


def outcome_seconds(session: Session, window: Any, part: str = ALL, last_round: int = 3) -> list[float]:
    """Seconds from sighting upload to outcome of each decided real candidate (one column, both sources)."""
    return [round(float(row[1]), 3) for row in _outcome_seconds(session, window, part, last_round, False)]


def outcome_seconds_days(session: Session, window: Any, part: str = ALL,
                         last_round: int = 3) -> list[tuple[dt.date, float]]:
    """The same seconds, each with its day of decision."""
    rows = _outcome_seconds(session, window, part, last_round, True)
    return [(as_day(day), round(float(v), 3)) for _, v, day in rows]


# Verdicts
def _known_groups(session: Session, window: Any, by_day: bool) -> Iterable[Any]:
    """(reviewer, truth, verdict, how many[, day of the verdict]) of answered known-answer slots."""
    # One query per truth. All time: over the slots of those pairs (found through an index on the truth); a
    # period: over its verdicts (their index), each checked against those pairs (``+ 0``: not by candidate).
    pair = SLOTS.candidate_id + 0 if window.bounded else SLOTS.candidate_id
    live_day = [_day(session, SLOTS.verdict_at)] if by_day else []
    live = [select(SLOTS.reviewer_id, literal(truth), SLOTS.verdict, func.count(), *live_day)
            .where(pair.in_(select(CANDIDATES.id).where(CANDIDATES.known_truth == truth)),
                   SLOTS.verdict.is_not(None), *within(window, SLOTS.verdict_at))  # a verdict has its reviewer
            .group_by(SLOTS.reviewer_id, SLOTS.verdict, *live_day)
            for truth in (Verdict.same.value, Verdict.different.value)]
    kept_day = [_day(session, KEPT_SLOTS.verdict_at)] if by_day else []
    kept = (select(KEPT_SLOTS.reviewer_id, KEPT_SLOTS.known_truth, KEPT_SLOTS.verdict, func.count(), *kept_day)
            .where(KEPT_SLOTS.known_truth.is_not(None), KEPT_SLOTS.verdict.is_not(None),
                   KEPT_SLOTS.reviewer_id.is_not(None), *within(window, KEPT_SLOTS.verdict_at))
            .group_by(KEPT_SLOTS.reviewer_id, KEPT_SLOTS.known_truth, KEPT_SLOTS.verdict, *kept_day))
    return _together(session, [*live, kept])


def known_answer_counts(session: Session, window: Any) -> Counter[tuple[int, str, str]]:
    """Answered known-answer slots by (reviewer, known truth, verdict)."""
    out: Counter[tuple[int, str, str]] = Counter()
    for uid, truth, verdict, n in _known_groups(session, window, False):
        out[(uid, truth, verdict)] += n
    return out


def known_answer_days(session: Session, window: Any) -> Counter[tuple[dt.date, int, str, str]]:
    """The same by day of the verdict: (day, reviewer, known truth, verdict)."""
    out: Counter[tuple[dt.date, int, str, str]] = Counter()
    for uid, truth, verdict, n, day in _known_groups(session, window, True):
        out[(as_day(day), uid, truth, verdict)] += n
    return out


def _verdicts(s: Any, conditions: Iterable[Any]) -> Any:
    # A verdict always has its reviewer (a check constraint); the period's verdicts come from one index.
    return select(s.reviewer_id.label("uid"), s.verdict_at.label("at")).where(
        s.verdict_at.is_not(None), s.verdict.is_not(None), *conditions)


def _throughput_stmt(session: Session, window: Any, by_day: bool) -> Any:
    v = union_all(_verdicts(SLOTS, within(window, SLOTS.verdict_at)),
                  _verdicts(KEPT_SLOTS, within(window, KEPT_SLOTS.verdict_at))).subquery()
    day = [_day(session, v.c.at)] if by_day else []
    return (select(v.c.uid, func.count(), func.count(func.distinct(_hour(session, v.c.at))), *day)
            .group_by(v.c.uid, *day))


def throughput_counts(session: Session, window: Any) -> dict[int, tuple[int, int]]:
    """Per recognizer: verdicts given in the window and distinct clock hours they were given in."""
    return {uid: (n, hours) for uid, n, hours in session.execute(_throughput_stmt(session, window, False))}


def throughput_days(session: Session, window: Any) -> dict[tuple[dt.date, int], tuple[int, int]]:
    """The same per (day, recognizer): an hour never spans two days, so the hours add up."""
    return {(as_day(day), uid): (n, hours)
            for uid, n, hours, day in session.execute(_throughput_stmt(session, window, True))}


def hourly_counts(session: Session, since: dt.datetime) -> Counter[dt.datetime]:
    out: Counter[dt.datetime] = Counter()
    stmts = []
    for s in (SLOTS, KEPT_SLOTS):
        hour = _hour(session, s.verdict_at)
        stmts.append(_verdicts(s, [type_coerce(s.verdict_at, UTCDateTime()) >= since]).with_only_columns(
            hour, func.count()).group_by(hour))
    for at, n in _together(session, stmts):
        out[as_hour(at)] += n
    return out


def voided_count(session: Session, window: Any) -> int:
    return sum(voided_days(session, window, by_day=False).values())


def voided_days(session: Session, window: Any, by_day: bool = True) -> Counter[dt.date | None]:
    """Verdicts voided (their author suspended) in the window, by the day they were voided."""
    out: Counter[dt.date | None] = Counter()
    stmts = []
    for s in (SLOTS, KEPT_SLOTS):
        day = [_day(session, s.voided_at)] if by_day else []
        stmt = (select(func.count(), *day).select_from(s[0].table)
                .where(s.voided_at.is_not(None), s.verdict.is_not(None), *within(window, s.voided_at)))
        stmts.append(stmt.group_by(*day) if by_day else stmt)
    for n, *at in _together(session, stmts):
        out[as_day(at[0]) if by_day else None] += n
    return out


# Queue and flags (live only: the sweep never deletes open candidates nor flags)
def queue_figures(session: Session, now: dt.datetime) -> tuple[int, int, float | None, float | None]:
    """Waiting slots, open real candidates, oldest and median (nearest rank) age in seconds."""
    # Both from index ix_candidate_open_real (status, known truth, age), the slots from ix_review_slot_waiting.
    open_real = (CANDIDATES.status == CandidateStatus.open.value, CANDIDATES.known_truth.is_(None))
    n, oldest = session.execute(select(func.count(), func.min(CANDIDATES.priority_at)).where(*open_real)).one()
    slots = session.execute(
        select(func.count()).select_from(table_of(ReviewSlot).join(
            table_of(Candidate), SLOTS.candidate_id == CANDIDATES.id))
        .where(*open_real, SLOTS.verdict.is_(None), SLOTS.withdrawn == false(),
               SLOTS.round == CANDIDATES.current_round)).scalar_one()
    if not n:
        return slots, 0, None, None
    rank = max(1, -(-n // 2))  # nearest rank of the median age = that rank from the youngest
    median_at = session.execute(select(CANDIDATES.priority_at).where(*open_real)
                                .order_by(CANDIDATES.priority_at.desc()).offset(rank - 1).limit(1)).scalar_one()
    ages = [(now - _aware(at)).total_seconds() for at in (oldest, median_at)]
    return slots, n, ages[0], ages[1]


def _aware(value: Any) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def flag_counts(session: Session, window: Any, since_day: dt.date) -> tuple[dict[str, int], Counter[dt.date]]:
    stmt = select(FLAGS.status, func.count()).where(*within(window, FLAGS.raised_at)).group_by(FLAGS.status)
    by_status: dict[str, int] = {status: n for status, n in session.execute(stmt)}
    start = dt.datetime.combine(since_day, dt.time(), dt.UTC)
    day = _day(session, FLAGS.raised_at)
    daily: Counter[dt.date] = Counter()
    for d, n in session.execute(select(day, func.count()).where(
            type_coerce(FLAGS.raised_at, UTCDateTime()) >= start).group_by(day)):
        daily[as_day(d)] += n
    return by_status, daily
