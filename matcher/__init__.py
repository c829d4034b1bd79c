"""Miatari's face matcher: decode, detect, align, embed, quality, eye crops, gallery search.

Importing this package is cheap: deepface, TensorFlow, dlib, OpenCV and mtcnn are
imported only when a pipeline first analyses a photo.
"""

from matcher.decode import ACCEPTED_FORMATS, DecodedImage, decode_image, sniff_format
from matcher.embedders import DEFAULT_MODEL, Embedder, available_models, model_id_for
from matcher.errors import (
    ImageError,
    ImageTooLarge,
    ModelFilesMissing,
    ModelMismatch,
    NoFaceFound,
    NotAnImage,
    TruncatedImage,
    UnsupportedFormat,
)
from matcher.gallery import GalleryIndex, Hit
from matcher.geometry import EYE_CROP_HEIGHT, EYE_CROP_IOD, EYE_CROP_WIDTH
from matcher.models import ensure_models, models_present
from matcher.pipeline import (
    PROBE_MIN_IOD_PX,
    REFERENCE_MIN_IOD_PX,
    Face,
    FacePipeline,
    Quality,
    enrol_face,
    frontal_iod,
    get_pipeline,
    is_searchable_probe,
    is_searchable_reference,
)
from matcher.score import (
    DEFAULT_LEAD_THRESHOLD,
    distance,
    embedding_from_bytes,
    embedding_to_bytes,
    similarity,
)

__all__ = [
    "ACCEPTED_FORMATS",
    "DEFAULT_LEAD_THRESHOLD",
    "DEFAULT_MODEL",
    "EYE_CROP_HEIGHT",
    "EYE_CROP_IOD",
    "EYE_CROP_WIDTH",
    "DecodedImage",
    "Embedder",
    "Face",
    "FacePipeline",
    "GalleryIndex",
    "Hit",
    "ImageError",
    "ImageTooLarge",
    "ModelFilesMissing",
    "ModelMismatch",
    "NoFaceFound",
    "NotAnImage",
    "PROBE_MIN_IOD_PX",
    "Quality",
    "REFERENCE_MIN_IOD_PX",
    "TruncatedImage",
    "UnsupportedFormat",
    "available_models",
    "decode_image",
    "distance",
    "embedding_from_bytes",
    "embedding_to_bytes",
    "enrol_face",
    "ensure_models",
    "frontal_iod",
    "get_pipeline",
    "is_searchable_probe",
    "is_searchable_reference",
    "model_id_for",
    "models_present",
    "similarity",
    "sniff_format",
]
