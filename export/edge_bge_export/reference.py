"""The PyTorch reference each export is compared with.

Dense models: sentence-transformers itself when the checkpoint is a sentence-transformers
model whose pooling matches the recipe; otherwise transformers run by hand with the recipe's
pooling and normalisation, as BGE's model cards do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge_bge.manifest import Pooling

from .recipes import Recipe
from .source import st_settings


def load_encoder(checkpoint: Path, recipe: Recipe) -> torch.nn.Module:
    """The bare encoder in fp32, eager attention (so ONNX Runtime's optimizer can fuse it)."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(checkpoint), attn_implementation="eager", dtype=torch.float32)
    return model.eval()


def uses_sentence_transformers(checkpoint: Path, recipe: Recipe) -> bool:
    if not (checkpoint / "modules.json").is_file():
        return False
    st = st_settings(checkpoint)
    return st.get("pooling") == recipe.pooling and st.get("normalize") == recipe.normalize


def dense_reference(checkpoint: Path, recipe: Recipe, texts: list[str], *, batch_size: int = 16) -> np.ndarray:
    """float32 [n, dim]: what the reference library returns for these texts."""
    torch.manual_seed(0)
    if uses_sentence_transformers(checkpoint, recipe):
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(checkpoint), device="cpu")
        model.max_seq_length = recipe.max_length
        return model.encode(texts, batch_size=batch_size, convert_to_numpy=True).astype(np.float32)

    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(checkpoint))
    model = AutoModel.from_pretrained(str(checkpoint), dtype=torch.float32).eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = tok(
                texts[i : i + batch_size],
                padding=True,
                truncation=True,
                max_length=recipe.max_length,
                return_tensors="pt",
            )
            hidden = model(**enc).last_hidden_state
            if recipe.pooling is Pooling.CLS:
                pooled = hidden[:, 0]
            else:
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            if recipe.normalize:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
            out.append(pooled.float().numpy())
    return np.concatenate(out).astype(np.float32)


def bundle_tokenizer_json(checkpoint: Path, max_length: int, *, pairs: bool = False) -> str:
    """The reference's own fast tokenizer, with its truncation and no fixed padding."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(checkpoint), use_fast=True)
    if not getattr(tok, "is_fast", False):
        from .errors import ExportError

        raise ExportError(f"{checkpoint}: no fast (Rust) tokenizer could be built for this checkpoint")
    backend = tok.backend_tokenizer
    backend.no_padding()
    # pairs (rerankers) truncate the passage only, as FlagReranker does
    backend.enable_truncation(max_length, strategy="only_second" if pairs else "longest_first")
    return json.dumps(json.loads(backend.to_str()), ensure_ascii=False, indent=None)


def m3_reference(checkpoint: Path, recipe: Recipe, texts: list[str]) -> dict[str, Any]:
    """BGEM3FlagModel.encode with all three outputs, at the recipe's max_length."""
    from FlagEmbedding import BGEM3FlagModel

    model = BGEM3FlagModel(str(checkpoint), use_fp16=False, devices="cpu", normalize_embeddings=recipe.normalize)
    # encode pads each batch to its longest text: long texts go alone, or one 8192-token probe
    # would make its seven batch neighbours cost as much as itself
    long = [len(t) > LONG_TEXT_CHARS for t in texts]
    parts = {}
    for is_long in (False, True):
        group = [t for t, flag in zip(texts, long, strict=True) if flag is is_long]
        if group:
            parts[is_long] = iter(_m3_encode(model, group, recipe, batch_size=1 if is_long else 8))
    rows = [next(parts[flag]) for flag in long]
    return {
        "dense": np.stack([r[0] for r in rows]).astype(np.float32),
        "sparse": [r[1] for r in rows],
        "colbert": [r[2] for r in rows],
    }


# ~1000 tokens of English: texts longer than this are encoded one at a time by the reference
LONG_TEXT_CHARS = 4000


def _m3_encode(model: Any, texts: list[str], recipe: Recipe, *, batch_size: int) -> list[tuple[Any, ...]]:
    out = model.encode(
        texts,
        batch_size=batch_size,
        max_length=recipe.max_length,
        return_dense=True,
        return_sparse=True,
        return_colbert_vecs=True,
    )
    return [
        (
            np.asarray(d, dtype=np.float32),
            {int(k): float(v) for k, v in s.items()},
            np.asarray(c, dtype=np.float32),
        )
        for d, s, c in zip(out["dense_vecs"], out["lexical_weights"], out["colbert_vecs"], strict=True)
    ]


def reranker_reference(checkpoint: Path, recipe: Recipe, pairs: list[tuple[str, str]]) -> np.ndarray:
    """FlagReranker.compute_score raw logits."""
    from FlagEmbedding import FlagReranker

    model = FlagReranker(str(checkpoint), use_fp16=False, devices="cpu", max_length=recipe.max_length)
    return np.asarray(model.compute_score(pairs, batch_size=8, normalize=False), dtype=np.float32).reshape(-1)


def rerank_pairs(texts: list[str]) -> list[tuple[str, str]]:
    """Probe texts as (query, passage) pairs: every text is the passage once, against short queries."""
    from .probes import QUERIES

    return [(QUERIES[i % len(QUERIES)], t) for i, t in enumerate(texts)]


def special_token_ids(checkpoint: Path) -> tuple[int, ...]:
    """The ids BGEM3FlagModel drops from lexical weights: cls, eos, pad and unk."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(checkpoint))
    ids = {
        tok.convert_tokens_to_ids(tok.special_tokens_map[name])
        for name in ("cls_token", "eos_token", "pad_token", "unk_token")
        if name in tok.special_tokens_map
    }
    return tuple(sorted(int(i) for i in ids))
