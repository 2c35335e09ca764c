"""Graph rewrites after the export: ONNX Runtime's transformer fusions, fp16 and int8.

Every function takes a path to an ONNX file and writes a new one; they return what the
manifest records about the rewrite.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .errors import ExportError

log = logging.getLogger("edge_bge_export")

# The fusions a BERT-family encoder must get on the CPU target. A count of zero is a bug
# (usually an attention pattern the optimizer did not recognise), never a silent fallback.
REQUIRED_FUSIONS = ("Attention", "SkipLayerNormalization")

# Ops kept in fp32 by the fp16 conversion. Reductions and the pooling/normalisation tail
# overflow or lose precision in fp16. On the plain graph LayerNorm and Softmax are kept too;
# ONNX Runtime's fused kernels (SkipLayerNormalization, Attention) accumulate in fp32 themselves,
# and keeping them fp32 would split fused ops across types.
FP16_BLOCKED_REDUCTIONS = ["ReduceMean", "ReduceSum", "ReduceL2", "ReduceMax", "Pow", "Sqrt", "Div", "Clip", "Erf"]
FP16_BLOCKED_PLAIN = ["LayerNormalization", "Softmax", *FP16_BLOCKED_REDUCTIONS]


def fuse(src: Path, dst: Path, *, num_layers: int) -> dict[str, int]:
    """ONNX Runtime's transformer optimizer (model_type bert); returns the fused-operator counts."""
    from onnxruntime.transformers.optimizer import optimize_model

    model = optimize_model(str(src), model_type="bert", num_heads=0, hidden_size=0, opt_level=1)
    stats = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
    missing = [op for op in REQUIRED_FUSIONS if stats.get(op, 0) < (num_layers if op == "Attention" else 1)]
    if missing:
        raise ExportError(
            f"ONNX Runtime's optimizer did not fuse {', '.join(missing)} "
            f"(got {stats}); the CPU target needs them. Try --target tensorrt for the plain graph."
        )
    from edge_bge.bundle import external_data_locations

    big = bool(external_data_locations(src))  # torch wrote external data: the graph passes 2 GiB
    model.save_model_to_file(str(dst), use_external_data_format=big)
    return stats


# A protobuf cannot pass 2 GiB: larger graphs keep their weights in one external file.
EXTERNAL_DATA_BYTES = 1_900_000_000


def save_model(model: onnx.ModelProto, dst: Path) -> None:
    """Save a rewritten graph; its weights go to ``<dst>.data`` when it would pass 2 GiB."""
    big = sum(len(i.raw_data) for i in model.graph.initializer) > EXTERNAL_DATA_BYTES
    onnx.save_model(
        model, str(dst), save_as_external_data=big, all_tensors_to_one_file=True, location=dst.name + ".data"
    )


def cpu_session(model: onnx.ModelProto, options: Any = None) -> Any:
    """An ONNX Runtime CPU session on an in-memory graph of any size (past 2 GiB via a temporary file)."""
    import tempfile

    import onnxruntime as ort

    if sum(len(i.raw_data) for i in model.graph.initializer) <= EXTERNAL_DATA_BYTES:
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        save_model(model, path)
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def int8_per_column(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per output column: W[K, N] ~ q * scale[N]."""
    amax = np.abs(w).max(axis=0)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    return np.clip(np.rint(w / scale), -127, 127).astype(np.int8), scale


def split_skip_layernorm(src: Path, dst: Path) -> int:
    """Rewrite each SkipLayerNormalization as Add (+ bias Add) + LayerNormalization; returns how many.

    Same arithmetic, and on ONNX Runtime's CPU provider (1.32) the pair ran in under a third of
    the fused kernel's time on MiniLM (272 ms against 680-910 ms over 300 corpus texts, 2 threads),
    11-17% of the whole fp32 graph. ONNX Runtime fuses the pair back for CUDA at session start.
    """
    model = onnx.load(str(src), load_external_data=True)
    new_nodes, n = [], 0
    for node in model.graph.node:
        outputs = list(node.output) + [""] * 4
        if node.op_type != "SkipLayerNormalization" or outputs[1] or outputs[2]:
            new_nodes.append(node)  # the mean / inv-std outputs are not produced by the pair
            continue
        n += 1
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        x, skip, gamma = node.input[0], node.input[1], node.input[2]
        beta = node.input[3] if len(node.input) > 3 else ""
        bias = node.input[4] if len(node.input) > 4 else ""
        base = node.name or f"SkipLayerNormalization_{n}"
        total = outputs[3] or f"{base}/sum"
        first = f"{base}/input_skip" if bias else total
        new_nodes.append(onnx.helper.make_node("Add", [x, skip], [first], name=f"{base}/Add"))
        if bias:
            new_nodes.append(onnx.helper.make_node("Add", [first, bias], [total], name=f"{base}/AddBias"))
        ln_inputs = [total, gamma] + ([beta] if beta else [])
        new_nodes.append(
            onnx.helper.make_node(
                "LayerNormalization", ln_inputs, [outputs[0]], name=f"{base}/LayerNorm", axis=-1, epsilon=eps
            )
        )
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    save_model(model, dst)
    return n


def to_fp16(src: Path, dst: Path, *, fused: bool) -> dict[str, Any]:
    """fp16 weights and matmuls; fp32 inputs/outputs; LayerNorm, Softmax and reductions safe."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST
    from onnxruntime.transformers.onnx_model import OnnxModel

    blocked = FP16_BLOCKED_REDUCTIONS if fused else FP16_BLOCKED_PLAIN
    model = OnnxModel(onnx.load(str(src)))
    model.convert_float_to_float16(
        use_symbolic_shape_infer=True, keep_io_types=True, op_block_list=[*DEFAULT_OP_BLOCK_LIST, *blocked]
    )
    model.save_model_to_file(str(dst))
    return {"scheme": "fp16", "kept_fp32_ops": blocked}


# Weight-bearing ops that int8 quantizes: matrix products and the embedding tables (Gather, or
# ONNX Runtime's fused EmbedLayerNormalization) whose int8 copy is most of the size saving.
INT8_OPS = ("MatMul", "Attention", "Gemm", "Gather", "EmbedLayerNormalization")


NBITS_BLOCK = 128  # weight-only int8 block: 32 is a hair more exact, 128 faster (measured on MiniLM)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's quantizer logs advice on the root logger at WARNING for every call."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8(src: Path, dst: Path, *, exclude: list[str]) -> dict[str, Any]:
    """The previous CPU int8 scheme, kept so that benchmarks/int8.py can compare against it; exports
    use int8.quantize. Its activation scale spans the whole batch tensor, so vectors depend on batch
    neighbours.

    Dynamic int8 (per-channel signed weights, uint8 activations quantized per batch at run time);
    the excluded MatMuls get 8-bit weight-only quantization (MatMulNBits, blocks of 128, int8
    compute), which keeps them within ~1e-4 of fp32 at a quarter of the size; other excluded
    nodes stay fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    with _quiet():
        quantize_dynamic(
            str(src),
            str(dst),
            per_channel=True,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(INT8_OPS),
            # the quantizer first rewrites each Gemm into a MatMul named "<gemm>_MatMul"
            nodes_to_exclude=[*exclude, *(f"{n}_MatMul" for n in exclude)],
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
        model = onnx.load(str(dst))
        # [K, N] weights whose K splits into whole blocks (MatMulNBits pads a short K badly)
        blocked = {i.name for i in model.graph.initializer if len(i.dims) == 2 and i.dims[0] % NBITS_BLOCK == 0}
        kept = {*exclude, *(f"{n}_MatMul" for n in exclude)}
        weight_only = [
            n.name for n in model.graph.node if n.op_type == "MatMul" and n.name in kept and n.input[1] in blocked
        ]
        if weight_only:
            q = MatMulNBitsQuantizer(
                model, bits=8, block_size=NBITS_BLOCK, is_symmetric=True, accuracy_level=4, nodes_to_include=weight_only
            )
            q.process()
            q.model.save_model_to_file(str(dst), False)
    return {
        "scheme": "dynamic-int8",
        "per_channel": True,
        "weights": "int8",
        "weight_only_int8": weight_only,
        "kept_fp32": [n for n in exclude if n not in weight_only],
    }
