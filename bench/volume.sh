#!/usr/bin/env bash
# Replicated-volume benchmark of issue 12: Haven RF 1 / RF 2 beside qemu-nbd and two qemu-nbd
# exports, failover time, resync vs full rebuild. See bench/volume.py.
#   bash bench/volume.sh
#   SEQ_MIB=256 SYNC_WRITES=500 RESYNC_GIB=1 bash bench/volume.sh     # a quick run
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_rust
need_apt etcd etcd-server
need_apt qemu-nbd qemu-utils
/usr/bin/python3 -c 'import nbd' 2>/dev/null || need_apt python3-libnbd-missing python3-libnbd
[ -n "${HAVEN:-}" ] || cargo build --release -q -p haven
exec /usr/bin/python3 bench/volume.py "$@"
