#!/usr/bin/env bash
# Every test of the workspace: formatting, lints, unit and property tests, the backend
# contract suite, the fuzz corpus, and the fault-injection suite (crash loops, concurrent
# writers, corruption, disk full; the disk-full test mounts a tmpfs and needs root).
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_rust
ensure_nextest
need_apt rsync rsync
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -q -- -D warnings
cargo nextest run --workspace --no-fail-fast
