"""edge-bge: BGE embedding models on ONNX Runtime, without PyTorch."""

from __future__ import annotations

from .embedder import Embedder
from .errors import EdgeBGEError, InferenceError, InputError, ManifestError, ModelFilesError, ProviderError
from .manifest import Manifest

__version__ = "0.1.0"

__all__ = [
    "EdgeBGEError",
    "Embedder",
    "InferenceError",
    "InputError",
    "Manifest",
    "ManifestError",
    "ModelFilesError",
    "ProviderError",
    "__version__",
]
