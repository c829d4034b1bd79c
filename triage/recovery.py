"""Recovery at start: a restarted worker takes back at once the jobs its previous run held.

Each worker holds a *stable identity* for as long as it runs: the first free
slot in ``<data_dir>/run/`` (``worker-1``, ``worker-2``, …), held with an
exclusive ``flock`` that the kernel lets go the moment the process dies,
however it dies. The identity (host, data folder, slot) plus a fresh *boot
id* make the lease owner of every job it claims. So at start, a job still
marked running under this identity but another boot id can only belong to a
run of this very slot that is dead: it is put back in the queue at once,
instead of waiting out its lease (``MIATARI_JOB_LEASE_SECONDS``). Jobs held
by other identities are left to their leases.

Taking the job back does not break "a job completes exactly once": the dead
run can no longer finish it (completion checks the lease owner), and its
attempt still counts towards ``max_attempts``.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from triage import audit
from triage.models import Job, JobStatus
from triage.storage import ImageStore

log = logging.getLogger("miatari.recovery")

MAX_SLOTS = 1000
RUN_FOLDER = "run"


@dataclass
class Identity:
    """Who this worker is (stable across restarts) and which run of it this is."""

    name: str
    boot_id: str
    _fd: int = field(default=-1, repr=False)

    @property
    def owner(self) -> str:
        return f"{self.name}#{self.boot_id}"

    def release(self) -> None:
        """Let the slot go (a clean stop); a dead process lets it go by itself."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def claim_identity(data_dir: Path, role: str = "worker") -> Identity:
    """The first free slot of this role in the data folder, held until the process ends."""
    folder = Path(data_dir) / RUN_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    place = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]
    host = socket.gethostname()[:40]
    for slot in range(1, MAX_SLOTS + 1):
        fd = os.open(folder / f"{role}-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        boot = uuid.uuid4().hex[:12]
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {boot}\n".encode())
        return Identity(name=f"{host}:{place}:{role}-{slot}", boot_id=boot, _fd=fd)
    raise RuntimeError(f"more than {MAX_SLOTS} {role}s on one data folder")


def release_previous_boot(engine: Engine, identity: Identity) -> list[int]:
    """Put back in the queue every job held by an earlier run of this identity; return their ids."""
    with Session(engine) as session:
        held = session.exec(select(Job).where(Job.status == JobStatus.running.value,
                                              col(Job.lease_owner).startswith(identity.name + "#"),
                                              Job.lease_owner != identity.owner)).all()
        ids = [job.id for job in held if job.id is not None]
        for job in held:
            # Only if it is still held by that dead run (one statement: nothing else can slip between).
            session.execute(update(Job).where(col(Job.id) == job.id, col(Job.lease_owner) == job.lease_owner,
                                              col(Job.status) == JobStatus.running.value)
                            # run_after kept: the job keeps its place at the head of the queue.
                            .values(status=JobStatus.queued.value, lease_expires_at=None))
            audit.record(session, "job.released", object_type="job", object_id=job.id,
                         detail={"previous_owner": job.lease_owner, "attempts": job.attempts,
                                 "reason": "its worker was restarted"})
        session.commit()
    return ids


def process_age_seconds() -> float:
    """Seconds since this process started (from /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


@dataclass
class Recovery:
    identity: Identity
    released_jobs: list[int]
    removed_temp_files: int
    seconds: float


def recover_worker(engine: Engine, store: ImageStore, data_dir: Path, role: str = "worker") -> Recovery:
    """At a worker's start: claim its identity, take back its previous run's jobs, tidy the store."""
    started = time.monotonic()
    identity = claim_identity(data_dir, role)
    released = release_previous_boot(engine, identity)
    removed = store.remove_leftovers()
    result = Recovery(identity, released, removed, time.monotonic() - started)
    log.info("worker %s (boot %s) ready %.2f s after its process started: %d job(s) of its previous run "
             "taken back %s, %d leftover temporary file(s) removed", identity.name, identity.boot_id,
             process_age_seconds(), len(released), released, removed)
    return result
