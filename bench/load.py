"""Load benchmark: a shift on one machine against the real server, on loopback.

50 recognizers work the queue (next task, both eye crops, verdict), 10 field officers
upload real photos (``../shared/faces``) and look at their sightings, 2 managers
watch the metrics and disputes pages — for 60 s, arriving over its first 10 s
(``--ramp-seconds``; 0 starts all 62 in the same instant). Then a table of p50/p95/p99 and
errors per endpoint, and the queue's invariants (no lost or duplicated upload or
verdict, no flag without agreement)::

    .venv/bin/python -m bench.load                       # embedded default (make bench-load)
    .venv/bin/python -m bench.load --postgres            # PostgreSQL: 2 web processes, 2 workers

The server is started as the README starts it (``miatari serve``; on PostgreSQL
``MIATARI_EMBEDDED_WORKER=false miatari serve`` twice and ``miatari worker`` twice),
on a fresh data folder. Before the timed minute the queue is filled by uploading
sightings and letting the real matcher find the candidates. Bounded: ``--seconds``
(default 60), ``--seed-sightings`` (default 240: enough review tasks that 50 recognizers do not
run out within the minute; the table says how often one was told the queue held nothing for them);
loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "load benchmark is a long password 42"
SUBJECTS = ["040", "041", "042", "043", "044", "045", "046", "047"]
PG_ADMIN_URL = os.environ.get("MIATARI_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TARGETS_MS = {"POST /api/review/next": 100, "GET task image": 100, "POST verdict": 100,
              "GET /api/sightings": 150, "GET /sightings": 150, "GET /sightings/{id}": 150,
              "GET /stats": 300}


def faces_dir() -> Path:
    return Path(os.environ.get("MIATARI_FACES_DIR", ROOT.parent / "shared" / "faces"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stats:
    times: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    samples: dict[str, str] = field(default_factory=dict)
    uploads: dict[str, int] = field(default_factory=dict)
    verdicts: dict[int, str] = field(default_factory=dict)
    empty_next: int = 0  # "nothing for you": the queue held no task this recognizer may take
    suspended: int = 0  # recognizers whose known-answer accuracy fell below the bar: their shift ends

    async def call(self, client: httpx.AsyncClient, name: str, method: str, url: str, ok: tuple[int, ...] = (200,),
                   **kwargs: Any) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            r = await client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            self.errors[name] += 1
            self.samples.setdefault(name, repr(exc))
            return None
        self.times[name].append((time.perf_counter() - started) * 1000)
        if r.status_code not in ok:
            self.errors[name] += 1
            self.samples.setdefault(name, f"{r.status_code} {r.text[:150]}")
        return r


class Deployment:
    """The server processes, started the README's way on a fresh data folder."""

    def __init__(self, work: Path, postgres: bool, web_processes: int | None = None) -> None:
        self.work = work
        self.postgres = postgres
        self.web_processes = web_processes
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ports: list[int] = []
        self.db_name = ""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MIATARI_")}
        env.update({"MIATARI_DATA_DIR": str(work / "data"), "MIATARI_SECRET_KEY": "b" * 40,
                    "PYTHONPATH": str(ROOT)})
        if postgres:
            self.db_name = f"miatari_load_{uuid.uuid4().hex[:8]}"
            self._admin(f'CREATE DATABASE "{self.db_name}"')
            env["MIATARI_DATABASE_URL"] = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + self.db_name
        self.env = env
        self.cli = [sys.executable, "-m", "miatari.cli"]

    def _admin(self, sql: str) -> None:
        from sqlalchemy import create_engine, text

        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(sql))
        admin.dispose()

    def run(self, *args: str) -> None:
        out = subprocess.run(self.cli + list(args), env=self.env, cwd=self.work, capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"miatari {' '.join(args)}: {out.stdout}\n{out.stderr}")

    def _spawn(self, args: list[str], env: dict[str, str], log: str) -> None:
        fh = (self.work / log).open("ab")
        self.procs.append(subprocess.Popen(self.cli + args, env=env, cwd=self.work, stdout=fh,
                                           stderr=subprocess.STDOUT))

    def start(self) -> None:
        self.run("migrate")
        if self.postgres:
            for n in range(2):
                port = _free_port()
                self.ports.append(port)
                self._spawn(["serve"], {**self.env, "MIATARI_EMBEDDED_WORKER": "false", "MIATARI_WEB_PROCESSES": "1",
                                        "MIATARI_PORT": str(port)},
                            f"web{n}.log")
            for n in range(2):
                self._spawn(["worker"], self.env, f"worker{n}.log")
        else:
            port = _free_port()
            self.ports.append(port)
            extra = {} if self.web_processes is None else {"MIATARI_WEB_PROCESSES": str(self.web_processes)}
            self._spawn(["serve"], {**self.env, **extra, "MIATARI_PORT": str(port)}, "web0.log")
        deadline = time.monotonic() + 180
        for port in self.ports:
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the server did not become ready")
                time.sleep(0.3)

    def engine(self) -> Any:
        from triage.db import make_engine

        url = self.env.get("MIATARI_DATABASE_URL") or f"sqlite:///{(self.work / 'data' / 'miatari.db').resolve()}"
        return make_engine(url)

    def stop(self, keep: bool = False) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.postgres and self.db_name and not keep:
            self._admin(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')


def seed_accounts(dep: Deployment, recognizers: int, officers: int, managers: int) -> dict[str, list[str]]:
    from sqlmodel import Session

    from triage.models import Qualification
    from triage.security import create_api_token, create_user

    engine = dep.engine()
    tokens: dict[str, list[str]] = {"recognizer": [], "officer": [], "manager": []}
    with Session(engine, expire_on_commit=False) as s:
        for role, n in (("recognizer", recognizers), ("officer", officers), ("manager", managers)):
            for i in range(n):
                user = create_user(s, f"{role}{i}", PASSWORD, [role])
                if role == "recognizer":  # the unit's trained recognizers, past probation: live tasks at once
                    user.qualification = Qualification.qualified.value
                s.flush()
                token, _ = create_api_token(s, user, "load")
                tokens[role].append(token)
        s.commit()
    engine.dispose()
    return tokens


def photos() -> list[bytes]:
    out = []
    for subject in SUBJECTS:
        for n in range(1, 6):
            path = faces_dir() / "frmdb" / subject / f"surveillance_Img_0{n}.png"
            if path.exists():
                out.append(path.read_bytes())
    return out


async def upload(client: httpx.AsyncClient, stats: Stats, photo: bytes, name: str = "POST /api/sightings") -> None:
    key = uuid.uuid4().hex
    r = await stats.call(client, name, "POST", "/api/sightings", ok=(202,),
                         files={"photos": ("cctv.png", photo, "image/png")}, headers={"Idempotency-Key": key})
    if r is not None and r.status_code == 202:
        stats.uploads[key] = r.json()["id"]


async def recognizer(client: httpx.AsyncClient, stats: Stats, until: float, rnd: random.Random) -> None:
    while time.monotonic() < until:
        r = await stats.call(client, "POST /api/review/next", "POST", "/api/review/next", ok=(200, 403))
        if r is not None and r.status_code == 403:
            if "suspended" not in r.text:
                stats.errors["POST /api/review/next"] += 1
                stats.samples.setdefault("POST /api/review/next", f"403 {r.text[:150]}")
            else:
                # Answering blind, at random, on known-answer pairs too: the queue rightly stops serving them.
                stats.suspended += 1
            return
        task = r.json().get("task") if r is not None and r.status_code == 200 else None
        if not task:
            if r is not None and r.status_code == 200:
                stats.empty_next += 1
            await asyncio.sleep(rnd.uniform(2, 4))
            continue
        for kind in ("probe_eyes", "subject_eyes"):
            await stats.call(client, "GET task image", "GET", task["images"][kind])
        await asyncio.sleep(rnd.uniform(2, 5))  # comparing the eyes
        verdict = rnd.choice(["same", "same", "different", "cannot_tell"])
        r = await stats.call(client, "POST verdict", "POST", task["verdict_url"], ok=(200, 201),
                             json={"verdict": verdict}, headers={"Idempotency-Key": uuid.uuid4().hex})
        if r is not None and r.status_code in (200, 201):
            stats.verdicts[task["slot_id"]] = verdict


async def officer(client: httpx.AsyncClient, stats: Stats, until: float, rnd: random.Random,
                  pool: list[bytes]) -> None:
    while time.monotonic() < until:
        await upload(client, stats, rnd.choice(pool))
        await asyncio.sleep(rnd.uniform(3, 8))
        r = await stats.call(client, "GET /api/sightings", "GET", "/api/sightings?limit=20")
        await stats.call(client, "GET /sightings", "GET", "/sightings")
        if r is not None and r.status_code == 200 and r.json()["data"]:
            await stats.call(client, "GET /sightings/{id}", "GET", r.json()["data"][0]["url"])
        await asyncio.sleep(rnd.uniform(3, 8))


async def manager(client: httpx.AsyncClient, stats: Stats, until: float, rnd: random.Random) -> None:
    while time.monotonic() < until:
        await stats.call(client, "GET /stats", "GET", "/stats")
        await asyncio.sleep(rnd.uniform(1, 3))
        await stats.call(client, "GET /disputes", "GET", "/disputes")
        await asyncio.sleep(rnd.uniform(1, 3))


def _client(port: int, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"},
                             # Idle connections are let go before the server (uvicorn: 5 s) closes them.
                             timeout=60, limits=httpx.Limits(max_connections=4, keepalive_expiry=3.0))


async def seed_queue(dep: Deployment, tokens: dict[str, list[str]], count: int, timeout: float) -> int:
    """Upload sightings and wait for the matcher: the queue the recognizers will work."""
    pool = photos()
    stats = Stats()
    clients = [_client(dep.ports[i % len(dep.ports)], t) for i, t in enumerate(tokens["officer"])]
    await asyncio.gather(*(upload(clients[i % len(clients)], stats, pool[i % len(pool)], "seed upload")
                           for i in range(count)))
    for c in clients:
        await c.aclose()
    from sqlmodel import Session, col, func, select

    from triage.models import Job, JobStatus, ReviewSlot

    engine = dep.engine()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with Session(engine) as s:
            left = s.exec(select(func.count()).select_from(Job).where(
                col(Job.status).in_([JobStatus.queued.value, JobStatus.running.value]))).one()
            slots = s.exec(select(func.count()).select_from(ReviewSlot)).one()
        if left == 0:
            break
        await asyncio.sleep(1)
    engine.dispose()
    return int(slots)


def enrol(dep: Deployment) -> None:
    gallery = dep.work / "gallery"
    for subject in SUBJECTS:
        (gallery / subject).mkdir(parents=True, exist_ok=True)
        for name in ("mugshot_Img_33.png", "mugshot_Img_22.png"):
            shutil.copy(faces_dir() / "frmdb" / subject / name, gallery / subject / name)
    dep.run("watchlist", "import", str(gallery), "--workers", "0", "--quiet", "--yes")


def invariants(dep: Deployment, stats: Stats) -> list[tuple[str, bool, str]]:
    from sqlalchemy import text

    engine = dep.engine()
    out: list[tuple[str, bool, str]] = []
    with engine.connect() as c:
        rows = dict(c.execute(text("SELECT idempotency_key, id FROM sighting WHERE idempotency_key IS NOT NULL")).all())
        lost = [k for k, i in stats.uploads.items() if rows.get(k) != i]
        out.append(("no lost upload", not lost, f"{len(stats.uploads)} acknowledged, {len(lost)} missing"))
        dup = c.execute(text("SELECT COUNT(*) FROM (SELECT uploaded_by, idempotency_key FROM sighting "
                             "WHERE idempotency_key IS NOT NULL GROUP BY 1, 2 HAVING COUNT(*) > 1) d")).scalar()
        out.append(("no duplicated upload", dup == 0, f"{dup} duplicated"))
        slots = dict(c.execute(text("SELECT id, verdict FROM review_slot")).all())
        lost_v = [s for s, v in stats.verdicts.items() if slots.get(s) != v]
        out.append(("no lost verdict", not lost_v, f"{len(stats.verdicts)} acknowledged, {len(lost_v)} missing"))
        twice = c.execute(text("SELECT COUNT(*) FROM (SELECT candidate_id, round, reviewer_id FROM review_slot "
                               "WHERE reviewer_id IS NOT NULL GROUP BY 1, 2, 3 HAVING COUNT(*) > 1) d")).scalar()
        out.append(("no recognizer on both slots of a round", twice == 0, f"{twice} found"))
        bad = c.execute(text(
            "SELECT COUNT(*) FROM flag f WHERE NOT EXISTS (SELECT 1 FROM review_slot a JOIN review_slot b "
            "ON a.candidate_id = b.candidate_id AND a.round = b.round AND a.id < b.id "
            "WHERE a.candidate_id = f.candidate_id AND a.verdict = 'same' AND b.verdict = 'same' "
            "AND a.reviewer_id <> b.reviewer_id)")).scalar()
        flags = c.execute(text("SELECT COUNT(*) FROM flag")).scalar()
        out.append(("no flag without agreement", bad == 0, f"{flags} flags, {bad} without two 'same'"))
    if not dep.postgres:
        with sqlite3.connect(dep.work / "data" / "miatari.db") as raw:
            check = raw.execute("PRAGMA integrity_check").fetchone()[0]
        out.append(("SQLite integrity_check", check == "ok", check))
    engine.dispose()
    return out


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def _arriving(ramp: float, rnd: random.Random, work: Any) -> None:
    """One person's shift: they arrive at a random moment of the first ``ramp`` seconds, as a unit's people
    log in one after another (a ramp, as load tools do), not all in the same millisecond."""
    await asyncio.sleep(rnd.uniform(0, ramp))
    await work


async def shift(dep: Deployment, tokens: dict[str, list[str]], seconds: float, ramp: float = 0.0) -> Stats:
    stats = Stats()
    until = time.monotonic() + seconds
    pool = photos()
    tasks = []
    clients: list[httpx.AsyncClient] = []
    n = 0
    for role, fn in (("recognizer", recognizer), ("officer", officer), ("manager", manager)):
        for token in tokens[role]:
            client = _client(dep.ports[n % len(dep.ports)], token)
            clients.append(client)
            rnd = random.Random(n)
            args: tuple[Any, ...] = (client, stats, until, rnd, pool) if role == "officer" else (client, stats,
                                                                                                 until, rnd)
            tasks.append(asyncio.create_task(_arriving(ramp, random.Random(-1 - n), fn(*args))))
            n += 1
    await asyncio.gather(*tasks)
    for c in clients:
        await c.aclose()
    return stats


def _table(stats: Stats) -> bool:
    """Print p50/p95/p99 and errors per endpoint; whether every target was met without errors."""
    print(f"{'endpoint':<24} {'count':>6} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7} {'target p95':>11}")
    met = True
    for name in sorted(set(stats.times) | set(stats.errors)):
        values = stats.times.get(name, [])
        p95 = _pct(values, 0.95)
        target = TARGETS_MS.get(name)
        verdict = "" if target is None else (f"{target} ok" if p95 <= target else f"{target} MISSED")
        met = met and (target is None or p95 <= target) and not stats.errors.get(name)
        print(f"{name:<24} {len(values):>6} {_pct(values, 0.5):>8.1f} {p95:>8.1f} {_pct(values, 0.99):>8.1f} "
              f"{stats.errors.get(name, 0):>7} {verdict:>11}")
    for name, sample in stats.samples.items():
        print(f"  first error on {name}: {sample}")
    return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Load benchmark against the real server (loopback).")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL, two web processes and two workers")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--ramp-seconds", type=float, default=10.0,
                        help="people arrive at random moments of the first N seconds (0: all at once)")
    parser.add_argument("--recognizers", type=int, default=50)
    parser.add_argument("--officers", type=int, default=10)
    parser.add_argument("--managers", type=int, default=2)
    parser.add_argument("--seed-sightings", type=int, default=240,
                        help="sightings matched before the minute starts: enough that the queue does not run dry")
    parser.add_argument("--seed-timeout", type=float, default=300.0)
    parser.add_argument("--web-processes", type=int, default=None,
                        help="embedded default only: MIATARI_WEB_PROCESSES for miatari serve (default: its own)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work folder (server logs, database) and, on PostgreSQL, the database; say where")
    args = parser.parse_args(argv)
    if not (faces_dir() / "frmdb" / "manifest.csv").exists():
        print(f"real face photos not found at {faces_dir()} (set MIATARI_FACES_DIR)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    work = Path(tempfile.mkdtemp(prefix="miatari-load-"))
    dep = Deployment(work, args.postgres, args.web_processes)
    setup = "PostgreSQL, 2 web processes + 2 workers" if args.postgres else "embedded default (SQLite; miatari serve)"
    try:
        (work / "data").mkdir()
        dep.run("migrate")
        enrol(dep)
        tokens = seed_accounts(dep, args.recognizers, args.officers, args.managers)
        dep.start()
        slots = asyncio.run(seed_queue(dep, tokens, args.seed_sightings, args.seed_timeout))
        print(f"{setup}: queue seeded with {slots} review slots; load before the run {os.getloadavg()[0]:.1f}",
              flush=True)
        stats = asyncio.run(shift(dep, tokens, args.seconds, args.ramp_seconds))
        load = os.getloadavg()
        results = invariants(dep, stats)
    finally:
        dep.stop(keep=args.keep)
    print(f"\n{setup}, {args.seconds:.0f} s: {args.recognizers} recognizers, {args.officers} officers, "
          f"{args.managers} managers, arriving over {args.ramp_seconds:.0f} s; "
          f"load average {load[0]:.1f} / {load[1]:.1f} (1 / 5 min)")
    met = _table(stats)
    asked = len(stats.times.get("POST /api/review/next", []))
    print(f"  'nothing for you' answers to POST /api/review/next: {stats.empty_next} of {asked}"
          + (" (the queue ran dry: raise --seed-sightings)" if asked and stats.empty_next > asked // 10 else ""))
    print(f"  recognizers suspended by their known-answer accuracy (they answer at random; not an error): "
          f"{stats.suspended}")
    ok = True
    for name, passed, detail in results:
        ok = ok and passed
        print(f"  {'ok  ' if passed else 'FAIL'} {name}: {detail}")
    print(f"targets {'met' if met else 'not all met'}; invariants {'hold' if ok else 'BROKEN'}")
    if args.keep:
        print(f"work folder kept: {work}" + (f"; database kept: {dep.env['MIATARI_DATABASE_URL']}"
                                             if args.postgres else ""))
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
