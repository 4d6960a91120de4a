#!/usr/bin/env bash
# Prepares this machine for LazyFS: system packages, CRIU >= 4.2, node modules, build.
# Idempotent and quick when everything is already in place. Run as root.
set -euo pipefail

cd "$(dirname "$0")/.."
say() { printf 'setup: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (LazyFS mounts FUSE file systems and runs CRIU)"

CRIU_PREFIX="${LAZYFS_CRIU_PREFIX:-/opt/lazyfs/criu}"
# LAZYFS_CRIU_SUITE forces the Debian suite CRIU is unpacked from (see CRIU_SUITES below).
CRIU_MIRROR="${LAZYFS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

# --- system packages ------------------------------------------------------
PACKAGES=(
  fuse3            # fusermount3, needed by sshfs and for unmounting stale mounts
  libfuse-dev      # headers for the fuse-native peer in bench:fuse (libfuse2 coexists with fuse3)
  pkg-config
  openssh-server   # tests and the demo run a real sshd as the origin host
  openssh-client   # ssh -G resolves origins as ssh does; ssh-agent/ssh-add/ssh-keygen in tests
  bsdutils         # script(1): the e2e test types a passphrase on a real terminal
  sshfs            # the shared-namespace baseline in bench:migrate
  iproute2         # network namespaces, veth, tbf
  rsync
  procps
  psmisc
  util-linux       # nsenter, unshare, mount
  kmod
  python3
  redis-server     # e2e: a real database with AOF and TCP clients migrates (redis-check-aof checks it)
  redis-tools
  nginx            # e2e: a master + workers web server serves its document root after the migration (whole view)
  btrfs-progs      # e2e: --origin-snapshot reflink clones files on a btrfs loop file system on the origin
  podman           # e2e: containers migrate (`lazyfs migrate --container`); Debian's crun cannot checkpoint
  runc             #   so podman is pointed at runc; --no-install-recommends keeps Debian's criu 3.17 off PATH
  debootstrap      #   the container test image is built from Debian's archive (see below)
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

# --- CRIU >= 4.2 -------------------------------------------------------------
# 4.2 is the first CRIU that can dump TCP sockets on Linux >= 6.16 (4.1.1 fails with
# "Can't get 1:16 opt"). Order: a system criu >= 4.2, else a complete private prefix >= 4.2,
# else Debian's CRIU (and nftables, for `nft`) unpacked with their whole library closure into
# the prefix, from the first suite in CRIU_SUITES whose criu is >= 4.2.
CRIU_MIN=4.2
read -r -a CRIU_SUITES <<<"${LAZYFS_CRIU_SUITE:-trixie trixie-backports forky sid}"
# The wrapper format; a prefix whose bin/criu lacks this line is rebuilt.
WRAPPER_MARK="# lazyfs relocatable wrapper v1"

# ver_ge A B: A >= B, comparing major.minor.patch numerically ("4.2.1-1" and "1:4.2" work).
ver_ge() {
  local a="${1#*:}" b="${2#*:}" i x y
  a="${a%%[-+~]*}" b="${b%%[-+~]*}"
  local -a as bs
  IFS=. read -r -a as <<<"$a"
  IFS=. read -r -a bs <<<"$b"
  for i in 0 1 2; do
    x="${as[i]:-0}" y="${bs[i]:-0}"
    x="${x%%[!0-9]*}" y="${y%%[!0-9]*}"
    x="$((10#${x:-0}))" y="$((10#${y:-0}))"
    [ "$x" -gt "$y" ] && return 0
    [ "$x" -lt "$y" ] && return 1
  done
  return 0
}
criu_version() { "$1" --version 2>/dev/null | sed -n 's/^Version: *\([0-9][0-9.]*\).*/\1/p' | head -1; }
criu_ok() { local v; v="$(criu_version "$1")"; [ -n "$v" ] && ver_ge "$v" "$CRIU_MIN"; }
# A prefix is complete when both wrappers are the relocatable kind and both programs run.
prefix_ok() {
  local p="$1"
  grep -qxF "$WRAPPER_MARK" "$p/bin/criu" 2>/dev/null && grep -qxF "$WRAPPER_MARK" "$p/bin/nft" 2>/dev/null \
    && criu_ok "$p/bin/criu" && "$p/bin/nft" --version >/dev/null 2>&1
}

# write_wrapper PREFIX NAME: bin/NAME runs usr/sbin/NAME through the prefix's own dynamic
# loader and libraries, found relative to the wrapper itself, so the prefix can be copied
# anywhere (lazyfs migrate pushes it to origins that have no CRIU).
write_wrapper() {
  cat >"$1/bin/$2" <<WRAP
#!/bin/sh
$WRAPPER_MARK
p=\$(readlink -f -- "\$0") && p=\${p%/*} && p=\${p%/*} || exit 127
l="\$p/usr/lib/x86_64-linux-gnu"
exec "\$l/ld-linux-x86-64.so.2" --library-path "\$l" "\$p/usr/sbin/$2" "\$@"
WRAP
  chmod 755 "$1/bin/$2"
}

install_criu_prefix() {
  local work suite candidate="" version="" apt_opts=()
  work="$(mktemp -d)"
  CRIU_WORK="$work"
  trap 'rm -rf "$CRIU_WORK"' EXIT
  for suite in "${CRIU_SUITES[@]}"; do
    mkdir -p "$work/$suite"/{lists/partial,cache/archives/partial}
    echo "deb $CRIU_MIRROR $suite main" >"$work/$suite/sources.list"
    # A private apt configuration: it never touches the system's sources or package state,
    # and an empty status file makes apt resolve the whole dependency closure (libc included).
    apt_opts=(
      -o "Dir::Etc::SourceList=$work/$suite/sources.list" -o Dir::Etc::SourceParts=/dev/null
      -o "Dir::State::Lists=$work/$suite/lists" -o "Dir::Cache=$work/$suite/cache"
      -o Dir::State::Status=/dev/null -o APT::Install-Recommends=false
      -o APT::Sandbox::User=root
    )
    if ! apt-get "${apt_opts[@]}" update -qq >/dev/null 2>&1; then
      say "cannot read Debian $suite package lists from $CRIU_MIRROR"
      continue
    fi
    version="$(apt-cache "${apt_opts[@]}" policy criu 2>/dev/null | awk '/Candidate:/{print $2}')"
    if [ -n "$version" ] && [ "$version" != "(none)" ] && ver_ge "$version" "$CRIU_MIN"; then
      candidate="$suite"
      break
    fi
    say "Debian $suite has criu ${version:-(none)}, need >= $CRIU_MIN"
  done
  [ -n "$candidate" ] || die "no Debian suite among (${CRIU_SUITES[*]}) at $CRIU_MIRROR has criu >= $CRIU_MIN"
  say "unpacking Debian $candidate's criu $version and nftables into $CRIU_PREFIX"
  mkdir -p "$work/debs"
  mapfile -t closure < <(apt-get "${apt_opts[@]}" -s install criu nftables | awk '/^Inst /{print $2}')
  [ "${#closure[@]}" -gt 0 ] || die "cannot resolve criu's dependencies in Debian $candidate"
  (cd "$work/debs" && apt-get "${apt_opts[@]}" download "${closure[@]}" >/dev/null 2>&1) \
    || die "cannot download CRIU packages (${closure[*]}) from $CRIU_MIRROR"
  local new="$CRIU_PREFIX.new" old="$CRIU_PREFIX.old"
  rm -rf "$new" "$old"
  mkdir -p "$new/bin"
  for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$new"; done
  write_wrapper "$new" criu
  write_wrapper "$new" nft
  prefix_ok "$new" || die "unpacked CRIU in $new does not run: $("$new/bin/criu" --version 2>&1 | tail -1)"
  # Near-atomic swap: users of $CRIU_PREFIX/bin/criu see the old or the new one, never none
  # for longer than between two renames.
  if [ -e "$CRIU_PREFIX" ]; then mv -T "$CRIU_PREFIX" "$old"; fi
  mv -T "$new" "$CRIU_PREFIX"
  rm -rf "$old"
  rm -rf "$work"
  trap - EXIT
}

CRIU_BIN=""
if command -v criu >/dev/null 2>&1 && criu_ok "$(command -v criu)"; then
  CRIU_BIN="$(command -v criu)"
elif prefix_ok "$CRIU_PREFIX"; then
  CRIU_BIN="$CRIU_PREFIX/bin/criu"
else
  if [ -x "$CRIU_PREFIX/bin/criu" ]; then
    say "$CRIU_PREFIX (criu $(criu_version "$CRIU_PREFIX/bin/criu")) is older than $CRIU_MIN or lacks nft or relocatable wrappers: upgrading it in place"
  fi
  install_criu_prefix
  CRIU_BIN="$CRIU_PREFIX/bin/criu"
fi

# --- containers: podman with LazyFS's CRIU, and the test image -----------------
# Podman finds CRIU on PATH and passes PATH on to runc and conmon: a private directory with a
# `criu` that runs LazyFS's CRIU, put first on PATH for podman, makes podman use it.
if dpkg-query -W -f='${Status}' criu 2>/dev/null | grep -q 'install ok installed'; then
  die "Debian's criu package is installed (too old for kernels >= 6.16); remove it: apt-get remove criu"
fi
PODMAN_BIN_DIR="${LAZYFS_PODMAN_BIN:-/opt/lazyfs/podman-bin}"
mkdir -p "$PODMAN_BIN_DIR"
printf '#!/bin/sh\n# lazyfs: podman runs LazyFS'"'"'s CRIU\nexec %s "$@"\n' "$CRIU_BIN" >"$PODMAN_BIN_DIR/criu.new"
chmod 755 "$PODMAN_BIN_DIR/criu.new"
mv -f "$PODMAN_BIN_DIR/criu.new" "$PODMAN_BIN_DIR/criu"
# The test image: Debian bookworm minbase + python3, built once (about a minute) and cached as
# a tar that `podman import` reads; no image registry is reachable from here.
IMAGE_TAR="${LAZYFS_TEST_IMAGE:-/var/cache/lazyfs/bookworm-python3.tar}"
if [ ! -s "$IMAGE_TAR" ]; then
  say "building the container test image $IMAGE_TAR (debootstrap minbase bookworm + python3)"
  rootfs="$(mktemp -d /var/tmp/lazyfs-rootfs.XXXXXX)"
  debootstrap --variant=minbase --include=python3 bookworm "$rootfs" "$CRIU_MIRROR" >/dev/null \
    || die "debootstrap of bookworm from $CRIU_MIRROR failed (its log: $rootfs/debootstrap/debootstrap.log)"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  mkdir -p "$(dirname "$IMAGE_TAR")"
  tar -C "$rootfs" --numeric-owner -cf "$IMAGE_TAR.new" .
  mv -f "$IMAGE_TAR.new" "$IMAGE_TAR"
  rm -rf "$rootfs"
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
say "ready: $("$CRIU_BIN" --version | head -1) at $CRIU_BIN (for podman: $PODMAN_BIN_DIR/criu); test image $IMAGE_TAR; $(fusermount3 --version 2>&1 | head -1); node $(node --version)"
