"""The embedder interface: model ids, per-face embeddings by model, the gallery's model check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from matcher import DEFAULT_MODEL, GalleryIndex, ModelMismatch, available_models, model_id_for
from matcher.score import embedding_from_bytes, embedding_to_bytes


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def test_model_ids_are_stable_and_name_the_weights(models_home: Path) -> None:
    assert DEFAULT_MODEL in available_models()
    for name in available_models():
        mid = model_id_for(name, models_home)
        assert mid.startswith(name + "@") and len(mid.split("@")[1]) == 16
        assert model_id_for(name, models_home) == mid


def test_unknown_model_is_refused(models_home: Path) -> None:
    from matcher import FacePipeline

    with pytest.raises(ValueError, match="unknown face model"):
        model_id_for("no-such-model", models_home)
    with pytest.raises(ValueError, match="unknown face model"):
        FacePipeline(models_home=models_home, model="no-such-model")


def test_face_carries_the_model_id(pipeline, astronaut_face) -> None:
    assert pipeline.model_id == model_id_for(pipeline.model, pipeline.models_home)
    assert astronaut_face.model_id == pipeline.model_id
    assert set(astronaut_face.embeddings) >= {pipeline.model_id}
    np.testing.assert_array_equal(astronaut_face.embeddings[pipeline.model_id], astronaut_face.embedding)
    assert astronaut_face.embedding.shape == (pipeline.dim,)


def test_gallery_refuses_another_models_vectors() -> None:
    rng = np.random.default_rng(3)
    idx = GalleryIndex(128, model_id="dlib@0123456789abcdef")
    v = unit(rng.standard_normal(128))
    idx.add(1, 10, v, model_id="dlib@0123456789abcdef")
    with pytest.raises(ModelMismatch, match="faceres@"):
        idx.add(2, 20, v, model_id="faceres@fedcba9876543210")
    with pytest.raises(ModelMismatch, match="length 1024"):
        idx.add(2, 20, unit(rng.standard_normal(1024)))
    with pytest.raises(ModelMismatch):
        idx.add_many([1, 2], [30, 40], np.stack([v, v]), model_id="other@0000000000000000")
    with pytest.raises(ModelMismatch):
        idx.search(v, 5, model_id="faceres@fedcba9876543210")
    with pytest.raises(ModelMismatch):
        idx.search(unit(rng.standard_normal(64)), 5)
    # nothing was added by the refused calls
    assert len(idx) == 1 and 20 not in idx and 30 not in idx
    assert [h.subject_id for h in idx.search(v, 5, model_id="dlib@0123456789abcdef")] == [1]


@pytest.mark.parametrize("dim", [128, 192, 1024, 1344])
def test_storage_round_trip_any_dim(dim: int) -> None:
    v = unit(np.random.default_rng(dim).standard_normal(dim))
    np.testing.assert_array_equal(embedding_from_bytes(embedding_to_bytes(v)), v)


# -- the registry models: conversion, every descriptor on real faces ------------------------------
# Reference outputs of the TensorFlow.js originals, computed once with @tensorflow/tfjs 4.22
# (CPU backend, node) on the astronaut crop below: the norm of the descriptor and its six
# largest entries. The converted TensorFlow graphs must reproduce them.
TFJS_REFERENCE = {
    "faceres": (9.723031, [463, 837, 623, 534, 329, 100], [1.715367, 1.593341, 1.364839, 1.186818, 1.184316, 1.162606]),
    "faceres-deep": (
        5.845463,
        [530, 658, 329, 475, 837, 337],
        [1.184469, 1.122649, 1.077605, 0.946125, 0.891926, 0.843508],
    ),
    "mobilefacenet": (1.0, [189, 145, 83, 63, 87, 184], [0.283416, -0.245812, 0.239957, 0.236785, 0.233985, 0.19788]),
    "mobileface": (
        115.628525,
        [162, 125, 124, 19, 217, 23],
        [25.683441, 24.064184, 20.843298, 18.355408, 17.149105, -16.859341],
    ),
}


@pytest.mark.parametrize("name", sorted(TFJS_REFERENCE))
def test_converted_tfjs_graph_matches_the_tfjs_original(name: str, models_home: Path, astronaut: np.ndarray) -> None:
    import cv2

    from matcher.embedders import CHIP_SPECS, GraphEmbedder, build_embedder

    emb = build_embedder(name, models_home)
    assert isinstance(emb, GraphEmbedder)
    spec = CHIP_SPECS[name]
    crop = np.ascontiguousarray(astronaut[20:220, 120:320])
    x = cv2.resize(crop, (spec.size, spec.size), interpolation=cv2.INTER_AREA).astype(np.float32)[None]
    out = emb.load()((x - spec.offset) * spec.scale)[0]
    norm, idx, vals = TFJS_REFERENCE[name]
    assert np.linalg.norm(out) == pytest.approx(norm, rel=1e-3)
    np.testing.assert_allclose(out[idx], vals, rtol=2e-3, atol=2e-3 * norm / 10)


def test_converted_graph_checked_against_its_checksum(models_home: Path, tmp_path: Path) -> None:
    import shutil

    from matcher import ModelFilesMissing
    from matcher.embedders import build_embedder
    from matcher.models import converted_graph

    home = tmp_path / "home"
    src = converted_graph(models_home, "mobileface")
    dst = converted_graph(home, "mobileface")
    shutil.copytree(models_home / "miatari", home / "miatari", symlinks=False)
    data = bytearray(dst.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dst.write_bytes(bytes(data))
    assert src.read_bytes() != dst.read_bytes()
    with pytest.raises(ModelFilesMissing, match="checksum"):
        build_embedder("mobileface", home).load()


ALL_MODELS = available_models()


@pytest.fixture(scope="module")
def every_model_faces(models_home: Path, astronaut: np.ndarray, grace_hopper: np.ndarray):
    """The astronaut, an altered copy of her photo, and Grace Hopper, embedded by every model at once."""
    from PIL import Image, ImageEnhance

    from matcher import FacePipeline

    from .conftest import encode

    pipe = FacePipeline(models_home=models_home)
    img = Image.fromarray(astronaut)
    w, h = img.size
    rotated = img.rotate(8, resample=Image.Resampling.BICUBIC)
    altered = ImageEnhance.Brightness(rotated.resize((w * 3 // 4, h * 3 // 4))).enhance(0.8)
    faces = {}
    for key, data in {
        "astronaut": encode(astronaut),
        "altered": encode(np.asarray(altered), "JPEG", quality=70),
        "hopper": encode(grace_hopper, "JPEG", quality=95),
    }.items():
        found = pipe.analyze(data, models=ALL_MODELS)
        assert len(found) == 1
        faces[key] = found[0]
    return faces


@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_descriptor_matches_the_same_face_and_not_another(
    name: str, models_home: Path, every_model_faces
) -> None:
    from matcher.score import distance, similarity

    mid = model_id_for(name, models_home)
    a, b, h = (every_model_faces[k].embeddings[mid] for k in ("astronaut", "altered", "hopper"))
    for v in (a, b, h):
        assert v.dtype == np.float32 and np.linalg.norm(v) == pytest.approx(1.0, abs=1e-4)
    same, other = distance(a, b), distance(a, h)
    assert same < other
    # at the default lead threshold, through each model's own calibration
    from matcher import DEFAULT_LEAD_THRESHOLD

    assert similarity(same, name) >= DEFAULT_LEAD_THRESHOLD > similarity(other, name)


def test_extra_models_are_embedded_once_per_face(every_model_faces, models_home: Path) -> None:
    face = every_model_faces["astronaut"]
    assert set(face.embeddings) == {model_id_for(n, models_home) for n in ALL_MODELS}
    assert face.model_id == model_id_for(DEFAULT_MODEL, models_home)
    np.testing.assert_array_equal(face.embedding, face.embeddings[face.model_id])


class _Member:
    """A member with a name, an id and a length only: ``combine`` never calls a model."""

    def __init__(self, name: str, dim: int) -> None:
        self.name, self.dim, self.model_id = name, dim, f"{name}@{'0' * 16}"

    def embed(self, src: np.ndarray, faces: object) -> np.ndarray:  # pragma: no cover - not called
        raise AssertionError

    def load(self) -> None:  # pragma: no cover - not called
        raise AssertionError


def test_fusion_vector_dot_is_the_weighted_sum_of_cosines() -> None:
    from matcher.embedders import FusionEmbedder

    rng = np.random.default_rng(5)
    fusion = FusionEmbedder("f", [(_Member("a", 8), 3.0), (_Member("b", 16), 1.0)])
    a1, a2 = (np.stack([unit(rng.standard_normal(8))]) for _ in range(2))
    b1, b2 = (np.stack([unit(rng.standard_normal(16))]) for _ in range(2))
    v1, v2 = fusion.combine([a1, b1])[0], fusion.combine([a2, b2])[0]
    expected = (3.0 * float(a1[0] @ a2[0]) + 1.0 * float(b1[0] @ b2[0])) / 4.0
    assert float(v1 @ v2) == pytest.approx(expected, abs=1e-6)
    assert fusion.dim == 24 and np.linalg.norm(v1) == pytest.approx(1.0, abs=1e-6)
    # the id changes with the weights and with the projection
    other = FusionEmbedder("f", [(_Member("a", 8), 1.0), (_Member("b", 16), 1.0)])
    projected = FusionEmbedder(
        "f",
        [(_Member("a", 8), 3.0), (_Member("b", 16), 1.0)],
        np.eye(24, dtype=np.float32)[:4],
    )
    assert len({fusion.model_id, other.model_id, projected.model_id}) == 3
    assert projected.dim == 4
    with pytest.raises(ValueError, match="projection"):
        FusionEmbedder("f", [(_Member("a", 8), 1.0)], np.eye(24, dtype=np.float32))
