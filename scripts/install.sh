#!/usr/bin/env bash
# Installs edge-agent on a box without the .deb: binary, systemd unit, default
# configuration (never over an existing one), the edge-agent user, then
# `systemctl enable --now edge-agent`.
#
#   scripts/install.sh [--dry-run] [--binary PATH] [--no-start]
#   DESTDIR=DIR scripts/install.sh ...   install into DIR instead of / (systemd untouched)
#
# --binary    the edge-agent to install (default: target/release/edge-agent; from a cross
#             build, target/aarch64-unknown-linux-gnu/release/edge-agent)
# --dry-run   print every step, change nothing
# --no-start  install and enable, but do not start or restart the service
#
# The user, groups, directories and unit enabling are done by cross/debian/postinst, the
# package's own script, so both ways of installing set up the same box.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

binary="${CARGO_TARGET_DIR:-$repo/target}/release/edge-agent"
dry=0
start=1
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --no-start) start=0; shift ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "install: unknown option $1" >&2; exit 2 ;;
  esac
done
dest=${DESTDIR:-}
dest=${dest%/}

say() { printf 'install: %s\n' "$*"; }
die() { printf 'install: FAILED: %s\n' "$*" >&2; exit 1; }
# Every change goes through step: printed always, run unless --dry-run.
step() {
  printf '+ %s\n' "$*"
  [ "$dry" = 1 ] || "$@"
}

[ -f "$binary" ] || die "no binary at $binary (build it, or pass --binary PATH)"
if [ "$dry" = 0 ]; then
  if [ -z "$dest" ] && [ "$(id -u)" -ne 0 ]; then
    die "run as root (or set DESTDIR to install into a directory)"
  fi
  # A binary for another architecture would install fine and fail at every start.
  if [ -z "$dest" ]; then
    "$binary" --version >/dev/null 2>&1 || die "$binary does not run on this machine ($(file -b "$binary" 2>/dev/null || echo unknown))"
  fi
fi

step install -D -m 0755 "$binary" "$dest/usr/bin/edge-agent"
# A locally installed unit lives in /etc/systemd/system; the package's goes to /lib.
step install -D -m 0644 "$repo/systemd/edge-agent.service" "$dest/etc/systemd/system/edge-agent.service"
# The GPU server's scaler unit comes along, not enabled (see README, "Scaling to zero").
step install -D -m 0644 "$repo/systemd/edge-agent-scaler.service" "$dest/etc/systemd/system/edge-agent-scaler.service"
if [ -e "$dest/etc/edge-agent/agent.toml" ]; then
  say "keeping the existing $dest/etc/edge-agent/agent.toml"
else
  step install -D -m 0644 "$repo/systemd/agent.toml" "$dest/etc/edge-agent/agent.toml"
fi
# The demo camera's detector, as the package ships it (scripts/setup.sh generates it).
[ -f "$repo/models/generated/test-yolov4.onnx" ] || die "no models/generated/test-yolov4.onnx: run scripts/setup.sh first"
step install -D -m 0644 "$repo/models/generated/test-yolov4.onnx" "$dest/usr/share/edge-agent/models/test-yolov4.onnx"
step install -D -m 0644 "$repo/models/test.names" "$dest/usr/share/edge-agent/models/test.names"
# The fleet example, as the package ships it: its credentials root-only, whatever mode the
# checkout gave them (git records only 0644 or 0755).
for f in "$repo"/systemd/fleet/*.toml; do
  step install -D -m 0644 "$f" "$dest/usr/share/doc/edge-agent/examples/fleet/${f##*/}"
done
for f in "$repo"/systemd/fleet/credentials/*; do
  step install -D -m 0600 "$f" "$dest/usr/share/doc/edge-agent/examples/fleet/credentials/${f##*/}"
done
# User edge-agent (groups video, render), state/cache/config directories, unit enabled.
step env DPKG_ROOT="$dest" sh "$repo/cross/debian/postinst" configure

if [ -n "$dest" ]; then
  say "installed into $dest; the running systemd was not touched"
  exit 0
fi
if [ "$start" = 0 ]; then
  say "installed and enabled; start with: systemctl start edge-agent"
  exit 0
fi
if [ "$dry" = 0 ] && [ ! -d /run/systemd/system ]; then
  die "systemd is not running here: files are installed, start edge-agent yourself"
fi
step systemctl daemon-reload
if [ "$dry" = 0 ] && systemctl is-active --quiet edge-agent.service; then
  # Already running the old binary: restart onto the new one.
  step systemctl restart edge-agent.service
else
  step systemctl enable --now edge-agent.service
fi
[ "$dry" = 1 ] || systemctl --no-pager --lines=5 status edge-agent.service || true
