"""The bundle manifest (``edge_bge.json``): the contract between export and runtime.

Read with the standard library only. Unknown format versions and field values are refused
with a message that lists the valid ones; pooling is always stated, never guessed.
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ManifestError, ModelFilesError
from .kinds import OUTPUTS, Kind, spec

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "Kind",
    "Manifest",
    "Pooling",
    "Precision",
    "Target",
    "sha256_file",
]

# 2: targets named "cpu" / "tensorrt" (1 said "cpu-fused" / "plain") and int8 output ranges. A runtime
# that reads only 1 refuses a 2 by its version, before any field; this one reads both.
FORMAT_VERSION = 2
READS_FORMATS = (1, 2)
MANIFEST_NAME = "edge_bge.json"
MODEL_NAME = "model.onnx"
TOKENIZER_NAME = "tokenizer.json"


class Pooling(str, enum.Enum):
    CLS = "cls"
    MEAN = "mean"


class Precision(str, enum.Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class Target(str, enum.Enum):
    """What the graph is built for; the same names as ``edge-bge export --target``."""

    CPU = "cpu"  # ONNX Runtime's transformer fusions applied: for the CPU (and CUDA) providers
    TENSORRT = "tensorrt"  # the unfused graph: TensorRT does its own fusion
    # older names, kept so that code written against them runs
    CPU_FUSED = "cpu"
    PLAIN = "tensorrt"

    @classmethod
    def _missing_(cls, value: object) -> Target | None:
        """Manifests written before the names were unified say "cpu-fused" and "plain"."""
        return {"cpu-fused": cls.CPU, "plain": cls.TENSORRT}.get(value) if isinstance(value, str) else None


_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what the runtime can feed, all int64
_REQUIRED_INPUTS = ("input_ids", "attention_mask")  # fed to every graph (batching.pad)
# The rank of each output, and whether its last axis is the manifest's dim (design: the bundle contract)
_OUTPUT_SHAPES: dict[str, tuple[int, bool]] = {
    "embedding": (2, True),  # [batch, dim]
    "dense": (2, True),  # [batch, dim]
    "sparse": (2, False),  # [batch, seq]
    "colbert": (3, True),  # [batch, seq-1, dim]
    "logits": (1, False),  # [batch]
}
_FLOAT_TYPES = ("tensor(float)", "tensor(float16)")  # both land in the runtime's float32 arrays
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _bad(name: str, expected: str, value: Any) -> ManifestError:
    return ManifestError(f"manifest field {name!r} must be {expected}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _enum(cls: type[enum.Enum], value: Any, name: str) -> Any:
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        return cls(value)
    except ValueError:
        valid = ", ".join(repr(m.value) for m in cls)  # type: ignore[attr-defined]
        raise ManifestError(f"manifest field {name!r} is {value!r}; valid values: {valid}") from None


def _text(data: dict[str, Any], name: str, *, empty: bool = False) -> str:
    value = data[name]
    if not isinstance(value, str) or (not empty and not value):
        raise _bad(name, "a string" if empty else "a non-empty string", value)
    return value


def _positive(data: dict[str, Any], name: str) -> int:
    value = data[name]
    if not _is_int(value) or value < 1:
        raise _bad(name, "a positive integer", value)
    return value


def _names(data: dict[str, Any], name: str) -> tuple[str, ...]:
    value = data[name]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or len(set(value)) != len(value):
        raise _bad(name, "a list of distinct strings", value)
    return tuple(value)


def _object(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(name, "a JSON object or null", value)
    return dict(value)


_NUMBER_LIST = re.compile(r"\[\n[-+0-9.eE,\s]*\]")


def _ranges(value: Any) -> dict[str, list[float]] | None:
    """``quantization_ranges``: null, or {"min": [dim numbers], "max": [dim numbers]} with min <= max
    (the length is checked against the graph's dim in ``check_session``)."""
    if value is None:
        return None
    expected = 'null or {"min": [dim numbers], "max": [dim numbers]} with min <= max'
    if not isinstance(value, dict) or set(value) != {"min", "max"}:
        raise _bad("quantization_ranges", expected, value if not isinstance(value, dict) else sorted(value))
    low, high = value["min"], value["max"]
    for side in (low, high):
        if (
            not isinstance(side, list)
            or len(side) != len(low)
            or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in side)
        ):
            got = f"a list of {len(side)} values" if isinstance(side, list) else side
            raise _bad("quantization_ranges", expected, got)
    if any(a > b for a, b in zip(low, high, strict=True)):
        raise _bad("quantization_ranges", expected, "min > max in some dimension")
    return {"min": [float(v) for v in low], "max": [float(v) for v in high]}


def sha256_file(path: str | os.PathLike[str], *, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Manifest:
    """What a bundle is: kind, graph flavour, shapes, and how it was verified."""

    name: str
    kind: Kind
    architecture: str
    precision: Precision
    target: Target
    dim: int
    max_length: int
    pooling: Pooling | None  # None only for rerankers, whose head reads CLS itself
    normalize: bool
    query_instruction: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    files: dict[str, str]  # file name -> sha256
    parity: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    exported_with: dict[str, str] = field(default_factory=dict)
    optimization: dict[str, Any] = field(default_factory=dict)  # fused-operator counts, quantization
    # bge-m3: token ids that never get a lexical weight (FlagEmbedding: cls, eos, pad, unk)
    special_token_ids: tuple[int, ...] = ()
    # rerankers: query tokens kept before the pair is built (FlagReranker: 3/4 of max_length)
    query_max_length: int | None = None
    # embedders: per-dimension {"min": [dim], "max": [dim]} of the vectors of the export's calibration
    # texts, for int8/uint8 output (edge_bge.quantize); None in bundles exported before they were recorded
    quantization_ranges: dict[str, list[float]] | None = None
    format_version: int = FORMAT_VERSION

    # ---- (de)serialisation -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """A manifest from parsed JSON; ManifestError naming the field for any value of the wrong type."""
        if not isinstance(data, dict):
            raise ManifestError("manifest must be a JSON object")
        version = data.get("format_version")
        if not _is_int(version) or version not in READS_FORMATS:
            reads = ", ".join(map(str, READS_FORMATS))
            raise ManifestError(
                f"manifest format_version is {version!r}; this runtime reads: {reads} (a newer bundle needs a newer edge-bge)"
            )
        required = (
            "name kind architecture precision target dim max_length pooling normalize "
            "query_instruction inputs outputs files"
        ).split()
        missing = [k for k in required if k not in data]
        if missing:
            raise ManifestError(f"manifest lacks required fields: {', '.join(missing)}")
        kind = _enum(Kind, data["kind"], "kind")
        pooling = None if data["pooling"] is None else _enum(Pooling, data["pooling"], "pooling")
        if pooling is None and spec(kind).pooled:
            valid = ", ".join(repr(p.value) for p in Pooling)
            raise ManifestError(f"manifest field 'pooling' must be stated for kind {kind.value!r}: {valid}")
        if not isinstance(data["normalize"], bool):
            raise _bad("normalize", "true or false", data["normalize"])
        if data["query_instruction"] is not None and not isinstance(data["query_instruction"], str):
            raise _bad("query_instruction", "a string or null", data["query_instruction"])
        inputs = _names(data, "inputs")
        for name in inputs:
            if name not in _INPUTS:
                raise ManifestError(
                    f"manifest field 'inputs' names {name!r}; valid: {', '.join(repr(i) for i in _INPUTS)}"
                )
        absent = [name for name in _REQUIRED_INPUTS if name not in inputs]
        if absent:
            raise ManifestError(f"manifest field 'inputs' is {list(inputs)}; it must list {', '.join(absent)}")
        outputs = _names(data, "outputs")
        if outputs != OUTPUTS[kind]:
            raise ManifestError(
                f"manifest field 'outputs' is {list(outputs)}; kind {kind.value!r} has: {list(OUTPUTS[kind])}"
            )
        files = data["files"]
        if (
            not isinstance(files, dict)
            or MODEL_NAME not in files
            or TOKENIZER_NAME not in files
            or not all(isinstance(v, str) and _SHA256.fullmatch(v) for v in files.values())
        ):
            raise _bad(
                "files",
                f"an object listing {MODEL_NAME}, {TOKENIZER_NAME} and any other file with its sha256 (64 hex digits)",
                files,
            )
        exported_with = _object(data, "exported_with")
        if not all(isinstance(v, str) for v in exported_with.values()):
            raise _bad("exported_with", "an object of tool name -> version string", exported_with)
        special = data.get("special_token_ids")
        if special is None:
            special = []
        if not isinstance(special, list) or not all(_is_int(i) and i >= 0 for i in special):
            raise _bad("special_token_ids", "a list of token ids (non-negative integers)", special)
        query_max_length = data.get("query_max_length")
        if query_max_length is not None and (not _is_int(query_max_length) or query_max_length < 1):
            raise _bad("query_max_length", "a positive integer or null", query_max_length)
        return cls(
            name=_text(data, "name"),
            kind=kind,
            architecture=_text(data, "architecture"),
            precision=_enum(Precision, data["precision"], "precision"),
            target=_enum(Target, data["target"], "target"),
            dim=_positive(data, "dim"),
            max_length=_positive(data, "max_length"),
            pooling=pooling,
            normalize=data["normalize"],
            query_instruction=data["query_instruction"] or "",
            inputs=inputs,
            outputs=outputs,
            files=dict(files),
            parity=_object(data, "parity"),
            source=_object(data, "source"),
            exported_with=exported_with,
            optimization=_object(data, "optimization"),
            special_token_ids=tuple(special),
            query_max_length=query_max_length,
            quantization_ranges=_ranges(data.get("quantization_ranges")),
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("kind", "precision", "target", "pooling"):
            value = out[key]
            out[key] = value.value if isinstance(value, enum.Enum) else value
        out["inputs"] = list(self.inputs)
        out["outputs"] = list(self.outputs)
        out["special_token_ids"] = list(self.special_token_ids)
        return {"format_version": out.pop("format_version"), **out}

    def dumps(self) -> str:
        text = json.dumps(self.to_dict(), indent=2, ensure_ascii=False)
        # lists of numbers (token ids, ranges) on one line each; JSON strings hold no raw newline
        return _NUMBER_LIST.sub(lambda m: json.dumps(json.loads(m.group(0))), text) + "\n"

    # ---- bundle access -----------------------------------------------------------------------
    @classmethod
    def load(cls, bundle: str | os.PathLike[str]) -> Manifest:
        """Read ``<bundle>/edge_bge.json``."""
        path = Path(bundle) / MANIFEST_NAME
        if not Path(bundle).is_dir():
            raise ModelFilesError(f"bundle directory not found: {bundle}")
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ManifestError(f"{path} not found: is {bundle} an edge-bge bundle?") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ManifestError(f"{path} is not valid JSON: {e}") from None
        return cls.from_dict(data)

    def verify_files(self, bundle: str | os.PathLike[str]) -> None:
        """Check that every listed file exists inside the bundle with its recorded sha256."""
        root = Path(bundle).resolve()
        for name, digest in self.files.items():
            path = (root / name).resolve()
            if not path.is_relative_to(root):
                raise ModelFilesError(f"manifest file {name!r} lies outside the bundle directory")
            if not path.is_file():
                raise ModelFilesError(f"bundle file missing: {path}")
            actual = sha256_file(path)
            if actual != digest:
                raise ModelFilesError(
                    f"{name} does not match the manifest (sha256 {actual[:12]}..., expected {digest[:12]}...): "
                    "the bundle was altered or copied incompletely"
                )

    def check_session(self, session: Any) -> None:
        """Check this manifest against the graph ONNX Runtime loaded (an ``InferenceSession``): input
        names and types, each output's name, type, rank, and static size of the ``dim`` axis."""
        graph_inputs = {i.name: i for i in session.get_inputs()}
        if set(graph_inputs) != set(self.inputs):
            raise ManifestError(
                f"manifest field 'inputs' is {list(self.inputs)}; the graph's inputs are {list(graph_inputs)}"
            )
        for i in graph_inputs.values():
            if i.type != "tensor(int64)":
                raise ManifestError(
                    f"manifest field 'inputs': graph input {i.name!r} is {i.type}, expected tensor(int64)"
                )
            if i.shape and len(i.shape) != 2:  # an empty shape: unknown rank
                raise ManifestError(
                    f"manifest field 'inputs': graph input {i.name!r} has shape {i.shape}, expected [batch, sequence]"
                )
        graph_outputs = {o.name: o for o in session.get_outputs()}
        missing = [name for name in self.outputs if name not in graph_outputs]
        if missing:
            raise ManifestError(
                f"manifest field 'outputs' is {list(self.outputs)}; the graph's outputs are {list(graph_outputs)}"
            )
        for name in self.outputs:
            out = graph_outputs[name]
            if out.type not in _FLOAT_TYPES:
                raise ManifestError(
                    f"manifest field 'outputs': graph output {name!r} is {out.type}, expected {' or '.join(_FLOAT_TYPES)}"
                )
            rank, has_dim = _OUTPUT_SHAPES[name]
            shape = list(out.shape) if out.shape is not None else None
            if not shape:  # unknown rank: ONNX Runtime checks at run time
                continue
            column = name == "logits" and len(shape) == 2 and shape[-1] == 1  # [batch, 1] reads as [batch]
            if len(shape) != rank and not column:
                raise ManifestError(
                    f"manifest field 'outputs': graph output {name!r} has shape {shape}, expected rank {rank}"
                )
            if has_dim and _is_int(shape[-1]) and shape[-1] != self.dim:
                raise ManifestError(
                    f"manifest field 'dim' is {self.dim}; the graph's {name!r} output has {shape[-1]} (shape {shape})"
                )
        if self.quantization_ranges is not None and len(self.quantization_ranges["min"]) != self.dim:
            raise ManifestError(
                f"manifest field 'quantization_ranges' covers {len(self.quantization_ranges['min'])} dimensions; dim is {self.dim}"
            )
