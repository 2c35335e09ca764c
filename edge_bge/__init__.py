"""edge-bge: BGE embedding models on ONNX Runtime, without PyTorch."""

from __future__ import annotations

import os
import sys
import warnings

# ONNX Runtime's telemetry is on by default: it writes events under ~/.cache/Microsoft and, 9 s
# after import, resolves mobile.events.data.microsoft.com. The switch is read once, when onnxruntime
# is first imported, so it is set here, before any of our modules import it. A user's own
# ORT_DISABLE_TELEMETRY value wins; EDGE_BGE_ALLOW_TELEMETRY=1 leaves ONNX Runtime's default alone.
if os.environ.get("EDGE_BGE_ALLOW_TELEMETRY", "").strip().lower() not in ("1", "true", "yes", "on"):
    if "onnxruntime" in sys.modules and "ORT_DISABLE_TELEMETRY" not in os.environ:
        warnings.warn(
            "onnxruntime was imported before edge_bge, so its telemetry could not be switched off; "
            "import edge_bge first or set ORT_DISABLE_TELEMETRY=1",
            RuntimeWarning,
            stacklevel=2,
        )
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from .embedder import Embedder  # noqa: E402
from .errors import EdgeBGEError, InferenceError, InputError, ManifestError, ModelFilesError, ProviderError
from .m3 import M3Output
from .manifest import Manifest
from .model import load
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
    "load",
]
