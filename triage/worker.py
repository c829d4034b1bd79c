"""The worker: owns claiming, leases, logging, retries and failure records.

Jobs themselves are plain functions, listed per kind in a :class:`Registry` that
is handed to the worker where the process is assembled (``miatari.registry``).  A
job function receives a ``JobContext``; it does its slow work outside any transaction and
calls ``ctx.finish_in(session)`` inside its final one, so that the result and
the job's completion commit together (a job whose lease was lost meanwhile
rolls back instead of completing twice).

The worker, not the job, decides when a job has failed for good: a job raises
(a transient failure, retried while ``Job.max_attempts`` allows) or raises
:class:`PermanentJobError` (failed at once).  When a job of a kind ends failed, the
kind's ``on_failed`` function, if it has one, records that on the job's own rows.

Periodic sweeps (expiry, retention) run from the same loop.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlmodel import Session

from triage import jobs
from triage.config import Settings
from triage.models import Job
from triage.storage import ImageStore

if TYPE_CHECKING:
    from triage.services import Services

log = logging.getLogger("miatari.worker")
# One structured line per job run (triage.logging_json): id, kind, outcome, duration.
job_log = logging.getLogger("miatari.jobs")


class LeaseLost(RuntimeError):
    """Another worker took the job over; this run's result must not be kept."""


class PermanentJobError(Exception):
    """The job can never succeed (bad input): fail it without retrying."""


@dataclass
class JobContext:
    engine: Engine
    settings: Settings
    store: ImageStore
    owner: str
    job: Job
    services: Services

    def finish_in(self, session: Session) -> None:
        if not jobs.finish(session, self.job.id, self.owner):  # type: ignore[arg-type]
            raise LeaseLost(f"job {self.job.id} is no longer held by {self.owner}")

    def renew_lease(self) -> None:
        """For long jobs: extend the lease (its own transaction); :class:`LeaseLost` if taken over."""
        with Session(self.engine) as session:
            held = jobs.renew(session, self.job.id, self.owner, self.settings.job_lease_seconds)  # type: ignore[arg-type]
            session.commit()
        if not held:
            raise LeaseLost(f"job {self.job.id} is no longer held by {self.owner}")


JobFunction = Callable[[JobContext], Any]
# Called, in its own transaction, when a job of the kind has failed for good.
FailedFunction = Callable[[Session, "Services", Job], None]
SweepFunction = Callable[[Engine, Settings, "Services"], Any]


@dataclass
class Registry:
    """What a worker runs: job functions by kind, what to do when a kind's job fails for good, and sweeps."""

    jobs: dict[str, JobFunction] = field(default_factory=dict)
    on_failed: dict[str, FailedFunction] = field(default_factory=dict)
    sweeps: dict[str, SweepFunction] = field(default_factory=dict)
    # Cheap sweeps run on every turn of the loop (about each ``worker_poll_seconds``), not every sweep interval.
    ticks: dict[str, SweepFunction] = field(default_factory=dict)
    # Seconds before the next attempt after N failed ones, for kinds that want their own schedule.
    backoff: dict[str, Callable[[int], float]] = field(default_factory=dict)


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


def run_one(services: Services, owner: str, registry: Registry) -> Job | None:
    """Claim and run at most one job of the registry's kinds; return it (or None if the queue was empty)."""
    with Session(services.engine, expire_on_commit=False) as session:
        job = jobs.claim(session, owner, services.settings.job_lease_seconds, tuple(registry.jobs) or None,
                         on_give_up=give_up_hook(services, registry))
    if job is None:
        return None
    run_claimed(services, owner, job, registry)
    return job


def run_claimed(services: Services, owner: str, job: Job, registry: Registry) -> None:
    """Run a job this owner has claimed; a failure is recorded (and retried), never raised."""
    engine = services.engine
    fn = registry.jobs.get(job.kind)
    ctx = JobContext(engine, services.settings, services.store, owner, job, services)
    started = time.monotonic()
    outcome = "done"
    try:
        if fn is None:
            raise PermanentJobError(f"no job function for kind {job.kind!r}")
        fn(ctx)
        log.info("job %s (%s %s) done", job.id, job.kind, job.ref_id)
    except LeaseLost:
        outcome = "lease_lost"
        log.warning("job %s: lease lost, result discarded", job.id)
    except Exception as exc:  # noqa: BLE001 - a worker records failures, it does not die of them
        permanent = isinstance(exc, PermanentJobError)
        log.exception("job %s (%s %s) failed", job.id, job.kind, job.ref_id)
        with Session(engine, expire_on_commit=False) as session:
            failed = jobs.fail(session, job.id, owner,  # type: ignore[arg-type]
                               f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}", retry=not permanent,
                               backoff=registry.backoff.get(job.kind), on_give_up=give_up_hook(services, registry))
            outcome = "retry" if failed is not None and failed.status == "queued" else "failed"
            session.commit()
    job_log.info("job", extra={"fields": {"job_id": job.id, "kind": job.kind, "ref_id": job.ref_id,
                                          "attempt": job.attempts, "outcome": outcome,
                                          "duration_ms": round((time.monotonic() - started) * 1000, 1)}})


def give_up_hook(services: Services, registry: Registry) -> Callable[[Session, Job], None]:
    """What runs when a job has failed for good, in the transaction that fails it: the kind's ``on_failed``.

    A savepoint keeps the failure itself recorded should the hook go wrong."""

    def give_up(session: Session, job: Job) -> None:
        on_failed = registry.on_failed.get(job.kind)
        if on_failed is None:
            return
        try:
            with session.begin_nested():
                on_failed(session, services, job)
        except Exception:  # noqa: BLE001 - the job's failure is recorded all the same
            log.exception("job %s (%s %s): recording its failure failed", job.id, job.kind, job.ref_id)

    return give_up


class Worker:
    """A loop in a thread (embedded) or in the foreground (``miatari worker``)."""

    def __init__(self, services: Services, registry: Registry, *, run_sweeps: bool = True) -> None:
        self.services = services
        self.engine = services.engine
        self.settings = services.settings
        self.store = services.store
        self.registry = registry
        self.run_sweeps = run_sweeps
        self.stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_sweep = 0.0
        self.owner = ""

    def run_sweeps_now(self) -> None:
        for name, fn in list(self.registry.sweeps.items()):
            try:
                fn(self.engine, self.settings, self.services)
            except Exception:  # noqa: BLE001
                log.exception("sweep %s failed", name)
        self._last_sweep = time.monotonic()

    def run_ticks(self) -> None:
        for name, fn in list(self.registry.ticks.items()):
            try:
                fn(self.engine, self.settings, self.services)
            except Exception:  # noqa: BLE001
                log.exception("tick %s failed", name)

    def loop(self) -> None:
        # A stable identity per data folder and slot: jobs a killed run of it held are taken back now.
        from triage.recovery import recover_worker

        identity = recover_worker(self.engine, self.store, self.settings.data_dir).identity
        self.owner = owner = identity.owner
        try:
            self._loop(owner)
        finally:
            identity.release()

    def _loop(self, owner: str) -> None:
        while not self.stop_event.is_set():
            if self.run_sweeps and time.monotonic() - self._last_sweep >= self.settings.sweep_interval_seconds:
                self.run_sweeps_now()
            if self.run_sweeps:
                self.run_ticks()
            try:
                job = run_one(self.services, owner, self.registry)
            except Exception:  # noqa: BLE001 - e.g. the database is briefly unreachable
                log.exception("worker loop error")
                job = None
            if job is None:
                self.stop_event.wait(self.settings.worker_poll_seconds)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.loop, name="miatari-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)
