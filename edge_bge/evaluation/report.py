"""The evaluation report: a Markdown table, a JSON document with every figure, a bar chart.

Deltas compare each bundle with the first one, mode by mode, in metric units (0.01 = one point);
the table shows them in points ("-0.30" = 0.3 points lower).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .data import Dataset
from .metrics import metric_names
from .runner import BundleResult

__all__ = ["build_report", "deltas", "markdown", "plot", "regressions", "write_json"]

_HEADERS = {"ndcg": "nDCG", "recall": "R", "mrr": "MRR"}


def deltas(results: Sequence[BundleResult]) -> list[dict[str, dict[str, float]]]:
    """Per bundle, per mode the first bundle also has: metric minus the first bundle's."""
    base = results[0].metrics
    return [
        {
            mode: {name: value - base[mode][name] for name, value in metrics.items()}
            for mode, metrics in r.metrics.items()
            if mode in base
        }
        for r in results
    ]


def regressions(results: Sequence[BundleResult], k: int, max_drop: float) -> list[str]:
    """'bundle mode: -x' for each bundle whose nDCG@k is more than ``max_drop`` below the first's."""
    out = []
    for r, d in zip(results[1:], deltas(results)[1:], strict=True):
        for mode, diff in d.items():
            if diff[f"ndcg@{k}"] < -max_drop:
                out.append(f"{r.path} {mode}: nDCG@{k} {diff[f'ndcg@{k}']:+.4f}")
    return out


def build_report(
    results: Sequence[BundleResult],
    data: Dataset,
    *,
    k: int,
    hybrid_weights: Sequence[float],
    reranker: str | None = None,
    fail_below: float | None = None,
) -> dict[str, Any]:
    """Every figure of a run, ready for JSON."""
    failed = regressions(results, k, fail_below) if fail_below is not None else []
    return {
        "data": data.path,
        "format": data.format,
        "k": k,
        "metrics": metric_names(k),
        **data.counts,
        "hybrid_weights": {"dense": hybrid_weights[0], "sparse": hybrid_weights[1], "colbert": hybrid_weights[2]},
        "reranker": reranker,
        "bundles": [
            {**r.summary(), "delta": d, "queries": len(data.query_ids), "documents": len(data.doc_ids)}
            for r, d in zip(results, deltas(results), strict=True)
        ],
        "fail_below": fail_below,
        "failed": failed,
    }


def _header(name: str) -> str:
    metric, _, cut = name.partition("@")
    return f"{_HEADERS.get(metric, metric)}@{cut}"


def markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table; after the first bundle each figure has its delta in points."""
    names = report["metrics"]
    lines = [
        f"| bundle | precision | mode | {' | '.join(_header(n) for n in names)} | queries | docs |",
        "|---|---|---|" + "---:|" * (len(names) + 2),
    ]
    for position, b in enumerate(report["bundles"]):
        for mode, figures in b["modes"].items():
            cells = []
            for n in names:
                cell = f"{figures[n]:.4f}"
                if position and mode in b["delta"]:
                    cell += f" ({100 * b['delta'][mode][n]:+.2f})"
                cells.append(cell)
            label = Path(b["path"]).name or b["path"]
            lines.append(
                f"| {label} | {b['precision']} | {mode} | {' | '.join(cells)} | {b['queries']} | {b['documents']} |"
            )
    notes = []
    if len(report["bundles"]) > 1:
        notes.append("In brackets: difference to the first bundle, in points (0.01 = 1 point).")
    partial = {f["scored"] for b in report["bundles"] for m, f in b["modes"].items() if m != "dense+rerank"}
    if partial - {"all documents"}:
        notes.append(
            f"Sparse, colbert and hybrid scored each query's {', '.join(sorted(partial - {'all documents'}))} only."
        )
    if report["reranker"]:
        notes.append(f"dense+rerank: each query's dense top-100 reordered by {report['reranker']}.")
    if report["queries_left_out"]:
        notes.append(f"{report['queries_left_out']} queries without a relevant document were left out.")
    if any("hybrid" in b["modes"] for b in report["bundles"]):
        w = report["hybrid_weights"]
        notes.append(f"hybrid = ({w['dense']} dense + {w['sparse']} sparse + {w['colbert']} colbert) / sum of weights.")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def write_json(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    Path(path).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def plot(report: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """A bar chart of nDCG@k per bundle and mode (PNG, or any format matplotlib knows by suffix)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install matplotlib") from None
    key = f"ndcg@{report['k']}"
    modes = list(dict.fromkeys(mode for b in report["bundles"] for mode in b["modes"]))
    labels = [f"{Path(b['path']).name}\n{b['precision']}" for b in report["bundles"]]
    width = 0.8 / len(modes)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(labels) * max(1, len(modes) / 2)), 3.6))
    for m, mode in enumerate(modes):
        xs = [i + (m - (len(modes) - 1) / 2) * width for i in range(len(labels))]
        ys = [b["modes"].get(mode, {}).get(key, 0.0) for b in report["bundles"]]
        bars = ax.bar(xs, ys, width, label=mode)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel(f"nDCG@{report['k']}")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"{Path(report['data']).name}: {report['queries']} queries, {report['documents']} documents")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
