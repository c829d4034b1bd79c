"""Peak memory of decoding a photo: the bounded decoder against the full-resolution float64 baseline.

Each case runs in a fresh process and reports the growth of its peak resident
set (``ru_maxrss``) over what it held before decoding, so the numbers are
comparable within one run on one machine::

    .venv/bin/python -m bench.decode            # or: make bench-decode

The baseline is the decoder as it was before memory was bounded: the whole
photo decoded at full resolution, a 16-bit image converted through float64.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

SIDE = 7000
CONCURRENT = 4


def make_png16(side: int = SIDE) -> bytes:
    """A 16-bit greyscale PNG, small on disk (a smooth gradient), huge once decoded."""
    from PIL import Image

    row = np.linspace(0, 65535, side, dtype=np.uint16)
    img = Image.fromarray(np.ascontiguousarray(np.broadcast_to(row, (side, side))))
    buf = io.BytesIO()
    img.save(buf, "PNG", optimize=False)
    return buf.getvalue()


def make_jpeg(side: int = SIDE) -> bytes:
    from PIL import Image

    row = np.linspace(0, 255, side, dtype=np.uint8)
    grey = np.ascontiguousarray(np.broadcast_to(row, (side, side)))
    buf = io.BytesIO()
    Image.fromarray(grey).convert("RGB").save(buf, "JPEG", quality=80)
    return buf.getvalue()


def baseline_decode(data: bytes) -> np.ndarray:
    """The earlier decoder: full resolution, 16-bit through float64."""
    from PIL import Image, ImageOps

    img: Image.Image = Image.open(io.BytesIO(bytes(data)))
    img.load()
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = max(float(arr.max()), 1.0)
        scale = 255.0 / (65535.0 if top > 255 else 255.0)
        img = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8)).convert("RGB")
    else:
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _rss_mb() -> float:
    return _status_mb("VmRSS")


def _peak_mb() -> float:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec.
    return _status_mb("VmHWM")


def run_case(path: str, decoder: str, concurrent: int) -> dict[str, float]:
    """In this process: read the photo, note the memory, decode ``concurrent`` copies at once."""
    from matcher.decode import decode_image

    with open(path, "rb") as fh:
        data = fh.read()
    fn = baseline_decode if decoder == "baseline" else (lambda d: decode_image(d).rgb)
    import PIL.Image  # noqa: F401 - loaded before the baseline is taken

    held = _rss_mb()
    before_peak = _peak_mb()
    results: list[tuple[int, ...]] = []  # shapes only: a finished decode's pixels are let go, as a job does
    started = time.perf_counter()
    threads = [threading.Thread(target=lambda: results.append(fn(data).shape)) for _ in range(concurrent)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    shape = results[0] if results else (0, 0, 0)
    return {"file_kb": len(data) / 1024, "peak_growth_mb": max(_peak_mb(), before_peak) - held,
            "seconds": elapsed, "width": float(shape[1]), "height": float(shape[0])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", nargs=3, metavar=("FILE", "DECODER", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case[0], args.case[1], int(args.case[2]))))
        return 0
    # The photos are made here, so the measuring processes never hold their pixels but to decode them.
    tmp = tempfile.mkdtemp(prefix="miatari-bench-decode-")
    files = {"png16": os.path.join(tmp, "png16.png"), "jpeg": os.path.join(tmp, "photo.jpg")}
    for kind, make in (("png16", make_png16), ("jpeg", make_jpeg)):
        with open(files[kind], "wb") as fh:
            fh.write(make())
    cases = [("png16", 1), ("jpeg", 1), ("png16", CONCURRENT)]
    print(f"{'photo':<28} {'decoder':<9} {'at once':>7} {'file KB':>8} {'decoded':>11} "
          f"{'peak MB':>8} {'s':>6}")
    worst_ratio = 0.0
    ok = True
    for kind, n in cases:
        rows = {}
        for decoder in ("baseline", "bounded"):
            out = subprocess.run([sys.executable, "-m", "bench.decode", "--case", files[kind], decoder, str(n)],
                                 capture_output=True, text=True, check=True)
            rows[decoder] = json.loads(out.stdout.strip().splitlines()[-1])
            r = rows[decoder]
            label = f"{SIDE}x{SIDE} " + ("16-bit PNG" if kind == "png16" else "JPEG")
            print(f"{label:<28} {decoder:<9} {n:>7} {r['file_kb']:>8.0f} "
                  f"{int(r['width'])}x{int(r['height']):<6} {r['peak_growth_mb']:>8.0f} {r['seconds']:>6.2f}")
        ratio = rows["bounded"]["peak_growth_mb"] / max(rows["baseline"]["peak_growth_mb"], 1.0)
        worst_ratio = max(worst_ratio, ratio)
        per_decode = rows["bounded"]["peak_growth_mb"] / min(n, 2)
        ok = ok and per_decode <= 200
        print(f"{'':<28} ratio bounded/baseline {ratio:.2f}; peak per running decode {per_decode:.0f} MB")
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"worst ratio {worst_ratio:.2f}; every bounded decode within 200 MB: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
