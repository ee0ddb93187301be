#!/usr/bin/env bash
# The aarch64 (Jetson) release build, without Docker:
#
#   cross/build-aarch64.sh             install what is missing, build, check
#   cross/build-aarch64.sh --fast      the same with a cheaper profile (no LTO, more codegen units)
#   cross/build-aarch64.sh --check BIN only check an existing binary (tests call this)
#   cross/build-aarch64.sh --max-glibc BIN  print the highest GLIBC version BIN needs
#
# Output: target/aarch64-unknown-linux-gnu/release/edge-agent (under $CARGO_TARGET_DIR if set).
#
# How: cargo-zigbuild links with zig against glibc 2.31 symbol stubs, so the binary asks
# for no newer glibc than JetPack 5 has; GStreamer and GLib come from a Debian 11 arm64
# sysroot (cross/sysroot.sh: glibc 2.31, GStreamer 1.18) through pkg-config. ring's C and
# assembly are compiled by zig cc. ONNX Runtime is loaded at run time, so it is not linked.
#
# Checks, each fatal: `file` says aarch64; the highest GLIBC_x.y the binary itself needs is
# at most 2.31 (EDGE_AGENT_MAX_GLIBC overrides); `edge-agent --version`, `edge-agent
# validate --config-dir systemd` and `edge-agent motion demo://moving-square` (a GStreamer
# pipeline through ingest and motion) run under qemu-aarch64-static with the sysroot as
# their root: a real glibc 2.31 and GStreamer 1.18 (Rust links with -z now, so every
# GStreamer symbol must resolve at load).
#
# Idempotent: apt packages, the Rust target, the .venv tools and the sysroot are installed
# only when missing. Tools live in .venv at the repository root (override with VENV=).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

TARGET=aarch64-unknown-linux-gnu
MAX_GLIBC=${EDGE_AGENT_MAX_GLIBC:-2.31}
ZIGBUILD_VERSION=0.24.0
ZIG_VERSION=0.17.1
VENV=${VENV:-$repo/.venv}
target_dir=${CARGO_TARGET_DIR:-$repo/target}
# Next to the binary it was built for, so `--check` finds both in the same target dir.
SYSROOT=${EDGE_AGENT_SYSROOT:-$target_dir/sysroot-bullseye-arm64}
out="$target_dir/$TARGET/release/edge-agent"

say() { printf 'cross: %s\n' "$*"; }
die() { printf 'cross: FAILED: %s\n' "$*" >&2; exit 1; }
now() { date +%s; }
t_all=$(now)
timings=()
timed() { # timed LABEL CMD...: runs CMD and records how long it took
  local label=$1 t
  shift
  t=$(now)
  "$@"
  timings+=("$label $(($(now) - t))s")
}

# The highest GLIBC_x.y version that BIN itself needs (its .gnu.version_r section only: the
# libraries it loads have their own needs, which the box's libraries satisfy). Empty if none.
max_glibc() {
  LC_ALL=C readelf --version-info --wide "$1" \
    | sed -n "/^Version needs section/,/^Version .* section/p" \
    | grep -o 'Name: GLIBC_[0-9][0-9.]*' | sed 's/^Name: GLIBC_//' | sort -V | tail -n1
}

check() {
  local bin=$1 desc max
  [ -x "$bin" ] || die "$bin does not exist or is not executable"
  for tool in file readelf qemu-aarch64-static; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install file binutils qemu-user-static)"
  done
  [ -e "$SYSROOT/lib/ld-linux-aarch64.so.1" ] || die "no arm64 sysroot at $SYSROOT: run cross/build-aarch64.sh (or cross/sysroot.sh $SYSROOT)"

  desc=$(file -b "$bin")
  say "file: $desc"
  case "$desc" in *ELF\ 64-bit*ARM\ aarch64*) ;; *) die "$bin is not an aarch64 ELF executable" ;; esac

  max=$(max_glibc "$bin")
  [ -n "$max" ] || die "$bin needs no GLIBC symbol version at all: not a glibc binary?"
  say "highest GLIBC version needed: $max (limit $MAX_GLIBC)"
  if [ "$(printf '%s\n%s\n' "$max" "$MAX_GLIBC" | sort -V | tail -n1)" != "$MAX_GLIBC" ]; then
    # Name the symbols that pull the version up.
    LC_ALL=C readelf --dyn-syms --wide "$bin" | grep -o '[^ ]*@GLIBC_[0-9.]*' | sort -u \
      | while IFS= read -r sym; do
        v=${sym##*@GLIBC_}
        [ "$(printf '%s\n%s\n' "$v" "$MAX_GLIBC" | sort -V | tail -n1)" = "$MAX_GLIBC" ] || echo "  $sym" >&2
      done
    die "$bin needs GLIBC_$max, newer than $MAX_GLIBC"
  fi
  say "shared libraries: $(LC_ALL=C readelf -d "$bin" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')"

  # The sysroot is the guest's root: its loader, glibc 2.31 and GStreamer 1.18 libraries
  # and base plugins. The plugin registry goes to a scratch cache so it never mixes with the
  # host's, and plugins load in-process (the aarch64 plugin scanner cannot be spawned).
  local scratch rc=0 replay
  scratch=$(mktemp -d)
  run_arm() {
    timeout 120 env QEMU_LD_PREFIX="$SYSROOT" XDG_CACHE_HOME="$scratch" HOME="$scratch" \
      GST_REGISTRY_FORK=no qemu-aarch64-static "$bin" "$@"
  }
  say "qemu: edge-agent --version"
  run_arm --version || rc=$?
  [ "$rc" = 0 ] || { rm -rf "$scratch"; die "edge-agent --version exited $rc under qemu-aarch64-static"; }
  say "qemu: edge-agent validate --quiet --config-dir systemd"
  run_arm validate --quiet --config-dir "$repo/systemd" || rc=$?
  [ "$rc" = 0 ] || { rm -rf "$scratch"; die "edge-agent validate exited $rc under qemu-aarch64-static"; }
  say "qemu: validate exited 0"
  # A real GStreamer pipeline on the arm64 libraries: the demo camera through ingest and
  # motion detection, to its end (one 5 s scene, as fast as the pipeline runs).
  say "qemu: edge-agent motion demo://moving-square"
  replay=$(run_arm motion demo://moving-square 2>"$scratch/motion.log") || rc=$?
  if [ "$rc" != 0 ] || [ -z "$replay" ]; then
    cat "$scratch/motion.log" >&2
    rm -rf "$scratch"
    die "edge-agent motion demo://moving-square exited $rc with ${#replay} bytes of events under qemu-aarch64-static"
  fi
  printf '%s\n' "$replay"
  tail -n 1 "$scratch/motion.log"
  rm -rf "$scratch"
  say "checks passed for $bin"
}

fast=0
case "${1:-}" in
  --check)
    check "${2:-$out}"
    exit 0
    ;;
  --max-glibc)
    max_glibc "${2:?--max-glibc BINARY}"
    exit 0
    ;;
  --fast) fast=1 ;;
  "") ;;
  -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
  *) die "unknown option $1 (see --help)" ;;
esac

# 1. Host packages: qemu for the smoke test, file/readelf for the checks, apt/dpkg-deb for
#    the sysroot, venv for the Python-packaged zig, aarch64 strip for the arm64 package.
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
install_host_packages() {
  local p missing=()
  for p in qemu-user-static file binutils binutils-aarch64-linux-gnu python3-venv debian-archive-keyring \
    ca-certificates; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "host packages already installed"
  fi
}
timed host-packages install_host_packages

# 2. Rust target, zig and cargo-zigbuild (pinned, from PyPI, into .venv).
install_tools() {
  if rustup target list --installed | grep -qx "$TARGET"; then
    say "Rust target $TARGET already installed"
  else
    say "adding Rust target $TARGET"
    rustup target add "$TARGET"
  fi
  [ -x "$VENV/bin/python" ] || { say "creating virtualenv $VENV"; python3 -m venv "$VENV"; }
  if [ "$("$VENV/bin/cargo-zigbuild" --version 2>/dev/null)" = "cargo-zigbuild $ZIGBUILD_VERSION" ] \
    && [ "$("$VENV/bin/python" -m ziglang version 2>/dev/null)" = "$ZIG_VERSION" ]; then
    say "cargo-zigbuild $ZIGBUILD_VERSION and zig $ZIG_VERSION already in $VENV"
  else
    say "installing cargo-zigbuild==$ZIGBUILD_VERSION ziglang==$ZIG_VERSION into $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "cargo-zigbuild==$ZIGBUILD_VERSION" "ziglang==$ZIG_VERSION"
  fi
}
timed tools install_tools

# 3. The arm64 sysroot.
timed sysroot "$repo/cross/sysroot.sh" "$SYSROOT"

# 4. The build.
export PKG_CONFIG_ALLOW_CROSS=1
export PKG_CONFIG_SYSROOT_DIR="$SYSROOT"
export PKG_CONFIG_LIBDIR="$SYSROOT/usr/lib/aarch64-linux-gnu/pkgconfig:$SYSROOT/usr/share/pkgconfig"
unset PKG_CONFIG_PATH
export CARGO_ZIGBUILD_PYTHON_PATH="$VENV/bin/python"
export PATH="$VENV/bin:$PATH"
if [ "$fast" = 1 ]; then
  # Same path, cheaper code: for CI, where the time budget matters more than the last 10%.
  export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
  say "fast profile: no LTO, 16 codegen units"
fi
say "building $out (glibc $MAX_GLIBC) with $(cargo --version)"
timed build cargo-zigbuild zigbuild --locked --release -p edge-agent --bin edge-agent --target "$TARGET.$MAX_GLIBC"

# 5. The checks. First the GStreamer API level: gstreamer-rs only declares functions newer
#    than 1.14 behind v1_16, v1_18, ... features, so none above v1_16 in the build's feature
#    graph means the binary calls nothing JetPack 5's GStreamer 1.16 lacks.
gst_api_check() {
  local features
  features=$(cargo tree --locked --offline -p edge-agent -e features,normal --target "$TARGET" 2>/dev/null \
    | grep -o 'gstreamer[a-z-]* feature "v1_[0-9_]*"' | sort -u || true)
  if printf '%s\n' "$features" | grep -Eq '"v1_(1[89]|[2-9][0-9])'; then
    die "GStreamer API newer than 1.16 is enabled (JetPack 5 has 1.16): $features"
  fi
  say "GStreamer API features: ${features:-none (1.14 API)}"
}
timed gst-api gst_api_check
timed checks check "$out"
say "timings: ${timings[*]}; total $(($(now) - t_all))s"
