"""The matching job survives its worker: the real loop in a thread, and a worker killed mid-job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlmodel import Session, select

from miatari.registry import worker_registry
from tests.conftest import ROOT, make_settings
from tests.triage.test_matching import Env, astronaut_altered_jpeg, astronaut_png
from triage import services
from triage.models import AuditEntry, Candidate, Job, Probe, Role, Sighting
from triage.worker import Worker, run_one

pytestmark = pytest.mark.model
LEASE_SECONDS = 4


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _job(engine) -> Job:
    with Session(engine) as s:
        return s.exec(select(Job)).one()


def test_worker_loop_in_a_thread_completes_the_job(engine, tmp_path: Path, db_url: str, face_pipeline,
                                                    user_factory) -> None:
    env = Env(engine, make_settings(tmp_path, db_url, worker_poll_seconds=0.2), face_pipeline)
    officer = user_factory(Role.officer)
    subject_id = env.enrol("astronaut", astronaut_png())
    sighting_id = env.sight(officer, astronaut_altered_jpeg())
    worker = Worker(env.services, worker_registry())
    worker.start()
    try:
        _wait(lambda: _job(engine).status == "done", 60, "the job")
    finally:
        worker.stop()
        env.close()
    assert [c.subject_id for c in env.candidates(sighting_id)] == [subject_id]


def test_a_killed_worker_job_is_completed_once_by_another(engine, tmp_path: Path, db_url: str, face_pipeline,
                                                          user_factory) -> None:
    settings = make_settings(tmp_path, db_url, job_lease_seconds=LEASE_SECONDS)
    env = Env(engine, settings, face_pipeline)
    officer = user_factory(Role.officer)
    env.enrol("astronaut", astronaut_png())
    sighting_id = env.sight(officer, astronaut_altered_jpeg(), astronaut_png())
    child_env = {**os.environ, "MIATARI_DATABASE_URL": db_url, "MIATARI_DATA_DIR": str(settings.data_dir),
                 "MIATARI_SECRET_KEY": "t" * 40, "MIATARI_MODELS_DIR": str(settings.deepface_home),
                 "MIATARI_JOB_LEASE_SECONDS": str(LEASE_SECONDS), "MIATARI_WORKER_POLL_SECONDS": "0.2",
                 # the gallery's model: another would have the worker queue a re-embedding first
                 "MIATARI_FACE_MODEL": "dlib", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "miatari.cli", "worker", "--no-sweeps"], env=child_env,
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # The child has claimed the job (one commit) and marked the sighting as matching (the job's first
        # commit); it then loads the model and analyses the photos.
        def _claimed_and_matching() -> bool:
            with Session(engine) as s:  # one transaction: on SQLite each one holds the write lock
                job = s.exec(select(Job)).one()
                sighting = s.get(Sighting, sighting_id)
                return job.status == "running" and sighting is not None and sighting.status == "matching"

        _wait(_claimed_and_matching, 120, "the child to claim the job and start matching")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    job = _job(engine)
    assert job.status == "running" and job.attempts == 1
    with Session(engine) as s:
        assert s.exec(select(Probe)).all() == []  # nothing half-written
    assert run_one(env.services, "second", worker_registry()) is None  # lease still held
    time.sleep(LEASE_SECONDS + 0.5)
    assert run_one(env.services, "second", worker_registry()) is not None
    job = _job(engine)
    assert job.status == "done" and job.attempts == 2 and job.lease_owner == "second"
    with Session(engine) as s:
        probes = s.exec(select(Probe).where(Probe.sighting_id == sighting_id)).all()
        assert len(probes) == 2  # one face in each photo, written once
        assert len({(p.sighting_photo_id, p.face_index) for p in probes}) == 2
        assert len(s.exec(select(Candidate)).all()) == 2
        assert s.exec(select(AuditEntry).where(AuditEntry.action == "job.lease_expired")).one()
        assert len(s.exec(select(AuditEntry).where(AuditEntry.action == "sighting.match")).all()) == 1
    # Nothing is left to run: the job does not complete twice.
    assert run_one(env.services, "third", worker_registry()) is None
    services.stop(env.services)
