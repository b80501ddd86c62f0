#!/usr/bin/env bash
# Side-by-side benchmark of Haven against restic, rustic and borg. See bench/README.md.
#   bash bench/run.sh --scale 1.0 --reps 3
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/run.py "$@"
