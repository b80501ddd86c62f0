#!/usr/bin/env bash
# Every test of the workspace: formatting, lints, unit and property tests, the backend
# contract suite, the fuzz corpus, and the fault-injection suite (crash loops, concurrent
# writers, corruption, disk full; the disk-full test mounts a tmpfs and needs root), and the
# tenant tests against real PostgreSQL, Redis, etcd and MariaDB servers they start themselves,
# and schemathesis against the API.
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_rust
ensure_nextest
need_apt rsync rsync
# Extended attributes, ACLs and capabilities are compared with the administrator's tools.
need_apt getfattr attr
need_apt getfacl acl
need_apt getcap libcap2-bin
# `haven mount` is tested through the kernel's FUSE (fusermount3 when not root).
need_apt fusermount3 fuse3
# Real servers the tenant tests start on loopback (each with its own data directory).
ensure_postgres
need_apt redis-server redis-server
need_apt etcd etcd-server
need_apt etcdctl etcd-client
need_apt mariadbd mariadb-server
need_apt mariadb-dump mariadb-client
# The DNS tests start a real BIND 9 (named) with its own zone; dig for looking at it by hand.
need_apt named bind9
need_apt dig bind9-dnsutils
# The daemon: SQLite for the catalog, Chromium for the dashboard test, openssl for the
# SMTP STARTTLS test's throwaway CA; iproute2 (ip, tc) for the multi-site test.
need_apt pkg-config pkg-config
[ -f /usr/include/sqlite3.h ] || need_apt sqlite3-dev-missing libsqlite3-dev
need_apt chromium chromium
need_apt openssl openssl
need_apt tc iproute2
# Replicated volumes: real NBD clients (qemu-io and qemu-img from qemu-utils; nbdcopy, nbdinfo).
need_apt qemu-io qemu-utils
need_apt nbdcopy libnbd-bin
# The volume fault test's client (crates/haven/tests/volume_faults.py): libnbd from Python.
/usr/bin/python3 -c 'import nbd' 2>/dev/null || need_apt python3-libnbd-missing python3-libnbd
# The API's schema test (crates/haven-api/tests/regression_api.rs) runs schemathesis.
ensure_schemathesis
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -q -- -D warnings
cargo nextest run --workspace --no-fail-fast
