"""Each kind's head described once for the export: the torch wrapper that becomes the graph, the
PyTorch reference it is checked against, the parity metric, and the graph's dynamic output axes.

The runtime's side of a kind (outputs, what embed/score read, server operations) is
``edge_bge.kinds``. Adding a head is a wrapper in graph.py, an entry in ``HEADS`` here and one in
``edge_bge.kinds.KINDS`` (CONTRIBUTING.md walks through it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edge_bge.kinds import OUTPUTS, Kind

from . import reference
from .errors import ExportError
from .graph import EmbeddingGraph, M3Graph, RerankerGraph
from .recipes import Recipe
from .reference import load_encoder
from .source import head_file


def load_head(checkpoint: Path, stem: str, *, in_features: int, out_features: int) -> nn.Linear:
    """A bge-m3 linear head: safetensors when present, else torch.load(weights_only=True)."""
    path = head_file(checkpoint, stem)
    if path is None:
        raise ExportError(f"{checkpoint}: head file {stem}.pt (or .safetensors) is missing")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or pickled-object files
        raise ExportError(f"cannot read {path.name}: {e}") from None
    want = {"weight": (out_features, in_features), "bias": (out_features,)}
    got = {k: tuple(v.shape) for k, v in state.items()} if isinstance(state, dict) else {}
    if got != want:
        raise ExportError(f"{path.name} holds {got or type(state).__name__}; expected tensors of shape {want}")
    head = nn.Linear(in_features, out_features)
    head.load_state_dict({k: v.float() for k, v in state.items()})
    return head.eval()


Built = tuple[nn.Module, int, int]  # (module, output dim, encoder layers)


def _reranker(checkpoint: Path, recipe: Recipe) -> Built:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        str(checkpoint), attn_implementation="eager", dtype=torch.float32
    ).eval()
    if model.config.num_labels != 1:
        raise ExportError(f"{checkpoint}: a reranker has one output logit; this one has {model.config.num_labels}")
    with_tt = recipe.architecture == "bert"
    return RerankerGraph(model, token_type_ids=with_tt), 1, int(model.config.num_hidden_layers)


def _m3(checkpoint: Path, recipe: Recipe) -> Built:
    encoder = load_encoder(checkpoint, recipe)
    hidden, layers = int(encoder.config.hidden_size), int(encoder.config.num_hidden_layers)
    colbert = load_head(
        checkpoint, Path(recipe.heads.get("colbert", "colbert_linear")).stem, in_features=hidden, out_features=hidden
    )
    sparse = load_head(
        checkpoint, Path(recipe.heads.get("sparse", "sparse_linear")).stem, in_features=hidden, out_features=1
    )
    return M3Graph(encoder, sparse, colbert, normalize=recipe.normalize), hidden, layers


def _embedding(checkpoint: Path, recipe: Recipe) -> Built:
    if recipe.pooling is None:
        raise ExportError(f"recipe {recipe.name}: an embedding model needs a pooling")
    encoder = load_encoder(checkpoint, recipe)
    hidden, layers = int(encoder.config.hidden_size), int(encoder.config.num_hidden_layers)
    return EmbeddingGraph(encoder, pooling=recipe.pooling, normalize=recipe.normalize), hidden, layers


def _dense_reference(checkpoint: Path, recipe: Recipe, texts: list[str]) -> tuple[dict[str, Any], str]:
    name = "sentence-transformers" if reference.uses_sentence_transformers(checkpoint, recipe) else "transformers"
    return {"embedding": reference.dense_reference(checkpoint, recipe, texts)}, name


def _m3_reference(checkpoint: Path, recipe: Recipe, texts: list[str]) -> tuple[dict[str, Any], str]:
    return reference.m3_reference(checkpoint, recipe, texts), "FlagEmbedding BGEM3FlagModel"


def _reranker_reference(checkpoint: Path, recipe: Recipe, texts: list[str]) -> tuple[dict[str, Any], str]:
    logits = reference.reranker_reference(checkpoint, recipe, reference.rerank_pairs(texts))
    return {"logits": logits}, "FlagEmbedding FlagReranker"


@dataclass(frozen=True)
class Head:
    build: Callable[[Path, Recipe], Built]  # the torch module that becomes the graph
    reference: Callable[[Path, Recipe, list[str]], tuple[dict[str, Any], str]]  # outputs by name, and who
    compared: str  # the output parity and the int8 search compare
    # "cosine": per probe text, of vectors; "pearson": one correlation of the logits over the probe pairs
    metric: str
    axes: dict[str, dict[int, str]]  # the outputs' dynamic axes
    token_type_ids: bool = True  # whether the graph takes token_type_ids (where the architecture has them)

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(self.axes)


_BATCH = {0: "batch"}
HEADS: dict[Kind, Head] = {
    Kind.EMBEDDING: Head(_embedding, _dense_reference, "embedding", "cosine", {"embedding": _BATCH}),
    Kind.M3: Head(
        _m3,
        _m3_reference,
        "dense",
        "cosine",
        {"dense": _BATCH, "sparse": {0: "batch", 1: "sequence"}, "colbert": {0: "batch", 1: "sequence_after_cls"}},
        token_type_ids=False,
    ),
    Kind.RERANKER: Head(_reranker, _reranker_reference, "logits", "pearson", {"logits": _BATCH}),
}
_disagree = [k.value for k, h in HEADS.items() if h.outputs != OUTPUTS[k]]
if _disagree:  # the export's heads and the runtime's kinds table must name the same outputs
    raise ExportError(f"heads and edge_bge.kinds disagree on the outputs of: {', '.join(_disagree)}")


def head(kind: Kind) -> Head:
    return HEADS[kind]


def build_module(checkpoint: Path, recipe: Recipe) -> Built:
    """(module, output dim, encoder layers) for the recipe's kind."""
    return HEADS[recipe.kind].build(checkpoint, recipe)


def comparable(want: dict[str, Any], recipe: Recipe) -> np.ndarray:
    """The array the int8 search compares candidate graphs on: [n, d] (logits as [n, 1])."""
    value = np.asarray(want[HEADS[recipe.kind].compared])
    return value.reshape(len(value), -1)
