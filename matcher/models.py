"""Placing the model weights where deepface looks for them - never downloading.

deepface resolves every weight file as ``$DEEPFACE_HOME/.deepface/weights/<name>``
and downloads it when absent. The ``Dlib`` recognition model and dlib's landmark
predictors ship in the ``face_recognition_models`` package, and ``mtcnn`` carries
its own weights inside its package, so :func:`ensure_models` links (or copies)
the package files into that folder before first use, and the pipeline refuses to
start rather than let deepface reach for the network.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import threading
from pathlib import Path

from matcher.errors import ModelFilesMissing

# deepface's file name -> file name inside face_recognition_models/models/
MODEL_FILES: dict[str, str] = {
    "dlib_face_recognition_resnet_model_v1.dat": "dlib_face_recognition_resnet_model_v1.dat",
    "shape_predictor_5_face_landmarks.dat": "shape_predictor_5_face_landmarks.dat",
    # not a deepface file: used directly for the pose estimate (68 landmarks)
    "shape_predictor_68_face_landmarks.dat": "shape_predictor_68_face_landmarks.dat",
}

_lock = threading.Lock()
_last_home: Path | None = None


def weights_dir(models_home: Path | str) -> Path:
    """The folder deepface reads weights from for a given ``DEEPFACE_HOME``."""
    return Path(models_home) / ".deepface" / "weights"


def _package_dir(name: str) -> Path | None:
    """A package's folder, found without importing it (cheap)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def source_files() -> dict[str, Path]:
    """Where each model file comes from (inside installed packages)."""
    pkg = _package_dir("face_recognition_models")
    base = pkg / "models" if pkg else Path("/nonexistent/face_recognition_models/models")
    return {target: base / src for target, src in MODEL_FILES.items()}


def _mtcnn_weights() -> list[Path]:
    pkg = _package_dir("mtcnn")
    if pkg is None:
        return []
    return sorted((pkg / "assets" / "weights").glob("*"))


def default_models_home() -> Path:
    """``MIATARI_MODELS_HOME``, else the home last passed to :func:`ensure_models`,
    else ``DEEPFACE_HOME``, else the user's home (deepface's own default)."""
    env = os.environ.get("MIATARI_MODELS_HOME")
    if env:
        return Path(env)
    if _last_home is not None:
        return _last_home
    return Path(os.environ.get("DEEPFACE_HOME") or Path.home())


def ensure_models(models_home: Path | str) -> list[Path]:
    """Place every weight file under ``models_home/.deepface/weights`` (symlink, or copy
    where links are not possible). Idempotent; returns the placed paths.

    Raises :class:`ModelFilesMissing` naming the package to install if a source is absent.
    """
    global _last_home
    home = Path(models_home).expanduser().resolve()
    sources = source_files()
    missing = [str(p) for p in sources.values() if not p.is_file()]
    if missing:
        raise ModelFilesMissing(
            "Model files not found: " + ", ".join(missing) + ". Install the `face_recognition_models` package "
            "(no model is ever downloaded at run time)."
        )
    if not _mtcnn_weights():
        raise ModelFilesMissing("The `mtcnn` package (with its bundled weights) is not installed.")
    target_dir = weights_dir(home)
    placed: list[Path] = []
    with _lock:
        target_dir.mkdir(parents=True, exist_ok=True)
        for name, src in sources.items():
            dst = target_dir / name
            if dst.is_file() and dst.stat().st_size == src.stat().st_size:
                placed.append(dst)
                continue
            if dst.is_symlink() or dst.exists():
                dst.unlink()  # broken link or a partial file
            tmp = dst.with_name(dst.name + f".tmp{os.getpid()}")
            if tmp.is_symlink() or tmp.exists():
                tmp.unlink()
            try:
                tmp.symlink_to(src)
            except OSError:
                shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
            placed.append(dst)
        _last_home = home
    return placed


def models_present(models_home: Path | str) -> bool:
    """True when every weight file is in place and readable (cheap: no heavy import)."""
    target_dir = weights_dir(Path(models_home).expanduser())
    for name in MODEL_FILES:
        path = target_dir / name
        try:
            if not path.is_file() or path.stat().st_size == 0:
                return False
        except OSError:
            return False
    return bool(_mtcnn_weights())
