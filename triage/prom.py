"""Prometheus series: read from the database at scrape time, plus this process's own.

Series about the queue, the verdicts, flags, disputes, known-answer accuracy and
matching jobs are computed by :class:`DatabaseCollector` from stored rows when
``/metrics`` is scraped, so they are the same whichever process answers and however
many processes there are.  Series only a process knows (its HTTP latencies, its
gallery index) live in prometheus_client's multiprocess mode: each process writes
them to memory-mapped files in ``<data_dir>/prometheus`` and a scrape adds up the
files of every process on the host (docs/operations.md).
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import os
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import Gauge, Histogram, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, case, func
from sqlmodel import Session, col, select

from triage.clock import utcnow
from triage.models import (
    MATCH_JOB,
    AuditEntry,
    Candidate,
    CandidateStatus,
    Flag,
    FlagStatus,
    GalleryChange,
    Job,
    JobStatus,
    ReviewSlot,
    Sighting,
    Verdict,
)
from triage.storage import pid_alive

log = logging.getLogger("miatari.prom")

MULTIPROC_DIR_NAME = "prometheus"
# Upload → matched: seconds to minutes; matched → outcome: minutes to a week (two people must find the time).
MATCH_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
OUTCOME_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 21600, 43200, 86400, 172800, 604800)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
DECIDED = (CandidateStatus.flagged.value, CandidateStatus.cleared.value, CandidateStatus.disputed.value)


# Process-local series ------------------------------------------------------------------------------------
def process_label() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class ProcessMetrics:
    """This process's own series, created once the value store (in memory or multiprocess files) is set."""

    def __init__(self) -> None:
        self.http = Histogram("miatari_http_request_duration_seconds",
                              "HTTP request latency by route template, method and status.",
                              ["method", "route", "status"], buckets=HTTP_BUCKETS)
        self.gallery_photos = Gauge("miatari_gallery_reference_photos",
                                    "Reference photos in this process's gallery index.", ["process"],
                                    multiprocess_mode="liveall")
        self.gallery_applied = Gauge("miatari_gallery_applied_change",
                                     "Id of the last gallery change this process's index applied.", ["process"],
                                     multiprocess_mode="liveall")
        self.gallery_synced = Gauge("miatari_gallery_last_sync_timestamp_seconds",
                                    "When this process's gallery index last caught up with the database.",
                                    ["process"], multiprocess_mode="liveall")


_process: ProcessMetrics | None = None
_multiproc_dir: Path | None = None


def clean_dead_files(directory: Path) -> int:
    """Remove the files of processes that are gone (a process starting must not wipe its live siblings')."""
    removed = 0
    for path in directory.glob("*.db"):
        try:
            pid = int(path.stem.rsplit("_", 1)[1])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not pid_alive(pid):
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def setup_process(data_dir: Path) -> ProcessMetrics:
    """Use ``<data_dir>/prometheus`` for this process's series (once per process; later calls keep it)."""
    global _process, _multiproc_dir
    if _process is not None:
        return _process
    directory = (data_dir / MULTIPROC_DIR_NAME).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    removed = clean_dead_files(directory)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    values.ValueClass = values.MultiProcessValue()
    _multiproc_dir = directory
    _process = ProcessMetrics()
    atexit.register(mark_dead)
    log.info("process metrics in %s (%d file(s) of ended processes removed)", directory, removed)
    return _process


def process_metrics() -> ProcessMetrics | None:
    return _process


def multiproc_dir() -> Path | None:
    return _multiproc_dir


def mark_dead() -> None:
    """At exit: this process's live gauges leave the scrape."""
    if _multiproc_dir is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid(), str(_multiproc_dir))


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    if _process is not None:
        _process.http.labels(method, route, str(status)).observe(seconds)


def gallery_synced(photos: int, applied_change_id: int) -> None:
    """Called by the gallery each time its index caught up with the database."""
    if _process is not None:
        label = process_label()
        _process.gallery_photos.labels(label).set(photos)
        _process.gallery_applied.labels(label).set(applied_change_id)
        _process.gallery_synced.labels(label).set(time.time())


# Database-derived series ---------------------------------------------------------------------------------
def _seconds_between(session: Session, start: Any, end: Any) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86400.0


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def _histogram(session: Session, name: str, doc: str, seconds: Any, where: Sequence[Any], joins: Sequence[Any],
               buckets: Sequence[float]) -> HistogramMetricFamily:
    stmt = select(func.count(), func.coalesce(func.sum(seconds), 0.0),
                  *[func.coalesce(func.sum(case((seconds <= b, 1), else_=0)), 0) for b in buckets])
    for target, on in joins:
        stmt = stmt.join(target, on)
    row = session.exec(stmt.where(*where)).one()
    count, total = int(row[0]), float(row[1])
    cumulative: list[tuple[str, float]] = [(str(float(b)), int(row[i + 2])) for i, b in enumerate(buckets)]
    family = HistogramMetricFamily(name, doc)
    family.add_metric([], cumulative + [("+Inf", count)], total)
    return family


class DatabaseCollector(Collector):
    """Every series that stored rows can answer, computed at scrape time (true for any number of processes)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        with Session(self.engine) as session:
            yield from collect_from(session)


def collect_from(session: Session) -> list[Metric]:
    """Every database-derived series, read at scrape time (true whatever the number of processes)."""
    now = utcnow()
    return [*_queue_series(session, now), *_lease_series(session), _verdict_series(session),
            *_flag_series(session), *_known_answer_series(session), *_job_series(session),
            _gallery_tip(session)]


def _queue_series(session: Session, now: dt.datetime) -> list[Metric]:
    """The review queue: unanswered, unwithdrawn slots of the current round of open real candidates."""
    waiting = (select(func.count(), func.min(Candidate.priority_at))
               .select_from(ReviewSlot).join(Candidate, col(Candidate.id) == col(ReviewSlot.candidate_id))
               .where(Candidate.status == CandidateStatus.open.value, col(Candidate.known_truth).is_(None),
                      col(ReviewSlot.verdict).is_(None), ReviewSlot.withdrawn == False,  # noqa: E712
                      col(ReviewSlot.voided_at).is_(None), ReviewSlot.round == Candidate.current_round))
    depth, oldest = session.exec(waiting).one()
    candidates_open = session.exec(select(func.count()).select_from(Candidate).where(
        Candidate.status == CandidateStatus.open.value, col(Candidate.known_truth).is_(None))).one()
    leased = session.exec(select(func.count()).select_from(ReviewSlot).where(
        col(ReviewSlot.verdict).is_(None), col(ReviewSlot.lease_expires_at) > now,
        col(ReviewSlot.voided_at).is_(None))).one()
    return [
        GaugeMetricFamily("miatari_queue_depth", "Review slots waiting for a verdict (real candidates).",
                          value=int(depth)),
        GaugeMetricFamily("miatari_queue_candidates", "Open real candidates.", value=int(candidates_open)),
        GaugeMetricFamily("miatari_queue_oldest_waiting_seconds",
                          "Age of the oldest waiting task by its queue time (0 when none waits).",
                          value=max((now - _aware(oldest)).total_seconds(), 0.0) if oldest else 0.0),
        GaugeMetricFamily("miatari_review_leases_held", "Review slots leased now, unexpired.", value=int(leased)),
    ]


def _lease_series(session: Session) -> list[Metric]:
    """Leases granted and expired: counted from the audit log (kept for the audit retention, not the sightings')."""
    actions = dict(session.exec(select(AuditEntry.action, func.count()).where(
        col(AuditEntry.action).in_(("review.lease", "review.lease_expired")),
        AuditEntry.outcome == "ok").group_by(AuditEntry.action)).all())
    return [CounterMetricFamily("miatari_review_leases_granted", "Review leases granted (audit log).",
                                value=int(actions.get("review.lease", 0))),
            CounterMetricFamily("miatari_review_leases_expired", "Review leases that ran out (audit log).",
                                value=int(actions.get("review.lease_expired", 0)))]


def _verdict_series(session: Session) -> Metric:
    """Verdicts by kind, real and known-answer apart (voided verdicts of a suspended author included)."""
    verdicts = CounterMetricFamily("miatari_verdicts", "Verdicts given, by verdict and task kind.",
                                   labels=["verdict", "task"])
    known = col(Candidate.known_truth).is_not(None)
    rows = session.exec(select(ReviewSlot.verdict, known, func.count())
                        .join(Candidate, col(Candidate.id) == col(ReviewSlot.candidate_id))
                        .where(col(ReviewSlot.verdict).is_not(None))
                        .group_by(ReviewSlot.verdict, known)).all()
    counts = {(v, "known_answer" if k else "real"): int(n) for v, k, n in rows}
    for verdict in Verdict:
        for task in ("real", "known_answer"):
            verdicts.add_metric([verdict.value, task], counts.get((verdict.value, task), 0))
    return verdicts


def _flag_series(session: Session) -> list[Metric]:
    """Flags and disputes."""
    by_status = dict(session.exec(select(Flag.status, func.count()).group_by(Flag.status)).all())
    flags = GaugeMetricFamily("miatari_flags", "Arrest flags by status.", labels=["status"])
    for status in FlagStatus:
        flags.add_metric([status.value], int(by_status.get(status.value, 0)))
    disputes = session.exec(select(func.count()).select_from(Candidate).where(
        Candidate.status == CandidateStatus.disputed.value, col(Candidate.known_truth).is_(None))).one()
    return [CounterMetricFamily("miatari_flags_raised", "Arrest flags raised.",
                                value=sum(int(n) for n in by_status.values())),
            CounterMetricFamily("miatari_flags_closed", "Arrest flags closed by a manager.",
                                value=int(by_status.get(FlagStatus.closed.value, 0))),
            flags,
            GaugeMetricFamily("miatari_disputes_open", "Real candidates disputed (waiting for a manager).",
                              value=int(disputes))]


def _known_answer_series(session: Session) -> list[Metric]:
    """Known-answer accuracy per recognizer, on known-same and known-different pairs apart."""
    accuracy = GaugeMetricFamily("miatari_known_answer_accuracy",
                                 "Share of correct verdicts on known-answer pairs, by recognizer id and truth.",
                                 labels=["recognizer_id", "truth"])
    answered = GaugeMetricFamily("miatari_known_answer_answered",
                                 "Known-answer pairs answered, by recognizer id and truth.",
                                 labels=["recognizer_id", "truth"])
    right = func.sum(case((col(ReviewSlot.verdict) == col(Candidate.known_truth), 1), else_=0))
    for reviewer, truth, n, correct in session.exec(
            select(ReviewSlot.reviewer_id, Candidate.known_truth, func.count(), right)
            .join(Candidate, col(Candidate.id) == col(ReviewSlot.candidate_id))
            .where(col(Candidate.known_truth).is_not(None), col(ReviewSlot.verdict).is_not(None))
            .group_by(col(ReviewSlot.reviewer_id), col(Candidate.known_truth))
            .order_by(col(ReviewSlot.reviewer_id), col(Candidate.known_truth))).all():
        answered.add_metric([str(reviewer), str(truth)], int(n))
        accuracy.add_metric([str(reviewer), str(truth)], int(correct) / int(n))
    return [accuracy, answered]


def _job_series(session: Session) -> list[Metric]:
    """Matching jobs by state, and the two latencies."""
    states = dict(session.exec(select(Job.status, func.count()).where(Job.kind == MATCH_JOB)
                               .group_by(Job.status)).all())
    jobs = GaugeMetricFamily("miatari_matching_jobs", "Sighting matching jobs by state.", labels=["state"])
    for state in JobStatus:
        jobs.add_metric([state.value], int(states.get(state.value, 0)))
    return [
        jobs,
        _histogram(session, "miatari_upload_to_matched_seconds",
                   "From a sighting's upload to its matching finished (faces searched).",
                   _seconds_between(session, Sighting.created_at, Sighting.matched_at),
                   [col(Sighting.matched_at).is_not(None)], [], MATCH_BUCKETS),
        _histogram(session, "miatari_matched_to_outcome_seconds",
                   "From a sighting matched to each of its candidates' outcome (flagged, cleared, disputed).",
                   _seconds_between(session, Sighting.matched_at, Candidate.decided_at),
                   [col(Candidate.status).in_(DECIDED), col(Candidate.known_truth).is_(None),
                    col(Candidate.decided_at).is_not(None), col(Sighting.matched_at).is_not(None)],
                   [(Sighting, col(Sighting.id) == col(Candidate.sighting_id))], OUTCOME_BUCKETS),
    ]


def _gallery_tip(session: Session) -> Metric:
    """The gallery's change log tip, against which each process's index is measured."""
    tip = session.exec(select(func.max(GalleryChange.id))).one() or 0
    return GaugeMetricFamily("miatari_gallery_change_tip", "Id of the newest gallery change in the database.",
                             value=int(tip))


def gallery_lag(session: Session, applied: dict[str, float]) -> GaugeMetricFamily:
    """Per process: how long the oldest gallery change it has not applied has waited (0 when in step)."""
    now = utcnow()
    family = GaugeMetricFamily("miatari_gallery_sync_lag_seconds",
                               "Age of the oldest gallery change a process has not applied yet (0 = in step).",
                               labels=["process"])
    for process, change_id in sorted(applied.items()):
        first = session.exec(select(func.min(GalleryChange.created_at))
                             .where(col(GalleryChange.id) > int(change_id))).one()
        family.add_metric([process], max((now - _aware(first)).total_seconds(), 0.0) if first else 0.0)
    return family
