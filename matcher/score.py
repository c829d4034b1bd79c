"""From embedding distance to a 0..1 similarity score, and the default lead threshold.

The distance is the Euclidean distance between two L2-normalised 128-d Dlib
embeddings (0 = identical, 2 = opposite). dlib's raw descriptors have a norm of
about 1.4, so dlib's own same-person cut-off of 0.6 is about 0.42 here. The score
is a logistic of the distance centred there::

    score = 1 / (1 + exp((distance - 0.42) / 0.06))

so 0.30 -> 0.88, 0.36 -> 0.73, 0.42 -> 0.50, 0.48 -> 0.27, 0.60 -> 0.05. It is
monotone, so ranking by score equals ranking by distance; it is *not* a probability
of identity.
"""

from __future__ import annotations

import math

import numpy as np

SCORE_CENTER = 0.42
SCORE_WIDTH = 0.06

# Chosen on ../shared/faces (see docs/matcher.md and `python -m bench.matcher`): score 0.65
# is a distance of 0.383; on the 63,720 different-person CelebA pairs it lets through
# about 0.2 % (one comparison in ~500) while keeping ~90 % of the same-person pairs.
DEFAULT_LEAD_THRESHOLD: float = 0.65
# measured false-match rate of one comparison at the default threshold (python -m bench.matcher)
LEAD_FALSE_MATCH_RATE: float = 0.0019  # CelebA different-person pairs; 0.032 for FRMDB CCTV vs mugshots


def similarity(distance: float) -> float:
    """Map an embedding distance to a 0..1 score (higher = more alike)."""
    z = (float(distance) - SCORE_CENTER) / SCORE_WIDTH
    if z > 60:
        return 0.0
    return 1.0 / (1.0 + math.exp(z))


def similarity_array(distances: np.ndarray) -> np.ndarray:
    """Vectorised :func:`similarity`."""
    z = np.clip((np.asarray(distances, dtype=np.float64) - SCORE_CENTER) / SCORE_WIDTH, -60, 60)
    return 1.0 / (1.0 + np.exp(z))


def distance_for_score(score: float) -> float:
    """The inverse of :func:`similarity` (for turning a score threshold into a distance)."""
    score = min(max(float(score), 1e-12), 1 - 1e-12)
    return SCORE_CENTER + SCORE_WIDTH * math.log((1 - score) / score)


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance between two embeddings."""
    return float(np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32)))


def embedding_to_bytes(embedding: np.ndarray) -> bytes:
    """Storage form: 128 little-endian float32."""
    arr = np.asarray(embedding, dtype="<f4").reshape(-1)
    return arr.tobytes()


def embedding_from_bytes(data: bytes) -> np.ndarray:
    arr = np.frombuffer(data, dtype="<f4")
    if arr.size == 0:
        raise ValueError("empty embedding")
    return arr.astype(np.float32)
