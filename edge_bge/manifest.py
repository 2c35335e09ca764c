"""The bundle manifest (``edge_bge.json``): the contract between export and runtime.

Read with the standard library only. Unknown format versions and field values are refused
with a message that lists the valid ones; pooling is always stated, never guessed.
"""

from __future__ import annotations

import enum
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ManifestError, ModelFilesError

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

FORMAT_VERSION = 1
MANIFEST_NAME = "edge_bge.json"
MODEL_NAME = "model.onnx"
TOKENIZER_NAME = "tokenizer.json"


class Kind(str, enum.Enum):
    EMBEDDING = "embedding"
    M3 = "m3"
    RERANKER = "reranker"


class Pooling(str, enum.Enum):
    CLS = "cls"
    MEAN = "mean"


class Precision(str, enum.Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class Target(str, enum.Enum):
    CPU_FUSED = "cpu-fused"  # ONNX Runtime's transformer fusions applied: for the CPU/CUDA providers
    PLAIN = "plain"  # unfused graph: TensorRT does its own fusion


# The outputs each kind's graph must have, in order.
OUTPUTS: dict[Kind, tuple[str, ...]] = {
    Kind.EMBEDDING: ("embedding",),
    Kind.M3: ("dense", "sparse", "colbert"),
    Kind.RERANKER: ("logits",),
}


def _enum(cls: type[enum.Enum], value: Any, name: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        valid = ", ".join(repr(m.value) for m in cls)  # type: ignore[attr-defined]
        raise ManifestError(f"manifest field {name!r} is {value!r}; valid values: {valid}") from None


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
    format_version: int = FORMAT_VERSION

    # ---- (de)serialisation -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        if not isinstance(data, dict):
            raise ManifestError("manifest must be a JSON object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ManifestError(f"manifest format_version is {version!r}; this runtime reads: {FORMAT_VERSION}")
        required = (
            "name kind architecture precision target dim max_length pooling normalize "
            "query_instruction inputs outputs files"
        ).split()
        missing = [k for k in required if k not in data]
        if missing:
            raise ManifestError(f"manifest lacks required fields: {', '.join(missing)}")
        kind = _enum(Kind, data["kind"], "kind")
        pooling = None if data["pooling"] is None else _enum(Pooling, data["pooling"], "pooling")
        if pooling is None and kind is not Kind.RERANKER:
            valid = ", ".join(repr(p.value) for p in Pooling)
            raise ManifestError(f"manifest field 'pooling' must be stated for kind {kind.value!r}: {valid}")
        for key in ("dim", "max_length"):
            if not isinstance(data[key], int) or isinstance(data[key], bool) or data[key] < 1:
                raise ManifestError(f"manifest field {key!r} must be a positive integer, got {data[key]!r}")
        if not isinstance(data["normalize"], bool):
            raise ManifestError(f"manifest field 'normalize' must be true or false, got {data['normalize']!r}")
        inputs = tuple(data["inputs"])
        outputs = tuple(data["outputs"])
        for name in inputs:
            if name not in ("input_ids", "attention_mask", "token_type_ids"):
                raise ManifestError(
                    f"manifest input {name!r} unknown; valid: 'input_ids', 'attention_mask', 'token_type_ids'"
                )
        if outputs != OUTPUTS[kind]:
            raise ManifestError(
                f"manifest outputs {list(outputs)} do not match kind {kind.value!r}: {list(OUTPUTS[kind])}"
            )
        files = data["files"]
        if not isinstance(files, dict) or MODEL_NAME not in files or TOKENIZER_NAME not in files:
            raise ManifestError(f"manifest 'files' must list {MODEL_NAME} and {TOKENIZER_NAME} with their sha256")
        return cls(
            name=str(data["name"]),
            kind=kind,
            architecture=str(data["architecture"]),
            precision=_enum(Precision, data["precision"], "precision"),
            target=_enum(Target, data["target"], "target"),
            dim=data["dim"],
            max_length=data["max_length"],
            pooling=pooling,
            normalize=data["normalize"],
            query_instruction=str(data["query_instruction"] or ""),
            inputs=inputs,
            outputs=outputs,
            files={str(k): str(v) for k, v in files.items()},
            parity=dict(data.get("parity") or {}),
            source=dict(data.get("source") or {}),
            exported_with=dict(data.get("exported_with") or {}),
            optimization=dict(data.get("optimization") or {}),
            special_token_ids=tuple(int(i) for i in data.get("special_token_ids") or ()),
            query_max_length=int(data["query_max_length"]) if data.get("query_max_length") else None,
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
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

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
