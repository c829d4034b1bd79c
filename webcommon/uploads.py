"""Uploaded files as the domain takes them: bytes cut one past the limit, so "too large" is still seen."""

from __future__ import annotations

from fastapi import UploadFile

from triage.config import Settings
from triage.sightings import PhotoUpload


def read_capped(upload: UploadFile | None, settings: Settings) -> bytes:
    """An upload's bytes, up to one byte over ``max_upload_bytes`` (empty when no file was sent)."""
    return upload.file.read(settings.max_upload_bytes + 1) if upload is not None else b""


def photo_uploads(files: list[UploadFile] | None, settings: Settings) -> list[PhotoUpload]:
    """The photos of a sighting upload; an empty file field (no name, no bytes) is no photo."""
    return [PhotoUpload(read_capped(f, settings), f.filename or "", f.size) for f in (files or [])
            if f.filename or f.size]
