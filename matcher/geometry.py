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


# dlib's 150x150 face chip (padding 0.25) and where MTCNN's five points fall in it
# (median over CelebA faces aligned by dlib's 5-point chip, made left-right symmetric):
# image-left eye, image-right eye, nose tip, image-left and image-right mouth corners.
CHIP_TEMPLATE_150 = np.array(
    [(47.9, 44.6), (100.6, 44.6), (74.25, 78.7), (50.8, 100.8), (97.7, 100.8)], dtype=np.float32
)
_TEMPLATE_SIZE = 150.0
_TEMPLATE_PADDING = 0.25


def chip_template(size: int, padding: float) -> np.ndarray:
    """:data:`CHIP_TEMPLATE_150` for a chip of another size and padding (same face placement)."""
    unit = CHIP_TEMPLATE_150 / _TEMPLATE_SIZE * (1 + 2 * _TEMPLATE_PADDING) - _TEMPLATE_PADDING
    return ((unit + padding) / (1 + 2 * padding) * size).astype(np.float32)


def similarity_from_points(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (2x3) taking ``src_pts`` to ``dst_pts`` (Umeyama)."""
    src = np.asarray(src_pts, np.float64)
    dst = np.asarray(dst_pts, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[1, 1] = -1
    rot = u @ d @ vt
    var = (s0**2).sum() / len(src)
    scale = float(np.trace(np.diag(sig) @ d) / var) if var > 0 else 1.0
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def warp_affine(src: np.ndarray, m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``cv2.warpAffine`` that anti-aliases strong reductions (area-averages a region first)."""
    import cv2

    m = np.asarray(m, np.float64)
    scale = math.sqrt(abs(np.linalg.det(m[:, :2])))
    if scale < 0.9:
        w, h = size
        inv = cv2.invertAffineTransform(m)
        corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64) @ inv.T
        x0, y0 = np.floor(corners.min(0)).astype(int) - 2
        x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
        ih, iw = src.shape[:2]
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(iw, x1), min(ih, y1)
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            roi = src[y0:y1, x0:x1]
            nw, nh = max(1, round(roi.shape[1] * scale)), max(1, round(roi.shape[0] * scale))
            small = cv2.resize(roi, (nw, nh), interpolation=cv2.INTER_AREA)
            fx, fy = nw / roi.shape[1], nh / roi.shape[0]
            # small = S (x - offset): compose m with its inverse
            pre = np.array([[1 / fx, 0, x0], [0, 1 / fy, y0], [0, 0, 1]], np.float64)
            m = m @ pre
            src = small
    return cv2.warpAffine(src, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
