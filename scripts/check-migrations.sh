#!/usr/bin/env bash
# alembic upgrade head -> downgrade base -> upgrade head, on SQLite and on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
pg_admin=${MIATARI_TEST_PG_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test}
db="miatari_mig_$$"
psql -h 127.0.0.1 -U postgres -d test -qc "CREATE DATABASE $db" >/dev/null
trap 'psql -h 127.0.0.1 -U postgres -d test -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null; rm -rf "$tmp"' EXIT
for url in "sqlite:///$tmp/m.db" "${pg_admin%/*}/$db"; do
  for step in "upgrade head" "downgrade base" "upgrade head"; do
    MIATARI_DATABASE_URL=$url .venv/bin/alembic $step
  done
  echo "ok: ${url%%:*}"
done
