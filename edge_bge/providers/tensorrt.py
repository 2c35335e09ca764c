"""TensorRT: its shape profile, options, engine-cache key and engine cache, and how its options are planned.

The cache key covers everything an engine depends on (the model, ONNX Runtime, TensorRT, the GPU,
the profile, the options that change the engine), so that a new one never loads a stale engine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime as ort

from ..batching import MAX_BATCH_ROWS, MIN_TOKENS
from ..manifest import MODEL_NAME, Manifest, Precision, Target, sha256_file
from . import machine
from .spec import Plan, PlanContext

__all__ = [
    "CONTEXT_MODEL",
    "ENGINE_RECORD",
    "OPT_TOKENS",
    "PREBUILT_DIR",
    "PROFILE_TOKENS",
    "Engine",
    "ShapeProfile",
    "canon",
    "engine_for",
    "engine_key",
    "engine_key_parts",
    "plan",
    "profile_max",
    "shape_profile",
    "tensorrt_options",
]

log = logging.getLogger("edge_bge")

# TensorRT tunes its kernels for the opt shape: batches of sentence-to-paragraph texts.
OPT_TOKENS = 128
# TensorRT sizes an engine's activation memory for the profile's largest shape, whatever the batches
# that run, and ONNX Runtime uses only the first profile. So the box, max rows x max tokens, is held to
# PROFILE_TOKENS token positions (or the token budget, when a caller sets a larger one). In fp16 a
# position holds about 16 KiB of live activations in a 1024-wide encoder (QKV, attention output, the
# 4096-wide FFN): about 2 GiB for the box, under 1 GiB for 384/768-wide models. Attention scores come
# on top where TensorRT does not fuse attention (rows x heads x tokens^2). bge-m3 (8192 tokens) gets
# 16 rows; a 512-token model keeps all MAX_BATCH_ROWS (256) rows.
PROFILE_TOKENS = 1 << 17
CONTEXT_MODEL = "model_ctx.onnx"  # the EP-context model build_engine writes
ENGINE_RECORD = "edge_bge_engine.json"  # what it was built from, beside it
PREBUILT_DIR = "prebuilt"  # the engine of the EP-context model: its own folder, apart from the runtime's cache


@dataclass(frozen=True)
class ShapeProfile:
    """TensorRT's min / opt / max (rows, tokens), the same for every graph input."""

    min: tuple[int, int]
    opt: tuple[int, int]
    max: tuple[int, int]

    def options(self, inputs: Sequence[str]) -> dict[str, str]:
        def spec(shape: tuple[int, int]) -> str:
            return ",".join(f"{name}:{shape[0]}x{shape[1]}" for name in inputs)

        return {
            "trt_profile_min_shapes": spec(self.min),
            "trt_profile_opt_shapes": spec(self.opt),
            "trt_profile_max_shapes": spec(self.max),
        }


def shape_profile(max_length: int, max_batch_tokens: int) -> ShapeProfile:
    """The profile of a bundle's TensorRT engine: any text up to max_length tokens, and as many rows as
    the token budget and the box (``PROFILE_TOKENS`` or the budget, if larger) allow, at most
    MAX_BATCH_ROWS. The batcher cuts no batch with more rows than ``max[0]`` (``Session.providers.max_rows``):
    an input outside the profile fails on TensorRT; it is never rebuilt."""
    box = max(PROFILE_TOKENS, max_batch_tokens)
    rows = max(1, min(MAX_BATCH_ROWS, max_batch_tokens // MIN_TOKENS, box // max_length))
    opt_tokens = min(max_length, OPT_TOKENS)
    opt_rows = min(rows, max(1, max_batch_tokens // opt_tokens))
    return ShapeProfile(min=(1, 1), opt=(opt_rows, opt_tokens), max=(rows, max_length))


def profile_max(options: Mapping[str, Any]) -> tuple[int, int] | None:
    """(rows, tokens) of ``trt_profile_max_shapes`` ("input_ids:16x8192,..."): the smallest over the
    inputs; None without one or when it cannot be read (a shape of another rank, say)."""
    spec = str(options.get("trt_profile_max_shapes") or "")
    shapes = [item.rpartition(":")[2].split("x") for item in spec.split(",") if item.strip()]
    try:
        pairs = [(int(s[0]), int(s[1])) for s in shapes if len(s) == 2]
    except ValueError:
        return None
    if not pairs or len(pairs) != len(shapes):
        return None
    return min(p[0] for p in pairs), min(p[1] for p in pairs)


def _is_qdq(manifest: Manifest) -> bool:
    scheme = (manifest.optimization.get("precision") or {}).get("scheme")
    if scheme is not None:
        return scheme == "static-qdq-int8"
    return manifest.precision is Precision.INT8 and manifest.target is Target.TENSORRT


def tensorrt_options(
    manifest: Manifest, *, max_batch_tokens: int, fp16: bool = False, device_id: int = 0
) -> dict[str, Any]:
    """TensorRT options for a bundle, without the cache paths (``open_session`` adds them).

    fp16 kernels when the bundle is fp16 or ``fp16=True``; int8 for QDQ int8 bundles (the scales are
    in the graph, no calibration table); LayerNorm's Pow + ReduceMean kept fp32; engine and timing caches.
    """
    return {
        "device_id": device_id,
        "trt_fp16_enable": fp16 or manifest.precision is Precision.FP16,
        "trt_int8_enable": _is_qdq(manifest),
        "trt_layer_norm_fp32_fallback": True,
        "trt_engine_cache_enable": True,
        "trt_timing_cache_enable": True,
        **shape_profile(manifest.max_length, max_batch_tokens).options(manifest.inputs),
    }


# Options that say where caches go or what to dump; they do not change the engine.
_NOT_IN_KEY = frozenset(
    {
        "device_id",
        "trt_engine_cache_enable",
        "trt_engine_cache_path",
        "trt_timing_cache_enable",
        "trt_timing_cache_path",
        "trt_force_timing_cache",
        "trt_dump_ep_context_model",
        "trt_ep_context_file_path",
        "trt_ep_context_embed_mode",
        "trt_detailed_build_log",
        "trt_dump_subgraphs",
    }
)


def canon(value: Any) -> str:
    """An option's value as ONNX Runtime reads it: booleans (True, "false", ...) as "1" / "0"."""
    if isinstance(value, bool) or str(value).lower() in ("true", "false"):
        return "1" if str(value).lower() == "true" else "0"
    return str(value)


def engine_key_parts(
    model_sha256: str, *, profile: ShapeProfile, options: Mapping[str, Any], device_id: int = 0
) -> dict[str, Any]:
    """Everything a TensorRT engine depends on; ``None`` for a version or GPU that cannot be found."""
    return {
        "model_sha256": model_sha256,
        "onnxruntime": ort.__version__,
        "tensorrt": machine.tensorrt_version(),
        "gpu": machine.gpu_name(device_id),
        "profile": {"min": list(profile.min), "opt": list(profile.opt), "max": list(profile.max)},
        # the profile strings too: a caller's own trt_profile_* shapes must not share an engine with ours
        "options": {k: canon(v) for k, v in sorted(options.items()) if k not in _NOT_IN_KEY},
    }


def engine_key(parts: Mapping[str, Any]) -> str:
    """24 hex digits of the sha256 of the parts."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Engine:
    """The engine cache of one key: ``dir`` holds the engine (and any EP-context model); ``timing`` the
    timing cache (kernel timings, not the model: shared by all models on this TensorRT and GPU)."""

    dir: Path
    timing: Path
    key: str
    parts: dict[str, Any]

    @property
    def context_model(self) -> Path:
        return self.dir / CONTEXT_MODEL

    def prebuilt(self) -> Path | None:
        """The EP-context model when build_engine wrote one for this key and it is intact."""
        try:
            record = json.loads((self.dir / ENGINE_RECORD).read_text(encoding="utf-8"))
            intact = record["key"] == self.key and record["context_sha256"] == sha256_file(self.context_model)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return self.context_model if intact else None

    def prepare(self, *, load_prebuilt: bool) -> Path | None:
        """Create the cache directories; with ``load_prebuilt``, the pre-built EP-context model if intact."""
        prebuilt = self.prebuilt() if load_prebuilt else None
        if prebuilt is not None:
            log.info("loading the pre-built TensorRT engine in %s", self.dir)
        elif load_prebuilt and not (self.dir / "engine").is_dir():
            log.info("building a TensorRT engine for this model and GPU (once; cached in %s)", self.dir)
        (self.dir / "engine").mkdir(parents=True, exist_ok=True)
        self.timing.mkdir(parents=True, exist_ok=True)
        return prebuilt


def engine_for(manifest: Manifest, options: Mapping[str, Any], cache_root: Path, max_batch_tokens: int) -> Engine:
    """The engine cache under ``cache_root``/tensorrt for this bundle, budget and options."""
    profile = shape_profile(manifest.max_length, max_batch_tokens)
    device_id = int(options.get("device_id", 0))
    parts = engine_key_parts(manifest.files[MODEL_NAME], profile=profile, options=options, device_id=device_id)
    key = engine_key(parts)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", manifest.name).strip("-")[:64] or "model"
    timing = engine_key({"tensorrt": parts["tensorrt"], "gpu": parts["gpu"]})[:16]
    root = cache_root / "tensorrt"
    return Engine(root / f"{name}-{key}", root / "timing" / timing, key, parts)


def plan(user: dict[str, Any], context: PlanContext) -> Plan:
    """edge-bge's TensorRT options, then the caller's on top; the engine cache unless the caller names one.

    ``"fp16": True`` is edge-bge's own option (fp16 kernels on any bundle). Without a manifest and a
    budget there is no profile to plan: only the caller's options (and fp16) go through.
    """
    user = dict(user)
    fp16 = canon(user.pop("fp16", False)) == "1"
    manifest, budget = context.manifest, context.max_batch_tokens
    if manifest is None or budget is None:
        return Plan({"trt_fp16_enable": True, **user} if fp16 else user)
    options = {**tensorrt_options(manifest, max_batch_tokens=budget, fp16=fp16), **user}
    options["device_id"] = int(user.get("device_id", context.device_id))
    if manifest.target is Target.CPU:
        log.warning(
            "%s is a cpu-target graph (ONNX Runtime's fused operators): TensorRT cannot take ONNX Runtime's fused operators and leaves "
            "them to CUDA; export with --target tensorrt for TensorRT",
            manifest.name,
        )
    if "trt_engine_cache_path" in user:  # the caller's own cache path is used as given
        options.setdefault("trt_timing_cache_path", user["trt_engine_cache_path"])
        return Plan(options)
    engine = engine_for(manifest, options, context.cache_dir or machine.default_cache_dir(), budget)
    options["trt_engine_cache_path"] = str(engine.dir / "engine")
    options.setdefault("trt_timing_cache_path", str(engine.timing))
    return Plan(options, engine)
