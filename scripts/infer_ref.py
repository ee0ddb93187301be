#!/usr/bin/env python3
"""Reference YOLOv4 detection pipeline in numpy + onnxruntime, written from the layout
definitions (models/README.md), independent of the Rust code. Used by the differential
test (tests/infer.rs) and the benchmark (agent/benches/infer.rs).

Steps, as the worker does them: decode (cv2.imdecode for JPEG; binary PPM read with
numpy), letterbox or stretch (bilinear, pixel centres; cv2.resize or a numpy
implementation), pad with grey 128, channel order, scale, NCHW or NHWC, session.run,
decode the layout, per-class thresholds, class-aware greedy NMS, map to the frame.

Output: one JSON line per image: {"image", "width", "height", "detections": [{class_id,
score, x, y, w, h}], "timings": {...ms}}. With --repeat R each image runs R times after
one warm-up and a final JSON line {"summary": {...}} gives mean milliseconds per frame.
"""

import argparse
import json
import math
import sys
import time

import numpy as np
import onnxruntime as ort

PAD = 128
V4_ANCHORS = [[12, 16, 19, 36, 40, 28], [36, 75, 76, 55, 72, 146], [142, 110, 192, 243, 459, 401]]
V4_SCALE = [1.2, 1.1, 1.05]
TINY_ANCHORS = [[23, 27, 37, 58, 81, 82], [81, 82, 135, 169, 344, 319]]
TINY_SCALE = [1.05, 1.05]


def read_image(path):
    data = open(path, "rb").read()
    if data[:2] == b"P6":
        # Binary PPM: P6\n<w> <h>\n255\n<rgb bytes>
        parts = data.split(maxsplit=4)
        w, h = int(parts[1]), int(parts[2])
        rgb = np.frombuffer(parts[4][: w * h * 3], np.uint8).reshape(h, w, 3)
        return data, lambda d: rgb
    import cv2

    def dec(d):
        bgr = cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"{path}: not a decodable image")
        return bgr[:, :, ::-1]

    return data, dec


def resize_numpy(img, nw, nh):
    """Bilinear with pixel centres aligned (src = (dst + 0.5) * scale - 0.5), edges clamped."""
    h, w = img.shape[:2]
    def coords(n_out, n_in):
        s = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
        s = np.clip(s, 0, n_in - 1)
        i0 = np.floor(s).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, (s - i0)
    y0, y1, fy = coords(nh, h)
    x0, x1, fx = coords(nw, w)
    f = img.astype(np.float64)
    top = f[y0][:, x0] * (1 - fx)[None, :, None] + f[y0][:, x1] * fx[None, :, None]
    bot = f[y1][:, x0] * (1 - fx)[None, :, None] + f[y1][:, x1] * fx[None, :, None]
    out = top * (1 - fy)[:, None, None] + bot * fy[:, None, None]
    return np.floor(out + 0.5).clip(0, 255).astype(np.uint8)


def geometry(mode, w, h, W, H):
    if mode == "stretch":
        nw, nh = W, H
    else:
        s = min(W / w, H / h)
        nw = min(max(int(math.floor(w * s + 0.5)), 1), W)
        nh = min(max(int(math.floor(h * s + 0.5)), 1), H)
    return nw, nh, (W - nw) // 2, (H - nh) // 2


class Reference:
    def __init__(self, a):
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if a.threads:
            so.intra_op_num_threads = a.threads
        wanted = {
            "cpu": ["CPUExecutionProvider"],
            "cuda": [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"})],
            "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider"],
        }[a.provider]
        self.sess = ort.InferenceSession(a.model, so, providers=wanted)
        self.provider = self.sess.get_providers()[0]
        if a.provider != "cpu" and self.provider == "CPUExecutionProvider":
            sys.exit(f"infer_ref: provider {a.provider} did not start (got {self.sess.get_providers()})")
        inp = self.sess.get_inputs()[0]
        self.input_name = inp.name
        d = inp.shape
        self.nchw = d[1] == 3
        self.H, self.W = (d[2], d[3]) if self.nchw else (d[1], d[2])
        if not isinstance(self.H, int):
            self.H = self.W = a.size
        outs = self.sess.get_outputs()
        self.layout = "pytorch" if len(outs) == 2 and len(outs[0].shape) in (3, 4) else "zoo"
        meta = self.sess.get_modelmeta().custom_metadata_map
        if self.layout == "pytorch":
            self.boxes_i = 0 if len(outs[0].shape) == 4 else 1
            self.classes = outs[1 - self.boxes_i].shape[2]
        else:
            self.classes = outs[0].shape[4] - 5
            n = len(outs)
            order = sorted(range(n), key=lambda i: -outs[i].shape[1])
            if "yolo.anchors" in meta:
                flat = [float(x) for x in meta["yolo.anchors"].split(",")]
                per = [outs[i].shape[3] for i in order]
                anchors, k = [], 0
                for p in per:
                    anchors.append(flat[2 * k : 2 * (k + p)])
                    k += p
            else:
                anchors = V4_ANCHORS if n == 3 else TINY_ANCHORS
            if "yolo.scale_x_y" in meta:
                scales = [float(x) for x in meta["yolo.scale_x_y"].split(",")]
            else:
                scales = V4_SCALE if n == 3 else TINY_SCALE
            self.heads = [
                (i, np.array(anchors[r], np.float32).reshape(-1, 2), scales[r])
                for r, i in enumerate(order)
            ]
        th = np.full(self.classes, a.confidence, np.float32)
        for item in a.class_threshold or []:
            idx, val = item.split("=")
            th[int(idx)] = float(val)
        self.th = th
        self.a = a

    def preprocess(self, rgb):
        import cv2

        h, w = rgb.shape[:2]
        nw, nh, px, py = geometry(self.a.resize, w, h, self.W, self.H)
        if (nw, nh) != (w, h):
            if self.a.resize_impl == "cv2":
                rgb = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR)
            else:
                rgb = resize_numpy(rgb, nw, nh)
        canvas = np.full((self.H, self.W, 3), PAD, np.uint8)
        canvas[py : py + nh, px : px + nw] = rgb
        if self.a.channel_order == "bgr":
            canvas = canvas[:, :, ::-1]
        x = canvas.astype(np.float32) * np.float32(self.a.scale)
        x = x.transpose(2, 0, 1) if self.nchw else x
        return np.ascontiguousarray(x[None]), (w, h, nw / w, nh / h, px, py)

    def decode(self, outs):
        if self.layout == "pytorch":
            boxes = outs[self.boxes_i][0].reshape(-1, 4) * np.array(
                [self.W, self.H, self.W, self.H], np.float32
            )
            confs = outs[1 - self.boxes_i][0]
            cls = confs.argmax(1)
            score = confs[np.arange(len(cls)), cls]
            keep = score >= self.th[cls]
            return boxes[keep], score[keep], cls[keep]
        all_b, all_s, all_c = [], [], []
        for i, anchors, s in self.heads:
            o = outs[i][0]  # [G,G,A,5+C]
            gh, gw, na = o.shape[:3]
            sy, sx = self.H / gh, self.W / gw
            gy, gx = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
            sig = 1 / (1 + np.exp(-o[..., :2]))
            cx = (sig[..., 0] * s - 0.5 * (s - 1) + gx[:, :, None]) * sx
            cy = (sig[..., 1] * s - 0.5 * (s - 1) + gy[:, :, None]) * sy
            bw = np.exp(o[..., 2]) * anchors[None, None, :, 0]
            bh = np.exp(o[..., 3]) * anchors[None, None, :, 1]
            probs = o[..., 5:]
            cls = probs.argmax(-1)
            score = o[..., 4] * np.take_along_axis(probs, cls[..., None], -1)[..., 0]
            b = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
            keep = score >= self.th[cls]
            all_b.append(b[keep])
            all_s.append(score[keep])
            all_c.append(cls[keep])
        return np.concatenate(all_b), np.concatenate(all_s), np.concatenate(all_c)

    def nms(self, boxes, scores, classes):
        order = np.argsort(-scores, kind="stable")
        keep = []
        for i in order:
            ok = True
            for j in keep:
                if classes[j] != classes[i]:
                    continue
                b, k = boxes[i], boxes[j]
                iw = max(min(b[2], k[2]) - max(b[0], k[0]), 0)
                ih = max(min(b[3], k[3]) - max(b[1], k[1]), 0)
                inter = iw * ih
                union = (
                    max(b[2] - b[0], 0) * max(b[3] - b[1], 0)
                    + max(k[2] - k[0], 0) * max(k[3] - k[1], 0)
                    - inter
                )
                if union > 0 and inter / union > self.a.nms_iou:
                    ok = False
                    break
            if ok:
                keep.append(i)
        return keep

    def run(self, data, dec):
        t0 = time.perf_counter()
        rgb = dec(data)
        t1 = time.perf_counter()
        x, (w, h, sx, sy, px, py) = self.preprocess(rgb)
        t2 = time.perf_counter()
        outs = self.sess.run(None, {self.input_name: x})
        t3 = time.perf_counter()
        boxes, scores, classes = self.decode(outs)
        keep = self.nms(boxes, scores, classes)
        dets = []
        for i in keep:
            x1, y1, x2, y2 = boxes[i]
            x1 = min(max((x1 - px) / sx, 0), w)
            x2 = min(max((x2 - px) / sx, 0), w)
            y1 = min(max((y1 - py) / sy, 0), h)
            y2 = min(max((y2 - py) / sy, 0), h)
            if x2 - x1 > 0 and y2 - y1 > 0:
                dets.append(
                    {
                        "class_id": int(classes[i]),
                        "score": float(scores[i]),
                        "x": float(x1),
                        "y": float(y1),
                        "w": float(x2 - x1),
                        "h": float(y2 - y1),
                    }
                )
        t4 = time.perf_counter()
        ms = lambda a, b: (b - a) * 1e3
        timings = {
            "decode_ms": ms(t0, t1),
            "preprocess_ms": ms(t1, t2),
            "inference_ms": ms(t2, t3),
            "postprocess_ms": ms(t3, t4),
            "total_ms": ms(t0, t4),
        }
        return w, h, dets, timings


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--size", type=int, default=416, help="input side for dynamic models")
    ap.add_argument("--channel-order", choices=["rgb", "bgr"], default="rgb")
    ap.add_argument("--resize", choices=["letterbox", "stretch"], default="letterbox")
    ap.add_argument("--resize-impl", choices=["cv2", "numpy"], default="cv2")
    ap.add_argument("--scale", type=float, default=1 / 255)
    ap.add_argument("--confidence", type=float, default=0.4)
    ap.add_argument("--nms-iou", type=float, default=0.45)
    ap.add_argument("--class-threshold", action="append", help="CLASS_ID=THRESHOLD")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--provider", choices=["cpu", "cuda", "tensorrt"], default="cpu")
    ap.add_argument("--repeat", type=int, default=0, help="benchmark: runs per image after a warm-up")
    ap.add_argument("images", nargs="+")
    a = ap.parse_args()
    ref = Reference(a)
    inputs = [(p,) + read_image(p) for p in a.images]
    if a.repeat:
        ref.run(inputs[0][1], inputs[0][2])  # warm-up
        sums = {}
        totals, outside = [], []
        n = 0
        for _ in range(a.repeat):
            for _, data, dec in inputs:
                _, _, _, t = ref.run(data, dec)
                for k, v in t.items():
                    sums[k] = sums.get(k, 0.0) + v
                totals.append(t["total_ms"])
                outside.append(t["total_ms"] - t["inference_ms"])
                n += 1
        summary = {k: v / n for k, v in sums.items()}
        summary["outside_run_ms"] = summary["total_ms"] - summary["inference_ms"]
        # Medians resist the bursts of a shared machine better than means.
        summary["median_total_ms"] = float(np.median(totals))
        summary["median_outside_run_ms"] = float(np.median(outside))
        summary["frames"] = n
        summary["provider"] = ref.provider
        summary["per_frame"] = [
            [t, t - o] for t, o in zip(totals, outside)
        ]  # [total_ms, inference_ms] per frame
        print(json.dumps({"summary": summary}))
        return
    for path, data, dec in inputs:
        w, h, dets, t = ref.run(data, dec)
        print(json.dumps({"image": path, "width": w, "height": h, "detections": dets, "timings": t}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
