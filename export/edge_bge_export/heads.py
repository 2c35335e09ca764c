"""Build the torch module that becomes the graph: encoder plus the kind's head."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from edge_bge.manifest import Kind

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


def build_module(checkpoint: Path, recipe: Recipe) -> tuple[nn.Module, int, int]:
    """(module, output dim, encoder layers) for the recipe's kind."""
    if recipe.kind is Kind.RERANKER:
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(
            str(checkpoint), attn_implementation="eager", dtype=torch.float32
        ).eval()
        if model.config.num_labels != 1:
            raise ExportError(f"{checkpoint}: a reranker has one output logit; this one has {model.config.num_labels}")
        with_tt = recipe.architecture == "bert"
        return RerankerGraph(model, token_type_ids=with_tt), 1, int(model.config.num_hidden_layers)
    encoder = load_encoder(checkpoint, recipe)
    cfg = encoder.config
    hidden, layers = int(cfg.hidden_size), int(cfg.num_hidden_layers)
    if recipe.kind is Kind.M3:
        colbert = load_head(
            checkpoint,
            Path(recipe.heads.get("colbert", "colbert_linear")).stem,
            in_features=hidden,
            out_features=hidden,
        )
        sparse = load_head(
            checkpoint, Path(recipe.heads.get("sparse", "sparse_linear")).stem, in_features=hidden, out_features=1
        )
        return M3Graph(encoder, sparse, colbert, normalize=recipe.normalize), hidden, layers
    if recipe.pooling is None:
        raise ExportError(f"recipe {recipe.name}: an embedding model needs a pooling")
    return EmbeddingGraph(encoder, pooling=recipe.pooling, normalize=recipe.normalize), hidden, layers
