"""The shapes shared by the provider modules: a provider request, a plan's input and its result."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..manifest import Manifest

__all__ = ["ModelCache", "Plan", "PlanContext", "ProviderSpec", "RunFn", "name_of", "options_of"]

# A provider as users give it: an alias or ONNX Runtime name, or (ONNX Runtime name, options).
ProviderSpec = str | tuple[str, dict[str, Any]]
# run(output names, feeds) -> the outputs, as the Embedder calls a session.
RunFn = Callable[[Sequence[str], Mapping[str, np.ndarray]], list[np.ndarray]]


def name_of(spec: ProviderSpec) -> str:
    """The provider's ONNX Runtime name."""
    return spec if isinstance(spec, str) else spec[0]


def options_of(spec: ProviderSpec) -> dict[str, Any]:
    """A copy of the caller's options for the provider ({} for a bare name)."""
    return {} if isinstance(spec, str) else dict(spec[1])


@dataclass(frozen=True)
class PlanContext:
    """What planning a provider's options may depend on, the same for every provider of a chain."""

    manifest: Manifest | None  # the bundle's; None: a bare model path, edge-bge's defaults only
    max_batch_tokens: int | None  # the batch token budget (TensorRT's shape profile follows from it)
    cache_dir: Path | None  # root of edge-bge's caches; None: machine.default_cache_dir()
    device_id: int  # the GPU of every device provider whose own options do not name one


class ModelCache(Protocol):
    """A provider's on-disk cache (TensorRT's engines), made ready before the session opens."""

    def prepare(self, *, load_prebuilt: bool) -> Path | None:
        """Create its directories; the pre-built model to load instead of the bundle's, if any."""
        ...


@dataclass(frozen=True)
class Plan:
    """A provider's planned options, and the cache they point at (if any)."""

    options: dict[str, Any]
    cache: ModelCache | None = None
