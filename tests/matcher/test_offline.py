"""Matching works with the network blocked: no model is fetched at run time."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.model

SCRIPT = textwrap.dedent(
    """
    import io, socket, sys
    def refuse(*args, **kwargs):
        raise OSError("network access is blocked in this test")
    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse

    import numpy as np
    from PIL import Image
    from skimage import data
    from matcher import FacePipeline, GalleryIndex, ensure_models

    home = sys.argv[1]
    ensure_models(home)
    pipe = FacePipeline(models_home=home)
    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, "PNG")
    faces = pipe.analyze(buf.getvalue())
    assert len(faces) == 1, faces
    index = GalleryIndex()
    index.add(1, 1, faces[0].embedding)
    flipped = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(data.astronaut()[:, ::-1])).save(flipped, "PNG")
    hits = index.search(pipe.analyze(flipped.getvalue())[0].embedding, 5)
    print("OK", len(faces), hits[0].subject_id, round(hits[0].score, 3))
    """
)


def test_analyze_with_network_blocked(tmp_path: Path) -> None:
    home = tmp_path / "fresh_home"  # nothing placed yet: ensure_models must do it offline
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(home)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OK 1 1" in out.stdout, out.stdout + out.stderr[-2000:]
    assert (home / ".deepface" / "weights" / "dlib_face_recognition_resnet_model_v1.dat").is_file()
