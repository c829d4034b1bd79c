"""Persistent jobs: claim with a lease, finish once, retry, give up."""

from __future__ import annotations

import threading

from sqlalchemy import Engine
from sqlmodel import Session, select

from triage import jobs
from triage.clock import frozen
from triage.config import Settings
from triage.models import AuditEntry, Job, JobStatus
from triage.services import Services
from triage.storage import ImageStore
from triage.worker import JobContext, PermanentJobError, Registry, Worker, run_one


def _enqueue(engine: Engine, kind: str = "test", ref_id: int = 1, max_attempts: int = 3) -> int:
    with Session(engine) as s:
        job = jobs.enqueue(s, kind, ref_id, max_attempts=max_attempts)
        s.commit()
        return job.pk


def test_enqueue_is_idempotent_per_kind_and_ref(engine: Engine) -> None:
    a = _enqueue(engine, "k", 7)
    b = _enqueue(engine, "k", 7)
    c = _enqueue(engine, "k", 8)
    assert a == b != c
    with Session(engine) as s:
        assert len(s.exec(select(Job)).all()) == 2


def test_claim_leases_and_expired_lease_is_claimed_again(engine: Engine) -> None:
    job_id = _enqueue(engine)
    with frozen() as clock:
        with Session(engine) as s:
            job = jobs.claim(s, "w1", lease_seconds=60)
        assert job is not None and job.id == job_id and job.attempts == 1
        with Session(engine) as s:
            assert jobs.claim(s, "w2", lease_seconds=60) is None  # held
        clock.advance(seconds=61)
        with Session(engine) as s:
            again = jobs.claim(s, "w2", lease_seconds=60)
        assert again is not None and again.lease_owner == "w2" and again.attempts == 2
        # The first worker's late result is refused: the job completes once.
        with Session(engine) as s:
            assert jobs.finish(s, job_id, "w1") is False
            assert jobs.finish(s, job_id, "w2") is True
            s.commit()
        with Session(engine) as s:
            assert s.get_one(Job, job_id).status == JobStatus.done.value
            actions = [e.action for e in s.exec(select(AuditEntry)).all()]
        assert "job.lease_expired" in actions


def test_failure_is_recorded_and_retried_then_given_up(engine: Engine) -> None:
    job_id = _enqueue(engine, max_attempts=2)
    with frozen() as clock:
        for attempt in (1, 2):
            with Session(engine) as s:
                job = jobs.claim(s, "w", lease_seconds=60)
            assert job is not None and job.attempts == attempt
            with Session(engine) as s:
                jobs.fail(s, job_id, "w", f"boom {attempt}")
                s.commit()
            clock.advance(seconds=600)
        with Session(engine) as s:
            job = s.get(Job, job_id)
            assert job is not None and job.status == JobStatus.failed.value and "boom 2" in job.last_error
            assert jobs.claim(s, "w", lease_seconds=60) is None
        with Session(engine) as s:
            jobs.retry(s, job_id)
            s.commit()
        with Session(engine) as s:
            assert jobs.claim(s, "w", lease_seconds=60) is not None


def test_run_one_runs_the_registered_function_and_records_errors(engine: Engine, settings: Settings) -> None:
    calls: list[int] = []

    def ok(ctx: JobContext) -> None:
        calls.append(ctx.job.ref_id)
        with Session(ctx.engine) as s:
            ctx.finish_in(s)
            s.commit()

    def bad(ctx: JobContext) -> None:
        raise PermanentJobError("not an image")

    registry = Registry(jobs={"t_ok": ok, "t_bad": bad})
    ok_id = _enqueue(engine, "t_ok", 5)
    bad_id = _enqueue(engine, "t_bad", 6)
    svc = Services(engine, settings, ImageStore(settings.images_dir))
    assert run_one(svc, "w", registry) is not None
    assert run_one(svc, "w", registry) is not None
    with Session(engine) as s:
        assert s.get_one(Job, ok_id).status == "done"
        bad_job = s.get(Job, bad_id)
        assert bad_job is not None and bad_job.status == "failed"  # permanent: no retry
        assert "not an image" in bad_job.last_error
    assert calls == [5]


def test_concurrent_claims_give_each_job_to_one_worker(engine: Engine) -> None:
    ids = {_enqueue(engine, "c", i) for i in range(20)}
    claimed: list[int] = []
    lock = threading.Lock()

    def claimer(n: int) -> None:
        while True:
            with Session(engine) as s:
                job = jobs.claim(s, f"w{n}", lease_seconds=300)
            if job is None:
                return
            with lock:
                claimed.append(job.pk)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)


def test_worker_loop_runs_in_a_thread(engine: Engine, settings: Settings) -> None:
    done = threading.Event()

    def fn(ctx: JobContext) -> None:
        with Session(ctx.engine) as s:
            ctx.finish_in(s)
            s.commit()
        done.set()

    _enqueue(engine, "t_loop", 1)
    settings.worker_poll_seconds = 0.05
    svc = Services(engine, settings, ImageStore(settings.images_dir))
    worker = Worker(svc, Registry(jobs={"t_loop": fn}), run_sweeps=False)
    worker.start()
    assert done.wait(10)
    worker.stop()
