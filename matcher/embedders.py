"""Face descriptors: one :class:`Embedder` per recognition model, and score-level fusions.

An embedder turns the faces of a photo into L2-normalised vectors. It computes its
own crop from the photo and the face's landmarks (:class:`FaceGeometry`), so each
model gets the alignment it was trained on. Every embedder has a ``model_id``,
``"<name>@<first 16 hex digits of the sha256 of its weights>"``: an embedding is
only ever compared with embeddings of the same ``model_id``.

A fusion Σ wᵢ·cosᵢ of several models is one dot product of the concatenated,
per-model L2-normalised vectors scaled by √(wᵢ/Σw): it is stored and searched as
one vector (:class:`FusionEmbedder`).
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from matcher.errors import ModelFilesMissing


@dataclass
class FaceGeometry:
    """Where a face is in the source image (the image the pipeline aligns from)."""

    # five points, source pixels: image-left eye centre, image-right eye centre, nose tip,
    # image-left mouth corner, image-right mouth corner (MTCNN's order)
    points5: np.ndarray
    # dlib's own 5-point shape (eye corners, under the nose) when the face came from HOG
    dlib_shape5: Any | None
    # inter-ocular distance in the original photo, px (small faces are mirror-averaged)
    iod_px: float


@runtime_checkable
class Embedder(Protocol):
    name: str
    model_id: str
    dim: int

    def embed(self, src: np.ndarray, faces: Sequence[FaceGeometry]) -> np.ndarray:
        """``(len(faces), dim)`` float32, each row L2-normalised."""
        ...


def l2_normalise(vecs: np.ndarray) -> np.ndarray:
    vecs = np.asarray(vecs, dtype=np.float32)
    return vecs / np.maximum(np.linalg.norm(vecs, axis=-1, keepdims=True), 1e-12)


_hash_cache: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached by path, size and modification time."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _hash_lock:
        if key in _hash_cache:
            return _hash_cache[key]
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    with _hash_lock:
        _hash_cache[key] = digest
    return digest


def weights_model_id(name: str, files: Sequence[Path]) -> str:
    """``name@<16 hex>`` over the weight files (one file: its own sha256)."""
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise ModelFilesMissing(f"weights of the {name!r} face model are not installed: {', '.join(missing)}")
    if len(files) == 1:
        digest = file_sha256(files[0])
    else:
        digest = hashlib.sha256("".join(file_sha256(p) for p in files).encode()).hexdigest()
    return f"{name}@{digest[:16]}"


# -- dlib (deepface's "Dlib" model) ----------------------------------------------------------
FLIP_BELOW_IOD = 80.0  # mirror-average faces smaller than this (px between the eyes)
DLIB_CHIP_SIZE = 150
DLIB_CHIP_PADDING = 0.25


def fit_similarity(pts: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Similarity transform from five detected points to a chip template (robust LMedS fit,
    least squares when that fails)."""
    import cv2

    from matcher import geometry

    m, _ = cv2.estimateAffinePartial2D(pts.astype(np.float32), template.astype(np.float32), method=cv2.LMEDS)
    if m is None or not np.all(np.isfinite(m)):
        m = geometry.similarity_from_points(pts, template)
    return m


def dlib_chip(src: np.ndarray, face: FaceGeometry) -> np.ndarray:
    """dlib's 150x150 face-chip layout: from dlib's own 5 points where there are some
    (HOG faces), else from the five detector points (measured better than re-running
    dlib's 5-point predictor in MTCNN's box: see docs/matcher.md)."""
    from matcher import geometry

    if face.dlib_shape5 is not None:
        import dlib

        chip = dlib.get_face_chip(src, face.dlib_shape5, size=DLIB_CHIP_SIZE, padding=DLIB_CHIP_PADDING)
    else:
        m = fit_similarity(face.points5, geometry.CHIP_TEMPLATE_150)
        chip = geometry.warp_affine(src, m, (DLIB_CHIP_SIZE, DLIB_CHIP_SIZE))
    return np.ascontiguousarray(chip)


class DlibEmbedder:
    """deepface's ``Dlib`` model (dlib's ResNet, 128-d) on dlib's 150x150 chip; faces under
    ``flip_below_iod`` px between the eyes are mirror-averaged."""

    name = "dlib"
    dim = 128

    def __init__(self, models_home: Path, flip_below_iod: float = FLIP_BELOW_IOD) -> None:
        self.models_home = Path(models_home)
        self.flip_below_iod = float(flip_below_iod)
        self.model_id = weights_model_id(self.name, self.weight_files(self.models_home))
        self._rec: Any = None
        self._lock = threading.Lock()

    @staticmethod
    def weight_files(models_home: Path) -> list[Path]:
        from matcher.models import weights_dir

        return [weights_dir(models_home) / "dlib_face_recognition_resnet_model_v1.dat"]

    def load(self) -> Any:
        if self._rec is None:
            with self._lock:
                if self._rec is None:
                    import os

                    os.environ["DEEPFACE_HOME"] = str(self.models_home)
                    from deepface.modules import modeling

                    rec = modeling.build_model(task="facial_recognition", model_name="Dlib")
                    self._rec = rec.model.model  # dlib.face_recognition_model_v1 loaded by deepface
        return self._rec

    def embed_chips(self, chips: Sequence[np.ndarray], flips: Sequence[bool]) -> np.ndarray:
        rec = self.load()
        batch = list(chips) + [np.ascontiguousarray(c[:, ::-1]) for c, f in zip(chips, flips, strict=True) if f]
        vecs = np.asarray(rec.compute_face_descriptor(batch), dtype=np.float32).reshape(len(batch), -1)
        out = vecs[: len(chips)].copy()
        j = len(chips)
        for i, f in enumerate(flips):
            if f:
                out[i] += vecs[j]
                j += 1
        return l2_normalise(out)

    def embed(self, src: np.ndarray, faces: Sequence[FaceGeometry]) -> np.ndarray:
        if not faces:
            return np.zeros((0, self.dim), np.float32)
        chips = [dlib_chip(src, f) for f in faces]
        return self.embed_chips(chips, [f.iod_px < self.flip_below_iod for f in faces])


# -- fusion -----------------------------------------------------------------------------------
class FusionEmbedder:
    """Score-level fusion Σ wᵢ·cosᵢ / Σ wᵢ of member models, as one vector: the members'
    L2-normalised vectors scaled by √(wᵢ/Σw) and concatenated (unit norm by construction)."""

    def __init__(self, name: str, members: Sequence[tuple[Embedder, float]]) -> None:
        if not members or any(w <= 0 for _, w in members):
            raise ValueError("a fusion needs members with positive weights")
        self.name = name
        self.members = list(members)
        total = sum(w for _, w in members)
        self._scales = [math.sqrt(w / total) for _, w in members]
        self.dim = sum(e.dim for e, _ in members)
        self.model_id = fusion_model_id(name, [(e.model_id, w) for e, w in members])

    def embed(self, src: np.ndarray, faces: Sequence[FaceGeometry]) -> np.ndarray:
        parts = [l2_normalise(e.embed(src, faces)) * s for (e, _), s in zip(self.members, self._scales, strict=True)]
        return l2_normalise(np.concatenate(parts, axis=1))


def fusion_model_id(name: str, members: Sequence[tuple[str, float]]) -> str:
    text = ";".join(f"{mid}*{w:.6g}" for mid, w in members)
    return f"{name}@{hashlib.sha256(text.encode()).hexdigest()[:16]}"


# -- registry ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """How to build one named model, and which weight files identify it."""

    name: str
    build: Callable[[Path, dict[str, Any]], Embedder]
    weight_files: Callable[[Path], list[Path]] | None = None  # None: a fusion
    fusion: tuple[tuple[str, float], ...] = ()  # (member name, weight)


MODELS: dict[str, ModelSpec] = {
    "dlib": ModelSpec(
        "dlib",
        lambda home, opts: DlibEmbedder(home, **opts),
        DlibEmbedder.weight_files,
    ),
}

DEFAULT_MODEL = "dlib"


def available_models() -> list[str]:
    """Names of every model the matcher can embed with (weights installed or not)."""
    return list(MODELS)


def _spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown face model {name!r}; known: {', '.join(MODELS)}") from None


def model_id_for(name: str, models_home: Path | str) -> str:
    """The model id of a named model, from its installed weights (no TensorFlow loaded);
    :class:`ModelFilesMissing` if they are absent."""
    spec = _spec(name)
    home = Path(models_home)
    if spec.fusion:
        return fusion_model_id(name, [(model_id_for(m, home), w) for m, w in spec.fusion])
    assert spec.weight_files is not None
    return weights_model_id(name, spec.weight_files(home))


def build_embedder(
    name: str, models_home: Path | str, cache: dict[str, Embedder] | None = None, **opts: Any
) -> Embedder:
    """An embedder for a named model (members of a fusion shared through ``cache``)."""
    cache = {} if cache is None else cache
    if name in cache:
        return cache[name]
    spec = _spec(name)
    home = Path(models_home)
    if spec.fusion:
        emb: Embedder = FusionEmbedder(name, [(build_embedder(m, home, cache, **opts), w) for m, w in spec.fusion])
    else:
        emb = spec.build(home, opts if name == "dlib" else {})
    cache[name] = emb
    return emb
