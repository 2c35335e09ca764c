"""Row-wise int8 for the CPU target: every weight MatMul (attention projections included) runs
on ONNX Runtime's integer GEMM, with one activation scale per token row, computed at run time.

Why per row: a scale taken over the whole batch tensor (ONNX Runtime's dynamic quantization)
makes a text's vector depend on what else is in its batch. One scale per token row depends on
that token alone, so a text gets the same vector alone or batched, and a rare outlier token
costs precision only in its own row.

The rewrite, for a MatMul ``X[..., K] @ W[K, N]``:

    X'  = X / s  (+ shift)                             SmoothQuant migration (s from calibration)
    r   = max(|X'|, axis=-1) / 127                     [..., 1]   per-row scale, at run time
    Xq  = QuantizeLinear(X', r, block_size=K)          uint8 = int8 + 128
    Y   = MatMulIntegerToFloat(Xq, Wq, r, w_scale)     [..., N]   Wq = int8(s * W) per column

- SmoothQuant (Xiao et al., 2023): BERT's LayerNorm outputs carry a few channels that are
  ~10x larger than the rest; one row scale is then set by them and the others get few levels.
  Dividing each input channel by ``s = max|X_c|^a / max|W_c|^(1-a)`` (calibrated per channel,
  fixed, so still batch-invariant) and multiplying W's row by it moves that range into the
  weights, where per-column scales absorb it. Where X is softmax(QK)V the division is folded
  into V's weights (free); elsewhere it is one Mul.
- GELU outputs are never below -0.17: they are shifted to >= 0 and quantized unsigned (twice
  the levels of symmetric); the shift times W is a constant that folds into the next bias.
- ONNX Runtime's fused ``Attention`` carries its QKV weights inside, so it becomes one row-wise
  int8 MatMul to packed QKV, a Split, and ``MultiHeadAttention`` (same kernel, projected inputs).
- Weights only (nothing batch-dependent): the word embedding table becomes int8 with one scale
  per vocabulary row, gathered and scaled at run time. It is most of a large vocabulary model's
  file (bge-m3: 250k x 1024), so this is where int8's size saving comes from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from .int8_graph import (
    Graph,
    Plan,
    attention_nodes,
    fold_correction,
    load_graph,
    rowwise_matmul,
    smoothing,
    upgrade_opset,
    weight_nodes,
    weight_nodes_of,
)
from .optimize import cpu_session, int8_per_column, save_model

SCHEME = "rowwise-int8"
# SmoothQuant's migration strength; 0.5 measured best on MiniLM (0.3: min 0.988, 0.7: 0.993).
ALPHA = 0.5
# Ops whose output is bounded below: the MatMul after them quantizes X - bound >= 0 unsigned.
_GELU_MIN = -0.1700  # min of x * Phi(x) is -0.16997
_BOUNDED_BELOW = {"BiasGelu": _GELU_MIN, "Gelu": _GELU_MIN, "FastGelu": _GELU_MIN, "Relu": 0.0}
# Calibration keeps this many token rows per node input, for ranking nodes by their own error.
SAMPLE_ROWS = 512


def quantize_embeddings(src: Path, dst: Path) -> dict[str, Any]:
    """int8 word embedding table (the Gather indexed by the graph input ``input_ids``), one scale per row.

    Weights only: a gathered row is dequantized on its own, so nothing depends on the batch.
    Run before ONNX Runtime's fusion (which then leaves the embedding sum unfused)."""
    model = load_graph(src)
    g = Graph(model)
    inputs = {i.name for i in model.graph.input}
    done: list[str] = []
    for node in list(model.graph.node):
        w = g.weight(node.input[0]) if node.op_type == "Gather" else None
        if w is None or w.ndim != 2 or node.input[1] != "input_ids" or node.input[1] not in inputs:
            continue
        q, scale = int8_per_column(w.T)
        base, ids = node.name or node.output[0], node.input[1]
        at = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        for j, n in enumerate(
            [
                helper.make_node("Gather", [g.const(np.ascontiguousarray(q.T), "embq"), ids], [f"{base}/q"], axis=0),
                helper.make_node("Cast", [f"{base}/q"], [f"{base}/qf"], to=TensorProto.FLOAT),
                helper.make_node("Gather", [g.const(scale, "embs"), ids], [f"{base}/s"], axis=0),
                helper.make_node("Unsqueeze", [f"{base}/s", g.const(np.array([-1], np.int64), "axes")], [f"{base}/s1"]),
                helper.make_node("Mul", [f"{base}/qf", f"{base}/s1"], list(node.output), name=base),
            ]
        ):
            model.graph.node.insert(at + j, n)
        g.drop_unused(node.input[0])
        done.append(node.name)
    save_model(model, dst)
    return {"int8_embeddings": done}


@dataclass
class Calibration:
    """Per weight-node input: per-channel max |x| and a sample of token rows (padding excluded)."""

    act_max: dict[str, np.ndarray]
    samples: dict[str, np.ndarray]


def _real_rows(y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The token rows of activation ``y`` [batch, seq(, -1 for bge-m3's ColBERT input), K] that are not padding."""
    if y.ndim == 3 and y.shape[:2] == mask.shape:
        return y[mask]
    if y.ndim == 3 and y.shape[0] == mask.shape[0] and y.shape[1] == mask.shape[1] - 1:
        return y[mask[:, 1:]]
    return y.reshape(-1, y.shape[-1])


def calibrate(src: Path, feeds: list[dict[str, Any]]) -> Calibration:
    """Run the fp32 graph over the calibration batches; memory is bounded by one batch's activations."""
    import onnxruntime as ort

    model = load_graph(src)
    names = set(weight_nodes(src))
    xs = sorted({n.input[0] for n in model.graph.node if n.name in names})
    known = {o.name for o in model.graph.output}
    model.graph.output.extend(helper.make_empty_tensor_value_info(x) for x in xs if x not in known)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    sess = cpu_session(model, so)
    del model
    act_max: dict[str, np.ndarray] = {}
    samples: dict[str, list[np.ndarray]] = {x: [] for x in xs}
    rng = np.random.default_rng(0)
    per_batch = max(1, SAMPLE_ROWS // max(1, len(feeds)))
    names = {i.name for i in sess.get_inputs()}
    for f in feeds:
        mask = np.asarray(f["attention_mask"]).astype(bool)
        for x, y in zip(xs, sess.run(xs, {k: v for k, v in f.items() if k in names}), strict=True):
            y = _real_rows(y, mask)
            m = np.abs(y).max(axis=0)
            act_max[x] = m if x not in act_max else np.maximum(act_max[x], m)
            samples[x].append(y[rng.permutation(len(y))[:per_batch]])
    return Calibration(act_max, {x: np.concatenate(v) for x, v in samples.items() if v})


ALPHAS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # the per-node choices when calibration rows are at hand


def _relative_error(plan: Plan, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.linalg.norm(plan.simulate(x) - y) / max(float(np.linalg.norm(y)), 1e-12))


def _choose_alpha(w: np.ndarray, act_max: np.ndarray, lower: float | None, x: np.ndarray | None) -> float:
    """The migration strength with the smallest error of this node's output on calibration rows."""
    if x is None:
        return ALPHA
    x = x[:256]
    y = x @ w
    return min(ALPHAS, key=lambda a: _relative_error(Plan.make(w, act_max, a, lower), x, y))


def _plans(g: Graph, model: onnx.ModelProto, calib: Calibration | None, alpha: float | None) -> dict[str, Plan]:
    """A plan per weight node. ``alpha`` None: chosen per node among ALPHAS by its own error on
    the calibration rows. The attention outputs' SmoothQuant division is folded into V first
    (mutating g's weights), so that the plans quantize the folded weights."""
    producer = {o: n for n in model.graph.node for o in n.output}
    wide = set(weight_nodes_of(model))
    nodes = [n for n in model.graph.node if n.name in wide]
    act_max = dict(calib.act_max) if calib else {}
    samples = calib.samples if calib else {}

    def lower(node: onnx.NodeProto) -> float | None:
        src = producer.get(node.input[0])
        return _BOUNDED_BELOW.get(src.op_type) if src is not None and node.op_type == "MatMul" else None

    alphas: dict[str, float] = {}
    for node in nodes:
        x = node.input[0]
        if x in act_max:
            w = g.weight(node.input[1])
            assert w is not None
            alphas[node.name] = (
                alpha if alpha is not None else _choose_alpha(w, act_max[x], lower(node), samples.get(x))
            )
    folded: dict[str, np.ndarray] = {}
    for node in nodes:
        src, x = producer.get(node.input[0]), node.input[0]
        if x in act_max and src is not None:
            s = _fold_into_values(g, node, src, act_max[x], alphas[node.name])
            if s is not None:
                folded[node.name] = (1 / s).astype(np.float32)
    plans: dict[str, Plan] = {}
    for node in nodes:
        w = g.weight(node.input[1])
        assert w is not None
        smooth = None if node.name in folded else act_max.get(node.input[0])
        plans[node.name] = Plan.make(w, smooth, alphas.get(node.name, ALPHA), lower(node))
        plans[node.name].folded_inv_s = folded.get(node.name)
        plans[node.name].alpha = alphas.get(node.name)
    return plans


def _fold_into_values(
    g: Graph, node: onnx.NodeProto, attention: onnx.NodeProto, act_max: np.ndarray, alpha: float
) -> np.ndarray | None:
    """The attention output projection reads softmax(QK)V, linear in V's columns: its SmoothQuant
    division goes into V's weights and bias, exactly and at no run-time cost."""
    if attention.op_type != "Attention" or node.op_type != "MatMul" or len(attention.input) < 3:
        return None
    w_qkv, bias, w = g.weight(attention.input[1]), g.weight(attention.input[2]), g.weight(node.input[1])
    names = (attention.input[1], attention.input[2], node.input[1], node.input[0])
    if w_qkv is None or bias is None or w is None or any(g.consumers.get(n) != 1 for n in names):
        return None
    d = w.shape[0]
    if w_qkv.shape[1] != 3 * d:
        return None
    s = smoothing(act_max, w, alpha)
    w_qkv[:, 2 * d :] /= s
    bias[2 * d :] /= s
    g.set(attention.input[1], w_qkv)
    g.set(attention.input[2], bias)
    g.set(node.input[1], w * s[:, None])
    return s


def local_errors(src: Path, calib: Calibration, *, alpha: float | None = None) -> dict[str, float]:
    """Each weight node's own relative output error under this scheme, on the calibration rows:
    ||x W - int8(x) int8(W)|| / ||x W||. Ranks nodes for the search without re-running the model."""
    model = load_graph(src)
    g = Graph(model)
    plans = _plans(g, model, calib, alpha)
    errors = {}
    for node in model.graph.node:
        plan, x = plans.get(node.name), calib.samples.get(node.input[0])
        w = g.weight(node.input[1]) if plan is not None else None
        if plan is None or x is None or w is None:
            continue
        errors[node.name] = _relative_error(
            plan, x, (x * plan.folded_inv_s if plan.folded_inv_s is not None else x) @ w
        )
    return errors


def quantize(
    src: Path, dst: Path, *, exclude: list[str], calibration: Calibration | None, alpha: float | None = None
) -> dict[str, Any]:
    """Row-wise int8 of every weight MatMul and Attention in ``src`` except ``exclude`` (kept fp32).

    With ``calibration`` (from ``calibrate``), SmoothQuant migration of strength ``alpha``."""
    model = load_graph(src)
    upgrade_opset(model)
    g = Graph(model)
    all_plans = _plans(g, model, calibration, alpha)
    excluded = set(exclude)
    plans = {k: v for k, v in all_plans.items() if k not in excluded}
    new_nodes: list[onnx.NodeProto] = []
    done = []
    for node in list(model.graph.node):
        plan = plans.get(node.name)
        nodes: list[onnx.NodeProto] = []
        if plan is not None and node.op_type == "MatMul":
            out = node.output[0]
            tail = fold_correction(g, out, plan.correction) if plan.correction is not None else []
            nodes = rowwise_matmul(g, node.input[0], plan, f"{out}/uncorrected" if tail else out, node.name) + tail
        elif plan is not None:
            nodes = attention_nodes(g, node, plan)
        if not nodes:
            new_nodes.append(node)
            continue
        new_nodes.extend(nodes)
        g.drop_unused(node.input[1])
        done.append(node.name)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    if not any(i.domain == "com.microsoft" for i in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    save_model(model, dst)
    return {
        "scheme": SCHEME,
        "activations": "int8 with one scale per token row, computed at run time (batch-invariant)",
        "weights": "int8 symmetric per output column",
        # per node: the SmoothQuant strength used (chosen by the node's own error unless given)
        "smoothquant_alpha": {k: p.alpha for k, p in all_plans.items() if p.alpha is not None} or None,
        "int8_nodes": len(done),
        "kept_fp32": sorted(set(weight_nodes(src)) - set(done)),
    }
