"""Compact vectors: float16, int8 / uint8 by per-dimension ranges, and packed binary.

The conventions are sentence-transformers' ``quantize_embeddings``, so vectors stored by either
library compare with each other:

- ``float32``: as the model gives them; ``float16``: a plain cast.
- ``uint8`` / ``int8``: each dimension's (min, max) range, measured on calibration embeddings,
  is cut into 255 steps; a value becomes ``floor((x - min) / step)`` clipped to 0..255 (``uint8``),
  minus 128 for ``int8``. A dimension with min == max gets a step of 1.
- ``ubinary``: one bit per dimension (x > 0), 8 to a byte, most significant first (``np.packbits``):
  [n, ceil(dim / 8)] uint8. ``binary`` is the same bytes minus 128, as int8.

The ranges come from the bundle: the export embeds its calibration texts and records each
dimension's min and max in the manifest (``quantization_ranges``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["DTYPES", "calibration_ranges", "check_dtype", "output_width", "quantize", "quantizer", "ranges_array"]

DTYPES = ("float32", "float16", "int8", "uint8", "binary", "ubinary")
_NEEDS_RANGES = ("int8", "uint8")
_STEPS = 255  # uint8 levels above the minimum: 256 values

Ranges = np.ndarray | Mapping[str, Sequence[float]]


def check_dtype(dtype: Any) -> str:
    """``dtype`` itself when it is one of DTYPES; InputError listing them otherwise."""
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; accepted: {', '.join(DTYPES)}")
    return dtype


def output_width(dim: int, dtype: str) -> int:
    """Values per vector in ``dtype``: ``dim``, or ceil(dim / 8) bytes for the binary types."""
    return (dim + 7) // 8 if check_dtype(dtype).endswith("binary") else dim


def calibration_ranges(vectors: np.ndarray) -> dict[str, list[float]]:
    """Per-dimension ``{"min": [...], "max": [...]}`` of float [n, dim] calibration vectors, as float32
    values written in their shortest form (they read back bit for bit)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) == 0:
        raise InputError(f"calibration vectors must be a non-empty [n, dim] array, got shape {vectors.shape}")
    if not np.isfinite(vectors).all():
        raise InputError("calibration vectors hold NaN or Inf")
    return {
        "min": [float(str(v)) for v in vectors.min(axis=0)],
        "max": [float(str(v)) for v in vectors.max(axis=0)],
    }


def ranges_array(ranges: Ranges, dim: int | None = None) -> np.ndarray:
    """float32 [2, dim] (row 0: min, row 1: max) from a [2, dim] array or a ``{"min", "max"}`` mapping."""
    if isinstance(ranges, Mapping):
        if set(ranges) != {"min", "max"}:
            raise InputError(f"ranges must have the keys 'min' and 'max', got {sorted(ranges)}")
        ranges = np.array([ranges["min"], ranges["max"]], dtype=np.float32)
    out = np.asarray(ranges, dtype=np.float32)
    if out.ndim != 2 or out.shape[0] != 2:
        raise InputError(f"ranges must be [2, dim] (min row, max row), got shape {out.shape}")
    if dim is not None and out.shape[1] != dim:
        raise InputError(f"ranges cover {out.shape[1]} dimensions, the vectors have {dim}")
    if not np.isfinite(out).all() or (out[0] > out[1]).any():
        raise InputError("ranges must be finite with min <= max in every dimension")
    return out


def quantize(vectors: np.ndarray, dtype: str, *, ranges: Ranges | None = None) -> np.ndarray:
    """``vectors`` (float [n, dim] or [dim]) in ``dtype``: [n, dim] or [n, ceil(dim / 8)] for the binary types.

    ``ranges`` ([2, dim] or ``{"min", "max"}``) is required for int8 and uint8."""
    check_dtype(dtype)
    vectors = np.asarray(vectors)
    if not np.issubdtype(vectors.dtype, np.floating):
        raise InputError(f"only float vectors can be quantized, got {vectors.dtype}")
    if vectors.ndim == 1:
        return quantize(vectors[None, :], dtype, ranges=ranges)[0]
    if vectors.ndim != 2:
        raise InputError(f"vectors must be [n, dim] or [dim], got shape {vectors.shape}")
    if dtype == "float32":
        return vectors.astype(np.float32, copy=False)
    if dtype == "float16":
        return vectors.astype(np.float16)
    if dtype in _NEEDS_RANGES:
        if ranges is None:
            raise InputError(f"dtype {dtype!r} needs per-dimension ranges (min, max)")
        r = ranges_array(ranges, vectors.shape[1])
        step = (r[1] - r[0]) / _STEPS
        step = np.where(step == 0, 1, step)
        levels = np.clip(np.floor((vectors.astype(np.float32, copy=False) - r[0]) / step), 0, _STEPS)
        return levels.astype(np.uint8) if dtype == "uint8" else (levels - 128).astype(np.int8)
    bits = np.packbits(vectors > 0, axis=-1)
    return bits if dtype == "ubinary" else (bits.astype(np.int16) - 128).astype(np.int8)


def quantizer(dtype: str, ranges: Ranges | None, *, bundle: str = "this bundle") -> Callable[[np.ndarray], np.ndarray]:
    """A function float32 [n, dim] -> ``dtype``; raises now (before any work) for an unknown dtype or
    for int8/uint8 when ``ranges`` is None."""
    check_dtype(dtype)
    if dtype in _NEEDS_RANGES and ranges is None:
        raise InputError(
            f"dtype {dtype!r} needs the per-dimension ranges an export records, and {bundle} has none "
            "(exported before they were recorded): re-export it with edge-bge export"
        )
    fixed = None if ranges is None else ranges_array(ranges)

    def convert(vectors: np.ndarray) -> np.ndarray:
        return quantize(vectors, dtype, ranges=fixed)

    return convert
