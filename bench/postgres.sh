#!/usr/bin/env bash
# PostgreSQL benchmark of issue 4: haven tenant backup/restore against pg_dump/pg_restore alone.
#   bash bench/postgres.sh                          # full run: pgbench scale 150 (~2.2 GB), 3 reps
#   bash bench/postgres.sh --scale 10 --reps 1      # smoke run
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/postgres.py "$@"
