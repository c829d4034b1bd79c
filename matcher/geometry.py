"""Crops and pose/blur measures from landmarks (OpenCV imported lazily)."""

from __future__ import annotations

import math

import numpy as np

# Eye-region crop shown to recognizers: eyes level, at a fixed inter-ocular distance.
EYE_CROP_IOD = 64
EYE_CROP_WIDTH = 192
EYE_CROP_HEIGHT = 80
# Where the eye centres land in the eye crop (image-left eye = the subject's right eye).
EYE_CROP_RIGHT_EYE = (EYE_CROP_WIDTH / 2 - EYE_CROP_IOD / 2, EYE_CROP_HEIGHT / 2)
EYE_CROP_LEFT_EYE = (EYE_CROP_WIDTH / 2 + EYE_CROP_IOD / 2, EYE_CROP_HEIGHT / 2)

# Generic 3-D face (mm, x right, y down, z towards the camera) for the pose estimate,
# matching dlib's 68 landmarks: nose tip, chin, eye outer corners, mouth corners.
_MODEL_POINTS = np.array(
    [
        (0.0, 0.0, 0.0),  # 30 nose tip
        (0.0, 63.6, -12.5),  # 8 chin
        (-43.3, -32.7, -26.0),  # 36 outer corner of the image-left eye
        (43.3, -32.7, -26.0),  # 45 outer corner of the image-right eye
        (-28.9, 28.9, -24.1),  # 48 image-left mouth corner
        (28.9, 28.9, -24.1),  # 54 image-right mouth corner
    ],
    dtype=np.float64,
)
_POSE_IDX = [30, 8, 36, 45, 48, 54]


def similarity_warp(
    src: np.ndarray,
    center: tuple[float, float],
    angle_rad: float,
    scale: float,
    out_size: tuple[int, int],
    out_center: tuple[float, float],
) -> np.ndarray:
    """Rotate by ``-angle`` about ``center``, scale, and place ``center`` at ``out_center``
    in an image of ``out_size`` (w, h). Downscaling is anti-aliased (INTER_AREA first)."""
    import cv2

    cx, cy = center
    if scale < 0.9:
        # Cut a generous region around the centre, shrink it with area averaging,
        # then only rotate: no aliasing from a 4000-px photo down to a 192-px crop.
        radius = int(math.ceil(math.hypot(*out_size) / scale)) + 4
        h, w = src.shape[:2]
        x0, y0 = max(0, int(cx) - radius), max(0, int(cy) - radius)
        x1, y1 = min(w, int(cx) + radius), min(h, int(cy) + radius)
        roi = src[y0:y1, x0:x1]
        if roi.size == 0:
            return np.zeros((out_size[1], out_size[0], 3), np.uint8)
        small = cv2.resize(
            roi,
            (max(1, round(roi.shape[1] * scale)), max(1, round(roi.shape[0] * scale))),
            interpolation=cv2.INTER_AREA,
        )
        fx = small.shape[1] / roi.shape[1]
        fy = small.shape[0] / roi.shape[0]
        src = small
        cx, cy = (cx - x0) * fx, (cy - y0) * fy
        scale = scale / ((fx + fy) / 2)
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), math.degrees(angle_rad), scale)
    m[0, 2] += out_center[0] - cx
    m[1, 2] += out_center[1] - cy
    return cv2.warpAffine(src, m, out_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def eye_crop(src: np.ndarray, right_eye: tuple[float, float], left_eye: tuple[float, float]) -> np.ndarray:
    """The band around both eyes, eyes level at :data:`EYE_CROP_IOD` px apart,
    :data:`EYE_CROP_WIDTH` x :data:`EYE_CROP_HEIGHT`. ``right_eye`` is the subject's right
    eye (on the image's left)."""
    rx, ry = right_eye
    lx, ly = left_eye
    iod = max(math.hypot(lx - rx, ly - ry), 1e-3)
    angle = math.atan2(ly - ry, lx - rx)
    mid = ((rx + lx) / 2, (ry + ly) / 2)
    return similarity_warp(
        src,
        mid,
        angle,
        EYE_CROP_IOD / iod,
        (EYE_CROP_WIDTH, EYE_CROP_HEIGHT),
        (EYE_CROP_WIDTH / 2, EYE_CROP_HEIGHT / 2),
    )


def blur_score(chip_rgb: np.ndarray) -> float:
    """Variance of the Laplacian of the grey aligned chip (higher = sharper)."""
    import cv2

    grey = cv2.cvtColor(chip_rgb, cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def head_pose(points68: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) in degrees from 68 landmarks and a generic 3-D face (solvePnP, near
    weak-perspective camera centred on the face).

    Positive yaw: the face turns towards the image's right; positive pitch: it looks
    down. An estimate (a generic head), good to roughly 10 degrees: enough for flags."""
    import cv2

    pts = points68.astype(np.float64)
    centre = pts.mean(axis=0)
    width = float(max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1]), 1.0))
    focal = 8.0 * width
    cam = np.array([[focal, 0, 0], [0, focal, 0], [0, 0, 1]], dtype=np.float64)
    img_pts = np.ascontiguousarray(pts[_POSE_IDX] - centre)
    ok, rvec, _tvec = cv2.solvePnP(_MODEL_POINTS, img_pts, cam, np.zeros(4), flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return float("nan"), float("nan")
    rot, _ = cv2.Rodrigues(rvec)
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, -rot[2, 0]))))
    pitch = math.degrees(math.atan2(rot[2, 1], rot[2, 2]))
    return yaw, pitch


def png_bytes(rgb: np.ndarray) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()
