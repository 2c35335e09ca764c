"""Parity of a staged bundle, run through the edge_bge runtime exactly as users will run it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_bge import Embedder
from edge_bge.manifest import Kind

from .errors import ParityError
from .recipes import Recipe


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)


def verify_bundle(
    bundle: Path,
    recipe: Recipe,
    texts: list[str],
    want: dict[str, np.ndarray],
    gate: dict[str, float],
    *,
    reference: str,
) -> dict[str, Any]:
    """Compare the bundle's outputs on ``texts`` with the reference; ParityError below the gate."""
    if recipe.kind is not Kind.EMBEDDING:
        raise ParityError(f"no verifier for kind {recipe.kind.value!r}")
    got = Embedder(bundle, providers="cpu").embed(texts)
    if not np.isfinite(got).all():
        bad = int(np.where(~np.isfinite(got).all(-1))[0][0])
        raise ParityError(f"the graph gives NaN/Inf for probe {bad}: {texts[bad][:80]!r}", worst_text=texts[bad])
    cos = _cos(got, want["embedding"])
    worst = int(cos.argmin())
    summary = {"cosine_min": float(cos.min()), "cosine_mean": float(cos.mean())}
    parity = {
        "reference": reference,
        "probe_texts": len(texts),
        "gate": gate,
        "summary": summary,
        "worst_text": texts[worst][:200],
    }
    failed = [f"cosine {k} {summary['cosine_' + k]:.6f} < {v}" for k, v in gate.items() if summary["cosine_" + k] < v]
    if failed:
        raise ParityError(
            f"{recipe.name} {'; '.join(failed)}; worst text #{worst} (cosine {cos[worst]:.6f}): {texts[worst][:80]!r}",
            worst_text=texts[worst],
            cosine=float(cos[worst]),
        )
    return parity
