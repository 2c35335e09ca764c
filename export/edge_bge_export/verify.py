"""Parity of a staged bundle, run through the edge_bge runtime exactly as users will run it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edge_bge import Embedder, Reranker
from edge_bge.kinds import spec

from .errors import ParityError
from .recipes import Recipe
from .reference import rerank_pairs


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of [..., d] arrays."""
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two score vectors; a constant vector matches only an (almost) equal one."""
    a, b = a.reshape(-1), b.reshape(-1)
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float(np.allclose(a, b, atol=1e-4))


def _finite(got: np.ndarray, texts: list[str]) -> None:
    bad = np.where(~np.isfinite(got.reshape(len(got), -1)).all(-1))[0]
    if len(bad):
        i = int(bad[0])
        raise ParityError(f"the graph gives NaN/Inf for probe {i}: {texts[i][:80]!r}", worst_text=texts[i])


def _m3_extras(got: Any, want: dict[str, Any]) -> dict[str, float]:
    """How far lexical weights and ColBERT vectors are from FlagEmbedding's."""
    same_ids = all(set(g) == set(w) for g, w in zip(got.sparse, want["sparse"], strict=True))
    diffs = [
        abs(g.get(t, 0.0) - w.get(t, 0.0)) for g, w in zip(got.sparse, want["sparse"], strict=True) for t in {*g, *w}
    ]
    counts = all(len(g) == len(w) for g, w in zip(got.colbert, want["colbert"], strict=True))
    ccos = [float(cosines(g, w).min()) for g, w in zip(got.colbert, want["colbert"], strict=True) if len(g) and counts]
    return {
        "sparse_same_ids": float(same_ids),
        "sparse_max_abs_diff": float(max(diffs, default=0.0)),
        "colbert_same_counts": float(counts),
        "colbert_cosine_min": float(min(ccos, default=1.0)) if counts else 0.0,
    }


def verify_bundle(
    bundle: Path,
    recipe: Recipe,
    texts: list[str],
    want: dict[str, Any],
    gate: dict[str, float],
    *,
    reference: str,
    metric: str = "cosine",
) -> dict[str, Any]:
    """Compare the bundle's outputs on ``texts`` with the reference; ParityError below the gate.

    ``metric`` is the head's (edge_bge_export.heads): "cosine" of the main vectors per text (the
    gate's "min" and "mean" apply to ``cosine_min`` / ``cosine_mean``), or "pearson": one correlation
    of the logits over the probe pairs, recorded as ``pearson`` with the largest logit difference,
    every key of the gate applying to it.
    """
    extras: dict[str, float] = {}
    if metric == "pearson":
        got = Reranker(bundle, providers="cpu").score(rerank_pairs(texts))
        _finite(got, texts)
        ref = want["logits"]
        corr = pearson(got, ref)
        worst = int(np.abs(got - ref).argmax())
        summary = {"pearson": corr, "logits_max_abs_diff": float(np.abs(got - ref).max())}
        stats = {k: corr for k in gate}
        worst_value, what = float(np.abs(got - ref)[worst]), "logit difference"
    else:
        model = Embedder(bundle, providers="cpu")
        main = spec(recipe.kind).main
        if spec(recipe.kind).multi_output:  # bge-m3: lexical weights and ColBERT vectors checked too
            out = model.encode(texts, dense=True, sparse=True, colbert=True)
            got = out.dense
            extras = _m3_extras(out, want)
        else:
            got = model.embed(texts)
        assert got is not None
        _finite(got, texts)
        cos = cosines(got, want[main])
        worst = int(cos.argmin())
        summary = {"cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()), **extras}
        stats = {k: summary["cosine_" + k] for k in gate}
        worst_value, what = float(cos[worst]), "cosine"
    parity = {
        "reference": reference,
        "probe_texts": len(texts),
        "gate": gate,
        "summary": summary,
        "worst_text": texts[worst][:200],
    }
    name = "pearson" if metric == "pearson" else "cosine"
    failed = [f"{name} {k} {stats[k]:.6f} < {v}" for k, v in gate.items() if stats[k] < v]
    if failed:
        raise ParityError(
            f"{recipe.name} {'; '.join(failed)}; worst text #{worst} ({what} {worst_value:.6f}): {texts[worst][:80]!r}",
            worst_text=texts[worst],
            cosine=worst_value,
        )
    return parity
