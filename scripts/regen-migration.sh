#!/usr/bin/env bash
# Regenerate the initial migration from triage/models.py (only while nothing has been released).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
rm -f migrations/versions/0001_initial_schema.py
MIATARI_DATABASE_URL="sqlite:///$tmp/gen.db" .venv/bin/alembic revision --autogenerate -m "initial schema" --rev-id 0001 >/dev/null
sed -i 's/^Create Date: .*/Create Date: 2026-11-26/' migrations/versions/0001_initial_schema.py
echo "regenerated migrations/versions/0001_initial_schema.py"
