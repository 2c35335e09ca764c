"""CUDA: the CUDA provider's options, and IO binding for every provider that runs on a device."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnxruntime as ort

from .spec import PlanContext, RunFn

__all__ = ["bound_run", "cuda_options", "defaults"]


def cuda_options(
    *, device_id: int = 0, gpu_mem_limit: int | None = None, arena_extend_strategy: str = "kSameAsRequested"
) -> dict[str, Any]:
    """CUDA options. kSameAsRequested grows the memory arena by what a batch needs, not the next power
    of two: batches of varying shape waste less memory on small GPUs. gpu_mem_limit caps the arena (bytes)."""
    options: dict[str, Any] = {"device_id": device_id, "arena_extend_strategy": arena_extend_strategy}
    if gpu_mem_limit is not None:
        options["gpu_mem_limit"] = int(gpu_mem_limit)
    return options


def defaults(context: PlanContext) -> dict[str, Any]:
    """edge-bge's CUDA options for a chain: the chain's GPU, the arena grown by what a batch needs."""
    return cuda_options(device_id=context.device_id)


def bound_run(session: ort.InferenceSession, *, device_type: str, device_id: int = 0) -> RunFn:
    """run(outputs, feeds) through IO binding on ``device_type`` (an OrtValue device: "cuda", "cpu"):
    each input is copied to the device once, the outputs stay there until the graph ends, and only
    the requested outputs ([batch, dim] for an embedder) come back."""

    def run(outputs: Sequence[str], feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        binding = session.io_binding()
        values = []  # the device copies must outlive the run
        for name, array in feeds.items():
            values.append(ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), device_type, device_id))
            binding.bind_ortvalue_input(name, values[-1])
        for name in outputs:
            binding.bind_output(name, device_type, device_id)
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    return run
