"""From embedding distance to a 0..1 similarity score, and the default lead threshold.

The distance is the Euclidean distance between two L2-normalised embeddings of the
same model (0 = identical, 2 = opposite). The score is a logistic of the distance,
with a centre and a width per model (:data:`CALIBRATIONS`)::

    score = 1 / (1 + exp((distance - centre) / width))

For dlib (centre 0.42, width 0.06: dlib's own same-person cut-off of 0.6 on its raw
descriptors of norm ~1.4), 0.30 -> 0.88, 0.36 -> 0.73, 0.42 -> 0.50, 0.48 -> 0.27.
Every other model is calibrated the same way on ../shared/faces
(``python -m bench.matcher``): the width scaled by the spread of its different-person
distances on CelebA relative to dlib's, the centre placed so that a score of
:data:`CALIBRATION_SCORE` (0.65) lets through the same share of different-person
CelebA pairs as dlib's does (0.19 %).
The mapping is monotone, so ranking by score equals ranking by distance; it is *not*
a probability of identity.
"""

from __future__ import annotations

import math

import numpy as np

SCORE_CENTER = 0.42  # dlib's
SCORE_WIDTH = 0.06
CALIBRATION_SCORE = 0.65  # every model: this score passes 0.19 % of different-person CelebA pairs
# model name -> (centre, width) of the logistic (bench.matcher prints how they were found)
CALIBRATIONS: dict[str, tuple[float, float]] = {
    "dlib": (SCORE_CENTER, SCORE_WIDTH),
    "faceres": (0.8938, 0.0611),
    "faceres-deep": (0.7630, 0.1136),
    "mobilefacenet": (0.0097, 0.0063),
    "mobileface": (1.1477, 0.0709),
    "mobilefacenet-tflite": (1.1155, 0.0913),
    "fused": (0.7136, 0.0554),
    "fused-full": (0.7275, 0.0542),
}


def calibration(model: str | None = None) -> tuple[float, float]:
    """(centre, width) for a model name or id (``name@hash``); the default model's when None."""
    if model is None:
        from matcher.embedders import DEFAULT_MODEL

        model = DEFAULT_MODEL
    name = model.split("@", 1)[0]
    try:
        return CALIBRATIONS[name]
    except KeyError:
        raise ValueError(f"no score calibration for face model {name!r}") from None


# Chosen on ../shared/faces for the default model, "fused" (docs/matcher.md, `python -m
# bench.matcher`): score 0.80 is a distance of 0.637; a CCTV crop scores at least that
# against 3.5 % of other people's mugshots (FRMDB 1:1; dlib at its former 0.65: 3.2 %),
# giving 1.9 wrong candidates per probe in the top 10 (dlib: 2.2) and 0.55 right ones
# (dlib: 0.39); on the CelebA photos it lets through 0.02 % of different-person pairs and
# keeps 82 % of same-person pairs.
DEFAULT_LEAD_THRESHOLD: float = 0.80
# measured false-match rate of one comparison at the default threshold (python -m bench.matcher)
LEAD_FALSE_MATCH_RATE: float = 0.0002  # CelebA different-person pairs; 0.035 for FRMDB CCTV vs mugshots


def similarity(distance: float, model: str | None = None) -> float:
    """Map an embedding distance to a 0..1 score (higher = more alike)."""
    centre, width = calibration(model)
    z = (float(distance) - centre) / width
    if z > 60:
        return 0.0
    return 1.0 / (1.0 + math.exp(z))


def similarity_array(distances: np.ndarray, model: str | None = None) -> np.ndarray:
    """Vectorised :func:`similarity`."""
    centre, width = calibration(model)
    z = np.clip((np.asarray(distances, dtype=np.float64) - centre) / width, -60, 60)
    return 1.0 / (1.0 + np.exp(z))


def distance_for_score(score: float, model: str | None = None) -> float:
    """The inverse of :func:`similarity` (for turning a score threshold into a distance)."""
    centre, width = calibration(model)
    score = min(max(float(score), 1e-12), 1 - 1e-12)
    return centre + width * math.log((1 - score) / score)


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two embeddings."""
    return float(np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32)))


def embedding_to_bytes(embedding: np.ndarray) -> bytes:
    """Storage form: little-endian float32, as many as the model's dims."""
    arr = np.asarray(embedding, dtype="<f4").reshape(-1)
    return arr.tobytes()


def embedding_from_bytes(data: bytes) -> np.ndarray:
    arr = np.frombuffer(data, dtype="<f4")
    if arr.size == 0:
        raise ValueError("empty embedding")
    return arr.astype(np.float32)
