"""Check the converted TensorFlow graphs against their TensorFlow.js originals.

    python -m bench.tfjs_check [--tfjs-dir DIR] [--models-home DIR]

Runs each TFJS graph model with ``@tensorflow/tfjs`` (pure JavaScript CPU backend, in
node) and its converted frozen graph (matcher/tfjs.py) on the same three crops of the
packaged astronaut photo, and prints the largest difference and the cosine per model.
``@tensorflow/tfjs`` is needed for this check only (never at run time): it is installed
with ``npm install`` into ``--tfjs-dir`` when not there yet.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np

TFJS_SPEC = "@tensorflow/tfjs@4.22.0"
RUNNER = r"""
const tf = require('@tensorflow/tfjs');
const fs = require('fs'); const path = require('path');
(async () => {
  const [mj, inp, n, s, outNode, outFile] = process.argv.slice(2);
  const spec = JSON.parse(fs.readFileSync(mj));
  const specs = []; const bufs = [];
  for (const g of spec.weightsManifest) {
    specs.push(...g.weights);
    for (const p of g.paths) bufs.push(fs.readFileSync(path.join(path.dirname(mj), p)));
  }
  const all = Buffer.concat(bufs);
  const ab = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
  await tf.setBackend('cpu');
  const io = tf.io.fromMemory({modelTopology: spec.modelTopology, weightSpecs: specs, weightData: ab});
  const model = await tf.loadGraphModel(io);
  const raw = fs.readFileSync(inp);
  const x = tf.tensor4d(new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4), [+n, +s, +s, 3]);
  fs.writeFileSync(outFile, JSON.stringify(Array.from(await model.execute(x, outNode).data())));
})();
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.tfjs_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--tfjs-dir", type=Path, default=Path(".cache/tfjs-check"), help="where @tensorflow/tfjs lives")
    ap.add_argument("--models-home", type=Path, default=None)
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    import cv2
    from skimage import data

    from matcher import ensure_models
    from matcher.embedders import CHIP_SPECS, GRAPH_IO
    from matcher.models import TFJS_GRAPHS, converted_graph, default_models_home, package_file
    from matcher.tfjs import FrozenGraph

    home = args.models_home or default_models_home()
    ensure_models(home)
    work = args.tfjs_dir.resolve()
    if not (work / "node_modules" / "@tensorflow" / "tfjs").is_dir():
        work.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--silent", "--prefix", str(work), TFJS_SPEC], check=True)
    (work / "run.js").write_text(RUNNER)
    astronaut = data.astronaut()
    crops = [astronaut[20:220, 120:320], astronaut[0:300, 80:380], cv2.flip(astronaut[30:200, 140:310], 1)]
    with tempfile.TemporaryDirectory() as tmp:
        for name, (inp, out, _dim) in GRAPH_IO.items():
            spec = CHIP_SPECS[name]
            x = np.stack([cv2.resize(np.ascontiguousarray(c), (spec.size, spec.size)) for c in crops]).astype(
                np.float32
            )
            x = (x - spec.offset) * spec.scale
            x.astype("<f4").tofile(Path(tmp) / "in.f32")
            ours = FrozenGraph(converted_graph(home, name).read_bytes(), inp, out)(x).reshape(len(crops), -1)
            subprocess.run(
                ["node", str(work / "run.js"), str(package_file(home, *TFJS_GRAPHS[name])), str(Path(tmp) / "in.f32"),
                 str(len(crops)), str(spec.size), out, str(Path(tmp) / "out.json")],
                check=True, cwd=work, stdout=subprocess.DEVNULL,
                env={**os.environ, "NODE_PATH": str(work / "node_modules")},
            )  # fmt: skip
            theirs = np.array(json.loads((Path(tmp) / "out.json").read_text()), np.float32).reshape(len(crops), -1)
            cos = [float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(ours, theirs, strict=True)]
            print(
                f"{name:14s} max |diff| {np.abs(ours - theirs).max():.2e}  max |value| {np.abs(theirs).max():.3g}  "
                f"cosine {min(cos):.6f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
