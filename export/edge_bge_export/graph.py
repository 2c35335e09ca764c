"""Torch wrappers that put the reference's post-encoder math inside the graph, and the ONNX export.

We call ``torch.onnx.export`` ourselves (TorchScript exporter, opset 17) rather than going
through optimum: the wrapper is the whole graph contract (pooling, L2 normalisation, bge-m3
heads, reranker head) in one small module we control, with no extra pin on transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from edge_bge.manifest import Pooling

from .errors import ExportError

OPSET = 17

# model_type in config.json -> whether the graph takes token_type_ids
SUPPORTED_ARCHITECTURES: dict[str, bool] = {"bert": True, "xlm-roberta": False}


def _pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    if pooling is Pooling.CLS:
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    # sentence-transformers clamps the token count at 1e-9; same here so empty rows stay finite
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def _l2(x: torch.Tensor) -> torch.Tensor:
    # torch.nn.functional.normalize: x / max(||x||, 1e-12)
    return x / x.norm(p=2, dim=-1, keepdim=True).clamp(min=1e-12)


class EmbeddingGraph(nn.Module):
    """encoder -> pooling -> (L2) : [batch, dim]"""

    def __init__(self, encoder: nn.Module, *, pooling: Pooling, normalize: bool) -> None:
        super().__init__()
        self.encoder, self.pooling, self.normalize = encoder, pooling, normalize

    def forward(self, input_ids, attention_mask, token_type_ids=None):  # type: ignore[no-untyped-def]
        kw = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
        out = _pool(hidden, attention_mask, self.pooling)
        return _l2(out) if self.normalize else out


class M3Graph(nn.Module):
    """bge-m3: dense [batch, dim], sparse [batch, seq], colbert [batch, seq-1, dim], as BGEM3FlagModel."""

    def __init__(self, encoder: nn.Module, sparse: nn.Linear, colbert: nn.Linear, *, normalize: bool) -> None:
        super().__init__()
        self.encoder, self.sparse_linear, self.colbert_linear = encoder, sparse, colbert
        self.normalize = normalize

    def forward(self, input_ids, attention_mask):  # type: ignore[no-untyped-def]
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        dense = hidden[:, 0]
        if self.normalize:
            dense = _l2(dense)
        sparse = torch.relu(self.sparse_linear(hidden)).squeeze(-1)
        colbert = self.colbert_linear(hidden[:, 1:])
        colbert = colbert * attention_mask[:, 1:].unsqueeze(-1).to(colbert.dtype)
        colbert = _l2(colbert)
        return dense, sparse, colbert


class RerankerGraph(nn.Module):
    """cross-encoder: logits [batch]"""

    def __init__(self, classifier: nn.Module, *, token_type_ids: bool) -> None:
        super().__init__()
        self.model, self.use_tt = classifier, token_type_ids

    def forward(self, input_ids, attention_mask, token_type_ids=None):  # type: ignore[no-untyped-def]
        kw = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **kw).logits[:, 0]


def input_names(architecture: str, *, token_type_ids: bool = True) -> tuple[str, ...]:
    """The graph's inputs: token_type_ids only where the architecture has them and the head takes them."""
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise ExportError(
            f"architecture {architecture!r} is not supported; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    if not token_type_ids or not SUPPORTED_ARCHITECTURES[architecture]:
        return ("input_ids", "attention_mask")
    return ("input_ids", "attention_mask", "token_type_ids")


def export_onnx(module: nn.Module, path: Path, *, inputs: tuple[str, ...], outputs: dict[str, dict[int, str]]) -> None:
    """Write ``module`` as an ONNX graph with dynamic batch and sequence axes; ``outputs``: the output
    names in order, each with its dynamic axes (the head's, edge_bge_export.heads)."""
    module.eval()
    batch, seq = 2, 16
    ids = torch.full((batch, seq), 5, dtype=torch.long)
    ids[:, 0] = 0
    dummy = {
        "input_ids": ids,
        "attention_mask": torch.ones(batch, seq, dtype=torch.long),
        "token_type_ids": torch.zeros(batch, seq, dtype=torch.long),
    }
    axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in inputs}
    axes.update(outputs)
    args: Any = tuple(dummy[n] for n in inputs)
    with torch.inference_mode():
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
