"""Recovery at start: a worker's stable identity, the jobs its killed run held, leftover temp files."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlmodel import Session, select

from tests.conftest import ROOT
from triage import jobs
from triage.clock import utcnow
from triage.models import AuditEntry, Job
from triage.recovery import claim_identity, recover_worker, release_previous_boot
from triage.storage import ImageStore

HOLD_AND_WAIT = """
import sys, time
from pathlib import Path
from triage.recovery import claim_identity
identity = claim_identity(Path(sys.argv[1]))
print(identity.name, identity.owner, flush=True)
time.sleep(600)
"""


def _child_identity(data_dir: Path) -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLD_AND_WAIT, str(data_dir)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None
    name, owner = proc.stdout.readline().split()
    return proc, name, owner


def test_a_killed_worker_gets_its_identity_back_and_its_jobs_at_once(engine, tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc, name, dead_owner = _child_identity(data)
    # While it runs, its slot is taken: another worker here is someone else.
    other = claim_identity(data)
    assert other.name != name
    with Session(engine, expire_on_commit=False) as s:
        mine = jobs.enqueue(s, "match_sighting", 1)
        theirs = jobs.enqueue(s, "match_sighting", 2)
        s.commit()
        assert jobs.claim(s, dead_owner, lease_seconds=300) is not None
        assert jobs.claim(s, other.owner, lease_seconds=300) is not None
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    started = time.monotonic()
    recovery = recover_worker(engine, ImageStore(data / "images"), data)
    assert recovery.identity.name == name and recovery.identity.owner != dead_owner
    assert recovery.released_jobs == [mine.id]
    with Session(engine, expire_on_commit=False) as s:
        job = s.get_one(Job, mine.id)
        assert job.status == "queued" and job.attempts == 1 and job.lease_expires_at is None
        assert s.get_one(Job, theirs.id).lease_owner == other.owner  # a live worker's job is left alone
        # Claimed again at once, not after the 300 s lease.
        again = jobs.claim(s, recovery.identity.owner, lease_seconds=300)
        assert again is not None and again.id == mine.id and again.attempts == 2
        released = s.exec(select(AuditEntry).where(AuditEntry.action == "job.released")).one()
        assert released.detail["previous_owner"] == dead_owner
    assert time.monotonic() - started < 5
    recovery.identity.release()
    other.release()


def test_release_leaves_jobs_of_the_current_boot_and_finished_jobs(engine, tmp_path: Path) -> None:
    identity = claim_identity(tmp_path)
    with Session(engine, expire_on_commit=False) as s:
        current = jobs.enqueue(s, "match_sighting", 1)
        s.commit()
        jobs.claim(s, identity.owner, lease_seconds=300)
        done = Job(kind="match_sighting", ref_id=2, status="done", lease_owner=f"{identity.name}#old",
                   finished_at=utcnow(), run_after=utcnow() - dt.timedelta(minutes=1))
        s.add(done)
        s.commit()
    assert release_previous_boot(engine, identity) == []
    with Session(engine, expire_on_commit=False) as s:
        assert s.get_one(Job, current.id).status == "running"
    identity.release()


def test_leftover_temporary_files_of_dead_writers_are_removed(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    digest = store.put(b"photo bytes")
    folder = store.path_for(digest).parent
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    dead = folder / f".tmp-{proc.pid}-abc"
    live = folder / f".tmp-{os.getpid()}-def"
    old_live = folder / f".tmp-{os.getpid()}-old"
    for f in (dead, live, old_live):
        f.write_bytes(b"half a photo")
    os.utime(old_live, (time.time() - 7200, time.time() - 7200))
    assert store.remove_leftovers() == 2
    assert not dead.exists() and not old_live.exists()
    assert live.exists()  # a running process's write in progress is kept
    assert store.get(digest) == b"photo bytes"
