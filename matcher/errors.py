"""Typed errors of the face pipeline.

Every :class:`ImageError` carries a stable machine-readable ``code`` and a
user-facing message in ``str(e)``; the API maps them to 4xx answers.
"""

from __future__ import annotations


class ImageError(ValueError):
    """The uploaded bytes cannot be used as a photo."""

    code: str = "image_error"
    default_message = "The file could not be read as a photo."

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.default_message)


class NotAnImage(ImageError):
    code = "not_an_image"
    default_message = "The file is not an image."


class TruncatedImage(ImageError):
    code = "truncated_image"
    default_message = "The image file is truncated or corrupt."


class UnsupportedFormat(ImageError):
    code = "unsupported_format"
    default_message = "This image format is not accepted; use JPEG, PNG, WebP or HEIC."


class ImageTooLarge(ImageError):
    code = "image_too_large"
    default_message = "The image is too large."


class NoFaceFound(ValueError):
    """No usable face in a photo that must contain one (enrolment of a reference photo)."""

    code = "no_face_found"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or "No face was found in the photo.")


class ModelFilesMissing(RuntimeError):
    """A model file the pipeline needs is not installed (nothing is ever downloaded)."""

    code = "model_files_missing"


class ModelMismatch(ValueError):
    """An embedding of another face model (or of another length) than the gallery's:
    vectors of different models are never compared."""

    code = "model_mismatch"
