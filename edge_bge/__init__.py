"""edge-bge: BGE embedding models on ONNX Runtime, without PyTorch."""

from __future__ import annotations

from .embedder import Embedder
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
