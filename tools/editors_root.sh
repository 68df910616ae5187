#!/usr/bin/env bash
# Build and use a Debian trixie root holding real GIMP 3 and Krita 5 for end-to-end tests.
#
#   tools/editors_root.sh [build]        build the root once (idempotent; a stamp records what it holds)
#   tools/editors_root.sh run CMD...     run CMD inside the root (clean environment, mounts set up);
#                                        CMD may start with NAME=VALUE words (passed to env -i).
#                                        HIFILL_EDITORS_BIND="DIR[:ro] ..." binds host folders at the same
#                                        path inside the root for this run (e.g. the checkout, read-only).
#   tools/editors_root.sh mount|umount   mount / unmount proc, sys, dev, dev/pts, dev/shm (idempotent)
#   tools/editors_root.sh status         print the root's path and whether it is ready (exit 1 if not)
#   tools/editors_root.sh path           print the root's path
#
# The root lives outside the repository: $HIFILL_EDITORS_ROOT, default /work/editors-root.
# `build` and `run` work in a private mount namespace (unshare -m), so their mounts vanish when they
# exit, even on a crash, and concurrent users never unmount each other's /proc or /dev.
# Must run as root. Never touches the host's apt sources.
set -euo pipefail

ROOT="${HIFILL_EDITORS_ROOT:-/work/editors-root}"
MIRROR="${HIFILL_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=trixie
# Bump STAMP_VERSION whenever the package list changes: the next build then adds what is missing.
STAMP_VERSION=2
PACKAGES=(
  gimp python3-gi gir1.2-gimp-3.0 python3-zmq python3-msgpack
  xvfb xauth python3-pil x11-apps imagemagick
  krita python3-pyqt5
  xdotool
)
STAMP="$ROOT/.hifill-editors-root"
LOCK="${ROOT%/}.lock"

log() { printf 'editors_root: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

require_root_user() {
  [[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot and mount need it)"
}

stamp_text() { printf 'version=%s\nsuite=%s\npackages=%s\n' "$STAMP_VERSION" "$SUITE" "${PACKAGES[*]}"; }

is_ready() { [[ -f "$STAMP" ]] && [[ "$(cat "$STAMP")" == "$(stamp_text)" ]]; }

# --- mounts ------------------------------------------------------------------------------------------
# Each helper is idempotent: it mounts only what is not mounted yet and unmounts only what is.
MOUNT_POINTS=(proc sys dev dev/pts dev/shm)

mount_root() {
  local target
  target="$ROOT/proc"; mountpoint -q "$target" || mount -t proc proc "$target"
  target="$ROOT/sys"; mountpoint -q "$target" || mount -t sysfs sysfs "$target"
  target="$ROOT/dev"; mountpoint -q "$target" || mount --bind /dev "$target"
  target="$ROOT/dev/pts"; mountpoint -q "$target" || mount --bind /dev/pts "$target"
  mkdir -p "$ROOT/dev/shm"
  target="$ROOT/dev/shm"; mountpoint -q "$target" || mount -t tmpfs -o mode=1777 shm "$target"
}

unmount_root() {
  local i target
  for (( i=${#MOUNT_POINTS[@]}-1; i>=0; i-- )); do
    target="$ROOT/${MOUNT_POINTS[i]}"
    if mountpoint -q "$target" 2>/dev/null; then umount "$target" || umount -l "$target"; fi
  done
}

# Run "$@" (a function of this script) in a private mount namespace; mounts made there (mount_root)
# are also unmounted explicitly on exit.
in_private_namespace() {
  if [[ "${HIFILL_IN_NAMESPACE:-}" == "$ROOT" ]]; then
    trap unmount_root EXIT
    "$@"
  else
    HIFILL_IN_NAMESPACE="$ROOT" exec unshare --mount --propagation private "$0" "$@"
  fi
}

# Environment inside the root: the host's PATH (pyenv shims etc.) does not exist there.
chroot_env() {
  chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive "$@"
}

bind_extra() {
  local spec source mode
  for spec in ${HIFILL_EDITORS_BIND:-}; do
    source="${spec%:ro}"; mode=rw
    [[ "$spec" == *:ro ]] && mode=ro
    [[ -d "$source" ]] || die "HIFILL_EDITORS_BIND: $source is not a folder"
    [[ "$source" == /* ]] || die "HIFILL_EDITORS_BIND: $source is not an absolute path"
    mkdir -p "$ROOT$source"
    mount --bind "$source" "$ROOT$source"
    [[ $mode == ro ]] && mount -o remount,bind,ro "$ROOT$source"
  done
  return 0
}

# Extra binds live only in this private namespace, so they vanish with it.
run_mounted() { mount_root; bind_extra; chroot_env "$@"; }

# --- build -------------------------------------------------------------------------------------------
no_mounts_below_root() { ! findmnt -rn -o TARGET | grep -q "^${ROOT%/}/"; }

do_build() {
  if [[ ! -x "$ROOT/usr/bin/apt-get" ]]; then
    no_mounts_below_root || die "something is mounted below $ROOT; run '$0 umount' first"
    if [[ -e "$ROOT" ]]; then log "removing incomplete root $ROOT"; rm -rf --one-file-system "$ROOT"; fi
    command -v debootstrap >/dev/null || { log "installing debootstrap on the host"; \
      apt-get install -y -q debootstrap >/dev/null; }
    log "debootstrap $SUITE into $ROOT"
    debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >&2
  fi
  mount_root
  printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"
  chmod 755 "$ROOT/usr/sbin/policy-rc.d"
  cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
  log "installing ${PACKAGES[*]}"
  chroot_env apt-get update -q >&2
  chroot_env apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >&2
  chroot_env apt-get clean
  chroot_env gimp-console-3.0 --version >&2 || die "gimp-console-3.0 is not runnable in the root"
  chroot_env python3 -c 'import zmq, msgpack, gi' || die "python3-zmq/msgpack/gi missing in the root"
  stamp_text > "$STAMP"
  log "ready: $ROOT"
}

cmd_build() {
  require_root_user
  mkdir -p "$(dirname "$ROOT")"
  exec 9>"$LOCK"
  flock 9
  if is_ready; then log "ready (cached): $ROOT"; return 0; fi
  in_private_namespace __build
}

cmd_run() {
  require_root_user
  is_ready || die "root $ROOT is not built; run '$0 build' first"
  [[ $# -gt 0 ]] || die "usage: $0 run CMD [ARGS...]"
  in_private_namespace __run "$@"
}

main() {
  local cmd="${1:-build}"
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    build) cmd_build ;;
    run) cmd_run "$@" ;;
    mount) require_root_user; is_ready || die "root $ROOT is not built"; mount_root ;;
    umount|unmount) require_root_user; unmount_root ;;
    status) if is_ready; then echo "ready $ROOT"; else echo "absent $ROOT"; exit 1; fi ;;
    path) echo "$ROOT" ;;
    __build) in_private_namespace do_build ;;
    __run) in_private_namespace run_mounted "$@" ;;
    *) die "unknown command '$cmd' (build, run, mount, umount, status, path)" ;;
  esac
}

main "$@"
