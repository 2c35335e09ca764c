"""The graph side of row-wise int8 (int8.py): a quantization plan per MatMul and the nodes that
compute it with MatMulIntegerToFloat, attention split into its projections, and the opset upgrade."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .optimize import int8_per_column

# QuantizeLinear with block_size (one scale per row) needs opset 21.
OPSET = 21


# Reductions that took `axes` as an attribute before opset 18 and take it as an input since.
AXES_TO_INPUT = {"ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
                  "ReduceProd", "ReduceSumSquare"}  # fmt: skip


# A MatMul this narrow gains nothing from int8 and loses precision (bge-m3's sparse head is 1024 x 1).
MIN_DIM = 16


def smoothing(act_max: np.ndarray, w: np.ndarray, alpha: float) -> np.ndarray:
    """SmoothQuant's per-input-channel factor: divides X's channel, multiplies W's row."""
    w_max = np.abs(w).max(axis=1)
    s = np.power(np.maximum(act_max, 1e-5), alpha) / np.power(np.maximum(w_max, 1e-5), 1 - alpha)
    return np.clip(s, 1e-3, 1e3).astype(np.float32)


@dataclass
class Plan:
    """How one MatMul is quantized: the values both the graph and the error estimate use."""

    wq: np.ndarray  # int8 [K, N]
    ws: np.ndarray  # float [N]
    inv_s: np.ndarray | None  # float [K]: SmoothQuant division, None when not applied
    shift: np.ndarray | None  # float [K]: added after the division (unsigned quantization)
    correction: np.ndarray | None = field(default=None)  # float [N]: shift @ W, subtracted after
    folded_inv_s: np.ndarray | None = field(default=None)  # [K]: division folded upstream (into V)
    alpha: float | None = field(default=None)  # SmoothQuant strength, None when not smoothed

    @classmethod
    def make(cls, w: np.ndarray, act_max: np.ndarray | None, alpha: float, lower: float | None) -> Plan:
        inv_s = None
        if act_max is not None:
            s = smoothing(act_max, w, alpha)
            w, inv_s = w * s[:, None], (1 / s).astype(np.float32)
        wq, ws = int8_per_column(w)
        if lower is None:
            return cls(wq, ws, inv_s, None)
        shift = np.full(w.shape[0], -lower, np.float32) * (inv_s if inv_s is not None else 1)
        return cls(wq, ws, inv_s, shift.astype(np.float32), (shift @ (wq.astype(np.float32) * ws)).astype(np.float32))

    def simulate(self, x: np.ndarray) -> np.ndarray:
        """What the rewritten graph computes for rows ``x`` [R, K] (numpy, for error estimates)."""
        if self.folded_inv_s is not None:
            x = x * self.folded_inv_s
        if self.inv_s is not None:
            x = x * self.inv_s
        if self.shift is not None:
            x = x + self.shift
            r = np.maximum(x.max(axis=1, keepdims=True), 1e-30) / 255
            q = np.clip(np.rint(x / r), 0, 255)
        else:
            r = np.maximum(np.abs(x).max(axis=1, keepdims=True), 1e-30) / 127
            q = np.clip(np.rint(x / r), -127, 127)
        y = (q @ self.wq.astype(np.float32)) * r * self.ws
        return y - self.correction if self.correction is not None else y


class Graph:
    """The graph being rewritten: initializers by name, consumers, fresh names."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.graph = model.graph
        self.init = {i.name: i for i in self.graph.initializer}
        self.consumers: dict[str, int] = {}
        for n in self.graph.node:
            for x in n.input:
                self.consumers[x] = self.consumers.get(x, 0) + 1
        self._n = 0

    def weight(self, name: str) -> np.ndarray | None:
        t = self.init.get(name)
        if t is None or t.data_type != TensorProto.FLOAT:
            return None
        return numpy_helper.to_array(t).copy()

    def const(self, array: np.ndarray, hint: str) -> str:
        self._n += 1
        name = f"{hint}_q{self._n}"
        t = numpy_helper.from_array(array, name)
        self.graph.initializer.append(t)
        self.init[name] = t
        return name

    def set(self, name: str, value: np.ndarray) -> None:
        self.init[name].CopyFrom(numpy_helper.from_array(value.astype(np.float32), name))

    def drop_unused(self, name: str) -> None:
        self.consumers[name] -= 1
        if self.consumers[name] == 0 and name in self.init:
            self.graph.initializer.remove(self.init.pop(name))


def rowwise_matmul(g: Graph, x: str, plan: Plan, out: str, base: str) -> list[onnx.NodeProto]:
    """Nodes computing ``out = x @ W`` (before ``plan.correction``) with row-wise int8 activations."""
    k = plan.wq.shape[0]
    t = f"{base}/rowq"
    nodes: list[onnx.NodeProto] = []
    if plan.inv_s is not None:
        nodes.append(helper.make_node("Mul", [x, g.const(plan.inv_s, "smooth")], [f"{t}/xs"], name=f"{t}/Smooth"))
        x = f"{t}/xs"
    if plan.shift is not None:
        nodes.append(helper.make_node("Add", [x, g.const(plan.shift, "shift")], [f"{t}/xp"], name=f"{t}/Shift"))
        x, amax_of, levels = f"{t}/xp", f"{t}/xp", 255.0
    else:
        nodes.append(helper.make_node("Abs", [x], [f"{t}/abs"], name=f"{t}/Abs"))
        amax_of, levels = f"{t}/abs", 127.0
    axes = g.const(np.array([-1], np.int64), "axes")
    nodes += [
        helper.make_node("ReduceMax", [amax_of, axes], [f"{t}/amax"], name=f"{t}/ReduceMax"),
        # an all-zero row gets r = 0: whatever it quantizes to, the kernel multiplies its output row by 0
        helper.make_node("Mul", [f"{t}/amax", g.const(np.array(1 / levels, np.float32), "lev")], [f"{t}/r"]),
    ]
    q_inputs, mm_zp = [x, f"{t}/r"], []
    if plan.shift is None:
        # symmetric int8 carried as uint8 + 128: u8 x s8 is the fast integer GEMM on x86
        nodes += [
            helper.make_node("Shape", [f"{t}/r"], [f"{t}/rshape"]),
            helper.make_node("Expand", [g.const(np.array(128, np.uint8), "zp"), f"{t}/rshape"], [f"{t}/zp"]),
        ]
        q_inputs.append(f"{t}/zp")
        mm_zp = [g.const(np.array(128, np.uint8), "zp")]
    nodes += [
        helper.make_node("QuantizeLinear", q_inputs, [f"{t}/xq"], name=f"{t}/QuantizeLinear", axis=-1, block_size=k),
        helper.make_node(
            "MatMulIntegerToFloat",
            # a_scale r [..., 1]: the kernel scales each output row by it
            [f"{t}/xq", g.const(plan.wq, "wq"), f"{t}/r", g.const(plan.ws, "ws"), *mm_zp],
            [out],
            name=f"{t}/MatMulIntegerToFloat",
            domain="com.microsoft",
        ),
    ]
    return nodes


def attention_nodes(g: Graph, node: onnx.NodeProto, plan: Plan) -> list[onnx.NodeProto]:
    """ONNX Runtime Attention -> row-wise int8 Q, K, V projections + MultiHeadAttention."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if set(attrs) - {"num_heads", "mask_filter_value", "scale"} or len(node.input) > 4 or plan.wq.shape[1] % 3:
        return []  # past state, relative bias, unidirectional...: not an encoder's attention
    base = node.name or node.output[0]
    d = plan.wq.shape[1] // 3
    bias = node.input[2] if len(node.input) > 2 else ""
    mask = node.input[3] if len(node.input) > 3 else ""
    # one quantization of the input, three GEMMs writing q, k and v where MultiHeadAttention reads
    # them (a packed QKV GEMM would need a Split copy: 3.5% of MiniLM's int8 operator time)
    nodes: list[onnx.NodeProto] = []
    for i, part in enumerate("qkv"):
        cols = slice(i * d, (i + 1) * d)
        sub = Plan(np.ascontiguousarray(plan.wq[:, cols]), plan.ws[cols], plan.inv_s, plan.shift)
        if i == 0:
            nodes = rowwise_matmul(g, node.input[0], sub, f"{base}/q", base)
            first = nodes[-1]
            continue
        inputs = [first.input[0], g.const(sub.wq, "wq"), first.input[2], g.const(sub.ws, "ws"), *first.input[4:]]
        nodes.append(
            helper.make_node(
                "MatMulIntegerToFloat",
                inputs,
                [f"{base}/{part}"],
                name=f"{base}/{part}/MatMulIntegerToFloat",
                domain="com.microsoft",
            )
        )
    return [
        *nodes,
        helper.make_node(
            "MultiHeadAttention",
            [f"{base}/q", f"{base}/k", f"{base}/v", bias, mask],
            list(node.output),
            name=f"{base}/MultiHeadAttention",
            domain="com.microsoft",
            **attrs,
        ),
    ]


def upgrade_opset(model: onnx.ModelProto) -> None:
    """Raise the default-domain opset to 21, moving the reductions' `axes` attribute to an input."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            if imp.version >= OPSET:
                return
            imp.version = OPSET
    for i, node in enumerate(model.graph.node):
        axes = next((a for a in node.attribute if a.name == "axes"), None)
        if node.domain in ("", "ai.onnx") and node.op_type in AXES_TO_INPUT and axes is not None:
            name = f"{node.name or node.op_type}_axes_{i}"
            model.graph.initializer.append(numpy_helper.from_array(np.array(list(axes.ints), np.int64), name))
            node.attribute.remove(axes)
            node.input.append(name)


def load_graph(path: Path) -> onnx.ModelProto:
    return onnx.load(str(path), load_external_data=True)


def weight_nodes(path: Path) -> list[str]:
    """Nodes the row-wise scheme turns to int8 (MatMul by a weight matrix, Attention), in order."""
    return weight_nodes_of(onnx.load(str(path), load_external_data=False))


def weight_nodes_of(model: onnx.ModelProto) -> list[str]:
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}

    def wide(name: str) -> bool:
        s = shapes.get(name, ())
        return len(s) == 2 and min(s) >= MIN_DIM

    return [
        n.name
        for n in model.graph.node
        if (n.op_type == "MatMul" and wide(n.input[1]) and n.input[0] not in shapes)
        or (n.op_type == "Attention" and n.domain == "com.microsoft" and wide(n.input[1]))
    ]


def fold_correction(g: Graph, out: str, correction: np.ndarray) -> list[onnx.NodeProto]:
    """Subtract ``correction`` from ``out``: inside the bias of the SkipLayerNormalization that
    consumes it (exact and free) when there is one, else with a Sub (the MatMul then writes
    ``<out>/uncorrected``)."""
    users = [n for n in g.graph.node if out in n.input]
    if len(users) == 1 and users[0].op_type == "SkipLayerNormalization" and len(users[0].input) > 4:
        old = users[0].input[4]
        bias = g.weight(old)
        if bias is not None and g.consumers.get(old) == 1:
            users[0].input[4] = g.const((bias - correction).astype(np.float32), "bias")
            g.drop_unused(old)
            return []
    return [helper.make_node("Sub", [f"{out}/uncorrected", g.const(correction, "corr")], [out])]
