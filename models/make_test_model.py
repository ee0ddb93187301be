#!/usr/bin/env python3
"""Write a small deterministic YOLOv4-layout ONNX model for tests and the demo.

The model has no learned weights: its classes are colour detectors, so what it finds
is predictable from the picture. With the input RGB scaled to 0..1, a pixel is
"active" for a class when the class's colour score exceeds 0.5:

  class 0 fire    red    R - G - B
  class 1 person  white  R + G + B - 2
  class 2 knife   blue   B - R - G

(labels in models/test.names). A bright red square on a dark background is therefore
detected as `fire` with a score of about 0.998 and a box on the square.

Layouts (both are what real YOLOv4 exports look like, see models/README.md):

  pytorch (default)  input `input` [N,3,S,S]; outputs `boxes` [N,K,1,4] and `confs`
                     [N,K,3], one candidate per class and 32x32 grid cell
                     (K = 3*(S/32)^2). A candidate's score is the sigmoid of
                     12*(colour score - 0.5) max-pooled over the cell; its box is the
                     extent of the class's active pixels within the cell and its 8
                     neighbours, so every cell touching a square up to 32 px reports
                     the same box (NMS keeps one).
  zoo                input `input_1:0` [N,S,S,3]; three raw heads [N,G,G,3,8] at strides
                     8, 16 and 32. Only the stride-32 head fires: its box is the cell
                     (x,y raw 0, w,h = log(32/anchor)), objectness 1 and class
                     probabilities the max-pooled class scores as above.

The batch dimension is dynamic (`batch`) unless --fixed-batch N is given.

Usage: python models/make_test_model.py [--layout pytorch|zoo] [--size 160] [-o PATH]
Default output: models/generated/test-yolov4.onnx (zoo: test-yolov4-zoo.onnx).
"""

import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
CLASSES = ["fire", "person", "knife"]
# Colour score = W @ rgb + B per class.
W = np.array([[1, -1, -1], [1, 1, 1], [-1, -1, 1]], np.float32)
B = np.array([0, -2, 0], np.float32)
SHARPNESS = 12.0
STRIDE = 32
ZOO_ANCHORS = [
    [(12, 16), (19, 36), (40, 28)],
    [(36, 75), (76, 55), (72, 146)],
    [(142, 110), (192, 243), (459, 401)],
]
ZOO_SCALE_XY = [1.2, 1.1, 1.05]


class G:
    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def const(self, arr):
        self.n += 1
        name = f"c{self.n}"
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def op(self, op_type, inputs, out=None, **attrs):
        self.n += 1
        out = out or f"{op_type.lower()}{self.n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out


def class_maps(g, x):
    """x [N,3,S,S] -> (scores [N,C,S,S] in 0..1, active [N,C,S,S] in {0,1})."""
    lin = g.op(
        "Conv",
        [x, g.const(W.reshape(len(CLASSES), 3, 1, 1)), g.const(B)],
        kernel_shape=[1, 1],
    )
    centred = g.op("Sub", [lin, g.const(np.float32(0.5))])
    scores = g.op("Sigmoid", [g.op("Mul", [centred, g.const(np.float32(SHARPNESS))])])
    active = g.op("Cast", [g.op("Greater", [lin, g.const(np.float32(0.5))])], to=TensorProto.FLOAT)
    return scores, active


def cell_max(g, t):
    return g.op("MaxPool", [t], kernel_shape=[STRIDE, STRIDE], strides=[STRIDE, STRIDE])


def window_max(g, t):
    """Max over the cell and its 8 neighbours, one value per cell."""
    return g.op(
        "MaxPool",
        [t],
        kernel_shape=[3 * STRIDE, 3 * STRIDE],
        strides=[STRIDE, STRIDE],
        pads=[STRIDE] * 4,
    )


def build(layout, size, fixed_batch):
    if size % STRIDE:
        raise SystemExit(f"--size must be a multiple of {STRIDE}")
    g = G()
    batch = fixed_batch if fixed_batch else "batch"
    grid = size // STRIDE
    k = grid * grid
    if layout == "pytorch":
        inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])
        x = "input"
    else:
        inp = helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, [batch, size, size, 3])
        x = g.op("Transpose", ["input_1:0"], perm=[0, 3, 1, 2])
    scores, active = class_maps(g, x)
    cell_scores = cell_max(g, scores)  # [N,C,G,G]
    conf = g.op("Reshape", [cell_scores, g.const(np.array([0, len(CLASSES), k], np.int64))])
    conf = g.op("Transpose", [conf], perm=[0, 2, 1])  # [N,K,C]
    outputs = []
    if layout == "pytorch":
        # One candidate per (class, cell): its box comes from that class's pixels only.
        c = len(CLASSES)
        xs = np.tile(np.arange(size, dtype=np.float32), (size, 1))[None, None]
        ys = xs.transpose(0, 1, 3, 2).copy()
        inv = g.op("Sub", [g.const(np.float32(1)), active])
        far = g.const(np.float32(size))

        def extent(coord):
            hi = window_max(g, g.op("Mul", [active, g.op("Add", [g.const(coord), g.const(np.float32(1))])]))
            lo_in = g.op("Add", [g.op("Mul", [active, g.const(coord)]), g.op("Mul", [inv, far])])
            lo = g.op("Neg", [window_max(g, g.op("Neg", [lo_in]))])
            return lo, hi  # [N,C,G,G] each

        x1, x2 = extent(xs)
        y1, y2 = extent(ys)
        parts = [g.op("Unsqueeze", [t, g.const(np.array([1], np.int64))]) for t in (x1, y1, x2, y2)]
        box = g.op("Concat", parts, axis=1)  # [N,4,C,G,G] pixels
        box = g.op("Div", [box, g.const(np.float32(size))])
        box = g.op("Reshape", [box, g.const(np.array([0, 4, c * k], np.int64))])
        box = g.op("Transpose", [box], perm=[0, 2, 1])
        g.op("Unsqueeze", [box, g.const(np.array([2], np.int64))], out="boxes")
        flat = g.op("Reshape", [cell_scores, g.const(np.array([0, c * k, 1], np.int64))])
        onehot = np.repeat(np.eye(c, dtype=np.float32), k, axis=0)  # [C*K, C]
        g.op("Mul", [flat, g.const(onehot)], out="confs")
        k = c * k
        outputs = [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [batch, k, 1, 4]),
            helper.make_tensor_value_info("confs", TensorProto.FLOAT, [batch, k, len(CLASSES)]),
        ]
    else:
        per = 5 + len(CLASSES)
        for h, stride in enumerate((8, 16, 32)):
            gsz = size // stride
            name = "Identity:0" if h == 0 else f"Identity_{h}:0"
            if stride != STRIDE:
                # Silent head: zero objectness. Shape [N,G,G,3,per] from the input's batch.
                zeros = g.op(
                    "Mul",
                    [
                        g.op(
                            "ReduceMax", [x], axes=[1, 2, 3], keepdims=1
                        ),  # [N,1,1,1]
                        g.const(np.float32(0)),
                    ],
                )
                zeros = g.op("Unsqueeze", [zeros, g.const(np.array([4], np.int64))])
                g.op("Add", [zeros, g.const(np.zeros((1, gsz, gsz, 3, per), np.float32))], out=name)
            else:
                # [N,K,C] -> [N,G,G,1,C] -> tiled over the 3 anchors.
                cls = g.op("Reshape", [conf, g.const(np.array([0, gsz, gsz, 1, len(CLASSES)], np.int64))])
                cls = g.op("Tile", [cls, g.const(np.array([1, 1, 1, 3, 1], np.int64))])
                raw = np.zeros((1, gsz, gsz, 3, 5), np.float32)
                for a, (aw, ah) in enumerate(ZOO_ANCHORS[h]):
                    raw[..., a, 2] = np.log(stride / aw)
                    raw[..., a, 3] = np.log(stride / ah)
                raw[..., 4] = 1.0  # objectness (already a probability in this layout)
                zeros = g.op("Mul", [g.op("ReduceMax", [cls], axes=[1, 2, 3, 4], keepdims=1), g.const(np.float32(0))])
                head = g.op("Add", [zeros, g.const(raw)])
                g.op("Concat", [head, cls], axis=4, out=name)
            outputs.append(
                helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, gsz, gsz, 3, per])
            )
    graph = helper.make_graph(g.nodes, "edge-agent-test-yolov4", [inp], outputs, g.inits)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edge-agent make_test_model"
    )
    model.ir_version = 8
    meta = {"yolo.layout": layout, "edge_agent.labels": ",".join(CLASSES)}
    if layout == "zoo":
        meta["yolo.anchors"] = ",".join(f"{w},{h}" for head in ZOO_ANCHORS for (w, h) in head)
        meta["yolo.scale_x_y"] = ",".join(str(s) for s in ZOO_SCALE_XY)
        meta["yolo.strides"] = "8,16,32"
    for key, value in meta.items():
        e = model.metadata_props.add()
        e.key, e.value = key, value
    onnx.checker.check_model(model)
    return model


def build_bad(variant, size):
    """Models that the worker must refuse: a grey input, or outputs of no YOLO layout."""
    g = G()
    if variant == "bad-input":
        inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, size, size])
        k = (size // STRIDE) ** 2
        pooled = g.op("MaxPool", ["input"], kernel_shape=[STRIDE, STRIDE], strides=[STRIDE, STRIDE])
        flat = g.op("Reshape", [pooled, g.const(np.array([1, k, 1], np.int64))])
        g.op("Tile", [flat, g.const(np.array([1, 1, 3], np.int64))], out="confs")
        g.op("Unsqueeze", [g.op("Tile", [flat, g.const(np.array([1, 1, 4], np.int64))]), g.const(np.array([2], np.int64))], out="boxes")
        outputs = [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, k, 1, 4]),
            helper.make_tensor_value_info("confs", TensorProto.FLOAT, [1, k, 3]),
        ]
    else:
        inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])
        pooled = g.op("GlobalAveragePool", ["input"])
        g.op("Reshape", [pooled, g.const(np.array([1, 3], np.int64))], out="logits")
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])]
    graph = helper.make_graph(g.nodes, f"edge-agent-{variant}", [inp], outputs, g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layout", choices=["pytorch", "zoo"], default="pytorch")
    ap.add_argument(
        "--variant",
        choices=["good", "bad-input", "unknown-layout"],
        default="good",
        help="bad-input / unknown-layout: models the worker must refuse (tests)",
    )
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--fixed-batch", type=int, default=0, help="fixed batch size (default: dynamic)")
    ap.add_argument("-o", "--output")
    a = ap.parse_args()
    out = a.output or os.path.join(
        HERE, "generated", "test-yolov4.onnx" if a.layout == "pytorch" else "test-yolov4-zoo.onnx"
    )
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    if a.variant == "good":
        model = build(a.layout, a.size, a.fixed_batch)
    else:
        if not a.output:
            ap.error("--variant needs -o")
        model = build_bad(a.variant, a.size)
    tmp = out + ".tmp"
    onnx.save(model, tmp)
    os.replace(tmp, out)  # tests run this concurrently: never leave a half-written file
    print(f"wrote {out} ({a.layout} layout, input {a.size}, classes {', '.join(CLASSES)})")


if __name__ == "__main__":
    main()
