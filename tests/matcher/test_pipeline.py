"""The real pipeline on packaged faces (scikit-image's astronaut, matplotlib's Grace Hopper)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from matcher import (
    DEFAULT_LEAD_THRESHOLD,
    EYE_CROP_HEIGHT,
    EYE_CROP_IOD,
    EYE_CROP_WIDTH,
    Face,
    NoFaceFound,
    NotAnImage,
    distance,
    similarity,
)
from tests.matcher.conftest import encode

pytestmark = pytest.mark.model


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        return im.size


def rotate(rgb: np.ndarray, degrees: float) -> np.ndarray:
    turned = Image.fromarray(rgb).rotate(degrees, resample=Image.Resampling.BICUBIC, fillcolor=(128, 128, 128))
    return np.asarray(turned)


def test_face_fields(pipeline, astronaut_face: Face, astronaut: np.ndarray) -> None:
    f = astronaut_face
    assert f.index == 0
    x, y, w, h = f.bbox
    assert 0 <= x < astronaut.shape[1] and 0 <= y < astronaut.shape[0] and w > 40 and h > 40
    # the subject's left eye is on the image's right
    assert f.left_eye[0] > f.right_eye[0]
    assert x <= f.right_eye[0] < f.left_eye[0] <= x + w
    assert f.embedding.dtype == np.float32 and f.embedding.shape == (pipeline.dim,)
    assert np.linalg.norm(f.embedding) == pytest.approx(1.0, abs=1e-5)
    q = f.quality
    assert q.iod_px == pytest.approx(math.dist(f.left_eye, f.right_eye), rel=0.05)
    assert q.iod_px > 30 and q.blur > 0 and 0.9 <= q.det_score <= 1.0
    assert abs(q.yaw_deg) < 25 and q.pitch_deg is not None
    assert q.ok and q.issues == []
    assert f.detector.startswith(("mtcnn", "hog"))
    for key in ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right"):
        assert len(f.landmarks[key]) == 2
    assert len(f.landmarks["points5"]) == 10 and len(f.landmarks["points68"]) == 136
    assert png_size(f.eye_crop_png) == (EYE_CROP_WIDTH, EYE_CROP_HEIGHT)
    cw, ch = png_size(f.face_chip_png)
    assert cw == ch >= 150


@pytest.mark.parametrize(
    "name",
    ["flip", "rotate+8", "rotate-6", "brighter", "darker", "jpeg_q35", "downscale"],
)
def test_same_person_across_augmentations_matches(pipeline, astronaut, astronaut_face, name) -> None:
    img = astronaut
    data = None
    if name == "flip":
        img = np.ascontiguousarray(img[:, ::-1])
    elif name.startswith("rotate"):
        img = rotate(img, float(name[len("rotate") :]))
    elif name in ("brighter", "darker"):
        img = np.asarray(ImageEnhance.Brightness(Image.fromarray(img)).enhance(1.4 if name == "brighter" else 0.6))
    elif name == "jpeg_q35":
        data = encode(img, "JPEG", quality=35)
    elif name == "downscale":
        img = np.asarray(Image.fromarray(img).resize((384, 384), Image.Resampling.LANCZOS))
    faces = pipeline.analyze(data if data is not None else encode(img))
    assert len(faces) == 1
    d = distance(faces[0].embedding, astronaut_face.embedding)
    assert similarity(d) >= DEFAULT_LEAD_THRESHOLD, f"{name}: distance {d:.3f}"


def test_different_people_do_not_match(astronaut_face: Face, hopper_face: Face) -> None:
    d = distance(astronaut_face.embedding, hopper_face.embedding)
    assert similarity(d) < DEFAULT_LEAD_THRESHOLD, f"distance {d:.3f}"


def test_eye_crop_fixed_size_and_level(pipeline, astronaut, astronaut_face) -> None:
    tilted = rotate(astronaut, 20)  # counter-clockwise
    (face,) = pipeline.analyze(encode(tilted))
    (rx, ry), (lx, ly) = face.right_eye, face.left_eye
    tilt = math.degrees(math.atan2(ly - ry, lx - rx))
    assert tilt == pytest.approx(-20, abs=5)  # the eyes really are tilted in the photo
    assert png_size(face.eye_crop_png) == (EYE_CROP_WIDTH, EYE_CROP_HEIGHT)

    def grey(data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("L"), dtype=np.float64)

    a, b = grey(face.eye_crop_png), grey(astronaut_face.eye_crop_png)
    # same scale, eyes level and at the same place: the two crops nearly coincide
    a0, b0 = a - a.mean(), b - b.mean()
    ncc = float((a0 * b0).sum() / math.sqrt((a0 * a0).sum() * (b0 * b0).sum()))
    assert ncc > 0.8
    # and they are at the fixed inter-ocular distance: the crop of a 2x larger photo matches too
    big = np.asarray(Image.fromarray(astronaut).resize((1024, 1024), Image.Resampling.BICUBIC))
    (big_face,) = pipeline.analyze(encode(big))
    assert big_face.quality.iod_px == pytest.approx(2 * astronaut_face.quality.iod_px, rel=0.08)
    c = grey(big_face.eye_crop_png)
    c0 = c - c.mean()
    assert float((c0 * b0).sum() / math.sqrt((c0 * c0).sum() * (b0 * b0).sum())) > 0.9
    assert EYE_CROP_IOD == 64


def test_12_megapixel_photo(pipeline, grace_hopper, hopper_face) -> None:
    rng = np.random.default_rng(3)
    canvas = rng.integers(90, 160, size=(3000, 4000, 3), dtype=np.uint8)
    tile = np.asarray(Image.fromarray(grace_hopper).resize((grace_hopper.shape[1] * 2, grace_hopper.shape[0] * 2)))
    y0, x0 = 1400, 2500
    canvas[y0 : y0 + tile.shape[0], x0 : x0 + tile.shape[1]] = tile
    faces = pipeline.analyze(encode(canvas, "JPEG", quality=90))
    assert len(faces) == 1
    f = faces[0]
    x, y, w, h = f.bbox
    # full-resolution coordinates, inside the placed photo
    assert x0 <= x and x + w <= x0 + tile.shape[1] + 5 and y0 <= y <= y0 + tile.shape[0]
    assert f.quality.iod_px == pytest.approx(2 * hopper_face.quality.iod_px, rel=0.08)
    assert similarity(distance(f.embedding, hopper_face.embedding)) >= DEFAULT_LEAD_THRESHOLD
    assert png_size(f.eye_crop_png) == (EYE_CROP_WIDTH, EYE_CROP_HEIGHT)


def test_exif_rotated_photo(pipeline, grace_hopper, hopper_face) -> None:
    # stored on its side (as a phone does), with the EXIF tag saying how to turn it upright
    stored = np.ascontiguousarray(np.rot90(grace_hopper, k=1))  # 90 degrees counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    buf = io.BytesIO()
    Image.fromarray(stored).save(buf, "JPEG", quality=95, exif=exif)
    faces = pipeline.analyze(buf.getvalue())
    assert len(faces) == 1
    assert abs(faces[0].quality.yaw_deg) < 30
    assert distance(faces[0].embedding, hopper_face.embedding) < 0.2


def test_several_faces_in_one_photo(pipeline, astronaut, grace_hopper, astronaut_face, hopper_face) -> None:
    h = max(astronaut.shape[0], grace_hopper.shape[0])
    canvas = np.full((h + 40, astronaut.shape[1] + grace_hopper.shape[1] + 60, 3), 110, np.uint8)
    canvas[20 : 20 + astronaut.shape[0], 20 : 20 + astronaut.shape[1]] = astronaut
    x1 = 40 + astronaut.shape[1]
    canvas[20 : 20 + grace_hopper.shape[0], x1 : x1 + grace_hopper.shape[1]] = grace_hopper
    faces = pipeline.analyze(encode(canvas))
    assert len(faces) == 2
    assert [f.index for f in faces] == [0, 1]
    assert faces[0].bbox[0] < faces[1].bbox[0]  # left to right
    assert distance(faces[0].embedding, astronaut_face.embedding) < 0.15
    assert distance(faces[1].embedding, hopper_face.embedding) < 0.15


def test_no_face(pipeline) -> None:
    rng = np.random.default_rng(0)
    x = np.linspace(0, 1, 640)
    landscape = (np.outer(np.linspace(0.2, 0.9, 480), x)[..., None] * np.array([90, 160, 255])).astype(np.uint8)
    landscape = np.clip(landscape + rng.integers(0, 12, landscape.shape), 0, 255).astype(np.uint8)
    data = encode(landscape, "JPEG")
    assert pipeline.analyze(data) == []
    with pytest.raises(NoFaceFound) as e:
        pipeline.enrol(data)
    assert e.value.code == "no_face_found" and str(e.value)


def test_bad_bytes_raise_typed_errors(pipeline) -> None:
    with pytest.raises(NotAnImage):
        pipeline.analyze(b"GIF? no: plain text, not a picture")


def test_enrol_returns_the_most_prominent_face(pipeline, astronaut, astronaut_face) -> None:
    face = pipeline.enrol(encode(astronaut))
    assert distance(face.embedding, astronaut_face.embedding) < 1e-4


def test_importing_matcher_is_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, matcher\n"
        "heavy = [m for m in ('tensorflow', 'deepface', 'dlib', 'cv2', 'mtcnn', 'keras') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
