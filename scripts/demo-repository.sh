#!/usr/bin/env bash
# Haven's main job on the embedded defaults: create a local encrypted repository, back up
# a sample tree, change it, back it up again, restore the latest snapshot and prove the
# restore is byte-identical, then verify every byte in the repository.
#   bash scripts/demo-repository.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_rust
work=${1:-$(mktemp -d -t haven-demo.XXXXXX)}
mkdir -p "$work"
echo "== building haven (release)"
cargo build --release -q -p haven
haven=$PWD/target/release/haven

echo "== sample data in $work/data"
if [ -f ../shared/bench/gen_dataset.py ]; then
  python3 ../shared/bench/gen_dataset.py --out "$work/data" --day 1 --scale 0.02 >/dev/null
else
  python3 scripts/sample_tree.py "$work/data"
fi

export HAVEN_REPOSITORY=$work/repo
export HAVEN_PASSWORD_FILE=$work/password
head -c 24 /dev/urandom | base64 > "$HAVEN_PASSWORD_FILE"
chmod 600 "$HAVEN_PASSWORD_FILE"

echo "== haven init"
"$haven" init
echo "== haven backup (first night)"
"$haven" backup "$work/data" --tag nightly
echo "changed overnight" >> "$(find "$work/data" -type f | sort | head -1)"
echo "== haven backup (second night: unchanged files are skipped)"
"$haven" backup "$work/data" --tag nightly
"$haven" snapshots
echo "== haven restore latest"
"$haven" restore latest --target "$work/restore"
echo "== verify: restored tree vs source"
diff -r "$work/data" "$work/restore$work/data" && echo "restore is byte-identical to the source"
echo "== haven check --read-data"
"$haven" check --read-data
"$haven" stats
echo "demo finished: repository at $work/repo (passphrase in $work/password)"
