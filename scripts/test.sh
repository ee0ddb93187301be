#!/usr/bin/env bash
# Runs every test: unit tests and the integration tests against real GStreamer, RabbitMQ,
# Mosquitto, the embedded broker and ONNX Runtime. Expects scripts/setup.sh --test first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/brokers.sh
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(ls "$PWD"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -n1)}
export EDGE_AGENT_PYTHON=${EDGE_AGENT_PYTHON:-$PWD/.venv/bin/python}
exec cargo test --workspace "$@"
