#!/usr/bin/env python3
"""Write the clip tests/stationary.rs serves: a real road camera with a synthetic object
that comes in, stops, stands, and is gone.

What is real and what is not: every pixel but the object's comes from a real fixed
camera, CDnet's `highway` (tests/data/realcam/highway-dev/highway-dev.mp4, 320x240,
cars driving down a road, trees and their shadows at the left), played forward, then
backward, and so on (no cut), at 10 fps, for 260 s (a test on a slow machine must not
see the clip end and start again). The object is synthetic: a pure red
32x32 square, the one colour the generated test model (models/make_test_model.py) finds,
as `fire`; none of the real frames has a pixel it would call fire. It moves down the
gravel strip at the right edge of the road (x 286..318), stops, stands, and vanishes:

  0 s .. APPEAR        no object
  APPEAR .. STOP       it comes in from the top edge down to y = STOP_Y
  STOP .. GONE         it stands at y = STOP_Y
  GONE ..              no object

The test masks motion over the road (x < 0.85 of the width), so real traffic does not
escalate frames and only the object's own movement does; the stream is still the real
one, with its compression noise, light and cars, and the detector sees all of it.

Usage: stationary_clip.py OUT.avi   (Motion-JPEG, quality 95; frame count on stdout)
"""

import os
import sys

import cv2

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "..", "tests", "data", "realcam", "highway-dev", "highway-dev.mp4")
FPS = 10
APPEAR, STOP, GONE, END = 5.0, 8.0, 128.0, 260.0
SIZE = 32
X = 286
STOP_Y = 110
RED_BGR = (0, 0, 255)


def real_frames():
    cap = cv2.VideoCapture(SOURCE)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    if not frames:
        sys.exit(f"no frames in {SOURCE}")
    # 30 fps source to 10: every third frame.
    return frames[::3]


def object_y(t):
    """The square's top edge at t seconds, or None when it is not in view."""
    if t < APPEAR or t >= GONE:
        return None
    if t >= STOP:
        return STOP_Y
    start = -SIZE
    return int(start + (STOP_Y - start) * (t - APPEAR) / (STOP - APPEAR))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    src = real_frames()
    # Forward, backward, forward...: as long as needed, without a cut.
    loop = src + src[-2:0:-1]
    h, w = src[0].shape[:2]
    out = cv2.VideoWriter(sys.argv[1], cv2.VideoWriter_fourcc(*"MJPG"), FPS, (w, h))
    out.set(cv2.VIDEOWRITER_PROP_QUALITY, 95)
    n = int(END * FPS)
    for i in range(n):
        f = loop[i % len(loop)].copy()
        y = object_y(i / FPS)
        if y is not None:
            top, bottom = max(y, 0), min(y + SIZE, h)
            if bottom > top:
                f[top:bottom, X : X + SIZE] = RED_BGR
        out.write(f)
    out.release()
    print(n)


if __name__ == "__main__":
    main()
