#!/usr/bin/env bash
# Every test of the workspace: formatting, lints, unit and property tests, the backend
# contract suite, the fuzz corpus, and the fault-injection suite (crash loops, concurrent
# writers, corruption, disk full; the disk-full test mounts a tmpfs and needs root), and the
# tenant tests against real PostgreSQL, Redis, etcd and MariaDB servers they start themselves.
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_rust
ensure_nextest
need_apt rsync rsync
# Real servers the tenant tests start on loopback (each with its own data directory).
ensure_postgres
need_apt redis-server redis-server
need_apt etcd etcd-server
need_apt etcdctl etcd-client
need_apt mariadbd mariadb-server
need_apt mariadb-dump mariadb-client
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -q -- -D warnings
cargo nextest run --workspace --no-fail-fast
