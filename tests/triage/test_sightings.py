"""Sighting uploads: validation before storing, idempotency (no face model needed)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image
from sqlmodel import Session, select

from triage.models import AuditEntry, Job, Role, Sighting, SightingPhoto, StoredImage
from triage.sightings import PhotoUpload, SightingInput, SightingRejected, create_sighting
from triage.storage import ImageStore
from triage.transaction import unit_of_work


def jpeg(size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (90, 100, 110)).save(buf, "JPEG")
    return buf.getvalue()


def noisy_jpeg(side: int = 200) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def noisy_jpeg_cut() -> bytes:
    """A JPEG whose header is whole but whose picture data stops half-way."""
    data = noisy_jpeg()
    return data[: len(data) // 2]


def gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "GIF")
    return buf.getvalue()


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A tiny PNG that declares a huge canvas (a decompression bomb)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


BAD_INPUTS = {
    "not an image": ({"photos": [b"just some text, not a photo" * 10]}, "not_an_image"),
    "truncated": ({"photos": [noisy_jpeg_cut()]}, "truncated_image"),
    "over the size limit": ({"photos": [noisy_jpeg(400)]}, "image_too_large"),
    "decompression bomb": ({"photos": [png_bomb()]}, "image_too_large"),
    "unsupported format": ({"photos": [gif()]}, "unsupported_format"),
    "missing photos": ({"photos": []}, "missing_field"),
    "latitude out of range": ({"photos": [jpeg()], "latitude": 91.0, "longitude": 10.0}, "out_of_range"),
    "longitude out of range": ({"photos": [jpeg()], "latitude": 1.0, "longitude": -181.0}, "out_of_range"),
    "latitude without longitude": ({"photos": [jpeg()], "latitude": 1.0}, "missing_field"),
    "one bad photo among good": ({"photos": [jpeg(), b"\x00garbage" * 20]}, "not_an_image"),
}


def assert_nothing_stored(engine, settings) -> None:  # type: ignore[no-untyped-def]
    with Session(engine) as s:
        for table in (Sighting, SightingPhoto, StoredImage, Job):
            assert s.exec(select(table)).all() == [], table.__name__
    assert not any(p.is_file() for p in Path(settings.images_dir).rglob("*"))


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_and_nothing_stored(case: str, engine, settings, user_factory) -> None:  # type: ignore[no-untyped-def]
    fields, code = dict(BAD_INPUTS[case][0]), BAD_INPUTS[case][1]
    settings.max_upload_bytes = 20_000
    settings.max_image_pixels = 1_000_000
    officer = user_factory(Role.officer)
    photos = [PhotoUpload(p, f"p{i}.jpg") for i, p in enumerate(fields.pop("photos"))]
    with Session(engine) as s, pytest.raises(SightingRejected) as exc, unit_of_work(s):
        create_sighting(s, ImageStore(settings.images_dir), settings, officer, SightingInput(photos=photos, **fields))
    assert exc.value.code == code, exc.value.message
    assert exc.value.message  # a sentence for the officer
    assert_nothing_stored(engine, settings)
    with Session(engine) as s:
        refusal = s.exec(select(AuditEntry).where(AuditEntry.action == "sighting.create")).one()
        assert refusal.outcome == "denied" and refusal.detail["code"] == code


def test_idempotency_key_makes_one_sighting(engine, settings, user_factory) -> None:  # type: ignore[no-untyped-def]
    officer = user_factory(Role.officer)
    other = user_factory(Role.officer)
    store = ImageStore(settings.images_dir)
    data = SightingInput(photos=[PhotoUpload(jpeg())], idempotency_key="k-1", note="red jacket")
    with Session(engine, expire_on_commit=False) as s, unit_of_work(s):
        first = create_sighting(s, store, settings, officer, data)
    with Session(engine, expire_on_commit=False) as s, unit_of_work(s):
        again = create_sighting(s, store, settings, officer, data)
    assert first.created and not again.created and again.sighting.id == first.sighting.id
    with Session(engine, expire_on_commit=False) as s, unit_of_work(s):
        mine = create_sighting(s, store, settings, other, data)  # keys are per officer
    assert mine.created and mine.sighting.id != first.sighting.id
    with Session(engine) as s:
        assert len(s.exec(select(Sighting)).all()) == 2
        assert len(s.exec(select(Job).where(Job.kind == "match_sighting")).all()) == 2
        assert len(s.exec(select(StoredImage)).all()) == 1  # the same bytes, stored once
        photo = s.exec(select(SightingPhoto)).first()
        assert photo is not None and ImageStore(settings.images_dir).exists(photo.image_sha256)


def test_coordinates_and_time_are_kept(engine, settings, user_factory) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt

    from triage.sightings import parse_observed_at

    officer = user_factory(Role.officer)
    seen = parse_observed_at("2020-01-01T10:00", -120)
    assert seen == dt.datetime(2020, 1, 1, 8, 0, tzinfo=dt.UTC)
    with pytest.raises(SightingRejected, match="more than a year"):
        with Session(engine) as s, unit_of_work(s):
            create_sighting(s, ImageStore(settings.images_dir), settings, officer,
                            SightingInput(photos=[PhotoUpload(jpeg())], observed_at=seen))
    with Session(engine, expire_on_commit=False) as s, unit_of_work(s):
        r = create_sighting(s, ImageStore(settings.images_dir), settings, officer,
                            SightingInput(photos=[PhotoUpload(jpeg())], latitude=34.69, longitude=135.5,
                                          location_text="Namba"))
        assert r.sighting.status == "queued" and r.sighting.latitude == 34.69
