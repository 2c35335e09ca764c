"""Recipes: one TOML per known model, read into a frozen dataclass.

A recipe says where the checkpoint comes from and everything the export must not guess:
architecture, kind, pooling, normalisation, max_length, dim, query instruction, parity gates.

The built-in recipes ship inside this package (``edge_bge_export/data/recipes/*.toml``, read with
importlib.resources, so an installed wheel has them). ``$EDGE_BGE_MODELS`` names a folder of the
user's own recipes, added to the built-ins; one with a built-in's name replaces it (with a warning),
so a site can pin another revision, tighten a gate or point ``package`` at its own weights.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import tomllib

from edge_bge.kinds import spec
from edge_bge.manifest import Kind, Pooling, Precision, Target

from .errors import ExportError

log = logging.getLogger("edge_bge")

USER_RECIPES_ENV = "EDGE_BGE_MODELS"

# Default gates: cosine to the PyTorch reference over the probe set (int8: probes plus the
# calibration texts), per text ("min") and on average ("mean"). A recipe may only tighten.
DEFAULT_PARITY: dict[str, dict[str, float]] = {
    Precision.FP32.value: {"min": 0.99999},
    Precision.FP16.value: {"min": 0.999},
    Precision.INT8.value: {"min": 0.995, "mean": 0.998},
}
# Heads scored by one correlation over the probe pairs (rerankers' logits; see heads.Head.metric)
# have a single figure, so a single gate: "min" applies to the Pearson correlation itself.
PEARSON_PARITY: dict[str, dict[str, float]] = {
    Precision.FP32.value: {"min": 0.99999},
    Precision.FP16.value: {"min": 0.999},
    Precision.INT8.value: {"min": 0.998},
}
# TensorRT's int8 is static (one fixed scale per activation tensor, as TensorRT requires): it
# cannot follow each token's range the way the CPU target's row-wise int8 does, so its gate is wider.
TENSORRT_INT8_PARITY = {"min": 0.99, "mean": 0.995}


def data_file(*parts: str) -> Traversable:
    """A file shipped in ``edge_bge_export/data/`` (recipes, calibration texts)."""
    return resources.files("edge_bge_export").joinpath("data", *parts)


def user_recipes_dir() -> Path | None:
    """The folder ``$EDGE_BGE_MODELS`` names, or None when it is unset."""
    value = os.environ.get(USER_RECIPES_ENV, "").strip()
    if not value:
        return None
    path = Path(value).expanduser()
    if not path.is_dir():
        raise ExportError(f"{USER_RECIPES_ENV}={value!r} is not a directory (a folder of recipes, one NAME.toml each)")
    return path


def _builtin_recipes() -> dict[str, Traversable]:
    return {f.name[: -len(".toml")]: f for f in data_file("recipes").iterdir() if f.name.endswith(".toml")}


def _user_recipes() -> dict[str, Path]:
    user = user_recipes_dir()
    return {} if user is None else {p.stem: p for p in sorted(user.glob("*.toml")) if p.is_file()}


def recipe_files() -> dict[str, Traversable]:
    """Recipe name -> its TOML file: the built-ins, then ``$EDGE_BGE_MODELS`` (which wins on a name clash)."""
    return {**_builtin_recipes(), **_user_recipes()}


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
    revision: str | None = None  # a hub branch, tag or commit; None: the default branch (the commit is recorded)
    package: str = ""  # an installed Python package that carries the checkpoint ...
    package_path: str = ""  # ... in this sub-folder
    heads: dict[str, str] = field(default_factory=dict)  # bge-m3: {"colbert": file, "sparse": file}
    parity: dict[str, dict[str, float]] = field(default_factory=dict)

    def gate(self, precision: Precision, *, target: Target = Target.CPU, metric: str = "cosine") -> dict[str, float]:
        """The parity thresholds for a precision, target and metric ("cosine" or "pearson", the head's):
        the defaults, tightened by the recipe."""
        plain_int8 = precision is Precision.INT8 and target is Target.TENSORRT
        if metric == "pearson":
            gate = {"min": TENSORRT_INT8_PARITY["mean"]} if plain_int8 else dict(PEARSON_PARITY[precision.value])
        else:
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
    if spec(kind).pooled and "pooling" not in data:
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
        revision=str(data["revision"]) if "revision" in data else None,
        package=str(data.get("package", "")),
        package_path=str(data.get("package_path", "")),
        heads={str(k): str(v) for k, v in data.get("heads", {}).items()},
        parity={p: {k: float(v) for k, v in g.items()} for p, g in parity.items()},
    )


def list_recipes() -> list[str]:
    return sorted(recipe_files())


def is_recipe(name: str) -> bool:
    return name in recipe_files()


def load_recipe(name: str) -> Recipe:
    builtin, user = _builtin_recipes(), _user_recipes()
    path = user.get(name) or builtin.get(name)
    if path is None:
        known = ", ".join(sorted({**builtin, **user})) or "(none)"
        raise ExportError(f"unknown recipe {name!r}; known recipes: {known}")
    if name in user and name in builtin:
        log.warning("recipe %s: using %s from %s instead of the built-in one", name, path, USER_RECIPES_ENV)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ExportError(f"{path}: {e}") from None
    return from_mapping(data, where=str(path))
