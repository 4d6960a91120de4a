#!/usr/bin/env bash
# Runs pjdfstest (as root) inside a lazy directory of a LazyFS mounted over a LocalOrigin.
# usage: scripts/pjdfstest-lazy.sh [PJDFSTEST_DIR] [prove args...]   (needs npm run build)
set -euo pipefail
PJD=${1:-/work/pjdfstest}
shift || true
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/lazyfs-pjd-XXXXXX)
chmod 755 "$WORK"
mkdir -p "$WORK/origin" "$WORK/mnt"
echo "origin file" > "$WORK/origin/seed.txt"
node "$ROOT/dist/test/lazy/pjd-mount.js" "$WORK/mnt" "$WORK/origin" "$WORK/cache" > "$WORK/server.log" 2>&1 &
SERVER=$!
trap 'rc=${status:-$?}; set +e; kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; umount -l "$WORK/mnt" 2>/dev/null; rm -rf "$WORK"; exit "$rc"' EXIT
for _ in $(seq 100); do grep -q ready "$WORK/server.log" && break; sleep 0.1; done
cd "$WORK/mnt/lazy"
status=0
prove -r "${@:-$PJD/tests}" || status=$?
cd /
exit "$status"
