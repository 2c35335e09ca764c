"""edge-bge: BGE embedding models on ONNX Runtime, without PyTorch."""

from __future__ import annotations

import os

# ONNX Runtime's telemetry is on by default: it resolves a Microsoft host and writes events under
# ~/.cache/Microsoft. The switch is read once, when onnxruntime is first imported, so it is set
# here, before any of our modules import it. A user's own ORT_DISABLE_TELEMETRY value wins.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from .embedder import Embedder  # noqa: E402
from .errors import EdgeBGEError, InferenceError, InputError, ManifestError, ModelFilesError, ProviderError
from .m3 import M3Output
from .manifest import Manifest
from .reranker import Reranker, RerankResult

__version__ = "0.1.0"

__all__ = [
    "EdgeBGEError",
    "Embedder",
    "InferenceError",
    "InputError",
    "M3Output",
    "Manifest",
    "ManifestError",
    "ModelFilesError",
    "ProviderError",
    "RerankResult",
    "Reranker",
    "__version__",
]
