"""The face pipeline: decode, detect, align, embed, quality, crops.

Detection runs on a working copy of the photo (at most :data:`MAX_DETECT_SIDE` px;
small photos - often tight face crops - are padded and enlarged first); landmarks,
the aligned chips and the eye crop are then taken from the full-resolution photo.

Detector cascade (see docs/matcher.md for the measurements): MTCNN first, since it
finds small and turned faces that dlib's HOG misses and is faster than HOG with
upsampling on a 1024-px copy; HOG next if MTCNN finds nothing; finally MTCNN with
relaxed thresholds, on views rolled by +-25 degrees, at 0.8x and contrast-equalised,
for hard CCTV frames. Landmarks (MTCNN's five points, or dlib's predictors for HOG
faces) are found once per face; each recognition model then cuts its own chip from
the photo (matcher/embedders.py): the default, ``fused``, combines deepface's ``Dlib``
model on dlib's 150x150 chip, faceres (TFJS, 224x224 loose crop) and MobileFaceNet
(TFLite, 112x112 ArcFace chip) into one 192-d vector. Quality is measured on dlib's
150x150 chip. Heavy libraries (deepface, TensorFlow, dlib, OpenCV, mtcnn) are imported
on first use only.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from matcher.decode import DecodedImage, decode_image
from matcher.embedders import DEFAULT_MODEL, Embedder, FaceGeometry, build_embedder, dlib_chip, fit_similarity
from matcher.embedders import FLIP_BELOW_IOD as FLIP_BELOW_IOD
from matcher.errors import NoFaceFound
from matcher.models import default_models_home, ensure_models, models_present

# Working copy for detection.
MAX_DETECT_SIDE = 1024
SMALL_SIDE = 400  # photos smaller than this may be tight crops: pad and enlarge them
SMALL_PAD = 0.4  # padding added around a small photo, as a share of its longer side
SMALL_TARGET = 480  # the padded small photo is enlarged to this longer side
# Recognition chip (what dlib's ResNet was trained on) and the display chip.
CHIP_SIZE = 150
CHIP_PADDING = 0.25
DISPLAY_CHIP_SIZE = 224
DISPLAY_CHIP_PADDING = 0.4
# MTCNN thresholds (P-Net, R-Net, O-Net): normal, then relaxed for the last resort.
MTCNN_MIN_FACE = 20
MIN_FACE_SIDE = 24  # smaller detections in the working copy are dropped (too small to recognise)
MTCNN_THRESHOLDS = (0.6, 0.7, 0.9)
MTCNN_RELAXED = (0.4, 0.5, 0.55)
MTCNN_RESCUE = (0.5, 0.6, 0.6)
RESCUE_ROLL_DEG = (25.0, -25.0)
RESCUE_ZOOM = 0.8
# Mirror-averaging of the dlib embedding for small faces (FLIP_BELOW_IOD, in
# matcher.embedders: noisy, upsampled chips gain the most; each extra forward pass of
# dlib's ResNet costs ~50-100 ms on two cores).
MIN_DET_SCORE = 0.9  # faces below this are kept but flagged "low_confidence"
# Quality flags.
MIN_IOD_PX = 24.0
MIN_BLUR = 25.0
MAX_YAW_DEG = 35.0
MAX_PITCH_DEG = 30.0
# Reference photos (gallery entries): the recognition chip puts 52.7 px between the eyes
# (geometry.CHIP_TEMPLATE_150). A reference must supply at least three quarters of that
# (40 px) at its frontal-equivalent size, i.e. the inter-ocular distance divided by
# cos(yaw) (a three-quarter view is foreshortened, not small; the correction is capped at
# REFERENCE_YAW_CAP_DEG): below it the chip is mostly interpolated, and such faces act as
# "hubs" that every small, soft probe lands near. Measured in docs/matcher.md.
REFERENCE_MIN_IOD_PX = 40.0
REFERENCE_YAW_CAP_DEG = 60.0
# Probes (faces in sightings): below 10 px between the eyes the ranking is no better than
# chance on the FRMDB surveillance crops (0 of 16 such probes had their subject in the
# top 5 of 91, where chance gives 0.9; 10-12 px: 2 of 6). Such faces are stored, shown,
# and not searched: their candidates would be noise sent to recognizers. docs/matcher.md.
PROBE_MIN_IOD_PX = 10.0

DETECTORS = ("cascade", "mtcnn", "hog")


@dataclass
class Quality:
    iod_px: float  # inter-ocular distance in the original photo, px
    blur: float  # variance of the Laplacian on the grey 150x150 chip (higher = sharper)
    yaw_deg: float
    pitch_deg: float | None
    det_score: float  # detector confidence, 0..1
    ok: bool
    issues: list[str] = field(default_factory=list)  # "small", "blurred", "turned", "low_confidence"


@dataclass
class Face:
    index: int
    bbox: tuple[int, int, int, int]  # x, y, w, h in full-resolution pixels
    left_eye: tuple[float, float]  # the subject's left eye (on the image's right)
    right_eye: tuple[float, float]
    landmarks: dict[str, list[float]]
    detector: str
    quality: Quality
    embedding: np.ndarray  # float32 (dim of the pipeline's model,), L2-normalised
    eye_crop_png: bytes
    face_chip_png: bytes
    model_id: str = ""  # the model the embedding came from
    # every embedding computed for this face, by model id (the primary one included)
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    # with FacePipeline(keep_source=True): the region of the aligned-from image around the
    # face and the face's geometry in it, to embed again with other models (benchmarks)
    source: tuple[np.ndarray, FaceGeometry] | None = field(default=None, repr=False, compare=False)


@dataclass
class _Candidate:
    box: tuple[float, float, float, float]  # l, t, r, b in working-copy pixels (dlib-style square)
    score: float
    detector: str
    keypoints: dict[str, tuple[float, float]] | None = None  # MTCNN's five points, working-copy pixels


# MTCNN's five points, the observer's left first
KEYPOINT_ORDER = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass
class _Prepared:
    """One detected face, located in the source image (the one landmarks and chips come from)."""

    candidate: _Candidate
    rect: Any  # dlib.rectangle, source pixels
    p68: np.ndarray  # dlib's 68 landmarks, source pixels
    chip: np.ndarray  # dlib's 150x150 aligned chip (quality is measured on it)
    display: np.ndarray  # the chip shown to reviewers
    p5: np.ndarray  # the five points the face was aligned on
    left_src: tuple[float, float]  # the subject's left eye
    right_src: tuple[float, float]
    geom: FaceGeometry


@dataclass
class _Frame:
    """From source pixels back to the original photo's: the source may be enlarged and padded."""

    scale: float
    pad: int
    orig_size: tuple[int, int]

    def to_orig(self, x: float, y: float) -> tuple[float, float]:
        return (x / self.scale - self.pad, y / self.scale - self.pad)

    def point(self, p: Any) -> list[float]:
        x, y = self.to_orig(float(p[0]), float(p[1]))
        return [round(x, 2), round(y, 2)]


def _quality(prep: _Prepared, s2o_scale: float) -> Quality:
    from matcher import geometry

    yaw, pitch = geometry.head_pose(prep.p68)
    blur = geometry.blur_score(prep.chip)
    iod = math.dist(prep.left_src, prep.right_src) / s2o_scale
    issues = quality_issues(iod, blur, yaw, pitch, prep.candidate.score)
    return Quality(
        iod_px=round(iod, 2),
        blur=round(blur, 2),
        yaw_deg=round(yaw, 1),
        pitch_deg=None if math.isnan(pitch) else round(pitch, 1),
        det_score=round(prep.candidate.score, 4),
        ok=not issues,
        issues=issues,
    )



def _xy(point: list[float]) -> tuple[float, float]:
    x, y = point
    return x, y


def _landmarks(prep: _Prepared, frame: _Frame) -> dict[str, list[float]]:
    pt, p68 = frame.point, prep.p68
    mouth_l, mouth_r = p68[54], p68[48]  # subject's left mouth corner is on the image's right
    return {
        "left_eye": pt(prep.left_src),
        "right_eye": pt(prep.right_src),
        "nose": pt(p68[30]),
        "mouth_left": pt(mouth_l),
        "mouth_right": pt(mouth_r),
        "points5": [v for p in prep.p5 for v in pt(p)],
        "points68": [v for p in p68 for v in pt(p)],
    }


def quality_issues(iod_px: float, blur: float, yaw: float, pitch: float | None, det_score: float) -> list[str]:
    issues = []
    if iod_px < MIN_IOD_PX:
        issues.append("small")
    if blur < MIN_BLUR:
        issues.append("blurred")
    if (not math.isnan(yaw) and abs(yaw) > MAX_YAW_DEG) or (
        pitch is not None and not math.isnan(pitch) and abs(pitch) > MAX_PITCH_DEG
    ):
        issues.append("turned")
    if det_score < MIN_DET_SCORE:
        issues.append("low_confidence")
    return issues


def frontal_iod(quality: Quality) -> float:
    """The inter-ocular distance the face would have seen from the front: ``iod_px / cos(|yaw|)``,
    the yaw capped at :data:`REFERENCE_YAW_CAP_DEG` (no correction when the yaw is unknown)."""
    yaw = quality.yaw_deg
    if yaw is None or math.isnan(yaw):
        return float(quality.iod_px)
    return float(quality.iod_px) / math.cos(math.radians(min(abs(yaw), REFERENCE_YAW_CAP_DEG)))


def is_searchable_reference(quality: Quality) -> bool:
    """Whether a reference photo's face is good enough to be searched against.

    A reference photo that fails is kept (and shown) but should not enter the search
    gallery: its frontal-equivalent inter-ocular distance is under
    :data:`REFERENCE_MIN_IOD_PX`, or its chip is ``blurred``. Turned faces and low
    detector confidence do not exclude a reference: three-quarter mugshots are useful
    references, and excluding them lowers the hit rate (docs/matcher.md).
    """
    if "blurred" in quality.issues or quality.blur < MIN_BLUR:
        return False
    return frontal_iod(quality) >= REFERENCE_MIN_IOD_PX


def is_searchable_probe(quality: Quality, min_iod_px: float = PROBE_MIN_IOD_PX) -> bool:
    """Whether a face found in a sighting is large enough to be searched: at least
    ``min_iod_px`` (default :data:`PROBE_MIN_IOD_PX`) between the eyes, as found in the photo."""
    return float(quality.iod_px) >= min_iod_px


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class FacePipeline:
    """Detect every face in a photo, align, embed, measure quality, cut crops.

    Thread-safe (one lock around the models); one instance per process is enough
    (:func:`get_pipeline`)."""

    def __init__(
        self,
        *,
        models_home: Path | None = None,
        detector: str = "cascade",
        place_models: bool = True,
        flip_below_iod: float | None = None,
        model: str = DEFAULT_MODEL,
        keep_source: bool = False,
    ) -> None:
        if detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}")
        from matcher.embedders import available_models

        if model not in available_models():
            raise ValueError(f"unknown face model {model!r}; known: {', '.join(available_models())}")
        self.model = model
        self.keep_source = keep_source
        self.models_home = Path(models_home) if models_home is not None else default_models_home()
        self.detector = detector
        # faces smaller than this (inter-ocular px in the photo) are embedded twice, the
        # chip and its mirror image averaged; 0 = never, inf = always
        self.flip_below_iod = FLIP_BELOW_IOD if flip_below_iod is None else float(flip_below_iod)
        if place_models:
            ensure_models(self.models_home)
        elif not models_present(self.models_home):
            from matcher.errors import ModelFilesMissing

            raise ModelFilesMissing(f"model files are not in place under {self.models_home}; run ensure_models")
        self._lock = threading.RLock()
        self._loaded = False
        self._embedders: dict[str, Embedder] = {}
        self._embedder(model)  # weights checked now (ModelFilesMissing), loaded on first use

    def _embedder(self, name: str) -> Embedder:
        with self._lock:
            return build_embedder(name, self.models_home, self._embedders, flip_below_iod=self.flip_below_iod)

    @property
    def model_id(self) -> str:
        """The id of the model this pipeline embeds with (``name@hash`` of its weights)."""
        return self._embedder(self.model).model_id

    @property
    def dim(self) -> int:
        return self._embedder(self.model).dim

    # -- models ---------------------------------------------------------------
    def _load(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            # deepface reads DEEPFACE_HOME at call time; the files are already there,
            # so it never reaches for the network.
            os.environ["DEEPFACE_HOME"] = str(self.models_home)
            import dlib
            from deepface.modules import modeling

            from matcher.models import weights_dir

            self._dlib = dlib
            hog = modeling.build_model(task="face_detector", model_name="dlib")
            self._hog = hog.model["face_detector"]
            self._sp5 = hog.model["sp"]
            self._sp68 = dlib.shape_predictor(
                str(weights_dir(self.models_home) / "shape_predictor_68_face_landmarks.dat")
            )
            self._mtcnn: Any = None
            if self.detector in ("cascade", "mtcnn"):
                self._mtcnn = modeling.build_model(task="face_detector", model_name="mtcnn").model
            self._loaded = True

    def warm_up(self) -> None:
        """Load the models now rather than on the first photo."""
        self._load()
        for emb in list(self._embedders.values()):
            load = getattr(emb, "load", None)
            if load is not None:
                load()
        blank = np.full((160, 160, 3), 128, np.uint8)
        self.analyze_image(DecodedImage(rgb=blank, format="PNG", width=160, height=160))

    # -- public ---------------------------------------------------------------
    def analyze(self, data: bytes, *, models: Sequence[str] | None = None) -> list[Face]:
        """Decode (typed errors on bad input) and analyse every face; [] if none.

        Each face is embedded by the pipeline's model (``face.embedding``) and by any
        extra ``models`` named (all in ``face.embeddings``, by model id); detection and
        landmarks are computed once."""
        return self.analyze_image(decode_image(data), models=models)

    def analyze_image(self, img: DecodedImage, *, models: Sequence[str] | None = None) -> list[Face]:
        self._load()
        extra = [self._embedder(m) for m in (models or ()) if m != self.model]
        import cv2

        rgb = img.rgb
        h, w = rgb.shape[:2]
        longest = max(h, w)
        pad = 0
        if longest > MAX_DETECT_SIDE:
            scale = MAX_DETECT_SIDE / longest
            work = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        elif longest < SMALL_SIDE:
            pad = int(round(SMALL_PAD * longest))
            padded = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            scale = max(1.0, SMALL_TARGET / max(padded.shape[:2]))
            if scale > 1.0:
                work = cv2.resize(
                    padded,
                    (round(padded.shape[1] * scale), round(padded.shape[0] * scale)),
                    interpolation=cv2.INTER_CUBIC,
                )
            else:
                work = padded
        else:
            scale = 1.0
            work = rgb
        work = np.ascontiguousarray(work)
        with self._lock:
            candidates = self._detect(work)
            if not candidates:
                return []
            # Landmarks and chips: from the full-resolution photo when the working copy
            # was reduced, else from the (enlarged) working copy itself.
            if scale < 1.0 and pad == 0:
                src, s2o_scale, s2o_pad = rgb, 1.0, 0
                to_src = 1.0 / scale
            else:
                src, s2o_scale, s2o_pad = work, scale, pad
                to_src = 1.0
            return self._faces(src, candidates, to_src, s2o_scale, s2o_pad, (w, h), extra)

    def enrol(self, data: bytes, *, models: Sequence[str] | None = None) -> Face:
        """The single most prominent face of a reference photo; :class:`NoFaceFound` if none."""
        return self.best_face(self.analyze(data, models=models))

    @staticmethod
    def best_face(faces: list[Face]) -> Face:
        if not faces:
            raise NoFaceFound()
        return max(faces, key=lambda f: f.quality.iod_px * (0.5 + f.quality.det_score))

    # -- detection --------------------------------------------------------------
    def _run_mtcnn(
        self,
        work: np.ndarray,
        thresholds: tuple[float, float, float],
        tag: str,
        view: np.ndarray | None = None,
    ) -> list[_Candidate]:
        """MTCNN on ``work``, or on an affine view of it (``view``: 2x3, work -> view);
        boxes and points are mapped back to ``work`` coordinates."""
        import cv2

        img = work
        inv = None
        if view is not None:
            h, w = work.shape[:2]
            img = np.ascontiguousarray(
                cv2.warpAffine(work, view, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            )
            inv = cv2.invertAffineTransform(view)
        res = self._mtcnn.detect_faces(
            img,
            min_face_size=MTCNN_MIN_FACE,
            threshold_pnet=thresholds[0],
            threshold_rnet=thresholds[1],
            threshold_onet=thresholds[2],
        )
        out = []
        for det in res or []:
            x, y, bw, bh = (float(v) for v in det["box"])
            if max(bw, bh) < MIN_FACE_SIDE:
                continue
            # MTCNN's box -> the square box dlib's landmark predictor was trained on
            # (fitted on CelebA faces found by both detectors).
            cx, cy = x + bw / 2, y + bh / 2 + 0.067 * bh
            side = 0.5 * (1.115 * bw + 0.82 * bh)
            kps = {k: (float(v[0]), float(v[1])) for k, v in (det.get("keypoints") or {}).items()}
            if view is not None and inv is not None:
                side /= math.sqrt(abs(np.linalg.det(view[:, :2])))
                cx, cy = (inv @ np.array([cx, cy, 1.0])).tolist()
                kps = {k: tuple((inv @ np.array([px, py, 1.0])).tolist()) for k, (px, py) in kps.items()}
            out.append(
                _Candidate(
                    (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2),
                    float(det["confidence"]),
                    tag,
                    kps or None,
                )
            )
        return out

    def _run_hog(self, work: np.ndarray) -> list[_Candidate]:
        dets, scores, _ = self._hog.run(work, 1, -0.2)
        out = []
        for d, s in zip(dets, scores, strict=False):
            # HOG's SVM margin mapped to 0..1 (0 -> 0.5, >= 1 -> ~0.9+)
            conf = 1.0 / (1.0 + math.exp(-2.2 * float(s)))
            out.append(_Candidate((d.left(), d.top(), d.right(), d.bottom()), conf, "hog"))
        return out

    def _rescue_views(self, work: np.ndarray) -> list[np.ndarray]:
        """Affine views tried when nothing else found a face: the head rolled by +-25
        degrees (CCTV looks down on tilted heads), then the frame at 0.8x (a tight crop gains margin)."""
        import cv2

        h, w = work.shape[:2]
        centre = (w / 2, h / 2)
        views = [cv2.getRotationMatrix2D(centre, a, 1.0) for a in RESCUE_ROLL_DEG]
        views.append(cv2.getRotationMatrix2D(centre, 0.0, RESCUE_ZOOM))
        return views

    def _detect(self, work: np.ndarray) -> list[_Candidate]:
        if self.detector == "hog":
            found = self._run_hog(work)
        elif self.detector == "mtcnn":
            found = self._run_mtcnn(work, MTCNN_THRESHOLDS, "mtcnn")
        else:
            found = self._run_mtcnn(work, MTCNN_THRESHOLDS, "mtcnn")
            if not found:
                found = self._run_hog(work)
            if not found:
                found = self._run_mtcnn(work, MTCNN_RELAXED, "mtcnn-relaxed")
            for view in self._rescue_views(work) if not found else []:
                found = self._run_mtcnn(work, MTCNN_RESCUE, "mtcnn-rescue", view)
                if found:
                    break
            if not found:
                found = self._run_mtcnn(_equalise(work), MTCNN_RELAXED, "mtcnn-rescue")
        # non-maximum suppression across and within detectors
        found.sort(key=lambda c: -c.score)
        kept: list[_Candidate] = []
        for c in found:
            if all(_iou(c.box, k.box) < 0.4 for k in kept):
                kept.append(c)
        return kept

    # -- align, embed, measure -------------------------------------------------------
    def _faces(
        self,
        src: np.ndarray,
        cands: list[_Candidate],
        to_src: float,
        s2o_scale: float,
        s2o_pad: int,
        orig_size: tuple[int, int],
        extra: Sequence[Embedder] = (),
    ) -> list[Face]:
        from matcher import geometry

        frame = _Frame(s2o_scale, s2o_pad, orig_size)
        tmpl_display = geometry.chip_template(DISPLAY_CHIP_SIZE, DISPLAY_CHIP_PADDING)
        prepared = [self._prepare(src, c, to_src, s2o_scale, tmpl_display) for c in cands]
        primary = self._embedder(self.model)
        vectors = {e.model_id: e.embed(src, [p.geom for p in prepared]) for e in [primary, *extra]}
        faces = [self._face(i, prep, vectors, primary.model_id, src, frame) for i, prep in enumerate(prepared)]
        # left to right, as a reviewer reads the photo
        faces.sort(key=lambda f: (f.bbox[0], f.bbox[1]))
        for i, f in enumerate(faces):
            f.index = i
        return faces

    def _prepare(self, src: np.ndarray, c: _Candidate, to_src: float, s2o_scale: float,
                 tmpl_display: np.ndarray) -> _Prepared:
        """Landmarks, the display chip and the alignment geometry of one detected face."""
        from matcher import geometry

        dlib = self._dlib
        x0, y0, x1, y1 = (v * to_src for v in c.box)
        rect = dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1)))
        shape68 = self._sp68(src, rect)
        p68 = np.array([(p.x, p.y) for p in shape68.parts()], dtype=np.float64)
        if c.keypoints and all(k in c.keypoints for k in KEYPOINT_ORDER):
            pts = np.array([c.keypoints[k] for k in KEYPOINT_ORDER], dtype=np.float64) * to_src
            geom = FaceGeometry(pts, None, 0.0)
            display = geometry.warp_affine(src, fit_similarity(pts, tmpl_display), (DISPLAY_CHIP_SIZE,) * 2)
            right_src, left_src = tuple(pts[0]), tuple(pts[1])  # image-left eye is the subject's right
            p5 = pts
        else:
            shape5 = self._sp5(src, rect)
            display = dlib.get_face_chip(src, shape5, size=DISPLAY_CHIP_SIZE, padding=DISPLAY_CHIP_PADDING)
            p5 = np.array([(p.x, p.y) for p in shape5.parts()], dtype=np.float64)
            # dlib's 5 points: 0-1 the subject's left eye corners, 2-3 the right eye's, 4 under the nose
            left_src = tuple(p5[0:2].mean(axis=0))
            right_src = tuple(p5[2:4].mean(axis=0))
            five = np.array([right_src, left_src, p68[30], p68[48], p68[54]], dtype=np.float64)
            geom = FaceGeometry(five, shape5, 0.0)
        geom.iod_px = math.dist(left_src, right_src) / s2o_scale
        chip = dlib_chip(src, geom)  # quality is measured on dlib's 150x150 chip
        return _Prepared(c, rect, p68, chip, display, p5, left_src, right_src, geom)

    def _face(self, i: int, prep: _Prepared, vectors: dict[str, Any], model_id: str, src: np.ndarray,
              frame: _Frame) -> Face:
        from matcher import geometry

        ow, oh = frame.orig_size
        x0, y0 = frame.to_orig(prep.rect.left(), prep.rect.top())
        x1, y1 = frame.to_orig(prep.rect.right(), prep.rect.bottom())
        x0, y0 = max(0, int(round(x0))), max(0, int(round(y0)))
        x1, y1 = min(ow, int(round(x1))), min(oh, int(round(y1)))
        eye = geometry.eye_crop(src, prep.right_src, prep.left_src)
        landmarks = _landmarks(prep, frame)
        return Face(
            index=i,
            bbox=(x0, y0, max(0, x1 - x0), max(0, y1 - y0)),
            left_eye=_xy(landmarks["left_eye"]),
            right_eye=_xy(landmarks["right_eye"]),
            landmarks=landmarks,
            detector=prep.candidate.detector,
            quality=_quality(prep, frame.scale),
            embedding=vectors[model_id][i],
            eye_crop_png=geometry.png_bytes(eye),
            face_chip_png=geometry.png_bytes(np.ascontiguousarray(prep.display)),
            model_id=model_id,
            embeddings={mid: vecs[i] for mid, vecs in vectors.items()},
            source=_source_region(src, prep.geom, prep.rect) if self.keep_source else None,
        )

    def embed_chip(self, chip_rgb: np.ndarray) -> np.ndarray:
        """Embed an already aligned 150x150 RGB chip with dlib's model (for tools and tests)."""
        from matcher.embedders import DlibEmbedder

        emb = self._embedder("dlib")
        assert isinstance(emb, DlibEmbedder)
        with self._lock:
            return emb.embed_chips([np.ascontiguousarray(chip_rgb)], [self.flip_below_iod == math.inf])[0]


_fit_similarity = fit_similarity
SOURCE_MARGIN = 1.5  # the kept source region reaches this many face-box sides beyond the box


def _source_region(src: np.ndarray, geom: FaceGeometry, rect: Any) -> tuple[np.ndarray, FaceGeometry]:
    """A copy of the region of ``src`` around a face and the face's geometry in it."""
    import dlib

    side = max(rect.right() - rect.left(), rect.bottom() - rect.top(), 1)
    h, w = src.shape[:2]
    x0 = max(0, int(rect.left() - SOURCE_MARGIN * side))
    y0 = max(0, int(rect.top() - SOURCE_MARGIN * side))
    x1 = min(w, int(rect.right() + SOURCE_MARGIN * side))
    y1 = min(h, int(rect.bottom() + SOURCE_MARGIN * side))
    region = np.ascontiguousarray(src[y0:y1, x0:x1])
    shape5 = None
    if geom.dlib_shape5 is not None:
        r = geom.dlib_shape5.rect
        pts = dlib.points()
        for p in geom.dlib_shape5.parts():
            pts.append(dlib.point(p.x - x0, p.y - y0))
        shape5 = dlib.full_object_detection(
            dlib.rectangle(r.left() - x0, r.top() - y0, r.right() - x0, r.bottom() - y0), pts
        )
    shifted = FaceGeometry(geom.points5 - np.array([x0, y0], dtype=np.float64), shape5, geom.iod_px)
    return region, shifted


def _equalise(rgb: np.ndarray) -> np.ndarray:
    """Contrast-limited equalisation of the lightness (dark, flat CCTV frames)."""
    import cv2

    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB)
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    lab[:, :, 0] = clahe.apply(lab[:, :, 0])
    return np.ascontiguousarray(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB))


_singleton: FacePipeline | None = None
_singleton_lock = threading.Lock()


def get_pipeline(*, models_home: Path | None = None, model: str | None = None) -> FacePipeline:
    """The process-wide pipeline, created on first call (models placed if needed); asking
    for another ``model`` than the current one replaces it."""
    global _singleton
    if _singleton is None or (model is not None and _singleton.model != model):
        with _singleton_lock:
            if _singleton is None or (model is not None and _singleton.model != model):
                _singleton = FacePipeline(models_home=models_home, model=model or DEFAULT_MODEL)
    return _singleton


def enrol_face(data: bytes) -> Face:
    """The most prominent face of a reference photo (:class:`NoFaceFound` if none)."""
    return get_pipeline().enrol(data)
