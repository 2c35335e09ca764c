"""Static int8 QDQ for TensorRT: symmetric int8 weights (per output channel) and activations
(per tensor, static scale, zero point 0), placed as NVIDIA's transformer guidance places them.

Placement. A Q/DQ pair goes on the input of each weight GEMM (attention Q, K, V and output
projections, FFN in and out; one pair per GEMM, the pattern TensorRT fuses into an int8 GEMM) and
nowhere else: GEMM outputs, LayerNorm, Softmax, GELU, the residual adds and the pooling tail stay
in floating point. The attention BMM inputs (Q.K^T, P.V) can be quantized too (``bmm=True``), but
on all-MiniLM-L6-v2 that takes the worst-text cosine to fp32 from 0.996 to 0.971, so it is off.
ONNX Runtime's ``quantize_static`` also quantizes every MatMul *output*. In BERT encoders the FFN
output before the residual add reaches 100-200 on a few tokens while 99.99 % of it is below 4;
one per-tensor scale there leaves the FFN a couple of int8 levels (MiniLM: worst cosine 0.60 with
output Q/DQ, 0.90 without, same calibration otherwise).

The GEMM inputs then have two kinds of outlier. Each gets a rewrite that is exact (the graph
computes the same function in fp32; only the int8 rounding sees the difference):

* Position 0 ([CLS], the attention sink) carries "massive activations": in MiniLM's first four
  layers a few of its channels sit at 14-30 while every other token stays below 6-15. They are the
  same for every text (within 0.8 across 364 texts), so they are a constant ``m0``: the
  position-0 row of such a GEMM input gets ``m0`` subtracted before the quantize, and ``m0 @ W``,
  computed in fp32 from the unquantized weight, is added to the GEMM's position-0 output row
  (``X @ W == (X - e0 m0) @ W + e0 (m0 @ W)``, ``e0`` the position-0 indicator). The range is
  then set by the real tokens, and the sink's constant part carries no rounding at all.
* A few channels are large on every token (a LayerNorm channel at 8-15 where the median channel
  peaks at 2). SmoothQuant moves them into the weights: ``(X / s) @ (diag(s) W) == X @ W`` with
  ``s_c = amax_x[c]^alpha / amax_w[c]^(1 - alpha)``. ``alpha`` is 0.8, not 1: at 1 every channel's
  range becomes exactly its calibration maximum, with no headroom, and texts outside the
  calibration set clip (MiniLM calibrated on half the texts, checked on the other half: worst
  cosine 0.989 at alpha 1, 0.996 at 0.8, although on the calibration texts 1 looks best).
  The division by ``s`` is folded into the op producing the input where that is exact:
  LayerNormalization's gamma and beta (on a copy of the LayerNorm when its output also feeds the
  residual), or a multiplication by a scalar constant (GELU's final ``* 0.5``); otherwise it is an
  explicit per-channel Mul, which TensorRT fuses into the quantize.

Calibration is TensorRT's "max" calibration, made to hold: one pass over the caller's batches (any
shapes) with the GEMM inputs exposed as outputs, keeping per channel the extremes over real
tokens, position 0 apart from the rest. Padded positions are left out (attention and pooling mask
them, so whatever they hold may clip). Memory is bounded by one batch. After the shift and the
smoothing nothing outlies, so the scale is the maximum; percentile (99.99 / 99.999), MSE and
entropy ranges were all worse than the maximum on MiniLM, because what they clip are the outlier
channels, which carry information. BMM inputs, when asked for, get the 99.99th percentile of a
histogram built in the same pass (Softmax output: 1).

Weights: symmetric int8 per output channel (DequantizeLinear with ``axis``), round to nearest.
(GPTQ-style rounding was tried: the mean cosine gains 0.0002, the worst text nothing, for an
X^T X per GEMM input in memory.)

Limit: only position 0 is treated as a sink. A model whose other tokens (a "." or [SEP]) grow
massive activations too keeps a wide range on those GEMM inputs; the caller's sensitivity search
then keeps the worst GEMMs in fp32 (``exclude``).
"""

from __future__ import annotations

import hashlib
import heapq
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .optimize import int8_per_column, save_model
from .qdq_calibrate import (
    Histogram,
    bmm_nodes,
    calibrate,
    float_consts,
    node_attrs,
    transposed,
    weight_gemms,
)

SCHEME = "static-qdq-int8"
# SmoothQuant migration strength: see the module docstring for why not 1.
ALPHA = 0.8
BMM_PERCENTILE = 99.99


# ---------------------------------------------------------------------------------------------
# the plan: shift, smoothing, scales, int8 weights


def _smoothing(x_amax: np.ndarray, w: np.ndarray, alpha: float | None) -> np.ndarray:
    """SmoothQuant's per-input-channel factors s for X / s and diag(s) W (ones without alpha)."""
    if alpha is None:
        return np.ones(w.shape[0], np.float32)
    x = x_amax.astype(np.float64)
    wm = np.abs(w).max(axis=1).astype(np.float64)
    x = np.maximum(x, 1e-3 * float(np.median(x)) + 1e-12)  # a channel silent in calibration
    wm = np.maximum(wm, 1e-3 * float(np.median(wm)) + 1e-12)
    s = np.power(x, alpha) / np.power(wm, 1 - alpha)
    return (s / np.exp(np.mean(np.log(s)))).astype(np.float32)  # the overall scale is free: keep it near 1


@dataclass
class _Plan:
    """How one GEMM input is quantized."""

    m0: np.ndarray | None  # subtracted from position 0
    s: np.ndarray | None  # smoothing: the input is divided by s
    scale: float  # the activation's int8 scale


@dataclass
class _Calibrated:
    plans: dict[str, _Plan]  # by GEMM input tensor
    weights: dict[str, tuple[np.ndarray, np.ndarray]]  # by GEMM: int8 [K, N] of diag(s) W, scale [N]
    restore: dict[str, np.ndarray]  # by GEMM: m0 @ W (fp32), added back at position 0
    hists: dict[str, Histogram]
    seconds: float


def _plan(
    model: onnx.ModelProto, calibration: list[dict[str, np.ndarray]], *, alpha: float | None, bmm: bool
) -> _Calibrated:
    start = time.perf_counter()
    gemms = weight_gemms(model)
    consts = float_consts(model)
    inputs = list(dict.fromkeys(n.input[0] for n in gemms))
    hist_names = sorted({x for n in bmm_nodes(model) for x in n.input}) if bmm else []
    stats, hists = calibrate(model, inputs, hist_names, calibration)
    plans: dict[str, _Plan] = {}
    weights: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    restore: dict[str, np.ndarray] = {}
    for x in inputs:
        users = [n for n in gemms if n.input[0] == x]
        ws = [consts[u.input[1]].T if transposed(u) else consts[u.input[1]] for u in users]  # [K, N]
        m0 = stats[x].shift()
        amax = stats[x].amax(m0)
        s = _smoothing(amax, np.concatenate(ws, axis=1), alpha)
        plans[x] = _Plan(m0, None if alpha is None else s, max(float((amax / s).max()), 1e-8) / 127.0)
        for u, w in zip(users, ws, strict=True):
            weights[u.name] = int8_per_column(w * s[:, None])
            if m0 is not None:
                restore[u.name] = (m0.astype(np.float64) @ w).astype(np.float32)
    return _Calibrated(plans, weights, restore, hists, time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------
# the rewrite


class _Rewriter:
    """Adds nodes and initializers to a graph under fresh names; ``finish`` orders them."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.graph = model.graph
        self.consts = float_consts(model)
        self.producer = {o: n for n in self.graph.node for o in n.output}
        self.names = {i.name for i in self.graph.initializer} | {i.name for i in self.graph.input} | set(self.producer)
        self.names |= {n.name for n in self.graph.node}
        self.added: list[onnx.NodeProto] = []
        self._first: str | None = None

    def fresh(self, name: str) -> str:
        k, out = 0, name
        while out in self.names:
            k += 1
            out = f"{name}_{k}"
        self.names.add(out)
        return out

    def const(self, array: np.ndarray, name: str) -> str:
        name = self.fresh(name)
        self.graph.initializer.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], name: str, out: str | None = None, **attrs: Any) -> str:
        """A new node; returns its (single) output, named ``out`` or after ``name``."""
        out = out or self.fresh(name)
        self.added.append(helper.make_node(op, inputs, [out], name=self.fresh(f"{name}/{op}"), **attrs))
        return out

    def divide(self, x: str, s: np.ndarray) -> str:
        """A tensor equal to x / s (per channel of the last axis), folded into x's producer where
        that is exact and cheap: LayerNormalization, a multiplication by a scalar constant."""
        inv = (1.0 / s).astype(np.float32)
        prod = self.producer.get(x)
        if prod is not None and prod.op_type == "LayerNormalization" and node_attrs(prod).get("axis", -1) == -1:
            gamma = self.consts.get(prod.input[1])
            beta = self.consts.get(prod.input[2]) if len(prod.input) > 2 and prod.input[2] else None
            if gamma is not None and gamma.shape == s.shape and (beta is None or beta.shape == s.shape):
                ins = [prod.input[0], self.const((gamma * inv).astype(np.float32), f"{prod.input[1]}/smoothed")]
                if beta is not None:
                    ins.append(self.const((beta * inv).astype(np.float32), f"{prod.input[2]}/smoothed"))
                out = self.fresh(f"{x}/smoothed")
                copy = helper.make_node("LayerNormalization", ins, [out], name=self.fresh(f"{prod.name}/smoothed"))
                copy.attribute.extend(prod.attribute)
                self.added.append(copy)
                return out
        if prod is not None and prod.op_type == "Mul":
            for i in (0, 1):
                c = self.consts.get(prod.input[i])
                if c is not None and c.size == 1:
                    k = self.const((c.reshape(()) * inv).astype(np.float32), f"{prod.input[i]}/smoothed")
                    return self.node("Mul", [prod.input[1 - i], k], f"{x}/smoothed")
        return self.node("Mul", [x, self.const(inv, f"{x}/smoothing")], f"{x}/smoothed")

    def first_position(self, like: str) -> str:
        """A float [S, 1] tensor, 1 at sequence position 0 and 0 elsewhere; S is read from the
        first [batch, sequence] graph input (else from ``like``, a [B, S, C] tensor)."""
        if self._first is None:
            rank2 = [i.name for i in self.graph.input if len(i.type.tensor_type.shape.dim) == 2]
            p = "qdq/position0"
            shape = self.node("Shape", [rank2[0] if rank2 else like], f"{p}/shape")
            one = self.const(np.array(1, np.int64), f"{p}/one")
            zero = self.const(np.array(0, np.int64), f"{p}/zero")
            length = self.node("Gather", [shape, one], f"{p}/length", axis=0)
            first = self.node(
                "Equal", [self.node("Range", [zero, length, one], f"{p}/positions"), zero], f"{p}/is_first"
            )
            flag = self.node("Cast", [first], f"{p}/flag", to=TensorProto.FLOAT)
            self._first = self.node("Unsqueeze", [flag, self.const(np.array([1], np.int64), f"{p}/axes")], p)
        return self._first

    def at_first(self, op: str, x: str, row: np.ndarray, like: str, out: str | None = None) -> str:
        """``x op e0 * row`` (op Sub or Add), e0 the position-0 indicator; ``like`` is a
        [B, S, C] tensor of the graph."""
        e0 = self.first_position(like)
        r = self.node("Mul", [e0, self.const(row.astype(np.float32), f"{like}/position0")], f"{like}/position0_row")
        return self.node(op, [x, r], f"{like}/position0_{op.lower()}", out=out)

    def qdq(self, x: str, scale: float) -> str:
        """Per-tensor symmetric int8 QuantizeLinear + DequantizeLinear of an activation, one pair
        per consumer: the pattern TensorRT fuses into an int8 GEMM (and NVIDIA's BERT graphs
        have), and the one ONNX Runtime's CPU provider runs as an integer MatMul."""
        s = self.const(np.array(scale, np.float32), f"{x}/scale")
        z = self.const(np.array(0, np.int8), f"{x}/zero_point")
        q = self.node("QuantizeLinear", [x, s, z], f"{x}/int8")
        return self.node("DequantizeLinear", [q, s, z], f"{x}/dequantized")

    def weight(self, gemm: onnx.NodeProto, q: np.ndarray, scale: np.ndarray) -> str:
        """An int8 weight (given [K, N], stored as the GEMM reads it) and its DequantizeLinear."""
        axis = 1
        if transposed(gemm):
            q, axis = np.ascontiguousarray(q.T), 0
        w = gemm.input[1]
        qn = self.const(q, f"{w}/int8")
        sn = self.const(scale, f"{w}/scale")
        zn = self.const(np.zeros(scale.shape, np.int8), f"{w}/zero_point")
        return self.node("DequantizeLinear", [qn, sn, zn], f"{w}/dequantized", axis=axis)

    def finish(self) -> None:
        """Put the new nodes in topological order (original order otherwise kept) and drop what
        nothing reads any more (a LayerNorm that was copied, the fp32 weights)."""
        nodes = [*self.graph.node, *self.added]
        made = {o: i for i, n in enumerate(nodes) for o in n.output}
        waiting = [sum(x in made for x in set(n.input)) for n in nodes]
        readers: dict[int, list[int]] = {}
        for i, n in enumerate(nodes):
            for x in set(n.input):
                if x in made:
                    readers.setdefault(made[x], []).append(i)
        ready = [i for i, w in enumerate(waiting) if w == 0]
        heapq.heapify(ready)
        order: list[int] = []
        while ready:
            i = heapq.heappop(ready)
            order.append(i)
            for j in readers.get(i, []):
                waiting[j] -= 1
                if waiting[j] == 0:
                    heapq.heappush(ready, j)
        if len(order) != len(nodes):
            raise RuntimeError("the QDQ rewrite left a cycle in the graph")
        live = {o.name for o in self.graph.output}
        kept = []
        for i in reversed(order):
            if any(o in live for o in nodes[i].output):
                kept.append(nodes[i])
                live.update(nodes[i].input)
        del self.graph.node[:]
        self.graph.node.extend(reversed(kept))
        inits = [i for i in self.graph.initializer if i.name in live]
        del self.graph.initializer[:]
        self.graph.initializer.extend(inits)


# ---------------------------------------------------------------------------------------------

# The last calibration (by graph and batches): a search that excludes nodes one by one pays only
# for the rewrite.
_CACHE: dict[str, _Calibrated] = {}


def _fingerprint(src: Path, calibration: list[dict[str, np.ndarray]], *options: object) -> str:
    h = hashlib.sha256(str(src.resolve()).encode())
    st = src.stat()
    h.update(f"{st.st_mtime_ns}:{st.st_size}:{options}".encode())
    for feeds in calibration:
        for k in sorted(feeds):
            h.update(f"{k}{feeds[k].shape}{feeds[k].dtype}".encode())
            h.update(np.ascontiguousarray(feeds[k]).tobytes())
    return h.hexdigest()


def quantize_qdq(
    src: Path,
    dst: Path,
    *,
    exclude: list[str],
    calibration: list[dict[str, np.ndarray]],
    alpha: float | None = ALPHA,
    bmm: bool = False,
) -> dict[str, Any]:
    """Write ``dst``: ``src`` with its weight GEMMs in static symmetric int8 QDQ (see the module
    docstring); returns what the manifest records about it.

    ``exclude``: weight GEMMs kept fp32 (names as :func:`weight_nodes` gives them).
    ``calibration``: the feeds of the calibration batches, any shapes; ``attention_mask`` marks
    the real tokens. ``alpha``: SmoothQuant's migration strength (None: no smoothing). ``bmm``:
    also quantize the attention BMM inputs. Graph inputs, outputs and dynamic axes are kept."""
    start = time.perf_counter()
    if not calibration:
        raise ValueError("static int8 needs calibration batches")
    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    key = _fingerprint(src, calibration, alpha, bmm)
    cal = _CACHE.get(key)
    cached = cal is not None
    if cal is None:
        cal = _plan(model, calibration, alpha=alpha, bmm=bmm)
        _CACHE.clear()
        _CACHE[key] = cal

    skip = set(exclude)
    gemms = [n for n in weight_gemms(model) if n.name not in skip]
    bmms = bmm_nodes(model) if bmm else []
    inputs = list(dict.fromkeys(n.input[0] for n in gemms))
    rw = _Rewriter(model)
    for x in inputs:
        plan = cal.plans[x]
        xs = x if plan.s is None else rw.divide(x, plan.s)
        if plan.m0 is not None:
            xs = rw.at_first("Sub", xs, plan.m0 if plan.s is None else plan.m0 / plan.s, x)
        for u in (n for n in gemms if n.input[0] == x):
            u.input[0] = rw.qdq(xs, plan.scale)
            u.input[1] = rw.weight(u, *cal.weights[u.name])
            if plan.m0 is not None:  # give position 0 back what the shift took: m0 @ W
                out = u.output[0]
                u.output[0] = rw.fresh(f"{out}/position0_shifted")
                rw.at_first("Add", u.output[0], cal.restore[u.name], out, out=out)
    if bmms:
        softmax = {o for n in model.graph.node if n.op_type == "Softmax" for o in n.output}
        for n in bmms:
            for i, x in enumerate(n.input):
                amax = 1.0 if x in softmax else cal.hists[x].percentile(BMM_PERCENTILE)
                n.input[i] = rw.qdq(x, max(amax, 1e-8) / 127.0)
    rw.finish()
    save_model(model, dst)
    plans = [cal.plans[x] for x in inputs]
    return {
        "scheme": SCHEME,
        "weights": "int8 symmetric, per output channel",
        "activations": "int8 symmetric, per tensor, static",
        "placement": "weight GEMM inputs" + (" and attention BMM inputs" if bmms else ""),
        "calibration": "max over real tokens" + (f"; BMM inputs percentile-{BMM_PERCENTILE}" if bmms else ""),
        "calibration_batches": len(calibration),
        "smoothquant_alpha": alpha,
        "position0_shifted_inputs": sum(p.m0 is not None for p in plans),
        "quantized": len(gemms),
        "kept_fp32": list(exclude),
        "seconds": {
            "calibration": round(cal.seconds, 1),
            "cached": cached,
            "total": round(time.perf_counter() - start, 1),
        },
    }
