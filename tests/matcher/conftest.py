"""Fixtures for the matcher tests: one real pipeline per session, packaged faces."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def faces_dir() -> Path:
    return Path(os.environ.get("MIATARI_FACES_DIR", ROOT.parent / "shared" / "faces"))


def require_faces() -> Path:
    """The real face photos, or a skip (a failure where MIATARI_REQUIRE_FACES=1)."""
    path = faces_dir()
    if not (path / "frmdb" / "manifest.csv").exists() or not (path / "celeba" / "identities.csv").exists():
        reason = f"real face photos not found at {path} (set MIATARI_FACES_DIR)"
        if os.environ.get("MIATARI_REQUIRE_FACES") == "1":
            pytest.fail(reason + "; they are mandatory here (MIATARI_REQUIRE_FACES=1)")
        pytest.skip(reason)
    return path


def encode(rgb: np.ndarray, fmt: str = "PNG", **kw: object) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="session")
def models_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from matcher import ensure_models

    home = tmp_path_factory.mktemp("deepface_home")
    ensure_models(home)
    return home


@pytest.fixture(scope="session")
def pipeline(models_home: Path):
    from matcher import FacePipeline

    pipe = FacePipeline(models_home=models_home)
    pipe.warm_up()
    return pipe


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


@pytest.fixture(scope="session")
def grace_hopper() -> np.ndarray:
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="session")
def astronaut_face(pipeline, astronaut):
    faces = pipeline.analyze(encode(astronaut))
    assert len(faces) == 1
    return faces[0]


@pytest.fixture(scope="session")
def hopper_face(pipeline, grace_hopper):
    faces = pipeline.analyze(encode(grace_hopper, "JPEG", quality=95))
    assert len(faces) == 1
    return faces[0]
