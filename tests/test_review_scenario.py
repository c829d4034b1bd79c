"""A day on the queue, end to end: the real `miatari serve`, real faces, nine recognizer accounts over HTTP.

The watchlist is FRMDB mugshots (the first subjects by folder, two mugshots each) plus CelebA distractors;
the sightings are FRMDB surveillance crops, of enrolled subjects and of people not on the watchlist.
Everything is read by layout (``frmdb/manifest.csv``, ``celeba/identities.csv`` under
``MIATARI_FACES_DIR``), never by file name.  The bots see only what the API serves; what they "perceive" is
the truth (the oracle below reads which sighting and which subject a task pairs), blurred by their error:

* six careful recognizers, each answering at random 2 % of the time (two start qualified, as veterans);
* one careless recognizer, answering at random 30 % of the time;
* one who answers *same person* to everything;
* one who takes tasks and never answers them (a veteran, so its tasks are live ones).

Settings: known-answer share 0.2; probation share 1 (a new account is served known-answer pairs only until
it qualifies); bar 0.6 (suspended once a 95 % Wilson upper bound falls below it, qualified once both lower
bounds reach it); leases of 10 s, so abandoned tasks come back.

Why the assertions hold, with margin (random error = a uniform pick among the three verdicts):

* the always-*same* account is on probation, so all its tasks are known-answer pairs, each known-different
  with odds 1/2; its third wrong answer suspends it (0/3: upper bound 0.56 < 0.6).  Not within 20 tasks:
  P(Bin(20, 1/2) <= 2) = 211 / 2^20 = 2.0e-4.  It never answers a live task, so it can never co-sign a flag;
* a wrong flag needs two *same* on a wrong candidate in one round: a careful recognizer says *same* to a
  wrong pair with p = 0.02/3 = 0.0067, the careless one with p = 0.30/3 = 0.1.  The subset gives about 17
  candidates, half of them wrong (measured: 9 of 17); allowing 30 wrong rounds with escalations,
  careful + careful: 30 x 0.0067^2 = 1.3e-3; careless + careful (the careless account is on at most ~1/4
  of the rounds): 8 x 0.1 x 0.0067 = 5.4e-3 — and only once it has qualified (a lower bound of 0.6 on
  both kinds, e.g. 6/6 in a row: odds 0.8^6 = 0.26 per try), so less.  Together below 7e-3;
* a careful account is suspended only by, e.g., 1 right of 6 on a kind: below 1e-8;
* nothing random decides what the last assertions check (stored verdicts, uploads, the audit chain).

The bots' random generators are seeded; the server's own draws (which task is a known-answer pair) are not,
which is why the margins above are computed rather than relied on by replay.
"""

from __future__ import annotations

import csv
import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlmodel import Session, col, select

from tests.conftest import ROOT, add_user, make_settings, require_faces
from triage import audit
from triage.models import (
    AuditEntry,
    Candidate,
    Flag,
    Qualification,
    ReviewSlot,
    Role,
    Sighting,
    User,
)
from triage.security import create_api_token

pytestmark = pytest.mark.model

ENROLLED_FRMDB = 8          # FRMDB subjects on the watchlist (two mugshots each)
UNENROLLED_FRMDB = 4        # FRMDB subjects seen on CCTV but not wanted
CELEBA_DISTRACTORS = 6      # CelebA identities on the watchlist (one photo each)
SIGHTINGS_PER_ENROLLED = 4
SIGHTINGS_PER_UNENROLLED = 3
SCENARIO_SECONDS = 240      # the review loop stops here at the latest
IDLE_PASSES = 4             # passes with no work at all (with a pause each) before stopping early
SUSPEND_WITHIN_TASKS = 20
SEED = 20261201
VERDICTS = ("same", "different", "cannot_tell")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@dataclass
class Photos:
    """The subset used, by layout: identity → photo paths."""

    mugshots: dict[str, list[Path]]
    surveillance: dict[str, list[Path]]
    celeba: dict[str, Path]


def _choose(faces: Path) -> Photos:
    frmdb = faces / "frmdb"
    mug: dict[str, list[tuple[int, Path]]] = {}
    cctv: dict[str, list[Path]] = {}
    for row in _rows(frmdb / "manifest.csv"):
        ident = f"frmdb:{row['subject']}"
        if row["kind"] == "mugshot":
            mug.setdefault(ident, []).append((0 if row["view"] == "frontal" else 1, frmdb / row["file"]))
        elif row["kind"] == "surveillance":
            cctv.setdefault(ident, []).append(frmdb / row["file"])
    usable = sorted(i for i in mug if len(mug[i]) >= 2 and len(cctv.get(i, [])) >= SIGHTINGS_PER_ENROLLED)
    enrolled = usable[:ENROLLED_FRMDB]
    others = sorted(i for i in cctv if i not in enrolled)[:UNENROLLED_FRMDB]
    assert len(enrolled) == ENROLLED_FRMDB and others, "the FRMDB layout holds too few subjects"
    mugshots = {i: [p for _, p in sorted(mug[i])[:2]] for i in enrolled}
    surveillance = {i: sorted(cctv[i])[:SIGHTINGS_PER_ENROLLED] for i in enrolled}
    surveillance.update({i: sorted(cctv[i])[:SIGHTINGS_PER_UNENROLLED] for i in others})
    celeba: dict[str, Path] = {}
    for row in _rows(faces / "celeba" / "identities.csv"):
        ident = f"celeba:{row['identity']}"
        if ident not in celeba and len(celeba) < CELEBA_DISTRACTORS:
            celeba[ident] = faces / "celeba" / row["file"]
    return Photos(mugshots, surveillance, celeba)


@dataclass
class Bot:
    name: str
    kind: str            # careful / careless / yes / abandon
    error: float
    veteran: bool = False
    rng: random.Random = field(default_factory=random.Random)
    client: httpx.Client | None = None
    slots: list[int] = field(default_factory=list)      # tasks taken, in order
    recorded: list[tuple[int, str]] = field(default_factory=list)   # 201: (slot, verdict)
    replays: int = 0
    refused: list[tuple[int, int, str]] = field(default_factory=list)  # (slot, status, reason)
    suspended_after: int | None = None

    def decide(self, truth: str) -> str:
        if self.kind == "yes":
            return "same"
        if self.rng.random() < self.error:
            return self.rng.choice(VERDICTS)
        return truth


def _bots() -> list[Bot]:
    bots = [Bot(f"careful{i}", "careful", 0.02, veteran=i <= 2) for i in range(1, 7)]
    bots += [Bot("careless", "careless", 0.30), Bot("yesman", "yes", 0.0),
             Bot("abandoner", "abandon", 0.0, veteran=True)]
    for i, b in enumerate(bots):
        b.rng = random.Random(SEED + i)
    return bots


def test_a_day_on_the_queue(tmp_path: Path, db_url: str, engine) -> None:
    faces = require_faces()
    photos = _choose(faces)
    settings = make_settings(tmp_path, db_url)
    bots = _bots()
    tokens: dict[str, str] = {}
    add_user(engine, "officer", Role.officer)
    add_user(engine, "chief", Role.manager)
    for b in bots:
        add_user(engine, b.name, Role.recognizer)
    with Session(engine, expire_on_commit=False) as s:
        for u in s.exec(select(User)).all():
            if any(b.name == u.username and b.veteran for b in bots):
                u.qualification = Qualification.qualified.value
                s.add(u)
            tokens[u.username] = create_api_token(s, u, "scenario")[0]
        s.commit()

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIATARI_")}
    env.update({"MIATARI_DATABASE_URL": db_url, "MIATARI_DATA_DIR": str(settings.data_dir),
                "MIATARI_SECRET_KEY": "s" * 40, "MIATARI_MODELS_DIR": str(settings.deepface_home),
                "MIATARI_PORT": str(port), "MIATARI_WORKER_POLL_SECONDS": "0.2",
                "MIATARI_KNOWN_ANSWER_SHARE": "0.2", "MIATARI_PROBATION_KNOWN_ANSWER_SHARE": "1.0",
                "MIATARI_QUALIFICATION_MIN_ACCURACY": "0.6", "MIATARI_LEASE_SECONDS": "10",
                "MIATARI_TOP_K": "3", "MIATARI_LEAD_THRESHOLD": "0.6", "PYTHONPATH": str(ROOT)})
    log = tmp_path / "serve.log"
    with log.open("w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "miatari.cli", "serve"], cwd=tmp_path, env=env,
                                stdout=fh, stderr=subprocess.STDOUT)
    clients: list[httpx.Client] = []

    def client(name: str) -> httpx.Client:
        # Generous: the first enrolment photo waits for the face models to load (a minute on a busy machine).
        c = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {tokens[name]}"}, timeout=180)
        clients.append(c)
        return c

    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"serve exited early:\n{log.read_text()}"
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail(f"serve never became ready:\n{log.read_text()}")
        chief, field_officer = client("chief"), client("officer")

        # The watchlist.
        identity_of_subject: dict[int, str] = {}
        enrolled_photos = 0
        wanted = [(i, ps) for i, ps in photos.mugshots.items()] + [(i, [p]) for i, p in photos.celeba.items()]
        for n, (ident, paths) in enumerate(wanted):
            r = chief.post("/api/subjects", json={"name": f"Wanted {n + 1}", "case_ref": f"W-{n + 1:03d}"})
            assert r.status_code == 201, r.text
            sid = r.json()["id"]
            identity_of_subject[sid] = ident
            for path in paths:
                r = chief.post(f"/api/subjects/{sid}/photos", files={"photo": (path.name, path.read_bytes())})
                assert r.status_code in (201, 422), r.text  # 422: refused with a reason (no usable face)
                enrolled_photos += r.status_code == 201
        assert enrolled_photos >= ENROLLED_FRMDB * 2 - 2

        # The sightings; every upload answered at once and matched by the embedded worker.
        identity_of_sighting: dict[int, str] = {}
        for ident, paths in sorted(photos.surveillance.items()):
            for path in paths:
                r = field_officer.post("/api/sightings", files={"photos": (path.name, path.read_bytes())},
                                       data={"location_text": "Central station"},
                                       headers={"Idempotency-Key": f"{ident}-{path.name}"})
                assert r.status_code == 202, r.text
                identity_of_sighting[r.json()["id"]] = ident
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            states = [field_officer.get(f"/api/sightings/{i}").json() for i in identity_of_sighting]
            if all(st["done"] for st in states):
                break
            time.sleep(1)
        assert all(st["status"] in ("matched", "no_face") for st in states), states

        def truth(slot_id: int) -> str:
            with Session(engine) as s:
                cand = s.get_one(Candidate, s.get_one(ReviewSlot, slot_id).candidate_id)
                if cand.known_truth is not None:
                    return cand.known_truth
                assert cand.sighting_id is not None
                same = identity_of_sighting[cand.sighting_id] == identity_of_subject[cand.subject_id]
                return "same" if same else "different"

        def open_real() -> int:
            with Session(engine) as s:
                return len(s.exec(select(Candidate.id).where(Candidate.status == "open",
                                                             col(Candidate.known_truth).is_(None))).all())

        with Session(engine) as s:
            real = s.exec(select(Candidate).where(col(Candidate.known_truth).is_(None))).all()
            n_real, n_true = len(real), sum(
                c.sighting_id is not None and identity_of_sighting[c.sighting_id] == identity_of_subject[c.subject_id]
                for c in real)
        print(f"{len(identity_of_sighting)} sightings, {n_real} candidates, {n_true} of the right person")
        assert n_real >= 10, f"too few candidates to review ({n_real})"

        # The review loop.
        for b in bots:
            b.client = client(b.name)
        idle = 0
        stop = time.monotonic() + SCENARIO_SECONDS
        while time.monotonic() < stop and idle < IDLE_PASSES:
            worked = False
            for b in bots:
                if b.suspended_after is not None:
                    continue
                assert b.client is not None
                r = b.client.post("/api/review/next")
                if r.status_code == 403:
                    assert "suspended" in r.json()["detail"]
                    b.suspended_after = len(b.slots)
                    continue
                assert r.status_code == 200, r.text
                task = r.json()["task"]
                if task is None:
                    continue
                worked = True
                if not b.slots or b.slots[-1] != task["slot_id"]:
                    b.slots.append(task["slot_id"])
                if b.kind == "abandon":
                    continue
                img = b.client.get(task["images"]["probe_eyes"])
                assert img.status_code == 200 and img.content[:4] == b"\x89PNG"
                verdict = b.decide(truth(task["slot_id"]))
                key = {"Idempotency-Key": f"{b.name}-{task['slot_id']}"}
                v = b.client.post(task["verdict_url"], json={"verdict": verdict}, headers=key)
                if v.status_code == 201:
                    b.recorded.append((task["slot_id"], verdict))
                    if b.rng.random() < 0.1:  # a retry after a dropped connection: a replay, not a second verdict
                        again = b.client.post(task["verdict_url"], json={"verdict": verdict}, headers=key)
                        assert again.status_code == 200 and again.json()["replayed"] is True
                        b.replays += 1
                else:
                    assert v.status_code in (403, 409) and v.json()["detail"], v.text
                    b.refused.append((task["slot_id"], v.status_code, v.json()["detail"]))
            for d in chief.get("/api/review/disputes").json()["data"]:
                if d["eligible_recognizers"] >= 2 and d["round"] < 3:
                    assert chief.post(f"/api/review/candidates/{d['candidate_id']}/escalate").status_code == 200
                    worked = True
            if not open_real():
                break
            idle = 0 if worked else idle + 1
            if not worked:
                time.sleep(3)  # abandoned leases (10 s) come back
    finally:
        for c in clients:
            c.close()
        proc.terminate()
        proc.wait(30)

    yes = next(b for b in bots if b.kind == "yes")
    with Session(engine) as s:
        users = {u.username: u for u in s.exec(select(User)).all()}
        name_of = {u.id: u.username for u in users.values()}
        flags = s.exec(select(Flag)).all()
        candidates = {c.id: c for c in s.exec(select(Candidate)).all()}
        slots = s.exec(select(ReviewSlot)).all()
        sightings = s.exec(select(Sighting)).all()
        outcomes = Counter(c.status for c in candidates.values() if c.known_truth is None)
        summary = (f"real candidates {n_real} (true {n_true}), outcomes {dict(outcomes)}, flags {len(flags)}, "
                   f"known-answer pairs {sum(c.known_truth is not None for c in candidates.values())}, "
                   f"verdicts {sum(len(b.recorded) for b in bots)}, "
                   f"voided {sum(x.voided_at is not None for x in slots)}, "
                   f"standing { {n: users[n].qualification for n in sorted(b.name for b in bots)} }, "
                   f"yesman suspended after {yes.suspended_after} tasks")
        print(summary)

        # Nothing lost: every upload matched; every recorded verdict stored once, every refusal with its reason.
        assert len(sightings) == len(identity_of_sighting)
        assert all(x.status in ("matched", "no_face") for x in sightings)
        stored = Counter((name_of[x.reviewer_id], x.id, x.verdict) for x in slots if x.verdict is not None)
        sent = Counter((b.name, slot, verdict) for b in bots for slot, verdict in b.recorded)
        assert stored == sent, summary
        ok = s.exec(select(AuditEntry).where(AuditEntry.action == "review.verdict", AuditEntry.outcome == "ok")).all()
        assert len(ok) == sum(sent.values())
        assert all(reason for b in bots for _, _, reason in b.refused)

        # The always-'same' account: suspended within its first 20 tasks, and never on a live task.
        assert users["yesman"].qualification == "suspended", summary
        assert yes.suspended_after is not None and yes.suspended_after <= SUSPEND_WITHIN_TASKS, summary
        assert all(candidates[x.candidate_id].known_truth is not None
                   for x in slots if x.reviewer_id == users["yesman"].id)

        # No flag on the wrong person; no flag without two 'same' in one round, by two people, counting.
        for f in flags:
            cand = candidates[f.candidate_id]
            assert cand.known_truth is None and cand.status == "flagged"
            assert cand.sighting_id is not None
            assert identity_of_sighting[cand.sighting_id] == identity_of_subject[cand.subject_id], summary
            current = [x for x in slots if x.candidate_id == cand.id and x.round == cand.current_round
                       and x.voided_at is None and not x.withdrawn]
            assert [x.verdict for x in current] == ["same", "same"]
            assert len({x.reviewer_id for x in current}) == 2
        assert {f.candidate_id for f in flags} == {c.id for c in candidates.values() if c.status == "flagged"}
        assert sum(len(b.recorded) for b in bots if b.kind == "careful") > 0 and outcomes["open"] < n_real
        assert audit.verify(s).ok
