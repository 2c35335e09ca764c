"""Execution providers: which ones to ask ONNX Runtime for, with which options, and whether it gave them.

This package is the only place that knows execution-provider names and options.

- ``registry``: one entry per provider (name, aliases, IO device, "auto" order, how its options are
  planned); ``chain.resolve``: "auto" / "cpu" / "cuda" / "tensorrt" / an ONNX Runtime list -> a chain.
- ``tensorrt``: TensorRT's options, shape profile and engine cache, keyed so that a new model, ONNX
  Runtime, TensorRT, GPU or profile never loads a stale engine; ``cuda``: CUDA's options, IO binding.
- ``session``: ``open_session`` / ``SessionRequest``: the session, the providers it really got, and
  its run function (IO binding on GPUs).
- ``build``: ``build_engine``, a TensorRT engine built ahead of time (ONNX Runtime's EP-context model).
- ``machine``: what this machine offers (usable CPUs under cgroup quotas, TensorRT, the GPU, caches).
- ``placement``: where the nodes of one warm-up batch really ran (ONNX Runtime's profile), per provider.

Options the caller gives in an ONNX Runtime list (``[("TensorrtExecutionProvider", {...}), ...]``)
override edge-bge's. Import order, lowest first: spec, placement, machine, cuda, tensorrt, registry,
chain, session, build.
"""

from __future__ import annotations

from .build import EngineBuild, build_engine
from .chain import resolve, wants_gpu
from .cuda import bound_run, cuda_options
from .machine import (
    cpu_budget,
    default_cache_dir,
    default_threads,
    environment,
    gpu_name,
    preload_gpu_libraries,
    tensorrt_version,
)
from .placement import MIN_GPU_SHARE, NodeRun, Placement, shortfall
from .registry import ALIASES, AUTO_ORDER, CPU, CUDA, GPU_PROVIDERS, PROVIDERS, TRT, Provider, lookup
from .session import Session, SessionProviders, SessionRequest, open_session
from .spec import ProviderSpec, RunFn
from .tensorrt import ShapeProfile, engine_key, engine_key_parts, shape_profile, tensorrt_options

__all__ = [
    "ALIASES",
    "AUTO_ORDER",
    "MIN_GPU_SHARE",
    "CPU",
    "CUDA",
    "GPU_PROVIDERS",
    "PROVIDERS",
    "TRT",
    "EngineBuild",
    "NodeRun",
    "Placement",
    "Provider",
    "ProviderSpec",
    "RunFn",
    "Session",
    "SessionProviders",
    "SessionRequest",
    "ShapeProfile",
    "bound_run",
    "build_engine",
    "cpu_budget",
    "cuda_options",
    "default_cache_dir",
    "default_threads",
    "engine_key",
    "engine_key_parts",
    "environment",
    "gpu_name",
    "lookup",
    "open_session",
    "preload_gpu_libraries",
    "resolve",
    "shape_profile",
    "shortfall",
    "tensorrt_options",
    "tensorrt_version",
    "wants_gpu",
]
