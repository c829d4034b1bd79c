"""Safe decoding of uploaded photos: format sniffing, size limits, EXIF orientation.

Only JPEG, PNG, WebP and HEIF/HEIC are accepted. Limits are checked on the
header *before* the pixels are decoded, so a decompression bomb (a small file
declaring a huge canvas) is refused without allocating it.

Memory is bounded too: a photo whose longest side exceeds ``DECODE_MAX_SIDE``
is scaled down while it is decoded (JPEG's DCT scaling via ``draft``, then
``reduce`` strip by strip), 16-bit and palette images are converted to 8-bit
RGB one strip at a time in integers (never a whole float64 copy), and at
most ``set_concurrent_decodes(n)`` decodes run at once in a process.
"""

from __future__ import annotations

import io
import threading
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from matcher.errors import ImageTooLarge, NotAnImage, TruncatedImage, UnsupportedFormat

if TYPE_CHECKING:  # Pillow itself is imported where it decodes
    from PIL.Image import Image as PILImage

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "HEIF")
DEFAULT_MAX_BYTES = 25_000_000
DEFAULT_MAX_PIXELS = 50_000_000
# The face pipeline detects on at most 1024 px and crops from the decoded photo:
# 4096 px keeps every face's detail while capping the decoded RGB at 50 MB.
DECODE_MAX_SIDE = 4096
DEFAULT_CONCURRENT_DECODES = 2
# Rows are converted in strips of about this many pixels (16-bit, palette, alpha).
_STRIP_PIXELS = 2_000_000
_EXIF_ORIENTATION = 0x0112

_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1", b"avif"}
_heif_lock = threading.Lock()
_heif_registered = False
_decode_slots = threading.BoundedSemaphore(DEFAULT_CONCURRENT_DECODES)
_decode_slots_size = DEFAULT_CONCURRENT_DECODES


def set_concurrent_decodes(n: int) -> None:
    """At most ``n`` photos are decoded at once in this process (each holds its pixels meanwhile)."""
    global _decode_slots, _decode_slots_size
    if n < 1:
        raise ValueError("at least one concurrent decode")
    if n != _decode_slots_size:
        _decode_slots, _decode_slots_size = threading.BoundedSemaphore(n), n


def concurrent_decodes() -> int:
    """The current limit of concurrent decodes."""
    return _decode_slots_size


@dataclass
class DecodedImage:
    """A decoded photo: RGB uint8, EXIF orientation applied.

    ``width``/``height`` are the photo's own (oriented) size; ``rgb`` is that size
    unless the longest side was over ``max_side``, then scaled down by ``scale``.
    """

    rgb: np.ndarray
    format: str
    width: int
    height: int
    scale: float = 1.0


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
    data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS,
    max_side: int = DECODE_MAX_SIDE,
) -> DecodedImage:
    """Decode an uploaded photo to RGB, EXIF orientation applied, longest side at most ``max_side``.

    Raises a subclass of :class:`matcher.errors.ImageError`: ``NotAnImage``,
    ``UnsupportedFormat``, ``ImageTooLarge`` (bytes or pixels) or ``TruncatedImage``.
    """
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
    with _decode_slots:
        return _decode(data, fmt, max_pixels, max(int(max_side), 1))


def _decode(data: bytes | bytearray | memoryview, fmt: str, max_pixels: int, max_side: int) -> DecodedImage:
    from PIL import Image

    with warnings.catch_warnings():
        # Pillow's own bomb check warns/raises at its global limit; ours is explicit below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=[fmt])
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
                orientation = int(img.getexif().get(_EXIF_ORIENTATION, 1))
            except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the photo
                orientation = 1
            if fmt == "JPEG" and max(width, height) > max_side:
                # DCT scaling: the decoder itself produces 1/2, 1/4 or 1/8 of the pixels, as
                # small as keeps the longest side at half the limit or more (reduced below if over).
                shrink = 2 * max(width, height) / max_side
                img.draft("RGB", (max(1, int(width / shrink)), max(1, int(height / shrink))))
            try:
                img.load()
            except Image.DecompressionBombError as e:
                raise ImageTooLarge(_too_many(max_pixels)) from e
            except (OSError, SyntaxError, ValueError, EOFError) as e:
                raise TruncatedImage() from e
            factor = -(-max(img.size) // max_side)  # ceil
            rgb = _orient(_to_rgb(img, factor), orientation)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise NotAnImage("The image could not be converted to RGB.")
    oriented_w, oriented_h = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
    return DecodedImage(rgb=rgb, format=fmt, width=oriented_w, height=oriented_h,
                        scale=rgb.shape[1] / oriented_w)


def _too_many(max_pixels: int) -> str:
    return f"The image declares more pixels than the limit of {max_pixels / 1e6:.0f} MP."


def _orient(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Apply the EXIF orientation (as ``ImageOps.exif_transpose``) to the decoded pixels."""
    views = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
             5: lambda a: a.transpose(1, 0, 2), 6: lambda a: np.rot90(a, -1),
             7: lambda a: a[::-1, ::-1].transpose(1, 0, 2), 8: lambda a: np.rot90(a, 1)}
    view = views.get(orientation)
    return rgb if view is None else np.ascontiguousarray(view(rgb))


def _to_rgb(img: PILImage, factor: int = 1) -> np.ndarray:
    """8-bit RGB pixels, ``factor`` times smaller, as an array; the source image is released.

    The pixels are converted a strip of rows at a time straight into the result,
    so the memory beyond the decoded source is one strip plus the result.
    """
    from PIL import Image

    # Whole-image conversions would hold two more full copies (Pillow's tobytes joins its chunks).
    width, height = img.size
    top = 0.0
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        highest = img.getextrema()[1]  # one band: (lowest, highest)
        assert not isinstance(highest, tuple)
        top = float(highest)
    rows = max(factor, (max(_STRIP_PIXELS // max(width, 1), 1) // factor) * factor)
    out = np.empty((-(-height // factor), -(-width // factor), 3), np.uint8)
    for y in range(0, height, rows):
        strip: Image.Image = _strip_to_rgb(img.crop((0, y, width, min(height, y + rows))), top)
        if factor > 1:
            strip = strip.reduce(factor)
        out[y // factor:y // factor + strip.height] = np.asarray(strip, dtype=np.uint8)
    img.close()
    return out


def _strip_to_rgb(img: PILImage, top: float) -> PILImage:
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # Integers only: 16-bit values (0-65535) are divided by 257, 8-bit ones kept.
        arr = np.asarray(img)
        arr = arr // 257 if top > 255 else arr
        return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L").convert("RGB")
    return img.convert("RGB")
