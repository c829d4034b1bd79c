"""Metrics benchmark: the managers' metrics page and CSV at a year's scale, on SQLite and PostgreSQL.

For each database, seeds a fresh one (migrated to head) with 100k candidates and about 200k verdicts
spread over a year (bulk inserts), then times ``/stats`` and ``/stats/export.csv`` through the real app
(cache off) for the last 7, 30 and 90 days and all time: first with every figure read live (nothing
summarised yet: the baseline), then after the per-day summaries are written (timed too), cold (the
first request) and warm (the median of the next ones). The 1-minute load average is printed beside
each number: on a shared machine it says how much of the time was someone else's::

    .venv/bin/python -m bench.metrics                 # SQLite, then PostgreSQL (make bench-metrics)
    .venv/bin/python -m bench.metrics --db sqlite     # one of them (--postgres = --db postgres)
    .venv/bin/python -m bench.metrics --queries       # and each 90-day/all-time request's slowest SQL

PostgreSQL is the server at 127.0.0.1:5432 (``MIATARI_TEST_PG_URL``), in a scratch database dropped after.
``seed`` is also what tests/triage/test_metrics_sql.py seeds its (much smaller) varied dataset with.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, func, insert, select
from sqlmodel import Session, SQLModel

from triage.models import (
    Candidate,
    CandidateStatus,
    Flag,
    Probe,
    ReferencePhoto,
    ReviewSlot,
    Role,
    Sighting,
    SightingPhoto,
    StoredImage,
    Subject,
    User,
)

ROOT = Path(__file__).resolve().parent.parent
TARGET_MS = 300
CHUNK = 5000
RECOGNIZERS = 40


def _template(obj: SQLModel) -> dict[str, Any]:
    """A row of defaults for a Core bulk insert (the model's Python-side defaults filled in)."""
    return {c.name: getattr(obj, c.name) for c in obj.__table__.columns if c.name != "id"}  # type: ignore[attr-defined]


def _bulk(session: Session, model: type[SQLModel], rows: list[dict[str, Any]]) -> None:
    for i in range(0, len(rows), CHUNK):
        session.execute(insert(model.__table__), rows[i:i + CHUNK])  # type: ignore[attr-defined]


def _fixtures(session: Session, rng: random.Random,
              recognizers: int) -> tuple[list[int], int, list[int], list[int], str]:
    """Recognizers, an officer, two subjects with a reference photo each; returns their ids and an image."""
    sha = uuid.uuid4().hex + uuid.uuid4().hex
    session.add(StoredImage(sha256=sha, media_type="image/png", size_bytes=1))
    officer = User(username=f"bench.officer.{sha[:6]}", roles=Role.officer.value, password_hash="-")
    people = [User(username=f"bench.rec{i:02d}.{sha[:6]}", roles=Role.recognizer.value, password_hash="-",
                   qualification=rng.choice(("probation", "qualified", "qualified", "suspended")))
              for i in range(recognizers)]
    subjects = [Subject(name=f"Bench Subject {i}", case_ref=f"B-{sha[:6]}-{i}") for i in range(2)]
    session.add_all([officer, *people, *subjects])
    session.flush()
    refs = [ReferencePhoto(subject_id=s.pk, image_sha256=sha, eye_crop_sha256=sha, face_chip_sha256=sha)
            for s in subjects]
    session.add_all(refs)
    session.flush()
    return [p.pk for p in people], officer.pk, [s.pk for s in subjects], [r.pk for r in refs], sha


def _last_id(session: Session, model: type[SQLModel], n: int) -> int:
    """The first id of the ``n`` rows just bulk inserted."""
    table = model.__table__  # type: ignore[attr-defined]
    return int(session.execute(select(func.max(table.c.id))).scalar_one()) - n + 1


def _outcome(rng: random.Random, score: float) -> tuple[str, list[tuple[str, str]]]:
    """A candidate's status and its rounds' verdict pairs; high scores are more often the same person."""
    if rng.random() < 0.05:
        return CandidateStatus.open.value, [("", "")]
    kinds = ("same", "different", "cannot_tell")
    rounds: list[tuple[str, str]] = []
    for _ in range(3):
        p_same = min(0.95, max(0.05, (score - 0.5) * 2))
        first = "same" if rng.random() < p_same else "different"
        second = first if rng.random() < 0.7 else rng.choice(kinds)
        rounds.append((first, second))
        if first == second != "cannot_tell":
            return ("flagged" if first == "same" else "cleared"), rounds
        if rng.random() < 0.25:  # a manager does not (or not yet) escalate it
            break
    return CandidateStatus.disputed.value, rounds


def seed(engine: Engine, candidates: int = 100_000, days: int = 365, seed_value: int = 15,
         now: dt.datetime | None = None, recognizers: int = RECOGNIZERS) -> dict[str, int]:
    """Sightings (two candidates each), candidates, their slots and verdicts, flags, known-answer pairs,
    voided verdicts and open work, spread over ``days`` before ``now``; bulk inserted. Returns counts."""
    rng = random.Random(seed_value)
    now = now or dt.datetime.now(dt.UTC)
    with Session(engine) as session:
        people, officer, subjects, refs, sha = _fixtures(session, rng, recognizers)
        sighting_rows = []
        base_s = _template(Sighting(uploaded_by=officer, observed_at=now, status="matched"))
        for _ in range((candidates + 1) // 2):
            at = now - dt.timedelta(seconds=rng.uniform(0, days * 86400))
            sighting_rows.append({**base_s, "observed_at": at, "created_at": at, "matched_at": at})
        _bulk(session, Sighting, sighting_rows)
        first_sighting = _last_id(session, Sighting, len(sighting_rows))
        first_probe = _probes(session, first_sighting, len(sighting_rows), sha)
        counts = _seed_candidates(session, rng, candidates, (first_sighting, first_probe), sighting_rows, people,
                                  subjects, refs, now)
        session.commit()
    return counts


def _probes(session: Session, first_sighting: int, n: int, sha: str) -> int:
    """One photo and one probe per sighting; returns the first probe's id."""
    base_p = _template(SightingPhoto(sighting_id=0, image_sha256=sha))
    _bulk(session, SightingPhoto, [{**base_p, "sighting_id": first_sighting + i} for i in range(n)])
    first_photo = _last_id(session, SightingPhoto, n)
    base = _template(Probe(sighting_id=0, sighting_photo_id=0, face_index=0, embedding=b"-", model_id="bench",
                           eye_crop_sha256=sha, face_chip_sha256=sha))
    _bulk(session, Probe, [{**base, "sighting_id": first_sighting + i, "sighting_photo_id": first_photo + i}
                           for i in range(n)])
    return _last_id(session, Probe, n)


def _seed_candidates(session: Session, rng: random.Random, n: int, firsts: tuple[int, int],
                     sightings: list[dict[str, Any]], people: list[int], subjects: list[int], refs: list[int],
                     now: dt.datetime) -> dict[str, int]:
    first_sighting, first_probe = firsts
    base_c = _template(Candidate(subject_id=subjects[0], reference_photo_id=refs[0], score=0.5, distance=0.5,
                                 rank=1))
    cand_rows, plans = [], []
    for i in range(n):
        known = rng.random() < 0.05
        s = sightings[i // 2]
        created = s["created_at"] + dt.timedelta(seconds=rng.uniform(5, 600))
        score = round(rng.uniform(0.45, 1.0), 4)
        status, rounds = _outcome(rng, score)
        truth = rng.choice(("same", "different")) if known else None
        decided = None if status == "open" else min(now, created + dt.timedelta(minutes=rng.expovariate(1 / 90)))
        cand_rows.append({**base_c, "sighting_id": None if known else first_sighting + i // 2,
                          "probe_id": None if known else first_probe + i // 2,
                          "known_probe_photo_id": refs[1] if known else None,
                          "subject_id": subjects[i % 2], "reference_photo_id": refs[i % 2], "score": score,
                          "distance": 1 - score, "status": status, "current_round": len(rounds),
                          "known_truth": truth, "created_at": created, "priority_at": created,
                          "decided_at": decided})
        plans.append((status, rounds, created, decided, truth))
    _bulk(session, Candidate, cand_rows)
    first = _last_id(session, Candidate, n)
    slots, flags = _slots_and_flags(rng, first, plans, people, cand_rows)
    _bulk(session, ReviewSlot, slots)
    _bulk(session, Flag, flags)
    return {"candidates": n, "slots": len(slots), "verdicts": sum(1 for s in slots if s["verdict"]),
            "flags": len(flags), "sightings": len(sightings)}


Rows = list[dict[str, Any]]


def _slots_and_flags(rng: random.Random, first: int, plans: list[Any], people: list[int],
                     cand_rows: Rows) -> tuple[Rows, Rows]:
    base = _template(ReviewSlot(candidate_id=0, slot_no=1))
    base_f = _template(Flag(candidate_id=0, sighting_id=0, subject_id=0))
    slots, flags = [], []
    for offset, (status, rounds, created, decided, truth) in enumerate(plans):
        cid = first + offset
        reviewers = rng.sample(people, 2 * len(rounds) + 1)
        end = decided or created + dt.timedelta(minutes=30)
        for r, (va, vb) in enumerate(rounds, start=1):
            for k, verdict in enumerate((va, vb)):
                at = created + (end - created) * (r - 1 + (k + 1) / 2) / len(rounds)
                row = {**base, "candidate_id": cid, "round": r, "slot_no": k + 1,
                       "reviewer_id": reviewers[2 * (r - 1) + k] if verdict or rng.random() < 0.5 else None,
                       "verdict": verdict or None, "verdict_at": at if verdict else None}
                if truth:
                    row["verdict"] = truth if rng.random() < 0.85 else rng.choice(("same", "different",
                                                                                    "cannot_tell"))
                    row["verdict_at"] = at
                    row["reviewer_id"] = reviewers[2 * (r - 1) + k]
                slots.append(row)
        if rng.random() < 0.01:  # a verdict voided by its author's suspension, beside its replacement
            slots.append({**base, "candidate_id": cid, "round": len(rounds), "slot_no": 1,
                          "reviewer_id": reviewers[-1], "verdict": "same", "verdict_at": created,
                          "voided_at": created + dt.timedelta(minutes=1), "void_reason": "suspended"})
        if status == "flagged" and not truth:
            flags.append({**base_f, "candidate_id": cid, "sighting_id": cand_rows[offset]["sighting_id"],
                          "subject_id": cand_rows[offset]["subject_id"],
                          "status": rng.choice(("raised", "acknowledged", "closed")), "raised_at": decided})
    return slots, flags


# Timing
def _time(fn: Callable[[], Any], repeat: int = 5) -> tuple[float, float]:
    """Wall time in ms of the first run (cold) and the median of ``repeat`` runs after it (warm)."""
    t = time.perf_counter()
    fn()
    cold = (time.perf_counter() - t) * 1000
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t) * 1000)
    return cold, statistics.median(runs)


def _load() -> float:
    return os.getloadavg()[0]


def _migrate(url: str) -> None:
    env = {**os.environ, "MIATARI_DATABASE_URL": url}
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _database(postgres: bool, tmp: Path) -> tuple[str, Callable[[], None]]:
    if not postgres:
        return f"sqlite:///{tmp / 'bench.db'}", lambda: None
    admin = os.environ.get("MIATARI_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    name = f"miatari_bench_{os.getpid()}"
    eng = create_engine(admin, isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.exec_driver_sql(f"CREATE DATABASE {name}")

    def drop() -> None:
        with eng.connect() as c:
            c.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        eng.dispose()

    return f"{admin.rsplit('/', 1)[0]}/{name}", drop


def _client(url: str, tmp: Path) -> Any:
    """The real app on this database (TestClient: no network, no background work, no cache)."""
    from fastapi.testclient import TestClient

    from miatari.app import create_app
    from triage.config import Settings

    settings = Settings(_env_file=None, data_dir=tmp / "data", database_url=url,
                        secret_key="b" * 40, embedded_worker=False, metrics_cache_seconds=0.0,
                        models_dir=ROOT / "data" / "models")
    client = TestClient(create_app(settings, start_background=False), base_url="http://testserver")
    client.__enter__()
    return client


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL only (as --db postgres)")
    parser.add_argument("--candidates", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5, help="warm runs per request (median)")
    parser.add_argument("--queries", action="store_true",
                        help="after each summarised request, print its slowest SQL statements (ms, count)")
    args = parser.parse_args(argv)
    dbs = ["postgres"] if args.postgres or args.db == "postgres" else ["sqlite"] if args.db == "sqlite" \
        else ["sqlite", "postgres"]
    results: list[_Result] = []
    with tempfile.TemporaryDirectory(prefix="miatari-bench-metrics-") as tmp_name:
        for db in dbs:
            results += _run(db, args, Path(tmp_name) / db)
    _print(results, args.candidates)
    return 0 if all(r.warm <= TARGET_MS and r.cold <= TARGET_MS for r in results
                    if r.path in TARGETED and r.what == SUMMARISED) else 1


PATHS = ("/stats?days=7", "/stats/export.csv?days=7", "/stats?days=30", "/stats/export.csv?days=30",
         "/stats?days=90", "/stats/export.csv?days=90", "/stats", "/stats/export.csv")
BASELINE_PATHS = ("/stats?days=90", "/stats/export.csv?days=90", "/stats")  # (all time's CSV: as its page)
TARGETED = ("/stats?days=90", "/stats/export.csv?days=90")
SUMMARISED = "summaries + live edges"
LIVE = "baseline: all live SQL"


@dataclass
class _Result:
    db: str
    what: str
    path: str
    cold: float
    warm: float
    load: float
    size: int


def _run(db: str, args: argparse.Namespace, tmp: Path) -> list[_Result]:
    from triage import metrics_summary

    tmp.mkdir(parents=True, exist_ok=True)
    url, drop = _database(db == "postgres", tmp)
    try:
        _migrate(url)
        engine = create_engine(url)
        t = time.perf_counter()
        counts = seed(engine, candidates=args.candidates)
        if db == "postgres":  # as autovacuum would after such a load
            _analyze(engine)
        print(f"{db}: seeded {counts} in {time.perf_counter() - t:.1f} s (load {_load():.1f})", flush=True)
        client = _http_client(url, tmp)
        # Nothing summarised yet: every figure is read live, as before the summaries.
        out = [_measure(client, db, LIVE, path, 1) for path in BASELINE_PATHS]
        t = time.perf_counter()
        days = metrics_summary.summarise(engine, limit=100_000)
        print(f"{db}: summarised {days} days in {time.perf_counter() - t:.1f} s (load {_load():.1f})", flush=True)
        if db == "postgres":
            _analyze(engine)
        out += [_measure(client, db, SUMMARISED, path, args.repeat) for path in PATHS]
        if args.queries:
            for path in TARGETED + ("/stats",):
                _breakdown(client, path)
        client.__exit__(None, None, None)
        engine.dispose()
        return out
    finally:
        drop()


def _analyze(engine: Engine) -> None:
    """What autovacuum does after such a load: statistics for the planner, and the visibility map that lets
    an index answer alone (outside a transaction: an ANALYZE rolled back keeps no statistics)."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.exec_driver_sql("VACUUM ANALYZE")


def _measure(client: Any, db: str, what: str, path: str, repeat: int) -> _Result:
    sizes: list[int] = []

    def get() -> None:
        r = client.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        sizes.append(len(r.content))

    load = _load()
    cold, warm = _time(get, repeat)
    result = _Result(db, what, path, cold, warm, max(load, _load()), sizes[0])
    print(f"  {db} {what} {path}: cold {cold:.0f} ms, warm {warm:.0f} ms (load {result.load:.1f})", flush=True)
    return result


def _breakdown(client: Any, path: str, top: int = 8) -> None:
    """One more request, timing each SQL statement it runs (on every engine of this process)."""
    from sqlalchemy import event

    spent: dict[str, list[float]] = {}

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info.setdefault("bench_started", []).append(time.perf_counter())

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        took = (time.perf_counter() - conn.info["bench_started"].pop()) * 1000
        spent.setdefault(" ".join(statement.split()), []).append(took)

    event.listen(Engine, "before_cursor_execute", before)
    event.listen(Engine, "after_cursor_execute", after)
    try:
        t = time.perf_counter()
        assert client.get(path).status_code == 200
        total = (time.perf_counter() - t) * 1000
    finally:
        event.remove(Engine, "before_cursor_execute", before)
        event.remove(Engine, "after_cursor_execute", after)
    in_sql = sum(sum(v) for v in spent.values())
    print(f"\n  GET {path}: {total:.0f} ms, {sum(len(v) for v in spent.values())} statements, "
          f"{in_sql:.0f} ms in SQL; slowest:")
    for statement, times in sorted(spent.items(), key=lambda kv: -sum(kv[1]))[:top]:
        print(f"    {sum(times):7.1f} ms ×{len(times)}  {statement[:220]}")


def _http_client(url: str, tmp: Path) -> Any:
    from triage.security import create_user

    engine = create_engine(url)
    with Session(engine) as session:
        create_user(session, "bench.manager", PASSWORD, [Role.manager])
        session.commit()
    engine.dispose()
    client = _client(url, tmp)
    login(client, "bench.manager")
    return client


PASSWORD = "bench-manager-pass-1234"


def login(client: Any, username: str) -> None:
    """Log in through the real form (its CSRF cookie), as the tests do."""
    page = client.get("/login")
    token = page.cookies.get("miatari_login_csrf") or client.cookies.get("miatari_login_csrf")
    r = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token},
                    follow_redirects=False)
    assert r.status_code == 303, r.text[:300]


def _print(results: list[_Result], candidates: int) -> None:
    print(f"\nMetrics benchmark, {candidates // 1000}k candidates (cache off; ms; cold = first request after "
          f"seeding and summarising, warm = median; target ≤ {TARGET_MS} ms for 90 days)")
    print("| database | figures from | request | cold ms | warm ms | load (1 min) | bytes |")
    print("|---|---|---|---|---|---|---|")
    live = {(r.db, r.path): r for r in results if r.what == LIVE}
    for r in results:
        targeted = r.path in TARGETED and r.what == SUMMARISED
        flag = (" ✓" if max(r.cold, r.warm) <= TARGET_MS else " ✗") if targeted else ""
        base = live.get((r.db, r.path))
        ratio = f" ({base.warm / r.warm:.0f}× faster)" if base is not None and r.what == SUMMARISED and r.warm else ""
        print(f"| {r.db} | {r.what} | GET {r.path} | {r.cold:.0f} | {r.warm:.0f}{flag}{ratio} | {r.load:.1f} "
              f"| {r.size} |")


if __name__ == "__main__":
    sys.exit(main())
