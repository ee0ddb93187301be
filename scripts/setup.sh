#!/usr/bin/env bash
# Sets up a Debian 12 machine (or a Jetson/Debian box) to build, run and test edge-agent.
# Idempotent: every step checks first and says what it did.
#   scripts/setup.sh           build dependencies, ONNX Runtime venv, test model, aarch64 target
#   scripts/setup.sh --test    also the brokers the integration tests use (RabbitMQ, Mosquitto)
#                              promtool (Debian package prometheus), headless Chromium
#                              and the extra ONNX Runtime libraries of the runtime tests (.ort/)
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.32.0
# The oldest PyPI wheel that ships capi/libonnxruntime.so: the floor the tests check
# (the build accepts 1.17 and up; JetPack boxes have 1.17 to 1.25).
ORT_OLD_VERSION=1.19.2
want_test=0
for a in "$@"; do
  case "$a" in
    --test) want_test=1 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "setup: unknown option $a" >&2; exit 2 ;;
  esac
done

say() { printf 'setup: %s\n' "$*"; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# 1. Debian packages: GStreamer 1.22 and plugins, pkg-config, and tools the tests use.
pkgs=(pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-rtsp gstreamer1.0-tools
  python3-venv file)
if [ "$want_test" = 1 ]; then
  # prometheus: its promtool checks /metrics in the tests. chromium: headless, it loads
  # the agent's page in tests/page.rs.
  pkgs+=(rabbitmq-server mosquitto mosquitto-clients systemd qemu-user-static dpkg-dev prometheus
    chromium)
  # gst-discoverer-1.0: the clip tests play the clips the agent writes with it.
  pkgs+=(gstreamer1.0-plugins-base-apps)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "Debian packages already installed"
fi

# 2. ONNX Runtime (pinned, from PyPI) and the Python tools for models, references and benches,
#    in a project-local virtualenv. The agent finds the library there by itself.
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  say "creating virtualenv .venv"
  "$PY" -m venv .venv
fi
if ! .venv/bin/python -c "import onnxruntime, sys; sys.exit(onnxruntime.__version__ != '$ORT_VERSION')" 2>/dev/null \
   || ! .venv/bin/python -c "import numpy, onnx, cv2, skvideo" 2>/dev/null; then
  say "installing onnxruntime==$ORT_VERSION, numpy, onnx, opencv-python-headless, scikit-video into .venv"
  .venv/bin/pip install -q --disable-pip-version-check "onnxruntime==$ORT_VERSION" numpy onnx \
    opencv-python-headless scikit-video
else
  say "virtualenv already has onnxruntime $ORT_VERSION and the Python tools"
fi
lib=$(ls .venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n1 || true)
say "ONNX Runtime library: ${lib:-NOT FOUND}"

# 3. The small deterministic test model (the demo's default detector).
if [ -f models/make_test_model.py ]; then
  if [ ! -f models/generated/test-yolov4.onnx ] || [ models/make_test_model.py -nt models/generated/test-yolov4.onnx ]; then
    say "generating models/generated/test-yolov4.onnx"
    .venv/bin/python models/make_test_model.py
  else
    say "test model already generated"
  fi
fi

# 4. (--test) ONNX Runtime libraries of other versions and architectures, for the tests that
#    run `edge-agent detect` on each: the C library is taken out of the PyPI wheel (pip only
#    downloads; nothing is installed into a Python). .ort/onnxruntime-VERSION-ARCH/
fetch_ort() { # fetch_ort VERSION ARCH PLATFORM
  local v=$1 arch=$2 plat=$3 dir=.ort/onnxruntime-$1-$2 tmp
  if [ -f "$dir/libonnxruntime.so.$v" ]; then
    say "ONNX Runtime $v ($arch) already in $dir"
    return
  fi
  say "fetching ONNX Runtime $v ($arch) into $dir"
  tmp=$(mktemp -d)
  .venv/bin/pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --platform "$plat" --python-version 3.11 -d "$tmp" "onnxruntime==$v"
  mkdir -p "$dir"
  .venv/bin/python - "$tmp"/onnxruntime-*.whl "$dir" <<'PY'
import os, sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        base = os.path.basename(n)
        if n.startswith("onnxruntime/capi/") and base.startswith("libonnxruntime"):
            with z.open(n) as src, open(os.path.join(out, base), "wb") as dst:
                dst.write(src.read())
PY
  rm -rf "$tmp"
  [ -f "$dir/libonnxruntime.so.$v" ] || { say "no libonnxruntime.so.$v in the $v wheel" >&2; exit 1; }
}
if [ "$want_test" = 1 ]; then
  fetch_ort "$ORT_OLD_VERSION" x86_64 manylinux_2_28_x86_64
  # For the aarch64 build under qemu (Debian 11 root, glibc 2.31: manylinux_2_28 loads).
  fetch_ort "$ORT_OLD_VERSION" aarch64 manylinux_2_28_aarch64
fi

# 5. Rust: the aarch64 target for cross builds.
if command -v rustup >/dev/null; then
  if rustup target list --installed | grep -q aarch64-unknown-linux-gnu; then
    say "Rust target aarch64-unknown-linux-gnu already installed"
  else
    say "adding Rust target aarch64-unknown-linux-gnu"
    rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1 || say "could not add the aarch64 target (offline?); cross builds will not work"
  fi
else
  say "rustup not found: install Rust from https://rustup.rs first" >&2
  exit 1
fi
say "done"
