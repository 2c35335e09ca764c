"""Recipes: one TOML per known model in ``models/``, read into a frozen dataclass.

A recipe says where the checkpoint comes from and everything the export must not guess:
architecture, kind, pooling, normalisation, max_length, dim, query instruction, parity gates.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomllib

from edge_bge.manifest import Kind, Pooling, Precision, Target

from .errors import ExportError

# Default gates: cosine to the PyTorch reference over the probe set (int8: probes plus the
# calibration texts). A recipe may only tighten.
DEFAULT_PARITY: dict[str, dict[str, float]] = {
    Precision.FP32.value: {"min": 0.99999},
    Precision.FP16.value: {"min": 0.999},
    Precision.INT8.value: {"min": 0.995, "mean": 0.998},
}
# TensorRT's int8 is static (one fixed scale per activation tensor, as TensorRT requires): it
# cannot follow each token's range the way the CPU target's row-wise int8 does, so its gate is wider.
TENSORRT_INT8_PARITY = {"min": 0.99, "mean": 0.995}


def models_dir() -> Path:
    """``$EDGE_BGE_MODELS``, else the repository's ``models/`` beside this package."""
    env = os.environ.get("EDGE_BGE_MODELS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "models"


@dataclass(frozen=True)
class Recipe:
    name: str
    architecture: str  # config.json model_type: "bert" or "xlm-roberta"
    kind: Kind
    pooling: Pooling | None  # rerankers have none: the classification head reads CLS
    normalize: bool
    max_length: int  # the reference's truncation, in tokens including special tokens
    dim: int | None = None  # checked against the checkpoint when given
    query_instruction: str = ""
    source: str = ""  # hub id (also recorded in the manifest)
    revision: str = "main"
    package: str = ""  # an installed Python package that carries the checkpoint ...
    package_path: str = ""  # ... in this sub-folder
    heads: dict[str, str] = field(default_factory=dict)  # bge-m3: {"colbert": file, "sparse": file}
    parity: dict[str, dict[str, float]] = field(default_factory=dict)

    def gate(self, precision: Precision, *, target: Target = Target.CPU_FUSED) -> dict[str, float]:
        """The parity thresholds for a precision and target: the defaults, tightened by the recipe."""
        plain_int8 = precision is Precision.INT8 and target is Target.PLAIN
        gate = dict(TENSORRT_INT8_PARITY if plain_int8 else DEFAULT_PARITY[precision.value])
        for key, value in self.parity.get(precision.value, {}).items():
            gate[key] = max(gate.get(key, 0.0), float(value))
        return gate

    def with_overrides(self, **kw: Any) -> Recipe:
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


def from_mapping(data: dict[str, Any], *, where: str) -> Recipe:
    def enum(cls: Any, key: str) -> Any:
        try:
            return cls(data[key])
        except ValueError:
            valid = ", ".join(m.value for m in cls)
            raise ExportError(f"{where}: {key} = {data[key]!r} is not one of: {valid}") from None

    for key in ("name", "architecture", "kind", "normalize", "max_length"):
        if key not in data:
            raise ExportError(f"{where}: missing required key {key!r}")
    kind = enum(Kind, "kind")
    if kind is not Kind.RERANKER and "pooling" not in data:
        raise ExportError(f"{where}: 'pooling' must be stated for kind {kind.value!r} (cls or mean)")
    parity = data.get("parity", {})
    for precision in parity:
        if precision not in DEFAULT_PARITY:
            raise ExportError(f"{where}: parity.{precision} unknown; valid: {', '.join(DEFAULT_PARITY)}")
    return Recipe(
        name=str(data["name"]),
        architecture=str(data["architecture"]),
        kind=kind,
        pooling=enum(Pooling, "pooling") if "pooling" in data else None,
        normalize=bool(data["normalize"]),
        max_length=int(data["max_length"]),
        dim=int(data["dim"]) if "dim" in data else None,
        query_instruction=str(data.get("query_instruction", "")),
        source=str(data.get("source", "")),
        revision=str(data.get("revision", "main")),
        package=str(data.get("package", "")),
        package_path=str(data.get("package_path", "")),
        heads={str(k): str(v) for k, v in data.get("heads", {}).items()},
        parity={p: {k: float(v) for k, v in g.items()} for p, g in parity.items()},
    )


def list_recipes() -> list[str]:
    return sorted(p.stem for p in models_dir().glob("*.toml"))


def load_recipe(name: str) -> Recipe:
    path = models_dir() / f"{name}.toml"
    if not path.is_file():
        raise ExportError(f"unknown recipe {name!r}; known recipes: {', '.join(list_recipes()) or '(none)'}")
    with path.open("rb") as f:
        try:
            data = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ExportError(f"{path}: {e}") from None
    return from_mapping(data, where=str(path))
