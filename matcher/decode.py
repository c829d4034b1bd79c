"""Safe decoding of uploaded photos: format sniffing, size limits, EXIF orientation.

Only JPEG, PNG, WebP and HEIF/HEIC are accepted. Limits are checked on the
header *before* the pixels are decoded, so a decompression bomb (a small file
declaring a huge canvas) is refused without allocating it.
"""

from __future__ import annotations

import io
import threading
import warnings
from dataclasses import dataclass

import numpy as np

from matcher.errors import ImageTooLarge, NotAnImage, TruncatedImage, UnsupportedFormat

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "HEIF")
DEFAULT_MAX_BYTES = 25_000_000
DEFAULT_MAX_PIXELS = 50_000_000

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif"}
_heif_lock = threading.Lock()
_heif_registered = False


@dataclass
class DecodedImage:
    """A decoded photo: RGB uint8, EXIF orientation applied, full resolution."""

    rgb: np.ndarray
    format: str
    width: int
    height: int


def sniff_format(data: bytes) -> str | None:
    """The container format from the magic bytes ("JPEG", "PNG", "WEBP", "HEIF",
    or "GIF"/"BMP"/"TIFF" for known but refused formats); ``None`` if unknown.

    Cheap: looks at the first few bytes only, decodes nothing."""
    head = bytes(data[:32])
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS:
        return "HEIF" if head[8:12] != b"avif" else "AVIF"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:2] == b"BM":
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    return None


def _register_heif() -> None:
    global _heif_registered
    with _heif_lock:
        if not _heif_registered:
            try:
                from pillow_heif import register_heif_opener

                register_heif_opener()
            except ImportError:  # pragma: no cover - pillow-heif is a dependency
                pass
            _heif_registered = True


def decode_image(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS
) -> DecodedImage:
    """Decode an uploaded photo to RGB, EXIF orientation applied.

    Raises a subclass of :class:`matcher.errors.ImageError`: ``NotAnImage``,
    ``UnsupportedFormat``, ``ImageTooLarge`` (bytes or pixels) or ``TruncatedImage``.
    """
    from PIL import Image, ImageOps

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise NotAnImage("Expected the bytes of an image file.")
    if len(data) == 0:
        raise NotAnImage("The file is empty.")
    if len(data) > max_bytes:
        raise ImageTooLarge(f"The file is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB.")
    fmt = sniff_format(data)
    if fmt is None:
        raise NotAnImage()
    if fmt not in ACCEPTED_FORMATS:
        raise UnsupportedFormat(f"{fmt} images are not accepted; use JPEG, PNG, WebP or HEIC.")
    if fmt == "HEIF":
        _register_heif()

    with warnings.catch_warnings():
        # Pillow's own bomb check warns/raises at its global limit; ours is explicit below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(bytes(data)), formats=[fmt])
        except Image.DecompressionBombError as e:
            raise ImageTooLarge(_too_many(max_pixels)) from e
        except Exception as e:  # noqa: BLE001 - any parser failure means "not a usable image"
            if len(data) < 64:
                raise TruncatedImage() from e
            raise NotAnImage("The file could not be read as a " + fmt + " image.") from e
        with img:
            width, height = img.size
            if width <= 0 or height <= 0:
                raise NotAnImage("The image has no pixels.")
            if width * height > max_pixels:
                raise ImageTooLarge(
                    f"The image is {width}x{height} ({width * height / 1e6:.0f} MP); "
                    f"the limit is {max_pixels / 1e6:.0f} MP."
                )
            try:
                img.load()
            except Image.DecompressionBombError as e:
                raise ImageTooLarge(_too_many(max_pixels)) from e
            except (OSError, SyntaxError, ValueError, EOFError) as e:
                raise TruncatedImage() from e
            try:
                oriented = ImageOps.exif_transpose(img)
            except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the photo
                oriented = img
            rgb_img = _to_rgb(oriented)
    rgb = np.ascontiguousarray(np.asarray(rgb_img, dtype=np.uint8))
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise NotAnImage("The image could not be converted to RGB.")
    return DecodedImage(rgb=rgb, format=fmt, width=rgb.shape[1], height=rgb.shape[0])


def _too_many(max_pixels: int) -> str:
    return f"The image declares more pixels than the limit of {max_pixels / 1e6:.0f} MP."


def _to_rgb(img):  # type: ignore[no-untyped-def]
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = max(float(arr.max()), 1.0)
        scale = 255.0 / (65535.0 if top > 255 else 255.0)
        return Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8)).convert("RGB")
    return img.convert("RGB")
