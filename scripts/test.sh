#!/usr/bin/env bash
# Run the whole test suite (SQLite by default; MIATARI_TEST_DB=postgres for PostgreSQL).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/browser.sh
.venv/bin/miatari migrate >/dev/null  # places the model files the tests load
exec .venv/bin/python -m pytest -n "${MIATARI_TEST_PROCESSES:-2}" "$@"
