"""Renditions for known-answer tasks: the "sighting" side, degraded like a real probe, fresh bytes each time.

A reference photo is studio-sharp and its crops are served, byte for byte, as
the wanted-person side of real tasks; a real probe is a CCTV still.  So the
probe side of a known-answer task is never served as stored: it is re-rendered
for that task alone, from a seed drawn for it (recorded in the audit log), by

* pose: a small rotation, shift and change of scale;
* resolution: down-sampled (to 25-50 % for a reference photo) and scaled back;
* blur: a Gaussian blur;
* noise: Gaussian sensor noise;
* compression: a JPEG round trip at a low quality;

and stored as a PNG of the same size as every other crop.  A settled real probe
(already CCTV-soft) gets the same treatment, lighter, so its bytes are new too.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter


@dataclass(frozen=True)
class Degradation:
    """Ranges the rendition's parameters are drawn from."""

    max_rotation_deg: float
    max_shift: float  # share of the width/height
    scale: tuple[float, float]
    resolution: tuple[float, float]  # down-sampling factor (1 = none)
    blur_radius: tuple[float, float]
    noise_sigma: tuple[float, float]  # grey levels
    jpeg_quality: tuple[int, int]


# A studio reference photo made to look like a CCTV still.
FROM_REFERENCE = Degradation(max_rotation_deg=6.0, max_shift=0.03, scale=(0.94, 1.06), resolution=(0.25, 0.5),
                             blur_radius=(0.5, 1.4), noise_sigma=(2.0, 6.0), jpeg_quality=(30, 60))
# A real probe, already soft: only enough to make it new.
FROM_PROBE = Degradation(max_rotation_deg=2.0, max_shift=0.01, scale=(0.98, 1.02), resolution=(0.8, 1.0),
                         blur_radius=(0.0, 0.4), noise_sigma=(1.0, 3.0), jpeg_quality=(60, 85))


@dataclass(frozen=True)
class Params:
    rotation_deg: float
    shift: tuple[float, float]
    scale: float
    resolution: float
    blur_radius: float
    noise_sigma: float
    jpeg_quality: int


def draw(rng: random.Random, how: Degradation) -> Params:
    return Params(rotation_deg=rng.uniform(-how.max_rotation_deg, how.max_rotation_deg),
                  shift=(rng.uniform(-how.max_shift, how.max_shift), rng.uniform(-how.max_shift, how.max_shift)),
                  scale=rng.uniform(*how.scale), resolution=rng.uniform(*how.resolution),
                  blur_radius=rng.uniform(*how.blur_radius), noise_sigma=rng.uniform(*how.noise_sigma),
                  jpeg_quality=rng.randint(*how.jpeg_quality))


def render(png: bytes, params: Params, noise_seed: int) -> bytes:
    """One degraded rendition of an image, as a PNG of the same size."""
    src = Image.open(io.BytesIO(png)).convert("RGB")
    w, h = src.size
    # Pose: rotate, scale and shift about the centre of a mirror-padded copy (no empty corners), crop back.
    pad = max(w, h) // 4
    big = Image.fromarray(np.pad(np.asarray(src), ((pad, pad), (pad, pad), (0, 0)), mode="reflect"))
    big = big.rotate(params.rotation_deg, resample=Image.Resampling.BICUBIC,
                     translate=(round(params.shift[0] * w), round(params.shift[1] * h)))
    bw, bh = big.size
    sw, sh = round(bw * params.scale), round(bh * params.scale)
    big = big.resize((sw, sh), Image.Resampling.BICUBIC)
    left, top = (sw - w) // 2, (sh - h) // 2
    img = big.crop((left, top, left + w, top + h))
    # Resolution: what a distant camera records, brought back to the crop size.
    if params.resolution < 1.0:
        lw, lh = max(8, round(w * params.resolution)), max(4, round(h * params.resolution))
        img = img.resize((lw, lh), Image.Resampling.BOX).resize((w, h), Image.Resampling.BILINEAR)
    if params.blur_radius > 0:
        img = img.filter(ImageFilter.GaussianBlur(params.blur_radius))
    arr = np.asarray(img, dtype=np.float32)
    noise = np.random.default_rng(noise_seed).normal(0.0, params.noise_sigma, arr.shape[:2])[..., None]
    img = Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=params.jpeg_quality)
    decoded = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    out = io.BytesIO()
    decoded.save(out, format="PNG")
    return out.getvalue()


def render_pair(eyes_png: bytes, face_png: bytes, seed: int, how: Degradation) -> tuple[bytes, bytes, Params]:
    """The eye crop and the face chip of one probe side, rendered with the same parameters."""
    rng = random.Random(seed)
    params = draw(rng, how)
    return render(eyes_png, params, rng.getrandbits(32)), render(face_png, params, rng.getrandbits(32)), params
