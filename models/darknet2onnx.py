#!/usr/bin/env python3
"""Convert a darknet YOLOv4 / YOLOv4-tiny network (.cfg + .weights) to ONNX.

Needs only numpy and onnx (no torch, no darknet). Two output layouts:

  pytorch  the pytorch-YOLOv4 export: input `input` [N,3,H,W] (RGB or BGR as trained,
           scaled to 0..1), outputs `boxes` [N,K,1,4] (x1,y1,x2,y2 normalised to the
           input size) and `confs` [N,K,C] (objectness x class probability).
  zoo      the ONNX model-zoo export: input `input_1:0` [N,H,W,3], one raw output per
           YOLO head [N,G,G,A,5+C]: x,y,w,h raw (the consumer decodes them with the
           anchors and scale_x_y), objectness and class probabilities already sigmoided.
           The anchors and scale_x_y are stored in the model metadata
           (`yolo.anchors`, `yolo.scale_x_y`, heads in stride order).

With --random-weights the network is built from the .cfg alone with seeded random
weights (for speed benchmarks and tests; the detections are meaningless).

Examples:
  python models/darknet2onnx.py models/cfg/yolov4-tiny.cfg my.weights -o my.onnx
  python models/darknet2onnx.py models/cfg/yolov4.cfg --random-weights --size 416 \\
      --layout zoo -o models/generated/yolov4-random-zoo.onnx
"""

import argparse
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13

# Random weights are calibrated like batch norm in training mode: a numpy forward pass
# over a batch of synthetic images at the model size rescales every conv so that its
# output channels have mean 0 and the layer std 1 (smaller calibration images do not
# do: border effects dominate the deep layers and the net explodes at full size). Without it activations explode or vanish over the
# 110 convs of YOLOv4. The head then gets small box offsets and an objectness prior
# that lets a few tens of boxes pass a 0.4 threshold, like a trained model on a busy
# scene, so that NMS costs what it costs in production.
HEAD_XYWH_STD = 0.5
HEAD_OBJ_STD = 2.0
HEAD_OBJ_BIAS = -3.0
HEAD_CLS_STD = 1.5


def np_conv(x, w, b, stride, pad):
    """x [N,C,H,W], w [F,C,k,k] -> [N,F,H',W'] (im2col + matmul)."""
    n, c, h, wd = x.shape
    f, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    ho = (h + 2 * pad - k) // stride + 1
    wo = (wd + 2 * pad - k) // stride + 1
    cols = np.empty((n, c, k, k, ho, wo), np.float32)
    for i in range(k):
        for j in range(k):
            cols[:, :, i, j] = xp[:, :, i : i + stride * ho : stride, j : j + stride * wo : stride]
    y = w.reshape(f, -1) @ cols.reshape(n, c * k * k, ho * wo)
    return (y + b[:, None]).reshape(n, f, ho, wo)


def calibration_batch(seed, n):
    """A few unlike images (blocks, noise, flat, ramps), like a batch for batch norm."""
    rng = np.random.default_rng(seed + 1)
    blocks = np.repeat(np.repeat(rng.random((3, n // 8, n // 8)), 8, axis=1), 8, axis=2)
    noise = rng.random((3, n, n))
    flat = np.full((3, n, n), 0.5) + 0.02 * rng.standard_normal((3, n, n))
    ramp = np.broadcast_to(np.linspace(0, 1, n)[None, None, :], (3, n, n)) * np.array(
        [1.0, 0.6, 0.2]
    )[:, None, None]
    return np.stack([blocks, noise, flat, ramp]).astype(np.float32)


def np_act(x, act):
    if act == "leaky":
        return np.where(x > 0, x, 0.1 * x)
    if act == "mish":
        return x * np.tanh(np.logaddexp(0, x))
    if act == "relu":
        return np.maximum(x, 0)
    if act == "logistic":
        return 1 / (1 + np.exp(-x))
    return x


def np_maxpool(x, k, stride, lo, hi):
    xp = np.pad(x, ((0, 0), (0, 0), (lo, hi), (lo, hi)), constant_values=-np.inf)
    ho = (xp.shape[2] - k) // stride + 1
    wo = (xp.shape[3] - k) // stride + 1
    out = np.full(x.shape[:2] + (ho, wo), -np.inf, np.float32)
    for i in range(k):
        for j in range(k):
            out = np.maximum(out, xp[:, :, i : i + stride * ho : stride, j : j + stride * wo : stride])
    return out


def parse_cfg(path):
    """Returns a list of (section type, {key: value}) in file order."""
    sections = []
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if line.startswith("["):
                if not line.endswith("]"):
                    raise ValueError(f"{path}:{lineno}: malformed section header {line!r}")
                sections.append((line[1:-1].strip(), {}))
            elif "=" in line:
                if not sections:
                    raise ValueError(f"{path}:{lineno}: key outside any section")
                k, v = line.split("=", 1)
                sections[-1][1][k.strip()] = v.strip()
            else:
                raise ValueError(f"{path}:{lineno}: cannot parse {line!r}")
    if not sections or sections[0][0] not in ("net", "network"):
        raise ValueError(f"{path}: the first section must be [net]")
    return sections


def ints(s):
    return [int(x) for x in s.split(",") if x.strip()]


def floats(s):
    return [float(x) for x in s.split(",") if x.strip()]


class WeightReader:
    """Reads darknet weights in file order; or makes seeded random ones."""

    def __init__(self, path, seed):
        self.pos = 0
        if path is None:
            self.data = None
            self.rng = np.random.default_rng(seed)
            return
        with open(path, "rb") as f:
            header = np.fromfile(f, dtype=np.int32, count=3)
            if header.size != 3:
                raise ValueError(f"{path}: too short for a darknet weights header")
            major, minor = int(header[0]), int(header[1])
            if major * 10 + minor >= 2 and major < 1000 and minor < 1000:
                np.fromfile(f, dtype=np.int64, count=1)
            else:
                np.fromfile(f, dtype=np.int32, count=1)
            self.data = np.fromfile(f, dtype=np.float32)
        self.path = path

    def take(self, n):
        if self.pos + n > self.data.size:
            raise ValueError(
                f"{self.path}: weights file too short ({self.data.size} floats) for this cfg"
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def conv(self, filters, c, size, bn):
        """Returns (weight [F,C,k,k], bias [F]) with batch norm folded in."""
        if self.data is None:
            fan_in = c * size * size
            w = self.rng.standard_normal((filters, c, size, size)).astype(np.float32)
            w /= np.sqrt(fan_in)
            return w, np.zeros(filters, np.float32)
        if bn:
            bias = self.take(filters)
            scale = self.take(filters)
            mean = self.take(filters)
            var = self.take(filters)
        else:
            bias = self.take(filters)
        w = self.take(filters * c * size * size).reshape(filters, c, size, size)
        if bn:
            k = scale / np.sqrt(var + 1e-5)
            w = w * k[:, None, None, None]
            bias = bias - mean * k
        return w.astype(np.float32), bias.astype(np.float32)

    def check_consumed(self):
        if self.data is not None and self.pos != self.data.size:
            print(
                f"warning: {self.data.size - self.pos} floats left over in the weights file "
                "(cfg and weights may not match)",
                file=sys.stderr,
            )


class Graph:
    def __init__(self):
        self.nodes = []
        self.inits = []
        self.n = 0

    def name(self, hint):
        self.n += 1
        return f"{hint}_{self.n}"

    def const(self, arr, hint="c"):
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def op(self, op_type, inputs, hint=None, out=None, **attrs):
        out = out or self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out


def activation(g, x, act):
    if act == "linear":
        return x
    if act == "leaky":
        return g.op("LeakyRelu", [x], alpha=0.1)
    if act == "mish":
        # x * tanh(softplus(x)); spelled out so that opset 13 runtimes (TensorRT) take it.
        return g.op("Mul", [x, g.op("Tanh", [g.op("Softplus", [x])])])
    if act == "relu":
        return g.op("Relu", [x])
    if act == "logistic":
        return g.op("Sigmoid", [x])
    raise ValueError(f"unsupported activation {act!r}")


def build(cfg_path, weights_path, size, layout, seed, classes_override=None):
    sections = parse_cfg(cfg_path)
    net = sections[0][1]
    size = size or int(net.get("width", 416))
    if size % 32:
        raise ValueError(f"input size must be a multiple of 32, got {size}")
    layers = sections[1:]
    reader = WeightReader(weights_path, seed)
    g = Graph()

    feeds_yolo = {i - 1 for i, (kind, _) in enumerate(layers) if kind == "yolo"}
    # Calibration activations (random weights only), parallel to `outs`.
    calib = weights_path is None
    if calib:
        xc = calibration_batch(seed, size)
    np_outs = []

    if layout == "zoo":
        inp_name = "input_1:0"
        inp = helper.make_tensor_value_info(inp_name, TensorProto.FLOAT, ["batch", size, size, 3])
        x = g.op("Transpose", [inp_name], perm=[0, 3, 1, 2])
    else:
        inp_name = "input"
        inp = helper.make_tensor_value_info(inp_name, TensorProto.FLOAT, ["batch", 3, size, size])
        x = inp_name

    outs = []  # (tensor, channels, spatial)
    cur, ch, sp = x, 3, size
    heads = []  # (stride, grid, anchors [(w,h)], scale_x_y, tensor)
    for i, (kind, p) in enumerate(layers):
        if kind == "convolutional":
            filters = int(p["filters"])
            k = int(p.get("size", 1))
            stride = int(p.get("stride", 1))
            pad = k // 2 if int(p.get("pad", 0)) else int(p.get("padding", 0))
            bn = int(p.get("batch_normalize", 0)) == 1
            w, b = reader.conv(filters, ch, k, bn)
            if calib:
                y = np_conv(xc, w, b, stride, pad)
                # One scale per layer: per-channel stds over the few positions of
                # the deep layers are too noisy.
                mean, std = y.mean(axis=(0, 2, 3)), float(y.std()) + 1e-6
                w = w / std
                b = (b - mean) / std
                if i in feeds_yolo:
                    per = 5 + int(layers[i + 1][1]["classes"])
                    scale = np.full(per, HEAD_CLS_STD, np.float32)
                    scale[:4] = HEAD_XYWH_STD
                    scale[4] = HEAD_OBJ_STD
                    scale = np.tile(scale, filters // per)
                    shift = np.zeros(per, np.float32)
                    shift[4] = HEAD_OBJ_BIAS
                    shift = np.tile(shift, filters // per)
                    w = w * scale[:, None, None, None]
                    b = b * scale + shift
                w, b = w.astype(np.float32), b.astype(np.float32)
                xc = np_act(np_conv(xc, w, b, stride, pad), p.get("activation", "logistic"))
            cur = g.op(
                "Conv",
                [cur, g.const(w, "w"), g.const(b, "b")],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[pad, pad, pad, pad],
            )
            cur = activation(g, cur, p.get("activation", "logistic"))
            ch = filters
            sp = (sp + 2 * pad - k) // stride + 1
        elif kind == "maxpool":
            k = int(p.get("size", p.get("stride", 1)))
            stride = int(p.get("stride", 1))
            padding = int(p.get("padding", k - 1))
            lo, hi = padding // 2, padding - padding // 2
            cur = g.op(
                "MaxPool",
                [cur],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[lo, lo, hi, hi],
            )
            sp = (sp + padding - k) // stride + 1
            if calib:
                xc = np_maxpool(xc, k, stride, lo, hi)
        elif kind == "route":
            idx = [j if j >= 0 else i + j for j in ints(p["layers"])]
            srcs = [outs[j] for j in idx]
            if len({s[2] for s in srcs}) != 1:
                raise ValueError(f"layer {i}: route joins different spatial sizes")
            groups = int(p.get("groups", 1))
            gid = int(p.get("group_id", 0))
            if len(srcs) == 1:
                cur, ch, sp = srcs[0]
            else:
                cur = g.op("Concat", [s[0] for s in srcs], axis=1)
                ch, sp = sum(s[1] for s in srcs), srcs[0][2]
            if calib:
                xc = np.concatenate([np_outs[j] for j in idx], axis=1)
            if groups > 1:
                part = ch // groups
                cur = g.op(
                    "Slice",
                    [
                        cur,
                        g.const(np.array([gid * part], np.int64)),
                        g.const(np.array([(gid + 1) * part], np.int64)),
                        g.const(np.array([1], np.int64)),
                    ],
                )
                ch = part
                if calib:
                    xc = xc[:, gid * part : (gid + 1) * part]
        elif kind == "shortcut":
            j = int(p["from"])
            j = j if j >= 0 else i + j
            cur = g.op("Add", [cur, outs[j][0]])
            cur = activation(g, cur, p.get("activation", "linear"))
            if calib:
                xc = np_act(xc + np_outs[j], p.get("activation", "linear"))
        elif kind == "upsample":
            s = int(p.get("stride", 2))
            cur = g.op(
                "Resize",
                [cur, "", g.const(np.array([1, 1, s, s], np.float32))],
                mode="nearest",
            )
            sp *= s
            if calib:
                xc = np.repeat(np.repeat(xc, s, axis=2), s, axis=3)
        elif kind == "yolo":
            mask = ints(p["mask"])
            anchors = ints(p["anchors"])
            pairs = [(anchors[2 * m], anchors[2 * m + 1]) for m in mask]
            ncls = classes_override or int(p["classes"])
            if int(p["classes"]) != ncls:
                raise ValueError("classes override does not match the cfg")
            sxy = float(p.get("scale_x_y", 1.0))
            if ch != len(mask) * (5 + ncls):
                raise ValueError(
                    f"layer {i}: yolo expects {len(mask) * (5 + ncls)} channels, got {ch}"
                )
            heads.append((size // sp, sp, pairs, sxy, cur, ncls))
        else:
            raise ValueError(f"layer {i}: unsupported section [{kind}]")
        outs.append((cur, ch, sp))
        if calib:
            np_outs.append(xc)
    reader.check_consumed()
    if not heads:
        raise ValueError(f"{cfg_path}: no [yolo] layer")

    outputs = []
    if layout == "pytorch":
        box_parts, conf_parts = [], []
        for stride, grid, pairs, sxy, t, ncls in heads:
            a, per, gg = len(pairs), 5 + ncls, grid * grid
            r = g.op("Reshape", [t, g.const(np.array([-1, a, per, gg], np.int64))])
            r = g.op("Transpose", [r], perm=[0, 1, 3, 2])
            r = g.op("Reshape", [r, g.const(np.array([-1, a * gg, per], np.int64))])

            def sl(lo, hi, r=r):
                return g.op(
                    "Slice",
                    [
                        r,
                        g.const(np.array([lo], np.int64)),
                        g.const(np.array([hi], np.int64)),
                        g.const(np.array([2], np.int64)),
                    ],
                )

            ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
            grid_xy = np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float32)  # [gg,2]
            grid_xy = np.tile(grid_xy, (a, 1))
            anc = np.repeat(np.array(pairs, np.float32) / size, gg, axis=0)
            xy = g.op("Sigmoid", [sl(0, 2)])
            xy = g.op("Mul", [xy, g.const(np.float32(sxy))])
            xy = g.op("Add", [xy, g.const(grid_xy - np.float32(0.5 * (sxy - 1)))])
            xy = g.op("Div", [xy, g.const(np.float32(grid))])
            wh = g.op("Mul", [g.op("Exp", [sl(2, 4)]), g.const(anc)])
            half = g.op("Mul", [wh, g.const(np.float32(0.5))])
            x1y1 = g.op("Sub", [xy, half])
            x2y2 = g.op("Add", [xy, half])
            box_parts.append(g.op("Concat", [x1y1, x2y2], axis=2))
            obj = g.op("Sigmoid", [sl(4, 5)])
            cls = g.op("Sigmoid", [sl(5, per)])
            conf_parts.append(g.op("Mul", [obj, cls]))
        boxes = g.op("Concat", box_parts, axis=1) if len(box_parts) > 1 else box_parts[0]
        g.op("Unsqueeze", [boxes, g.const(np.array([2], np.int64))], out="boxes")
        if len(conf_parts) > 1:
            g.op("Concat", conf_parts, axis=1, out="confs")
        else:
            g.op("Identity", conf_parts, out="confs")
        k = sum(len(h[2]) * h[1] * h[1] for h in heads)
        ncls = heads[0][5]
        outputs = [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", k, 1, 4]),
            helper.make_tensor_value_info("confs", TensorProto.FLOAT, ["batch", k, ncls]),
        ]
    else:
        for n, (stride, grid, pairs, sxy, t, ncls) in enumerate(
            sorted(heads, key=lambda h: h[0])
        ):
            a, per = len(pairs), 5 + ncls
            r = g.op("Reshape", [t, g.const(np.array([-1, a, per, grid, grid], np.int64))])
            r = g.op("Transpose", [r], perm=[0, 3, 4, 1, 2])
            raw = g.op(
                "Slice",
                [
                    r,
                    g.const(np.array([0], np.int64)),
                    g.const(np.array([4], np.int64)),
                    g.const(np.array([4], np.int64)),
                ],
            )
            rest = g.op(
                "Slice",
                [
                    r,
                    g.const(np.array([4], np.int64)),
                    g.const(np.array([per], np.int64)),
                    g.const(np.array([4], np.int64)),
                ],
            )
            name = "Identity:0" if n == 0 else f"Identity_{n}:0"
            g.op("Concat", [raw, g.op("Sigmoid", [rest])], axis=4, out=name)
            outputs.append(
                helper.make_tensor_value_info(
                    name, TensorProto.FLOAT, ["batch", grid, grid, a, per]
                )
            )

    graph = helper.make_graph(g.nodes, "yolov4", [inp], outputs, g.inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="edge-agent darknet2onnx",
    )
    model.ir_version = 8
    ordered = sorted(heads, key=lambda h: h[0])
    meta = {
        "yolo.layout": layout,
        "yolo.anchors": ",".join(f"{w},{h}" for hd in ordered for (w, h) in hd[2]),
        "yolo.scale_x_y": ",".join(str(hd[3]) for hd in ordered),
        "yolo.strides": ",".join(str(hd[0]) for hd in ordered),
        "yolo.source": "random weights" if weights_path is None else "darknet weights",
    }
    for k, v in meta.items():
        e = model.metadata_props.add()
        e.key, e.value = k, v
    onnx.checker.check_model(model)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cfg")
    ap.add_argument("weights", nargs="?", help="darknet .weights (omit with --random-weights)")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--layout", choices=["pytorch", "zoo"], default="pytorch")
    ap.add_argument("--size", type=int, default=0, help="input side (default: the cfg's width)")
    ap.add_argument("--random-weights", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if (a.weights is None) != a.random_weights:
        ap.error("give either a weights file or --random-weights")
    model = build(a.cfg, a.weights, a.size, a.layout, a.seed)
    onnx.save(model, a.output)
    print(f"wrote {a.output} ({a.layout} layout)")


if __name__ == "__main__":
    main()
