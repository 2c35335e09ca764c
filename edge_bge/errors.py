"""The errors edge-bge raises.

    EdgeBGEError
    ├── ManifestError      edge_bge.json missing, malformed, holding values we do not know, or
    │                      disagreeing with the graph (input/output names, types, dim)
    ├── ModelFilesError    a bundle file missing, altered (sha256), or pointing outside the bundle
    ├── ProviderError      an execution provider asked for but not loaded by ONNX Runtime
    ├── InputError         bad user input (also a ValueError): wrong types, untokenizable text
    ├── InferenceError     ONNX Runtime failed while running a batch
    └── BulkError          a bulk job that cannot start as asked: unreadable input, unusable bundle,
                           an output folder of another job (edge-bge embed --out exits 2)

The export half adds ``ExportError`` -> ``ParityError`` (``edge_bge_export.errors``).
"""

from __future__ import annotations

__all__ = [
    "BulkError",
    "EdgeBGEError",
    "InferenceError",
    "InputError",
    "ManifestError",
    "ModelFilesError",
    "ProviderError",
]


class EdgeBGEError(Exception):
    """Base class of every error edge-bge raises on purpose."""


class ManifestError(EdgeBGEError):
    """The bundle's manifest is missing, malformed, names values this runtime does not know, or
    disagrees with the graph it describes."""


class ModelFilesError(EdgeBGEError):
    """A bundle file is missing, does not match its recorded sha256, or escapes the bundle."""


class ProviderError(EdgeBGEError):
    """An execution provider was requested but ONNX Runtime did not load it."""


class InputError(EdgeBGEError, ValueError):
    """The caller's input cannot be embedded as given."""


class InferenceError(EdgeBGEError):
    """ONNX Runtime failed while running the model."""


class BulkError(EdgeBGEError):
    """The job cannot start as asked: unreadable input, unusable bundle, output of another job (exit 2)."""
