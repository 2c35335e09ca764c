"""Evaluate several bundles on one dataset and compare them with the first: checks first, then runs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import EdgeBGEError
from ..kinds import spec
from ..manifest import Manifest
from ..reranker import Reranker
from .data import Dataset, EvalInputError, load_data
from .report import build_report
from .runner import LARGE_CORPUS, MODES, BundleResult, default_hybrid_weights, run_bundle

__all__ = ["check_bundles", "evaluate"]


def _manifest(path: str) -> Manifest:
    if not Path(path).is_dir():
        raise EvalInputError(f"no bundle folder {path}")
    try:
        return Manifest.load(path)
    except EdgeBGEError as e:
        raise EvalInputError(f"{path} is not a usable bundle: {e}") from None


def check_bundles(
    bundles: Sequence[str], modes: Sequence[str] | None, reranker: str | None
) -> list[tuple[str, tuple[str, ...]]]:
    """(bundle, modes to run) per bundle; ``EvalInputError`` for a bundle or mode that cannot be evaluated.

    Without ``modes`` each bundle runs every mode its kind has (dense; bge-m3 adds sparse, colbert, hybrid)."""
    if not bundles:
        raise EvalInputError("no bundle to evaluate")
    unknown = [m for m in modes or () if m not in MODES]
    if unknown:
        raise EvalInputError(f"unknown mode {unknown[0]!r}; the modes are {', '.join(MODES)}")
    plan: list[tuple[str, tuple[str, ...]]] = []
    for path in bundles:
        kind = _manifest(path).kind
        if "embed" not in spec(kind).ops:
            raise EvalInputError(f"{path} is a reranker bundle: give it with --reranker, not as a BUNDLE")
        own = MODES if spec(kind).multi_output else ("dense",)
        wanted = tuple(modes) if modes else own
        cannot = [m for m in wanted if m not in own]
        if cannot:
            raise EvalInputError(
                f"mode {cannot[0]!r} needs a bundle of kind 'm3'; {path} is of kind {kind.value!r} (it can do: dense)"
            )
        plan.append((path, wanted))
    if reranker is not None:
        kind = _manifest(reranker).kind
        if "score" not in spec(kind).ops:
            raise EvalInputError(f"--reranker {reranker} is a bundle of kind {kind.value!r}, not 'reranker'")
    return plan


def evaluate(
    bundles: Sequence[str | os.PathLike[str]],
    data: str | os.PathLike[str] | Dataset,
    *,
    modes: Sequence[str] | None = None,
    k: int = 10,
    reranker: str | os.PathLike[str] | None = None,
    hybrid_weights: Sequence[float] | None = None,
    split: str = "test",
    fail_below: float | None = None,
    progress: bool = False,
    large_corpus: int = LARGE_CORPUS,
    **options: Any,
) -> tuple[dict[str, Any], list[BundleResult]]:
    """Evaluate each bundle on ``data`` (a BEIR folder, a pairs .jsonl, or a loaded ``Dataset``).

    Returns the report (every figure; see ``report.build_report``) and the per-bundle results with
    their rankings. ``options`` go to each ``Embedder`` and the ``Reranker`` (providers, threads, ...)."""
    if k < 1:
        raise EvalInputError(f"k must be at least 1, got {k}")
    weights = tuple(float(w) for w in (hybrid_weights or default_hybrid_weights()))
    if len(weights) != 3 or min(weights) < 0 or sum(weights) <= 0:
        raise EvalInputError(f"hybrid weights are (dense, sparse, colbert), >= 0, not all 0; got {weights}")
    paths = [os.fspath(b) for b in bundles]
    rerank_path = os.fspath(reranker) if reranker is not None else None
    plan = check_bundles(paths, modes, rerank_path)
    dataset = data if isinstance(data, Dataset) else load_data(data, split=split)
    rr = Reranker(rerank_path, **options) if rerank_path is not None else None
    results = [
        run_bundle(
            path,
            dataset,
            wanted,
            k=k,
            reranker=rr,
            hybrid_weights=weights,
            progress=progress,
            large_corpus=large_corpus,
            **options,
        )
        for path, wanted in plan
    ]
    report = build_report(results, dataset, k=k, hybrid_weights=weights, reranker=rerank_path, fail_below=fail_below)
    return report, results
