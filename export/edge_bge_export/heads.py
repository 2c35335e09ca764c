"""Build the torch module that becomes the graph: encoder plus the kind's head."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from edge_bge.manifest import Kind

from .errors import ExportError
from .graph import EmbeddingGraph
from .recipes import Recipe
from .reference import load_encoder


def build_module(checkpoint: Path, recipe: Recipe) -> tuple[nn.Module, int, int]:
    """(module, output dim, encoder layers) for the recipe's kind."""
    if recipe.kind is Kind.EMBEDDING:
        encoder = load_encoder(checkpoint, recipe)
        cfg = encoder.config
        assert recipe.pooling is not None  # recipes.from_mapping / source refuse a missing pooling
        module = EmbeddingGraph(encoder, pooling=recipe.pooling, normalize=recipe.normalize)
        return module, int(cfg.hidden_size), int(cfg.num_hidden_layers)
    raise ExportError(f"kind {recipe.kind.value!r} is not supported by this exporter yet; supported: embedding")
