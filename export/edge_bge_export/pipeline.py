"""``export()``: checkpoint -> ONNX graph -> fused / fp16 / int8 -> verified bundle, written atomically."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_bge.kinds import spec
from edge_bge.manifest import MANIFEST_NAME, MODEL_NAME, TOKENIZER_NAME, Manifest, Precision, Target, sha256_file
from edge_bge.tokenize import TextTokenizer

from . import graph, int8, optimize, probes, qdq, reference
from .errors import ExportError
from .recipes import Recipe
from .search import SEARCH_MAX_TOKENS, Runner, int8_search, measured_rank, pearson_rows
from .source import commit_of, resolve
from .verify import cosines, verify_bundle

TARGETS = {"cpu": Target.CPU, "tensorrt": Target.TENSORRT}


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class _Stages:
    def __init__(self, total: int, report: Callable[[str], None]) -> None:
        self.n, self.total, self.report, self.t0 = 0, total, report, time.perf_counter()

    def __call__(self, what: str) -> None:
        self.n += 1
        self.report(f"[{self.n}/{self.total}] {what} ({time.perf_counter() - self.t0:.1f}s)")


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


def range_texts(tokenizer: TextTokenizer) -> list[str]:
    """The texts whose vectors set the int8/uint8 ranges: probes and calibration set, those of at most
    SEARCH_MAX_TOKENS tokens (the long probes only repeat the paragraph texts)."""
    texts = probes.calibration_texts(tokenizer.max_length)
    return [t for t, e in zip(texts, tokenizer.encode(texts), strict=True) if len(e.ids) <= SEARCH_MAX_TOKENS]


def quantization_ranges(bundle: Path, tokenizer: TextTokenizer) -> dict[str, list[float]]:
    """Per-dimension min and max of the bundle's own vectors of ``range_texts``, run by the runtime."""
    from edge_bge import Embedder
    from edge_bge.quantize import calibration_ranges

    return calibration_ranges(Embedder(bundle, providers="cpu").embed(range_texts(tokenizer)))


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
    eval_data: str | os.PathLike[str] | None = None,
    max_ndcg_drop: float = 0.01,
    **overrides: Any,
) -> Path:
    """Export SOURCE to a verified bundle at ``out``; returns its path. Nothing is written on failure.

    ``eval_data`` (a BEIR folder or pairs file, as ``edge-bge eval`` reads) adds a gate: the bundle's
    nDCG@10 there may fall at most ``max_ndcg_drop`` below the PyTorch reference's (retrieval.py)."""
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
            retrieval = None
            if eval_data is not None:
                from .heads import head
                from .retrieval import prepare

                drop = float(max_ndcg_drop)
                retrieval = (prepare(eval_data, recipe, head(recipe.kind), drop), drop)
            return _export(recipe, ckpt, prec, TARGETS[target], Path(tmp), out, stage, external_data, retrieval)
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
    retrieval: tuple[Any, float] | None = None,
) -> Path:
    from . import heads

    head = heads.head(recipe.kind)
    inputs = graph.input_names(recipe.architecture, token_type_ids=head.token_type_ids)
    stage(f"exporting {recipe.name} ({recipe.architecture}, {recipe.kind.value}) to ONNX opset {graph.OPSET}")
    module, dim, num_layers = head.build(ckpt, recipe)
    kind = spec(recipe.kind)
    if recipe.dim is not None and kind.pooled and dim != recipe.dim:
        raise ExportError(f"recipe {recipe.name} says dim {recipe.dim} but the checkpoint has {dim}")
    plain = tmp / "plain.onnx"
    graph.export_onnx(module, plain, inputs=inputs, outputs=head.axes)
    del module

    optimization: dict[str, Any] = {}
    base = plain
    if target is Target.CPU:
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
    tokenizer_json = reference.bundle_tokenizer_json(ckpt, recipe.max_length, pairs=kind.query_share is not None)
    (staging / TOKENIZER_NAME).write_text(tokenizer_json, encoding="utf-8")
    tokenizer = TextTokenizer(staging / TOKENIZER_NAME, max_length=recipe.max_length)
    output = kind.main
    query_max_length = kind.query_max_length(recipe.max_length)  # rerankers: FlagReranker's default
    stage(f"running the PyTorch reference on the probe set ({prec.value})")
    texts = (
        probes.calibration_texts(recipe.max_length) if prec is Precision.INT8 else probes.probe_texts(recipe.max_length)
    )
    want, ref_name = head.reference(ckpt, recipe, texts)

    stage(f"converting to {prec.value}")
    model = tmp / "final.onnx"
    gate = recipe.gate(prec, target=target, metric=head.metric)
    if prec is Precision.FP32:
        model = base
    elif prec is Precision.FP16:
        optimization["precision"] = optimize.to_fp16(base, model, fused=target is Target.CPU)
    else:
        if kind.query_share is not None:  # pairs
            encodings = tokenizer.encode_pairs(reference.rerank_pairs(texts), query_max_length=query_max_length)
        else:
            encodings = tokenizer.encode(texts)
        # the search runs on texts up to SEARCH_MAX_TOKENS (all of them but bge-m3's 8192-token
        # probe); the verification below covers every text
        keep = [i for i, e in enumerate(encodings) if len(e.ids) <= SEARCH_MAX_TOKENS]
        run = Runner(tokenizer, [encodings[i] for i in keep], inputs, output)
        comparable = heads.comparable(want, recipe)[keep]
        similarity = pearson_rows if head.metric == "pearson" else cosines
        if target is Target.CPU:
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
                return measured_rank(quantize, qdq.weight_nodes(plain), model, run, comparable, similarity)

        optimization["precision"] = int8_search(
            quantize, rank, model, run=run, want=comparable, gate=gate, stage=stage.report, similarity=similarity
        )

    if target is Target.CPU and prec is not Precision.FP16:  # fp16 keeps the fused kernel
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
        outputs=kind.outputs,
        files={n: sha256_file(staging / n) for n in (*files, TOKENIZER_NAME)},
        source={"id": recipe.source, "revision": recipe.revision, "commit": commit_of(ckpt), "checkpoint": str(ckpt)},
        exported_with=_versions(),
        optimization=optimization,
        special_token_ids=reference.special_token_ids(ckpt) if kind.multi_output else (),
        query_max_length=query_max_length,
    )
    _write_bundle(staging, manifest)
    # int8 is verified on the probes and the calibration texts; the other precisions on the probes
    parity = verify_bundle(staging, recipe, texts, want, gate, reference=ref_name, metric=head.metric)
    if retrieval is not None:
        from .retrieval import retrieval_gate

        stage.report(f"  retrieval on {retrieval[0].path}: nDCG@10 against the PyTorch reference's")
        parity["retrieval"] = retrieval_gate(staging, ckpt, recipe, head, *retrieval)
    ranges = None
    if kind.pooled:
        stage.report("  int8/uint8 output ranges: the bundle's vectors of the calibration texts")
        ranges = quantization_ranges(staging, tokenizer)
    manifest = Manifest(**{**manifest.__dict__, "parity": parity, "quantization_ranges": ranges})
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
