#!/usr/bin/env bash
# Fault test: kill -9 the web process and the worker under load, then check the invariants
# (docs/sightings.md, "Crashes and recovery"). --quick: 4 kills (CI); default: 22 kills.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python scripts/fault_test.py "$@"
