#!/usr/bin/env bash
# Prepares this machine for LazyFS: system packages, CRIU >= 4, node modules, build.
# Idempotent and quick when everything is already in place. Run as root.
set -euo pipefail

cd "$(dirname "$0")/.."
say() { printf 'setup: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (LazyFS mounts FUSE file systems and runs CRIU)"

CRIU_PREFIX="${LAZYFS_CRIU_PREFIX:-/opt/lazyfs/criu}"
# Debian release whose CRIU 4.x packages we unpack when the system has no CRIU >= 4.
CRIU_SUITE="${LAZYFS_CRIU_SUITE:-trixie}"
CRIU_MIRROR="${LAZYFS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

# --- system packages ------------------------------------------------------
PACKAGES=(
  fuse3            # fusermount3, needed by sshfs and for unmounting stale mounts
  libfuse-dev      # headers for the fuse-native peer in bench:fuse (libfuse2 coexists with fuse3)
  pkg-config
  openssh-server   # tests and the demo run a real sshd as the origin host
  openssh-client
  sshfs            # the shared-namespace baseline in bench:migrate
  iproute2         # network namespaces, veth, tbf
  rsync
  procps
  psmisc
  util-linux       # nsenter, unshare, mount
  kmod
  python3
  make
  g++
  ca-certificates
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ -e /dev/fuse ] || modprobe fuse 2>/dev/null || true
[ -e /dev/fuse ] || die "/dev/fuse is missing: this kernel has no FUSE support"

# --- CRIU >= 4 ---------------------------------------------------------------
criu_major() { "$1" --version 2>/dev/null | sed -n 's/^Version: \([0-9]*\).*/\1/p'; }
criu_ok() { local m; m="$(criu_major "$1")"; [ -n "$m" ] && [ "$m" -ge 4 ]; }

CRIU_BIN=""
if command -v criu >/dev/null 2>&1 && criu_ok "$(command -v criu)"; then
  CRIU_BIN="$(command -v criu)"
elif [ -x "$CRIU_PREFIX/bin/criu" ] && criu_ok "$CRIU_PREFIX/bin/criu"; then
  CRIU_BIN="$CRIU_PREFIX/bin/criu"
else
  say "no CRIU >= 4 on this system; unpacking Debian $CRIU_SUITE's CRIU into $CRIU_PREFIX"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work"/{lists/partial,cache/archives/partial,debs}
  echo "deb $CRIU_MIRROR $CRIU_SUITE main" >"$work/sources.list"
  # A private apt configuration: it never touches the system's sources or package state,
  # and an empty status file makes apt resolve the whole dependency closure (libc included).
  apt_opts=(
    -o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
    -o Dir::State::Status=/dev/null -o APT::Install-Recommends=false
    -o APT::Sandbox::User=root
  )
  apt-get "${apt_opts[@]}" update -qq >/dev/null || die "cannot read Debian $CRIU_SUITE package lists from $CRIU_MIRROR"
  mapfile -t closure < <(apt-get "${apt_opts[@]}" -s install criu | awk '/^Inst /{print $2}')
  [ "${#closure[@]}" -gt 0 ] || die "cannot resolve criu's dependencies in Debian $CRIU_SUITE"
  (cd "$work/debs" && apt-get "${apt_opts[@]}" download "${closure[@]}" >/dev/null 2>&1) \
    || die "cannot download CRIU packages (${closure[*]}) from $CRIU_MIRROR"
  rm -rf "$CRIU_PREFIX.new"
  mkdir -p "$CRIU_PREFIX.new/bin"
  for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$CRIU_PREFIX.new"; done
  libdir="$CRIU_PREFIX/usr/lib/x86_64-linux-gnu"
  # CRIU runs through the prefix's own dynamic loader so that it gets the newer libc it
  # was built against without touching the system's.
  cat >"$CRIU_PREFIX.new/bin/criu" <<WRAP
#!/bin/sh
exec "$libdir/ld-linux-x86-64.so.2" --library-path "$libdir" "$CRIU_PREFIX/usr/sbin/criu" "\$@"
WRAP
  chmod 755 "$CRIU_PREFIX.new/bin/criu"
  rm -rf "$CRIU_PREFIX"
  mv "$CRIU_PREFIX.new" "$CRIU_PREFIX"
  criu_ok "$CRIU_PREFIX/bin/criu" || die "unpacked CRIU in $CRIU_PREFIX does not run"
  CRIU_BIN="$CRIU_PREFIX/bin/criu"
fi

# --- node modules and build -------------------------------------------------
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing node modules (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi
say "building"
npm run --silent build

# --- final check --------------------------------------------------------------
if ! out="$("$CRIU_BIN" check 2>&1)"; then
  say "criu check failed with $CRIU_BIN:"
  printf '%s\n' "$out" >&2
  die "CRIU cannot checkpoint on this kernel; see the lines above for the missing feature"
fi
say "ready: $("$CRIU_BIN" --version | head -1) at $CRIU_BIN; $(fusermount3 --version 2>&1 | head -1); node $(node --version)"
