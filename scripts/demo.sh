#!/usr/bin/env bash
# What Haven is for, on the embedded defaults: a throwaway tenant (PostgreSQL with sample
# data, Redis with sample keys, a folder of uploads) is backed up as one recovery point
# into a local encrypted repository, destroyed, re-created from the recovery point into
# new servers, validated (fingerprints and health probes), and reported with the measured
# restore time. Installs PostgreSQL and Redis when missing.
#   bash scripts/demo.sh [--keep | --dir DIR]
# (The repository engine alone, without databases: bash scripts/demo-repository.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_rust
ensure_postgres
need_apt redis-server redis-server
echo "== building haven (release)"
cargo build --release -q -p haven
exec target/release/haven demo "$@"
