#!/usr/bin/env bash
# PITR benchmark: physical PostgreSQL backups, Haven vs pgBackRest vs Barman. See bench/pitr.py.
#   bash bench/pitr.sh                                                 # full run: pgbench scale 150 (~2.2 GB)
#   bash bench/pitr.sh --scale 10 --reps 1 --out /tmp/pitr-smoke.txt   # smoke run
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/pitr.py "$@"
