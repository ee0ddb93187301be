#!/usr/bin/env bash
# Runs every test: unit tests and the integration tests against real GStreamer, RabbitMQ,
# Mosquitto, the embedded broker and ONNX Runtime. Expects scripts/setup.sh --test first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/brokers.sh
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(ls "$PWD"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n1)}
export EDGE_AGENT_PYTHON=${EDGE_AGENT_PYTHON:-$PWD/.venv/bin/python}
# A GStreamer RTSP test server can spin on a closed client socket under heavy parallel
# load and print the same GLib critical millions of times; keep the log readable.
set -o pipefail
cargo test --workspace "$@" 2>&1 | grep --line-buffered -v 'GLib-GIO-CRITICAL'
