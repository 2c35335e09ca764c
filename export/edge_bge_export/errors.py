"""Export errors: ``ExportError`` -> ``ParityError``, both under edge_bge's ``EdgeBGEError``."""

from __future__ import annotations

from edge_bge.errors import EdgeBGEError

__all__ = ["ExportError", "ParityError"]


class ExportError(EdgeBGEError):
    """The export could not produce a bundle; nothing was written."""


class ParityError(ExportError):
    """The exported graph does not match the PyTorch reference closely enough."""

    def __init__(self, message: str, *, worst_text: str = "", cosine: float = float("nan")) -> None:
        super().__init__(message)
        self.worst_text = worst_text
        self.cosine = cosine
