"""Fault test: kill -9 the web process and the matching worker while officers upload, jobs match
and recognizers give verdicts; restart each, then check the queue's invariants and SQLite's
integrity.

The set-up is the embedded default's database (SQLite, WAL, a local data folder) with the web
process (``miatari serve``) and a separate worker (``miatari worker``), both on loopback.
Clients retry after a dropped connection with the same ``Idempotency-Key``, as phones do.

    bash scripts/fault-test.sh            # full: 20+ kills (make fault-test)
    bash scripts/fault-test.sh --quick    # CI: 4 kills

Reports each kill (what was in flight, restart-to-ready, jobs taken back, how long the
sighting a killed worker held waited) and the first job's model load, then the invariants.
Exits 1 if any invariant fails.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PASSWORD = "fault testing is a long password 42"
SUBJECTS = ["040", "041", "042", "043"]
RECOGNIZERS = 4
OFFICERS = 2
READY_TIMEOUT = 180.0


def faces_dir() -> Path:
    return Path(os.environ.get("MIATARI_FACES_DIR", ROOT.parent / "shared" / "faces"))


@dataclass
class Proc:
    name: str
    cmd: list[str]
    env: dict[str, str]
    cwd: Path
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    log_offset: int = 0

    def start(self) -> None:
        self.log_offset = self.log.stat().st_size if self.log.exists() else 0
        fh = self.log.open("ab")
        self.started_at = time.monotonic()
        self.popen = subprocess.Popen(self.cmd, env=self.env, cwd=self.cwd, stdout=fh, stderr=subprocess.STDOUT)
        fh.close()

    def kill9(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(20)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()

    def new_log(self) -> str:
        with self.log.open("rb") as fh:
            fh.seek(self.log_offset)
            return fh.read().decode("utf-8", "replace")


@dataclass
class Ledger:
    """What the clients were told: acknowledged uploads and verdicts."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    uploads: dict[str, int] = field(default_factory=dict)  # idempotency key -> sighting id
    verdicts: dict[int, str] = field(default_factory=dict)  # slot id -> verdict
    retries: int = 0
    errors: list[str] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Rig:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.data = work / "data"
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("MIATARI_")},
                    "MIATARI_DATA_DIR": str(self.data), "MIATARI_DATABASE_URL": f"sqlite:///{self.data / 'm.db'}",
                    "MIATARI_SECRET_KEY": "k" * 40, "MIATARI_PORT": str(self.port),
                    "MIATARI_EMBEDDED_WORKER": "false", "MIATARI_KNOWN_ANSWER_SHARE": "0",
                    "MIATARI_WORKER_POLL_SECONDS": "0.3", "MIATARI_LEASE_SECONDS": "60",
                    "PYTHONPATH": str(ROOT)}
        cli = [sys.executable, "-m", "miatari.cli"]
        self.server = Proc("server", cli + ["serve"], self.env, work, work / "server.log")
        self.worker = Proc("worker", cli + ["worker"], self.env, work, work / "worker.log")
        self.tokens: dict[str, str] = {}

    def run_cli(self, *args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "miatari.cli", *args], env=self.env, cwd=self.work,
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"miatari {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
        return out.stdout

    def set_up(self) -> None:
        self.run_cli("migrate")
        gallery = self.work / "gallery"
        for subject in SUBJECTS:
            (gallery / subject).mkdir(parents=True)
            for name in ("mugshot_Img_33.png", "mugshot_Img_22.png"):
                shutil.copy(faces_dir() / "frmdb" / subject / name, gallery / subject / name)
        self.run_cli("watchlist", "import", str(gallery), "--workers", "0", "--quiet", "--yes")
        from sqlmodel import Session

        from triage.db import make_engine
        from triage.security import create_api_token, create_user

        engine = make_engine(self.env["MIATARI_DATABASE_URL"])
        with Session(engine, expire_on_commit=False) as s:
            names = [f"officer{n}" for n in range(OFFICERS)] + [f"rec{n}" for n in range(RECOGNIZERS)]
            for name in names:
                user = create_user(s, name, PASSWORD, ["officer"] if name.startswith("officer") else ["recognizer"])
                s.flush()
                self.tokens[name], _ = create_api_token(s, user, "fault test")
            s.commit()
        engine.dispose()

    def wait_server_ready(self) -> float:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base + "/readyz", timeout=2).status_code == 200:
                    return time.monotonic() - self.server.started_at
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("the server did not become ready:\n" + self.server.new_log()[-3000:])

    def wait_worker_ready(self) -> tuple[float, int]:
        deadline = time.monotonic() + READY_TIMEOUT
        pattern = re.compile(r"ready ([0-9.]+) s after its process started: (\d+) job\(s\)")
        while time.monotonic() < deadline:
            m = pattern.search(self.worker.new_log())
            if m:
                return time.monotonic() - self.worker.started_at, int(m.group(2))
            time.sleep(0.1)
        raise RuntimeError("the worker did not become ready:\n" + self.worker.new_log()[-3000:])

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.data / "m.db", timeout=30)

    def running_jobs(self) -> list[int]:
        with self.db() as c:
            return [r[0] for r in c.execute("SELECT ref_id FROM job WHERE status = 'running'")]

    def sighting_done(self, sighting_id: int) -> bool:
        with self.db() as c:
            row = c.execute("SELECT status FROM job WHERE ref_id = ? AND kind = 'match_sighting'",
                            (sighting_id,)).fetchone()
        return row is not None and row[0] in ("done", "failed")


def _photos() -> list[bytes]:
    out = []
    for subject in SUBJECTS:
        for n in (1, 2, 3):
            path = faces_dir() / "frmdb" / subject / f"surveillance_Img_0{n}.png"
            if path.exists():
                out.append(path.read_bytes())
    return out


def officer_loop(rig: Rig, token: str, ledger: Ledger, stop: threading.Event, photos: list[bytes]) -> None:
    rnd = random.Random(token)
    with httpx.Client(base_url=rig.base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        while not stop.is_set():
            key = uuid.uuid4().hex
            photo = rnd.choice(photos)
            while not stop.is_set():  # the same key until the server acknowledges
                try:
                    r = client.post("/api/sightings", files={"photos": ("cctv.png", photo, "image/png")},
                                    data={"note": "fault test"}, headers={"Idempotency-Key": key})
                except httpx.HTTPError:
                    with ledger.lock:
                        ledger.retries += 1
                    time.sleep(0.3)
                    continue
                if r.status_code == 202:
                    with ledger.lock:
                        ledger.uploads[key] = r.json()["id"]
                    break
                with ledger.lock:
                    ledger.errors.append(f"upload {r.status_code} {r.text[:200]}")
                break
            stop.wait(rnd.uniform(3.0, 6.0))  # about what one worker matches on a busy 2-core machine


def recognizer_loop(rig: Rig, token: str, ledger: Ledger, stop: threading.Event) -> None:
    rnd = random.Random(token)
    with httpx.Client(base_url=rig.base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        while not stop.is_set():
            try:
                task = client.post("/api/review/next").json().get("task")
            except (httpx.HTTPError, ValueError):
                with ledger.lock:
                    ledger.retries += 1
                stop.wait(0.3)
                continue
            if not task:
                stop.wait(0.5)
                continue
            verdict = rnd.choice(["same", "same", "different", "cannot_tell"])
            key = uuid.uuid4().hex
            try:
                client.get(task["images"]["probe_eyes"])
                client.get(task["images"]["subject_eyes"])
            except httpx.HTTPError:
                pass
            for _ in range(50):
                try:
                    r = client.post(task["verdict_url"], json={"verdict": verdict}, headers={"Idempotency-Key": key})
                except httpx.HTTPError:
                    with ledger.lock:
                        ledger.retries += 1
                    time.sleep(0.3)
                    continue
                if r.status_code in (200, 201):
                    with ledger.lock:
                        ledger.verdicts[task["slot_id"]] = verdict
                elif r.status_code not in (409,):  # 409: the lease ran out meanwhile (said so, not counted)
                    with ledger.lock:
                        ledger.errors.append(f"verdict {r.status_code} {r.text[:200]}")
                break


def check_invariants(rig: Rig, ledger: Ledger) -> list[tuple[str, bool, str]]:
    results: list[tuple[str, bool, str]] = []
    with rig.db() as c:
        integrity = c.execute("PRAGMA integrity_check").fetchone()[0]
        results.append(("SQLite integrity_check", integrity == "ok", integrity))
        rows = dict(c.execute("SELECT idempotency_key, id FROM sighting WHERE idempotency_key IS NOT NULL"))
        lost = [k for k, i in ledger.uploads.items() if rows.get(k) != i]
        results.append(("every acknowledged upload stored, under the id it was given", not lost,
                        f"{len(ledger.uploads)} acknowledged, {len(lost)} missing"))
        dup = c.execute("SELECT COUNT(*) FROM (SELECT uploaded_by, idempotency_key FROM sighting "
                        "GROUP BY 1, 2 HAVING COUNT(*) > 1)").fetchone()[0]
        results.append(("no upload stored twice", dup == 0, f"{dup} duplicated keys"))
        slots = {i: v for i, v in c.execute("SELECT id, verdict FROM review_slot")}
        lost_v = [s for s, v in ledger.verdicts.items() if slots.get(s) != v]
        results.append(("every acknowledged verdict stored as given", not lost_v,
                        f"{len(ledger.verdicts)} acknowledged, {len(lost_v)} missing or changed"))
        twice = c.execute("SELECT COUNT(*) FROM (SELECT candidate_id, round, reviewer_id FROM review_slot "
                          "WHERE reviewer_id IS NOT NULL GROUP BY 1, 2, 3 HAVING COUNT(*) > 1)").fetchone()[0]
        results.append(("no recognizer holds both slots of a round", twice == 0, f"{twice} found"))
        bad_flags = c.execute(
            "SELECT COUNT(*) FROM flag f WHERE NOT EXISTS (SELECT 1 FROM review_slot a JOIN review_slot b "
            "ON a.candidate_id = b.candidate_id AND a.round = b.round AND a.id < b.id "
            "WHERE a.candidate_id = f.candidate_id AND a.verdict = 'same' AND b.verdict = 'same' "
            "AND a.reviewer_id <> b.reviewer_id)").fetchone()[0]
        flags = c.execute("SELECT COUNT(*) FROM flag").fetchone()[0]
        results.append(("no flag without two distinct 'same' verdicts in one round", bad_flags == 0,
                        f"{flags} flags, {bad_flags} without agreement"))
        stuck = c.execute("SELECT COUNT(*) FROM job WHERE status IN ('running', 'queued')").fetchone()[0]
        results.append(("every matching job finished", stuck == 0, f"{stuck} still queued or running"))
        matched_twice = c.execute("SELECT COUNT(*) FROM (SELECT object_id FROM audit_entry WHERE action = "
                                  "'sighting.match' GROUP BY object_id HAVING COUNT(*) > 1)").fetchone()[0]
        results.append(("no sighting matched twice", matched_twice == 0, f"{matched_twice} found"))
    verify = subprocess.run([sys.executable, "-m", "miatari.cli", "audit", "verify"], env=rig.env, cwd=rig.work,
                            capture_output=True, text=True)
    said = (verify.stdout + verify.stderr).strip()[:200]
    results.append(("audit hash chain verifies", verify.returncode == 0, said))
    results.append(("no unexpected error answer", not ledger.errors, "; ".join(ledger.errors[:3])))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="kill -9 the server and the worker under load; check invariants")
    parser.add_argument("--quick", action="store_true", help="4 kills (CI)")
    parser.add_argument("--kills", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    kills = args.kills or (4 if args.quick else 22)
    if not (faces_dir() / "frmdb" / "manifest.csv").exists():
        print(f"real face photos not found at {faces_dir()} (set MIATARI_FACES_DIR)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="miatari-fault-"))
    rig = Rig(work)
    ledger = Ledger()
    stop = threading.Event()
    rnd = random.Random(7)
    t0 = time.monotonic()
    try:
        rig.set_up()
        rig.server.start()
        rig.worker.start()
        print(f"server ready in {rig.wait_server_ready():.1f} s; worker ready in {rig.wait_worker_ready()[0]:.1f} s",
              flush=True)
        threads = _start_clients(rig, ledger, stop)
        _report_model_load(rig)
        print(f"{'#':>3} {'killed':<7} {'in flight':<34} {'ready s':>8} {'taken back':>10} "
              f"{'held sighting waited s':>22}")
        for n in range(1, kills + 1):
            print(_kill_once(n, rig, ledger, rnd), flush=True)
        _drain(rig, stop, threads)
    finally:
        stop.set()
        rig.server.stop()
        rig.worker.stop()
    results = check_invariants(rig, ledger)
    print(f"\n{kills} kills in {time.monotonic() - t0:.0f} s; {ledger.retries} client retries after dropped "
          f"connections; load: {os.getloadavg()[0]:.1f}")
    ok = True
    for name, passed, detail in results:
        ok = ok and passed
        print(f"  {'ok  ' if passed else 'FAIL'} {name}: {detail}")
    if not args.keep and ok:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"work folder kept: {work}")
    return 0 if ok else 1


def _start_clients(rig: Rig, ledger: Ledger, stop: threading.Event) -> list[threading.Thread]:
    """The officers uploading and the recognizers answering, each in a thread, until ``stop``."""
    photos = _photos()
    threads: list[threading.Thread] = []
    for n in range(OFFICERS):
        threads.append(threading.Thread(target=officer_loop, daemon=True,
                                        args=(rig, rig.tokens[f"officer{n}"], ledger, stop, photos)))
    for n in range(RECOGNIZERS):
        threads.append(threading.Thread(target=recognizer_loop, daemon=True,
                                        args=(rig, rig.tokens[f"rec{n}"], ledger, stop)))
    for t in threads:
        t.start()
    return threads


def _report_model_load(rig: Rig) -> None:
    """The first job loads the model: wait for it, and report how long it took."""
    deadline = time.monotonic() + READY_TIMEOUT
    while "face pipeline loaded" not in rig.worker.new_log() and time.monotonic() < deadline:
        time.sleep(0.5)
    m = re.search(r"face pipeline loaded in ([0-9.]+) s", rig.worker.new_log())
    print(f"first job's model load: {m.group(1) if m else '?'} s", flush=True)


def _kill_once(n: int, rig: Rig, ledger: Ledger, rnd: random.Random) -> str:
    """Kill -9 the server (odd ``n``) or the worker (even), start it again; the table's row."""
    target = rig.worker if n % 2 == 0 else rig.server
    if target is rig.worker:
        # Kill it while it holds a job (matching in progress), if one comes within a few seconds.
        deadline = time.monotonic() + 8
        while not rig.running_jobs() and time.monotonic() < deadline:
            time.sleep(0.05)
    else:
        time.sleep(rnd.uniform(0.5, 2.0))  # mid-uploads and mid-verdicts
    held = rig.running_jobs()
    with ledger.lock:
        flight = f"{len(held)} job(s) running, {len(ledger.uploads)} up, {len(ledger.verdicts)} verdicts"
    killed_at = time.monotonic()
    target.kill9()
    target.start()
    if target is rig.server:
        ready = rig.wait_server_ready()
        return f"{n:>3} {'server':<7} {flight:<34} {ready:>8.1f} {'-':>10} {'-':>22}"
    ready, taken = rig.wait_worker_ready()
    waited = "-"
    if held:
        start = time.monotonic()
        while not all(rig.sighting_done(s) for s in held) and time.monotonic() - start < 300:
            time.sleep(0.1)
        waited = f"{time.monotonic() - killed_at:.1f}"  # from the kill until its matching is done
    return f"{n:>3} {'worker':<7} {flight:<34} {ready:>8.1f} {taken:>10} {waited:>22}"


def _drain(rig: Rig, stop: threading.Event, threads: list[threading.Thread]) -> None:
    """Let the clients finish what they were doing, then let the queue drain."""
    stop.set()
    for t in threads:
        t.join(60)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        with rig.db() as c:
            if c.execute("SELECT COUNT(*) FROM job WHERE status IN ('running','queued')").fetchone()[0] == 0:
                break
        time.sleep(0.5)


if __name__ == "__main__":
    raise SystemExit(main())
