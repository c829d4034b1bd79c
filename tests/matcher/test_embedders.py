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


def test_face_carries_the_model_id(pipeline, astronaut_face) -> None:  # type: ignore[no-untyped-def]
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
