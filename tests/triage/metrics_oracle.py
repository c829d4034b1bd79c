"""The previous implementation of ``triage.metrics.compute``, kept only as the oracle of the tests
(and the baseline of ``bench/metrics.py``): it loads every candidate, slot, sighting and flag into
Python. It knows nothing of what the retention sweep keeps, so compare it on data never swept."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict

from sqlmodel import Session, col, select

from triage.clock import utcnow
from triage.metrics import (
    BAND_WIDTH,
    FLAG_DAYS_CHART,
    HOURS_CHART,
    MAX_ROUNDS,
    KnownAnswerScore,
    Metrics,
    PairAgreement,
    RoundTally,
    ScoreBand,
    Throughput,
    Window,
    _aware,
    cohen_kappa,
    fleiss_kappa,
    percentile,
)
from triage.models import Candidate, CandidateStatus, Flag, ReviewSlot, Sighting, User, Verdict

DECIDED = (CandidateStatus.flagged.value, CandidateStatus.cleared.value, CandidateStatus.disputed.value)


def compute_in_python(session: Session, window: Window | None = None) -> Metrics:
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
        assert x.verdict is not None and y.verdict is not None and x.reviewer_id is not None \
            and y.reviewer_id is not None  # a completed round: both slots answered
        items.append([x.verdict, y.verdict])
        by_pair[(x.reviewer_id, y.reviewer_id)].append((x.verdict, y.verdict))
        if rnd == 1:
            first_round[cid] = [x.verdict, y.verdict]
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
        sighting = sightings.get(c.sighting_id)
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
