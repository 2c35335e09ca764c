"""Graph queries and calibration for the static QDQ scheme (qdq.py): which GEMMs take int8, and one
pass over the caller's batches keeping per-channel extremes over real tokens (and BMM histograms)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .optimize import cpu_session

# A GEMM this small gains nothing from int8 (a reranker's 384 x 1 classifier stays fp32).
MIN_DIM = 16
HIST_BINS = 4096

# ---------------------------------------------------------------------------------------------
# graph queries


def node_attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def float_dims(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Shapes of the float initializers, also under the names Identity nodes give them (the
    exporter ties a weight shared by two layers that way)."""
    dims = {i.name: tuple(i.dims) for i in model.graph.initializer if i.data_type == TensorProto.FLOAT}
    for n in model.graph.node:
        if n.op_type == "Identity" and n.input[0] in dims:
            dims[n.output[0]] = dims[n.input[0]]
    return dims


def is_weight_gemm(node: onnx.NodeProto, dims: dict[str, tuple[int, ...]]) -> bool:
    """``activation @ weight`` with a 2-D float initializer weight of at least MIN_DIM each way."""
    if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2 or node.input[0] in dims:
        return False
    w = dims.get(node.input[1])
    if w is None or len(w) != 2 or min(w) < MIN_DIM:
        return False
    return not (node.op_type == "Gemm" and node_attrs(node).get("transA", 0))


def transposed(node: onnx.NodeProto) -> bool:
    """A Gemm reading its weight as [N, K]."""
    return node.op_type == "Gemm" and bool(node_attrs(node).get("transB", 0))


def weight_gemms(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    dims = float_dims(model)
    return [n for n in model.graph.node if is_weight_gemm(n, dims)]


def bmm_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """MatMuls of two activations (attention Q.K^T and P.V)."""
    consts = {i.name for i in model.graph.initializer} | set(float_dims(model))
    consts |= {n.output[0] for n in model.graph.node if n.op_type == "Constant"}
    return [n for n in model.graph.node if n.op_type == "MatMul" and not any(x in consts for x in n.input)]


def weight_nodes(path: Path) -> list[str]:
    """Names of the weight GEMMs this scheme quantizes (the candidates for ``exclude``), in order."""
    model = onnx.load(str(path), load_external_data=False)
    dims = float_dims(model)
    return [n.name for n in model.graph.node if is_weight_gemm(n, dims)]


def float_consts(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Float constants by tensor name: initializers and Constant nodes."""
    out = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer if i.data_type == TensorProto.FLOAT}
    for n in model.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            if n.attribute[0].t.data_type == TensorProto.FLOAT:
                out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        elif n.op_type == "Identity" and n.input[0] in out:
            out[n.output[0]] = out[n.input[0]]
    return out


# ---------------------------------------------------------------------------------------------
# calibration


class Histogram:
    """Counts of |x| in equal bins over [0, width * bins). When a value falls past the end,
    adjacent bins merge pairwise (the width doubles), so no count is ever re-estimated."""

    def __init__(self, bins: int = HIST_BINS) -> None:
        self.counts = np.zeros(bins, np.int64)
        self.width = 0.0
        self.amax = 0.0

    def add(self, x: np.ndarray) -> None:
        a = np.abs(x.ravel())
        if a.size == 0:
            return
        top = float(a.max())
        self.amax = max(self.amax, top)
        n = len(self.counts)
        if self.width == 0.0:
            if top == 0.0:
                self.counts[0] += a.size
                return
            self.width = top / n * 1.0001
        while top >= self.width * n:
            self.counts = np.concatenate([self.counts.reshape(-1, 2).sum(axis=1), np.zeros(n // 2, np.int64)])
            self.width *= 2
        idx = (a * np.float32(1.0 / self.width)).astype(np.int32)
        np.minimum(idx, n - 1, out=idx)
        self.counts += np.bincount(idx, minlength=n)

    def percentile(self, p: float) -> float:
        c = np.cumsum(self.counts)
        if c[-1] == 0:
            return 0.0
        return min((int(np.searchsorted(c, c[-1] * p / 100.0)) + 1) * self.width, self.amax)


class Extremes:
    """Per-channel minimum and maximum of token rows [n, C]."""

    def __init__(self, channels: int) -> None:
        self.lo = np.full(channels, np.inf, np.float32)
        self.hi = np.full(channels, -np.inf, np.float32)
        self.rows = 0

    def add(self, rows: np.ndarray) -> None:
        if rows.shape[0]:
            np.minimum(self.lo, rows.min(axis=0), out=self.lo)
            np.maximum(self.hi, rows.max(axis=0), out=self.hi)
            self.rows += rows.shape[0]

    def amax(self, shift: np.ndarray | float = 0.0) -> np.ndarray:
        if not self.rows:
            return np.zeros_like(self.lo)
        return np.maximum(np.abs(self.hi - shift), np.abs(self.lo - shift))


@dataclass
class Input:
    """One GEMM input's ranges at position 0 (the [CLS] sink) and at the other real tokens."""

    layout: tuple[str, ...]
    sink: Extremes
    body: Extremes

    def shift(self) -> np.ndarray | None:
        """The constant taken off position 0 (the middle of its range), when position 0 sets the
        range and the tensor is [batch, sequence, channels]."""
        if self.layout != ("b", "s", "") or not self.sink.rows or not self.body.rows:
            return None
        if float(self.sink.amax().max()) <= float(self.body.amax().max()):
            return None
        return ((self.sink.hi + self.sink.lo) / 2).astype(np.float32)

    def amax(self, m0: np.ndarray | None) -> np.ndarray:
        return np.maximum(self.body.amax(), self.sink.amax(0.0 if m0 is None else m0))


def calibration_session(model: onnx.ModelProto) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return cpu_session(model, so)


def input_layouts(sess: Any, names: list[str], sample: dict[str, np.ndarray]) -> dict[str, tuple[str, ...]]:
    """Which axis of each tensor is the batch ("b"), the sequence ("s"), or batch*sequence
    flattened ("t"), from two small runs of distinct shapes (2 x 13 and 3 x 11 tokens)."""
    runs = []
    for b, s in ((2, 13), (3, 11)):
        feeds = {
            k: v[np.arange(b) % v.shape[0]][:, np.arange(s) % v.shape[1]] if v.ndim == 2 else v
            for k, v in sample.items()
        }
        if "attention_mask" in feeds:
            feeds["attention_mask"] = np.ones_like(feeds["attention_mask"])
        runs.append(sess.run(names, feeds))
    kinds = {(2, 3): "b", (13, 11): "s", (26, 33): "t"}
    return {
        name: tuple(kinds.get(d, "") for d in zip(runs[0][j].shape, runs[1][j].shape, strict=True))
        for j, name in enumerate(names)
    }


def token_rows(x: np.ndarray, layout: tuple[str, ...], mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """x at the real tokens as rows [n, C] (C the last axis), and which rows are at position 0.
    Without a recognisable token axis (or a mask): every row, none at position 0."""
    if mask is not None and layout in (("b", "s", ""), ("t", "")):
        m = mask.astype(bool)
        first = np.zeros(m.shape, bool)
        first[:, 0] = True
        rows = x[m] if layout[0] == "b" else x[m.ravel()]
        return rows, first[m]
    rows = x.reshape(-1, x.shape[-1])
    return rows, np.zeros(rows.shape[0], bool)


def calibrate(
    model: onnx.ModelProto, inputs: list[str], hist_names: list[str], calibration: list[dict[str, np.ndarray]]
) -> tuple[dict[str, Input], dict[str, Histogram]]:
    """One pass over the batches with the named tensors exposed as graph outputs; what is kept
    is per channel (extremes) or per tensor (histograms), never the activations."""
    names = sorted({*inputs, *hist_names})
    aug = onnx.ModelProto()
    aug.CopyFrom(model)
    del aug.graph.output[:]
    aug.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names)
    sess = calibration_session(aug)
    del aug
    layouts = input_layouts(sess, names, calibration[0])
    stats: dict[str, Input] = {}
    hists = {n: Histogram() for n in hist_names}
    for feeds in calibration:
        mask = feeds.get("attention_mask")
        for name, x in zip(names, sess.run(names, feeds), strict=True):
            rows, first = token_rows(x, layouts[name], mask)
            if name in hists:
                hists[name].add(rows)
            if name in inputs:
                if name not in stats:
                    c = rows.shape[1]
                    stats[name] = Input(layouts[name], Extremes(c), Extremes(c))
                stats[name].sink.add(rows[first])
                stats[name].body.add(rows[~first])
    return stats, hists
