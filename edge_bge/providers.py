"""Execution providers: which ones to ask ONNX Runtime for, and whether it gave them.

This is the only module that knows execution-provider names and options.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import onnxruntime as ort

from .errors import ProviderError

__all__ = ["ALIASES", "AUTO_ORDER", "resolve", "make_session", "default_threads"]

log = logging.getLogger("edge_bge")

ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
AUTO_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")

ProviderSpec = str | tuple[str, dict[str, Any]]


def default_threads() -> int:
    """The cores this process may run on (respects taskset / cgroup cpusets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve(requested: str | Sequence[ProviderSpec], available: Sequence[str]) -> list[ProviderSpec]:
    """Turn "auto" / "cpu" / "cuda" / "tensorrt" / an explicit ORT list into a provider chain."""
    if isinstance(requested, str):
        key = requested.lower()
        if key == "auto":
            return [p for p in AUTO_ORDER if p in available]
        if key in ALIASES:
            chain: list[ProviderSpec] = [ALIASES[key]]
        elif requested in AUTO_ORDER or requested.endswith("ExecutionProvider"):
            chain = [requested]
        else:
            raise ProviderError(
                f"unknown provider {requested!r}; use 'auto', {', '.join(map(repr, ALIASES))} or an ONNX Runtime list"
            )
    else:
        chain = list(requested)
    if not chain:
        raise ProviderError("the provider list is empty")
    return chain


def _name(spec: ProviderSpec) -> str:
    return spec if isinstance(spec, str) else spec[0]


def make_session(
    model_path: str,
    *,
    providers: str | Sequence[ProviderSpec] = "auto",
    threads: int | None = None,
    strict: bool = True,
) -> ort.InferenceSession:
    """One InferenceSession with explicit options; ProviderError if a requested provider did not load."""
    available = ort.get_available_providers()
    chain = resolve(providers, available)
    wanted = [_name(s) for s in chain]
    if strict:
        absent = [p for p in wanted if p not in available]
        if absent:
            raise ProviderError(
                f"{', '.join(absent)} not available in this ONNX Runtime build (available: {', '.join(available)}); "
                "for GPUs install edge-bge[gpu] and make sure only onnxruntime-gpu is installed, not also onnxruntime"
            )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model_path, sess_options=options, providers=chain)
    except Exception as e:  # ORT raises its own exception types without a common base
        raise ProviderError(f"ONNX Runtime could not create a session on {wanted}: {e}") from e
    got = session.get_providers()
    missing = [p for p in wanted if p not in got and p != "CPUExecutionProvider"]
    auto = isinstance(providers, str) and providers.lower() == "auto"
    if missing:
        if strict and not auto:
            raise ProviderError(
                f"requested {', '.join(missing)} but ONNX Runtime loaded only {', '.join(got)} "
                "(see ONNX Runtime's log above for the reason; often missing CUDA/TensorRT libraries)"
            )
        log.warning("requested %s; running on %s", ", ".join(missing), ", ".join(got))
    return session
