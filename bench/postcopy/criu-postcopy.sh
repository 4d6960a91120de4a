#!/bin/bash
# Plain CRIU on one host: eager dump+restore against post-copy (dump --lazy-pages, page
# server, lazy-pages daemon, restore --lazy-pages) for dirty heaps of the given sizes (MiB).
# The restore runs in a new pid namespace because the lazy dump keeps the original frozen
# (and holding its pid) until every page has been sent. Prints one row per run:
#   mode heap_MiB freeze_s image_bytes origin_released_s verified
# Needs fs.pipe-max-size >= 4 MiB without CAP_SYS_RESOURCE (see README, Post-copy memory):
# set for the run and put back at the end. ONLY_LAZY=1 skips the eager rows, KEEP=1 keeps
# the images and logs in /tmp/lazyfs-postcopy.*.
set -euo pipefail
CRIU=${LAZYFS_CRIU:-/opt/lazyfs/criu/bin/criu}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d /tmp/lazyfs-postcopy.XXXXXX)
PORT=${PORT:-27190}
old_pipe_max=$(cat /proc/sys/fs/pipe-max-size)
inits=()
workloads=()
cleanup() {
  echo "$old_pipe_max" >/proc/sys/fs/pipe-max-size
  for p in "${inits[@]}" "${workloads[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
[ "$old_pipe_max" -ge 4194304 ] || echo 4194304 >/proc/sys/fs/pipe-max-size
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc | awk '{printf "%.2f", $1}'; }

# Starts the workload, waits for its start line; sets WPID and WLOG.
start_workload() {
  WLOG=$1/out.log
  setsid python3 "$HERE/heap.py" "$2" >"$WLOG" 2>&1 </dev/null &
  WPID=$!
  workloads+=("$WPID")
  until grep -qs '^start' "$WLOG"; do sleep 0.2; done
}

# Restores $1 in a new pid namespace whose init stays (a sleep), with extra args; records it.
restore_in_pidns() {
  local dir=$1
  shift
  setsid unshare --kill-child -p -f -m --mount-proc sh -c \
    "$CRIU restore -D $dir -d -o restore.log $* && echo restored > $dir/restored; exec sleep 100000" \
    >/dev/null 2>&1 </dev/null &
  inits+=("$!")
  until [ -e "$dir/restored" ]; do
    [ -e /proc/$! ] || { echo "restore failed, see $dir/restore.log" >&2; exit 1; }
    sleep 0.02
  done
}

# Waits until the restored workload prints a heap check after the restore; echoes it.
verified() {
  local lines
  lines=$(wc -l <"$1")
  for _ in $(seq 600); do
    local fresh
    fresh=$(tail -n +"$((lines + 1))" "$1" | grep -m1 -o 'heap-ok\|HEAP-BAD' || true)
    [ -n "$fresh" ] && { echo "$fresh"; return; }
    sleep 0.2
  done
  echo "no-output"
}

run_eager() {
  local d=$WORK/eager-$1
  mkdir -p "$d"
  start_workload "$d" "$1"
  local t0
  t0=$(now)
  "$CRIU" dump -t "$WPID" -D "$d" -v3 -o dump.log
  restore_in_pidns "$d"
  local freeze
  freeze=$(since "$t0")
  echo "eager $1 $freeze $(du -sb --exclude='*.log' "$d" | cut -f1) $freeze $(verified "$d/out.log")"
}

# A private sshd on 127.0.0.1 and a key for it: the page server's port is reached through
# `ssh -L`, as a target would reach an origin that offers nothing but sshd.
SSHD_PORT=$((PORT + 500))
start_sshd() {
  ssh-keygen -q -t ed25519 -N '' -f "$WORK/host_key"
  ssh-keygen -q -t ed25519 -N '' -f "$WORK/client_key"
  cp "$WORK/client_key.pub" "$WORK/authorized_keys"
  cat >"$WORK/sshd_config" <<CFG
Port $SSHD_PORT
ListenAddress 127.0.0.1
HostKey $WORK/host_key
AuthorizedKeysFile $WORK/authorized_keys
PermitRootLogin prohibit-password
StrictModes no
PidFile none
CFG
  /usr/sbin/sshd -D -e -f "$WORK/sshd_config" 2>"$WORK/sshd.log" &
  inits+=("$!")
  until ss -ltn | grep -q "127.0.0.1:$SSHD_PORT "; do sleep 0.05; done
}

# Forwards 127.0.0.1:$1 here to 127.0.0.1:$2 behind the sshd; waits until it listens.
start_tunnel() {
  ssh -N -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o ExitOnForwardFailure=yes -i "$WORK/client_key" -p "$SSHD_PORT" \
    -L "127.0.0.1:$1:127.0.0.1:$2" root@127.0.0.1 2>/dev/null &
  inits+=("$!")
  until ss -ltn | grep -q "127.0.0.1:$1 "; do sleep 0.02; done
}

# run_lazy MiB [ssh]: with "ssh" the lazy-pages daemon reaches the page server via start_tunnel.
run_lazy() {
  local d=$WORK/lazy$2-$1 port=$((PORT++)) via
  mkdir -p "$d"
  via=$port
  start_workload "$d" "$1"
  local t0
  t0=$(now)
  "$CRIU" dump -t "$WPID" -D "$d" -v3 -o dump.log --lazy-pages --address 127.0.0.1 --port "$port" &
  local dump=$!
  until grep -q 'Starting page server' "$d/dump.log" 2>/dev/null; do sleep 0.01; done
  local bytes
  bytes=$(du -sb --exclude='*.log' "$d" | cut -f1)
  if [ "$2" = "-ssh" ]; then
    via=$((PORT++))
    start_tunnel "$via" "$port"
  fi
  "$CRIU" lazy-pages --page-server --address 127.0.0.1 --port "$via" -D "$d" -o lazy.log &
  until [ -S "$d/lazy-pages.socket" ]; do sleep 0.01; done
  restore_in_pidns "$d" --lazy-pages
  local freeze
  freeze=$(since "$t0")
  wait "$dump"
  local released
  released=$(since "$t0")
  echo "lazy$2 $1 $freeze $bytes $released $(verified "$d/out.log")"
}

echo "mode heap_MiB freeze_s image_bytes origin_released_s verified"
start_sshd
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(64 512)
for mib in "${sizes[@]}"; do
  [ -n "${ONLY_LAZY:-}" ] || run_eager "$mib"
  run_lazy "$mib" ""
  run_lazy "$mib" -ssh
done
