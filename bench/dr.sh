#!/usr/bin/env bash
# Disaster-recovery benchmark of issue 11: `haven dr run` to the DNS answer switched, beside
# the bare restore tools, and site death -> first alert with `haven serve`. See bench/dr.py.
#   bash bench/dr.sh                                     # full size (~2 GB tenant)
#   SCALE=0.1 bash bench/dr.sh --haven target/debug/haven   # smoke run of the script
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/dr.py "$@"
