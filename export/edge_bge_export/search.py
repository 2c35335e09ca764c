"""The int8 search of the export: quantize every weight node, and only if the calibration set then
misses the gate with a margin, keep the fewest nodes in fp32 (ranked by their own error, found by
bisection), each candidate graph run on the calibration encodings."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_bge import batching
from edge_bge.batching import DEFAULT_MAX_BATCH_TOKENS
from edge_bge.tokenize import TextTokenizer

from .errors import ParityError
from .verify import cosines, pearson

# The int8 search aims this far inside the gate on the calibration set, so that unseen text passes
# too. Each node kept in fp32 costs 4-15% of MiniLM's int8 speed, so the margin is narrow.
INT8_MARGIN = 0.1  # of the distance to 1.0: gate min 0.995 -> aim 0.9955, mean 0.998 -> 0.9982

# Texts longer than this (in tokens) are verified but left out of int8 calibration and search
# rounds, whose cost they would dominate (an 8192-token text costs more than the other 363).
SEARCH_MAX_TOKENS = 2048


def pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Reranker logits: one correlation over all probe pairs, repeated per pair."""
    return np.full(a.size, pearson(a, b))


class Runner:
    """Runs candidate graphs on fixed token batches (the runtime's own batching)."""

    def __init__(self, tokenizer: TextTokenizer, encodings: list[Any], inputs: tuple[str, ...], output: str) -> None:
        # the runtime's own CPU batches, as the verification (and users) will run them
        self.batches = list(
            batching.batches(
                encodings, inputs=inputs, pad_id=tokenizer.pad_id, max_batch_tokens=DEFAULT_MAX_BATCH_TOKENS
            )
        )
        self.n, self.output = len(encodings), output

    def feeds(self) -> list[dict[str, Any]]:
        return [b.feeds for b in self.batches]

    def __call__(self, model: Path) -> np.ndarray:
        import onnxruntime as ort

        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        out: np.ndarray | None = None
        for b in self.batches:
            y = session.run([self.output], b.feeds)[0].reshape(len(b.index), -1)
            if out is None:
                out = np.zeros((self.n, *y.shape[1:]), dtype=np.float32)
            out[b.index] = y
        assert out is not None
        return out


def int8_search(
    quantize: Callable[[Path, list[str]], dict[str, Any]],
    rank: Callable[[], list[str]],
    dst: Path,
    *,
    run: Runner,
    want: np.ndarray,
    gate: dict[str, float],
    stage: Callable[[str], None],
    similarity: Callable[[np.ndarray, np.ndarray], np.ndarray] = cosines,
) -> dict[str, Any]:
    """Quantize every node; only if the calibration set then misses the gate (with margin), keep
    the nodes ``rank()`` puts first in fp32: the fewest that pass, found by bisection, so the
    search costs at most ceil(log2(nodes)) + 1 more quantize-and-run rounds."""
    aim = {k: v + INT8_MARGIN * (1 - v) for k, v in gate.items()}

    def score(exclude: list[str]) -> tuple[dict[str, Any], dict[str, float]]:
        info = quantize(dst, exclude)
        cos = similarity(run(dst), want)
        return info, {"min": float(cos.min()), "mean": float(cos.mean())}

    def ok(s: dict[str, float]) -> bool:
        return all(s[k] >= v for k, v in aim.items())

    info, first = score([])
    search: dict[str, Any] = {"aim": aim, "calibration_texts": run.n, "all_quantized": first}
    if ok(first):
        stage(f"  int8 meets the aim with every node quantized (min {first['min']:.4f}, mean {first['mean']:.4f})")
        return {**info, "search": search}
    ranked = rank()
    steps = max(1, math.ceil(math.log2(len(ranked) + 1)))
    stage(
        f"  int8 misses the aim {fmt_gate(aim)} (min {first['min']:.4f}, mean {first['mean']:.4f}); "
        f"bisecting over {len(ranked)} nodes ranked by their own error, at most {steps} steps"
    )
    lo, hi = 0, len(ranked)  # keeping ranked[:hi] in fp32 passes (all fp32 does); ranked[:lo] does not
    last: tuple[int, dict[str, Any], dict[str, float]] | None = None  # what dst holds now
    step = 0
    while hi - lo > 1:
        step += 1
        mid = (lo + hi) // 2
        info, result = score(ranked[:mid])
        last = (mid, info, result)
        passed = ok(result)
        stage(
            f"  step {step}/{steps}: {mid} node(s) in fp32: min {result['min']:.4f}, "
            f"mean {result['mean']:.4f} ({'pass' if passed else 'miss'})"
        )
        hi, lo = (mid, lo) if passed else (hi, mid)
    if hi == len(ranked):
        raise ParityError(f"int8 cannot reach {fmt_gate(aim)} on the calibration set with any node quantized")
    if last is not None and last[0] == hi:
        _, info, final = last
    else:
        info, final = score(ranked[:hi])
    stage(f"  int8 meets the aim with {hi} of {len(ranked)} weight nodes kept in fp32")
    return {**info, "search": {**search, "result": final, "ranking": ranked}}


def measured_rank(
    quantize: Callable[[Path, list[str]], dict[str, Any]],
    nodes: list[str],
    dst: Path,
    run: Runner,
    want: np.ndarray,
    similarity: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> list[str]:
    """Nodes by the damage each does quantized alone (one quantize-and-run per node)."""
    damage = {}
    for node in nodes:
        quantize(dst, [n for n in nodes if n != node])
        damage[node] = 1 - float(similarity(run(dst), want).mean())
    return sorted(nodes, key=damage.__getitem__, reverse=True)


def fmt_gate(d: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.5f}" for k, v in d.items())
