"""``export()``: checkpoint -> ONNX graph -> fused / fp16 / int8 -> verified bundle, written atomically."""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_bge import batching
from edge_bge.embedder import DEFAULT_MAX_BATCH_TOKENS
from edge_bge.manifest import MANIFEST_NAME, MODEL_NAME, TOKENIZER_NAME, Kind, Manifest, Precision, Target, sha256_file
from edge_bge.tokenize import TextTokenizer

from . import graph, int8, optimize, probes, qdq, reference
from .errors import ExportError, ParityError
from .recipes import Recipe
from .source import resolve
from .verify import cosines, pearson, verify_bundle

TARGETS = {"cpu": Target.CPU_FUSED, "tensorrt": Target.PLAIN}
# Texts longer than this (in tokens) are verified but left out of int8 calibration and search
# rounds, whose cost they would dominate (an 8192-token text costs more than the other 363).
SEARCH_MAX_TOKENS = 2048
# The int8 search aims this far inside the gate on the calibration set, so that unseen text passes
# too. Each node kept in fp32 costs 4-15% of MiniLM's int8 speed, so the margin is narrow.
INT8_MARGIN = 0.1  # of the distance to 1.0: gate min 0.995 -> aim 0.9955, mean 0.998 -> 0.9982


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class _Stages:
    def __init__(self, total: int, report: Callable[[str], None]) -> None:
        self.n, self.total, self.report, self.t0 = 0, total, report, time.perf_counter()

    def __call__(self, what: str) -> None:
        self.n += 1
        self.report(f"[{self.n}/{self.total}] {what} ({time.perf_counter() - self.t0:.1f}s)")


def _pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Reranker logits: one correlation over all probe pairs, repeated per pair."""
    return np.full(a.size, pearson(a, b))


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import tokenizers
    import torch
    import transformers

    import edge_bge

    return {
        "edge_bge": edge_bge.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "tokenizers": tokenizers.__version__,
    }


class _Runner:
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


def _int8_search(
    quantize: Callable[[Path, list[str]], dict[str, Any]],
    rank: Callable[[], list[str]],
    dst: Path,
    *,
    run: _Runner,
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
        f"  int8 misses the aim {_fmt(aim)} (min {first['min']:.4f}, mean {first['mean']:.4f}); "
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
        raise ParityError(f"int8 cannot reach {_fmt(aim)} on the calibration set with any node quantized")
    if last is not None and last[0] == hi:
        _, info, final = last
    else:
        info, final = score(ranked[:hi])
    stage(f"  int8 meets the aim with {hi} of {len(ranked)} weight nodes kept in fp32")
    return {**info, "search": {**search, "result": final, "ranking": ranked}}


def _measured_rank(
    quantize: Callable[[Path, list[str]], dict[str, Any]],
    nodes: list[str],
    dst: Path,
    run: _Runner,
    want: np.ndarray,
    similarity: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> list[str]:
    """Nodes by the damage each does quantized alone (one quantize-and-run per node)."""
    damage = {}
    for node in nodes:
        quantize(dst, [n for n in nodes if n != node])
        damage[node] = 1 - float(similarity(run(dst), want).mean())
    return sorted(nodes, key=damage.__getitem__, reverse=True)


def _fmt(d: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.5f}" for k, v in d.items())


EXTERNAL_DATA_NAME = MODEL_NAME + ".data"


def _graph_bytes(path: Path) -> int:
    from edge_bge.bundle import external_data_locations

    return path.stat().st_size + sum((path.parent / loc).stat().st_size for loc in external_data_locations(path))


def _finalize(src: Path, staging: Path, *, external_data: bool | None) -> list[str]:
    """Write the graph as staging/model.onnx; weights in model.onnx.data when asked or when the
    graph would pass 2 GiB. Returns the file names written."""
    import onnx

    from edge_bge.bundle import external_data_locations

    external = _graph_bytes(src) > optimize.EXTERNAL_DATA_BYTES if external_data is None else external_data
    if not external and not external_data_locations(src):
        shutil.copyfile(src, staging / MODEL_NAME)
        return [MODEL_NAME]
    proto = onnx.load(str(src), load_external_data=True)
    onnx.save_model(
        proto,
        str(staging / MODEL_NAME),
        save_as_external_data=external,
        all_tensors_to_one_file=True,
        location=EXTERNAL_DATA_NAME,
        size_threshold=1024,
    )
    if external:
        (staging / EXTERNAL_DATA_NAME).chmod(0o644)  # onnx writes it 0600; bundles are read by services
    return [MODEL_NAME, EXTERNAL_DATA_NAME] if external else [MODEL_NAME]


def _write_bundle(staging: Path, manifest: Manifest) -> None:
    (staging / MANIFEST_NAME).write_text(manifest.dumps(), encoding="utf-8")


def export(
    source: str,
    *,
    precision: str = "fp32",
    target: str = "cpu",
    out: str | os.PathLike[str],
    force: bool = False,
    checkpoint: str | None = None,
    report: Callable[[str], None] = _stderr,
    external_data: bool | None = None,
    **overrides: Any,
) -> Path:
    """Export SOURCE to a verified bundle at ``out``; returns its path. Nothing is written on failure."""
    try:
        prec = Precision(precision)
    except ValueError:
        raise ExportError(f"unknown precision {precision!r}; valid: {', '.join(p.value for p in Precision)}") from None
    if target not in TARGETS:
        raise ExportError(f"unknown target {target!r}; valid: {', '.join(TARGETS)}")
    out = Path(out)
    if out.exists() and not force:
        raise ExportError(f"{out} already exists; pass --force to replace it")
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create {parent}: {e.strerror}") from None
    if not os.access(parent, os.W_OK):
        raise ExportError(f"{parent} is not writable")

    stage = _Stages(7, report)
    stage(f"resolving {source}")
    recipe, ckpt = resolve(source, checkpoint=checkpoint, **overrides)
    try:
        with tempfile.TemporaryDirectory(prefix=".edge-bge-export-", dir=parent) as tmp:
            return _export(recipe, ckpt, prec, TARGETS[target], Path(tmp), out, stage, external_data)
    except OSError as e:
        raise ExportError(
            f"writing the bundle failed: {e.strerror or e} ({e.filename or parent}); nothing was written"
        ) from None


def _export(
    recipe: Recipe,
    ckpt: Path,
    prec: Precision,
    target: Target,
    tmp: Path,
    out: Path,
    stage: _Stages,
    external_data: bool | None,
) -> Path:
    from .heads import build_module

    inputs = graph.input_names(recipe.architecture, recipe.kind)
    stage(f"exporting {recipe.name} ({recipe.architecture}, {recipe.kind.value}) to ONNX opset {graph.OPSET}")
    module, dim, num_layers = build_module(ckpt, recipe)
    if recipe.dim is not None and recipe.kind is not Kind.RERANKER and dim != recipe.dim:
        raise ExportError(f"recipe {recipe.name} says dim {recipe.dim} but the checkpoint has {dim}")
    plain = tmp / "plain.onnx"
    graph.export_onnx(module, plain, inputs=inputs, kind=recipe.kind)
    del module

    optimization: dict[str, Any] = {}
    base = plain
    if target is Target.CPU_FUSED:
        stage("fusing with ONNX Runtime's transformer optimizer")
        base = tmp / "fused.onnx"
        to_fuse = plain
        if prec is Precision.INT8:  # the int8 word-embedding gather goes in before fusion
            to_fuse = tmp / "plain-int8-embeddings.onnx"
            optimization["embeddings"] = int8.quantize_embeddings(plain, to_fuse)
        optimization["fused_operators"] = optimize.fuse(to_fuse, base, num_layers=num_layers)
    else:
        stage("keeping the plain graph for TensorRT")

    staging = tmp / "bundle"
    staging.mkdir()
    is_reranker = recipe.kind is Kind.RERANKER
    tokenizer_json = reference.bundle_tokenizer_json(ckpt, recipe.max_length, pairs=is_reranker)
    (staging / TOKENIZER_NAME).write_text(tokenizer_json, encoding="utf-8")
    tokenizer = TextTokenizer(staging / TOKENIZER_NAME, max_length=recipe.max_length)
    output = "dense" if recipe.kind is Kind.M3 else ("logits" if recipe.kind is Kind.RERANKER else "embedding")

    query_max_length = recipe.max_length * 3 // 4 if is_reranker else None  # FlagReranker's default
    stage(f"running the PyTorch reference on the probe set ({prec.value})")
    texts = (
        probes.calibration_texts(recipe.max_length) if prec is Precision.INT8 else probes.probe_texts(recipe.max_length)
    )
    want, ref_name = reference.outputs(ckpt, recipe, texts)

    stage(f"converting to {prec.value}")
    model = tmp / "final.onnx"
    gate = recipe.gate(prec, target=target)
    if prec is Precision.FP32:
        model = base
    elif prec is Precision.FP16:
        optimization["precision"] = optimize.to_fp16(base, model, fused=target is Target.CPU_FUSED)
    else:
        if is_reranker:
            encodings = tokenizer.encode_pairs(reference.rerank_pairs(texts), query_max_length=query_max_length)
        else:
            encodings = tokenizer.encode(texts)
        # the search runs on texts up to SEARCH_MAX_TOKENS (all of them but bge-m3's 8192-token
        # probe); the verification below covers every text
        keep = [i for i, e in enumerate(encodings) if len(e.ids) <= SEARCH_MAX_TOKENS]
        run = _Runner(tokenizer, [encodings[i] for i in keep], inputs, output)
        comparable = reference.comparable(want, recipe)[keep]
        similarity = _pearson if is_reranker else cosines
        if target is Target.CPU_FUSED:
            stage.report("  calibrating: per-channel activation ranges for SmoothQuant")
            calib = int8.calibrate(base, run.feeds())

            def quantize(dst: Path, ex: list[str]) -> dict[str, Any]:
                return int8.quantize(base, dst, exclude=ex, calibration=calib)

            def rank() -> list[str]:
                errors = int8.local_errors(base, calib)
                return sorted(errors, key=errors.__getitem__, reverse=True)
        else:
            feeds = run.feeds()

            def quantize(dst: Path, ex: list[str]) -> dict[str, Any]:
                return qdq.quantize_qdq(plain, dst, exclude=ex, calibration=feeds)

            def rank() -> list[str]:
                return _measured_rank(quantize, qdq.weight_nodes(plain), model, run, comparable, similarity)

        optimization["precision"] = _int8_search(
            quantize, rank, model, run=run, want=comparable, gate=gate, stage=stage.report, similarity=similarity
        )

    if target is Target.CPU_FUSED and prec is not Precision.FP16:  # fp16 keeps the fused kernel
        split = tmp / "split.onnx"
        optimization["split_skip_layernorm"] = optimize.split_skip_layernorm(model, split)
        model = split

    files = _finalize(model, staging, external_data=external_data)
    stage("verifying the bundle with the edge_bge runtime")
    manifest = Manifest(
        name=recipe.name,
        kind=recipe.kind,
        architecture=recipe.architecture,
        precision=prec,
        target=target,
        dim=dim,
        max_length=recipe.max_length,
        pooling=recipe.pooling,
        normalize=recipe.normalize,
        query_instruction=recipe.query_instruction,
        inputs=inputs,
        outputs=graph.OUTPUTS[recipe.kind],
        files={n: sha256_file(staging / n) for n in (*files, TOKENIZER_NAME)},
        source={"id": recipe.source, "revision": recipe.revision, "checkpoint": str(ckpt)},
        exported_with=_versions(),
        optimization=optimization,
        special_token_ids=reference.special_token_ids(ckpt) if recipe.kind is Kind.M3 else (),
        query_max_length=query_max_length,
    )
    _write_bundle(staging, manifest)
    # int8 is verified on the probes and the calibration texts; the other precisions on the probes
    parity = verify_bundle(staging, recipe, texts, want, gate, reference=ref_name)
    manifest = Manifest(**{**manifest.__dict__, "parity": parity})
    _write_bundle(staging, manifest)

    if out.exists():  # --force: swap, so a failure here still leaves one whole bundle
        old = tmp / "old"
        os.replace(out, old)
    os.replace(staging, out)
    stage(f"wrote {out}")
    return out


def summary(path: Path) -> str:
    m = Manifest.load(path)
    parts = [f"{k}={v:.6f}" if isinstance(v, float) else f"{k}={v}" for k, v in m.parity.get("summary", {}).items()]
    size = sum((path / f).stat().st_size for f in m.files) / 1e6
    return f"{path}  {m.precision.value}/{m.target.value}  {size:.1f} MB  parity: {' '.join(parts)}"


__all__ = ["export", "summary"]
