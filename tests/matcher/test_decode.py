"""Decoding: formats, EXIF orientation, limits, typed errors (no model needed)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from matcher import (
    DecodedImage,
    ImageError,
    ImageTooLarge,
    NotAnImage,
    TruncatedImage,
    UnsupportedFormat,
    decode_image,
    sniff_format,
)
from tests.matcher.conftest import encode


def _gradient(w: int = 96, h: int = 64) -> np.ndarray:
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :, None]
    y = np.linspace(0, 255, h, dtype=np.uint8)[:, None, None]
    return np.ascontiguousarray(
        np.concatenate(
            [np.broadcast_to(x, (h, w, 1)), np.broadcast_to(y, (h, w, 1)), np.full((h, w, 1), 90, np.uint8)], axis=2
        )
    )


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_common_formats_decode(fmt: str) -> None:
    data = encode(_gradient(), fmt)
    img = decode_image(data)
    assert isinstance(img, DecodedImage)
    assert img.format == fmt
    assert (img.width, img.height) == (96, 64)
    assert img.rgb.shape == (64, 96, 3) and img.rgb.dtype == np.uint8
    assert sniff_format(data) == fmt


def test_heic_decodes() -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    buf = io.BytesIO()
    try:
        Image.fromarray(_gradient()).save(buf, "HEIF")
    except Exception as e:  # noqa: BLE001 - an encoder-less build can still decode
        pytest.skip(f"this pillow-heif build cannot encode HEIF: {e}")
    data = buf.getvalue()
    assert sniff_format(data) == "HEIF"
    img = decode_image(data)
    assert img.format == "HEIF" and img.rgb.shape == (64, 96, 3)


def test_png_with_alpha_and_grey_become_rgb() -> None:
    rgba = np.dstack([_gradient(), np.full((64, 96), 128, np.uint8)])
    assert decode_image(encode(rgba, "PNG")).rgb.shape == (64, 96, 3)
    grey = _gradient()[:, :, 0].copy()
    assert decode_image(encode(grey, "PNG")).rgb.shape == (64, 96, 3)


def test_exif_orientation_is_applied() -> None:
    arr = _gradient(96, 64)
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, to be shown rotated 90 degrees clockwise
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif, quality=95)
    out = decode_image(buf.getvalue())
    assert (out.width, out.height) == (64, 96)
    expected = np.rot90(arr, k=-1)  # clockwise
    assert np.abs(out.rgb.astype(int) - expected.astype(int)).mean() < 6


def test_not_an_image() -> None:
    with pytest.raises(NotAnImage) as e:
        decode_image(b"%PDF-1.7 this is not a photo at all" * 10)
    assert e.value.code == "not_an_image"
    assert str(e.value)
    with pytest.raises(NotAnImage):
        decode_image(b"")
    assert sniff_format(b"hello") is None


def test_truncated_files() -> None:
    rng = np.random.default_rng(1)
    noisy = rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)
    for fmt in ("PNG", "JPEG"):
        data = encode(noisy, fmt)
        with pytest.raises(TruncatedImage) as e:
            decode_image(data[: len(data) // 2])
        assert e.value.code == "truncated_image"


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    # a 30000 x 30000 PNG declared in a few hundred bytes
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096)
    bomb = b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")
    assert len(bomb) < 1000
    with pytest.raises(ImageTooLarge) as e:
        decode_image(bomb)
    assert e.value.code == "image_too_large"
    assert "MP" in str(e.value)


def test_byte_and_pixel_limits() -> None:
    data = encode(_gradient(), "PNG")
    with pytest.raises(ImageTooLarge):
        decode_image(data, max_bytes=100)
    with pytest.raises(ImageTooLarge):
        decode_image(data, max_pixels=1000)


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_unsupported_formats_are_refused(fmt: str) -> None:
    data = encode(_gradient(), fmt)
    assert sniff_format(data) == fmt
    with pytest.raises(UnsupportedFormat) as e:
        decode_image(data)
    assert isinstance(e.value, ImageError) and isinstance(e.value, ValueError)
    assert e.value.code == "unsupported_format"


def _png16(w: int, h: int, value: int) -> bytes:
    img = Image.fromarray(np.full((h, w), value, np.uint16))
    assert img.mode == "I;16"
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_sixteen_bit_png_is_scaled_down_to_eight_bit_rgb() -> None:
    from matcher.decode import DECODE_MAX_SIDE

    out = decode_image(_png16(5000, 300, 65535))
    assert out.rgb.dtype == np.uint8
    assert max(out.rgb.shape[:2]) <= DECODE_MAX_SIDE
    assert (out.width, out.height) == (5000, 300)  # the photo's own size is kept
    assert int(out.rgb.min()) == 255  # 65535 is white, not clipped noise
    mid = decode_image(_png16(64, 32, 32896))
    assert mid.rgb.shape == (32, 64, 3) and int(mid.rgb[0, 0, 0]) == 128


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_large_photo_is_downscaled_while_decoding(fmt: str) -> None:
    data = encode(_gradient(1200, 800), fmt)
    out = decode_image(data, max_side=500)
    assert max(out.rgb.shape[:2]) <= 500 and out.rgb.dtype == np.uint8
    assert (out.width, out.height) == (1200, 800)
    assert out.scale == pytest.approx(out.rgb.shape[1] / 1200)


def test_orientation_survives_downscaling() -> None:
    img = Image.fromarray(_gradient(1200, 800))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes())
    out = decode_image(buf.getvalue(), max_side=400)
    assert (out.width, out.height) == (800, 1200)
    assert out.rgb.shape[0] > out.rgb.shape[1]


def test_concurrent_decodes_are_limited() -> None:
    import threading
    import time

    from matcher import decode as decode_mod

    active = {"now": 0, "peak": 0}
    lock = threading.Lock()
    real = decode_mod._decode

    def slow(*args, **kwargs):
        with lock:
            active["now"] += 1
            active["peak"] = max(active["peak"], active["now"])
        time.sleep(0.05)
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                active["now"] -= 1

    data = encode(_gradient(), "PNG")
    before = decode_mod.concurrent_decodes()
    decode_mod._decode = slow
    try:
        decode_mod.set_concurrent_decodes(2)
        threads = [threading.Thread(target=decode_image, args=(data,)) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        decode_mod._decode = real
        decode_mod.set_concurrent_decodes(before)
    assert active["peak"] == 2
    with pytest.raises(ValueError):
        decode_mod.set_concurrent_decodes(0)
