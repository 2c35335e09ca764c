"""Where a session's nodes really ran: ONNX Runtime's profile of one warm-up batch, node by node.

``session.get_providers()`` lists the providers a session registered, even one that runs no node (a
CPU-target int8 bundle on CUDA runs its integer kernels on the CPU). The profile names the provider
of each node it ran, and how long the node took. Nodes are counted as ONNX Runtime runs them, after
its fusions: a TensorRT partition is one node. Two kinds are left out of the node shares: ONNX
Runtime's copies between devices (Memcpy*), and shape arithmetic, nodes whose every output holds at
most ``SHAPE_VALUES`` values (Shape, Gather on a shape, Concat of dims: ONNX Runtime keeps these on
the CPU on purpose). What is left, the compute nodes, must all run on a GPU provider in a GPU session.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

__all__ = [
    "MIN_GPU_SHARE",
    "NodeRun",
    "Placement",
    "SHAPE_VALUES",
    "WARMUP",
    "describe_shortfall",
    "measure",
    "parse_profile",
    "shortfall",
]

log = logging.getLogger("edge_bge")

SHAPE_VALUES = 8  # a node whose every output holds at most this many values computes shapes, not text
WARMUP = (16, 16)  # rows, tokens of the warm-up batch: its data tensors hold > SHAPE_VALUES values
# The share of compute nodes a GPU provider must run. Each compute node on the CPU costs a copy to the
# host and back per batch, and its kernel runs on a few CPU cores: a GPU session is expected to run all.
MIN_GPU_SHARE = 1.0
_COPIES = ("MemcpyFromHost", "MemcpyToHost")
_CPU = "CPUExecutionProvider"
_KERNEL = "_kernel_time"


@dataclass(frozen=True)
class NodeRun:
    """One node of the profiled run: its name and operator, the provider that ran it, for how long (µs)."""

    name: str
    op: str
    provider: str
    us: int
    shape_only: bool  # shape arithmetic (every output at most SHAPE_VALUES values): not in the node shares

    @property
    def counted(self) -> bool:
        return not self.shape_only and self.op not in _COPIES


@dataclass(frozen=True)
class Placement:
    """The nodes of one warm-up batch, with the share of compute nodes and of node time per provider."""

    runs: tuple[NodeRun, ...]

    @property
    def compute(self) -> list[NodeRun]:
        return [r for r in self.runs if r.counted]

    @property
    def nodes(self) -> dict[str, float]:
        """Share of compute nodes per provider (sums to 1; {} when no compute node ran)."""
        return _shares((r.provider, 1) for r in self.compute)

    @property
    def time(self) -> dict[str, float]:
        """Share of the time of all profiled nodes per provider."""
        return _shares((r.provider, r.us) for r in self.runs)

    def share(self, providers: Iterable[str]) -> float:
        """Share of compute nodes run by any of ``providers``."""
        wanted = set(providers)
        return sum(v for k, v in self.nodes.items() if k in wanted)

    def outside(self, providers: Iterable[str]) -> list[NodeRun]:
        """The compute nodes that none of ``providers`` ran."""
        wanted = set(providers)
        return [r for r in self.compute if r.provider not in wanted]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the shares, the counts, and (in a mixed session) the compute nodes run on the CPU."""
        on_cpu = [f"{r.name} ({r.op})" for r in self.compute if r.provider == _CPU]
        return {
            "nodes": {k: round(v, 4) for k, v in self.nodes.items()},
            "time": {k: round(v, 4) for k, v in self.time.items()},
            "compute_nodes": len(self.compute),
            "shape_nodes": sum(r.shape_only for r in self.runs),
            "cpu_nodes": on_cpu if len(self.nodes) > 1 else [],
        }

    def describe(self) -> str:
        """One line: "nodes CUDAExecutionProvider 97.1%, ...; time ..."."""

        def pct(shares: Mapping[str, float]) -> str:
            return ", ".join(f"{k} {v:.1%}" for k, v in shares.items()) or "-"

        return f"{len(self.compute)} compute nodes: {pct(self.nodes)}; node time: {pct(self.time)}"


def _shares(pairs: Iterable[tuple[str, float]]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for key, value in pairs:
        totals[key] = totals.get(key, 0.0) + value
    whole = sum(totals.values())
    ordered = sorted(totals.items(), key=lambda kv: -kv[1])
    return {k: (v / whole if whole else 0.0) for k, v in ordered}


def _values(shape: Any) -> int | None:
    """Values in one ``output_type_shape`` entry ({"float": [16, 16, 384]}); None when unreadable."""
    if not isinstance(shape, Mapping) or len(shape) != 1:
        return None
    dims = next(iter(shape.values()))
    if not isinstance(dims, list) or not all(isinstance(d, int) for d in dims):
        return None
    return math.prod(dims)


def parse_profile(events: Sequence[Mapping[str, Any]]) -> Placement:
    """The node runs in ONNX Runtime's profile (its JSON list of trace events)."""
    runs = []
    for event in events:
        name = str(event.get("name", ""))
        if event.get("cat") != "Node" or not name.endswith(_KERNEL):
            continue
        args = event.get("args") or {}
        values = [_values(s) for s in args.get("output_type_shape") or []]
        shape_only = bool(values) and all(v is not None and v <= SHAPE_VALUES for v in values)
        provider = str(args.get("provider") or "unknown")
        runs.append(
            NodeRun(
                name[: -len(_KERNEL)], str(args.get("op_name", "?")), provider, int(event.get("dur", 0)), shape_only
            )
        )
    return Placement(tuple(runs))


def warmup_feeds(session: ort.InferenceSession, rows: int, tokens: int) -> dict[str, np.ndarray] | None:
    """A [rows, tokens] batch for a token graph's int64 inputs; None for a graph of other inputs."""
    feeds = {}
    for node in session.get_inputs():
        if node.type != "tensor(int64)" or len(node.shape) != 2:
            return None
        if node.name == "attention_mask":
            feeds[node.name] = np.ones((rows, tokens), np.int64)
        elif node.name == "token_type_ids":
            feeds[node.name] = np.zeros((rows, tokens), np.int64)
        else:  # token ids below 100 are in every vocabulary
            feeds[node.name] = np.tile(5 + np.arange(tokens, dtype=np.int64) % 90, (rows, 1))
    return feeds or None


def measure(session: ort.InferenceSession, *, rows: int, tokens: int) -> Placement | None:
    """Run one warm-up batch on a session opened with ``enable_profiling``, end the profile, read it.

    None when the graph's inputs are not token ids (no batch to make). The profile file is deleted;
    ONNX Runtime profiles nothing after this. The warm-up batch's own errors propagate."""
    feeds = warmup_feeds(session, rows, tokens)
    if feeds is not None:
        session.run([session.get_outputs()[0].name], feeds)
    path = session.end_profiling()
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            events = json.load(f)
    finally:
        os.unlink(path)
    return parse_profile(events) if feeds is not None else None


def shortfall(placement: Placement | None, got: Sequence[str], gpu: Sequence[str]) -> list[NodeRun]:
    """The compute nodes that fell off the GPU: [] unless the session runs on a GPU provider (``got[0]``
    in ``gpu``) and those providers ran less than MIN_GPU_SHARE of the compute nodes."""
    if placement is None or not got or got[0] not in gpu:
        return []
    mine = [p for p in got if p in gpu]
    if placement.share(mine) >= MIN_GPU_SHARE:
        return []
    return placement.outside(mine)


def describe_shortfall(found: Placement, got: Sequence[str], fell: Sequence[NodeRun], target: str | None) -> str:
    """What fell off the GPU, naming the nodes (the first 20), for ProviderError and the log."""
    names = ", ".join(f"{r.name} ({r.op})" for r in fell[:20])
    if len(fell) > 20:
        names += f" and {len(fell) - 20} more"
    gpu = [p for p in got if p not in {r.provider for r in fell}]
    hint = " (a graph exported for the CPU: export with --target tensorrt for the GPU)" if target == "cpu" else ""
    return (
        f"{got[0]} runs {found.share(gpu):.1%} of the graph's {len(found.compute)} compute nodes; "
        f"{len(fell)} fell to {fell[0].provider}: {names}{hint}"
    )
